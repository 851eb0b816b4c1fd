//! GTE's `NewModel`: Alibaba-NLP gte-base-en-v1.5, gte-large-en-v1.5 and
//! gte-multilingual-base as the hub ships them (`model_type = "new"`, run
//! by transformers through `trust_remote_code`), and the same architecture
//! as transformers 5 ships it natively (`model_type = "gte"`), on packed
//! batches.
//!
//! Word embeddings (plus token type 0's row when the model has token types)
//! and a LayerNorm, no absolute positions. Per layer: one fused QKV GEMM,
//! rotary positions on Q and K (NTK-scaled when the config's `rope_scaling`
//! says so), attention, the output projection accumulated onto the residual
//! and a LayerNorm (post-norm, as BERT); then a gated MLP (`up_gate_proj` →
//! gelu(gate) · up → `down_proj`) accumulated onto the residual and a
//! LayerNorm.
//!
//! Both weight layouts load under either `model_type`: the hub's
//! (`encoder.layer.N.attention.qkv_proj`, `mlp.up_gate_proj` with the up
//! half first, `attn_ln`, `mlp_ln`), which transformers 5 also writes by
//! default, and transformers 5's own (`layers.N.self_attn.{q,k,v,o}_proj`,
//! `mlp.{up,gate,down}_proj`, `post_attention_layernorm`,
//! `post_mlp_layernorm`).
//!
//! The forward pass is [`super::rope_encoder`]'s; this file reads the
//! config and maps the weights into it.

use papersys_backend_core::EmbedError;
use serde::Deserialize;

use super::layers::{LayerNorm, Linear, Rope, transpose};
use super::rope_encoder::{Activation, GateOrder, RopeEncoder, RopeEncoderConfig, RopeLayer};
use super::{Architecture, ModelShape, TokenModel};
use crate::config::ModelConfig;
use crate::weights::Tensors;

/// `model_type = "new"` (the hub's remote code) and `"gte"` (transformers 5).
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["new", "gte"],
    shape,
    load,
};

/// Tensor name prefixes: the bare model, `NewFor*` (`new.`), `GteFor*` (`gte.`).
const PREFIXES: [&str; 3] = ["", "new.", "gte."];

/// The `config.json` fields GTE reads. Defaults are those of the hub's
/// `NewConfig` or transformers' `GteConfig`, whichever `model_type` names.
#[derive(Clone, Debug, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    type_vocab_size: Option<usize>,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    layer_norm_type: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    rope_theta: Option<f64>,
    /// The hub's `{"type": "ntk", "factor": 2.0}` (gte-*-en-v1.5).
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5: `{"rope_type": "default", "rope_theta": ...}`.
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pack_qkv: Option<bool>,
    #[serde(default)]
    logn_attention_scale: bool,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}

/// GTE's shape, checked.
#[derive(Clone, Debug, PartialEq)]
struct GteConfig {
    hidden: usize,
    heads: usize,
    layers: usize,
    intermediate: usize,
    vocab: usize,
    positions: usize,
    type_vocab: usize,
    eps: f32,
    rope_theta: f64,
    /// NTK scaling factor (`rope_scaling.type = "ntk"`), applied as the
    /// hub's `NTKScalingRotaryEmbedding` does: only when above 1.
    ntk_factor: Option<f64>,
}

impl GteConfig {
    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// With NTK scaling, the hub's frequencies `1 / (theta·f)^(2j/d) /
    /// f^(2/d)`, in f32 as PyTorch computes them; `None` when unscaled.
    fn ntk_inv_freq(&self) -> Option<Vec<f32>> {
        let f = self.ntk_factor.filter(|f| *f > 1.0)?;
        let dim = self.head_dim();
        let base = (self.rope_theta * f) as f32;
        let shrink = f.powf(2.0 / dim as f64) as f32;
        Some(
            (0..dim / 2)
                .map(|j| 1.0 / base.powf((2 * j) as f32 / dim as f32) / shrink)
                .collect(),
        )
    }

    /// The rotary embedding of a head, NTK-scaled when configured.
    fn rope(&self) -> Rope {
        match self.ntk_inv_freq() {
            Some(inv_freq) => Rope::with_inv_freq(inv_freq),
            None => Rope::new(self.rope_theta, self.head_dim()),
        }
    }
}

/// The scaling type of a `rope_scaling` / `rope_parameters` object
/// (`type` or `rope_type`); `default` when absent.
fn rope_kind(v: &serde_json::Value) -> Result<&str, String> {
    match v.get("rope_type").or_else(|| v.get("type")) {
        None | Some(serde_json::Value::Null) => Ok("default"),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(other) => Err(format!("RoPE type {other} is not a string")),
    }
}

