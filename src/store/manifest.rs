//! `embeddings/<alias>/manifest.json`: what is on disk for a model.
//!
//! Built from the year files themselves (row counts from Parquet footers),
//! so it can always be made true again; it also records which model made
//! the vectors ([`ModelIdentity`]), which papersys' year files record too
//! (so a lost manifest is rebuilt with it). Keys written by other tools are
//! kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use papersys_backend_core::ModelIdentity;
use serde::{Deserialize, Serialize};

use super::atomic::write_bytes_atomic;
use super::year_file::{self, YearFileError};
use crate::metadata::Year;
use crate::text::TEXT_HASH_ALGORITHM;

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Value of `source` in manifests papersys writes.
pub const SOURCE: &str = "papersys.embedding";

/// The manifest, as the contract defines it plus papersys' additions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Model alias.
    pub model: String,
    /// Vector dimension.
    pub dimension: usize,
    /// Sum of `years`.
    pub total_rows: u64,
    /// Rows per year file, keyed by four-digit year.
    pub years: BTreeMap<String, u64>,
    /// Year file names, sorted.
    pub files: Vec<String>,
    /// When this manifest was written (UTC ISO-8601).
    pub generated_at: String,
    /// What wrote it.
    pub source: String,
    /// The model that made the vectors. Absent in manifests written by the
    /// Python original; the first papersys run records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_identity: Option<ModelIdentity>,
    /// How the year files' `text_hash` column was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_hash_algorithm: Option<String>,
    /// Keys this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why the manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The OS refused.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The manifest.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid manifest JSON.
    #[error("{} is damaged: {message}", .path.display())]
    Damaged {
        /// The manifest.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// The year files in a model directory: exactly the `YYYY.parquet` names.
pub fn year_files(dir: &Path) -> std::io::Result<Vec<(Year, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(year) = name.strip_suffix(".parquet").and_then(Year::parse)
            && entry.file_type()?.is_file()
        {
            found.push((year, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Current UTC time in the contract's ISO-8601 form
/// (`2025-10-04T08:30:00.123456+00:00`, as Python's `isoformat()` writes).
pub fn now_iso() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

impl Manifest {
    /// Reads the manifest; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(ManifestError::Damaged {
                    path,
                    message: "not UTF-8".into(),
                });
            }
            Err(source) => return Err(ManifestError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ManifestError::Damaged {
                path,
                message: e.to_string(),
            })
    }

    /// A manifest describing exactly the year files now in `dir`, carrying
    /// over the model identity and unknown keys of `previous`. Without a
    /// previous identity, the first year file that records a model supplies
    /// it.
    pub fn from_disk(
        dir: &Path,
        alias: &str,
        dimension: usize,
        previous: Option<&Manifest>,
    ) -> Result<Manifest, YearFileError> {
        let mut years = BTreeMap::new();
        let mut files = Vec::new();
        let listed = year_files(dir).map_err(|source| YearFileError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut found = None;
        for (year, path) in listed {
            let footer = year_file::footer(&path)?;
            years.insert(year.to_string(), footer.rows);
            files.push(format!("{year}.parquet"));
            found = found.or(footer.identity);
        }
        Ok(Manifest {
            model: alias.to_string(),
            dimension,
            total_rows: years.values().sum(),
            years,
            files,
            generated_at: now_iso(),
            source: SOURCE.to_string(),
            model_identity: previous.and_then(|m| m.model_identity.clone()).or(found),
            text_hash_algorithm: Some(TEXT_HASH_ALGORITHM.to_string()),
            extra: previous.map(|m| m.extra.clone()).unwrap_or_default(),
        })
    }

    /// True when both describe the same files, counts and model, whatever
    /// their timestamps.
    pub fn same_content(&self, other: &Manifest) -> bool {
        self.model == other.model
            && self.dimension == other.dimension
            && self.total_rows == other.total_rows
            && self.years == other.years
            && self.files == other.files
            && self.model_identity == other.model_identity
            && self.text_hash_algorithm == other.text_hash_algorithm
            && self.extra == other.extra
    }

    /// Writes the manifest atomically into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| ManifestError::Damaged {
            path: path.clone(),
            message: e.to_string(),
        })?;
        text.push('\n');
        write_bytes_atomic(&path, text.as_bytes()).map_err(|source| ManifestError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::year_file::{VectorRow, merge};

    fn rows(ids: &[&str]) -> Vec<VectorRow> {
        ids.iter()
            .map(|id| VectorRow {
                paper_id: id.to_string(),
                embedding: vec![0.5; 3],
                generated_at: now_iso(),
                source: year_file::SOURCE.into(),
                text_hash: None,
            })
            .collect()
    }

    #[test]
    fn manifest_lists_exactly_the_year_files_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        merge(&dir.path().join("2023.parquet"), rows(&["a", "b"]), 3).unwrap();
        merge(&dir.path().join("2024.parquet"), rows(&["c"]), 3).unwrap();
        std::fs::write(dir.path().join("backlog.parquet"), b"x").unwrap();
        std::fs::write(dir.path().join("2024.parquet.damaged-1"), b"x").unwrap();
        let manifest = Manifest::from_disk(dir.path(), "jasper_v1", 3, None).unwrap();
        assert_eq!(manifest.model, "jasper_v1");
        assert_eq!(manifest.dimension, 3);
        assert_eq!(manifest.total_rows, 3);
        assert_eq!(
            manifest.years,
            BTreeMap::from([("2023".into(), 2), ("2024".into(), 1)])
        );
        assert_eq!(manifest.files, ["2023.parquet", "2024.parquet"]);
        manifest.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap().unwrap(), manifest);
    }

    #[test]
    fn python_manifests_load_and_unknown_keys_survive() {
        let dir = tempfile::tempdir().unwrap();
        let python = r#"{"model": "jasper_v1", "dimension": 384, "total_rows": 1234,
            "years": {"2023": 600, "2024": 634}, "files": ["2023.parquet", "2024.parquet"],
            "generated_at": "2025-10-04T08:30:00+00:00", "source": "papersys.embedding",
            "hf_repo": "lab/embeddings"}"#;
        std::fs::write(dir.path().join(MANIFEST_FILE), python).unwrap();
        let manifest = Manifest::read(dir.path()).unwrap().unwrap();
        assert!(manifest.model_identity.is_none());
        let rebuilt = Manifest::from_disk(dir.path(), "jasper_v1", 384, Some(&manifest)).unwrap();
        assert_eq!(rebuilt.extra["hf_repo"], "lab/embeddings");
        assert_eq!(
            rebuilt.total_rows, 0,
            "counts come from the files, not the old manifest"
        );
    }

    #[test]
    fn garbage_manifest_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{ nope").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::Damaged { .. }));
        assert!(err.to_string().contains("manifest.json"));
    }

    #[test]
    fn timestamps_look_like_python_isoformat() {
        let now = now_iso();
        assert_eq!(now.len(), "2025-10-04T08:30:00.123456+00:00".len(), "{now}");
        assert!(now.ends_with("+00:00"));
        assert!(now.parse::<jiff::Timestamp>().is_ok());
    }
}
