//! The query engine: exact nearest neighbours over one model's vectors.
//!
//! [`VectorIndex::open`] maps the model's vector cache (one segment per year
//! under `embeddings/<alias>/.cache/vectors/`, see [`segment`], and beside
//! it a delta segment of the rows that changed since, see `build.rs`),
//! building the segments or deltas of years whose inputs changed; [`VectorIndex::top_k`]
//! returns the k rows of highest cosine with a query vector, exactly (see
//! [`scan`]). Papers are addressed by a global row number (segment by
//! segment, in year order, a year's delta after its segment; rows a delta
//! replaced are never returned); [`VectorIndex::paper`] joins a row to
//! its metadata. The CLI's `search` and `similar`, the recommender and a
//! server share this module; [`QueryEncoder`] turns query text into a vector
//! with the alias's model.

pub mod build;
pub mod catalog;
pub mod encoder;
pub mod scan;
pub mod segment;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

pub use encoder::QueryEncoder;
use scan::Allowed;
use segment::{Segment, Stamps};

use crate::config::{Config, ModelConfig};
use crate::metadata::{self, Discovery, MetadataFile, Year};
use crate::store::ModelStore;
use crate::store::cache::{CACHE_DIR, FileStamp};
use crate::store::year_file::YearFileError;

/// Directory of the vector cache inside `<alias>/.cache/`.
pub const VECTORS_DIR: &str = "vectors";

/// File name ending of a year's delta segment (`YYYY.delta.seg`).
const DELTA_SUFFIX: &str = ".delta.seg";

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The model has no year file yet.
    #[error(
        "model `{alias}` has no vectors yet (no YYYY.parquet in {}); run `papersys embed --model {alias}` first",
        .dir.display()
    )]
    NoVectors {
        /// The alias.
        alias: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// A year file could not be read.
    #[error(transparent)]
    YearFile(#[from] YearFileError),
    /// A cache file failed a check (found while querying; the caller
    /// removes it and opens the index again).
    #[error("vector cache {} is damaged: {message}", .path.display())]
    CacheDamaged {
        /// The cache file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The OS refused.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A row number past the end.
    #[error("row {0} is out of range")]
    NoRow(usize),
    /// A query vector of the wrong length.
    #[error("query vector has {found} dimensions, the model's vectors {expected}")]
    Dimension {
        /// Length given.
        found: usize,
        /// The model's dimension.
        expected: usize,
    },
}

impl QueryError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        QueryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where segments live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Use the cache and keep it current; build in memory where it cannot
    /// be written.
    ReadWrite,
    /// Use no cache file: build every segment in memory from the year files.
    Off,
}

/// What opening the index did with the cache, for logs and tests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheReport {
    /// Years whose cache file was current and used.
    pub reused: Vec<String>,
    /// Years whose cache file was (re)built.
    pub built: Vec<String>,
    /// Of those, the years refreshed from their previous cache file and
    /// the changed part of their inputs.
    pub refreshed: Vec<String>,
    /// Years built in memory (no writable cache).
    pub in_memory: Vec<String>,
    /// Why some year was not cached, when one was not.
    pub note: Option<String>,
    /// Seconds spent opening.
    pub elapsed_s: f64,
}

/// Which rows a query may return. Filters apply before ranking: k results
/// that pass them, not the passing share of the global top k.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only these years (`None`: all).
    pub years: Option<BTreeSet<Year>>,
    /// Only papers with at least one of these categories (empty: all).
    pub categories: Vec<String>,
    /// Never these rows (e.g. the papers a `similar` query starts from).
    pub exclude: Vec<usize>,
}

/// One result: a row and its cosine with the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Global row.
    pub row: usize,
    /// Cosine similarity (f64 arithmetic over the stored f32 vector).
    pub score: f64,
}

/// A row joined to its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paper<'a> {
    /// Paper id.
    pub paper_id: &'a str,
    /// Year of the file holding its vector.
    pub year: Year,
    /// Title (one line; empty when the metadata lacks the paper).
    pub title: &'a str,
    /// Categories, primary first.
    pub categories: Vec<&'a str>,
    /// `published_at`.
    pub published_at: &'a str,
}

