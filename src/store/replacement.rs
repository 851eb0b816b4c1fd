//! Replacing every vector of an alias with a new model's, without ever
//! showing readers a mix of the two.
//!
//! `papersys embed --reembed` under a changed model writes the new vectors
//! into `<alias>/.reembed/`, a complete store of its own (year files,
//! manifest, checkpoints), hidden from readers and resumable across runs.
//! When it holds a vector for every paper, it is promoted: the intent is
//! recorded first, then the old year files are moved to
//! `<alias>/.replaced-<time>/` (kept, never deleted: the user decides), the
//! new ones moved in, and the manifest rewritten with the new model. A
//! crash during promotion is finished by the next writer from the recorded
//! intent, so the directory never stays mixed.

use std::path::{Path, PathBuf};

use papersys_backend_core::ModelIdentity;
use serde::{Deserialize, Serialize};

use super::atomic::{TEMP_PREFIX, create_owned_dir, rename_durably, write_bytes_atomic};
use super::manifest::{Manifest, year_files};
use super::{ModelStore, StoreError, StoreWriter};

/// Directory of the replacement store inside a model directory.
pub const REPLACEMENT_DIR: &str = ".reembed";

/// The promotion intent, written before anything moves.
const INTENT_FILE: &str = "promote.json";

#[derive(Serialize, Deserialize)]
struct Intent {
    /// Where the old year files go, relative to the model directory.
    replaced_dir: String,
    /// Set once every old year file is in `replaced_dir`: from then on the
    /// year files in the model directory are the new model's, and a resumed
    /// promotion must not move them.
    #[serde(default)]
    old_moved: bool,
}

impl ModelStore {
    /// The replacement store of a model change (it may not exist yet).
    pub fn replacement_store(&self) -> ModelStore {
        ModelStore {
            dir: self.dir.join(REPLACEMENT_DIR),
            ..self.clone()
        }
    }

    /// Whether a replacement is under way (its store exists).
    pub fn has_replacement(&self) -> bool {
        self.dir.join(REPLACEMENT_DIR).is_dir()
    }
}

impl StoreWriter {
    /// Promotes the replacement store: the old year files move to a
    /// `.replaced-<time>` directory, the replacement store's take their place, and
    /// the manifest records `identity`. Returns where the old files went.
    pub fn promote_replacement(&self, identity: &ModelIdentity) -> Result<PathBuf, StoreError> {
        let store = self.dir.join(REPLACEMENT_DIR);
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let intent = Intent {
            replaced_dir: format!(".replaced-{stamp}"),
            old_moved: false,
        };
        write_intent(&store.join(INTENT_FILE), &intent)?;
        crate::fault::point("promote.after_intent");
        self.finish_promotion(Some(identity))
    }

    /// Completes a promotion whose intent is recorded (after a crash, or
    /// right after [`StoreWriter::promote_replacement`] wrote it). Does nothing
    /// when none is pending.
    pub fn finish_promotion(&self, identity: Option<&ModelIdentity>) -> Result<PathBuf, StoreError> {
        let store = self.dir.join(REPLACEMENT_DIR);
        let intent_path = store.join(INTENT_FILE);
        let Ok(bytes) = std::fs::read(&intent_path) else {
            return Ok(PathBuf::new());
        };
        let mut intent: Intent = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::io(
                &intent_path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let identity = match identity {
            Some(identity) => identity.clone(),
            None => Manifest::read(&store)?
                .and_then(|m| m.model_identity)
                .ok_or_else(|| {
                    StoreError::io(
                        &store,
                        std::io::Error::other(
                            "the replacement store records no model; cannot finish replacing vectors",
                        ),
                    )
                })?,
        };
        // Readers first lose the old files (never a mix), then gain the new.
        // Each step can be interrupted and resumed: the intent records when
        // the old files are all gone, so a resumed run never takes the new
        // files it already moved in for old ones.
        let replaced = self.dir.join(&intent.replaced_dir);
        if !intent.old_moved {
            let previous = Manifest::read(&self.dir).ok().flatten();
            let mut emptied =
                Manifest::from_disk(&self.dir, self.alias.as_str(), self.dimension, previous.as_ref())?;
            emptied.years.clear();
            emptied.files.clear();
            emptied.total_rows = 0;
            emptied.model_identity = Some(identity.clone());
            emptied.write(&self.dir)?;
            let old = year_files(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
            if !old.is_empty() {
                create_owned_dir(&replaced).map_err(|e| StoreError::io(&replaced, e))?;
            }
            for (_, path) in old {
                move_into(&path, &replaced)?;
                crate::fault::point("promote.move_old");
            }
            intent.old_moved = true;
            write_intent(&intent_path, &intent)?;
        }
        for (_, path) in year_files(&store).map_err(|e| StoreError::io(&store, e))? {
            move_into(&path, &self.dir)?;
            crate::fault::point("promote.move_new");
        }
        self.sync_manifest(Some(&identity))?;
        crate::fault::point("promote.before_cleanup");
        // One rename retires the replacement store; what is left of it is a
        // temporary the next writer removes should this removal be cut short.
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ").to_string();
        let retired = self
            .dir
            .join(format!("{TEMP_PREFIX}reembed-{}", stamp.replace('.', "")));
        rename_durably(&store, &retired).map_err(|e| StoreError::io(&store, e))?;
        std::fs::remove_dir_all(&retired).map_err(|e| StoreError::io(&retired, e))?;
        super::atomic::sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        Ok(replaced)
    }
}

fn write_intent(path: &Path, intent: &Intent) -> Result<(), StoreError> {
    let json =
        serde_json::to_vec_pretty(intent).map_err(|e| StoreError::io(path, std::io::Error::other(e)))?;
    write_bytes_atomic(path, &json).map_err(|e| StoreError::io(path, e))
}

/// Moves `path` into `dir` under its own name, never over a file already
/// there (that one is kept, and the moved file gets a suffix).
fn move_into(path: &Path, dir: &Path) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut target = dir.join(&name);
    let mut n = 1;
    while std::fs::symlink_metadata(&target).is_ok() {
        target = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    rename_durably(path, &target).map_err(|e| StoreError::io(path, e))
}
