//! `embeddings/<alias>/YYYY.parquet`: the vectors of one year.
//!
//! Written exactly as the contract says: `paper_id` (Utf8, not null),
//! `embedding` (List<Float32>), `generated_at` (Utf8), `model_dim` (UInt32),
//! `source` (Utf8), then papersys' own optional `text_hash` (Utf8, the
//! [`TextHash`] of the text embedded). Rows are unique by `paper_id` and
//! sorted by it. Files written by other tools are read leniently (large or
//! view strings, float64 or fixed-size lists, no `text_hash`) and rewritten
//! in the contract's form the next time their year changes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, Float32Array, ListArray, RecordBatch, StringArray, UInt32Array};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

use super::atomic::write_atomic;
use super::parquet_input::{self, OpenError, ParquetInput};
use crate::text::TextHash;

/// Value of the `source` column for rows papersys writes.
pub const SOURCE: &str = "papersys.embedding";

/// Rows per row group: readers get reasonable chunks, and the writer never
/// buffers more than a few tens of MB.
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// Rows per batch when streaming a file through a merge.
const READ_BATCH_ROWS: usize = 4096;

/// One paper's vector and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorRow {
    /// Paper id.
    pub paper_id: String,
    /// The vector.
    pub embedding: Vec<f32>,
    /// UTC ISO-8601 time it was computed.
    pub generated_at: String,
    /// What wrote it.
    pub source: String,
    /// Hash of the embedded text; `None` for rows from other tools.
    pub text_hash: Option<TextHash>,
}

/// Why a year file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum YearFileError {
    /// The OS refused (permissions, I/O error, disk full): the file may be
    /// fine, so nothing is done to it.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The year file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The content is not a readable embeddings file.
    #[error("{} is damaged or not an embeddings file: {message}", .path.display())]
    Damaged {
        /// The year file.
        path: PathBuf,
        /// What the reader found.
        message: String,
    },
    /// Vectors of another length than the model's.
    #[error(
        "{} holds {found}-dimensional vectors but the model is configured with dimension = {expected}; \
         fix `dimension` in the config, or use another alias for the new model",
        .path.display()
    )]
    Dimension {
        /// The year file.
        path: PathBuf,
        /// Length found in the file.
        found: usize,
        /// Configured dimension.
        expected: usize,
    },
}

impl YearFileError {
    fn damaged(path: &Path, message: impl std::fmt::Display) -> Self {
        YearFileError::Damaged {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        YearFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The Arrow schema papersys writes.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("paper_id", DataType::Utf8, false),
        Field::new("embedding", list_type(), true),
        Field::new("generated_at", DataType::Utf8, true),
        Field::new("model_dim", DataType::UInt32, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("text_hash", DataType::Utf8, true),
    ]))
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
}

fn writer_properties() -> WriterProperties {
    let item = ColumnPath::from(vec![
        "embedding".to_string(),
        "list".to_string(),
        "item".to_string(),
    ]);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("papersys {}", env!("CARGO_PKG_VERSION")))
        // Dictionaries and min/max of random floats cost time and space for nothing.
        .set_column_dictionary_enabled(item.clone(), false)
        .set_column_statistics_enabled(item, EnabledStatistics::None)
        .build()
}

/// Number of rows, from the Parquet footer alone.
pub fn row_count(path: &Path) -> Result<u64, YearFileError> {
    let file = ParquetInput::open(path).map_err(|e| YearFileError::io(path, e))?;
    let reader = parquet_input::catch_decoder_panic(|| SerializedFileReader::new(file))
        .map_err(|message| YearFileError::damaged(path, message))?
        .map_err(|e| YearFileError::damaged(path, e))?;
    let rows = reader.metadata().file_metadata().num_rows();
    u64::try_from(rows).map_err(|_| YearFileError::damaged(path, format!("negative row count {rows}")))
}

/// Ids (and stored text hashes) of a year file, as the plan needs them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct YearIds {
    /// Paper ids, sorted and unique.
    pub ids: Vec<String>,
    /// `hashes[i]` belongs to `ids[i]`; `None` where no hash is stored.
    pub hashes: Vec<Option<TextHash>>,
}

