//! Checkpoints of a running embed: `<alias>/.pending/YYYY-<run>-<n>.parquet`
//! (the directory keeps its on-disk name `.pending/`; the files in it are
//! checkpoints).
//!
//! Every `checkpoint_interval` papers the new vectors are written, per year,
//! into a small checkpoint file (same schema as a year file) and made durable:
//! from then on a crash cannot lose them. Year files are not rewritten per
//! checkpoint; a year's checkpoints are folded into its year file once, when the
//! run is done with the year (or by the next writer after a crash). Folding
//! is idempotent: the merge keeps one row per paper, the one committed last
//! (checkpoint order, never the clock), so checkpoints that survive a crash after
//! their fold are folded again harmlessly.
//! The directory is hidden, so readers globbing `*.parquet` never see it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use papersys_backend_core::ModelIdentity;

use super::atomic::{remove_durably, sync_dir};
use super::year_file::{self, MergeOutcome, VectorRow, YearFileError};
use super::{StoreError, StoreWriter};
use crate::metadata::Year;

/// Directory of checkpoints inside a model directory (its on-disk name is
/// `.pending`, kept for stores written before the naming pass).
pub const CHECKPOINT_DIR: &str = ".pending";

/// Bytes of new vectors a fold holds in memory at most: a year with more
/// checkpointed vectors is merged in several passes, which keeps a backfill's memory
/// bounded whatever its size and dimension, at the cost of one more rewrite
/// of that year file per pass. At 384 dimensions this is ~260,000 vectors,
/// so a year of up to ~500,000 new papers (arXiv's largest is under
/// 300,000) still costs at most 3x its size in bytes written; at 4,096
/// dimensions it is ~25,000 vectors per pass, still ~400 MB. The same bound
/// applies when a year file from another tool is sorted before a fold.
const FOLD_BYTES_IN_MEMORY: usize = year_file::MEMORY_BYTES;

/// Memory of one new vector row besides its floats.
const ROW_OVERHEAD_BYTES: usize = year_file::ROW_OVERHEAD_BYTES;

/// How many new vectors of `dimension` fit in [`FOLD_BYTES_IN_MEMORY`].
fn fold_rows_in_memory(dimension: usize) -> usize {
    let per_row = dimension
        .saturating_mul(std::mem::size_of::<f32>())
        .saturating_add(ROW_OVERHEAD_BYTES);
    (FOLD_BYTES_IN_MEMORY / per_row).max(1)
}

/// The model that made the checkpointed vectors, for a recovery that runs before
/// any model is loaded.
const IDENTITY_FILE: &str = "identity.json";

