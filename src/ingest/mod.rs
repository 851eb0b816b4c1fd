//! Ingestion: arXiv metadata in (OAI-PMH harvests and the Kaggle snapshot),
//! merged into the contract's `metadata/metadata-YYYY.csv` files.
//!
//! Data flows one way: a source (`oai` + `harvest`, or `snapshot`) parses
//! records into [`row::ArxivPaper`], [`row::to_record`] turns each into a
//! contract row, and [`merge`] commits rows into the year files. The
//! snapshot's rows travel [`encoded`]: as their CSV line, made once.

pub mod config;
pub mod encoded;
pub mod harvest;
pub mod merge;
pub mod oai;
pub mod row;
pub mod snapshot;
pub mod state;
pub mod writer;
