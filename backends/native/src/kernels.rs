//! Element-wise kernels of the forward pass: exp, erf, GELU, softmax,
//! LayerNorm and bias adds.
//!
//! Each kernel has AVX-512 and/or AVX2+FMA paths chosen at run time and a
//! scalar path that evaluates the same polynomials, so results agree to rounding on
//! every machine. The polynomials are minimax fits made for this crate
//! (`scripts/make_fixtures_kernel_fits.py`), accurate to about 1e-8 relative.
//!
//! The vector paths run only with an [`Isa`] that detection produced, and
//! every length they rely on is asserted first. NaN propagates (a NaN score
//! makes its softmax row NaN), so the engine's finiteness check sees it.
//! Denormals are avoided by the kernels themselves (exp is exactly 0 below
//! -87), not by setting FTZ/DAZ in the thread's MXCSR.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Below this argument `exp` returns exactly 0: the true value would be at
/// most ~1.6e-38, near the denormal range, where x86 arithmetic is slow.
const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.3;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// exp(r) on [-ln2/2, ln2/2], degree 6, relative error 1.9e-9.
#[allow(clippy::excessive_precision)] // as fitted, rounded by the compiler
const EXP_P: [f32; 7] = [
    1.000_000_000_554_187_8,
    1.000_000_036_323_097_4,
    0.499_999_920_794_947_5,
    0.166_664_201_701_879_23,
    0.041_668_225_641_962_285,
    0.008_374_815_781_707_406,
    0.001_383_684_193_652_284_8,
];
/// erf(x)/x as a polynomial in x² on [0, 0.9], relative error 1.2e-8.
#[allow(clippy::excessive_precision)] // as fitted, rounded by the compiler
const ERF_P: [f32; 6] = [
    1.128_379_153_851_122,
    -0.376_125_234_071_122_36,
    0.112_821_417_049_727_84,
    -0.026_778_933_850_765_685,
    0.005_011_993_341_572_804,
    -0.000_609_049_605_427_014_5,
];
/// erfc(x)·exp(x²) as a polynomial in t = 1/(1+x) on [0.9, 4], relative error 1.4e-8.
#[allow(clippy::excessive_precision)] // as fitted, rounded by the compiler
const ERFC_Q: [f32; 8] = [
    -0.000_144_481_540_297_676_65,
    0.567_588_692_066_806_4,
    0.531_203_594_618_783,
    0.447_334_567_072_226_63,
    -0.693_206_456_980_097_8,
    -0.500_607_556_355_633_7,
    1.183_902_874_991_905_8,
    -0.552_076_549_792_940_9,
];
const ERF_SPLIT: f32 = 0.9;
/// erf(4) rounds to 1 in f32.
const ERF_CLAMP: f32 = 4.0;
const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;

pub mod bf16;
pub mod int8;
mod tiles;

use isa::Family;
pub use isa::Isa;

/// The ISA token lives in its own module so that nothing else, not even
/// the rest of this file, can make a vector-family value without detection.
mod isa {
    /// The kernel families.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) enum Family {
        /// Portable scalar code.
        Scalar,
        /// 8-lane AVX2 + FMA.
        Avx2,
        /// 16-lane AVX-512F (softmax, GELU, exp, erf; the rest uses AVX2).
        Avx512,
    }

    /// A kernel family this CPU runs: proof, for the kernels' `unsafe`
    /// vector code, that the CPU has the instructions. Only
    /// [`Isa::SCALAR`] can be named; the vector families come only from
    /// run-time detection ([`Isa::best`], [`Isa::available`]).
    ///
    /// ```compile_fail
    /// // A vector family cannot be made without detection.
    /// let _ = papersys_backend_native::kernels::Isa::Avx512;
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Isa(Family);

    impl Isa {
        /// The portable scalar kernels, valid on every CPU.
        pub const SCALAR: Isa = Isa(Family::Scalar);

        /// The widest kernel family this CPU runs (std caches the detection).
        #[inline]
        pub fn best() -> Isa {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    if is_x86_feature_detected!("avx512f") {
                        return Isa(Family::Avx512);
                    }
                    return Isa(Family::Avx2);
                }
            }
            Isa::SCALAR
        }

        /// Every family this CPU runs, scalar first (each wider family
        /// implies the narrower ones: AVX-512 is detected only with AVX2+FMA).
        pub fn available() -> Vec<Isa> {
            match Isa::best().0 {
                Family::Scalar => vec![Isa::SCALAR],
                Family::Avx2 => vec![Isa::SCALAR, Isa(Family::Avx2)],
                Family::Avx512 => vec![Isa::SCALAR, Isa(Family::Avx2), Isa(Family::Avx512)],
            }
        }

        /// A short name for logs ("scalar", "avx2", "avx512").
        pub fn name(self) -> &'static str {
            match self.0 {
                Family::Scalar => "scalar",
                Family::Avx2 => "avx2",
                Family::Avx512 => "avx512",
            }
        }

        pub(super) fn family(self) -> Family {
            self.0
        }
    }
}

