//! Merging incoming rows into `metadata-YYYY.csv` (one row per paper; the
//! newer or equal `updated_at` wins), each file replaced atomically.
//!
//! Design, with memory bounded whatever the input size:
//! - Incoming rows are buffered; past [`MergeOptions::memory_budget`] the
//!   buffer is sorted by `paper_id` and spilled as a *run* (a binary file in
//!   a `.tmp-<pid>-spill*` directory of the metadata directory).
//! - A commit merges, in one pass ordered by `paper_id`, the runs, the
//!   buffer and the stored year files involved (papersys writes them sorted;
//!   a file that is not is sorted into runs first). Every paper is decided
//!   once, with all its stored and incoming rows in view, so a paper whose
//!   `published_at` moved to another year leaves its old file.
//! - Each year's output goes to a temporary file beside the target, and
//!   replaces it only when a row of that year was added, changed or removed:
//!   merging the same rows twice writes nothing.
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

use jiff::Timestamp;
use serde::Serialize;
use tempfile::{NamedTempFile, TempDir};

use super::row::{parse_instant, year_of_date};
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

/// Merges incoming rows into a metadata directory; one per run (the rows
/// `latest.csv` lists are those of all its commits).
pub struct Merger {
    dir: PathBuf,
    options: MergeOptions,
    buffer: Vec<PaperRecord>,
    buffered_bytes: usize,
    spill: Option<TempDir>,
    runs: Vec<PathBuf>,
    latest_runs: Vec<PathBuf>,
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
            buffer: Vec::new(),
            buffered_bytes: 0,
            spill: None,
            runs: Vec::new(),
            latest_runs: Vec::new(),
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
        if year_of(&record).is_none() {
            self.pending.skipped.push(format!(
                "{}: published_at {:?} is not a date, so no year file can hold it; skipped",
                record.paper_id, record.published_at
            ));
            return Ok(());
        }
        self.buffered_bytes += record_size(&record);
        self.buffer.push(record);
        if self.buffered_bytes >= self.options.memory_budget {
            let rows = sorted_unique(std::mem::take(&mut self.buffer), &mut self.pending.duplicates);
            self.buffered_bytes = 0;
            let path = self.new_run_path()?;
            write_run(&path, rows.iter())?;
            self.runs.push(path);
        }
        Ok(())
    }

    /// Durably merges every row added since the last commit. Returns what
    /// changed; on error nothing of this commit is on disk.
    pub fn commit(&mut self) -> Result<CommitReport, MergeError> {
        let mut report = std::mem::take(&mut self.pending);
        let memory = sorted_unique(std::mem::take(&mut self.buffer), &mut report.duplicates);
        self.buffered_bytes = 0;
        let runs = std::mem::take(&mut self.runs);
        if memory.is_empty() && runs.is_empty() {
            self.report.totals.absorb(report.clone());
            return Ok(report);
        }
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
                    let sorted = self.sort_stored_file(path)?;
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
            self.latest_runs.push(latest_path);
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
        if !self.latest_runs.is_empty() {
            let mut sources: Vec<RunReader> = Vec::new();
            for path in &self.latest_runs {
                sources.push(RunReader::open(path)?);
            }
            let target = self.dir.join(LATEST_FILE);
            let mut rows = 0u64;
            let mut heads: Vec<Option<PaperRecord>> = Vec::new();
            for s in &mut sources {
                heads.push(s.next()?);
            }
            let result = atomic::write_atomic(&target, |w| {
                let mut csv = csv_writer(w);
                csv.write_record(COLUMNS)?;
                while let Some(min) = heads.iter().flatten().map(|r| r.paper_id.clone()).min() {
                    let mut chosen = None;
                    for (i, head) in heads.iter_mut().enumerate() {
                        if head.as_ref().is_some_and(|r| r.paper_id == min) {
                            chosen = head.take();
                            *head = sources[i].next().map_err(io::Error::other)?;
                        }
                    }
                    if let Some(record) = chosen {
                        write_row(&mut csv, &record)?;
                        rows += 1;
                    }
                }
                csv.flush()?;
                Ok(())
            });
            result.map_err(io_err(&target))?;
            self.report.latest_rows = rows;
        }
        Ok(self.report)
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
    fn stored_files(
        &self,
        memory: &[PaperRecord],
        spilled: bool,
    ) -> Result<BTreeMap<u16, PathBuf>, MergeError> {
        let existing = year_files(&self.dir)?;
        if spilled {
            return Ok(existing);
        }
        let mut chosen = BTreeMap::new();
        let mut neighbours = BTreeMap::new();
        for record in memory {
            if let Some(y) = year_of(record)
                && let Some(path) = existing.get(&y)
            {
                chosen.insert(y, path.clone());
            }
            if let Some(id_year) = id_year(&record.paper_id) {
                for y in id_year.saturating_sub(1)..=id_year + 1 {
                    if let Some(path) = existing.get(&y) {
                        neighbours.insert(y, path.clone());
                    }
                }
            }
        }
        let ids: HashSet<&str> = memory.iter().map(|r| r.paper_id.as_str()).collect();
        for (year, path) in neighbours {
            if !chosen.contains_key(&year) && file_holds_any(&path, &ids) {
                chosen.insert(year, path);
            }
        }
        Ok(chosen)
    }

    /// Sorts a stored file that is not in `paper_id` order into runs.
    fn sort_stored_file(&mut self, path: &Path) -> Result<Vec<PathBuf>, MergeError> {
        let mut reader = CsvSource::open(path)?;
        let mut runs = Vec::new();
        let mut buffer = Vec::new();
        let mut bytes = 0usize;
        loop {
            let next = reader.next_record()?;
            let flush = next.is_none() || bytes >= self.options.memory_budget;
            if flush && !buffer.is_empty() {
                // Duplicates inside a stored file are resolved by the merge
                // (and counted as removed), so keep them all here.
                let rows = sorted_keep_all(std::mem::take(&mut buffer));
                bytes = 0;
                let run = self.new_run_path()?;
                write_run(&run, rows.iter())?;
                runs.push(run);
            }
            match next {
                Some(record) => {
                    bytes += record_size(&record);
                    buffer.push(record);
                }
                None => break,
            }
        }
        Ok(runs)
    }

    fn merge_once(
        &self,
        memory: &[PaperRecord],
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
                        sources.push((Origin::Stored(*year), Source::Run(RunReader::open(run)?)));
                    }
                }
                None => sources.push((Origin::Stored(*year), Source::Csv(CsvSource::open(path)?))),
            }
        }
        for (order, run) in runs.iter().enumerate() {
            sources.push((Origin::Incoming(order), Source::Run(RunReader::open(run)?)));
        }
        sources.push((Origin::Incoming(runs.len()), Source::Memory(memory.iter())));

        let mut heap = BinaryHeap::new();
        let mut heads: Vec<Option<PaperRecord>> = Vec::with_capacity(sources.len());
        for (i, (origin, source)) in sources.iter_mut().enumerate() {
            let head = match source.next()? {
                Step::Row(r) => Some(r),
                Step::End => None,
                Step::Unsorted => return Ok(unsorted(*origin)),
            };
            if let Some(r) = &head {
                heap.push(Reverse((r.paper_id.clone(), i)));
            }
            heads.push(head);
        }

        let mut outputs: BTreeMap<u16, YearOutput> = BTreeMap::new();
        let mut latest = RunWriter::create(latest_path)?;
        let mut latest_rows = 0u64;
        let mut counts: BTreeMap<u16, YearCounts> = BTreeMap::new();
        let mut totals = CommitReport::default();
        let mut stored_rows: Vec<(u16, usize, PaperRecord)> = Vec::new();
        let mut incoming_rows: Vec<(usize, PaperRecord)> = Vec::new();

        while let Some(Reverse((id, first))) = heap.pop() {
            stored_rows.clear();
            incoming_rows.clear();
            let mut next_index = Some(first);
            while let Some(i) = next_index {
                let Some(record) = heads[i].take() else {
                    break;
                };
                match sources[i].0 {
                    Origin::Stored(year) => stored_rows.push((year, stored_rows.len(), record)),
                    Origin::Incoming(order) => incoming_rows.push((order, record)),
                }
                match sources[i].1.next()? {
                    Step::Row(r) => {
                        heap.push(Reverse((r.paper_id.clone(), i)));
                        heads[i] = Some(r);
                    }
                    Step::End => {}
                    Step::Unsorted => return Ok(unsorted(sources[i].0)),
                }
                next_index = match heap.peek() {
                    Some(Reverse((next_id, j))) if *next_id == id => {
                        let j = *j;
                        heap.pop();
                        Some(j)
                    }
                    _ => None,
                };
            }

            let stored_best = stored_rows
                .iter()
                .enumerate()
                .max_by(|a, b| {
                    cmp_updated(&a.1.2, &b.1.2)
                        .then(a.1.0.cmp(&b.1.0))
                        .then(a.0.cmp(&b.0))
                })
                .map(|(k, _)| k);
            let incoming_best = incoming_rows
                .iter()
                .enumerate()
                .max_by(|a, b| cmp_updated(&a.1.1, &b.1.1).then(a.1.0.cmp(&b.1.0)))
                .map(|(k, _)| k);
            totals.duplicates += incoming_rows.len().saturating_sub(1) as u64;

            let incoming_wins = match (incoming_best, stored_best) {
                (Some(i), Some(s)) => cmp_updated(&incoming_rows[i].1, &stored_rows[s].2) != Ordering::Less,
                (Some(_), None) => true,
                _ => false,
            };
            let (row, year, change) = if incoming_wins {
                let (_, incoming) = &incoming_rows[incoming_best.unwrap_or(0)];
                let target = year_of(incoming).unwrap_or(0);
                match stored_best.map(|s| &stored_rows[s]) {
                    Some((stored_year, _, stored))
                        if *stored_year == target && same_except_source(stored, incoming) =>
                    {
                        (stored.clone(), target, Change::Unchanged)
                    }
                    Some((stored_year, _, _)) => {
                        if *stored_year != target {
                            totals.moved += 1;
                        }
                        (incoming.clone(), target, Change::Updated)
                    }
                    None => (incoming.clone(), target, Change::New),
                }
            } else {
                let (year, _, stored) = &stored_rows[stored_best.unwrap_or(0)];
                let change = if incoming_rows.is_empty() {
                    Change::Kept
                } else {
                    Change::Older
                };
                (stored.clone(), *year, change)
            };

            // Stored rows that are neither written back nor replaced in
            // place leave their year (the paper moved, or was stored twice).
            for (k, (stored_year, _, _)) in stored_rows.iter().enumerate() {
                let in_place = Some(k) == stored_best && *stored_year == year;
                if !in_place {
                    output_for(&mut outputs, &self.dir, *stored_year)?.dirty = true;
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
            let output = output_for(&mut outputs, &self.dir, year)?;
            if matches!(change, Change::New | Change::Updated) {
                output.dirty = true;
                latest.write(&row)?;
                latest_rows += 1;
            }
            output.write(&row)?;
        }
        // A stored year every row of which moved out still gets its file.
        for year in stored.keys() {
            output_for(&mut outputs, &self.dir, *year)?;
        }
        latest.finish()?;
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
        let mut finished = BTreeMap::new();
        for (year, out) in outputs {
            finished.insert(year, out.finish()?);
        }
        Ok(Attempt::Done(Outcome {
            outputs: finished,
            latest_rows,
        }))
    }
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

// A transient return value, moved once: boxing the row would only add an
// allocation per row.
#[allow(clippy::large_enum_variant)]
enum Step {
    Row(PaperRecord),
    End,
    Unsorted,
}

enum Source<'a> {
    Csv(CsvSource),
    Run(RunReader),
    Memory(std::slice::Iter<'a, PaperRecord>),
}

impl Source<'_> {
    fn next(&mut self) -> Result<Step, MergeError> {
        Ok(match self {
            Source::Csv(csv) => {
                let previous = csv.previous.take();
                match csv.next_record()? {
                    Some(r) => {
                        if previous.as_ref().is_some_and(|p| *p > r.paper_id) {
                            Step::Unsorted
                        } else {
                            csv.previous = Some(r.paper_id.clone());
                            Step::Row(r)
                        }
                    }
                    None => Step::End,
                }
            }
            Source::Run(run) => match run.next()? {
                Some(r) => Step::Row(r),
                None => Step::End,
            },
            Source::Memory(iter) => match iter.next() {
                Some(r) => Step::Row(r.clone()),
                None => Step::End,
            },
        })
    }
}

