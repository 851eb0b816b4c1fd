//! `embeddings/<alias>/YYYY.parquet`: the vectors of one year.
//!
//! Written exactly as the contract says: `paper_id` (Utf8, not null),
//! `embedding` (List<Float32>), `generated_at` (Utf8), `model_dim` (UInt32),
//! `source` (Utf8), then papersys' own optional `text_hash` (Utf8, the
//! [`TextHash`] of the text embedded). Rows are unique by `paper_id` and
//! sorted by it. Files written by other tools are read leniently (large or
//! view strings, float64 or fixed-size lists, no `text_hash`) and rewritten
//! in the contract's form the next time their year changes.
//!
//! **(papersys)** Every file papersys writes (year files and checkpoints)
//! records the model that made its vectors in its Parquet key-value
//! metadata under [`IDENTITY_KEY`], so the files alone say which model they
//! belong to: a merge refuses to mix another model's vectors into a file,
//! and a lost manifest is rebuilt with the identity. Files without it
//! (written by the Python original or other tools) are adopted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, Float32Array, ListArray, RecordBatch, StringArray, UInt32Array};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use papersys_backend_core::ModelIdentity;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

use super::atomic::write_atomic;
use super::parquet_input::{self, OpenError, ParquetInput};
use crate::text::TextHash;

mod sort;
#[cfg(test)]
pub(crate) use sort::probe as sort_probe;
pub use sort::{SortOutcome, sort_file};

/// Value of the `source` column for rows papersys writes.
pub const SOURCE: &str = "papersys.embedding";

