//! XLM-RoBERTa (and RoBERTa): the BERT encoder with positions counted from
//! `padding_idx + 1` and a single token type.

use papersys_backend_core::EmbedError;

use super::encoder::{Encoder, EncoderConfig};
use crate::config::TransformerConfig;
use crate::weights::Tensors;

/// Tensor name prefixes XLM-R checkpoints use.
const PREFIXES: [&str; 3] = ["", "roberta.", "model."];

/// Loads an XLM-RoBERTa checkpoint. Hugging Face numbers the positions of
/// unpadded tokens `padding_idx + 1, padding_idx + 2, ...`, so a sequence
/// may hold at most `max_position_embeddings - padding_idx - 1` tokens.
pub fn load(cfg: &TransformerConfig, tensors: &Tensors<'_>) -> Result<Encoder, EmbedError> {
    let prefix = tensors.find_prefix(&PREFIXES, "embeddings.word_embeddings.weight")?;
    let offset = cfg.pad_token_id.unwrap_or(1) + 1;
    Encoder::load(tensors, &prefix, EncoderConfig::from_transformer(cfg, offset)?)
}
