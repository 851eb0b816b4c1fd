//! Which model made the vectors on disk, as the files themselves say.
//!
//! The manifest records the model, and so does every year file and
//! checkpoint papersys writes (Parquet key-value metadata, see
//! [`year_file::IDENTITY_KEY`]). Before a run embeds anything, every file
//! that records a model is checked against the configured one, so a run
//! under another model is refused with the name of the file, even when the
//! manifest is gone.

use papersys_backend_core::ModelIdentity;

use super::year_file::{self, YearFileError};
use super::{ModelStore, StoreError, checkpoint};

impl ModelStore {
    /// The model that made the vectors on disk: the manifest's record, else
    /// the first year file or checkpoint that records one, else the
    /// identity noted beside the checkpoints. `None` when nothing records a
    /// model (a new store, or one written by other tools).
    pub fn recorded_identity(&self) -> Result<Option<ModelIdentity>, StoreError> {
        if let Some(identity) = self.manifest().ok().flatten().and_then(|m| m.model_identity) {
            return Ok(Some(identity));
        }
        for path in self.recorded_files()? {
            match year_file::footer(&path) {
                Ok(footer) if footer.identity.is_some() => return Ok(footer.identity),
                Ok(_) | Err(YearFileError::Damaged { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(checkpoint::recorded_identity(&self.dir))
    }

    /// Checks every year file and checkpoint that records a model against
    /// `current`; the first made by another model is refused with a
    /// [`YearFileError::Model`] naming it. Damaged files are left to the
    /// refresh, which moves them aside.
    pub fn check_identity(&self, current: &ModelIdentity) -> Result<(), StoreError> {
        for path in self.recorded_files()? {
            match year_file::footer(&path) {
                Ok(footer) => {
                    if let Some(recorded) = footer.identity {
                        year_file::check_identity(&path, current, &recorded)?;
                    }
                }
                Err(YearFileError::Damaged { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Year files, then checkpoints.
    fn recorded_files(&self) -> Result<Vec<std::path::PathBuf>, StoreError> {
        let mut paths: Vec<_> = self.year_files()?.into_iter().map(|(_, p)| p).collect();
        paths.extend(checkpoint::list(&self.dir)?.into_values().flatten());
        Ok(paths)
    }
}