/// One model's vectors, ready for queries.
pub struct VectorIndex {
    alias: String,
    dimension: usize,
    segments: Vec<Segment>,
    /// Per segment: the rows a delta replaced (bits), if any.
    dead: Vec<Option<Vec<u64>>>,
    /// Rows that count (all but the dead).
    live: usize,
    /// Global row of each segment's first row, plus the total at the end.
    starts: Vec<usize>,
    /// What opening did.
    pub report: CacheReport,
}

impl VectorIndex {
    /// Opens `model`'s vectors under `config`, through the cache.
    pub fn open(config: &Config, model: &ModelConfig) -> Result<VectorIndex, QueryError> {
        VectorIndex::open_with(config, model, CacheMode::ReadWrite)
    }

    /// Opens `model`'s vectors with the given cache mode.
    pub fn open_with(
        config: &Config,
        model: &ModelConfig,
        mode: CacheMode,
    ) -> Result<VectorIndex, QueryError> {
        let started = Instant::now();
        let store = ModelStore::new(config, model);
        let year_files = store.year_files().map_err(|e| match e {
            crate::store::StoreError::Io { path, source } => QueryError::Io { path, source },
            other => QueryError::io(&store.dir, std::io::Error::other(other.to_string())),
        })?;
        if year_files.is_empty() {
            return Err(QueryError::NoVectors {
                alias: model.alias.to_string(),
                dir: store.dir.clone(),
            });
        }
        let identity = match store.manifest() {
            Ok(Some(manifest)) => manifest
                .model_identity
                .map(|id| xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(&id).unwrap_or_default()))
                .unwrap_or(0),
            _ => 0,
        };
        let discovery = match metadata::discover(&config.metadata_dir, &config.data_root) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("{e}; results will have no titles or categories");
                Discovery::default()
            }
        };
        let cache_dir = store.dir.join(CACHE_DIR).join(VECTORS_DIR);
        let mut report = CacheReport::default();
        let writable = match mode {
            CacheMode::Off => false,
            CacheMode::ReadWrite => match prepare_cache_dir(&store.dir, &cache_dir) {
                Ok(()) => true,
                Err(e) => {
                    report.note = Some(format!(
                        "the vector cache {} cannot be written ({e}); reading the year files directly (slower)",
                        cache_dir.display()
                    ));
                    false
                }
            },
        };
        if writable && !holds_segments(&cache_dir) {
            // Seconds to minutes on a large corpus: say why the first search waits.
            tracing::info!(
                "building the vector cache of {} for its first search ({} year files into {}); later searches reuse it",
                model.alias,
                year_files.len(),
                cache_dir.display()
            );
        }
        let plans: Vec<(Year, PathBuf, Stamps, Vec<MetadataFile>)> = year_files
            .iter()
            .map(|(year, path)| {
                let files: Vec<MetadataFile> = discovery.files_of(*year).cloned().collect();
                let stamps = Stamps {
                    dimension: model.dimension,
                    year_file: FileStamp::of(path).unwrap_or(FileStamp { size: 0, mtime_ns: 0 }),
                    identity,
                    metadata: files
                        .iter()
                        .map(|f| {
                            (
                                f.origin.clone(),
                                FileStamp::of(&f.path).unwrap_or(FileStamp { size: 0, mtime_ns: 0 }),
                            )
                        })
                        .collect(),
                };
                (*year, path.clone(), stamps, files)
            })
            .collect();
        // Biggest years first, so that the threads finish together.
        let mut plans = plans;
        plans.sort_by_key(|p| std::cmp::Reverse(p.2.year_file.size));
        let mut outcomes: Vec<Result<Opened, QueryError>> = plans
            .into_par_iter()
            .map(|(year, path, stamps, files)| {
                let cached = cache_dir.join(format!("{year}.seg"));
                let delta_path = cache_dir.join(format!("{year}{DELTA_SUFFIX}"));
                let mut previous = None;
                if writable {
                    match Segment::open(&cached) {
                        Ok(seg) if seg.stamps == stamps && seg.year == year && seg.keys.delta_of.is_none() => {
                            remove_if_there(&delta_path);
                            return Ok((seg, None, Outcome::Reused, None));
                        }
                        Ok(seg) if seg.year == year && seg.keys.delta_of.is_none() => {
                            match Segment::open(&delta_path) {
                                Ok(delta)
                                    if delta.stamps == stamps
                                        && delta.year == year
                                        && delta.keys.delta_of.as_ref().is_some_and(|d| d.base == seg.sum) =>
                                {
                                    return Ok((seg, Some(delta), Outcome::Reused, None));
                                }
                                _ => {}
                            }
                            tracing::debug!("{} is stale; refreshing it", cached.display());
                            previous = Some(seg);
                        }
                        Ok(_) => tracing::info!("{} is not this year's segment; rebuilding it", cached.display()),
                        Err(QueryError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::info!("{e}; rebuilding it"),
                    }
                }
                let old = previous.filter(|old| {
                    old.stamps.identity == stamps.identity && old.stamps.dimension == stamps.dimension
                });
                // A delta beside the current segment: O(changed rows) to write.
                let try_delta = |base: &Segment| -> Option<Segment> {
                    let started = Instant::now();
                    let (rows, keys, reuse) = build::delta(base, &path, model.dimension, &files, &stamps.metadata)
                        .unwrap_or_else(|e| {
                            tracing::info!("{e}; rebuilding {year} whole");
                            None
                        })?;
                    match Segment::build(year, stamps.clone(), keys, &rows, Some(&delta_path)) {
                        Ok(delta) => {
                            tracing::debug!(
                                "{year}: delta of {} rows written in {:.2} s ({} rows of the segment kept, {} decoded)",
                                delta.len(),
                                started.elapsed().as_secs_f64(),
                                reuse.rows_reused,
                                reuse.rows_decoded
                            );
                            Some(delta)
                        }
                        Err(e) => {
                            tracing::info!("{e}; rebuilding {year} whole");
                            None
                        }
                    }
                };
                let old = match old {
                    Some(base) => match try_delta(&base) {
                        Some(delta) => return Ok((base, Some(delta), Outcome::Refreshed, None)),
                        None => Some(base),
                    },
                    None => None,
                };
                // Into the cache file `target`, or memory when `None`.
                let make = |target: Option<&Path>| -> Result<(Segment, Outcome), QueryError> {
                    let started = Instant::now();
                    let refreshed = old.as_ref().and_then(|old| {
                        build::refresh(
                            old,
                            &old.keys,
                            &old.stamps.metadata,
                            &path,
                            model.dimension,
                            &files,
                            &stamps.metadata,
                        )
                        .unwrap_or_else(|e| {
                            tracing::info!("{e}; rebuilding {year} from nothing");
                            None
                        })
                    });
                    if let Some((rows, keys, reuse)) = refreshed {
                        tracing::debug!(
                            "{year}: refreshed in {:.2} s ({} rows reused, {} decoded, metadata {})",
                            started.elapsed().as_secs_f64(),
                            reuse.rows_reused,
                            reuse.rows_decoded,
                            if reuse.metadata_parsed {
                                "parsed again"
                            } else {
                                "reused"
                            }
                        );
                        let seg = Segment::build(year, stamps.clone(), keys, &rows, target)?;
                        return Ok((seg, Outcome::Refreshed));
                    }
                    let seg = build::full(year, &path, stamps.clone(), &files, target)?;
                    tracing::debug!("{year}: read in {:.2} s", started.elapsed().as_secs_f64());
                    Ok((seg, Outcome::Built))
                };
                if writable {
                    let made = make(Some(&cached));
                    remove_if_there(&delta_path);
                    match made {
                        Ok((seg, how)) => return Ok((seg, None, how, None)),
                        // Writing failed (a full disk...): the year again, in memory.
                        Err(e @ QueryError::Io { .. }) => {
                            let note = format!("cannot write the vector cache ({e}); using memory");
                            let (seg, _) = make(None)?;
                            return Ok((seg, None, Outcome::Memory, Some(note)));
                        }
                        Err(e) => return Err(e),
                    }
                }
                let (seg, _) = make(None)?;
                Ok((seg, None, Outcome::Memory, None))
            })
            .collect();
        outcomes.sort_by_key(|o| o.as_ref().map_or(0, |(seg, ..)| seg.year.get()));
        let mut segments = Vec::with_capacity(outcomes.len());
        let mut dead = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (segment, delta, how, note) = outcome?;
            let year = segment.year.to_string();
            match how {
                Outcome::Reused => report.reused.push(year),
                Outcome::Built => report.built.push(year),
                Outcome::Refreshed => {
                    report.built.push(year.clone());
                    report.refreshed.push(year);
                }
                Outcome::Memory => report.in_memory.push(year),
            }
            if note.is_some() && report.note.is_none() {
                report.note = note;
            }
            match delta {
                Some(delta) => {
                    let mut bits = vec![0u64; segment.len().div_ceil(64)];
                    for &r in delta.keys.delta_of.iter().flat_map(|d| &d.dead) {
                        if let Some(word) = bits.get_mut(r as usize / 64) {
                            *word |= 1 << (r % 64);
                        }
                    }
                    segments.push(segment);
                    dead.push(Some(bits));
                    segments.push(delta);
                    dead.push(None);
                }
                None => {
                    segments.push(segment);
                    dead.push(None);
                }
            }
        }
        if writable {
            remove_stray_segments(&cache_dir, &year_files.iter().map(|(y, _)| *y).collect());
        }
        let mut starts = Vec::with_capacity(segments.len() + 1);
        let mut total = 0;
        for segment in &segments {
            starts.push(total);
            total += segment.len();
        }
        starts.push(total);
        let dead_rows: usize = dead
            .iter()
            .flatten()
            .map(|bits| bits.iter().map(|w| w.count_ones() as usize).sum::<usize>())
            .sum();
        let live = total - dead_rows;
        report.elapsed_s = started.elapsed().as_secs_f64();
        if let Some(note) = &report.note {
            tracing::warn!("{note}");
        }
        tracing::info!(
            "{}: {} vectors in {} years (cache: {} reused, {} built, {} in memory; {:.2} s; scan kernel {})",
            model.alias,
            live,
            report.reused.len() + report.built.len() + report.in_memory.len(),
            report.reused.len(),
            report.built.len(),
            report.in_memory.len(),
            report.elapsed_s,
            scan::kernel_name()
        );
        Ok(VectorIndex {
            alias: model.alias.to_string(),
            dimension: model.dimension,
            segments,
            dead,
            live,
            starts,
            report,
        })
    }

    /// The model alias.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// Vector dimension.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether row `r` of segment `s` was replaced by a delta.
    fn is_dead(&self, s: usize, r: usize) -> bool {
        self.dead[s]
            .as_ref()
            .is_some_and(|bits| bits.get(r / 64).is_some_and(|w| (w >> (r % 64)) & 1 == 1))
    }

    /// True when there is no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn locate(&self, row: usize) -> Option<(usize, usize)> {
        if row >= self.starts.last().copied().unwrap_or(0) {
            return None;
        }
        let s = self.starts.partition_point(|&start| start <= row) - 1;
        Some((s, row - self.starts[s]))
    }

    /// Paper id of a row (`""` out of range).
    pub fn id(&self, row: usize) -> &str {
        self.locate(row).map_or("", |(s, r)| self.segments[s].id(r))
    }

    /// Year of a row.
    pub fn year(&self, row: usize) -> Option<Year> {
        self.locate(row).map(|(s, _)| self.segments[s].year)
    }

    /// Every paper id, in row order (rows replaced by a delta left out).
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.segments.iter().enumerate().flat_map(move |(s, seg)| {
            (0..seg.len())
                .filter(move |&r| !self.is_dead(s, r))
                .map(move |r| seg.id(r))
        })
    }

    /// Every paper's year, in the order of [`VectorIndex::ids`].
    pub fn years(&self) -> impl Iterator<Item = Year> + '_ {
        self.segments.iter().enumerate().flat_map(move |(s, seg)| {
            (0..seg.len())
                .filter(move |&r| !self.is_dead(s, r))
                .map(move |_| seg.year)
        })
    }

    /// The stored f32 vector of a row.
    pub fn vector(&self, row: usize) -> Result<&[f32], QueryError> {
        let (s, r) = self.locate(row).ok_or(QueryError::NoRow(row))?;
        self.segments[s].vector(r)
    }

    /// The row of a paper id.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.segments
            .iter()
            .zip(&self.starts)
            .enumerate()
            .find_map(|(s, (seg, start))| seg.find(id).filter(|&r| !self.is_dead(s, r)).map(|r| start + r))
    }

    /// A row joined to its metadata; `CacheDamaged` when the cache's bytes
    /// of it fail their checks (see [`segment`]).
    pub fn paper(&self, row: usize) -> Result<Paper<'_>, QueryError> {
        let (s, r) = self.locate(row).ok_or(QueryError::NoRow(row))?;
        let seg = &self.segments[s];
        Ok(Paper {
            paper_id: seg.id(r),
            year: seg.year,
            title: seg.title(r)?,
            categories: seg
                .category_ids(r)
                .iter()
                .filter_map(|&c| seg.categories().get(c as usize).map(String::as_str))
                .collect(),
            published_at: seg.published_at(r)?,
        })
    }

    /// The unit vector in the direction of the mean of the given rows'
    /// unit vectors (f64).
    pub fn mean_direction(&self, rows: &[usize]) -> Result<Vec<f64>, QueryError> {
        let mut sum = vec![0f64; self.dimension];
        for &row in rows {
            let x = self.vector(row)?;
            let norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
            if norm > 0.0 && norm.is_finite() {
                for (s, &v) in sum.iter_mut().zip(x) {
                    *s += f64::from(v) / norm;
                }
            }
        }
        Ok(unit(&sum))
    }

    /// The k rows of highest cosine with `query` that pass `filter`, best
    /// first; equal scores ordered by paper id. Exact: the same rows in the
    /// same order as a full f32 scan.
    pub fn top_k(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>, QueryError> {
        let query: Vec<f64> = query.iter().map(|&v| f64::from(v)).collect();
        self.top_k_f64(&query, k, filter)
    }

    /// [`VectorIndex::top_k`] for a query in f64.
    pub fn top_k_f64(&self, query: &[f64], k: usize, filter: &Filter) -> Result<Vec<Hit>, QueryError> {
        Ok(self
            .top_k_many_f64(&[query.to_vec()], k, filter)?
            .pop()
            .unwrap_or_default())
    }

    /// [`VectorIndex::top_k`] for each of `queries`, in one pass over the
    /// vectors for all of them: the same results as one `top_k` per query,
    /// at a fraction of the cost.
    pub fn top_k_many(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>, QueryError> {
        let queries: Vec<Vec<f64>> = queries
            .iter()
            .map(|q| q.iter().map(|&v| f64::from(v)).collect())
            .collect();
        self.top_k_many_f64(&queries, k, filter)
    }

    /// [`VectorIndex::top_k_many`] for queries in f64.
    pub fn top_k_many_f64(
        &self,
        queries: &[Vec<f64>],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>, QueryError> {
        if let Some(query) = queries.iter().find(|q| q.len() != self.dimension) {
            return Err(QueryError::Dimension {
                found: query.len(),
                expected: self.dimension,
            });
        }
        let units: Vec<Vec<f64>> = queries.iter().map(|q| unit(q)).collect();
        let allowed = self.allowed(filter);
        let hits = scan::top_k_many(&self.segments, &allowed, &units, k)?;
        Ok(hits
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(s, r, score)| Hit {
                        row: self.starts[s] + r,
                        score,
                    })
                    .collect()
            })
            .collect())
    }

    fn allowed(&self, filter: &Filter) -> Vec<Allowed> {
        let mut allowed: Vec<Allowed> = self
            .segments
            .iter()
            .map(|seg| {
                if filter.years.as_ref().is_some_and(|ys| !ys.contains(&seg.year)) {
                    return Allowed::Skip;
                }
                if filter.categories.is_empty() {
                    return Allowed::All;
                }
                let wanted: Vec<u16> = seg
                    .categories()
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| filter.categories.iter().any(|w| w == *c))
                    .map(|(i, _)| i as u16)
                    .collect();
                if wanted.is_empty() {
                    return Allowed::Skip;
                }
                let mut bits = vec![0u64; seg.len().div_ceil(64)];
                for row in 0..seg.len() {
                    if seg.category_ids(row).iter().any(|c| wanted.contains(c)) {
                        bits[row / 64] |= 1 << (row % 64);
                    }
                }
                Allowed::Rows(bits)
            })
            .collect();
        for (s, dead) in self.dead.iter().enumerate() {
            let Some(dead) = dead else { continue };
            let len = self.segments[s].len();
            if let Allowed::All = allowed[s] {
                allowed[s] = Allowed::Rows(every_row(len));
            }
            if let Allowed::Rows(bits) = &mut allowed[s] {
                for (word, dead) in bits.iter_mut().zip(dead) {
                    *word &= !dead;
                }
            }
        }
        for &row in &filter.exclude {
            let Some((s, r)) = self.locate(row) else { continue };
            let len = self.segments[s].len();
            if let Allowed::All = allowed[s] {
                allowed[s] = Allowed::Rows(every_row(len));
            }
            if let Allowed::Rows(bits) = &mut allowed[s] {
                bits[r / 64] &= !(1u64 << (r % 64));
            }
        }
        allowed
    }
}

