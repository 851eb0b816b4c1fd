//! `papersys embed`: give every paper that lacks a usable vector one.
//!
//! [`replacement`] handles `--reembed` under a changed model (filling the
//! new vectors and promoting them); this module selects the work and runs
//! the pipeline for both.

mod replacement;

use std::collections::{BTreeMap, BTreeSet};

use papersys_backend_core::ModelIdentity;
use serde::Serialize;

use super::{IssueReport, store_prefix, unique_issues};
use crate::backend;
use crate::config::{BacklogPriority, Config, ModelConfig};
use crate::error::Error;
use crate::metadata::{Discovery, Year, discover, origin_of};
use crate::pipeline::{self, ProgressMode, RunOptions, WorkItem};
use crate::plan::{self, Access, PlanInputs};
use crate::store::backlog::{self, BACKLOG_FILE, BacklogRow, MissingReason};
use crate::store::cache::RefreshState;
use crate::store::manifest::MANIFEST_FILE;
use crate::store::year_file::YearFileError;
use crate::store::{ModelStore, StoreError, StoreWriter, checkpoint};
pub use replacement::Replacement;
use replacement::replace_model;

/// What to embed and how.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// At most this many papers per model, chosen by `backlog_priority`.
    pub limit: Option<usize>,
    /// Take the work from `backlog.parquet` (refreshed first when stale).
    pub from_backlog: bool,
    /// Plan only: load no model, write nothing.
    pub dry_run: bool,
    /// Only these years.
    pub years: Option<BTreeSet<Year>>,
    /// Give every selected paper a fresh vector.
    pub reembed: bool,
    /// Only papers from these metadata files (origins relative to the data
    /// root); the sample runner uses it to embed from one CSV.
    pub origins: Option<BTreeSet<String>>,
    /// How progress is shown.
    pub progress: ProgressMode,
}

/// Papers of one year in a run (or a plan).
#[derive(Clone, Debug, Default, Serialize)]
pub struct YearRun {
    /// Four-digit year.
    pub year: String,
    /// Papers chosen for this run, by reason.
    pub planned: BTreeMap<String, u64>,
    /// Papers given a vector.
    pub embedded: u64,
    /// Papers the backend failed on.
    pub failed: u64,
    /// Papers whose CSV row vanished during the run.
    pub not_found: u64,
}

/// One model's run.
#[derive(Clone, Debug, Serialize)]
pub struct ModelRun {
    /// Model alias.
    pub alias: String,
    /// Whether this was a plan only.
    pub dry_run: bool,
    /// Papers chosen.
    pub planned: u64,
    /// Papers given a vector.
    pub embedded: u64,
    /// Papers the backend failed on.
    pub failed: u64,
    /// Papers whose CSV row vanished during the run.
    pub not_found: u64,
    /// Papers with an empty text (never embedded).
    pub empty_text: u64,
    /// Papers still waiting after the run (beyond `--limit`, failed, ...).
    pub waiting_after: u64,
    /// Per year.
    pub years: Vec<YearRun>,
    /// Files written (or, for a plan, that would be), relative to the data root.
    pub files: Vec<String>,
    /// Seconds the embedding took.
    pub elapsed_s: f64,
    /// Papers per second over the run.
    pub papers_per_s: f64,
    /// The model that made the vectors.
    pub model: Option<ModelIdentity>,
    /// The first backend errors, when some batches failed.
    pub errors: Vec<String>,
    /// Set when the run replaces the vectors of another model.
    pub replacement: Option<Replacement>,
    /// Stopped early by Ctrl-C or SIGTERM; what was embedded is saved.
    pub interrupted: bool,
}

/// Output of `papersys embed`.
#[derive(Clone, Debug, Serialize)]
pub struct EmbedReport {
    /// One entry per model, in the order run.
    pub models: Vec<ModelRun>,
    /// Problems in the metadata.
    pub input_issues: Vec<IssueReport>,
}

impl EmbedReport {
    /// Papers that failed over all models.
    pub fn failed(&self) -> u64 {
        self.models.iter().map(|m| m.failed).sum()
    }

    /// When a signal stopped the run: what to tell the user (vectors saved,
    /// papers still waiting).
    pub fn interruption(&self) -> Option<String> {
        if !self.models.iter().any(|m| m.interrupted) {
            return None;
        }
        let saved: u64 = self.models.iter().map(|m| m.embedded).sum();
        let waiting: u64 = self.models.iter().map(|m| m.waiting_after).sum();
        Some(format!(
            "interrupted: {saved} vectors saved, {waiting} still waiting; run it again to continue"
        ))
    }
}

