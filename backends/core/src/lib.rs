//! The contract between the embed pipeline and every embedding backend.
//!
//! The pipeline only ever talks to a `dyn Embedder`: the native CPU engine, a
//! GPU build and the HTTP client for OpenAI-compatible servers all implement
//! it. Work is split in two steps so that the cheap one can overlap the
//! expensive one: [`Embedder::prepare`] (tokenisation, run on a producer
//! thread) and [`Embedder::embed`] (inference).

#![warn(missing_docs)]

mod batch;
mod error;
mod identity;
mod options;
mod secret;

pub use batch::{BatchingHint, Embeddings, PreparedBatch, TokenBatch};
pub use error::EmbedError;
pub use identity::{IdentityMismatch, ModelIdentity, Pooling};
pub use options::{Positive, Seconds};
pub use secret::Secret;

/// A model that turns prepared texts into fixed-length `f32` vectors.
///
/// Implementations must be usable from several threads at once: a remote
/// backend is driven with many batches in flight, the native engine
/// serialises internally. Texts arrive already prepared (`title + "\n\n" +
/// abstract`, trimmed); adding the model's document prefix is the backend's
/// job, because only it knows the prefix (see [`ModelIdentity::document_prefix`]).
pub trait Embedder: Send + Sync {
    /// What produced the vectors, recorded in the manifest so that vectors of
    /// two different models never mix under one alias.
    fn identity(&self) -> &ModelIdentity;

    /// How the pipeline should cut and schedule work for this backend.
    fn batching(&self) -> BatchingHint;

    /// Turns texts into what [`Embedder::embed`] consumes (token ids for a
    /// local model, the texts themselves for a server). Cheap next to `embed`.
    fn prepare(&self, texts: Vec<String>) -> Result<PreparedBatch, EmbedError>;

    /// Embeds one prepared batch: one vector per text, in input order. The
    /// whole batch fails or succeeds together.
    fn embed(&self, batch: &PreparedBatch) -> Result<Embeddings, EmbedError>;
}
