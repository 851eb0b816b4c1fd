//! The bfloat16 GEMM of the linear layers (`precision = "bfloat16"`).
//!
//! Weights are packed once, at load, as bf16 in the layout `vdpbf16ps`
//! reads: panels of [`NP`] output columns; within a panel, for every pair of
//! input rows `(2p, 2p + 1)`, the pairs `W[2p][c], W[2p+1][c]` of the panel's
//! columns side by side (four 512-bit vectors of 16 pairs). Activations are
//! rounded to bf16 (nearest even) at the GEMM's packing step
//! ([`pack_rows`]); products are summed in f32 by AVX512-BF16
//! `_mm512_dpbf16_ps`. An odd number of inputs and a partial last panel are
//! padded with zeros, so no kernel reads past its buffers.
//!
//! The vector code runs only with a [`Bf16Isa`], which only run-time
//! detection makes; [`Bf16Dispatch`] picks the path, or the documented f32
//! fallback on CPUs without AVX512-BF16.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::tiles::{SharedOut, for_each_tile};

/// Output columns per packed panel: four vectors of 16 f32 accumulators.
pub const NP: usize = 64;
/// Rows of one register tile (6 × 4 accumulators of the 32 registers).
const MR: usize = 6;
/// Rows per parallel task (see [`for_each_tile`]).
const MC: usize = 96;

pub use token::Bf16Isa;

/// The token lives in its own module so nothing else can make one without
/// detection.
mod token {
    /// Proof, for the `unsafe` kernels, that this CPU runs AVX-512F and
    /// AVX512-BF16; made only by [`Bf16Isa::detect`].
    ///
    /// ```compile_fail
    /// let _ = papersys_backend_native::kernels::bf16::Bf16Isa(());
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Bf16Isa(());

    impl Bf16Isa {
        /// The token, when this CPU has AVX-512F and AVX512-BF16 (std caches
        /// the CPUID/XCR0 checks).
        pub fn detect() -> Option<Bf16Isa> {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
                return Some(Bf16Isa(()));
            }
            None
        }
    }
}

/// Which GEMM `precision = "bfloat16"` runs on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Dispatch {
    /// AVX512-BF16 dot products (`vdpbf16ps`), f32 accumulation.
    Avx512Bf16(Bf16Isa),
    /// No bf16 instructions: the f32 engine runs instead (with a warning),
    /// and the vectors are recorded as float32.
    Float32Fallback,
}

impl Bf16Dispatch {
    /// The best path this CPU has.
    pub fn detect() -> Self {
        Self::select(true)
    }

    /// The path for a CPU on which AVX512-BF16 is `present`: `false`
    /// forces the fallback (what a CPU without the feature gets, to test
    /// it anywhere); `true` still needs the detection to succeed.
    pub fn select(present: bool) -> Self {
        match Bf16Isa::detect() {
            Some(isa) if present => Bf16Dispatch::Avx512Bf16(isa),
            _ => Bf16Dispatch::Float32Fallback,
        }
    }

    /// A short name for logs and status ("avx512-bf16", "float32-fallback").
    pub fn name(self) -> &'static str {
        match self {
            Bf16Dispatch::Avx512Bf16(_) => "avx512-bf16",
            Bf16Dispatch::Float32Fallback => "float32-fallback",
        }
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as its bits.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// A weight matrix `W[k, n]` packed once as bf16 (see the module docs).
pub struct PackedBf16 {
    k: usize,
    n: usize,
    /// Pairs of input rows: `ceil(k / 2)`.
    kp: usize,
    data: Vec<u16>,
}

impl PackedBf16 {
    /// Packs `w`, row-major `[k, n]` ([inputs, outputs]), rounding every
    /// weight to bf16.
    ///
    /// # Panics
    /// When `w` does not hold `k · n` values.
    pub fn pack(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(
            w.len(),
            k * n,
            "bf16::pack: {} values are not [{k}, {n}]",
            w.len()
        );
        let kp = k.div_ceil(2);
        let panels = n.div_ceil(NP);
        let mut data = vec![0u16; panels * kp * NP * 2];
        for (j, panel) in data.chunks_exact_mut(kp * NP * 2).enumerate() {
            for (p, pairs) in panel.chunks_exact_mut(NP * 2).enumerate() {
                for c in 0..NP.min(n - j * NP) {
                    let col = j * NP + c;
                    for h in 0..2 {
                        let row = 2 * p + h;
                        if row < k {
                            pairs[2 * c + h] = to_bf16(w[row * n + col]);
                        }
                    }
                }
            }
        }
        PackedBf16 { k, n, kp, data }
    }

