//! Shared helpers for the integration tests: a throwaway data tree with a
//! config, and the binary under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// Vector length of the fake OpenAI-compatible servers the tests run.
pub const REMOTE_DIM: usize = 8;
/// Alias of the model in [`remote_config`].
pub const REMOTE_ALIAS: &str = "remote_v1";

/// A config with one remote model served at `urls`, checkpoints every
/// `checkpoint` papers. Each `key = value` line of `overrides` replaces the
/// default of that key (request_batch_size 4, max_concurrency 2, timeout_s
/// 5, max_retries 1) or adds a key.
pub fn remote_config(urls: &[&str], checkpoint: usize, overrides: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    let defaults = [
        "request_batch_size = 4",
        "max_concurrency = 2",
        "timeout_s = 5",
        "max_retries = 1",
    ];
    let key = |line: &str| line.split('=').next().unwrap_or_default().trim().to_string();
    let overridden: Vec<String> = overrides.lines().map(key).collect();
    let mut lines: Vec<&str> = defaults
        .into_iter()
        .filter(|line| !overridden.contains(&key(line)))
        .collect();
    lines.extend(overrides.lines());
    format!(
        r#"
[embedding]
checkpoint_interval = {checkpoint}

[[embedding.models]]
alias = "{REMOTE_ALIAS}"
name = "fake-model"
dimension = {REMOTE_DIM}
backend = "openai"
base_urls = [{}]
{}
"#,
        urls.join(", "),
        lines.join("\n")
    )
}

/// A temporary data root with `papersys.toml` in it.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

/// The config every test starts from: one model, 4 dimensions.
pub const CONFIG: &str = r#"
[embedding]
checkpoint_interval = 1000

[[embedding.models]]
alias = "jasper_v1"
name = "test/model"
dimension = 4
"#;

/// The `[embedding]` part of a config with the real model
/// (sentence-transformers/all-MiniLM-L6-v2, installed by
/// scripts/fetch-model.sh) under the alias `jasper_v1`.
pub const REAL_MODEL: &str = r#"
[embedding]
checkpoint_interval = 1000

[[embedding.models]]
alias = "jasper_v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
dimension = 384
batch_size = 32
"#;

impl Tree {
    pub fn new() -> Tree {
        Tree::with_config(CONFIG)
    }

    pub fn with_config(config: &str) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("papersys.toml"), config).unwrap();
        std::fs::create_dir_all(dir.path().join("metadata")).unwrap();
        Tree { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a metadata CSV (path relative to the root) with the given rows
    /// of (paper_id, title, abstract).
    pub fn csv(&self, rel: &str, rows: &[(&str, &str, &str)]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut writer = csv::Writer::from_path(&path).unwrap();
        writer
            .write_record(["paper_id", "title", "abstract", "categories"])
            .unwrap();
        for (id, title, abstract_text) in rows {
            writer
                .write_record([*id, *title, *abstract_text, "cs.CL"])
                .unwrap();
        }
        writer.flush().unwrap();
    }

    /// Writes `metadata/metadata-2024.csv` with generated papers
    /// `2401.<i>` ("Paper i", "Abstract i.") for every `i` of `range`.
    pub fn generated_papers(&self, range: std::ops::Range<usize>) {
        let rows: Vec<(String, String, String)> = range
            .map(|i| {
                (
                    format!("2401.{i:05}"),
                    format!("Paper {i}"),
                    format!("Abstract {i}."),
                )
            })
            .collect();
        let borrowed: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        self.csv("metadata/metadata-2024.csv", &borrowed);
    }

    /// `papersys --config <root>/papersys.toml <args>`, run from the root.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("papersys").unwrap();
        cmd.current_dir(self.root())
            .arg("--config")
            .arg(self.path("papersys.toml"))
            .args(args)
            .env_remove("RUST_LOG");
        cmd
    }

    /// Starts `papersys embed -q` in the background, output discarded, for
    /// tests that kill it or race it.
    pub fn spawn_embed(&self) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("papersys"))
            .arg("--config")
            .arg(self.path("papersys.toml"))
            .args(["embed", "-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs a command expected to succeed with `--json`; returns the document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.push("--json");
        let output = self.cmd(&full).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    pub fn model_dir(&self) -> PathBuf {
        self.path("embeddings/jasper_v1")
    }
}

/// Rows of the backlog file as (paper_id, reason, origin, year).
pub fn backlog_rows(model_dir: &Path) -> Vec<(String, String, String, String)> {
    papersys::store::backlog::read(model_dir)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.paper_id,
                r.reason.as_str().to_string(),
                r.origin,
                r.year.to_string(),
            )
        })
        .collect()
}

/// A vector row for `id` with a 4-dimensional vector.
pub fn vector(id: &str) -> papersys::store::year_file::VectorRow {
    papersys::store::year_file::VectorRow {
        paper_id: id.to_string(),
        embedding: vec![0.5, 0.5, 0.5, 0.5],
        generated_at: papersys::store::manifest::now_iso(),
        source: papersys::store::year_file::SOURCE.to_string(),
        text_hash: None,
    }
}
