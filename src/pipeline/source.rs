//! Reading the texts of the papers a run embeds, straight from the CSVs.
//!
//! The plan holds ids only (so it stays small whatever the corpus); here the
//! origin files of the work are read again, one at a time, and only the
//! rows in the work list are kept, so memory stays flat. A paper repeated
//! within one file takes its last row, as the plan did; that needs a first
//! pass over the file, done only for years the plan found repeats in.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use std::ops::ControlFlow;

use crate::metadata::{Discovery, InputIssue, Year, read_rows_while};
use crate::store::backlog::MissingReason;
use crate::text::prepare_text;

/// One paper to embed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    /// Paper id.
    pub paper_id: String,
    /// Year its vector is filed under.
    pub year: Year,
    /// Metadata CSV its text comes from (relative to the data root).
    pub origin: String,
    /// Why it is embedded.
    pub reason: MissingReason,
}

/// Calls `emit(index, text)` for every work item whose row is found, file by
/// file in the order the work first names them; `year_done(year)` after the
/// last file of each year. Returns the indices of items whose row was not
/// found (the file changed since planning) and the problems met. Once
/// `stop()` says so, reading stops within a few thousand rows, mid-file.
pub fn read_texts(
    discovery: &Discovery,
    work: &[WorkItem],
    years_with_repeats: &BTreeSet<Year>,
    stop: &dyn Fn() -> bool,
    mut emit: impl FnMut(usize, String),
    mut year_done: impl FnMut(Year),
) -> (Vec<usize>, Vec<InputIssue>) {
    let paths: HashMap<&str, PathBuf> = discovery
        .files
        .iter()
        .map(|f| (f.origin.as_str(), f.path.clone()))
        .collect();
    let mut origins: Vec<&str> = Vec::new();
    let mut by_origin: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
    for (index, item) in work.iter().enumerate() {
        let ids = by_origin.entry(item.origin.as_str()).or_insert_with(|| {
            origins.push(item.origin.as_str());
            HashMap::new()
        });
        ids.insert(item.paper_id.as_str(), index);
    }
    let mut missing = Vec::new();
    let mut issues = Vec::new();
    let mut current_year: Option<Year> = None;
    for origin in origins {
        if stop() {
            break;
        }
        let wanted = &by_origin[origin];
        let year = work[*wanted.values().next().unwrap_or(&0)].year;
        if current_year.is_some_and(|y| y != year) {
            year_done(current_year.unwrap_or(year));
        }
        current_year = Some(year);
        let Some(path) = paths.get(origin) else {
            missing.extend(wanted.values().copied());
            continue;
        };
        // Which occurrence of each wanted id is the last one in the file.
        let mut last_ordinal: HashMap<usize, u64> = HashMap::new();
        if years_with_repeats.contains(&year) {
            let mut ordinal = 0u64;
            let mut ignored = Vec::new();
            let _ = read_rows_while(path, &mut ignored, |row| {
                if let Some(&index) = wanted.get(row.paper_id) {
                    last_ordinal.insert(index, ordinal);
                }
                ordinal += 1;
                keep_going(ordinal, stop)
            });
        }
        let mut found: BTreeSet<usize> = BTreeSet::new();
        let mut ordinal = 0u64;
        let result = read_rows_while(path, &mut issues, |row| {
            if let Some(&index) = wanted.get(row.paper_id) {
                let is_last = last_ordinal.get(&index).is_none_or(|&last| last == ordinal);
                if is_last && found.insert(index) {
                    emit(index, prepare_text(row.title, row.abstract_text));
                }
            }
            ordinal += 1;
            keep_going(ordinal, stop)
        });
        if stop() {
            // Stopped mid-file: what was not read is neither found nor missing.
            break;
        }
        if let Err(issue) = result {
            issues.push(issue);
        }
        missing.extend(wanted.values().copied().filter(|i| !found.contains(i)));
    }
    if let Some(year) = current_year
        && !stop()
    {
        year_done(year);
    }
    missing.sort_unstable();
    (missing, issues)
}

/// Asks `stop` every 4,096 rows (it may take a lock or read an atomic).
fn keep_going(ordinal: u64, stop: &dyn Fn() -> bool) -> ControlFlow<()> {
    if ordinal.is_multiple_of(4096) && stop() {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::metadata::discover;

    /// A stop raised while a large file is read ends the read mid-file: the
    /// rest of the file is not parsed (a producer whose run failed used to
    /// parse it to the end).
    #[test]
    fn a_stop_ends_reading_in_the_middle_of_a_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("metadata")).unwrap();
        let mut csv = String::from("paper_id,title,abstract\n");
        let rows = 50_000;
        for i in 0..rows {
            csv.push_str(&format!("p{i},t,a\n"));
        }
        std::fs::write(root.path().join("metadata/metadata-2024.csv"), csv).unwrap();
        let discovery = discover(&root.path().join("metadata"), root.path()).unwrap();
        let work: Vec<WorkItem> = (0..rows)
            .map(|i| WorkItem {
                paper_id: format!("p{i}"),
                year: Year::parse("2024").unwrap(),
                origin: "metadata/metadata-2024.csv".into(),
                reason: MissingReason::MissingEmbedding,
            })
            .collect();
        let emitted = Cell::new(0usize);
        let years_done = Cell::new(0usize);
        let (missing, _) = read_texts(
            &discovery,
            &work,
            &BTreeSet::new(),
            &|| emitted.get() >= 100,
            |_, _| emitted.set(emitted.get() + 1),
            |_| years_done.set(years_done.get() + 1),
        );
        assert!(
            emitted.get() >= 100 && emitted.get() <= 4096,
            "{} rows read",
            emitted.get()
        );
        assert!(missing.is_empty(), "rows not read are not reported missing");
        assert_eq!(years_done.get(), 0, "a stopped year is not done");
    }
}
