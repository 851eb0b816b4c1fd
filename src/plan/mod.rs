//! What is missing: metadata and year files in, backlog rows out.
//!
//! A refresh works year by year (years in parallel): the year's metadata
//! rows (from the metadata index, or a fresh read of the CSV), de-duplicated
//! with the last row winning, are compared with the ids and text hashes of
//! the year's Parquet file. A paper waits when its year has no file
//! (`missing_embedding_file`), the file lacks it (`missing_embedding`), the
//! stored text hash differs from its current text (`stale_embedding`), its
//! text is empty (`empty_text`), or the last run failed on it
//! (`embedding_failed`). A year whose inputs did not change since the last
//! refresh reuses that refresh's rows (see [`crate::store::cache`]).

//!
//! The pieces: [`index`] (a year's metadata: ids and text hashes),
//! [`diff`] (metadata against the year file), [`reuse`] (when a previous
//! refresh's result still holds), [`counts`] (read-only questions for
//! `status` and `--reembed`); this module runs them per year and writes
//! the backlog.

mod counts;
mod diff;
mod index;
mod reuse;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use rayon::prelude::*;

pub use counts::{all_papers, metadata_counts};
pub use index::index_file;
pub use reuse::{is_current, metadata_stamps};

use crate::metadata::{Discovery, InputIssue, MetadataFile, Year};
use crate::store::backlog::{self, BacklogRow, MissingReason};
use crate::store::cache::{FileStamp, RefreshState, YearInputs, YearIssue, YearSummary, prefix_hash};
use crate::store::manifest::now_iso;
use crate::store::year_file::{self, YearFileError, YearIds};
use crate::store::{ModelStore, StoreError, StoreWriter, checkpoint};
use diff::{count_reasons, diff_year};
use index::year_metadata;

/// Input problems of a year kept in the refresh state, to report them again
/// when the year is not read again.
const MAX_REMEMBERED_ISSUES: usize = 1000;

/// Options of a refresh.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefreshOptions {
    /// Ignore the caches and read everything again.
    pub no_cache: bool,
}

/// Per-year outcome of a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YearReport {
    /// The year.
    pub year: Year,
    /// Distinct papers in the year's metadata.
    pub papers: u64,
    /// Rows of the year's CSVs naming a paper already seen (last row kept).
    pub duplicates: u64,
    /// Waiting papers per reason.
    pub waiting: BTreeMap<MissingReason, u64>,
    /// Whether the result was reused from the previous refresh.
    pub cached: bool,
}

impl YearReport {
    /// Total waiting papers.
    pub fn waiting_total(&self) -> u64 {
        self.waiting.values().sum()
    }
}

/// A damaged year file moved aside during the refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it was.
    pub from: PathBuf,
    /// Where it is now.
    pub to: PathBuf,
    /// Why.
    pub reason: String,
}

/// The result of refreshing one model's backlog.
#[derive(Clone, Debug, Default)]
pub struct BacklogPlan {
    /// Every waiting paper, in the backlog's canonical order.
    pub rows: Vec<BacklogRow>,
    /// One report per year (metadata years and year-file years), ascending.
    pub years: Vec<YearReport>,
    /// Problems found in the metadata.
    pub issues: Vec<InputIssue>,
    /// Year files moved aside because they could not be read.
    pub quarantined: Vec<Quarantined>,
}

struct YearOutcome {
    rows: Vec<BacklogRow>,
    report: YearReport,
    summary: YearSummary,
    issues: Vec<InputIssue>,
    quarantined: Option<Quarantined>,
}

/// How a plan may touch the store.
#[derive(Clone, Copy)]
pub enum Access<'a> {
    /// Read only (`--dry-run`): nothing is written, damaged files are only
    /// reported, caches are used but not saved.
    ReadOnly(&'a ModelStore),
    /// The writer: damaged year files are moved aside, caches saved.
    Write(&'a StoreWriter),
}

impl Access<'_> {
    fn store(&self) -> &ModelStore {
        match self {
            Access::ReadOnly(store) => store,
            Access::Write(writer) => writer,
        }
    }
}

