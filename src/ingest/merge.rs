//! Merging incoming rows into `metadata-YYYY.csv` (one row per paper; the
//! newer or equal `updated_at` wins), each file replaced atomically.
//!
//! Design, with memory bounded whatever the input size:
//! - Incoming rows are held encoded ([`RowBatch`]: each row as its CSV
//!   line, made once); past [`MergeOptions::memory_budget`] the buffer is
//!   sorted by `paper_id` and spilled as a *run* (a binary file in a
//!   `.tmp-<pid>-spill*` directory of the metadata directory).
//! - A commit merges, in one pass ordered by `paper_id`, the runs, the
//!   buffer and the stored year files involved (papersys writes them sorted;
//!   a file that is not is sorted into runs first). Every paper is decided
//!   once, with all its stored and incoming rows in view, so a paper whose
//!   `published_at` moved to another year leaves its old file. The winning
//!   row's line is copied straight into its year's output.
//! - Each year's output goes to a temporary file beside the target, and
//!   replaces it only when a row of that year was added, changed or removed:
//!   merging the same rows twice writes nothing.
//! - The rows a commit adds or changes go, in the same pass, to a CSV in
//!   the spill directory; at the end of a run of one commit that file
//!   becomes `latest.csv` as it is (several commits' files are merged).
//! - Which stored files take part: every `metadata-YYYY.csv` when the
//!   incoming rows were spilled (a snapshot import); otherwise the files of
//!   the incoming rows' years, plus those of the years next to the year in
//!   each incoming id (`0801.0001` → 2007–2009) that hold one of the ids.
//!   papersys files a paper by its first version's date, which is within a
//!   day of its id's month, so that is where a moved paper can be.
//! - A stored file that cannot be read completely (a malformed row, an empty
//!   `paper_id`, columns outside the contract that a rewrite would drop) is
//!   never rewritten: the commit stops with an error naming file and line.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use serde::Serialize;
use tempfile::TempDir;

use super::encoded::{OwnedRow, RowBatch, RowRef};
use super::row::{parse_instant, year_of_date};
use super::writer::{BackgroundWriter, QueuedFile};
use crate::metadata::PaperRecord;
use crate::metadata::record::COLUMNS;
use crate::store::atomic::{self, TEMP_PREFIX};
/// Name of the file holding the rows the last run added or changed.
pub const LATEST_FILE: &str = "latest.csv";

/// Tuning of a merge.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// Bytes of incoming rows held in memory before they are spilled to a
    /// sorted run on disk.
    pub memory_budget: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            memory_budget: 64 << 20,
        }
    }
}

/// What happened to one year file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct YearCounts {
    /// Papers added.
    pub new: u64,
    /// Papers whose row was replaced by a different one.
    pub updated: u64,
    /// Incoming rows equal to the stored ones (all columns but `source`).
    pub unchanged: u64,
    /// Incoming rows older than the stored ones (ignored).
    pub older: u64,
    /// Rows taken out: the paper moved to another year, or was stored twice.
    pub removed: u64,
    /// Rows in the file after the commit.
    pub rows: u64,
    /// Whether the file was rewritten.
    pub written: bool,
}

/// The outcome of one commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommitReport {
    /// Papers added.
    pub new: u64,
    /// Papers whose row was replaced.
    pub updated: u64,
    /// Incoming rows equal to the stored ones.
    pub unchanged: u64,
    /// Incoming rows older than the stored ones (ignored).
    pub older: u64,
    /// Papers that changed year file.
    pub moved: u64,
    /// Incoming rows superseded by another incoming row of the same paper.
    pub duplicates: u64,
    /// Incoming rows that could not be filed, with the reason.
    pub skipped: Vec<String>,
    /// Per year (`"2024"`) of the files involved.
    pub per_year: BTreeMap<String, YearCounts>,
    /// Files replaced.
    pub files_written: Vec<PathBuf>,
}

impl CommitReport {
    fn absorb(&mut self, other: CommitReport) {
        self.new += other.new;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.older += other.older;
        self.moved += other.moved;
        self.duplicates += other.duplicates;
        self.skipped.extend(other.skipped);
        for (year, c) in other.per_year {
            let t = self.per_year.entry(year).or_default();
            t.new += c.new;
            t.updated += c.updated;
            t.unchanged += c.unchanged;
            t.older += c.older;
            t.removed += c.removed;
            t.rows = c.rows;
            t.written |= c.written;
        }
        for f in other.files_written {
            if !self.files_written.contains(&f) {
                self.files_written.push(f);
            }
        }
    }
}

/// The outcome of a run (all its commits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    /// Commits made.
    pub commits: u64,
    /// The commits' counts, summed.
    #[serde(flatten)]
    pub totals: CommitReport,
    /// Rows written to `latest.csv` (0: the run changed nothing and the file
    /// was left as it was).
    pub latest_rows: u64,
}

