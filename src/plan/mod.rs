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
mod duplicates;
mod index;
mod relocate;
mod reuse;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use rayon::prelude::*;

pub use counts::{all_papers, metadata_counts};
pub(crate) use duplicates::Claim;
pub use index::index_file;
pub use reuse::{is_current, metadata_stamps};

use crate::metadata::{Discovery, InputIssue, MetadataFile, Year};
use crate::store::backlog::{self, BacklogRow, MissingReason};
use crate::store::cache::{
    FileStamp, IdHashes, RefreshState, YearInputs, YearIssue, YearSummary, prefix_hash,
};
use crate::store::manifest::now_iso;
use crate::store::year_file::{self, YearFileError, YearIds};
use crate::store::{ModelStore, StoreError, StoreWriter, checkpoint};
use diff::{count_reasons, diff_year};
use duplicates::YearMetadata;

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
    /// Papers of the year's CSVs that belong to another year (their newest
    /// row is there); not counted in `papers`.
    pub elsewhere: u64,
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
    /// Papers with metadata rows in several years (each belongs to one).
    pub cross_year: u64,
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
    let save = matches!(access, Access::Write(_));

    // Which papers belong to another year than the one of a CSV holding
    // them: the previous refresh's answer while no metadata file changed,
    // else that answer updated for the years whose files changed (see
    // `duplicates::resolve_changed`). It depends on the metadata only.
    let all_metadata = metadata_stamps(&inputs.discovery.files.iter().collect::<Vec<_>>());
    let year_stamps: duplicates::YearStamps = inputs
        .discovery
        .years()
        .into_iter()
        .map(|year| {
            (
                year,
                metadata_stamps(&inputs.discovery.files_of(year).collect::<Vec<_>>()),
            )
        })
        .collect();
    let inputs_of = |year: Year| YearInputs {
        metadata: year_stamps.get(&year).cloned().unwrap_or_default(),
        year_file: FileStamp::of(&store.year_path(year)),
    };
    let unchanged = |year: Year| {
        trusted
            .and_then(|s| s.years.get(&year.to_string()))
            .is_some_and(|s| s.inputs == inputs_of(year) && !checkpoints.contains_key(&year))
    };
    let (mut loaded, cross_year) = match old_state.as_ref().filter(|s| s.metadata == all_metadata) {
        Some(state) => (BTreeMap::new(), state.cross_year.clone()),
        None => {
            let index_dir = &store.embeddings_dir;
            let previous = old_state.as_ref().map(|s| duplicates::Previous {
                stamps: &s.metadata_years,
                cross: &s.cross_year,
            });
            let resolution = duplicates::resolve_changed(
                inputs.discovery,
                &year_stamps,
                previous,
                |year, files| IdHashes::load(index_dir, &year.to_string(), files),
                |year| YearMetadata::load(index_dir, inputs.discovery, year, inputs.prefix, save),
            );
            for (year, hashes) in resolution.hashes.iter().filter(|_| save) {
                if let Err(e) = hashes.save(index_dir, &year.to_string()) {
                    tracing::debug!("could not save the id hashes of {year}: {e}");
                }
            }
            (resolution.loaded, resolution.cross)
        }
    };
    // Vectors in the file of a year their paper does not belong to: the
    // writer moves them now (before any year is diffed); a read-only plan
    // counts them where they would go.
    let involved = || {
        cross_year
            .iter()
            .flat_map(|c| std::iter::once(&c.owner).chain(c.others.iter().map(|(y, _)| y)))
            .filter_map(|y| Year::parse(y))
    };
    let relocations = if involved().all(unchanged) {
        Vec::new()
    } else {
        relocate::find(store, &cross_year)?
    };
    let mut moved_in = BTreeMap::new();
    match access {
        Access::Write(writer) if !relocations.is_empty() => relocate::apply(writer, &relocations)?,
        _ => moved_in = relocate::moved_in(&relocations),
    }
    let elsewhere = duplicates::elsewhere(&cross_year);
    let no_ids: Vec<&str> = Vec::new();

    let jobs: Vec<(Year, Option<YearMetadata>)> = years.iter().map(|&y| (y, loaded.remove(&y))).collect();
    let outcomes: Vec<Result<YearOutcome, StoreError>> = jobs
        .into_par_iter()
        .map(|(year, meta)| {
            let files: Vec<&MetadataFile> = inputs.discovery.files_of(year).collect();
            let inputs_now = inputs_of(year);
            let gone = elsewhere.get(&year).unwrap_or(&no_ids);
            let gone_hash = duplicates::fingerprint(gone);
            let key = year.to_string();
            let cached = trusted.and_then(|s| s.years.get(&key)).filter(|s| {
                s.inputs == inputs_now
                    && !checkpoints.contains_key(&year)
                    && s.elsewhere == gone.len() as u64
                    && s.elsewhere_hash == gone_hash
                    && !moved_in.contains_key(&year)
            });
            if let Some(summary) = cached {
                let rows = old_rows_by_year.get(&year).cloned().unwrap_or_default();
                return Ok(YearOutcome {
                    report: YearReport {
                        year,
                        papers: summary.papers,
                        duplicates: summary
                            .rows
                            .saturating_sub(summary.papers)
                            .saturating_sub(summary.elsewhere),
                        elsewhere: summary.elsewhere,
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
            let mut meta = meta.unwrap_or_else(|| {
                YearMetadata::load(&store.embeddings_dir, inputs.discovery, year, inputs.prefix, save)
            });
            if !gone.is_empty() {
                meta.papers.retain(|p| gone.binary_search(&&*p.paper_id).is_err());
            }
            let context = YearContext {
                files: &files,
                failed: &failed,
                elsewhere: gone.len() as u64,
                elsewhere_hash: gone_hash,
                moved_in: moved_in.get(&year).map_or(&[][..], Vec::as_slice),
            };
            compute_year(access, year, meta, inputs_now, &context)
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
    plan.issues
        .extend(duplicates::warnings(inputs.discovery, &cross_year));
    plan.cross_year = cross_year.len() as u64;
    state.metadata = all_metadata;
    state.cross_year = cross_year;
    state.metadata_years = year_stamps
        .into_iter()
        .map(|(year, files)| (year.to_string(), files))
        .collect();
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

/// What a year's computation needs besides its metadata.
struct YearContext<'c> {
    files: &'c [&'c MetadataFile],
    failed: &'c BTreeSet<&'c str>,
    elsewhere: u64,
    elsewhere_hash: u64,
    /// Vectors a writer would move into this year's file (read-only plans).
    moved_in: &'c [(String, Option<crate::text::TextHash>)],
}

fn compute_year(
    access: Access<'_>,
    year: Year,
    meta: YearMetadata,
    mut inputs: YearInputs,
    context: &YearContext<'_>,
) -> Result<YearOutcome, StoreError> {
    let store = access.store();
    let YearMetadata {
        papers,
        rows: rows_read,
        duplicates,
        mut issues,
        ..
    } = meta;
    let files = context.files;
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
                    Access::ReadOnly(_) => issues.push(InputIssue::file(
                        &year_path,
                        format!("cannot be read ({message}); a real run will move it aside"),
                    )),
                }
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let committed = checkpoint::ids(&store.dir, year, store.dimension)?;
    let extra = committed
        .into_iter()
        .map(|id| (id, None))
        .chain(context.moved_in.iter().cloned());
    for (id, hash) in extra {
        let ids = stored.get_or_insert_with(YearIds::default);
        if let Err(at) = ids.ids.binary_search(&id) {
            ids.ids.insert(at, id);
            ids.hashes.insert(at, hash);
        }
    }
    let rows = diff_year(year, &papers, files, stored.as_ref(), context.failed);
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
        elsewhere: context.elsewhere,
        elsewhere_hash: context.elsewhere_hash,
    };
    Ok(YearOutcome {
        report: YearReport {
            year,
            papers: papers.len() as u64,
            duplicates,
            elsewhere: context.elsewhere,
            waiting,
            cached: false,
        },
        summary,
        rows,
        issues,
        quarantined,
    })
}
