//! Gemma 3 text models as EmbeddingGemma uses them (`model_type =
//! "gemma3_text"` with `use_bidirectional_attention`), on packed batches.
//!
//! Embeddings scaled by √hidden; per layer: RMSNorm (weights stored as
//! `w`, applied as `1 + w`), one fused Q/K/V GEMM with grouped-query heads,
//! per-head RMSNorm of Q and K, rotary positions with the theta of the
//! layer's kind, attention scaled by `query_pre_attn_scalar^-1/2` over the
//! whole sequence (full layers) or a symmetric window (sliding layers), a
//! post-attention norm before the residual add, and a gelu-tanh gated MLP
//! between a pre- and a post-feed-forward norm; a final RMSNorm.

use papersys_backend_core::EmbedError;
use rayon::prelude::*;
use serde::Deserialize;

use super::layers::{
    AttentionShape, Linear, Mask, Staging, attention, check_packed, grow, par_rows, parallelism,
};
use super::layers::{Rope, RopeTable, positions};
use super::modernbert::rope_theta;
use super::{Architecture, DenseFormat, ModelShape, Scratchpad, TokenModel};
use crate::config::ModelConfig;
use crate::kernels::{self, Isa};
use crate::weights::Tensors;

/// `model_type = "gemma3_text"`.
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["gemma3_text"],
    shape,
    load,
};

/// Tensor name prefixes: `Gemma3TextModel` and `Gemma3ForCausalLM` (`model.`).
const PREFIXES: [&str; 2] = ["", "model."];

#[derive(Clone, Debug, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    #[serde(default = "default_head_dim")]
    head_dim: usize,
    #[serde(default = "default_act")]
    hidden_activation: String,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default = "default_scalar")]
    query_pre_attn_scalar: f64,
    #[serde(default = "default_window")]
    sliding_window: usize,
    #[serde(default = "default_pattern")]
    sliding_window_pattern: usize,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    use_bidirectional_attention: bool,
}

fn default_head_dim() -> usize {
    256
}
fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_positions() -> usize {
    131_072
}
fn default_eps() -> f64 {
    1e-6
}
fn default_scalar() -> f64 {
    256.0
}
fn default_window() -> usize {
    4096
}
fn default_pattern() -> usize {
    6
}

/// Gemma 3's shape, checked.
#[derive(Clone, Debug, PartialEq)]
struct Gemma3Config {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
    positions: usize,
    eps: f32,
    attention_bias: bool,
    /// Multiplies Q: `query_pre_attn_scalar^-1/2`.
    query_scale: f32,
    /// Per layer: whether it attends globally (else within `window`).
    global: Vec<bool>,
    /// Keys at most this far from the query on sliding layers.
    window: usize,
    global_theta: f64,
    local_theta: f64,
}

