//! `papersys recommend` end to end on the bundled sample (400 real arXiv
//! papers) embedded once with the real all-MiniLM-L6-v2, plus its errors on
//! small trees with hand-made vectors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Tree, vector};
use papersys::metadata::{PaperRecord, read_records};
use papersys::store::year_file;
use predicates::str::contains;

const MODEL: &str = common::REAL_MODEL;

/// Every category, every year: the sample is physics and mathematics.
const SECTION: &str = r#"
[recommend_pipeline.data]
categories = []
embedding_columns = ["jasper_v1"]
background_start_year = 2000

[recommend_pipeline.trainer]
seed = 7
bg_sample_rate = 5.0

[recommend_pipeline.trainer.logistic_regression]
C = 1.0
max_iter = 1000

[recommend_pipeline.predict]
sample_rate = 0.1
"#;

/// The window holding the sample's 100 papers of 2025.
const WINDOW: [&str; 4] = ["--from", "2025-04-29", "--until", "2025-05-01"];

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/metadata")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// The sample embedded once per test binary (a few seconds).
fn embedded() -> &'static Path {
    static TEMPLATE: OnceLock<Tree> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let tree = Tree::with_config(MODEL);
            copy_dir(&sample_dir(), &tree.path("metadata"));
            tree.cmd(&["embed", "-q"]).assert().success();
            tree
        })
        .root()
}

/// A tree with the embedded sample and the recommend section (`extra`
/// lines appended to the config).
fn sample_tree(extra: &str) -> Tree {
    let tree = Tree::with_config(&format!("{MODEL}{SECTION}{extra}"));
    copy_dir(&embedded().join("metadata"), &tree.path("metadata"));
    copy_dir(&embedded().join("embeddings"), &tree.path("embeddings"));
    tree
}

fn records() -> Vec<PaperRecord> {
    let mut out = Vec::new();
    for year in [2007, 2010, 2025] {
        let mut issues = Vec::new();
        read_records(
            &sample_dir().join(format!("metadata-{year}.csv")),
            &mut issues,
            |_, r| out.push(r),
        )
        .unwrap();
    }
    out
}

/// High-energy physics and gravitation, in any of a paper's categories
/// (cross-lists count: an astro-ph.CO paper also filed under gr-qc is in it).
fn in_field(r: &PaperRecord) -> bool {
    r.category_list().any(|c| {
        ["hep-th", "hep-ph", "gr-qc", "hep-ex", "hep-lat"].contains(&c.split('.').next().unwrap_or(""))
    })
}

/// The field's papers of 2007 and 2010.
fn field_likes() -> Vec<String> {
    records()
        .into_iter()
        .filter(|r| !r.published_at.starts_with("2025") && in_field(r))
        .map(|r| r.paper_id)
        .collect()
}

fn prefs(tree: &Tree, ids: &[String], flag: &str) {
    let mut args = vec!["prefs", "add", flag, "-q"];
    args.extend(ids.iter().map(String::as_str));
    tree.cmd(&args).assert().success();
}