/// The identity recorded beside the checkpoints, if any.
pub fn recorded_identity(model_dir: &Path) -> Option<ModelIdentity> {
    let bytes = std::fs::read(model_dir.join(CHECKPOINT_DIR).join(IDENTITY_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Checkpoint files per year, in the order they were written.
pub fn list(model_dir: &Path) -> Result<BTreeMap<Year, Vec<PathBuf>>, StoreError> {
    let dir = model_dir.join(CHECKPOINT_DIR);
    let mut checkpoints: BTreeMap<Year, Vec<PathBuf>> = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(checkpoints),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let year = name
            .strip_suffix(".parquet")
            .and_then(|stem| stem.split('-').next())
            .and_then(Year::parse);
        if let Some(year) = year {
            checkpoints.entry(year).or_default().push(entry.path());
        }
    }
    for files in checkpoints.values_mut() {
        files.sort();
    }
    Ok(checkpoints)
}

/// Ids present in a year's checkpoints (vectors committed but not yet folded).
pub fn ids(model_dir: &Path, year: Year, dimension: usize) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    for path in list(model_dir)?.remove(&year).unwrap_or_default() {
        ids.extend(year_file::read_ids(&path, dimension)?.ids);
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

impl StoreWriter {
    /// Writes one checkpoint for `year` durably. `tag` makes the name
    /// unique within the run (run start time and a counter).
    pub fn write_checkpoint(
        &self,
        year: Year,
        tag: &str,
        rows: Vec<VectorRow>,
        identity: &ModelIdentity,
    ) -> Result<PathBuf, StoreError> {
        let dir = self.dir.join(CHECKPOINT_DIR);
        super::atomic::create_owned_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let identity_path = dir.join(IDENTITY_FILE);
        if !identity_path.exists() {
            let json = serde_json::to_vec_pretty(identity)
                .map_err(|e| StoreError::io(&identity_path, std::io::Error::other(e)))?;
            super::atomic::write_bytes_atomic(&identity_path, &json)
                .map_err(|e| StoreError::io(&identity_path, e))?;
        }
        let path = dir.join(format!("{year}-{tag}.parquet"));
        let mut rows = rows;
        year_file::sort_and_dedup(&mut rows);
        year_file::write_rows_as(&path, rows, self.dimension, Some(identity))?;
        Ok(path)
    }

    /// Folds every checkpoint of `year` into the year file, records `identity` in
    /// the manifest and removes the folded checkpoints. Returns what the merge
    /// did, or `None` when the year had no checkpoints.
    pub fn fold_year(
        &self,
        year: Year,
        identity: Option<&ModelIdentity>,
    ) -> Result<Option<MergeOutcome>, StoreError> {
        self.fold_year_within(year, identity, fold_rows_in_memory(self.dimension))
    }

    /// [`Self::fold_year`], holding at most about `max_rows` new vectors in
    /// memory: checkpoints are merged in groups, oldest first, each group
    /// committed (year file, manifest, checkpoints removed) before the next.
    /// A checkpoint made by another model than `identity` (or than the first
    /// checkpoint, when `identity` is unknown) is refused, naming it.
    fn fold_year_within(
        &self,
        year: Year,
        identity: Option<&ModelIdentity>,
        max_rows: usize,
    ) -> Result<Option<MergeOutcome>, StoreError> {
        let Some(checkpoints) = list(&self.dir)?.remove(&year) else {
            return Ok(None);
        };
        let year_path = self.year_path(year);
        // A year file damaged after it was written (by hand, a failing disk)
        // is kept aside and the checkpointed vectors go into a new one; the
        // refresh puts the rest of its papers back in the backlog.
        if year_path.exists()
            && let Err(YearFileError::Damaged { message, .. }) =
                year_file::read_ids(&year_path, self.dimension)
        {
            self.set_aside_damaged_year(&year_path, &message)?;
        }
        // A year file from another tool (unsorted, a paper repeated) is
        // sorted first, within the same memory bound, so that the merges
        // below stream it.
        if year_path.exists() && !year_file::is_sorted_unique(&year_path, self.dimension)? {
            year_file::sort_file(&year_path, self.dimension, max_rows)?;
            self.sync_manifest(None)?;
        }
        let mut total = MergeOutcome::default();
        let mut rows: Vec<VectorRow> = Vec::new();
        let mut group: Vec<&PathBuf> = Vec::new();
        let mut identity = identity.cloned();
        for path in &checkpoints {
            match year_file::read_rows(path, self.dimension) {
                Ok(checkpoint_rows) => {
                    if let Some(recorded) = year_file::footer(path)?.identity {
                        match &identity {
                            Some(current) => year_file::check_identity(path, current, &recorded)?,
                            None => identity = Some(recorded),
                        }
                    }
                    rows.extend(checkpoint_rows);
                    group.push(path);
                }
                // A checkpoint is only ever renamed into place whole, so a damaged
                // one was damaged on disk after the fact: keep it aside.
                Err(YearFileError::Damaged { message, .. }) => {
                    let moved = self.quarantine(path)?;
                    tracing::warn!(
                        "checkpoint {} is damaged ({message}); moved to {}, its papers will be embedded again",
                        path.display(),
                        moved.display()
                    );
                }
                Err(e) => return Err(e.into()),
            }
            if rows.len() >= max_rows {
                let outcome =
                    self.commit_group(&year_path, std::mem::take(&mut rows), &group, identity.as_ref())?;
                total.add(outcome);
                group.clear();
            }
        }
        if !group.is_empty() {
            total.add(self.commit_group(&year_path, rows, &group, identity.as_ref())?);
        }
        Ok(Some(total))
    }

    /// Merges one group's rows into the year file, then makes the manifest
    /// true and removes the group's checkpoints. A crash in between leaves
    /// checkpoints that are folded again, harmlessly.
    fn commit_group(
        &self,
        year_path: &Path,
        rows: Vec<VectorRow>,
        group: &[&PathBuf],
        identity: Option<&ModelIdentity>,
    ) -> Result<MergeOutcome, StoreError> {
        let outcome = year_file::merge_as(year_path, rows, self.dimension, identity)?;
        crate::fault::point("fold.after_merge");
        self.sync_manifest(identity)?;
        crate::fault::point("fold.before_remove_checkpoints");
        for path in group {
            remove_durably(path).map_err(|e| StoreError::io(path, e))?;
        }
        Ok(outcome)
    }

    /// Folds the checkpoints of every year: recovery after an interrupted run,
    /// done by the next writer before it plans anything. The vectors are
    /// recorded as made by the model noted beside them.
    pub fn fold_all(&self) -> Result<u64, StoreError> {
        let identity = recorded_identity(&self.dir);
        let mut folded = 0;
        for year in list(&self.dir)?.into_keys() {
            if let Some(outcome) = self.fold_year(year, identity.as_ref())? {
                folded += outcome.added + outcome.replaced;
            }
        }
        self.clear_checkpoints()?;
        Ok(folded)
    }

    /// Removes the checkpoint directory (`.pending/`) once no checkpoint is left in it.
    pub fn clear_checkpoints(&self) -> Result<(), StoreError> {
        let dir = self.dir.join(CHECKPOINT_DIR);
        if !dir.exists() || !list(&self.dir)?.is_empty() {
            return Ok(());
        }
        remove_durably(&dir.join(IDENTITY_FILE)).map_err(|e| StoreError::io(&dir, e))?;
        match std::fs::remove_dir(&dir) {
            Ok(()) => sync_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e)),
            // Something else was put there by hand: leave it.
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::ModelStore;
    use papersys_backend_core::Pooling;

    fn row(id: &str, value: f32, at: &str) -> VectorRow {
        VectorRow {
            paper_id: id.into(),
            embedding: vec![value; 4],
            generated_at: at.into(),
            source: "test".into(),
            text_hash: None,
        }
    }

    fn identity(name: &str) -> ModelIdentity {
        ModelIdentity {
            name: name.into(),
            revision: None,
            weights_sha256: None,
            dimension: 4,
            max_tokens: 0,
            pooling: Pooling::Mean,
            normalize: true,
            document_prefix: String::new(),
            backend: "test".into(),
            precision: None,
        }
    }

    #[test]
    fn a_checkpoint_made_by_another_model_is_refused_by_name_and_never_folded() {
        let dir = tempfile::tempdir().unwrap();
        let writer = store_with_deltas(dir.path());
        let year = Year::parse("2024").unwrap();
        let err = writer.fold_year(year, Some(&identity("other"))).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, StoreError::YearFile(YearFileError::Model { .. })),
            "{message}"
        );
        assert!(
            message.contains(".pending") && message.contains("2024-run-000000"),
            "{message}"
        );
        assert!(!writer.year_path(year).exists(), "nothing folded");
        assert_eq!(
            list(&writer.dir).unwrap()[&year].len(),
            3,
            "the checkpoints are kept"
        );
        // The recovery, which knows no model, folds them under the one they record.
        writer.fold_year(year, None).unwrap();
        let footer = year_file::footer(&writer.year_path(year)).unwrap();
        assert_eq!(footer.identity.unwrap().name, "m");
        assert_eq!(
            writer.manifest().unwrap().unwrap().model_identity.unwrap().name,
            "m"
        );
    }

    /// A store of `dir` with three checkpoints for 2024, the later ones re-embedding
    /// papers of the earlier ones.
    fn store_with_deltas(dir: &Path) -> StoreWriter {
        let text = "[embedding]\n[[embedding.models]]\nalias = \"m\"\nname = \"m\"\ndimension = 4\n";
        let config = Config::parse(text, &dir.join("papersys.toml")).unwrap();
        let writer = ModelStore::new(&config, &config.models[0]).open_writer().unwrap();
        let identity = identity("m");
        let (t1, t2, t3) = (
            "2025-01-01T00:00:00.000000+00:00",
            "2025-01-02T00:00:00.000000+00:00",
            "2025-01-03T00:00:00.000000+00:00",
        );
        let year = Year::parse("2024").unwrap();
        let checkpoints = [
            vec![row("2401.00003", 1.0, t1), row("2401.00001", 1.0, t1)],
            vec![row("2401.00002", 2.0, t2), row("2401.00003", 2.0, t2)],
            vec![row("2401.00001", 3.0, t3), row("2401.00004", 3.0, t3)],
        ];
        for (n, rows) in checkpoints.into_iter().enumerate() {
            writer
                .write_checkpoint(year, &format!("run-{n:06}"), rows, &identity)
                .unwrap();
        }
        writer
    }

    #[test]
    fn a_fold_in_small_groups_writes_what_one_fold_writes_and_leaves_no_delta() {
        let whole = tempfile::tempdir().unwrap();
        let writer = store_with_deltas(whole.path());
        let year = Year::parse("2024").unwrap();
        let once = writer.fold_year(year, None).unwrap().unwrap();
        let expected = year_file::read_rows(&writer.year_path(year), 4).unwrap();
        assert_eq!((once.rows, once.added), (4, 4));
        assert_eq!(
            expected
                .iter()
                .map(|r| (r.paper_id.as_str(), r.embedding[0]))
                .collect::<Vec<_>>(),
            [
                ("2401.00001", 3.0),
                ("2401.00002", 2.0),
                ("2401.00003", 2.0),
                ("2401.00004", 3.0)
            ]
        );
        for max_rows in [1, 2, 3] {
            let dir = tempfile::tempdir().unwrap();
            let writer = store_with_deltas(dir.path());
            let grouped = writer.fold_year_within(year, None, max_rows).unwrap().unwrap();
            assert_eq!(grouped.rows, 4, "max_rows {max_rows}");
            // Each paper is new once; re-embedded ones replace across groups.
            assert_eq!(grouped.added, 4, "max_rows {max_rows}");
            assert_eq!(
                year_file::read_rows(&writer.year_path(year), 4).unwrap(),
                expected,
                "max_rows {max_rows}"
            );
            assert!(list(&writer.dir).unwrap().is_empty(), "max_rows {max_rows}");
        }
    }

    /// A year file written by another tool (unsorted, papers repeated) is
    /// not loaded whole by a fold: it is sorted within the fold's bound and
    /// then streamed, and the result is what an in-memory merge gives.
    #[test]
    fn a_fold_into_a_year_file_from_another_tool_holds_at_most_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let writer = store_with_deltas(dir.path());
        let year = Year::parse("2024").unwrap();
        let path = writer.year_path(year);
        let at = "2024-01-01T00:00:00Z";
        // 3,000 papers in reverse order, each twice (the later row newer).
        let mut foreign = Vec::new();
        for i in (0..3000).rev() {
            foreign.push(row(&format!("2401.{i:05}"), 0.0, "2023-01-01T00:00:00Z"));
            foreign.push(row(&format!("2401.{i:05}"), i as f32, at));
        }
        year_file::write_rows(&path, foreign, 4).unwrap();
        assert!(!year_file::is_sorted_unique(&path, 4).unwrap());
        let _ = year_file::sort_probe::take();
        let outcome = writer.fold_year_within(year, None, 64).unwrap().unwrap();
        let peak = year_file::sort_probe::take().expect("the file was sorted before the merge");
        assert!(peak <= 64, "held {peak} rows of the old file at once");
        assert_eq!((outcome.rows, outcome.added, outcome.replaced), (3000, 0, 4));
        let rows = year_file::read_rows(&path, 4).unwrap();
        assert_eq!(rows.len(), 3000);
        assert!(rows.windows(2).all(|w| w[0].paper_id < w[1].paper_id));
        let value = |id: &str| rows.iter().find(|r| r.paper_id == id).unwrap().embedding[0];
        assert_eq!(value("2401.00001"), 3.0, "the checkpoint's vector wins");
        assert_eq!(value("2401.00003"), 2.0);
        assert_eq!(value("2401.00007"), 7.0, "the newer repeat of the old file wins");
        assert!(list(&writer.dir).unwrap().is_empty());
    }

    #[test]
    fn the_fold_bound_is_in_bytes_whatever_the_dimension() {
        for dimension in [4, 384, 1024, 4096] {
            let rows = fold_rows_in_memory(dimension);
            let bytes = rows * (dimension * 4 + ROW_OVERHEAD_BYTES);
            assert!(
                bytes <= FOLD_BYTES_IN_MEMORY,
                "dimension {dimension}: {bytes} bytes"
            );
            assert!(
                bytes > FOLD_BYTES_IN_MEMORY / 2,
                "dimension {dimension}: only {rows} rows"
            );
        }
        assert!(
            fold_rows_in_memory(384) > 250_000,
            "arXiv's largest year still folds in one pass"
        );
        assert!(fold_rows_in_memory(4096) < 30_000);
        assert_eq!(fold_rows_in_memory(usize::MAX), 1);
    }
}
