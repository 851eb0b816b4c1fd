//! Building blocks every architecture shares: dense layers (f32, or packed
//! bf16 or int8), norms, packed-batch checks and attention over a packed batch with
//! optional grouped-query heads, causal or windowed masks and score biases.

use std::cell::RefCell;

use gemm::Parallelism;
use papersys_backend_core::EmbedError;
use rayon::prelude::*;

use super::DenseFormat;
use crate::kernels::bf16::{self, Bf16Isa, PackedBf16};
use crate::kernels::int8::{self, Int8Isa, PackedInt8, QuantizedRows};
use crate::kernels::{self, Isa};
use crate::weights::Tensors;

/// A dense layer with its weight transposed to [in, out], the layout the
/// GEMM reads fastest, or packed in a [`DenseFormat`] (then `w` is empty).
pub(crate) struct Linear {
    /// [inputs, outputs], row-major; empty once packed.
    pub w: Vec<f32>,
    /// [outputs]; empty for a layer without bias.
    pub b: Vec<f32>,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// The packed weight, when the layer runs a reduced-precision GEMM.
    pub packed: Option<PackedWeight>,
}

/// A weight packed for a reduced-precision GEMM, with the detected CPU
/// support that GEMM runs on.
pub(crate) enum PackedWeight {
    /// See [`crate::kernels::bf16`].
    Bf16(Bf16Isa, PackedBf16),
    /// See [`crate::kernels::int8`].
    Int8(Int8Isa, PackedInt8),
}

/// Where a packed GEMM puts its converted activations; one per model
/// scratchpad, reused from layer to layer.
#[derive(Default)]
pub(crate) struct Staging {
    bf16: Vec<u16>,
    int8: QuantizedRows,
}

impl Linear {
    /// One projection computing `q`, `k` and `v` at once (columns q, then
    /// k, then v, as `attention` reads them), with `q` scaled by `q_scale`
    /// (the attention's 1/sqrt(head_dim), folded in at load). All three
    /// take the same inputs.
    pub(crate) fn fused_qkv(mut q: Linear, k: Linear, v: Linear, q_scale: f32) -> Linear {
        q.w.iter_mut().chain(&mut q.b).for_each(|x| *x *= q_scale);
        Linear::side_by_side(&[q, k, v])
    }

    /// One layer computing `parts` at once: their columns side by side, in
    /// order, for the same inputs ([inputs, Σ outputs]). A part without a
    /// bias gets zeros beside the others' biases; no bias when none has one.
    pub(crate) fn side_by_side(parts: &[Linear]) -> Linear {
        let inputs = parts.first().map_or(0, |p| p.inputs);
        assert!(
            parts.iter().all(|p| p.inputs == inputs && p.packed.is_none()),
            "Linear::side_by_side: parts differ in inputs or are packed"
        );
        let outputs = parts.iter().map(|p| p.outputs).sum();
        let mut w = Vec::with_capacity(inputs * outputs);
        for r in 0..inputs {
            for p in parts {
                w.extend_from_slice(&p.w[r * p.outputs..(r + 1) * p.outputs]);
            }
        }
        let b = if parts.iter().all(|p| p.b.is_empty()) {
            Vec::new()
        } else {
            parts
                .iter()
                .flat_map(|p| {
                    if p.b.is_empty() {
                        vec![0.0; p.outputs]
                    } else {
                        p.b.clone()
                    }
                })
                .collect()
        };
        Linear {
            w,
            b,
            inputs,
            outputs,
            packed: None,
        }
    }