/// Reads only the columns the plan needs (`paper_id`, `model_dim`,
/// `text_hash`), checking every row's dimension against `dimension`.
pub fn read_ids(path: &Path, dimension: usize) -> Result<YearIds, YearFileError> {
    read_ids_checked(path, dimension).map(|(ids, _)| ids)
}

/// [`read_ids`], also telling whether the file was already sorted and unique
/// (and so can be streamed through a merge).
fn read_ids_checked(path: &Path, dimension: usize) -> Result<(YearIds, bool), YearFileError> {
    let mut reader = open_columns(
        path,
        &["paper_id", "model_dim", "text_hash", "generated_at"],
        true,
    )?;
    let mut entries: Vec<(String, Option<TextHash>, String)> = Vec::new();
    let mut sorted_unique = true;
    for batch in reader.batches() {
        let batch = batch?;
        let ids = batch.column(0).as_string::<i32>();
        check_model_dim(path, batch.column(1), dimension)?;
        let hashes = batch.column(2).as_string::<i32>();
        let times = batch.column(3).as_string::<i32>();
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                return Err(YearFileError::damaged(path, "a row has no paper_id"));
            }
            let id = ids.value(i);
            if let Some((last, _, _)) = entries.last() {
                sorted_unique &= last.as_str() < id;
            }
            let hash = if hashes.is_null(i) {
                None
            } else {
                TextHash::from_hex(hashes.value(i))
            };
            let time = if times.is_null(i) { "" } else { times.value(i) };
            entries.push((id.to_string(), hash, time.to_string()));
        }
    }
    if !sorted_unique {
        // Files from other tools may be unsorted or repeat a paper: the
        // row with the newest generated_at is the one that counts.
        entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| newer_first(&a.2, &b.2)));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
    }
    let mut out = YearIds {
        ids: Vec::with_capacity(entries.len()),
        hashes: Vec::with_capacity(entries.len()),
    };
    for (id, hash, _) in entries {
        out.ids.push(id);
        out.hashes.push(hash);
    }
    Ok((out, sorted_unique))
}

/// Orders generated_at values newest first; unparsable times count as oldest.
fn newer_first(a: &str, b: &str) -> std::cmp::Ordering {
    parse_time(b).cmp(&parse_time(a))
}

fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    text.parse::<jiff::Timestamp>().ok()
}

/// True when `candidate` was generated after `current`.
fn is_newer(candidate: &str, current: &str) -> bool {
    parse_time(candidate) > parse_time(current)
}

/// Reads every row of a year file (used by merges and checks).
pub fn read_rows(path: &Path, dimension: usize) -> Result<Vec<VectorRow>, YearFileError> {
    let mut reader = open_columns(path, &ALL_COLUMNS, false)?;
    let mut rows = Vec::new();
    for batch in reader.batches() {
        rows.extend(batch_rows(path, &batch?, dimension)?);
    }
    Ok(rows)
}

const ALL_COLUMNS: [&str; 6] = [
    "paper_id",
    "embedding",
    "generated_at",
    "model_dim",
    "source",
    "text_hash",
];

/// A reader over some columns, each cast to the type papersys writes;
/// optional columns missing from the file come out as nulls.
struct ColumnReader {
    path: PathBuf,
    inner: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// For each wanted column, its position in the projected batch.
    positions: Vec<Option<usize>>,
    wanted: Vec<&'static str>,
    /// Set once the decoder panicked: the reader is not used again.
    failed: bool,
}

