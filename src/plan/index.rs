//! A year's metadata as the plan sees it: each CSV's ids, text hashes and
//! `updated_at` (from the metadata index when the file is unchanged, else
//! read), merged over the year's files with the last row of an id winning.

use std::path::Path;

use crate::metadata::{InputIssue, MetadataFile, read_rows};
use crate::store::cache::{CachedIssue, FileIndex, FileStamp, IndexEntry, NO_UPDATED_AT, prefix_hash};
use crate::text::{TextHash, is_empty_text};

/// A metadata row after de-duplication.
pub(crate) struct MetadataPaper {
    /// The paper's id.
    pub(crate) paper_id: Box<str>,
    /// Hash of its current text (prefix included).
    pub(crate) hash: TextHash,
    /// Title and abstract are both blank.
    pub(crate) empty: bool,
    /// Index of the year's metadata file it came from.
    pub(crate) origin: usize,
    /// Its row's `updated_at` (see [`IndexEntry::updated`]).
    pub(crate) updated: i64,
}

/// Reads (or loads from the metadata index) one CSV's rows with text hashes
/// for `prefix`, saving the index when it had to read the file. `save` is
/// false for read-only callers.
pub fn index_file(index_dir: &Path, file: &MetadataFile, prefix: &str, save: bool) -> FileIndex {
    let prefix_hash = prefix_hash(prefix);
    let stamp = FileStamp::of(&file.path);
    if let Some(stamp) = stamp
        && let Some(index) = FileIndex::load(index_dir, &file.origin, stamp, prefix_hash)
    {
        return index;
    }
    let mut issues = Vec::new();
    let mut entries = Vec::new();
    let result = read_rows(&file.path, &mut issues, |row| {
        let empty = is_empty_text(row.title, row.abstract_text);
        entries.push(IndexEntry {
            paper_id: row.paper_id.into(),
            hash: TextHash::of_paper(prefix, row.title, row.abstract_text),
            empty,
            updated: updated_micros(row.updated_at),
        });
    });
    let skipped = match result {
        Ok(summary) => summary.skipped,
        Err(issue) => {
            issues.push(issue);
            0
        }
    };
    let index = FileIndex {
        origin: file.origin.clone(),
        stamp: stamp.unwrap_or(FileStamp { size: 0, mtime_ns: 0 }),
        prefix_hash,
        entries,
        skipped,
        issues: issues
            .into_iter()
            .map(|i| CachedIssue {
                line: i.line,
                message: i.message,
            })
            .collect(),
    };
    if save
        && stamp.is_some()
        && let Err(e) = index.save(index_dir)
    {
        tracing::debug!("could not save the metadata index of {}: {e}", file.origin);
    }
    index
}

/// `updated_at` as microseconds since the Unix epoch, compared as instants
/// (the forms ingestion reads); empty or unreadable is [`NO_UPDATED_AT`].
pub(crate) fn updated_micros(text: &str) -> i64 {
    crate::ingest::row::parse_instant(text).map_or(NO_UPDATED_AT, |t| t.as_microsecond())
}

/// The de-duplicated metadata of one year, sorted by paper id, with the
/// number of rows read, the number of repeated ids and the issues found.
pub(crate) fn year_metadata(
    index_dir: &Path,
    files: &[&MetadataFile],
    prefix: &str,
    save: bool,
) -> (Vec<MetadataPaper>, u64, u64, Vec<InputIssue>) {
    let mut papers: Vec<(MetadataPaper, usize)> = Vec::new();
    let mut issues = Vec::new();
    for (origin, file) in files.iter().enumerate() {
        let index = index_file(index_dir, file, prefix, save);
        issues.extend(index.issues.iter().map(|i| InputIssue {
            path: file.path.clone(),
            line: i.line,
            message: i.message.clone(),
        }));
        for entry in index.entries {
            let sequence = papers.len();
            papers.push((
                MetadataPaper {
                    paper_id: entry.paper_id,
                    hash: entry.hash,
                    empty: entry.empty,
                    origin,
                    updated: entry.updated,
                },
                sequence,
            ));
        }
    }
    let rows = papers.len() as u64;
    // Later rows win: sort newest first within an id, keep the first.
    papers.sort_unstable_by(|a, b| a.0.paper_id.cmp(&b.0.paper_id).then(b.1.cmp(&a.1)));
    papers.dedup_by(|later, kept| later.0.paper_id == kept.0.paper_id);
    let unique: Vec<MetadataPaper> = papers.into_iter().map(|(p, _)| p).collect();
    let duplicates = rows - unique.len() as u64;
    (unique, rows, duplicates, issues)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Year;

    fn csv(dir: &Path, name: &str, body: &str) -> MetadataFile {
        let path = dir.join(name);
        std::fs::write(&path, format!("paper_id,title,abstract\n{body}")).unwrap();
        MetadataFile {
            path,
            origin: format!("metadata/{name}"),
            year: Year::parse("2024").unwrap(),
        }
    }

    #[test]
    fn the_last_row_of_an_id_wins_across_files_and_repeats_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let first = csv(
            dir.path(),
            "a-2024.csv",
            "2401.2,old,text\n2401.1,t,a\n2401.2,mid,text\n",
        );
        let second = csv(dir.path(), "b-2024.csv", "2401.2,new,text\n2401.3,,\nbad\n");
        let (papers, rows, duplicates, issues) =
            year_metadata(&dir.path().join("idx"), &[&first, &second], "", false);
        let ids: Vec<&str> = papers.iter().map(|p| &*p.paper_id).collect();
        assert_eq!(ids, ["2401.1", "2401.2", "2401.3"], "sorted and unique");
        assert_eq!((rows, duplicates), (5, 2));
        let latest = &papers[1];
        assert_eq!(latest.origin, 1, "the later file's row wins");
        assert_eq!(latest.hash, TextHash::of_paper("", "new", "text"));
        assert!(papers[2].empty);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].line, Some(4));
    }

    #[test]
    fn a_file_with_its_recorded_stamp_is_answered_from_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let index_dir = dir.path().join("idx");
        std::fs::create_dir(&index_dir).unwrap();
        let file = csv(dir.path(), "metadata-2024.csv", "2401.1,t,a\n");
        let mtime = std::fs::metadata(&file.path).unwrap().modified().unwrap();
        let saved = index_file(&index_dir, &file, "query: ", true);
        assert_eq!(saved.entries[0].hash, TextHash::of_paper("query: ", "t", "a"));
        // Same size, same mtime, other bytes: the index answers, not the file.
        std::fs::write(&file.path, "paper_id,title,abstract\n2401.1,x,a\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file.path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let cached = index_file(&index_dir, &file, "query: ", false);
        assert_eq!(cached.entries[0].hash, TextHash::of_paper("query: ", "t", "a"));
        // The index is per prefix: another prefix reads the file.
        let other = index_file(&index_dir, &file, "", false);
        assert_eq!(other.entries[0].hash, TextHash::of_paper("", "x", "a"));
    }
}
