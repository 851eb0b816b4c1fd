//! `papersys embed` end to end, through the binary, with the real
//! all-MiniLM-L6-v2 (installed by `scripts/fetch-model.sh`) on real arXiv
//! records (the bundled sample data).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Tree, backlog_rows};
use papersys::store::year_file;
use predicates::str::contains;

const MODEL_CONFIG: &str = r#"
[embedding]
checkpoint_interval = CHECKPOINT

[[embedding.models]]
alias = "jasper_v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
dimension = 384
batch_size = 16
"#;

/// Rows of a metadata CSV as (id, title, abstract).
type Rows = Vec<(String, String, String)>;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data/metadata")
        .join(name)
}

/// Rows of a sample CSV as (id, title, abstract).
fn sample_rows(name: &str) -> Rows {
    let mut reader = csv::Reader::from_path(sample(name)).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].to_string(), r[2].to_string())
        })
        .collect()
}

fn write_rows(tree: &Tree, rel: &str, rows: &[(String, String, String)]) {
    let borrowed: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    tree.csv(rel, &borrowed);
}

/// A tree with `n2025` papers of 2025 and `n2010` of 2010.
fn tree_with(checkpoint: usize, n2025: usize, n2010: usize) -> (Tree, Rows, Rows) {
    let tree = Tree::with_config(&MODEL_CONFIG.replace("CHECKPOINT", &checkpoint.to_string()));
    let a: Vec<_> = sample_rows("metadata-2025.csv").into_iter().take(n2025).collect();
    let b: Vec<_> = sample_rows("metadata-2010.csv").into_iter().take(n2010).collect();
    write_rows(&tree, "metadata/metadata-2025.csv", &a);
    write_rows(&tree, "metadata/metadata-2010.csv", &b);
    (tree, a, b)
}

/// Every stored row: paper id -> (year, generated_at, vector).
fn stored(tree: &Tree) -> BTreeMap<String, (String, String, Vec<f32>)> {
    let mut all = BTreeMap::new();
    for (year, path) in papersys::store::manifest::year_files(&tree.model_dir()).unwrap() {
        let rows = year_file::read_rows(&path, 384).unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.paper_id.as_str()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{} is sorted and unique",
            path.display()
        );
        for row in rows {
            let previous = all.insert(row.paper_id, (year.to_string(), row.generated_at, row.embedding));
            assert!(previous.is_none(), "a paper has two rows");
        }
    }
    all
}

fn embed_json(tree: &Tree, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["embed"];
    full.extend_from_slice(args);
    tree.json(&full)
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                files.insert(entry.path(), std::fs::read(entry.path()).unwrap());
            }
        }
    }
    files
}

#[test]
fn first_run_embeds_all_second_nothing_new_papers_exactly_those() {
    let (tree, mut rows2025, _) = tree_with(1000, 30, 20);
    let first = embed_json(&tree, &[]);
    assert_eq!(first["models"][0]["embedded"], 50);
    assert_eq!(first["models"][0]["failed"], 0);
    let after_first = stored(&tree);
    assert_eq!(after_first.len(), 50);

    let second = embed_json(&tree, &[]);
    assert_eq!(second["models"][0]["embedded"], 0);
    assert_eq!(stored(&tree), after_first, "a second run changes no vector");

    // Ten more papers arrive for 2025.
    let extra: Vec<_> = sample_rows("metadata-2025.csv")
        .into_iter()
        .skip(30)
        .take(10)
        .collect();
    rows2025.extend(extra.iter().cloned());
    write_rows(&tree, "metadata/metadata-2025.csv", &rows2025);
    let third = embed_json(&tree, &[]);
    assert_eq!(third["models"][0]["embedded"], 10);
    let after_third = stored(&tree);
    assert_eq!(after_third.len(), 60);
    for (id, row) in &after_first {
        assert_eq!(&after_third[id], row, "old vector of {id} untouched");
    }
    for (id, _, _) in &extra {
        assert_eq!(after_third[id].0, "2025");
    }
    assert!(!tree.model_dir().join("backlog.parquet").exists());
}

#[test]
fn a_changed_abstract_re_embeds_exactly_that_paper() {
    let (tree, mut rows2025, _) = tree_with(1000, 12, 0);
    embed_json(&tree, &[]);
    let before = stored(&tree);
    // At the start: an edit past the 256-token truncation would not change the vector.
    rows2025[3].2.insert_str(0, "Revised in v2: ");
    write_rows(&tree, "metadata/metadata-2025.csv", &rows2025);
    let backlog = tree.json(&["backlog"]);
    assert_eq!(
        backlog["models"][0]["waiting_by_reason"],
        serde_json::json!({"stale_embedding": 1})
    );
    let run = embed_json(&tree, &[]);
    assert_eq!(run["models"][0]["embedded"], 1);
    let after = stored(&tree);
    for (id, row) in &before {
        if id == &rows2025[3].0 {
            assert_ne!(after[id].2, row.2, "the changed paper got a new vector");
            assert_ne!(after[id].1, row.1);
        } else {
            assert_eq!(&after[id], row);
        }
    }
}

