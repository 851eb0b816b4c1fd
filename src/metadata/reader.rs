//! Streaming reader for metadata CSVs (RFC 4180: quoted fields with commas,
//! quotes and newlines; CRLF; a UTF-8 BOM).
//!
//! Built on `csv-core`, the allocation-free state machine under the `csv`
//! crate, because the reader must know exactly which bytes each record came
//! from: line numbers in messages must be true for CRLF files too, and an
//! unbalanced quote (which would swallow the rest of the file into one
//! field) is detected by counting the record's quote characters. Only
//! `paper_id`, `title` and `abstract` are interpreted; they are handed out
//! as borrowed `&str`, so reading allocates per file, not per row.
//! `paper_id` is always a string (`2401.10000` stays `2401.10000`).
//!
//! Recovery: a row with the wrong number of fields, invalid UTF-8 in a used
//! field, or a bad `paper_id` is reported and skipped; after an unbalanced
//! quote, reading resumes on the line after the row that opened it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use csv_core::ReadRecordResult;

use super::InputIssue;

/// Columns every metadata CSV must have.
pub const REQUIRED_COLUMNS: [&str; 3] = ["paper_id", "title", "abstract"];

/// Bytes read from the file at a time.
const CHUNK_BYTES: usize = 256 * 1024;

/// A record longer than this is not a metadata row but a quote gone wrong;
/// the cap keeps memory bounded whatever the input.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// One usable row of a metadata CSV.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    /// 1-based line where the row starts.
    pub line: u64,
    /// arXiv id, exactly as written.
    pub paper_id: &'a str,
    /// Title (may be empty).
    pub title: &'a str,
    /// Abstract (may be empty).
    pub abstract_text: &'a str,
}

/// Counts for one file read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Rows handed to the caller.
    pub rows: u64,
    /// Rows reported and skipped.
    pub skipped: u64,
}

struct Columns {
    paper_id: usize,
    title: usize,
    abstract_text: usize,
    count: usize,
}

/// Where a record came from and how it ended.
struct RecordSpan {
    start_byte: u64,
    start_line: u64,
    /// `"` characters in the record's bytes; odd means a field never closed.
    quotes: usize,
    /// The record hit the size cap and was cut off.
    oversized: bool,
}

/// Splits a file into records with exact byte and line positions.
struct RecordReader {
    file: File,
    core: csv_core::Reader,
    input: Vec<u8>,
    input_pos: usize,
    input_len: usize,
    eof: bool,
    /// Absolute offset of `input[input_pos]`.
    offset: u64,
    /// Line number at `input[input_pos]`.
    line: u64,
    fields: Vec<u8>,
    ends: Vec<usize>,
    field_count: usize,
}

impl RecordReader {
    fn new(file: File, offset: u64, line: u64) -> Self {
        RecordReader {
            file,
            core: csv_core::Reader::new(),
            input: vec![0; CHUNK_BYTES],
            input_pos: 0,
            input_len: 0,
            eof: false,
            offset,
            line,
            fields: vec![0; 64 * 1024],
            ends: vec![0; 64],
            field_count: 0,
        }
    }

