//! `papersys update`: the daily job in one process. Ingest (incremental
//! harvest), embed (every model), recommend; it stops at the first stage
//! that fails and says which, so a cron job's exit status and log tell the
//! whole story.

use std::time::Instant;

use serde::Serialize;

use crate::commands::{embed, ingest, recommend, select_models};
use crate::config::Config;
use crate::error::Error;
use crate::pipeline::ProgressMode;

/// The stages, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `papersys ingest` (incremental OAI-PMH harvest).
    Ingest,
    /// `papersys embed --all-models`.
    Embed,
    /// `papersys recommend`.
    Recommend,
}

impl Stage {
    /// The stage's command name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Embed => "embed",
            Stage::Recommend => "recommend",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a stage ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// It did its work.
    Ok,
    /// It failed; later stages did not run.
    Failed,
    /// An earlier stage failed.
    Skipped,
}

/// One stage's outcome.
#[derive(Debug, Serialize)]
pub struct StageReport {
    /// Which stage.
    pub stage: Stage,
    /// How it ended.
    pub status: StageStatus,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One line saying what it did, for people.
    pub summary: Option<String>,
    /// The stage's own report (what `papersys <stage> --json` prints), when it got that far.
    pub report: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What `papersys update` did.
#[derive(Debug, Serialize)]
pub struct UpdateReport {
    /// Every stage, in order (later ones `skipped` after a failure).
    pub stages: Vec<StageReport>,
    /// Every stage succeeded.
    pub ok: bool,
}

/// Options of `papersys update`.
#[derive(Clone, Copy, Debug)]
pub struct UpdateOptions {
    /// Progress display of the long stages.
    pub progress: ProgressMode,
}

/// An update run: the report (always), and the error of the stage that
/// failed, if one did (its exit code is the run's).
pub struct UpdateOutcome {
    /// What happened.
    pub report: UpdateReport,
    /// The failing stage's error, wrapped to name the stage.
    pub error: Option<Error>,
}

/// Runs ingest, embed and recommend in order, stopping at the first failure.
pub fn run(config: &Config, options: &UpdateOptions) -> UpdateOutcome {
    let mut stages = Vec::new();
    let mut error = None;
    for stage in [Stage::Ingest, Stage::Embed, Stage::Recommend] {
        if error.is_some() {
            stages.push(StageReport {
                stage,
                status: StageStatus::Skipped,
                seconds: 0.0,
                summary: None,
                report: None,
                error: None,
            });
            continue;
        }
        tracing::info!("update: {stage}");
        let started = Instant::now();
        let (done, failure) = match run_stage(stage, config, options) {
            Ok(done) => (Some((done.report, done.summary)), done.failure),
            Err(e) => (None, Some(e)),
        };
        let (report, summary) = done.unzip();
        stages.push(StageReport {
            stage,
            status: if failure.is_some() {
                StageStatus::Failed
            } else {
                StageStatus::Ok
            },
            seconds: started.elapsed().as_secs_f64(),
            summary,
            report,
            error: failure.as_ref().map(|e| e.to_string()),
        });
        error = failure.map(|e| Error::Stage {
            stage: stage.as_str(),
            source: Box::new(e),
        });
    }
    UpdateOutcome {
        report: UpdateReport {
            ok: error.is_none(),
            stages,
        },
        error,
    }
}

/// What a stage that ran to its end produced.
struct StageDone {
    report: serde_json::Value,
    summary: String,
    /// Set when the stage did its work but must count as failed (a harvest
    /// window given up on, papers that could not be embedded, an interrupt).
    failure: Option<Error>,
}

/// Runs one stage.
fn run_stage(stage: Stage, config: &Config, options: &UpdateOptions) -> Result<StageDone, Error> {
    match stage {
        Stage::Ingest => {
            let report = ingest::run(
                config,
                &ingest::IngestOptions {
                    from: None,
                    until: None,
                    categories: Vec::new(),
                    limit: None,
                    dry_run: false,
                    progress: options.progress,
                    snapshot: None,
                },
            )?;
            let (summary, failure) = match &report {
                ingest::IngestReport::Harvest(harvest) => (
                    format!(
                        "{} records harvested: {} new, {} updated, {} unchanged",
                        harvest.records, harvest.new, harvest.updated, harvest.unchanged
                    ),
                    harvest.failed.as_ref().map(|failed| {
                        Error::Run(format!(
                            "window {}..{} (set {}) failed: {}; every window before it is committed",
                            failed.from, failed.until, failed.set, failed.error
                        ))
                    }),
                ),
                ingest::IngestReport::Snapshot(snapshot) => (
                    format!("{} records imported from a snapshot", snapshot.counts.imported),
                    None,
                ),
            };
            Ok(StageDone {
                report: to_json(&report)?,
                summary,
                failure,
            })
        }
        Stage::Embed => {
            let models = select_models(config, &[], true, true)?;
            let report = embed::run(
                config,
                &models,
                &embed::EmbedOptions {
                    limit: None,
                    from_backlog: false,
                    dry_run: false,
                    years: None,
                    reembed: false,
                    origins: None,
                    progress: options.progress,
                },
            )?;
            let failure = if let Some(message) = report.interruption() {
                Some(Error::Interrupted(message))
            } else {
                (report.failed() > 0).then(|| {
                    Error::Run(format!(
                        "{} papers could not be embedded; they wait in the backlog as `embedding_failed` \
                         and the next run retries them",
                        report.failed()
                    ))
                })
            };
            let summary = report
                .models
                .iter()
                .map(|m| {
                    format!(
                        "{}: {} embedded, {} waiting",
                        m.alias, m.embedded, m.waiting_after
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            Ok(StageDone {
                report: to_json(&report)?,
                summary,
                failure,
            })
        }
        Stage::Recommend => {
            if crate::interrupt::requested() {
                return Err(Error::Interrupted("interrupted before recommend".to_string()));
            }
            let report = recommend::run(config, &recommend::RecommendOptions::default())?;
            let summary = format!(
                "{} of {} candidates recommended ({}){}",
                report.recommended.len(),
                report.counts.candidates,
                report.window.description,
                report
                    .run_dir
                    .as_deref()
                    .map(|dir| format!(", in {dir}"))
                    .unwrap_or_default()
            );
            Ok(StageDone {
                report: to_json(&report)?,
                summary,
                failure: None,
            })
        }
    }
}

fn to_json(report: &impl Serialize) -> Result<serde_json::Value, Error> {
    serde_json::to_value(report).map_err(|e| Error::Run(format!("cannot serialise a stage report: {e}")))
}
