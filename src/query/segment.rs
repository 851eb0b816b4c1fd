//! One year's vectors in the layout the scan wants: a segment.
//!
//! A segment holds, for every paper of one year file (sorted by id): its
//! id, title, publication date and category ids (the catalog), the vector as
//! f32 (for the exact re-rank and [`Segment::vector`]), the unit vector
//! quantised to int8 with one scale per row (what the scan reads, in the
//! kernels' layout of 16-row groups, see `scan.rs`), and per row an upper
//! bound of the quantisation error (which makes the re-rank exact).
//!
//! On disk (`embeddings/<alias>/.cache/vectors/YYYY.seg`) a segment is one
//! file, memory-mapped:
//!
//! ```text
//! [0..8)    magic "PSVEC\0\0\x01"
//! [8..16)   footer offset (u64 LE)   [16..24) footer length   [24..32) xxh3-64 of the footer
//! [64..)    sections, each 64-byte aligned (see `Sec`)
//! footer    JSON: format version, year, rows, dimension, the stamps of the
//!           inputs, the category table, each section's offset, length, checksum
//! ```
//!
//! The small sections (ids, titles, dates, categories, scales, bounds,
//! norms, block checksums) are verified when the file is opened; the two
//! matrices carry one checksum per block of rows, verified on first use (a
//! scan verifies every int8 block it reads, the re-rank every f32 block it
//! reads). A file that fails any check is damaged: it is rebuilt. Without a
//! writable cache directory the same bytes are built in anonymous memory.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::{Mmap, MmapMut};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::QueryError;
use super::build::Keys;
use super::scan::{LANES, padded_dim};
use crate::metadata::Year;
use crate::store::cache::FileStamp;

const MAGIC: &[u8; 8] = b"PSVEC\x00\x00\x01";
/// Bumped whenever the layout or the meaning of a field changes.
const FORMAT_VERSION: u32 = 2;
const ALIGN: usize = 64;
/// Rows per checksummed block of the int8 matrix (one scan work item).
pub const Q8_BLOCK_ROWS: usize = 1024;
/// Rows per checksummed block of the f32 matrix (the re-rank touches few).
pub const F32_BLOCK_ROWS: usize = 64;

/// The sections, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Sec {
    IdOffsets,
    Ids,
    TitleOffsets,
    Titles,
    DateOffsets,
    Dates,
    CatOffsets,
    Cats,
    Scales,
    Bounds,
    InvNorms,
    Q8Sums,
    F32Sums,
    Q8,
    F32,
}

const SECTIONS: usize = 15;
/// Sections verified in full when a file is opened.
const SMALL: Range<usize> = 0..Sec::Q8 as usize;

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
    /// (offset, length, checksum) per section; checksum 0 for the blocked matrices.
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
impl Plain for u64 {}
impl Plain for f32 {}
impl Plain for f64 {}

fn view<T: Plain>(bytes: &[u8]) -> Option<&[T]> {
    // SAFETY: `T: Plain` admits every bit pattern and has no padding, and
    // `align_to` only puts correctly aligned, whole `T`s into the middle
    // slice; we accept the view only when nothing falls outside it.
    let (head, body, tail) = unsafe { bytes.align_to::<T>() };
    (head.is_empty() && tail.is_empty()).then_some(body)
}

fn view_mut<T: Plain>(bytes: &mut [u8]) -> &mut [T] {
    // SAFETY: as in `view`; the layout places every section at a 64-byte
    // aligned offset of a page-aligned map with a length that is a multiple
    // of `size_of::<T>()`, so head and tail are empty (checked below).
    let (head, body, tail) = unsafe { bytes.align_to_mut::<T>() };
    debug_assert!(head.is_empty() && tail.is_empty());
    body
}