#[test]
fn limit_three_three_times_embeds_nine_distinct_papers_newest_first() {
    let (tree, _, rows2010) = tree_with(1000, 5, 10);
    for _ in 0..3 {
        let run = embed_json(&tree, &["--limit", "3"]);
        assert_eq!(run["models"][0]["embedded"], 3);
    }
    let got = stored(&tree);
    assert_eq!(got.len(), 9);
    // recent_first: all five 2025 papers before any 2010 paper.
    assert_eq!(got.values().filter(|v| v.0 == "2025").count(), 5);
    let mut newest_2010: Vec<&str> = rows2010.iter().map(|r| r.0.as_str()).collect();
    newest_2010.sort();
    for id in &newest_2010[newest_2010.len() - 4..] {
        assert!(got.contains_key(*id), "{id} is among the newest 2010 ids");
    }
    let rest = embed_json(&tree, &[]);
    assert_eq!(rest["models"][0]["embedded"], 6);
}

#[test]
fn dry_run_changes_no_byte_on_disk() {
    let (tree, _, _) = tree_with(1000, 8, 4);
    embed_json(&tree, &["--limit", "5"]);
    let before = snapshot(tree.root());
    let plan = embed_json(&tree, &["--dry-run"]);
    assert_eq!(plan["models"][0]["planned"], 7);
    assert_eq!(plan["models"][0]["dry_run"], true);
    assert_eq!(snapshot(tree.root()), before);
    let fresh = Tree::with_config(&MODEL_CONFIG.replace("CHECKPOINT", "10"));
    write_rows(
        &fresh,
        "metadata/metadata-2025.csv",
        &sample_rows("metadata-2025.csv")[..3],
    );
    let before = snapshot(fresh.root());
    fresh
        .cmd(&["embed", "--dry-run"])
        .assert()
        .success()
        .stdout(contains("would embed 3 papers"));
    assert_eq!(snapshot(fresh.root()), before, "not even a lock file or a cache");
}

#[test]
fn years_and_reembed_select_what_they_say() {
    let (tree, _, _) = tree_with(1000, 4, 4);
    let only_2010 = embed_json(&tree, &["--years", "2010"]);
    assert_eq!(only_2010["models"][0]["embedded"], 4);
    assert!(stored(&tree).values().all(|v| v.0 == "2010"));
    embed_json(&tree, &[]);
    let before = stored(&tree);
    let again = embed_json(&tree, &["--reembed", "--years", "2025"]);
    assert_eq!(again["models"][0]["embedded"], 4);
    let after = stored(&tree);
    for (id, row) in &before {
        if row.0 == "2025" {
            assert_ne!(after[id].1, row.1, "{id} got a fresh generated_at");
        } else {
            assert_eq!(&after[id], row);
        }
    }
}

#[test]
fn empty_texts_are_skipped_and_counted() {
    let tree = Tree::with_config(&MODEL_CONFIG.replace("CHECKPOINT", "1000"));
    tree.csv(
        "metadata/metadata-2024.csv",
        &[("2401.00001", "A title", "An abstract."), ("2401.00002", " ", "")],
    );
    let run = embed_json(&tree, &[]);
    assert_eq!(run["models"][0]["embedded"], 1);
    assert_eq!(run["models"][0]["empty_text"], 1);
    let rows = backlog_rows(&tree.model_dir());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "empty_text");
}

#[test]
fn stored_vectors_are_the_engines_and_python_reads_them() {
    let (tree, rows2025, _) = tree_with(1000, 6, 0);
    embed_json(&tree, &[]);
    let got = stored(&tree);
    let engine = papersys_backend_native::NativeEmbedder::load(&papersys_backend_native::NativeOptions {
        expected_dimension: Some(384),
        ..Default::default()
    })
    .unwrap();
    let texts: Vec<String> = rows2025
        .iter()
        .map(|(_, t, a)| papersys::text::prepare_text(t, a))
        .collect();
    let direct = papersys_backend_core::Embedder::embed(
        &engine,
        &papersys_backend_core::Embedder::prepare(&engine, texts).unwrap(),
    )
    .unwrap();
    for ((id, _, _), expected) in rows2025.iter().zip(direct.rows()) {
        let stored = &got[id].2;
        let dot: f32 = stored.iter().zip(expected).map(|(a, b)| a * b).sum();
        assert!(dot > 0.99999, "{id}: cosine {dot}");
    }
    let python = String::from_utf8(
        std::process::Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-env.sh"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let status = std::process::Command::new(python.trim())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_readers.py"))
        .arg(tree.root())
        .arg("jasper_v1")
        .status()
        .unwrap();
    assert!(status.success());
}