fn config(cfg: &ModelConfig) -> Result<Gemma3Config, EmbedError> {
    let raw: RawConfig = cfg.parse()?;
    let file = cfg.path.display();
    if !matches!(raw.hidden_activation.as_str(), "gelu_pytorch_tanh" | "gelu_tanh") {
        return Err(EmbedError::Unsupported(format!(
            "{file}: hidden_activation {:?} is not supported (supported: \"gelu_pytorch_tanh\")",
            raw.hidden_activation
        )));
    }
    if !raw.use_bidirectional_attention {
        return Err(EmbedError::Unsupported(format!(
            "{file}: a Gemma 3 model with causal attention is a text generator; only embedders \
             with use_bidirectional_attention: true (EmbeddingGemma) are supported"
        )));
    }
    if raw.attn_logit_softcapping.is_some() {
        return Err(EmbedError::Unsupported(format!(
            "{file}: attn_logit_softcapping is not supported (EmbeddingGemma has none)"
        )));
    }
    if raw.num_key_value_heads == 0
        || !raw.num_attention_heads.is_multiple_of(raw.num_key_value_heads)
        || raw.head_dim == 0
        || !raw.head_dim.is_multiple_of(2)
    {
        return Err(EmbedError::Load(format!(
            "{file}: num_attention_heads {} is not a multiple of num_key_value_heads {}, or head_dim {} is not even",
            raw.num_attention_heads, raw.num_key_value_heads, raw.head_dim
        )));
    }
    if raw.query_pre_attn_scalar <= 0.0 {
        return Err(EmbedError::Load(format!(
            "{file}: query_pre_attn_scalar {} is not positive",
            raw.query_pre_attn_scalar
        )));
    }
    let global = match &raw.layer_types {
        Some(types) => {
            if types.len() != raw.num_hidden_layers {
                return Err(EmbedError::Load(format!(
                    "{file}: layer_types has {} entries for {} layers",
                    types.len(),
                    raw.num_hidden_layers
                )));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "full_attention" => Ok(true),
                    "sliding_attention" => Ok(false),
                    other => Err(EmbedError::Unsupported(format!(
                        "{file}: layer type {other:?} is not supported (supported: full_attention, sliding_attention)"
                    ))),
                })
                .collect::<Result<_, _>>()?
        }
        None => {
            if raw.sliding_window_pattern == 0 {
                return Err(EmbedError::Load(format!("{file}: sliding_window_pattern is 0")));
            }
            (0..raw.num_hidden_layers)
                .map(|i| (i + 1).is_multiple_of(raw.sliding_window_pattern))
                .collect()
        }
    };
    let params = raw.rope_parameters.as_ref();
    Ok(Gemma3Config {
        hidden: raw.hidden_size,
        heads: raw.num_attention_heads,
        kv_heads: raw.num_key_value_heads,
        head_dim: raw.head_dim,
        intermediate: raw.intermediate_size,
        vocab: raw.vocab_size,
        positions: raw.max_position_embeddings,
        eps: raw.rms_norm_eps as f32,
        attention_bias: raw.attention_bias,
        query_scale: raw.query_pre_attn_scalar.powf(-0.5) as f32,
        global,
        // transformers keeps `sliding_window / 2 + 1` as an exclusive bound
        // on |query − key| when attention is bidirectional.
        window: raw.sliding_window / 2,
        global_theta: rope_theta(
            params,
            "full_attention",
            raw.rope_theta.unwrap_or(1_000_000.0),
            cfg,
        )?,
        local_theta: rope_theta(
            params,
            "sliding_attention",
            raw.rope_local_base_freq.unwrap_or(10_000.0),
            cfg,
        )?,
    })
}

fn shape(cfg: &ModelConfig) -> Result<ModelShape, EmbedError> {
    let c = config(cfg)?;
    Ok(ModelShape {
        hidden: c.hidden,
        max_tokens: c.positions,
    })
}

fn load(cfg: &ModelConfig, tensors: &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError> {
    let prefix = tensors.find_prefix(&PREFIXES, "embed_tokens.weight")?;
    Ok(Box::new(Gemma3::load(tensors, &prefix, config(cfg)?)?))
}

/// RMSNorm of every row of `gain.len()` values: `x / rms(x) · gain`.
fn rms_norm(x: &mut [f32], gain: &[f32], eps: f32) {
    let n = gain.len();
    for row in x.chunks_exact_mut(n) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let r = 1.0 / (ms + eps).sqrt();
        row.iter_mut().zip(gain).for_each(|(v, g)| *v = *v * r * g);
    }
}

struct Layer {
    /// `1 + w` of each norm.
    input_norm: Vec<f32>,
    post_attn_norm: Vec<f32>,
    pre_ff_norm: Vec<f32>,
    post_ff_norm: Vec<f32>,
    /// `(1 + w) · query_scale`, [head_dim].
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    /// Q, K, V side by side: [hidden, (heads + 2·kv_heads)·head_dim].
    qkv: Linear,
    o: Linear,
    /// Gate and up side by side: [hidden, 2·intermediate].
    gate_up: Linear,
    down: Linear,
    global: bool,
}

