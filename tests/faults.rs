//! Faults an unattended nightly run meets: SIGKILL at chosen points inside
//! an embed run (needs `--features fault-injection`), a full disk, a
//! read-only data root, two runs at once, and files damaged between runs.
//! After each, nothing committed is lost and the next run completes.
//!
//!   cargo test --test faults                              # everything but the kill points
//!   cargo test --features fault-injection --test faults   # with 13 kill-point trials
//!   ... -- --include-ignored     # + the torture set, ~90 more trials (CI runs this)
//!   PAPERSYS_TORTURE_SEED=7 scripts/torture.sh   # other random kill counts and times

mod common;
mod harness;
#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Tree;
use harness::*;
use support::{TestServer, ok_reply};

fn server() -> TestServer {
    TestServer::start(|request, _| ok_reply(request, DIM))
}

/// Two years of papers behind a fake server; `--limit` papers embedded
/// first so that later runs merge into existing year files.
fn store_with(server: &TestServer, checkpoint: usize, done_first: usize) -> (Tree, BTreeMap<String, String>) {
    let tree = Tree::with_config(&remote_config(&server.url, checkpoint, ""));
    let mut expected = papers(&tree, 2023, 23);
    expected.extend(papers(&tree, 2024, 31));
    if done_first > 0 {
        let out = run(&tree, &["embed", "--limit", &done_first.to_string(), "-q"], &[]);
        assert!(out.status.success(), "{}", text(&out));
    }
    (tree, expected)
}

