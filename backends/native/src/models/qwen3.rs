//! Qwen3 decoders as Qwen3-Embedding uses them: pre-norm layers with
//! RMSNorm, grouped-query causal attention whose queries and keys are
//! RMS-normalised per head and rotated (RoPE), and a SwiGLU feed-forward.
//!
//! Per layer: RMSNorm into a side buffer; one fused QKV GEMM; per-head
//! q/k RMSNorm (the 1/√head_dim attention scale folded into q_norm's
//! weight) and RoPE in one pass; causal attention straight out of the QKV
//! buffer; output projection accumulated onto the residual; RMSNorm; one
//! fused gate/up GEMM; SiLU(gate)·up; down projection accumulated onto the
//! residual. A final RMSNorm gives the token vectors. Packed batches need
//! no padding, so the tokenizer's padding side does not matter here.

use papersys_backend_core::EmbedError;
use rayon::prelude::*;
use serde::Deserialize;

use super::layers::{
    AttentionShape, Linear, Mask, Rope, RopeTable, Staging, attention, check_packed, grow, par_rows,
    parallelism, positions,
};
use super::{Architecture, DenseFormat, ModelShape, Scratchpad, TokenModel};
use crate::config::ModelConfig;
use crate::kernels::{self, Isa};
use crate::weights::Tensors;

/// `model_type = "qwen3"`.
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["qwen3"],
    shape,
    load,
};

/// Tensor name prefixes: `Qwen3Model` (Qwen3-Embedding) and `Qwen3For*`.
const PREFIXES: [&str; 2] = ["", "model."];

/// The fields of a Qwen3 `config.json` the forward pass needs.
#[derive(Deserialize)]
struct RawConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    attention_bias: bool,
    /// transformers < 5.
    #[serde(default)]
    rope_theta: Option<f64>,
    /// transformers < 5; only absent, null or the default type.
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    /// transformers >= 5: `{"rope_type": "default", "rope_theta": ...}`.
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

/// Shape and numeric parameters of a Qwen3 model.
#[derive(Clone, Debug, PartialEq)]
struct Qwen3Config {
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
    positions: usize,
    eps: f32,
    bias: bool,
    rope_theta: f64,
}

impl Qwen3Config {
    /// Floats per row of the fused QKV buffer.
    fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}

/// `rope_type` of a RoPE settings object; `default` when absent or null.
fn rope_type(v: &serde_json::Value) -> Option<&str> {
    if v.is_null() {
        return Some("default");
    }
    v.get("rope_type")
        .or_else(|| v.get("type"))
        .map_or(Some("default"), |t| t.as_str())
}

