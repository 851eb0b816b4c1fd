//! The exact nearest-neighbour scan, for one query or a block of them.
//!
//! Every row is stored twice: as f32 (the truth) and as its unit vector
//! quantised to int8 with one scale per row, `x/|x| = s·q + e`, with a bound
//! `b >= |e|` ([`quantise`]). A unit query `Q` is quantised the same way
//! for each scan, `Q = t·p + f`. The scan computes the integer dot product
//! `q·p` exactly (int8 × int8 summed in i32: AVX-512 VNNI `vpdpbusd`, AVX2
//! `vpmaddubsw` or plain Rust, picked at run time) and the estimate
//! `a = s·t·(q·p)`. Then `|cos - a| <= b + (1 + b)·|f|` (Cauchy–Schwarz,
//! with `|s·q| <= 1 + b`), widened by a margin that covers every f32
//! rounding of `a` and of the comparisons.
//!
//! The scan keeps, per query, the k largest lower bounds `a - bound` and
//! every row whose upper bound `a + bound` reaches the k-th lower bound seen
//! so far. With `L` the k-th largest lower bound over all rows, at least k
//! rows have a cosine >= `L`, so every row of the true top k (and every row
//! tied with its last) has an upper bound >= `L` and is a candidate. The
//! candidates are re-ranked with the exact cosine (f64 arithmetic over the
//! f32 vectors), ordered by score descending then paper id ascending, and
//! cut to k: the same papers in the same order as an exact scan of every
//! f32 vector, whatever the kernel, the block of queries or the threads.
//!
//! The int8 matrix is laid out for the kernels: rows in groups of
//! [`LANES`]; within a group, for each run of 4 dimensions, 64 bytes (4 per
//! row), each byte `q + 128` (unsigned, as `vpdpbusd` wants it; the query's
//! `128·Σp` is taken off the sum). A block of queries reads each group once
//! from memory for all of them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::QueryError;
use super::segment::{CHECKS, Q8_BLOCK_ROWS, Segment};

/// Rows per group of the int8 layout.
pub(crate) const LANES: usize = 16;

/// Rows of a block handled per kernel call (the group lines stay in cache
/// while every query of the block passes over them).
const SUB_ROWS: usize = 256;

/// Queries per kernel call.
const QUERY_CHUNK: usize = 48;

/// Absolute margin added to every bound: covers the f32 rounding of the
/// estimate (a few ulp of a value <= 1.1) and of the bound itself.
const MARGIN: f32 = 1e-5;

/// Dimensions padded to a multiple of 4 (one 32-bit word per row and line).
pub(crate) fn padded_dim(dim: usize) -> usize {
    dim.next_multiple_of(4)
}

/// A row's int8 form, as [`quantise`] made it.
pub(crate) struct Quantised {
    /// `x / |x| ≈ scale · q`.
    pub scale: f32,
    /// Upper bound of `|x/|x| - scale · q|`.
    pub bound: f32,
}

/// `value` rounded up to an f32.
fn f32_up(value: f64) -> f32 {
    let rounded = value as f32;
    if f64::from(rounded) < value {
        rounded.next_up()
    } else {
        rounded
    }
}

/// Adding and taking off 1.5·2^52 rounds to an integer (ties to even)
/// without a libm call; any rounding would do, the error is measured.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// Quantises the unit vector of `x` into `q` (symmetric, one scale, values
/// in `-qmax..=qmax`); returns the scale and the bound of the error.
fn quantise_unit(x: impl Iterator<Item = f64> + Clone, qmax: f64, q: &mut [i8]) -> (f32, f64) {
    let max = x.clone().map(f64::abs).fold(0.0, f64::max);
    let scale = (max / qmax) as f32;
    if scale == 0.0 || !scale.is_normal() {
        q.fill(0);
        return (0.0, f64::INFINITY);
    }
    let s = f64::from(scale);
    let inv = 1.0 / s;
    let mut err2 = 0.0f64;
    for (u, out) in x.zip(q.iter_mut()) {
        let r = ((u * inv + ROUND) - ROUND).clamp(-qmax, qmax);
        *out = r as i8;
        err2 += (u - s * r) * (u - s * r);
    }
    // f64 rounding of err2 is ~1e-16 relative: a factor covers it.
    (scale, err2.sqrt() * (1.0 + 1e-9))
}

/// `1 / |x|` in f64 (0 for a zero or non-finite vector).
pub(crate) fn inv_norm(x: &[f32]) -> f64 {
    let norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        0.0
    } else {
        1.0 / norm
    }
}

