//! Replacing a file so that no reader ever sees it half-written.
//!
//! The new content is written to a temporary file in the same directory,
//! flushed to disk, renamed over the target (atomic on POSIX), and then the
//! directory itself is flushed so the rename survives a power cut. A crash
//! at any moment leaves either the old file or the new one, plus at worst a
//! stray temporary that the next writer removes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Prefix of temporary files, so leftovers from a crash are recognised.
/// The writer's pid follows it (`.tmp-<pid>-<random>`), so that in a
/// directory shared by several writers a leftover can be told from a live
/// write.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Writes `path` atomically: `fill` receives a buffered writer for the new
/// content; the target is only replaced if `fill` and every flush succeed.
pub fn write_atomic<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<T>,
) -> io::Result<T> {
    let dir = parent_dir(path);
    let mut builder = tempfile::Builder::new();
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    builder.prefix(&prefix);
    // Readers may run as other users (a recommender service): create files
    // like any other program would, 0666 minus the umask, not tempfile's 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let temp = builder.tempfile_in(&dir)?;
    let (file, temp_path) = temp.into_parts();
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let value = fill(&mut writer)?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    crate::fault::charge_write(&file)?;
    file.sync_all()?;
    crate::fault::write_point(path, "before_rename");
    temp_path.persist(path).map_err(|e| e.error)?;
    crate::fault::write_point(path, "after_rename");
    sync_dir(&dir)?;
    Ok(value)
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// Removes `path` (if present) durably.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(&parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renames `from` to `to` durably: the directory gaining the entry is
/// flushed, and so is the one losing it when they differ (a move across
/// directories touches both; after a power cut neither may show the file
/// in both places or in none).
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    let (source, target) = (parent_dir(from), parent_dir(to));
    sync_dir(&target)?;
    if source != target {
        sync_dir(&source)?;
    }
    Ok(())
}

/// Flushes a directory's entries (new, renamed or removed files) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    synced::record(dir);
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, flushing each new directory's
/// parent so that the new entries survive a power cut (a directory whose
/// own entry was never flushed can vanish with everything in it).
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut current = dir;
    while std::fs::symlink_metadata(current).is_err() {
        missing.push(current.to_path_buf());
        match current.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => current = parent,
            _ => break,
        }
    }
    for new in missing.iter().rev() {
        match std::fs::create_dir(new) {
            Ok(()) => sync_dir(&parent_dir(new))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if std::fs::metadata(dir)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        ))
    }
}

/// Test-only record of the directories [`sync_dir`] flushed on this thread.
#[cfg(test)]
pub(crate) mod synced {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn record(dir: &Path) {
        SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    }

    /// The directories flushed since the last call, emptied.
    pub(crate) fn take() -> Vec<PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

/// Deletes temporary files (and directories) a crashed writer left in
/// `dir`. Only called by the holder of the directory's writer lock, so no
/// live write is touched. A missing `dir` has none.
pub fn remove_stale_temporaries(dir: &Path) -> io::Result<usize> {
    remove_temporaries(dir, |_| true)
}

/// Deletes the temporary files in `dir`, a directory several writers share
/// (the metadata index), whose writing process is gone. Where that cannot
/// be known (no `/proc`), nothing is removed.
pub fn remove_orphaned_temporaries(dir: &Path) -> io::Result<usize> {
    if !Path::new("/proc/self").exists() {
        return Ok(0);
    }
    remove_temporaries(dir, |name| {
        let pid = name[TEMP_PREFIX.len()..].split('-').next().unwrap_or("");
        !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !Path::new("/proc").join(pid).exists()
    })
}

fn remove_temporaries(dir: &Path, stale: impl Fn(&str) -> bool) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(TEMP_PREFIX) || !stale(&name) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
        removed += 1;
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Makes `dir` exist as a real directory (its parent must exist). A
/// symbolic link there is refused, not followed: papersys never writes
/// through a link, which could lead out of the data root.
pub fn create_owned_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; papersys does not write through links (they could lead outside the data root) — replace it with a directory",
                dir.display()
            ),
        )),
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
            Ok(()) => sync_dir(&parent_dir(dir)),
        },
        Err(e) => Err(e),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        write_bytes_atomic(&path, b"one").unwrap();
        write_bytes_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn files_are_readable_by_others_like_normal_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        write_bytes_atomic(&path, b"{}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o044,
            0o044,
            "mode {mode:o}: group and others must be able to read"
        );
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        write_bytes_atomic(&path, b"committed").unwrap();
        let result = write_atomic(&path, |w| {
            w.write_all(b"half")?;
            Err::<(), _>(io::Error::other("disk full"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"committed");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".tmp-abc"), b"x").unwrap();
        std::fs::create_dir(dir.path().join(".tmp-reembed-1")).unwrap();
        std::fs::write(dir.path().join(".tmp-reembed-1/2024.parquet"), b"x").unwrap();
        std::fs::write(dir.path().join("2024.parquet"), b"x").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 2);
        assert!(dir.path().join("2024.parquet").exists());
        assert_eq!(remove_stale_temporaries(&dir.path().join("absent")).unwrap(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_temporaries_of_dead_processes_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let live = format!(".tmp-{}-abc", std::process::id());
        std::fs::write(dir.path().join(&live), b"x").unwrap();
        // Pids are below 2^22 on Linux.
        std::fs::write(dir.path().join(".tmp-99999999-abc"), b"x").unwrap();
        assert_eq!(remove_orphaned_temporaries(dir.path()).unwrap(), 1);
        assert!(dir.path().join(live).exists());
    }

    #[test]
    fn new_directories_and_moves_flush_every_directory_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        synced::take();
        create_owned_dir(&root.join(".pending")).unwrap();
        assert_eq!(
            synced::take(),
            [root.to_path_buf()],
            "the parent of a new directory is flushed"
        );
        create_owned_dir(&root.join(".pending")).unwrap();
        assert!(synced::take().is_empty(), "an existing directory changes nothing");

        create_dir_all_durably(&root.join("a/b")).unwrap();
        assert_eq!(synced::take(), [root.to_path_buf(), root.join("a")]);
        assert!(root.join("a/b").is_dir());

        std::fs::write(root.join("a/2024.parquet"), b"x").unwrap();
        rename_durably(&root.join("a/2024.parquet"), &root.join(".pending/2024.parquet")).unwrap();
        let flushed = synced::take();
        assert!(flushed.contains(&root.join(".pending")), "{flushed:?}");
        assert!(
            flushed.contains(&root.join("a")),
            "the directory the file left is flushed too: {flushed:?}"
        );

        std::fs::write(root.join("a/f"), b"x").unwrap();
        let err = create_dir_all_durably(&root.join("a/f")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn owned_directories_refuse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(".pending")).unwrap();
        let err = create_owned_dir(&dir.path().join(".pending")).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        create_owned_dir(&dir.path().join(".cache")).unwrap();
        create_owned_dir(&dir.path().join(".cache")).unwrap();
        assert!(dir.path().join(".cache").is_dir());
    }
}
