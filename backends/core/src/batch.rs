//! What travels between the pipeline and a backend.

use crate::EmbedError;

/// Scheduling advice a backend gives the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchingHint {
    /// Texts per call to [`crate::Embedder::embed`].
    pub batch_size: usize,
    /// Calls the pipeline may have running at once. The native engine uses
    /// every core inside one call, so it asks for 1; a server fleet asks for
    /// its total request concurrency.
    pub max_in_flight: usize,
}

/// Token ids of several texts packed back to back, without padding.
///
/// Text `i` owns `input_ids[cu_seq_lengths[i]..cu_seq_lengths[i + 1]]`, the
/// layout text-embeddings-inference uses: no compute is spent on padding and
/// attention never has to mask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenBatch {
    /// All token ids, text after text.
    pub input_ids: Vec<u32>,
    /// Cumulative lengths; starts with 0 and has one more entry than texts.
    pub cu_seq_lengths: Vec<u32>,
}

impl TokenBatch {
    /// Number of texts in the batch.
    pub fn len(&self) -> usize {
        self.cu_seq_lengths.len().saturating_sub(1)
    }

    /// True when the batch holds no text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids of text `i`.
    pub fn sequence(&self, i: usize) -> &[u32] {
        let start = self.cu_seq_lengths[i] as usize;
        let end = self.cu_seq_lengths[i + 1] as usize;
        &self.input_ids[start..end]
    }

    /// Length in tokens of the longest text.
    pub fn max_sequence_length(&self) -> usize {
        self.cu_seq_lengths
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }
}

/// A batch after [`crate::Embedder::prepare`].
#[derive(Clone, Debug, PartialEq)]
pub enum PreparedBatch {
    /// Texts, for backends that tokenize elsewhere (servers).
    Texts(Vec<String>),
    /// Token ids, for backends that run the model in this process.
    Tokens(TokenBatch),
}

impl PreparedBatch {
    /// Number of texts in the batch.
    pub fn len(&self) -> usize {
        match self {
            PreparedBatch::Texts(texts) => texts.len(),
            PreparedBatch::Tokens(tokens) => tokens.len(),
        }
    }

    /// True when the batch holds no text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Vectors of one batch, row-major: row `i` belongs to text `i`.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    dimension: usize,
    data: Vec<f32>,
}

impl Embeddings {
    /// Wraps `data` as rows of `dimension` floats; fails when the length is
    /// not a whole number of rows.
    pub fn new(dimension: usize, data: Vec<f32>) -> Result<Self, EmbedError> {
        if dimension == 0 || !data.len().is_multiple_of(dimension) {
            return Err(EmbedError::InvalidOutput(format!(
                "{} floats do not form rows of dimension {dimension}",
                data.len()
            )));
        }
        Ok(Embeddings { dimension, data })
    }

    /// Vector length.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len() / self.dimension
    }

    /// True when there is no vector.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dimension..(i + 1) * self.dimension]
    }

    /// All vectors in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        self.data.chunks_exact(self.dimension)
    }

    /// The flat row-major buffer.
    pub fn as_flat(&self) -> &[f32] {
        &self.data
    }

    /// Checks what the store may rely on: `expected_rows` vectors of
    /// `expected_dimension`, every value finite. A backend's output is never
    /// written before this passes.
    pub fn validate(&self, expected_rows: usize, expected_dimension: usize) -> Result<(), EmbedError> {
        if self.dimension != expected_dimension {
            return Err(EmbedError::InvalidOutput(format!(
                "vectors have dimension {}, expected {expected_dimension}",
                self.dimension
            )));
        }
        if self.len() != expected_rows {
            return Err(EmbedError::InvalidOutput(format!(
                "{} vectors for {expected_rows} texts",
                self.len()
            )));
        }
        if let Some(position) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(EmbedError::InvalidOutput(format!(
                "vector {} holds a non-finite value ({})",
                position / self.dimension,
                self.data[position]
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_batch_slices_sequences() {
        let batch = TokenBatch {
            input_ids: vec![101, 7, 102, 101, 8, 9, 102],
            cu_seq_lengths: vec![0, 3, 7],
        };
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.sequence(1), &[101, 8, 9, 102]);
        assert_eq!(batch.max_sequence_length(), 4);
    }

    #[test]
    fn embeddings_reject_ragged_data() {
        assert!(Embeddings::new(3, vec![0.0; 7]).is_err());
        assert!(Embeddings::new(0, vec![]).is_err());
    }

    #[test]
    fn validate_catches_count_dimension_and_nan() {
        let ok = Embeddings::new(2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        assert!(ok.validate(2, 2).is_ok());
        assert!(
            ok.validate(3, 2)
                .unwrap_err()
                .to_string()
                .contains("2 vectors for 3 texts")
        );
        assert!(ok.validate(2, 4).is_err());
        let nan = Embeddings::new(2, vec![1.0, 0.0, f32::NAN, 1.0]).unwrap();
        let message = nan.validate(2, 2).unwrap_err().to_string();
        assert!(message.contains("vector 1"), "{message}");
        let inf = Embeddings::new(1, vec![f32::INFINITY]).unwrap();
        assert!(inf.validate(1, 1).is_err());
    }
}