/// Independent partial sums per reduction in [`quantise`]: one long chain
/// of dependent f64 additions would bound it by the adder's latency; eight
/// let the compiler keep vector registers busy.
const SUM_LANES: usize = 8;

/// Quantises the unit vector of `x` into `q` (values in -127..=127) and
/// bounds the error. The same values as [`quantise_unit`] would give on
/// `x / |x|`, computed in lanes (this runs once per stored vector), with
/// the widest vectors the CPU has: the arithmetic is the same on every
/// path (no fused multiply-adds), so are the results.
pub(crate) fn quantise(x: &[f32], q: &mut [i8]) -> Quantised {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { quantise_avx512(x, q) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { quantise_avx2(x, q) };
        }
    }
    quantise_lanes(x, q)
}

/// [`quantise_lanes`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn quantise_avx512(x: &[f32], q: &mut [i8]) -> Quantised {
    quantise_lanes(x, q)
}

/// [`quantise_lanes`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantise_avx2(x: &[f32], q: &mut [i8]) -> Quantised {
    quantise_lanes(x, q)
}

#[inline(always)]
fn quantise_lanes(x: &[f32], q: &mut [i8]) -> Quantised {
    let mut squares = [0f64; SUM_LANES];
    let mut largest = [0f32; SUM_LANES];
    let mut chunks = x.chunks_exact(SUM_LANES);
    for chunk in &mut chunks {
        for i in 0..SUM_LANES {
            squares[i] += f64::from(chunk[i]) * f64::from(chunk[i]);
            // A plain comparison (a NaN makes the norm NaN and returns below).
            let a = chunk[i].abs();
            largest[i] = if a > largest[i] { a } else { largest[i] };
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        squares[i] += f64::from(v) * f64::from(v);
        let a = v.abs();
        largest[i] = if a > largest[i] { a } else { largest[i] };
    }
    let norm = squares.iter().sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        q.fill(0);
        return Quantised {
            scale: 0.0,
            bound: 0.0,
        };
    }
    let inv = 1.0 / norm;
    // Rounding is monotonic: the largest |x_i · inv| is the largest |x_i| times inv.
    let max = f64::from(largest.iter().fold(0f32, |m, &v| m.max(v))) * inv;
    let scale = (max / 127.0) as f32;
    if scale == 0.0 || !scale.is_normal() {
        // Too small to scale: estimate 0 with the widest bound a unit vector needs.
        q.fill(0);
        return Quantised {
            scale: 0.0,
            bound: 1.0 + 1e-3,
        };
    }
    let s = f64::from(scale);
    let to_grid = 1.0 / s;
    let mut err2 = [0f64; SUM_LANES];
    let step = |v: f32, out: &mut i8, err: &mut f64| {
        let u = f64::from(v) * inv;
        let r = ((u * to_grid + ROUND) - ROUND).clamp(-127.0, 127.0);
        // r is an integer in -127..=127, so r + 1.5·2^52 holds it in the
        // low byte of its bits (two's complement): a cast without the
        // saturating float-to-int conversion, which does not vectorise.
        *out = (r + ROUND).to_bits() as u8 as i8;
        *err += (u - s * r) * (u - s * r);
    };
    let mut pairs = x.chunks_exact(SUM_LANES).zip(q.chunks_exact_mut(SUM_LANES));
    for (chunk, out) in &mut pairs {
        for i in 0..SUM_LANES {
            step(chunk[i], &mut out[i], &mut err2[i]);
        }
    }
    let tail = x.len() / SUM_LANES * SUM_LANES;
    for (i, (&v, out)) in x[tail..].iter().zip(&mut q[tail..]).enumerate() {
        step(v, out, &mut err2[i]);
    }
    Quantised {
        scale,
        // f64 rounding of the sums is ~1e-16 relative: a factor covers it.
        bound: f32_up(err2.iter().sum::<f64>().sqrt() * (1.0 + 1e-9)),
    }
}

/// Writes the quantised rows `q` (`dim` each, at most [`LANES`] rows) as
/// one group of the int8 layout into `out` (`LANES * padded_dim(dim)` bytes;
/// missing rows and padding read as 0).
pub(crate) fn interleave(q: &[i8], dim: usize, out: &mut [u8]) {
    out.fill(128);
    if dim == 0 {
        return;
    }
    for (r, row) in q.chunks_exact(dim).enumerate().take(LANES) {
        for (j, &v) in row.iter().enumerate() {
            out[(j / 4) * 4 * LANES + 4 * r + j % 4] = (i16::from(v) + 128) as u8;
        }
    }
}

