//! The BERT-style encoder shared by BERT and XLM-RoBERTa, run on packed
//! batches (sequences back to back, no padding, so attention needs no mask).
//!
//! Per layer: one fused QKV GEMM; attention per (sequence, head) straight
//! out of the QKV buffer, with a fused softmax; output projection
//! accumulated onto the residual; LayerNorm in place; feed-forward GEMM with
//! a fused bias+GELU pass; second projection accumulated onto the residual.
//! All buffers live in [`Scratch`] and are reused across batches.

use papersys_backend_core::EmbedError;

use super::layers::{
    AttentionShape, LayerNorm, Linear, Mask, Staging, attention, check_packed, grow, par_rows, parallelism,
};
use super::{DenseFormat, Scratchpad, TokenModel};
use crate::config::TransformerConfig;
use crate::kernels::{self, Isa};
use crate::weights::Tensors;

/// Shape and numeric parameters of an encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    /// Token vector width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// Word embedding rows.
    pub vocab: usize,
    /// Position embedding rows.
    pub positions: usize,
    /// Position id of a sequence's first token (XLM-R: `padding_idx + 1`).
    pub position_offset: usize,
    /// Token-type embedding rows.
    pub type_vocab: usize,
}

impl EncoderConfig {
    /// Reads the shape from `config.json`, with the position offset of the
    /// architecture; rejects what this encoder cannot run.
    pub fn from_transformer(cfg: &TransformerConfig, position_offset: usize) -> Result<Self, EmbedError> {
        if cfg.hidden_act != "gelu" {
            return Err(EmbedError::Unsupported(format!(
                "config.json: hidden_act {:?} is not supported (supported: \"gelu\")",
                cfg.hidden_act
            )));
        }
        if cfg.position_embedding_type != "absolute" {
            return Err(EmbedError::Unsupported(format!(
                "config.json: position_embedding_type {:?} is not supported (supported: \"absolute\")",
                cfg.position_embedding_type
            )));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(EmbedError::Load(format!(
                "config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.max_position_embeddings <= position_offset {
            return Err(EmbedError::Load(format!(
                "config.json: max_position_embeddings {} leaves no position after the offset {position_offset}",
                cfg.max_position_embeddings
            )));
        }
        Ok(EncoderConfig {
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            layers: cfg.num_hidden_layers,
            intermediate: cfg.intermediate_size,
            eps: cfg.layer_norm_eps as f32,
            vocab: cfg.vocab_size,
            positions: cfg.max_position_embeddings,
            position_offset,
            type_vocab: cfg.type_vocab_size.max(1),
        })
    }

    /// Longest sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.positions - self.position_offset
    }
}

struct Layer {
    /// Q (pre-scaled by 1/√head_dim), K and V side by side: [hidden, 3·hidden].
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

/// Encoder weights in the layout the forward pass wants (linear weights
/// transposed to [in, out]).
pub struct Encoder {
    cfg: EncoderConfig,
    word: Vec<f32>,
    /// Position embedding plus token type 0, [positions, hidden].
    pos_type: Vec<f32>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    /// The kernel family of the element-wise passes, detected at load.
    isa: Isa,
}

/// Buffers of one forward pass, grown on demand and reused.
#[derive(Default)]
pub struct Scratch {
    /// [tokens, hidden]: the residual stream; holds the output at the end.
    pub hidden: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
    /// Activations converted for a packed GEMM.
    staged: Staging,
}

impl Scratch {
    fn ensure(&mut self, tokens: usize, cfg: &EncoderConfig) {
        grow(&mut self.hidden, tokens * cfg.hidden);
        grow(&mut self.qkv, tokens * 3 * cfg.hidden);
        grow(&mut self.ctx, tokens * cfg.hidden);
        grow(&mut self.inter, tokens * cfg.intermediate);
    }
}

impl Encoder {
    /// Loads the encoder from tensors named `{prefix}embeddings.*` and
    /// `{prefix}encoder.layer.{i}.*`, checking every shape.
    pub fn load(t: &Tensors<'_>, prefix: &str, cfg: EncoderConfig) -> Result<Self, EmbedError> {
        let h = cfg.hidden;
        let n = |s: &str| format!("{prefix}{s}");
        let norm = |s: &str| -> Result<LayerNorm, EmbedError> {
            Ok(LayerNorm {
                gamma: t.get_any(&[n(&format!("{s}.weight")), n(&format!("{s}.gamma"))], &[h])?,
                beta: t.get_any(&[n(&format!("{s}.bias")), n(&format!("{s}.beta"))], &[h])?,
            })
        };
        let word = t.get(&n("embeddings.word_embeddings.weight"), &[cfg.vocab, h])?;
        let pos = t.get(&n("embeddings.position_embeddings.weight"), &[cfg.positions, h])?;
        let types = t.get(
            &n("embeddings.token_type_embeddings.weight"),
            &[cfg.type_vocab, h],
        )?;
        let pos_type = pos
            .chunks_exact(h)
            .flat_map(|row| row.iter().zip(&types[..h]).map(|(p, t)| p + t))
            .collect();
        let emb_norm = norm("embeddings.LayerNorm")?;
        let scale = 1.0 / ((h / cfg.heads) as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let l = |s: &str| format!("encoder.layer.{i}.{s}");
            let linear =
                |s: &str, inputs: usize, outputs: usize| Linear::load(t, &n(&l(s)), inputs, outputs, true);
            let q = linear("attention.self.query", h, h)?;
            let k = linear("attention.self.key", h, h)?;
            let v = linear("attention.self.value", h, h)?;
            layers.push(Layer {
                qkv: Linear::fused_qkv(q, k, v, scale),
                attn_out: linear("attention.output.dense", h, h)?,
                attn_norm: norm(&l("attention.output.LayerNorm"))?,
                ffn_in: linear("intermediate.dense", h, cfg.intermediate)?,
                ffn_out: linear("output.dense", cfg.intermediate, h)?,
                ffn_norm: norm(&l("output.LayerNorm"))?,
            });
        }
        Ok(Encoder {
            cfg,
            word,
            pos_type,
            emb_norm,
            layers,
            isa: Isa::best(),
        })
    }

    /// Packs every linear layer's weight in `format` (dropping the f32
    /// copy): from now on they run that GEMM. LayerNorm, softmax, GELU and
    /// attention stay f32.
    pub fn pack_dense(&mut self, format: DenseFormat) {
        for layer in &mut self.layers {
            for linear in [
                &mut layer.qkv,
                &mut layer.attn_out,
                &mut layer.ffn_in,
                &mut layer.ffn_out,
            ] {
                linear.pack(format);
            }
        }
    }

    /// The format the linear layers run in; `None`: f32.
    pub fn dense_format(&self) -> Option<DenseFormat> {
        self.layers.first().and_then(|l| l.qkv.format())
    }

    /// Runs the encoder on a packed batch; the token vectors end up in
    /// `scratch.hidden[..tokens * hidden]`. Call inside the engine's thread
    /// pool: GEMMs and row-wise passes use `threads` rayon workers.
    pub fn forward(
        &self,
        ids: &[u32],
        cu: &[u32],
        scratch: &mut Scratch,
        threads: usize,
    ) -> Result<(), EmbedError> {
        let cfg = &self.cfg;
        let h = cfg.hidden;
        let tokens = ids.len();
        let par = parallelism(threads);
        check_packed(ids, cu, cfg.max_tokens(), cfg.vocab)?;
        scratch.ensure(tokens, cfg);
        let Scratch {
            hidden,
            qkv,
            ctx,
            inter,
            staged,
        } = scratch;
        let hidden = &mut hidden[..tokens * h];
        let qkv = &mut qkv[..tokens * 3 * h];
        let ctx = &mut ctx[..tokens * h];
        let inter = &mut inter[..tokens * cfg.intermediate];

        for w in cu.windows(2) {
            let (start, end) = (w[0] as usize, w[1] as usize);
            for (i, t) in (start..end).enumerate() {
                let id = ids[t] as usize;
                let p = cfg.position_offset + i;
                let dst = &mut hidden[t * h..(t + 1) * h];
                let word = &self.word[id * h..(id + 1) * h];
                let pos = &self.pos_type[p * h..(p + 1) * h];
                for ((d, a), b) in dst.iter_mut().zip(word).zip(pos) {
                    *d = a + b;
                }
            }
        }
        let eps = cfg.eps;
        let isa = self.isa;
        // LayerNorm(x + bias): the bias of the projection just accumulated.
        let layer_norm = |x: &mut [f32], bias: Option<&[f32]>, n: &LayerNorm| {
            par_rows(x, h, |rows| {
                kernels::layer_norm_with(rows, bias, &n.gamma, &n.beta, eps, isa)
            })
        };
        layer_norm(hidden, None, &self.emb_norm);

        for layer in &self.layers {
            layer.qkv.matmul(hidden, qkv, false, par, staged);
            par_rows(qkv, 3 * h, |rows| kernels::add_bias_inplace(rows, &layer.qkv.b));
            self.attention(qkv, ctx, cu);
            // The projection is accumulated onto the residual; its bias is
            // added inside the LayerNorm pass.
            layer.attn_out.matmul(ctx, hidden, true, par, staged);
            layer_norm(hidden, Some(&layer.attn_out.b), &layer.attn_norm);
            layer.ffn_in.matmul(hidden, inter, false, par, staged);
            par_rows(inter, cfg.intermediate, |rows| {
                kernels::bias_gelu_with(rows, &layer.ffn_in.b, isa)
            });
            layer.ffn_out.matmul(inter, hidden, true, par, staged);
            layer_norm(hidden, Some(&layer.ffn_out.b), &layer.ffn_norm);
        }
        Ok(())
    }

    /// Self-attention over the fused QKV rows (Q pre-scaled), every token
    /// of a sequence seeing every other.
    fn attention(&self, qkv: &[f32], ctx: &mut [f32], cu: &[u32]) {
        let h = self.cfg.hidden;
        let shape = AttentionShape {
            heads: self.cfg.heads,
            kv_heads: self.cfg.heads,
            head_dim: h / self.cfg.heads,
            stride: 3 * h,
            q: 0,
            k: h,
            v: 2 * h,
        };
        attention(qkv, &shape, cu, Mask::Full, None, self.isa, ctx);
    }
}

/// The encoder with its reusable buffers: what the engine runs.
pub struct EncoderModel {
    encoder: Encoder,
    scratch: Scratchpad<Scratch>,
}

impl EncoderModel {
    /// Wraps a loaded encoder.
    pub fn new(encoder: Encoder) -> Self {
        EncoderModel {
            encoder,
            scratch: Scratchpad::default(),
        }
    }
}

impl TokenModel for EncoderModel {
    fn hidden_size(&self) -> usize {
        self.encoder.cfg.hidden
    }

    fn forward(
        &self,
        ids: &[u32],
        cu: &[u32],
        threads: usize,
        hidden: &mut Vec<f32>,
    ) -> Result<(), EmbedError> {
        let len = ids.len() * self.encoder.cfg.hidden;
        let pass = |s: &mut Scratch| self.encoder.forward(ids, cu, s, threads);
        self.scratch.forward(len, hidden, pass, |s| &s.hidden)
    }

    fn pack_dense(&mut self, format: DenseFormat) {
        self.encoder.pack_dense(format);
    }

    fn dense_format(&self) -> Option<DenseFormat> {
        self.encoder.dense_format()
    }
}

#[cfg(test)]
mod tests {
    use papersys_backend_core::{Embeddings, Pooling};

    use super::*;
    use crate::kernels::bf16::Bf16Isa;
    use crate::kernels::int8::Int8Isa;
    use crate::pooling;

    const H: usize = 8;

    /// Deterministic weights in [-0.5, 0.5).
    struct Lcg(u32);

    impl Lcg {
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (self.0 >> 8) as f32 / (1 << 24) as f32 - 0.5
                })
                .collect()
        }

        fn linear(&mut self, inputs: usize, outputs: usize) -> Linear {
            Linear {
                w: self.vec(inputs * outputs),
                b: self.vec(outputs),
                inputs,
                outputs,
                packed: None,
            }
        }

        fn norm(&mut self) -> LayerNorm {
            LayerNorm {
                gamma: self.vec(H).iter().map(|g| 1.0 + g).collect(),
                beta: self.vec(H),
            }
        }
    }

