//! ModernBERT (`model_type = "modernbert"`): gte-modernbert, modernbert-embed
//! and the other ModernBERT-based embedders, on packed batches.
//!
//! Pre-norm layers (LayerNorm, optionally without bias; none before the first
//! layer's attention), one fused Wqkv GEMM, rotary positions with a different
//! theta on global and local layers, local layers seeing only tokens at most
//! `local_attention / 2` positions away, a GeGLU MLP (`Wi` → gelu(input) ·
//! gate → `Wo`) and a final LayerNorm.

use papersys_backend_core::EmbedError;
use rayon::prelude::*;
use serde::Deserialize;

use super::layers::{
    AttentionShape, LayerNorm, Linear, Mask, Rope, RopeTable, Staging, attention, check_packed, grow,
    par_rows, parallelism, positions,
};
use super::{Architecture, DenseFormat, ModelShape, Scratchpad, TokenModel};
use crate::config::ModelConfig;
use crate::kernels::{self, Isa};
use crate::weights::Tensors;

/// `model_type = "modernbert"`.
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["modernbert"],
    shape,
    load,
};

/// Tensor name prefixes: `ModernBertModel` and `ModernBertFor*` (`model.`).
const PREFIXES: [&str; 2] = ["", "model."];

/// The `config.json` fields ModernBERT needs. Both the transformers 4
/// names (`global_attn_every_n_layers`, `global_rope_theta`,
/// `local_rope_theta`) and the transformers 5 ones (`layer_types`,
/// `rope_parameters`) are read.
#[derive(Clone, Debug, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_act")]
    hidden_activation: String,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    norm_eps: f64,
    #[serde(default)]
    norm_bias: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_local")]
    local_attention: usize,
    #[serde(default = "default_every")]
    global_attn_every_n_layers: usize,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    global_rope_theta: Option<f64>,
    #[serde(default)]
    local_rope_theta: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    8192
}
fn default_eps() -> f64 {
    1e-5
}
fn default_local() -> usize {
    128
}
fn default_every() -> usize {
    3
}

/// Reads `rope_parameters[layer_type]`: its `rope_theta`, or `fallback`;
/// any `rope_type` but `default` is an error.
pub(crate) fn rope_theta(
    params: Option<&serde_json::Value>,
    layer_type: &str,
    fallback: f64,
    cfg: &ModelConfig,
) -> Result<f64, EmbedError> {
    let Some(p) = params.and_then(|p| p.get(layer_type)).filter(|p| !p.is_null()) else {
        return Ok(fallback);
    };
    let kind = p.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default");
    if kind != "default" {
        return Err(EmbedError::Unsupported(format!(
            "{}: rope_parameters.{layer_type}.rope_type {kind:?} is not supported (supported: \"default\")",
            cfg.path.display()
        )));
    }
    Ok(p.get("rope_theta").and_then(|v| v.as_f64()).unwrap_or(fallback))
}

/// ModernBERT's shape, checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ModernBertConfig {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    positions: usize,
    eps: f32,
    norm_bias: bool,
    attention_bias: bool,
    mlp_bias: bool,
    /// Per layer: whether it attends globally (else within `window`).
    global: Vec<bool>,
    /// Half the local window: keys at most this far from the query.
    window: usize,
    global_theta: f64,
    local_theta: f64,
}