/// The check vectors of the int8 rows (see `segment.rs`), packed as the
/// kernels take queries: `CHECKS` vectors of `padded_dim(dim) / 4` words,
/// fixed pseudo-random weights in ±1..=63 (any kernel takes them).
pub(crate) fn check_weights(dim: usize) -> Vec<i32> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = Vec::with_capacity(CHECKS * padded_dim(dim));
    for _ in 0..CHECKS * padded_dim(dim) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let magnitude = (seed >> 33) % 63 + 1;
        let weight = if (seed >> 20) & 1 == 1 {
            magnitude as i8
        } else {
            -(magnitude as i8)
        };
        bytes.push(weight as u8);
    }
    bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The check sums of the rows of one int8 `group` (as [`interleave`] wrote
/// it) into `out` (`CHECKS` per row, for `out.len() / CHECKS` rows): the
/// kernels' sums with the check vectors `weights`.
pub(crate) fn check_sums(group: &[u8], dim: usize, weights: &[i32], out: &mut [i32]) {
    let mut dots = [0i32; CHECKS * LANES];
    (dispatch().kernel)(group, padded_dim(dim) / 4, weights, &mut dots);
    for (r, row) in out.chunks_exact_mut(CHECKS).enumerate() {
        for (c, value) in row.iter_mut().enumerate() {
            *value = dots[c * LANES + r];
        }
    }
}

/// Integer dot products of the rows of `block` (whole groups, `words` words
/// per row) with each query of `queries` (`words` packed i32 each), into
/// `out`: query j, row r at `out[j * rows + r]`. The sums include the
/// `128·Σp` of the unsigned matrix bytes.
type Kernel = fn(&[u8], usize, &[i32], &mut [i32]);

#[derive(Clone, Copy)]
struct Dispatch {
    kernel: Kernel,
    /// Largest |p| of a quantised query the kernel takes.
    qmax: f64,
    name: &'static str,
}

fn dispatch() -> Dispatch {
    static KERNEL: OnceLock<Dispatch> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Dispatch {
                    kernel: x86::dots_vnni,
                    qmax: 127.0,
                    name: "avx512-vnni",
                };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // vpmaddubsw saturates i16: 2 · 255 · 63 < 32767.
                return Dispatch {
                    kernel: x86::dots_avx2,
                    qmax: 63.0,
                    name: "avx2",
                };
            }
        }
        Dispatch {
            kernel: dots_scalar,
            qmax: 127.0,
            name: "scalar",
        }
    })
}

/// Name of the scan kernel this CPU runs (`avx512-vnni`, `avx2` or `scalar`).
pub fn kernel_name() -> &'static str {
    dispatch().name
}

