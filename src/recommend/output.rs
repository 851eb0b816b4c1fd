//! A run's files: `predictions.parquet`, `recommended.parquet`,
//! `training.parquet`, `manifest.json` and `recommended.md`, written into a
//! temporary directory beside the final one and renamed into place, so a
//! reader sees a complete run or none.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float64Array, Int8Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::metadata::PaperRecord;
use crate::store::atomic::{self, TEMP_PREFIX};

/// A scored candidate.
#[derive(Clone, Debug)]
pub struct Scored {
    /// Its metadata.
    pub record: PaperRecord,
    /// Probability of a like.
    pub score: f64,
    /// Chosen to be shown.
    pub show: bool,
}

/// One training example.
#[derive(Clone, Debug)]
pub struct TrainingRow {
    /// Paper id.
    pub paper_id: String,
    /// 1 like, 0 otherwise.
    pub label: i8,
    /// `like`, `dislike` or `background`.
    pub kind: &'static str,
}

/// Names of the files inside a run directory.
#[derive(Clone, Debug)]
pub struct FileNames {
    /// Every scored candidate.
    pub predictions: String,
    /// The shown subset.
    pub recommended: String,
    /// The run manifest.
    pub manifest: String,
}

/// Name of the training set file.
pub const TRAINING_FILE: &str = "training.parquet";
/// Name of the digest.
pub const DIGEST_FILE: &str = "recommended.md";

fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by(format!("papersys {}", env!("CARGO_PKG_VERSION")))
        .build()
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> std::io::Result<()> {
    atomic::write_atomic(path, |out| {
        let mut writer =
            ArrowWriter::try_new(out, batch.schema(), Some(properties())).map_err(std::io::Error::other)?;
        writer.write(batch).map_err(std::io::Error::other)?;
        writer.close().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// The predictions schema: `id`, `title`, `abstract`, `categories`
/// (list of strings), `primary_category`, `authors`, `published_at`,
/// `updated_at`, `score` (Float64), `show` (Int8, 1 = shown).
pub fn predictions_batch(rows: &[Scored]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let text = |f: fn(&PaperRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(&r.record))))
    };
    let mut categories = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for c in row.record.category_list() {
            categories.values().append_value(c);
        }
        categories.append(true);
    }
    let categories: ArrayRef = Arc::new(categories.finish());
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", text(|r| &r.paper_id)),
        ("title", text(|r| &r.title)),
        ("abstract", text(|r| &r.abstract_text)),
        ("categories", categories),
        ("primary_category", text(|r| &r.primary_category)),
        ("authors", text(|r| &r.authors)),
        ("published_at", text(|r| &r.published_at)),
        ("updated_at", text(|r| &r.updated_at)),
        (
            "score",
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.score))),
        ),
        (
            "show",
            Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| i8::from(r.show)))),
        ),
    ];
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), *name == "categories"))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
}

fn training_batch(rows: &[TrainingRow]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let schema = Schema::new(vec![
        Field::new("paper_id", DataType::Utf8, false),
        Field::new("label", DataType::Int8, false),
        Field::new("kind", DataType::Utf8, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.paper_id.as_str()),
            )),
            Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.label))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        ],
    )
}

/// The readable digest of the shown papers.
pub fn digest(title: &str, shown: &[&Scored]) -> String {
    let mut out = format!("# {title}\n\n");
    if shown.is_empty() {
        out.push_str("Nothing to show.\n");
    }
    for (i, s) in shown.iter().enumerate() {
        let r = &s.record;
        let one_line = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!("## {}. {}\n\n", i + 1, one_line(&r.title)));
        if !r.authors.is_empty() {
            out.push_str(&format!(
                "*{}*\n\n",
                r.authors.split(';').map(str::trim).collect::<Vec<_>>().join(", ")
            ));
        }
        let categories: Vec<&str> = r.category_list().collect();
        out.push_str(&format!(
            "score {:.3} · {} · {} · <https://arxiv.org/abs/{}>\n\n",
            s.score,
            categories.join(", "),
            r.effective_date().get(..10).unwrap_or(r.effective_date()),
            r.paper_id
        ));
        let text = one_line(&r.abstract_text);
        if !text.is_empty() {
            out.push_str(&format!("> {text}\n\n"));
        }
    }
    out
}

/// Everything a run writes.
pub struct RunFiles<'a> {
    /// Scored candidates, in output order.
    pub predictions: &'a [Scored],
    /// The training set.
    pub training: &'a [TrainingRow],
    /// The manifest document.
    pub manifest: &'a serde_json::Value,
    /// The digest's heading.
    pub title: &'a str,
    /// File names.
    pub names: &'a FileNames,
}

/// `base` (a UTC time, `YYYYMMDD-HHMMSS`), or with a `-2`, `-3`... suffix
/// when a run of that second exists: unique, and sorted by time.
pub fn unique_run_id(output_dir: &Path, base: &str) -> String {
    let mut id = base.to_string();
    let mut n = 1;
    while std::fs::symlink_metadata(output_dir.join(&id)).is_ok() {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

/// Writes a run into `<output_dir>/<run_id>` atomically; returns the
/// directory. Fails if it exists.
pub fn write_run(output_dir: &Path, run_id: &str, files: &RunFiles<'_>) -> std::io::Result<PathBuf> {
    if let Some(parent) = output_dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    atomic::create_owned_dir(output_dir)?;
    atomic::remove_orphaned_temporaries(output_dir)?;
    let temp = output_dir.join(format!("{TEMP_PREFIX}{}-{run_id}", std::process::id()));
    std::fs::create_dir(&temp)?;
    let result = (|| {
        let shown: Vec<Scored> = files.predictions.iter().filter(|s| s.show).cloned().collect();
        let batch = |rows: &[Scored]| predictions_batch(rows).map_err(std::io::Error::other);
        write_parquet(&temp.join(&files.names.predictions), &batch(files.predictions)?)?;
        write_parquet(&temp.join(&files.names.recommended), &batch(&shown)?)?;
        write_parquet(
            &temp.join(TRAINING_FILE),
            &training_batch(files.training).map_err(std::io::Error::other)?,
        )?;
        let refs: Vec<&Scored> = shown.iter().collect();
        atomic::write_bytes_atomic(&temp.join(DIGEST_FILE), digest(files.title, &refs).as_bytes())?;
        atomic::write_atomic(&temp.join(&files.names.manifest), |out| {
            serde_json::to_writer_pretty(&mut *out, files.manifest)?;
            out.write_all(b"\n")
        })?;
        let target = output_dir.join(run_id);
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists already", target.display()),
            ));
        }
        atomic::rename_durably(&temp, &target)?;
        Ok(target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}