/// The rows of a segment before it is laid out: what the build collected.
#[derive(Default)]
pub struct Rows {
    /// Paper ids, sorted and unique.
    pub ids: Vec<String>,
    /// `rows * dimension` values.
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

/// One year's vectors and catalog, mapped from a cache file or built in
/// memory.
pub struct Segment {
    map: Mmap,
    /// The year.
    pub year: Year,
    rows: usize,
    dim: usize,
    categories: Vec<String>,
    sections: [Range<usize>; SECTIONS],
    /// Per block: 0 unverified, 1 good, 2 damaged.
    q8_state: Vec<AtomicU8>,
    f32_state: Vec<AtomicU8>,
    /// The cache file; `None` for a segment in memory.
    pub path: Option<PathBuf>,
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

fn blocks(rows: usize, per: usize) -> usize {
    rows.div_ceil(per)
}

/// Byte range of int8 block `block` in the int8 section.
fn q8_range(rows: usize, dim: usize, block: usize) -> (usize, usize) {
    let start = block * Q8_BLOCK_ROWS;
    let end = (start + Q8_BLOCK_ROWS).min(rows.next_multiple_of(LANES));
    (start * padded_dim(dim), end.max(start) * padded_dim(dim))
}

fn lengths(rows: usize, dim: usize, rows_bytes: [usize; 4], cats: usize) -> [usize; SECTIONS] {
    let offsets = 4 * (rows + 1);
    [
        offsets,
        rows_bytes[0],
        offsets,
        rows_bytes[1],
        offsets,
        rows_bytes[2],
        offsets,
        2 * cats,
        4 * rows,
        4 * rows,
        8 * rows,
        8 * blocks(rows, Q8_BLOCK_ROWS),
        8 * blocks(rows, F32_BLOCK_ROWS),
        rows.next_multiple_of(LANES) * padded_dim(dim),
        4 * rows * dim,
    ]
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

    fn bytes(&self, sec: Sec) -> &[u8] {
        &self.map[self.sections[sec as usize].clone()]
    }

    fn typed<T: Plain>(&self, sec: Sec) -> &[T] {
        view(self.bytes(sec)).unwrap_or(&[])
    }

    fn string(&self, offsets: Sec, bytes: Sec, row: usize) -> &str {
        let offsets: &[u32] = self.typed(offsets);
        let (Some(&a), Some(&b)) = (offsets.get(row), offsets.get(row + 1)) else {
            return "";
        };
        self.bytes(bytes)
            .get(a as usize..b as usize)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("")
    }

    /// Paper id of `row`.
    pub fn id(&self, row: usize) -> &str {
        self.string(Sec::IdOffsets, Sec::Ids, row)
    }

    /// Title of `row` (one line; empty when the metadata has none).
    pub fn title(&self, row: usize) -> &str {
        self.string(Sec::TitleOffsets, Sec::Titles, row)
    }

    /// `published_at` of `row` (empty when unknown).
    pub fn published_at(&self, row: usize) -> &str {
        self.string(Sec::DateOffsets, Sec::Dates, row)
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

    /// Per-row int8 scales.
    pub(crate) fn scales(&self) -> &[f32] {
        self.typed(Sec::Scales)
    }

    /// Per-row bounds of |exact cosine - int8 estimate| for a unit query.
    pub(crate) fn bounds(&self) -> &[f32] {
        self.typed(Sec::Bounds)
    }

    /// Per-row 1 / |x| (0 for a zero or non-finite vector).
    pub(crate) fn inv_norms(&self) -> &[f64] {
        self.typed(Sec::InvNorms)
    }

    /// The int8 groups of block `block` (`Q8_BLOCK_ROWS` rows, fewer at the
    /// end, in the layout of `scan.rs`), checksum verified on first use.
    pub(crate) fn q8_block(&self, block: usize) -> Result<&[u8], QueryError> {
        let (start, end) = q8_range(self.rows, self.dim, block);
        let bytes = self.bytes(Sec::Q8).get(start..end).unwrap_or(&[]);
        self.verify(&self.q8_state, Sec::Q8Sums, block, bytes)?;
        Ok(bytes)
    }

    /// Number of int8 blocks.
    pub(crate) fn q8_blocks(&self) -> usize {
        blocks(self.rows, Q8_BLOCK_ROWS)
    }

    /// The f32 vector of `row`, its block's checksum verified on first use.
    pub fn vector(&self, row: usize) -> Result<&[f32], QueryError> {
        let block = row / F32_BLOCK_ROWS;
        let start = block * F32_BLOCK_ROWS;
        let end = (start + F32_BLOCK_ROWS).min(self.rows);
        let bytes = self
            .bytes(Sec::F32)
            .get(4 * start * self.dim..4 * end * self.dim)
            .unwrap_or(&[]);
        self.verify(&self.f32_state, Sec::F32Sums, block, bytes)?;
        let values: &[f32] = view(bytes).unwrap_or(&[]);
        let local = row - start;
        values
            .get(local * self.dim..(local + 1) * self.dim)
            .ok_or_else(|| damaged(self.path.as_deref().unwrap_or(Path::new("")), "row out of range"))
    }

    fn verify(&self, state: &[AtomicU8], sums: Sec, block: usize, bytes: &[u8]) -> Result<(), QueryError> {
        let flag = state.get(block);
        match flag.map(|f| f.load(Ordering::Acquire)) {
            Some(1) => return Ok(()),
            Some(0) => {
                let expected = self.typed::<u64>(sums).get(block).copied();
                let good = expected == Some(xxh3_64(bytes));
                if let Some(flag) = flag {
                    flag.store(if good { 1 } else { 2 }, Ordering::Release);
                }
                if good {
                    return Ok(());
                }
            }
            _ => {}
        }
        Err(damaged(
            self.path.as_deref().unwrap_or(Path::new("(memory)")),
            format!(
                "block {block} of the {} matrix fails its checksum",
                if sums == Sec::Q8Sums { "int8" } else { "f32" }
            ),
        ))
    }

    /// Opens and checks a cache file (everything but the matrices' blocks,
    /// which are checked on first use). `Err(CacheDamaged)` when it is not
    /// a complete segment of this format.
    pub fn open(path: &Path) -> Result<Segment, QueryError> {
        let file = File::open(path).map_err(|e| QueryError::io(path, e))?;
        // SAFETY: the map is read-only and the cache files are only ever
        // replaced by rename, never written in place, so the mapped bytes do
        // not change under us (a user truncating the file by hand could
        // cause SIGBUS, as with any mapped file).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| QueryError::io(path, e))?;
        let len = map.len();
        if len < ALIGN || &map[..8] != MAGIC {
            return Err(damaged(path, "not a vector cache file of this version"));
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
        let cats = footer.sections[Sec::Cats as usize].1 as usize / 2;
        let mut expected = lengths(rows, dim, [0; 4], cats);
        for sec in [Sec::Ids, Sec::Titles, Sec::Dates] {
            expected[sec as usize] = footer.sections[sec as usize].1 as usize;
        }
        let mut sections: [Range<usize>; SECTIONS] = std::array::from_fn(|_| 0..0);
        for (i, &(offset, length, _)) in footer.sections.iter().enumerate() {
            let (offset, length) = (offset as usize, length as usize);
            if length != expected[i] || offset % ALIGN != 0 || offset < ALIGN || offset + length > footer_at {
                return Err(damaged(path, format!("section {i} out of place")));
            }
            sections[i] = offset..offset + length;
        }
        let segment = Segment {
            q8_state: (0..blocks(rows, Q8_BLOCK_ROWS))
                .map(|_| AtomicU8::new(0))
                .collect(),
            f32_state: (0..blocks(rows, F32_BLOCK_ROWS))
                .map(|_| AtomicU8::new(0))
                .collect(),
            map,
            year,
            rows,
            dim,
            categories: footer.categories,
            sections,
            path: Some(path.to_path_buf()),
            stamps: footer.stamps,
            keys: footer.keys,
        };
        use rayon::prelude::*;
        let bad = SMALL.into_par_iter().find_any(|&i| {
            let sum = xxh3_64(&segment.map[segment.sections[i].clone()]);
            sum != footer.sections[i].2
        });
        if let Some(i) = bad {
            return Err(damaged(path, format!("section {i} fails its checksum")));
        }
        Ok(segment)
    }

    /// Lays `rows` out as a segment: in a new file in `dir` renamed to
    /// `path` when `path` is given (no fsync: a file torn by a power cut
    /// fails its checksums and is rebuilt), else in anonymous memory.
    pub fn build(
        year: Year,
        stamps: Stamps,
        keys: Keys,
        rows: &Rows,
        path: Option<&Path>,
    ) -> Result<Segment, QueryError> {
        let dim = stamps.dimension;
        let n = rows.ids.len();
        let text_len = |v: &[String]| v.iter().map(String::len).sum::<usize>();
        let cats_total: usize = rows.cats.iter().map(Vec::len).sum();
        let byte_lens = [
            text_len(&rows.ids),
            text_len(&rows.titles),
            text_len(&rows.dates),
            0,
        ];
        if byte_lens.iter().any(|&l| l > u32::MAX as usize) || cats_total > u32::MAX as usize {
            return Err(QueryError::Io {
                path: path.map(Path::to_path_buf).unwrap_or_default(),
                source: std::io::Error::other("a year's ids or titles exceed 4 GB"),
            });
        }
        let lens = lengths(n, dim, byte_lens, cats_total);
        let (sections, end) = layout(&lens);
        let q8_at = sections[Sec::Q8 as usize].start;
        let f32_at = sections[Sec::F32 as usize].start;
        // Everything before the int8 matrix (header and small sections) and
        // the int8 matrix in buffers; the f32 matrix is `rows.vectors` itself.
        let mut head_words = vec![0u64; q8_at / 8];
        let head = bytes_of_mut(&mut head_words);
        let mut q8 = vec![0u8; lens[Sec::Q8 as usize]];
        let f32_bytes = bytes_of(&rows.vectors);
        fill(head, &mut q8, &sections, rows, dim);
        let (q8_sums, f32_sums) = block_sums(&q8, f32_bytes, n, dim);
        view_mut::<u64>(&mut head[sections[Sec::Q8Sums as usize].clone()]).copy_from_slice(&q8_sums);
        view_mut::<u64>(&mut head[sections[Sec::F32Sums as usize].clone()]).copy_from_slice(&f32_sums);
        let mut sums = [0u64; SECTIONS];
        {
            use rayon::prelude::*;
            let small: Vec<u64> = SMALL
                .into_par_iter()
                .map(|i| xxh3_64(&head[sections[i].clone()]))
                .collect();
            sums[SMALL].copy_from_slice(&small);
        }
        let footer = Footer {
            version: FORMAT_VERSION,
            year: year.get(),
            rows: n,
            stamps: stamps.clone(),
            categories: rows.categories.clone(),
            sections: sections
                .iter()
                .zip(sums)
                .map(|(r, sum)| (r.start as u64, r.len() as u64, sum))
                .collect(),
            keys: keys.clone(),
        };
        let footer_bytes = serde_json::to_vec(&footer)
            .map_err(std::io::Error::other)
            .map_err(|e| QueryError::io(path.unwrap_or(Path::new("(memory)")), e))?;
        head[..8].copy_from_slice(MAGIC);
        head[8..16].copy_from_slice(&(end as u64).to_le_bytes());
        head[16..24].copy_from_slice(&(footer_bytes.len() as u64).to_le_bytes());
        head[24..32].copy_from_slice(&xxh3_64(&footer_bytes).to_le_bytes());
        let parts: [(usize, &[u8]); 4] = [(0, head), (q8_at, &q8), (f32_at, f32_bytes), (end, &footer_bytes)];
        let (map, final_path) = match path {
            Some(path) => {
                use std::os::unix::fs::FileExt;
                let dir = path.parent().unwrap_or(Path::new("."));
                let prefix = format!("{}{}-", crate::store::atomic::TEMP_PREFIX, std::process::id());
                let temp = tempfile::Builder::new()
                    .prefix(&prefix)
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                    .tempfile_in(dir)
                    .map_err(|e| QueryError::io(dir, e))?;
                let io = |e| QueryError::io(temp.path(), e);
                // Written, not mapped: a full disk is an error, not SIGBUS,
                // and no page is zeroed before it is filled.
                for (at, bytes) in parts {
                    temp.as_file().write_all_at(bytes, at as u64).map_err(io)?;
                }
                let file = temp.persist(path).map_err(|e| QueryError::io(path, e.error))?;
                // SAFETY: as in `open`: the file is only ever replaced by rename.
                let map = unsafe { Mmap::map(&file) }.map_err(|e| QueryError::io(path, e))?;
                (map, Some(path.to_path_buf()))
            }
            None => {
                let memory = |e| QueryError::io(Path::new("(memory)"), e);
                let mut map = MmapMut::map_anon(end + footer_bytes.len()).map_err(memory)?;
                for (at, bytes) in parts {
                    map[at..at + bytes.len()].copy_from_slice(bytes);
                }
                (map.make_read_only().map_err(memory)?, None)
            }
        };
        // Just computed from these very bytes: nothing to verify.
        Ok(Segment {
            q8_state: (0..blocks(n, Q8_BLOCK_ROWS)).map(|_| AtomicU8::new(1)).collect(),
            f32_state: (0..blocks(n, F32_BLOCK_ROWS)).map(|_| AtomicU8::new(1)).collect(),
            map,
            year,
            rows: n,
            dim,
            categories: rows.categories.clone(),
            sections,
            path: final_path,
            stamps,
            keys,
        })
    }
}

fn block_sums(q8: &[u8], f32s: &[u8], rows: usize, dim: usize) -> (Vec<u64>, Vec<u64>) {
    use rayon::prelude::*;
    let q8_sums = (0..blocks(rows, Q8_BLOCK_ROWS))
        .into_par_iter()
        .map(|b| {
            let (start, end) = q8_range(rows, dim, b);
            xxh3_64(&q8[start..end])
        })
        .collect();
    let f32_sums = (0..blocks(rows, F32_BLOCK_ROWS))
        .into_par_iter()
        .map(|b| {
            let start = 4 * b * F32_BLOCK_ROWS * dim;
            xxh3_64(&f32s[start..4 * ((b + 1) * F32_BLOCK_ROWS).min(rows) * dim])
        })
        .collect();
    (q8_sums, f32_sums)
}

/// The bytes of `values`.
fn bytes_of(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every byte of it is initialised; u8
    // has alignment 1, and the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// The bytes of `words`, writable.
fn bytes_of_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in `bytes_of`; any byte pattern is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// The sections of `map` as disjoint mutable slices, in file order.
fn split_sections<'a>(mut map: &'a mut [u8], sections: &[Range<usize>]) -> Vec<&'a mut [u8]> {
    let mut out = Vec::with_capacity(SECTIONS);
    let mut consumed = 0;
    for r in sections {
        let (_, rest) = std::mem::take(&mut map).split_at_mut(r.start - consumed);
        let (section, rest) = rest.split_at_mut(r.len());
        out.push(section);
        map = rest;
        consumed = r.end;
    }
    out
}

fn fill_strings(offsets: &mut [u8], bytes: &mut [u8], values: &[String]) {
    let ends: &mut [u32] = view_mut(offsets);
    let mut at = 0usize;
    ends[0] = 0;
    for (value, end) in values.iter().zip(&mut ends[1..]) {
        bytes[at..at + value.len()].copy_from_slice(value.as_bytes());
        at += value.len();
        *end = at as u32;
    }
}

/// Writes every small section but the checksums into `head` (the file's
/// bytes before the int8 matrix) and the int8 matrix into `q8`.
fn fill(head: &mut [u8], q8: &mut [u8], sections: &[Range<usize>; SECTIONS], rows: &Rows, dim: usize) {
    use rayon::prelude::*;
    let mut parts = split_sections(head, &sections[..Sec::Q8 as usize]).into_iter();
    let mut next = || parts.next().unwrap_or_default();
    let (id_offsets, ids) = (next(), next());
    fill_strings(id_offsets, ids, &rows.ids);
    let (title_offsets, titles) = (next(), next());
    fill_strings(title_offsets, titles, &rows.titles);
    let (date_offsets, dates) = (next(), next());
    fill_strings(date_offsets, dates, &rows.dates);
    let (cat_offsets, cats) = (next(), next());
    let ends: &mut [u32] = view_mut(cat_offsets);
    let flat: &mut [u16] = view_mut(cats);
    let mut at = 0usize;
    ends[0] = 0;
    for (list, end) in rows.cats.iter().zip(&mut ends[1..]) {
        flat[at..at + list.len()].copy_from_slice(list);
        at += list.len();
        *end = at as u32;
    }
    let scales: &mut [f32] = view_mut(next());
    let bounds: &mut [f32] = view_mut(next());
    let norms: &mut [f64] = view_mut(next());
    if dim == 0 {
        return;
    }
    q8.par_chunks_mut(LANES * padded_dim(dim))
        .zip(rows.vectors.par_chunks(LANES * dim))
        .zip(scales.par_chunks_mut(LANES))
        .zip(bounds.par_chunks_mut(LANES))
        .zip(norms.par_chunks_mut(LANES))
        .for_each(|((((group, x), scales), bounds), norms)| {
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
                norms[r] = quantised.inv_norm;
            }
            super::scan::interleave(q, dim, group);
        });
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

    #[test]
    fn a_file_segment_reads_back_and_damage_is_found() {
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
            assert_eq!(seg.title(7), "Title 7");
            assert_eq!(seg.published_at(7), "2024-01-02T00:00:00Z");
            assert_eq!(seg.category_ids(3), [1]);
            assert_eq!(seg.find("p2000"), Some(2000));
            assert_eq!(seg.find("p9999"), None);
            assert_eq!(seg.vector(2499).unwrap(), &data.vectors[2499 * dim..]);
            assert!(seg.q8_block(2).is_ok());
        }
        assert!(
            memory.map[..] == opened.map[..memory.map.len()],
            "memory and file hold the same bytes"
        );

        // A flipped byte in the int8 and in the f32 matrix: found on first use.
        let good = std::fs::read(&path).unwrap();
        let sections = footer_sections(&good);
        let mut bad = good.clone();
        bad[sections[Sec::Q8 as usize].0 as usize + 3 * padded_dim(dim) * Q8_BLOCK_ROWS / 2] ^= 1;
        bad[sections[Sec::F32 as usize].0 as usize + 4 * dim * 70] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let damaged_seg = Segment::open(&path).unwrap();
        assert!(damaged_seg.q8_block(0).is_ok());
        assert!(matches!(
            damaged_seg.q8_block(1),
            Err(QueryError::CacheDamaged { .. })
        ));
        assert!(matches!(
            damaged_seg.q8_block(1),
            Err(QueryError::CacheDamaged { .. })
        ));
        assert!(damaged_seg.vector(3).is_ok());
        assert!(matches!(
            damaged_seg.vector(70),
            Err(QueryError::CacheDamaged { .. })
        ));

        // Truncated, or a small section garbled: refused when opened.
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            Segment::open(&path),
            Err(QueryError::CacheDamaged { .. })
        ));
        let mut bad = good.clone();
        bad[sections[Sec::Titles as usize].0 as usize] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            Segment::open(&path),
            Err(QueryError::CacheDamaged { .. })
        ));
    }
}