    /// One layer, hidden 8, two heads of 4, feed-forward 16.
    fn tiny(isa: Isa) -> Encoder {
        let mut r = Lcg(7);
        let cfg = EncoderConfig {
            hidden: H,
            heads: 2,
            layers: 1,
            intermediate: 16,
            eps: 1e-12,
            vocab: 5,
            positions: 8,
            position_offset: 0,
            type_vocab: 1,
        };
        Encoder {
            word: r.vec(cfg.vocab * H),
            pos_type: r.vec(cfg.positions * H),
            emb_norm: r.norm(),
            layers: vec![Layer {
                qkv: r.linear(H, 3 * H),
                attn_out: r.linear(H, H),
                attn_norm: r.norm(),
                ffn_in: r.linear(H, 16),
                ffn_out: r.linear(16, H),
                ffn_norm: r.norm(),
            }],
            cfg,
            isa,
        }
    }

    /// Two sequences embedded and checked as the engine does (mean
    /// pooling, normalised, `Embeddings::validate`).
    fn embed(enc: &Encoder) -> Result<Embeddings, EmbedError> {
        let (ids, cu) = ([1, 2, 3, 4, 0], [0, 3, 5]);
        let mut scratch = Scratch::default();
        enc.forward(&ids, &cu, &mut scratch, 1)?;
        let mut out = Vec::new();
        pooling::pool(&scratch.hidden, &cu, H, Pooling::Mean, true, &mut out);
        let embeddings = Embeddings::new(H, out)?;
        embeddings.validate(2, H)?;
        Ok(embeddings)
    }

