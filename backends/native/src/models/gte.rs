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

use papersys_backend_core::EmbedError;
use rayon::prelude::*;
use serde::Deserialize;

use super::layers::{
    AttentionShape, LayerNorm, Linear, Mask, Rope, RopeTable, attention, check_packed, grow, par_rows,
    parallelism, positions, transpose,
};
use super::{Architecture, ModelShape, Scratchpad, TokenModel};
use crate::config::ModelConfig;
use crate::kernels::bf16::Bf16Isa;
use crate::kernels::{self, Isa};
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
    Ok(Box::new(Gte::load(t, &prefix, layout, c)?))
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

fn layer_norm(t: &Tensors<'_>, name: &str, h: usize) -> Result<LayerNorm, EmbedError> {
    Ok(LayerNorm {
        gamma: t.get(&format!("{name}.weight"), &[h])?,
        beta: t.get(&format!("{name}.bias"), &[h])?,
    })
}

struct Layer {
    /// Q (pre-scaled by 1/√head_dim), K, V side by side: [hidden, 3·hidden].
    qkv: Linear,
    o: Linear,
    attn_ln: LayerNorm,
    /// Up and gate halves side by side (the hub's order): [hidden, 2·intermediate].
    up_gate: Linear,
    down: Linear,
    mlp_ln: LayerNorm,
}

/// Buffers of one forward pass, grown on demand and reused.
#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    wide: Vec<f32>,
    inter: Vec<f32>,
    xb: Vec<u16>,
    pos: Vec<u32>,
    table: RopeTable,
}

/// A loaded GTE model with its reusable buffers.
struct Gte {
    cfg: GteConfig,
    /// Word embeddings plus token type 0's row, [vocab, hidden].
    word: Vec<f32>,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    rope: Rope,
    isa: Isa,
    scratch: Scratchpad<Scratch>,
}

impl Gte {
    fn load(t: &Tensors<'_>, prefix: &str, layout: Layout, cfg: GteConfig) -> Result<Self, EmbedError> {
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
        let emb_ln = layer_norm(t, &n("embeddings.LayerNorm"), h)?;
        let scale = 1.0 / (cfg.head_dim() as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let layer = match layout {
                Layout::Hub => {
                    let l = |s: &str| n(&format!("encoder.layer.{i}.{s}"));
                    Layer {
                        qkv: Linear::load(t, &l("attention.qkv_proj"), h, 3 * h, true)?,
                        o: Linear::load(t, &l("attention.o_proj"), h, h, true)?,
                        attn_ln: layer_norm(t, &l("attn_ln"), h)?,
                        up_gate: Linear::load(t, &l("mlp.up_gate_proj"), h, 2 * inter, false)?,
                        down: Linear::load(t, &l("mlp.down_proj"), inter, h, true)?,
                        mlp_ln: layer_norm(t, &l("mlp_ln"), h)?,
                    }
                }
                Layout::Transformers => {
                    let l = |s: &str| n(&format!("layers.{i}.{s}"));
                    let qkv = ["q", "k", "v"].map(|p| (l(&format!("self_attn.{p}_proj")), h));
                    let up_gate = ["up", "gate"].map(|p| (l(&format!("mlp.{p}_proj")), inter));
                    Layer {
                        qkv: stacked(t, &qkv, h, true)?,
                        o: Linear::load(t, &l("self_attn.o_proj"), h, h, true)?,
                        attn_ln: layer_norm(t, &l("post_attention_layernorm"), h)?,
                        up_gate: stacked(t, &up_gate, h, false)?,
                        down: Linear::load(t, &l("mlp.down_proj"), inter, h, true)?,
                        mlp_ln: layer_norm(t, &l("post_mlp_layernorm"), h)?,
                    }
                }
            };
            layers.push(layer);
        }
        // Scaling Q before the rotation is the same as after: RoPE is linear.
        for layer in &mut layers {
            for row in layer.qkv.w.chunks_exact_mut(3 * h) {
                row[..h].iter_mut().for_each(|w| *w *= scale);
            }
            layer.qkv.b[..h].iter_mut().for_each(|b| *b *= scale);
        }
        Ok(Gte {
            rope: cfg.rope(),
            cfg,
            word,
            emb_ln,
            layers,
            isa: Isa::best(),
            scratch: Scratchpad::default(),
        })
    }