/// Reads an NTK `factor` from a scaling object of kind `ntk`, refusing the
/// mixed variant (`mixed_b`), which is not implemented.
fn ntk_factor(v: &serde_json::Value, key: &str) -> Result<f64, String> {
    if v.get("mixed_b").is_some_and(|b| !b.is_null()) {
        return Err(format!(
            "{key}.mixed_b (mixed NTK RoPE scaling) is not supported; only fixed NTK scaling"
        ));
    }
    match v.get("factor").and_then(|f| f.as_f64()) {
        Some(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("{key} ({v}) has no usable \"factor\"")),
    }
}

fn config(cfg: &ModelConfig) -> Result<GteConfig, EmbedError> {
    let raw: RawConfig = cfg.parse()?;
    let file = cfg.path.display();
    let unsupported = |what: String| {
        EmbedError::Unsupported(format!(
            "{file}: {what} is not supported by the native engine for GTE; use the remote backend for this model"
        ))
    };
    let hub = cfg.model_type == "new";
    if raw.hidden_act != "gelu" {
        return Err(unsupported(format!(
            "hidden_act {:?} (supported: \"gelu\")",
            raw.hidden_act
        )));
    }
    if let Some(kind) = raw.layer_norm_type.as_deref().filter(|k| *k != "layer_norm") {
        return Err(unsupported(format!(
            "layer_norm_type {kind:?} (supported: \"layer_norm\")"
        )));
    }
    if let Some(kind) = raw.position_embedding_type.as_deref().filter(|k| *k != "rope") {
        return Err(unsupported(format!(
            "position_embedding_type {kind:?} (supported: \"rope\")"
        )));
    }
    if raw.pack_qkv == Some(false) {
        return Err(unsupported(
            "pack_qkv false (separate q/k/v projections in the hub layout)".into(),
        ));
    }
    if raw.logn_attention_scale {
        return Err(unsupported("logn_attention_scale true".into()));
    }
    let mut ntk = None;
    let mut theta = raw.rope_theta;
    if let Some(s) = raw.rope_scaling.as_ref().filter(|s| !s.is_null()) {
        match rope_kind(s).map_err(unsupported)? {
            "ntk" => ntk = Some(ntk_factor(s, "rope_scaling").map_err(unsupported)?),
            other => {
                return Err(unsupported(format!(
                    "RoPE scaling rope_scaling.type {other:?} (supported: \"ntk\")"
                )));
            }
        }
    }
    if let Some(p) = raw.rope_parameters.as_ref().filter(|p| !p.is_null()) {
        match rope_kind(p).map_err(unsupported)? {
            "default" => {}
            "ntk" => ntk = Some(ntk_factor(p, "rope_parameters").map_err(unsupported)?),
            other => {
                return Err(unsupported(format!(
                    "RoPE scaling rope_parameters.rope_type {other:?} (supported: \"default\", \"ntk\")"
                )));
            }
        }
        theta = theta.or_else(|| p.get("rope_theta").and_then(|t| t.as_f64()));
    }
    // NewConfig's defaults, or GteConfig's.
    let rope_theta = theta.unwrap_or(if hub { 10_000.0 } else { 160_000.0 });
    let positions = raw
        .max_position_embeddings
        .unwrap_or(if hub { 2048 } else { 8192 });
    let heads = raw.num_attention_heads;
    if heads == 0
        || !raw.hidden_size.is_multiple_of(heads)
        || raw.hidden_size == heads
        || !(raw.hidden_size / heads).is_multiple_of(2)
    {
        return Err(EmbedError::Load(format!(
            "{file}: hidden_size {} is not an even head width times num_attention_heads {heads}",
            raw.hidden_size
        )));
    }
    if positions < 2 || !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(EmbedError::Load(format!(
            "{file}: max_position_embeddings {positions} or rope_theta {rope_theta} is not usable"
        )));
    }
    Ok(GteConfig {
        hidden: raw.hidden_size,
        heads,
        layers: raw.num_hidden_layers,
        intermediate: raw.intermediate_size,
        vocab: raw.vocab_size,
        positions,
        type_vocab: raw.type_vocab_size.unwrap_or(1),
        eps: raw.layer_norm_eps as f32,
        rope_theta,
        ntk_factor: ntk,
    })
}

