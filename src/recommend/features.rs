//! Feature vectors: each paper's vectors of every configured model alias,
//! concatenated in the configured order, read from the year files.
//!
//! The year files are streamed (one batch at a time, files in parallel) and
//! only the vectors a run needs are kept: rated papers, candidates, and the
//! background sample, which is chosen while streaming (the eligible papers
//! with the smallest [`super::select::background_key`]), so memory holds a
//! few thousand vectors however large the store is. A paper lacking a
//! vector of any alias, or with a null or non-finite value, is left out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use rayon::prelude::*;

use super::select::background_key;
use crate::config::Alias;
use crate::store::manifest::{self, Manifest};
use crate::store::year_file::{self, YearFileError};

/// One model's vectors on disk.
#[derive(Clone, Debug)]
pub struct AliasSource {
    /// The alias.
    pub alias: Alias,
    /// Its directory.
    pub dir: PathBuf,
    /// Vector length.
    pub dimension: usize,
    /// Year files, ascending.
    pub files: Vec<PathBuf>,
    /// Its manifest, when readable.
    pub manifest: Option<Manifest>,
}

/// What to read.
pub struct Wanted<'a> {
    /// Papers whose vectors are needed whenever they exist (rated papers, candidates).
    pub fixed: &'a HashSet<String>,
    /// Papers eligible as background negatives.
    pub background: &'a HashSet<String>,
    /// Background papers to keep at most.
    pub background_max: usize,
    /// Seed of the background sample.
    pub seed: u64,
}

/// The vectors of a run.
#[derive(Debug, Default)]
pub struct Features {
    /// Length of a concatenated vector.
    pub dimension: usize,
    /// Fixed papers with every vector, concatenated.
    pub fixed: HashMap<String, Vec<f32>>,
    /// Fixed papers with a null or non-finite vector in some model.
    pub invalid: HashSet<String>,
    /// Background papers with the smallest keys, ascending by key.
    pub background: Vec<(String, Vec<f32>)>,
    /// Eligible background papers that have usable vectors of every model.
    pub background_usable: u64,
}

/// Why vectors could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The model has no year files.
    #[error(
        "model `{alias}` has no vectors ({} holds no YYYY.parquet); run `papersys embed --model {alias}` first, \
         or remove it from `recommend_pipeline.data.embedding_columns`",
        .dir.display()
    )]
    NoVectors {
        /// The alias.
        alias: Alias,
        /// Its directory.
        dir: PathBuf,
    },
    /// The model's dimension is unknown (no manifest, not configured).
    #[error(
        "model `{alias}` is neither in [[embedding.models]] nor described by {}/manifest.json, so its vector length is unknown",
        .dir.display()
    )]
    UnknownDimension {
        /// The alias.
        alias: Alias,
        /// Its directory.
        dir: PathBuf,
    },
    /// A year file could not be read.
    #[error(transparent)]
    YearFile(#[from] YearFileError),
    /// The directory could not be listed.
    #[error("{}: {source}", .dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl AliasSource {
    /// Describes `alias` stored in `dir`; `configured` is the config's dimension if any.
    pub fn open(alias: Alias, dir: PathBuf, configured: Option<usize>) -> Result<AliasSource, FeatureError> {
        let files: Vec<PathBuf> = manifest::year_files(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })
            .map_err(|source| FeatureError::Io {
                dir: dir.clone(),
                source,
            })?
            .into_iter()
            .map(|(_, path)| path)
            .collect();
        if files.is_empty() {
            return Err(FeatureError::NoVectors { alias, dir });
        }
        let manifest = Manifest::read(&dir).ok().flatten();
        let dimension = match (configured, &manifest) {
            (Some(d), _) => d,
            (None, Some(m)) => m.dimension,
            (None, None) => return Err(FeatureError::UnknownDimension { alias, dir }),
        };
        Ok(AliasSource {
            alias,
            dir,
            dimension,
            files,
            manifest,
        })
    }
}

/// What one file contributed in a pass.
#[derive(Default)]
struct Partial {
    fixed: HashMap<String, Vec<f32>>,
    invalid: HashSet<String>,
    /// (key, id) -> vector, at most `background_max` entries.
    background: BTreeMap<(u64, String), Vec<f32>>,
    /// Ids seen with a usable vector (validity passes).
    valid: HashSet<String>,
}

fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Reads the features of `wanted` from `sources` (in order).
pub fn load(sources: &[AliasSource], wanted: &Wanted<'_>) -> Result<Features, FeatureError> {
    // Only the year files that hold a wanted paper are decoded.
    let holding: Vec<AliasSource> = sources
        .iter()
        .map(|source| {
            let found: Vec<Option<PathBuf>> = source
                .files
                .par_iter()
                .map(|path| {
                    let holds = year_file::holds_any(path, |id| {
                        wanted.fixed.contains(id) || wanted.background.contains(id)
                    })?;
                    Ok(holds.then(|| path.clone()))
                })
                .collect::<Result<_, FeatureError>>()?;
            Ok(AliasSource {
                files: found.into_iter().flatten().collect(),
                ..source.clone()
            })
        })
        .collect::<Result<_, FeatureError>>()?;
    let Some((first, others)) = holding.split_first() else {
        return Ok(Features::default());
    };
    // Pass 1, other models: which wanted papers have a usable vector there.
    let mut valid_elsewhere: Vec<HashSet<String>> = Vec::new();
    let mut invalid: HashSet<String> = HashSet::new();
    for source in others {
        let partials = scan(source, |id, vector, part: &mut Partial| {
            if wanted.fixed.contains(id) || wanted.background.contains(id) {
                match vector {
                    Some(v) if finite(v) => {
                        part.valid.insert(id.to_string());
                    }
                    _ => {
                        part.invalid.insert(id.to_string());
                    }
                }
            }
        })?;
        let mut valid = HashSet::new();
        for part in partials {
            valid.extend(part.valid);
            invalid.extend(part.invalid.into_iter().filter(|id| wanted.fixed.contains(id)));
        }
        valid_elsewhere.push(valid);
    }
    let everywhere = |id: &str| valid_elsewhere.iter().all(|set| set.contains(id));
    // Pass 2, the first model: keep fixed vectors and the background sample.
    let partials = scan(first, |id, vector, part: &mut Partial| {
        let fixed = wanted.fixed.contains(id);
        if !fixed && !wanted.background.contains(id) {
            return;
        }
        let Some(v) = vector.filter(|v| finite(v)) else {
            if fixed {
                part.invalid.insert(id.to_string());
            }
            return;
        };
        if !everywhere(id) {
            return;
        }
        if fixed {
            part.fixed.insert(id.to_string(), v.to_vec());
        }
        if wanted.background.contains(id) {
            part.valid.insert(id.to_string());
            let key = (background_key(wanted.seed, id), id.to_string());
            let full = part.background.len() >= wanted.background_max;
            if !full
                || part
                    .background
                    .last_key_value()
                    .is_some_and(|(last, _)| key < *last)
            {
                part.background.insert(key, v.to_vec());
                if part.background.len() > wanted.background_max {
                    part.background.pop_last();
                }
            }
        }
    })?;
    let mut features = Features {
        dimension: sources.iter().map(|s| s.dimension).sum(),
        invalid,
        ..Features::default()
    };
    let mut background: BTreeMap<(u64, String), Vec<f32>> = BTreeMap::new();
    let mut usable: HashSet<String> = HashSet::new();
    for part in partials {
        // Later files win for a paper stored twice.
        for id in &part.fixed {
            features.invalid.remove(id.0);
        }
        features.fixed.extend(part.fixed);
        features.invalid.extend(part.invalid);
        background.extend(part.background);
        while background.len() > wanted.background_max {
            background.pop_last();
        }
        usable.extend(part.valid);
    }
    features.invalid.retain(|id| !features.fixed.contains_key(id));
    features.background_usable = usable.len() as u64;
    let mut chosen: HashMap<String, Vec<f32>> = background.into_iter().map(|((_, id), v)| (id, v)).collect();
    // Pass 3, other models: append their vectors to the kept papers.
    for source in others {
        let partials = scan(source, |id, vector, part: &mut Partial| {
            if let Some(v) = vector
                && finite(v)
                && (features.fixed.contains_key(id) || chosen.contains_key(id))
            {
                part.fixed.insert(id.to_string(), v.to_vec());
            }
        })?;
        let mut found: HashMap<String, Vec<f32>> = HashMap::new();
        for part in partials {
            found.extend(part.fixed);
        }
        for (id, vector) in features.fixed.iter_mut().chain(chosen.iter_mut()) {
            match found.get(id) {
                Some(more) => vector.extend_from_slice(more),
                None => vector.clear(),
            }
        }
    }
    let dimension = features.dimension;
    features.fixed.retain(|_, v| v.len() == dimension);
    let mut kept: Vec<(u64, String, Vec<f32>)> = chosen
        .into_iter()
        .filter(|(_, v)| v.len() == dimension)
        .map(|(id, v)| (background_key(wanted.seed, &id), id, v))
        .collect();
    kept.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    features.background = kept.into_iter().map(|(_, id, v)| (id, v)).collect();
    Ok(features)
}

/// Streams every year file of `source` in parallel; partial results come
/// back in file order.
fn scan(
    source: &AliasSource,
    visit: impl Fn(&str, Option<&[f32]>, &mut Partial) + Sync,
) -> Result<Vec<Partial>, FeatureError> {
    source
        .files
        .par_iter()
        .map(|path| {
            let mut part = Partial::default();
            year_file::for_each_vector(path, source.dimension, |id, v| visit(id, v, &mut part))?;
            Ok(part)
        })
        .collect()
}
