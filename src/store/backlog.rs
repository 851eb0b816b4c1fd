//! `embeddings/<alias>/backlog.parquet`: papers still waiting for a vector.
//!
//! Rewritten whole by every refresh from the current metadata and year
//! files; removed when nothing waits. Rows are sorted by year, then paper id,
//! and written with fixed writer settings, so two refreshes of the same
//! state give the same bytes apart from `queued_at`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::atomic::{remove_durably, write_atomic};
use super::parquet_input::{self, OpenError, ParquetInput};
use crate::metadata::Year;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// File name of the backlog.
pub const BACKLOG_FILE: &str = "backlog.parquet";

/// Why a paper waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MissingReason {
    /// Its year has no Parquet file yet.
    MissingEmbeddingFile,
    /// The year file exists but lacks this paper.
    MissingEmbedding,
    /// The title or abstract changed since the stored vector was made.
    StaleEmbedding,
    /// Title and abstract are both empty: nothing to embed.
    EmptyText,
    /// The backend failed on it in the last run.
    EmbeddingFailed,
}

impl MissingReason {
    /// Every reason, in report order.
    pub const ALL: [MissingReason; 5] = [
        MissingReason::MissingEmbeddingFile,
        MissingReason::MissingEmbedding,
        MissingReason::StaleEmbedding,
        MissingReason::EmptyText,
        MissingReason::EmbeddingFailed,
    ];

    /// The value stored in `missing_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            MissingReason::MissingEmbeddingFile => "missing_embedding_file",
            MissingReason::MissingEmbedding => "missing_embedding",
            MissingReason::StaleEmbedding => "stale_embedding",
            MissingReason::EmptyText => "empty_text",
            MissingReason::EmbeddingFailed => "embedding_failed",
        }
    }

    /// Parses a stored value.
    pub fn parse(text: &str) -> Option<MissingReason> {
        MissingReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Whether an embed run should try the paper (an empty text never gets
    /// a vector, whatever the run).
    pub fn is_embeddable(self) -> bool {
        self != MissingReason::EmptyText
    }
}

impl std::fmt::Display for MissingReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One waiting paper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacklogRow {
    /// Paper id.
    pub paper_id: String,
    /// Why it waits.
    pub reason: MissingReason,
    /// Metadata CSV it came from, relative to the data root.
    pub origin: String,
    /// Year its vector belongs to.
    pub year: Year,
}

/// Why the backlog could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    /// The OS refused.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The backlog file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a backlog file.
    #[error("{} is damaged: {message}", .path.display())]
    Damaged {
        /// The backlog file.
        path: PathBuf,
        /// What the reader found.
        message: String,
    },
}

fn schema() -> SchemaRef {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("paper_id"),
        utf8("missing_reason"),
        utf8("origin"),
        utf8("queued_at"),
        utf8("model_alias"),
        utf8("year"),
    ]))
}

/// Puts rows in the file's canonical order: year, then paper id.
pub fn sort_rows(rows: &mut [BacklogRow]) {
    rows.sort_by(|a, b| (a.year, &a.paper_id).cmp(&(b.year, &b.paper_id)));
}

/// Writes the backlog of `alias` into `dir` (rows must be in canonical
/// order), or removes the file when `rows` is empty.
pub fn write(dir: &Path, alias: &str, rows: &[BacklogRow], queued_at: &str) -> Result<(), BacklogError> {
    let path = dir.join(BACKLOG_FILE);
    let io = |source| BacklogError::Io {
        path: path.clone(),
        source,
    };
    if rows.is_empty() {
        return remove_durably(&path).map_err(io);
    }
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by(format!("papersys {}", env!("CARGO_PKG_VERSION")))
        .build();
    write_atomic(&path, |out| {
        let mut writer =
            ArrowWriter::try_new(out, schema(), Some(properties)).map_err(std::io::Error::other)?;
        for chunk in rows.chunks(64 * 1024) {
            writer
                .write(&to_batch(chunk, alias, queued_at)?)
                .map_err(std::io::Error::other)?;
        }
        writer.close().map_err(std::io::Error::other)?;
        Ok(())
    })
    .map_err(io)
}

fn to_batch(rows: &[BacklogRow], alias: &str, queued_at: &str) -> std::io::Result<RecordBatch> {
    fn column<'a>(rows: usize, values: impl Iterator<Item = &'a str>) -> ArrayRef {
        let mut builder = StringBuilder::with_capacity(rows, rows * 16);
        for value in values {
            builder.append_value(value);
        }
        Arc::new(builder.finish())
    }
    let n = rows.len();
    let years: Vec<String> = rows.iter().map(|r| r.year.to_string()).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            column(n, rows.iter().map(|r| r.paper_id.as_str())),
            column(n, rows.iter().map(|r| r.reason.as_str())),
            column(n, rows.iter().map(|r| r.origin.as_str())),
            column(n, std::iter::repeat_n(queued_at, n)),
            column(n, std::iter::repeat_n(alias, n)),
            column(n, years.iter().map(String::as_str)),
        ],
    )
    .map_err(std::io::Error::other)
}

