//! MPNet (all-mpnet-base-v2 and its family): the BERT encoder without token
//! types, positions counted from `padding_idx + 1 = 2`, and a T5-style
//! relative position bias added to every layer's attention scores (one
//! table of `relative_attention_num_buckets × heads`, shared by the layers).
//!
//! Per layer, as in the BERT encoder: one fused QKV GEMM, attention straight
//! out of it (the bias through [`attention`]'s score callback), the output
//! projection accumulated onto the residual, LayerNorm, feed-forward with a
//! fused bias+GELU, LayerNorm.

use papersys_backend_core::EmbedError;
use serde::Deserialize;

use super::layers::{
    AttentionShape, LayerNorm, Linear, Mask, Staging, attention, check_packed, grow, par_rows, parallelism,
};
use super::{Architecture, DenseFormat, ModelShape, Scratchpad, TokenModel};
use crate::config::ModelConfig;
use crate::kernels::{self, Isa};
use crate::weights::Tensors;

/// `model_type = "mpnet"`.
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["mpnet"],
    shape,
    load,
};

/// Tensor name prefixes MPNet checkpoints use (`MPNetModel`, `MPNetFor*`).
const PREFIXES: [&str; 3] = ["", "mpnet.", "model."];

/// Position ids start after the padding id, as `create_position_ids_from_input_ids` numbers them.
const PADDING_IDX: usize = 1;

/// The bucket count `MPNetEncoder.compute_position_bias` passes to the
/// bucketing, whatever the config says (the table may hold more rows).
const BUCKETS: usize = 32;
/// Distances from here on share the last bucket.
const MAX_DISTANCE: usize = 128;

#[derive(Deserialize)]
struct MpnetConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default = "default_buckets")]
    relative_attention_num_buckets: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_buckets() -> usize {
    32
}

fn config(cfg: &ModelConfig) -> Result<MpnetConfig, EmbedError> {
    let c: MpnetConfig = cfg.parse()?;
    let at = cfg.path.display();
    if c.hidden_act != "gelu" {
        return Err(EmbedError::Unsupported(format!(
            "{at}: hidden_act {:?} is not supported (supported: \"gelu\")",
            c.hidden_act
        )));
    }
    if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(EmbedError::Load(format!(
            "{at}: hidden_size {} is not a multiple of num_attention_heads {}",
            c.hidden_size, c.num_attention_heads
        )));
    }
    if c.max_position_embeddings <= PADDING_IDX + 1 {
        return Err(EmbedError::Load(format!(
            "{at}: max_position_embeddings {} leaves no position after the padding offset",
            c.max_position_embeddings
        )));
    }
    if c.relative_attention_num_buckets < BUCKETS {
        return Err(EmbedError::Load(format!(
            "{at}: relative_attention_num_buckets {} is below the {BUCKETS} buckets MPNet's attention uses",
            c.relative_attention_num_buckets
        )));
    }
    Ok(c)
}

fn shape(cfg: &ModelConfig) -> Result<ModelShape, EmbedError> {
    let c = config(cfg)?;
    Ok(ModelShape {
        hidden: c.hidden_size,
        max_tokens: c.max_position_embeddings - PADDING_IDX - 1,
    })
}

/// The bucket of `relative = key - query`, as
/// `MPNetEncoder.relative_position_bucket` computes it (bidirectional,
/// half the buckets per direction, exact up to 8 then logarithmic to 128).
fn bucket(relative: i64) -> usize {
    let half = BUCKETS / 2;
    let n = -relative;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let max_exact = half / 2;
    ret += if n < max_exact {
        n
    } else {
        // In f32, as torch computes it.
        let scaled = (n as f32 / max_exact as f32).ln() / (MAX_DISTANCE as f32 / max_exact as f32).ln()
            * (half - max_exact) as f32;
        (max_exact + scaled as usize).min(half - 1)
    };
    ret
}