/// Parses `--years`: `2023,2024`, `2019-2024`, or a mix.
pub fn parse_years(text: &str) -> Result<BTreeSet<Year>, String> {
    let mut years = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--years: {part:?} is not a year (YYYY) or a range (YYYY-YYYY)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    Year::parse(a.trim()).ok_or_else(bad)?,
                    Year::parse(b.trim()).ok_or_else(bad)?,
                );
                if a > b {
                    return Err(format!("--years: range {part} runs backwards"));
                }
                for y in a.get()..=b.get() {
                    years.extend(Year::parse(&format!("{y:04}")));
                }
            }
            None => {
                years.insert(Year::parse(part).ok_or_else(bad)?);
            }
        }
    }
    if years.is_empty() {
        return Err("--years needs at least one year".into());
    }
    Ok(years)
}

/// Orders work by `priority`: newest year and newest ids first, or the
/// reverse.
fn prioritise(work: &mut [WorkItem], priority: BacklogPriority) {
    work.sort_by(|a, b| (a.year, &a.paper_id).cmp(&(b.year, &b.paper_id)));
    if priority == BacklogPriority::RecentFirst {
        work.reverse();
    }
}

/// Runs (or plans) each model in turn.
pub fn run(config: &Config, models: &[&ModelConfig], options: &EmbedOptions) -> Result<EmbedReport, Error> {
    if !config.enabled {
        return Err(Error::Usage(format!(
            "embedding is disabled in {} ([embedding] enabled = false); set it to true to embed",
            config.path.display()
        )));
    }
    let discovery = discover(&config.metadata_dir, &config.data_root)?;
    if let Some(asked) = &options.years {
        warn_years_without_metadata(asked, &discovery);
    }
    let mut issues = discovery.issues.clone();
    let mut reports = Vec::new();
    for model in models {
        if crate::interrupt::requested() {
            break;
        }
        let store = ModelStore::new(config, model);
        let report = if options.dry_run {
            plan_model(config, model, &store, &discovery, options, &mut issues)?
        } else {
            let writer = store.open_writer()?;
            run_model(config, model, &writer, &discovery, options, &mut issues)?
        };
        reports.push(report);
    }
    Ok(EmbedReport {
        models: reports,
        input_issues: unique_issues(issues),
    })
}

/// Says which of the `--years` asked for no metadata file has, so that
/// "0 papers" is not mistaken for "all done".
fn warn_years_without_metadata(asked: &BTreeSet<Year>, discovery: &Discovery) {
    let present = discovery.years();
    let absent: Vec<String> = asked
        .iter()
        .filter(|y| !present.contains(y))
        .map(ToString::to_string)
        .collect();
    if absent.is_empty() {
        return;
    }
    let have = match (present.first(), present.last()) {
        (Some(first), Some(last)) if first == last => format!("only {first}"),
        (Some(first), Some(last)) => format!("{} years from {first} to {last}", present.len()),
        _ => "no year at all".to_string(),
    };
    let (noun, verb) = if absent.len() == 1 {
        ("year", "has")
    } else {
        ("years", "have")
    };
    if absent.len() == asked.len() {
        tracing::warn!(
            "--years: no metadata has {noun} {}; nothing to embed there (the metadata has {have})",
            absent.join(", ")
        );
    } else {
        tracing::warn!(
            "--years: {noun} {} {verb} no metadata (the metadata has {have})",
            absent.join(", ")
        );
    }
}

/// The work of one model and the plan's waiting rows.
struct Work {
    items: Vec<WorkItem>,
    years_with_repeats: BTreeSet<Year>,
    empty_text: u64,
}

