//! The ids of one year's metadata as sorted 64-bit hashes: what lets a
//! refresh find the papers a changed CSV shares with years that did not
//! change without reading those years (see `plan::duplicates`). A matching
//! hash only makes a year a candidate; the plan then reads it and compares
//! ids. Kept beside the metadata index (shared by every model), one file
//! per year, keyed by the stamps of the year's files and checksummed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::{CACHE_DIR, CACHE_VERSION, FileStamp, frame_end, frame_start, index_dir, open_frame};
use crate::store::atomic::{create_owned_dir, write_bytes_atomic};

const MAGIC: &[u8; 8] = b"PSIDH\x00\x00\x01";

/// The hash of a paper id in [`IdHashes`].
pub fn id_hash(id: &str) -> u64 {
    xxh3_64(id.as_bytes())
}

/// One year's paper ids, hashed, with the stamps of the files they came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdHashes {
    /// The year's metadata files (origin and stamp, precedence order).
    pub files: Vec<(String, FileStamp)>,
    /// [`id_hash`] of every id, sorted and unique.
    pub hashes: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    year: String,
    files: Vec<(String, FileStamp)>,
    count: u64,
}

fn path(embeddings_dir: &Path, year: &str) -> PathBuf {
    index_dir(embeddings_dir).join(format!("{year}.ids"))
}

impl IdHashes {
    /// The hashes of `ids`, read from `files`.
    pub fn of<'a>(ids: impl IntoIterator<Item = &'a str>, files: Vec<(String, FileStamp)>) -> IdHashes {
        let mut hashes: Vec<u64> = ids.into_iter().map(id_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        IdHashes { files, hashes }
    }

    /// Whether any hash is also in `sorted` (ascending).
    pub fn shares_any(&self, sorted: &[u64]) -> bool {
        let (mut a, mut b) = (self.hashes.iter().peekable(), sorted.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match x.cmp(y) {
                std::cmp::Ordering::Less => {
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                }
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// The saved hashes of `year` if they were taken from exactly `files`
    /// and are intact; `None` otherwise.
    pub fn load(embeddings_dir: &Path, year: &str, files: &[(String, FileStamp)]) -> Option<IdHashes> {
        let bytes = std::fs::read(path(embeddings_dir, year)).ok()?;
        let (header, mut cursor): (Header, _) = open_frame(&bytes, MAGIC)?;
        if header.version != CACHE_VERSION || header.year != year || header.files != files {
            return None;
        }
        let count = usize::try_from(header.count).ok()?;
        let raw = cursor.take(count.checked_mul(8)?)?;
        if !cursor.bytes.is_empty() {
            return None;
        }
        let hashes: Vec<u64> = raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect();
        // The lookups rely on the order.
        if hashes.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        Some(IdHashes {
            files: header.files,
            hashes,
        })
    }

    /// Saves the hashes of `year` (atomically; a failure only costs a read
    /// of the year's metadata later).
    pub fn save(&self, embeddings_dir: &Path, year: &str) -> std::io::Result<()> {
        let header = Header {
            version: CACHE_VERSION,
            year: year.to_string(),
            files: self.files.clone(),
            count: self.hashes.len() as u64,
        };
        let mut out = frame_start(MAGIC, &header, self.hashes.len() * 8);
        for hash in &self.hashes {
            out.extend_from_slice(&hash.to_le_bytes());
        }
        frame_end(&mut out);
        create_owned_dir(&embeddings_dir.join(CACHE_DIR))?;
        create_owned_dir(&index_dir(embeddings_dir))?;
        write_bytes_atomic(&path(embeddings_dir, year), &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(size: u64) -> Vec<(String, FileStamp)> {
        vec![(
            "metadata/metadata-2024.csv".into(),
            FileStamp {
                size,
                mtime_ns: 1_700_000_000_000_000_123,
            },
        )]
    }

    #[test]
    fn hashes_round_trip_keyed_by_the_year_and_its_files_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hashes = IdHashes::of(["2401.2", "2401.1", "2401.2"], files(10));
        assert_eq!(hashes.hashes.len(), 2, "unique");
        hashes.save(dir.path(), "2024").unwrap();
        assert_eq!(
            IdHashes::load(dir.path(), "2024", &files(10)),
            Some(hashes.clone())
        );
        assert_eq!(
            IdHashes::load(dir.path(), "2024", &files(11)),
            None,
            "another stamp"
        );
        assert_eq!(
            IdHashes::load(dir.path(), "2023", &files(10)),
            None,
            "another year"
        );
        let at = path(dir.path(), "2024");
        let mut bytes = std::fs::read(&at).unwrap();
        let last_hash = bytes.len() - 9;
        bytes[last_hash] ^= 1;
        std::fs::write(&at, &bytes).unwrap();
        assert_eq!(IdHashes::load(dir.path(), "2024", &files(10)), None, "checksum");
        std::fs::write(&at, &bytes[..5]).unwrap();
        assert_eq!(IdHashes::load(dir.path(), "2024", &files(10)), None, "truncated");
    }

    #[test]
    fn shares_any_finds_a_common_hash_in_sorted_lists() {
        let year = IdHashes {
            files: Vec::new(),
            hashes: vec![1, 5, 9],
        };
        assert!(year.shares_any(&[2, 9]));
        assert!(!year.shares_any(&[0, 2, 6, 10]));
        assert!(!year.shares_any(&[]));
    }
}
