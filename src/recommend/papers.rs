//! Which papers a run is about: one pass over the metadata CSVs that finds
//! the candidates of the window, the papers eligible as background
//! negatives, and what the window holds (for the "no candidates" message).
//!
//! The files are read in parallel, each with the fast record splitter
//! ([`metadata::read_columns`]); a whole [`PaperRecord`] is built only for
//! the candidates. A paper's row is chosen as everywhere else (see
//! docs/data-storage.md): within a year the last row wins, in file order
//! and within a file; a paper with rows in several years belongs to the
//! year of its newest row ([`crate::plan::Claim`]). Each file is resolved on
//! its own; the ids' 64-bit hashes then show which papers more than one
//! file may hold, and those rare papers (or hash collisions) are replayed
//! exactly from the rows of every file that may hold them.

use std::collections::{HashMap, HashSet};

use jiff::civil::Date;
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::metadata::{self, InputIssue, MetadataFile, PaperRecord, Year};
use crate::plan::Claim;

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

    /// Moves `id`'s entries from `other` into `self`.
    fn take(&mut self, other: &mut Papers, id: &str) {
        if let Some((key, value)) = other.window.remove_entry(id) {
            self.window.insert(key, value);
        }
        if let Some(key) = other.background.take(id) {
            self.background.insert(key);
        }
        if let Some((key, value)) = other.candidates.remove_entry(id) {
            self.candidates.insert(key, value);
        }
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

/// Reads `files` (in precedence order) and returns the run's papers, each
/// from the row that decides it (see the module documentation); problems
/// are appended to `issues` in file order.
pub fn scan(files: &[MetadataFile], criteria: &Criteria<'_>, issues: &mut Vec<InputIssue>) -> Papers {
    let per_file: Vec<FilePapers> = files.par_iter().map(|f| read_file(f, criteria)).collect();
    // Hashes held by more than one file (each file's list is unique).
    let mut all: Vec<u64> = per_file.iter().flat_map(|f| f.hashes.iter().copied()).collect();
    all.par_sort_unstable();
    let mut shared: Vec<u64> = all.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    drop(all);
    shared.dedup();
    // Entries that another file may decide otherwise, replayed below.
    let suspects: HashSet<String> = per_file
        .iter()
        .flat_map(|file| file.papers.ids())
        .filter(|id| shared.binary_search(&id_hash(id)).is_ok())
        .cloned()
        .collect();
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
    // what its last row of each says, and that row's claim on the paper.
    let mut rows: Vec<(Papers, HashMap<String, Claim>)> = replay
        .par_iter()
        .map(|file| {
            let mut out = Papers::default();
            let mut claims = HashMap::new();
            let mut ignored = Vec::new();
            let _ = metadata::read_columns(&file.path, COLUMNS, &mut ignored, |_, fields| {
                let id = fields[0].trim();
                if suspects.contains(id) {
                    out.apply(id, &Status::of(&fields, id, criteria), &fields);
                    claims.insert(id.to_string(), Claim::of_row(fields[UPDATED_AT], file.year));
                }
            });
            (out, claims)
        })
        .collect();
    // Within a year the last file holding a paper decides it; across years
    // the greatest claim.
    let mut last_in_year: HashMap<(&str, Year), usize> = HashMap::new();
    for (k, (file, (_, claims))) in replay.iter().zip(&rows).enumerate() {
        for id in claims.keys() {
            last_in_year.insert((id.as_str(), file.year), k);
        }
    }
    let mut owner: HashMap<&str, (Claim, usize)> = HashMap::new();
    for ((id, _), k) in last_in_year {
        let claim = rows[k].1[id];
        let best = owner.entry(id).or_insert((claim, k));
        if claim > best.0 {
            *best = (claim, k);
        }
    }
    let owner: Vec<(String, usize)> = owner
        .into_iter()
        .map(|(id, (_, k))| (id.to_string(), k))
        .collect();
    for (id, k) in owner {
        papers.take(&mut rows[k].0, &id);
    }
    papers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Year, read_records, write_records};
    use proptest::prelude::*;

    /// The reading this module must agree with, one row after the other:
    /// each paper's last row per year, then the year with the greatest claim.
    fn reference(files: &[MetadataFile], criteria: &Criteria<'_>) -> Papers {
        let mut last: HashMap<(String, Year), PaperRecord> = HashMap::new();
        for file in files {
            let mut issues = Vec::new();
            let _ = read_records(&file.path, &mut issues, |_, r| {
                last.insert((r.paper_id.trim().to_string(), file.year), r);
            });
        }
        let mut owner: HashMap<String, (Claim, PaperRecord)> = HashMap::new();
        for ((id, year), record) in last {
            let claim = Claim::of_row(&record.updated_at, year);
            if owner.get(&id).is_none_or(|(best, _)| claim > *best) {
                owner.insert(id, (claim, record));
            }
        }
        let mut papers = Papers::default();
        for (id, (_, record)) in owner {
            let fields = record.fields();
            papers.apply(&id, &Status::of(&fields, &id, criteria), &fields);
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
                Just("2025-03-01T12:00:00+02:00"),
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

    /// A paper filed in two years is read from its newest row, as the plan
    /// reads it, even when that row is in the earlier file.
    #[test]
    fn a_paper_in_two_years_is_read_from_its_newest_row_not_the_last_file() {
        let dir = tempfile::tempdir().unwrap();
        let record = |title: &str, updated: &str| PaperRecord {
            paper_id: "2502.00001".into(),
            title: title.into(),
            abstract_text: "abstract".into(),
            categories: "cs.LG".into(),
            updated_at: updated.into(),
            ..PaperRecord::default()
        };
        let file = |year: &str, row: PaperRecord| {
            let path = dir.path().join(format!("metadata-{year}.csv"));
            let mut bytes = Vec::new();
            write_records(&mut bytes, &[row]).unwrap();
            std::fs::write(&path, bytes).unwrap();
            MetadataFile {
                path,
                origin: format!("metadata/metadata-{year}.csv"),
                year: Year::parse(year).unwrap(),
            }
        };
        let files = [
            file("2024", record("Newest", "2025-03-05T00:00:00Z")),
            file("2025", record("Older", "2025-02-20T00:00:00+01:00")),
        ];
        let categories: HashSet<&str> = ["cs.LG"].into_iter().collect();
        let criteria = Criteria {
            categories: &categories,
            rated: &|_| false,
            from: "2025-03-01".parse().unwrap(),
            until: Some("2025-03-31".parse().unwrap()),
            background_start_year: 2024,
        };
        let mut issues = Vec::new();
        let papers = scan(&files, &criteria, &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        let candidate = papers.candidates.get("2502.00001").map(|r| r.title.as_str());
        assert_eq!(candidate, Some("Newest"), "the 2024 row is the newest");
        assert_eq!(papers.window.len(), 1);
    }

    proptest! {
        /// Reading the files in parallel and resolving repeated papers
        /// across them gives what the row-by-row rule gives.
        #[test]
        fn parallel_scan_agrees_with_reading_in_order(
            files in proptest::collection::vec(proptest::collection::vec(row(), 0..12), 1..6),
            rated_id in 0..8usize,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut metadata_files = Vec::new();
            // Two files per year, years ascending (the order of discovery).
            for (i, rows) in files.iter().enumerate() {
                let year = 2020 + i / 2;
                let path = dir.path().join(format!("{i}-metadata-{year}.csv"));
                let mut bytes = Vec::new();
                write_records(&mut bytes, rows).unwrap();
                std::fs::write(&path, bytes).unwrap();
                metadata_files.push(MetadataFile {
                    path,
                    origin: format!("{i}-metadata-{year}.csv"),
                    year: Year::parse(&year.to_string()).unwrap(),
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
