//! `papersys search` (papers about a text) and `papersys similar` (papers
//! like given ones): thin commands over [`crate::query`].

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, ModelConfig};
use crate::error::Error;
use crate::metadata::{self, Year};
use crate::query::{CacheMode, Filter, Hit, QueryEncoder, QueryError, VectorIndex};
use crate::store::{ModelStore, backlog};

/// What every query takes besides its subject.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// Results wanted.
    pub k: usize,
    /// Only these years.
    pub years: Option<BTreeSet<Year>>,
    /// Only papers with one of these categories.
    pub categories: Vec<String>,
    /// Whether to use the vector cache.
    pub cache: CacheMode,
}

/// One result, joined to its metadata.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResultRow {
    /// arXiv id.
    pub paper_id: String,
    /// Cosine similarity with the query.
    pub score: f64,
    /// Title, on one line (empty when the metadata lacks the paper).
    pub title: String,
    /// Year of the file holding its vector.
    pub year: u16,
    /// Categories, primary first.
    pub categories: Vec<String>,
    /// `published_at` from the metadata.
    pub published_at: String,
    /// The arXiv abstract page.
    pub url: String,
}

/// The answer to one query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchReport {
    /// Model alias.
    pub model: String,
    /// The query text (batch queries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Best first; equal scores by paper id.
    pub results: Vec<ResultRow>,
}

/// The answers to a file of queries, with timings.
#[derive(Clone, Debug)]
pub struct BatchReport {
    /// One per query, in file order.
    pub reports: Vec<SearchReport>,
    /// Opening the index and loading the model.
    pub open: Duration,
    /// Embedding every query.
    pub embed: Duration,
    /// Scanning for every query (one pass over the vectors serves them
    /// all: per query, this divided by their number).
    pub scan: Duration,
}

