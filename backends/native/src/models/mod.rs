//! Supported architectures, one file each, behind one trait: a
//! [`TokenModel`] turns a packed token batch into one vector per token.
//! [`ARCHITECTURES`] maps config.json's `model_type` to the file that runs
//! it; [`layers`] holds what they share.

pub mod bert;
pub mod encoder;
pub mod gemma3;
pub mod gte;
pub mod layers;
pub mod modernbert;
pub mod mpnet;
pub mod nomic;
pub mod qwen3;
pub mod rope_encoder;
pub mod xlm_roberta;

use papersys_backend_core::EmbedError;
use std::sync::Mutex;

use crate::Precision;
use crate::config::ModelConfig;
use crate::kernels::bf16::Bf16Isa;
use crate::kernels::int8::Int8Isa;
use crate::weights::Tensors;

/// A transformer run on packed batches: sequences back to back, `cu` the
/// cumulative lengths (`cu[0] = 0`, `cu[n] = ids.len()`).
pub trait TokenModel: Send + Sync {
    /// Width of the token vectors [`TokenModel::forward`] writes.
    fn hidden_size(&self) -> usize;

    /// Runs the model; `hidden` is replaced by [tokens, hidden_size] token
    /// vectors. Called inside the engine's thread pool with its `threads`.
    fn forward(
        &self,
        ids: &[u32],
        cu: &[u32],
        threads: usize,
        hidden: &mut Vec<f32>,
    ) -> Result<(), EmbedError>;

    /// Repacks the weights of the dense layers for `format` (dropping the
    /// f32 copies): every architecture lists its dense layers here.
    fn pack_dense(&mut self, format: DenseFormat);

    /// The format the dense layers run in; `None`: f32.
    fn dense_format(&self) -> Option<DenseFormat>;
}

/// A reduced-precision form of the dense layers' weights and GEMM, with the
/// detected CPU support it runs on. Attention, norms and activations stay
/// f32 in every format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseFormat {
    /// bf16 weights and activations, f32 sums (`precision = "bfloat16"`).
    Bf16(Bf16Isa),
    /// int8 weights (one scale per output) and activations (one scale and
    /// zero point per token), exact i32 sums (`precision = "int8"`).
    Int8(Int8Isa),
}

impl DenseFormat {
    /// The `precision` setting that asks for this format.
    pub fn precision(self) -> Precision {
        match self {
            DenseFormat::Bf16(_) => Precision::BF16,
            DenseFormat::Int8(_) => Precision::Int8,
        }
    }

    /// The instructions its GEMM runs on, for logs and status.
    pub fn kernel(self) -> &'static str {
        match self {
            DenseFormat::Bf16(_) => "avx512-bf16",
            DenseFormat::Int8(_) => "avx512-vnni",
        }
    }
}

/// The buffers a model reuses from batch to batch. The engine runs one
/// batch of a model at a time; the lock only lets the model be shared.
pub(crate) struct Scratchpad<S>(Mutex<S>);

impl<S: Default> Default for Scratchpad<S> {
    fn default() -> Self {
        Scratchpad(Mutex::new(S::default()))
    }
}

impl<S> Scratchpad<S> {
    /// One forward pass over the buffers: `pass` fills them, leaving the
    /// token vectors at the start of what `tokens` picks, of which the first
    /// `len` values are copied into `out` (what [`TokenModel::forward`] returns).
    pub(crate) fn forward(
        &self,
        len: usize,
        out: &mut Vec<f32>,
        pass: impl FnOnce(&mut S) -> Result<(), EmbedError>,
        tokens: fn(&S) -> &[f32],
    ) -> Result<(), EmbedError> {
        let mut buffers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pass(&mut buffers)?;
        out.clear();
        out.extend_from_slice(&tokens(&buffers)[..len]);
        Ok(())
    }
}

/// What the engine needs to know of a model before loading its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// Width of the token vectors.
    pub hidden: usize,
    /// Longest sequence (special tokens included) its positions allow.
    pub max_tokens: usize,
}

/// Builds a model from config.json and the checkpoint's tensors.
pub type LoadFn = fn(&ModelConfig, &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError>;

/// One architecture: the `model_type` values it runs and how.
pub struct Architecture {
    /// config.json `model_type` values this architecture runs.
    pub model_types: &'static [&'static str],
    /// Reads the shape from config.json alone.
    pub shape: fn(&ModelConfig) -> Result<ModelShape, EmbedError>,
    /// Builds the model from config.json and the checkpoint's tensors.
    pub load: LoadFn,
}

/// Every architecture the CPU engine runs.
pub const ARCHITECTURES: &[Architecture] = &[
    bert::ARCHITECTURE,
    xlm_roberta::ARCHITECTURE,
    mpnet::ARCHITECTURE,
    qwen3::ARCHITECTURE,
    modernbert::ARCHITECTURE,
    gemma3::ARCHITECTURE,
    gte::ARCHITECTURE,
    nomic::ARCHITECTURE,
];

/// `model_type` values the CPU engine runs, in [`ARCHITECTURES`] order.
pub fn supported_model_types() -> Vec<&'static str> {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.model_types.iter().copied())
        .collect()
}

/// The architecture that runs `cfg.model_type`.
pub fn architecture(cfg: &ModelConfig) -> Result<&'static Architecture, EmbedError> {
    ARCHITECTURES
        .iter()
        .find(|a| a.model_types.contains(&cfg.model_type.as_str()))
        .ok_or_else(|| unsupported_model_type(&cfg.model_type))
}

/// The error for a `model_type` no engine here can run.
pub fn unsupported_model_type(model_type: &str) -> EmbedError {
    EmbedError::Unsupported(format!(
        "model_type {model_type:?} is not supported by the native engine (supported: {})",
        supported_model_types().join(", ")
    ))
}
