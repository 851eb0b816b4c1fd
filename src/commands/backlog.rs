//! `papersys backlog`: refresh the backlog of the chosen models.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{IssueReport, store_prefix, unique_issues};
use crate::config::{Config, ModelConfig};
use crate::error::Error;
use crate::metadata::{discover, origin_of};
use crate::plan::{PlanInputs, RefreshOptions, refresh};
use crate::store::ModelStore;
use crate::store::backlog::BACKLOG_FILE;

/// Waiting papers of one year.
#[derive(Clone, Debug, Serialize)]
pub struct YearBacklog {
    /// Four-digit year.
    pub year: String,
    /// Distinct papers in the year's metadata.
    pub papers: u64,
    /// Rows naming an already seen paper (the last one was used).
    pub duplicate_rows: u64,
    /// Waiting papers per reason (only reasons that occur).
    pub waiting: BTreeMap<String, u64>,
}

/// The refreshed backlog of one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelBacklog {
    /// Model alias.
    pub alias: String,
    /// The backlog file, relative to the data root; `None` when nothing
    /// waits (the file is then removed).
    pub backlog_file: Option<String>,
    /// Total waiting papers.
    pub waiting: u64,
    /// Waiting papers per reason over all years.
    pub waiting_by_reason: BTreeMap<String, u64>,
    /// Per-year detail.
    pub years: Vec<YearBacklog>,
    /// Damaged year files moved aside: (from, to, reason).
    pub quarantined: Vec<[String; 3]>,
}

/// Output of `papersys backlog`.
#[derive(Clone, Debug, Serialize)]
pub struct BacklogReport {
    /// One entry per model, in the order asked for.
    pub models: Vec<ModelBacklog>,
    /// Problems in the metadata (each reported once).
    pub input_issues: Vec<IssueReport>,
}

/// Refreshes the backlog of each model in turn (one writer lock at a time).
pub fn run(
    config: &Config,
    models: &[&ModelConfig],
    options: RefreshOptions,
) -> Result<BacklogReport, Error> {
    let discovery = discover(&config.metadata_dir, &config.data_root)?;
    let mut issues = discovery.issues.clone();
    let mut reports = Vec::new();
    for model in models {
        let store = ModelStore::new(config, model);
        let writer = store.open_writer()?;
        let prefix = store_prefix(model, writer.manifest()?.as_ref());
        tracing::info!("refreshing the backlog of `{}`", model.alias);
        let plan = refresh(
            &writer,
            PlanInputs {
                options,
                ..PlanInputs::new(&discovery, &prefix)
            },
        )?;
        for year in plan.years.iter().filter(|y| y.duplicates > 0) {
            tracing::warn!(
                "{} rows of {}'s metadata repeat a paper_id already seen in that year; the last row of each was used",
                year.duplicates,
                year.year
            );
        }
        issues.extend(plan.issues.iter().cloned());
        let mut by_reason = BTreeMap::new();
        let years = plan
            .years
            .iter()
            .map(|y| {
                for (reason, n) in &y.waiting {
                    *by_reason.entry(reason.as_str().to_string()).or_insert(0) += n;
                }
                YearBacklog {
                    year: y.year.to_string(),
                    papers: y.papers,
                    duplicate_rows: y.duplicates,
                    waiting: y
                        .waiting
                        .iter()
                        .map(|(r, n)| (r.as_str().to_string(), *n))
                        .collect(),
                }
            })
            .collect();
        reports.push(ModelBacklog {
            alias: model.alias.to_string(),
            backlog_file: Some(writer.dir.join(BACKLOG_FILE))
                .filter(|path| path.exists())
                .map(|path| origin_of(&path, &config.data_root)),
            waiting: plan.rows.len() as u64,
            waiting_by_reason: by_reason,
            years,
            quarantined: plan
                .quarantined
                .iter()
                .map(|q| {
                    [
                        q.from.display().to_string(),
                        q.to.display().to_string(),
                        q.reason.clone(),
                    ]
                })
                .collect(),
        });
    }
    Ok(BacklogReport {
        models: reports,
        input_issues: unique_issues(issues),
    })
}