impl ColumnReader {
    fn batches(&mut self) -> impl Iterator<Item = Result<RecordBatch, YearFileError>> + '_ {
        std::iter::from_fn(move || {
            if self.failed {
                return None;
            }
            let next = parquet_input::catch_decoder_panic(|| {
                let batch = self.inner.next()?;
                Some(
                    batch
                        .map_err(|e| YearFileError::damaged(&self.path, e))
                        .and_then(|b| self.normalize(b)),
                )
            });
            match next {
                Ok(next) => next,
                Err(message) => {
                    // The reader's state is unknown after a panic: stop here.
                    self.failed = true;
                    Some(Err(YearFileError::damaged(&self.path, message)))
                }
            }
        })
    }

    fn normalize(&self, batch: RecordBatch) -> Result<RecordBatch, YearFileError> {
        let rows = batch.num_rows();
        let target = schema();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.wanted.len());
        let mut fields = Vec::with_capacity(self.wanted.len());
        for (name, position) in self.wanted.iter().zip(&self.positions) {
            let field = target
                .field_with_name(name)
                .map_err(|e| YearFileError::damaged(&self.path, e))?;
            let column = match position {
                Some(p) => arrow_cast::cast(batch.column(*p), field.data_type()).map_err(|e| {
                    YearFileError::damaged(&self.path, format!("column `{name}` has an unusable type: {e}"))
                })?,
                None => arrow_array::new_null_array(field.data_type(), rows),
            };
            columns.push(column);
            fields.push(Field::new(*name, field.data_type().clone(), true));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| YearFileError::damaged(&self.path, e))
    }
}

fn open_columns(path: &Path, wanted: &[&'static str], ids_only: bool) -> Result<ColumnReader, YearFileError> {
    let builder = parquet_input::open_arrow(path).map_err(|e| match e {
        OpenError::Io(e) => YearFileError::io(path, e),
        OpenError::Damaged(message) => YearFileError::damaged(path, message),
    })?;
    let file_schema = builder.schema().clone();
    for required in ["paper_id", "embedding"] {
        if file_schema.index_of(required).is_err() {
            return Err(YearFileError::damaged(path, format!("no `{required}` column")));
        }
    }
    let mut roots: Vec<usize> = wanted
        .iter()
        .filter_map(|name| file_schema.index_of(name).ok())
        .collect();
    roots.sort_unstable();
    let positions = wanted
        .iter()
        .map(|name| {
            file_schema
                .index_of(name)
                .ok()
                .and_then(|i| roots.iter().position(|&r| r == i))
        })
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let batch_rows = if ids_only { 64 * 1024 } else { READ_BATCH_ROWS };
    let inner = builder
        .with_projection(mask)
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| YearFileError::damaged(path, e))?;
    Ok(ColumnReader {
        path: path.to_path_buf(),
        inner,
        positions,
        wanted: wanted.to_vec(),
        failed: false,
    })
}

fn check_model_dim(path: &Path, column: &ArrayRef, dimension: usize) -> Result<(), YearFileError> {
    let dims = column.as_primitive::<UInt32Type>();
    for value in dims.iter().flatten() {
        if value as usize != dimension {
            return Err(YearFileError::Dimension {
                path: path.to_path_buf(),
                found: value as usize,
                expected: dimension,
            });
        }
    }
    Ok(())
}

fn batch_rows(path: &Path, batch: &RecordBatch, dimension: usize) -> Result<Vec<VectorRow>, YearFileError> {
    let ids = batch.column(0).as_string::<i32>();
    let lists = batch.column(1).as_list::<i32>();
    let times = batch.column(2).as_string::<i32>();
    check_model_dim(path, batch.column(3), dimension)?;
    let sources = batch.column(4).as_string::<i32>();
    let hashes = batch.column(5).as_string::<i32>();
    let values = lists.values().as_primitive::<Float32Type>();
    let offsets = lists.value_offsets();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        if ids.is_null(i) {
            return Err(YearFileError::damaged(path, "a row has no paper_id"));
        }
        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
        if lists.is_null(i) || end - start != dimension {
            return Err(YearFileError::Dimension {
                path: path.to_path_buf(),
                found: if lists.is_null(i) { 0 } else { end - start },
                expected: dimension,
            });
        }
        let text = |a: &StringArray| {
            if a.is_null(i) {
                String::new()
            } else {
                a.value(i).to_string()
            }
        };
        rows.push(VectorRow {
            paper_id: ids.value(i).to_string(),
            embedding: values.values()[start..end].to_vec(),
            generated_at: text(times),
            source: text(sources),
            text_hash: if hashes.is_null(i) {
                None
            } else {
                TextHash::from_hex(hashes.value(i))
            },
        });
    }
    Ok(rows)
}

