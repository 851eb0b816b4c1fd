//! One year's vectors in the layout the scan wants: a segment.
//!
//! A segment holds, for every paper of one year file (sorted by id): the
//! unit vector quantised to int8 with one scale per row (what the scan
//! reads, in the kernels' layout of 16-row groups, see `scan.rs`), the
//! vector as f32 (for the exact re-rank and [`Segment::vector`]), per row an
//! upper bound of the quantisation error (which makes the re-rank exact)
//! and two check sums of its int8 row, and its id, title, publication date
//! and category ids (the catalog).
//!
//! On disk (`embeddings/<alias>/.cache/vectors/YYYY.seg`) a segment is one
//! file, memory-mapped:
//!
//! ```text
//! [0..8)    magic "PSVEC\0\0\x01"
//! [8..16)   footer offset (u64 LE)   [16..24) footer length   [24..32) xxh3-64 of the footer
//! [64..)    sections, each 64-byte aligned, in the order of `Sec`: the two
//!           matrices first (their size depends only on rows and dimension,
//!           so a build streams them out before the catalog is complete)
//! footer    JSON: format version, year, rows, dimension, the stamps of the
//!           inputs, the category table, each section's offset, length and
//!           (for the sections checked when opened) checksum
//! ```
//!
//! Checks, so that a damaged file is found before it can change a result
//! and a query reads little besides what it uses:
//! - when opened: the footer, the ids, the categories and the table of
//!   chunk checksums (`Sums`), each whole (xxh3-64);
//! - on first use, per 64 KiB chunk (xxh3-64, from `Sums`): the f32 matrix,
//!   the scales, bounds and check sums, the titles and dates;
//! - the int8 matrix, by the scan itself: each row carries two integer dot
//!   products of its int8 bytes with fixed check vectors (weights ±1..63),
//!   which the scan computes beside the queries' in the same pass, at
//!   almost no cost. A row that differs from what was written in one byte
//!   always fails (the change times a non-zero weight cannot vanish);
//!   several changed bytes escape both sums only by cancelling in both.
//!
//! A file that fails any check is damaged: the caller removes and rebuilds
//! it. Without a writable cache directory the same bytes are built in
//! memory.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::QueryError;
use super::build::Keys;
use super::scan::{LANES, padded_dim};
use crate::metadata::Year;
use crate::store::cache::FileStamp;

const MAGIC: &[u8; 8] = b"PSVEC\x00\x00\x01";
/// Bumped whenever the layout or the meaning of a field changes.
const FORMAT_VERSION: u32 = 3;
const ALIGN: usize = 64;
/// Rows per block of the int8 matrix (one scan work item).
pub const Q8_BLOCK_ROWS: usize = 1024;
/// Bytes per lazily checked chunk of a section.
const CHUNK: usize = 64 * 1024;
/// Check sums per row of the int8 matrix.
pub(crate) const CHECKS: usize = 2;

/// The sections, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Sec {
    Q8,
    F32,
    Scales,
    Bounds,
    Checks,
    IdOffsets,
    Ids,
    TitleOffsets,
    Titles,
    DateOffsets,
    Dates,
    CatOffsets,
    Cats,
    Sums,
}

const SECTIONS: usize = 14;
/// Sections checked whole when a file is opened.
const EAGER: [Sec; 5] = [Sec::IdOffsets, Sec::Ids, Sec::CatOffsets, Sec::Cats, Sec::Sums];
/// Sections checked per chunk on first use, in the order of `Sums`.
const LAZY: [Sec; 8] = [
    Sec::F32,
    Sec::Scales,
    Sec::Bounds,
    Sec::Checks,
    Sec::TitleOffsets,
    Sec::Titles,
    Sec::DateOffsets,
    Sec::Dates,
];

fn lazy_index(sec: Sec) -> Option<usize> {
    LAZY.iter().position(|&s| s == sec)
}

/// What a segment was built from: when any of it changes, the segment is
/// stale and rebuilt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamps {
    /// Vector dimension.
    pub dimension: usize,
    /// The year file's size and modification time.
    pub year_file: FileStamp,
    /// xxh3-64 of the manifest's model identity (0 when it records none).
    pub identity: u64,
    /// The year's metadata CSVs (origin, stamp), in precedence order.
    pub metadata: Vec<(String, FileStamp)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Footer {
    version: u32,
    year: u16,
    rows: usize,
    stamps: Stamps,
    categories: Vec<String>,
    /// (offset, length, checksum) per section; checksum 0 for the sections
    /// checked per chunk and for the int8 matrix.
    sections: Vec<(u64, u64, u64)>,
    /// What the inputs held, for an incremental refresh.
    keys: Keys,
}

/// Plain old data that may be viewed in place from bytes: every bit
/// pattern is a valid value and there is no padding.
trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for i8 {}
impl Plain for u16 {}
impl Plain for u32 {}
impl Plain for i32 {}
impl Plain for u64 {}
impl Plain for f32 {}

