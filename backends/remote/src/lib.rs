//! papersys' client for OpenAI-compatible embedding servers: vLLM,
//! text-embeddings-inference, Infinity, Ollama, OpenAI itself, and fleets
//! of them, behind the same [`Embedder`](papersys_backend_core::Embedder)
//! trait as the native engine.
//!
//! Each call to `embed` is one `POST {base_url}/v1/embeddings` with
//! `{"model", "input": [...], "encoding_format"}` (plus `"dimensions"` when
//! configured), sent to the healthy server with the fewest requests in
//! flight, at most `max_concurrency` per server.
//!
//! # Failure policy
//! - **Retried** (up to `max_retries` more attempts per batch, on another
//!   server when one is free): 429, 408 and 5xx answers, timeouts, refused
//!   or dropped connections, and malformed answers (not JSON, wrong number
//!   of vectors, bad or repeated `index`): a restarting server or a proxy in
//!   between can produce those once and answer well the next time.
//! - **Backoff**: a server that failed gets no request for
//!   `backoff_base × 2^(failures in a row − 1)` (capped at `backoff_max`,
//!   jittered to 50–100 %), or for what its `Retry-After` (seconds or HTTP
//!   date) or `retry-after-ms` asks, capped at `backoff_max`.
//! - **Circuit breaker**: after `breaker_threshold` failures in a row (429s
//!   do not count: the server is alive) a server is paused for
//!   `breaker_cooldown`, then one probe request decides whether it rejoins.
//!   While every server is paused, `embed` fails at once with an error
//!   naming each server and its last error.
//! - **Not retried**: wrong vector dimension (a configuration error: the
//!   message says to check `dimension`/`dimensions`), NaN or infinity (the
//!   model does the same on the same input), a body larger than the batch
//!   can need (see below), 401/403/404/413 and other 4xx, redirects.
//! - A response is used whole or not at all: nothing of a bad answer is
//!   returned.
//! - The start-up check ([`RemoteEmbedder::check`]) follows the same retry,
//!   backoff and `Retry-After` policy for 429 and 503 answers (the server
//!   is there, only busy) and logs each wait.
//!
//! # Limits
//! A response body may take at most 48 bytes per float plus 1 MiB; reading
//! stops there. With `tokens_per_minute` a shared token bucket paces
//! requests by [`estimate_tokens`].
//!
//! # base64
//! With [`Encoding::Auto`] (the default) each server is asked for base64
//! (little-endian `f32`) and switched to float for good if it refuses
//! (400/415/422) or sends base64 of the wrong length. Float answers to a
//! base64 request are accepted too.
//!
//! API keys are [`Secret`](papersys_backend_core::Secret)s: they appear in
//! the `Authorization` header only, and are scrubbed from every message a
//! server sends back.

#![warn(missing_docs)]

mod embedder;
mod fleet;
mod options;
mod protocol;
mod rate;
mod transport;

pub use embedder::{RemoteEmbedder, ServerCheck};
pub use fleet::ServerStats;
pub use options::{
    BACKEND_NAMES, BaseUrl, DEFAULT_TIMEOUT, Encoding, REMOTE_KEYS, RemoteOptions, RemoteTable,
};
pub use rate::estimate_tokens;
