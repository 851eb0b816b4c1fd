//! The candle engine, which GPU builds (`cuda` feature) run: a BERT /
//! XLM-RoBERTa encoder on padded batches with an attention mask, in f32 or
//! f16. It also runs on the CPU (`candle` feature) so that this code path is
//! tested on machines without a GPU.
//!
//! The encoder is written here rather than taken from candle-transformers:
//! its BERT builds the mask from `f32::MIN`, which is `-inf` in f16 and turns
//! every score into NaN, and its XLM-R mask is f32 only.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use papersys_backend_core::EmbedError;

use crate::Precision;
use crate::config::ModelConfig;
use crate::loader::ModelFiles;
use crate::models::encoder::EncoderConfig;
use crate::weights::WeightsFile;

/// Where candle runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandleDevice {
    /// The CPU (for testing the GPU code path).
    Cpu,
    /// CUDA device with this ordinal.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Cuda(usize),
}

/// Added to the scores of padding keys: far below any real score, and
/// finite in f16 (whose range ends at 65504), so `0 · bias` is never NaN.
const MASK_BIAS: f64 = -1e4;

fn err(e: candle_core::Error) -> EmbedError {
    EmbedError::Inference(format!("candle: {}", without_backtrace(e)))
}

fn load_err(e: candle_core::Error) -> EmbedError {
    EmbedError::Load(format!("candle: {}", without_backtrace(e)))
}

/// candle appends a captured backtrace to its message when `RUST_BACKTRACE`
/// is set: a user needs the error, not candle's stack.
fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => *inner,
        other => other,
    }
}

struct Norm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: &VarBuilder, hidden: usize, eps: f32) -> Result<Self, EmbedError> {
        let (w, b) = if vb.contains_tensor("weight") {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        Ok(Norm {
            gamma: vb.get(hidden, w).map_err(load_err)?,
            beta: vb.get(hidden, b).map_err(load_err)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: Norm,
}

/// An encoder loaded onto a candle device.
pub struct CandleEngine {
    cfg: EncoderConfig,
    device: Device,
    dtype: DType,
    word: Embedding,
    position: Embedding,
    token_type: Tensor,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

impl CandleEngine {
    /// Loads the weights of `files` onto `device` in `precision`.
    pub fn load(
        files: &ModelFiles,
        model: &ModelConfig,
        device: CandleDevice,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        let transformer = &model.transformer()?;
        let (prefixes, offset): (&[&str], usize) = match model.model_type.as_str() {
            "bert" => (&["", "bert.", "model."], 0),
            "xlm-roberta" | "roberta" => (
                &["", "roberta.", "model."],
                transformer.pad_token_id.unwrap_or(1) + 1,
            ),
            other => return Err(unsupported_model_type(other)),
        };
        let cfg = EncoderConfig::from_transformer(transformer, offset)?;
        let weights_path = files.weights();
        let prefix = {
            let weights = WeightsFile::open(&weights_path)?;
            weights
                .tensors()?
                .find_prefix(prefixes, "embeddings.word_embeddings.weight")?
        };
        let device = match device {
            CandleDevice::Cpu => Device::Cpu,
            CandleDevice::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|e| {
                EmbedError::Load(format!(
                    "cannot open CUDA device {ordinal}: {}; check that the GPU is visible to this \
                     process (`nvidia-smi`, CUDA_VISIBLE_DEVICES), or set device = \"cpu\"",
                    without_backtrace(e)
                ))
            })?,
        };
        let dtype = match precision {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::BF16 => DType::BF16,
            Precision::Int8 => {
                return Err(EmbedError::Unsupported(
                    "precision \"int8\" is built for the CPU engine only; on a GPU use \"float16\" \
                     or \"bfloat16\", or set device = \"cpu\""
                        .to_string(),
                ));
            }
        };
        // SAFETY: the weights file is mapped read-only, as in the CPU engine.
        let root = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights_path], dtype, &device) }
            .map_err(load_err)?;
        let root = match prefix.strip_suffix('.') {
            Some(p) => root.pp(p),
            None => root,
        };
        let h = cfg.hidden;
        let emb = root.pp("embeddings");
        let linear = |vb: VarBuilder, inputs: usize, outputs: usize| {
            candle_nn::linear(inputs, outputs, vb).map_err(load_err)
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let l = root.pp(format!("encoder.layer.{i}"));
            let attention = l.pp("attention");
            layers.push(Layer {
                query: linear(attention.pp("self.query"), h, h)?,
                key: linear(attention.pp("self.key"), h, h)?,
                value: linear(attention.pp("self.value"), h, h)?,
                attn_out: linear(attention.pp("output.dense"), h, h)?,
                attn_norm: Norm::load(&attention.pp("output.LayerNorm"), h, cfg.eps)?,
                ffn_in: linear(l.pp("intermediate.dense"), h, cfg.intermediate)?,
                ffn_out: linear(l.pp("output.dense"), cfg.intermediate, h)?,
                ffn_norm: Norm::load(&l.pp("output.LayerNorm"), h, cfg.eps)?,
            });
        }
        let token_type = emb
            .get((cfg.type_vocab, h), "token_type_embeddings.weight")
            .and_then(|t| t.get(0))
            .map_err(load_err)?;
        Ok(CandleEngine {
            word: candle_nn::embedding(cfg.vocab, h, emb.pp("word_embeddings")).map_err(load_err)?,
            position: candle_nn::embedding(cfg.positions, h, emb.pp("position_embeddings"))
                .map_err(load_err)?,
            token_type,
            emb_norm: Norm::load(&emb.pp("LayerNorm"), h, cfg.eps)?,
            layers,
            cfg,
            device,
            dtype,
        })
    }