/// Why a merge failed. Nothing of the failed commit is on disk.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A stored metadata file cannot be read completely, so it is not
    /// rewritten (that would lose rows).
    #[error(
        "{}{}: {message}; papersys never rewrites a metadata file it cannot read completely — fix or remove that row, then run again",
        .path.display(),
        .line.map(|l| format!(":{l}")).unwrap_or_default()
    )]
    BadStoredFile {
        /// The metadata file.
        path: PathBuf,
        /// 1-based line, when a row is at fault.
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MergeError + '_ {
    move |source| MergeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A batch of the open buffer is handed to the sorted buffer at this size.
const OPEN_BATCH_BYTES: usize = 1 << 20;

/// At most this many emptied batches are kept for reuse.
const MAX_SPENT_BATCHES: usize = 16;

/// Merges incoming rows into a metadata directory; one per run (the rows
/// `latest.csv` lists are those of all its commits).
pub struct Merger {
    dir: PathBuf,
    options: MergeOptions,
    batches: Vec<RowBatch>,
    open: RowBatch,
    buffered_bytes: usize,
    spill: Option<TempDir>,
    runs: Vec<PathBuf>,
    latest_files: Vec<(PathBuf, u64)>,
    /// Emptied batches of the last spill, for [`Merger::spent_batch`].
    spent: Vec<RowBatch>,
    /// The spill being sorted and written on a thread of its own.
    spilling: Option<JoinHandle<Result<Spilled, MergeError>>>,
    next_run: u64,
    pending: CommitReport,
    report: MergeReport,
}

/// Merges `records` into `metadata_dir` in one commit and writes
/// `latest.csv`.
pub fn merge_records(
    metadata_dir: &Path,
    records: impl IntoIterator<Item = PaperRecord>,
) -> Result<MergeReport, MergeError> {
    let mut merger = Merger::new(metadata_dir, MergeOptions::default())?;
    for record in records {
        merger.add(record)?;
    }
    merger.finish()
}

impl Merger {
    /// A merger writing into `metadata_dir` (created when missing; its
    /// parent must exist). The caller holds the ingestion lock.
    pub fn new(metadata_dir: &Path, options: MergeOptions) -> Result<Merger, MergeError> {
        atomic::create_owned_dir(metadata_dir).map_err(io_err(metadata_dir))?;
        Ok(Merger {
            dir: metadata_dir.to_path_buf(),
            options,
            batches: Vec::new(),
            open: RowBatch::default(),
            buffered_bytes: 0,
            spill: None,
            runs: Vec::new(),
            latest_files: Vec::new(),
            spent: Vec::new(),
            spilling: None,
            next_run: 0,
            pending: CommitReport::default(),
            report: MergeReport::default(),
        })
    }

    /// Queues one incoming row for the next commit. A row without a
    /// `paper_id` or a `published_at` date is skipped and reported.
    pub fn add(&mut self, record: PaperRecord) -> Result<(), MergeError> {
        if record.paper_id.trim().is_empty() {
            self.pending.skipped.push(format!(
                "a row titled {:?} has no paper_id; skipped",
                record.title
            ));
            return Ok(());
        }
        let Some(year) = year_of(&record.published_at) else {
            self.pending.skipped.push(format!(
                "{}: published_at {:?} is not a date, so no year file can hold it; skipped",
                record.paper_id, record.published_at
            ));
            return Ok(());
        };
        let before = self.open.bytes();
        self.open.push_record(&record, year);
        self.buffered_bytes += self.open.bytes() - before;
        if self.open.bytes() >= OPEN_BATCH_BYTES {
            self.batches.push(std::mem::take(&mut self.open));
        }
        self.spill_if_full()
    }

    /// Queues a batch of encoded rows for the next commit. Every row must
    /// have a non-blank `paper_id` and the year of its `published_at` (as
    /// [`Merger::add`] checks); the snapshot's parser makes them so.
    pub fn add_batch(&mut self, batch: RowBatch) -> Result<(), MergeError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.buffered_bytes += batch.bytes();
        self.batches.push(batch);
        self.spill_if_full()
    }

    fn take_buffer(&mut self) -> Vec<RowBatch> {
        let mut batches = std::mem::take(&mut self.batches);
        if !self.open.is_empty() {
            batches.push(std::mem::take(&mut self.open));
        }
        self.buffered_bytes = 0;
        batches
    }

    /// Past the memory budget, sorts the buffer and writes it as a run on
    /// a thread of its own while rows keep coming (one spill at a time, so
    /// at most twice the budget is held).
    fn spill_if_full(&mut self) -> Result<(), MergeError> {
        if self.buffered_bytes < self.options.memory_budget {
            return Ok(());
        }
        self.wait_for_spill()?;
        let batches = self.take_buffer();
        let path = self.new_run_path()?;
        let thread = std::thread::Builder::new()
            .name("papersys-spill".to_string())
            .spawn(move || spill(path, batches))
            .map_err(io_err(&self.dir))?;
        self.spilling = Some(thread);
        Ok(())
    }

    /// Waits for the spill in progress, if any, and takes its run.
    fn wait_for_spill(&mut self) -> Result<(), MergeError> {
        let Some(thread) = self.spilling.take() else {
            return Ok(());
        };
        let spilled = match thread.join() {
            Ok(spilled) => spilled?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        self.runs.push(spilled.path);
        self.pending.duplicates += spilled.duplicates;
        for mut batch in spilled.batches {
            if self.spent.len() < MAX_SPENT_BATCHES {
                batch.clear();
                self.spent.push(batch);
            }
        }
        Ok(())
    }

    /// An emptied batch to fill again (its memory already mapped), when a
    /// spill left one.
    pub fn spent_batch(&mut self) -> Option<RowBatch> {
        self.spent.pop()
    }

    /// Durably merges every row added since the last commit. Returns what
    /// changed; on error nothing of this commit is on disk.
    pub fn commit(&mut self) -> Result<CommitReport, MergeError> {
        self.wait_for_spill()?;
        let mut report = std::mem::take(&mut self.pending);
        let batches = self.take_buffer();
        let memory = sorted_unique(&batches, &mut report.duplicates);
        let runs = std::mem::take(&mut self.runs);
        if memory.is_empty() && runs.is_empty() {
            self.report.totals.absorb(report.clone());
            return Ok(report);
        }
        let memory = Memory {
            batches: &batches,
            order: &memory,
        };
        let stored = self.stored_files(&memory, !runs.is_empty())?;
        let latest_path = self.new_run_path()?;
        let mut presorted: BTreeMap<u16, Vec<PathBuf>> = BTreeMap::new();
        let outcome = loop {
            match self.merge_once(&memory, &runs, &stored, &presorted, &latest_path, &mut report)? {
                Attempt::Done(outcome) => break outcome,
                Attempt::Unsorted(year) => {
                    let Some(path) = stored.get(&year) else {
                        return Err(io_err(&self.dir)(io::Error::other(
                            "internal: rows out of order in a run papersys sorted",
                        )));
                    };
                    if presorted.contains_key(&year) {
                        return Err(io_err(path)(io::Error::other("internal: sorting did not sort")));
                    }
                    let sorted = self.sort_stored_file(path, year)?;
                    presorted.insert(year, sorted);
                }
            }
        };
        for (year, out) in outcome.outputs {
            let counts = report.per_year.entry(year.to_string()).or_default();
            counts.rows = out.rows;
            if out.dirty {
                let target = self.dir.join(year_file_name(year));
                out.persist(&target)?;
                counts.written = true;
                report.files_written.push(target);
            }
        }
        if !report.files_written.is_empty() {
            atomic::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        if outcome.latest_rows > 0 {
            self.latest_files.push((latest_path, outcome.latest_rows));
        } else {
            let _ = std::fs::remove_file(&latest_path);
        }
        for run in runs.iter().chain(presorted.values().flatten()) {
            let _ = std::fs::remove_file(run);
        }
        self.report.commits += 1;
        self.report.totals.absorb(report.clone());
        Ok(report)
    }

    /// Commits what is left and writes `latest.csv` with every row this
    /// run added or changed (later commits win). When the run changed
    /// nothing, `latest.csv` is left as it was.
    pub fn finish(mut self) -> Result<MergeReport, MergeError> {
        self.commit()?;
        let target = self.dir.join(LATEST_FILE);
        match self.latest_files.as_slice() {
            [] => {}
            [(only, rows)] => {
                persist_file(only, &target)?;
                self.report.latest_rows = *rows;
            }
            several => {
                let paths: Vec<&Path> = several.iter().map(|(p, _)| p.as_path()).collect();
                self.report.latest_rows = merge_latest(&paths, &target)?;
            }
        }
        Ok(std::mem::take(&mut self.report))
    }

    fn spill_dir(&mut self) -> Result<&Path, MergeError> {
        if self.spill.is_none() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("{TEMP_PREFIX}{}-spill", std::process::id()))
                .tempdir_in(&self.dir)
                .map_err(io_err(&self.dir))?;
            self.spill = Some(dir);
        }
        Ok(self.spill.as_ref().map(TempDir::path).unwrap_or(&self.dir))
    }

    fn new_run_path(&mut self) -> Result<PathBuf, MergeError> {
        self.next_run += 1;
        let n = self.next_run;
        Ok(self.spill_dir()?.join(format!("run-{n:06}")))
    }

    /// The stored year files this commit reads, by year.
    fn stored_files(&self, memory: &Memory<'_>, spilled: bool) -> Result<BTreeMap<u16, PathBuf>, MergeError> {
        let existing = year_files(&self.dir)?;
        if spilled {
            return Ok(existing);
        }
        let mut chosen = BTreeMap::new();
        let mut neighbours = BTreeMap::new();
        for row in memory.iter() {
            if let Some(path) = existing.get(&row.year) {
                chosen.insert(row.year, path.clone());
            }
            if let Some(id_year) = id_year(&String::from_utf8_lossy(row.key)) {
                for y in id_year.saturating_sub(1)..=id_year + 1 {
                    if let Some(path) = existing.get(&y) {
                        neighbours.insert(y, path.clone());
                    }
                }
            }
        }
        let ids: HashSet<&[u8]> = memory.iter().map(|r| r.key).collect();
        for (year, path) in neighbours {
            if !chosen.contains_key(&year) && file_holds_any(&path, &ids) {
                chosen.insert(year, path);
            }
        }
        Ok(chosen)
    }

    /// Sorts a stored file that is not in `paper_id` order into runs.
    fn sort_stored_file(&mut self, path: &Path, year: u16) -> Result<Vec<PathBuf>, MergeError> {
        let mut reader = CsvSource::open(path)?;
        let mut runs = Vec::new();
        let mut batch = RowBatch::default();
        loop {
            let next = reader.next_record()?;
            let flush = next.is_none() || batch.bytes() >= self.options.memory_budget;
            if flush && !batch.is_empty() {
                // Duplicates inside a stored file are resolved by the merge
                // (and counted as removed), so keep them all here.
                let mut order: Vec<usize> = (0..batch.len()).collect();
                order.sort_by(|&a, &b| batch.get(a).key.cmp(batch.get(b).key));
                let run = self.new_run_path()?;
                write_run(&run, order.iter().map(|&i| batch.get(i)))?;
                runs.push(run);
                batch = RowBatch::default();
            }
            match next {
                Some(record) => batch.push_record(&record, year),
                None => break,
            }
        }
        Ok(runs)
    }

    fn merge_once(
        &self,
        memory: &Memory<'_>,
        runs: &[PathBuf],
        stored: &BTreeMap<u16, PathBuf>,
        presorted: &BTreeMap<u16, Vec<PathBuf>>,
        latest_path: &Path,
        report: &mut CommitReport,
    ) -> Result<Attempt, MergeError> {
        let mut sources: Vec<(Origin, Source)> = Vec::new();
        for (year, path) in stored {
            match presorted.get(year) {
                Some(sorted) => {
                    for run in sorted {
                        sources.push((Origin::Stored(*year), Source::run(RunReader::open(run)?)));
                    }
                }
                None => sources.push((Origin::Stored(*year), Source::csv(CsvSource::open(path)?, *year))),
            }
        }
        for (order, run) in runs.iter().enumerate() {
            sources.push((Origin::Incoming(order), Source::run(RunReader::open(run)?)));
        }
        sources.push((Origin::Incoming(runs.len()), Source::memory(memory)));

        let mut heap = BinaryHeap::new();
        for (i, (origin, source)) in sources.iter_mut().enumerate() {
            match source.advance()? {
                Step::Row => {
                    if let Some(r) = source.head() {
                        heap.push(Reverse((r.key.to_vec(), i)));
                    }
                }
                Step::End => {}
                Step::Unsorted => return Ok(unsorted(*origin)),
            }
        }

        let writer = BackgroundWriter::new().map_err(io_err(&self.dir))?;
        let mut outputs: BTreeMap<u16, YearOutput> = BTreeMap::new();
        let mut latest = YearOutput::create(&self.dir, Some(latest_path), &writer)?;
        let mut latest_rows = 0u64;
        let mut counts: BTreeMap<u16, YearCounts> = BTreeMap::new();
        let mut totals = CommitReport::default();
        // The rows of the paper being decided (buffers reused across papers).
        let mut stored_pool: Vec<(u16, OwnedRow)> = Vec::new();
        let mut incoming_pool: Vec<(usize, OwnedRow)> = Vec::new();
        let mut free_keys: Vec<Vec<u8>> = Vec::new();

        while let Some(Reverse((id, first))) = heap.pop() {
            let (mut n_stored, mut n_incoming) = (0usize, 0usize);
            let mut next_index = Some(first);
            while let Some(i) = next_index {
                let Some(head) = sources[i].1.head() else {
                    break;
                };
                match sources[i].0 {
                    Origin::Stored(year) => {
                        if stored_pool.len() == n_stored {
                            stored_pool.push((year, OwnedRow::default()));
                        }
                        stored_pool[n_stored].0 = year;
                        stored_pool[n_stored].1.set(head);
                        n_stored += 1;
                    }
                    Origin::Incoming(order) => {
                        if incoming_pool.len() == n_incoming {
                            incoming_pool.push((order, OwnedRow::default()));
                        }
                        incoming_pool[n_incoming].0 = order;
                        incoming_pool[n_incoming].1.set(head);
                        n_incoming += 1;
                    }
                }
                match sources[i].1.advance()? {
                    Step::Row => {
                        if let Some(r) = sources[i].1.head() {
                            let mut key = free_keys.pop().unwrap_or_default();
                            key.clear();
                            key.extend_from_slice(r.key);
                            heap.push(Reverse((key, i)));
                        }
                    }
                    Step::End => {}
                    Step::Unsorted => return Ok(unsorted(sources[i].0)),
                }
                next_index = match heap.peek() {
                    Some(Reverse((next_id, j))) if *next_id == id => {
                        let j = *j;
                        if let Some(Reverse((key, _))) = heap.pop() {
                            free_keys.push(key);
                        }
                        Some(j)
                    }
                    _ => None,
                };
            }
            free_keys.push(id);
            let stored_rows = &stored_pool[..n_stored];
            let incoming_rows = &incoming_pool[..n_incoming];

            let stored_best = stored_rows
                .iter()
                .enumerate()
                .max_by(|a, b| {
                    cmp_updated(&a.1.1.as_ref(), &b.1.1.as_ref())
                        .then(a.1.0.cmp(&b.1.0))
                        .then(a.0.cmp(&b.0))
                })
                .map(|(k, _)| k);
            let incoming_best = incoming_rows
                .iter()
                .enumerate()
                .max_by(|a, b| cmp_updated(&a.1.1.as_ref(), &b.1.1.as_ref()).then(a.1.0.cmp(&b.1.0)))
                .map(|(k, _)| k);
            totals.duplicates += incoming_rows.len().saturating_sub(1) as u64;

            let incoming_wins = match (incoming_best, stored_best) {
                (Some(i), Some(s)) => {
                    cmp_updated(&incoming_rows[i].1.as_ref(), &stored_rows[s].1.as_ref()) != Ordering::Less
                }
                (Some(_), None) => true,
                _ => false,
            };
            let (row, year, change) = if incoming_wins {
                let incoming = incoming_rows[incoming_best.unwrap_or(0)].1.as_ref();
                let target = incoming.year;
                match stored_best.map(|s| &stored_rows[s]) {
                    Some((stored_year, stored))
                        if *stored_year == target && stored.as_ref().same_except_source(&incoming) =>
                    {
                        (stored.as_ref(), target, Change::Unchanged)
                    }
                    Some((stored_year, _)) => {
                        if *stored_year != target {
                            totals.moved += 1;
                        }
                        (incoming, target, Change::Updated)
                    }
                    None => (incoming, target, Change::New),
                }
            } else {
                let (year, stored) = &stored_rows[stored_best.unwrap_or(0)];
                let change = if incoming_rows.is_empty() {
                    Change::Kept
                } else {
                    Change::Older
                };
                (stored.as_ref(), *year, change)
            };

            // Stored rows that are neither written back nor replaced in
            // place leave their year (the paper moved, or was stored twice).
            for (k, (stored_year, _)) in stored_rows.iter().enumerate() {
                let in_place = Some(k) == stored_best && *stored_year == year;
                if !in_place {
                    output_for(&mut outputs, &self.dir, *stored_year, &writer)?.mark_dirty();
                    counts.entry(*stored_year).or_default().removed += 1;
                }
            }

            let c = counts.entry(year).or_default();
            match change {
                Change::New => {
                    c.new += 1;
                    totals.new += 1;
                }
                Change::Updated => {
                    c.updated += 1;
                    totals.updated += 1;
                }
                Change::Unchanged => {
                    c.unchanged += 1;
                    totals.unchanged += 1;
                }
                Change::Older => {
                    c.older += 1;
                    totals.older += 1;
                }
                Change::Kept => {}
            }
            let output = output_for(&mut outputs, &self.dir, year, &writer)?;
            if matches!(change, Change::New | Change::Updated) {
                output.mark_dirty();
                latest.mark_dirty();
                latest.write(row.csv)?;
                latest_rows += 1;
            }
            output.write(row.csv)?;
        }
        // A stored year every row of which moved out still gets its file.
        for year in stored.keys() {
            output_for(&mut outputs, &self.dir, *year, &writer)?;
        }
        for (year, c) in counts {
            let t = report.per_year.entry(year.to_string()).or_default();
            t.new += c.new;
            t.updated += c.updated;
            t.unchanged += c.unchanged;
            t.older += c.older;
            t.removed += c.removed;
        }
        report.new += totals.new;
        report.updated += totals.updated;
        report.unchanged += totals.unchanged;
        report.older += totals.older;
        report.moved += totals.moved;
        report.duplicates += totals.duplicates;
        let finished = finish_outputs(outputs, latest, latest_rows > 0, writer)?;
        Ok(Attempt::Done(Outcome {
            outputs: finished,
            latest_rows,
        }))
    }
}