/// Builds one Arrow batch in the contract's schema.
pub fn rows_to_batch(rows: &[VectorRow], dimension: usize) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut ids = StringBuilder::with_capacity(rows.len(), rows.len() * 12);
    let mut times = StringBuilder::with_capacity(rows.len(), rows.len() * 32);
    let mut sources = StringBuilder::with_capacity(rows.len(), rows.len() * SOURCE.len());
    let mut hashes = StringBuilder::with_capacity(rows.len(), rows.len() * 32);
    let mut values = Vec::with_capacity(rows.len() * dimension);
    for row in rows {
        if row.embedding.len() != dimension {
            return Err(arrow_schema::ArrowError::InvalidArgumentError(format!(
                "paper {} has a {}-dimensional vector, expected {dimension}",
                row.paper_id,
                row.embedding.len()
            )));
        }
        ids.append_value(&row.paper_id);
        times.append_value(&row.generated_at);
        sources.append_value(&row.source);
        match row.text_hash {
            Some(hash) => hashes.append_value(hash.to_hex()),
            None => hashes.append_null(),
        }
        values.extend_from_slice(&row.embedding);
    }
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(dimension, rows.len()));
    let lists = ListArray::try_new(item, offsets, Arc::new(Float32Array::from(values)), None)?;
    let dim = u32::try_from(dimension).unwrap_or(u32::MAX);
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(ids.finish()),
            Arc::new(lists),
            Arc::new(times.finish()),
            Arc::new(UInt32Array::from(vec![dim; rows.len()])),
            Arc::new(sources.finish()),
            Arc::new(hashes.finish()),
        ],
    )
}

/// Streams batches into a Parquet file.
struct BatchWriter<'w> {
    writer: ArrowWriter<&'w mut std::io::BufWriter<File>>,
    pending: Vec<VectorRow>,
    dimension: usize,
    rows: u64,
}

impl<'w> BatchWriter<'w> {
    fn new(out: &'w mut std::io::BufWriter<File>, dimension: usize) -> std::io::Result<Self> {
        let writer =
            ArrowWriter::try_new(out, schema(), Some(writer_properties())).map_err(std::io::Error::other)?;
        Ok(BatchWriter {
            writer,
            pending: Vec::with_capacity(READ_BATCH_ROWS),
            dimension,
            rows: 0,
        })
    }

    fn push(&mut self, row: VectorRow) -> std::io::Result<()> {
        self.pending.push(row);
        if self.pending.len() >= READ_BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = rows_to_batch(&self.pending, self.dimension).map_err(std::io::Error::other)?;
        self.writer.write(&batch).map_err(std::io::Error::other)?;
        self.rows += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<u64> {
        self.flush()?;
        self.writer.close().map_err(std::io::Error::other)?;
        Ok(self.rows)
    }
}

/// Sorts rows by paper id and keeps, for each paper, the newest row.
pub fn sort_and_dedup(rows: &mut Vec<VectorRow>) {
    rows.sort_by(|a, b| {
        a.paper_id
            .cmp(&b.paper_id)
            .then_with(|| newer_first(&a.generated_at, &b.generated_at))
    });
    rows.dedup_by(|later, earlier| later.paper_id == earlier.paper_id);
}

/// What a merge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Rows in the file afterwards.
    pub rows: u64,
    /// Papers that were not in the file before.
    pub added: u64,
    /// Papers whose vector was replaced by a newer one.
    pub replaced: u64,
}

impl MergeOutcome {
    /// Adds a later merge into the same file: counts summed, `rows` as it now is.
    pub fn add(&mut self, later: MergeOutcome) {
        self.added += later.added;
        self.replaced += later.replaced;
        self.rows = later.rows;
    }
}

