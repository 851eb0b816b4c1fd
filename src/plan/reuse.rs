//! When a refresh may reuse its previous result: the cache policy. A year
//! is reused only when its metadata files and year file have the stamps the
//! refresh state recorded, no checkpoint of it waits, and the state itself
//! matches the prefix, dimension and backlog file it was computed for.

use std::collections::BTreeSet;

use crate::metadata::{Discovery, MetadataFile, Year};
use crate::store::backlog;
use crate::store::cache::{FileStamp, RefreshState};
use crate::store::{ModelStore, checkpoint};

/// Origin and stamp of each file, the key of the per-year caches.
pub fn metadata_stamps(files: &[&MetadataFile]) -> Vec<(String, FileStamp)> {
    files
        .iter()
        .map(|f| {
            (
                f.origin.clone(),
                FileStamp::of(&f.path).unwrap_or(FileStamp { size: 0, mtime_ns: 0 }),
            )
        })
        .collect()
}

/// True when the backlog on disk was computed from exactly the metadata and
/// year files there now, with no checkpoint waiting to be folded: then it
/// can be used as it is (`papersys embed --backlog`, `status`).
pub fn is_current(store: &ModelStore, discovery: &Discovery) -> bool {
    let Some(state) = RefreshState::load(&store.dir) else {
        return false;
    };
    if state.backlog != FileStamp::of(&store.dir.join(backlog::BACKLOG_FILE)) {
        return false;
    }
    let (Ok(year_files), Ok(checkpoints)) = (store.year_files(), checkpoint::list(&store.dir)) else {
        return false;
    };
    if !checkpoints.is_empty() {
        return false;
    }
    let years: BTreeSet<Year> = discovery
        .years()
        .into_iter()
        .chain(year_files.iter().map(|(y, _)| *y))
        .collect();
    years.len() == state.years.len()
        && years.iter().all(|year| {
            let files: Vec<&MetadataFile> = discovery.files_of(*year).collect();
            state.years.get(&year.to_string()).is_some_and(|summary| {
                summary.inputs.metadata == metadata_stamps(&files)
                    && summary.inputs.year_file == FileStamp::of(&store.year_path(*year))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_the_files_and_a_missing_file_has_a_zero_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata-2024.csv");
        std::fs::write(&path, "paper_id,title,abstract\n").unwrap();
        let file = MetadataFile {
            path: path.clone(),
            origin: "metadata/metadata-2024.csv".into(),
            year: Year::parse("2024").unwrap(),
        };
        let before = metadata_stamps(&[&file]);
        assert_eq!(before[0].0, "metadata/metadata-2024.csv");
        assert_eq!(before[0].1.size, 24);
        std::fs::write(&path, "paper_id,title,abstract\n1,t,a\n").unwrap();
        assert_ne!(metadata_stamps(&[&file]), before, "a grown file has a new stamp");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(metadata_stamps(&[&file])[0].1, FileStamp { size: 0, mtime_ns: 0 });
    }
}