    /// `out[T, outputs] = x[T, inputs] · W`, added to `out`'s contents when
    /// `accumulate` (the bias is not applied here). A packed GEMM converts
    /// `x` into `staged` first.
    pub fn matmul(
        &self,
        x: &[f32],
        out: &mut [f32],
        accumulate: bool,
        par: Parallelism,
        staged: &mut Staging,
    ) {
        let rows = x.len() / self.inputs;
        assert!(
            x.len() == rows * self.inputs && out.len() == rows * self.outputs,
            "Linear::matmul: {} inputs and {} outputs are not {rows} rows of [{}, {}]",
            x.len(),
            out.len(),
            self.inputs,
            self.outputs
        );
        let threads = match par {
            Parallelism::Rayon(n) => n,
            _ => 1,
        };
        match &self.packed {
            Some(PackedWeight::Bf16(isa, packed)) => {
                bf16::pack_rows(*isa, x, self.inputs, &mut staged.bf16);
                bf16::gemm(*isa, &staged.bf16, rows, packed, out, accumulate, threads);
                return;
            }
            Some(PackedWeight::Int8(isa, packed)) => {
                int8::quantize_rows(*isa, x, self.inputs, &mut staged.int8);
                int8::gemm(*isa, &staged.int8, rows, packed, out, accumulate, threads);
                return;
            }
            None => {}
        }
        assert_eq!(
            self.w.len(),
            self.inputs * self.outputs,
            "Linear::matmul: weight not loaded"
        );
        // SAFETY: x holds rows·inputs floats, out rows·outputs, w
        // inputs·outputs (checked at load); all row-major and contiguous.
        unsafe {
            gemm::gemm(
                rows,
                self.outputs,
                self.inputs,
                out.as_mut_ptr(),
                1,
                self.outputs as isize,
                accumulate,
                x.as_ptr(),
                1,
                self.inputs as isize,
                self.w.as_ptr(),
                1,
                self.outputs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }
}

impl Linear {
    /// Loads `{name}.weight` ([outputs, inputs] as PyTorch stores it) and,
    /// when `bias`, `{name}.bias`, transposing the weight for the GEMM.
    pub fn load(
        t: &Tensors<'_>,
        name: &str,
        inputs: usize,
        outputs: usize,
        bias: bool,
    ) -> Result<Self, EmbedError> {
        let w = t.get(&format!("{name}.weight"), &[outputs, inputs])?;
        let b = if bias {
            t.get(&format!("{name}.bias"), &[outputs])?
        } else {
            Vec::new()
        };
        Ok(Linear {
            w: transpose(&w, outputs, inputs),
            b,
            inputs,
            outputs,
            packed: None,
        })
    }

    /// Packs the weight in `format` and drops the f32 copy (once: a packed
    /// layer keeps its first format). A layer too wide for exact int8 sums
    /// (over [`int8::MAX_INPUTS`] inputs, which no released model has)
    /// stays f32.
    pub fn pack(&mut self, format: DenseFormat) {
        let too_wide = matches!(format, DenseFormat::Int8(_)) && self.inputs > int8::MAX_INPUTS;
        if self.packed.is_none() && !too_wide {
            let (k, n) = (self.inputs, self.outputs);
            self.packed = Some(match format {
                DenseFormat::Bf16(isa) => PackedWeight::Bf16(isa, PackedBf16::pack(&self.w, k, n)),
                DenseFormat::Int8(isa) => PackedWeight::Int8(isa, PackedInt8::pack(&self.w, k, n)),
            });
            self.w = Vec::new();
        }
    }

    /// The format the layer runs in; `None`: f32.
    pub fn format(&self) -> Option<DenseFormat> {
        match &self.packed {
            Some(PackedWeight::Bf16(isa, _)) => Some(DenseFormat::Bf16(*isa)),
            Some(PackedWeight::Int8(isa, _)) => Some(DenseFormat::Int8(*isa)),
            None => None,
        }
    }
}

/// LayerNorm's scale and shift.
pub(crate) struct LayerNorm {
    /// Scale, [hidden].
    pub gamma: Vec<f32>,
    /// Shift, [hidden].
    pub beta: Vec<f32>,
}

impl LayerNorm {
    /// Loads `{name}.weight` and, when `bias`, `{name}.bias` ([width]
    /// each); without a bias the shift is zero.
    pub fn load(t: &Tensors<'_>, name: &str, width: usize, bias: bool) -> Result<Self, EmbedError> {
        Ok(LayerNorm {
            gamma: t.get(&format!("{name}.weight"), &[width])?,
            beta: if bias {
                t.get(&format!("{name}.bias"), &[width])?
            } else {
                vec![0.0; width]
            },
        })
    }
}

/// Grows `v` to at least `len` elements (zeros), never shrinks it.
pub(crate) fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// `w` ([rows, cols], row-major) transposed to [cols, rows].
pub(crate) fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    // Bands of 32 output rows, one rayon task each, filled 32 input rows at
    // a time so the strided writes stay in cache.
    const BAND: usize = 32;
    assert_eq!(
        w.len(),
        rows * cols,
        "transpose: {} values are not [{rows}, {cols}]",
        w.len()
    );
    let mut t = vec![0.0; w.len()];
    if rows == 0 || cols == 0 {
        return t;
    }
    t.par_chunks_mut(BAND * rows).enumerate().for_each(|(band, out)| {
        let first = band * BAND;
        let width = out.len() / rows;
        for block in (0..rows).step_by(BAND) {
            for r in block..(block + BAND).min(rows) {
                let src = &w[r * cols + first..r * cols + first + width];
                for (dc, &x) in src.iter().enumerate() {
                    out[dc * rows + r] = x;
                }
            }
        }
    });
    t
}

/// The GEMM parallelism for `threads` workers.
pub(crate) fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// Checks a packed batch before a forward pass: `cu` starts at 0, never
/// decreases, ends at `ids.len()`; no sequence is longer than `max_tokens`;
/// every id is below `vocab`.
pub(crate) fn check_packed(
    ids: &[u32],
    cu: &[u32],
    max_tokens: usize,
    vocab: usize,
) -> Result<(), EmbedError> {
    for w in cu.windows(2) {
        let len = w[1]
            .checked_sub(w[0])
            .ok_or_else(|| EmbedError::Inference("cu_seq_lengths not increasing".into()))?;
        if len as usize > max_tokens {
            return Err(EmbedError::Inference(format!(
                "a sequence of {len} tokens exceeds the model's {max_tokens} positions"
            )));
        }
    }
    if cu.first() != Some(&0) || cu.last().map(|&l| l as usize) != Some(ids.len()) {
        return Err(EmbedError::Inference(
            "cu_seq_lengths do not cover input_ids".into(),
        ));
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(EmbedError::Inference(format!(
            "token id {bad} outside the vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// Which keys a query token attends to, within its own sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "Causal and Window are for the decoder and local-attention architectures"
)]
pub(crate) enum Mask {
    /// Every token of the sequence (encoders).
    Full,
    /// Tokens up to and including the query (decoders).
    Causal,
    /// Tokens at most this many positions away on either side (local attention).
    Window(usize),
}

impl Mask {
    /// The keys `lo..hi` query `i` of a sequence of `len` tokens sees.
    fn keys(self, i: usize, len: usize) -> (usize, usize) {
        match self {
            Mask::Full => (0, len),
            Mask::Causal => (0, i + 1),
            Mask::Window(w) => (i.saturating_sub(w), (i + w + 1).min(len)),
        }
    }
}

/// Where Q, K and V sit in the projected rows and how wide the heads are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` for ordinary attention; fewer for
    /// grouped-query attention: each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Row stride of the projected buffer (floats per token).
    pub stride: usize,
    /// Column of head 0's query, key and value within a row.
    pub q: usize,
    /// See `q`.
    pub k: usize,
    /// See `q`.
    pub v: usize,
}

/// Adds a bias to a block of one (sequence, head)'s scores before the
/// softmax (relative position biases, ALiBi): called as `bias(head, len,
/// first_row, block)`, `block` holding the score rows `first_row..` (each
/// `len` keys wide) of the sequence's `len × len` matrix.
pub(crate) type ScoreBias<'a> = &'a (dyn Fn(usize, usize, usize, &mut [f32]) + Sync);

/// Most attention scores one worker holds at once (4 MiB of f32): longer
/// sequences are processed in blocks of query rows, so that an 8,192-token
/// sequence needs 4 MiB per worker, not 256 MiB.
const SCORE_BUDGET: usize = 1 << 20;

/// Self-attention of every (sequence, head) pair, in parallel:
/// `ctx = softmax(Q·Kᵀ + bias, masked)·V`, Q already scaled, read straight
/// out of `qkv` ([tokens, shape.stride]); `ctx` is [tokens, heads·head_dim].
/// Masked scores are left out of the softmax (exactly zero weight).
pub(crate) fn attention(
    qkv: &[f32],
    shape: &AttentionShape,
    cu: &[u32],
    mask: Mask,
    bias: Option<ScoreBias<'_>>,
    isa: Isa,
    ctx: &mut [f32],
) {
    attention_in_blocks(qkv, shape, cu, mask, bias, isa, ctx, SCORE_BUDGET);
}

/// [`attention`] with at most `budget` scores (at least one row) per block
/// of query rows.
#[allow(
    clippy::too_many_arguments,
    reason = "attention's arguments plus the block budget"
)]
fn attention_in_blocks(
    qkv: &[f32],
    shape: &AttentionShape,
    cu: &[u32],
    mask: Mask,
    bias: Option<ScoreBias<'_>>,
    isa: Isa,
    ctx: &mut [f32],
    budget: usize,
) {
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: dh,
        stride: ld,
        ..
    } = *shape;
    let width = heads * dh;
    let tokens = cu.last().map_or(0, |&c| c as usize);
    assert!(
        kv_heads > 0
            && heads.is_multiple_of(kv_heads)
            && shape.q + width <= ld
            && shape.k + kv_heads * dh <= ld
            && shape.v + kv_heads * dh <= ld
            && qkv.len() >= tokens * ld
            && ctx.len() >= tokens * width,
        "attention: shape {shape:?} does not fit {} projected and {} context floats for {tokens} tokens",
        qkv.len(),
        ctx.len()
    );
    let group = heads / kv_heads;
    let out = SendPtr(ctx.as_mut_ptr());
    let n_seq = cu.len().saturating_sub(1);
    (0..n_seq * heads).into_par_iter().for_each(|task| {
        let (s, head) = (task / heads, task % heads);
        let start = cu[s] as usize;
        let l = cu[s + 1] as usize - start;
        if l == 0 {
            return;
        }
        let kv = head / group;
        // A masked sequence goes in smaller blocks of query rows, each of
        // which only multiplies the keys some row of it sees (a causal
        // block the keys up to its last row, a window block its rows ± the
        // window): about half the work for causal masks, a fraction for
        // windows much shorter than the sequence. A score bias sees whole
        // rows of keys, so it keeps them all.
        let trim = mask != Mask::Full && bias.is_none();
        let mut block_rows = (budget / l).clamp(1, l);
        if trim {
            block_rows = block_rows.min(MASKED_BLOCK_ROWS);
        }
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            grow(&mut scores, block_rows * l);
            let out = &out;
            for first in (0..l).step_by(block_rows) {
                let rows = block_rows.min(l - first);
                let (klo, khi) = if trim {
                    (mask.keys(first, l).0, mask.keys(first + rows - 1, l).1)
                } else {
                    (0, l)
                };
                let kl = khi - klo;
                let k = qkv[(start + klo) * ld + shape.k + kv * dh..].as_ptr();
                let v = qkv[(start + klo) * ld + shape.v + kv * dh..].as_ptr();
                let q = qkv[(start + first) * ld + shape.q + head * dh..].as_ptr();
                // SAFETY: q addresses rows start+first..start+first+rows,
                // k and v rows start+klo..start+khi (khi <= l) of qkv, with
                // row stride ld and dh columns inside the row (asserted
                // above); scores holds at least rows·kl floats.
                unsafe {
                    gemm::gemm(
                        rows,
                        kl,
                        dh,
                        scores.as_mut_ptr(),
                        1,
                        kl as isize,
                        false,
                        q,
                        1,
                        ld as isize,
                        k,
                        ld as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                let block = &mut scores[..rows * kl];
                if let Some(bias) = bias {
                    bias(head, l, first, block);
                }
                for (i, row) in block.chunks_exact_mut(kl).enumerate() {
                    let (lo, hi) = mask.keys(first + i, l);
                    let (lo, hi) = (lo - klo, hi - klo);
                    kernels::softmax_with(&mut row[lo..hi], isa);
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                }
                // SAFETY: as above for v; the output rows
                // start+first..start+first+rows, columns
                // head·dh..(head+1)·dh of ctx (row stride width) belong to
                // this task alone, so no two tasks write the same float.
                unsafe {
                    gemm::gemm(
                        rows,
                        dh,
                        kl,
                        out.0.add((start + first) * width + head * dh),
                        1,
                        width as isize,
                        false,
                        block.as_ptr(),
                        1,
                        kl as isize,
                        v,
                        1,
                        ld as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
        });
    });
}

/// Query rows per block of a causal or windowed sequence (see
/// [`attention_in_blocks`]).
const MASKED_BLOCK_ROWS: usize = 64;

thread_local! {
    /// Attention scores of one (sequence, head), per worker thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint regions of one buffer to rayon tasks.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Applies `f` to blocks of whole rows in parallel.
pub(crate) fn par_rows(x: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    const ROWS: usize = 32;
    x.par_chunks_mut(width * ROWS).for_each(f);
}

/// Rotary position embeddings (RoPE, the "rotate half" layout of
/// Llama, Qwen, GTE, Nomic and ModernBERT): within each head, value `j` of
/// the first `dim / 2` and value `j` of the second half are rotated
/// together by `position · inv_freq[j]`.
#[derive(Clone, Debug)]
pub(crate) struct Rope {
    /// Rotated width of a head (even, at most the head width).
    dim: usize,
    /// `1 / theta^(2j / dim)`, computed in f32 as transformers does.
    inv_freq: Vec<f32>,
}

/// cos and sin of every (position, frequency) pair, [positions, dim / 2]
/// each, grown on demand by [`Rope::table`].
#[derive(Default)]
pub(crate) struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    positions: usize,
}

impl Rope {
    /// RoPE over the first `dim` values of a head (`dim` even, > 0) with
    /// base `theta`.
    pub fn new(theta: f64, dim: usize) -> Self {
        assert!(
            dim > 0 && dim.is_multiple_of(2),
            "Rope::new: dimension {dim} is not even"
        );
        let inv_freq = (0..dim / 2)
            .map(|j| 1.0 / (theta as f32).powf((2 * j) as f32 / dim as f32))
            .collect();
        Rope { dim, inv_freq }
    }

    /// Fills `table` for positions `0..positions` (kept when already large
    /// enough): the angle `position · inv_freq` is rounded to f32 as in
    /// PyTorch, its cos and sin are taken in f64.
    pub fn table(&self, table: &mut RopeTable, positions: usize) {
        let half = self.dim / 2;
        if table.half == half && table.positions >= positions {
            return;
        }
        table.cos.clear();
        table.sin.clear();
        for p in 0..positions {
            for f in &self.inv_freq {
                let angle = (p as f32 * f) as f64;
                table.cos.push(angle.cos() as f32);
                table.sin.push(angle.sin() as f32);
            }
        }
        table.half = half;
        table.positions = positions;
    }

    /// Rotates the query and key heads of every row of `qkv` (laid out as
    /// `shape` says, which [`attention`] then reads); row `t` is at position
    /// `positions[t]`, which `table` must cover.
    pub fn apply(&self, qkv: &mut [f32], shape: &AttentionShape, positions: &[u32], table: &RopeTable) {
        let half = self.dim / 2;
        let AttentionShape {
            heads,
            kv_heads,
            head_dim,
            stride,
            q,
            k,
            ..
        } = *shape;
        assert!(
            self.dim <= head_dim
                && q + heads * head_dim <= stride
                && k + kv_heads * head_dim <= stride
                && qkv.len() == positions.len() * stride
                && table.half == half
                && positions.iter().all(|&p| (p as usize) < table.positions),
            "Rope::apply: shape {shape:?} with rotated width {} does not fit {} floats of {} rows, \
             or a position is beyond the table's {}",
            self.dim,
            qkv.len(),
            positions.len(),
            table.positions
        );
        const ROWS: usize = 32;
        qkv.par_chunks_mut(stride * ROWS)
            .zip(positions.par_chunks(ROWS))
            .for_each(|(rows, pos)| {
                for (row, &p) in rows.chunks_exact_mut(stride).zip(pos) {
                    let p = p as usize;
                    let cos = &table.cos[p * half..(p + 1) * half];
                    let sin = &table.sin[p * half..(p + 1) * half];
                    for (col, n) in [(q, heads), (k, kv_heads)] {
                        for h in 0..n {
                            let at = col + h * head_dim;
                            let (a, b) = row[at..at + self.dim].split_at_mut(half);
                            for (((a, b), c), s) in a.iter_mut().zip(b).zip(cos).zip(sin) {
                                let (x1, x2) = (*a, *b);
                                *a = x1 * c - x2 * s;
                                *b = x2 * c + x1 * s;
                            }
                        }
                    }
                }
            });
    }
}

/// The position of every token of a packed batch within its sequence;
/// returns the longest sequence's length (how far a RoPE table must reach).
pub(crate) fn positions(cu: &[u32], out: &mut Vec<u32>) -> usize {
    out.clear();
    let mut longest = 0;
    for w in cu.windows(2) {
        let len = w[1].saturating_sub(w[0]);
        out.extend(0..len);
        longest = longest.max(len as usize);
    }
    longest
}

/// RoPE with frequencies computed elsewhere (scaled variants such as GTE's
/// NTK scaling).
impl Rope {
    /// RoPE over the first `2 · inv_freq.len()` values of a head, rotating
    /// pair `j` by `position · inv_freq[j]`.
    pub fn with_inv_freq(inv_freq: Vec<f32>) -> Self {
        assert!(!inv_freq.is_empty(), "Rope::with_inv_freq: no frequencies");
        Rope {
            dim: 2 * inv_freq.len(),
            inv_freq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive attention of one sequence, one head at a time, f64.
    fn reference(qkv: &[f32], s: &AttentionShape, len: usize, mask: Mask) -> Vec<f32> {
        let width = s.heads * s.head_dim;
        let mut ctx = vec![0.0; len * width];
        for head in 0..s.heads {
            let kv = head / (s.heads / s.kv_heads);
            for i in 0..len {
                let (lo, hi) = mask.keys(i, len);
                let dot = |j: usize| -> f64 {
                    (0..s.head_dim)
                        .map(|d| {
                            qkv[i * s.stride + s.q + head * s.head_dim + d] as f64
                                * qkv[j * s.stride + s.k + kv * s.head_dim + d] as f64
                        })
                        .sum()
                };
                let max = (lo..hi).map(dot).fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = (lo..hi).map(|j| (dot(j) - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..s.head_dim {
                    let v: f64 = (lo..hi)
                        .zip(&weights)
                        .map(|(j, w)| w * qkv[j * s.stride + s.v + kv * s.head_dim + d] as f64)
                        .sum();
                    ctx[i * width + head * s.head_dim + d] = (v / total) as f32;
                }
            }
        }
        ctx
    }

    #[test]
    fn grouped_heads_and_masks_match_a_naive_attention() {
        let (heads, kv_heads, dh, len) = (4, 2, 3, 5);
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: dh,
            stride: (heads + 2 * kv_heads) * dh,
            q: 0,
            k: heads * dh,
            v: (heads + kv_heads) * dh,
        };
        let mut seed = 11u32;
        let qkv: Vec<f32> = (0..len * shape.stride)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        for mask in [Mask::Full, Mask::Causal, Mask::Window(1)] {
            let want = reference(&qkv, &shape, len, mask);
            for isa in Isa::available() {
                let mut ctx = vec![f32::NAN; len * heads * dh];
                attention(&qkv, &shape, &[0, len as u32], mask, None, isa, &mut ctx);
                for (a, b) in ctx.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{mask:?} {isa:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn masked_blocks_see_only_their_keys_and_match_a_naive_attention() {
        // Longer than MASKED_BLOCK_ROWS, so causal and window sequences go
        // in several blocks of trimmed keys; a second, shorter sequence
        // checks the offsets within the packed batch.
        let (heads, kv_heads, dh, len) = (2, 1, 4, 2 * MASKED_BLOCK_ROWS + 13);
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: dh,
            stride: (heads + 2 * kv_heads) * dh + 1,
            q: 1,
            k: 1 + heads * dh,
            v: 1 + (heads + kv_heads) * dh,
        };
        let short = 70;
        let mut seed = 7u32;
        let qkv: Vec<f32> = (0..(len + short) * shape.stride)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        let width = heads * dh;
        for mask in [Mask::Causal, Mask::Window(5), Mask::Window(100)] {
            let mut ctx = vec![f32::NAN; (len + short) * width];
            let cu = [0, len as u32, (len + short) as u32];
            attention(&qkv, &shape, &cu, mask, None, Isa::best(), &mut ctx);
            let first = reference(&qkv, &shape, len, mask);
            let second = reference(&qkv[len * shape.stride..], &shape, short, mask);
            for (i, (a, b)) in ctx.iter().zip(first.iter().chain(&second)).enumerate() {
                assert!((a - b).abs() < 1e-5, "{mask:?} value {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_score_bias_is_added_before_the_softmax() {
        let shape = AttentionShape {
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            stride: 3,
            q: 0,
            k: 1,
            v: 2,
        };
        // Zero queries: without a bias both keys weigh 1/2.
        let qkv = [0.0, 0.0, 1.0, 0.0, 0.0, 3.0];
        let bias = |_: usize, l: usize, first: usize, s: &mut [f32]| {
            for i in 0..s.len() / l {
                assert!(first + i < l);
                s[i * l] += 2f32.ln();
            }
        };
        let mut ctx = [0.0; 2];
        attention(
            &qkv,
            &shape,
            &[0, 2],
            Mask::Full,
            Some(&bias),
            Isa::SCALAR,
            &mut ctx,
        );
        // Weights 2/3 and 1/3: 2/3·1 + 1/3·3.
        for c in ctx {
            assert!((c - 5.0 / 3.0).abs() < 1e-6, "{c}");
        }
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        // Rows: [pad, q head 0, q head 1, k head 0, v head 0] of width 4
        // (rotated width 4), stride 22.
        let dim = 4;
        let shape = AttentionShape {
            heads: 2,
            kv_heads: 1,
            head_dim: dim,
            stride: 22,
            q: 2,
            k: 10,
            v: 14,
        };
        let rope = Rope::new(100.0, dim);
        let mut table = RopeTable::default();
        rope.table(&mut table, 3);
        let stride = shape.stride;
        let x: Vec<f32> = (0..3 * stride).map(|i| i as f32 * 0.1 - 1.0).collect();
        let mut got = x.clone();
        let pos = [0, 2, 1];
        rope.apply(&mut got, &shape, &pos, &table);
        for (t, &p) in pos.iter().enumerate() {
            let row = &x[t * stride..(t + 1) * stride];
            let out = &got[t * stride..(t + 1) * stride];
            assert_eq!(&out[..2], &row[..2], "columns before the heads");
            assert_eq!(&out[14..], &row[14..], "values and padding");
            for at in [2, 6, 10] {
                for j in 0..dim / 2 {
                    let theta = p as f64 / 100f64.powf(2.0 * j as f64 / dim as f64);
                    let (a, b) = (row[at + j] as f64, row[at + j + 2] as f64);
                    let want = (
                        a * theta.cos() - b * theta.sin(),
                        b * theta.cos() + a * theta.sin(),
                    );
                    let have = (out[at + j] as f64, out[at + j + 2] as f64);
                    assert!(
                        (have.0 - want.0).abs() < 1e-6 && (have.1 - want.1).abs() < 1e-6,
                        "{t} {at} {j}"
                    );
                }
            }
        }
        let mut p = Vec::new();
        positions(&[0, 2, 2, 5], &mut p);
        assert_eq!(p, [0, 1, 0, 1, 2]);
    }

    #[test]
    fn rope_from_frequencies_matches_rope_from_theta() {
        let a = Rope::new(500.0, 6);
        let b = Rope::with_inv_freq(a.inv_freq.clone());
        assert_eq!(b.dim, 6);
        let (mut ta, mut tb) = (RopeTable::default(), RopeTable::default());
        a.table(&mut ta, 4);
        b.table(&mut tb, 4);
        assert_eq!((ta.cos, ta.sin), (tb.cos, tb.sin));
    }

    #[test]
    fn transpose_moves_every_value_on_every_band_and_tail_shape() {
        for (rows, cols) in [(1, 1), (3, 70), (70, 3), (33, 65), (64, 32), (0, 5)] {
            let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&w, rows, cols);
            assert_eq!(t.len(), w.len());
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], w[r * cols + c], "[{rows}, {cols}] at ({r}, {c})");
                }
            }
        }
    }

    #[test]
    fn row_blocks_give_the_same_attention_as_one_block() {
        let (heads, dh, len) = (2, 4, 37);
        let shape = AttentionShape {
            heads,
            kv_heads: heads,
            head_dim: dh,
            stride: 3 * heads * dh,
            q: 0,
            k: heads * dh,
            v: 2 * heads * dh,
        };
        let mut seed = 5u32;
        let qkv: Vec<f32> = (0..2 * len * shape.stride)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        // A bias that depends on the absolute row and column.
        let bias = |head: usize, l: usize, first: usize, s: &mut [f32]| {
            for (i, row) in s.chunks_exact_mut(l).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v += ((first + i) as f32 - j as f32 + head as f32) * 0.01;
                }
            }
        };
        let cu = [0, len as u32, 2 * len as u32 - 5];
        for mask in [Mask::Full, Mask::Causal, Mask::Window(3)] {
            let mut whole = vec![0.0; 2 * len * heads * dh];
            attention_in_blocks(
                &qkv,
                &shape,
                &cu,
                mask,
                Some(&bias),
                Isa::SCALAR,
                &mut whole,
                len * len,
            );
            for budget in [1, len, 5 * len + 3] {
                let mut blocked = vec![0.0; 2 * len * heads * dh];
                attention_in_blocks(
                    &qkv,
                    &shape,
                    &cu,
                    mask,
                    Some(&bias),
                    Isa::SCALAR,
                    &mut blocked,
                    budget,
                );
                for (a, b) in whole.iter().zip(&blocked) {
                    assert!((a - b).abs() < 1e-6, "{mask:?} budget {budget}: {a} vs {b}");
                }
            }
        }
    }
}