/// Merges `new_rows` into the year file at `path` (created when absent) and
/// replaces it atomically: one row per paper, the newest `generated_at`
/// winning, sorted by `paper_id`. A sorted, unique existing file is streamed
/// batch by batch, so memory stays flat whatever the file's size; anything
/// else (a file from another tool) is loaded, sorted and de-duplicated. If
/// the existing file cannot be read, or holds vectors of another dimension,
/// nothing is written.
pub fn merge(
    path: &Path,
    mut new_rows: Vec<VectorRow>,
    dimension: usize,
) -> Result<MergeOutcome, YearFileError> {
    sort_and_dedup(&mut new_rows);
    if !path.exists() {
        let added = new_rows.len() as u64;
        let rows = write_rows(path, new_rows, dimension)?;
        return Ok(MergeOutcome {
            rows,
            added,
            replaced: 0,
        });
    }
    let (existing_ids, streamable) = read_ids_checked(path, dimension)?;
    let existing_rows = existing_ids.ids.len() as u64;
    drop(existing_ids);
    if !streamable {
        let mut rows = read_rows(path, dimension)?;
        rows.extend(new_rows);
        sort_and_dedup(&mut rows);
        let total = rows.len() as u64;
        write_rows(path, rows, dimension)?;
        return Ok(MergeOutcome {
            rows: total,
            added: total - existing_rows,
            replaced: 0,
        });
    }

    let mut reader = open_columns(path, &ALL_COLUMNS, false)?;
    let mut outcome = MergeOutcome::default();
    let mut failure: Option<YearFileError> = None;
    let written = write_atomic(path, |out| {
        let mut writer = BatchWriter::new(out, dimension)?;
        let mut incoming = new_rows.into_iter().peekable();
        for batch in reader.batches() {
            let old_rows = match batch.and_then(|b| batch_rows(path, &b, dimension)) {
                Ok(rows) => rows,
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("existing file unreadable"));
                }
            };
            for old in old_rows {
                while let Some(new) = incoming.next_if(|n| n.paper_id < old.paper_id) {
                    outcome.added += 1;
                    writer.push(new)?;
                }
                match incoming.next_if(|n| n.paper_id == old.paper_id) {
                    Some(new) if !is_newer(&old.generated_at, &new.generated_at) => {
                        outcome.replaced += 1;
                        writer.push(new)?;
                    }
                    _ => writer.push(old)?,
                }
            }
        }
        for new in incoming {
            outcome.added += 1;
            writer.push(new)?;
        }
        writer.finish()
    });
    match (written, failure) {
        (_, Some(e)) => Err(e),
        (Ok(rows), None) => {
            outcome.rows = rows;
            Ok(outcome)
        }
        (Err(e), None) => Err(YearFileError::io(path, e)),
    }
}

/// Writes `rows` (already sorted and unique) as the year file, atomically.
pub fn write_rows(path: &Path, rows: Vec<VectorRow>, dimension: usize) -> Result<u64, YearFileError> {
    write_atomic(path, |out| {
        let mut writer = BatchWriter::new(out, dimension)?;
        for row in rows {
            writer.push(row)?;
        }
        writer.finish()
    })
    .map_err(|e| YearFileError::io(path, e))
}