impl Drop for Merger {
    /// A spill still running is waited for, so that it does not write into
    /// the spill directory while that is removed.
    fn drop(&mut self) {
        if let Some(thread) = self.spilling.take() {
            let _ = thread.join();
        }
    }
}

/// A run written by [`spill`], and the batches it came from.
struct Spilled {
    path: PathBuf,
    batches: Vec<RowBatch>,
    duplicates: u64,
}

/// Sorts `batches` (one row per paper) and writes them as the run `path`.
fn spill(path: PathBuf, batches: Vec<RowBatch>) -> Result<Spilled, MergeError> {
    let mut duplicates = 0;
    let order = sorted_unique(&batches, &mut duplicates);
    write_run(
        &path,
        order.iter().map(|&(b, r)| batches[b as usize].get(r as usize)),
    )?;
    Ok(Spilled {
        path,
        batches,
        duplicates,
    })
}

/// The buffered rows of a commit: batches, and their rows' order by key.
struct Memory<'a> {
    batches: &'a [RowBatch],
    order: &'a [(u32, u32)],
}

impl<'a> Memory<'a> {
    fn get(&self, k: usize) -> RowRef<'a> {
        let (b, r) = self.order[k];
        self.batches[b as usize].get(r as usize)
    }

    fn iter(&self) -> impl Iterator<Item = RowRef<'a>> + '_ {
        (0..self.order.len()).map(|k| self.get(k))
    }
}