fn view<T: Plain>(bytes: &[u8]) -> Option<&[T]> {
    // SAFETY: `T: Plain` admits every bit pattern and has no padding, and
    // `align_to` only puts correctly aligned, whole `T`s into the middle
    // slice; we accept the view only when nothing falls outside it.
    let (head, body, tail) = unsafe { bytes.align_to::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

/// The bytes of `values`.
fn bytes_of<T: Plain>(values: &[T]) -> &[u8] {
    // SAFETY: `T: Plain` has no padding and every byte of it is
    // initialised; u8 has alignment 1 and the length covers exactly the
    // same memory.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// The bytes of `words`, writable.
fn bytes_of_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in `bytes_of`; any byte pattern is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// The rows of a segment before it is laid out.
#[derive(Default)]
pub struct Rows {
    /// Paper ids, sorted and unique.
    pub ids: Vec<String>,
    /// `rows * dimension` values (empty when the vectors were streamed
    /// into a [`Writer`] instead).
    pub vectors: Vec<f32>,
    /// Titles (one line).
    pub titles: Vec<String>,
    /// `published_at`.
    pub dates: Vec<String>,
    /// Per row, indexes into `categories`.
    pub cats: Vec<Vec<u16>>,
    /// The category table.
    pub categories: Vec<String>,
}

/// The bytes of a segment: a mapped file, or memory.
enum Bytes {
    Map(Mmap),
    /// Words (8-byte aligned, as the sections' types need) and the length in bytes.
    Heap(Vec<u64>, usize),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Map(map) => map,
            Bytes::Heap(words, len) => &bytes_of(words)[..*len],
        }
    }
}

/// One year's vectors and catalog, mapped from a cache file or built in
/// memory.
pub struct Segment {
    bytes: Bytes,
    /// The year.
    pub year: Year,
    rows: usize,
    dim: usize,
    categories: Vec<String>,
    sections: [Range<usize>; SECTIONS],
    /// Index in `Sums` of each lazy section's first chunk, and the total.
    chunk_base: [usize; LAZY.len() + 1],
    /// Per chunk of the lazy sections: 0 unchecked, 1 good, 2 damaged.
    state: Vec<AtomicU8>,
    /// The cache file; `None` for a segment in memory.
    pub path: Option<PathBuf>,
    /// The footer's checksum: identifies this very segment.
    pub sum: u64,
    /// What it was built from.
    pub stamps: Stamps,
    /// What its inputs held.
    pub keys: Keys,
}

fn damaged(path: &Path, message: impl std::fmt::Display) -> QueryError {
    QueryError::CacheDamaged {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Section lengths of a segment; the string sections' byte lengths, the
/// number of category codes and of chunk sums as given.
fn lengths(rows: usize, dim: usize, strings: [usize; 3], cats: usize, sums: usize) -> [usize; SECTIONS] {
    let offsets = 4 * (rows + 1);
    [
        rows.next_multiple_of(LANES) * padded_dim(dim),
        4 * rows * dim,
        4 * rows,
        4 * rows,
        4 * CHECKS * rows,
        offsets,
        strings[0],
        offsets,
        strings[1],
        offsets,
        strings[2],
        offsets,
        2 * cats,
        8 * sums,
    ]
}

/// Index in `Sums` of each lazy section's first chunk, and the total.
fn chunk_bases(lens: &[usize; SECTIONS]) -> [usize; LAZY.len() + 1] {
    let mut bases = [0; LAZY.len() + 1];
    for (i, sec) in LAZY.iter().enumerate() {
        bases[i + 1] = bases[i] + lens[*sec as usize].div_ceil(CHUNK);
    }
    bases
}

fn layout(lens: &[usize; SECTIONS]) -> ([Range<usize>; SECTIONS], usize) {
    let mut at = ALIGN;
    let sections = std::array::from_fn(|i| {
        let start = at;
        at = (start + lens[i]).next_multiple_of(ALIGN);
        start..start + lens[i]
    });
    (sections, at)
}

impl Segment {
    /// Number of papers.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when the segment holds no paper.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn where_(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("(memory)"))
    }

    fn raw(&self, sec: Sec) -> &[u8] {
        &self.bytes.get()[self.sections[sec as usize].clone()]
    }

    fn typed<T: Plain>(&self, sec: Sec) -> &[T] {
        view(self.raw(sec)).unwrap_or(&[])
    }

    /// Bytes `range` of a lazily checked section, every chunk they touch
    /// checked (once per process).
    fn checked(&self, sec: Sec, range: Range<usize>) -> Result<&[u8], QueryError> {
        let bytes = self.raw(sec);
        let Some(lazy) = lazy_index(sec) else {
            return Err(damaged(self.where_(), format!("section {sec:?} read as checked")));
        };
        if range.start > range.end || range.end > bytes.len() {
            return Err(damaged(self.where_(), format!("{sec:?} read out of range")));
        }
        if range.is_empty() {
            return Ok(&[]);
        }
        let sums: &[u64] = self.typed(Sec::Sums);
        for chunk in range.start / CHUNK..=(range.end - 1) / CHUNK {
            let index = self.chunk_base[lazy] + chunk;
            let flag = &self.state[index];
            match flag.load(Ordering::Acquire) {
                1 => continue,
                0 => {
                    let part = &bytes[chunk * CHUNK..((chunk + 1) * CHUNK).min(bytes.len())];
                    let good = sums.get(index) == Some(&xxh3_64(part));
                    flag.store(if good { 1 } else { 2 }, Ordering::Release);
                    if good {
                        continue;
                    }
                }
                _ => {}
            }
            return Err(damaged(
                self.where_(),
                format!("chunk {chunk} of section {sec:?} fails its checksum"),
            ));
        }
        Ok(&bytes[range])
    }

    fn checked_typed<T: Plain>(&self, sec: Sec, items: Range<usize>) -> Result<&[T], QueryError> {
        let size = std::mem::size_of::<T>();
        let bytes = self.checked(sec, items.start * size..items.end * size)?;
        view(bytes).ok_or_else(|| damaged(self.where_(), format!("{sec:?} misaligned")))
    }

    fn string(&self, offsets: Sec, bytes: Sec, row: usize) -> &str {
        let offsets: &[u32] = self.typed(offsets);
        let (Some(&a), Some(&b)) = (offsets.get(row), offsets.get(row + 1)) else {
            return "";
        };
        self.raw(bytes)
            .get(a as usize..b as usize)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("")
    }

    fn checked_string(&self, offsets: Sec, bytes: Sec, row: usize) -> Result<&str, QueryError> {
        if row >= self.rows {
            return Err(QueryError::NoRow(row));
        }
        let ends: &[u32] = self.checked_typed(offsets, row..row + 2)?;
        let text = self.checked(bytes, ends[0] as usize..ends[1] as usize)?;
        std::str::from_utf8(text).map_err(|e| damaged(self.where_(), format!("{bytes:?} of row {row}: {e}")))
    }

    /// Paper id of `row` (`""` out of range).
    pub fn id(&self, row: usize) -> &str {
        self.string(Sec::IdOffsets, Sec::Ids, row)
    }

    /// Title of `row` (one line; empty when the metadata has none).
    pub fn title(&self, row: usize) -> Result<&str, QueryError> {
        self.checked_string(Sec::TitleOffsets, Sec::Titles, row)
    }

    /// `published_at` of `row` (empty when unknown).
    pub fn published_at(&self, row: usize) -> Result<&str, QueryError> {
        self.checked_string(Sec::DateOffsets, Sec::Dates, row)
    }

    /// Category ids of `row` (indexes into [`Segment::categories`]), primary first.
    pub fn category_ids(&self, row: usize) -> &[u16] {
        let offsets: &[u32] = self.typed(Sec::CatOffsets);
        let (Some(&a), Some(&b)) = (offsets.get(row), offsets.get(row + 1)) else {
            return &[];
        };
        self.typed::<u16>(Sec::Cats)
            .get(a as usize..b as usize)
            .unwrap_or(&[])
    }

    /// The category table.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// The row of `id`, by binary search (rows are sorted by id).
    pub fn find(&self, id: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.rows);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.id(mid).cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Number of int8 blocks.
    pub(crate) fn q8_blocks(&self) -> usize {
        self.rows.div_ceil(Q8_BLOCK_ROWS)
    }

    /// The int8 groups of block `block` (`Q8_BLOCK_ROWS` rows, fewer at the
    /// end, in the layout of `scan.rs`), unchecked: the scan checks each
    /// row against [`Segment::scan_rows`]' check sums.
    pub(crate) fn q8_block(&self, block: usize) -> &[u8] {
        let pd = padded_dim(self.dim);
        let start = block * Q8_BLOCK_ROWS;
        let end = (start + Q8_BLOCK_ROWS).min(self.rows.next_multiple_of(LANES));
        self.raw(Sec::Q8)
            .get(start * pd..end.max(start) * pd)
            .unwrap_or(&[])
    }

    /// Scales, bounds and check sums (`CHECKS` per row) of rows `rows`,
    /// checked.
    pub(crate) fn scan_rows(&self, rows: Range<usize>) -> Result<ScanRows<'_>, QueryError> {
        Ok(ScanRows {
            scales: self.checked_typed(Sec::Scales, rows.clone())?,
            bounds: self.checked_typed(Sec::Bounds, rows.clone())?,
            checks: self.checked_typed(Sec::Checks, rows.start * CHECKS..rows.end * CHECKS)?,
        })
    }

    /// The f32 vector of `row`, checked.
    pub fn vector(&self, row: usize) -> Result<&[f32], QueryError> {
        if row >= self.rows {
            return Err(QueryError::NoRow(row));
        }
        self.checked_typed(Sec::F32, row * self.dim..(row + 1) * self.dim)
    }

    /// The error for rows of block `block` whose int8 bytes fail their check sums.
    pub(crate) fn q8_damaged(&self, row: usize) -> QueryError {
        damaged(self.where_(), format!("int8 row {row} fails its check sums"))
    }

    /// Opens and checks a cache file (the footer, ids, categories and the
    /// table of chunk sums; the rest is checked on first use). `Err(CacheDamaged)`
    /// when it is not a complete segment of this format.
    pub fn open(path: &Path) -> Result<Segment, QueryError> {
        let file = File::open(path).map_err(|e| QueryError::io(path, e))?;
        // SAFETY: the map is read-only and the cache files are only ever
        // replaced by rename, never written in place, so the mapped bytes do
        // not change under us (a user truncating the file by hand could
        // cause SIGBUS, as with any mapped file).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| QueryError::io(path, e))?;
        let len = map.len();
        if len < ALIGN || &map[..8] != MAGIC {
            return Err(damaged(path, "not a vector cache file"));
        }
        let word = |at: usize| u64::from_le_bytes((&map[at..at + 8]).try_into().unwrap_or([0; 8]));
        let (footer_at, footer_len, footer_sum) = (word(8) as usize, word(16) as usize, word(24));
        if footer_at.checked_add(footer_len) != Some(len) || footer_at < ALIGN {
            return Err(damaged(
                path,
                format!("length {len} does not match its header (truncated?)"),
            ));
        }
        let footer_bytes = &map[footer_at..];
        if xxh3_64(footer_bytes) != footer_sum {
            return Err(damaged(path, "footer checksum mismatch"));
        }
        let footer: Footer = serde_json::from_slice(footer_bytes).map_err(|e| damaged(path, e))?;
        if footer.version != FORMAT_VERSION || footer.sections.len() != SECTIONS {
            return Err(damaged(path, "written by another papersys version"));
        }
        let year = Year::parse(&format!("{:04}", footer.year)).ok_or_else(|| damaged(path, "bad year"))?;
        let (rows, dim) = (footer.rows, footer.stamps.dimension);
        let given = |sec: Sec| footer.sections[sec as usize].1 as usize;
        let strings = [given(Sec::Ids), given(Sec::Titles), given(Sec::Dates)];
        let mut expected = lengths(rows, dim, strings, given(Sec::Cats) / 2, 0);
        let chunk_base = chunk_bases(&expected);
        expected[Sec::Sums as usize] = 8 * chunk_base[LAZY.len()];
        let mut sections: [Range<usize>; SECTIONS] = std::array::from_fn(|_| 0..0);
        for (i, &(offset, length, _)) in footer.sections.iter().enumerate() {
            let (offset, length) = (offset as usize, length as usize);
            if length != expected[i]
                || offset % ALIGN != 0
                || offset < ALIGN
                || offset.checked_add(length).is_none_or(|end| end > footer_at)
            {
                return Err(damaged(path, format!("section {i} out of place")));
            }
            sections[i] = offset..offset + length;
        }
        {
            use rayon::prelude::*;
            let bad = EAGER.into_par_iter().find_any(|&sec| {
                let i = sec as usize;
                xxh3_64(&map[sections[i].clone()]) != footer.sections[i].2
            });
            if let Some(sec) = bad {
                return Err(damaged(path, format!("section {sec:?} fails its checksum")));
            }
        }
        Ok(Segment {
            state: (0..chunk_base[LAZY.len()]).map(|_| AtomicU8::new(0)).collect(),
            chunk_base,
            bytes: Bytes::Map(map),
            year,
            rows,
            dim,
            categories: footer.categories,
            sections,
            path: Some(path.to_path_buf()),
            sum: footer_sum,
            stamps: footer.stamps,
            keys: footer.keys,
        })
    }

    /// Lays `rows` out as a segment: in a new file in `path`'s directory
    /// renamed to `path` when `path` is given, else in memory.
    pub fn build(
        year: Year,
        stamps: Stamps,
        keys: Keys,
        rows: &Rows,
        path: Option<&Path>,
    ) -> Result<Segment, QueryError> {
        let mut writer = Writer::new(rows.ids.len(), stamps.dimension, path)?;
        writer.push(&rows.vectors)?;
        writer.finish(year, stamps, keys, rows)
    }
}

/// What the scan reads of a run of rows besides the int8 matrix.
pub(crate) struct ScanRows<'a> {
    /// Per-row int8 scales.
    pub scales: &'a [f32],
    /// Per-row bounds of |exact cosine - int8 estimate| for a unit query.
    pub bounds: &'a [f32],
    /// `CHECKS` check sums per row.
    pub checks: &'a [i32],
}

