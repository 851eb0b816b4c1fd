//! Test-only fault injection: kill the process at a named point, or make
//! writes fail as on a full disk.
//!
//! Compiled in only with the cargo feature `fault-injection`, which release
//! builds never enable; without it every function here is an empty inline
//! function and the environment is never read. With it, two variables are
//! read once per process:
//!
//! * `PAPERSYS_FAULT_POINT=<name>:<n>` — the process sends itself SIGKILL
//!   the n-th time (1-based) it reaches the point `<name>`; `any:<n>` counts
//!   every point. Points are listed in `tests/faults.rs` and
//!   `scripts/torture.sh`: `embed.after_batch`, `checkpoint.after_write`,
//!   `fold.after_merge`, `fold.before_remove_checkpoints`,
//!   `promote.after_intent`, `promote.move_old`, `promote.move_new`,
//!   `promote.before_cleanup`, `relocate.after_move` (tests/duplicate_papers.rs),
//!   and `<kind>.before_rename` /
//!   `<kind>.after_rename` inside every atomic file replacement, where
//!   `<kind>` is `year`, `checkpoint`, `manifest`, `backlog`, `intent` or `other`.
//! * `PAPERSYS_FAULT_WRITE_LIMIT=<bytes>` — once atomic file writes have
//!   written that many bytes in total, every further one fails with ENOSPC
//!   ("No space left on device"), as a full disk would.

use std::path::Path;

/// The kind of file an atomic write replaces, for point names.
pub fn file_kind(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let in_checkpoints = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == crate::store::checkpoint::CHECKPOINT_DIR);
    match name {
        "manifest.json" => "manifest",
        "backlog.parquet" => "backlog",
        "promote.json" => "intent",
        _ if name.ends_with(".parquet") && in_checkpoints => "checkpoint",
        _ if name.strip_suffix(".parquet").is_some_and(|s| s.len() == 4) => "year",
        _ => "other",
    }
}

#[cfg(feature = "fault-injection")]
mod active {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Spec {
        point: String,
        nth: u64,
    }

    fn spec() -> Option<&'static Spec> {
        static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
        SPEC.get_or_init(|| {
            let value = std::env::var("PAPERSYS_FAULT_POINT").ok()?;
            let (point, nth) = value.rsplit_once(':')?;
            Some(Spec {
                point: point.to_string(),
                nth: nth.parse().ok()?,
            })
        })
        .as_ref()
    }

    fn write_limit() -> Option<u64> {
        static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
        *LIMIT.get_or_init(|| std::env::var("PAPERSYS_FAULT_WRITE_LIMIT").ok()?.parse().ok())
    }

    static REACHED: AtomicU64 = AtomicU64::new(0);
    static WRITTEN: AtomicU64 = AtomicU64::new(0);

    pub fn point(name: &str) {
        let Some(spec) = spec() else { return };
        if spec.point != name && spec.point != "any" {
            return;
        }
        if REACHED.fetch_add(1, Ordering::SeqCst) + 1 == spec.nth {
            eprintln!("fault injection: SIGKILL at {name} (#{})", spec.nth);
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // SIGKILL cannot be caught; should it not be delivered at once,
            // never continue past the point.
            loop {
                std::thread::park();
            }
        }
    }

    pub fn charge_write(file: &std::fs::File) -> std::io::Result<()> {
        let Some(limit) = write_limit() else {
            return Ok(());
        };
        let bytes = file.metadata()?.len();
        if WRITTEN.fetch_add(bytes, Ordering::SeqCst) + bytes > limit {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

/// Marks a named point a fault test may kill the process at.
#[inline(always)]
pub fn point(name: &str) {
    #[cfg(feature = "fault-injection")]
    active::point(name);
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// The point `<kind of path>.<stage>` of an atomic write.
#[inline(always)]
pub fn write_point(path: &Path, stage: &str) {
    #[cfg(feature = "fault-injection")]
    active::point(&format!("{}.{stage}", file_kind(path)));
    #[cfg(not(feature = "fault-injection"))]
    let _ = (path, stage);
}

/// Counts the bytes of a file just written; fails with ENOSPC past the
/// configured budget.
#[inline(always)]
pub fn charge_write(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(feature = "fault-injection")]
    return active::charge_write(file);
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_file_names() {
        assert_eq!(file_kind(Path::new("/d/m/manifest.json")), "manifest");
        assert_eq!(file_kind(Path::new("/d/m/2024.parquet")), "year");
        assert_eq!(
            file_kind(Path::new("/d/m/.pending/2024-x-1.parquet")),
            "checkpoint"
        );
        assert_eq!(file_kind(Path::new("/d/m/backlog.parquet")), "backlog");
        assert_eq!(file_kind(Path::new("/d/m/.cache/refresh-state.json")), "other");
    }
}
