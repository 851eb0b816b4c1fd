//! The int8 GEMM of the linear layers (`precision = "int8"`).
//!
//! Weights are quantised once, at load, to signed 8 bits with one scale per
//! output column (symmetric: `w ≈ scale[c] · q`, `q` in -127..=127), and
//! packed in the layout `vpdpbusd` reads: panels of [`NP`] output columns;
//! within a panel, for every quad of input rows `(4p .. 4p + 3)`, the four
//! weights of each of the panel's columns side by side (four 512-bit
//! vectors of 16 quads). Activations are quantised per row at the GEMM's
//! packing step ([`quantize_rows`]) to unsigned 8 bits with a scale and a
//! zero point (`x ≈ scale[r] · (q - zero[r])`, `q` in 0..=255, zero exactly
//! representable), which spends all 256 levels on the row's own range.
//! AVX512-VNNI `_mm512_dpbusd_epi32` sums the products exactly in i32; the
//! epilogue subtracts `zero[r] · Σ q_w` of the column and scales by
//! `scale[r] · scale[c]`. An input count that is not a multiple of four and
//! a partial last panel are padded with zero weights, so no kernel reads
//! past its buffers and the padding adds nothing.
//!
//! The vector code runs only with an [`Int8Isa`], which only run-time
//! detection makes; [`Int8Dispatch`] picks the path, or the documented f32
//! fallback on CPUs without AVX512-VNNI.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::tiles::{SharedOut, for_each_tile};

/// Output columns per packed panel: four vectors of 16 i32 accumulators.
pub const NP: usize = 64;
/// Rows of one register tile (6 × 4 accumulators of the 32 registers).
const MR: usize = 6;
/// Rows per parallel task (see [`for_each_tile`]).
const MC: usize = 96;
/// Largest input count whose sums cannot overflow i32:
/// 255 · 127 · k < 2³¹.
pub const MAX_INPUTS: usize = 66_000;

pub use token::Int8Isa;

/// The token lives in its own module so nothing else can make one without
/// detection.
mod token {
    /// Proof, for the `unsafe` kernels, that this CPU runs AVX-512F,
    /// AVX-512BW and AVX512-VNNI; made only by [`Int8Isa::detect`].
    ///
    /// ```compile_fail
    /// let _ = papersys_backend_native::kernels::int8::Int8Isa(());
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Int8Isa(());

    impl Int8Isa {
        /// The token, when this CPU has AVX-512F, AVX-512BW and
        /// AVX512-VNNI (std caches the CPUID/XCR0 checks).
        pub fn detect() -> Option<Int8Isa> {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Some(Int8Isa(()));
            }
            None
        }
    }
}

/// Which GEMM `precision = "int8"` runs on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Dispatch {
    /// AVX512-VNNI dot products (`vpdpbusd`), exact i32 sums.
    Avx512Vnni(Int8Isa),
    /// No VNNI instructions: the f32 engine runs instead (with a warning),
    /// and the vectors are recorded as float32.
    Float32Fallback,
}

impl Int8Dispatch {
    /// The best path this CPU has.
    pub fn detect() -> Self {
        Self::select(true)
    }

    /// The path for a CPU on which AVX512-VNNI is `present`: `false` forces
    /// the fallback (what a CPU without the feature gets, to test it
    /// anywhere); `true` still needs the detection to succeed.
    pub fn select(present: bool) -> Self {
        match Int8Isa::detect() {
            Some(isa) if present => Int8Dispatch::Avx512Vnni(isa),
            _ => Int8Dispatch::Float32Fallback,
        }
    }

    /// A short name for logs and status ("avx512-vnni", "float32-fallback").
    pub fn name(self) -> &'static str {
        match self {
            Int8Dispatch::Avx512Vnni(_) => "avx512-vnni",
            Int8Dispatch::Float32Fallback => "float32-fallback",
        }
    }
}

/// A weight matrix `W[k, n]` quantised and packed once (see the module
/// docs).
pub struct PackedInt8 {
    k: usize,
    n: usize,
    /// Quads of input rows: `ceil(k / 4)`.
    kq: usize,
    data: Vec<i8>,
    /// Per output column: the dequantising scale.
    scale: Vec<f32>,
    /// Per output column: the sum of its quantised weights (the zero
    /// point's correction).
    column_sum: Vec<i32>,
}

