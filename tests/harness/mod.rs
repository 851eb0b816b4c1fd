//! Helpers of the reliability suite (`tests/faults.rs`, `tests/bad_input.rs`,
//! `tests/security.rs`): a fast deterministic backend (the remote crate's
//! loopback test server), the store invariants every fault must leave
//! intact, and mounts for full and read-only filesystems.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use papersys::store::{manifest, year_file};

use crate::common::Tree;

/// Dimension of the fake server's vectors.
pub const DIM: usize = crate::common::REMOTE_DIM;
/// Alias of the remote model in [`remote_config`].
pub const ALIAS: &str = crate::common::REMOTE_ALIAS;

/// A config for the fake server at `url` (see [`crate::common::remote_config`]).
pub fn remote_config(url: &str, checkpoint: usize, extra: &str) -> String {
    crate::common::remote_config(&[url], checkpoint, extra)
}

/// Writes `n` papers of `year` (ids `YYMM.000NN` made unique by year);
/// returns id -> embedded text.
pub fn papers(tree: &Tree, year: u32, n: usize) -> BTreeMap<String, String> {
    let rows: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            (
                format!("{:02}01.{i:05}", year % 100),
                format!("Paper {i} of {year}"),
                format!("Abstract {i} of {year}, with enough words to look like one."),
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    tree.csv(&format!("metadata/metadata-{year}.csv"), &borrowed);
    rows.into_iter()
        .map(|(id, t, a)| (id, papersys::text::prepare_text(&t, &a)))
        .collect()
}

pub fn model_dir(tree: &Tree) -> PathBuf {
    tree.path(&format!("embeddings/{ALIAS}"))
}

/// Runs the binary with `envs`; returns its output (never panics on failure).
pub fn run(tree: &Tree, args: &[&str], envs: &[(&str, String)]) -> Output {
    command(
        Command::new(assert_cmd::cargo::cargo_bin("papersys")),
        tree,
        args,
        envs,
    )
    .output()
    .expect("spawn papersys")
}

/// Mounts the data root read-only for the command it wraps alone, in a
/// private user and mount namespace (no root needed where unprivileged user
/// namespaces are allowed); `$1` is the root, the rest the command.
const READ_ONLY_NS: &str = r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#;

/// Whether [`run_read_only`] works on this machine: a probe write into a
/// read-only bind mount of `root` must fail.
pub fn read_only_namespace_works(root: &Path) -> bool {
    Command::new("unshare")
        .args(["-Urm", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && ! touch "$1/.probe" 2>/dev/null"#)
        .arg("sh")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && !root.join(".probe").exists()
}

/// Runs the binary with the data root read-only for it alone (see
/// [`read_only_namespace_works`]); the test itself still writes there.
pub fn run_read_only(tree: &Tree, args: &[&str]) -> Output {
    let mut unshare = Command::new("unshare");
    unshare
        .args(["-Urm", "sh", "-c", READ_ONLY_NS, "sh"])
        .arg(tree.root())
        .arg(assert_cmd::cargo::cargo_bin("papersys"));
    command(unshare, tree, args, &[]).output().expect("spawn unshare")
}

/// A test whose precondition this machine cannot provide fails, saying
/// what it needs, unless `PAPERSYS_SKIP_MOUNT_TESTS=1` asks to skip it
/// knowingly: it never passes without testing.
pub fn unavailable(what: &str) {
    if std::env::var_os("PAPERSYS_SKIP_MOUNT_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED (PAPERSYS_SKIP_MOUNT_TESTS=1): this test needs {what}");
        return;
    }
    panic!(
        "this test needs {what}, which this machine does not allow; run it as root or where unprivileged \
         user namespaces are allowed (`unshare -Urm`), or set PAPERSYS_SKIP_MOUNT_TESTS=1 to skip it knowingly"
    );
}

/// `cmd` (the binary, or a wrapper whose last argument is the binary) with
/// the config, `args` and `envs`, run from the tree's root.
fn command(mut cmd: Command, tree: &Tree, args: &[&str], envs: &[(&str, String)]) -> Command {
    cmd.current_dir(tree.root())
        .arg("--config")
        .arg(tree.path("papersys.toml"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PAPERSYS_FAULT_POINT")
        .env_remove("PAPERSYS_FAULT_WRITE_LIMIT")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// True when the process died of SIGKILL.
pub fn killed(output: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal() == Some(9)
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file under `dir`, recursively (symlinks not followed).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                _ => out.push(path),
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// What a killed run may leave: every Parquet file (year files, checkpoint
/// checkpoints, replacement files) reads; year files are sorted and unique, and no
/// paper has rows in two year files; `status` works. Returns the live
/// vectors (id -> vector).
pub fn check_after_kill(tree: &Tree, context: &str) -> BTreeMap<String, Vec<f32>> {
    let dir = model_dir(tree);
    for path in walk(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let in_replaced = path
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with(".replaced-"));
        if name.ends_with(".parquet")
            && !name.starts_with(".tmp-")
            && !in_replaced
            && name != "backlog.parquet"
        {
            year_file::read_rows(&path, DIM)
                .unwrap_or_else(|e| panic!("{context}: {} does not read: {e}", path.display()));
        }
    }
    if dir.join("backlog.parquet").exists() {
        papersys::store::backlog::read(&dir).unwrap_or_else(|e| panic!("{context}: {e}"));
    }
    let live = live_vectors(&dir, context);
    let status = run(tree, &["status", "--json"], &[]);
    assert!(
        status.status.success(),
        "{context}: status fails after a kill: {}",
        text(&status)
    );
    live
}

/// Vectors of the live year files, checking sortedness and uniqueness.
pub fn live_vectors(dir: &Path, context: &str) -> BTreeMap<String, Vec<f32>> {
    let mut all = BTreeMap::new();
    for (_, path) in manifest::year_files(dir).unwrap() {
        let rows = year_file::read_rows(&path, DIM)
            .unwrap_or_else(|e| panic!("{context}: {} does not read: {e}", path.display()));
        let ids: Vec<&str> = rows.iter().map(|r| r.paper_id.as_str()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{context}: {} not sorted/unique",
            path.display()
        );
        for row in rows {
            let id = row.paper_id.clone();
            assert!(
                all.insert(row.paper_id, row.embedding).is_none(),
                "{context}: {id} has two rows"
            );
        }
    }
    all
}

/// After a completed run: the live year files hold exactly `expected`
/// (id -> text), each paper once with the server's vector of
/// `prefix + text`; the manifest lists exactly the files and their row
/// counts; no temporary file, checkpoint or replacement store is left anywhere.
pub fn check_complete(tree: &Tree, expected: &BTreeMap<String, String>, prefix: &str, context: &str) {
    let dir = model_dir(tree);
    let live = live_vectors(&dir, context);
    let got: BTreeSet<&String> = live.keys().collect();
    let want: BTreeSet<&String> = expected.keys().collect();
    assert_eq!(got, want, "{context}: every paper embedded exactly once");
    for (id, text) in expected {
        assert_eq!(
            live[id],
            crate::support::fake_vector(&format!("{prefix}{text}"), DIM),
            "{context}: {id} holds its own vector"
        );
    }
    check_manifest(&dir, context);
    for path in walk(tree.root()) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp-"),
            "{context}: temporary left: {}",
            path.display()
        );
    }
    assert!(
        !dir.join(".pending").exists(),
        "{context}: checkpoints left unfolded"
    );
    assert!(
        !dir.join(".reembed").exists(),
        "{context}: replacement store left"
    );
    assert!(
        !dir.join("backlog.parquet").exists(),
        "{context}: papers still wait"
    );
}

/// The manifest lists exactly the year files on disk with their row counts.
pub fn check_manifest(dir: &Path, context: &str) {
    let manifest = manifest::Manifest::read(dir)
        .unwrap_or_else(|e| panic!("{context}: {e}"))
        .unwrap_or_else(|| panic!("{context}: no manifest"));
    let files = manifest::year_files(dir).unwrap();
    let names: Vec<String> = files.iter().map(|(y, _)| format!("{y}.parquet")).collect();
    assert_eq!(manifest.files, names, "{context}: manifest files");
    let mut total = 0;
    for (year, path) in &files {
        let rows = year_file::row_count(path).unwrap();
        total += rows;
        assert_eq!(
            manifest.years.get(&year.to_string()),
            Some(&rows),
            "{context}: rows of {year}"
        );
    }
    assert_eq!(manifest.total_rows, total, "{context}: total_rows");
}

/// The repo's Python with pyarrow and polars (`scripts/python-env.sh`).
pub fn python() -> String {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-env.sh"))
        .output()
        .expect("python-env.sh");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `scripts/check_readers.py` on the model directory.
pub fn check_python_readers(python: &str, tree: &Tree, alias: &str, context: &str) {
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_readers.py"))
        .arg(tree.root())
        .arg(alias)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{context}: check_readers.py: {}",
        text(&out)
    );
}

/// A filesystem mounted for a test (tmpfs), unmounted when dropped. `None`
/// when this machine does not allow mounting (not root, no CAP_SYS_ADMIN).
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Mount { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts read-only (or read-write again).
    pub fn remount(&self, read_only: bool) -> bool {
        Command::new("mount")
            .args(["-o", if read_only { "remount,ro" } else { "remount,rw" }])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