/// The inputs of a plan besides the store.
#[derive(Clone, Copy)]
pub struct PlanInputs<'a> {
    /// The metadata files.
    pub discovery: &'a Discovery,
    /// Document prefix the stored text hashes include.
    pub prefix: &'a str,
    /// Refresh options.
    pub options: RefreshOptions,
    /// Papers the current run failed on, reported as `embedding_failed`
    /// (besides those the previous backlog already listed so).
    pub failed: &'a BTreeSet<String>,
}

/// No failures: the default of [`PlanInputs::failed`].
static NO_FAILURES: BTreeSet<String> = BTreeSet::new();

impl<'a> PlanInputs<'a> {
    /// Inputs with default options and no failures of the current run.
    pub fn new(discovery: &'a Discovery, prefix: &'a str) -> Self {
        PlanInputs {
            discovery,
            prefix,
            options: RefreshOptions::default(),
            failed: &NO_FAILURES,
        }
    }
}

/// Computes every waiting paper without writing the backlog. With
/// [`Access::Write`], damaged year files are moved aside and the metadata
/// index is saved; with [`Access::ReadOnly`] nothing on disk changes.
/// Vectors committed in checkpoints but not yet folded count as
/// present.
pub fn compute(
    access: Access<'_>,
    inputs: PlanInputs<'_>,
) -> Result<(BacklogPlan, RefreshState), StoreError> {
    let store = access.store();
    let prefix_hash = prefix_hash(inputs.prefix);
    let old_state = if inputs.options.no_cache {
        None
    } else {
        RefreshState::load(&store.dir)
    };
    let old_backlog = match backlog::read(&store.dir) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("{e}; it will be rebuilt");
            Vec::new()
        }
    };
    let backlog_path = store.dir.join(backlog::BACKLOG_FILE);
    let checkpoints = checkpoint::list(&store.dir)?;
    let trusted = old_state.as_ref().filter(|s| {
        s.prefix_hash == prefix_hash
            && s.dimension == store.dimension
            && s.backlog == FileStamp::of(&backlog_path)
            && inputs.failed.is_empty()
    });
    let mut failed: BTreeSet<&str> = old_backlog
        .iter()
        .filter(|r| r.reason == MissingReason::EmbeddingFailed)
        .map(|r| r.paper_id.as_str())
        .collect();
    failed.extend(inputs.failed.iter().map(String::as_str));
    let mut old_rows_by_year: HashMap<Year, Vec<BacklogRow>> = HashMap::new();
    for row in &old_backlog {
        old_rows_by_year.entry(row.year).or_default().push(row.clone());
    }

    let stored_years: BTreeMap<Year, PathBuf> = store.year_files()?.into_iter().collect();
    let years: BTreeSet<Year> = inputs
        .discovery
        .years()
        .into_iter()
        .chain(stored_years.keys().copied())
        .collect();

    let outcomes: Vec<Result<YearOutcome, StoreError>> = years
        .par_iter()
        .map(|&year| {
            let files: Vec<&MetadataFile> = inputs.discovery.files_of(year).collect();
            let inputs_now = YearInputs {
                metadata: metadata_stamps(&files),
                year_file: FileStamp::of(&store.year_path(year)),
            };
            let key = year.to_string();
            let cached = trusted
                .and_then(|s| s.years.get(&key))
                .filter(|s| s.inputs == inputs_now && !checkpoints.contains_key(&year));
            if let Some(summary) = cached {
                let rows = old_rows_by_year.get(&year).cloned().unwrap_or_default();
                return Ok(YearOutcome {
                    report: YearReport {
                        year,
                        papers: summary.papers,
                        duplicates: summary.rows.saturating_sub(summary.papers),
                        waiting: count_reasons(&rows),
                        cached: true,
                    },
                    summary: summary.clone(),
                    rows,
                    issues: summary
                        .issues
                        .iter()
                        .map(|i| InputIssue {
                            path: i.path.clone(),
                            line: i.line,
                            message: i.message.clone(),
                        })
                        .collect(),
                    quarantined: None,
                });
            }
            compute_year(access, year, &files, inputs_now, inputs.prefix, &failed)
        })
        .collect();

    let mut plan = BacklogPlan::default();
    let mut state = RefreshState::new(prefix_hash, store.dimension);
    for outcome in outcomes {
        let outcome = outcome?;
        plan.rows.extend(outcome.rows);
        plan.issues.extend(outcome.issues);
        plan.quarantined.extend(outcome.quarantined);
        state
            .years
            .insert(outcome.report.year.to_string(), outcome.summary);
        plan.years.push(outcome.report);
    }
    backlog::sort_rows(&mut plan.rows);
    Ok((plan, state))
}