/// Key of the Parquet key-value metadata entry holding the JSON of the
/// [`ModelIdentity`] that made the file's vectors.
pub const IDENTITY_KEY: &str = "papersys.model_identity";

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
    /// Vectors made by another model than the one writing or configured now.
    #[error(
        "{} holds vectors made by another model ({details}); vectors of two models must never mix under one \
         alias, so nothing was written. Put the model that made them back in the config, give the new model \
         its own alias, or replace every vector with `papersys embed --model ALIAS --reembed`",
        .path.display()
    )]
    Model {
        /// The year file or checkpoint.
        path: PathBuf,
        /// The model recorded in the file.
        recorded: Box<ModelIdentity>,
        /// How the models differ (`field: recorded X, configured Y; ...`).
        details: String,
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

fn writer_properties(identity: Option<&ModelIdentity>) -> WriterProperties {
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
        .set_key_value_metadata(identity.map(|identity| {
            let json = serde_json::to_string(identity).unwrap_or_default();
            vec![KeyValue::new(IDENTITY_KEY.to_string(), json)]
        }))
        .build()
}

/// What a file's Parquet footer says.
#[derive(Clone, Debug, PartialEq)]
pub struct Footer {
    /// Number of rows.
    pub rows: u64,
    /// The model recorded under [`IDENTITY_KEY`]; `None` for files written
    /// by other tools.
    pub identity: Option<ModelIdentity>,
}

/// Reads the Parquet footer alone: row count and recorded model.
pub fn footer(path: &Path) -> Result<Footer, YearFileError> {
    let file = ParquetInput::open(path).map_err(|e| YearFileError::io(path, e))?;
    let reader = parquet_input::catch_decoder_panic(|| SerializedFileReader::new(file))
        .map_err(|message| YearFileError::damaged(path, message))?
        .map_err(|e| YearFileError::damaged(path, e))?;
    let metadata = reader.metadata().file_metadata();
    let rows = metadata.num_rows();
    let rows = u64::try_from(rows)
        .map_err(|_| YearFileError::damaged(path, format!("negative row count {rows}")))?;
    let recorded = metadata
        .key_value_metadata()
        .and_then(|pairs| pairs.iter().find(|kv| kv.key == IDENTITY_KEY))
        .and_then(|kv| kv.value.as_deref());
    let identity = match recorded {
        Some(json) => Some(serde_json::from_str(json).map_err(|e| {
            YearFileError::damaged(
                path,
                format!("its `{IDENTITY_KEY}` metadata is not a model identity: {e}"),
            )
        })?),
        None => None,
    };
    Ok(Footer { rows, identity })
}

/// Number of rows, from the Parquet footer alone.
pub fn row_count(path: &Path) -> Result<u64, YearFileError> {
    footer(path).map(|f| f.rows)
}

/// Refuses `recorded` (the model a file at `path` records) when `current`
/// would make different vectors, with an error naming the file.
pub fn check_identity(
    path: &Path,
    current: &ModelIdentity,
    recorded: &ModelIdentity,
) -> Result<(), YearFileError> {
    let mismatches = current.mismatches(recorded);
    if mismatches.is_empty() {
        return Ok(());
    }
    let details: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    Err(YearFileError::Model {
        path: path.to_path_buf(),
        recorded: Box::new(recorded.clone()),
        details: details.join("; "),
    })
}

/// Bytes of vector rows a fold or a sort holds in memory at most: at 384
/// dimensions ~260,000 rows, at 4,096 ~25,000.
pub const MEMORY_BYTES: usize = 400 * 1024 * 1024;

/// Memory of one vector row besides its floats: the id, timestamp, source
/// and hash strings and the row's own allocation, measured at about 100
/// bytes for arXiv ids.
pub const ROW_OVERHEAD_BYTES: usize = 128;

/// How many rows of `dimension` fit in [`MEMORY_BYTES`].
pub fn rows_in_memory(dimension: usize) -> usize {
    let per_row = dimension
        .saturating_mul(std::mem::size_of::<f32>())
        .saturating_add(ROW_OVERHEAD_BYTES);
    (MEMORY_BYTES / per_row).max(1)
}

/// Whether the file's ids are sorted and unique (as papersys writes them),
/// so it can be streamed through a merge; reads only the ids, a batch at a
/// time, checking every row's dimension.
pub fn is_sorted_unique(path: &Path, dimension: usize) -> Result<bool, YearFileError> {
    let mut reader = open_columns(path, &["paper_id", "model_dim"], true)?;
    let mut last = String::new();
    let mut first = true;
    for batch in reader.batches() {
        let batch = batch?;
        check_model_dim(path, batch.column(1), dimension)?;
        let ids = batch.column(0).as_string::<i32>();
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                return Err(YearFileError::damaged(path, "a row has no paper_id"));
            }
            let id = ids.value(i);
            if !first && last.as_str() >= id {
                return Ok(false);
            }
            first = false;
            last.clear();
            last.push_str(id);
        }
    }
    Ok(true)
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
    open_columns_of(path, wanted, ids_only, None)
}

