//! Read-only questions about the metadata that need no diff: how many
//! papers each year holds, and every paper of some years
//! (`embed --reembed`). A paper with rows in several years counts once, in
//! the year it belongs to (see [`super::duplicates`]).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use super::duplicates::load_all;
use crate::metadata::{Discovery, MetadataFile, Year};
use crate::store::ModelStore;
use crate::store::cache::RefreshState;

/// Metadata papers per year without writing anything, each paper counted
/// once, in the year it belongs to: from the refresh state when no
/// metadata file changed since, else from the metadata index, else by
/// reading the CSVs.
pub fn metadata_counts(store: &ModelStore, discovery: &Discovery, prefix: &str) -> BTreeMap<Year, u64> {
    let current = super::metadata_stamps(&discovery.files.iter().collect::<Vec<_>>());
    if let Some(state) = RefreshState::load(&store.dir).filter(|s| s.metadata == current) {
        let counts: Option<BTreeMap<Year, u64>> = discovery
            .years()
            .into_iter()
            .map(|year| Some((year, state.years.get(&year.to_string())?.papers)))
            .collect();
        if let Some(counts) = counts {
            return counts;
        }
    }
    let (years, _) = load_all(&store.embeddings_dir, discovery, prefix, false);
    years
        .into_iter()
        .map(|y| (y.year, y.papers.len() as u64))
        .collect()
}

/// Every paper with a non-empty text in the metadata of `years` (all years
/// when `None`), once, in the year it belongs to: the work of `--reembed`.
/// Returns (paper id, origin, year).
pub fn all_papers(
    store: &ModelStore,
    discovery: &Discovery,
    prefix: &str,
    years: Option<&BTreeSet<Year>>,
    save: bool,
) -> Vec<(String, String, Year)> {
    let (all, _) = load_all(&store.embeddings_dir, discovery, prefix, save);
    all.into_par_iter()
        .filter(|y| years.is_none_or(|set| set.contains(&y.year)))
        .flat_map_iter(|y| {
            let files: Vec<&MetadataFile> = discovery.files_of(y.year).collect();
            y.papers
                .into_iter()
                .filter(|p| !p.empty)
                .map(|p| (p.paper_id.to_string(), files[p.origin].origin.clone(), y.year))
                .collect::<Vec<_>>()
        })
        .collect()
}