fn config(cfg: &ModelConfig) -> Result<Qwen3Config, EmbedError> {
    let raw: RawConfig = cfg.parse()?;
    let file = cfg.path.display();
    let unsupported = |what: String| EmbedError::Unsupported(format!("{file}: {what}"));
    if raw.hidden_act != "silu" {
        return Err(unsupported(format!(
            "hidden_act {:?} is not supported for qwen3 (supported: \"silu\")",
            raw.hidden_act
        )));
    }
    for rope in [&raw.rope_scaling, &raw.rope_parameters].into_iter().flatten() {
        match rope_type(rope) {
            Some("default") => {}
            other => {
                return Err(unsupported(format!(
                    "RoPE scaling {other:?} ({rope}) is not supported by the native engine \
                     (only unscaled RoPE, rope_type \"default\"); use the remote backend for this model"
                )));
            }
        }
    }
    let sliding = raw.use_sliding_window || raw.layer_types.iter().flatten().any(|t| t != "full_attention");
    if sliding {
        return Err(unsupported(
            "sliding-window attention (use_sliding_window / layer_types) is not supported; \
             only full causal attention"
                .into(),
        ));
    }
    let rope_theta = raw
        .rope_parameters
        .as_ref()
        .and_then(|p| p.get("rope_theta"))
        .and_then(|t| t.as_f64())
        .or(raw.rope_theta)
        .unwrap_or(10_000.0);
    let heads = raw.num_attention_heads;
    let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
    let head_dim = match raw.head_dim {
        Some(d) => d,
        None if heads > 0 => raw.hidden_size / heads,
        None => 0,
    };
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(EmbedError::Load(format!(
            "{file}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        )));
    }
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(EmbedError::Load(format!(
            "{file}: head_dim {head_dim} must be even and positive for RoPE"
        )));
    }
    if raw.max_position_embeddings < 2 || rope_theta.is_nan() || rope_theta <= 0.0 {
        return Err(EmbedError::Load(format!(
            "{file}: max_position_embeddings {} or rope_theta {rope_theta} is not usable",
            raw.max_position_embeddings
        )));
    }
    Ok(Qwen3Config {
        hidden: raw.hidden_size,
        layers: raw.num_hidden_layers,
        heads,
        kv_heads,
        head_dim,
        intermediate: raw.intermediate_size,
        vocab: raw.vocab_size,
        positions: raw.max_position_embeddings,
        eps: raw.rms_norm_eps as f32,
        bias: raw.attention_bias,
        rope_theta,
    })
}

fn shape(cfg: &ModelConfig) -> Result<ModelShape, EmbedError> {
    let c = config(cfg)?;
    Ok(ModelShape {
        hidden: c.hidden,
        max_tokens: c.positions,
    })
}

struct Layer {
    input_norm: Vec<f32>,
    /// Q, K and V side by side: [hidden, qkv_width].
    qkv: Linear,
    /// q_norm's weight times 1/√head_dim (the attention scale).
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    o: Linear,
    post_norm: Vec<f32>,
    /// Gate and up side by side: [hidden, 2·intermediate].
    gate_up: Linear,
    down: Linear,
}

/// Buffers of one forward pass, grown on demand and reused.
#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    positions: Vec<u32>,
    rope: RopeTable,
    /// Activations converted for a packed GEMM.
    staged: Staging,
}

/// A loaded Qwen3 model with its reusable buffers.
pub struct Qwen3 {
    cfg: Qwen3Config,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    rope: Rope,
    isa: Isa,
    scratch: Scratchpad<Scratch>,
}