    /// Inputs (rows of `W`).
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// Outputs (columns of `W`).
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Row stride, in bf16 values, of the activations [`gemm`] reads.
    pub fn row_stride(&self) -> usize {
        2 * self.kp
    }

    /// `W[row][col]` as stored (rounded to bf16).
    pub fn get(&self, row: usize, col: usize) -> f32 {
        let (j, c) = (col / NP, col % NP);
        let (p, h) = (row / 2, row % 2);
        let bits = self.data[((j * self.kp + p) * NP + c) * 2 + h];
        half::bf16::from_bits(bits).to_f32()
    }
}

/// Rounds the rows of `x` (`k` values each) to bf16 into `out`, one row
/// every `2 · ceil(k / 2)` values (an odd `k` gets a zero pad). Runs in the
/// current rayon pool.
///
/// # Panics
/// When `x` is not whole rows of `k` values (or `k` is 0).
pub fn pack_rows(isa: Bf16Isa, x: &[f32], k: usize, out: &mut Vec<u16>) {
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "bf16::pack_rows: {} values are not whole rows of {k}",
        x.len()
    );
    let stride = 2 * k.div_ceil(2);
    let rows = x.len() / k;
    if out.len() < rows * stride {
        out.resize(rows * stride, 0);
    }
    const ROWS: usize = 32;
    out[..rows * stride]
        .par_chunks_mut(ROWS * stride)
        .zip(x.par_chunks(ROWS * k))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(stride).zip(src.chunks_exact(k)) {
                convert_row(isa, s, &mut d[..k]);
                d[k..].fill(0);
            }
        });
}

fn convert_row(isa: Bf16Isa, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    let _ = isa;
    // SAFETY: `isa` proves AVX-512F and AVX512-BF16; the loop reads and
    // writes 16 values at a time only while they are within both slices
    // (asserted equally long above).
    #[cfg(target_arch = "x86_64")]
    let i = unsafe { avx512::convert(src, dst) };
    #[cfg(not(target_arch = "x86_64"))]
    let i = 0;
    for (d, s) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = to_bf16(*s);
    }
}

/// `c[m, n] = a · W`, or `c += a · W` when `accumulate`, with `a` the bf16
/// rows [`pack_rows`] made for `w` (`m` of them) and `c` row-major f32.
/// Runs in the current rayon pool, split for `threads` workers.
///
/// # Panics
/// When `a` holds fewer than `m` rows of `w.row_stride()` values or `c` is
/// not `m · n` values.
pub fn gemm(
    isa: Bf16Isa,
    a: &[u16],
    m: usize,
    w: &PackedBf16,
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    let lda = w.row_stride();
    assert!(
        a.len() >= m * lda && c.len() == m * w.n,
        "bf16::gemm: a has {} values for {m} rows of {lda}, c {} for [{m}, {}]",
        a.len(),
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
        let panel = &w.data[j * w.kp * NP * 2..(j + 1) * w.kp * NP * 2];
        let (r, mr) = (rows.start, rows.len());
        // SAFETY: rows r..r+mr of `a` (stride lda) and the panel's kp pairs
        // are in bounds (asserted above); c's rows r..r+mr, columns
        // j·NP..j·NP+width are in bounds and this call's alone
        // (`for_each_tile` hands out each tile once).
        unsafe {
            tile_dispatch(
                isa,
                mr,
                &a[r * lda..(r + mr) * lda],
                lda,
                panel,
                w.kp,
                out.0.add(r * n + j * NP),
                n,
                width,
                accumulate,
            );
        }
    });
}