fn select_work(
    model: &ModelConfig,
    access: Access<'_>,
    config: &Config,
    discovery: &Discovery,
    options: &EmbedOptions,
    issues: &mut Vec<crate::metadata::InputIssue>,
) -> Result<Work, Error> {
    let store = match access {
        Access::ReadOnly(store) => store,
        Access::Write(writer) => writer,
    };
    let manifest = store.manifest().ok().flatten();
    let prefix = store_prefix(model, manifest.as_ref());
    let inputs = PlanInputs::new(discovery, &prefix);
    let rows: Vec<BacklogRow> = if options.from_backlog && plan::is_current(store, discovery) {
        backlog::read(&store.dir).map_err(crate::store::StoreError::from)?
    } else {
        let plan = match access {
            Access::Write(writer) => plan::refresh(writer, inputs)?,
            Access::ReadOnly(_) => plan::compute(access, inputs)?.0,
        };
        issues.extend(plan.issues.iter().cloned());
        plan.rows
    };
    let in_scope = |year: &Year| options.years.as_ref().is_none_or(|set| set.contains(year));
    let empty_text = rows
        .iter()
        .filter(|r| r.reason == MissingReason::EmptyText && in_scope(&r.year))
        .count() as u64;
    let mut items: Vec<WorkItem> = if options.reembed {
        let save = matches!(access, Access::Write(_));
        plan::all_papers(store, discovery, &prefix, options.years.as_ref(), save)
            .into_iter()
            .map(|(paper_id, origin, year)| WorkItem {
                paper_id,
                year,
                origin,
                reason: MissingReason::StaleEmbedding,
            })
            .collect()
    } else {
        rows.into_iter()
            .filter(|r| r.reason.is_embeddable() && in_scope(&r.year))
            .map(|r| WorkItem {
                paper_id: r.paper_id,
                year: r.year,
                origin: r.origin,
                reason: r.reason,
            })
            .collect()
    };
    if let Some(origins) = &options.origins {
        items.retain(|item| origins.contains(&item.origin));
    }
    prioritise(&mut items, config.backlog_priority);
    if let Some(limit) = options.limit {
        items.truncate(limit);
    }
    let years_with_repeats = RefreshState::load(&store.dir)
        .map(|state| {
            state
                .years
                .iter()
                .filter(|(_, s)| s.rows > s.papers.saturating_add(s.elsewhere))
                .filter_map(|(y, _)| Year::parse(y))
                .collect()
        })
        // Without the state, assume repeats: slower, never wrong.
        .unwrap_or_else(|| items.iter().map(|i| i.year).collect());
    Ok(Work {
        items,
        years_with_repeats,
        empty_text,
    })
}

fn planned_years(items: &[WorkItem], reembed: bool) -> BTreeMap<Year, YearRun> {
    let mut years: BTreeMap<Year, YearRun> = BTreeMap::new();
    for item in items {
        let year = years.entry(item.year).or_insert_with(|| YearRun {
            year: item.year.to_string(),
            ..YearRun::default()
        });
        let reason = if reembed { "reembed" } else { item.reason.as_str() };
        *year.planned.entry(reason.to_string()).or_insert(0) += 1;
    }
    years
}

/// The files a run changes (a plan: would change). After a run only those
/// that exist are named: a backlog removed because nothing waits, or a year
/// file an interrupted run left in checkpoints, is not.
fn files_touched(
    config: &Config,
    store: &ModelStore,
    years: &BTreeMap<Year, YearRun>,
    existing_only: bool,
) -> Vec<String> {
    years
        .keys()
        .map(|y| store.year_path(*y))
        .chain([store.dir.join(MANIFEST_FILE), store.dir.join(BACKLOG_FILE)])
        .filter(|path| !existing_only || path.exists())
        .map(|path| origin_of(&path, &config.data_root))
        .collect()
}

fn plan_model(
    config: &Config,
    model: &ModelConfig,
    store: &ModelStore,
    discovery: &Discovery,
    options: &EmbedOptions,
    issues: &mut Vec<crate::metadata::InputIssue>,
) -> Result<ModelRun, Error> {
    let work = select_work(model, Access::ReadOnly(store), config, discovery, options, issues)?;
    let years = planned_years(&work.items, options.reembed);
    let files = if work.items.is_empty() {
        Vec::new()
    } else {
        files_touched(config, store, &years, false)
    };
    let recorded = store.recorded_identity().ok().flatten();
    if let Some(recorded) = &recorded
        && (recorded.name != model.name || recorded.dimension != model.dimension)
    {
        tracing::warn!(
            "{}: the config names {} ({} dimensions) but the vectors on disk were made by {} ({} dimensions); \
             a real run will refuse unless it is --reembed over all years",
            model.alias,
            model.name,
            model.dimension,
            recorded.name,
            recorded.dimension
        );
    }
    Ok(ModelRun {
        alias: model.alias.to_string(),
        dry_run: true,
        planned: work.items.len() as u64,
        embedded: 0,
        failed: 0,
        not_found: 0,
        empty_text: work.empty_text,
        waiting_after: 0,
        years: years.into_values().collect(),
        files,
        elapsed_s: 0.0,
        papers_per_s: 0.0,
        model: recorded,
        errors: Vec::new(),
        replacement: None,
        interrupted: false,
    })
}

