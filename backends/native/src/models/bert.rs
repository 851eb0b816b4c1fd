//! BERT-family encoders: all-MiniLM-L6-v2, BGE, E5, GTE-style BERT checkpoints.

use papersys_backend_core::EmbedError;

use super::encoder::{Encoder, EncoderConfig, EncoderModel};
use super::{Architecture, ModelShape, TokenModel};
use crate::config::ModelConfig;
use crate::weights::Tensors;

/// `model_type = "bert"`.
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["bert"],
    shape,
    load,
};

/// Tensor name prefixes BERT checkpoints use (`BertModel`, `BertFor*`).
const PREFIXES: [&str; 3] = ["", "bert.", "model."];

fn config(cfg: &ModelConfig) -> Result<EncoderConfig, EmbedError> {
    EncoderConfig::from_transformer(&cfg.transformer()?, 0)
}

fn shape(cfg: &ModelConfig) -> Result<ModelShape, EmbedError> {
    let c = config(cfg)?;
    Ok(ModelShape {
        hidden: c.hidden,
        max_tokens: c.max_tokens(),
    })
}

/// Loads a BERT checkpoint: positions start at 0.
fn load(cfg: &ModelConfig, tensors: &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError> {
    let prefix = tensors.find_prefix(&PREFIXES, "embeddings.word_embeddings.weight")?;
    let encoder = Encoder::load(tensors, &prefix, config(cfg)?)?;
    Ok(Box::new(EncoderModel::new(encoder)))
}