/// Reads the backlog; an absent file is an empty backlog.
pub fn read(dir: &Path) -> Result<Vec<BacklogRow>, BacklogError> {
    let path = dir.join(BACKLOG_FILE);
    let damaged = |message: String| BacklogError::Damaged {
        path: path.clone(),
        message,
    };
    let builder = match parquet_input::open_arrow(&path) {
        Ok(builder) => builder,
        Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(OpenError::Io(source)) => return Err(BacklogError::Io { path, source }),
        Err(OpenError::Damaged(message)) => return Err(damaged(message)),
    };
    parquet_input::catch_decoder_panic(|| decode_rows(builder, &damaged)).map_err(&damaged)?
}

/// The rows of an opened backlog file; `damaged` makes the error for a file
/// that is not a backlog.
fn decode_rows(
    builder: ParquetRecordBatchReaderBuilder<ParquetInput>,
    damaged: &dyn Fn(String) -> BacklogError,
) -> Result<Vec<BacklogRow>, BacklogError> {
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| damaged(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| damaged(e.to_string()))?;
        let column = |name: &str| -> Result<ArrayRef, BacklogError> {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| damaged(format!("no `{name}` column")))?;
            arrow_cast::cast(array, &DataType::Utf8).map_err(|e| damaged(e.to_string()))
        };
        let (ids, reasons, origins, years) = (
            column("paper_id")?,
            column("missing_reason")?,
            column("origin")?,
            column("year")?,
        );
        let (ids, reasons, origins, years) = (
            ids.as_string::<i32>(),
            reasons.as_string::<i32>(),
            origins.as_string::<i32>(),
            years.as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            if ids.is_null(i) || reasons.is_null(i) || years.is_null(i) {
                return Err(damaged(format!("row {i} has nulls")));
            }
            let reason = MissingReason::parse(reasons.value(i))
                .ok_or_else(|| damaged(format!("unknown missing_reason {:?}", reasons.value(i))))?;
            let year = Year::parse(years.value(i))
                .ok_or_else(|| damaged(format!("bad year {:?}", years.value(i))))?;
            rows.push(BacklogRow {
                paper_id: ids.value(i).to_string(),
                reason,
                origin: if origins.is_null(i) {
                    String::new()
                } else {
                    origins.value(i).to_string()
                },
                year,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    /// Found by the `backlog` fuzz target: the parquet crate divided by
    /// zero while decoding this file.
    #[test]
    fn a_decoder_panic_is_a_damaged_backlog() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(BACKLOG_FILE),
            include_bytes!("testdata/decoder-panic-backlog.parquet"),
        )
        .unwrap();
        let error = super::read(dir.path()).unwrap_err();
        assert!(matches!(error, BacklogError::Damaged { .. }), "{error}");
        assert!(error.to_string().contains("backlog.parquet"), "{error}");
    }

    use super::*;

    fn row(id: &str, reason: MissingReason, year: &str) -> BacklogRow {
        BacklogRow {
            paper_id: id.into(),
            reason,
            origin: format!("metadata/metadata-{year}.csv"),
            year: Year::parse(year).unwrap(),
        }
    }

    #[test]
    fn rows_round_trip_and_empty_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = vec![
            row("2401.2", MissingReason::MissingEmbedding, "2024"),
            row("0704.1", MissingReason::MissingEmbeddingFile, "2007"),
            row("2401.1", MissingReason::StaleEmbedding, "2024"),
        ];
        sort_rows(&mut rows);
        write(dir.path(), "jasper_v1", &rows, "2025-01-01T00:00:00.000000+00:00").unwrap();
        assert_eq!(read(dir.path()).unwrap(), rows);
        assert_eq!(rows[0].paper_id, "0704.1");
        write(dir.path(), "jasper_v1", &[], "t").unwrap();
        assert!(!dir.path().join(BACKLOG_FILE).exists());
        assert!(read(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn two_writes_differ_only_in_queued_at() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![row("a", MissingReason::MissingEmbedding, "2024")];
        write(dir.path(), "m", &rows, "2025-01-01T00:00:00.000000+00:00").unwrap();
        let first = std::fs::read(dir.path().join(BACKLOG_FILE)).unwrap();
        write(dir.path(), "m", &rows, "2025-01-01T00:00:00.000000+00:00").unwrap();
        let second = std::fs::read(dir.path().join(BACKLOG_FILE)).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn reasons_parse_back() {
        for reason in MissingReason::ALL {
            assert_eq!(MissingReason::parse(reason.as_str()), Some(reason));
        }
        assert!(!MissingReason::EmptyText.is_embeddable());
    }
}