/// Completes every output (the writing thread done), then flushes those
/// to be persisted to disk, all at once (one thread each: the disk gets
/// the flushes together rather than one after another). The commit's
/// changes (`latest`) are flushed to disk too when they will become
/// `latest.csv` (`keep_latest`).
fn finish_outputs(
    mut outputs: BTreeMap<u16, YearOutput>,
    mut latest: YearOutput,
    keep_latest: bool,
    writer: BackgroundWriter,
) -> Result<BTreeMap<u16, FinishedOutput>, MergeError> {
    for out in outputs.values_mut().chain(std::iter::once(&mut latest)) {
        out.file.close().map_err(io_err(&out.path))?;
    }
    writer.finish();
    std::thread::scope(|scope| {
        let latest = scope.spawn(move || latest.finish_with(keep_latest, false));
        let years: Vec<_> = outputs
            .into_iter()
            .map(|(year, out)| (year, scope.spawn(move || out.finish())))
            .collect();
        let mut finished = BTreeMap::new();
        let mut first_error = None;
        for (year, handle) in years {
            match handle.join() {
                Ok(Ok(out)) => {
                    finished.insert(year, out);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match latest.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(finished),
        }
    })
}

/// Replaces `target` by the complete file `path` (same directory tree):
/// flushed, renamed, the directory flushed.
fn persist_file(path: &Path, target: &Path) -> Result<(), MergeError> {
    let file = File::open(path).map_err(io_err(path))?;
    crate::fault::charge_write(&file).map_err(io_err(target))?;
    file.sync_all().map_err(io_err(path))?;
    crate::fault::write_point(target, "before_rename");
    std::fs::rename(path, target).map_err(io_err(target))?;
    crate::fault::write_point(target, "after_rename");
    let dir = target.parent().unwrap_or(Path::new("."));
    atomic::sync_dir(dir).map_err(io_err(dir))
}

/// Merges the sorted CSVs of several commits' changes into `target` (a
/// later commit wins for a paper in several); returns the rows written.
fn merge_latest(files: &[&Path], target: &Path) -> Result<u64, MergeError> {
    let mut sources = Vec::new();
    let mut heads: Vec<Option<PaperRecord>> = Vec::new();
    for path in files {
        let mut source = CsvSource::open(path)?;
        heads.push(source.next_record()?);
        sources.push(source);
    }
    let mut rows = 0u64;
    let mut line = OwnedRow::default();
    atomic::write_atomic(target, |w| {
        w.write_all(header_line().as_bytes())?;
        while let Some(min) = heads.iter().flatten().map(|r| r.paper_id.clone()).min() {
            let mut chosen = None;
            for (i, head) in heads.iter_mut().enumerate() {
                if head.as_ref().is_some_and(|r| r.paper_id == min) {
                    chosen = head.take();
                    *head = sources[i].next_record().map_err(io::Error::other)?;
                }
            }
            if let Some(record) = chosen {
                line.set_record(&record, 0);
                w.write_all(line.as_ref().csv)?;
                rows += 1;
            }
        }
        Ok(())
    })
    .map_err(io_err(target))?;
    Ok(rows)
}

fn header_line() -> String {
    format!("{}\n", COLUMNS.join(","))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    New,
    Updated,
    Unchanged,
    Older,
    Kept,
}

enum Attempt {
    Done(Outcome),
    Unsorted(u16),
}

struct Outcome {
    outputs: BTreeMap<u16, FinishedOutput>,
    latest_rows: u64,
}

fn unsorted(origin: Origin) -> Attempt {
    match origin {
        Origin::Stored(year) => Attempt::Unsorted(year),
        // Incoming runs are sorted by construction; no year file is 0.
        Origin::Incoming(_) => Attempt::Unsorted(0),
    }
}

#[derive(Clone, Copy, Debug)]
enum Origin {
    Stored(u16),
    Incoming(usize),
}

enum Step {
    Row,
    End,
    Unsorted,
}

/// A sorted stream of rows; its head is the row last advanced to.
enum Source<'a> {
    Csv {
        csv: CsvSource,
        year: u16,
        current: OwnedRow,
        previous: Vec<u8>,
        started: bool,
    },
    Run {
        run: RunReader,
        current: OwnedRow,
        started: bool,
    },
    Memory {
        memory: &'a Memory<'a>,
        next: usize,
    },
}

impl<'a> Source<'a> {
    fn csv(csv: CsvSource, year: u16) -> Source<'a> {
        Source::Csv {
            csv,
            year,
            current: OwnedRow::default(),
            previous: Vec::new(),
            started: false,
        }
    }

    fn run(run: RunReader) -> Source<'a> {
        Source::Run {
            run,
            current: OwnedRow::default(),
            started: false,
        }
    }

    fn memory(memory: &'a Memory<'a>) -> Source<'a> {
        Source::Memory { memory, next: 0 }
    }

    /// The current row (`None` before the first advance and at the end).
    fn head(&self) -> Option<RowRef<'_>> {
        match self {
            Source::Csv { current, started, .. } | Source::Run { current, started, .. } => {
                started.then(|| current.as_ref())
            }
            Source::Memory { memory, next } => {
                (*next > 0 && *next <= memory.order.len()).then(|| memory.get(next - 1))
            }
        }
    }

    fn advance(&mut self) -> Result<Step, MergeError> {
        Ok(match self {
            Source::Csv {
                csv,
                year,
                current,
                previous,
                started,
            } => {
                if *started {
                    previous.clear();
                    previous.extend_from_slice(current.as_ref().key);
                }
                match csv.next_record()? {
                    Some(r) => {
                        if *started && previous.as_slice() > r.paper_id.as_bytes() {
                            *started = false;
                            Step::Unsorted
                        } else {
                            current.set_record(&r, *year);
                            *started = true;
                            Step::Row
                        }
                    }
                    None => {
                        *started = false;
                        Step::End
                    }
                }
            }
            Source::Run {
                run,
                current,
                started,
            } => {
                *started = run.next(current)?;
                if *started { Step::Row } else { Step::End }
            }
            Source::Memory { memory, next } => {
                *next += 1;
                if *next <= memory.order.len() {
                    Step::Row
                } else {
                    Step::End
                }
            }
        })
    }
}

