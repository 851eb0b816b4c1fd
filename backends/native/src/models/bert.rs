//! BERT-family encoders: all-MiniLM-L6-v2, BGE, E5, GTE-style BERT checkpoints.

use papersys_backend_core::EmbedError;

use super::encoder::{Encoder, EncoderConfig};
use crate::config::TransformerConfig;
use crate::weights::Tensors;

/// Tensor name prefixes BERT checkpoints use (`BertModel`, `BertFor*`).
const PREFIXES: [&str; 3] = ["", "bert.", "model."];

/// Loads a BERT checkpoint: positions start at 0.
pub fn load(cfg: &TransformerConfig, tensors: &Tensors<'_>) -> Result<Encoder, EmbedError> {
    let prefix = tensors.find_prefix(&PREFIXES, "embeddings.word_embeddings.weight")?;
    Encoder::load(tensors, &prefix, EncoderConfig::from_transformer(cfg, 0)?)
}
