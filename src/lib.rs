//! papersys keeps sentence embeddings of arXiv paper metadata complete,
//! correct and up to date, for several models at once.
//!
//! Data flows one way: [`metadata`] (CSV input) → [`plan`] (what is missing)
//! → batches → a backend behind [`papersys_backend_core::Embedder`] →
//! [`store`] (Parquet year files, manifest, backlog). The `papersys` binary
//! is a thin shell over this library.

#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod fault;
pub mod ingest;
pub mod interrupt;
pub mod metadata;
pub mod pipeline;
pub mod plan;
pub mod prefs;
pub mod query;
pub mod recommend;
pub mod store;
pub mod text;

/// The message of a caught panic (`panic!` with a literal or a formatted
/// string); empty for any other payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
