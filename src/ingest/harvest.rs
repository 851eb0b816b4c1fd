//! A harvest: date windows over the configured sets, each window's rows
//! committed (and the harvest state advanced) before the next window is
//! asked for. An expired resumption token costs the window it belongs to,
//! a window that fails for good stops the run with everything before it
//! kept.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::ToSpan;
use jiff::civil::Date;
use serde::Serialize;

use super::config::{IngestConfig, SetSpec};
use super::merge::{CommitReport, MergeError, MergeOptions, Merger, YearCounts};
use super::oai::{Client, ClientStats, OaiError, Query};
use super::row::to_record;
use super::state::{ALL_SETS, HarvestState, SetState, StateError};
use crate::pipeline::ProgressMode;

/// Time between plain progress lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// Messages about skipped records kept in the report.
const EXAMPLES: usize = 20;
/// Directory (inside the metadata directory) of `save_raw_responses`.
pub const RAW_DIR: &str = "raw-responses";

/// What a run is asked to do, beyond the config.
#[derive(Clone, Debug)]
pub struct HarvestOptions {
    /// First day; default: the state (one day of overlap), else `start_date`.
    pub from: Option<Date>,
    /// Last day (inclusive); default: `end_date`, else today.
    pub until: Option<Date>,
    /// Sets instead of the config's `categories`.
    pub sets: Option<Vec<SetSpec>>,
    /// Stop after this many records.
    pub limit: Option<u64>,
    /// Ask only the first page of each window and write nothing.
    pub dry_run: bool,
    /// Progress display.
    pub progress: ProgressMode,
    /// Today (UTC): the default end.
    pub today: Date,
}

/// Why a harvest could not start or stopped without a report.
#[derive(Debug, thiserror::Error)]
pub enum HarvestError {
    /// Nothing says where to start.
    #[error(
        "no harvest state for {set} in {} and no start date: set `start_date = \"YYYY-MM-DD\"` in [ingestion] \
         or pass --from YYYY-MM-DD for the first harvest (later runs continue from the state)",
        .dir.display()
    )]
    NoStart {
        /// The set without a start.
        set: String,
        /// The metadata directory.
        dir: std::path::PathBuf,
    },
    /// `--from` after `--until`.
    #[error(
        "the harvest would start on {from}, after its last day {until}; check --from/--until and end_date"
    )]
    EmptyRange {
        /// First day.
        from: Date,
        /// Last day.
        until: Date,
    },
    /// The state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// Writing rows.
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// One window of the run.
#[derive(Clone, Debug, Serialize)]
pub struct WindowReport {
    /// First day.
    pub from: String,
    /// Last day (inclusive).
    pub until: String,
    /// Pages received.
    pub pages: u64,
    /// Records with metadata received.
    pub records: u64,
    /// Deleted records received.
    pub deleted: u64,
    /// Whether its rows were committed and the state advanced.
    pub completed: bool,
}

/// The window that failed.
#[derive(Clone, Debug, Serialize)]
pub struct FailedWindow {
    /// First day.
    pub from: String,
    /// Last day.
    pub until: String,
    /// The set being harvested (`*` for all).
    pub set: String,
    /// What went wrong.
    pub error: String,
}

/// What a harvest did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HarvestReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The endpoint.
    pub base_url: String,
    /// The metadata format.
    pub metadata_prefix: String,
    /// The sets (`*`: all).
    pub sets: Vec<String>,
    /// First day asked for.
    pub from: String,
    /// Last day asked for.
    pub until: String,
    /// The windows, in order.
    pub windows: Vec<WindowReport>,
    /// Records with metadata received.
    pub records: u64,
    /// Records with `status="deleted"` (counted; nothing is removed).
    pub deleted: u64,
    /// Records skipped by the parser or the merge.
    pub skipped: u64,
    /// The first few reasons.
    pub skipped_examples: Vec<String>,
    /// Papers added.
    pub new: u64,
    /// Papers whose row changed.
    pub updated: u64,
    /// Papers received again unchanged.
    pub unchanged: u64,
    /// Received rows older than the stored ones (ignored).
    pub older: u64,
    /// Per year file.
    pub per_year: BTreeMap<String, YearCounts>,
    /// Rows in `latest.csv`.
    pub latest_rows: u64,
    /// HTTP requests, retries, time waited.
    #[serde(flatten)]
    pub client: ClientStats,
    /// Resumption tokens that expired (their window was started again).
    pub restarted_windows: u64,
    /// The run stopped at `--limit`.
    pub limit_reached: bool,
    /// Wall time.
    pub elapsed_s: f64,
    /// The window that failed for good, when one did.
    pub failed: Option<FailedWindow>,
}

