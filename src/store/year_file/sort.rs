//! Sorting a year file written by another tool (rows in any order, a paper
//! repeated) into papersys' form with bounded memory: an external merge
//! sort. The file is read in chunks of at most `max_rows` rows; each chunk
//! is sorted, de-duplicated and spilled to an unnamed temporary file beside
//! the year file (it vanishes with the process, whatever happens); the
//! spilled runs are then merged, at most [`MAX_FAN_IN`] at a time, each
//! read a small batch at a time, so no more than about `max_rows` rows are
//! ever held. Of a repeated paper the row with the newest `generated_at`
//! is kept, the first in file order on a tie, as [`super::read_ids`] does.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::path::Path;

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::WriterProperties;

use super::{
    ALL_COLUMNS, BatchWriter, VectorRow, YearFileError, batch_rows, footer, open_columns_sized, parse_time,
    rows_to_batch, schema, sort_and_dedup_by_time,
};
use crate::store::atomic::write_atomic;

/// Runs merged at once; more are merged in several passes.
const MAX_FAN_IN: usize = 64;

/// What sorting a file did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SortOutcome {
    /// Rows in the file afterwards (one per paper).
    pub rows: u64,
    /// Sorted runs spilled to temporary files.
    pub runs: usize,
    /// The most rows held in memory at once.
    pub peak_rows: usize,
}

/// Counts the rows held, remembering the most.
#[derive(Default)]
struct Held {
    now: usize,
    peak: usize,
}

impl Held {
    fn add(&mut self, n: usize) {
        self.now += n;
        self.peak = self.peak.max(self.now);
    }

    fn remove(&mut self, n: usize) {
        self.now = self.now.saturating_sub(n);
    }
}

/// One spilled run being read back.
struct Run {
    reader: ParquetRecordBatchReader,
    rows: VecDeque<VectorRow>,
    /// Position of the run in file order (ties go to the earlier).
    order: usize,
}

/// Heap key of a run's next row: smallest id first, then the newest time,
/// then the earlier run.
struct Head {
    paper_id: String,
    time: Option<jiff::Timestamp>,
    run: usize,
    order: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.paper_id
            .cmp(&other.paper_id)
            .then_with(|| other.time.cmp(&self.time))
            .then_with(|| self.order.cmp(&other.order))
    }
}

fn spill_properties(batch_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_max_row_group_row_count(Some(batch_rows.max(1)))
        .build()
}

/// Writes sorted, unique `rows` to an unnamed temporary file in `dir`.
fn spill(dir: &Path, rows: &[VectorRow], dimension: usize, batch: usize) -> std::io::Result<File> {
    let file = tempfile::tempfile_in(dir)?;
    let mut writer =
        ArrowWriter::try_new(file, schema(), Some(spill_properties(batch))).map_err(std::io::Error::other)?;
    for slice in rows.chunks(batch.max(1)) {
        let batch = rows_to_batch(slice, dimension).map_err(std::io::Error::other)?;
        writer.write(&batch).map_err(std::io::Error::other)?;
        writer.flush().map_err(std::io::Error::other)?;
    }
    writer.into_inner().map_err(std::io::Error::other)
}

fn open_run(file: File, batch: usize, order: usize) -> std::io::Result<Run> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(batch.max(1)).build())
        .map_err(std::io::Error::other)?;
    Ok(Run {
        reader,
        rows: VecDeque::new(),
        order,
    })
}

/// Refills `run` when empty; false once it is exhausted.
fn fill(run: &mut Run, path: &Path, dimension: usize, held: &mut Held) -> Result<bool, YearFileError> {
    if !run.rows.is_empty() {
        return Ok(true);
    }
    match run.reader.next() {
        None => Ok(false),
        Some(batch) => {
            let batch = batch.map_err(|e| YearFileError::io(path, std::io::Error::other(e)))?;
            let rows = batch_rows(path, &batch, dimension)?;
            held.add(rows.len());
            run.rows.extend(rows);
            Ok(true)
        }
    }
}

fn head_of(run: &Run, index: usize) -> Option<Head> {
    run.rows.front().map(|row| Head {
        paper_id: row.paper_id.clone(),
        time: parse_time(&row.generated_at),
        run: index,
        order: run.order,
    })
}

