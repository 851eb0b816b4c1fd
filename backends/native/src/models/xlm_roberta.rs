//! XLM-RoBERTa (and RoBERTa): the BERT encoder with positions counted from
//! `padding_idx + 1` and a single token type.

use papersys_backend_core::EmbedError;

use super::encoder::{Encoder, EncoderConfig, EncoderModel};
use super::{Architecture, ModelShape, TokenModel};
use crate::config::ModelConfig;
use crate::weights::Tensors;

/// `model_type = "xlm-roberta"` or `"roberta"`.
pub const ARCHITECTURE: Architecture = Architecture {
    model_types: &["xlm-roberta", "roberta"],
    shape,
    load,
};

/// Tensor name prefixes XLM-R checkpoints use.
const PREFIXES: [&str; 3] = ["", "roberta.", "model."];

/// Hugging Face numbers the positions of unpadded tokens `padding_idx + 1,
/// padding_idx + 2, ...`, so a sequence may hold at most
/// `max_position_embeddings - padding_idx - 1` tokens.
fn config(cfg: &ModelConfig) -> Result<EncoderConfig, EmbedError> {
    let transformer = cfg.transformer()?;
    let offset = transformer.pad_token_id.unwrap_or(1) + 1;
    EncoderConfig::from_transformer(&transformer, offset)
}

fn shape(cfg: &ModelConfig) -> Result<ModelShape, EmbedError> {
    let c = config(cfg)?;
    Ok(ModelShape {
        hidden: c.hidden,
        max_tokens: c.max_tokens(),
    })
}

fn load(cfg: &ModelConfig, tensors: &Tensors<'_>) -> Result<Box<dyn TokenModel>, EmbedError> {
    let prefix = tensors.find_prefix(&PREFIXES, "embeddings.word_embeddings.weight")?;
    let encoder = Encoder::load(tensors, &prefix, config(cfg)?)?;
    Ok(Box::new(EncoderModel::new(encoder)))
}