    /// Field `i` of the last record read.
    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.fields[start..self.ends[i]]
    }

    fn next_record(&mut self) -> std::io::Result<Option<RecordSpan>> {
        let mut span: Option<RecordSpan> = None;
        let mut out_len = 0;
        let mut ends_len = 0;
        loop {
            if self.input_pos == self.input_len && !self.eof {
                self.input_pos = 0;
                self.input_len = self.file.read(&mut self.input)?;
                self.eof = self.input_len == 0;
            }
            let input = &self.input[self.input_pos..self.input_len];
            let (result, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.fields[out_len..], &mut self.ends[ends_len..]);
            let consumed = &input[..nin];
            let mut content = consumed;
            if span.is_none() {
                // Terminators left from the previous record (the \n of a
                // CRLF) and blank lines are not part of this record.
                let skip = consumed.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                self.line += memchr::memchr_iter(b'\n', &consumed[..skip]).count() as u64;
                content = &consumed[skip..];
                if !content.is_empty() || matches!(result, ReadRecordResult::Record) {
                    span = Some(RecordSpan {
                        start_byte: self.offset + skip as u64,
                        start_line: self.line,
                        quotes: 0,
                        oversized: false,
                    });
                }
            }
            if let Some(span) = span.as_mut() {
                span.quotes += memchr::memchr_iter(b'"', content).count();
                self.line += memchr::memchr_iter(b'\n', content).count() as u64;
            }
            self.input_pos += nin;
            self.offset += nin as u64;
            out_len += nout;
            ends_len += nend;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.fields.len() >= MAX_RECORD_BYTES {
                        // Keep consuming but drop the bytes: the record is
                        // reported, never used.
                        out_len = 0;
                        if let Some(span) = span.as_mut() {
                            span.oversized = true;
                        }
                    } else {
                        let grown = (self.fields.len() * 2).min(MAX_RECORD_BYTES);
                        self.fields.resize(grown, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    let grown = self.ends.len() * 2;
                    self.ends.resize(grown, 0);
                }
                ReadRecordResult::Record => {
                    self.field_count = ends_len;
                    return Ok(span);
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }
}

/// Reads every usable row of `path` in file order, calling `on_row` for
/// each. Row problems are appended to `issues` and reading goes on. Returns
/// `Err` with the reason when the whole file is unusable (unreadable, no
/// header, a required column missing); the caller reports and skips it.
pub fn read_rows(
    path: &Path,
    issues: &mut Vec<InputIssue>,
    mut on_row: impl FnMut(Row<'_>),
) -> Result<FileSummary, InputIssue> {
    let file_issue = |message: String| InputIssue {
        path: path.to_path_buf(),
        line: None,
        message,
    };
    let row_issue = |line: u64, message: String| InputIssue {
        path: path.to_path_buf(),
        line: Some(line),
        message,
    };
    let mut file = File::open(path).map_err(|e| file_issue(format!("cannot open: {e}; file skipped")))?;
    let mut bom = [0u8; 3];
    let bom_len = match file.read(&mut bom) {
        Ok(3) if bom == *b"\xEF\xBB\xBF" => 3,
        Ok(_) => 0,
        Err(e) => return Err(file_issue(format!("cannot read: {e}; file skipped"))),
    };
    file.seek(SeekFrom::Start(bom_len))
        .map_err(|e| file_issue(format!("cannot read: {e}; file skipped")))?;
    let mut reader = RecordReader::new(file, bom_len, 1);
    let read_error =
        |e: std::io::Error| file_issue(format!("read error: {e}; the rest of the file is skipped"));

    let columns = match reader.next_record().map_err(read_error)? {
        None => return Err(file_issue("empty file: no header row; file skipped".into())),
        Some(_) => {
            let names: Vec<String> = (0..reader.field_count)
                .map(|i| String::from_utf8_lossy(reader.field(i)).trim().to_string())
                .collect();
            find_columns(&names).map_err(file_issue)?
        }
    };

    let mut summary = FileSummary::default();
    loop {
        let span = match reader.next_record() {
            Ok(Some(span)) => span,
            Ok(None) => break,
            Err(e) => {
                issues.push(read_error(e));
                break;
            }
        };
        if span.quotes % 2 == 1 || span.oversized {
            summary.skipped += 1;
            let what = if span.oversized {
                format!("row is longer than {} MB", MAX_RECORD_BYTES >> 20)
            } else {
                "a quoted field is never closed (unbalanced '\"')".to_string()
            };
            issues.push(row_issue(
                span.start_line,
                format!("{what}; row skipped, reading resumes on the next line"),
            ));
            let Some(next) = next_line_start(path, span.start_byte)? else {
                break;
            };
            let mut file = File::open(path).map_err(|e| file_issue(format!("cannot reopen: {e}")))?;
            file.seek(SeekFrom::Start(next))
                .map_err(|e| file_issue(format!("cannot seek: {e}")))?;
            reader = RecordReader::new(file, next, span.start_line + 1);
            continue;
        }
        match check_row(&reader, &columns) {
            Ok((paper_id, title, abstract_text)) => {
                summary.rows += 1;
                on_row(Row {
                    line: span.start_line,
                    paper_id,
                    title,
                    abstract_text,
                });
            }
            Err(message) => {
                summary.skipped += 1;
                issues.push(row_issue(span.start_line, format!("{message}; row skipped")));
            }
        }
    }
    if summary.rows == 0 && summary.skipped == 0 {
        issues.push(file_issue("header only, no rows".into()));
    }
    Ok(summary)
}

fn find_columns(names: &[String]) -> Result<Columns, String> {
    let find = |wanted: &str| names.iter().position(|n| n == wanted);
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .copied()
        .filter(|c| find(c).is_none())
        .collect();
    match (find("paper_id"), find("title"), find("abstract")) {
        (Some(paper_id), Some(title), Some(abstract_text)) => Ok(Columns {
            paper_id,
            title,
            abstract_text,
            count: names.len(),
        }),
        _ => Err(format!(
            "missing required column(s) {} (header has: {}); file skipped",
            missing.join(", "),
            names.join(", ")
        )),
    }
}

fn check_row<'r>(reader: &'r RecordReader, columns: &Columns) -> Result<(&'r str, &'r str, &'r str), String> {
    if reader.field_count != columns.count {
        return Err(format!(
            "expected {} fields, found {}",
            columns.count, reader.field_count
        ));
    }
    let field = |index: usize, name: &str| -> Result<&'r str, String> {
        std::str::from_utf8(reader.field(index)).map_err(|e| {
            format!(
                "invalid UTF-8 in `{name}` at byte {} of the field (the file must be UTF-8)",
                e.valid_up_to()
            )
        })
    };
    let paper_id = field(columns.paper_id, "paper_id")?;
    let title = field(columns.title, "title")?;
    let abstract_text = field(columns.abstract_text, "abstract")?;
    if paper_id.is_empty() {
        return Err("empty `paper_id`".into());
    }
    if let Some(bad) = paper_id.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`paper_id` {paper_id:?} contains {bad:?}"));
    }
    Ok((paper_id, title, abstract_text))
}

