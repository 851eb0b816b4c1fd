//! Supported architectures. Each maps its checkpoint onto the shared
//! [`encoder::Encoder`]; they differ only in tensor names and position ids.

pub mod bert;
pub mod encoder;
pub mod xlm_roberta;

use papersys_backend_core::EmbedError;

use crate::config::TransformerConfig;
use crate::weights::Tensors;
use encoder::Encoder;

/// `model_type` values this engine runs.
pub const SUPPORTED_MODEL_TYPES: [&str; 3] = ["bert", "xlm-roberta", "roberta"];

/// Builds the encoder for `cfg.model_type` from the checkpoint's tensors.
pub fn load_encoder(cfg: &TransformerConfig, tensors: &Tensors<'_>) -> Result<Encoder, EmbedError> {
    match cfg.model_type.as_str() {
        "bert" => bert::load(cfg, tensors),
        "xlm-roberta" | "roberta" => xlm_roberta::load(cfg, tensors),
        other => Err(unsupported_model_type(other)),
    }
}

/// The error for a `model_type` no engine here can run.
pub fn unsupported_model_type(model_type: &str) -> EmbedError {
    EmbedError::Unsupported(format!(
        "model_type {model_type:?} is not supported by the native engine (supported: {})",
        SUPPORTED_MODEL_TYPES.join(", ")
    ))
}