/// A stored metadata CSV read row by row, every row required to be whole.
struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<BufReader<File>>,
    headers: csv::StringRecord,
    record: csv::StringRecord,
    previous: Option<String>,
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
            previous: None,
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

/// One year's new content, in a temporary file beside the target.
struct YearOutput {
    writer: csv::Writer<BufWriter<NamedTempFile>>,
    rows: u64,
    dirty: bool,
}

struct FinishedOutput {
    temp: NamedTempFile,
    rows: u64,
    dirty: bool,
}

impl FinishedOutput {
    fn persist(self, target: &Path) -> Result<(), MergeError> {
        crate::fault::write_point(target, "before_rename");
        self.temp.persist(target).map_err(|e| MergeError::Io {
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
) -> Result<&'a mut YearOutput, MergeError> {
    if let std::collections::btree_map::Entry::Vacant(slot) = outputs.entry(year) {
        let mut builder = tempfile::Builder::new();
        let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
        builder.prefix(&prefix);
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder.tempfile_in(dir).map_err(io_err(dir))?;
        let mut writer = csv_writer(BufWriter::with_capacity(1 << 20, temp));
        writer.write_record(COLUMNS).map_err(|e| MergeError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        slot.insert(YearOutput {
            writer,
            rows: 0,
            dirty: false,
        });
    }
    outputs
        .get_mut(&year)
        .ok_or_else(|| io_err(dir)(io::Error::other("year output vanished")))
}

impl YearOutput {
    fn write(&mut self, record: &PaperRecord) -> Result<(), MergeError> {
        write_row(&mut self.writer, record).map_err(|e| MergeError::Io {
            path: PathBuf::from("(temporary year file)"),
            source: e,
        })?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self) -> Result<FinishedOutput, MergeError> {
        let to_io = |e: io::Error| MergeError::Io {
            path: PathBuf::from("(temporary year file)"),
            source: e,
        };
        let buffered = self
            .writer
            .into_inner()
            .map_err(|e| to_io(io::Error::other(e.to_string())))?;
        let temp = buffered.into_inner().map_err(|e| to_io(e.into_error()))?;
        if self.dirty {
            crate::fault::charge_write(temp.as_file()).map_err(to_io)?;
            temp.as_file().sync_all().map_err(to_io)?;
        }
        Ok(FinishedOutput {
            temp,
            rows: self.rows,
            dirty: self.dirty,
        })
    }
}

fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out)
}

fn fields(r: &PaperRecord) -> [&str; 13] {
    [
        &r.paper_id,
        &r.title,
        &r.abstract_text,
        &r.categories,
        &r.primary_category,
        &r.authors,
        &r.published_at,
        &r.updated_at,
        &r.doi,
        &r.comment,
        &r.journal_ref,
        &r.license,
        &r.source,
    ]
}

fn write_row<W: Write>(csv: &mut csv::Writer<W>, r: &PaperRecord) -> io::Result<()> {
    csv.write_record(fields(r)).map_err(io::Error::from)
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
fn file_holds_any(path: &Path, ids: &HashSet<&str>) -> bool {
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
                let id = record.get(col).and_then(|b| std::str::from_utf8(b).ok());
                if id.is_some_and(|id| ids.contains(id)) {
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

/// Year file of a row: its `published_at` year (fast path for the
/// canonical `YYYY-MM-DDTHH:MM:SSZ`).
fn year_of(record: &PaperRecord) -> Option<u16> {
    let p = record.published_at.as_bytes();
    if p.len() == 20
        && p[4] == b'-'
        && p[10] == b'T'
        && p[19] == b'Z'
        && p[..4].iter().all(u8::is_ascii_digit)
    {
        return record.published_at[..4].parse().ok();
    }
    year_of_date(&record.published_at)
}

fn updated_instant(record: &PaperRecord) -> Option<Timestamp> {
    parse_instant(&record.updated_at)
}

/// Orders rows by `updated_at` as instants; empty or unreadable is oldest.
fn cmp_updated(a: &PaperRecord, b: &PaperRecord) -> Ordering {
    if a.updated_at == b.updated_at {
        return Ordering::Equal;
    }
    updated_instant(a).cmp(&updated_instant(b))
}

fn same_except_source(a: &PaperRecord, b: &PaperRecord) -> bool {
    fields(a)[..12] == fields(b)[..12]
}

fn record_size(r: &PaperRecord) -> usize {
    fields(r).iter().map(|f| f.len() + 24).sum::<usize>() + 32
}

/// Rows sorted by `paper_id`, one per paper: the newest `updated_at`, the
/// later row on a tie. `duplicates` counts the rows dropped.
fn sorted_unique(mut rows: Vec<PaperRecord>, duplicates: &mut u64) -> Vec<PaperRecord> {
    rows.sort_by(|a, b| a.paper_id.cmp(&b.paper_id));
    let mut out: Vec<PaperRecord> = Vec::with_capacity(rows.len());
    for row in rows {
        match out.last_mut() {
            Some(last) if last.paper_id == row.paper_id => {
                *duplicates += 1;
                if cmp_updated(&row, last) != Ordering::Less {
                    *last = row;
                }
            }
            _ => out.push(row),
        }
    }
    out
}

fn sorted_keep_all(mut rows: Vec<PaperRecord>) -> Vec<PaperRecord> {
    rows.sort_by(|a, b| a.paper_id.cmp(&b.paper_id));
    rows
}

/// A sorted run on disk: each row as 13 length-prefixed UTF-8 fields.
fn write_run<'a>(path: &Path, rows: impl Iterator<Item = &'a PaperRecord>) -> Result<(), MergeError> {
    let mut w = RunWriter::create(path)?;
    for r in rows {
        w.write(r)?;
    }
    w.finish()
}

struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl RunWriter {
    fn create(path: &Path) -> Result<RunWriter, MergeError> {
        let file = File::create(path).map_err(io_err(path))?;
        Ok(RunWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn write(&mut self, r: &PaperRecord) -> Result<(), MergeError> {
        for f in fields(r) {
            let len = u32::try_from(f.len())
                .map_err(|_| io_err(&self.path)(io::Error::other("field over 4 GiB")))?;
            self.out
                .write_all(&len.to_le_bytes())
                .map_err(io_err(&self.path))?;
            self.out.write_all(f.as_bytes()).map_err(io_err(&self.path))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), MergeError> {
        self.out.flush().map_err(io_err(&self.path))
    }
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

    /// The next field; `None` at a clean end of the run (only checked
    /// before a row's first field).
    fn field(&mut self, first: bool) -> Result<Option<String>, MergeError> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if first && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io_err(&self.path)(e)),
        }
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        self.input.read_exact(&mut bytes).map_err(io_err(&self.path))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| io_err(&self.path)(io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    fn next(&mut self) -> Result<Option<PaperRecord>, MergeError> {
        let Some(paper_id) = self.field(true)? else {
            return Ok(None);
        };
        let mut f = || -> Result<String, MergeError> { Ok(self.field(false)?.unwrap_or_default()) };
        Ok(Some(PaperRecord {
            paper_id,
            title: f()?,
            abstract_text: f()?,
            categories: f()?,
            primary_category: f()?,
            authors: f()?,
            published_at: f()?,
            updated_at: f()?,
            doi: f()?,
            comment: f()?,
            journal_ref: f()?,
            license: f()?,
            source: f()?,
        }))
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

    #[test]
    fn rows_are_filed_by_year_sorted_and_written_like_write_records() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            row("2401.00002", "2024-01-03T00:00:00Z", "2024-01-03T00:00:00Z", "B"),
            row("2312.00001", "2023-12-31T23:59:59Z", "2024-02-01T00:00:00Z", "A"),
            row(
                "2401.00001",
                "2024-01-02T00:00:00Z",
                "2024-01-02T00:00:00Z",
                "C,\n  wrapped",
            ),
        ];
        let report = merge_records(dir.path(), rows.clone()).unwrap();
        assert_eq!(
            (report.totals.new, report.totals.updated, report.commits),
            (3, 0, 1)
        );
        assert_eq!(report.latest_rows, 3);
        let y2024 = read(&dir.path().join("metadata-2024.csv"));
        assert_eq!(ids(&y2024), ["2401.00001", "2401.00002"]);
        assert_eq!(ids(&read(&dir.path().join("metadata-2023.csv"))), ["2312.00001"]);
        let mut expected = Vec::new();
        crate::metadata::write_records(&mut expected, [&rows[2], &rows[0]]).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("metadata-2024.csv")).unwrap(),
            expected
        );
        assert_eq!(
            ids(&read(&dir.path().join(LATEST_FILE))),
            ["2312.00001", "2401.00001", "2401.00002"]
        );
        assert_eq!(report.totals.per_year["2024"].rows, 2);
        let names: Vec<_> = snapshot_of(dir.path()).into_keys().collect();
        assert_eq!(
            names,
            ["latest.csv", "metadata-2023.csv", "metadata-2024.csv"],
            "no temporaries left"
        );
    }

    #[test]
    fn newer_or_equal_updated_at_wins_older_and_empty_lose() {
        let dir = tempfile::tempdir().unwrap();
        let p = "2024-01-02T00:00:00Z";
        merge_records(
            dir.path(),
            vec![
                row("2401.00001", p, "2024-03-01T00:00:00Z", "stored"),
                row("2401.00002", p, "2024-03-01T00:00:00Z", "stored"),
                row("2401.00003", p, "2024-03-01T00:00:00Z", "stored"),
                row("2401.00004", p, "", "stored, never revised"),
            ],
        )
        .unwrap();
        let report = merge_records(
            dir.path(),
            vec![
                // Newer, as an instant (a string compare would say older).
                row("2401.00001", p, "2024-03-01T01:00:00+00:00", "newer"),
                row("2401.00002", p, "2024-03-01T00:00:00Z", "equal"),
                row("2401.00003", p, "2024-02-29T23:00:00Z", "older"),
                row("2401.00003", p, "", "empty is older than any date"),
                row("2401.00004", p, "2024-01-05T00:00:00Z", "a date beats empty"),
            ],
        )
        .unwrap();
        let titles: Vec<String> = read(&dir.path().join("metadata-2024.csv"))
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
        assert_eq!(
            ids(&read(&dir.path().join(LATEST_FILE))),
            ["2401.00001", "2401.00002", "2401.00004"]
        );
    }

    #[test]
    fn merging_the_same_rows_twice_changes_no_byte() {
        let dir = tempfile::tempdir().unwrap();
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
        merge_records(dir.path(), rows.clone()).unwrap();
        let before = snapshot_of(dir.path());
        let mtimes: Vec<_> = ["metadata-2020.csv", "metadata-2021.csv"]
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().modified().unwrap())
            .collect();
        let mut reversed = rows.clone();
        reversed.reverse();
        // Again, also the same rows under another source: still unchanged.
        for r in &mut reversed {
            r.source = "papersys.oai-pmh.arXivRaw".to_string();
        }
        let report = merge_records(dir.path(), reversed).unwrap();
        assert_eq!(
            (report.totals.new, report.totals.updated, report.totals.unchanged),
            (0, 0, 50)
        );
        assert!(report.totals.files_written.is_empty());
        assert_eq!(report.latest_rows, 0);
        assert_eq!(snapshot_of(dir.path()), before);
        let after: Vec<_> = ["metadata-2020.csv", "metadata-2021.csv"]
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().modified().unwrap())
            .collect();
        assert_eq!(mtimes, after, "unchanged files are not rewritten");
    }