/// A set to harvest and the day its harvest starts.
struct Plan {
    key: String,
    set: Option<String>,
    start: Date,
}

/// Runs a harvest into `config.metadata_dir`. The caller holds the
/// ingestion lock (unless `dry_run`).
pub fn harvest(config: &IngestConfig, options: &HarvestOptions) -> Result<HarvestReport, HarvestError> {
    let started = Instant::now();
    let dir = &config.metadata_dir;
    let sets = options.sets.clone().unwrap_or_else(|| config.sets.clone());
    let until = options
        .until
        .or(config.end_date)
        .unwrap_or(options.today)
        .min(options.today);
    let state = HarvestState::load(dir)?;
    let mut plans = Vec::new();
    let keys: Vec<(String, Option<String>)> = if sets.is_empty() {
        vec![(ALL_SETS.to_string(), None)]
    } else {
        sets.iter()
            .map(|s| (s.spec.clone(), Some(s.spec.clone())))
            .collect()
    };
    for (key, set) in keys {
        let start = options
            .from
            .or_else(|| state.resume_from(&key))
            .or(config.start_date)
            .ok_or_else(|| HarvestError::NoStart {
                set: if set.is_some() {
                    format!("set {key}")
                } else {
                    "all sets".into()
                },
                dir: dir.clone(),
            })?;
        plans.push(Plan {
            key,
            set,
            start: start.min(until),
        });
    }
    let first = plans.iter().map(|p| p.start).min().unwrap_or(until);
    if let Some(from) = options.from
        && from > until
    {
        return Err(HarvestError::EmptyRange { from, until });
    }
    let mut report = HarvestReport {
        dry_run: options.dry_run,
        base_url: config.base_url.clone(),
        metadata_prefix: config.format.prefix().to_string(),
        sets: plans.iter().map(|p| p.key.clone()).collect(),
        from: first.to_string(),
        until: until.to_string(),
        ..HarvestReport::default()
    };
    let raw_dir = (config.save_raw_responses && !options.dry_run).then(|| dir.join(RAW_DIR));
    let mut client = Client::new(config, raw_dir);
    let mut merger = if options.dry_run {
        None
    } else {
        Some(Merger::new(dir, MergeOptions::default())?)
    };
    let mut progress = Progress::new(options.progress);
    let mut state = state;
    let mut seen: HashSet<String> = HashSet::new();
    let source = config.format.source();
    let step = i64::from(config.window_days);
    let mut window_start = first;
    'windows: while window_start <= until {
        let window_end = window_start
            .checked_add((step - 1).days())
            .unwrap_or(until)
            .min(until);
        let mut window = WindowReport {
            from: window_start.to_string(),
            until: window_end.to_string(),
            pages: 0,
            records: 0,
            deleted: 0,
            completed: false,
        };
        progress.window(&window.from, &window.until);
        let mut finished_sets: Vec<(String, String, String)> = Vec::new();
        let mut held = 0usize;
        for plan in plans.iter().filter(|p| p.start <= window_end) {
            let from = plan.start.max(window_start).to_string();
            let start_query = Query::Start {
                from: from.clone(),
                until: window.until.clone(),
                set: plan.set.clone(),
            };
            let mut query = start_query.clone();
            let mut response_date = String::new();
            let mut restarts = 0u32;
            loop {
                let page = match client.list_records(&query) {
                    Ok(page) => page,
                    Err(OaiError::BadResumptionToken(token)) if restarts < config.max_retries => {
                        restarts += 1;
                        report.restarted_windows += 1;
                        tracing::warn!(
                            "resumption token {token:?} expired in window {}..{} (set {}); starting the window again",
                            window.from,
                            window.until,
                            plan.key
                        );
                        query = start_query.clone();
                        response_date.clear();
                        continue;
                    }
                    Err(error) => {
                        report.failed = Some(FailedWindow {
                            from: window.from.clone(),
                            until: window.until.clone(),
                            set: plan.key.clone(),
                            error: error.to_string(),
                        });
                        report.windows.push(window);
                        break 'windows;
                    }
                };
                window.pages += 1;
                window.deleted += page.deleted;
                report.deleted += page.deleted;
                report.skipped += page.skipped.len() as u64;
                for message in page.skipped {
                    tracing::debug!("{message}");
                    if report.skipped_examples.len() < EXAMPLES {
                        report.skipped_examples.push(message);
                    }
                }
                if response_date.is_empty() {
                    response_date = page.response_date.clone();
                }
                for paper in &page.records {
                    if let Some(limit) = options.limit {
                        if seen.len() as u64 >= limit && !seen.contains(&paper.id) {
                            report.limit_reached = true;
                            break;
                        }
                        seen.insert(paper.id.clone());
                    }
                    window.records += 1;
                    report.records += 1;
                    if let Some(merger) = merger.as_mut() {
                        merger.add(to_record(paper, &source))?;
                        held += 1;
                    }
                }
                progress.update(report.records, client.stats().requests);
                if let (Some(merger), Some(batch)) = (merger.as_mut(), config.batch_size)
                    && held >= batch
                {
                    let commit = merger.commit()?;
                    absorb_skips(&mut report, &commit);
                    held = 0;
                }
                if report.limit_reached || options.dry_run {
                    break;
                }
                match page.token {
                    Some(token) => query = Query::Resume { token },
                    None => {
                        finished_sets.push((plan.key.clone(), from.clone(), response_date.clone()));
                        break;
                    }
                }
            }
            if report.limit_reached {
                break;
            }
        }
        if let Some(merger) = merger.as_mut() {
            let commit = merger.commit()?;
            absorb_skips(&mut report, &commit);
            progress.committed(&window, &commit);
            if !report.limit_reached {
                let completed_at = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                for (key, from, response_date) in finished_sets {
                    // A backfill of older days never moves the state back.
                    if state.sets.get(&key).is_some_and(|s| s.until > window.until) {
                        continue;
                    }
                    state.sets.insert(
                        key,
                        SetState {
                            from,
                            until: window.until.clone(),
                            response_date,
                            base_url: config.base_url.clone(),
                            metadata_prefix: config.format.prefix().to_string(),
                            completed_at: completed_at.clone(),
                        },
                    );
                }
                state.save(dir)?;
                window.completed = true;
            }
        }
        report.windows.push(window);
        if report.limit_reached {
            break;
        }
        window_start = match window_end.checked_add(1.day()) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    if let Some(merger) = merger {
        let merged = merger.finish()?;
        report.new = merged.totals.new;
        report.updated = merged.totals.updated;
        report.unchanged = merged.totals.unchanged;
        report.older = merged.totals.older;
        report.per_year = merged.totals.per_year;
        report.latest_rows = merged.latest_rows;
    }
    progress.finish();
    report.client = client.stats();
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

fn absorb_skips(report: &mut HarvestReport, commit: &CommitReport) {
    report.skipped += commit.skipped.len() as u64;
    for message in &commit.skipped {
        tracing::warn!("{message}");
        if report.skipped_examples.len() < EXAMPLES {
            report.skipped_examples.push(message.clone());
        }
    }
}

/// A spinner on a terminal, a line every 30 s otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    started: Instant,
    last_log: Instant,
    window: String,
    records: u64,
    requests: u64,
}

