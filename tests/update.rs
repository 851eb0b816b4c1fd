//! `papersys update`: ingest (against a loopback OAI-PMH server serving
//! real arXiv records), embed (the real all-MiniLM-L6-v2) and recommend in
//! one command; a failure in any stage stops the chain with that stage's
//! own exit code.

mod common;
mod oai_server;

use common::Tree;
use oai_server::{Fault, OaiServer, real_records};
use predicates::str::contains;

const MODEL: &str = common::REAL_MODEL;

/// Every category; the window holds the real records' 2007-2008 dates.
const RECOMMEND: &str = r#"
[recommend_pipeline.data]
categories = []
embedding_columns = ["jasper_v1"]
background_start_year = 2000

[recommend_pipeline.trainer]
seed = 7
bg_sample_rate = 2.0

[recommend_pipeline.predict]
start_date = "2007-01-01"
end_date = "2008-12-31"
sample_rate = 0.2
"#;

fn config(url: &str, model: &str) -> String {
    format!(
        "[ingestion]\noutput_dir = \"metadata\"\noai_base_url = \"{url}\"\nmetadata_prefix = \"arXivRaw\"\n\
         request_interval = 0\nretry_delay = 0.01\nmax_retries = 1\nrequest_timeout = 2\n\
         start_date = \"2024-01-01\"\nend_date = \"2024-01-07\"\n{model}{RECOMMEND}"
    )
}

/// The exit code of `papersys <args>` on `tree`.
fn code(tree: &Tree, args: &[&str]) -> i32 {
    let output = tree.cmd(args).output().unwrap();
    output.status.code().expect("exited normally")
}

fn like(tree: &Tree, ids: &[&str]) {
    let mut args = vec!["prefs", "add", "--like", "-q"];
    args.extend_from_slice(ids);
    tree.cmd(&args).assert().success();
}

#[test]
fn new_papers_are_harvested_embedded_and_scored_in_one_command() {
    let records = real_records(60, "2024-01-01", 5);
    let server = OaiServer::start(records.clone(), 25);
    let tree = Tree::with_config(&config(&server.url, MODEL));
    let liked: Vec<&str> = records
        .iter()
        .filter(|r| r.categories.split(' ').any(|c| c.starts_with("hep-")))
        .take(4)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(liked.len(), 4, "the first real records hold hep papers");
    like(&tree, &liked);

    let report = tree.json(&["update"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(names, ["ingest", "embed", "recommend"]);
    assert!(stages.iter().all(|s| s["status"] == "ok"), "{report:#}");
    assert_eq!(stages[0]["report"]["new"], 60, "{:#}", stages[0]["report"]);
    assert_eq!(stages[1]["report"]["models"][0]["embedded"], 60);
    let recommend = &stages[2]["report"];
    assert_eq!(recommend["counts"]["likes_used"], 4, "{recommend:#}");
    let in_window = records
        .iter()
        .filter(|r| !liked.contains(&r.id.as_str()))
        .filter(|r| ("2007-01-01".."2009-01-01").contains(&r.updated_at.as_str()))
        .count();
    assert!(in_window >= 40, "the window holds most of the records");
    assert_eq!(
        recommend["counts"]["candidates"], in_window,
        "every harvested paper of the window but the liked ones"
    );
    assert!(!recommend["recommended"].as_array().unwrap().is_empty());
    let run_dir = tree.root().join(recommend["run_dir"].as_str().unwrap());
    for file in [
        "predictions.parquet",
        "recommended.parquet",
        "training.parquet",
        "manifest.json",
    ] {
        assert!(
            run_dir.join(file).is_file(),
            "{} missing",
            run_dir.join(file).display()
        );
    }

    // The next day's run finds nothing new to embed and still recommends.
    let again = tree.json(&["update"]);
    assert_eq!(again["ok"], true);
    assert_eq!(again["stages"][0]["report"]["new"], 0);
    assert_eq!(again["stages"][1]["report"]["models"][0]["embedded"], 0);
    assert_eq!(again["stages"][2]["status"], "ok");
}

/// `update` exits as the failing stage does on its own, names the stage,
/// and runs nothing after it.
fn stops_at(tree: &Tree, stage: &str, alone: &[&str]) {
    let expected = code(tree, alone);
    assert_ne!(
        expected,
        0,
        "`papersys {}` should fail on this tree",
        alone.join(" ")
    );
    let output = tree.cmd(&["update", "--json"]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(expected),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("error: {stage} failed: ")), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let mut after = false;
    for s in report["stages"].as_array().unwrap() {
        let status = s["status"].as_str().unwrap();
        if after {
            assert_eq!(status, "skipped", "{report:#}");
        } else if s["stage"] == stage {
            assert_eq!(status, "failed", "{report:#}");
            assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()));
            after = true;
        } else {
            assert_eq!(status, "ok", "{report:#}");
        }
    }
    assert!(after, "{report:#}");
}

#[test]
fn a_harvest_that_fails_stops_the_chain_before_embedding() {
    let server = OaiServer::start(real_records(10, "2024-01-01", 3), 25);
    server.fail_from(0, Fault::ServerError);
    let tree = Tree::with_config(&config(&server.url, MODEL));
    stops_at(&tree, "ingest", &["ingest", "-q"]);
    assert!(
        !tree.path("embeddings").exists(),
        "nothing embedded after a failed harvest"
    );
}

#[test]
fn an_embed_that_fails_stops_the_chain_before_recommending() {
    let server = OaiServer::start(real_records(10, "2024-01-01", 3), 25);
    let broken = MODEL.replace("dimension = 384", "dimension = 768");
    let tree = Tree::with_config(&config(&server.url, &broken));
    tree.cmd(&["ingest", "-q"]).assert().success();
    stops_at(&tree, "embed", &["embed", "-q"]);
    assert!(!tree.path("recommendations").exists());
}

#[test]
fn a_recommend_without_likes_fails_last_with_its_own_exit_code() {
    let server = OaiServer::start(real_records(10, "2024-01-01", 3), 25);
    let tree = Tree::with_config(&config(&server.url, MODEL));
    stops_at(&tree, "recommend", &["recommend", "-q"]);
    tree.cmd(&["update"])
        .assert()
        .failure()
        .stderr(contains("papersys prefs add"));
}
