//! Ctrl-C and SIGTERM during `papersys embed`: the run stops taking
//! batches, saves what is embedded, says so, and exits 130; the next run
//! continues. A second signal ends the process at once.

mod common;

#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{REMOTE_ALIAS, REMOTE_DIM, Tree};
use support::{Request, TestServer, ok_reply};

const PAPERS: usize = 40;

fn is_check(request: &Request) -> bool {
    let inputs = request.inputs();
    inputs.len() == 1 && inputs[0].contains("papersys check")
}

/// A server that answers the check at once and each batch after `delay`.
fn slow_server(delay: Duration) -> TestServer {
    TestServer::start(move |request, _| {
        if is_check(request) {
            ok_reply(request, REMOTE_DIM)
        } else {
            ok_reply(request, REMOTE_DIM).after(delay)
        }
    })
}

/// One request in flight at a time, 4 papers per request, no checkpoint
/// before the end: without the handler an interrupt would lose everything.
fn tree(server: &TestServer) -> Tree {
    let tree = Tree::with_config(&common::remote_config(
        &[&server.url],
        1000,
        "max_concurrency = 1",
    ));
    tree.generated_papers(0..PAPERS);
    tree
}

fn spawn(tree: &Tree) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("papersys"))
        .arg("--config")
        .arg(tree.path("papersys.toml"))
        .args(["embed", "-q", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Waits until the server has received `n` embedding requests.
fn wait_for_batches(server: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.recorded().iter().filter(|r| !is_check(r)).count() < n {
        assert!(Instant::now() < deadline, "the run never sent {n} batches");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn finish(mut child: Child) -> (Option<i32>, String, String) {
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    (child.wait().unwrap().code(), stderr, stdout)
}

/// Vectors on disk: rows of the year file plus checkpoints not yet folded.
fn vectors_on_disk(tree: &Tree) -> usize {
    let dir = tree.path(&format!("embeddings/{REMOTE_ALIAS}"));
    let mut ids = std::collections::BTreeSet::new();
    let year = dir.join("2024.parquet");
    if year.exists() {
        ids.extend(
            papersys::store::year_file::read_ids(&year, REMOTE_DIM)
                .unwrap()
                .ids,
        );
    }
    for checkpoint in papersys::store::checkpoint::list(&dir)
        .unwrap()
        .into_values()
        .flatten()
    {
        ids.extend(
            papersys::store::year_file::read_ids(&checkpoint, REMOTE_DIM)
                .unwrap()
                .ids,
        );
    }
    ids.len()
}

/// "interrupted: N vectors saved, M still waiting; run it again to continue" → (N, M).
fn parse_interrupted(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("interrupted: "))
        .unwrap_or_else(|| panic!("no interrupted line in: {stderr}"));
    assert!(
        line.ends_with("still waiting; run it again to continue"),
        "{line}"
    );
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn ctrl_c_saves_what_is_embedded_exits_130_and_the_next_run_continues() {
    let server = slow_server(Duration::from_millis(150));
    let tree = tree(&server);
    let child = spawn(&tree);
    wait_for_batches(&server, 3);
    signal(&child, "INT");
    let (code, stderr, stdout) = finish(child);
    assert_eq!(code, Some(130), "{stderr}");
    let (saved, waiting) = parse_interrupted(&stderr);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["models"][0]["interrupted"], true);
    assert_eq!(report["models"][0]["embedded"], saved as u64);
    assert_eq!(
        report["models"][0]["files"],
        serde_json::json!([
            "embeddings/remote_v1/.pending",
            "embeddings/remote_v1/backlog.parquet"
        ]),
        "names the checkpoints, not a year file that was not rewritten"
    );
    assert!(
        saved >= 8,
        "at least the two batches answered before the signal: {stderr}"
    );
    assert!(saved < PAPERS, "the signal landed mid-run: {stderr}");
    assert_eq!(saved + waiting, PAPERS, "{stderr}");
    assert_eq!(
        vectors_on_disk(&tree),
        saved,
        "every vector reported saved is on disk"
    );
    let sent = server.recorded().iter().filter(|r| !is_check(r)).count();
    assert!(
        sent * 4 < PAPERS,
        "no batch was taken after the signal: {sent} sent"
    );

    let report = tree.json(&["embed"]);
    assert_eq!(report["models"][0]["embedded"], waiting as u64);
    assert_eq!(report["models"][0]["waiting_after"], 0);
    let year = tree.path(&format!("embeddings/{REMOTE_ALIAS}/2024.parquet"));
    assert_eq!(
        papersys::store::year_file::row_count(&year).unwrap(),
        PAPERS as u64
    );
}

#[test]
fn a_second_signal_ends_the_run_at_once() {
    // Each batch takes 5 s: the first signal waits for the batch in flight,
    // the second does not.
    let server = slow_server(Duration::from_secs(5));
    let tree = tree(&server);
    let child = spawn(&tree);
    wait_for_batches(&server, 1);
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    signal(&child, "INT");
    let (code, stderr, _) = finish(child);
    let took = second.elapsed();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after the second signal"
    );
    assert!(!stderr.contains("vectors saved"), "{stderr}");
}
