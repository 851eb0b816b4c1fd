//! Read-only questions about the metadata that need no diff: how many
//! papers each year holds (`status`), and every paper of some years
//! (`embed --reembed`).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::metadata::{Discovery, MetadataFile, Year};
use crate::store::ModelStore;
use crate::store::cache::{FileStamp, RefreshState};

/// Metadata papers per year without writing anything: from the refresh
/// state when its inputs are current, else from the metadata index, else by
/// reading the CSVs. Used by `papersys status`.
pub fn metadata_counts(store: &ModelStore, discovery: &Discovery, prefix: &str) -> BTreeMap<Year, u64> {
    let state = RefreshState::load(&store.dir);
    let index_dir = store.embeddings_dir.clone();
    discovery
        .years()
        .par_iter()
        .map(|&year| {
            let files: Vec<&MetadataFile> = discovery.files_of(year).collect();
            let current: Vec<(String, FileStamp)> = files
                .iter()
                .map(|f| {
                    (
                        f.origin.clone(),
                        FileStamp::of(&f.path).unwrap_or(FileStamp { size: 0, mtime_ns: 0 }),
                    )
                })
                .collect();
            let cached = state
                .as_ref()
                .and_then(|s| s.years.get(&year.to_string()))
                .filter(|s| s.inputs.metadata == current)
                .map(|s| s.papers);
            let papers = cached.unwrap_or_else(|| {
                super::index::year_metadata(&index_dir, &files, prefix, false)
                    .0
                    .len() as u64
            });
            (year, papers)
        })
        .collect()
}

/// Every paper with a non-empty text in the metadata of `years` (all years
/// when `None`): the work of `--reembed`. Returns (paper id, origin, year).
pub fn all_papers(
    store: &ModelStore,
    discovery: &Discovery,
    prefix: &str,
    years: Option<&BTreeSet<Year>>,
    save: bool,
) -> Vec<(String, String, Year)> {
    let chosen: Vec<Year> = discovery
        .years()
        .into_iter()
        .filter(|y| years.is_none_or(|set| set.contains(y)))
        .collect();
    chosen
        .par_iter()
        .flat_map_iter(|&year| {
            let files: Vec<&MetadataFile> = discovery.files_of(year).collect();
            let (papers, _, _, _) = super::index::year_metadata(&store.embeddings_dir, &files, prefix, save);
            papers
                .into_iter()
                .filter(|p| !p.empty)
                .map(|p| (p.paper_id.to_string(), files[p.origin].origin.clone(), year))
                .collect::<Vec<_>>()
        })
        .collect()
}
