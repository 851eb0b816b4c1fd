//! The post-norm rotary encoder shared by GTE (`NewModel`) and NomicBert,
//! run on packed batches.
//!
//! Word embeddings (a token type row folded in at load) and a LayerNorm, no
//! absolute positions. Per layer: one fused QKV GEMM (Q pre-scaled by
//! 1/√head_dim), rotary positions on Q and K, attention straight out of the
//! QKV buffer, the output projection accumulated onto the residual and a
//! LayerNorm (post-norm, as BERT); then a gated MLP (one GEMM for the gate
//! and up halves, act(gate) · up, the down projection accumulated onto the
//! residual) and a LayerNorm. A bias is added wherever the loaded layer has
//! one. What differs between the architectures is a [`RopeEncoderConfig`]:
//! the activation, the order of the gate and up halves, the LayerNorm
//! epsilon and the RoPE frequencies.

use papersys_backend_core::EmbedError;
use rayon::prelude::*;

use super::layers::{
    AttentionShape, LayerNorm, Linear, Mask, Rope, RopeTable, Staging, attention, check_packed, grow,
    par_rows, parallelism, positions,
};
use super::{DenseFormat, Scratchpad, TokenModel};
use crate::kernels::{self, Isa};

/// The activation of the gate half of the MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact (erf) GELU: GTE's `gelu`.
    Gelu,
    /// SiLU (SwiGLU): NomicBert's `swiglu`.
    Silu,
}

/// Which half of the gate/up GEMM's output the gate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateOrder {
    /// `[up | gate]` (GTE's `up_gate_proj`).
    UpFirst,
    /// `[gate | up]` (NomicBert's fc12, fc11).
    GateFirst,
}

/// What one architecture's config.json says of the encoder, checked by its
/// file.
#[derive(Clone, Debug)]
pub(crate) struct RopeEncoderConfig {
    /// Token vector width.
    pub hidden: usize,
    /// Attention heads (an even head width each).
    pub heads: usize,
    /// Width of each MLP half.
    pub intermediate: usize,
    /// Word embedding rows.
    pub vocab: usize,
    /// Longest sequence accepted.
    pub max_tokens: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// The gate's activation.
    pub activation: Activation,
    /// Where the gate sits in the gate/up GEMM's output.
    pub gate_order: GateOrder,
    /// The rotary embedding of a head.
    pub rope: Rope,
}

/// One layer's weights, transposed for the GEMM; an empty bias is none.
pub(crate) struct RopeLayer {
    /// Q, K and V side by side: [hidden, 3·hidden]. Q is scaled by
    /// 1/√head_dim in [`RopeEncoder::new`].
    pub qkv: Linear,
    /// Attention output projection.
    pub out: Linear,
    /// LayerNorm after attention.
    pub attn_norm: LayerNorm,
    /// Gate and up halves side by side, as [`GateOrder`] says:
    /// [hidden, 2·intermediate].
    pub gate_up: Linear,
    /// MLP down projection.
    pub down: Linear,
    /// LayerNorm after the MLP.
    pub mlp_norm: LayerNorm,
}

/// Buffers of one forward pass, grown on demand and reused.
#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    positions: Vec<u32>,
    rope: RopeTable,
    /// Activations converted for a packed GEMM.
    staged: Staging,
}

/// A loaded rotary encoder with its reusable buffers.
pub(crate) struct RopeEncoder {
    cfg: RopeEncoderConfig,
    /// Word embeddings plus the token type row, [vocab, hidden].
    embed: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<RopeLayer>,
    isa: Isa,
    scratch: Scratchpad<Scratch>,
}

impl RopeEncoder {
    /// The encoder over loaded weights; scales every layer's Q columns (and
    /// bias) by 1/√head_dim, which commutes with RoPE (a linear map).
    pub(crate) fn new(
        cfg: RopeEncoderConfig,
        embed: Vec<f32>,
        emb_norm: LayerNorm,
        mut layers: Vec<RopeLayer>,
    ) -> Self {
        let h = cfg.hidden;
        let scale = 1.0 / ((h / cfg.heads) as f32).sqrt();
        for layer in &mut layers {
            for row in layer.qkv.w.chunks_exact_mut(3 * h) {
                row[..h].iter_mut().for_each(|w| *w *= scale);
            }
            layer.qkv.b.iter_mut().take(h).for_each(|b| *b *= scale);
        }
        RopeEncoder {
            cfg,
            embed,
            emb_norm,
            layers,
            isa: Isa::best(),
            scratch: Scratchpad::default(),
        }
    }

