//! The metadata a query shows and filters by: title, categories and
//! publication date per paper, read from a year's metadata CSVs when its
//! segment is built, so that a query never parses CSV.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::metadata::{InputIssue, MetadataFile};
use crate::store::cache::FileStamp;

/// What the catalog keeps of one paper.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaperMeta {
    /// Title on one line (arXiv's hard wraps collapsed).
    pub title: String,
    /// Categories, primary first.
    pub categories: Vec<String>,
    /// `published_at` as in the CSV.
    pub published_at: String,
}

/// `text` with every run of whitespace made one space, trimmed.
pub fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line
}

fn meta_of(title: &str, categories: &str, primary: &str, published_at: &str) -> PaperMeta {
    let mut list: Vec<String> = categories
        .split([';', ' '])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let primary = primary.trim();
    if !primary.is_empty() {
        list.retain(|c| c != primary);
        list.insert(0, primary.to_string());
    }
    PaperMeta {
        title: one_line(title),
        categories: list,
        published_at: published_at.trim().to_string(),
    }
}

/// Papers by id. Hashed with foldhash rather than SipHash: the keys are
/// ids from the user's own files, and a year's catalog hashes every id twice
/// (inserted while parsed, taken out in the year file's order).
pub type Papers = HashMap<String, PaperMeta, foldhash::fast::RandomState>;

/// Size and xxh3-64 of a file's bytes: what a catalog was read from.
pub type ContentKey = (u64, u64);

/// The papers of one year's metadata files (given in precedence order: a
/// later row of the same paper wins), with the rows and files that could
/// not be read and each file's [`ContentKey`] (`None` for a file that
/// could not be read to its end, or changed while read). Rows are split by
/// [`crate::metadata::read_columns`] (SIMD quote to quote) and only the
/// columns shown are decoded, so a year's gigabyte of abstracts costs
/// little more than reading it. `expected` papers are room made up front
/// (the year file's row count: growing a table of millions rehashes it).
pub fn read_year<'a>(
    files: impl IntoIterator<Item = &'a MetadataFile>,
    expected: usize,
) -> (Papers, Vec<InputIssue>, Vec<Option<ContentKey>>) {
    let mut papers = Papers::with_capacity_and_hasher(expected, Default::default());
    let mut issues = Vec::new();
    let mut keys = Vec::new();
    for file in files {
        match read_file(&file.path, &mut papers, &mut issues) {
            Ok(key) => keys.push(key),
            Err(issue) => {
                issues.push(issue);
                keys.push(None);
            }
        }
    }
    (papers, issues, keys)
}

/// The rows of `file` past its first `from` bytes (which must end a row),
/// and the [`ContentKey`] of the whole file, when its first `from` bytes
/// still hash to `prefix`; `None` when they do not (the file was not only
/// appended to) or it cannot be read.
pub fn read_appended(file: &MetadataFile, from: u64, prefix: u64) -> Option<(Papers, ContentKey)> {
    let mut input = File::open(&file.path).ok()?;
    let mut hasher = Xxh3::new();
    let mut head = (&mut input).take(from);
    let mut sink = HashWriter(&mut hasher, b'\n');
    let copied = std::io::copy(&mut head, &mut sink).ok()?;
    // The old content must end a row for the new bytes to start one.
    if copied != from || sink.1 != b'\n' || hasher.digest() != prefix {
        return None;
    }
    let mut tail = Vec::new();
    input.read_to_end(&mut tail).ok()?;
    hasher.update(&tail);
    let key = (from + tail.len() as u64, hasher.digest());
    // The header comes from the file's first row; the tail is parsed with it.
    input.seek(SeekFrom::Start(0)).ok()?;
    let mut papers = Papers::default();
    let mut issues = Vec::new();
    let mut header = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::new(input));
    let headers = header.byte_headers().ok()?.clone();
    read_rows(&file.path, &headers, &tail[..], &mut papers, &mut issues).ok()?;
    Some((papers, key))
}

