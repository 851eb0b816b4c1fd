//! The on-disk store of one model: `embeddings/<alias>/`.
//!
//! [`ModelStore`] is the read-only view (what `papersys status` and any
//! reader use: no lock, nothing written). [`StoreWriter`] is the view of the
//! one process allowed to change the directory; it holds the writer lock
//! for its whole life.

pub mod atomic;
pub mod backlog;
pub mod cache;
pub mod checkpoint;
pub mod lock;
pub mod manifest;
pub mod parquet_input;
pub mod provenance;
pub mod replacement;
pub mod year_file;

use std::path::{Path, PathBuf};

use papersys_backend_core::ModelIdentity;

use crate::config::{Alias, Config, ModelConfig};
use crate::metadata::Year;
use lock::{LockError, WriterLock};
use manifest::{Manifest, ManifestError};
use year_file::YearFileError;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer holds the directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A year file problem.
    #[error(transparent)]
    YearFile(#[from] YearFileError),
    /// A manifest problem.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A backlog problem.
    #[error(transparent)]
    Backlog(#[from] backlog::BacklogError),
    /// The OS refused.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The model directory resolves outside the data root (a symlink).
    #[error(
        "{} resolves to {}, outside the data root {}; papersys never writes outside the data root — remove the symlink",
        .dir.display(), .resolved.display(), .root.display()
    )]
    Escape {
        /// The model directory as configured.
        dir: PathBuf,
        /// Where it really points.
        resolved: PathBuf,
        /// The data root.
        root: PathBuf,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Read-only view of one model's directory.
#[derive(Clone, Debug)]
pub struct ModelStore {
    /// `<embeddings_dir>/<alias>`.
    pub dir: PathBuf,
    /// `<embeddings_dir>`, under which the metadata index is shared by all models.
    pub embeddings_dir: PathBuf,
    /// The model alias.
    pub alias: Alias,
    /// Configured vector dimension.
    pub dimension: usize,
    data_root: PathBuf,
}

impl ModelStore {
    /// The store of `model` under `config`'s embeddings directory.
    pub fn new(config: &Config, model: &ModelConfig) -> ModelStore {
        ModelStore {
            dir: config.model_dir(&model.alias),
            embeddings_dir: config.embeddings_dir.clone(),
            alias: model.alias.clone(),
            dimension: model.dimension,
            data_root: config.data_root.clone(),
        }
    }

    /// Path of a year's vectors.
    pub fn year_path(&self, year: Year) -> PathBuf {
        self.dir.join(format!("{year}.parquet"))
    }

    /// The year files present, ascending.
    pub fn year_files(&self) -> Result<Vec<(Year, PathBuf)>, StoreError> {
        manifest::year_files(&self.dir).map_err(|e| StoreError::io(&self.dir, e))
    }

    /// The manifest, if any.
    pub fn manifest(&self) -> Result<Option<Manifest>, StoreError> {
        Ok(Manifest::read(&self.dir)?)
    }

    fn check_inside(&self, path: &Path, root: &Path) -> Result<(), StoreError> {
        let resolved = std::fs::canonicalize(path).map_err(|e| StoreError::io(path, e))?;
        if resolved.starts_with(root) {
            Ok(())
        } else {
            Err(StoreError::Escape {
                dir: self.dir.clone(),
                resolved,
                root: root.to_path_buf(),
            })
        }
    }

    /// Creates the directory if needed, checks it lies inside the data root
    /// and takes the writer lock (failing at once if another process
    /// writes); then folds checkpoints an interrupted run left behind, so
    /// every writer starts from committed year files.
    pub fn open_writer(&self) -> Result<StoreWriter, StoreError> {
        let root = std::fs::canonicalize(&self.data_root).map_err(|e| StoreError::io(&self.data_root, e))?;
        // Check the deepest existing ancestor before creating anything, so
        // a symlinked `embeddings/` cannot make us create directories
        // elsewhere; then check the result.
        let mut existing = self.dir.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        self.check_inside(existing, &root)?;
        atomic::create_dir_all_durably(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        self.check_inside(&self.dir, &root)?;
        let lock = WriterLock::acquire(&self.dir)?;
        let mut removed = 0;
        for dir in [
            self.dir.clone(),
            self.dir.join(checkpoint::CHECKPOINT_DIR),
            self.dir.join(cache::CACHE_DIR),
        ] {
            removed += atomic::remove_stale_temporaries(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        // The metadata index is shared by every model's writer: only the
        // leftovers of dead processes go.
        let index = cache::index_dir(&self.embeddings_dir);
        removed += atomic::remove_orphaned_temporaries(&index).unwrap_or(0);
        if removed > 0 {
            tracing::info!(
                "{}: removed {removed} temporary file(s) left by an interrupted run",
                self.dir.display()
            );
        }
        let writer = StoreWriter {
            store: self.clone(),
            _lock: lock,
        };
        let replaced = writer.finish_promotion(None)?;
        if !replaced.as_os_str().is_empty() {
            tracing::warn!(
                "{}: finished replacing the vectors with the new model's (interrupted before); the old ones are in {}",
                self.dir.display(),
                replaced.display()
            );
        }
        let recovered = writer.fold_all()?;
        if recovered > 0 {
            tracing::info!(
                "{}: recovered {recovered} vectors checkpointed by an interrupted run",
                self.dir.display()
            );
        }
        // A manifest damaged between runs is moved aside and rebuilt now, so
        // that nothing after this point stumbles over it.
        if let Err(ManifestError::Damaged { .. }) = Manifest::read(&self.dir) {
            writer.sync_manifest(None)?;
        }
        Ok(writer)
    }
}

/// The writer's view of a model directory; holds the lock until dropped.
#[derive(Debug)]
pub struct StoreWriter {
    store: ModelStore,
    _lock: WriterLock,
}

impl std::ops::Deref for StoreWriter {
    type Target = ModelStore;

    fn deref(&self) -> &ModelStore {
        &self.store
    }
}

impl StoreWriter {
    /// Moves a damaged file aside (never deletes it): `<name>.damaged-<UTC time>`,
    /// which no `*.parquet` glob matches. Returns the new path.
    pub fn quarantine(&self, path: &Path) -> Result<PathBuf, StoreError> {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Never over an earlier damaged copy moved aside in the same second.
        let mut target = path.with_file_name(format!("{name}.damaged-{stamp}"));
        let mut n = 1;
        while std::fs::symlink_metadata(&target).is_ok() {
            target = path.with_file_name(format!("{name}.damaged-{stamp}-{n}"));
            n += 1;
        }
        atomic::rename_durably(path, &target).map_err(|e| StoreError::io(path, e))?;
        Ok(target)
    }

    /// Moves a year file that cannot be read aside (see [`Self::quarantine`])
    /// and warns, saying its papers are back in the backlog and that nothing
    /// was deleted. Returns where it went.
    pub fn set_aside_damaged_year(&self, path: &Path, message: &str) -> Result<PathBuf, StoreError> {
        let moved = self.quarantine(path)?;
        tracing::warn!(
            "{} could not be read ({message}); moved to {} — its papers are back in the backlog. \
             Nothing was deleted: if the file can be repaired, move it back before the next embed run",
            path.display(),
            moved.display()
        );
        Ok(moved)
    }

    /// Makes `manifest.json` describe exactly the year files on disk and
    /// record `identity` (when given), rewriting it only if that changes
    /// anything. A damaged manifest is moved aside and rebuilt.
    pub fn sync_manifest(&self, identity: Option<&ModelIdentity>) -> Result<Manifest, StoreError> {
        let mut damaged = false;
        let previous = match Manifest::read(&self.dir) {
            Ok(previous) => previous,
            Err(ManifestError::Damaged { path, message }) => {
                damaged = true;
                let moved = self.quarantine(&path)?;
                tracing::warn!(
                    "{} was damaged ({message}); moved to {} and rebuilt from the year files",
                    path.display(),
                    moved.display()
                );
                None
            }
            Err(e) => return Err(e.into()),
        };
        let mut manifest = loop {
            match Manifest::from_disk(&self.dir, self.alias.as_str(), self.dimension, previous.as_ref()) {
                // A year file damaged on disk: aside, like the refresh does.
                Err(YearFileError::Damaged { path, message }) => {
                    self.set_aside_damaged_year(&path, &message)?;
                }
                other => break other?,
            }
        };
        match &previous {
            Some(previous) => {
                for file in previous.files.iter().filter(|f| !manifest.files.contains(f)) {
                    let rows = file
                        .strip_suffix(".parquet")
                        .and_then(|year| previous.years.get(year))
                        .copied()
                        .unwrap_or(0);
                    tracing::warn!(
                        "{} listed {file} ({rows} vectors) but it is no longer in {}; its papers wait in the backlog again",
                        self.dir.join(manifest::MANIFEST_FILE).display(),
                        self.dir.display()
                    );
                }
            }
            None if !manifest.files.is_empty() && !damaged => {
                tracing::warn!(
                    "{} was missing; rebuilt from the year files ({})",
                    self.dir.join(manifest::MANIFEST_FILE).display(),
                    manifest.files.join(", ")
                );
            }
            None => {}
        }
        if previous.is_none() && !manifest.files.is_empty() {
            match &manifest.model_identity {
                Some(found) => tracing::info!(
                    "{}: the year files record the model that made them: {}",
                    self.dir.display(),
                    found.name
                ),
                None if identity.is_none() => tracing::warn!(
                    "{}: no year file records which model made its vectors (written by another tool); \
                     the next embed run records the configured model: check it is the one that made them",
                    self.dir.display()
                ),
                None => {}
            }
        }
        if let Some(identity) = identity {
            manifest.model_identity = Some(identity.clone());
        }
        let unchanged = previous.as_ref().is_some_and(|p| p.same_content(&manifest));
        if unchanged {
            return Ok(previous.unwrap_or(manifest));
        }
        manifest.write(&self.dir)?;
        Ok(manifest)
    }
}