struct Layer {
    /// Q (pre-scaled by 1/√head_dim), K and V side by side.
    qkv: Linear,
    out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
    /// Activations converted for a packed GEMM.
    staged: Staging,
}

/// A loaded MPNet encoder with its reusable buffers.
struct Mpnet {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f32,
    vocab: usize,
    max_tokens: usize,
    word: Vec<f32>,
    /// [positions, hidden].
    pos: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    /// `bias[head][relative + max_tokens - 1]`: the bias of a key
    /// `relative` positions after its query, for every distance a
    /// sequence can have.
    bias: Vec<Vec<f32>>,
    isa: Isa,
    scratch: Scratchpad<Scratch>,
}

fn load(cfg: &ModelConfig, t: &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError> {
    let c = config(cfg)?;
    let prefix = t.find_prefix(&PREFIXES, "embeddings.word_embeddings.weight")?;
    let n = |s: &str| format!("{prefix}{s}");
    let h = c.hidden_size;
    let norm = |s: &str| LayerNorm::load(t, &n(s), h, true);
    let scale = 1.0 / ((h / c.num_attention_heads) as f32).sqrt();
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let l = |s: &str| n(&format!("encoder.layer.{i}.{s}"));
        let linear = |s: &str, inputs: usize, outputs: usize| Linear::load(t, &l(s), inputs, outputs, true);
        let q = linear("attention.attn.q", h, h)?;
        let k = linear("attention.attn.k", h, h)?;
        let v = linear("attention.attn.v", h, h)?;
        layers.push(Layer {
            qkv: Linear::fused_qkv(q, k, v, scale),
            out: linear("attention.attn.o", h, h)?,
            attn_norm: norm(&format!("encoder.layer.{i}.attention.LayerNorm"))?,
            ffn_in: linear("intermediate.dense", h, c.intermediate_size)?,
            ffn_out: linear("output.dense", c.intermediate_size, h)?,
            ffn_norm: norm(&format!("encoder.layer.{i}.output.LayerNorm"))?,
        });
    }
    let table = t.get(
        &n("encoder.relative_attention_bias.weight"),
        &[c.relative_attention_num_buckets, c.num_attention_heads],
    )?;
    let max_tokens = c.max_position_embeddings - PADDING_IDX - 1;
    let bias = (0..c.num_attention_heads)
        .map(|head| {
            (0..2 * max_tokens - 1)
                .map(|d| table[bucket(d as i64 - (max_tokens as i64 - 1)) * c.num_attention_heads + head])
                .collect()
        })
        .collect();
    Ok(Box::new(Mpnet {
        hidden: h,
        heads: c.num_attention_heads,
        intermediate: c.intermediate_size,
        eps: c.layer_norm_eps as f32,
        vocab: c.vocab_size,
        max_tokens,
        word: t.get(&n("embeddings.word_embeddings.weight"), &[c.vocab_size, h])?,
        pos: t.get(
            &n("embeddings.position_embeddings.weight"),
            &[c.max_position_embeddings, h],
        )?,
        emb_norm: norm("embeddings.LayerNorm")?,
        layers,
        bias,
        isa: Isa::best(),
        scratch: Scratchpad::default(),
    }))
}