/// # Safety
/// `a` holds `mr` rows of `lda` (≥ 2·kp) values, `panel` kp·NP·2 values,
/// `c` points at `mr` rows of stride `ldc` with `width` ≤ NP writable values
/// each, no other thread touching them.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_dispatch(
    isa: Bf16Isa,
    mr: usize,
    a: &[u16],
    lda: usize,
    panel: &[u16],
    kp: usize,
    c: *mut f32,
    ldc: usize,
    width: usize,
    accumulate: bool,
) {
    assert!(mr <= MR && a.len() >= mr * lda && lda >= 2 * kp && panel.len() >= kp * NP * 2 && width <= NP);
    let _ = isa;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: isa proves the features; lengths asserted above; c per the
    // caller's contract.
    unsafe {
        let (a, b) = (a.as_ptr(), panel.as_ptr());
        match mr {
            1 => avx512::tile::<1>(a, lda, b, kp, c, ldc, width, accumulate),
            2 => avx512::tile::<2>(a, lda, b, kp, c, ldc, width, accumulate),
            3 => avx512::tile::<3>(a, lda, b, kp, c, ldc, width, accumulate),
            4 => avx512::tile::<4>(a, lda, b, kp, c, ldc, width, accumulate),
            5 => avx512::tile::<5>(a, lda, b, kp, c, ldc, width, accumulate),
            _ => avx512::tile::<MR>(a, lda, b, kp, c, ldc, width, accumulate),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (mr, a, lda, panel, kp, c, ldc, width, accumulate);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use crate::kernels::tiles::avx512::store;
    use crate::kernels::tiles::lanes;

    /// Converts 16 values at a time; returns how many were done.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16; `dst.len() >= src.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn convert(src: &[f32], dst: &mut [u16]) -> usize {
        let mut i = 0;
        while i + 16 <= src.len() {
            // SAFETY: i + 16 <= src.len() <= dst.len().
            unsafe {
                let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
                let bits: __m256i = std::mem::transmute::<__m256bh, __m256i>(v);
                _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, bits);
            }
            i += 16;
        }
        i
    }

    /// One `R × NP` tile of `c`, summed over all `kp` pairs.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16; `a` points at `R` rows of `lda` ≥ 2·kp
    /// values, `b` at kp·NP·2 values, `c` at `R` rows of stride `ldc` with
    /// `width` ≤ NP writable values each.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile<const R: usize>(
        a: *const u16,
        lda: usize,
        b: *const u16,
        kp: usize,
        c: *mut f32,
        ldc: usize,
        width: usize,
        accumulate: bool,
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for p in 0..kp {
                let bp = b.add(p * NP * 2);
                let bv: [__m512bh; 4] = std::array::from_fn(|v| {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(v * 32) as *const _))
                });
                for (r, row) in acc.iter_mut().enumerate() {
                    // The pair (a[2p], a[2p+1]) broadcast to all 16 lanes.
                    let pair = (a.add(r * lda + 2 * p) as *const i32).read_unaligned();
                    let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair));
                    for (v, acc) in row.iter_mut().enumerate() {
                        *acc = _mm512_dpbf16_ps(*acc, av, bv[v]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, acc) in row.iter().enumerate() {
                    let lo = v * 16;
                    if lo >= width {
                        break;
                    }
                    store(c.add(r * ldc + lo), lanes(width - lo), *acc, accumulate);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tiles::lcg;

    fn round(x: f32) -> f64 {
        half::bf16::from_bits(to_bf16(x)).to_f32() as f64
    }

    #[test]
    fn packing_keeps_every_weight_rounded_to_bf16() {
        for (k, n) in [(1, 1), (3, 5), (4, 64), (7, 65), (10, 130)] {
            let w = lcg(11, k * n);
            let p = PackedBf16::pack(&w, k, n);
            assert_eq!(
                (p.inputs(), p.outputs(), p.row_stride()),
                (k, n, 2 * k.div_ceil(2))
            );
            for r in 0..k {
                for c in 0..n {
                    assert_eq!(
                        p.get(r, c) as f64,
                        round(w[r * n + c]),
                        "[{k}, {n}] at ({r}, {c})"
                    );
                }
            }
        }
    }

    #[test]
    fn forced_absent_falls_back_to_f32() {
        assert_eq!(Bf16Dispatch::select(false), Bf16Dispatch::Float32Fallback);
        assert_eq!(Bf16Dispatch::select(false).name(), "float32-fallback");
        #[cfg(target_arch = "x86_64")]
        {
            let has = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16");
            assert_eq!(matches!(Bf16Dispatch::detect(), Bf16Dispatch::Avx512Bf16(_)), has);
        }
    }

    /// The GEMM against an f64 sum of the bf16-rounded operands, on every
    /// tail shape (rows not a multiple of 6 or 96, odd k, partial panels),
    /// with and without accumulation. Needs AVX512-BF16: on a CPU without
    /// it, checks that detection says so.
    #[test]
    fn gemm_matches_the_rounded_reference() {
        let Some(isa) = Bf16Isa::detect() else {
            assert_eq!(Bf16Dispatch::detect(), Bf16Dispatch::Float32Fallback);
            eprintln!("no AVX512-BF16 here: GEMM not run");
            return;
        };
        let short = std::panic::catch_unwind(|| {
            let p = PackedBf16::pack(&[1.0; 6], 2, 3);
            gemm(isa, &[0; 2], 2, &p, &mut [0.0; 6], false, 1)
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
            let p = PackedBf16::pack(&w, k, n);
            let mut a = Vec::new();
            pack_rows(isa, &x, k, &mut a);
            for accumulate in [false, true] {
                for threads in [1, 2, 5] {
                    let mut c = init.clone();
                    gemm(isa, &a, m, &p, &mut c, accumulate, threads);
                    for i in 0..m {
                        for j in 0..n {
                            let mut want: f64 =
                                (0..k).map(|l| round(x[i * k + l]) * round(w[l * n + j])).sum();
                            if accumulate {
                                want += init[i * n + j] as f64;
                            }
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (k as f64).sqrt() + 1e-6 * want.abs(),
                                "[{m}x{k}x{n}] acc={accumulate} t={threads} at ({i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rows_are_rounded_to_nearest_even_and_padded() {
        let Some(isa) = Bf16Isa::detect() else {
            assert_eq!(Bf16Dispatch::detect(), Bf16Dispatch::Float32Fallback);
            eprintln!("no AVX512-BF16 here: conversion not run");
            return;
        };
        let k = 37;
        let mut x = lcg(1, 3 * k);
        x[5] = f32::NAN;
        // Halfway between two bf16 values: ties go to the even one.
        x[20] = f32::from_bits(0x3f80_8000);
        x[21] = f32::from_bits(0x3f81_8000);
        let mut out = vec![7u16; 1];
        pack_rows(isa, &x, k, &mut out);
        assert_eq!(out.len(), 3 * 38);
        for r in 0..3 {
            for j in 0..k {
                let v = x[r * k + j];
                let got = out[r * 38 + j];
                if v.is_nan() {
                    assert!(half::bf16::from_bits(got).is_nan());
                } else {
                    assert_eq!(got, to_bf16(v), "row {r} col {j}");
                }
            }
            assert_eq!(out[r * 38 + 37], 0);
        }
        assert_eq!((out[20], out[21]), (0x3f80, 0x3f82));
    }
}