impl QueryOptions {
    fn filter(&self) -> Filter {
        Filter {
            years: self.years.clone(),
            categories: self.categories.clone(),
            exclude: Vec::new(),
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.k == 0 {
            return Err(Error::Usage("-k must be at least 1".into()));
        }
        Ok(())
    }
}

/// The papers closest to `query` (free text).
pub fn search(
    config: &Config,
    model: &ModelConfig,
    query: &str,
    options: &QueryOptions,
) -> Result<SearchReport, Error> {
    options.check()?;
    let query = query.trim();
    if query.is_empty() {
        return Err(Error::Usage(
            "the query is empty; say what the papers should be about".into(),
        ));
    }
    let (mut index, encoder) = open_with_encoder(config, model, options.cache)?;
    let started = Instant::now();
    let vector = encoder
        .encode(&[query.to_string()])?
        .pop()
        .ok_or_else(|| Error::Run("the model returned no vector for the query".into()))?;
    tracing::debug!(
        "query embedded in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let filter = options.filter();
    let started = Instant::now();
    // Joined inside `repairing`: a damaged title found by the join rebuilds too.
    let found = repairing(&mut index, config, model, options.cache, |index| {
        let hits = index.top_k(&vector, options.k, &filter)?;
        report(index, None, &hits)
    })?;
    tracing::debug!(
        "scan {:.2} ms; {}",
        started.elapsed().as_secs_f64() * 1e3,
        memory()
    );
    Ok(found)
}

/// The papers closest to each line of `path` (blank lines skipped).
pub fn search_batch(
    config: &Config,
    model: &ModelConfig,
    path: &Path,
    options: &QueryOptions,
) -> Result<BatchReport, Error> {
    options.check()?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read --queries {}: {e}", path.display())))?;
    let queries: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if queries.is_empty() {
        return Err(Error::Usage(format!(
            "{} holds no query (one per line)",
            path.display()
        )));
    }
    let started = Instant::now();
    let (mut index, encoder) = open_with_encoder(config, model, options.cache)?;
    let open = started.elapsed();
    let started = Instant::now();
    let vectors = encoder.encode(&queries)?;
    let embed = started.elapsed();
    let filter = options.filter();
    let started = Instant::now();
    let reports = repairing(&mut index, config, model, options.cache, |index| {
        let hits = index.top_k_many(&vectors, options.k, &filter)?;
        queries
            .iter()
            .zip(&hits)
            .map(|(query, hits)| report(index, Some(query.clone()), hits))
            .collect::<Result<Vec<SearchReport>, QueryError>>()
    })?;
    let scan = started.elapsed();
    let n = reports.len().max(1) as f64;
    tracing::info!(
        "{} queries: index and model ready in {:.2} s; embedding {:.2} ms/query; scan {:.2} ms/query \
         (one pass over the vectors for all queries, {:.2} s in all, kernel {}); {}",
        reports.len(),
        open.as_secs_f64(),
        embed.as_secs_f64() * 1e3 / n,
        scan.as_secs_f64() * 1e3 / n,
        scan.as_secs_f64(),
        crate::query::scan::kernel_name(),
        memory()
    );
    Ok(BatchReport {
        reports,
        open,
        embed,
        scan,
    })
}

/// The papers closest to the paper `ids` (to the mean of their unit
/// vectors when several), excluding them.
pub fn similar(
    config: &Config,
    model: &ModelConfig,
    ids: &[String],
    options: &QueryOptions,
) -> Result<SearchReport, Error> {
    options.check()?;
    let ids: Vec<&str> = ids.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    if ids.is_empty() {
        return Err(Error::Usage("name at least one paper id".into()));
    }
    let mut index = VectorIndex::open_with(config, model, options.cache)?;
    let mut rows = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in &ids {
        match index.find(id) {
            Some(row) => rows.push(row),
            None => missing.push(*id),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Usage(explain_missing(config, model, &missing)));
    }
    rows.sort_unstable();
    rows.dedup();
    let mut filter = options.filter();
    filter.exclude = rows.clone();
    repairing(&mut index, config, model, options.cache, |index| {
        let query = index.mean_direction(&rows)?;
        let hits = index.top_k_f64(&query, options.k, &filter)?;
        report(index, None, &hits)
    })
}

/// Opens the index and loads the model at the same time.
fn open_with_encoder(
    config: &Config,
    model: &ModelConfig,
    cache: CacheMode,
) -> Result<(VectorIndex, QueryEncoder), Error> {
    let store = ModelStore::new(config, model);
    // No model to load when there is nothing to search.
    if store.year_files().is_ok_and(|files| files.is_empty()) {
        return Err(QueryError::NoVectors {
            alias: model.alias.to_string(),
            dir: store.dir.clone(),
        }
        .into());
    }
    let recorded = store.manifest().ok().flatten().and_then(|m| m.model_identity);
    let started = Instant::now();
    let ((index, index_s), (encoder, model_s)) = rayon::join(
        || {
            let index = VectorIndex::open_with(config, model, cache);
            (index, started.elapsed().as_secs_f64())
        },
        || {
            let encoder = QueryEncoder::load(model, recorded.as_ref());
            (encoder, started.elapsed().as_secs_f64())
        },
    );
    tracing::debug!("ready: index opened in {index_s:.3} s, model loaded in {model_s:.3} s (side by side)");
    Ok((index?, encoder?))
}

/// Runs `query`; when it finds a damaged cache file, removes the file,
/// opens the index again (rebuilding that year) and retries.
fn repairing<T>(
    index: &mut VectorIndex,
    config: &Config,
    model: &ModelConfig,
    cache: CacheMode,
    query: impl Fn(&VectorIndex) -> Result<T, QueryError>,
) -> Result<T, Error> {
    for _ in 0..2 {
        match query(index) {
            Err(QueryError::CacheDamaged { path, message }) => {
                tracing::warn!(
                    "vector cache {} is damaged ({message}); rebuilding it",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                *index = VectorIndex::open_with(config, model, cache)?;
            }
            other => return other.map_err(Error::from),
        }
    }
    Ok(query(index)?)
}

/// Resident memory of this process, apart from and in mapped files (Linux).
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(|| "?".to_string(), |kb| format!("{:.0} MB", kb as f64 / 1024.0))
    };
    format!(
        "memory: {} resident besides mapped files (RssAnon), {} of mapped files (RssFile)",
        field("RssAnon:"),
        field("RssFile:")
    )
}

fn report(index: &VectorIndex, query: Option<String>, hits: &[Hit]) -> Result<SearchReport, QueryError> {
    let results = hits
        .iter()
        .map(|hit| {
            let paper = index.paper(hit.row)?;
            Ok(ResultRow {
                paper_id: paper.paper_id.to_string(),
                score: hit.score,
                title: paper.title.to_string(),
                year: paper.year.get(),
                categories: paper.categories.iter().map(|c| c.to_string()).collect(),
                published_at: paper.published_at.to_string(),
                url: format!("https://arxiv.org/abs/{}", paper.paper_id),
            })
        })
        .collect::<Result<_, QueryError>>()?;
    Ok(SearchReport {
        model: index.alias().to_string(),
        query,
        results,
    })
}

/// Why these ids have no vector: waiting in the backlog, in the metadata
/// but not yet planned, or unknown.
fn explain_missing(config: &Config, model: &ModelConfig, ids: &[&str]) -> String {
    let store = ModelStore::new(config, model);
    let waiting = backlog::read(&store.dir).unwrap_or_default();
    let mut in_metadata: Vec<(String, String)> = Vec::new();
    let unresolved: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !waiting.iter().any(|r| r.paper_id == *id))
        .collect();
    if !unresolved.is_empty()
        && let Ok(discovery) = metadata::discover(&config.metadata_dir, &config.data_root)
    {
        for file in &discovery.files {
            let mut issues = Vec::new();
            let _ = metadata::read_rows(&file.path, &mut issues, |row| {
                if unresolved.contains(&row.paper_id) && !in_metadata.iter().any(|(id, _)| id == row.paper_id)
                {
                    in_metadata.push((row.paper_id.to_string(), file.origin.clone()));
                }
            });
        }
    }
    let alias = &model.alias;
    let lines: Vec<String> = ids
        .iter()
        .map(|id| {
            if let Some(row) = waiting.iter().find(|r| r.paper_id == *id) {
                format!(
                    "paper {id} has no vector yet: it waits in the backlog of `{alias}` ({}, year {}, from {}); \
                     run `papersys embed --model {alias}`",
                    row.reason, row.year, row.origin
                )
            } else if let Some((_, origin)) = in_metadata.iter().find(|(m, _)| m == id) {
                format!(
                    "paper {id} is in {origin} but has no vector of `{alias}` yet; run `papersys embed --model {alias}`"
                )
            } else {
                format!(
                    "paper {id} is unknown: no metadata file under {} lists it and `{alias}` has no vector for it",
                    config.metadata_dir.display()
                )
            }
        })
        .collect();
    lines.join("\n")
}