    fn run(&self, ids: &[u32], cu: &[u32], threads: usize, s: &mut Scratch) -> Result<(), EmbedError> {
        let c = &self.cfg;
        let (h, inter) = (c.hidden, c.intermediate);
        let tokens = ids.len();
        let par = parallelism(threads);
        check_packed(ids, cu, c.max_tokens, c.vocab)?;
        grow(&mut s.hidden, tokens * h);
        grow(&mut s.qkv, tokens * 3 * h);
        grow(&mut s.ctx, tokens * h);
        grow(&mut s.gate_up, tokens * 2 * inter);
        grow(&mut s.act, tokens * inter);
        let longest = positions(cu, &mut s.positions);
        c.rope.table(&mut s.rope, longest);
        let Scratch {
            hidden,
            qkv,
            ctx,
            gate_up,
            act,
            positions,
            rope,
            staged,
        } = s;
        let hidden = &mut hidden[..tokens * h];
        let qkv = &mut qkv[..tokens * 3 * h];
        let ctx = &mut ctx[..tokens * h];
        let gate_up = &mut gate_up[..tokens * 2 * inter];
        let act = &mut act[..tokens * inter];

        for (dst, &id) in hidden.chunks_exact_mut(h).zip(ids) {
            let id = id as usize;
            dst.copy_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        let (eps, isa) = (c.eps, self.isa);
        // LayerNorm(x + bias): the bias of the projection just accumulated.
        let layer_norm = |x: &mut [f32], bias: &[f32], n: &LayerNorm| {
            let bias = (!bias.is_empty()).then_some(bias);
            par_rows(x, h, |rows| {
                kernels::layer_norm_with(rows, bias, &n.gamma, &n.beta, eps, isa)
            });
        };
        layer_norm(hidden, &[], &self.emb_norm);
        let shape = AttentionShape {
            heads: c.heads,
            kv_heads: c.heads,
            head_dim: h / c.heads,
            stride: 3 * h,
            q: 0,
            k: h,
            v: 2 * h,
        };
        for layer in &self.layers {
            layer.qkv.matmul(hidden, qkv, false, par, staged);
            if !layer.qkv.b.is_empty() {
                par_rows(qkv, 3 * h, |rows| kernels::add_bias_inplace(rows, &layer.qkv.b));
            }
            c.rope.apply(qkv, &shape, positions, rope);
            attention(qkv, &shape, cu, Mask::Full, None, isa, ctx);
            layer.out.matmul(ctx, hidden, true, par, staged);
            layer_norm(hidden, &layer.out.b, &layer.attn_norm);
            layer.gate_up.matmul(hidden, gate_up, false, par, staged);
            if !layer.gate_up.b.is_empty() {
                par_rows(gate_up, 2 * inter, |rows| {
                    kernels::add_bias_inplace(rows, &layer.gate_up.b)
                });
            }
            gated(c.activation, c.gate_order, gate_up, act, inter, isa);
            layer.down.matmul(act, hidden, true, par, staged);
            layer_norm(hidden, &layer.down.b, &layer.mlp_norm);
        }
        Ok(())
    }
}

/// `act(gate) · up` of every row of `gate_up` (`2·width` values, halves as
/// `order` says) into the matching row of `out`; GELU rewrites the gate half
/// in place, SiLU with [`GateOrder::UpFirst`] swaps the halves first.
fn gated(
    activation: Activation,
    order: GateOrder,
    gate_up: &mut [f32],
    out: &mut [f32],
    width: usize,
    isa: Isa,
) {
    match activation {
        Activation::Gelu => {
            let zero_bias = vec![0.0; width];
            gate_up
                .par_chunks_mut(2 * width)
                .zip(out.par_chunks_mut(width))
                .for_each(|(row, out)| {
                    let (first, second) = row.split_at_mut(width);
                    let (up, gate) = match order {
                        GateOrder::UpFirst => (first, second),
                        GateOrder::GateFirst => (second, first),
                    };
                    kernels::bias_gelu_with(gate, &zero_bias, isa);
                    for ((o, u), g) in out.iter_mut().zip(up.iter()).zip(gate.iter()) {
                        *o = g * u;
                    }
                });
        }
        Activation::Silu => {
            if order == GateOrder::UpFirst {
                par_rows(gate_up, 2 * width, |rows| {
                    for row in rows.chunks_exact_mut(2 * width) {
                        let (up, gate) = row.split_at_mut(width);
                        up.swap_with_slice(gate);
                    }
                });
            }
            out.par_chunks_mut(width * 32)
                .zip(gate_up.par_chunks(2 * width * 32))
                .for_each(|(o, gu)| kernels::silu_mul_with(gu, o, width, isa));
        }
    }
}

impl TokenModel for RopeEncoder {
    fn hidden_size(&self) -> usize {
        self.cfg.hidden
    }

    fn forward(
        &self,
        ids: &[u32],
        cu: &[u32],
        threads: usize,
        hidden: &mut Vec<f32>,
    ) -> Result<(), EmbedError> {
        let len = ids.len() * self.cfg.hidden;
        let pass = |s: &mut Scratch| self.run(ids, cu, threads, s);
        self.scratch.forward(len, hidden, pass, |s| &s.hidden)
    }

    fn pack_dense(&mut self, format: DenseFormat) {
        for layer in &mut self.layers {
            for linear in [
                &mut layer.qkv,
                &mut layer.out,
                &mut layer.gate_up,
                &mut layer.down,
            ] {
                linear.pack(format);
            }
        }
    }

    fn dense_format(&self) -> Option<DenseFormat> {
        self.layers.first().and_then(|l| l.qkv.format())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_activation_and_gate_order_gives_act_of_gate_times_up() {
        let width = 5;
        let rows = 40;
        let gate: Vec<f32> = (0..rows * width).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let up: Vec<f32> = (0..rows * width).map(|i| (i as f32 * 0.11).cos()).collect();
        for activation in [Activation::Gelu, Activation::Silu] {
            let act = |x: f32| match activation {
                Activation::Gelu => kernels::gelu_scalar(x),
                Activation::Silu => x / (1.0 + (-x).exp()),
            };
            for order in [GateOrder::UpFirst, GateOrder::GateFirst] {
                for isa in Isa::available() {
                    let mut gate_up = Vec::new();
                    for (g, u) in gate.chunks_exact(width).zip(up.chunks_exact(width)) {
                        let halves = match order {
                            GateOrder::UpFirst => [u, g],
                            GateOrder::GateFirst => [g, u],
                        };
                        gate_up.extend(halves.concat());
                    }
                    let mut out = vec![0.0; rows * width];
                    gated(activation, order, &mut gate_up, &mut out, width, isa);
                    for (i, o) in out.iter().enumerate() {
                        let want = act(gate[i]) * up[i];
                        assert!(
                            (o - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{activation:?} {order:?} {isa:?} [{i}]: {o} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