    #[test]
    fn a_paper_whose_published_year_changes_moves_files() {
        let dir = tempfile::tempdir().unwrap();
        merge_records(
            dir.path(),
            vec![
                row(
                    "0801.0001",
                    "2008-01-01T00:00:00Z",
                    "2008-01-01T00:00:00Z",
                    "first",
                ),
                row(
                    "0801.0002",
                    "2008-01-02T00:00:00Z",
                    "2008-01-02T00:00:00Z",
                    "stays",
                ),
            ],
        )
        .unwrap();
        // Corrected v1 date: 31 Dec 2007. Small commit: found by id year.
        let report = merge_records(
            dir.path(),
            vec![row(
                "0801.0001",
                "2007-12-31T23:00:00Z",
                "2008-01-01T00:00:00Z",
                "moved",
            )],
        )
        .unwrap();
        assert_eq!(report.totals.moved, 1);
        assert_eq!(ids(&read(&dir.path().join("metadata-2008.csv"))), ["0801.0002"]);
        let y2007 = read(&dir.path().join("metadata-2007.csv"));
        assert_eq!(
            (ids(&y2007), y2007[0].title.as_str()),
            (vec!["0801.0001"], "moved")
        );
        assert_eq!(report.totals.per_year["2008"].removed, 1);

        // Spilled commit (snapshot-sized): every year file is consulted.
        let mut merger = Merger::new(dir.path(), MergeOptions { memory_budget: 1 }).unwrap();
        merger
            .add(row(
                "0801.0001",
                "2009-06-01T00:00:00Z",
                "2009-06-01T00:00:00Z",
                "again",
            ))
            .unwrap();
        merger.finish().unwrap();
        assert!(read(&dir.path().join("metadata-2007.csv")).is_empty());
        assert_eq!(ids(&read(&dir.path().join("metadata-2009.csv"))), ["0801.0001"]);
        assert_eq!(ids(&read(&dir.path().join("metadata-2008.csv"))), ["0801.0002"]);
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
        let one = tempfile::tempdir().unwrap();
        merge_records(one.path(), rows.clone()).unwrap();
        let many = tempfile::tempdir().unwrap();
        let mut merger = Merger::new(many.path(), MergeOptions { memory_budget: 4096 }).unwrap();
        for r in rows {
            merger.add(r).unwrap();
        }
        assert!(merger.runs.len() > 5, "the budget forces spills");
        let report = merger.finish().unwrap();
        assert!(report.totals.duplicates > 0);
        assert_eq!(snapshot_of(one.path()), snapshot_of(many.path()));
    }