/// Bits set for rows `0..len`.
fn every_row(len: usize) -> Vec<u64> {
    let mut bits = vec![u64::MAX; len.div_ceil(64)];
    if !len.is_multiple_of(64)
        && let Some(last) = bits.last_mut()
    {
        *last = (1u64 << (len % 64)) - 1;
    }
    bits
}

fn unit(v: &[f64]) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

enum Outcome {
    Reused,
    Built,
    Refreshed,
    Memory,
}

/// A year's segment, its delta if it has one, how they were obtained, and why it is not cached if not.
type Opened = (Segment, Option<Segment>, Outcome, Option<String>);

/// Creates `<alias>/.cache/vectors/` (never through a symlink) and removes
/// temporaries that dead processes left there.
fn prepare_cache_dir(model_dir: &Path, cache_dir: &Path) -> std::io::Result<()> {
    crate::store::atomic::create_owned_dir(&model_dir.join(CACHE_DIR))?;
    crate::store::atomic::create_owned_dir(cache_dir)?;
    crate::store::atomic::remove_orphaned_temporaries(cache_dir)?;
    // Creating a file is the only reliable test (permissions, read-only
    // mounts, root squash all differ).
    tempfile::Builder::new()
        .prefix(&format!(
            "{}{}-probe",
            crate::store::atomic::TEMP_PREFIX,
            std::process::id()
        ))
        .tempfile_in(cache_dir)
        .map(drop)
}

/// Removes `path`, if there is such a file.
fn remove_if_there(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::debug!("cannot remove {}: {e}", path.display());
    }
}

/// Whether `dir` holds any segment file (a cache that was built before).
fn holds_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".seg"))
    })
}

/// Deletes segment files of years that no longer have a year file.
fn remove_stray_segments(cache_dir: &Path, years: &BTreeSet<Year>) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name
            .strip_suffix(DELTA_SUFFIX)
            .or_else(|| name.strip_suffix(".seg"))
            && Year::parse(stem).is_none_or(|y| !years.contains(&y))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
