//! Streaming reader for metadata CSVs (RFC 4180: quoted fields with commas,
//! quotes and newlines; CRLF; a UTF-8 BOM).
//!
//! The record splitter is written for this job rather than taken from the
//! `csv` crate, for three reasons the tests pin down: it jumps from quote to
//! quote with SIMD `memchr` instead of stepping a byte-at-a-time state
//! machine (the backlog refresh reads gigabytes of CSV, and this is most of
//! its time); it knows each record's exact bytes, so line numbers in
//! messages are true for CRLF files too; and it sees an unbalanced quote
//! (which would swallow the rest of the file into one field) for what it is,
//! reports it and resumes on the next line. The `csv` crate remains the
//! oracle: a property test checks that everything it writes reads back
//! unchanged.
//!
//! Only `paper_id`, `title` and `abstract` are interpreted; they are handed
//! out as borrowed `&str`, so reading allocates per file, not per row.
//! `paper_id` is always a string (`2401.10000` stays `2401.10000`). A row
//! with the wrong number of fields, invalid UTF-8 in a used field, or a bad
//! `paper_id` is reported and skipped.

use std::fs::File;
use std::io::Read;
use std::ops::{ControlFlow, Range};
use std::path::Path;

use super::InputIssue;

/// Columns every metadata CSV must have.
pub const REQUIRED_COLUMNS: [&str; 3] = ["paper_id", "title", "abstract"];

/// Bytes read from the file at a time; large reads keep the kernel's
/// readahead busy on a cold page cache.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

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
    /// `updated_at` as written; empty when the file has no such column or
    /// the field is not UTF-8 (it then counts as the oldest date).
    pub updated_at: &'a str,
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
    /// The optional `updated_at` column.
    updated_at: Option<usize>,
    count: usize,
}

/// One field of the current record, relative to the record's first byte.
#[derive(Clone, Copy, Debug)]
struct Field {
    start: usize,
    end: usize,
    /// Holds `""` escapes that must be undone before use.
    escaped: bool,
    /// Text followed the closing quote (`"ab"cd`): not RFC 4180.
    stray: bool,
}

/// Outcome of splitting the bytes at the start of the buffer.
enum Split {
    /// A whole record of this many bytes (terminator included).
    Record(usize),
    /// The record continues past the data read so far.
    Incomplete,
    /// End of file inside a quoted field.
    Unterminated,
}

/// Splits one record off the front of `data` into `fields`. `at_eof` says
/// whether `data` ends the file.
fn split_record(data: &[u8], at_eof: bool, fields: &mut Vec<Field>) -> Split {
    fields.clear();
    let len = data.len();
    let mut i = 0;
    loop {
        if i < len && data[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            let mut escaped = false;
            let end = loop {
                let Some(k) = memchr::memchr(b'"', &data[j..]) else {
                    return if at_eof {
                        Split::Unterminated
                    } else {
                        Split::Incomplete
                    };
                };
                let quote = j + k;
                if quote + 1 < len && data[quote + 1] == b'"' {
                    escaped = true;
                    j = quote + 2;
                } else if quote + 1 == len && !at_eof {
                    return Split::Incomplete;
                } else {
                    break quote;
                }
            };
            i = end + 1;
            let mut stray = false;
            if i < len && !matches!(data[i], b',' | b'\n' | b'\r') {
                stray = true;
                match memchr::memchr3(b',', b'\n', b'\r', &data[i..]) {
                    Some(k) => i += k,
                    None if at_eof => i = len,
                    None => return Split::Incomplete,
                }
            }
            fields.push(Field {
                start,
                end,
                escaped,
                stray,
            });
        } else {
            let end = match memchr::memchr3(b',', b'\n', b'\r', &data[i..]) {
                Some(k) => i + k,
                None if at_eof => len,
                None => return Split::Incomplete,
            };
            fields.push(Field {
                start: i,
                end,
                escaped: false,
                stray: false,
            });
            i = end;
        }
        if i >= len {
            return if at_eof {
                Split::Record(len)
            } else {
                Split::Incomplete
            };
        }
        match data[i] {
            b',' => i += 1,
            b'\n' => return Split::Record(i + 1),
            _ => {
                // \r, alone or followed by \n.
                if i + 1 < len {
                    return Split::Record(if data[i + 1] == b'\n' { i + 2 } else { i + 1 });
                }
                return if at_eof {
                    Split::Record(len)
                } else {
                    Split::Incomplete
                };
            }
        }
    }
}