/// How the configured model relates to the vectors on disk.
fn recorded_mismatch(
    writer: &StoreWriter,
    current: &ModelIdentity,
) -> Result<Option<(ModelIdentity, String)>, Error> {
    let Some(recorded) = writer.recorded_identity()? else {
        return Ok(None);
    };
    let mismatches = current.mismatches(&recorded);
    if mismatches.is_empty() {
        return Ok(None);
    }
    let details: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    Ok(Some((recorded, details.join("; "))))
}

fn refuse_mix(model: &ModelConfig, details: &str) -> Error {
    Error::Usage(format!(
        "model `{alias}`: the configured model would make different vectors than the ones on disk \
         ({details}). Vectors of two models must never mix under one alias. Either put the previous model \
         back in the config, give the new model its own alias, or replace every vector of `{alias}` \
         with `papersys embed --model {alias} --reembed` (all years, no --years)",
        alias = model.alias
    ))
}

/// Refuses a run whose model differs from one a year file or checkpoint
/// records, naming the file.
fn check_files(model: &ModelConfig, writer: &StoreWriter, current: &ModelIdentity) -> Result<(), Error> {
    match writer.check_identity(current) {
        Err(StoreError::YearFile(e @ YearFileError::Model { .. })) => {
            Err(Error::Usage(format!("model `{}`: {e}", model.alias)))
        }
        other => Ok(other?),
    }
}

fn empty_report(model: &ModelConfig, work: &Work, recorded: Option<ModelIdentity>) -> ModelRun {
    ModelRun {
        alias: model.alias.to_string(),
        dry_run: false,
        planned: work.items.len() as u64,
        embedded: 0,
        failed: 0,
        not_found: 0,
        empty_text: work.empty_text,
        waiting_after: 0,
        years: Vec::new(),
        files: Vec::new(),
        elapsed_s: 0.0,
        papers_per_s: 0.0,
        model: recorded,
        errors: Vec::new(),
        replacement: None,
        interrupted: false,
    }
}

fn load(model: &ModelConfig) -> Result<Box<dyn papersys_backend_core::Embedder>, Error> {
    tracing::info!("{}: loading {}", model.alias, model.name);
    backend::build(model)
}

fn run_model(
    config: &Config,
    model: &ModelConfig,
    writer: &StoreWriter,
    discovery: &Discovery,
    options: &EmbedOptions,
    issues: &mut Vec<crate::metadata::InputIssue>,
) -> Result<ModelRun, Error> {
    let recorded = writer.manifest()?.and_then(|m| m.model_identity);
    // Replacing every vector loads the model first: a changed model is then
    // allowed, through a replacement store. Otherwise nothing is loaded unless work waits.
    let loaded = if options.reembed && options.years.is_none() {
        let embedder = load(model)?;
        if let Some((old, _)) = recorded_mismatch(writer, embedder.identity())? {
            return replace_model(
                config,
                model,
                writer,
                discovery,
                options,
                embedder.as_ref(),
                &old,
                issues,
            );
        }
        check_files(model, writer, embedder.identity())?;
        Some(embedder)
    } else {
        None
    };
    let work = select_work(model, Access::Write(writer), config, discovery, options, issues)?;
    let embedder = match loaded {
        Some(embedder) => embedder,
        None => {
            if work.items.is_empty() {
                tracing::info!("{}: nothing to embed", model.alias);
                let mut report = empty_report(model, &work, recorded);
                report.waiting_after = backlog::read(&writer.dir).map(|r| r.len() as u64).unwrap_or(0);
                return Ok(report);
            }
            let embedder = load(model)?;
            check_files(model, writer, embedder.identity())?;
            if let Some((_, details)) = recorded_mismatch(writer, embedder.identity())? {
                return Err(refuse_mix(model, &details));
            }
            if writer.has_replacement() {
                return Err(Error::Usage(format!(
                    "model `{alias}`: a replacement of every vector by this model is half done in {}; \
                     finish it with `papersys embed --model {alias} --reembed`",
                    writer.replacement_store().dir.display(),
                    alias = model.alias
                )));
            }
            embedder
        }
    };
    execute(
        config,
        model,
        writer,
        discovery,
        options,
        &work,
        embedder.as_ref(),
    )
}