fn shape(cfg: &ModelConfig) -> Result<ModelShape, EmbedError> {
    let c = config(cfg)?;
    Ok(ModelShape {
        hidden: c.hidden,
        max_tokens: c.positions,
    })
}

/// Which of the two spellings of the weights a checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The hub's `NewModel` (and transformers 5's default save format).
    Hub,
    /// transformers 5's `GteModel` parameter names.
    Transformers,
}

fn load(cfg: &ModelConfig, t: &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError> {
    let c = config(cfg)?;
    let prefix = t.find_prefix(&PREFIXES, "embeddings.word_embeddings.weight")?;
    let layout = if c.layers == 0 || t.contains(&format!("{prefix}encoder.layer.0.attention.qkv_proj.weight"))
    {
        Layout::Hub
    } else if t.contains(&format!("{prefix}layers.0.self_attn.q_proj.weight")) {
        Layout::Transformers
    } else {
        return Err(EmbedError::Load(format!(
            "{}: the checkpoint has neither {prefix}encoder.layer.0.attention.qkv_proj.weight (the hub's \
             NewModel) nor {prefix}layers.0.self_attn.q_proj.weight (transformers' GteModel)",
            cfg.path.display()
        )));
    };
    Ok(Box::new(encoder(t, &prefix, layout, &c)?))
}

/// Stacks `[rows_i, inputs]` weights (PyTorch's layout) along the output
/// dimension and transposes the result for the GEMM; biases likewise when
/// `bias`.
fn stacked(
    t: &Tensors<'_>,
    names: &[(String, usize)],
    inputs: usize,
    bias: bool,
) -> Result<Linear, EmbedError> {
    let outputs = names.iter().map(|(_, rows)| rows).sum();
    let mut w = Vec::with_capacity(outputs * inputs);
    let mut b = Vec::new();
    for (name, rows) in names {
        w.extend(t.get(&format!("{name}.weight"), &[*rows, inputs])?);
        if bias {
            b.extend(t.get(&format!("{name}.bias"), &[*rows])?);
        }
    }
    Ok(Linear {
        w: transpose(&w, outputs, inputs),
        b,
        inputs,
        outputs,
        packed: None,
    })
}

/// Loads `layout`'s weights into the shared rotary encoder: GELU on the
/// second (gate) half of `up_gate_proj`, NTK-scaled RoPE when configured.
fn encoder(
    t: &Tensors<'_>,
    prefix: &str,
    layout: Layout,
    cfg: &GteConfig,
) -> Result<RopeEncoder, EmbedError> {
    let (h, inter) = (cfg.hidden, cfg.intermediate);
    let n = |s: &str| format!("{prefix}{s}");
    let mut word = t.get(&n("embeddings.word_embeddings.weight"), &[cfg.vocab, h])?;
    if cfg.type_vocab > 0 {
        let types = t.get(
            &n("embeddings.token_type_embeddings.weight"),
            &[cfg.type_vocab, h],
        )?;
        for row in word.chunks_exact_mut(h) {
            row.iter_mut().zip(&types[..h]).for_each(|(w, t)| *w += t);
        }
    }
    let emb_ln = LayerNorm::load(t, &n("embeddings.LayerNorm"), h, true)?;
    let mut layers = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let layer = match layout {
            Layout::Hub => {
                let l = |s: &str| n(&format!("encoder.layer.{i}.{s}"));
                RopeLayer {
                    qkv: Linear::load(t, &l("attention.qkv_proj"), h, 3 * h, true)?,
                    out: Linear::load(t, &l("attention.o_proj"), h, h, true)?,
                    attn_norm: LayerNorm::load(t, &l("attn_ln"), h, true)?,
                    gate_up: Linear::load(t, &l("mlp.up_gate_proj"), h, 2 * inter, false)?,
                    down: Linear::load(t, &l("mlp.down_proj"), inter, h, true)?,
                    mlp_norm: LayerNorm::load(t, &l("mlp_ln"), h, true)?,
                }
            }
            Layout::Transformers => {
                let l = |s: &str| n(&format!("layers.{i}.{s}"));
                let qkv = ["q", "k", "v"].map(|p| (l(&format!("self_attn.{p}_proj")), h));
                let up_gate = ["up", "gate"].map(|p| (l(&format!("mlp.{p}_proj")), inter));
                RopeLayer {
                    qkv: stacked(t, &qkv, h, true)?,
                    out: Linear::load(t, &l("self_attn.o_proj"), h, h, true)?,
                    attn_norm: LayerNorm::load(t, &l("post_attention_layernorm"), h, true)?,
                    gate_up: stacked(t, &up_gate, h, false)?,
                    down: Linear::load(t, &l("mlp.down_proj"), inter, h, true)?,
                    mlp_norm: LayerNorm::load(t, &l("post_mlp_layernorm"), h, true)?,
                }
            }
        };
        layers.push(layer);
    }
    let spec = RopeEncoderConfig {
        hidden: h,
        heads: cfg.heads,
        intermediate: inter,
        vocab: cfg.vocab,
        max_tokens: cfg.positions,
        eps: cfg.eps,
        activation: Activation::Gelu,
        gate_order: GateOrder::UpFirst,
        rope: cfg.rope(),
    };
    Ok(RopeEncoder::new(spec, word, emb_ln, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_config(json: serde_json::Value) -> ModelConfig {
        ModelConfig {
            model_type: json["model_type"].as_str().unwrap_or_default().to_string(),
            path: "config.json".into(),
            raw: json,
        }
    }

    fn base(model_type: &str) -> serde_json::Value {
        serde_json::json!({
            "model_type": model_type,
            "vocab_size": 10,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 48,
        })
    }

    #[test]
    fn defaults_follow_the_model_type() {
        let new = config(&model_config(base("new"))).unwrap();
        assert_eq!(
            (new.positions, new.rope_theta, new.type_vocab),
            (2048, 10_000.0, 1)
        );
        let gte = config(&model_config(base("gte"))).unwrap();
        assert_eq!((gte.positions, gte.rope_theta), (8192, 160_000.0));
        let mut v = base("gte");
        v["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 500.0});
        assert_eq!(config(&model_config(v)).unwrap().rope_theta, 500.0);
    }

    #[test]
    fn ntk_scaling_follows_the_hub_formula() {
        let mut v = base("new");
        v["rope_theta"] = 500_000.0.into();
        v["rope_scaling"] = serde_json::json!({"type": "ntk", "factor": 2.0});
        let c = config(&model_config(v)).unwrap();
        assert_eq!(c.ntk_factor, Some(2.0));
        let got = c.ntk_inv_freq().unwrap();
        // 1/(theta·2)^(2j/8) / 2^(1/4), below the unscaled 1/theta^(2j/8).
        let d = 8.0f64;
        for (j, &g) in got.iter().enumerate() {
            let e = 2.0 * j as f64 / d;
            let want = 1.0 / 1e6f64.powf(e) / 2f64.powf(2.0 / d);
            assert!((g as f64 - want).abs() < 1e-6 * want, "{j}: {g} vs {want}");
            assert!((g as f64) < 1.0 / 5e5f64.powf(e), "{j}");
        }
        // A factor of 1 or less leaves RoPE unscaled, as the hub's code does.
        let mut v = base("new");
        v["rope_scaling"] = serde_json::json!({"type": "ntk", "factor": 1.0});
        assert_eq!(config(&model_config(v)).unwrap().ntk_inv_freq(), None);
    }

    #[test]
    fn unimplemented_options_are_refused_by_name() {
        let cases = [
            ("hidden_act", serde_json::json!("silu"), "hidden_act"),
            ("layer_norm_type", serde_json::json!("rms_norm"), "rms_norm"),
            (
                "position_embedding_type",
                serde_json::json!("absolute"),
                "absolute",
            ),
            ("pack_qkv", serde_json::json!(false), "pack_qkv"),
            (
                "logn_attention_scale",
                serde_json::json!(true),
                "logn_attention_scale",
            ),
            (
                "rope_scaling",
                serde_json::json!({"type": "linear", "factor": 2.0}),
                "linear",
            ),
            (
                "rope_scaling",
                serde_json::json!({"type": "ntk", "factor": 2.0, "mixed_b": 0.5}),
                "mixed_b",
            ),
            (
                "rope_parameters",
                serde_json::json!({"rope_type": "yarn", "factor": 2.0}),
                "yarn",
            ),
        ];
        for (key, value, word) in cases {
            let mut v = base("new");
            v[key] = value;
            let e = config(&model_config(v)).unwrap_err().to_string();
            assert!(e.contains(word) && e.contains("config.json"), "{key}: {e}");
        }
        // Options that change nothing numerically load.
        let mut v = base("new");
        for (k, val) in [
            ("unpad_inputs", true),
            ("use_memory_efficient_attention", true),
            ("logn_attention_clip1", false),
        ] {
            v[k] = val.into();
        }
        config(&model_config(v)).unwrap();
    }
}
