//! `papersys ingest`: arXiv metadata into `metadata-YYYY.csv`, harvested
//! from OAI-PMH or imported from Kaggle's snapshot (`--snapshot`). Holds the ingestion lock (`<metadata_dir>/.papersys.lock`)
//! while it writes; `papersys embed` may run meanwhile, because every file
//! is replaced atomically and it reads complete files only.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::civil::Date;
use serde::Serialize;

use crate::config::Config;
use crate::error::Error;
use crate::ingest::config::{IngestConfig, SetSpec, category_set_spec, parse_day, set_spec_category};
use crate::ingest::harvest::{HarvestError, HarvestOptions, HarvestReport, harvest};
use crate::ingest::snapshot::{SnapshotCounts, SnapshotOptions, SnapshotReport, import_snapshot};
use crate::pipeline::ProgressMode;
use crate::store::StoreError;
use crate::store::lock::WriterLock;

/// What `papersys ingest` was asked for.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// `--from`.
    pub from: Option<Date>,
    /// `--until`.
    pub until: Option<Date>,
    /// `--category` (replaces the config's `categories`).
    pub categories: Vec<SetSpec>,
    /// `--limit`.
    pub limit: Option<u64>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Progress display.
    pub progress: ProgressMode,
    /// `--snapshot FILE`: import Kaggle's snapshot instead of harvesting.
    pub snapshot: Option<PathBuf>,
}

/// What `papersys ingest` did.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum IngestReport {
    /// An OAI-PMH harvest.
    Harvest(HarvestReport),
    /// A snapshot import.
    Snapshot(SnapshotReport),
}

/// Parses a `--from`/`--until` value.
pub fn parse_date_arg(flag: &str, value: &str) -> Result<Date, Error> {
    parse_day(value).map_err(|e| Error::Usage(format!("{flag}: {e}")))
}

/// Parses `--category` values into sets.
pub fn parse_categories(values: &[String]) -> Result<Vec<SetSpec>, Error> {
    let mut sets: Vec<SetSpec> = Vec::new();
    for value in values {
        let spec = category_set_spec(value).map_err(|e| Error::Usage(format!("--category: {e}")))?;
        if !sets.iter().any(|s| s.spec == spec.spec) {
            sets.push(spec);
        }
    }
    Ok(sets)
}

/// Today in UTC: the default last day of a harvest.
pub fn today_utc() -> Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// Runs a harvest or a snapshot import. A window that failed for good is
/// in the harvest report's `failed` (the caller exits 1 after showing the
/// report).
pub fn run(config: &Config, options: &IngestOptions) -> Result<IngestReport, Error> {
    let ingest = IngestConfig::from_config(config)?;
    let harvest_options = HarvestOptions {
        from: options.from,
        until: options.until,
        sets: (!options.categories.is_empty()).then(|| options.categories.clone()),
        limit: options.limit,
        dry_run: options.dry_run,
        progress: options.progress,
        today: today_utc(),
    };
    let _lock = if options.dry_run {
        None
    } else {
        std::fs::create_dir_all(&ingest.metadata_dir).map_err(|e| {
            Error::Run(format!(
                "cannot create the metadata directory {}: {e}",
                ingest.metadata_dir.display()
            ))
        })?;
        let lock = WriterLock::acquire(&ingest.metadata_dir).map_err(StoreError::from)?;
        // A killed import leaves its spilled runs and half-written CSVs
        // behind as temporaries of a dead process: only those go.
        match crate::store::atomic::remove_orphaned_temporaries(&ingest.metadata_dir) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{}: removed {n} temporary file(s) left by an interrupted ingest",
                ingest.metadata_dir.display()
            ),
            Err(e) => tracing::warn!(
                "{}: cannot remove the temporaries of an interrupted ingest: {e}",
                ingest.metadata_dir.display()
            ),
        }
        Some(lock)
    };
    if let Some(file) = &options.snapshot {
        let categories = if options.categories.is_empty() {
            ingest.category_filters()
        } else {
            options
                .categories
                .iter()
                .map(|s| set_spec_category(&s.spec))
                .collect()
        };
        let snapshot_options = SnapshotOptions {
            categories,
            ..SnapshotOptions::default()
        };
        let mut progress = SnapshotProgress::new(options.progress);
        let report = import_snapshot(file, &ingest.metadata_dir, &snapshot_options, &mut |counts| {
            progress.update(counts)
        })
        .map_err(|e| Error::Run(e.to_string()))?;
        progress.finish();
        return Ok(IngestReport::Snapshot(report));
    }
    harvest(&ingest, &harvest_options)
        .map(IngestReport::Harvest)
        .map_err(|e| match e {
            HarvestError::NoStart { .. } | HarvestError::EmptyRange { .. } => Error::Usage(e.to_string()),
            other => Error::Run(other.to_string()),
        })
}

/// Progress of a snapshot import: a spinner on a terminal, a line every
/// 30 s otherwise.
struct SnapshotProgress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    started: Instant,
    last_log: Instant,
}

impl SnapshotProgress {
    fn new(mode: ProgressMode) -> SnapshotProgress {
        let quiet = mode == ProgressMode::Quiet;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        SnapshotProgress {
            bar,
            quiet,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn update(&mut self, counts: &SnapshotCounts) {
        let line = format!(
            "{} lines read, {} imported, {} filtered out, {} bad; {:.0} lines/s",
            counts.lines,
            counts.imported,
            counts.filtered_out,
            counts.bad_lines,
            counts.lines as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
        );
        if let Some(bar) = &self.bar {
            bar.set_message(line);
        } else if !self.quiet && self.last_log.elapsed() >= Duration::from_secs(30) {
            self.last_log = Instant::now();
            tracing::info!("snapshot: {line}");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