impl PackedInt8 {
    /// Quantises and packs `w`, row-major `[k, n]` ([inputs, outputs]).
    ///
    /// # Panics
    /// When `w` does not hold `k · n` values, or `k` is above the 66,000
    /// inputs whose sums fit in i32.
    pub fn pack(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(
            w.len(),
            k * n,
            "int8::pack: {} values are not [{k}, {n}]",
            w.len()
        );
        assert!(k <= MAX_INPUTS, "int8::pack: {k} inputs overflow the i32 sums");
        let quantize = |x: f32, s: f32| -> i8 {
            if s > 0.0 {
                (x / s).round_ties_even().clamp(-127.0, 127.0) as i8
            } else {
                0
            }
        };
        let kq = k.div_ceil(4);
        let panels = n.div_ceil(NP);
        let mut data = vec![0i8; panels * kq * NP * 4];
        let mut scale = vec![0f32; n];
        let mut column_sum = vec![0i32; n];
        // One panel of columns per task (a model's load packs every layer).
        data.par_chunks_exact_mut((kq * NP * 4).max(1))
            .zip(scale.par_chunks_mut(NP))
            .zip(column_sum.par_chunks_mut(NP))
            .enumerate()
            .for_each(|(j, ((panel, scale), sums))| {
                let first = j * NP;
                for row in w.chunks_exact(n) {
                    for (s, x) in scale.iter_mut().zip(&row[first..]) {
                        *s = s.max(x.abs());
                    }
                }
                scale.iter_mut().for_each(|s| *s /= 127.0);
                for (p, quads) in panel.chunks_exact_mut(NP * 4).enumerate() {
                    for (c, (s, sum)) in scale.iter().zip(sums.iter_mut()).enumerate() {
                        for h in 0..4 {
                            let row = 4 * p + h;
                            if row < k {
                                let q = quantize(w[row * n + first + c], *s);
                                quads[4 * c + h] = q;
                                *sum += q as i32;
                            }
                        }
                    }
                }
            });
        PackedInt8 {
            k,
            n,
            kq,
            data,
            scale,
            column_sum,
        }
    }

    /// Inputs (rows of `W`).
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// Outputs (columns of `W`).
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Row stride, in bytes, of the activations [`gemm`] reads.
    pub fn row_stride(&self) -> usize {
        4 * self.kq
    }

    /// `W[row][col]` as the GEMM sees it (quantised, then scaled back).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let (j, c) = (col / NP, col % NP);
        let (p, h) = (row / 4, row % 4);
        let q = self.data[((j * self.kq + p) * NP + c) * 4 + h];
        q as f32 * self.scale[col]
    }
}

/// Activation rows quantised by [`quantize_rows`]: `x ≈ scale · (q - zero)`.
#[derive(Default)]
pub struct QuantizedRows {
    /// `rows` rows of `stride` bytes (the inputs, then zeros).
    data: Vec<u8>,
    /// Per row.
    scale: Vec<f32>,
    /// Per row, in 0..=255.
    zero: Vec<i32>,
    stride: usize,
    rows: usize,
}

impl QuantizedRows {
    /// Row `r`'s value `j` as the GEMM sees it (quantised, then scaled back).
    pub fn get(&self, r: usize, j: usize) -> f32 {
        (self.data[r * self.stride + j] as i32 - self.zero[r]) as f32 * self.scale[r]
    }
}

/// Quantises the rows of `x` (`k` values each) into `out`, one row every
/// `4 · ceil(k / 4)` bytes. A row's range always includes 0, so zero is
/// exact; a row holding a NaN or an infinity gets a NaN scale (its outputs
/// are NaN, as f32 arithmetic would make them). Runs in the current rayon
/// pool.
///
/// # Panics
/// When `x` is not whole rows of `k` values (or `k` is 0).
pub fn quantize_rows(isa: Int8Isa, x: &[f32], k: usize, out: &mut QuantizedRows) {
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "int8::quantize_rows: {} values are not whole rows of {k}",
        x.len()
    );
    let stride = 4 * k.div_ceil(4);
    let rows = x.len() / k;
    if out.data.len() < rows * stride {
        out.data.resize(rows * stride, 0);
    }
    out.scale.resize(rows, 0.0);
    out.zero.resize(rows, 0);
    out.stride = stride;
    out.rows = rows;
    const ROWS: usize = 32;
    out.data[..rows * stride]
        .par_chunks_mut(ROWS * stride)
        .zip(out.scale.par_chunks_mut(ROWS))
        .zip(out.zero.par_chunks_mut(ROWS))
        .zip(x.par_chunks(ROWS * k))
        .for_each(|(((dst, scale), zero), src)| {
            for (((d, s), z), row) in dst
                .chunks_exact_mut(stride)
                .zip(scale.iter_mut())
                .zip(zero.iter_mut())
                .zip(src.chunks_exact(k))
            {
                (*s, *z) = quantize_row(isa, row, &mut d[..k]);
                d[k..].fill(0);
            }
        });
}

