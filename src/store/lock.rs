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

/// The pid of the process holding the writer lock of `dir`, if one does,
/// found without touching the lock: the kernel's list of held locks
/// (`/proc/locks`) is matched against the lock file's device and inode.
/// `None` when nobody writes, or where the kernel does not say (not Linux).
pub fn holder(dir: &Path) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(dir.join(LOCK_FILE)).ok()?;
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        holder_in(&locks, meta.dev(), meta.ino())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// The pid holding a lock on the file (`dev`, `ino`) in `/proc/locks` text:
/// `1: FLOCK  ADVISORY  WRITE 2497 00:2d:1867 0 EOF` (device numbers in
/// hex, inode in decimal); waiters (`->`) do not hold it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // glibc's encoding of a dev_t.
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.len() < 6 {
            return None;
        }
        let mut id = fields[5].split(':');
        let (maj, min, inode) = (id.next()?, id.next()?, id.next()?);
        let matches = u64::from_str_radix(maj, 16).ok()? == major
            && u64::from_str_radix(min, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == ino;
        if matches { fields[4].parse().ok() } else { None }
    })
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
    fn the_holder_is_read_from_the_kernels_lock_list() {
        let dev = (8u64 << 8) | 1; // 08:01
        let text = "1: POSIX  ADVISORY  WRITE 11 08:01:99 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 08:01:1867 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 77 08:01:1867 0 EOF\n";
        assert_eq!(holder_in(text, dev, 1867), Some(4242));
        assert_eq!(holder_in(text, dev, 1868), None);
        assert_eq!(holder_in(text, dev + 1, 1867), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_held_lock_names_its_holder_and_a_free_one_nobody() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), None, "no lock file");
        let lock = WriterLock::acquire(dir.path()).unwrap();
        assert_eq!(holder(dir.path()), Some(std::process::id()));
        drop(lock);
        assert_eq!(holder(dir.path()), None);
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