/// Streams every row's `paper_id` and vector in file order, holding one
/// batch at a time: `visit(id, Some(vector))`, or `None` for a null vector
/// or one with null elements. Float64 vectors (the Python original's) are
/// read as Float32. A vector of another length than `dimension` is an error.
pub fn for_each_vector(
    path: &Path,
    dimension: usize,
    mut visit: impl FnMut(&str, Option<&[f32]>),
) -> Result<u64, YearFileError> {
    let mut reader = open_columns(path, &["paper_id", "embedding"], false)?;
    let mut rows = 0u64;
    for batch in reader.batches() {
        let batch = batch?;
        let ids = batch.column(0).as_string::<i32>();
        let lists = batch.column(1).as_list::<i32>();
        let values = lists.values().as_primitive::<Float32Type>();
        let offsets = lists.value_offsets();
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                return Err(YearFileError::damaged(path, "a row has no paper_id"));
            }
            rows += 1;
            if lists.is_null(i) {
                visit(ids.value(i), None);
                continue;
            }
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            if end - start != dimension {
                return Err(YearFileError::Dimension {
                    path: path.to_path_buf(),
                    found: end - start,
                    expected: dimension,
                });
            }
            let has_nulls = values.null_count() > 0 && (start..end).any(|j| values.is_null(j));
            visit(ids.value(i), (!has_nulls).then(|| &values.values()[start..end]));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(id: &str, value: f32, at: &str) -> VectorRow {
        VectorRow {
            paper_id: id.to_string(),
            embedding: vec![value; 4],
            generated_at: at.to_string(),
            source: SOURCE.to_string(),
            text_hash: Some(TextHash(value as u128)),
        }
    }

    const T1: &str = "2025-01-01T00:00:00.000000+00:00";
    const T2: &str = "2025-06-01T00:00:00.000000+00:00";

    /// Found by the `year_file` fuzz target: a page header declaring a huge
    /// list made the parquet crate read the file's end billions of times
    /// (without `ParquetInput`'s guard this test does not return).
    #[test]
    fn a_page_header_that_runs_past_the_end_is_damage_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        std::fs::write(&path, include_bytes!("testdata/page-header-spin.parquet")).unwrap();
        let error = read_ids(&path, 4).unwrap_err();
        assert!(matches!(error, YearFileError::Damaged { .. }), "{error}");
        assert!(error.to_string().contains("2024.parquet"), "{error}");
        assert!(read_rows(&path, 4).is_err());
    }

    /// Found by the `year_file` fuzz target: arrow-buffer panicked on a bit
    /// offset out of bounds while decoding this file's pages.
    #[test]
    fn a_decoder_panic_on_a_damaged_page_is_reported_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        std::fs::write(&path, include_bytes!("testdata/decoder-panic-year.parquet")).unwrap();
        let error = read_rows(&path, 4).unwrap_err();
        assert!(matches!(error, YearFileError::Damaged { .. }), "{error}");
        assert!(error.to_string().contains("2024.parquet"), "{error}");
        assert!(read_ids(&path, 4).is_err());
    }

    #[test]
    fn write_then_read_keeps_schema_order_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        merge(
            &path,
            vec![row("2401.00002", 2.0, T1), row("2401.00001", 1.0, T1)],
            4,
        )
        .unwrap();
        let file = File::open(&path).unwrap();
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let names: Vec<_> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "paper_id",
                "embedding",
                "generated_at",
                "model_dim",
                "source",
                "text_hash"
            ]
        );
        assert_eq!(builder.schema().field(1).data_type(), &list_type());
        assert_eq!(builder.schema().field(3).data_type(), &DataType::UInt32);
        let rows = read_rows(&path, 4).unwrap();
        assert_eq!(rows, vec![row("2401.00001", 1.0, T1), row("2401.00002", 2.0, T1)]);
        assert_eq!(row_count(&path).unwrap(), 2);
    }

    #[test]
    fn merging_twice_leaves_one_row_per_paper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        let batch = vec![row("a", 1.0, T1), row("b", 2.0, T1)];
        merge(&path, batch.clone(), 4).unwrap();
        let outcome = merge(&path, batch, 4).unwrap();
        assert_eq!(outcome.rows, 2);
        assert_eq!(read_ids(&path, 4).unwrap().ids, ["a", "b"]);
    }

    #[test]
    fn the_newest_generated_at_wins_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        merge(&path, vec![row("a", 1.0, T2), row("b", 1.0, T1)], 4).unwrap();
        let outcome = merge(
            &path,
            vec![row("a", 9.0, T1), row("b", 9.0, T2), row("c", 9.0, T1)],
            4,
        )
        .unwrap();
        assert_eq!((outcome.added, outcome.replaced, outcome.rows), (1, 1, 3));
        let rows = read_rows(&path, 4).unwrap();
        assert_eq!(
            rows[0].embedding[0], 1.0,
            "older incoming row must not replace a newer one"
        );
        assert_eq!(rows[1].embedding[0], 9.0);
    }

    #[test]
    fn a_wrong_dimension_is_refused_and_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        merge(&path, vec![row("a", 1.0, T1)], 4).unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = merge(&path, vec![row("b", 1.0, T1)], 8).unwrap_err();
        assert!(
            matches!(
                err,
                YearFileError::Dimension {
                    found: 4,
                    expected: 8,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("2024.parquet"));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(matches!(read_ids(&path, 8), Err(YearFileError::Dimension { .. })));
    }

    #[test]
    fn garbage_is_reported_as_damaged_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2023.parquet");
        std::fs::write(&path, b"not parquet at all").unwrap();
        let err = read_ids(&path, 4).unwrap_err();
        assert!(matches!(err, YearFileError::Damaged { .. }));
        assert!(err.to_string().contains("2023.parquet"));
        assert!(merge(&path, vec![row("a", 1.0, T1)], 4).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"not parquet at all");
    }

    #[test]
    fn unsorted_duplicated_files_from_other_tools_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        // Written without merge(): unsorted, with a duplicate.
        let rows = vec![row("b", 1.0, T1), row("a", 1.0, T1), row("b", 7.0, T2)];
        let batch = rows_to_batch(&rows, 4).unwrap();
        let file = File::create(&path).unwrap();
        let mut writer = ArrowWriter::try_new(file, schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let ids = read_ids(&path, 4).unwrap();
        assert_eq!(ids.ids, ["a", "b"]);
        assert_eq!(ids.hashes[1], Some(TextHash(7)));
        merge(&path, vec![row("c", 3.0, T1)], 4).unwrap();
        let merged = read_rows(&path, 4).unwrap();
        let got: Vec<_> = merged
            .iter()
            .map(|r| (r.paper_id.as_str(), r.embedding[0]))
            .collect();
        assert_eq!(got, [("a", 1.0), ("b", 7.0), ("c", 3.0)]);
    }

    #[test]
    fn streamed_merge_handles_many_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        let first: Vec<_> = (0..10_000)
            .map(|i| row(&format!("{:06}", i * 2), 1.0, T1))
            .collect();
        merge(&path, first, 4).unwrap();
        let second: Vec<_> = (0..5_000)
            .map(|i| row(&format!("{:06}", i * 4 + 1), 2.0, T1))
            .collect();
        let outcome = merge(&path, second, 4).unwrap();
        assert_eq!((outcome.rows, outcome.added), (15_000, 5_000));
        let ids = read_ids(&path, 4).unwrap().ids;
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Merging is idempotent and order-free: merging the same rows again
        /// changes nothing, and one merge of a batch equals merging its
        /// halves one after the other.
        #[test]
        fn merge_is_idempotent_and_order_free(
            batch in proptest::collection::vec((0u32..40, 0u8..3, -1.0f32..1.0), 1..60),
            split in 0usize..60,
        ) {
            let times = ["2025-01-01T00:00:00.000000+00:00", "2025-03-01T00:00:00.000000+00:00", "2025-06-01T00:00:00+00:00"];
            let rows: Vec<VectorRow> = batch
                .iter()
                .map(|&(id, t, v)| row(&format!("2401.{id:05}"), v, times[t as usize]))
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let once = dir.path().join("once.parquet");
            merge(&once, rows.clone(), 4).unwrap();
            let first = read_rows(&once, 4).unwrap();
            merge(&once, rows.clone(), 4).unwrap();
            proptest::prop_assert_eq!(&read_rows(&once, 4).unwrap(), &first);

            let halves = dir.path().join("halves.parquet");
            let split = split.min(rows.len());
            merge(&halves, rows[split..].to_vec(), 4).unwrap();
            merge(&halves, rows[..split].to_vec(), 4).unwrap();
            let merged = read_rows(&halves, 4).unwrap();
            // Same papers, each with a row of its newest time.
            let ids = |rows: &[VectorRow]| rows.iter().map(|r| r.paper_id.clone()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(ids(&merged), ids(&first));
            for (a, b) in merged.iter().zip(&first) {
                proptest::prop_assert_eq!(parse_time(&a.generated_at), parse_time(&b.generated_at));
            }
        }
    }
}