/// The scale and zero point of a row whose smallest value is `lo` and
/// largest `hi` (both including 0).
fn row_parameters(lo: f32, hi: f32) -> (f32, i32) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (f32::NAN, 0);
    }
    let scale = (hi - lo) / 255.0;
    if scale == 0.0 {
        return (1.0, 0);
    }
    let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as i32;
    (scale, zero)
}

/// One value's level: what the vector path computes, lane by lane.
#[inline]
fn level(x: f32, inverse: f32, zero: i32) -> u8 {
    ((x * inverse).round_ties_even() as i32 + zero).clamp(0, 255) as u8
}

fn quantize_row(isa: Int8Isa, src: &[f32], dst: &mut [u8]) -> (f32, i32) {
    assert_eq!(src.len(), dst.len());
    let _ = isa;
    // SAFETY: `isa` proves AVX-512F and AVX-512BW; the kernel reads and
    // writes 16 values at a time only while they are within both slices
    // (asserted equally long above).
    #[cfg(target_arch = "x86_64")]
    let (lo, hi, done) = unsafe { avx512::range(src) };
    #[cfg(not(target_arch = "x86_64"))]
    let (lo, hi, done) = (0.0f32, 0.0f32, 0usize);
    let (mut lo, mut hi) = (lo, hi);
    let mut finite = lo.is_finite() && hi.is_finite();
    for &x in &src[done..] {
        finite &= x.is_finite();
        lo = lo.min(x);
        hi = hi.max(x);
    }
    let (scale, zero) = if finite {
        row_parameters(lo, hi)
    } else {
        (f32::NAN, 0)
    };
    let inverse = 1.0 / scale;
    // SAFETY: as above.
    #[cfg(target_arch = "x86_64")]
    let done = unsafe { avx512::levels(src, dst, inverse, zero) };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for (d, &x) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = level(x, inverse, zero);
    }
    (scale, zero)
}

/// `c[m, n] = a · W`, or `c += a · W` when `accumulate`, with `a` the rows
/// [`quantize_rows`] made for `w` (`m` of them) and `c` row-major f32. Runs
/// in the current rayon pool, split for `threads` workers.
///
/// # Panics
/// When `a` holds fewer than `m` rows of `w.row_stride()` bytes or `c` is
/// not `m · n` values.
pub fn gemm(
    isa: Int8Isa,
    a: &QuantizedRows,
    m: usize,
    w: &PackedInt8,
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    let lda = w.row_stride();
    assert!(
        a.stride == lda && a.rows >= m && a.data.len() >= m * lda && c.len() == m * w.n,
        "int8::gemm: a has {} rows of {} bytes for {m} rows of {lda}, c {} for [{m}, {}]",
        a.rows,
        a.stride,
        c.len(),
        w.n
    );
    if m == 0 || w.n == 0 {
        return;
    }
    let out = SharedOut(c.as_mut_ptr());
    let n = w.n;
    for_each_tile(m, n.div_ceil(NP), threads, MR, MC, |rows, j| {
        let out = &out;
        let width = NP.min(n - j * NP);
        let panel = &w.data[j * w.kq * NP * 4..(j + 1) * w.kq * NP * 4];
        let columns = Columns {
            scale: &w.scale[j * NP..j * NP + width],
            sum: &w.column_sum[j * NP..j * NP + width],
        };
        let (r, mr) = (rows.start, rows.len());
        let tile_rows = Rows {
            data: &a.data[r * lda..(r + mr) * lda],
            stride: lda,
            scale: &a.scale[r..r + mr],
            zero: &a.zero[r..r + mr],
        };
        // SAFETY: c's rows r..r+mr, columns j·NP..j·NP+width are in bounds
        // (asserted above) and this call's alone (`for_each_tile` hands out
        // each tile once).
        unsafe {
            tile_dispatch(
                isa,
                &tile_rows,
                panel,
                w.kq,
                &columns,
                out.0.add(r * n + j * NP),
                n,
                accumulate,
            );
        }
    });
}

