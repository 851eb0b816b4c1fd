//! Which papers a run is about: one pass over the metadata CSVs that finds
//! the candidates of the window, the papers eligible as background
//! negatives, and what the window holds (for the "no candidates" message).
//!
//! The files are read in parallel, each with the fast record splitter
//! ([`metadata::read_columns`]); a whole [`PaperRecord`] is built only for
//! the candidates. A paper's last row wins, in file order and within a file,
//! as if the files were read one after the other: each file is resolved on
//! its own, then an entry of one file is kept only when no later file holds
//! the paper. Later files are asked through a sorted list of their ids'
//! 64-bit hashes; the rare papers that hit one (a paper in two files, or a
//! hash collision) are replayed exactly from the rows of every file that
//! may hold them.

use std::collections::{HashMap, HashSet};

use jiff::civil::Date;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::metadata::{self, InputIssue, MetadataFile, PaperRecord};

/// What makes a paper a candidate or a background paper.
pub struct Criteria<'a> {
    /// Configured categories; empty means any.
    pub categories: &'a HashSet<&'a str>,
    /// Whether the user rated the paper (by trimmed id).
    pub rated: &'a (dyn Fn(&str) -> bool + Sync),
    /// First day of the window.
    pub from: Date,
    /// Last day of the window; `None` means open-ended.
    pub until: Option<Date>,
    /// Background papers are dated in this year or later.
    pub background_start_year: i32,
}

/// The papers of a run, each by its trimmed id.
#[derive(Debug, Default)]
pub struct Papers {
    /// Papers of the categories dated in the window, not rated.
    pub candidates: HashMap<String, PaperRecord>,
    /// Papers of the categories dated from the background start year on, not rated.
    pub background: HashSet<String>,
    /// Every paper dated in the window: (in the categories, rated).
    pub window: HashMap<String, (bool, bool)>,
}

/// The metadata columns, in [`metadata::record::COLUMNS`] order.
const COLUMNS: [&str; 13] = metadata::record::COLUMNS;
const CATEGORIES: usize = 3;
const PUBLISHED_AT: usize = 6;
const UPDATED_AT: usize = 7;

/// What one row says about its paper.
struct Status {
    in_categories: bool,
    rated: bool,
    dated_in: bool,
    background: bool,
}

impl Status {
    fn of(fields: &[&str; 13], id: &str, criteria: &Criteria<'_>) -> Status {
        let updated = fields[UPDATED_AT].trim();
        let date_text = if updated.is_empty() {
            fields[PUBLISHED_AT].trim()
        } else {
            updated
        };
        let date: Option<Date> = date_text.get(..10).and_then(|d| d.parse().ok());
        let in_categories = criteria.categories.is_empty()
            || fields[CATEGORIES]
                .split([';', ' '])
                .map(str::trim)
                .any(|c| !c.is_empty() && criteria.categories.contains(c));
        let rated = (criteria.rated)(id);
        let dated_in = date.is_some_and(|d| d >= criteria.from && criteria.until.is_none_or(|u| d <= u));
        let background = in_categories
            && !rated
            && date.is_some_and(|d| i32::from(d.year()) >= criteria.background_start_year);
        Status {
            in_categories,
            rated,
            dated_in,
            background,
        }
    }

    fn candidate(&self) -> bool {
        self.in_categories && !self.rated && self.dated_in
    }
}

impl Papers {
    /// Applies one row: the paper's entries become what this row says.
    fn apply(&mut self, id: &str, status: &Status, fields: &[&str; 13]) {
        if status.dated_in {
            self.window
                .insert(id.to_string(), (status.in_categories, status.rated));
        } else {
            self.window.remove(id);
        }
        if status.background {
            self.background.insert(id.to_string());
        } else {
            self.background.remove(id);
        }
        if status.candidate() {
            self.candidates
                .insert(id.to_string(), PaperRecord::from_fields(*fields));
        } else {
            self.candidates.remove(id);
        }
    }

    fn ids(&self) -> impl Iterator<Item = &String> {
        self.window
            .keys()
            .chain(&self.background)
            .chain(self.candidates.keys())
    }

    fn remove(&mut self, id: &str) {
        self.window.remove(id);
        self.background.remove(id);
        self.candidates.remove(id);
    }

    fn absorb(&mut self, other: Papers) {
        self.window.extend(other.window);
        self.background.extend(other.background);
        self.candidates.extend(other.candidates);
    }
}

/// One file's papers, resolved within the file.
struct FilePapers {
    papers: Papers,
    /// Hashes of every id in the file, sorted.
    hashes: Vec<u64>,
    issues: Vec<InputIssue>,
}

fn id_hash(id: &str) -> u64 {
    xxh3_64(id.as_bytes())
}

fn read_file(file: &MetadataFile, criteria: &Criteria<'_>) -> FilePapers {
    let mut papers = Papers::default();
    let mut hashes = Vec::new();
    let mut issues = Vec::new();
    let read = metadata::read_columns(&file.path, COLUMNS, &mut issues, |_, fields| {
        let id = fields[0].trim();
        hashes.push(id_hash(id));
        let status = Status::of(&fields, id, criteria);
        papers.apply(id, &status, &fields);
    });
    if let Err(issue) = read {
        issues.push(issue);
    }
    hashes.sort_unstable();
    hashes.dedup();
    FilePapers {
        papers,
        hashes,
        issues,
    }
}