impl Progress {
    fn new(mode: ProgressMode) -> Progress {
        let quiet = mode == ProgressMode::Quiet;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            quiet,
            started: Instant::now(),
            last_log: Instant::now(),
            window: String::new(),
            records: 0,
            requests: 0,
        }
    }

    fn rate(&self) -> f64 {
        self.records as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn window(&mut self, from: &str, until: &str) {
        self.window = format!("{from}..{until}");
        self.redraw();
    }

    fn update(&mut self, records: u64, requests: u64) {
        self.records = records;
        self.requests = requests;
        self.redraw();
        if self.bar.is_none() && !self.quiet && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::info!(
                "harvesting {}: {} records, {} pages so far, {:.1} records/s",
                self.window,
                self.records,
                self.requests,
                self.rate()
            );
        }
    }

    fn redraw(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "window {}  {} records  {} pages  {:.1} records/s",
                self.window,
                self.records,
                self.requests,
                self.rate()
            ));
        }
    }

    fn committed(&self, window: &WindowReport, commit: &CommitReport) {
        if self.quiet {
            return;
        }
        let line = format!(
            "window {}..{}: {} records in {} pages, {} deleted; {} new, {} updated, {} unchanged",
            window.from,
            window.until,
            window.records,
            window.pages,
            window.deleted,
            commit.new,
            commit.updated,
            commit.unchanged
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => tracing::info!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Whether `dir` holds a harvest state (for messages).
pub fn has_state(dir: &Path) -> bool {
    HarvestState::path(dir).is_file()
}
