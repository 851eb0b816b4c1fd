//! The exact nearest-neighbour scan.
//!
//! Every row is stored twice: as f32 (the truth) and as its unit vector
//! quantised to int8 with one scale per row, plus a per-row bound `b` of the
//! quantisation error. For a unit query `Q` the int8 estimate `a` of a row's
//! cosine satisfies `|cos - a| <= b` (Cauchy–Schwarz: `|x/|x| - s·q|·|Q|`,
//! plus the f32 rounding of the kernel and of the query, see [`quantise`]).
//!
//! The scan reads only the int8 matrix (a quarter of the f32 bytes), in
//! parallel, keeping per thread the k largest lower bounds `a - b` and every
//! row whose upper bound `a + b` reaches the k-th lower bound seen so far.
//! With `L` the k-th largest lower bound over all rows, at least k rows have
//! a cosine >= `L`, so every row of the true top k (and every row tied with
//! its last) has an upper bound >= `L` and is a candidate. The candidates
//! are re-ranked with the exact cosine (f64 arithmetic over the f32 vectors),
//! ordered by score descending then paper id ascending, and cut to k: the
//! same papers in the same order as an exact scan of every f32 vector.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::QueryError;
use super::segment::{Q8_BLOCK_ROWS, Segment};

/// A row's int8 form, as [`quantise`] made it.
pub(crate) struct Quantised {
    /// `x / |x| ≈ scale · q`.
    pub scale: f32,
    /// Upper bound of `|cos(x, Q) - scale · (q · Q)|` for any unit `Q`.
    pub bound: f32,
    /// `1 / |x|` (0 for a zero or non-finite vector).
    pub inv_norm: f64,
}

/// Quantises the unit vector of `x` into `q` (symmetric, one scale per row,
/// values in -127..=127) and bounds the error of cosines estimated from it.
pub(crate) fn quantise(x: &[f32], q: &mut [i8]) -> Quantised {
    let norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        q.fill(0);
        return Quantised {
            scale: 0.0,
            bound: 0.0,
            inv_norm: 0.0,
        };
    }
    let inv = 1.0 / norm;
    let max = x.iter().map(|&v| (f64::from(v) * inv).abs()).fold(0.0, f64::max);
    let scale = (max / 127.0) as f32;
    if scale == 0.0 || !scale.is_normal() {
        // Too small to scale: estimate 0 with the widest bound a cosine needs.
        q.fill(0);
        return Quantised {
            scale: 0.0,
            bound: 1.0 + 1e-3,
            inv_norm: inv,
        };
    }
    let s = f64::from(scale);
    let (mut err2, mut q2) = (0.0f64, 0.0f64);
    for (&v, out) in x.iter().zip(q.iter_mut()) {
        let u = f64::from(v) * inv;
        let r = (u / s).round().clamp(-127.0, 127.0);
        *out = r as i8;
        err2 += (u - s * r) * (u - s * r);
        q2 += r * r;
    }
    // Quantisation: |x̂ - s·q| · |Q|. Kernel: an f32 sum of d products,
    // error <= (d + 8)·ε·s·|q|·|Q|. Query rounding to f32 and the final
    // products and sums: a few ε, covered by the absolute term. The margin
    // factor covers rounding this bound to f32.
    let d = x.len() as f64;
    let bound = err2.sqrt() + (d + 8.0) * f64::from(f32::EPSILON) * s * q2.sqrt();
    Quantised {
        scale,
        bound: (bound * (1.0 + 1e-4) + 4e-6) as f32,
        inv_norm: inv,
    }
}

/// Dot products of the int8 rows of `block` (`dim` values each) with `q`,
/// into `out` (one per row).
type BlockKernel = fn(&[i8], usize, &[f32], &mut [f32]);

fn kernel() -> (BlockKernel, &'static str) {
    static KERNEL: OnceLock<(BlockKernel, &'static str)> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return (x86::block as BlockKernel, "avx2+fma");
        }
        (block_scalar as BlockKernel, "scalar")
    })
}

/// Name of the scan kernel this CPU runs (`avx2+fma` or `scalar`).
pub fn kernel_name() -> &'static str {
    kernel().1
}