/// A sink that hashes what it is given and remembers its last byte.
struct HashWriter<'a>(&'a mut Xxh3, u8);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        if let Some(&last) = buf.last() {
            self.1 = last;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The [`ContentKey`] of a file, mapped rather than read (no copy).
fn content_key(path: &Path) -> Option<ContentKey> {
    let file = File::open(path).ok()?;
    if file.metadata().ok()?.len() == 0 {
        return Some((0, xxhash_rust::xxh3::xxh3_64(&[])));
    }
    // SAFETY: read-only map of a metadata file, which papersys only ever
    // replaces by rename; a file changed meanwhile is caught by the stamps
    // compared around the read (`read_file`).
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    Some((map.len() as u64, xxhash_rust::xxh3::xxh3_64(&map)))
}

/// The columns the catalog keeps.
const COLUMNS: [&str; 5] = [
    "paper_id",
    "title",
    "categories",
    "primary_category",
    "published_at",
];

fn read_file(
    path: &Path,
    papers: &mut Papers,
    issues: &mut Vec<InputIssue>,
) -> Result<Option<ContentKey>, InputIssue> {
    let before = FileStamp::of(path);
    let key = content_key(path);
    // The fast record splitter the rest of papersys reads metadata with.
    crate::metadata::read_columns(
        path,
        COLUMNS,
        issues,
        |_, [id, title, categories, primary, published]| {
            let id = id.trim();
            if !id.is_empty() {
                papers.insert(id.to_string(), meta_of(title, categories, primary, published));
            }
        },
    )?;
    // The key speaks of the bytes parsed only if the file did not change meanwhile.
    Ok(key.filter(|_| before.is_some() && FileStamp::of(path) == before))
}

/// Reads headerless rows from `input` with `headers`.
fn read_rows(
    path: &Path,
    headers: &csv::ByteRecord,
    input: impl Read,
    papers: &mut Papers,
    issues: &mut Vec<InputIssue>,
) -> Result<(), ()> {
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_reader(input);
    let mut reader = reader;
    reader.set_byte_headers(headers.clone());
    if read_records(path, headers, reader, papers, issues) {
        Ok(())
    } else {
        Err(())
    }
}

/// Reads every row of `reader` into `papers`; false when an I/O error
/// stopped it.
fn read_records<R: Read>(
    path: &Path,
    headers: &csv::ByteRecord,
    mut reader: csv::Reader<R>,
    papers: &mut Papers,
    issues: &mut Vec<InputIssue>,
) -> bool {
    let issue = |line: Option<u64>, message: String| InputIssue {
        path: path.to_path_buf(),
        line,
        message,
    };
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.strip_prefix("\u{feff}".as_bytes()).unwrap_or(h) == name.as_bytes())
    };
    let Some(id_column) = column("paper_id") else {
        issues.push(issue(None, "no `paper_id` column".into()));
        return true;
    };
    let [title, categories, primary, published] =
        ["title", "categories", "primary_category", "published_at"].map(column);
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line());
                let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                issues.push(issue(line, format!("row skipped: {e}")));
                if io {
                    return false;
                }
                continue;
            }
        }
        let field = |c: Option<usize>| {
            c.and_then(|c| record.get(c))
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        };
        let id = field(Some(id_column));
        let id = id.trim();
        if id.is_empty() {
            continue;
        }
        let meta = meta_of(
            &field(title),
            &field(categories),
            &field(primary),
            &field(published),
        );
        papers.insert(id.to_string(), meta);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_like_read_records_and_later_rows_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        std::fs::write(
            &path,
            "\u{feff}paper_id,title,abstract,categories\n1,\"Old\",a,cs.CL\n2,t\n1,\"New,\n title\",a,cs.AI;cs.CL\n",
        )
        .unwrap();
        let file = MetadataFile {
            path: path.clone(),
            origin: "metadata/metadata-2024.csv".into(),
            year: crate::metadata::Year::parse("2024").unwrap(),
        };
        let (papers, issues, keys) = read_year([&file], 0);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            keys,
            [Some((bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)))]
        );
        assert_eq!(papers.len(), 1);
        assert_eq!(papers["1"].title, "New, title");
        assert_eq!(papers["1"].categories, ["cs.AI", "cs.CL"]);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].line, Some(3));
    }

    #[test]
    fn primary_category_comes_first_and_titles_are_one_line() {
        let meta = meta_of(
            "A title,\n  wrapped ",
            "cs.AI;cs.CL",
            "cs.CL",
            " 2024-01-02T00:00:00Z",
        );
        assert_eq!(meta.title, "A title, wrapped");
        assert_eq!(meta.categories, ["cs.CL", "cs.AI"]);
        assert_eq!(meta.published_at, "2024-01-02T00:00:00Z");
    }
}