    /// Runs a packed batch padded to its longest sequence; returns the
    /// token vectors packed again ([tokens, hidden], f32), as the CPU
    /// engine leaves them, so that pooling is shared.
    pub fn forward(&self, ids: &[u32], cu: &[u32]) -> Result<Vec<f32>, EmbedError> {
        let n = cu.len().saturating_sub(1);
        let lengths: Vec<usize> = cu.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        if n == 0 || max_len == 0 {
            return Ok(Vec::new());
        }
        if max_len > self.cfg.max_tokens() {
            return Err(EmbedError::Inference(format!(
                "a sequence of {max_len} tokens exceeds the model's {} positions",
                self.cfg.max_tokens()
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab) {
            return Err(EmbedError::Inference(format!(
                "token id {bad} outside the vocabulary of {}",
                self.cfg.vocab
            )));
        }
        let mut padded = vec![0u32; n * max_len];
        let mut positions = vec![self.cfg.position_offset as u32; n * max_len];
        let mut bias = vec![MASK_BIAS as f32; n * max_len];
        for (s, w) in cu.windows(2).enumerate() {
            for (i, t) in (w[0] as usize..w[1] as usize).enumerate() {
                padded[s * max_len + i] = ids[t];
                positions[s * max_len + i] = (self.cfg.position_offset + i) as u32;
                bias[s * max_len + i] = 0.0;
            }
        }
        let hidden = self.run(padded, positions, bias, n, max_len).map_err(err)?;
        let hidden: Vec<Vec<f32>> = hidden
            .to_dtype(DType::F32)
            .and_then(|t| t.to_vec2())
            .map_err(err)?;
        let mut out = Vec::with_capacity(ids.len() * self.cfg.hidden);
        for (s, &len) in lengths.iter().enumerate() {
            for row in &hidden[s * max_len..s * max_len + len] {
                out.extend_from_slice(row);
            }
        }
        Ok(out)
    }

    fn run(
        &self,
        ids: Vec<u32>,
        positions: Vec<u32>,
        bias: Vec<f32>,
        n: usize,
        l: usize,
    ) -> candle_core::Result<Tensor> {
        let h = self.cfg.hidden;
        let heads = self.cfg.heads;
        let dh = h / heads;
        let ids = Tensor::from_vec(ids, (n, l), &self.device)?;
        let positions = Tensor::from_vec(positions, (n, l), &self.device)?;
        let bias = Tensor::from_vec(bias, (n, 1, 1, l), &self.device)?.to_dtype(self.dtype)?;
        let x = self
            .word
            .forward(&ids)?
            .add(&self.position.forward(&positions)?)?;
        let mut x = self.emb_norm.forward(&x.broadcast_add(&self.token_type)?)?;
        let scale = 1.0 / (dh as f64).sqrt();
        let split = |t: Tensor| t.reshape((n, l, heads, dh))?.transpose(1, 2)?.contiguous();
        for layer in &self.layers {
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((n, l, h))?;
            x = layer.attn_norm.forward(&(layer.attn_out.forward(&ctx)? + &x)?)?;
            let inner = layer.ffn_in.forward(&x)?.gelu_erf()?;
            x = layer.ffn_norm.forward(&(layer.ffn_out.forward(&inner)? + &x)?)?;
        }
        x.reshape((n * l, h))
    }
}

/// The error for a `model_type` the candle engine (GPU builds) cannot run.
pub fn unsupported_model_type(model_type: &str) -> EmbedError {
    EmbedError::Unsupported(format!(
        "model_type {model_type:?} is not supported by the candle engine used for device \"cuda\" \
         (supported: bert, xlm-roberta, roberta); run it on device \"cpu\""
    ))
}