    fn run(&self, ids: &[u32], cu: &[u32], threads: usize, s: &mut Scratch) -> Result<(), EmbedError> {
        let cfg = &self.cfg;
        let (h, iw) = (cfg.hidden, cfg.intermediate);
        let tokens = ids.len();
        let par = parallelism(threads);
        check_packed(ids, cu, cfg.positions, cfg.vocab)?;
        grow(&mut s.hidden, tokens * h);
        grow(&mut s.qkv, tokens * 3 * h);
        grow(&mut s.ctx, tokens * h);
        grow(&mut s.wide, tokens * 2 * iw);
        grow(&mut s.inter, tokens * iw);
        let longest = positions(cu, &mut s.pos);
        self.rope.table(&mut s.table, longest);
        let Scratch {
            hidden,
            qkv,
            ctx,
            wide,
            inter,
            xb,
            pos,
            table,
        } = s;
        let hidden = &mut hidden[..tokens * h];
        let qkv = &mut qkv[..tokens * 3 * h];
        let ctx = &mut ctx[..tokens * h];
        let wide = &mut wide[..tokens * 2 * iw];
        let inter = &mut inter[..tokens * iw];
        let (eps, isa) = (cfg.eps, self.isa);
        // LayerNorm(x + bias): the bias of the projection just accumulated.
        let layer_norm = |x: &mut [f32], bias: Option<&[f32]>, n: &LayerNorm| {
            par_rows(x, h, |rows| {
                kernels::layer_norm_with(rows, bias, &n.gamma, &n.beta, eps, isa)
            })
        };

        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            hidden[t * h..(t + 1) * h].copy_from_slice(&self.word[id * h..(id + 1) * h]);
        }
        layer_norm(hidden, None, &self.emb_ln);
        let shape = AttentionShape {
            heads: cfg.heads,
            kv_heads: cfg.heads,
            head_dim: cfg.head_dim(),
            stride: 3 * h,
            q: 0,
            k: h,
            v: 2 * h,
        };
        let zero_bias = vec![0.0; iw];
        for layer in &self.layers {
            layer.qkv.matmul(hidden, qkv, false, par, xb);
            par_rows(qkv, 3 * h, |rows| kernels::add_bias_inplace(rows, &layer.qkv.b));
            self.rope.apply(qkv, &shape, pos, table);
            attention(qkv, &shape, cu, Mask::Full, None, isa, ctx);
            layer.o.matmul(ctx, hidden, true, par, xb);
            layer_norm(hidden, Some(&layer.o.b), &layer.attn_ln);
            layer.up_gate.matmul(hidden, wide, false, par, xb);
            wide.par_chunks_mut(2 * iw)
                .zip(inter.par_chunks_mut(iw))
                .for_each(|(w, out)| {
                    let (up, gate) = w.split_at_mut(iw);
                    kernels::bias_gelu_with(gate, &zero_bias, isa);
                    for ((o, u), g) in out.iter_mut().zip(up.iter()).zip(gate.iter()) {
                        *o = g * u;
                    }
                });
            layer.down.matmul(inter, hidden, true, par, xb);
            layer_norm(hidden, Some(&layer.down.b), &layer.mlp_ln);
        }
        Ok(())
    }
}

impl TokenModel for Gte {
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

    fn use_bf16(&mut self, isa: Bf16Isa) -> bool {
        for layer in &mut self.layers {
            for linear in [&mut layer.qkv, &mut layer.o, &mut layer.up_gate, &mut layer.down] {
                linear.pack_bf16(isa);
            }
        }
        true
    }

    fn runs_bf16(&self) -> bool {
        self.layers.first().is_some_and(|l| l.qkv.packed.is_some())
    }
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