/// What [`RecordReader::next_record`] found.
enum Next {
    /// A record: its first line; fields are in `RecordReader::fields`.
    Record { line: u64 },
    /// A record that cannot be read (unbalanced quote, over the size cap),
    /// skipped up to the next line.
    Broken { line: u64, message: String },
    /// End of file.
    End,
}

/// Splits a file into records with exact line positions.
struct RecordReader {
    file: File,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// Line number at `buf[start]`.
    line: u64,
    /// The last record's bytes in `buf`.
    record: Range<usize>,
    fields: Vec<Field>,
    /// Bytes read at a time (and the buffer's starting size).
    chunk: usize,
}

impl RecordReader {
    fn new(file: File, chunk: usize) -> Self {
        RecordReader {
            file,
            buf: vec![0; chunk],
            start: 0,
            end: 0,
            eof: false,
            line: 1,
            record: 0..0,
            fields: Vec::with_capacity(32),
            chunk,
        }
    }

    /// Reads more of the file behind the unconsumed bytes, moving them to
    /// the front and growing the buffer when a record fills it.
    fn refill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_RECORD_BYTES + self.chunk);
            self.buf.resize(grown, 0);
        }
        let limit = (self.end + self.chunk).min(self.buf.len());
        let n = self.file.read(&mut self.buf[self.end..limit])?;
        self.end += n;
        self.eof = n == 0;
        Ok(())
    }

    fn next_record(&mut self) -> std::io::Result<Next> {
        loop {
            // Blank lines (and a CR's LF split across reads) are not records.
            while self.start < self.end && matches!(self.buf[self.start], b'\n' | b'\r') {
                if self.buf[self.start] == b'\n' {
                    self.line += 1;
                }
                self.start += 1;
            }
            if self.start == self.end {
                if self.eof {
                    return Ok(Next::End);
                }
                self.refill()?;
                continue;
            }
            let data = &self.buf[self.start..self.end];
            let broken = match split_record(data, self.eof, &mut self.fields) {
                Split::Record(len) => {
                    let line = self.line;
                    self.line += memchr::memchr_iter(b'\n', &data[..len]).count() as u64;
                    self.record = self.start..self.start + len;
                    self.start += len;
                    return Ok(Next::Record { line });
                }
                Split::Incomplete if data.len() < MAX_RECORD_BYTES => {
                    self.refill()?;
                    continue;
                }
                Split::Incomplete => format!("row is longer than {} MB", MAX_RECORD_BYTES >> 20),
                Split::Unterminated => "a quoted field is never closed (unbalanced '\"')".to_string(),
            };
            // Skip the broken row's first line and carry on after it.
            let line = self.line;
            match memchr::memchr(b'\n', data) {
                Some(k) => {
                    self.start += k + 1;
                    self.line += 1;
                }
                None => self.start = self.end,
            }
            return Ok(Next::Broken {
                line,
                message: format!("{broken}; row skipped, reading resumes on the next line"),
            });
        }
    }

    /// Field `i` of the last record as it is in the file (escapes not undone).
    fn raw_field(&self, i: usize) -> &[u8] {
        let field = self.fields[i];
        &self.buf[self.record.start + field.start..self.record.start + field.end]
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
    read_rows_in_chunks(path, CHUNK_BYTES, issues, |row| {
        on_row(row);
        ControlFlow::Continue(())
    })
}