/// Checkpoint files in `.pending/` now.
fn checkpoint_files(tree: &Tree) -> BTreeSet<String> {
    std::fs::read_dir(tree.model_dir().join(".pending"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".parquet"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sigkill_mid_run_then_rerun_embeds_every_paper_exactly_once() {
    let (tree, a, b) = tree_with(8, 60, 40);
    // Each run is killed once it has committed this many checkpoints of its
    // own (8 papers each): after embedding began, long before the end.
    for (trial, checkpoints) in [1usize, 2, 2].into_iter().enumerate() {
        let old = checkpoint_files(&tree);
        let mut child = tree.spawn_embed();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while seen.len() < checkpoints {
            assert!(
                child.try_wait().unwrap().is_none(),
                "trial {trial}: the run ended before it could be killed mid-run"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "trial {trial}: no checkpoint"
            );
            seen.extend(checkpoint_files(&tree).difference(&old).cloned());
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "trial {trial}: the kill landed while the run was going"
        );
        // Whatever survived reads, and no paper has two rows.
        let partial = stored(&tree);
        assert!(partial.len() < 100, "trial {trial}: killed before the end");
        tree.cmd(&["status"]).assert().success();
    }
    let rerun = embed_json(&tree, &[]);
    assert_eq!(rerun["models"][0]["failed"], 0);
    let all = stored(&tree);
    assert_eq!(all.len(), a.len() + b.len(), "every paper embedded exactly once");
    assert!(
        !tree.model_dir().join(".pending").exists(),
        "checkpoints were folded"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.model_dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["total_rows"], 100);
    assert_eq!(embed_json(&tree, &[])["models"][0]["embedded"], 0);
}

#[test]
fn a_different_model_under_the_same_alias_is_refused() {
    let (tree, _, _) = tree_with(1000, 3, 0);
    embed_json(&tree, &[]);
    let before = snapshot(&tree.model_dir());
    std::fs::write(
        tree.path("papersys.toml"),
        MODEL_CONFIG.replace("CHECKPOINT", "1000").replace(
            "batch_size = 16",
            "batch_size = 16\ndocument_prefix = \"passage: \"",
        ),
    )
    .unwrap();
    let extra: Vec<_> = sample_rows("metadata-2025.csv").into_iter().take(5).collect();
    write_rows(&tree, "metadata/metadata-2025.csv", &extra);
    tree.cmd(&["embed"])
        .assert()
        .code(2)
        .stderr(contains("must never mix"))
        .stderr(contains("document_prefix"));
    let after = snapshot(&tree.model_dir());
    for (path, bytes) in &before {
        if path.extension().is_some_and(|e| e == "parquet")
            && path.parent() == Some(tree.model_dir().as_path())
        {
            assert_eq!(after.get(path), Some(bytes), "{} untouched", path.display());
        }
    }
}

#[test]
fn reembed_under_a_new_model_stages_then_replaces_every_vector_at_once() {
    let (tree, a, b) = tree_with(5, 6, 4);
    embed_json(&tree, &[]);
    let old = stored(&tree);
    let changed = MODEL_CONFIG.replace("CHECKPOINT", "5").replace(
        "batch_size = 16",
        "batch_size = 16\ndocument_prefix = \"passage: \"",
    );
    std::fs::write(tree.path("papersys.toml"), changed).unwrap();
    // Only some years: refused, nothing mixes.
    tree.cmd(&["embed", "--reembed", "--years", "2025"])
        .assert()
        .code(2)
        .stderr(contains("must never mix"));
    // A capped run stages; readers still see only the old model's vectors.
    let partial = embed_json(&tree, &["--reembed", "--limit", "4"]);
    assert_eq!(partial["models"][0]["embedded"], 4);
    assert_eq!(partial["models"][0]["replacement"]["promoted"], false);
    assert_eq!(partial["models"][0]["replacement"]["remaining"], 6);
    assert_eq!(
        stored(&tree),
        old,
        "live vectors untouched while the replacement store fills"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.model_dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_identity"]["document_prefix"], "");
    // A normal run is refused while the change is half done.
    tree.cmd(&["embed"]).assert().code(2);
    // Finishing promotes everything in one step.
    let done = embed_json(&tree, &["--reembed"]);
    assert_eq!(done["models"][0]["embedded"], 6);
    assert_eq!(done["models"][0]["replacement"]["promoted"], true);
    let new = stored(&tree);
    assert_eq!(new.len(), a.len() + b.len());
    for (id, row) in &new {
        assert_ne!(row.2, old[id].2, "{id} has the new model's vector");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.model_dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_identity"]["document_prefix"], "passage: ");
    assert_eq!(manifest["total_rows"], 10);
    assert!(!tree.model_dir().join(".reembed").exists());
    let kept = done["models"][0]["replacement"]["old_vectors"].as_str().unwrap();
    let kept_files: Vec<_> = std::fs::read_dir(tree.path(kept)).unwrap().collect();
    assert_eq!(kept_files.len(), 2, "the old year files are kept, not deleted");
    assert_eq!(embed_json(&tree, &[])["models"][0]["embedded"], 0);
}