/// Reads `files` (in precedence order) and returns the run's papers, the
/// last row of a paper winning; problems are appended to `issues` in file
/// order.
pub fn scan(files: &[MetadataFile], criteria: &Criteria<'_>, issues: &mut Vec<InputIssue>) -> Papers {
    let per_file: Vec<FilePapers> = files.par_iter().map(|f| read_file(f, criteria)).collect();
    let held_later = |i: usize, hash: u64| {
        per_file[i + 1..]
            .iter()
            .any(|later| later.hashes.binary_search(&hash).is_ok())
    };
    // Entries that a later file may override, replayed below.
    let mut suspects: HashSet<String> = HashSet::new();
    for (i, file) in per_file.iter().enumerate() {
        if i + 1 == per_file.len() {
            break;
        }
        suspects.extend(file.papers.ids().filter(|id| held_later(i, id_hash(id))).cloned());
    }
    let mut papers = Papers::default();
    let mut replay: Vec<&MetadataFile> = Vec::new();
    let suspect_hashes: Vec<u64> = suspects.iter().map(|id| id_hash(id)).collect();
    for (file, read) in files.iter().zip(per_file) {
        issues.extend(read.issues);
        if suspect_hashes
            .iter()
            .any(|h| read.hashes.binary_search(h).is_ok())
        {
            replay.push(file);
        }
        papers.absorb(read.papers);
    }
    if suspects.is_empty() {
        return papers;
    }
    tracing::debug!(
        "{} papers may have rows in more than one metadata file; reading {} files again for them",
        suspects.len(),
        replay.len()
    );
    for id in &suspects {
        papers.remove(id);
    }
    // Each file's rows of the suspects, in order (problems were reported above):
    // what its last row of each says, and which of them it holds at all.
    let rows: Vec<(Papers, HashSet<String>)> = replay
        .par_iter()
        .map(|file| {
            let mut out = Papers::default();
            let mut held = HashSet::new();
            let mut ignored = Vec::new();
            let _ = metadata::read_columns(&file.path, COLUMNS, &mut ignored, |_, fields| {
                let id = fields[0].trim();
                if suspects.contains(id) {
                    out.apply(id, &Status::of(&fields, id, criteria), &fields);
                    held.insert(id.to_string());
                }
            });
            (out, held)
        })
        .collect();
    // Across files: the last file holding a paper decides it.
    for (file_papers, held) in rows {
        for id in &held {
            papers.remove(id);
        }
        papers.absorb(file_papers);
    }
    papers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Year, read_records, write_records};
    use proptest::prelude::*;

    /// The one-file-after-the-other reading this module must agree with.
    fn reference(files: &[MetadataFile], criteria: &Criteria<'_>) -> Papers {
        let mut papers = Papers::default();
        for file in files {
            let mut issues = Vec::new();
            let _ = read_records(&file.path, &mut issues, |_, r| {
                let id = r.paper_id.trim().to_string();
                let fields = r.fields();
                let status = Status::of(&fields, &id, criteria);
                papers.apply(&id, &status, &fields);
            });
        }
        papers
    }

    fn row() -> impl Strategy<Value = PaperRecord> {
        (
            0..8usize,
            prop_oneof![Just("cs.LG"), Just("math.AG"), Just("math.AG;cs.LG"), Just("")],
            prop_oneof![Just(""), Just("2023-06-01T00:00:00Z"), Just("2025-03-02")],
            prop_oneof![
                Just(""),
                Just("2025-03-01T10:00:00Z"),
                Just(" 2025-02-01"),
                Just("bad")
            ],
            prop_oneof![Just("plain"), Just("a, \"quoted\"\ntitle"), Just("é漢字")],
        )
            .prop_map(|(id, categories, published, updated, title)| PaperRecord {
                paper_id: format!("2501.{id:05}"),
                title: title.to_string(),
                abstract_text: format!("abstract of {id}"),
                categories: categories.to_string(),
                published_at: published.to_string(),
                updated_at: updated.to_string(),
                authors: "A. One;B. Two".to_string(),
                ..PaperRecord::default()
            })
    }

    proptest! {
        /// Reading the files in parallel and resolving repeated papers
        /// across them gives what reading them one after the other gives.
        #[test]
        fn parallel_scan_agrees_with_reading_in_order(
            files in proptest::collection::vec(proptest::collection::vec(row(), 0..12), 1..5),
            rated_id in 0..8usize,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut metadata_files = Vec::new();
            for (i, rows) in files.iter().enumerate() {
                let path = dir.path().join(format!("metadata-{}.csv", 2020 + i));
                let mut bytes = Vec::new();
                write_records(&mut bytes, rows).unwrap();
                std::fs::write(&path, bytes).unwrap();
                metadata_files.push(MetadataFile {
                    path,
                    origin: format!("metadata-{}.csv", 2020 + i),
                    year: Year::parse(&format!("{}", 2020 + i)).unwrap(),
                });
            }
            let categories: HashSet<&str> = ["cs.LG"].into_iter().collect();
            let rated_name = format!("2501.{rated_id:05}");
            let rated = |id: &str| id == rated_name;
            let criteria = Criteria {
                categories: &categories,
                rated: &rated,
                from: "2025-03-01".parse().unwrap(),
                until: Some("2025-03-31".parse().unwrap()),
                background_start_year: 2024,
            };
            let mut issues = Vec::new();
            let got = scan(&metadata_files, &criteria, &mut issues);
            let want = reference(&metadata_files, &criteria);
            prop_assert!(issues.is_empty(), "{:?}", issues);
            prop_assert_eq!(got.candidates, want.candidates);
            prop_assert_eq!(got.background, want.background);
            prop_assert_eq!(got.window, want.window);
        }
    }
}
