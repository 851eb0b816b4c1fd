//! `papersys embed` through the OpenAI-compatible backend while the server
//! misbehaves, one fault per test: 429 with and without `Retry-After`,
//! 500s, a timeout, a dropped connection, a wrong vector count, a shuffled
//! `index`, a wrong dimension, a non-JSON body, a huge body, and two
//! servers of which one fails. Every test ends with the same check: the
//! year file holds exactly the fake model's vector of each paper that
//! succeeded and nothing else, and `backlog.parquet` lists every paper that
//! did not (see `settled`).
//!
//! The client's own retry waits (0.25 to 1 s) are not configurable from the
//! config file, so each transient fault is injected only a few times.

mod common;

#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Tree, backlog_rows};
use support::{Reply, Request, TestServer, embeddings_body, fake_vector, ok_reply};

const DIM: usize = common::REMOTE_DIM;
const PAPERS: usize = 24;

/// A config for the servers at `urls`, allowing 3 retries; each `key = value`
/// line of `overrides` replaces the default of that key.
fn config(urls: &[&str], overrides: &str) -> String {
    let retries = if overrides.contains("max_retries") {
        ""
    } else {
        "max_retries = 3\n"
    };
    common::remote_config(urls, 7, &format!("{retries}{overrides}"))
}

/// Writes `PAPERS` papers of 2024 (those in `poison` get "POISON" in their
/// title) and returns id → the exact text the server is sent.
fn papers(tree: &Tree, poison: &[usize]) -> BTreeMap<String, String> {
    let rows: Vec<(String, String, String)> = (0..PAPERS)
        .map(|i| {
            let title = if poison.contains(&i) {
                format!("POISON paper {i}")
            } else {
                format!("Paper {i}")
            };
            // Lengths vary so that the producer's sort by length mixes batches.
            let abstract_text = format!("Abstract of paper {i}.{}", " More.".repeat(i % 5));
            (format!("2401.{i:05}"), title, abstract_text)
        })
        .collect();
    let borrowed: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    tree.csv("metadata/metadata-2024.csv", &borrowed);
    rows.into_iter()
        .map(|(id, title, abstract_text)| (id, format!("{title}\n\n{abstract_text}")))
        .collect()
}

fn model_dir(tree: &Tree) -> std::path::PathBuf {
    tree.path("embeddings/remote_v1")
}

/// The health check `papersys embed` sends to every server before a run.
fn is_check(request: &Request) -> bool {
    let inputs = request.inputs();
    inputs.len() == 1 && inputs[0].contains("papersys check")
}

/// Answers the health check and, after the first `faulty` embedding
/// requests that got `fault`, every request correctly.
fn first_faulty(faulty: usize, fault: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> TestServer {
    let seen = AtomicUsize::new(0);
    TestServer::start(move |request, _| {
        if !is_check(request) && seen.fetch_add(1, Ordering::SeqCst) < faulty {
            return fault(request);
        }
        ok_reply(request, DIM)
    })
}

/// Answers every request correctly except those holding a POISON text.
fn poisoned(fault: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> TestServer {
    TestServer::start(move |request, _| {
        if request.inputs().iter().any(|t| t.contains("POISON")) {
            return fault(request);
        }
        ok_reply(request, DIM)
    })
}

/// Runs `papersys embed --json`; returns the exit code and the report (if any).
fn embed(tree: &Tree) -> (i32, Option<serde_json::Value>, String) {
    let output = tree.cmd(&["embed", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout).ok();
    (output.status.code().unwrap_or(-1), report, stderr)
}

/// The end state every test requires: each stored row holds exactly the
/// fake vector of its paper's text, once; the backlog lists every other
/// paper and no stored one. Returns (stored ids, backlog id → reason).
fn settled(tree: &Tree, texts: &BTreeMap<String, String>) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let year_file = model_dir(tree).join("2024.parquet");
    let rows = if year_file.exists() {
        papersys::store::year_file::read_rows(&year_file, DIM).unwrap()
    } else {
        Vec::new()
    };
    let mut stored = BTreeSet::new();
    for row in &rows {
        let text = texts
            .get(&row.paper_id)
            .unwrap_or_else(|| panic!("unknown paper {}", row.paper_id));
        assert_eq!(
            row.embedding,
            fake_vector(text, DIM),
            "{} holds another paper's vector",
            row.paper_id
        );
        assert!(
            stored.insert(row.paper_id.clone()),
            "{} stored twice",
            row.paper_id
        );
    }
    let waiting: BTreeMap<String, String> = backlog_rows(&model_dir(tree))
        .into_iter()
        .map(|(id, reason, _, _)| (id, reason))
        .collect();
    for id in texts.keys() {
        assert!(
            stored.contains(id) != waiting.contains_key(id),
            "{id}: stored {} and in the backlog {}",
            stored.contains(id),
            waiting.contains_key(id)
        );
    }
    (stored, waiting)
}

/// The health check, one request per batch, and one more per injected fault:
/// each fault was met and retried, nothing else was resent.
fn retried_each_fault(server: &TestServer, faults: usize) {
    assert_eq!(server.requests(), 1 + PAPERS / 4 + faults);
}

/// Everything was embedded and nothing waits.
fn all_done(tree: &Tree, texts: &BTreeMap<String, String>) {
    let (code, report, stderr) = embed(tree);
    assert_eq!(code, 0, "{stderr}");
    let report = report.unwrap();
    assert_eq!(report["models"][0]["embedded"], PAPERS, "{stderr}");
    assert_eq!(report["models"][0]["failed"], 0);
    let (stored, waiting) = settled(tree, texts);
    assert_eq!(stored.len(), PAPERS);
    assert!(waiting.is_empty(), "{waiting:?}");
}

/// The batch holding the poisoned paper failed with `message`, the rest was
/// embedded, and the failed papers wait as `embedding_failed`.
fn poisoned_batch_failed(tree: &Tree, texts: &BTreeMap<String, String>, poison: &str, message: &str) {
    let (code, report, stderr) = embed(tree);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(message), "{message:?} not in: {stderr}");
    let report = report.unwrap();
    let failed = report["models"][0]["failed"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&failed),
        "one batch of at most 4 failed: {failed}"
    );
    let (stored, waiting) = settled(tree, texts);
    assert_eq!(stored.len() as u64, PAPERS as u64 - failed);
    assert_eq!(waiting.len() as u64, failed);
    assert!(waiting.values().all(|r| r == "embedding_failed"), "{waiting:?}");
    assert!(waiting.contains_key(poison), "{poison} waits");
}