/// The activation rows of one register tile.
struct Rows<'a> {
    data: &'a [u8],
    stride: usize,
    scale: &'a [f32],
    zero: &'a [i32],
}

/// The output columns of one panel (at most [`NP`]).
struct Columns<'a> {
    scale: &'a [f32],
    sum: &'a [i32],
}

/// # Safety
/// `c` points at `rows.scale.len()` rows of stride `ldc` with
/// `columns.scale.len()` writable values each, no other thread touching
/// them.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_dispatch(
    isa: Int8Isa,
    rows: &Rows<'_>,
    panel: &[i8],
    kq: usize,
    columns: &Columns<'_>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mr = rows.scale.len();
    let width = columns.scale.len();
    assert!(
        mr <= MR
            && rows.zero.len() == mr
            && rows.data.len() >= mr * rows.stride
            && rows.stride >= 4 * kq
            && panel.len() >= kq * NP * 4
            && width <= NP
            && columns.sum.len() == width
    );
    let _ = isa;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: isa proves the features; lengths asserted above; c per the
    // caller's contract.
    unsafe {
        let b = panel.as_ptr();
        match mr {
            1 => avx512::tile::<1>(rows, b, kq, columns, c, ldc, accumulate),
            2 => avx512::tile::<2>(rows, b, kq, columns, c, ldc, accumulate),
            3 => avx512::tile::<3>(rows, b, kq, columns, c, ldc, accumulate),
            4 => avx512::tile::<4>(rows, b, kq, columns, c, ldc, accumulate),
            5 => avx512::tile::<5>(rows, b, kq, columns, c, ldc, accumulate),
            _ => avx512::tile::<MR>(rows, b, kq, columns, c, ldc, accumulate),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (rows, panel, kq, columns, c, ldc, accumulate);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use crate::kernels::tiles::avx512::store;
    use crate::kernels::tiles::lanes;

    /// The smallest and largest of the first whole 16s of `src`, each
    /// starting from 0 (NaN when one of them is NaN), and how many values
    /// that covered.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn range(src: &[f32]) -> (f32, f32, usize) {
        let mut lo = _mm512_setzero_ps();
        let mut hi = _mm512_setzero_ps();
        let mut unordered: __mmask16 = 0;
        let mut i = 0;
        while i + 16 <= src.len() {
            // SAFETY: i + 16 <= src.len().
            let v = unsafe { _mm512_loadu_ps(src.as_ptr().add(i)) };
            unordered |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
            i += 16;
        }
        if unordered != 0 {
            return (f32::NAN, f32::NAN, i);
        }
        (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), i)
    }

    /// Writes the levels of the first whole 16s of `src` into `dst`
    /// (as [`level`] does); returns how many were done.
    ///
    /// # Safety
    /// AVX-512F and AVX-512BW; `dst.len() >= src.len()`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn levels(src: &[f32], dst: &mut [u8], inverse: f32, zero: i32) -> usize {
        let inv = _mm512_set1_ps(inverse);
        let z = _mm512_set1_epi32(zero);
        let (floor, ceiling) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
        let mut i = 0;
        while i + 16 <= src.len() {
            // SAFETY: i + 16 <= src.len() <= dst.len().
            unsafe {
                let v = _mm512_mul_ps(_mm512_loadu_ps(src.as_ptr().add(i)), inv);
                // Round to nearest even (the default MXCSR mode), then shift.
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), z);
                let q = _mm512_min_epi32(_mm512_max_epi32(q, floor), ceiling);
                _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, _mm512_cvtepi32_epi8(q));
            }
            i += 16;
        }
        i
    }

    /// One `R × NP` tile of `c`, summed over all `kq` quads, then
    /// dequantised (and added to `c` when `accumulate`).
    ///
    /// # Safety
    /// AVX-512F, AVX-512BW and AVX512-VNNI; `rows` holds `R` rows of
    /// ≥ 4·kq bytes, `b` points at kq·NP·4 bytes, `c` at `R` rows of stride
    /// `ldc` with `columns.scale.len()` ≤ NP writable values each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile<const R: usize>(
        rows: &Rows<'_>,
        b: *const i8,
        kq: usize,
        columns: &Columns<'_>,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let a = rows.data.as_ptr();
        let lda = rows.stride;
        let width = columns.scale.len();
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 4]; R];
            for p in 0..kq {
                let bp = b.add(p * NP * 4);
                let bv: [__m512i; 4] =
                    std::array::from_fn(|v| _mm512_loadu_si512(bp.add(v * 64) as *const _));
                for (r, row) in acc.iter_mut().enumerate() {
                    // The quad a[4p..4p+4] broadcast to all 16 lanes.
                    let quad = (a.add(r * lda + 4 * p) as *const i32).read_unaligned();
                    let av = _mm512_set1_epi32(quad);
                    for (v, acc) in row.iter_mut().enumerate() {
                        *acc = _mm512_dpbusd_epi32(*acc, av, bv[v]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let zero = _mm512_set1_epi32(rows.zero[r]);
                let row_scale = _mm512_set1_ps(rows.scale[r]);
                for (v, acc) in row.iter().enumerate() {
                    let lo = v * 16;
                    if lo >= width {
                        break;
                    }
                    let mask = lanes(width - lo);
                    let sum = _mm512_maskz_loadu_epi32(mask, columns.sum.as_ptr().add(lo));
                    let scale = _mm512_maskz_loadu_ps(mask, columns.scale.as_ptr().add(lo));
                    let exact = _mm512_sub_epi32(*acc, _mm512_mullo_epi32(zero, sum));
                    let x = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(row_scale, scale));
                    store(c.add(r * ldc + lo), mask, x, accumulate);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tiles::lcg;

    #[test]
    fn weights_are_within_half_a_step_of_their_column_scale() {
        let empty = PackedInt8::pack(&[], 0, 3);
        assert_eq!((empty.inputs(), empty.outputs(), empty.row_stride()), (0, 3, 0));
        for (k, n) in [(1, 1), (3, 5), (4, 64), (7, 65), (10, 130)] {
            let mut w = lcg(11, k * n);
            w[0] = 0.0;
            let p = PackedInt8::pack(&w, k, n);
            assert_eq!(
                (p.inputs(), p.outputs(), p.row_stride()),
                (k, n, 4 * k.div_ceil(4))
            );
            for c in 0..n {
                let top = (0..k).map(|r| w[r * n + c].abs()).fold(0f32, f32::max);
                let step = top / 127.0;
                let mut sum = 0i64;
                for r in 0..k {
                    let got = p.get(r, c);
                    assert!(
                        (got - w[r * n + c]).abs() <= step * 0.5 + 1e-7,
                        "[{k}, {n}] at ({r}, {c}): {got} for {}",
                        w[r * n + c]
                    );
                    sum += (got / p.scale[c].max(f32::MIN_POSITIVE)).round() as i64;
                }
                assert_eq!(sum, p.column_sum[c] as i64, "column {c} sum");
            }
            assert_eq!(p.get(0, 0), 0.0);
        }
    }

    #[test]
    fn forced_absent_falls_back_to_f32() {
        assert_eq!(Int8Dispatch::select(false), Int8Dispatch::Float32Fallback);
        assert_eq!(Int8Dispatch::select(false).name(), "float32-fallback");
        #[cfg(target_arch = "x86_64")]
        {
            let has = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni");
            assert_eq!(matches!(Int8Dispatch::detect(), Int8Dispatch::Avx512Vnni(_)), has);
        }
    }

    /// Rows keep zero exact, stay within half a step of every value, pad
    /// with zeros, agree between the vector body and the scalar tail, and a
    /// non-finite value poisons its row only.
    #[test]
    fn rows_are_quantised_within_half_a_step() {
        let Some(isa) = Int8Isa::detect() else {
            assert_eq!(Int8Dispatch::detect(), Int8Dispatch::Float32Fallback);
            eprintln!("no AVX512-VNNI here: quantisation not run");
            return;
        };
        let k = 37;
        let mut x: Vec<f32> = lcg(1, 5 * k).iter().map(|v| v * 3.0 + 0.5).collect();
        x[k + 3] = 0.0;
        x[2 * k..3 * k].fill(0.0);
        x[3 * k..4 * k].iter_mut().for_each(|v| *v = v.abs() + 1.0);
        x[4 * k + 20] = f32::INFINITY;
        let mut q = QuantizedRows::default();
        quantize_rows(isa, &x, k, &mut q);
        assert_eq!((q.rows, q.stride, q.data.len()), (5, 40, 5 * 40));
        for r in 0..4 {
            let row = &x[r * k..(r + 1) * k];
            let lo = row.iter().copied().fold(0f32, f32::min);
            let hi = row.iter().copied().fold(0f32, f32::max);
            let step = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            for (j, &v) in row.iter().enumerate() {
                let got = q.get(r, j);
                assert!(
                    (got - v).abs() <= step * 0.5 * 1.0001,
                    "row {r} col {j}: {got} for {v}"
                );
                if v == 0.0 {
                    assert_eq!(got, 0.0, "row {r} col {j}: zero is exact");
                }
                assert_eq!(
                    q.data[r * 40 + j],
                    level(v, 1.0 / q.scale[r], q.zero[r]),
                    "row {r} col {j}: vector and scalar levels differ"
                );
            }
            assert_eq!(&q.data[r * 40 + k..(r + 1) * 40], &[0, 0, 0]);
        }
        assert_eq!((q.scale[2], q.zero[2]), (1.0, 0), "an all-zero row");
        assert_eq!(q.zero[3], 0, "a positive row starts at level 0");
        assert!(q.scale[4].is_nan(), "a row with an infinity");
    }

    /// The GEMM equals the exact integer sum of the quantised operands,
    /// scaled, on every tail shape (rows not a multiple of 6 or 96, k not a
    /// multiple of 4, partial panels), with and without accumulation; and
    /// stays within a few percent of the f32 product.
    #[test]
    fn gemm_matches_the_quantised_reference() {
        let Some(isa) = Int8Isa::detect() else {
            assert_eq!(Int8Dispatch::detect(), Int8Dispatch::Float32Fallback);
            eprintln!("no AVX512-VNNI here: GEMM not run");
            return;
        };
        let short = std::panic::catch_unwind(|| {
            let p = PackedInt8::pack(&[1.0; 6], 2, 3);
            let mut a = QuantizedRows::default();
            quantize_rows(isa, &[0.0; 2], 2, &mut a);
            gemm(isa, &a, 2, &p, &mut [0.0; 6], false, 1)
        });
        assert!(short.is_err(), "too few activation rows were accepted");
        for (m, k, n) in [
            (1, 1, 1),
            (5, 3, 17),
            (7, 384, 64),
            (13, 33, 130),
            (97, 64, 16),
            (200, 50, 200),
        ] {
            let x = lcg(3, m * k);
            let w = lcg(5, k * n);
            let init = lcg(9, m * n);
            let p = PackedInt8::pack(&w, k, n);
            let mut a = QuantizedRows::default();
            quantize_rows(isa, &x, k, &mut a);
            for accumulate in [false, true] {
                for threads in [1, 2, 5] {
                    let mut c = init.clone();
                    gemm(isa, &a, m, &p, &mut c, accumulate, threads);
                    for i in 0..m {
                        for j in 0..n {
                            let exact: f64 = (0..k).map(|l| a.get(i, l) as f64 * p.get(l, j) as f64).sum();
                            let f32_product: f64 =
                                (0..k).map(|l| x[i * k + l] as f64 * w[l * n + j] as f64).sum();
                            let base = if accumulate { init[i * n + j] as f64 } else { 0.0 };
                            let got = c[i * n + j] as f64 - base;
                            let scale = (0..k)
                                .map(|l| (x[i * k + l] * w[l * n + j]).abs() as f64)
                                .sum::<f64>();
                            assert!(
                                (got - exact).abs() <= 1e-6 * scale + 1e-6,
                                "[{m}x{k}x{n}] acc={accumulate} t={threads} at ({i}, {j}): {got} vs {exact}"
                            );
                            assert!(
                                (got - f32_product).abs() <= 0.02 * scale + 1e-6,
                                "[{m}x{k}x{n}] at ({i}, {j}): {got} is far from the f32 product {f32_product}"
                            );
                        }
                    }
                }
            }
        }
    }
}
