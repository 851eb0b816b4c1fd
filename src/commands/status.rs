//! `papersys status`: what is in metadata, on disk and waiting, per model
//! and year. Read only: takes no lock and writes nothing, so it works while
//! an embed run is going on (and names that run's pid). What waits is
//! computed from the metadata and the files as they are now, exactly as
//! `embed --dry-run` computes it, not read from a backlog file that may be
//! older.

use std::collections::{BTreeMap, BTreeSet};

use papersys_backend_core::ModelIdentity;
use serde::Serialize;

use super::store_prefix;
use crate::config::{Config, ModelConfig};
use crate::error::Error;
use crate::metadata::{Year, discover, origin_of};
use crate::plan::{self, Access, PlanInputs, is_current};
use crate::store::backlog::{BACKLOG_FILE, MissingReason};
use crate::store::lock;
use crate::store::manifest::MANIFEST_FILE;
use crate::store::{ModelStore, year_file};

/// One year of one model.
#[derive(Clone, Debug, Serialize)]
pub struct YearStatus {
    /// Four-digit year.
    pub year: String,
    /// Distinct papers in the year's metadata.
    pub papers: u64,
    /// Vectors in the year file (0 when there is none).
    pub vectors: u64,
    /// Papers of the year a run would embed now.
    pub waiting: u64,
    /// The year file relative to the data root, if it exists.
    pub file: Option<String>,
    /// Its size in bytes.
    pub file_bytes: Option<u64>,
}

/// One model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelStatus {
    /// Model alias.
    pub alias: String,
    /// Configured model name.
    pub name: String,
    /// Configured dimension.
    pub dimension: usize,
    /// The model's directory, relative to the data root.
    pub directory: String,
    /// Per-year detail, ascending.
    pub years: Vec<YearStatus>,
    /// Sum over years.
    pub papers: u64,
    /// Sum over years.
    pub vectors: u64,
    /// Papers a run would embed now (what `embed --dry-run` plans).
    pub waiting: u64,
    /// Papers never embedded because title and abstract are empty.
    pub empty_text: u64,
    /// Pid of the papersys process writing to this model now, if any.
    pub writer_pid: Option<u32>,
    /// Size of the backlog file, when present.
    pub backlog_bytes: Option<u64>,
    /// Whether the backlog was computed from the current inputs; `false`
    /// means `papersys backlog` (or `embed`) would change it.
    pub backlog_current: bool,
    /// The model recorded in the manifest as having made the vectors.
    pub recorded_model: Option<ModelIdentity>,
    /// Problems found while looking (damaged files, a manifest out of step).
    pub problems: Vec<String>,
}

/// Output of `papersys status`.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// The data root.
    pub data_root: String,
    /// One entry per model.
    pub models: Vec<ModelStatus>,
}

/// Gathers the status of each model without writing anything.
pub fn run(config: &Config, models: &[&ModelConfig]) -> Result<StatusReport, Error> {
    let discovery = discover(&config.metadata_dir, &config.data_root)?;
    let mut reports = Vec::new();
    for model in models {
        let store = ModelStore::new(config, model);
        let mut problems = Vec::new();
        let manifest = match store.manifest() {
            Ok(manifest) => manifest,
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let prefix = store_prefix(model, manifest.as_ref());
        let plan = match plan::compute(Access::ReadOnly(&store), PlanInputs::new(&discovery, &prefix)) {
            Ok((plan, _)) => plan,
            Err(e) => {
                problems.push(e.to_string());
                plan::BacklogPlan::default()
            }
        };
        let papers: BTreeMap<Year, u64> = plan.years.iter().map(|y| (y.year, y.papers)).collect();
        let mut vectors: BTreeMap<Year, (u64, String, u64)> = BTreeMap::new();
        for (year, path) in store.year_files()? {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match year_file::row_count(&path) {
                Ok(rows) => {
                    vectors.insert(year, (rows, origin_of(&path, &config.data_root), bytes));
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let mut waiting: BTreeMap<Year, u64> = BTreeMap::new();
        for row in plan.rows.iter().filter(|r| r.reason.is_embeddable()) {
            *waiting.entry(row.year).or_insert(0) += 1;
        }
        let empty_text = plan
            .rows
            .iter()
            .filter(|r| r.reason == MissingReason::EmptyText)
            .count() as u64;
        if let Some(manifest) = &manifest {
            let on_disk: BTreeMap<String, u64> = vectors.iter().map(|(y, v)| (y.to_string(), v.0)).collect();
            if manifest.years != on_disk {
                problems.push(format!(
                    "{} does not match the year files on disk; the next `papersys backlog` or `embed` rewrites it",
                    MANIFEST_FILE
                ));
            }
        }
        let years: BTreeSet<Year> = papers
            .keys()
            .chain(vectors.keys())
            .chain(waiting.keys())
            .copied()
            .collect();
        let years: Vec<YearStatus> = years
            .into_iter()
            .map(|year| {
                let file = vectors.get(&year);
                YearStatus {
                    year: year.to_string(),
                    papers: papers.get(&year).copied().unwrap_or(0),
                    vectors: file.map_or(0, |f| f.0),
                    waiting: waiting.get(&year).copied().unwrap_or(0),
                    file: file.map(|f| f.1.clone()),
                    file_bytes: file.map(|f| f.2),
                }
            })
            .collect();
        let backlog_path = store.dir.join(BACKLOG_FILE);
        reports.push(ModelStatus {
            alias: model.alias.to_string(),
            name: model.name.clone(),
            dimension: model.dimension,
            directory: origin_of(&store.dir, &config.data_root),
            papers: years.iter().map(|y| y.papers).sum(),
            vectors: years.iter().map(|y| y.vectors).sum(),
            waiting: waiting.values().sum(),
            empty_text,
            writer_pid: lock::holder(&store.dir),
            backlog_bytes: std::fs::metadata(&backlog_path).ok().map(|m| m.len()),
            backlog_current: is_current(&store, &discovery),
            recorded_model: manifest.and_then(|m| m.model_identity),
            years,
            problems,
        });
    }
    Ok(StatusReport {
        data_root: config.data_root.display().to_string(),
        models: reports,
    })
}
