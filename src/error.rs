//! The library's top-level error and the exit code each kind maps to.

use crate::config::ConfigError;
use crate::metadata::DiscoveryError;
use crate::store::StoreError;

/// Exit code of a successful run.
pub const EXIT_OK: i32 = 0;
/// Exit code when the work failed at run time (I/O, damaged data, failed
/// embeddings, another writer holding the lock).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for a usage or config error: nothing was attempted.
pub const EXIT_USAGE: i32 = 2;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line asks for something that does not exist.
    #[error("{0}")]
    Usage(String),
    /// The metadata directory cannot be listed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedding backend could not be built or failed for good.
    #[error(transparent)]
    Embed(#[from] papersys_backend_core::EmbedError),
    /// A query could not be answered (no vectors yet, unreadable year file).
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    /// A run that did its work but must be reported as failed.
    #[error("{0}")]
    Run(String),
    /// The preference store could not be read or written.
    #[error(transparent)]
    Prefs(#[from] crate::prefs::PrefsError),
    /// A recommendation run could not be made.
    #[error(transparent)]
    Recommend(#[from] crate::recommend::RecommendError),
    /// Ctrl-C or SIGTERM stopped the work; what was done is saved.
    #[error("{0}")]
    Interrupted(String),
    /// A stage of `papersys update` failed; the later stages did not run.
    #[error("{stage} failed: {source}")]
    Stage {
        /// The stage (`ingest`, `embed`, `recommend`).
        stage: &'static str,
        /// Its error; the run's exit code is this error's.
        source: Box<Error>,
    },
}

impl Error {
    /// What to do about an error whose cause is the machine rather than the
    /// data: a full disk or a read-only filesystem, wherever in the chain of
    /// causes the OS said so.
    pub fn hint(&self) -> Option<&'static str> {
        let text = self.to_string();
        let mut full = text.contains("No space left on device");
        let mut read_only = text.contains("Read-only file system");
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = cause {
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                full |= io.kind() == std::io::ErrorKind::StorageFull;
                read_only |= io.kind() == std::io::ErrorKind::ReadOnlyFilesystem;
            }
            cause = error.source();
        }
        if full {
            Some(
                "the disk holding the data root is full. Everything committed before this error is kept \
                 (checkpoints included) and no file was left half-written; free some space and run the same \
                 command again to resume",
            )
        } else if read_only {
            Some(
                "the data root is on a read-only filesystem and papersys writes only there; remount it \
                 read-write or point data_root elsewhere (`papersys status` and `embed --dry-run` work read-only)",
            )
        } else {
            None
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) => EXIT_USAGE,
            Error::Prefs(e) if e.is_usage() => EXIT_USAGE,
            Error::Recommend(e) => e.exit_code(),
            Error::Interrupted(_) => crate::interrupt::EXIT_INTERRUPTED,
            Error::Stage { source, .. } => source.exit_code(),
            // A metadata directory that does not exist is a config mistake
            // (data_root or [ingestion].output_dir), not a run-time failure.
            Error::Discovery(crate::metadata::DiscoveryError::Unreadable { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                EXIT_USAGE
            }
            _ => EXIT_FAILURE,
        }
    }
}