fn dots_scalar(block: &[u8], words: usize, queries: &[i32], out: &mut [i32]) {
    if words == 0 {
        out.fill(0);
        return;
    }
    let groups = block.len() / (4 * LANES * words);
    let rows = groups * LANES;
    for (query, out) in queries.chunks_exact(words).zip(out.chunks_mut(rows)) {
        for (group, out) in block.chunks_exact(4 * LANES * words).zip(out.chunks_mut(LANES)) {
            let mut acc = [0i32; LANES];
            for (line, word) in group.chunks_exact(4 * LANES).zip(query) {
                let p = word.to_le_bytes().map(|b| i32::from(b as i8));
                for (a, x) in acc.iter_mut().zip(line.chunks_exact(4)) {
                    *a += i32::from(x[0]) * p[0]
                        + i32::from(x[1]) * p[1]
                        + i32::from(x[2]) * p[2]
                        + i32::from(x[3]) * p[3];
                }
            }
            out.copy_from_slice(&acc[..out.len()]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::LANES;

    /// The AVX-512 VNNI kernel. Only reachable through `dispatch()`, which
    /// picks it after `is_x86_feature_detected!` confirmed the features.
    pub(super) fn dots_vnni(block: &[u8], words: usize, queries: &[i32], out: &mut [i32]) {
        let (groups, queries_n) = super::shape(block, words, queries, out);
        // SAFETY: `dispatch()` selects this function only when the running
        // CPU supports AVX-512 F, BW and VNNI; `shape` checked that every
        // read and write below stays inside the slices.
        unsafe {
            vnni(
                block.as_ptr(),
                words,
                groups,
                queries.as_ptr(),
                queries_n,
                out.as_mut_ptr(),
            )
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni(
        block: *const u8,
        words: usize,
        groups: usize,
        queries: *const i32,
        n: usize,
        out: *mut i32,
    ) {
        let mut j = 0;
        while j + 6 <= n {
            unsafe { vnni_queries::<6>(block, words, groups, queries, j, out) };
            j += 6;
        }
        // SAFETY (all calls): as in `dots_vnni`.
        unsafe {
            match n - j {
                5 => vnni_queries::<5>(block, words, groups, queries, j, out),
                4 => vnni_queries::<4>(block, words, groups, queries, j, out),
                3 => vnni_queries::<3>(block, words, groups, queries, j, out),
                2 => vnni_queries::<2>(block, words, groups, queries, j, out),
                1 => vnni_queries::<1>(block, words, groups, queries, j, out),
                _ => {}
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn vnni_queries<const Q: usize>(
        block: *const u8,
        words: usize,
        groups: usize,
        queries: *const i32,
        first: usize,
        out: *mut i32,
    ) {
        let rows = groups * LANES;
        let mut g = 0;
        while g + 4 <= groups {
            unsafe { vnni_tile::<4, Q>(block, words, g, queries, first, out, rows) };
            g += 4;
        }
        while g < groups {
            unsafe { vnni_tile::<1, Q>(block, words, g, queries, first, out, rows) };
            g += 1;
        }
    }

    /// R groups × Q queries, accumulated in registers (walked query by
    /// query, so that one broadcast serves R groups).
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn vnni_tile<const R: usize, const Q: usize>(
        block: *const u8,
        words: usize,
        g: usize,
        queries: *const i32,
        first: usize,
        out: *mut i32,
        rows: usize,
    ) {
        let mut acc = [[_mm512_setzero_si512(); Q]; R];
        for w in 0..words {
            let mut m = [_mm512_setzero_si512(); R];
            for (r, m) in m.iter_mut().enumerate() {
                // SAFETY: group g + r < groups, word w < words: inside the block.
                *m = unsafe { _mm512_loadu_si512(block.add(((g + r) * words + w) * 4 * LANES) as *const _) };
            }
            for j in 0..Q {
                // SAFETY: query first + j < n, word w < words.
                let p = _mm512_set1_epi32(unsafe { *queries.add((first + j) * words + w) });
                for r in 0..R {
                    acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], m[r], p);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                // SAFETY: row (g + r)·16 + 15 < rows, query first + j < n.
                unsafe { _mm512_storeu_si512(out.add((first + j) * rows + (g + r) * LANES) as *mut _, *acc) };
            }
        }
    }

    /// The AVX2 kernel (`vpmaddubsw`, queries limited to ±63). Only
    /// reachable through `dispatch()`, after AVX2 was detected.
    pub(super) fn dots_avx2(block: &[u8], words: usize, queries: &[i32], out: &mut [i32]) {
        let (groups, queries_n) = super::shape(block, words, queries, out);
        // SAFETY: as in `dots_vnni`, for AVX2.
        unsafe {
            avx2(
                block.as_ptr(),
                words,
                groups,
                queries.as_ptr(),
                queries_n,
                out.as_mut_ptr(),
            )
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn avx2(
        block: *const u8,
        words: usize,
        groups: usize,
        queries: *const i32,
        n: usize,
        out: *mut i32,
    ) {
        let rows = groups * LANES;
        let ones = _mm256_set1_epi16(1);
        for j in 0..n {
            for g in 0..groups {
                let mut acc = [_mm256_setzero_si256(); 2];
                for w in 0..words {
                    // SAFETY: query j < n, word w < words, group g < groups.
                    let p = _mm256_set1_epi32(unsafe { *queries.add(j * words + w) });
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let m = unsafe {
                            _mm256_loadu_si256(block.add((g * words + w) * 4 * LANES + 32 * h) as *const _)
                        };
                        let pairs = _mm256_maddubs_epi16(m, p);
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(pairs, ones));
                    }
                }
                for (h, acc) in acc.iter().enumerate() {
                    // SAFETY: row g·16 + 8h + 7 < rows.
                    unsafe { _mm256_storeu_si256(out.add(j * rows + g * LANES + 8 * h) as *mut _, *acc) };
                }
            }
        }
    }
}

/// Checks the slices a kernel gets; returns (groups, queries). Panics on a
/// caller's bug (never on input data: the sizes come from the layout).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn shape(block: &[u8], words: usize, queries: &[i32], out: &[i32]) -> (usize, usize) {
    let line = 4 * LANES * words.max(1);
    let groups = block.len() / line;
    let n = queries.len() / words.max(1);
    assert!(
        block.len() == groups * line && queries.len() == n * words && out.len() >= n * groups * LANES,
        "scan kernel called with inconsistent slices"
    );
    (groups, n)
}

/// Which rows of a segment a query may return.
pub(crate) enum Allowed {
    /// Every row.
    All,
    /// None: the segment is not scanned.
    Skip,
    /// The rows whose bit is set.
    Rows(Vec<u64>),
}

impl Allowed {
    fn has(&self, row: usize) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Skip => false,
            Allowed::Rows(bits) => bits.get(row / 64).is_some_and(|w| (w >> (row % 64)) & 1 == 1),
        }
    }
}

/// A lower bound, ordered by `total_cmp`.
#[derive(Clone, Copy)]
struct Lower(f32);
impl PartialEq for Lower {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Lower {}
impl PartialOrd for Lower {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Lower {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One query's state in one thread: the k largest lower bounds and the
/// candidates.
#[derive(Clone)]
struct State {
    k: usize,
    lowers: BinaryHeap<Reverse<Lower>>,
    /// The k-th largest lower bound so far (-inf until there are k).
    cut: f32,
    /// (segment, row, upper bound).
    candidates: Vec<(u32, u32, f32)>,
}

impl State {
    fn new(k: usize) -> State {
        State {
            k,
            lowers: BinaryHeap::with_capacity(k + 1),
            cut: f32::NEG_INFINITY,
            candidates: Vec::new(),
        }
    }

    fn push_lower(&mut self, lower: f32) {
        if self.lowers.len() < self.k {
            self.lowers.push(Reverse(Lower(lower)));
        } else if self.cut < lower {
            self.lowers.pop();
            self.lowers.push(Reverse(Lower(lower)));
        } else {
            return;
        }
        if self.lowers.len() == self.k {
            self.cut = self.lowers.peek().map_or(f32::NEG_INFINITY, |r| r.0.0);
        }
    }

    fn prune(&mut self) {
        let cut = self.cut;
        self.candidates.retain(|c| c.2 >= cut);
    }

    fn merge(&mut self, other: State) {
        for Reverse(Lower(lower)) in other.lowers {
            self.push_lower(lower);
        }
        self.candidates.extend(other.candidates);
        self.prune();
    }
}

/// A query as the kernels take it.
struct Prepared {
    /// `t` of `Q ≈ t·p`.
    scale: f32,
    /// `128·Σp`, taken off the kernel's sums.
    bias: i32,
    /// The bound of a row is `b·(1 + |f|) + |f| + MARGIN`.
    factor: f32,
    offset: f32,
}

fn prepare(query: &[f64], qmax: f64, words: &mut [i32]) -> Prepared {
    let mut p = vec![0i8; words.len() * 4];
    let (scale, err) = quantise_unit(query.iter().copied(), qmax, &mut p[..query.len()]);
    let err = if scale == 0.0 { 0.0 } else { err };
    for (word, bytes) in words.iter_mut().zip(p.chunks_exact(4)) {
        *word = i32::from_le_bytes([bytes[0] as u8, bytes[1] as u8, bytes[2] as u8, bytes[3] as u8]);
    }
    Prepared {
        scale,
        bias: 128 * p.iter().map(|&v| i32::from(v)).sum::<i32>(),
        factor: f32_up(1.0 + err),
        offset: f32_up(err) + MARGIN,
    }
}

/// Scratch of one thread: every query's state and the kernel's output.
struct Work {
    states: Vec<State>,
    dots: Vec<i32>,
}

/// (segment, row, exact cosine) of one query's results, best first.
pub(crate) type Ranked = Vec<(usize, usize, f64)>;

/// The k rows of highest cosine with each unit vector of `queries` among
/// the allowed rows of `segments`, as (segment, row, score), best first,
/// ties by paper id. One pass over the int8 matrix serves every query.
pub(crate) fn top_k_many(
    segments: &[Segment],
    allowed: &[Allowed],
    queries: &[Vec<f64>],
    k: usize,
) -> Result<Vec<Ranked>, QueryError> {
    let Some(dim) = queries.first().map(Vec::len) else {
        return Ok(Vec::new());
    };
    if k == 0 {
        return Ok(vec![Vec::new(); queries.len()]);
    }
    let words = padded_dim(dim) / 4;
    let kernel = dispatch();
    // The queries, then the check vectors: one pass computes both.
    let mut packed = vec![0i32; queries.len() * words];
    let prepared: Vec<Prepared> = queries
        .iter()
        .zip(packed.chunks_mut(words.max(1)))
        .map(|(q, w)| prepare(q, kernel.qmax, w))
        .collect();
    let users = queries.len();
    if words > 0 {
        packed.extend(check_weights(dim));
    }
    let items: Vec<(usize, usize)> = segments
        .iter()
        .enumerate()
        .filter(|(s, _)| !matches!(allowed[*s], Allowed::Skip))
        .flat_map(|(s, seg)| (0..seg.q8_blocks()).map(move |b| (s, b)))
        .collect();
    let all = packed.len() / words.max(1);
    let new_work = || Work {
        states: vec![State::new(k); users],
        dots: vec![0; QUERY_CHUNK.min(all) * SUB_ROWS],
    };
    let work = items
        .par_iter()
        .try_fold(new_work, |mut work, &(s, b)| -> Result<Work, QueryError> {
            let seg = &segments[s];
            let block = seg.q8_block(b);
            let first = b * Q8_BLOCK_ROWS;
            let meta = seg.scan_rows(first..(first + Q8_BLOCK_ROWS).min(seg.len()))?;
            let line = 4 * LANES * words.max(1);
            for (sub, lines) in block.chunks(SUB_ROWS / LANES * line).enumerate() {
                let local = sub * SUB_ROWS;
                let start = first + local;
                let rows = (lines.len() / line * LANES).min(seg.len().saturating_sub(start));
                let scales = meta.scales.get(local..local + rows).unwrap_or(&[]);
                let bounds = meta.bounds.get(local..local + rows).unwrap_or(&[]);
                let checks = meta
                    .checks
                    .get(local * CHECKS..(local + rows) * CHECKS)
                    .unwrap_or(&[]);
                if scales.len() != rows || checks.len() != rows * CHECKS {
                    return Err(seg.q8_damaged(start));
                }
                let stride = lines.len() / line * LANES;
                for (chunk, query_words) in packed.chunks(QUERY_CHUNK * words.max(1)).enumerate() {
                    let n = query_words.len() / words.max(1);
                    let dots = &mut work.dots[..n * stride];
                    (kernel.kernel)(lines, words, query_words, dots);
                    for j in 0..n {
                        let qi = chunk * QUERY_CHUNK + j;
                        let dots = &dots[j * stride..j * stride + rows];
                        if qi >= users {
                            let c = qi - users;
                            if let Some(r) = (0..rows).find(|&r| dots[r] != checks[r * CHECKS + c]) {
                                return Err(seg.q8_damaged(start + r));
                            }
                            continue;
                        }
                        collect(
                            &mut work.states[qi],
                            &prepared[qi],
                            dots,
                            scales,
                            bounds,
                            &allowed[s],
                            s as u32,
                            start,
                        );
                    }
                }
            }
            for state in &mut work.states {
                if state.candidates.len() > 4 * k + 4096 {
                    state.prune();
                }
            }
            Ok(work)
        })
        .try_reduce(new_work, |mut a, b| {
            for (a, b) in a.states.iter_mut().zip(b.states) {
                a.merge(b);
            }
            Ok(a)
        })?;
    let rerank = |(state, query): (State, &Vec<f64>)| -> Result<Ranked, QueryError> {
        let mut state = state;
        state.prune();
        let exact = |&(s, row, _): &(u32, u32, f32)| -> Result<(usize, usize, f64), QueryError> {
            let (s, row) = (s as usize, row as usize);
            let x = segments[s].vector(row)?;
            Ok((s, row, exact_cosine(x, Some(inv_norm(x)), query)))
        };
        let mut scored: Vec<(usize, usize, f64)> = if queries.len() == 1 {
            state.candidates.par_iter().map(exact).collect::<Result<_, _>>()?
        } else {
            state.candidates.iter().map(exact).collect::<Result<_, _>>()?
        };
        scored.sort_by(|a, b| {
            b.2.total_cmp(&a.2)
                .then_with(|| segments[a.0].id(a.1).cmp(segments[b.0].id(b.1)))
        });
        scored.truncate(k);
        Ok(scored)
    };
    work.states
        .into_par_iter()
        .zip(queries.par_iter())
        .map(rerank)
        .collect()
}

/// Folds one query's estimates of `rows` consecutive rows (from `start`)
/// into its state.
#[allow(clippy::too_many_arguments)]
#[inline]
fn collect(
    state: &mut State,
    query: &Prepared,
    dots: &[i32],
    scales: &[f32],
    bounds: &[f32],
    rule: &Allowed,
    segment: u32,
    start: usize,
) {
    let all = matches!(rule, Allowed::All);
    let chunks = dots
        .chunks(LANES)
        .zip(scales.chunks(LANES))
        .zip(bounds.chunks(LANES));
    for (c, ((dots, scales), bounds)) in chunks.enumerate() {
        let n = dots.len();
        let (mut d, mut s, mut b) = ([query.bias; LANES], [0f32; LANES], [0f32; LANES]);
        d[..n].copy_from_slice(dots);
        s[..n].copy_from_slice(scales);
        b[..n].copy_from_slice(bounds);
        let (mut estimate, mut width) = ([0f32; LANES], [0f32; LANES]);
        let cut = state.cut;
        let mut reach = false;
        for i in 0..LANES {
            estimate[i] = (d[i] - query.bias) as f32 * (s[i] * query.scale);
            width[i] = b[i] * query.factor + query.offset;
            reach |= estimate[i] + width[i] >= cut;
        }
        if !reach {
            continue;
        }
        for i in 0..n {
            let upper = estimate[i] + width[i];
            if upper < state.cut {
                continue;
            }
            let row = start + c * LANES + i;
            if !all && !rule.has(row) {
                continue;
            }
            state.push_lower(estimate[i] - width[i]);
            state.candidates.push((segment, row as u32, upper));
        }
    }
}

/// Cosine of `x` with the unit vector `query`, in f64.
pub(crate) fn exact_cosine(x: &[f32], inv_norm: Option<f64>, query: &[f64]) -> f64 {
    let inv = inv_norm.unwrap_or(0.0);
    if inv == 0.0 {
        return 0.0;
    }
    let dot: f64 = x.iter().zip(query).map(|(&a, &b)| f64::from(a) * b).sum();
    dot * inv
}

#[cfg(test)]
mod tests {
    use super::super::segment::{Rows, Stamps};
    use super::*;
    use crate::metadata::Year;
    use crate::store::cache::FileStamp;

    /// [`top_k_many`] for one query.
    fn top_k(
        segments: &[Segment],
        allowed: &[Allowed],
        query: &[f64],
        k: usize,
    ) -> Result<Vec<(usize, usize, f64)>, QueryError> {
        Ok(top_k_many(segments, allowed, &[query.to_vec()], k)?
            .pop()
            .unwrap_or_default())
    }

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn unit(raw: Vec<f64>) -> Vec<f64> {
        let n = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        raw.iter().map(|v| v / n).collect()
    }

    /// Every kernel this CPU can run.
    fn kernels() -> Vec<(Kernel, f64, &'static str)> {
        let mut all: Vec<(Kernel, f64, &'static str)> = vec![(dots_scalar, 127.0, "scalar")];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                all.push((x86::dots_vnni, 127.0, "avx512-vnni"));
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push((x86::dots_avx2, 63.0, "avx2"));
            }
        }
        all
    }

    #[test]
    fn kernels_compute_exact_integer_dots_and_the_bounds_hold() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for (kernel, qmax, name) in kernels() {
            for (dim, rows, nq) in [
                (384usize, 70usize, 13usize),
                (37, 16, 7),
                (8, 33, 1),
                (1, 5, 6),
                (4, 64, 2),
            ] {
                let x: Vec<f32> = (0..rows * dim).map(|_| rng(&mut seed)).collect();
                let mut q8 = vec![0i8; rows * dim];
                let quantised: Vec<Quantised> = x
                    .chunks(dim)
                    .zip(q8.chunks_mut(dim))
                    .map(|(x, q)| quantise(x, q))
                    .collect();
                let pd = padded_dim(dim);
                let groups = rows.div_ceil(LANES);
                let mut matrix = vec![0u8; groups * LANES * pd];
                for (group, q) in matrix.chunks_mut(LANES * pd).zip(q8.chunks(LANES * dim)) {
                    interleave(q, dim, group);
                }
                let queries: Vec<Vec<f64>> = (0..nq)
                    .map(|_| unit((0..dim).map(|_| f64::from(rng(&mut seed))).collect()))
                    .collect();
                let words = pd / 4;
                let mut packed = vec![0i32; nq * words];
                let prepared: Vec<Prepared> = queries
                    .iter()
                    .zip(packed.chunks_mut(words))
                    .map(|(q, w)| prepare(q, qmax, w))
                    .collect();
                let mut out = vec![0i32; nq * groups * LANES];
                kernel(&matrix, words, &packed, &mut out);
                for (j, (query, prep)) in queries.iter().zip(&prepared).enumerate() {
                    let p: Vec<i32> = packed[j * words..(j + 1) * words]
                        .iter()
                        .flat_map(|w| w.to_le_bytes().map(|b| i32::from(b as i8)))
                        .collect();
                    assert!(p.iter().all(|v| v.abs() as f64 <= qmax));
                    for r in 0..rows {
                        let want: i32 = (0..dim).map(|i| i32::from(q8[r * dim + i]) * p[i]).sum();
                        let dot = out[j * groups * LANES + r] - prep.bias;
                        assert_eq!(dot, want, "{name} dim {dim} query {j} row {r}");
                        let q = &quantised[r];
                        let estimate = dot as f32 * (q.scale * prep.scale);
                        let width = q.bound * prep.factor + prep.offset;
                        let x = &x[r * dim..(r + 1) * dim];
                        let exact = exact_cosine(x, Some(inv_norm(x)), query);
                        assert!(
                            (exact - f64::from(estimate)).abs() <= f64::from(width),
                            "{name} dim {dim} row {r}: exact {exact} estimate {estimate} width {width}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zero_and_non_finite_vectors_score_zero() {
        let mut q = [0i8; 4];
        let z = quantise(&[0.0; 4], &mut q);
        assert_eq!(z.scale, 0.0);
        assert_eq!(inv_norm(&[0.0; 4]), 0.0);
        assert_eq!(inv_norm(&[f32::NAN, 1.0, 0.0, 0.0]), 0.0);
        assert_eq!(
            exact_cosine(&[f32::NAN; 4], Some(0.0), &[1.0, 0.0, 0.0, 0.0]),
            0.0
        );
    }

    #[test]
    fn quantise_in_lanes_equals_the_one_chain_formula() {
        let mut seed = 0x51_7cc1_b727_220au64;
        for dim in [1usize, 7, 8, 9, 37, 384, 1024] {
            for _ in 0..50 {
                let x: Vec<f32> = (0..dim).map(|_| rng(&mut seed) * 3.0).collect();
                let mut fast = vec![0i8; dim];
                let got = quantise(&x, &mut fast);
                let inv = inv_norm(&x);
                let mut slow = vec![0i8; dim];
                let (scale, err) = quantise_unit(x.iter().map(|&v| f64::from(v) * inv), 127.0, &mut slow);
                assert_eq!(fast, slow, "dim {dim}");
                assert_eq!(got.scale, scale, "dim {dim}");
                let bound = f64::from(got.bound);
                assert!(
                    bound >= err && bound <= err * (1.0 + 1e-6) + 1e-30,
                    "dim {dim}: {bound} vs {err}"
                );
            }
        }
    }

    /// A block of queries gives exactly what one query at a time gives, and
    /// both equal brute force (ties by id), with near ties and duplicates.
    #[test]
    fn a_block_of_queries_equals_one_at_a_time_and_brute_force() {
        let mut seed = 0x2545f4914f6cdd1du64;
        let dim = 40;
        let mut segments = Vec::new();
        let mut all: Vec<(String, Vec<f32>)> = Vec::new();
        for (year, n) in [(2001u16, 3000usize), (2002, 1500), (2003, 17)] {
            let mut rows = Rows::default();
            for i in 0..n {
                let v: Vec<f32> = if i % 5 == 2 {
                    rows.vectors[(i - 1) * dim..i * dim].to_vec()
                } else {
                    (0..dim)
                        .map(|j| {
                            if j < 2 {
                                2.0 + 0.05 * rng(&mut seed)
                            } else {
                                rng(&mut seed)
                            }
                        })
                        .collect()
                };
                rows.ids.push(format!("{year}.{i:05}"));
                rows.vectors.extend_from_slice(&v);
                rows.titles.push(String::new());
                rows.dates.push(String::new());
                rows.cats.push(Vec::new());
                all.push((format!("{year}.{i:05}"), v));
            }
            let stamps = Stamps {
                dimension: dim,
                year_file: FileStamp { size: 0, mtime_ns: 0 },
                identity: 0,
                metadata: Vec::new(),
            };
            let year = Year::parse(&year.to_string()).unwrap();
            segments.push(Segment::build(year, stamps, Default::default(), &rows, None).unwrap());
        }
        let allowed: Vec<Allowed> = segments.iter().map(|_| Allowed::All).collect();
        let queries: Vec<Vec<f64>> = (0..61)
            .map(|i| {
                if i % 4 == 0 {
                    unit(all[i * 71 % all.len()].1.iter().map(|&v| f64::from(v)).collect())
                } else {
                    unit(
                        (0..dim)
                            .map(|j| if j < 2 { 2.0 } else { f64::from(rng(&mut seed)) })
                            .collect(),
                    )
                }
            })
            .collect();
        for k in [1, 10, 200] {
            let many = top_k_many(&segments, &allowed, &queries, k).unwrap();
            assert_eq!(many.len(), queries.len());
            for (query, got) in queries.iter().zip(&many) {
                assert_eq!(got, &top_k(&segments, &allowed, query, k).unwrap());
                let mut want: Vec<(f64, &str)> = all
                    .iter()
                    .map(|(id, v)| {
                        let n = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
                        (exact_cosine(v, Some(1.0 / n), query), id.as_str())
                    })
                    .collect();
                want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
                want.truncate(k);
                let got: Vec<(f64, &str)> = got
                    .iter()
                    .map(|&(s, r, score)| (score, segments[s].id(r)))
                    .collect();
                assert_eq!(got, want);
            }
        }
    }
}