/// Where a [`Writer`] puts the bytes.
enum Out {
    /// A temporary file in the cache directory, renamed to `path` at the end.
    File {
        temp: tempfile::NamedTempFile,
        path: PathBuf,
    },
    /// Memory (8-byte words, so that the sections' types are aligned).
    Memory(Vec<u64>),
}

impl Out {
    fn write_at(&mut self, at: usize, bytes: &[u8]) -> Result<(), QueryError> {
        match self {
            Out::File { temp, .. } => temp
                .as_file()
                .write_all_at(bytes, at as u64)
                .map_err(|e| QueryError::io(temp.path(), e)),
            Out::Memory(words) => {
                let end = at + bytes.len();
                if words.len() * 8 < end {
                    words.resize(end.div_ceil(8), 0);
                }
                bytes_of_mut(words)[at..end].copy_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// Writes a segment: the vectors streamed in row order ([`Writer::push`]),
/// then the catalog ([`Writer::finish`]). Only one block of rows is held
/// at a time; nothing is written where it will be overwritten.
pub(crate) struct Writer {
    out: Out,
    rows: usize,
    dim: usize,
    q8_at: usize,
    f32_at: usize,
    /// Rows pushed and written.
    written: usize,
    /// Rows pushed, waiting for a whole block (`dim` values each).
    pending: Vec<f32>,
    scales: Vec<f32>,
    bounds: Vec<f32>,
    checks: Vec<i32>,
    /// Chunk sums of the f32 section so far, and the chunk being hashed.
    f32_sums: Vec<u64>,
    hasher: Xxh3,
    in_chunk: usize,
    /// The int8 groups of one block.
    block: Vec<u8>,
}

impl Writer {
    /// A writer of a segment of `rows` rows of `dim` values, into a new
    /// file beside `path` (renamed to it by [`Writer::finish`]) or memory.
    pub(crate) fn new(rows: usize, dim: usize, path: Option<&Path>) -> Result<Writer, QueryError> {
        let lens = lengths(rows, dim, [0; 3], 0, 0);
        let (sections, _) = layout(&lens);
        let out = match path {
            Some(path) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                let prefix = format!("{}{}-", crate::store::atomic::TEMP_PREFIX, std::process::id());
                let temp = tempfile::Builder::new()
                    .prefix(&prefix)
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                    .tempfile_in(dir)
                    .map_err(|e| QueryError::io(dir, e))?;
                Out::File {
                    temp,
                    path: path.to_path_buf(),
                }
            }
            None => Out::Memory(Vec::with_capacity(sections[Sec::F32 as usize].end.div_ceil(8))),
        };
        Ok(Writer {
            out,
            rows,
            dim,
            q8_at: sections[Sec::Q8 as usize].start,
            f32_at: sections[Sec::F32 as usize].start,
            written: 0,
            pending: Vec::with_capacity(Q8_BLOCK_ROWS * dim),
            scales: Vec::with_capacity(rows),
            bounds: Vec::with_capacity(rows),
            checks: Vec::with_capacity(rows * CHECKS),
            f32_sums: Vec::with_capacity((4 * rows * dim).div_ceil(CHUNK)),
            hasher: Xxh3::new(),
            in_chunk: 0,
            block: Vec::new(),
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> QueryError {
        let path = match &self.out {
            Out::File { temp, .. } => temp.path().to_path_buf(),
            Out::Memory(_) => PathBuf::from("(memory)"),
        };
        QueryError::Io {
            path,
            source: std::io::Error::other(message.to_string()),
        }
    }

    /// Appends rows (`dim` values each, a whole number of rows). Whole
    /// blocks are taken from `values` where they lie, copied only when a
    /// block straddles two calls.
    pub(crate) fn push(&mut self, mut values: &[f32]) -> Result<(), QueryError> {
        if self.dim == 0 {
            return Ok(());
        }
        let block = Q8_BLOCK_ROWS * self.dim;
        while !values.is_empty() {
            if self.pending.is_empty() && values.len() >= block {
                let (now, rest) = values.split_at(block);
                self.write_rows(now)?;
                values = rest;
                continue;
            }
            let room = block - self.pending.len();
            let (now, rest) = values.split_at(room.min(values.len()));
            self.pending.extend_from_slice(now);
            values = rest;
            if self.pending.len() == block {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the pending rows.
    fn flush(&mut self) -> Result<(), QueryError> {
        let pending = std::mem::take(&mut self.pending);
        let written = self.write_rows(&pending);
        self.pending = pending;
        self.pending.clear();
        written
    }

    /// Writes `rows` (at most a block): quantised into int8 groups, as f32.
    fn write_rows(&mut self, rows: &[f32]) -> Result<(), QueryError> {
        use rayon::prelude::*;
        let dim = self.dim;
        let n = rows.len() / dim;
        if n == 0 {
            return Ok(());
        }
        if self.written + n > self.rows {
            return Err(self.error("more rows than the year file's footer declares"));
        }
        let pd = padded_dim(dim);
        let first = self.written;
        self.block.resize(n.next_multiple_of(LANES) * pd, 0);
        let base = self.scales.len();
        self.scales.resize(base + n, 0.0);
        self.bounds.resize(base + n, 0.0);
        self.checks.resize((base + n) * CHECKS, 0);
        let weights = super::scan::check_weights(dim);
        self.block
            .par_chunks_mut(LANES * pd)
            .zip(rows.par_chunks(LANES * dim))
            .zip(self.scales[base..].par_chunks_mut(LANES))
            .zip(self.bounds[base..].par_chunks_mut(LANES))
            .zip(self.checks[base * CHECKS..].par_chunks_mut(LANES * CHECKS))
            .for_each(|((((group, x), scales), bounds), checks)| {
                let mut q = [0i8; 4096];
                let mut heap = Vec::new();
                let q: &mut [i8] = if x.len() <= q.len() {
                    &mut q[..x.len()]
                } else {
                    heap.resize(x.len(), 0);
                    &mut heap
                };
                for (r, (x, q)) in x.chunks_exact(dim).zip(q.chunks_exact_mut(dim)).enumerate() {
                    let quantised = super::scan::quantise(x, q);
                    scales[r] = quantised.scale;
                    bounds[r] = quantised.bound;
                }
                super::scan::interleave(q, dim, group);
                super::scan::check_sums(group, dim, &weights, checks);
            });
        let q8_at = self.q8_at + first * pd;
        let f32_at = self.f32_at + 4 * first * dim;
        let f32_bytes = bytes_of(&rows[..n * dim]);
        let block = std::mem::take(&mut self.block);
        let written = self
            .out
            .write_at(q8_at, &block)
            .and_then(|()| self.out.write_at(f32_at, f32_bytes));
        self.hash_f32(f32_bytes);
        self.block = block;
        self.written += n;
        written
    }

    fn hash_f32(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (CHUNK - self.in_chunk).min(bytes.len());
            self.hasher.update(&bytes[..take]);
            self.in_chunk += take;
            bytes = &bytes[take..];
            if self.in_chunk == CHUNK {
                self.f32_sums.push(self.hasher.digest());
                self.hasher.reset();
                self.in_chunk = 0;
            }
        }
    }

    /// Writes the catalog of `rows` (its vectors were pushed), the sums and
    /// the footer; renames the file into place. Fails when fewer rows were
    /// pushed than the writer was made for.
    pub(crate) fn finish(
        mut self,
        year: Year,
        stamps: Stamps,
        keys: Keys,
        rows: &Rows,
    ) -> Result<Segment, QueryError> {
        self.flush()?;
        let (n, dim) = (self.rows, self.dim);
        if rows.ids.len() != n || (self.written != n && dim != 0) {
            return Err(self.error(format!(
                "{} rows of vectors and {} ids for a segment of {n} rows",
                self.written,
                rows.ids.len()
            )));
        }
        if self.in_chunk > 0 {
            self.f32_sums.push(self.hasher.digest());
            self.in_chunk = 0;
        }
        if dim == 0 {
            self.scales.resize(n, 0.0);
            self.bounds.resize(n, 0.0);
            self.checks.resize(n * CHECKS, 0);
        }
        let text_len = |v: &[String]| v.iter().map(String::len).sum::<usize>();
        let strings = [text_len(&rows.ids), text_len(&rows.titles), text_len(&rows.dates)];
        let cats_total: usize = rows.cats.iter().map(Vec::len).sum();
        if strings.iter().any(|&l| l > u32::MAX as usize) || cats_total > u32::MAX as usize {
            return Err(self.error("a year's ids or titles exceed 4 GB"));
        }
        let mut lens = lengths(n, dim, strings, cats_total, 0);
        let bases = chunk_bases(&lens);
        lens[Sec::Sums as usize] = 8 * bases[LAZY.len()];
        let (sections, end) = layout(&lens);
        // Everything after the f32 matrix, in one buffer.
        let tail_at = sections[Sec::Scales as usize].start;
        let mut tail_words = vec![0u64; (end - tail_at) / 8];
        let tail = bytes_of_mut(&mut tail_words);
        let at = |sec: Sec| sections[sec as usize].start - tail_at..sections[sec as usize].end - tail_at;
        tail[at(Sec::Scales)].copy_from_slice(bytes_of(&self.scales));
        tail[at(Sec::Bounds)].copy_from_slice(bytes_of(&self.bounds));
        tail[at(Sec::Checks)].copy_from_slice(bytes_of(&self.checks));
        fill_strings(tail, at(Sec::IdOffsets), at(Sec::Ids), &rows.ids);
        fill_strings(tail, at(Sec::TitleOffsets), at(Sec::Titles), &rows.titles);
        fill_strings(tail, at(Sec::DateOffsets), at(Sec::Dates), &rows.dates);
        let mut ends = Vec::with_capacity(n + 1);
        let mut flat: Vec<u16> = Vec::with_capacity(cats_total);
        ends.push(0u32);
        for list in &rows.cats {
            flat.extend_from_slice(list);
            ends.push(flat.len() as u32);
        }
        tail[at(Sec::CatOffsets)].copy_from_slice(bytes_of(&ends));
        tail[at(Sec::Cats)].copy_from_slice(bytes_of(&flat));
        let mut sums: Vec<u64> = Vec::with_capacity(bases[LAZY.len()]);
        for sec in LAZY {
            if sec == Sec::F32 {
                sums.extend_from_slice(&self.f32_sums);
                continue;
            }
            let bytes = &tail[at(sec)];
            sums.extend(bytes.chunks(CHUNK).map(xxh3_64));
        }
        if sums.len() != bases[LAZY.len()] {
            return Err(self.error("chunk sums do not match the layout"));
        }
        tail[at(Sec::Sums)].copy_from_slice(bytes_of(&sums));
        let mut checksums = [0u64; SECTIONS];
        for sec in EAGER {
            checksums[sec as usize] = xxh3_64(&tail[at(sec)]);
        }
        let footer = Footer {
            version: FORMAT_VERSION,
            year: year.get(),
            rows: n,
            stamps: stamps.clone(),
            categories: rows.categories.clone(),
            sections: sections
                .iter()
                .zip(checksums)
                .map(|(r, sum)| (r.start as u64, r.len() as u64, sum))
                .collect(),
            keys: keys.clone(),
        };
        let footer_bytes = serde_json::to_vec(&footer).map_err(|e| self.error(e))?;
        let mut head = [0u8; ALIGN];
        head[..8].copy_from_slice(MAGIC);
        head[8..16].copy_from_slice(&(end as u64).to_le_bytes());
        head[16..24].copy_from_slice(&(footer_bytes.len() as u64).to_le_bytes());
        head[24..32].copy_from_slice(&xxh3_64(&footer_bytes).to_le_bytes());
        self.out.write_at(tail_at, tail)?;
        self.out.write_at(end, &footer_bytes)?;
        self.out.write_at(0, &head)?;
        let total = end + footer_bytes.len();
        let (bytes, path) = match self.out {
            Out::File { temp, path } => {
                // No fsync: a file torn by a power cut fails its checks and is rebuilt.
                let file = temp.persist(&path).map_err(|e| QueryError::io(&path, e.error))?;
                // SAFETY: as in `open`: the file is only ever replaced by rename.
                let map = unsafe { Mmap::map(&file) }.map_err(|e| QueryError::io(&path, e))?;
                (Bytes::Map(map), Some(path))
            }
            Out::Memory(mut words) => {
                words.resize(total.div_ceil(8), 0);
                (Bytes::Heap(words, total), None)
            }
        };
        if bytes.get().len() != total {
            return Err(QueryError::io(
                path.as_deref().unwrap_or(Path::new("(memory)")),
                std::io::Error::other("the segment's length is not what was written"),
            ));
        }
        // Just computed from these very bytes: nothing to check.
        Ok(Segment {
            state: (0..bases[LAZY.len()]).map(|_| AtomicU8::new(1)).collect(),
            chunk_base: bases,
            bytes,
            year,
            rows: n,
            dim,
            categories: rows.categories.clone(),
            sections,
            path,
            sum: xxh3_64(&footer_bytes),
            stamps,
            keys,
        })
    }
}

/// Writes `values` as end offsets (u32, from 0) into `tail[offsets]` and
/// their bytes into `tail[bytes]`.
fn fill_strings(tail: &mut [u8], offsets: Range<usize>, bytes: Range<usize>, values: &[String]) {
    let mut ends = Vec::with_capacity(values.len() + 1);
    ends.push(0u32);
    let mut at = bytes.start;
    for value in values {
        tail[at..at + value.len()].copy_from_slice(value.as_bytes());
        at += value.len();
        ends.push((at - bytes.start) as u32);
    }
    tail[offsets].copy_from_slice(bytes_of(&ends));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, dim: usize) -> Rows {
        Rows {
            ids: (0..n).map(|i| format!("p{i:04}")).collect(),
            vectors: (0..n * dim).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect(),
            titles: (0..n).map(|i| format!("Title {i}")).collect(),
            dates: (0..n).map(|_| "2024-01-02T00:00:00Z".to_string()).collect(),
            cats: (0..n).map(|i| vec![(i % 2) as u16]).collect(),
            categories: vec!["cs.CL".into(), "cs.AI".into()],
        }
    }

    fn stamps(dim: usize) -> Stamps {
        Stamps {
            dimension: dim,
            year_file: FileStamp { size: 1, mtime_ns: 2 },
            identity: 3,
            metadata: vec![(
                "metadata/metadata-2024.csv".into(),
                FileStamp { size: 4, mtime_ns: 5 },
            )],
        }
    }

    fn footer_sections(bytes: &[u8]) -> Vec<(u64, u64, u64)> {
        let at = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        let footer: Footer = serde_json::from_slice(&bytes[at..]).unwrap();
        footer.sections
    }

    /// Everything a query can read of `seg`: a full scan, every vector,
    /// title and date; the first error.
    fn read_all(seg: &Segment) -> Result<(), QueryError> {
        use super::super::scan::{Allowed, top_k_many};
        let query: Vec<f64> = (0..seg.dim).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        top_k_many(std::slice::from_ref(seg), &[Allowed::All], &[query], 3)?;
        for row in 0..seg.len() {
            seg.vector(row)?;
            seg.title(row)?;
            seg.published_at(row)?;
        }
        Ok(())
    }

    #[test]
    fn a_file_segment_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.seg");
        let year = Year::parse("2024").unwrap();
        let (n, dim) = (2500, 5);
        let data = rows(n, dim);
        let memory = Segment::build(year, stamps(dim), Keys::default(), &data, None).unwrap();
        let built = Segment::build(year, stamps(dim), Keys::default(), &data, Some(&path)).unwrap();
        let opened = Segment::open(&path).unwrap();
        assert_eq!(opened.stamps, stamps(dim));
        for seg in [&memory, &built, &opened] {
            assert_eq!(seg.len(), n);
            assert_eq!(seg.id(1234), "p1234");
            assert_eq!(seg.title(7).unwrap(), "Title 7");
            assert_eq!(seg.published_at(7).unwrap(), "2024-01-02T00:00:00Z");
            assert_eq!(seg.category_ids(3), [1]);
            assert_eq!(seg.find("p2000"), Some(2000));
            assert_eq!(seg.find("p9999"), None);
            assert_eq!(seg.vector(2499).unwrap(), &data.vectors[2499 * dim..]);
            assert!(matches!(seg.vector(2500), Err(QueryError::NoRow(2500))));
            read_all(seg).unwrap();
        }
        assert!(
            memory.bytes.get() == opened.bytes.get(),
            "memory and file hold the same bytes"
        );
        // Streamed in pieces of any size: the same bytes.
        let mut writer = Writer::new(n, dim, None).unwrap();
        for piece in data.vectors.chunks(dim * 333) {
            writer.push(piece).unwrap();
        }
        let streamed = writer.finish(year, stamps(dim), Keys::default(), &data).unwrap();
        assert!(streamed.bytes.get() == opened.bytes.get());
        // Too few rows pushed: refused.
        let mut writer = Writer::new(n, dim, None).unwrap();
        writer.push(&data.vectors[..dim * 10]).unwrap();
        assert!(writer.finish(year, stamps(dim), Keys::default(), &data).is_err());
    }

    /// A flipped byte in any section, or a truncated file, is found before
    /// it is used: by `open` for the sections it checks, by the first read
    /// of the chunk (or, for the int8 matrix, by the scan) for the others;
    /// and the sections checked lazily do not slow `open` down.
    #[test]
    fn damage_in_every_section_is_found_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.seg");
        let year = Year::parse("2024").unwrap();
        let (n, dim) = (3008, 7);
        let data = rows(n, dim);
        Segment::build(year, stamps(dim), Keys::default(), &data, Some(&path)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let sections = footer_sections(&good);
        let names = [
            Sec::Q8,
            Sec::F32,
            Sec::Scales,
            Sec::Bounds,
            Sec::Checks,
            Sec::IdOffsets,
            Sec::Ids,
            Sec::TitleOffsets,
            Sec::Titles,
            Sec::DateOffsets,
            Sec::Dates,
            Sec::CatOffsets,
            Sec::Cats,
            Sec::Sums,
        ];
        for (i, sec) in names.into_iter().enumerate() {
            assert_eq!(sec as usize, i);
            let (offset, length, _) = sections[i];
            assert!(length > 0, "{sec:?} is empty");
            for at in [0, length / 2, length - 1] {
                let mut bad = good.clone();
                bad[(offset + at) as usize] ^= 0x10;
                std::fs::write(&path, &bad).unwrap();
                let found = match Segment::open(&path) {
                    Err(e) => {
                        assert!(EAGER.contains(&sec), "{sec:?} refused at open: {e}");
                        e
                    }
                    Ok(seg) => {
                        assert!(!EAGER.contains(&sec), "{sec:?} damage passed open");
                        read_all(&seg).expect_err(&format!("{sec:?} byte {at}: damage not found"))
                    }
                };
                assert!(
                    matches!(found, QueryError::CacheDamaged { .. }),
                    "{sec:?}: {found}"
                );
            }
        }
        // A damaged f32 chunk (the second of 64 KiB) fails only the rows it holds.
        let mut bad = good.clone();
        bad[sections[Sec::F32 as usize].0 as usize + 4 * dim * 2500] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let seg = Segment::open(&path).unwrap();
        assert!(seg.vector(3).is_ok());
        assert!(seg.vector(2500).is_err());
        assert!(seg.vector(2500).is_err(), "still damaged when asked again");
        // Truncated by a byte or to half, or the footer garbled: refused when opened.
        let footer_at = u64::from_le_bytes(good[8..16].try_into().unwrap()) as usize;
        for bad in [
            good[..good.len() - 1].to_vec(),
            good[..good.len() / 2].to_vec(),
            {
                let mut bad = good.clone();
                bad[footer_at + 5] ^= 1;
                bad
            },
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert!(matches!(
                Segment::open(&path),
                Err(QueryError::CacheDamaged { .. })
            ));
        }
        std::fs::write(&path, &good).unwrap();
        read_all(&Segment::open(&path).unwrap()).unwrap();
    }
}