#[test]
fn rate_limits_without_retry_after_are_retried_to_completion() {
    let server = first_faulty(3, |_| Reply::text(429, r#"{"error":"slow down"}"#));
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    retried_each_fault(&server, 3);
}

/// When a request came, its texts, and whether it was answered 429.
type Arrival = (Instant, Vec<String>, bool);

#[test]
fn retry_after_is_waited_for_before_the_same_batch_is_sent_again() {
    let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let log = arrivals.clone();
    let seen = AtomicUsize::new(0);
    let server = TestServer::start(move |request, _| {
        let limited = !is_check(request) && seen.fetch_add(1, Ordering::SeqCst) == 0;
        log.lock()
            .unwrap()
            .push((Instant::now(), request.inputs(), limited));
        if limited {
            return Reply::text(429, r#"{"error":"rate limited"}"#).header("Retry-After", "1");
        }
        ok_reply(request, DIM)
    });
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    let arrivals = arrivals.lock().unwrap();
    let (limited_at, inputs, _) = arrivals.iter().find(|a| a.2).expect("one request was limited");
    let again = arrivals
        .iter()
        .find(|a| !a.2 && &a.1 == inputs && a.0 > *limited_at)
        .expect("the limited batch was sent again");
    let waited = again.0 - *limited_at;
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
}

/// A server that answers the start-up check with 429 or 503 is busy, not
/// absent: the check waits as `Retry-After` asks, says so, and the run
/// completes.
#[test]
fn a_busy_server_at_start_up_is_waited_for_and_the_run_completes() {
    for status in [429u16, 503] {
        let checks: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let log = checks.clone();
        let server = TestServer::start(move |request, _| {
            if is_check(request) {
                let mut log = log.lock().unwrap();
                log.push(Instant::now());
                if log.len() == 1 {
                    return Reply::text(status, r#"{"error":"busy"}"#).header("Retry-After", "1");
                }
            }
            ok_reply(request, DIM)
        });
        let tree = Tree::with_config(&config(&[&server.url], ""));
        let texts = papers(&tree, &[]);
        let (code, report, stderr) = embed(&tree);
        assert_eq!(code, 0, "HTTP {status}: {stderr}");
        assert!(
            stderr.contains("is busy") && stderr.contains("waiting 1."),
            "HTTP {status}: the wait is logged: {stderr}"
        );
        assert_eq!(report.unwrap()["models"][0]["embedded"], PAPERS);
        let checks = checks.lock().unwrap();
        assert_eq!(checks.len(), 2, "HTTP {status}: one busy answer, one retry");
        let waited = checks[1] - checks[0];
        assert!(
            waited >= Duration::from_millis(900),
            "HTTP {status}: Retry-After: 1 honoured, waited {waited:?}"
        );
        let (stored, waiting) = settled(&tree, &texts);
        assert_eq!(stored.len(), PAPERS);
        assert!(waiting.is_empty());
    }
}

#[test]
fn server_errors_that_recover_lose_nothing() {
    let server = first_faulty(3, |_| Reply::text(500, "Internal Server Error"));
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    retried_each_fault(&server, 3);
}

#[test]
fn a_request_that_times_out_is_sent_again() {
    let server = first_faulty(2, |request| {
        ok_reply(request, DIM).after(Duration::from_millis(1500))
    });
    let tree = Tree::with_config(&config(&[&server.url], "timeout_s = 0.4"));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    retried_each_fault(&server, 2);
}

#[test]
fn a_dropped_connection_is_sent_again() {
    let server = first_faulty(2, |_| Reply::Drop);
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    retried_each_fault(&server, 2);
}

fn short_by_one(request: &Request) -> Reply {
    let items: Vec<(usize, Vec<f32>)> = request
        .inputs()
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, text)| (i, fake_vector(text, DIM)))
        .collect();
    Reply::bytes(200, embeddings_body(&items, request.wants_base64()))
}

#[test]
fn a_wrong_vector_count_is_retried_and_if_it_persists_the_batch_waits() {
    let server = first_faulty(2, short_by_one);
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    retried_each_fault(&server, 2);

    let server = poisoned(short_by_one);
    let tree = Tree::with_config(&config(&[&server.url], "max_retries = 1"));
    let texts = papers(&tree, &[11]);
    poisoned_batch_failed(&tree, &texts, "2401.00011", "vectors");
}

#[test]
fn answers_in_any_index_order_give_each_paper_its_own_vector() {
    let server = TestServer::start(|request, n| {
        // A different permutation per request: rotate by the request number, then reverse.
        let inputs = request.inputs();
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.rotate_left(n % inputs.len().max(1));
        order.reverse();
        let items: Vec<(usize, Vec<f32>)> = order
            .into_iter()
            .map(|i| (i, fake_vector(&inputs[i], DIM)))
            .collect();
        Reply::bytes(200, embeddings_body(&items, request.wants_base64()))
    });
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
}

#[test]
fn a_wrong_dimension_at_the_health_check_stops_the_run_before_anything_is_written() {
    let server = TestServer::start(|request, _| ok_reply(request, DIM - 1));
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    let (code, _, stderr) = embed(&tree);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("dimension"), "{stderr}");
    assert!(stderr.contains(&server.url), "names the server: {stderr}");
    // Only the health check: in base64, then (the length being wrong) in floats.
    assert!(server.recorded().iter().all(is_check));
    assert_eq!(server.requests(), 2);
    let (stored, waiting) = settled(&tree, &texts);
    assert!(stored.is_empty());
    assert_eq!(waiting.len(), PAPERS);
    assert!(
        waiting.values().all(|r| r == "missing_embedding_file"),
        "no year file yet: {waiting:?}"
    );
}

#[test]
fn a_wrong_dimension_during_the_run_fails_every_batch_without_retries() {
    // The health check gets the right dimension, every batch the wrong one.
    let server = TestServer::start(|request, _| {
        if is_check(request) {
            ok_reply(request, DIM)
        } else {
            ok_reply(request, DIM + 1)
        }
    });
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    let (code, report, stderr) = embed(&tree);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("dimension"), "{stderr}");
    let report = report.unwrap();
    assert_eq!(report["models"][0]["embedded"], 0);
    assert_eq!(report["models"][0]["failed"], PAPERS);
    // Fatal for the client; the pipeline tries each batch twice.
    let batches = PAPERS / 4;
    assert_eq!(server.requests(), 1 + 2 * batches);
    let (stored, waiting) = settled(&tree, &texts);
    assert!(stored.is_empty());
    assert!(!model_dir(&tree).join("2024.parquet").exists());
    assert_eq!(waiting.len(), PAPERS);
    assert!(waiting.values().all(|r| r == "embedding_failed"));
}