impl Mpnet {
    /// One forward pass; the token vectors end at the start of `s.hidden`.
    fn run(&self, ids: &[u32], cu: &[u32], threads: usize, s: &mut Scratch) -> Result<(), EmbedError> {
        let h = self.hidden;
        let tokens = ids.len();
        let par = parallelism(threads);
        check_packed(ids, cu, self.max_tokens, self.vocab)?;
        let Scratch {
            hidden,
            qkv,
            ctx,
            inter,
            staged,
        } = s;
        grow(hidden, tokens * h);
        grow(qkv, tokens * 3 * h);
        grow(ctx, tokens * h);
        grow(inter, tokens * self.intermediate);
        let hidden = &mut hidden[..tokens * h];
        let qkv = &mut qkv[..tokens * 3 * h];
        let ctx = &mut ctx[..tokens * h];
        let inter = &mut inter[..tokens * self.intermediate];
        for w in cu.windows(2) {
            for (i, t) in (w[0] as usize..w[1] as usize).enumerate() {
                let id = ids[t] as usize;
                let p = PADDING_IDX + 1 + i;
                let dst = &mut hidden[t * h..(t + 1) * h];
                let word = &self.word[id * h..(id + 1) * h];
                let pos = &self.pos[p * h..(p + 1) * h];
                for ((d, a), b) in dst.iter_mut().zip(word).zip(pos) {
                    *d = a + b;
                }
            }
        }
        let (eps, isa) = (self.eps, self.isa);
        let layer_norm = |x: &mut [f32], bias: Option<&[f32]>, n: &LayerNorm| {
            par_rows(x, h, |rows| {
                kernels::layer_norm_with(rows, bias, &n.gamma, &n.beta, eps, isa)
            })
        };
        layer_norm(hidden, None, &self.emb_norm);
        let shape = AttentionShape {
            heads: self.heads,
            kv_heads: self.heads,
            head_dim: h / self.heads,
            stride: 3 * h,
            q: 0,
            k: h,
            v: 2 * h,
        };
        let offset = self.max_tokens - 1;
        let position_bias = |head: usize, l: usize, first: usize, scores: &mut [f32]| {
            let table = &self.bias[head];
            for (i, row) in scores.chunks_exact_mut(l).enumerate() {
                // Key j of query first + i is j - first - i positions away.
                let from = offset - first - i;
                row.iter_mut()
                    .zip(&table[from..from + l])
                    .for_each(|(s, b)| *s += b);
            }
        };
        for layer in &self.layers {
            layer.qkv.matmul(hidden, qkv, false, par, staged);
            par_rows(qkv, 3 * h, |rows| kernels::add_bias_inplace(rows, &layer.qkv.b));
            attention(qkv, &shape, cu, Mask::Full, Some(&position_bias), isa, ctx);
            layer.out.matmul(ctx, hidden, true, par, staged);
            layer_norm(hidden, Some(&layer.out.b), &layer.attn_norm);
            layer.ffn_in.matmul(hidden, inter, false, par, staged);
            par_rows(inter, self.intermediate, |rows| {
                kernels::bias_gelu_with(rows, &layer.ffn_in.b, isa)
            });
            layer.ffn_out.matmul(inter, hidden, true, par, staged);
            layer_norm(hidden, Some(&layer.ffn_out.b), &layer.ffn_norm);
        }
        Ok(())
    }
}

impl TokenModel for Mpnet {
    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn forward(&self, ids: &[u32], cu: &[u32], threads: usize, out: &mut Vec<f32>) -> Result<(), EmbedError> {
        let len = ids.len() * self.hidden;
        let pass = |s: &mut Scratch| self.run(ids, cu, threads, s);
        self.scratch.forward(len, out, pass, |s| &s.hidden)
    }

    fn pack_dense(&mut self, format: DenseFormat) {
        for layer in &mut self.layers {
            for linear in [
                &mut layer.qkv,
                &mut layer.out,
                &mut layer.ffn_in,
                &mut layer.ffn_out,
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

    /// Buckets as `MPNetEncoder.relative_position_bucket` gives them
    /// (printed from transformers for these distances).
    #[test]
    fn buckets_match_transformers() {
        let cases = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-7, 7),
            (8, 24),
            (-8, 8),
            (15, 25),
            (16, 26),
            (-16, 10),
            (40, 28),
            (127, 31),
            (-127, 15),
            (128, 31),
            (-500, 15),
        ];
        for (relative, want) in cases {
            assert_eq!(bucket(relative), want, "relative position {relative}");
        }
    }
}