/// Every candidate's score (a dry run showing all).
fn scores(tree: &Tree, extra: &[&str]) -> BTreeMap<String, f64> {
    let mut args = vec!["recommend", "--dry-run", "--force-all", "-q"];
    args.extend(WINDOW);
    args.extend(extra);
    let report = tree.json(&args);
    report["recommended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Area under the ROC curve of `scores` for telling `positive` ids apart.
fn auc(scores: &BTreeMap<String, f64>, positive: impl Fn(&str) -> bool) -> f64 {
    let (pos, neg): (Vec<f64>, Vec<f64>) = {
        let mut p = Vec::new();
        let mut n = Vec::new();
        for (id, s) in scores {
            if positive(id) { p.push(*s) } else { n.push(*s) }
        }
        (p, n)
    };
    assert!(!pos.is_empty() && !neg.is_empty());
    let wins: f64 = pos
        .iter()
        .map(|p| {
            neg.iter()
                .map(|n| {
                    if p > n {
                        1.0
                    } else if p == n {
                        0.5
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
        })
        .sum();
    wins / (pos.len() * neg.len()) as f64
}

#[test]
fn likes_from_one_field_rank_that_fields_candidates_first() {
    let tree = sample_tree("");
    let likes = field_likes();
    assert!(likes.len() >= 40, "{}", likes.len());
    prefs(&tree, &likes, "--like");
    let scores = scores(&tree, &[]);
    assert_eq!(scores.len(), 100, "every 2025 paper is a candidate");
    let field: HashMap<String, bool> = records()
        .iter()
        .map(|r| (r.paper_id.clone(), in_field(r)))
        .collect();
    let area = auc(&scores, |id| field[id]);
    // 0.5 is chance; the sample has only ~50 such likes among 300 older papers.
    assert!(area >= 0.85, "AUC {area}");
    let mut ranked: Vec<(&String, &f64)> = scores.iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(a.1));
    let share = field
        .iter()
        .filter(|(id, f)| **f && scores.contains_key(*id))
        .count();
    assert!(share <= 25, "the field is a minority of the candidates ({share})");
    let top5: Vec<bool> = ranked.iter().take(5).map(|(id, _)| field[*id]).collect();
    assert!(
        top5.iter().filter(|f| **f).count() >= 4,
        "top 5 in the field: {top5:?}"
    );
}

fn stored_vectors(tree: &Tree) -> HashMap<String, Vec<f32>> {
    let mut out = HashMap::new();
    for (_, path) in papersys::store::manifest::year_files(&tree.model_dir()).unwrap() {
        for row in year_file::read_rows(&path, 384).unwrap() {
            out.insert(row.paper_id, row.embedding);
        }
    }
    out
}

#[test]
fn a_dislike_lowers_its_neighbours_scores() {
    let tree = sample_tree("");
    prefs(&tree, &field_likes(), "--like");
    let before = scores(&tree, &[]);
    // Dislike the best-scored candidate; its five nearest candidates must drop.
    let (disliked, _) = before.iter().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
    let vectors = stored_vectors(&tree);
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut near: Vec<(&String, f32)> = before
        .keys()
        .filter(|id| *id != disliked)
        .map(|id| (id, cosine(&vectors[id], &vectors[disliked])))
        .collect();
    near.sort_by(|a, b| b.1.total_cmp(&a.1));
    prefs(&tree, std::slice::from_ref(disliked), "--dislike");
    let after = scores(&tree, &[]);
    assert!(!after.contains_key(disliked), "a rated paper is no candidate");
    for (id, _) in near.iter().take(5) {
        assert!(
            after[*id] < before[*id],
            "{id}: {} -> {}",
            before[*id],
            after[*id]
        );
    }
}

fn python() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(repo.join("scripts/python-env.sh"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn run(tree: &Tree, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["recommend", "-q"];
    args.extend(WINDOW);
    args.extend(extra);
    tree.json(&args)
}

#[test]
fn scores_agree_with_scikit_learn_on_the_recorded_training_set() {
    let tree = sample_tree("");
    prefs(&tree, &field_likes(), "--like");
    let others: Vec<String> = records()
        .into_iter()
        .filter(|r| r.published_at.starts_with("2007") && !in_field(r))
        .take(10)
        .map(|r| r.paper_id)
        .collect();
    prefs(&tree, &others, "--dislike");
    let report = run(&tree, &["--force-all"]);
    assert_eq!(report["counts"]["dislikes_used"], 10);
    let dir = PathBuf::from(report["run_dir"].as_str().unwrap());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python())
        .arg(repo.join("scripts/check_recommend_sklearn.py"))
        .arg(&dir)
        .arg(tree.path("embeddings"))
        .arg("jasper_v1")
        .args(["1.0", "1000"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let check: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(check["spearman"].as_f64().unwrap() >= 0.999, "{check}");
    assert_eq!(check["same_top10"], true, "{check}");
    assert_eq!(check["n_scored"], 100, "{check}");
    let n_train =
        report["training"]["positives"].as_u64().unwrap() + report["training"]["negatives"].as_u64().unwrap();
    assert_eq!(check["n_train"].as_u64().unwrap(), n_train);
}

#[test]
fn two_runs_with_the_same_seed_are_identical_and_complete() {
    let tree = sample_tree("");
    prefs(&tree, &field_likes(), "--like");
    let first = run(&tree, &[]);
    let second = run(&tree, &[]);
    assert_ne!(first["run_id"], second["run_id"], "run ids are unique");
    assert!(
        first["run_id"].as_str() < second["run_id"].as_str(),
        "run ids sort by time"
    );
    let a = PathBuf::from(first["run_dir"].as_str().unwrap());
    let b = PathBuf::from(second["run_dir"].as_str().unwrap());
    for file in ["predictions.parquet", "recommended.parquet", "training.parquet"] {
        assert!(
            std::fs::read(a.join(file)).unwrap() == std::fs::read(b.join(file)).unwrap(),
            "{file} differs"
        );
    }
    // The digest differs only in its heading (the run id).
    let body = |dir: &Path| {
        let text = std::fs::read_to_string(dir.join("recommended.md")).unwrap();
        text.split_once('\n').unwrap().1.to_string()
    };
    assert_eq!(body(&a), body(&b));
    assert_eq!(first["recommended"], second["recommended"]);
    // sample_rate 0.1 of 100 candidates.
    assert_eq!(first["counts"]["recommended"], 10);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["run_id"], first["run_id"]);
    assert_eq!(manifest["counts"]["scored"], 100);
    assert_eq!(
        manifest["models"][0]["model_identity"]["name"],
        "sentence-transformers/all-MiniLM-L6-v2"
    );
    let digest = std::fs::read_to_string(a.join("recommended.md")).unwrap();
    let top = first["recommended"][0]["id"].as_str().unwrap();
    assert!(
        digest.contains(&format!("<https://arxiv.org/abs/{top}>")),
        "{digest}"
    );
    // Nothing but the two runs in the output directory (no temporaries).
    let names: Vec<String> = std::fs::read_dir(tree.path("recommendations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // A dry run writes nothing.
    let mut args = vec!["recommend", "--dry-run", "-q"];
    args.extend(WINDOW);
    tree.json(&args);
    assert_eq!(
        std::fs::read_dir(tree.path("recommendations")).unwrap().count(),
        2
    );
}

#[test]
fn float64_year_files_of_the_python_original_give_the_same_scores() {
    let tree = sample_tree("");
    prefs(&tree, &field_likes(), "--like");
    let as_f32 = scores(&tree, &[]);
    let script = r#"
import sys, pathlib, pyarrow as pa, pyarrow.parquet as pq
for path in pathlib.Path(sys.argv[1]).glob("[0-9]*.parquet"):
    table = pq.read_table(path).drop_columns(["text_hash"])
    i = table.schema.get_field_index("embedding")
    table = table.set_column(i, "embedding", table.column("embedding").cast(pa.list_(pa.float64())))
    pq.write_table(table, path)
"#;
    let status = Command::new(python())
        .args(["-c", script])
        .arg(tree.model_dir())
        .status()
        .unwrap();
    assert!(status.success());
    let schema = Command::new(python())
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq; print(pq.read_schema(sys.argv[1]).field('embedding').type)",
        ])
        .arg(tree.model_dir().join("2025.parquet"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&schema.stdout).trim(),
        "list<element: double>"
    );
    let as_f64 = scores(&tree, &[]);
    assert_eq!(as_f32.len(), as_f64.len());
    for (id, s) in &as_f32 {
        assert!((s - as_f64[id]).abs() < 1e-9, "{id}: {s} vs {}", as_f64[id]);
    }
}

// Errors and edge cases, on small trees with 4-dimensional vectors.

const SMALL: &str = r#"
[embedding]
checkpoint_interval = 1000

[[embedding.models]]
alias = "jasper_v1"
name = "test/model"
dimension = 4

[recommend_pipeline.data]
categories = ["cs.CL"]
background_start_year = 2024
"#;

/// Papers of 2025: (id, category, date, vector).
fn small_tree(extra: &str, papers: &[(&str, &str, &str, [f32; 4])]) -> Tree {
    let tree = Tree::with_config(&format!("{SMALL}{extra}"));
    let records: Vec<PaperRecord> = papers
        .iter()
        .map(|(id, category, date, _)| PaperRecord {
            paper_id: id.to_string(),
            title: format!("Paper {id}"),
            abstract_text: "An abstract.".into(),
            categories: category.to_string(),
            primary_category: category.to_string(),
            published_at: format!("{date}T10:00:00Z"),
            ..PaperRecord::default()
        })
        .collect();
    let file = std::fs::File::create(tree.path("metadata/metadata-2025.csv")).unwrap();
    papersys::metadata::write_records(file, &records).unwrap();
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    let rows = papers
        .iter()
        .map(|(id, _, _, v)| {
            let mut row = vector(id);
            row.embedding = v.to_vec();
            row
        })
        .collect();
    year_file::merge(&tree.model_dir().join("2025.parquet"), rows, 4).unwrap();
    tree
}

/// Ten cs.CL papers on two themes, plus one of another category.
fn small_papers() -> Vec<(String, &'static str, &'static str, [f32; 4])> {
    let mut papers = Vec::new();
    for i in 0..10 {
        let theme = if i % 2 == 0 {
            [1.0, 0.1 * i as f32, 0.0, 0.0]
        } else {
            [0.0, 0.0, 1.0, 0.1 * i as f32]
        };
        let date = if i < 6 { "2025-01-10" } else { "2025-03-01" };
        papers.push((format!("2501.{:05}", i + 1), "cs.CL", date, theme));
    }
    papers.push((
        "2501.00099".to_string(),
        "math.AG",
        "2025-03-01",
        [0.5, 0.5, 0.5, 0.5],
    ));
    papers
}

fn small(extra: &str) -> Tree {
    let owned = small_papers();
    let papers: Vec<(&str, &str, &str, [f32; 4])> = owned
        .iter()
        .map(|(a, b, c, d)| (a.as_str(), *b, *c, *d))
        .collect();
    small_tree(extra, &papers)
}

fn fails(tree: &Tree, args: &[&str], code: i32, message: &str) {
    tree.cmd(args).assert().code(code).stderr(contains(message));
}

#[test]
fn no_likes_says_how_to_add_some() {
    let tree = small("");
    fails(
        &tree,
        &["recommend", "--from", "2025-03-01", "--until", "2025-03-31"],
        1,
        "papersys prefs add",
    );
    fails(
        &tree,
        &["recommend", "--from", "2025-03-01", "--until", "2025-03-31"],
        1,
        "Zotero",
    );
}

#[test]
fn an_empty_window_names_the_window_and_what_the_metadata_holds() {
    let tree = small("");
    tree.cmd(&["prefs", "add", "--like", "2501.00001"])
        .assert()
        .success();
    fails(
        &tree,
        &["recommend", "--from", "2030-01-01", "--until", "2030-01-07"],
        1,
        "no papers to recommend in 2030-01-01 to 2030-01-07: the metadata holds 0 papers dated in it",
    );
    // The math paper is dated in the window but outside the categories.
    std::fs::write(
        tree.path("papersys.toml"),
        SMALL.replace("categories = [\"cs.CL\"]", "categories = [\"cs.AI\"]"),
    )
    .unwrap();
    fails(
        &tree,
        &["recommend", "--from", "2025-03-01", "--until", "2025-03-01"],
        1,
        "holds 5 papers dated in it, 0 of them in the categories cs.AI",
    );
    fails(
        &tree,
        &["recommend", "--last-n-days", "3"],
        1,
        "the last 3 days (since ",
    );
}

#[test]
fn a_model_without_vectors_is_named() {
    let tree = small("");
    tree.cmd(&["prefs", "add", "--like", "2501.00001"])
        .assert()
        .success();
    fails(
        &tree,
        &[
            "recommend",
            "--model",
            "other_v1",
            "--from",
            "2025-03-01",
            "--until",
            "2025-03-31",
        ],
        1,
        "model `other_v1` has no vectors",
    );
}

#[test]
fn a_single_class_is_refused_with_what_to_change() {
    let tree = small("");
    // Every cs.CL paper rated like: no background, no dislikes.
    let ids: Vec<String> = (1..=10).map(|i| format!("2501.{i:05}")).collect();
    let mut args = vec!["prefs", "add", "--like"];
    args.extend(ids.iter().map(String::as_str));
    tree.cmd(&args).assert().success();
    std::fs::write(
        tree.path("papersys.toml"),
        SMALL
            .replace(
                "categories = [\"cs.CL\"]",
                "categories = [\"cs.CL\", \"math.AG\"]",
            )
            .replace("background_start_year = 2024", "background_start_year = 2026"),
    )
    .unwrap();
    fails(
        &tree,
        &["recommend", "--from", "2025-03-01", "--until", "2025-03-31"],
        1,
        "single class",
    );
}

#[test]
fn bad_config_and_arguments_are_usage_errors() {
    let tree = small("\n[recommend_pipeline.predict]\nsample_rate = 0\n");
    tree.cmd(&["prefs", "add", "--like", "2501.00001"])
        .assert()
        .code(2)
        .stderr(contains("papersys.toml:15: `sample_rate` must lie in (0, 1]"));
    let tree = small("");
    fails(&tree, &["recommend", "--from", "2025-03-01"], 2, "--until");
    fails(
        &tree,
        &["recommend", "--from", "2025-03-09", "--until", "2025-03-01"],
        2,
        "is after",
    );
    fails(&tree, &["recommend", "--last-n-days", "0"], 2, "last-n-days");
    fails(&tree, &["recommend", "--model", "../x"], 2, "contains '/'");
}

#[test]
fn learns_from_dislikes_and_counts_what_it_leaves_out() {
    let mut owned = small_papers();
    // A candidate with a non-finite vector, and one without any vector.
    owned.push((
        "2501.00050".to_string(),
        "cs.CL",
        "2025-03-01",
        [f32::NAN, 0.0, 0.0, 0.0],
    ));
    let papers: Vec<(&str, &str, &str, [f32; 4])> = owned
        .iter()
        .map(|(a, b, c, d)| (a.as_str(), *b, *c, *d))
        .collect();
    let tree = small_tree("", &papers);
    let csv = std::fs::read_to_string(tree.path("metadata/metadata-2025.csv")).unwrap();
    std::fs::write(
        tree.path("metadata/metadata-2025.csv"),
        format!("{csv}2501.00051,No vector,,cs.CL,cs.CL,,2025-03-01T00:00:00Z,,,,,,\n"),
    )
    .unwrap();
    tree.cmd(&["prefs", "add", "--like", "2501.00001", "2501.00003"])
        .assert()
        .success();
    tree.cmd(&["prefs", "add", "--dislike", "2501.00002"])
        .assert()
        .success();
    let report = tree.json(&[
        "recommend",
        "--from",
        "2025-03-01",
        "--until",
        "2025-03-31",
        "--force-all",
    ]);
    let counts = &report["counts"];
    assert_eq!(counts["likes_used"], 2);
    assert_eq!(counts["dislikes_used"], 1);
    assert_eq!(counts["candidates"], 6, "{counts}");
    assert_eq!(counts["candidates_non_finite"], 1);
    assert_eq!(counts["candidates_without_vectors"], 1);
    assert_eq!(counts["scored"], 4);
    // Theme one (even ids, like the likes) above theme two.
    let order: Vec<&str> = report["recommended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let theme_one: Vec<&str> = order.iter().take(2).copied().collect();
    assert!(
        theme_one
            .iter()
            .all(|id| ["2501.00007", "2501.00009"].contains(id)),
        "{order:?}"
    );
    let dir = PathBuf::from(report["run_dir"].as_str().unwrap());
    assert!(dir.join("training.parquet").is_file());
}
