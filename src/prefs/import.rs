//! Reading preferences from files people already have: a preference CSV
//! (the Python original's `id`/`paper_id`/`arxiv_id` + `preference` files
//! and feedback exports), or a Zotero CSV export, whose arXiv items become
//! likes. The format is told by the header.

use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;

use super::{Event, Preference, PrefsError, ids, parse_time};
use crate::metadata::InputIssue;

/// Which kind of file was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    /// An id column and a `preference` column (optional `recorded_at`).
    Preferences,
    /// A Zotero CSV export: every item with an arXiv id is a like.
    Zotero,
}

/// What a file held.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The format recognised.
    pub format: ImportFormat,
    /// Data rows read (bad ones included).
    pub rows: u64,
    /// Events in file order.
    pub events: Vec<Event>,
    /// Rows skipped, with their line.
    pub issues: Vec<InputIssue>,
    /// Zotero items without an arXiv id (books, journal-only articles): skipped.
    pub not_arxiv: u64,
}

/// Zotero export columns that may carry an arXiv id, in the order tried.
const ZOTERO_ID_COLUMNS: [&str; 4] = ["Url", "DOI", "Extra", "Archive Location"];

/// Reads `path`. Rows without `recorded_at` (and Zotero items without a
/// readable `Date Added`) are stamped `now`.
pub fn read(path: &Path, now: Timestamp) -> Result<Imported, PrefsError> {
    let unusable = |message: String| PrefsError::ImportFile {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|source| PrefsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(super::without_bom(&bytes));
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| unusable(format!("cannot read the header: {e}")))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let zotero = column("Key").is_some() && column("Item Type").is_some();
    let format = if zotero {
        ImportFormat::Zotero
    } else {
        ImportFormat::Preferences
    };
    let id_column = ["id", "paper_id", "arxiv_id"].into_iter().find_map(column);
    let preference_column = column("preference");
    let zotero_columns: Vec<usize> = ZOTERO_ID_COLUMNS.iter().filter_map(|c| column(c)).collect();
    let date_column = if zotero {
        column("Date Added")
    } else {
        column("recorded_at")
    };
    match format {
        ImportFormat::Zotero if zotero_columns.is_empty() => {
            return Err(unusable(format!(
                "a Zotero export without any of the columns {} that carry arXiv ids; export with all fields",
                ZOTERO_ID_COLUMNS.join(", ")
            )));
        }
        ImportFormat::Preferences if id_column.is_none() || preference_column.is_none() => {
            return Err(unusable(format!(
                "not a preference file (needs an `id`, `paper_id` or `arxiv_id` column and a `preference` \
                 column, optionally `recorded_at`) nor a Zotero CSV export (`Key`, `Item Type`, `Url`, ...); \
                 its columns: {}",
                headers.join(", ")
            )));
        }
        _ => {}
    }
    let mut out = Imported {
        format,
        rows: 0,
        events: Vec::new(),
        issues: Vec::new(),
        not_arxiv: 0,
    };
    let issue = |line: u64, message: String| InputIssue::row(path, line, message);
    for record in reader.records() {
        out.rows += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.issues.push(issue(line, format!("row skipped: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("");
        let date = field(date_column);
        let recorded_at = if date.trim().is_empty() {
            now
        } else if let Some(t) = parse_time(date) {
            t
        } else {
            out.issues
                .push(issue(line, format!("row skipped: `{date}` is not a time")));
            continue;
        };
        match format {
            ImportFormat::Zotero => {
                let found = zotero_columns
                    .iter()
                    .map(|&i| ids::find_all(record.get(i).unwrap_or("")))
                    .find(|ids| !ids.is_empty());
                match found {
                    Some(mut found) => out.events.push(Event {
                        paper_id: found.swap_remove(0),
                        preference: Preference::Like,
                        recorded_at,
                    }),
                    None => out.not_arxiv += 1,
                }
            }
            ImportFormat::Preferences => {
                let raw_id = field(id_column);
                let Some(paper_id) = ids::normalize(raw_id) else {
                    out.issues
                        .push(issue(line, format!("row skipped: `{raw_id}` is not an arXiv id")));
                    continue;
                };
                let raw = field(preference_column);
                let Some(preference) = Preference::parse(raw) else {
                    out.issues.push(issue(
                        line,
                        format!("row skipped: preference `{raw}` is not like, dislike or neutral"),
                    ));
                    continue;
                };
                out.events.push(Event {
                    paper_id,
                    preference,
                    recorded_at,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn preference_files_of_the_original_read_with_any_id_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefs.csv");
        std::fs::write(
            &path,
            "paper_id,preference\n2401.00001v2,like\n2401.00002,DISLIKE\nbad id,like\n2401.00003,meh\n",
        )
        .unwrap();
        let got = read(&path, now()).unwrap();
        assert_eq!(got.format, ImportFormat::Preferences);
        assert_eq!(got.rows, 4);
        let ids: Vec<_> = got
            .events
            .iter()
            .map(|e| (e.paper_id.as_str(), e.preference))
            .collect();
        assert_eq!(
            ids,
            [
                ("2401.00001", Preference::Like),
                ("2401.00002", Preference::Dislike)
            ]
        );
        assert!(got.events.iter().all(|e| e.recorded_at == now()));
        let lines: Vec<_> = got.issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, [Some(4), Some(5)]);
    }

    #[test]
    fn a_file_with_neither_format_is_refused_naming_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "user_id,paper_id,preference_score\nu,2401.00001,0.8\n").unwrap();
        let err = read(&path, now()).unwrap_err();
        assert!(err.is_usage());
        assert!(
            err.to_string().contains("user_id, paper_id, preference_score"),
            "{err}"
        );
    }
}