/// [`open_columns`] reading `batch_rows` rows at a time.
fn open_columns_sized(
    path: &Path,
    wanted: &[&'static str],
    batch_rows: usize,
) -> Result<ColumnReader, YearFileError> {
    open_columns_in(path, wanted, batch_rows, None)
}

/// [`open_columns`] limited to `row_groups` (all when `None`).
fn open_columns_of(
    path: &Path,
    wanted: &[&'static str],
    ids_only: bool,
    row_groups: Option<Vec<usize>>,
) -> Result<ColumnReader, YearFileError> {
    let batch_rows = if ids_only { 64 * 1024 } else { READ_BATCH_ROWS };
    open_columns_in(path, wanted, batch_rows, row_groups)
}

fn open_columns_in(
    path: &Path,
    wanted: &[&'static str],
    batch_rows: usize,
    row_groups: Option<Vec<usize>>,
) -> Result<ColumnReader, YearFileError> {
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
    let builder = match row_groups {
        Some(groups) => builder.with_row_groups(groups),
        None => builder,
    };
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
    /// Rows buffered before they are handed to the Parquet writer.
    flush_at: usize,
}

impl<'w> BatchWriter<'w> {
    fn new(
        out: &'w mut std::io::BufWriter<File>,
        dimension: usize,
        identity: Option<&ModelIdentity>,
    ) -> std::io::Result<Self> {
        let writer = ArrowWriter::try_new(out, schema(), Some(writer_properties(identity)))
            .map_err(std::io::Error::other)?;
        Ok(BatchWriter {
            writer,
            pending: Vec::with_capacity(READ_BATCH_ROWS),
            dimension,
            rows: 0,
            flush_at: READ_BATCH_ROWS,
        })
    }

    fn push(&mut self, row: VectorRow) -> std::io::Result<()> {
        self.pending.push(row);
        if self.pending.len() >= self.flush_at {
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

/// Sorts rows by paper id and keeps, for each paper, the row that comes
/// last in `rows`: the one committed last. Order, not `generated_at`,
/// decides, so a clock that stepped back cannot discard a fresh vector.
pub fn sort_and_dedup(rows: &mut Vec<VectorRow>) {
    rows.reverse();
    // Stable: among rows of one paper the last committed is now first.
    rows.sort_by(|a, b| a.paper_id.cmp(&b.paper_id));
    rows.dedup_by(|later, earlier| later.paper_id == earlier.paper_id);
}

/// For rows of a file from another tool, which may repeat a paper with no
/// order to go by: keeps each paper's newest `generated_at`.
fn sort_and_dedup_by_time(rows: &mut Vec<VectorRow>) {
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

/// [`merge_as`] without a model: the file keeps the model it records.
pub fn merge(path: &Path, new_rows: Vec<VectorRow>, dimension: usize) -> Result<MergeOutcome, YearFileError> {
    merge_as(path, new_rows, dimension, None)
}

/// Merges `new_rows` into the year file at `path` (created when absent) and
/// replaces it atomically: one row per paper, sorted by `paper_id`. The
/// rows merged in win over the file's (they were computed after it was
/// written), and among them the last one of a paper wins; `generated_at`
/// only breaks ties inside files from other tools. The existing file is
/// streamed batch by batch, so memory stays flat whatever its size; one
/// from another tool (unsorted, or repeating a paper) is first rewritten
/// sorted by [`sort_file`], within [`MEMORY_BYTES`]. The
/// result records `identity` (else the model the file recorded). If the
/// existing file cannot be read, holds vectors of another dimension, or was
/// made by a model other than `identity`, nothing is written.
pub fn merge_as(
    path: &Path,
    mut new_rows: Vec<VectorRow>,
    dimension: usize,
    identity: Option<&ModelIdentity>,
) -> Result<MergeOutcome, YearFileError> {
    sort_and_dedup(&mut new_rows);
    if !path.exists() {
        let added = new_rows.len() as u64;
        let rows = write_rows_as(path, new_rows, dimension, identity)?;
        return Ok(MergeOutcome {
            rows,
            added,
            replaced: 0,
        });
    }
    let recorded = footer(path)?.identity;
    let identity = match (identity, recorded) {
        (Some(current), Some(recorded)) => {
            check_identity(path, current, &recorded)?;
            Some(current.clone())
        }
        (current, recorded) => current.cloned().or(recorded),
    };
    let identity = identity.as_ref();
    if !is_sorted_unique(path, dimension)? {
        // A file from another tool: sorted first, in bounded memory.
        sort_file(path, dimension, rows_in_memory(dimension))?;
    }
    let mut reader = open_columns(path, &ALL_COLUMNS, false)?;
    let mut outcome = MergeOutcome::default();
    let mut failure: Option<YearFileError> = None;
    let written = write_atomic(path, |out| {
        let mut writer = BatchWriter::new(out, dimension, identity)?;
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
                    Some(new) => {
                        outcome.replaced += 1;
                        writer.push(new)?;
                    }
                    None => writer.push(old)?,
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

/// Writes `rows` (already sorted and unique) as the year file, atomically,
/// recording no model.
pub fn write_rows(path: &Path, rows: Vec<VectorRow>, dimension: usize) -> Result<u64, YearFileError> {
    write_rows_as(path, rows, dimension, None)
}

/// Writes `rows` (already sorted and unique) as the year file, atomically,
/// recording `identity` in its key-value metadata.
pub fn write_rows_as(
    path: &Path,
    rows: Vec<VectorRow>,
    dimension: usize,
    identity: Option<&ModelIdentity>,
) -> Result<u64, YearFileError> {
    write_atomic(path, |out| {
        let mut writer = BatchWriter::new(out, dimension, identity)?;
        for row in rows {
            writer.push(row)?;
        }
        writer.finish()
    })
    .map_err(|e| YearFileError::io(path, e))
}

/// The rows of the papers in `ids` (sorted and unique), read batch by
/// batch so only those rows are held; a paper a file from another tool
/// repeats gives its newest `generated_at`.
pub fn take_rows(path: &Path, dimension: usize, ids: &[&str]) -> Result<Vec<VectorRow>, YearFileError> {
    let mut reader = open_columns(path, &ALL_COLUMNS, false)?;
    let mut taken = Vec::new();
    for batch in reader.batches() {
        let batch = batch?;
        let batch_ids = batch.column(0).as_string::<i32>();
        let any = (0..batch.num_rows())
            .any(|i| !batch_ids.is_null(i) && ids.binary_search(&batch_ids.value(i)).is_ok());
        if any {
            let rows = batch_rows(path, &batch, dimension)?;
            taken.extend(
                rows.into_iter()
                    .filter(|r| ids.binary_search(&r.paper_id.as_str()).is_ok()),
            );
        }
    }
    sort_and_dedup_by_time(&mut taken);
    Ok(taken)
}

/// Rewrites the year file at `path` without the papers in `ids` (sorted
/// and unique), streamed batch by batch and replaced atomically; the model
/// it records is kept. Returns the rows left.
pub fn remove_ids(path: &Path, dimension: usize, ids: &[&str]) -> Result<u64, YearFileError> {
    let identity = footer(path)?.identity;
    let mut reader = open_columns(path, &ALL_COLUMNS, false)?;
    let mut failure: Option<YearFileError> = None;
    let written = write_atomic(path, |out| {
        let mut writer = BatchWriter::new(out, dimension, identity.as_ref())?;
        for batch in reader.batches() {
            let rows = match batch.and_then(|b| batch_rows(path, &b, dimension)) {
                Ok(rows) => rows,
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("existing file unreadable"));
                }
            };
            for row in rows {
                if ids.binary_search(&row.paper_id.as_str()).is_err() {
                    writer.push(row)?;
                }
            }
        }
        writer.finish()
    });
    match (written, failure) {
        (_, Some(e)) => Err(e),
        (Ok(rows), None) => Ok(rows),
        (Err(e), None) => Err(YearFileError::io(path, e)),
    }
}

/// What [`for_each_vector`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorScan {
    /// Rows visited.
    pub rows: u64,
    /// The ids came sorted and unique, as papersys writes them; when not (a
    /// file from another tool), a reader that needs one row per paper should
    /// use [`read_rows`] and [`sort_and_dedup`] instead.
    pub sorted_unique: bool,
}

/// Streams every row's `paper_id` and vector in file order, holding one
/// batch at a time, for readers that keep their own copy (the search cache,
/// the recommender's features) without a `VectorRow` per paper:
/// `visit(id, Some(vector))`, or `None` for a null vector or one with null
/// elements. Float64 vectors (the Python original's) are read as Float32. A
/// vector of another length than `dimension` is an error.
pub fn for_each_vector(
    path: &Path,
    dimension: usize,
    visit: impl FnMut(&str, Option<&[f32]>),
) -> Result<VectorScan, YearFileError> {
    for_each_vector_of(path, dimension, None, visit)
}

/// [`for_each_vector`] over the given row groups only (in file order; all
/// when `None`); `sorted_unique` then speaks of the rows visited.
pub fn for_each_vector_of(
    path: &Path,
    dimension: usize,
    row_groups: Option<Vec<usize>>,
    mut visit: impl FnMut(&str, Option<&[f32]>),
) -> Result<VectorScan, YearFileError> {
    for_each_checked_batch(path, row_groups, |ids, lists| {
        let values = lists.values().as_primitive::<Float32Type>();
        for (i, id) in ids.iter().enumerate() {
            if lists.is_null(i) {
                visit(id, None);
                continue;
            }
            let (start, end) = row_span(path, lists, i, dimension)?;
            let has_nulls = values.null_count() > 0 && (start..end).any(|j| values.is_null(j));
            visit(id, (!has_nulls).then(|| &values.values()[start..end]));
        }
        Ok(())
    })
}

/// [`for_each_vector_of`] a batch at a time, for readers that take many
/// rows at once (the search cache quantises and writes whole blocks):
/// `visit(ids, vectors)` with the batch's vectors back to back, `dimension`
/// values per id, as the decoder left them (no copy). A row without a full
/// vector is an error naming its paper.
pub fn for_each_vector_batch_of(
    path: &Path,
    dimension: usize,
    row_groups: Option<Vec<usize>>,
    mut visit: impl FnMut(&[&str], &[f32]),
) -> Result<VectorScan, YearFileError> {
    for_each_checked_batch(path, row_groups, |ids, lists| {
        let values = lists.values().as_primitive::<Float32Type>();
        for (i, id) in ids.iter().enumerate() {
            let missing = lists.is_null(i) || {
                let (start, end) = row_span(path, lists, i, dimension)?;
                values.null_count() > 0 && (start..end).any(|j| values.is_null(j))
            };
            if missing {
                return Err(YearFileError::damaged(
                    path,
                    format!("paper {id} has no vector, or one with null elements"),
                ));
            }
        }
        // List offsets only grow: rows of `dimension` values each lie back to back.
        let offsets = lists.value_offsets();
        let (first, end) = (offsets[0] as usize, offsets[ids.len()] as usize);
        visit(ids, &values.values()[first..end]);
        Ok(())
    })
}

/// Walks the `paper_id` and `embedding` columns of `path` a batch at a
/// time: every row's id checked present and followed for order, then
/// `visit(ids, embeddings)` for the batch.
fn for_each_checked_batch(
    path: &Path,
    row_groups: Option<Vec<usize>>,
    mut visit: impl FnMut(&[&str], &ListArray) -> Result<(), YearFileError>,
) -> Result<VectorScan, YearFileError> {
    let mut reader = open_columns_of(path, &["paper_id", "embedding"], false, row_groups)?;
    let mut rows = 0u64;
    let mut sorted_unique = true;
    let mut last = String::new();
    for batch in reader.batches() {
        let batch = batch?;
        let ids = batch.column(0).as_string::<i32>();
        let mut batch_ids = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                return Err(YearFileError::damaged(path, "a row has no paper_id"));
            }
            let id = ids.value(i);
            if sorted_unique {
                if !last.is_empty() && last.as_str() >= id {
                    sorted_unique = false;
                }
                last.clear();
                last.push_str(id);
            }
            batch_ids.push(id);
        }
        rows += batch.num_rows() as u64;
        visit(&batch_ids, batch.column(1).as_list::<i32>())?;
    }
    Ok(VectorScan { rows, sorted_unique })
}

/// Where row `i`'s vector lies in `lists`' values; an error when it has
/// other than `dimension` values.
fn row_span(
    path: &Path,
    lists: &ListArray,
    i: usize,
    dimension: usize,
) -> Result<(usize, usize), YearFileError> {
    let offsets = lists.value_offsets();
    let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
    if end - start != dimension {
        return Err(YearFileError::Dimension {
            path: path.to_path_buf(),
            found: end - start,
            expected: dimension,
        });
    }
    Ok((start, end))
}

/// Whether any row's `paper_id` satisfies `wanted`, reading only that
/// column (a reader that needs a few papers' vectors can pass over the
/// year files that hold none of them without decoding any vector).
pub fn holds_any(path: &Path, wanted: impl Fn(&str) -> bool) -> Result<bool, YearFileError> {
    let mut reader = open_columns(path, &["paper_id"], true)?;
    for batch in reader.batches() {
        let batch = batch?;
        let ids = batch.column(0).as_string::<i32>();
        if ids.null_count() > 0 {
            return Err(YearFileError::damaged(path, "a row has no paper_id"));
        }
        if ids.iter().flatten().any(&wanted) {
            return Ok(true);
        }
    }
    Ok(false)
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
    fn the_vector_merged_last_wins_even_when_the_clock_stepped_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        merge(&path, vec![row("a", 1.0, T2), row("b", 1.0, T1)], 4).unwrap();
        // "a" is embedded again after the clock stepped back to T1.
        let outcome = merge(
            &path,
            vec![row("a", 9.0, T1), row("b", 9.0, T2), row("c", 9.0, T1)],
            4,
        )
        .unwrap();
        assert_eq!((outcome.added, outcome.replaced, outcome.rows), (1, 2, 3));
        let rows = read_rows(&path, 4).unwrap();
        assert_eq!(
            rows[0].embedding[0], 9.0,
            "the fresh vector is kept whatever its time"
        );
        assert_eq!(rows[1].embedding[0], 9.0);
        // Within one merge, the row given last wins, whatever its time.
        merge(&path, vec![row("a", 5.0, T2), row("a", 6.0, T1)], 4).unwrap();
        assert_eq!(read_rows(&path, 4).unwrap()[0].embedding[0], 6.0);
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

    fn identity(name: &str) -> ModelIdentity {
        ModelIdentity {
            name: name.into(),
            revision: None,
            weights_sha256: None,
            dimension: 4,
            max_tokens: 0,
            pooling: papersys_backend_core::Pooling::Mean,
            normalize: true,
            document_prefix: String::new(),
            backend: "test".into(),
            precision: None,
        }
    }

    #[test]
    fn the_model_is_recorded_in_the_footer_and_another_model_is_never_merged_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        let a = identity("org/model-a");
        merge_as(&path, vec![row("a", 1.0, T1)], 4, Some(&a)).unwrap();
        assert_eq!(footer(&path).unwrap().identity.as_ref(), Some(&a));
        // A merge that names no model keeps the one recorded.
        merge(&path, vec![row("b", 1.0, T1)], 4).unwrap();
        assert_eq!(footer(&path).unwrap().identity.as_ref(), Some(&a));
        let before = std::fs::read(&path).unwrap();
        let err = merge_as(&path, vec![row("c", 1.0, T1)], 4, Some(&identity("org/model-b"))).unwrap_err();
        assert!(matches!(err, YearFileError::Model { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("2024.parquet") && message.contains("org/model-a"),
            "{message}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
        // A file from another tool records no model: adopted, then recorded.
        let python = dir.path().join("2023.parquet");
        write_rows(&python, vec![row("x", 1.0, T1)], 4).unwrap();
        assert_eq!(footer(&python).unwrap().identity, None);
        merge_as(
            &python,
            vec![row("y", 1.0, T1)],
            4,
            Some(&identity("org/model-b")),
        )
        .unwrap();
        assert_eq!(footer(&python).unwrap().identity.unwrap().name, "org/model-b");
        assert_eq!(footer(&python).unwrap().rows, 2);
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
            merge(&halves, rows[..split].to_vec(), 4).unwrap();
            merge(&halves, rows[split..].to_vec(), 4).unwrap();
            // Same rows: each paper's last one, whatever the times say.
            proptest::prop_assert_eq!(&read_rows(&halves, 4).unwrap(), &first);
            for row in &first {
                let last = rows.iter().rev().find(|r| r.paper_id == row.paper_id).unwrap();
                proptest::prop_assert_eq!(row, last);
            }
        }
    }
}