/// [`read_rows`] that stops reading as soon as `on_row` returns
/// [`ControlFlow::Break`] (a run that was stopped must not go on parsing a
/// large file).
pub fn read_rows_while(
    path: &Path,
    issues: &mut Vec<InputIssue>,
    on_row: impl FnMut(Row<'_>) -> ControlFlow<()>,
) -> Result<FileSummary, InputIssue> {
    read_rows_in_chunks(path, CHUNK_BYTES, issues, on_row)
}

fn read_error(path: &Path, e: std::io::Error) -> InputIssue {
    InputIssue::file(path, format!("read error: {e}; the rest of the file is skipped"))
}

/// Opens `path`, skips a UTF-8 byte order mark and reads the header row:
/// the reader is left at the first row, with the header's names (trimmed).
/// `Err` says why the file cannot be read at all.
fn open_with_header(path: &Path, chunk: usize) -> Result<(RecordReader, Vec<String>), InputIssue> {
    let file =
        File::open(path).map_err(|e| InputIssue::file(path, format!("cannot open: {e}; file skipped")))?;
    let mut reader = RecordReader::new(file, chunk.max(1));
    while reader.end < 3 && !reader.eof {
        reader.refill().map_err(|e| read_error(path, e))?;
    }
    if reader.buf[..reader.end].starts_with(b"\xEF\xBB\xBF") {
        reader.start = 3;
    }
    match reader.next_record().map_err(|e| read_error(path, e))? {
        Next::End => Err(InputIssue::file(path, "empty file: no header row; file skipped")),
        Next::Broken { message, .. } => Err(InputIssue::file(
            path,
            format!("unreadable header row: {message}; file skipped"),
        )),
        Next::Record { .. } if reader.buf[reader.record.clone()].contains(&0) => Err(InputIssue::file(
            path,
            "the header row holds NUL bytes: this is a binary or UTF-16 file, not UTF-8 CSV text; \
             file skipped (save it as UTF-8)",
        )),
        Next::Record { .. } => {
            let names = (0..reader.fields.len())
                .map(|i| String::from_utf8_lossy(reader.raw_field(i)).trim().to_string())
                .collect();
            Ok((reader, names))
        }
    }
}

/// [`read_rows`] with a chosen read size; tests use tiny ones so that every
/// record straddles reads.
fn read_rows_in_chunks(
    path: &Path,
    chunk: usize,
    issues: &mut Vec<InputIssue>,
    mut on_row: impl FnMut(Row<'_>) -> ControlFlow<()>,
) -> Result<FileSummary, InputIssue> {
    let (mut reader, header_names) = open_with_header(path, chunk)?;
    let columns = find_columns(&header_names).map_err(|m| InputIssue::file(path, m))?;

    let mut summary = FileSummary::default();
    let mut unescaped: [Vec<u8>; 3] = Default::default();
    // Rows kept although a column papersys does not use is not UTF-8:
    // (first line, column, count), reported once per file.
    let mut foreign: Option<(u64, usize, u64)> = None;
    loop {
        let line = match reader.next_record() {
            Ok(Next::Record { line }) => line,
            Ok(Next::End) => break,
            Ok(Next::Broken { line, message }) => {
                summary.skipped += 1;
                issues.push(InputIssue::row(path, line, message));
                continue;
            }
            Err(e) => {
                issues.push(read_error(path, e));
                break;
            }
        };
        match check_row(&reader, &columns, &mut unescaped) {
            Ok((paper_id, title, abstract_text)) => {
                if let Some(column) = non_utf8_field(&reader) {
                    let entry = foreign.get_or_insert((line, column, 0));
                    entry.2 += 1;
                }
                summary.rows += 1;
                // Dates hold no quotes: the field is used as written.
                let updated_at = columns
                    .updated_at
                    .and_then(|i| std::str::from_utf8(reader.raw_field(i)).ok())
                    .unwrap_or("");
                let flow = on_row(Row {
                    line,
                    paper_id,
                    title,
                    abstract_text,
                    updated_at,
                });
                if flow.is_break() {
                    return Ok(summary);
                }
            }
            Err(message) => {
                summary.skipped += 1;
                let taken = swallowed(&reader.buf[reader.record.clone()], line);
                issues.push(InputIssue::row(
                    path,
                    line,
                    format!("{message}; row skipped{taken}"),
                ));
            }
        }
    }
    if let Some((line, column, rows)) = foreign {
        let name = header_names.get(column).map_or("?", String::as_str);
        issues.push(InputIssue::row(path,
            line,
            format!(
                "invalid UTF-8 in column `{name}` (the file must be UTF-8; Latin-1?); {rows} row(s) have such a \
                 column — papersys does not use it, so they are kept"
            ),
        ));
    }
    if summary.rows == 0 && summary.skipped == 0 {
        issues.push(InputIssue::file(path, "header only, no rows"));
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
            updated_at: find("updated_at"),
            count: names.len(),
        }),
        _ => Err(format!(
            "missing required column(s) {} (header has: {}); file skipped",
            missing.join(", "),
            shorten(&names.join(", "), 200)
        )),
    }
}

