//! NomicBert (`model_type = "nomic_bert"`): nomic-embed-text-v1 and v1.5,
//! on packed batches.
//!
//! Post-norm layers as BERT's, without absolute positions: word plus
//! token-type-0 embeddings and a LayerNorm (`emb_ln`); per layer one fused
//! Wqkv GEMM (Q pre-scaled by 1/√head_dim), rotary positions on the query
//! and key heads, attention straight out of the QKV buffer, `out_proj`
//! accumulated onto the residual and LayerNorm (`norm1`), a SwiGLU MLP
//! (`silu(fc12·x) · fc11·x`, then `fc2`, accumulated onto the residual) and
//! LayerNorm (`norm2`).
//!
//! Two spellings are read. The hub checkpoints users download (written for
//! `trust_remote_code`) name the config keys `n_embd`, `n_head`, `n_layer`,
//! `n_inner`, `rotary_emb_base`, ... and the tensors `emb_ln`,
//! `encoder.layers.N.attn.Wqkv`, `mlp.fc11`/`fc12`/`fc2`, `norm1`/`norm2`;
//! transformers 5's own `nomic_bert` names them `hidden_size`, ...,
//! `rope_parameters` and `embeddings.LayerNorm`, `layers.N.self_attn.q_proj`,
//! `mlp.gate_proj`/`up_proj`/`down_proj`, `post_attention_layernorm`,
//! `post_mlp_layernorm` (the mapping of transformers' conversion table). A
//! config.json may carry both key sets (the hub's does): they must agree.
//! `rotary_emb_interleaved` (rotating adjacent pairs) is run by permuting the
//! query and key rows of every head at load into the half-split layout,
//! which gives the same attention scores.
//!
//! The forward pass is [`super::rope_encoder`]'s; this file reads the
//! config and maps the weights into it.

use papersys_backend_core::EmbedError;
use serde::Deserialize;

use super::layers::{LayerNorm, Linear, Rope};
use super::rope_encoder::{Activation, GateOrder, RopeEncoder, RopeEncoderConfig, RopeLayer};
use super::{Architecture, ModelShape, TokenModel};
use crate::config::ModelConfig;
use crate::weights::Tensors;

/// `model_type = "nomic_bert"`.
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["nomic_bert"],
    shape,
    load,
};

/// Tensor name prefixes of the hub layout (`NomicBertModel`,
/// `NomicBertForPreTraining`'s `bert.`).
const HUB_PREFIXES: [&str; 2] = ["", "bert."];
/// Tensor name prefixes of the transformers 5 layout (`NomicBertModel`,
/// `NomicBertFor*`'s `nomic_bert.`).
const TF_PREFIXES: [&str; 2] = ["", "nomic_bert."];

/// Every config.json field read, in both spellings; all optional here and
/// checked in [`config`].
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    #[serde(default)]
    type_vocab_size: Option<usize>,
    // The hub's (trust_remote_code) keys.
    n_embd: Option<usize>,
    n_head: Option<usize>,
    n_layer: Option<usize>,
    n_inner: Option<usize>,
    n_positions: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    rotary_emb_base: Option<f64>,
    rotary_emb_fraction: Option<f64>,
    rotary_emb_interleaved: Option<bool>,
    rotary_emb_scale_base: Option<serde_json::Value>,
    rotary_scaling_factor: Option<serde_json::Value>,
    qkv_proj_bias: Option<bool>,
    mlp_fc1_bias: Option<bool>,
    mlp_fc2_bias: Option<bool>,
    prenorm: Option<bool>,
    causal: Option<bool>,
    parallel_block: Option<bool>,
    use_rms_norm: Option<bool>,
    moe_every_n_layers: Option<usize>,
    num_experts: Option<usize>,
    // transformers 5's keys.
    hidden_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_hidden_layers: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rope_parameters: Option<serde_json::Value>,
}

/// NomicBert's shape, checked.
#[derive(Clone, Debug, PartialEq)]
struct NomicConfig {
    hidden: usize,
    heads: usize,
    layers: usize,
    intermediate: usize,
    vocab: usize,
    type_vocab: usize,
    positions: usize,
    eps: f32,
    theta: f64,
    interleaved: bool,
    /// `None`: whether the checkpoint has the bias decides (transformers 5
    /// configs have no bias flags and their models no biases).
    qkv_bias: Option<bool>,
    fc1_bias: Option<bool>,
    fc2_bias: Option<bool>,
}