    #[test]
    fn every_kernel_family_gives_the_same_vectors() {
        let want = embed(&tiny(Isa::SCALAR)).unwrap();
        for isa in Isa::available() {
            let got = embed(&tiny(isa)).unwrap();
            for (a, b) in got.as_flat().iter().zip(want.as_flat()) {
                assert!((a - b).abs() < 1e-5, "{isa:?}: {a} vs {b}");
            }
        }
    }

    /// Each packed format this CPU has, against f32: different vectors,
    /// close ones (bf16 within 0.001 of cosine 1, int8 within 0.01).
    #[test]
    fn packed_linear_layers_stay_close_to_f32() {
        let want = embed(&tiny(Isa::best())).unwrap();
        assert_eq!(tiny(Isa::best()).dense_format(), None);
        let formats = [
            Bf16Isa::detect().map(|isa| (DenseFormat::Bf16(isa), 0.999)),
            Int8Isa::detect().map(|isa| (DenseFormat::Int8(isa), 0.99)),
        ];
        if formats.iter().all(Option::is_none) {
            eprintln!("neither AVX512-BF16 nor AVX512-VNNI here: no packed encoder run");
        }
        for (format, floor) in formats.into_iter().flatten() {
            let mut enc = tiny(Isa::best());
            enc.pack_dense(format);
            assert_eq!(enc.dense_format(), Some(format));
            assert!(enc.layers[0].ffn_in.w.is_empty(), "the f32 weight is dropped");
            let got = embed(&enc).unwrap();
            assert_ne!(got.as_flat(), want.as_flat(), "{format:?}");
            for (a, b) in got.rows().zip(want.rows()) {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                assert!(dot > floor, "{format:?}: cosine {dot}");
            }
        }
    }

    #[test]
    fn a_nan_key_reaches_every_context_row_of_its_head() {
        let l = 3;
        let mut qkv = Lcg(3).vec(l * 3 * H);
        // Token 1's key, head 0; the values stay finite.
        qkv[3 * H + H] = f32::NAN;
        for isa in Isa::available() {
            let mut ctx = vec![0.0; l * H];
            tiny(isa).attention(&qkv, &mut ctx, &[0, l as u32]);
            for (t, row) in ctx.chunks_exact(H).enumerate() {
                assert!(
                    row[..4].iter().all(|v| v.is_nan()) && row[4..].iter().all(|v| v.is_finite()),
                    "{isa:?}, token {t}: {row:?}"
                );
            }
        }
    }

    #[test]
    fn a_nan_in_attention_fails_the_finiteness_check() {
        for isa in Isa::available() {
            let mut enc = tiny(isa);
            // The key bias of head 0: every attention score of that head is NaN.
            enc.layers[0].qkv.b[H] = f32::NAN;
            let err = embed(&enc).expect_err("NaN attention gave finite vectors");
            assert!(err.to_string().contains("non-finite"), "{isa:?}: {err}");
        }
    }
}