/// A stored metadata CSV read row by row, every row required to be whole.
struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    headers: csv::StringRecord,
    record: csv::StringRecord,
}

impl CsvSource {
    fn open(path: &Path) -> Result<CsvSource, MergeError> {
        let bad = |line: Option<u64>, message: String| MergeError::BadStoredFile {
            path: path.to_path_buf(),
            line,
            message,
        };
        let file = File::open(path).map_err(io_err(path))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let headers: csv::StringRecord = reader
            .headers()
            .map_err(|e| bad(Some(1), format!("cannot read the header: {e}")))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect();
        if !headers.iter().any(|h| h == "paper_id") {
            return Err(bad(Some(1), "no `paper_id` column".to_string()));
        }
        let extra: Vec<&str> = headers.iter().filter(|h| !COLUMNS.contains(h)).collect();
        if !extra.is_empty() {
            return Err(bad(
                Some(1),
                format!(
                    "columns {extra:?} are not in the contract and rewriting the file would drop them (move them to another file)"
                ),
            ));
        }
        Ok(CsvSource {
            path: path.to_path_buf(),
            reader,
            headers,
            record: csv::StringRecord::new(),
        })
    }

    fn next_record(&mut self) -> Result<Option<PaperRecord>, MergeError> {
        let line = self.reader.position().line() + 1;
        match self.reader.read_record(&mut self.record) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                return Err(self.bad(line, format!("unreadable row: {e}")));
            }
        }
        let line = self.record.position().map_or(line, |p| p.line());
        match self.record.deserialize::<PaperRecord>(Some(&self.headers)) {
            Ok(r) if !r.paper_id.trim().is_empty() => Ok(Some(r)),
            Ok(_) => Err(self.bad(line, "empty paper_id".to_string())),
            Err(e) => Err(self.bad(line, format!("unreadable row: {e}"))),
        }
    }

    fn bad(&self, line: u64, message: String) -> MergeError {
        MergeError::BadStoredFile {
            path: self.path.clone(),
            line: Some(line),
            message,
        }
    }
}

/// One year's new content (or a commit's changes), in a temporary file.
struct YearOutput {
    path: PathBuf,
    file: QueuedFile,
    temp: Option<tempfile::TempPath>,
    rows: u64,
    dirty: bool,
}

struct FinishedOutput {
    temp: Option<tempfile::TempPath>,
    rows: u64,
    dirty: bool,
}

impl FinishedOutput {
    fn persist(self, target: &Path) -> Result<(), MergeError> {
        let Some(temp) = self.temp else {
            return Err(io_err(target)(io::Error::other(
                "internal: no temporary file to persist",
            )));
        };
        crate::fault::write_point(target, "before_rename");
        temp.persist(target).map_err(|e| MergeError::Io {
            path: target.to_path_buf(),
            source: e.error,
        })?;
        crate::fault::write_point(target, "after_rename");
        Ok(())
    }
}

fn output_for<'a>(
    outputs: &'a mut BTreeMap<u16, YearOutput>,
    dir: &Path,
    year: u16,
    writer: &BackgroundWriter,
) -> Result<&'a mut YearOutput, MergeError> {
    if let std::collections::btree_map::Entry::Vacant(slot) = outputs.entry(year) {
        slot.insert(YearOutput::create(dir, None, writer)?);
    }
    outputs
        .get_mut(&year)
        .ok_or_else(|| io_err(dir)(io::Error::other("year output vanished")))
}

impl YearOutput {
    /// A new output with the header written: at `path`, or a temporary
    /// file in `dir` (removed unless persisted); its bytes go through
    /// `writer`.
    fn create(dir: &Path, path: Option<&Path>, writer: &BackgroundWriter) -> Result<YearOutput, MergeError> {
        let (file, temp, path) = match path {
            Some(path) => (
                File::create(path).map_err(io_err(path))?,
                None,
                path.to_path_buf(),
            ),
            None => {
                let mut builder = tempfile::Builder::new();
                let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
                builder.prefix(&prefix);
                #[cfg(unix)]
                builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
                let (file, temp) = builder.tempfile_in(dir).map_err(io_err(dir))?.into_parts();
                let path = temp.to_path_buf();
                (file, Some(temp), path)
            }
        };
        let mut file = writer.file(file, path.clone());
        file.write_all(header_line().as_bytes()).map_err(io_err(&path))?;
        Ok(YearOutput {
            path,
            file,
            temp,
            rows: 0,
            dirty: false,
        })
    }

