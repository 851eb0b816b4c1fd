//! Caches that make repeated backlog refreshes cheap. Never the truth.
//!
//! They live in `.cache/` directories (the metadata index under the
//! embeddings directory, shared by all models; the refresh state under each
//! model's directory) and are keyed by the size and modification
//! time of the files they summarise. A cache entry that is missing, stale,
//! from another papersys version or damaged (its checksum does not match) is
//! ignored and rebuilt from the files themselves; deleting `.cache/` at any
//! time is safe.
//!
//! * The **metadata index** holds, per input CSV, every row's paper id, text
//!   hash and whether its text is empty (plus the file's row issues), so an
//!   unchanged CSV is not parsed again.
//! * The **refresh state** records, per year, the stamps of everything that
//!   year's backlog rows were computed from. When none changed, the year's
//!   rows are taken from the previous `backlog.parquet` as they are.
//! * The **id hashes** hold, per year, the hashes of its paper ids (beside
//!   the metadata index), so a refresh after one year's CSV changed checks
//!   only that year's papers against the others for papers filed in several
//!   years, without reading the unchanged years.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::atomic::{create_owned_dir, write_bytes_atomic};
use crate::text::TextHash;

mod id_hashes;
pub use id_hashes::{IdHashes, id_hash};

/// Directory of the caches inside a model directory.
pub const CACHE_DIR: &str = ".cache";

/// Bumped whenever the meaning of cached data changes.
const CACHE_VERSION: u32 = 2;

const INDEX_MAGIC: &[u8; 8] = b"PSIDX\x00\x00\x01";

/// Size and modification time of a file: changes whenever its content does
/// (the same rule make and rsync rely on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
}

impl FileStamp {
    /// Stamp of `path`; `None` when it does not exist or cannot be stat'ed.
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        let mtime_ns = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        Some(FileStamp {
            size: meta.len(),
            mtime_ns,
        })
    }
}

/// One row of a metadata CSV, as the plan needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Paper id.
    pub paper_id: Box<str>,
    /// Hash of the prefixed text.
    pub hash: TextHash,
    /// Title and abstract both empty.
    pub empty: bool,
    /// `updated_at` in microseconds since the Unix epoch;
    /// [`NO_UPDATED_AT`] when empty or unreadable (older than any date).
    pub updated: i64,
}

/// [`IndexEntry::updated`] of a row whose `updated_at` is empty or unreadable.
pub const NO_UPDATED_AT: i64 = i64::MIN;

/// A row problem remembered with the index, so a cached file still reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedIssue {
    /// Line of the row, if any.
    pub line: Option<u64>,
    /// The message.
    pub message: String,
}

/// Everything a refresh needs from one metadata CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileIndex {
    /// The file's origin (relative to the data root).
    pub origin: String,
    /// The file's stamp when it was read.
    pub stamp: FileStamp,
    /// Hash of the document prefix the text hashes include.
    pub prefix_hash: u64,
    /// Rows in file order (duplicates kept; the plan resolves them).
    pub entries: Vec<IndexEntry>,
    /// Rows skipped as unusable.
    pub skipped: u64,
    /// Problems found while reading.
    pub issues: Vec<CachedIssue>,
}

#[derive(Serialize, Deserialize)]
struct IndexHeader {
    version: u32,
    origin: String,
    stamp: FileStamp,
    prefix_hash: u64,
    rows: u64,
    skipped: u64,
    issues: Vec<CachedIssue>,
}

/// The directory of the metadata index, shared by every model.
pub fn index_dir(embeddings_dir: &Path) -> PathBuf {
    embeddings_dir.join(CACHE_DIR).join("metadata-index")
}

/// Hash identifying a document prefix in cache keys.
pub fn prefix_hash(prefix: &str) -> u64 {
    xxh3_64(prefix.as_bytes())
}

/// Where the index of `origin` for `prefix_hash` lives. Shared by all
/// models (under the embeddings directory), so a second model with the same
/// prefix reuses the first one's read of the metadata.
fn index_path(embeddings_dir: &Path, origin: &str, prefix_hash: u64) -> PathBuf {
    index_dir(embeddings_dir).join(format!(
        "{:016x}-{prefix_hash:016x}.idx",
        xxh3_64(origin.as_bytes())
    ))
}

