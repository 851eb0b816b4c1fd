//! `papersys embed` through the OpenAI-compatible backend, against the
//! fault-injecting loopback server of the remote crate's tests: the
//! pipeline's retry, failure bookkeeping, fleet handling and secrecy.

mod common;

#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use common::{Tree, backlog_rows};
use predicates::str::contains;
use support::{Reply, TestServer, dead_url, embeddings_body, fake_vector, ok_reply};

const DIM: usize = common::REMOTE_DIM;

fn config(urls: &[&str], extra: &str) -> String {
    common::remote_config(urls, 7, extra)
}

fn papers(tree: &Tree, n: usize, poison: &[usize]) -> Vec<String> {
    let rows: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            let title = if poison.contains(&i) {
                format!("POISON paper {i}")
            } else {
                format!("Paper {i}")
            };
            (format!("2401.{i:05}"), title, format!("Abstract of paper {i}."))
        })
        .collect();
    let borrowed: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    tree.csv("metadata/metadata-2024.csv", &borrowed);
    rows.into_iter().map(|r| r.0).collect()
}

fn model_dir(tree: &Tree) -> std::path::PathBuf {
    tree.path("embeddings/remote_v1")
}

fn stored(tree: &Tree) -> Vec<papersys::store::year_file::VectorRow> {
    let path = model_dir(tree).join("2024.parquet");
    if !path.exists() {
        return Vec::new();
    }
    papersys::store::year_file::read_rows(&path, DIM).unwrap()
}

#[test]
fn a_server_embeds_every_paper_with_its_own_vector() {
    let server = TestServer::start(|request, _| ok_reply(request, DIM));
    let tree = Tree::with_config(&config(&[&server.url], ""));
    papers(&tree, 23, &[]);
    let report = tree.json(&["embed"]);
    assert_eq!(report["models"][0]["embedded"], 23);
    let rows = stored(&tree);
    assert_eq!(rows.len(), 23);
    for row in &rows {
        let i: usize = row.paper_id[5..].parse().unwrap();
        let text = format!("Paper {i}\n\nAbstract of paper {i}.");
        assert_eq!(row.embedding, fake_vector(&text, DIM), "{}", row.paper_id);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir(&tree).join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_identity"]["backend"], "openai");
}

#[test]
fn a_batch_that_keeps_failing_is_retried_once_then_waits_as_embedding_failed() {
    let server = TestServer::start(|request, _| {
        if request.inputs().iter().any(|t| t.contains("POISON")) {
            // A NaN: the client must refuse it, the pipeline retry once.
            let items: Vec<(usize, Vec<f32>)> = (0..request.inputs().len())
                .map(|i| (i, vec![f32::NAN; DIM]))
                .collect();
            return Reply::bytes(
                200,
                String::from_utf8(embeddings_body(&items, false))
                    .unwrap()
                    .replace("null", "NaN")
                    .into_bytes(),
            );
        }
        ok_reply(request, DIM)
    });
    let tree = Tree::with_config(&config(&[&server.url], ""));
    let ids = papers(&tree, 20, &[5]);
    let output = tree.cmd(&["embed", "--json"]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not be embedded"), "{stderr}");
    assert!(stderr.contains("embedding_failed"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let failed = report["models"][0]["failed"].as_u64().unwrap();
    assert!((1..=4).contains(&failed), "the poisoned batch only: {failed}");
    assert_eq!(report["models"][0]["embedded"].as_u64().unwrap() + failed, 20);
    let rows = stored(&tree);
    assert!(rows.iter().all(|r| r.embedding.iter().all(|v| v.is_finite())));
    assert!(
        !rows.iter().any(|r| r.paper_id == ids[5]),
        "no vector for the poisoned paper"
    );
    let waiting = backlog_rows(&model_dir(&tree));
    assert_eq!(waiting.len() as u64, failed);
    assert!(waiting.iter().all(|r| r.1 == "embedding_failed"));
    assert!(waiting.iter().any(|r| r.0 == ids[5]));
    // A refresh keeps the reason; a later healthy run embeds them.
    tree.cmd(&["backlog", "--model", "remote_v1"]).assert().success();
    assert!(
        backlog_rows(&model_dir(&tree))
            .iter()
            .all(|r| r.1 == "embedding_failed")
    );
    let healthy = TestServer::start(|request, _| ok_reply(request, DIM));
    std::fs::write(tree.path("papersys.toml"), config(&[&healthy.url], "")).unwrap();
    let report = tree.json(&["embed"]);
    assert_eq!(report["models"][0]["embedded"].as_u64().unwrap(), failed);
    assert_eq!(stored(&tree).len(), 20);
}

#[test]
fn two_servers_one_dead_the_run_completes_on_the_healthy_one() {
    let server = TestServer::start(|request, _| ok_reply(request, DIM));
    let dead = dead_url();
    let tree = Tree::with_config(&config(&[&dead, &server.url], ""));
    papers(&tree, 30, &[]);
    let report = tree.json(&["embed"]);
    assert_eq!(report["models"][0]["embedded"], 30);
    assert_eq!(report["models"][0]["failed"], 0);
}

#[test]
fn a_python_vllm_config_without_base_url_says_to_start_a_server() {
    let tree = Tree::with_config(
        "[[embedding.models]]\nalias = \"qwen3_v1\"\nname = \"Qwen/Qwen3-Embedding-0.6B\"\ndimension = 1024\nbackend = \"vllm\"\n",
    );
    papers(&tree, 2, &[]);
    tree.cmd(&["embed"])
        .assert()
        .code(2)
        .stderr(contains("no base_url"))
        .stderr(contains("vllm serve"));
    // Planning needs no server.
    tree.cmd(&["embed", "--dry-run"]).assert().success();
    tree.cmd(&["backlog"]).assert().success();
}

#[test]
fn an_api_key_from_the_environment_never_appears_anywhere() {
    const KEY: &str = "sk-papersys-canary-7f3a9c1e";
    let server = TestServer::start(|request, _| {
        // Echo the key back in an error once, as a careless server might.
        if request.inputs().iter().any(|t| t.contains("POISON")) {
            let auth = request.header("authorization").unwrap_or_default().to_string();
            return Reply::text(500, &format!("bad request from {auth}"));
        }
        ok_reply(request, DIM)
    });
    let tree = Tree::with_config(&config(&[&server.url], "api_key = \"env:PAPERSYS_CANARY_KEY\""));
    papers(&tree, 9, &[2]);
    let mut outputs = Vec::new();
    for args in [
        &["embed", "-vv"][..],
        &["embed", "--json"],
        &["embed", "--dry-run"],
        &["status", "--json"],
        &["backlog"],
    ] {
        let output = tree.cmd(args).env("PAPERSYS_CANARY_KEY", KEY).output().unwrap();
        outputs.push(output.stdout);
        outputs.push(output.stderr);
    }
    assert!(
        server
            .recorded()
            .iter()
            .all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))),
        "the key is sent to the server"
    );
    for (i, bytes) in outputs.iter().enumerate() {
        assert!(
            !String::from_utf8_lossy(bytes).contains(KEY),
            "output {i} leaks the key"
        );
    }
    let mut stack = vec![tree.root().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(KEY),
                    "{} holds the key",
                    path.display()
                );
            }
        }
    }
    // Unset, the variable is named (not its value) and the command fails cleanly.
    tree.cmd(&["embed"])
        .env_remove("PAPERSYS_CANARY_KEY")
        .assert()
        .code(2)
        .stderr(contains("PAPERSYS_CANARY_KEY"));
}
