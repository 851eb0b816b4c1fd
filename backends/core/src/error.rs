//! The one error type backends report through the trait.

/// Why a backend could not be built or could not embed a batch.
///
/// Messages are meant for the user: they name the model, file or server and,
/// where there is one, what to do. They never contain an API key.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model could not be found or loaded (construction time).
    #[error("{0}")]
    Load(String),
    /// The configuration asks for something this build or model cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// One option of the model table cannot work (a `model_path` that does
    /// not exist, a `device` this build cannot run on). The caller, which
    /// knows where the option was written, names its file and line.
    #[error("`{key}`: {message}")]
    BadOption {
        /// The option's key in the model table.
        key: &'static str,
        /// What is wrong with its value and what to do.
        message: String,
    },
    /// Tokenisation failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// The forward pass failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A server refused, timed out or answered something unusable, after the
    /// backend's own retries.
    #[error("server {server}: {message}")]
    Remote {
        /// Which server (its base URL).
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The backend produced vectors the store must not accept (wrong count,
    /// wrong dimension, NaN or infinity).
    #[error("invalid vectors: {0}")]
    InvalidOutput(String),
}