impl FileIndex {
    /// Loads the cached index of `origin` if it is exactly for `stamp` and
    /// `prefix_hash` and intact; `None` otherwise.
    pub fn load(
        embeddings_dir: &Path,
        origin: &str,
        stamp: FileStamp,
        prefix_hash: u64,
    ) -> Option<FileIndex> {
        let bytes = std::fs::read(index_path(embeddings_dir, origin, prefix_hash)).ok()?;
        let index = FileIndex::decode(&bytes)?;
        (index.origin == origin && index.stamp == stamp && index.prefix_hash == prefix_hash).then_some(index)
    }

    /// Saves the index (atomically; failures only cost a re-read later).
    pub fn save(&self, embeddings_dir: &Path) -> std::io::Result<()> {
        let path = index_path(embeddings_dir, &self.origin, self.prefix_hash);
        create_owned_dir(&embeddings_dir.join(CACHE_DIR))?;
        create_owned_dir(&index_dir(embeddings_dir))?;
        write_bytes_atomic(&path, &self.encode())
    }

    fn encode(&self) -> Vec<u8> {
        let header = IndexHeader {
            version: CACHE_VERSION,
            origin: self.origin.clone(),
            stamp: self.stamp,
            prefix_hash: self.prefix_hash,
            rows: self.entries.len() as u64,
            skipped: self.skipped,
            issues: self.issues.clone(),
        };
        let mut out = frame_start(INDEX_MAGIC, &header, self.entries.len() * 32);
        for entry in &self.entries {
            let id = entry.paper_id.as_bytes();
            out.extend_from_slice(&(id.len() as u32).to_le_bytes());
            out.extend_from_slice(id);
            out.extend_from_slice(&entry.hash.0.to_le_bytes());
            out.push(u8::from(entry.empty));
            out.extend_from_slice(&entry.updated.to_le_bytes());
        }
        frame_end(&mut out);
        out
    }

    fn decode(bytes: &[u8]) -> Option<FileIndex> {
        let (header, mut cursor): (IndexHeader, _) = open_frame(bytes, INDEX_MAGIC)?;
        if header.version != CACHE_VERSION {
            return None;
        }
        let rows = usize::try_from(header.rows).ok()?;
        let mut entries = Vec::with_capacity(rows.min(cursor.bytes.len() / 29));
        for _ in 0..rows {
            let len = cursor.u32()? as usize;
            let id = std::str::from_utf8(cursor.take(len)?).ok()?;
            let hash = u128::from_le_bytes(cursor.take(16)?.try_into().ok()?);
            let empty = cursor.take(1)?[0] != 0;
            let updated = i64::from_le_bytes(cursor.take(8)?.try_into().ok()?);
            entries.push(IndexEntry {
                paper_id: id.into(),
                hash: TextHash(hash),
                empty,
                updated,
            });
        }
        if !cursor.bytes.is_empty() {
            return None;
        }
        Some(FileIndex {
            origin: header.origin,
            stamp: header.stamp,
            prefix_hash: header.prefix_hash,
            entries,
            skipped: header.skipped,
            issues: header.issues,
        })
    }
}

/// The binary caches are framed alike: an 8-byte magic, a JSON header
/// (length first), the body, and the XXH3-64 of everything before it.
/// Starts a frame with `magic` and `header`, room made for `body` bytes.
fn frame_start(magic: &[u8; 8], header: &impl Serialize, body: usize) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(24 + header.len() + body);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

/// Ends a frame: appends the checksum.
fn frame_end(out: &mut Vec<u8>) {
    let checksum = xxh3_64(out);
    out.extend_from_slice(&checksum.to_le_bytes());
}

/// Opens a frame: its header and a cursor on its body; `None` when the
/// checksum, the magic or the header is wrong.
fn open_frame<'a, H: serde::de::DeserializeOwned>(
    bytes: &'a [u8],
    magic: &[u8; 8],
) -> Option<(H, Cursor<'a>)> {
    let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if xxh3_64(body) != u64::from_le_bytes(checksum.try_into().ok()?) {
        return None;
    }
    let mut cursor = Cursor { bytes: body };
    if cursor.take(8)? != magic {
        return None;
    }
    let header_len = usize::try_from(cursor.u64()?).ok()?;
    let header = serde_json::from_slice(cursor.take(header_len)?).ok()?;
    Some((header, cursor))
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.bytes.split_at_checked(n)?;
        self.bytes = tail;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// Inputs one year's backlog rows were computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YearInputs {
    /// Each metadata file of the year: origin and stamp, in precedence order.
    pub metadata: Vec<(String, FileStamp)>,
    /// The year file's stamp, `None` when it does not exist.
    pub year_file: Option<FileStamp>,
}