    #[test]
    fn files_of_other_tools_are_read_sorted_and_rewritten_in_13_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        std::fs::write(
            &path,
            "\u{feff}paper_id,title,abstract,published_at\n2401.00009,Z,z,2024-01-09\n2401.00001,A,a,2024-01-01\n2401.00001,A older dup,a,2024-01-01\n",
        )
        .unwrap();
        let report = merge_records(
            dir.path(),
            vec![row(
                "2401.00005",
                "2024-01-05T00:00:00Z",
                "2024-01-05T00:00:00Z",
                "new",
            )],
        )
        .unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        let content = "paper_id,title,abstract\n2401.00001,A,a\n2401.00002,B\n";
        std::fs::write(&path, content).unwrap();
        let err = merge_records(
            dir.path(),
            vec![row(
                "2401.00005",
                "2024-01-05T00:00:00Z",
                "2024-01-05T00:00:00Z",
                "new",
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("metadata-2024.csv:3"), "{err}");
        assert!(err.contains("fix or remove"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        let names: Vec<_> = snapshot_of(dir.path()).into_keys().collect();
        assert_eq!(
            names,
            ["metadata-2024.csv"],
            "nothing else written, no temporaries"
        );

        std::fs::write(&path, "paper_id,title,abstract,score\n2401.00001,A,a,0.5\n").unwrap();
        let err = merge_records(
            dir.path(),
            vec![row(
                "2401.00005",
                "2024-01-05T00:00:00Z",
                "2024-01-05T00:00:00Z",
                "new",
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("score") && err.contains("metadata-2024.csv:1"),
            "{err}"
        );
    }

    #[test]
    fn a_commit_failing_midway_leaves_every_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let p24 = "2024-01-02T00:00:00Z";
        merge_records(dir.path(), vec![row("2401.00001", p24, p24, "kept")]).unwrap();
        let bad = "paper_id,title,abstract\n2501.00001,A,a\n2501.00002,\"never closed\n";
        std::fs::write(dir.path().join("metadata-2025.csv"), bad).unwrap();
        let before = snapshot_of(dir.path());
        // Spilled, so every year file takes part; 2024's output is under way
        // when the bad 2025 row is reached.
        let mut merger = Merger::new(dir.path(), MergeOptions { memory_budget: 1 }).unwrap();
        merger.add(row("2401.00002", p24, p24, "new")).unwrap();
        merger
            .add(row(
                "2501.00003",
                "2025-01-02T00:00:00Z",
                "2025-01-02T00:00:00Z",
                "new",
            ))
            .unwrap();
        let err = merger.commit().unwrap_err().to_string();
        assert!(err.contains("metadata-2025.csv:3"), "{err}");
        drop(merger);
        assert_eq!(
            snapshot_of(dir.path()),
            before,
            "no file changed, no temporaries left"
        );
    }

    #[test]
    fn rows_without_a_date_are_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let report = merge_records(dir.path(), vec![row("2401.00001", "", "", "no date")]).unwrap();
        assert_eq!(report.totals.skipped.len(), 1);
        assert!(report.totals.skipped[0].contains("2401.00001"));
        assert_eq!(report.latest_rows, 0);
        assert!(snapshot_of(dir.path()).is_empty());
    }

    #[test]
    fn latest_lists_the_runs_changes_across_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut merger = Merger::new(dir.path(), MergeOptions::default()).unwrap();
        merger
            .add(row(
                "2401.00002",
                "2024-01-02T00:00:00Z",
                "2024-01-02T00:00:00Z",
                "w1",
            ))
            .unwrap();
        merger.commit().unwrap();
        assert!(
            !dir.path().join(LATEST_FILE).exists(),
            "latest.csv is written at finish"
        );
        merger
            .add(row(
                "2401.00002",
                "2024-01-02T00:00:00Z",
                "2024-01-03T00:00:00Z",
                "w2",
            ))
            .unwrap();
        merger
            .add(row(
                "2401.00001",
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
                "w2",
            ))
            .unwrap();
        merger.commit().unwrap();
        let report = merger.finish().unwrap();
        assert_eq!((report.commits, report.latest_rows), (2, 2));
        let latest = read(&dir.path().join(LATEST_FILE));
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