#[inline(always)]
fn horner<const N: usize>(c: &[f32; N], x: f32) -> f32 {
    let mut acc = c[N - 1];
    for k in (0..N - 1).rev() {
        acc = acc.mul_add(x, c[k]);
    }
    acc
}

/// `e^x` with the vector path's algorithm; exactly 0 below -87, NaN for NaN.
#[inline]
pub fn exp_scalar(x: f32) -> f32 {
    if x < EXP_LO {
        return 0.0;
    }
    // Not `min`: f32::min(NaN, hi) is hi, which would hide a NaN.
    let x = if x > EXP_HI { EXP_HI } else { x };
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = horner(&EXP_P, r);
    p * f32::from_bits((((n as i32) + 127) as u32) << 23)
}

/// The error function with the vector path's algorithm; NaN for NaN.
#[inline]
pub fn erf_scalar(x: f32) -> f32 {
    let a = x.abs();
    let v = if a < ERF_SPLIT {
        a * horner(&ERF_P, a * a)
    } else {
        // Not `min`, which would turn NaN into the clamp.
        let a = if a > ERF_CLAMP { ERF_CLAMP } else { a };
        let t = 1.0 / (1.0 + a);
        1.0 - exp_scalar(-a * a) * horner(&ERFC_Q, t)
    };
    v.copysign(x)
}