/// What the refresh learnt about one year.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YearSummary {
    /// The inputs the numbers below were computed from.
    pub inputs: YearInputs,
    /// Distinct papers in the year's metadata.
    pub papers: u64,
    /// Rows read from the year's CSVs (before de-duplication).
    pub rows: u64,
    /// Waiting papers per reason.
    pub waiting: BTreeMap<String, u64>,
    /// Problems found in the year's input, reported again whenever the
    /// summary is reused (a bad row must not go quiet after the first run).
    #[serde(default)]
    pub issues: Vec<YearIssue>,
    /// Papers of the year's metadata whose newest row is in another year
    /// (not counted in `papers`).
    #[serde(default)]
    pub elsewhere: u64,
    /// XXH3-64 of those papers' ids: the year's rows hold only while the
    /// same papers belong elsewhere.
    #[serde(default)]
    pub elsewhere_hash: u64,
}

/// A paper with metadata rows in several years, as a refresh resolved it:
/// its newest row (then the later year) decides the one year it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossYearPaper {
    /// The paper.
    pub paper_id: String,
    /// The year it belongs to (four digits).
    pub owner: String,
    /// The metadata file of that year its row comes from.
    pub owner_origin: String,
    /// The other years holding a row of it, with the file: `(year, origin)`.
    pub others: Vec<(String, String)>,
}

/// An input problem remembered in the refresh state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YearIssue {
    /// File the problem is in.
    pub path: PathBuf,
    /// Line, when the problem is a row.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// The refresh state of a model: per-year summaries and the backlog file
/// they were written to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshState {
    version: u32,
    /// Prefix hash the text hashes were computed with.
    pub prefix_hash: u64,
    /// Dimension the year files were checked against.
    pub dimension: usize,
    /// Stamp of `backlog.parquet` as written (`None`: no backlog file).
    pub backlog: Option<FileStamp>,
    /// Summaries keyed by four-digit year.
    pub years: BTreeMap<String, YearSummary>,
    /// Every metadata file (origin and stamp) the refresh read, all years:
    /// `cross_year` holds while these are unchanged.
    #[serde(default)]
    pub metadata: Vec<(String, FileStamp)>,
    /// Papers with rows in several years and the year each belongs to.
    #[serde(default)]
    pub cross_year: Vec<CrossYearPaper>,
    /// The stamps of each year's metadata files (four-digit year) that
    /// `cross_year` was resolved from: after a change, only the years whose
    /// stamps differ are checked again.
    #[serde(default)]
    pub metadata_years: BTreeMap<String, Vec<(String, FileStamp)>>,
}

/// Start of the refresh state's last line: the XXH3-64 of the JSON before it.
const STATE_CHECKSUM: &[u8] = b"xxh3_64 ";

/// Splitting a byte slice at its last occurrence of a byte.
trait RsplitOnceByte {
    fn rsplit_once_byte(&self, byte: u8) -> Option<(&[u8], &[u8])>;
}

impl RsplitOnceByte for [u8] {
    fn rsplit_once_byte(&self, byte: u8) -> Option<(&[u8], &[u8])> {
        let at = self.iter().rposition(|&b| b == byte)?;
        Some((&self[..at], &self[at + 1..]))
    }
}

fn state_path(model_dir: &Path) -> PathBuf {
    model_dir.join(CACHE_DIR).join("refresh-state.json")
}

impl RefreshState {
    /// A fresh state for these settings.
    pub fn new(prefix_hash: u64, dimension: usize) -> RefreshState {
        RefreshState {
            version: CACHE_VERSION,
            prefix_hash,
            dimension,
            backlog: None,
            years: BTreeMap::new(),
            metadata: Vec::new(),
            cross_year: Vec::new(),
            metadata_years: BTreeMap::new(),
        }
    }

    /// Loads the state; `None` when absent, damaged (its checksum does not
    /// match, or its counts contradict each other), or from another version.
    pub fn load(model_dir: &Path) -> Option<RefreshState> {
        let bytes = std::fs::read(state_path(model_dir)).ok()?;
        let (body, trailer) = bytes.strip_suffix(b"\n")?.rsplit_once_byte(b'\n')?;
        let checksum = std::str::from_utf8(trailer.strip_prefix(STATE_CHECKSUM)?).ok()?;
        if u64::from_str_radix(checksum, 16).ok()? != xxh3_64(body) {
            return None;
        }
        let state: RefreshState = serde_json::from_slice(body).ok()?;
        let consistent = state
            .years
            .values()
            .all(|y| y.papers.checked_add(y.elsewhere).is_some_and(|n| y.rows >= n));
        (state.version == CACHE_VERSION && consistent).then_some(state)
    }

