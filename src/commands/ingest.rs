//! `papersys ingest`: arXiv metadata into `metadata-YYYY.csv`, harvested
//! from OAI-PMH. Holds the ingestion lock (`<metadata_dir>/.papersys.lock`)
//! while it writes; `papersys embed` may run meanwhile, because every file
//! is replaced atomically and it reads complete files only.

use jiff::civil::Date;

use crate::config::Config;
use crate::error::Error;
use crate::ingest::config::{IngestConfig, SetSpec, category_set_spec, parse_day};
use crate::ingest::harvest::{HarvestError, HarvestOptions, HarvestReport, harvest};
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

/// Runs a harvest. A window that failed for good is in the report's
/// `failed` (the caller exits 1 after showing the report).
pub fn run(config: &Config, options: &IngestOptions) -> Result<HarvestReport, Error> {
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
        Some(WriterLock::acquire(&ingest.metadata_dir).map_err(StoreError::from)?)
    };
    harvest(&ingest, &harvest_options).map_err(|e| match e {
        HarvestError::NoStart { .. } | HarvestError::EmptyRange { .. } => Error::Usage(e.to_string()),
        other => Error::Run(other.to_string()),
    })
}
