//! Turning prepared texts into packed token ids, with the truncation the
//! model actually uses.

use std::path::Path;

use papersys_backend_core::{EmbedError, TokenBatch};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// A `tokenizer.json` tokenizer set to the model's effective truncation and
/// no padding, plus the text transforms sentence-transformers applies first.
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    prefix: String,
    lowercase: bool,
    max_tokens: usize,
}

impl TextTokenizer {
    /// Loads `path`, replacing whatever truncation and padding the file
    /// carries (all-MiniLM-L6-v2's says 128 tokens, fixed padding) with
    /// truncation at `max_tokens` (special tokens included) and no padding.
    pub fn load(path: &Path, max_tokens: usize, prefix: String, lowercase: bool) -> Result<Self, EmbedError> {
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| EmbedError::Load(format!("cannot load tokenizer {}: {e}", path.display())))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| {
                EmbedError::Load(format!(
                    "tokenizer {}: cannot truncate at {max_tokens}: {e}",
                    path.display()
                ))
            })?;
        Ok(TextTokenizer {
            tokenizer,
            prefix,
            lowercase,
            max_tokens,
        })
    }

    /// The text put before every document.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Truncation length in tokens, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids of one text: prefix added, lowercased if the model asks,
    /// special tokens added, truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let mut full = String::with_capacity(self.prefix.len() + text.len());
        full.push_str(&self.prefix);
        full.push_str(text);
        if self.lowercase {
            full = full.to_lowercase();
        }
        let encoding = self
            .tokenizer
            .encode_fast(full.as_str(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// How many leading tokens the prefix takes, as sentence-transformers
    /// counts a prompt's length: the prefix tokenised alone, special tokens
    /// included, less a trailing special token (0 for no prefix).
    pub fn prefix_tokens(&self) -> Result<usize, EmbedError> {
        if self.prefix.is_empty() {
            return Ok(0);
        }
        let prefix = if self.lowercase {
            self.prefix.to_lowercase()
        } else {
            self.prefix.clone()
        };
        let encoding = self
            .tokenizer
            .encode_fast(prefix.as_str(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let trailing_special = encoding.get_special_tokens_mask().last() == Some(&1);
        Ok(encoding.len() - usize::from(trailing_special))
    }

    /// Packs the token ids of `texts` back to back.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch, EmbedError> {
        let mut batch = TokenBatch {
            input_ids: Vec::with_capacity(texts.len() * 128),
            cu_seq_lengths: Vec::with_capacity(texts.len() + 1),
        };
        batch.cu_seq_lengths.push(0);
        for text in texts {
            let ids = self.encode(text.as_ref())?;
            batch.input_ids.extend_from_slice(&ids);
            let end = u32::try_from(batch.input_ids.len())
                .map_err(|_| EmbedError::Tokenize("batch holds more than 4 billion tokens".into()))?;
            batch.cu_seq_lengths.push(end);
        }
        Ok(batch)
    }
}