/// Merges `runs` (each sorted and unique, in file order) into `emit`, one
/// row per paper, holding at most about `budget` rows of them.
fn merge_runs(
    path: &Path,
    runs: Vec<(File, usize)>,
    dimension: usize,
    budget: usize,
    held: &mut Held,
    mut emit: impl FnMut(VectorRow, &mut Held) -> std::io::Result<()>,
) -> Result<(), YearFileError> {
    let io = |e| YearFileError::io(path, e);
    let batch = (budget / runs.len().max(1)).max(1);
    let mut open: Vec<Run> = Vec::with_capacity(runs.len());
    for (file, order) in runs {
        open.push(open_run(file, batch, order).map_err(io)?);
    }
    let mut heap = BinaryHeap::new();
    for (index, run) in open.iter_mut().enumerate() {
        if fill(run, path, dimension, held)? {
            heap.extend(head_of(run, index).map(Reverse));
        }
    }
    while let Some(Reverse(winner)) = heap.pop() {
        let take = |run: &mut Run, held: &mut Held| {
            held.remove(1);
            run.rows.pop_front()
        };
        if let Some(row) = take(&mut open[winner.run], held) {
            emit(row, held).map_err(io)?;
        }
        let mut advanced = vec![winner.run];
        // Every other run's row of the same paper loses.
        while let Some(Reverse(next)) = heap.peek()
            && next.paper_id == winner.paper_id
        {
            let run = next.run;
            heap.pop();
            take(&mut open[run], held);
            advanced.push(run);
        }
        for index in advanced {
            if fill(&mut open[index], path, dimension, held)? {
                heap.extend(head_of(&open[index], index).map(Reverse));
            }
        }
    }
    Ok(())
}

/// Rewrites the year file at `path` sorted by paper id with one row per
/// paper, atomically, holding at most about `max_rows` rows in memory (see
/// the module). The model it records is kept.
pub fn sort_file(path: &Path, dimension: usize, max_rows: usize) -> Result<SortOutcome, YearFileError> {
    let max_rows = max_rows.max(2);
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |e| YearFileError::io(path, e);
    let identity = footer(path)?.identity;
    let mut held = Held::default();
    // Spill: chunks of at most max_rows rows, each sorted.
    let mut runs: Vec<(File, usize)> = Vec::new();
    let mut chunk: Vec<VectorRow> = Vec::new();
    let spill_batch = (max_rows / 8).max(1);
    // A chunk and the batch being read stay within max_rows together.
    let chunk_rows = (max_rows - spill_batch).max(1);
    let mut reader = open_columns_sized(path, &ALL_COLUMNS, spill_batch)?;
    let flush = |chunk: &mut Vec<VectorRow>, held: &mut Held, runs: &mut Vec<(File, usize)>| {
        let len = chunk.len();
        sort_and_dedup_by_time(chunk);
        let file = spill(dir, chunk, dimension, spill_batch).map_err(io)?;
        runs.push((file, runs.len()));
        held.remove(len);
        chunk.clear();
        Ok::<(), YearFileError>(())
    };
    for batch in reader.batches() {
        let rows = batch_rows(path, &batch?, dimension)?;
        held.add(rows.len());
        for row in rows {
            chunk.push(row);
            if chunk.len() >= chunk_rows {
                flush(&mut chunk, &mut held, &mut runs)?;
            }
        }
    }
    if !chunk.is_empty() || runs.is_empty() {
        flush(&mut chunk, &mut held, &mut runs)?;
    }
    let spilled = runs.len();
    // Merge in passes until one pass can write the year file.
    let fan_in = MAX_FAN_IN.min(max_rows / 2).max(2);
    while runs.len() > fan_in {
        let mut merged = Vec::new();
        let groups: Vec<Vec<(File, usize)>> = {
            let mut groups = Vec::new();
            let mut rest = runs.into_iter().peekable();
            while rest.peek().is_some() {
                groups.push(rest.by_ref().take(fan_in).collect());
            }
            groups
        };
        for group in groups {
            let order = group.first().map_or(0, |g| g.1);
            let mut out: Vec<VectorRow> = Vec::new();
            let file = tempfile::tempfile_in(dir).map_err(io)?;
            let mut writer = ArrowWriter::try_new(file, schema(), Some(spill_properties(spill_batch)))
                .map_err(|e| io(std::io::Error::other(e)))?;
            merge_runs(path, group, dimension, max_rows / 2, &mut held, |row, held| {
                out.push(row);
                held.add(1);
                if out.len() >= spill_batch {
                    let batch = rows_to_batch(&out, dimension).map_err(std::io::Error::other)?;
                    writer.write(&batch).map_err(std::io::Error::other)?;
                    writer.flush().map_err(std::io::Error::other)?;
                    held.remove(out.len());
                    out.clear();
                }
                Ok(())
            })?;
            if !out.is_empty() {
                let batch = rows_to_batch(&out, dimension).map_err(|e| io(std::io::Error::other(e)))?;
                writer.write(&batch).map_err(|e| io(std::io::Error::other(e)))?;
                held.remove(out.len());
            }
            merged.push((
                writer.into_inner().map_err(|e| io(std::io::Error::other(e)))?,
                order,
            ));
        }
        runs = merged;
    }
    let mut failure = None;
    let written = write_atomic(path, |out| {
        let mut writer = BatchWriter::new(out, dimension, identity.as_ref())?;
        writer.flush_at = (max_rows / 2).clamp(1, writer.flush_at);
        let flush_at = writer.flush_at;
        let result = merge_runs(path, runs, dimension, max_rows / 2, &mut held, |row, held| {
            writer.push(row)?;
            held.add(1);
            if writer.pending.is_empty() {
                held.remove(flush_at);
            }
            Ok(())
        });
        if let Err(e) = result {
            failure = Some(e);
            return Err(std::io::Error::other("sorting failed"));
        }
        writer.finish()
    });
    match (written, failure) {
        (_, Some(e)) => Err(e),
        (Ok(rows), None) => {
            #[cfg(test)]
            probe::record(held.peak);
            Ok(SortOutcome {
                rows,
                runs: spilled,
                peak_rows: held.peak,
            })
        }
        (Err(e), None) => Err(io(e)),
    }
}

