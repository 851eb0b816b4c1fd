//! What a new user met: config near-misses, a missing metadata directory,
//! output naming files that do not exist, `--years` outside the metadata.

mod common;

#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use common::{CONFIG, REMOTE_DIM, Tree};
use support::{TestServer, ok_reply};

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_key_or_section_one_typo_away_gets_a_did_you_mean_warning_with_its_line() {
    let tree = Tree::with_config(&format!(
        "dat_root = \".\"\n{CONFIG}\n[ingestion]\nouput_dir = \"metadata\"\n"
    ));
    tree.csv("metadata/metadata-2024.csv", &[("2401.00001", "T", "A")]);
    let output = tree.cmd(&["embed", "--dry-run"]).output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("papersys.toml:1: unknown key `dat_root`")
            && stderr.contains("did you mean `data_root`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `ingestion.output_dir`?"),
        "{stderr}"
    );

    let tree = Tree::with_config(&CONFIG.replace("[embedding]", "[embeding]"));
    let output = tree.cmd(&["status"]).output().unwrap();
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("unknown section [embeding]") && stderr.contains("`embedding`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_metadata_directory_is_a_config_error_exit_2() {
    let tree = Tree::new();
    std::fs::remove_dir(tree.path("metadata")).unwrap();
    for command in [&["backlog"][..], &["embed"], &["embed", "--dry-run"]] {
        let output = tree.cmd(command).output().unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(
            stderr.contains("metadata") && stderr.contains("output_dir"),
            "{stderr}"
        );
    }
}

#[test]
fn years_without_metadata_are_named() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &[("2401.00001", "T", "A")]);
    let output = tree
        .cmd(&["embed", "--dry-run", "--years", "2099"])
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no metadata has year 2099"), "{stderr}");
    assert!(stderr.contains("the metadata has only 2024"), "{stderr}");
    let output = tree
        .cmd(&["embed", "--dry-run", "--years", "2024"])
        .output()
        .unwrap();
    assert!(!stderr_of(&output).contains("no metadata has"));
}

#[test]
fn output_names_no_backlog_file_when_none_exists() {
    let server = TestServer::start(|request, _| ok_reply(request, REMOTE_DIM));
    let tree = Tree::with_config(&common::remote_config(&[&server.url], 1000, ""));
    tree.csv("metadata/metadata-2024.csv", &[("2401.00001", "T", "A")]);
    let waiting = tree.json(&["backlog"]);
    assert_eq!(
        waiting["models"][0]["backlog_file"],
        "embeddings/remote_v1/backlog.parquet"
    );
    let report = tree.json(&["embed"]);
    let files: Vec<&str> = report["models"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "embeddings/remote_v1/2024.parquet",
            "embeddings/remote_v1/manifest.json"
        ]
    );
    assert!(!tree.path("embeddings/remote_v1/backlog.parquet").exists());
    let done = tree.json(&["backlog"]);
    assert_eq!(done["models"][0]["waiting"], 0);
    assert!(done["models"][0]["backlog_file"].is_null(), "{done}");
    let output = tree.cmd(&["embed"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&output.stdout).contains("backlog.parquet"));
}

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), meta.len(), meta.modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn status_tells_what_a_run_would_embed_now_and_writes_nothing() {
    let tree = Tree::new();
    let rows: Vec<(String, String, String)> = (0..5)
        .map(|i| (format!("2401.{i:05}"), format!("T{i}"), "A".to_string()))
        .collect();
    let first: Vec<(&str, &str, &str)> = rows[..3]
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    tree.csv("metadata/metadata-2024.csv", &first);
    tree.json(&["backlog"]);
    // Two more papers arrive; the backlog file is not refreshed.
    let all: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    tree.csv("metadata/metadata-2024.csv", &all);
    let before = snapshot(tree.root());
    let status = tree.json(&["status"]);
    let plan = tree.json(&["embed", "--dry-run"]);
    assert_eq!(
        snapshot(tree.root()),
        before,
        "status and --dry-run write nothing"
    );
    assert_eq!(plan["models"][0]["planned"], 5);
    assert_eq!(status["models"][0]["waiting"], 5, "{status}");
    assert_eq!(status["models"][0]["years"][0]["waiting"], 5);
    assert_eq!(status["models"][0]["papers"], 5);
    assert_eq!(status["models"][0]["backlog_current"], false);
    assert!(status["models"][0]["writer_pid"].is_null());
}

#[cfg(target_os = "linux")]
#[test]
fn status_names_the_pid_of_a_running_writer() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &[("2401.00001", "T", "A")]);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    let lock = papersys::store::lock::WriterLock::acquire(&tree.model_dir()).unwrap();
    let status = tree.json(&["status"]);
    assert_eq!(status["models"][0]["writer_pid"], std::process::id());
    let text = tree.cmd(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("papersys (pid {}) is writing", std::process::id())),
        "{text}"
    );
    drop(lock);
    assert!(tree.json(&["status"])["models"][0]["writer_pid"].is_null());
}