/// A disk that fills up: a real 1 MB tmpfs where this machine lets the test
/// mount one (root), else the test-only write budget stands in (with
/// `--features fault-injection`); otherwise the test fails saying what it
/// needs (see `harness::unavailable`).
#[test]
fn a_data_root_that_fills_up_stops_the_run_with_a_clear_error_and_keeps_what_was_there() {
    let mount = Mount::tmpfs("1m");
    if mount.is_none() && !cfg!(feature = "fault-injection") {
        unavailable("a tmpfs to fill (root) or the write budget (--features fault-injection)");
        return;
    }
    let server = server();
    let tree = Tree {
        dir: match &mount {
            Some(mount) => tempfile::tempdir_in(mount.path()).unwrap(),
            None => tempfile::tempdir().unwrap(),
        },
    };
    std::fs::create_dir_all(tree.path("metadata")).unwrap();
    std::fs::write(tree.path("papersys.toml"), remote_config(&server.url, 5, "")).unwrap();
    let mut expected = papers(&tree, 2023, 23);
    expected.extend(papers(&tree, 2024, 400));
    let out = run(&tree, &["embed", "--limit", "30", "-q"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = model_dir(&tree);
    let before = live_vectors(&dir, "before");
    let budget = match &mount {
        Some(mount) => {
            // Fill the disk, leaving a few pages.
            let free = nix_free_bytes(mount.path());
            let filler = vec![0u8; free.saturating_sub(24 * 1024) as usize];
            std::fs::write(tree.path("filler"), &filler).unwrap();
            Vec::new()
        }
        None => vec![("PAPERSYS_FAULT_WRITE_LIMIT", (24 * 1024).to_string())],
    };
    let out = run(&tree, &["embed"], &budget);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("disk") && stderr.contains("kept"),
        "a hint: {stderr}"
    );
    // What was committed before is intact.
    let after = check_after_kill(&tree, "full disk");
    for (id, vector) in &before {
        assert_eq!(after.get(id), Some(vector), "{id} survived the full disk");
    }
    if mount.is_some() {
        std::fs::remove_file(tree.path("filler")).unwrap();
    }
    let out = run(&tree, &["embed", "-q"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    check_complete(&tree, &expected, "", "after freeing space");
}

fn nix_free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// A read-only data root: a tmpfs remounted read-only where this machine
/// lets the test mount one (root), else a read-only bind mount that only
/// papersys sees, in a user namespace (unprivileged); otherwise the test
/// fails saying what it needs.
#[test]
fn a_read_only_data_root_is_a_clear_error_and_reading_commands_still_work() {
    let mount = Mount::tmpfs("4m");
    let server = server();
    let tree = Tree {
        dir: match &mount {
            Some(mount) => tempfile::tempdir_in(mount.path()).unwrap(),
            None => tempfile::tempdir().unwrap(),
        },
    };
    if mount.is_none() && !read_only_namespace_works(tree.root()) {
        unavailable("a read-only filesystem (a tmpfs mount as root, or `unshare -Urm`)");
        return;
    }
    std::fs::create_dir_all(tree.path("metadata")).unwrap();
    std::fs::write(tree.path("papersys.toml"), remote_config(&server.url, 5, "")).unwrap();
    papers(&tree, 2024, 12);
    let out = run(&tree, &["embed", "--limit", "5", "-q"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let before = snapshot(tree.root());
    let read_only = |args: &[&str]| match &mount {
        Some(_) => run(&tree, args, &[]),
        None => run_read_only(&tree, args),
    };
    if let Some(mount) = &mount {
        assert!(mount.remount(true), "remount read-only");
    }
    for args in [&["embed"][..], &["backlog"]] {
        let out = read_only(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Read-only file system"), "{stderr}");
        assert!(stderr.contains("read-only"), "a hint: {stderr}");
    }
    let out = read_only(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = read_only(&["embed", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    if let Some(mount) = &mount {
        assert!(mount.remount(false));
    }
    assert_eq!(snapshot(tree.root()), before, "nothing changed");
}

#[test]
fn a_second_run_refuses_at_once_naming_the_first_and_a_killed_runs_lock_is_taken_over() {
    // Slow replies keep the first run going.
    let slow = TestServer::start(|request, _| ok_reply(request, DIM).after(Duration::from_millis(400)));
    let tree = Tree::with_config(&remote_config(&slow.url, 4, ""));
    let mut expected = papers(&tree, 2024, 60);
    expected.extend(papers(&tree, 2023, 4));
    let mut first = tree.spawn_embed();
    let lock = model_dir(&tree).join(".papersys.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != format!("pid {}", first.id()) {
        assert!(Instant::now() < deadline, "the first run never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let second = run(&tree, &["embed"], &[]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(started.elapsed() < Duration::from_secs(5), "refused at once");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    // status keeps working during the run, and reads consistent files.
    for _ in 0..3 {
        let status = run(&tree, &["status", "--json"], &[]);
        assert!(status.status.success(), "{}", text(&status));
        let _ = live_vectors(&model_dir(&tree), "status during a run");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Killed, its lock file still names it; the next run takes over.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        std::fs::read_to_string(&lock)
            .unwrap()
            .contains(&first.id().to_string())
    );
    let fast = server();
    std::fs::write(tree.path("papersys.toml"), remote_config(&fast.url, 4, "")).unwrap();
    let out = run(&tree, &["embed", "-q"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    check_complete(&tree, &expected, "", "after taking over a stale lock");
}

/// A completed two-year store, ready to be damaged.
fn complete_store(server: &TestServer) -> (Tree, BTreeMap<String, String>) {
    let (tree, expected) = store_with(server, 10, 0);
    let out = run(&tree, &["embed", "-q"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    check_complete(&tree, &expected, "", "baseline");
    (tree, expected)
}

fn damaged_copies(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}.damaged-")))
        })
        .collect()
}

#[test]
fn year_files_deleted_truncated_or_garbage_are_reported_moved_aside_and_re_embedded() {
    let server = server();
    type Damage = fn(&std::path::Path);
    let cases: [(&str, Damage, bool); 5] = [
        ("deleted", |p| std::fs::remove_file(p).unwrap(), false),
        (
            "truncated",
            |p| {
                let bytes = std::fs::read(p).unwrap();
                std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
            },
            true,
        ),
        ("emptied", |p| std::fs::write(p, b"").unwrap(), true),
        (
            "garbage",
            |p| std::fs::write(p, b"PAR1 this is not parquet PAR1").unwrap(),
            true,
        ),
        (
            "another Parquet file",
            |p| {
                // A valid Parquet file of another schema: a backlog.
                let tmp = tempfile::tempdir().unwrap();
                let row = papersys::store::backlog::BacklogRow {
                    paper_id: "2401.00001".into(),
                    reason: papersys::store::backlog::MissingReason::MissingEmbedding,
                    origin: "metadata/metadata-2024.csv".into(),
                    year: papersys::metadata::Year::parse("2024").unwrap(),
                };
                papersys::store::backlog::write(tmp.path(), "x", &[row], "t").unwrap();
                std::fs::copy(tmp.path().join("backlog.parquet"), p).unwrap();
            },
            true,
        ),
    ];
    for (what, damage, kept) in cases {
        let (tree, expected) = complete_store(&server);
        let dir = model_dir(&tree);
        damage(&dir.join("2024.parquet"));
        let untouched = std::fs::read(dir.join("2023.parquet")).unwrap();
        let damaged_bytes = std::fs::read(dir.join("2024.parquet")).ok();
        let status = run(&tree, &["status", "--json"], &[]);
        assert!(status.status.success(), "{what}: {}", text(&status));
        let out = run(&tree, &["embed", "--json"], &[]);
        assert!(out.status.success(), "{what}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("2024.parquet"), "{what}: named: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report["models"][0]["embedded"], 31,
            "{what}: its papers came back"
        );
        let copies = damaged_copies(&dir, "2024.parquet");
        if kept {
            assert_eq!(copies.len(), 1, "{what}: moved aside, not deleted");
            assert_eq!(Some(std::fs::read(&copies[0]).unwrap()), damaged_bytes, "{what}");
        }
        assert_eq!(
            std::fs::read(dir.join("2023.parquet")).unwrap(),
            untouched,
            "{what}: other year untouched"
        );
        check_complete(&tree, &expected, "", what);
    }
}

#[test]
fn a_manifest_deleted_truncated_or_garbage_is_reported_moved_aside_and_rebuilt() {
    let server = server();
    type Damage = fn(&std::path::Path);
    let cases: [(&str, Damage, &str); 4] = [
        ("deleted", |p| std::fs::remove_file(p).unwrap(), "was missing"),
        (
            "truncated",
            |p| {
                let bytes = std::fs::read(p).unwrap();
                std::fs::write(p, &bytes[..bytes.len() / 3]).unwrap();
            },
            "was damaged",
        ),
        (
            "garbage",
            |p| std::fs::write(p, b"\x00\xff garbage").unwrap(),
            "was damaged",
        ),
        (
            "wrong shape",
            |p| std::fs::write(p, b"{\"model\": 3}").unwrap(),
            "was damaged",
        ),
    ];
    for (what, damage, says) in cases {
        let (tree, expected) = complete_store(&server);
        let dir = model_dir(&tree);
        let years: Vec<Vec<u8>> = ["2023", "2024"]
            .iter()
            .map(|y| std::fs::read(dir.join(format!("{y}.parquet"))).unwrap())
            .collect();
        damage(&dir.join("manifest.json"));
        let damaged_bytes = std::fs::read(dir.join("manifest.json")).ok();
        let status = run(&tree, &["status", "--json"], &[]);
        assert!(status.status.success(), "{what}: {}", text(&status));
        let out = run(&tree, &["embed", "--json"], &[]);
        assert!(out.status.success(), "{what}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("manifest.json") && stderr.contains(says),
            "{what}: {stderr}"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["models"][0]["embedded"], 0, "{what}: no vector lost");
        if let Some(bytes) = damaged_bytes {
            let copies = damaged_copies(&dir, "manifest.json");
            assert_eq!(copies.len(), 1, "{what}: moved aside");
            assert_eq!(std::fs::read(&copies[0]).unwrap(), bytes);
        }
        for (y, bytes) in ["2023", "2024"].iter().zip(&years) {
            assert_eq!(
                &std::fs::read(dir.join(format!("{y}.parquet"))).unwrap(),
                bytes,
                "{what}: {y}"
            );
        }
        check_complete(&tree, &expected, "", what);
    }
}

#[test]
fn a_damaged_checkpoint_is_moved_aside_and_its_papers_embedded_again() {
    let server = server();
    let (tree, expected) = store_with(&server, 10, 0);
    let dir = model_dir(&tree);
    // A checkpoint left by a killed run, then damaged.
    let pending = dir.join(".pending");
    std::fs::create_dir_all(&pending).unwrap();
    std::fs::write(
        pending.join("2024-20250101T000000000Z-000001.parquet"),
        b"half a file",
    )
    .unwrap();
    let out = run(&tree, &["embed", "-q"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is damaged"),
        "{}",
        text(&out)
    );
    assert_eq!(
        damaged_copies(&pending, "2024-20250101T000000000Z-000001.parquet").len(),
        1
    );
    std::fs::remove_dir_all(&pending).unwrap();
    check_complete(&tree, &expected, "", "damaged checkpoint");
}

#[cfg(feature = "fault-injection")]
mod kill_points {
    use super::*;

    /// One trial: a run killed at `point`, the invariants, a clean rerun.
    pub fn trial(point: &str, nth: u32, done_first: usize) {
        let server = server();
        let (tree, expected) = store_with(&server, 5, done_first);
        let context = format!("{point}:{nth}");
        let out = run(
            &tree,
            &["embed", "-q"],
            &[("PAPERSYS_FAULT_POINT", context.clone())],
        );
        assert!(
            killed(&out),
            "{context}: the point was not reached: {}",
            text(&out)
        );
        check_after_kill(&tree, &context);
        let out = run(&tree, &["embed", "-q"], &[]);
        assert!(out.status.success(), "{context}: rerun: {}", text(&out));
        check_complete(&tree, &expected, "", &context);
    }

    #[test]
    fn killed_inside_inference() {
        trial("embed.after_batch", 3, 0);
    }

    #[test]
    fn killed_inside_a_checkpoint_before_its_rename() {
        trial("checkpoint.before_rename", 2, 0);
    }

    #[test]
    fn killed_right_after_a_checkpoint() {
        trial("checkpoint.after_write", 3, 10);
    }

    #[test]
    fn killed_inside_a_year_file_replacement() {
        trial("year.before_rename", 1, 10);
        trial("year.after_rename", 2, 10);
    }

    #[test]
    fn killed_between_a_year_file_and_its_manifest() {
        trial("fold.after_merge", 1, 10);
        trial("fold.before_remove_checkpoints", 2, 10);
    }

    #[test]
    fn killed_inside_a_manifest_write() {
        trial("manifest.before_rename", 2, 10);
    }

    #[test]
    fn killed_inside_a_backlog_write() {
        trial("backlog.before_rename", 1, 10);
    }

    #[test]
    fn a_year_file_damaged_while_checkpoints_wait_is_moved_aside_and_the_run_completes() {
        let server = server();
        let (tree, expected) = store_with(&server, 5, 10);
        let out = run(
            &tree,
            &["embed", "-q"],
            &[("PAPERSYS_FAULT_POINT", "checkpoint.after_write:3".into())],
        );
        assert!(killed(&out), "{}", text(&out));
        let dir = model_dir(&tree);
        assert!(dir.join(".pending").exists(), "checkpoints wait");
        let bytes = std::fs::read(dir.join("2024.parquet")).unwrap();
        std::fs::write(dir.join("2024.parquet"), &bytes[..bytes.len() / 2]).unwrap();
        let out = run(&tree, &["embed", "-q"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("2024.parquet could not be read"));
        assert_eq!(damaged_copies(&dir, "2024.parquet").len(), 1);
        check_complete(&tree, &expected, "", "damaged year file under checkpoints");
    }

    /// A model change (`document_prefix`) replaced through a replacement store, killed
    /// during promotion; the rerun finishes it and every vector is the new
    /// model's.
    pub fn promotion_trial(point: &str, nth: u32) {
        let server = server();
        let (tree, expected) = store_with(&server, 5, 0);
        let out = run(&tree, &["embed", "-q"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        std::fs::write(
            tree.path("papersys.toml"),
            remote_config(&server.url, 5, "document_prefix = \"passage: \""),
        )
        .unwrap();
        let context = format!("{point}:{nth}");
        let out = run(
            &tree,
            &["embed", "--reembed", "-q"],
            &[("PAPERSYS_FAULT_POINT", context.clone())],
        );
        assert!(
            killed(&out),
            "{context}: the point was not reached: {}",
            text(&out)
        );
        check_after_kill(&tree, &context);
        // Any writer finishes the promotion first; then nothing is left to do.
        let out = run(&tree, &["embed", "--reembed", "-q"], &[]);
        assert!(out.status.success(), "{context}: rerun: {}", text(&out));
        check_complete(&tree, &expected, "passage: ", &context);
        let replaced: Vec<_> = std::fs::read_dir(model_dir(&tree))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".replaced-"))
            .collect();
        assert_eq!(replaced.len(), 1, "{context}: the old vectors are kept");
        let old = live_vectors(&replaced[0].path(), &context);
        assert_eq!(old.len(), expected.len(), "{context}: every old vector kept");
        for (id, text) in &expected {
            assert_eq!(old[id], support::fake_vector(text, DIM), "{context}: old {id}");
        }
    }

    #[test]
    fn killed_during_a_promotion() {
        promotion_trial("promote.move_old", 1);
        promotion_trial("promote.move_new", 1);
        promotion_trial("promote.before_cleanup", 1);
    }

    #[test]
    fn a_full_disk_mid_run_stops_with_a_clear_error_and_keeps_what_was_there() {
        let server = server();
        for limit in [0u64, 2_500, 6_000, 12_000] {
            let (tree, expected) = store_with(&server, 5, 20);
            let dir = model_dir(&tree);
            let before = live_vectors(&dir, "before");
            let out = run(
                &tree,
                &["embed"],
                &[("PAPERSYS_FAULT_WRITE_LIMIT", limit.to_string())],
            );
            let context = format!("write budget {limit}");
            assert_eq!(out.status.code(), Some(1), "{context}: {}", text(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("No space left on device"), "{context}: {stderr}");
            assert!(stderr.contains("kept"), "{context}: a hint: {stderr}");
            let after = check_after_kill(&tree, &context);
            for (id, vector) in &before {
                assert_eq!(after.get(id), Some(vector), "{context}: {id}");
            }
            let out = run(&tree, &["embed", "-q"], &[]);
            assert!(out.status.success(), "{context}: {}", text(&out));
            check_complete(&tree, &expected, "", &context);
        }
    }
}

/// The torture run (CI, and `scripts/torture.sh` with other seeds): many kill points, random
/// `n`, random-time SIGKILLs from outside, and trials with the real model.
#[cfg(feature = "fault-injection")]
#[test]
#[ignore = "about a minute: scripts/test.sh and scripts/torture.sh run it"]
fn torture() {
    use kill_points::{promotion_trial, trial};
    let python = python();
    let mut seed: u64 = std::env::var("PAPERSYS_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut next = |bound: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    let started = Instant::now();
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    // Named points, each at several n. Each bound is at most the times the
    // point is reached in the least interleaved run (batches of 4, checkpoints
    // of 5: seven checkpoints from scratch, six after ten papers are done).
    let points = [
        ("embed.after_batch", 12, 0),
        ("checkpoint.after_write", 6, 10),
        ("checkpoint.before_rename", 6, 0),
        ("checkpoint.after_rename", 6, 10),
        ("year.before_rename", 2, 10),
        ("year.after_rename", 2, 10),
        ("fold.after_merge", 2, 10),
        ("fold.before_remove_checkpoints", 2, 0),
        ("manifest.before_rename", 2, 10),
        ("manifest.after_rename", 2, 10),
        ("backlog.before_rename", 1, 10),
    ];
    for (point, max_n, done_first) in points {
        for _ in 0..4 {
            let n = 1 + next(max_n) as u32;
            trial(point, n, done_first);
            *counts.entry(point).or_default() += 1;
        }
    }
    // Reached once per promotion, or once per year file (two years).
    for (point, max_n) in [
        ("promote.after_intent", 1),
        ("promote.move_old", 2),
        ("promote.move_new", 2),
        ("promote.before_cleanup", 1),
    ] {
        promotion_trial(point, 1);
        promotion_trial(point, 1 + next(max_n) as u32);
        *counts.entry(point).or_default() += 2;
    }
    // Any point at all, wherever the count falls.
    let server = server();
    for i in 0..12 {
        let (tree, expected) = store_with(&server, 5, 10);
        let n = 1 + next(60);
        let context = format!("any:{n}");
        let out = run(
            &tree,
            &["embed", "-q"],
            &[("PAPERSYS_FAULT_POINT", context.clone())],
        );
        check_after_kill(&tree, &context);
        let out2 = run(&tree, &["embed", "-q"], &[]);
        assert!(out2.status.success(), "{context}: {}", text(&out2));
        check_complete(&tree, &expected, "", &context);
        if i % 4 == 0 {
            check_python_readers(&python, &tree, ALIAS, &context);
        }
        *counts
            .entry(if killed(&out) {
                "any (killed)"
            } else {
                "any (ran through)"
            })
            .or_default() += 1;
    }
    // SIGKILL from outside at random times, against a slowish server.
    let slow = TestServer::start(|request, _| ok_reply(request, DIM).after(Duration::from_millis(80)));
    for _ in 0..12 {
        let (tree, expected) = store_with(&slow, 4, 5);
        let delay = Duration::from_millis(30 + next(500));
        let mut child = tree.spawn_embed();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let context = format!("external SIGKILL after {delay:?}");
        check_after_kill(&tree, &context);
        let out = run(&tree, &["embed", "-q"], &[]);
        assert!(out.status.success(), "{context}: {}", text(&out));
        check_complete(&tree, &expected, "", &context);
        *counts
            .entry(if status.success() {
                "external (ran through)"
            } else {
                "external (killed)"
            })
            .or_default() += 1;
    }
    let total: u32 = counts.values().sum();
    eprintln!(
        "torture (fake server): {total} trials in {:.0?}",
        started.elapsed()
    );
    for (k, v) in &counts {
        eprintln!("  {k}: {v}");
    }
}

/// Kill points with the real all-MiniLM-L6-v2.
#[cfg(feature = "fault-injection")]
#[test]
#[ignore = "about a minute: scripts/test.sh and scripts/torture.sh run it"]
fn torture_native_model() {
    let started = Instant::now();
    let config = r#"
[embedding]
checkpoint_interval = 8

[[embedding.models]]
alias = "native_v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
dimension = 384
batch_size = 8
"#;
    let python = python();
    let points = [
        ("embed.after_batch", 2),
        ("checkpoint.before_rename", 2),
        ("checkpoint.after_write", 3),
        ("year.before_rename", 1),
        ("year.after_rename", 1),
        ("fold.after_merge", 1),
        ("manifest.before_rename", 2),
        ("backlog.before_rename", 1),
    ];
    for (point, nth) in points {
        let tree = Tree::with_config(config);
        let mut ids = papers(&tree, 2024, 30);
        ids.extend(papers(&tree, 2010, 10));
        let context = format!("native {point}:{nth}");
        let out = run(&tree, &["embed", "--limit", "6", "-q"], &[]);
        assert!(out.status.success(), "{context}: {}", text(&out));
        let out = run(
            &tree,
            &["embed", "-q"],
            &[("PAPERSYS_FAULT_POINT", format!("{point}:{nth}"))],
        );
        assert!(killed(&out), "{context}: not reached: {}", text(&out));
        let dir = tree.path("embeddings/native_v1");
        for (_, path) in papersys::store::manifest::year_files(&dir).unwrap() {
            papersys::store::year_file::read_rows(&path, 384).unwrap();
        }
        let out = run(&tree, &["embed", "-q"], &[]);
        assert!(out.status.success(), "{context}: {}", text(&out));
        let mut seen = std::collections::BTreeSet::new();
        for (_, path) in papersys::store::manifest::year_files(&dir).unwrap() {
            for row in papersys::store::year_file::read_rows(&path, 384).unwrap() {
                assert!(seen.insert(row.paper_id.clone()), "{context}: two rows");
            }
        }
        assert_eq!(seen.len(), ids.len(), "{context}: every paper exactly once");
        assert!(!dir.join(".pending").exists() && !dir.join("backlog.parquet").exists());
        check_manifest(&dir, &context);
        check_python_readers(&python, &tree, "native_v1", &context);
    }
    eprintln!(
        "torture (native model): {} trials in {:.0?}",
        points.len(),
        started.elapsed()
    );
}