fn load(cfg: &ModelConfig, t: &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError> {
    let c = config(cfg)?;
    let prefix = t.find_prefix(&PREFIXES, "embed_tokens.weight")?;
    let n = |s: &str| format!("{prefix}{s}");
    let (h, dh) = (c.hidden, c.head_dim);
    let embed = t.get(&n("embed_tokens.weight"), &[c.vocab, h])?;
    let scale = 1.0 / (dh as f32).sqrt();
    let mut layers = Vec::with_capacity(c.layers);
    for i in 0..c.layers {
        let l = |s: &str| n(&format!("layers.{i}.{s}"));
        let linear = |s: &str, inputs: usize, outputs: usize, bias: bool| {
            Linear::load(t, &l(s), inputs, outputs, bias)
        };
        let q = linear("self_attn.q_proj", h, c.heads * dh, c.bias)?;
        let k = linear("self_attn.k_proj", h, c.kv_heads * dh, c.bias)?;
        let v = linear("self_attn.v_proj", h, c.kv_heads * dh, c.bias)?;
        let gate = linear("mlp.gate_proj", h, c.intermediate, false)?;
        let up = linear("mlp.up_proj", h, c.intermediate, false)?;
        let q_norm = t.get(&l("self_attn.q_norm.weight"), &[dh])?;
        layers.push(Layer {
            input_norm: t.get(&l("input_layernorm.weight"), &[h])?,
            qkv: Linear::side_by_side(&[q, k, v]),
            q_norm: q_norm.iter().map(|w| w * scale).collect(),
            k_norm: t.get(&l("self_attn.k_norm.weight"), &[dh])?,
            o: linear("self_attn.o_proj", c.heads * dh, h, c.bias)?,
            post_norm: t.get(&l("post_attention_layernorm.weight"), &[h])?,
            gate_up: Linear::side_by_side(&[gate, up]),
            down: linear("mlp.down_proj", c.intermediate, h, false)?,
        });
    }
    let norm = t.get(&n("norm.weight"), &[h])?;
    Ok(Box::new(Qwen3 {
        rope: Rope::new(c.rope_theta, dh),
        cfg: c,
        embed,
        layers,
        norm,
        isa: Isa::best(),
        scratch: Scratchpad::default(),
    }))
}

impl Qwen3 {
    fn run(&self, ids: &[u32], cu: &[u32], threads: usize, s: &mut Scratch) -> Result<(), EmbedError> {
        let c = &self.cfg;
        let (h, dh) = (c.hidden, c.head_dim);
        let tokens = ids.len();
        let par = parallelism(threads);
        check_packed(ids, cu, c.positions, c.vocab)?;
        let width = c.qkv_width();
        grow(&mut s.hidden, tokens * h);
        grow(&mut s.normed, tokens * h);
        grow(&mut s.qkv, tokens * width);
        grow(&mut s.ctx, tokens * c.heads * dh);
        grow(&mut s.gate_up, tokens * 2 * c.intermediate);
        grow(&mut s.act, tokens * c.intermediate);
        let longest = positions(cu, &mut s.positions);
        self.rope.table(&mut s.rope, longest);
        let Scratch {
            hidden,
            normed,
            qkv,
            ctx,
            gate_up,
            act,
            positions,
            rope,
            staged,
        } = s;
        let hidden = &mut hidden[..tokens * h];
        let normed = &mut normed[..tokens * h];
        let qkv = &mut qkv[..tokens * width];
        let ctx = &mut ctx[..tokens * c.heads * dh];
        let gate_up = &mut gate_up[..tokens * 2 * c.intermediate];
        let act = &mut act[..tokens * c.intermediate];

        for (dst, &id) in hidden.chunks_exact_mut(h).zip(ids) {
            let id = id as usize;
            dst.copy_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        let eps = c.eps;
        let isa = self.isa;
        let rms_into = |src: &[f32], dst: &mut [f32], w: &[f32]| {
            dst.copy_from_slice(src);
            par_rows(dst, h, |rows| kernels::rms_norm_inplace(rows, w, eps));
        };
        let shape = AttentionShape {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: dh,
            stride: width,
            q: 0,
            k: c.heads * dh,
            v: (c.heads + c.kv_heads) * dh,
        };
        for layer in &self.layers {
            rms_into(hidden, normed, &layer.input_norm);
            layer.qkv.matmul(normed, qkv, false, par, staged);
            if !layer.qkv.b.is_empty() {
                par_rows(qkv, width, |rows| kernels::add_bias_inplace(rows, &layer.qkv.b));
            }
            par_rows(qkv, width, |rows| {
                for row in rows.chunks_exact_mut(width) {
                    let (q, rest) = row.split_at_mut(c.heads * dh);
                    kernels::rms_norm_inplace(q, &layer.q_norm, eps);
                    kernels::rms_norm_inplace(&mut rest[..c.kv_heads * dh], &layer.k_norm, eps);
                }
            });
            self.rope.apply(qkv, &shape, positions, rope);
            attention(qkv, &shape, cu, Mask::Causal, None, isa, ctx);
            layer.o.matmul(ctx, hidden, true, par, staged);
            if !layer.o.b.is_empty() {
                par_rows(hidden, h, |rows| kernels::add_bias_inplace(rows, &layer.o.b));
            }
            rms_into(hidden, normed, &layer.post_norm);
            layer.gate_up.matmul(normed, gate_up, false, par, staged);
            let inter = c.intermediate;
            act.par_chunks_mut(inter * 32)
                .zip(gate_up.par_chunks(2 * inter * 32))
                .for_each(|(a, gu)| kernels::silu_mul_with(gu, a, inter, isa));
            layer.down.matmul(act, hidden, true, par, staged);
        }
        par_rows(hidden, h, |rows| kernels::rms_norm_inplace(rows, &self.norm, eps));
        Ok(())
    }
}

impl TokenModel for Qwen3 {
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