#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    wide: Vec<f32>,
    inter: Vec<f32>,
    /// Activations converted for a packed GEMM.
    staged: Staging,
    pos: Vec<u32>,
    global_table: RopeTable,
    local_table: RopeTable,
}

/// A loaded Gemma 3 text model with its reusable buffers.
struct Gemma3 {
    cfg: Gemma3Config,
    word: Vec<f32>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    global_rope: Rope,
    local_rope: Rope,
    isa: Isa,
    scratch: Scratchpad<Scratch>,
}

impl Gemma3 {
    fn load(t: &Tensors<'_>, prefix: &str, cfg: Gemma3Config) -> Result<Self, EmbedError> {
        let (h, dh) = (cfg.hidden, cfg.head_dim);
        let n = |s: &str| format!("{prefix}{s}");
        let norm = |name: &str, width: usize, scale: f32| -> Result<Vec<f32>, EmbedError> {
            Ok(t.get(&format!("{name}.weight"), &[width])?
                .into_iter()
                .map(|w| (1.0 + w) * scale)
                .collect())
        };
        let mut word = t.get(&n("embed_tokens.weight"), &[cfg.vocab, h])?;
        let scale = (h as f64).sqrt() as f32;
        word.iter_mut().for_each(|w| *w *= scale);
        let mut layers = Vec::with_capacity(cfg.global.len());
        let (q_out, kv_out) = (cfg.heads * dh, cfg.kv_heads * dh);
        for (i, &global) in cfg.global.iter().enumerate() {
            let l = |s: &str| n(&format!("layers.{i}.{s}"));
            let bias = cfg.attention_bias;
            let qkv = Linear::side_by_side(&[
                Linear::load(t, &l("self_attn.q_proj"), h, q_out, bias)?,
                Linear::load(t, &l("self_attn.k_proj"), h, kv_out, bias)?,
                Linear::load(t, &l("self_attn.v_proj"), h, kv_out, bias)?,
            ]);
            let gate_up = Linear::side_by_side(&[
                Linear::load(t, &l("mlp.gate_proj"), h, cfg.intermediate, false)?,
                Linear::load(t, &l("mlp.up_proj"), h, cfg.intermediate, false)?,
            ]);
            layers.push(Layer {
                input_norm: norm(&l("input_layernorm"), h, 1.0)?,
                post_attn_norm: norm(&l("post_attention_layernorm"), h, 1.0)?,
                pre_ff_norm: norm(&l("pre_feedforward_layernorm"), h, 1.0)?,
                post_ff_norm: norm(&l("post_feedforward_layernorm"), h, 1.0)?,
                q_norm: norm(&l("self_attn.q_norm"), dh, cfg.query_scale)?,
                k_norm: norm(&l("self_attn.k_norm"), dh, 1.0)?,
                qkv,
                o: Linear::load(t, &l("self_attn.o_proj"), q_out, h, bias)?,
                gate_up,
                down: Linear::load(t, &l("mlp.down_proj"), cfg.intermediate, h, false)?,
                global,
            });
        }
        let final_norm = norm(&n("norm"), h, 1.0)?;
        Ok(Gemma3 {
            global_rope: Rope::new(cfg.global_theta, dh),
            local_rope: Rope::new(cfg.local_theta, dh),
            cfg,
            word,
            layers,
            final_norm,
            isa: Isa::best(),
            scratch: Scratchpad::default(),
        })
    }