/// `text` cut to about `max` bytes, control characters escaped, for
/// messages quoting input that may be binary garbage.
fn shorten(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= max {
            out.push_str(&format!("... ({} bytes in all)", text.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a skipped record that runs over several lines took with it: a
/// stray quote makes one record of the lines up to the next quote, and each
/// of those lines may be a paper of its own. Names the lines and every
/// paper id they seem to start with; empty for a one-line record.
fn swallowed(record: &[u8], first_line: u64) -> String {
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    let lines: Vec<&[u8]> = record.split(|&b| b == b'\n').collect();
    if lines.len() < 2 {
        return String::new();
    }
    let last = first_line + lines.len() as u64 - 1;
    let papers: Vec<String> = lines
        .iter()
        .zip(first_line..)
        .filter_map(|(text, line)| {
            let first = text.split(|&b| b == b',').next().unwrap_or_default();
            let id = std::str::from_utf8(first).ok()?.trim().trim_matches('"');
            let plausible = !id.is_empty()
                && id.len() <= 40
                && id.bytes().any(|b| b.is_ascii_digit())
                && !id
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"');
            plausible.then(|| format!("{id} (line {line})"))
        })
        .collect();
    if papers.len() < 2 {
        return format!(" (the record runs over lines {first_line}-{last}; a stray quote?)");
    }
    format!(
        " (the record runs over lines {first_line}-{last}, a stray quote joining what look like {} rows: \
         papers {} are all skipped; fix the quote to keep them)",
        papers.len(),
        papers.join(", ")
    )
}

/// The first field of the last record that is not UTF-8, if any.
fn non_utf8_field(reader: &RecordReader) -> Option<usize> {
    if std::str::from_utf8(&reader.buf[reader.record.clone()]).is_ok() {
        return None;
    }
    (0..reader.fields.len()).find(|&i| std::str::from_utf8(reader.raw_field(i)).is_err())
}

fn check_row<'r>(
    reader: &'r RecordReader,
    columns: &Columns,
    unescaped: &'r mut [Vec<u8>; 3],
) -> Result<(&'r str, &'r str, &'r str), String> {
    if reader.fields.len() != columns.count {
        return Err(format!(
            "expected {} fields, found {}",
            columns.count,
            reader.fields.len()
        ));
    }
    if let Some(i) = reader.fields.iter().position(|f| f.stray) {
        return Err(format!("text after the closing quote of field {}", i + 1));
    }
    let [id_buf, title_buf, abstract_buf] = unescaped;
    let field = |index: usize, name: &str, buf: &'r mut Vec<u8>| -> Result<&'r str, String> {
        let raw = reader.raw_field(index);
        let bytes: &'r [u8] = if reader.fields[index].escaped {
            buf.clear();
            let mut rest = raw;
            while let Some(k) = memchr::memchr(b'"', rest) {
                // Inside a quoted field every quote is doubled.
                buf.extend_from_slice(&rest[..=k]);
                rest = rest.get(k + 2..).unwrap_or_default();
            }
            buf.extend_from_slice(rest);
            buf
        } else {
            raw
        };
        std::str::from_utf8(bytes).map_err(|e| {
            format!(
                "invalid UTF-8 in `{name}` at byte {} of the field (the file must be UTF-8)",
                e.valid_up_to()
            )
        })
    };
    let paper_id = field(columns.paper_id, "paper_id", id_buf)?;
    let title = field(columns.title, "title", title_buf)?;
    let abstract_text = field(columns.abstract_text, "abstract", abstract_buf)?;
    for (name, value) in [("title", title), ("abstract", abstract_text)] {
        if let Some(at) = memchr::memchr(0, value.as_bytes()) {
            return Err(format!(
                "NUL byte in `{name}` at byte {at} of the field (binary data in a text file)"
            ));
        }
    }
    if paper_id.is_empty() {
        return Err("empty `paper_id`".into());
    }
    if let Some(bad) = paper_id.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`paper_id` {paper_id:?} contains {bad:?}"));
    }
    Ok((paper_id, title, abstract_text))
}

/// Reads the named `columns` of every row of `path` in file order, for
/// readers that need other columns than the text (the recommender: dates
/// and categories of every paper, whole records of a few):
/// `on_row(line, values)` with `values[i]` the value of `columns[i]`, `""`
/// where the file has no such column. Only `paper_id` is required. As
/// [`super::read_records`] does, a row is reported and skipped when its
/// field count differs from the header's, it is not UTF-8, or its
/// `paper_id` is blank; `Err` when the whole file is unusable. Returns the
/// rows handed out.
pub fn read_columns<const N: usize>(
    path: &Path,
    columns: [&str; N],
    issues: &mut Vec<InputIssue>,
    mut on_row: impl FnMut(u64, [&str; N]),
) -> Result<u64, InputIssue> {
    let (mut reader, names) = open_with_header(path, CHUNK_BYTES)?;
    let Some(id_column) = names.iter().position(|n| n == "paper_id") else {
        return Err(InputIssue::file(
            path,
            "no `paper_id` column; file skipped".to_string(),
        ));
    };
    let index: [Option<usize>; N] = columns.map(|c| names.iter().position(|n| n == c));
    let mut unescaped: [Vec<u8>; N] = std::array::from_fn(|_| Vec::new());
    let mut rows = 0u64;
    loop {
        let line = match reader.next_record() {
            Ok(Next::Record { line }) => line,
            Ok(Next::End) => break,
            Ok(Next::Broken { line, message }) => {
                issues.push(InputIssue::row(path, line, message));
                continue;
            }
            Err(e) => {
                issues.push(read_error(path, e));
                break;
            }
        };
        if reader.fields.len() != names.len() {
            let message = format!(
                "expected {} fields, found {}; row skipped",
                names.len(),
                reader.fields.len()
            );
            issues.push(InputIssue::row(path, line, message));
            continue;
        }
        if let Some(i) = reader.fields.iter().position(|f| f.stray) {
            issues.push(InputIssue::row(
                path,
                line,
                format!("text after the closing quote of field {}; row skipped", i + 1),
            ));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&reader.buf[reader.record.clone()]) else {
            let column = non_utf8_field(&reader)
                .and_then(|i| names.get(i))
                .map_or("?", String::as_str);
            issues.push(InputIssue::row(
                path,
                line,
                format!("invalid UTF-8 in column `{column}` (the file must be UTF-8); row skipped"),
            ));
            continue;
        };
        let field = |i: usize| {
            let f = reader.fields[i];
            text.get(f.start..f.end).unwrap_or_default()
        };
        if field(id_column).trim().is_empty() {
            issues.push(InputIssue::row(
                path,
                line,
                "empty paper_id; row skipped".to_string(),
            ));
            continue;
        }
        for (k, column) in index.iter().enumerate() {
            if let Some(i) = *column
                && reader.fields[i].escaped
            {
                // Inside a quoted field every quote is doubled.
                let buf = &mut unescaped[k];
                buf.clear();
                let mut rest = field(i).as_bytes();
                while let Some(q) = memchr::memchr(b'"', rest) {
                    buf.extend_from_slice(&rest[..=q]);
                    rest = rest.get(q + 2..).unwrap_or_default();
                }
                buf.extend_from_slice(rest);
            }
        }
        let values: [&str; N] = std::array::from_fn(|k| match index[k] {
            Some(i) if reader.fields[i].escaped => std::str::from_utf8(&unescaped[k]).unwrap_or_default(),
            Some(i) => field(i),
            None => "",
        });
        rows += 1;
        on_row(line, values);
    }
    Ok(rows)
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
        let outcome = read_chunked(content, CHUNK_BYTES);
        // Every record must read the same when it straddles reads.
        let chunks: &[usize] = if content.len() < 64 * 1024 {
            &[1, 2, 3, 5, 8, 64]
        } else {
            &[4096]
        };
        for &chunk in chunks {
            let small = read_chunked(content, chunk);
            assert_eq!(small.0, outcome.0, "rows differ with {chunk}-byte reads");
            assert_eq!(small.1, outcome.1, "issues differ with {chunk}-byte reads");
        }
        outcome
    }

    fn read_chunked(content: &[u8], chunk: usize) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        std::fs::write(&path, content).unwrap();
        let mut rows = Vec::new();
        let mut issues = Vec::new();
        let result = read_rows_in_chunks(&path, chunk, &mut issues, |r| {
            rows.push((r.line, r.paper_id.into(), r.title.into(), r.abstract_text.into()));
            ControlFlow::Continue(())
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

    /// Both readers open a file the same way: an unusable one is refused
    /// by both, with the same words.
    #[test]
    fn read_columns_refuses_an_unusable_file_as_read_rows_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        let cases: [&[u8]; 3] = [
            b"",
            b"\xEF\xBB\xBF\"paper_id,title\n",
            b"p\0a\0p\0e\0r\0,title,abstract\n1,t,a\n",
        ];
        for content in cases {
            std::fs::write(&path, content).unwrap();
            let by_rows = read_chunked(content, CHUNK_BYTES).2.unwrap_err();
            let by_columns = read_columns(&path, ["paper_id"], &mut Vec::new(), |_, _| {})
                .unwrap_err()
                .message;
            assert_eq!(by_columns, by_rows, "{content:?}");
        }
        std::fs::remove_file(&path).unwrap();
        let missing = read_columns(&path, ["paper_id"], &mut Vec::new(), |_, _| {}).unwrap_err();
        assert!(
            missing.message.starts_with("cannot open: "),
            "{}",
            missing.message
        );
        std::fs::write(&path, "id,title\n1,t\n").unwrap();
        let no_id = read_columns(&path, ["paper_id"], &mut Vec::new(), |_, _| {}).unwrap_err();
        assert_eq!(no_id.message, "no `paper_id` column; file skipped");
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
    fn nul_bytes_skip_the_row_or_the_file() {
        let (rows, issues, _) = read(b"paper_id,title,abstract\n1,t,a\0b\n2,t,a\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            issues,
            [
                "Some(2): NUL byte in `abstract` at byte 1 of the field (binary data in a text file); row skipped"
            ]
        );
        let utf16: Vec<u8> = "paper_id,title,abstract\n1,t,a\n"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let message = read(&utf16).2.unwrap_err();
        assert!(message.contains("UTF-16"), "{message}");
    }

    #[test]
    fn latin1_in_an_unused_column_keeps_the_rows_and_says_so_once() {
        let csv = b"paper_id,title,abstract,journal_ref\n1,t,a,\xc9pijournal\n2,t,a,ok\n3,t,a,G\xe9om\n";
        let (rows, issues, _) = read(csv);
        assert_eq!(rows.len(), 3);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].starts_with("Some(2): invalid UTF-8 in column `journal_ref`")
                && issues[0].contains("2 row(s)"),
            "{issues:?}"
        );
    }

    #[test]
    fn a_binary_header_is_quoted_short_and_escaped() {
        let mut garbage = vec![0x1bu8; 5000];
        garbage.extend_from_slice(b"\n1,2\n");
        let message = read(&garbage).2.unwrap_err();
        assert!(message.len() < 600, "{message}");
        assert!(
            message.contains("\\u{1b}") && message.contains("bytes in all"),
            "{message}"
        );
    }

    #[test]
    fn bad_ids_are_refused() {
        let (rows, issues, _) = read(b"paper_id,title,abstract\n,t,a\n\"a b\",t,a\n\"x\0\",t,a\nok,t,a\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(issues.len(), 3, "{issues:?}");
    }

    #[test]
    fn text_after_a_closing_quote_is_reported() {
        let (rows, issues, _) = read(b"paper_id,title,abstract\n1,\"ab\"cd,a\n2,t,a\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            issues,
            ["Some(2): text after the closing quote of field 2; row skipped"]
        );
    }

    #[test]
    fn a_stray_quote_names_every_line_and_paper_it_swallows() {
        let csv = b"paper_id,title,abstract\n\
                    2401.00001,\"Stray quote title,abs one\n\
                    2401.00002,title two,abs two\"\n\
                    2401.00003,t3,a3\n";
        let (rows, issues, _) = read(csv);
        assert_eq!(rows.len(), 1, "{issues:?}");
        assert_eq!(rows[0].1, "2401.00003");
        assert_eq!(issues.len(), 1, "{issues:?}");
        let issue = &issues[0];
        assert!(issue.starts_with("Some(2): "), "{issue}");
        assert!(issue.contains("lines 2-3"), "{issue}");
        assert!(
            issue.contains("2401.00001 (line 2)") && issue.contains("2401.00002 (line 3)"),
            "{issue}"
        );
    }

    #[test]
    fn lone_cr_and_blank_lines_end_records() {
        let (rows, issues, _) = read(b"paper_id,title,abstract\r1,t,a\r\r\n\n2,t,\"x\ny\"\r3,t,a");
        assert!(issues.is_empty(), "{issues:?}");
        let got: Vec<_> = rows.iter().map(|r| (r.0, r.1.as_str(), r.3.as_str())).collect();
        assert_eq!(got, [(1, "1", "a"), (3, "2", "x\ny"), (4, "3", "a")]);
    }

    #[test]
    fn escaped_quotes_are_undone_in_every_used_field() {
        let (rows, _, _) = read(b"paper_id,title,abstract\n\"a\"\"b\",\"\"\"t\"\"\",\"x\"\"\"\"y\"\n");
        assert_eq!(rows[0].1, "a\"b");
        assert_eq!(rows[0].2, "\"t\"");
        assert_eq!(rows[0].3, "x\"\"y");
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