/// Test-only record of the most rows the last [`sort_file`] on this thread
/// held, for tests that sort through another function (a fold).
#[cfg(test)]
pub(crate) mod probe {
    use std::cell::Cell;

    thread_local! {
        static PEAK: Cell<Option<usize>> = const { Cell::new(None) };
    }

    pub(super) fn record(peak: usize) {
        PEAK.with(|p| p.set(Some(peak)));
    }

    /// The peak of the last sort on this thread, if any, cleared.
    pub(crate) fn take() -> Option<usize> {
        PEAK.with(Cell::take)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{read_rows, tests::row, write_rows};
    use super::*;

    /// A file as another tool writes it: `n` papers in no order, one in
    /// three repeated with an older and a newer `generated_at`.
    pub(crate) fn foreign_file(path: &Path, n: usize) -> Vec<VectorRow> {
        let times = [
            "2025-03-01T00:00:00+00:00",
            "2025-01-01T00:00:00.000000+00:00",
            "2025-06-01T00:00:00Z",
        ];
        let mut rows = Vec::new();
        for i in 0..n {
            // A permutation of 0..n (7919 is prime, n is not a multiple of it).
            let id = (i * 7919) % n;
            rows.push(row(&format!("{id:06}"), i as f32, times[i % 2]));
            if id.is_multiple_of(3) {
                rows.push(row(&format!("{id:06}"), -(i as f32), times[2]));
            }
        }
        write_rows(path, rows.clone(), 4).unwrap();
        rows
    }

    #[test]
    fn an_unsorted_file_with_repeats_is_sorted_within_the_row_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        let mut expected = foreign_file(&path, 10_000);
        sort_and_dedup_by_time(&mut expected);
        let outcome = sort_file(&path, 4, 100).unwrap();
        assert_eq!(outcome.rows, 10_000);
        assert!(outcome.runs > MAX_FAN_IN, "several merge passes: {outcome:?}");
        assert!(
            outcome.peak_rows <= 100 && outcome.peak_rows > 50,
            "at most 100 rows held: {outcome:?}"
        );
        assert_eq!(read_rows(&path, 4).unwrap(), expected);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 1,
            "no temporary file is left"
        );
        // Sorting a sorted file changes nothing.
        let before = read_rows(&path, 4).unwrap();
        sort_file(&path, 4, 100).unwrap();
        assert_eq!(read_rows(&path, 4).unwrap(), before);
    }
}