/// Runs the pipeline over `work` into `writer`'s store, refreshes its
/// backlog and reports.
fn execute(
    config: &Config,
    model: &ModelConfig,
    writer: &StoreWriter,
    discovery: &Discovery,
    options: &EmbedOptions,
    work: &Work,
    embedder: &dyn papersys_backend_core::Embedder,
) -> Result<ModelRun, Error> {
    let identity = embedder.identity().clone();
    let mut report = empty_report(model, work, Some(identity.clone()));
    let mut years = planned_years(&work.items, options.reembed);
    if work.items.is_empty() {
        return Ok(report);
    }
    if crate::interrupt::requested() {
        // Stopped while the model loaded: nothing embedded, everything waits.
        report.interrupted = true;
        report.waiting_after = backlog::read(&writer.dir)
            .map(|rows| rows.iter().filter(|r| r.reason.is_embeddable()).count() as u64)
            .unwrap_or(work.items.len() as u64);
        return Ok(report);
    }
    tracing::info!("{}: embedding {} papers", model.alias, work.items.len());
    let outcome = pipeline::run(
        writer,
        embedder,
        discovery,
        &work.items,
        &work.years_with_repeats,
        RunOptions {
            checkpoint_interval: config.checkpoint_interval,
            progress: options.progress,
        },
    )?;
    // The backlog is made true again; papers that failed wait with their reason.
    let after = plan::refresh(
        writer,
        PlanInputs {
            failed: &outcome.failed_ids,
            ..PlanInputs::new(discovery, &identity.document_prefix)
        },
    )?;
    for (year, result) in &outcome.years {
        let entry = years.entry(*year).or_insert_with(|| YearRun {
            year: year.to_string(),
            ..YearRun::default()
        });
        entry.embedded = result.embedded;
        entry.failed = result.failed;
        entry.not_found = result.not_found;
    }
    report.files = if outcome.interrupted {
        // The vectors wait in checkpoints; no year file was rewritten.
        [
            writer.dir.join(checkpoint::CHECKPOINT_DIR),
            writer.dir.join(BACKLOG_FILE),
        ]
        .into_iter()
        .filter(|path| path.exists())
        .map(|path| origin_of(&path, &config.data_root))
        .collect()
    } else {
        files_touched(config, writer, &years, true)
    };
    report.embedded = outcome.embedded();
    report.failed = outcome.failed();
    report.not_found = years.values().map(|y| y.not_found).sum();
    report.waiting_after = after.rows.iter().filter(|r| r.reason.is_embeddable()).count() as u64;
    report.years = years.into_values().collect();
    report.elapsed_s = outcome.elapsed.as_secs_f64();
    report.papers_per_s = report.embedded as f64 / report.elapsed_s.max(1e-9);
    report.errors = outcome.errors;
    report.interrupted = outcome.interrupted;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_parse_as_lists_and_ranges() {
        let years: Vec<String> = parse_years("2019-2021, 2024")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(years, ["2019", "2020", "2021", "2024"]);
        assert!(parse_years("2024-2019").unwrap_err().contains("backwards"));
        assert!(parse_years("24").unwrap_err().contains("\"24\""));
        assert!(parse_years("").is_err());
    }

    #[test]
    fn priority_orders_newest_or_oldest_first() {
        let item = |id: &str, year: &str| WorkItem {
            paper_id: id.into(),
            year: Year::parse(year).unwrap(),
            origin: String::new(),
            reason: MissingReason::MissingEmbedding,
        };
        let mut work = vec![
            item("2401.2", "2024"),
            item("0704.1", "2007"),
            item("2401.9", "2024"),
        ];
        prioritise(&mut work, BacklogPriority::RecentFirst);
        let ids: Vec<_> = work.iter().map(|w| w.paper_id.as_str()).collect();
        assert_eq!(ids, ["2401.9", "2401.2", "0704.1"]);
        prioritise(&mut work, BacklogPriority::OldestFirst);
        let ids: Vec<_> = work.iter().map(|w| w.paper_id.as_str()).collect();
        assert_eq!(ids, ["0704.1", "2401.2", "2401.9"]);
    }
}