/// The value of a setting spelled `hub` in the hub's config and `tf` in
/// transformers', from whichever is present; both present must agree.
fn either<T: PartialEq + std::fmt::Debug>(
    hub: Option<T>,
    tf: Option<T>,
    keys: (&str, &str),
    cfg: &ModelConfig,
) -> Result<Option<T>, EmbedError> {
    match (hub, tf) {
        (Some(a), Some(b)) if a != b => Err(EmbedError::Load(format!(
            "{}: {} {a:?} and {} {b:?} disagree (the hub's and transformers' names for the same setting)",
            cfg.path.display(),
            keys.0,
            keys.1
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

fn config(cfg: &ModelConfig) -> Result<NomicConfig, EmbedError> {
    let raw: RawConfig = cfg.parse()?;
    let file = cfg.path.display();
    let unsupported = |what: String| {
        EmbedError::Unsupported(format!(
            "{file}: {what} is not supported by the native engine's nomic_bert; use the remote backend for this model"
        ))
    };
    for (key, on) in [
        ("prenorm", raw.prenorm),
        ("causal", raw.causal),
        ("parallel_block", raw.parallel_block),
        ("use_rms_norm", raw.use_rms_norm),
    ] {
        if on == Some(true) {
            return Err(unsupported(format!("{key} true")));
        }
    }
    if raw.moe_every_n_layers.is_some_and(|n| n > 0) || raw.num_experts.is_some_and(|n| n > 0) {
        return Err(unsupported(
            "a mixture-of-experts MLP (moe_every_n_layers / num_experts, nomic-embed-text-v2-moe)".into(),
        ));
    }
    for (key, v) in [
        (
            "rotary_scaling_factor (dynamic NTK RoPE scaling)",
            &raw.rotary_scaling_factor,
        ),
        ("rotary_emb_scale_base (xPos)", &raw.rotary_emb_scale_base),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_null()) {
            return Err(unsupported(format!("{key} {v}")));
        }
    }
    if let Some(f) = raw.rotary_emb_fraction.filter(|&f| f != 1.0) {
        return Err(unsupported(format!(
            "rotary_emb_fraction {f} (only 1.0: every head value rotated)"
        )));
    }
    let mut tf_theta = raw.rope_theta;
    if let Some(p) = raw.rope_parameters.as_ref().filter(|p| !p.is_null()) {
        let kind = p.get("rope_type").and_then(|v| v.as_str()).unwrap_or("default");
        if kind != "default" {
            return Err(unsupported(format!("rope_parameters.rope_type {kind:?}")));
        }
        if let Some(f) = p
            .get("partial_rotary_factor")
            .and_then(|v| v.as_f64())
            .filter(|&f| f != 1.0)
        {
            return Err(unsupported(format!("rope_parameters.partial_rotary_factor {f}")));
        }
        if let Some(t) = p.get("rope_theta").and_then(|v| v.as_f64()) {
            tf_theta = Some(t);
        }
    }
    if !matches!(
        (raw.activation_function.as_deref(), raw.hidden_act.as_deref()),
        (Some("swiglu") | None, Some("silu") | None)
    ) {
        return Err(unsupported(format!(
            "activation_function {:?} / hidden_act {:?} (supported: the SwiGLU MLP, \
             activation_function \"swiglu\" / hidden_act \"silu\")",
            raw.activation_function, raw.hidden_act
        )));
    }
    let hidden = either(raw.n_embd, raw.hidden_size, ("n_embd", "hidden_size"), cfg)?;
    let heads = either(
        raw.n_head,
        raw.num_attention_heads,
        ("n_head", "num_attention_heads"),
        cfg,
    )?;
    let layers = either(
        raw.n_layer,
        raw.num_hidden_layers,
        ("n_layer", "num_hidden_layers"),
        cfg,
    )?;
    let inner = either(
        raw.n_inner,
        raw.intermediate_size,
        ("n_inner", "intermediate_size"),
        cfg,
    )?;
    let eps = either(
        raw.layer_norm_epsilon,
        raw.layer_norm_eps,
        ("layer_norm_epsilon", "layer_norm_eps"),
        cfg,
    )?;
    let theta = either(
        raw.rotary_emb_base,
        tf_theta,
        ("rotary_emb_base", "rope_theta"),
        cfg,
    )?;
    let (Some(hidden), Some(heads), Some(layers)) = (hidden, heads, layers) else {
        return Err(EmbedError::Load(format!(
            "{file}: the model's width, heads and layers are missing (n_embd, n_head, n_layer or \
             hidden_size, num_attention_heads, num_hidden_layers)"
        )));
    };
    if heads == 0 || !hidden.is_multiple_of(heads) || !(hidden / heads).is_multiple_of(2) {
        return Err(EmbedError::Load(format!(
            "{file}: width {hidden} is not an even head width times {heads} heads"
        )));
    }
    if let Some(d) = raw.head_dim.filter(|&d| d != hidden / heads) {
        return Err(unsupported(format!(
            "head_dim {d} (other than hidden_size / num_attention_heads = {})",
            hidden / heads
        )));
    }
    // Absent keys take transformers 5's NomicBertConfig defaults; an absent
    // n_inner is 4 times the width (GPT-2 style, as the hub code's).
    let theta = theta.unwrap_or(1000.0);
    if theta.is_nan() || theta <= 0.0 {
        return Err(EmbedError::Load(format!(
            "{file}: rotary base {theta} is not usable"
        )));
    }
    let type_vocab = raw.type_vocab_size.unwrap_or(2);
    if type_vocab == 0 {
        return Err(EmbedError::Load(format!(
            "{file}: type_vocab_size 0 leaves no token type embedding"
        )));
    }
    Ok(NomicConfig {
        hidden,
        heads,
        layers,
        intermediate: inner.unwrap_or(4 * hidden),
        vocab: raw.vocab_size,
        type_vocab,
        // RoPE has no position table: n_positions (the hub's, 8192 for
        // v1.5) is the longest sequence the model is meant for.
        positions: raw.n_positions.or(raw.max_position_embeddings).unwrap_or(2048),
        eps: eps.unwrap_or(1e-12) as f32,
        theta,
        interleaved: raw.rotary_emb_interleaved.unwrap_or(false),
        qkv_bias: raw.qkv_proj_bias,
        fc1_bias: raw.mlp_fc1_bias,
        fc2_bias: raw.mlp_fc2_bias,
    })
}

fn shape(cfg: &ModelConfig) -> Result<ModelShape, EmbedError> {
    let c = config(cfg)?;
    Ok(ModelShape {
        hidden: c.hidden,
        max_tokens: c.positions,
    })
}

fn load(cfg: &ModelConfig, t: &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError> {
    Ok(Box::new(encoder(t, &config(cfg)?)?))
}

/// The column order that turns interleaved rotary pairs (2j, 2j+1) of
/// every head in `0..width` into the half-split pairs (j, j + head_dim/2):
/// new column `c` reads old column `order[c]`.
fn half_split_order(width: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    (0..width)
        .map(|c| {
            let (head, j) = (c / head_dim, c % head_dim);
            head * head_dim + if j < half { 2 * j } else { 2 * (j - half) + 1 }
        })
        .collect()
}

/// Reorders columns `0..order.len()` of a transposed weight (and of its
/// bias) as `order` says.
fn permute_columns(l: &mut Linear, offset: usize, order: &[usize]) {
    let n = l.outputs;
    for row in l.w.chunks_exact_mut(n) {
        let old: Vec<f32> = row[offset..offset + order.len()].to_vec();
        for (c, &from) in order.iter().enumerate() {
            row[offset + c] = old[from];
        }
    }
    if !l.b.is_empty() {
        let old: Vec<f32> = l.b[offset..offset + order.len()].to_vec();
        for (c, &from) in order.iter().enumerate() {
            l.b[offset + c] = old[from];
        }
    }
}

/// Loads either layout's weights into the shared rotary encoder: SiLU on
/// the first (fc12, gate) half, interleaved rotary pairs permuted to
/// half-split.
fn encoder(t: &Tensors<'_>, cfg: &NomicConfig) -> Result<RopeEncoder, EmbedError> {
    let (h, inter) = (cfg.hidden, cfg.intermediate);
    let hub_probe = "encoder.layers.0.attn.Wqkv.weight";
    let tf_probe = "layers.0.self_attn.q_proj.weight";
    let hub = HUB_PREFIXES
        .iter()
        .find(|p| t.contains(&format!("{p}{hub_probe}")))
        .map(|p| p.to_string());
    let prefix = match &hub {
        Some(p) => p.clone(),
        None => t.find_prefix(&TF_PREFIXES, tf_probe).map_err(|e| {
            EmbedError::Load(format!(
                "{e} (transformers' nomic_bert layout), nor {hub_probe} under {HUB_PREFIXES:?} (the hub's)"
            ))
        })?,
    };
    let n = |s: &str| format!("{prefix}{s}");
    // A bias is read when the config asks for it, or, without a flag,
    // when the checkpoint has it.
    let has = |flag: Option<bool>, name: &str| flag.unwrap_or_else(|| t.contains(&format!("{name}.bias")));
    let norm = |name: &str| LayerNorm::load(t, name, h, true);
    let word = t.get(&n("embeddings.word_embeddings.weight"), &[cfg.vocab, h])?;
    let types = t.get(
        &n("embeddings.token_type_embeddings.weight"),
        &[cfg.type_vocab, h],
    )?;
    let embed = word
        .chunks_exact(h)
        .flat_map(|row| row.iter().zip(&types[..h]).map(|(w, t)| w + t))
        .collect();
    let emb_norm = norm(&n(if hub.is_some() {
        "emb_ln"
    } else {
        "embeddings.LayerNorm"
    }))?;
    let dh = h / cfg.heads;
    let order = cfg.interleaved.then(|| half_split_order(h, dh));
    let mut layers = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let linear = |name: &str, inputs: usize, outputs: usize, flag: Option<bool>| {
            Linear::load(t, name, inputs, outputs, has(flag, name))
        };
        let mut layer = if hub.is_some() {
            let l = |s: &str| n(&format!("encoder.layers.{i}.{s}"));
            RopeLayer {
                qkv: linear(&l("attn.Wqkv"), h, 3 * h, cfg.qkv_bias)?,
                out: linear(&l("attn.out_proj"), h, h, cfg.qkv_bias)?,
                attn_norm: norm(&l("norm1"))?,
                gate_up: Linear::side_by_side(&[
                    linear(&l("mlp.fc12"), h, inter, cfg.fc1_bias)?,
                    linear(&l("mlp.fc11"), h, inter, cfg.fc1_bias)?,
                ]),
                down: linear(&l("mlp.fc2"), inter, h, cfg.fc2_bias)?,
                mlp_norm: norm(&l("norm2"))?,
            }
        } else {
            let l = |s: &str| n(&format!("layers.{i}.{s}"));
            let proj = |s: &str| linear(&l(&format!("self_attn.{s}_proj")), h, h, cfg.qkv_bias);
            RopeLayer {
                qkv: Linear::side_by_side(&[proj("q")?, proj("k")?, proj("v")?]),
                out: proj("o")?,
                attn_norm: norm(&l("post_attention_layernorm"))?,
                gate_up: Linear::side_by_side(&[
                    linear(&l("mlp.gate_proj"), h, inter, cfg.fc1_bias)?,
                    linear(&l("mlp.up_proj"), h, inter, cfg.fc1_bias)?,
                ]),
                down: linear(&l("mlp.down_proj"), inter, h, cfg.fc2_bias)?,
                mlp_norm: norm(&l("post_mlp_layernorm"))?,
            }
        };
        if let Some(order) = &order {
            permute_columns(&mut layer.qkv, 0, order);
            permute_columns(&mut layer.qkv, h, order);
        }
        layers.push(layer);
    }
    let spec = RopeEncoderConfig {
        hidden: h,
        heads: cfg.heads,
        intermediate: inter,
        vocab: cfg.vocab,
        max_tokens: cfg.positions,
        eps: cfg.eps,
        activation: Activation::Silu,
        gate_order: GateOrder::GateFirst,
        rope: Rope::new(cfg.theta, dh),
    };
    Ok(RopeEncoder::new(spec, embed, emb_norm, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_pairs_land_on_half_split_pairs() {
        // Two heads of 4: interleaved pairs (0,1), (2,3) become (0,2), (1,3).
        assert_eq!(half_split_order(8, 4), [0, 2, 1, 3, 4, 6, 5, 7]);
        let mut l = Linear {
            w: (0..16).map(|v| v as f32).collect(),
            b: vec![10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0],
            inputs: 2,
            outputs: 8,
            packed: None,
        };
        permute_columns(&mut l, 4, &half_split_order(4, 4));
        assert_eq!(&l.w[..8], &[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(&l.w[8..], &[8.0, 9.0, 10.0, 11.0, 12.0, 14.0, 13.0, 15.0]);
        assert_eq!(l.b, [10.0, 11.0, 12.0, 13.0, 14.0, 16.0, 15.0, 17.0]);
    }
}