    fn write(&mut self, csv_line: &[u8]) -> Result<(), MergeError> {
        self.file.write_all(csv_line).map_err(io_err(&self.path))?;
        self.rows += 1;
        Ok(())
    }

    /// Marks the output as one to persist: its bytes go to disk as they
    /// are written.
    fn mark_dirty(&mut self) {
        if !self.dirty {
            self.dirty = true;
            self.file.keep();
        }
    }

    /// Flushes the output (the writing thread done); a dirty one (to be
    /// persisted) also to disk.
    fn finish(self) -> Result<FinishedOutput, MergeError> {
        let dirty = self.dirty;
        self.finish_with(dirty, dirty)
    }

    /// Flushes the output, to disk when `sync`; `charge`: counts its bytes
    /// against a test's write budget.
    fn finish_with(self, sync: bool, charge: bool) -> Result<FinishedOutput, MergeError> {
        let path = self.path;
        let file = self.file.into_file().map_err(io_err(&path))?;
        if charge {
            crate::fault::charge_write(&file).map_err(io_err(&path))?;
        }
        if sync {
            file.sync_all().map_err(io_err(&path))?;
        }
        Ok(FinishedOutput {
            temp: self.temp,
            rows: self.rows,
            dirty: self.dirty,
        })
    }
}

/// `metadata-YYYY.csv`, the file papersys writes for `year`.
pub fn year_file_name(year: u16) -> String {
    format!("metadata-{year:04}.csv")
}

/// The `metadata-YYYY.csv` files of `dir`, by year.
fn year_files(dir: &Path) -> Result<BTreeMap<u16, PathBuf>, MergeError> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(year) = name
            .strip_prefix("metadata-")
            .and_then(|n| n.strip_suffix(".csv"))
            .and_then(crate::metadata::Year::parse)
        else {
            continue;
        };
        files.insert(year.get(), entry.path());
    }
    Ok(files)
}

/// Whether the CSV at `path` has a row whose `paper_id` is in `ids` (only
/// that column is decoded). An unreadable file counts as holding one, so
/// that the merge reads it and names the problem.
fn file_holds_any(path: &Path, ids: &HashSet<&[u8]>) -> bool {
    let Ok(file) = File::open(path) else { return true };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let Ok(headers) = reader.byte_headers() else {
        return true;
    };
    let Some(col) = headers
        .iter()
        .position(|h| h.strip_prefix("\u{feff}".as_bytes()).unwrap_or(h) == b"paper_id")
    else {
        return true;
    };
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => return false,
            Ok(true) => {
                if record.get(col).is_some_and(|id| ids.contains(id)) {
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
}

/// The year an arXiv identifier names: `0801.0001` → 2008,
/// `hep-th/9901001` → 1999.
pub fn id_year(paper_id: &str) -> Option<u16> {
    let digits = match paper_id.rsplit_once('/') {
        Some((_, number)) => number,
        None => paper_id,
    };
    let yy: u16 = digits.get(..2)?.parse().ok()?;
    if !digits.as_bytes().get(2..4)?.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let old_style = paper_id.contains('/');
    Some(if old_style && yy >= 91 {
        1900 + yy
    } else {
        2000 + yy
    })
}

/// Year file of a `published_at` value (fast path for the canonical
/// `YYYY-MM-DDTHH:MM:SSZ`).
pub fn year_of(published_at: &str) -> Option<u16> {
    let p = published_at.as_bytes();
    if p.len() == 20
        && p[4] == b'-'
        && p[10] == b'T'
        && p[19] == b'Z'
        && p[..4].iter().all(u8::is_ascii_digit)
    {
        return published_at[..4].parse().ok();
    }
    year_of_date(published_at)
}

/// Orders rows by `updated_at` as instants; empty or unreadable is oldest.
fn cmp_updated(a: &RowRef<'_>, b: &RowRef<'_>) -> Ordering {
    if a.updated == b.updated {
        return Ordering::Equal;
    }
    parse_instant(&a.updated_text()).cmp(&parse_instant(&b.updated_text()))
}

/// The buffered rows' order by `paper_id`, one per paper: the newest
/// `updated_at`, the later row on a tie. `duplicates` counts the rows
/// dropped.
fn sorted_unique(batches: &[RowBatch], duplicates: &mut u64) -> Vec<(u32, u32)> {
    let get = |(b, r): (u32, u32)| batches[b as usize].get(r as usize);
    let mut order: Vec<(u32, u32)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.len()).map(move |r| (b as u32, r as u32)))
        .collect();
    order.sort_by(|&a, &b| get(a).key.cmp(get(b).key));
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(order.len());
    for at in order {
        match out.last_mut() {
            Some(last) if get(*last).key == get(at).key => {
                *duplicates += 1;
                if cmp_updated(&get(at), &get(*last)) != Ordering::Less {
                    *last = at;
                }
            }
            _ => out.push(at),
        }
    }
    out
}