/// Refreshes the backlog of the model behind `writer`: computes every
/// waiting paper, writes `backlog.parquet` (or removes it), keeps the
/// manifest true to the files, and returns the plan. Damaged year files are
/// moved aside (their papers wait again); a year file of the wrong
/// dimension stops the refresh with an error naming it.
pub fn refresh(writer: &StoreWriter, inputs: PlanInputs<'_>) -> Result<BacklogPlan, StoreError> {
    let (plan, state) = compute(Access::Write(writer), inputs)?;
    writer.sync_manifest(None)?;
    write_backlog(writer, &plan.rows, state)?;
    Ok(plan)
}

/// Writes the backlog and the refresh state that describes it.
pub fn write_backlog(
    writer: &StoreWriter,
    rows: &[BacklogRow],
    mut state: RefreshState,
) -> Result<(), StoreError> {
    backlog::write(&writer.dir, writer.alias.as_str(), rows, &now_iso())?;
    state.backlog = FileStamp::of(&writer.dir.join(backlog::BACKLOG_FILE));
    if let Err(e) = state.save(&writer.dir) {
        tracing::debug!("could not save the refresh state: {e}");
    }
    Ok(())
}

fn compute_year(
    access: Access<'_>,
    year: Year,
    files: &[&MetadataFile],
    mut inputs: YearInputs,
    prefix: &str,
    failed: &BTreeSet<&str>,
) -> Result<YearOutcome, StoreError> {
    let store = access.store();
    let save = matches!(access, Access::Write(_));
    let (papers, rows_read, duplicates, mut issues) =
        year_metadata(&store.embeddings_dir, files, prefix, save);
    let year_path = store.year_path(year);
    let mut quarantined = None;
    let mut stored = if inputs.year_file.is_some() {
        match year_file::read_ids(&year_path, store.dimension) {
            Ok(ids) => Some(ids),
            Err(YearFileError::Damaged { message, .. }) => {
                match access {
                    Access::Write(writer) => {
                        let to = writer.set_aside_damaged_year(&year_path, &message)?;
                        quarantined = Some(Quarantined {
                            from: year_path.clone(),
                            to,
                            reason: message,
                        });
                        inputs.year_file = None;
                    }
                    Access::ReadOnly(_) => issues.push(InputIssue {
                        path: year_path.clone(),
                        line: None,
                        message: format!("cannot be read ({message}); a real run will move it aside"),
                    }),
                }
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let committed = checkpoint::ids(&store.dir, year, store.dimension)?;
    if !committed.is_empty() {
        let ids = stored.get_or_insert_with(YearIds::default);
        for id in committed {
            if let Err(at) = ids.ids.binary_search(&id) {
                ids.ids.insert(at, id);
                ids.hashes.insert(at, None);
            }
        }
    }
    let rows = diff_year(year, &papers, files, stored.as_ref(), failed);
    let waiting = count_reasons(&rows);
    let summary = YearSummary {
        inputs,
        papers: papers.len() as u64,
        rows: rows_read,
        waiting: waiting
            .iter()
            .map(|(r, n)| (r.as_str().to_string(), *n))
            .collect(),
        // Bounded: a file of garbage must not make the state huge.
        issues: issues
            .iter()
            .take(MAX_REMEMBERED_ISSUES)
            .map(|i| YearIssue {
                path: i.path.clone(),
                line: i.line,
                message: i.message.clone(),
            })
            .collect(),
    };
    Ok(YearOutcome {
        report: YearReport {
            year,
            papers: papers.len() as u64,
            duplicates,
            waiting,
            cached: false,
        },
        summary,
        rows,
        issues,
        quarantined,
    })
}
