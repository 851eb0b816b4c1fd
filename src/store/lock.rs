//! One writer per model directory.
//!
//! Two runs writing the same year files would interleave checkpoints and
//! lose vectors, so every command that writes takes an exclusive advisory
//! lock (`flock`) on `<alias>/.papersys.lock` and records its pid there. The
//! kernel releases the lock when the process dies, however it dies, so a
//! lock left by a killed run never blocks the next one: the file may still
//! name the dead pid, and the next writer simply takes it over. Readers
//! (`papersys status`, a Python recommender) never take it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a model directory.
pub const LOCK_FILE: &str = ".papersys.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another papersys process ({holder}) is writing to {}; wait for it to finish, or stop it, then retry",
        .dir.display()
    )]
    Held {
        /// The model directory.
        dir: PathBuf,
        /// What the holder wrote into the lock file (its pid).
        holder: String,
    },
    /// The lock file could not be opened.
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An exclusive writer lock on a model directory, held until dropped.
#[derive(Debug)]
pub struct WriterLock {
    // Holding the open file holds the flock.
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// Takes the lock on `dir` or fails at once (never waits) naming the
    /// holder's pid.
    pub fn acquire(dir: &Path) -> Result<WriterLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the lock file is a symbolic link; papersys does not write through links (they could lead \
                 outside the data root) — remove it",
            )));
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        // Never follow a link planted between the check above and the open.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "pid unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        if let Some(pid) = previous.trim().strip_prefix("pid ") {
            tracing::debug!(
                "took over {} last held by pid {pid}, which has exited",
                path.display()
            );
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "pid {}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(WriterLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_fails_at_once_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::acquire(dir.path()).unwrap();
        let err = WriterLock::acquire(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        assert!(WriterLock::acquire(dir.path()).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        let err = WriterLock::acquire(dir.path()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "pid 999999\n").unwrap();
        let lock = WriterLock::acquire(dir.path()).unwrap();
        let content = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(content, format!("pid {}\n", std::process::id()));
    }
}