/// Byte offset of the first line after the one containing `start`.
fn next_line_start(path: &Path, start: u64) -> Result<Option<u64>, InputIssue> {
    let io_issue = |e: std::io::Error| InputIssue {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot re-read while recovering from a broken row: {e}"),
    };
    let mut file = File::open(path).map_err(io_issue)?;
    file.seek(SeekFrom::Start(start)).map_err(io_issue)?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut offset = start;
    loop {
        let n = file.read(&mut buffer).map_err(io_issue)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = memchr::memchr(b'\n', &buffer[..n]) {
            return Ok(Some(offset + i as u64 + 1));
        }
        offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as (line, id, title, abstract), issues as text, and the result.
    type Outcome = (
        Vec<(u64, String, String, String)>,
        Vec<String>,
        Result<FileSummary, String>,
    );

    fn read(content: &[u8]) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        std::fs::write(&path, content).unwrap();
        let mut rows = Vec::new();
        let mut issues = Vec::new();
        let result = read_rows(&path, &mut issues, |r| {
            rows.push((r.line, r.paper_id.into(), r.title.into(), r.abstract_text.into()))
        });
        let issues = issues
            .iter()
            .map(|i| format!("{:?}: {}", i.line, i.message))
            .collect();
        (rows, issues, result.map_err(|i| i.message))
    }

    #[test]
    fn quoted_multiline_fields_crlf_and_bom_are_read() {
        let csv = b"\xEF\xBB\xBFpaper_id,title,abstract,authors\r\n\
            2401.10000,\"A, \"\"quoted\"\" title\",\"line one\r\nline two\",x\r\n\
            hep-th/9901001,T2,A2,y\r\n";
        let (rows, issues, summary) = read(csv);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(summary.unwrap().rows, 2);
        assert_eq!(
            rows[0],
            (
                2,
                "2401.10000".into(),
                "A, \"quoted\" title".into(),
                "line one\r\nline two".into()
            )
        );
        assert_eq!(rows[1].0, 4);
        assert_eq!(rows[1].1, "hep-th/9901001");
    }

    #[test]
    fn ids_that_look_like_numbers_stay_strings() {
        let (rows, _, _) = read(b"paper_id,title,abstract\n2401.10000,t,a\n0704.0001,t,a\n");
        assert_eq!(rows[0].1, "2401.10000");
        assert_eq!(rows[1].1, "0704.0001");
    }

    #[test]
    fn missing_columns_are_named_and_the_file_skipped() {
        let (_, _, result) = read(b"paper_id,summary\n1,x\n");
        let message = result.unwrap_err();
        assert!(message.contains("title, abstract"), "{message}");
        assert!(message.contains("header has: paper_id, summary"), "{message}");
    }

    #[test]
    fn empty_file_and_header_only_are_reported() {
        assert!(read(b"").2.unwrap_err().contains("no header"));
        let (rows, issues, result) = read(b"paper_id,title,abstract\n");
        assert!(rows.is_empty());
        assert_eq!(result.unwrap().rows, 0);
        assert!(issues[0].contains("header only"), "{issues:?}");
    }

    #[test]
    fn a_short_row_is_skipped_with_its_line_and_the_rest_is_read() {
        let (rows, issues, _) = read(b"paper_id,title,abstract\n1,t\n2,t,a\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(issues, ["Some(2): expected 3 fields, found 2; row skipped"]);
    }

    #[test]
    fn invalid_utf8_is_reported_with_line_and_field() {
        let (rows, issues, _) = read(b"paper_id,title,abstract\n1,caf\xe9,a\n2,t,a\n");
        assert_eq!(rows.len(), 1);
        assert!(
            issues[0].starts_with("Some(2): invalid UTF-8 in `title`"),
            "{issues:?}"
        );
    }

    #[test]
    fn an_unbalanced_quote_skips_only_its_row() {
        let csv = b"paper_id,title,abstract\n1,t,a\n2,\"broken title,a\n3,t3,a3\n4,t4,a4\n";
        let (rows, issues, _) = read(csv);
        let ids: Vec<_> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(ids, ["1", "3", "4"]);
        assert_eq!(rows[1].0, 4, "line numbers stay true after the resync");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].starts_with("Some(3): a quoted field is never closed"),
            "{issues:?}"
        );
    }

    #[test]
    fn an_unbalanced_quote_in_the_last_column_is_caught_too() {
        let csv = b"paper_id,title,abstract\n1,t,\"open\n2,t,a\n3,t,a\n";
        let (rows, issues, _) = read(csv);
        let ids: Vec<_> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(ids, ["2", "3"]);
        assert_eq!(issues.len(), 1, "{issues:?}");
    }

    #[test]
    fn bad_ids_are_refused() {
        let (rows, issues, _) = read(b"paper_id,title,abstract\n,t,a\n\"a b\",t,a\n\"x\0\",t,a\nok,t,a\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(issues.len(), 3, "{issues:?}");
    }

    #[test]
    fn a_one_megabyte_field_is_read_whole() {
        let big = "x".repeat(1 << 20);
        let csv = format!("paper_id,title,abstract\n1,t,\"{big}\"\n2,t,a\n");
        let (rows, issues, _) = read(csv.as_bytes());
        assert!(issues.is_empty());
        assert_eq!(rows[0].3.len(), 1 << 20);
        assert_eq!(rows.len(), 2);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn awkward_text() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("\"".to_string()),
                    Just(",".to_string()),
                    Just("\n".to_string()),
                    Just("\r\n".to_string()),
                    Just("  ".to_string()),
                    Just("$\\alpha$".to_string()),
                    Just("Bal\\'azs".to_string()),
                    Just("é漢字🙂".to_string()),
                    "[a-zA-Z0-9 .]{1,12}",
                ],
                0..12,
            )
            .prop_map(|parts| parts.concat())
        }

        proptest! {
            /// Whatever the csv crate writes, this reader reads back
            /// unchanged, with true line numbers.
            #[test]
            fn rows_round_trip_through_the_csv_crate(
                rows in proptest::collection::vec((awkward_text(), awkward_text()), 1..20),
                crlf in any::<bool>(),
            ) {
                let mut writer = csv::WriterBuilder::new()
                    .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
                    .from_writer(Vec::new());
                writer.write_record(["paper_id", "title", "abstract", "authors"]).unwrap();
                let mut expected_lines = Vec::new();
                let mut line = 2u64;
                for (i, (title, abstract_text)) in rows.iter().enumerate() {
                    expected_lines.push(line);
                    let id = format!("2401.{i:05}");
                    writer.write_record([id.as_str(), title, abstract_text, "A;B"]).unwrap();
                    line += 1 + (title.matches('\n').count() + abstract_text.matches('\n').count()) as u64;
                }
                let bytes = writer.into_inner().unwrap();
                let (got, issues, _) = read(&bytes);
                prop_assert!(issues.is_empty(), "{:?}", issues);
                prop_assert_eq!(got.len(), rows.len());
                for (i, ((line, id, title, abstract_text), (t, a))) in got.iter().zip(&rows).enumerate() {
                    prop_assert_eq!(id, &format!("2401.{i:05}"));
                    prop_assert_eq!(title, t);
                    prop_assert_eq!(abstract_text, a);
                    prop_assert_eq!(*line, expected_lines[i]);
                }
            }
        }
    }
}