    /// Saves the state atomically, with a checksum line after the JSON.
    pub fn save(&self, model_dir: &Path) -> std::io::Result<()> {
        let path = state_path(model_dir);
        create_owned_dir(&model_dir.join(CACHE_DIR))?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let checksum = xxh3_64(&bytes);
        bytes.push(b'\n');
        bytes.extend_from_slice(STATE_CHECKSUM);
        bytes.extend_from_slice(format!("{checksum:016x}\n").as_bytes());
        write_bytes_atomic(&path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileIndex {
        FileIndex {
            origin: "metadata/metadata-2024.csv".into(),
            stamp: FileStamp {
                size: 10,
                mtime_ns: 1_700_000_000_000_000_123,
            },
            prefix_hash: prefix_hash(""),
            entries: vec![
                IndexEntry {
                    paper_id: "2401.00001".into(),
                    hash: TextHash(42),
                    empty: false,
                    updated: 1_700_000_000_000_000,
                },
                IndexEntry {
                    paper_id: "hep-th/9901001".into(),
                    hash: TextHash(u128::MAX),
                    empty: true,
                    updated: NO_UPDATED_AT,
                },
            ],
            skipped: 1,
            issues: vec![CachedIssue {
                line: Some(3),
                message: "bad".into(),
            }],
        }
    }

    #[test]
    fn index_round_trips_and_is_keyed_by_stamp_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample();
        index.save(dir.path()).unwrap();
        let loaded = FileIndex::load(dir.path(), &index.origin, index.stamp, index.prefix_hash).unwrap();
        assert_eq!(loaded, index);
        let other_stamp = FileStamp {
            size: 11,
            ..index.stamp
        };
        assert!(FileIndex::load(dir.path(), &index.origin, other_stamp, index.prefix_hash).is_none());
        assert!(FileIndex::load(dir.path(), &index.origin, index.stamp, prefix_hash("query: ")).is_none());
    }

    #[test]
    fn a_damaged_index_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample();
        index.save(dir.path()).unwrap();
        let path = index_path(dir.path(), &index.origin, index.prefix_hash);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(FileIndex::load(dir.path(), &index.origin, index.stamp, index.prefix_hash).is_none());
        std::fs::write(&path, &bytes[..5]).unwrap();
        assert!(FileIndex::load(dir.path(), &index.origin, index.stamp, index.prefix_hash).is_none());
    }

    #[test]
    fn refresh_state_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = RefreshState::new(prefix_hash(""), 384);
        state.years.insert(
            "2024".into(),
            YearSummary {
                inputs: YearInputs {
                    metadata: vec![("metadata/metadata-2024.csv".into(), sample().stamp)],
                    year_file: None,
                },
                papers: 3,
                rows: 3,
                waiting: BTreeMap::from([("missing_embedding_file".into(), 3)]),
                issues: vec![YearIssue {
                    path: "metadata/metadata-2024.csv".into(),
                    line: Some(3),
                    message: "bad".into(),
                }],
                elsewhere: 0,
                elsewhere_hash: 0,
            },
        );
        state.save(dir.path()).unwrap();
        assert_eq!(RefreshState::load(dir.path()), Some(state.clone()));
        // Still valid JSON, but not what was written: the checksum says so.
        let saved = std::fs::read_to_string(state_path(dir.path())).unwrap();
        let edited = saved.replacen("\"papers\": 3", "\"papers\": 4", 1);
        assert_ne!(edited, saved);
        std::fs::write(state_path(dir.path()), &edited).unwrap();
        assert_eq!(
            RefreshState::load(dir.path()),
            None,
            "an edited state is not trusted"
        );
        // Counts that contradict each other are refused even with a good checksum.
        state.years.get_mut("2024").unwrap().rows = 2;
        state.save(dir.path()).unwrap();
        assert_eq!(RefreshState::load(dir.path()), None, "fewer rows than papers");
        std::fs::write(state_path(dir.path()), b"{").unwrap();
        assert_eq!(RefreshState::load(dir.path()), None);
    }
}
