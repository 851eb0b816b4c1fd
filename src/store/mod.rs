//! The on-disk store of one model: `embeddings/<alias>/`.

pub mod atomic;
pub mod backlog;
pub mod lock;
pub mod manifest;
pub mod year_file;