#[test]
fn a_body_that_is_not_json_is_retried_and_if_it_persists_the_batch_waits() {
    let html = || Reply::text(200, "<html><body>502 Bad Gateway</body></html>");
    let server = first_faulty(2, move |_| html());
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    retried_each_fault(&server, 2);

    let server = poisoned(move |_| html());
    let tree = Tree::with_config(&config(&[&server.url], "max_retries = 1"));
    let texts = papers(&tree, &[3]);
    poisoned_batch_failed(&tree, &texts, "2401.00003", "JSON");
}

#[test]
fn a_huge_body_is_cut_off_and_its_batch_waits() {
    let server = poisoned(|_| Reply::Huge { bytes: 256 << 20 });
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let texts = papers(&tree, &[20]);
    poisoned_batch_failed(&tree, &texts, "2401.00020", "larger than");
    // Two attempts (the pipeline's retry), each cut off at once: no client retries.
    let huge = server
        .recorded()
        .iter()
        .filter(|r| r.inputs().iter().any(|t| t.contains("POISON")))
        .count();
    assert_eq!(huge, 2);
}

#[test]
fn two_servers_one_failing_every_batch_the_run_completes_on_the_healthy_one() {
    // The failing one passes the health check, then answers 500 to everything.
    let failing = TestServer::start(|request, _| {
        if is_check(request) {
            ok_reply(request, DIM)
        } else {
            Reply::text(500, "CUDA error: out of memory")
        }
    });
    let healthy = TestServer::start(|request, _| ok_reply(request, DIM));
    let tree = Tree::with_config(&config(&[&failing.url, &healthy.url], ""));
    let texts = papers(&tree, &[]);
    all_done(&tree, &texts);
    assert!(failing.requests() > 1, "the failing server was tried");
}
