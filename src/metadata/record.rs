//! Whole metadata rows: the contract's 13 columns, for the stages that need
//! more than the embedded text (ingestion writes them, search and the
//! recommender show and filter by them).
//!
//! The embed path keeps its own zero-copy reader ([`super::read_rows`]) for
//! the three columns it uses; this one goes through the `csv` crate and owns
//! its strings, which is what a writer and a join need.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::InputIssue;

/// The contract's metadata columns, in the order papersys writes them.
pub const COLUMNS: [&str; 13] = [
    "paper_id",
    "title",
    "abstract",
    "categories",
    "primary_category",
    "authors",
    "published_at",
    "updated_at",
    "doi",
    "comment",
    "journal_ref",
    "license",
    "source",
];

/// One paper's metadata row. Every field is a string as in the file; an
/// absent optional column reads as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaperRecord {
    /// arXiv id, e.g. `2401.00001` or `hep-th/9901001`.
    pub paper_id: String,
    /// Title as arXiv sends it (hard wraps kept).
    pub title: String,
    /// Abstract as arXiv sends it.
    #[serde(rename = "abstract")]
    pub abstract_text: String,
    /// `;`-joined categories, primary first.
    pub categories: String,
    /// The first category.
    pub primary_category: String,
    /// `;`-joined authors.
    pub authors: String,
    /// First version's date, ISO-8601.
    pub published_at: String,
    /// Latest version's date, ISO-8601 (may be empty in files of other tools).
    pub updated_at: String,
    /// DOI(s).
    pub doi: String,
    /// The authors' comment.
    pub comment: String,
    /// Journal reference.
    pub journal_ref: String,
    /// License URL.
    pub license: String,
    /// What wrote the row.
    pub source: String,
}

impl PaperRecord {
    /// The 13 columns, in the contract's order (the CSV header's).
    pub fn fields(&self) -> [&str; 13] {
        [
            &self.paper_id,
            &self.title,
            &self.abstract_text,
            &self.categories,
            &self.primary_category,
            &self.authors,
            &self.published_at,
            &self.updated_at,
            &self.doi,
            &self.comment,
            &self.journal_ref,
            &self.license,
            &self.source,
        ]
    }

    /// A record from its 13 columns in the contract's order (the inverse of
    /// [`PaperRecord::fields`]).
    pub fn from_fields(fields: [&str; 13]) -> PaperRecord {
        let [
            paper_id,
            title,
            abstract_text,
            categories,
            primary_category,
            authors,
            published_at,
            updated_at,
            doi,
            comment,
            journal_ref,
            license,
            source,
        ] = fields.map(str::to_string);
        PaperRecord {
            paper_id,
            title,
            abstract_text,
            categories,
            primary_category,
            authors,
            published_at,
            updated_at,
            doi,
            comment,
            journal_ref,
            license,
            source,
        }
    }

    /// The categories as a list (`;`-separated in the file; spaces tolerated).
    pub fn category_list(&self) -> impl Iterator<Item = &str> {
        self.categories
            .split([';', ' '])
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }

    /// The date that says how recent the paper is: `updated_at`, or
    /// `published_at` when the paper was never revised (empty `updated_at`).
    pub fn effective_date(&self) -> &str {
        if self.updated_at.trim().is_empty() {
            self.published_at.trim()
        } else {
            self.updated_at.trim()
        }
    }
}

/// Reads every row of a metadata CSV in file order, calling `on_record` for
/// each. A row that cannot be decoded (wrong field count, invalid UTF-8, an
/// empty `paper_id`) is appended to `issues` with its line and skipped.
/// Returns `Err` when the file as a whole is unusable (cannot be opened, no
/// `paper_id` column).
pub fn read_records(
    path: &Path,
    issues: &mut Vec<InputIssue>,
    mut on_record: impl FnMut(u64, PaperRecord),
) -> Result<u64, InputIssue> {
    let file_issue = |message: String| InputIssue::file(path, message);
    let file = File::open(path).map_err(|e| file_issue(format!("cannot open: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let headers = reader
        .headers()
        .map_err(|e| file_issue(format!("cannot read the header: {e}")))?
        .clone();
    let headers: csv::StringRecord = headers.iter().map(|h| h.trim_start_matches('\u{feff}')).collect();
    if !headers.iter().any(|h| h == "paper_id") {
        return Err(file_issue("no `paper_id` column".to_string()));
    }
    let mut record = csv::StringRecord::new();
    let mut rows = 0u64;
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                issues.push(InputIssue::row(
                    path,
                    e.position().map_or(line, |p| p.line()),
                    format!("row skipped: {e}"),
                ));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        match record.deserialize::<PaperRecord>(Some(&headers)) {
            Ok(paper) if !paper.paper_id.trim().is_empty() => {
                rows += 1;
                on_record(line, paper);
            }
            Ok(_) => issues.push(InputIssue::row(path, line, "empty paper_id; row skipped")),
            Err(e) => issues.push(InputIssue::row(path, line, format!("row skipped: {e}"))),
        }
    }
    Ok(rows)
}

/// Writes `records` as a metadata CSV with the contract's header, in the
/// given order. Quoting is minimal and deterministic, so the same records
/// always give the same bytes.
pub fn write_records<'a, W: Write>(
    out: W,
    records: impl IntoIterator<Item = &'a PaperRecord>,
) -> io::Result<W> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out);
    writer.write_record(COLUMNS)?;
    for record in records {
        writer.serialize(record)?;
    }
    writer.flush()?;
    writer.into_inner().map_err(|e| e.into_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> PaperRecord {
        PaperRecord {
            paper_id: id.to_string(),
            title: "A title,\n  wrapped".to_string(),
            abstract_text: "Says \"hi\".".to_string(),
            categories: "cs.CL;cs.AI".to_string(),
            primary_category: "cs.CL".to_string(),
            published_at: "2024-01-02T00:00:00Z".to_string(),
            ..PaperRecord::default()
        }
    }

    #[test]
    fn writes_and_reads_back_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        let records = vec![record("2401.10000"), record("hep-th/9901001")];
        let file = File::create(&path).unwrap();
        write_records(file, &records).unwrap();
        let mut issues = Vec::new();
        let mut back = Vec::new();
        read_records(&path, &mut issues, |_, r| back.push(r)).unwrap();
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(back, records);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("paper_id,title,abstract,categories,"));
    }

    #[test]
    fn missing_optional_columns_read_as_empty_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        std::fs::write(&path, "paper_id,title,abstract\n1,t,a\n2,t\n,t,a\n3,t,a\n").unwrap();
        let mut issues = Vec::new();
        let mut ids = Vec::new();
        read_records(&path, &mut issues, |_, r| ids.push(r.paper_id)).unwrap();
        assert_eq!(ids, ["1", "3"]);
        let lines: Vec<_> = issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, [Some(3), Some(4)]);
    }

    #[test]
    fn effective_date_falls_back_to_published() {
        let mut r = record("1");
        assert_eq!(r.effective_date(), "2024-01-02T00:00:00Z");
        r.updated_at = "2024-03-01T00:00:00Z".to_string();
        assert_eq!(r.effective_date(), "2024-03-01T00:00:00Z");
    }
}