/// Exact (erf-based) GELU, as PyTorch's `gelu` with `approximate="none"`.
#[inline]
pub fn gelu_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_scalar(x * SQRT_HALF))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[inline(always)]
    unsafe fn horner8<const N: usize>(c: &[f32; N], x: __m256) -> __m256 {
        unsafe {
            let mut acc = _mm256_set1_ps(c[N - 1]);
            for k in (0..N - 1).rev() {
                acc = _mm256_fmadd_ps(acc, x, _mm256_set1_ps(c[k]));
            }
            acc
        }
    }

    #[inline(always)]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        unsafe {
            let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
            // max/min return their second operand when either is NaN: x
            // goes second, so a NaN passes through (and the result is NaN).
            let x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
                x,
                _mm256_set1_ps(LOG2E),
            ));
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let p = horner8(&EXP_P, r);
            let bits =
                _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
            _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)))
        }
    }

    #[inline(always)]
    pub unsafe fn erf8(x: __m256) -> __m256 {
        unsafe {
            let sign_mask = _mm256_set1_ps(-0.0);
            let sign = _mm256_and_ps(x, sign_mask);
            let a = _mm256_andnot_ps(sign_mask, x);
            let a2 = _mm256_mul_ps(a, a);
            let small = _mm256_mul_ps(a, horner8(&ERF_P, a2));
            let ac = _mm256_min_ps(_mm256_set1_ps(ERF_CLAMP), a); // NaN passes (see exp8)
            let one = _mm256_set1_ps(1.0);
            let t = _mm256_div_ps(one, _mm256_add_ps(one, ac));
            let e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), ac), ac));
            let large = _mm256_fnmadd_ps(e, horner8(&ERFC_Q, t), one);
            let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(ERF_SPLIT));
            _mm256_or_ps(_mm256_blendv_ps(large, small, is_small), sign)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn bias_gelu(x: &mut [f32], bias: &[f32]) {
        unsafe {
            let half = _mm256_set1_ps(0.5);
            let one = _mm256_set1_ps(1.0);
            let s = _mm256_set1_ps(SQRT_HALF);
            for row in x.chunks_exact_mut(bias.len()) {
                let mut i = 0;
                while i + 8 <= row.len() {
                    let p = row.as_mut_ptr().add(i);
                    let v = _mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(bias.as_ptr().add(i)));
                    let g = _mm256_mul_ps(
                        _mm256_mul_ps(half, v),
                        _mm256_add_ps(one, erf8(_mm256_mul_ps(v, s))),
                    );
                    _mm256_storeu_ps(p, g);
                    i += 8;
                }
                for j in i..row.len() {
                    row[j] = gelu_scalar(row[j] + bias[j]);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_row(row: &mut [f32]) {
        unsafe {
            let n = row.len();
            let p = row.as_mut_ptr();
            let mut i = 0;
            let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
            while i + 8 <= n {
                vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p.add(i)));
                i += 8;
            }
            let mut max = hmax(vmax);
            for &v in &row[i..] {
                max = max.max(v);
            }
            let m = _mm256_set1_ps(max);
            let mut vsum = _mm256_setzero_ps();
            i = 0;
            while i + 8 <= n {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m));
                _mm256_storeu_ps(p.add(i), e);
                vsum = _mm256_add_ps(vsum, e);
                i += 8;
            }
            let mut sum = hsum(vsum);
            for v in &mut row[i..] {
                *v = exp_scalar(*v - max);
                sum += *v;
            }
            let inv = 1.0 / sum;
            let vinv = _mm256_set1_ps(inv);
            i = 0;
            while i + 8 <= n {
                _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), vinv));
                i += 8;
            }
            for v in &mut row[i..] {
                *v *= inv;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn layer_norm(x: &mut [f32], bias: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
        unsafe {
            let h = gamma.len();
            let inv_h = 1.0 / h as f32;
            for row in x.chunks_exact_mut(h) {
                let p = row.as_mut_ptr();
                let mut i = 0;
                let mut vs = _mm256_setzero_ps();
                if let Some(b) = bias {
                    while i + 8 <= h {
                        let v = _mm256_add_ps(_mm256_loadu_ps(p.add(i)), _mm256_loadu_ps(b.as_ptr().add(i)));
                        _mm256_storeu_ps(p.add(i), v);
                        vs = _mm256_add_ps(vs, v);
                        i += 8;
                    }
                    for j in i..h {
                        row[j] += b[j];
                    }
                } else {
                    while i + 8 <= h {
                        vs = _mm256_add_ps(vs, _mm256_loadu_ps(p.add(i)));
                        i += 8;
                    }
                }
                let mut sum = hsum(vs);
                for &v in &row[i..] {
                    sum += v;
                }
                let mean = sum * inv_h;
                let vm = _mm256_set1_ps(mean);
                let mut vq = _mm256_setzero_ps();
                i = 0;
                while i + 8 <= h {
                    let d = _mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm);
                    vq = _mm256_fmadd_ps(d, d, vq);
                    i += 8;
                }
                let mut sq = hsum(vq);
                for &v in &row[i..] {
                    sq += (v - mean) * (v - mean);
                }
                let rstd = 1.0 / (sq * inv_h + eps).sqrt();
                let vr = _mm256_set1_ps(rstd);
                i = 0;
                while i + 8 <= h {
                    let d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm), vr);
                    let y = _mm256_fmadd_ps(
                        d,
                        _mm256_loadu_ps(gamma.as_ptr().add(i)),
                        _mm256_loadu_ps(beta.as_ptr().add(i)),
                    );
                    _mm256_storeu_ps(p.add(i), y);
                    i += 8;
                }
                for j in i..h {
                    row[j] = ((row[j] - mean) * rstd).mul_add(gamma[j], beta[j]);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
    }

    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_slice(x: &mut [f32]) {
        unsafe {
            let mut i = 0;
            while i + 8 <= x.len() {
                let p = x.as_mut_ptr().add(i);
                _mm256_storeu_ps(p, exp8(_mm256_loadu_ps(p)));
                i += 8;
            }
            for v in &mut x[i..] {
                *v = exp_scalar(*v);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn erf_slice(x: &mut [f32]) {
        unsafe {
            let mut i = 0;
            while i + 8 <= x.len() {
                let p = x.as_mut_ptr().add(i);
                _mm256_storeu_ps(p, erf8(_mm256_loadu_ps(p)));
                i += 8;
            }
            for v in &mut x[i..] {
                *v = erf_scalar(*v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;

    #[inline(always)]
    unsafe fn horner16<const N: usize>(c: &[f32; N], x: __m512) -> __m512 {
        unsafe {
            let mut acc = _mm512_set1_ps(c[N - 1]);
            for k in (0..N - 1).rev() {
                acc = _mm512_fmadd_ps(acc, x, _mm512_set1_ps(c[k]));
            }
            acc
        }
    }

    #[inline(always)]
    unsafe fn exp16(x: __m512) -> __m512 {
        unsafe {
            // Unordered "not less than": NaN lanes are kept, not zeroed.
            let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(EXP_LO));
            // x second in max/min, so a NaN passes through (see avx2::exp8).
            let x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
                x,
                _mm512_set1_ps(LOG2E),
            ));
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
            let p = horner16(&EXP_P, r);
            let bits =
                _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
            _mm512_maskz_mov_ps(keep, _mm512_mul_ps(p, _mm512_castsi512_ps(bits)))
        }
    }

    #[inline(always)]
    unsafe fn erf16(x: __m512) -> __m512 {
        unsafe {
            let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
            let a = _mm512_abs_ps(x);
            let small = _mm512_mul_ps(a, horner16(&ERF_P, _mm512_mul_ps(a, a)));
            let ac = _mm512_min_ps(_mm512_set1_ps(ERF_CLAMP), a); // NaN passes
            let one = _mm512_set1_ps(1.0);
            let t = _mm512_div_ps(one, _mm512_add_ps(one, ac));
            let e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ac), ac));
            let large = _mm512_fnmadd_ps(e, horner16(&ERFC_Q, t), one);
            let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(ERF_SPLIT));
            let v = _mm512_mask_blend_ps(is_small, large, small);
            _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign))
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn bias_gelu(x: &mut [f32], bias: &[f32]) {
        unsafe {
            let half = _mm512_set1_ps(0.5);
            let one = _mm512_set1_ps(1.0);
            let s = _mm512_set1_ps(SQRT_HALF);
            for row in x.chunks_exact_mut(bias.len()) {
                let mut i = 0;
                while i + 16 <= row.len() {
                    let p = row.as_mut_ptr().add(i);
                    let v = _mm512_add_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(bias.as_ptr().add(i)));
                    let g = _mm512_mul_ps(
                        _mm512_mul_ps(half, v),
                        _mm512_add_ps(one, erf16(_mm512_mul_ps(v, s))),
                    );
                    _mm512_storeu_ps(p, g);
                    i += 16;
                }
                for j in i..row.len() {
                    row[j] = gelu_scalar(row[j] + bias[j]);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn softmax_row(row: &mut [f32]) {
        unsafe {
            // Whole row in 16-lane steps; the last step masked, so no lane
            // falls back to scalar code (rows are sequence lengths, rarely
            // multiples of 16). Masked-off lanes read as -inf: exp gives 0.
            let n = row.len();
            let p = row.as_mut_ptr();
            let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
            let load = |i: usize| -> (__m512, __mmask16) {
                let k: __mmask16 = if n - i >= 16 {
                    0xffff
                } else {
                    (1u16 << (n - i)) - 1
                };
                (_mm512_mask_loadu_ps(ninf, k, p.add(i)), k)
            };
            let mut vmax = ninf;
            let mut i = 0;
            while i < n {
                vmax = _mm512_max_ps(vmax, load(i).0);
                i += 16;
            }
            let m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
            let mut vsum = _mm512_setzero_ps();
            i = 0;
            while i < n {
                let (v, k) = load(i);
                let e = exp16(_mm512_sub_ps(v, m));
                _mm512_mask_storeu_ps(p.add(i), k, e);
                vsum = _mm512_add_ps(vsum, e);
                i += 16;
            }
            let vinv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(vsum));
            i = 0;
            while i < n {
                let (v, k) = load(i);
                _mm512_mask_storeu_ps(p.add(i), k, _mm512_mul_ps(v, vinv));
                i += 16;
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn exp_slice(x: &mut [f32]) {
        unsafe {
            let mut i = 0;
            while i + 16 <= x.len() {
                let p = x.as_mut_ptr().add(i);
                _mm512_storeu_ps(p, exp16(_mm512_loadu_ps(p)));
                i += 16;
            }
            for v in &mut x[i..] {
                *v = exp_scalar(*v);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn erf_slice(x: &mut [f32]) {
        unsafe {
            let mut i = 0;
            while i + 16 <= x.len() {
                let p = x.as_mut_ptr().add(i);
                _mm512_storeu_ps(p, erf16(_mm512_loadu_ps(p)));
                i += 16;
            }
            for v in &mut x[i..] {
                *v = erf_scalar(*v);
            }
        }
    }
}

// Dispatch. SAFETY (every `unsafe` call below): an `Isa` of a vector family
// exists only when run-time detection found that family (and, for AVX-512,
// AVX2+FMA too) on this CPU; see `isa`. Every slice length the vector code
// relies on is asserted before the call.

/// Replaces each value by `e^x` (exactly 0 below -87; NaN stays NaN).
pub fn exp_inplace(x: &mut [f32]) {
    exp_with(x, Isa::best());
}

/// [`exp_inplace`] with the kernels of `isa`.
pub fn exp_with(x: &mut [f32], isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    match isa.family() {
        Family::Avx512 => return unsafe { avx512::exp_slice(x) },
        Family::Avx2 => return unsafe { avx2::exp_slice(x) },
        Family::Scalar => {}
    }
    x.iter_mut().for_each(|v| *v = exp_scalar(*v));
}

/// Replaces each value by `erf(x)` (NaN stays NaN).
pub fn erf_inplace(x: &mut [f32]) {
    erf_with(x, Isa::best());
}

/// [`erf_inplace`] with the kernels of `isa`.
pub fn erf_with(x: &mut [f32], isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    match isa.family() {
        Family::Avx512 => return unsafe { avx512::erf_slice(x) },
        Family::Avx2 => return unsafe { avx2::erf_slice(x) },
        Family::Scalar => {}
    }
    x.iter_mut().for_each(|v| *v = erf_scalar(*v));
}

/// Panics unless `x` is whole rows of `width` values, `width > 0`: a
/// mismatch is a caller's bug, never input data.
fn assert_rows(kernel: &str, x: &[f32], width: usize) {
    assert!(
        width > 0 && x.len().is_multiple_of(width),
        "kernels::{kernel}: {} values are not whole rows of {width}",
        x.len()
    );
}

/// `x[r][j] = gelu(x[r][j] + bias[j])` for every row `r` of `bias.len()` values.
///
/// # Panics
/// When `x` is not whole rows of `bias.len()` values (or `bias` is empty).
pub fn bias_gelu_inplace(x: &mut [f32], bias: &[f32]) {
    bias_gelu_with(x, bias, Isa::best());
}

/// [`bias_gelu_inplace`] with the kernels of `isa`.
pub fn bias_gelu_with(x: &mut [f32], bias: &[f32], isa: Isa) {
    assert_rows("bias_gelu", x, bias.len());
    #[cfg(target_arch = "x86_64")]
    match isa.family() {
        Family::Avx512 => return unsafe { avx512::bias_gelu(x, bias) },
        Family::Avx2 => return unsafe { avx2::bias_gelu(x, bias) },
        Family::Scalar => {}
    }
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = gelu_scalar(*v + b);
        }
    }
}

/// Softmax of one row in place; scores far below the row maximum become
/// exactly 0 (never denormal), so a later product with them stays fast. A
/// row holding a NaN comes out all NaN, so the fault is not hidden.
pub fn softmax_inplace(row: &mut [f32]) {
    softmax_with(row, Isa::best());
}

/// [`softmax_inplace`] with the kernels of `isa`.
pub fn softmax_with(row: &mut [f32], isa: Isa) {
    if row.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    match isa.family() {
        Family::Avx512 => return unsafe { avx512::softmax_row(row) },
        Family::Avx2 => return unsafe { avx2::softmax_row(row) },
        Family::Scalar => {}
    }
    // f32::max skips a NaN, but exp(NaN - max) is NaN and so is the sum.
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp_scalar(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// LayerNorm of every row of `gamma.len()` values in place, after adding
/// `bias` to each row when given (the bias of the layer whose output was
/// accumulated onto the residual: one pass instead of two).
///
/// # Panics
/// When `beta` or `bias` is not as long as `gamma`, or `x` is not whole
/// rows of `gamma.len()` values (or `gamma` is empty).
pub fn layer_norm_inplace(x: &mut [f32], bias: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    layer_norm_with(x, bias, gamma, beta, eps, Isa::best());
}

/// [`layer_norm_inplace`] with the kernels of `isa`.
pub fn layer_norm_with(x: &mut [f32], bias: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32, isa: Isa) {
    let h = gamma.len();
    assert!(
        beta.len() == h && bias.is_none_or(|b| b.len() == h),
        "kernels::layer_norm: gamma has {h} values but beta {} and bias {:?}",
        beta.len(),
        bias.map(<[f32]>::len)
    );
    assert_rows("layer_norm", x, h);
    #[cfg(target_arch = "x86_64")]
    if isa.family() != Family::Scalar {
        return unsafe { avx2::layer_norm(x, bias, gamma, beta, eps) };
    }
    let hf = h as f32;
    for row in x.chunks_exact_mut(h) {
        if let Some(b) = bias {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        let mean = row.iter().sum::<f32>() / hf;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / hf;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = ((*v - mean) * rstd).mul_add(*g, *b);
        }
    }
}

/// `x[r][j] += bias[j]` for every row `r`.
///
/// # Panics
/// When `x` is not whole rows of `bias.len()` values (or `bias` is empty).
pub fn add_bias_inplace(x: &mut [f32], bias: &[f32]) {
    assert_rows("add_bias", x, bias.len());
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// RMSNorm of every row of `weight.len()` values in place, as Llama-family
/// models compute it: `x · weight / sqrt(mean(x²) + eps)`, in f32.
///
/// # Panics
/// When `x` is not whole rows of `weight.len()` values (or `weight` is empty).
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    assert_rows("rms_norm", x, weight.len());
    let inv_n = 1.0 / weight.len() as f32;
    for row in x.chunks_exact_mut(weight.len()) {
        // Eight partial sums, so that the loop vectorises.
        let mut acc = [0.0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a = v.mul_add(*v, *a);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
        let ms = (acc.iter().sum::<f32>() + tail) * inv_n;
        let r = 1.0 / (ms + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = w * (*v * r);
        }
    }
}

/// SwiGLU: for every row of `gate_up` (`[gate | up]`, `2·width` values),
/// writes `silu(gate) · up` into the matching row of `out` (`width`
/// values), `silu(x) = x / (1 + e^-x)` with the exp of `isa`.
///
/// # Panics
/// When `out` is not whole rows of `width` values or `gate_up` does not hold
/// twice as many.
pub fn silu_mul_with(gate_up: &[f32], out: &mut [f32], width: usize, isa: Isa) {
    gate_by_sigmoid("silu_mul", gate_up, out, width, isa, |g| -g);
}

/// √(2/π), the tanh GELU's constant.
const GELU_TANH_C: f32 = 0.797_884_6;

/// GeGLU with PyTorch's tanh GELU (`gelu(x, approximate="tanh")`, Gemma's
/// `gelu_pytorch_tanh`): for every row of `gate_up` (`[gate | up]`,
/// `2·width` values) writes `gelu_tanh(gate) · up` into the matching row of
/// `out`. Computed as `g / (1 + e^(-2·√(2/π)·(g + 0.044715·g³)))`, the same
/// function as `0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))`, with the exp
/// of `isa` (libm's scalar tanh had cost as much as the int8 GEMMs).
///
/// # Panics
/// As [`silu_mul_with`].
pub fn gelu_tanh_mul_with(gate_up: &[f32], out: &mut [f32], width: usize, isa: Isa) {
    gate_by_sigmoid("gelu_tanh_mul", gate_up, out, width, isa, |g| {
        -2.0 * GELU_TANH_C * (g + 0.044_715 * g * g * g)
    });
}

/// `out = gate / (1 + e^exponent(gate)) · up`, row by row: a gate times
/// the sigmoid of a function of it.
fn gate_by_sigmoid(
    kernel: &str,
    gate_up: &[f32],
    out: &mut [f32],
    width: usize,
    isa: Isa,
    exponent: impl Fn(f32) -> f32,
) {
    assert_rows(kernel, out, width);
    assert_eq!(
        gate_up.len(),
        2 * out.len(),
        "kernels::{kernel}: {} gate/up values for {} outputs",
        gate_up.len(),
        out.len()
    );
    for (gu, o) in gate_up.chunks_exact(2 * width).zip(out.chunks_exact_mut(width)) {
        let (gate, up) = gu.split_at(width);
        o.iter_mut().zip(gate).for_each(|(o, g)| *o = exponent(*g));
        exp_with(o, isa);
        for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + *o) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // erf via its continued series with f64; accurate to ~1e-15 on [-6, 6].
        if x.abs() < 2.5 {
            let mut sum = x;
            let mut term = x;
            let x2 = x * x;
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
                if term.abs() < 1e-18 {
                    break;
                }
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz) for large |x|.
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..=200).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / (std::f64::consts::PI.sqrt() * (a + f));
            (1.0 - erfc).copysign(x)
        }
    }

    /// The scalar path and every vector path this CPU has.
    fn paths() -> Vec<Isa> {
        let paths = Isa::available();
        assert_eq!(paths.first(), Some(&Isa::SCALAR));
        assert_eq!(paths.last(), Some(&Isa::best()));
        paths
    }

    #[test]
    fn every_detected_family_is_tested() {
        let names: Vec<&str> = paths().iter().map(|i| i.name()).collect();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            assert_eq!(names.contains(&"avx2"), avx2, "{names:?}");
            assert_eq!(
                names.contains(&"avx512"),
                avx2 && is_x86_feature_detected!("avx512f"),
                "{names:?}"
            );
        }
        assert_eq!(names[0], "scalar");
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    }

    #[test]
    fn exp_matches_f64_within_two_ulp_and_flushes_tiny() {
        let xs = grid(-86.9, 88.0, 100_003);
        for isa in paths() {
            let mut v = xs.clone();
            exp_with(&mut v, isa);
            for (x, y) in xs.iter().zip(&v) {
                let r = (*x as f64).exp();
                let rel = ((*y as f64) - r).abs() / r;
                assert!(rel < 2.5e-7, "exp({x}) = {y}, want {r} (rel {rel})");
                assert_eq!(
                    *y,
                    exp_scalar(*x).max(0.0),
                    "{isa:?} and scalar paths differ at {x}"
                );
            }
            let mut tiny = vec![
                -87.5,
                -100.0,
                -1e30,
                f32::NEG_INFINITY,
                -88.0,
                -87.2,
                -90.0,
                -200.0,
                -95.0,
            ];
            exp_with(&mut tiny, isa);
            assert!(tiny.iter().all(|v| *v == 0.0), "{tiny:?}");
        }
    }

    #[test]
    fn erf_is_accurate_to_f32() {
        let xs = grid(-6.0, 6.0, 200_001);
        for isa in paths() {
            let mut v = xs.clone();
            erf_with(&mut v, isa);
            for (x, y) in xs.iter().zip(&v) {
                let r = erf_ref(*x as f64);
                let err = ((*y as f64) - r).abs();
                assert!(err <= 2.4e-7 * r.abs() + 1e-40, "erf({x}) = {y}, want {r}");
                assert!(
                    (erf_scalar(*x) - y).abs() <= f32::EPSILON * y.abs(),
                    "paths differ at {x}"
                );
            }
        }
        assert_eq!(erf_scalar(0.0), 0.0);
    }

    #[test]
    fn gelu_matches_exact_definition() {
        let xs = grid(-10.0, 10.0, 20_011);
        let bias = vec![0.0; xs.len()];
        for isa in paths() {
            let mut v = xs.clone();
            bias_gelu_with(&mut v, &bias, isa);
            for (x, y) in xs.iter().zip(&v) {
                let xd = *x as f64;
                let r = 0.5 * xd * (1.0 + erf_ref(xd / std::f64::consts::SQRT_2));
                // 1 + erf cancels for negative x, as in PyTorch's own formula.
                let tol = 3e-7 * r.abs() + 1e-7 * (*x as f64).abs();
                assert!(((*y as f64) - r).abs() <= tol, "gelu({x}) = {y}, want {r}");
            }
        }
    }

    #[test]
    fn bias_gelu_adds_bias_per_row_including_tails() {
        let bias: Vec<f32> = (0..11).map(|j| j as f32 * 0.1 - 0.5).collect();
        let mut x: Vec<f32> = (0..33).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| gelu_scalar(v + bias[i % 11]))
            .collect();
        bias_gelu_inplace(&mut x, &bias);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn softmax_matches_reference_and_zeroes_far_scores() {
        for (n, isa) in [1usize, 3, 8, 13, 64, 255]
            .into_iter()
            .flat_map(|n| paths().into_iter().map(move |p| (n, p)))
        {
            let row: Vec<f32> = (0..n).map(|i| ((i * 7919) % 97) as f32 * 0.3 - 12.0).collect();
            let mut v = row.clone();
            softmax_with(&mut v, isa);
            let max = row
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |a, b| a.max(b as f64));
            let sum: f64 = row.iter().map(|x| (*x as f64 - max).exp()).sum();
            for (x, y) in row.iter().zip(&v) {
                let r = (*x as f64 - max).exp() / sum;
                // x - max is rounded to f32 first: ~1e-6 relative for |x - max| < 30.
                assert!(((*y as f64) - r).abs() <= 4e-6 * r + 1e-30, "n={n}: {y} vs {r}");
            }
        }
        for isa in paths() {
            let mut v = vec![0.0, -100.0, -1000.0, 5.0, -95.0, 1.0, 2.0, 3.0, -200.0];
            softmax_with(&mut v, isa);
            assert_eq!((v[1], v[2], v[8]), (0.0, 0.0, 0.0));
            assert!(v.iter().all(|p| *p == 0.0 || p.is_normal()));
        }
    }

    #[test]
    fn layer_norm_matches_reference() {
        for (h, isa) in [7usize, 32, 384, 389]
            .into_iter()
            .flat_map(|h| paths().into_iter().map(move |p| (h, p)))
        {
            let gamma: Vec<f32> = (0..h).map(|j| 1.0 + j as f32 * 0.01).collect();
            let beta: Vec<f32> = (0..h).map(|j| j as f32 * -0.02).collect();
            let bias: Vec<f32> = (0..h).map(|j| (j as f32 * 0.3).sin()).collect();
            let raw: Vec<f32> = (0..3 * h).map(|i| (i as f32 * 0.77).cos() * 4.0 + 1.5).collect();
            let x: Vec<f32> = raw.iter().enumerate().map(|(i, v)| v + bias[i % h]).collect();
            let mut y = x.clone();
            layer_norm_with(&mut y, None, &gamma, &beta, 1e-12, isa);
            let mut z = raw.clone();
            layer_norm_with(&mut z, Some(&bias), &gamma, &beta, 1e-12, isa);
            for (a, b) in y.iter().zip(&z) {
                assert!((a - b).abs() < 1e-5, "fused bias: {a} vs {b}");
            }
            for (r, row) in x.chunks(h).enumerate() {
                let mean = row.iter().map(|v| *v as f64).sum::<f64>() / h as f64;
                let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
                for j in 0..h {
                    let want =
                        (row[j] as f64 - mean) / (var + 1e-12).sqrt() * gamma[j] as f64 + beta[j] as f64;
                    let got = y[r * h + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5 * want.abs().max(1.0),
                        "h={h}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn nan_stays_nan_in_exp_erf_and_gelu() {
        // NaNs in the vector part and in the scalar tail of every path.
        let n = 37;
        let mut xs: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 4.0).collect();
        for (k, nan) in [(0, f32::NAN), (9, -f32::NAN), (20, f32::NAN), (36, -f32::NAN)] {
            xs[k] = nan;
        }
        for isa in paths() {
            let (mut e, mut r, mut g) = (xs.clone(), xs.clone(), xs.clone());
            exp_with(&mut e, isa);
            erf_with(&mut r, isa);
            bias_gelu_with(&mut g, &vec![0.0; n], isa);
            for (i, x) in xs.iter().enumerate() {
                for (what, y) in [("exp", e[i]), ("erf", r[i]), ("gelu", g[i])] {
                    assert_eq!(y.is_nan(), x.is_nan(), "{isa:?}: {what}({x}) = {y}");
                }
            }
        }
    }

    #[test]
    fn softmax_of_a_row_holding_nan_is_all_nan() {
        for isa in paths() {
            for n in [1usize, 5, 13, 37] {
                for k in [0, n / 2, n - 1] {
                    let mut row: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
                    row[k] = f32::NAN;
                    softmax_with(&mut row, isa);
                    assert!(
                        row.iter().all(|p| p.is_nan()),
                        "{isa:?}, n={n}, NaN at {k}: {row:?}"
                    );
                }
            }
        }
    }

    /// The message of the panic `f` must raise.
    fn panic_message(f: impl FnOnce()) -> String {
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("no panic");
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    /// A call that must panic, with the message it must give.
    type Case = (&'static str, Box<dyn FnOnce()>);

    #[test]
    fn mismatched_lengths_panic_before_any_vector_code() {
        let gamma = [1.0f32; 16];
        for isa in paths() {
            let cases: [Case; 6] = [
                (
                    "layer_norm: gamma has 16 values but beta 8 and bias None",
                    Box::new(move || layer_norm_with(&mut [0.0; 32], None, &gamma, &[0.0; 8], 1e-12, isa)),
                ),
                (
                    "layer_norm: gamma has 16 values but beta 16 and bias Some(9)",
                    Box::new(move || {
                        layer_norm_with(&mut [0.0; 32], Some(&[0.0; 9]), &gamma, &[0.0; 16], 1e-12, isa)
                    }),
                ),
                (
                    "layer_norm: 40 values are not whole rows of 16",
                    Box::new(move || layer_norm_with(&mut [0.0; 40], None, &gamma, &[0.0; 16], 1e-12, isa)),
                ),
                (
                    "layer_norm: 4 values are not whole rows of 0",
                    Box::new(move || layer_norm_with(&mut [0.0; 4], None, &[], &[], 1e-12, isa)),
                ),
                (
                    "bias_gelu: 20 values are not whole rows of 8",
                    Box::new(move || bias_gelu_with(&mut [0.0; 20], &[0.0; 8], isa)),
                ),
                (
                    "bias_gelu: 4 values are not whole rows of 0",
                    Box::new(move || bias_gelu_with(&mut [0.0; 4], &[], isa)),
                ),
            ];
            for (want, f) in cases {
                let got = panic_message(f);
                assert_eq!(got, format!("kernels::{want}"), "{isa:?}");
            }
        }
        let got = panic_message(|| add_bias_inplace(&mut [0.0; 20], &[0.0; 8]));
        assert_eq!(got, "kernels::add_bias: 20 values are not whole rows of 8");
    }

    #[test]
    fn rms_norm_and_silu_mul_match_their_definitions() {
        let x: Vec<f32> = (0..22).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let w: Vec<f32> = (0..11).map(|i| 0.5 + i as f32 * 0.1).collect();
        let mut got = x.clone();
        rms_norm_inplace(&mut got, &w, 1e-6);
        for (r, row) in x.chunks_exact(11).enumerate() {
            let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 11.0;
            for j in 0..11 {
                let want = w[j] as f64 * row[j] as f64 / (ms + 1e-6).sqrt();
                assert!((got[r * 11 + j] as f64 - want).abs() < 1e-5, "{r} {j}");
            }
        }
        let gate_up: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) * 0.9).collect();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; 20];
            silu_mul_with(&gate_up, &mut out, 10, isa);
            for (r, gu) in gate_up.chunks_exact(20).enumerate() {
                for j in 0..10 {
                    let g = gu[j] as f64;
                    let want = g / (1.0 + (-g).exp()) * gu[10 + j] as f64;
                    let o = out[r * 10 + j] as f64;
                    assert!(
                        (o - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{isa:?}: {o} vs {want}"
                    );
                }
            }
        }
    }

    /// Against PyTorch's values and the tanh formula in f64, on every
    /// kernel family, from far below zero (where e^… overflows) to far above.
    #[test]
    fn gelu_tanh_mul_matches_the_tanh_formula() {
        // torch.nn.functional.gelu(x, approximate="tanh") for x = -1, 0.5, 2.
        let known = [(-1.0f32, -0.158_808f32), (0.5, 0.345_714), (2.0, 1.954_598)];
        let mut gate_up: Vec<f32> = (0..60).map(|i| (i as f32 - 30.0) * 0.4).collect();
        gate_up[..3].copy_from_slice(&[-1.0, 0.5, 2.0]);
        gate_up[3] = -200.0;
        gate_up[4] = 200.0;
        gate_up[30..60]
            .iter_mut()
            .enumerate()
            .for_each(|(i, u)| *u = 1.0 + i as f32 * 0.01);
        gate_up[30..33].fill(1.0);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; 30];
            gelu_tanh_mul_with(&gate_up, &mut out, 30, isa);
            for (j, (x, want)) in known.iter().enumerate() {
                assert!(
                    (out[j] - want).abs() < 1e-5,
                    "{isa:?}: gelu_tanh({x}) = {}",
                    out[j]
                );
            }
            for j in 0..30 {
                let g = gate_up[j] as f64;
                let c = GELU_TANH_C as f64;
                let want =
                    0.5 * g * (1.0 + (c * (g + 0.044_715 * g * g * g)).tanh()) * gate_up[30 + j] as f64;
                let o = out[j] as f64;
                assert!(
                    (o - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{isa:?} at {g}: {o} vs {want}"
                );
            }
            assert!(out[3].abs() < 1e-30, "{isa:?}: far below zero: {}", out[3]);
        }
    }
}