    fn run(&self, ids: &[u32], cu: &[u32], threads: usize, s: &mut Scratch) -> Result<(), EmbedError> {
        let cfg = &self.cfg;
        let (h, dh, iw) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
        let (q_out, kv_out) = (cfg.heads * dh, cfg.kv_heads * dh);
        let stride = q_out + 2 * kv_out;
        let tokens = ids.len();
        let par = parallelism(threads);
        check_packed(ids, cu, cfg.positions, cfg.vocab)?;
        grow(&mut s.hidden, tokens * h);
        grow(&mut s.normed, tokens * h);
        grow(&mut s.qkv, tokens * stride);
        grow(&mut s.ctx, tokens * q_out);
        grow(&mut s.wide, tokens * 2 * iw);
        grow(&mut s.inter, tokens * iw);
        let longest = positions(cu, &mut s.pos);
        self.global_rope.table(&mut s.global_table, longest);
        self.local_rope.table(&mut s.local_table, longest);
        let Scratch {
            hidden,
            normed,
            qkv,
            ctx,
            wide,
            inter,
            staged,
            pos,
            global_table,
            local_table,
        } = s;
        let hidden = &mut hidden[..tokens * h];
        let normed = &mut normed[..tokens * h];
        let qkv = &mut qkv[..tokens * stride];
        let ctx = &mut ctx[..tokens * q_out];
        let wide = &mut wide[..tokens * 2 * iw];
        let inter = &mut inter[..tokens * iw];
        let eps = cfg.eps;
        let isa = self.isa;

        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            hidden[t * h..(t + 1) * h].copy_from_slice(&self.word[id * h..(id + 1) * h]);
        }
        let shape = AttentionShape {
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: dh,
            stride,
            q: 0,
            k: q_out,
            v: q_out + kv_out,
        };
        let add_residual = |hidden: &mut [f32], delta: &[f32]| {
            hidden
                .par_chunks_mut(h)
                .zip(delta.par_chunks(h))
                .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
        };
        for layer in &self.layers {
            normed.copy_from_slice(hidden);
            par_rows(normed, h, |rows| rms_norm(rows, &layer.input_norm, eps));
            layer.qkv.matmul(normed, qkv, false, par, staged);
            qkv.par_chunks_mut(stride).for_each(|row| {
                if !layer.qkv.b.is_empty() {
                    row.iter_mut().zip(&layer.qkv.b).for_each(|(v, b)| *v += b);
                }
                rms_norm(&mut row[..q_out], &layer.q_norm, eps);
                rms_norm(&mut row[q_out..q_out + kv_out], &layer.k_norm, eps);
            });
            let (rope, table, mask) = if layer.global {
                (&self.global_rope, &*global_table, Mask::Full)
            } else {
                (&self.local_rope, &*local_table, Mask::Window(cfg.window))
            };
            rope.apply(qkv, &shape, pos, table);
            attention(qkv, &shape, cu, mask, None, isa, ctx);
            // `normed` now takes the attention output, normed, then added.
            layer.o.matmul(ctx, normed, false, par, staged);
            par_rows(normed, h, |rows| {
                if !layer.o.b.is_empty() {
                    rows.chunks_exact_mut(h)
                        .for_each(|r| r.iter_mut().zip(&layer.o.b).for_each(|(v, b)| *v += b));
                }
                rms_norm(rows, &layer.post_attn_norm, eps)
            });
            add_residual(hidden, normed);
            normed.copy_from_slice(hidden);
            par_rows(normed, h, |rows| rms_norm(rows, &layer.pre_ff_norm, eps));
            layer.gate_up.matmul(normed, wide, false, par, staged);
            wide.par_chunks(2 * iw * 32)
                .zip(inter.par_chunks_mut(iw * 32))
                .for_each(|(w, out)| kernels::gelu_tanh_mul_with(w, out, iw, isa));
            layer.down.matmul(inter, normed, false, par, staged);
            par_rows(normed, h, |rows| rms_norm(rows, &layer.post_ff_norm, eps));
            add_residual(hidden, normed);
        }
        par_rows(hidden, h, |rows| rms_norm(rows, &self.final_norm, eps));
        Ok(())
    }
}

impl TokenModel for Gemma3 {
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
            for linear in [&mut layer.qkv, &mut layer.o, &mut layer.gate_up, &mut layer.down] {
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
    fn rms_norm_divides_by_the_root_mean_square() {
        let mut x = [3.0, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        // The root mean square of (3, 4) is √12.5.
        assert!((x[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
        assert!((x[1] - 8.0 / 12.5f32.sqrt()).abs() < 1e-6);
    }
}