/// A sorted run on disk: per row, five little-endian `u32` (lengths of the
/// key, `updated_at` and CSV line; the compared prefix; the year), then the
/// key, `updated_at` and CSV line.
fn write_run<'a>(path: &Path, rows: impl Iterator<Item = RowRef<'a>>) -> Result<(), MergeError> {
    let file = File::create(path).map_err(io_err(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for r in rows {
        let mut header = [0u8; 20];
        for (k, n) in [
            r.key.len(),
            r.updated.len(),
            r.csv.len(),
            r.cmp,
            usize::from(r.year),
        ]
        .into_iter()
        .enumerate()
        {
            let n = u32::try_from(n).map_err(|_| io_err(path)(io::Error::other("row over 4 GiB")))?;
            header[k * 4..k * 4 + 4].copy_from_slice(&n.to_le_bytes());
        }
        out.write_all(&header).map_err(io_err(path))?;
        out.write_all(r.key).map_err(io_err(path))?;
        out.write_all(r.updated).map_err(io_err(path))?;
        out.write_all(r.csv).map_err(io_err(path))?;
    }
    out.flush().map_err(io_err(path))
}

struct RunReader {
    path: PathBuf,
    input: BufReader<File>,
}

impl RunReader {
    fn open(path: &Path) -> Result<RunReader, MergeError> {
        let file = File::open(path).map_err(io_err(path))?;
        Ok(RunReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(256 << 10, file),
        })
    }

    /// Reads the next row into `row`; `false` at the end of the run.
    fn next(&mut self, row: &mut OwnedRow) -> Result<bool, MergeError> {
        let mut header = [0u8; 20];
        let mut got = 0;
        while got < header.len() {
            match self.input.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io_err(&self.path)(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "run cut short",
                    )));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path)(e)),
            }
        }
        let n = |k: usize| {
            u32::from_le_bytes([
                header[k * 4],
                header[k * 4 + 1],
                header[k * 4 + 2],
                header[k * 4 + 3],
            ]) as usize
        };
        let (key, updated, csv, cmp, year) = (n(0), n(1), n(2), n(3), n(4));
        let buf = row.buffer();
        buf.clear();
        buf.resize(key + updated + csv, 0);
        self.input.read_exact(buf).map_err(io_err(&self.path))?;
        row.set_parts(key, updated, cmp, year as u16);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, published: &str, updated: &str, title: &str) -> PaperRecord {
        PaperRecord {
            paper_id: id.to_string(),
            title: title.to_string(),
            abstract_text: format!("  Abstract of {id},\nwrapped \"quoted\".\n"),
            categories: "cs.CL;cs.AI".to_string(),
            primary_category: "cs.CL".to_string(),
            authors: "Ann Lee;Bo Wu".to_string(),
            published_at: published.to_string(),
            updated_at: updated.to_string(),
            source: "papersys.ingest.snapshot".to_string(),
            ..PaperRecord::default()
        }
    }

    fn read(path: &Path) -> Vec<PaperRecord> {
        let mut issues = Vec::new();
        let mut rows = Vec::new();
        crate::metadata::read_records(path, &mut issues, |_, r| rows.push(r)).unwrap();
        assert!(issues.is_empty(), "{issues:?}");
        rows
    }

    fn snapshot_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    fn ids(rows: &[PaperRecord]) -> Vec<&str> {
        rows.iter().map(|r| r.paper_id.as_str()).collect()
    }

    /// A row first published and last revised at `date`.
    fn dated(id: &str, date: &str, title: &str) -> PaperRecord {
        row(id, date, date, title)
    }

    /// A metadata directory the tests merge into.
    struct Fixture(tempfile::TempDir);

    impl Fixture {
        fn new() -> Fixture {
            Fixture(tempfile::tempdir().unwrap())
        }

        fn path(&self) -> &Path {
            self.0.path()
        }

        fn file(&self, name: &str) -> std::path::PathBuf {
            self.path().join(name)
        }

        /// Merges `rows` in one run.
        fn merge(&self, rows: Vec<PaperRecord>) -> MergeReport {
            merge_records(self.path(), rows).unwrap()
        }

        /// A merge that must fail.
        fn merge_err(&self, rows: Vec<PaperRecord>) -> MergeError {
            merge_records(self.path(), rows).unwrap_err()
        }

        fn merger(&self, memory_budget: usize) -> Merger {
            Merger::new(self.path(), MergeOptions { memory_budget }).unwrap()
        }

        fn read(&self, name: &str) -> Vec<PaperRecord> {
            read(&self.file(name))
        }

        fn ids(&self, name: &str) -> Vec<String> {
            self.read(name).into_iter().map(|r| r.paper_id).collect()
        }

        /// Every file of the directory: name and bytes.
        fn files(&self) -> BTreeMap<String, Vec<u8>> {
            snapshot_of(self.path())
        }
    }

    #[test]
    fn rows_are_filed_by_year_sorted_and_written_like_write_records() {
        let dir = Fixture::new();
        let rows = vec![
            dated("2401.00002", "2024-01-03T00:00:00Z", "B"),
            row("2312.00001", "2023-12-31T23:59:59Z", "2024-02-01T00:00:00Z", "A"),
            dated("2401.00001", "2024-01-02T00:00:00Z", "C,\n  wrapped"),
        ];
        let report = dir.merge(rows.clone());
        assert_eq!(
            (report.totals.new, report.totals.updated, report.commits),
            (3, 0, 1)
        );
        assert_eq!(report.latest_rows, 3);
        let y2024 = dir.read("metadata-2024.csv");
        assert_eq!(ids(&y2024), ["2401.00001", "2401.00002"]);
        assert_eq!(dir.ids("metadata-2023.csv"), ["2312.00001"]);
        let mut expected = Vec::new();
        crate::metadata::write_records(&mut expected, [&rows[2], &rows[0]]).unwrap();
        assert_eq!(std::fs::read(dir.file("metadata-2024.csv")).unwrap(), expected);
        assert_eq!(dir.ids(LATEST_FILE), ["2312.00001", "2401.00001", "2401.00002"]);
        assert_eq!(report.totals.per_year["2024"].rows, 2);
        let names: Vec<_> = dir.files().into_keys().collect();
        assert_eq!(
            names,
            ["latest.csv", "metadata-2023.csv", "metadata-2024.csv"],
            "no temporaries left"
        );
    }

    #[test]
    fn newer_or_equal_updated_at_wins_older_and_empty_lose() {
        let dir = Fixture::new();
        let p = "2024-01-02T00:00:00Z";
        dir.merge(vec![
            row("2401.00001", p, "2024-03-01T00:00:00Z", "stored"),
            row("2401.00002", p, "2024-03-01T00:00:00Z", "stored"),
            row("2401.00003", p, "2024-03-01T00:00:00Z", "stored"),
            row("2401.00004", p, "", "stored, never revised"),
        ]);
        let report = dir.merge(vec![
            // Newer, as an instant (a string compare would say older).
            row("2401.00001", p, "2024-03-01T01:00:00+00:00", "newer"),
            row("2401.00002", p, "2024-03-01T00:00:00Z", "equal"),
            row("2401.00003", p, "2024-02-29T23:00:00Z", "older"),
            row("2401.00003", p, "", "empty is older than any date"),
            row("2401.00004", p, "2024-01-05T00:00:00Z", "a date beats empty"),
        ]);
        let titles: Vec<String> = dir
            .read("metadata-2024.csv")
            .into_iter()
            .map(|r| r.title)
            .collect();
        assert_eq!(titles, ["newer", "equal", "stored", "a date beats empty"]);
        assert_eq!(
            (
                report.totals.updated,
                report.totals.older,
                report.totals.duplicates
            ),
            (3, 1, 1)
        );
        assert_eq!(dir.ids(LATEST_FILE), ["2401.00001", "2401.00002", "2401.00004"]);
    }

    #[test]
    fn merging_the_same_rows_twice_changes_no_byte() {
        let dir = Fixture::new();
        let rows: Vec<_> = (0..50)
            .map(|i| {
                let year = 2020 + i % 3;
                row(
                    &format!("{}01.{i:05}", year % 100),
                    &format!("{year}-01-02T03:04:05Z"),
                    &format!("{year}-02-02T03:04:05Z"),
                    "t",
                )
            })
            .collect();
        dir.merge(rows.clone());
        let before = dir.files();
        let mtimes: Vec<_> = ["metadata-2020.csv", "metadata-2021.csv"]
            .iter()
            .map(|n| std::fs::metadata(dir.file(n)).unwrap().modified().unwrap())
            .collect();
        let mut reversed = rows.clone();
        reversed.reverse();
        // Again, also the same rows under another source: still unchanged.
        for r in &mut reversed {
            r.source = "papersys.oai-pmh.arXivRaw".to_string();
        }
        let report = dir.merge(reversed);
        assert_eq!(
            (report.totals.new, report.totals.updated, report.totals.unchanged),
            (0, 0, 50)
        );
        assert!(report.totals.files_written.is_empty());
        assert_eq!(report.latest_rows, 0);
        assert_eq!(dir.files(), before);
        let after: Vec<_> = ["metadata-2020.csv", "metadata-2021.csv"]
            .iter()
            .map(|n| std::fs::metadata(dir.file(n)).unwrap().modified().unwrap())
            .collect();
        assert_eq!(mtimes, after, "unchanged files are not rewritten");
    }

    #[test]
    fn a_paper_whose_published_year_changes_moves_files() {
        let dir = Fixture::new();
        dir.merge(vec![
            dated("0801.0001", "2008-01-01T00:00:00Z", "first"),
            dated("0801.0002", "2008-01-02T00:00:00Z", "stays"),
        ]);
        // Corrected v1 date: 31 Dec 2007. Small commit: found by id year.
        let report = dir.merge(vec![row(
            "0801.0001",
            "2007-12-31T23:00:00Z",
            "2008-01-01T00:00:00Z",
            "moved",
        )]);
        assert_eq!(report.totals.moved, 1);
        assert_eq!(dir.ids("metadata-2008.csv"), ["0801.0002"]);
        let y2007 = dir.read("metadata-2007.csv");
        assert_eq!(
            (ids(&y2007), y2007[0].title.as_str()),
            (vec!["0801.0001"], "moved")
        );
        assert_eq!(report.totals.per_year["2008"].removed, 1);

        // Spilled commit (snapshot-sized): every year file is consulted.
        let mut merger = dir.merger(1);
        merger
            .add(dated("0801.0001", "2009-06-01T00:00:00Z", "again"))
            .unwrap();
        merger.finish().unwrap();
        assert!(dir.read("metadata-2007.csv").is_empty());
        assert_eq!(dir.ids("metadata-2009.csv"), ["0801.0001"]);
        assert_eq!(dir.ids("metadata-2008.csv"), ["0801.0002"]);
    }

    #[test]
    fn spilled_runs_give_the_same_files_as_one_buffer() {
        let rows: Vec<_> = (0..300)
            .map(|i| {
                let year = 2019 + (i * 7) % 5;
                row(
                    &format!("{}{:02}.{:05}", year % 100, 1 + i % 3, i % 4),
                    &format!("{year}-03-04T05:06:07Z"),
                    &format!("{year}-0{}-04T05:06:07Z", 3 + i % 5),
                    &format!("title {i}"),
                )
            })
            .collect();
        let one = Fixture::new();
        one.merge(rows.clone());
        let many = Fixture::new();
        let mut merger = many.merger(4096);
        for r in rows {
            merger.add(r).unwrap();
        }
        assert!(merger.runs.len() > 5, "the budget forces spills");
        let report = merger.finish().unwrap();
        assert!(report.totals.duplicates > 0);
        assert_eq!(one.files(), many.files());
    }

    #[test]
    fn files_of_other_tools_are_read_sorted_and_rewritten_in_13_columns() {
        let dir = Fixture::new();
        let path = dir.file("metadata-2024.csv");
        std::fs::write(
            &path,
            "\u{feff}paper_id,title,abstract,published_at\n2401.00009,Z,z,2024-01-09\n2401.00001,A,a,2024-01-01\n2401.00001,A older dup,a,2024-01-01\n",
        )
        .unwrap();
        let report = dir.merge(vec![dated("2401.00005", "2024-01-05T00:00:00Z", "new")]);
        assert_eq!(report.totals.new, 1);
        let rows = read(&path);
        assert_eq!(ids(&rows), ["2401.00001", "2401.00005", "2401.00009"]);
        assert_eq!(rows[0].title, "A older dup", "a tie keeps the later row");
        assert_eq!(
            rows[2].published_at, "2024-01-09",
            "stored values are kept as they are"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{}\n", COLUMNS.join(","))));
    }

    #[test]
    fn an_unreadable_stored_file_is_never_rewritten() {
        let dir = Fixture::new();
        let path = dir.file("metadata-2024.csv");
        let content = "paper_id,title,abstract\n2401.00001,A,a\n2401.00002,B\n";
        std::fs::write(&path, content).unwrap();
        let err = dir
            .merge_err(vec![dated("2401.00005", "2024-01-05T00:00:00Z", "new")])
            .to_string();
        assert!(err.contains("metadata-2024.csv:3"), "{err}");
        assert!(err.contains("fix or remove"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        let names: Vec<_> = dir.files().into_keys().collect();
        assert_eq!(
            names,
            ["metadata-2024.csv"],
            "nothing else written, no temporaries"
        );

        std::fs::write(&path, "paper_id,title,abstract,score\n2401.00001,A,a,0.5\n").unwrap();
        let err = dir
            .merge_err(vec![dated("2401.00005", "2024-01-05T00:00:00Z", "new")])
            .to_string();
        assert!(
            err.contains("score") && err.contains("metadata-2024.csv:1"),
            "{err}"
        );
    }

    #[test]
    fn a_commit_failing_midway_leaves_every_file_as_it_was() {
        let dir = Fixture::new();
        let p24 = "2024-01-02T00:00:00Z";
        dir.merge(vec![dated("2401.00001", p24, "kept")]);
        let bad = "paper_id,title,abstract\n2501.00001,A,a\n2501.00002,\"never closed\n";
        std::fs::write(dir.file("metadata-2025.csv"), bad).unwrap();
        let before = dir.files();
        // Spilled, so every year file takes part; 2024's output is under way
        // when the bad 2025 row is reached.
        let mut merger = dir.merger(1);
        merger.add(dated("2401.00002", p24, "new")).unwrap();
        merger
            .add(dated("2501.00003", "2025-01-02T00:00:00Z", "new"))
            .unwrap();
        let err = merger.commit().unwrap_err().to_string();
        assert!(err.contains("metadata-2025.csv:3"), "{err}");
        drop(merger);
        assert_eq!(dir.files(), before, "no file changed, no temporaries left");
    }

    #[test]
    fn rows_without_a_date_are_skipped_and_reported() {
        let dir = Fixture::new();
        let report = dir.merge(vec![dated("2401.00001", "", "no date")]);
        assert_eq!(report.totals.skipped.len(), 1);
        assert!(report.totals.skipped[0].contains("2401.00001"));
        assert_eq!(report.latest_rows, 0);
        assert!(dir.files().is_empty());
    }

    #[test]
    fn latest_lists_the_runs_changes_across_commits() {
        let dir = Fixture::new();
        let mut merger = Merger::new(dir.path(), MergeOptions::default()).unwrap();
        merger
            .add(dated("2401.00002", "2024-01-02T00:00:00Z", "w1"))
            .unwrap();
        merger.commit().unwrap();
        assert!(!dir.file(LATEST_FILE).exists(), "latest.csv is written at finish");
        merger
            .add(row(
                "2401.00002",
                "2024-01-02T00:00:00Z",
                "2024-01-03T00:00:00Z",
                "w2",
            ))
            .unwrap();
        merger
            .add(dated("2401.00001", "2024-01-01T00:00:00Z", "w2"))
            .unwrap();
        merger.commit().unwrap();
        let report = merger.finish().unwrap();
        assert_eq!((report.commits, report.latest_rows), (2, 2));
        let latest = dir.read(LATEST_FILE);
        assert_eq!(ids(&latest), ["2401.00001", "2401.00002"]);
        assert_eq!(latest[1].title, "w2");
    }

    #[test]
    fn ids_name_their_year() {
        assert_eq!(id_year("0801.0001"), Some(2008));
        assert_eq!(id_year("2401.00001"), Some(2024));
        assert_eq!(id_year("hep-th/9901001"), Some(1999));
        assert_eq!(id_year("math/0309136"), Some(2003));
        assert_eq!(id_year("x"), None);
    }
}