fn config(cfg: &ModelConfig) -> Result<ModernBertConfig, EmbedError> {
    let raw: RawConfig = cfg.parse()?;
    let file = cfg.path.display();
    if raw.hidden_activation != "gelu" {
        return Err(EmbedError::Unsupported(format!(
            "{file}: hidden_activation {:?} is not supported (supported: \"gelu\")",
            raw.hidden_activation
        )));
    }
    if raw.num_attention_heads == 0
        || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        || !(raw.hidden_size / raw.num_attention_heads).is_multiple_of(2)
    {
        return Err(EmbedError::Load(format!(
            "{file}: hidden_size {} is not an even head width times num_attention_heads {}",
            raw.hidden_size, raw.num_attention_heads
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
            if raw.global_attn_every_n_layers == 0 {
                return Err(EmbedError::Load(format!(
                    "{file}: global_attn_every_n_layers is 0"
                )));
            }
            (0..raw.num_hidden_layers)
                .map(|i| i.is_multiple_of(raw.global_attn_every_n_layers))
                .collect()
        }
    };
    let params = raw.rope_parameters.as_ref();
    Ok(ModernBertConfig {
        hidden: raw.hidden_size,
        heads: raw.num_attention_heads,
        intermediate: raw.intermediate_size,
        vocab: raw.vocab_size,
        positions: raw.max_position_embeddings,
        eps: raw.norm_eps as f32,
        norm_bias: raw.norm_bias,
        attention_bias: raw.attention_bias,
        mlp_bias: raw.mlp_bias,
        global,
        window: raw.local_attention / 2,
        global_theta: rope_theta(
            params,
            "full_attention",
            raw.global_rope_theta.unwrap_or(160_000.0),
            cfg,
        )?,
        local_theta: rope_theta(
            params,
            "sliding_attention",
            raw.local_rope_theta.unwrap_or(10_000.0),
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
    let prefix = tensors.find_prefix(&PREFIXES, "embeddings.tok_embeddings.weight")?;
    Ok(Box::new(ModernBert::load(tensors, &prefix, config(cfg)?)?))
}

struct Layer {
    /// `None` for the first layer (its attention reads the embeddings).
    attn_norm: Option<LayerNorm>,
    /// Q (pre-scaled by 1/√head_dim), K, V side by side: [hidden, 3·hidden].
    wqkv: Linear,
    wo: Linear,
    mlp_norm: LayerNorm,
    /// Input and gate halves side by side: [hidden, 2·intermediate].
    wi: Linear,
    mlp_out: Linear,
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

/// A loaded ModernBERT with its reusable buffers.
pub(crate) struct ModernBert {
    cfg: ModernBertConfig,
    word: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    global_rope: Rope,
    local_rope: Rope,
    isa: Isa,
    scratch: Scratchpad<Scratch>,
}

impl ModernBert {
    fn load(t: &Tensors<'_>, prefix: &str, cfg: ModernBertConfig) -> Result<Self, EmbedError> {
        let h = cfg.hidden;
        let n = |s: &str| format!("{prefix}{s}");
        let word = t.get(&n("embeddings.tok_embeddings.weight"), &[cfg.vocab, h])?;
        let emb_norm = LayerNorm::load(t, &n("embeddings.norm"), h, cfg.norm_bias)?;
        let scale = 1.0 / ((h / cfg.heads) as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.global.len());
        for (i, &global) in cfg.global.iter().enumerate() {
            let l = |s: &str| n(&format!("layers.{i}.{s}"));
            let mut wqkv = Linear::load(t, &l("attn.Wqkv"), h, 3 * h, cfg.attention_bias)?;
            // Scaling Q before the rotation is the same as after: RoPE is linear.
            for row in wqkv.w.chunks_exact_mut(3 * h) {
                row[..h].iter_mut().for_each(|w| *w *= scale);
            }
            wqkv.b.iter_mut().take(h).for_each(|b| *b *= scale);
            layers.push(Layer {
                attn_norm: if i == 0 {
                    None
                } else {
                    Some(LayerNorm::load(t, &l("attn_norm"), h, cfg.norm_bias)?)
                },
                wqkv,
                wo: Linear::load(t, &l("attn.Wo"), h, h, cfg.attention_bias)?,
                mlp_norm: LayerNorm::load(t, &l("mlp_norm"), h, cfg.norm_bias)?,
                wi: Linear::load(t, &l("mlp.Wi"), h, 2 * cfg.intermediate, cfg.mlp_bias)?,
                mlp_out: Linear::load(t, &l("mlp.Wo"), cfg.intermediate, h, cfg.mlp_bias)?,
                global,
            });
        }
        let final_norm = LayerNorm::load(t, &n("final_norm"), h, cfg.norm_bias)?;
        let dh = h / cfg.heads;
        Ok(ModernBert {
            global_rope: Rope::new(cfg.global_theta, dh),
            local_rope: Rope::new(cfg.local_theta, dh),
            cfg,
            word,
            emb_norm,
            layers,
            final_norm,
            isa: Isa::best(),
            scratch: Scratchpad::default(),
        })
    }

    fn run(&self, ids: &[u32], cu: &[u32], threads: usize, s: &mut Scratch) -> Result<(), EmbedError> {
        let cfg = &self.cfg;
        let (h, inter_w) = (cfg.hidden, cfg.intermediate);
        let tokens = ids.len();
        let par = parallelism(threads);
        check_packed(ids, cu, cfg.positions, cfg.vocab)?;
        grow(&mut s.hidden, tokens * h);
        grow(&mut s.normed, tokens * h);
        grow(&mut s.qkv, tokens * 3 * h);
        grow(&mut s.ctx, tokens * h);
        grow(&mut s.wide, tokens * 2 * inter_w);
        grow(&mut s.inter, tokens * inter_w);
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
        let qkv = &mut qkv[..tokens * 3 * h];
        let ctx = &mut ctx[..tokens * h];
        let wide = &mut wide[..tokens * 2 * inter_w];
        let inter = &mut inter[..tokens * inter_w];
        let (eps, isa) = (cfg.eps, self.isa);
        let norm_into = |src: &[f32], dst: &mut [f32], n: &LayerNorm| {
            dst.copy_from_slice(src);
            par_rows(dst, h, |rows| {
                kernels::layer_norm_with(rows, None, &n.gamma, &n.beta, eps, isa)
            });
        };
        let add_bias = |x: &mut [f32], l: &Linear| {
            if !l.b.is_empty() {
                let width = l.b.len();
                par_rows(x, width, |rows| kernels::add_bias_inplace(rows, &l.b));
            }
        };

        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            hidden[t * h..(t + 1) * h].copy_from_slice(&self.word[id * h..(id + 1) * h]);
        }
        par_rows(hidden, h, |rows| {
            kernels::layer_norm_with(rows, None, &self.emb_norm.gamma, &self.emb_norm.beta, eps, isa)
        });
        let dh = h / cfg.heads;
        let shape = AttentionShape {
            heads: cfg.heads,
            kv_heads: cfg.heads,
            head_dim: dh,
            stride: 3 * h,
            q: 0,
            k: h,
            v: 2 * h,
        };
        let zero_bias = vec![0.0; inter_w];
        for layer in &self.layers {
            match &layer.attn_norm {
                Some(n) => norm_into(hidden, normed, n),
                None => normed.copy_from_slice(hidden),
            }
            layer.wqkv.matmul(normed, qkv, false, par, staged);
            add_bias(qkv, &layer.wqkv);
            let (rope, table, mask) = if layer.global {
                (&self.global_rope, &*global_table, Mask::Full)
            } else {
                (&self.local_rope, &*local_table, Mask::Window(cfg.window))
            };
            rope.apply(qkv, &shape, pos, table);
            attention(qkv, &shape, cu, mask, None, isa, ctx);
            layer.wo.matmul(ctx, hidden, true, par, staged);
            add_bias(hidden, &layer.wo);
            norm_into(hidden, normed, &layer.mlp_norm);
            layer.wi.matmul(normed, wide, false, par, staged);
            add_bias(wide, &layer.wi);
            wide.par_chunks_mut(2 * inter_w)
                .zip(inter.par_chunks_mut(inter_w))
                .for_each(|(w, out)| {
                    let (input, gate) = w.split_at_mut(inter_w);
                    kernels::bias_gelu_with(input, &zero_bias, isa);
                    for ((o, a), g) in out.iter_mut().zip(input.iter()).zip(gate.iter()) {
                        *o = a * g;
                    }
                });
            layer.mlp_out.matmul(inter, hidden, true, par, staged);
            add_bias(hidden, &layer.mlp_out);
        }
        let n = &self.final_norm;
        par_rows(hidden, h, |rows| {
            kernels::layer_norm_with(rows, None, &n.gamma, &n.beta, eps, isa)
        });
        Ok(())
    }
}

impl TokenModel for ModernBert {
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
            for linear in [&mut layer.wqkv, &mut layer.wo, &mut layer.wi, &mut layer.mlp_out] {
                linear.pack(format);
            }
        }
    }

    fn dense_format(&self) -> Option<DenseFormat> {
        self.layers.first().and_then(|l| l.wqkv.format())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_restart_with_every_sequence() {
        let mut pos = Vec::new();
        let longest = positions(&[0, 3, 3, 5], &mut pos);
        assert_eq!(pos, [0, 1, 2, 0, 1]);
        assert_eq!(longest, 3);
    }
}