fn block_scalar(block: &[i8], dim: usize, q: &[f32], out: &mut [f32]) {
    for (row, o) in block.chunks_exact(dim).zip(out.iter_mut()) {
        let mut acc = [0f32; 8];
        let mut chunks = row.chunks_exact(8);
        let mut qs = q.chunks_exact(8);
        for (r, qq) in (&mut chunks).zip(&mut qs) {
            for ((a, &x), &y) in acc.iter_mut().zip(r).zip(qq) {
                *a += f32::from(x) * y;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for (&r, &qq) in chunks.remainder().iter().zip(qs.remainder()) {
            sum += f32::from(r) * qq;
        }
        *o = sum;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The AVX2+FMA kernel. Only reachable through `kernel()`, which picks
    /// it after `is_x86_feature_detected!` confirmed both features.
    pub(super) fn block(block: &[i8], dim: usize, q: &[f32], out: &mut [f32]) {
        // SAFETY: `kernel()` selects this function only when the running
        // CPU supports AVX2 and FMA (runtime detection, not a compile-time
        // target feature).
        unsafe { block_avx2(block, dim, q, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn block_avx2(block: &[i8], dim: usize, q: &[f32], out: &mut [f32]) {
        let q = &q[..dim];
        let main = dim / 32 * 32;
        let eights = dim / 8 * 8;
        for (row, o) in block.chunks_exact(dim).zip(out.iter_mut()) {
            let r = row.as_ptr();
            let qp = q.as_ptr();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            // SAFETY (pointer reads below): `row` and `q` both hold `dim`
            // values and every read covers [j, j + 8) with j + 8 <= dim.
            while j < main {
                for (u, a) in acc.iter_mut().enumerate() {
                    let at = j + 8 * u;
                    let v = unsafe {
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(r.add(at) as *const __m128i)))
                    };
                    *a = _mm256_fmadd_ps(v, unsafe { _mm256_loadu_ps(qp.add(at)) }, *a);
                }
                j += 32;
            }
            while j < eights {
                let v = unsafe {
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(r.add(j) as *const __m128i)))
                };
                acc[0] = _mm256_fmadd_ps(v, unsafe { _mm256_loadu_ps(qp.add(j)) }, acc[0]);
                j += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
            let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
            let one = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
            let mut total = _mm_cvtss_f32(one);
            for (&x, &y) in row[j..].iter().zip(&q[j..]) {
                total += f32::from(x) * y;
            }
            *o = total;
        }
    }
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

/// One thread's state: the k largest lower bounds and the candidates.
struct State {
    k: usize,
    lowers: BinaryHeap<Reverse<Lower>>,
    /// The k-th largest lower bound so far (-inf until there are k).
    cut: f32,
    /// (segment, row, upper bound).
    candidates: Vec<(u32, u32, f32)>,
    scores: Vec<f32>,
}

impl State {
    fn new(k: usize) -> State {
        State {
            k,
            lowers: BinaryHeap::with_capacity(k + 1),
            cut: f32::NEG_INFINITY,
            candidates: Vec::new(),
            scores: vec![0.0; Q8_BLOCK_ROWS],
        }
    }

    fn threshold(&self) -> f32 {
        self.cut
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
        let threshold = self.threshold();
        self.candidates.retain(|c| c.2 >= threshold);
    }

    fn merge(mut self, other: State) -> State {
        for Reverse(Lower(lower)) in other.lowers {
            self.push_lower(lower);
        }
        self.candidates.extend(other.candidates);
        self.prune();
        self
    }
}

/// The k rows of highest cosine with the unit vector `query` among the
/// allowed rows of `segments`, as (segment, row, score), best first, ties
/// by paper id.
pub(crate) fn top_k(
    segments: &[Segment],
    allowed: &[Allowed],
    query: &[f64],
    k: usize,
) -> Result<Vec<(usize, usize, f64)>, QueryError> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let q32: Vec<f32> = query.iter().map(|&v| v as f32).collect();
    let (kernel, _) = kernel();
    let items: Vec<(usize, usize)> = segments
        .iter()
        .enumerate()
        .filter(|(s, _)| !matches!(allowed[*s], Allowed::Skip))
        .flat_map(|(s, seg)| (0..seg.q8_blocks()).map(move |b| (s, b)))
        .collect();
    let state = items
        .par_iter()
        .try_fold(
            || State::new(k),
            |mut state, &(s, b)| -> Result<State, QueryError> {
                let seg = &segments[s];
                let rows = seg.q8_block(b)?;
                let n = rows.len() / query.len().max(1);
                kernel(rows, query.len(), &q32, &mut state.scores[..n]);
                let first = b * Q8_BLOCK_ROWS;
                let scales = seg.scales().get(first..first + n).unwrap_or(&[]);
                let bounds = seg.bounds().get(first..first + n).unwrap_or(&[]);
                let rule = &allowed[s];
                let all = matches!(rule, Allowed::All);
                for (i, (&scale, &bound)) in scales.iter().zip(bounds).enumerate() {
                    let row = first + i;
                    if !all && !rule.has(row) {
                        continue;
                    }
                    let estimate = state.scores[i] * scale;
                    let upper = estimate + bound;
                    if upper < state.threshold() {
                        continue;
                    }
                    state.push_lower(estimate - bound);
                    state.candidates.push((s as u32, row as u32, upper));
                }
                if state.candidates.len() > 4 * k + 4096 {
                    state.prune();
                }
                Ok(state)
            },
        )
        .try_reduce(|| State::new(k), |a, b| Ok(a.merge(b)))?;
    let mut state = state;
    state.prune();
    let mut scored: Vec<(usize, usize, f64)> = state
        .candidates
        .par_iter()
        .map(|&(s, row, _)| -> Result<(usize, usize, f64), QueryError> {
            let (s, row) = (s as usize, row as usize);
            let seg = &segments[s];
            Ok((
                s,
                row,
                exact_cosine(seg.vector(row)?, seg.inv_norms().get(row).copied(), query),
            ))
        })
        .collect::<Result<_, _>>()?;
    scored.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| segments[a.0].id(a.1).cmp(segments[b.0].id(b.1)))
    });
    scored.truncate(k);
    Ok(scored)
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
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn kernels_agree_and_bounds_hold() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for dim in [384usize, 37, 8, 1] {
            let rows = 50;
            let x: Vec<f32> = (0..rows * dim).map(|_| rng(&mut seed)).collect();
            let mut q8 = vec![0i8; rows * dim];
            let quantised: Vec<Quantised> = x
                .chunks(dim)
                .zip(q8.chunks_mut(dim))
                .map(|(x, q)| quantise(x, q))
                .collect();
            let query: Vec<f64> = {
                let raw: Vec<f64> = (0..dim).map(|_| f64::from(rng(&mut seed))).collect();
                let n = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
                raw.iter().map(|v| v / n).collect()
            };
            let q32: Vec<f32> = query.iter().map(|&v| v as f32).collect();
            let mut fast = vec![0f32; rows];
            let mut slow = vec![0f32; rows];
            kernel().0(&q8, dim, &q32, &mut fast);
            block_scalar(&q8, dim, &q32, &mut slow);
            for (r, ((f, s), (q, x))) in fast
                .iter()
                .zip(&slow)
                .zip(quantised.iter().zip(x.chunks(dim)))
                .enumerate()
            {
                assert!(
                    (f - s).abs() <= 1e-3 * (1.0 + s.abs()),
                    "{dim}: {fast:?} {slow:?}"
                );
                let exact = exact_cosine(x, Some(q.inv_norm), &query);
                let estimate = f64::from(f * q.scale);
                assert!(
                    (exact - estimate).abs() <= f64::from(q.bound),
                    "dim {dim} row {r}: exact {exact} estimate {estimate} bound {}",
                    q.bound
                );
            }
        }
    }

    #[test]
    fn zero_and_non_finite_vectors_score_zero() {
        let mut q = [0i8; 4];
        let z = quantise(&[0.0; 4], &mut q);
        assert_eq!((z.scale, z.inv_norm), (0.0, 0.0));
        let n = quantise(&[f32::NAN, 1.0, 0.0, 0.0], &mut q);
        assert_eq!(n.inv_norm, 0.0);
        assert_eq!(
            exact_cosine(&[f32::NAN; 4], Some(0.0), &[1.0, 0.0, 0.0, 0.0]),
            0.0
        );
    }
}
