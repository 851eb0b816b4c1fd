//! `papersys search` and `papersys similar` end to end, through the binary,
//! with the real all-MiniLM-L6-v2 on the bundled sample (real arXiv papers),
//! and the query engine's exactness against brute force and numpy.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Tree;
use papersys::config::Config;
use papersys::query::{CacheMode, Filter, VectorIndex};
use papersys::store::year_file::{self, VectorRow};
use serde_json::Value;

const MODEL_CONFIG: &str = common::REAL_MODEL;

/// Papers of the 2025 sample held back from the template, added by tests.
const HELD_BACK: usize = 10;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data/metadata")
        .join(name)
}

/// The sample's records of one file, whole.
fn records(name: &str) -> Vec<papersys::metadata::PaperRecord> {
    let mut out = Vec::new();
    let mut issues = Vec::new();
    papersys::metadata::read_records(&sample(name), &mut issues, |_, r| out.push(r)).unwrap();
    assert!(issues.is_empty());
    out
}

fn write_csv(path: &Path, rows: &[papersys::metadata::PaperRecord]) {
    let file = std::fs::File::create(path).unwrap();
    papersys::metadata::write_records(file, rows).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The sample embedded once per test binary (all of 2007 and 2010, 2025
/// without its last `HELD_BACK` papers); every test works on a copy.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<Tree> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            // Kept for the whole run, under the target directory.
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            std::fs::write(dir.path().join("papersys.toml"), MODEL_CONFIG).unwrap();
            std::fs::create_dir_all(dir.path().join("metadata")).unwrap();
            let tree = Tree { dir };
            for year in ["2007", "2010"] {
                let name = format!("metadata-{year}.csv");
                std::fs::copy(sample(&name), tree.path(&format!("metadata/{name}"))).unwrap();
            }
            let all = records("metadata-2025.csv");
            write_csv(
                &tree.path("metadata/metadata-2025.csv"),
                &all[..all.len() - HELD_BACK],
            );
            tree.cmd(&["embed", "-q"]).assert().success();
            tree
        })
        .root()
}

fn embedded_tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(template(), dir.path());
    Tree { dir }
}

fn text_of(record: &papersys::metadata::PaperRecord) -> String {
    papersys::text::prepare_text(&record.title, &record.abstract_text)
}

fn run_json(tree: &Tree, args: &[&str]) -> Value {
    tree.json(args)
}

fn ids(doc: &Value) -> Vec<String> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["paper_id"].as_str().unwrap().to_string())
        .collect()
}

fn scores(doc: &Value) -> Vec<f64> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect()
}

fn segment(tree: &Tree, year: &str) -> PathBuf {
    tree.model_dir().join(format!(".cache/vectors/{year}.seg"))
}

/// (inode, mtime) of a file: changes when it is replaced.
fn identity(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.modified().unwrap())
}

#[test]
fn a_papers_own_text_finds_it_first_with_its_metadata() {
    let tree = embedded_tree();
    for (file, index) in [
        ("metadata-2007.csv", 3),
        ("metadata-2010.csv", 77),
        ("metadata-2025.csv", 40),
    ] {
        let record = &records(file)[index];
        let doc = run_json(&tree, &["search", &text_of(record), "-k", "5"]);
        assert_eq!(doc["model"], "jasper_v1");
        let first = &doc["results"][0];
        assert_eq!(first["paper_id"], record.paper_id.as_str(), "{doc}");
        assert!(first["score"].as_f64().unwrap() > 0.9999, "{doc}");
        assert_eq!(
            first["title"],
            record
                .title
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .as_str()
        );
        assert_eq!(first["year"], file[9..13].parse::<u64>().unwrap());
        assert_eq!(first["categories"][0], record.primary_category.as_str());
        assert_eq!(first["published_at"], record.published_at.as_str());
        assert_eq!(
            first["url"],
            format!("https://arxiv.org/abs/{}", record.paper_id).as_str()
        );
        assert_eq!(doc["results"].as_array().unwrap().len(), 5);
        let s = scores(&doc);
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
    }
    // The table: one line per result plus the header, title cut to COLUMNS.
    let record = &records("metadata-2010.csv")[77];
    let output = tree
        .cmd(&["search", &text_of(record), "-k", "3"])
        .env("COLUMNS", "70")
        .output()
        .unwrap();
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].contains("rank") && lines[0].contains("title"), "{table}");
    assert!(lines[1].contains(&record.paper_id), "{table}");
    assert!(lines.iter().all(|l| l.chars().count() <= 70), "{table}");
}

#[test]
fn a_file_of_queries_gives_one_json_line_each_equal_to_single_searches() {
    let tree = embedded_tree();
    let picked: Vec<String> = records("metadata-2010.csv")
        .iter()
        .take(3)
        .map(|r| r.title.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let file = tree.path("queries.txt");
    std::fs::write(&file, format!("{}\n\n{}\n{}\n", picked[0], picked[1], picked[2])).unwrap();
    let output = tree
        .cmd(&["search", "--queries", file.to_str().unwrap(), "-k", "4"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ms/query"), "{stderr}");
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, query) in lines.iter().zip(&picked) {
        assert_eq!(line["query"], query.as_str());
        let single = run_json(&tree, &["search", query, "-k", "4"]);
        assert_eq!(ids(line), ids(&single));
        assert_eq!(scores(line), scores(&single));
    }
}

/// The exact top k by numpy over the year files: mean of the unit vectors
/// of `given`, cosine with every other paper, ordered by score descending
/// then id ascending.
fn numpy_top_k(tree: &Tree, given: &[&str], k: usize) -> Vec<(String, f64)> {
    let script = r#"
import glob, json, sys
import numpy as np, pyarrow.parquet as pq
root, given, k = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
ids, rows = [], []
for path in sorted(glob.glob(root + "/embeddings/jasper_v1/*.parquet")):
    if path.endswith("backlog.parquet"):
        continue
    t = pq.read_table(path, columns=["paper_id", "embedding"])
    ids += t.column("paper_id").to_pylist()
    rows += t.column("embedding").to_pylist()
X = np.array(rows, dtype=np.float32).astype(np.float64)
norms = np.sqrt((X * X).sum(axis=1))
units = X / norms[:, None]
sel = [ids.index(g) for g in given]
q = units[sel].sum(axis=0)
q /= np.sqrt((q * q).sum())
scores = (units * q).sum(axis=1)
order = sorted((i for i in range(len(ids)) if ids[i] not in given), key=lambda i: (-scores[i], ids[i]))
print(json.dumps([[ids[i], float(scores[i])] for i in order[:k]]))
"#;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = Command::new("bash")
        .arg(repo.join("scripts/python-env.sh"))
        .output()
        .unwrap();
    assert!(py.status.success(), "scripts/python-env.sh failed");
    let python = String::from_utf8(py.stdout).unwrap().trim().to_string();
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(tree.root())
        .arg(given.join(","))
        .arg(k.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_same_as_numpy(doc: &Value, expected: &[(String, f64)]) {
    assert_eq!(
        ids(doc),
        expected.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        "{doc}"
    );
    for (got, (_, want)) in scores(doc).iter().zip(expected) {
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
}

#[test]
fn similar_is_the_exact_top_k_of_numpy_with_ties_by_id() {
    let tree = embedded_tree();
    let one = records("metadata-2010.csv")[5].paper_id.clone();
    let other = records("metadata-2007.csv")[9].paper_id.clone();
    // Three copies of `one`'s vector in a year of their own: exact ties.
    let vector = year_file::read_rows(&tree.model_dir().join("2010.parquet"), 384)
        .unwrap()
        .into_iter()
        .find(|r| r.paper_id == one)
        .unwrap();
    let copies: Vec<VectorRow> = ["tie-b", "tie-c", "tie-a"]
        .iter()
        .map(|id| VectorRow {
            paper_id: id.to_string(),
            ..vector.clone()
        })
        .collect();
    year_file::write_rows(&tree.model_dir().join("1999.parquet"), copies, 384).unwrap();

    let doc = run_json(&tree, &["similar", &one, "-k", "12"]);
    assert_eq!(&ids(&doc)[..3], ["tie-a", "tie-b", "tie-c"], "{doc}");
    assert!(!ids(&doc).contains(&one), "the given paper is excluded");
    assert_same_as_numpy(&doc, &numpy_top_k(&tree, &[&one], 12));

    let doc = run_json(&tree, &["similar", &one, &other, "-k", "15"]);
    assert!(!ids(&doc).contains(&one) && !ids(&doc).contains(&other));
    assert_same_as_numpy(&doc, &numpy_top_k(&tree, &[&one, &other], 15));

    // The same without the cache.
    let uncached = run_json(&tree, &["similar", &one, &other, "-k", "15", "--no-cache"]);
    assert_eq!(uncached["results"], doc["results"]);
}

#[test]
fn filters_apply_before_ranking() {
    let tree = embedded_tree();
    let record = &records("metadata-2007.csv")[0];
    let everything = run_json(&tree, &["search", &record.title, "-k", "1000"]);
    let all = everything["results"].as_array().unwrap();
    assert_eq!(
        all.len(),
        400 - HELD_BACK,
        "k larger than the corpus returns every paper"
    );

    let has = |r: &Value, c: &str| r["categories"].as_array().unwrap().iter().any(|x| x == c);
    for category in ["math.NT", "gr-qc"] {
        let doc = run_json(
            &tree,
            &["search", &record.title, "-k", "5", "--category", category],
        );
        let expected: Vec<String> = all
            .iter()
            .filter(|r| has(r, category))
            .take(5)
            .map(|r| r["paper_id"].as_str().unwrap().to_string())
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(ids(&doc), expected, "{category}");
    }
    let doc = run_json(
        &tree,
        &[
            "search",
            &record.title,
            "-k",
            "7",
            "--category",
            "math.NT",
            "--category",
            "gr-qc",
        ],
    );
    let expected: Vec<String> = all
        .iter()
        .filter(|r| has(r, "math.NT") || has(r, "gr-qc"))
        .take(7)
        .map(|r| r["paper_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids(&doc), expected);

    let doc = run_json(
        &tree,
        &["search", &record.title, "-k", "6", "--years", "2010-2011"],
    );
    let expected: Vec<String> = all
        .iter()
        .filter(|r| r["year"] == 2010)
        .take(6)
        .map(|r| r["paper_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids(&doc), expected);
    let doc = run_json(
        &tree,
        &[
            "search",
            &record.title,
            "--years",
            "2010",
            "--category",
            "no.such",
        ],
    );
    assert_eq!(doc["results"].as_array().unwrap().len(), 0);
}

#[test]
fn errors_name_the_problem_with_exit_codes() {
    let tree = embedded_tree();
    let fails = |args: &[&str], code: i32, needle: &str| {
        let output = tree.cmd(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    fails(&["search", ""], 2, "query is empty");
    fails(&["search", "  \n "], 2, "query is empty");
    fails(&["search", "x", "-k", "0"], 2, "-k");
    fails(&["search", "x", "--model", "nope"], 2, "no model `nope`");
    fails(&["search", "x", "--years", "20x0"], 2, "--years");
    fails(&["similar", "9999.99999"], 2, "paper 9999.99999 is unknown");
    // A held-back paper, once in the metadata and the backlog, waits.
    let all = records("metadata-2025.csv");
    write_csv(&tree.path("metadata/metadata-2025.csv"), &all);
    let waiting = &all[all.len() - 1].paper_id;
    fails(&["similar", waiting], 2, "but has no vector");
    tree.cmd(&["backlog", "-q"]).assert().success();
    fails(&["similar", waiting], 2, "waits in the backlog");

    // The manifest says another model made the vectors: queries are refused.
    let path = tree.model_dir().join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["model_identity"]["weights_sha256"] = "00".into();
    std::fs::write(&path, manifest.to_string()).unwrap();
    fails(
        &["search", "black holes"],
        2,
        "not the one that made the stored vectors",
    );

    // A model with no vectors yet: exit 1, saying what to run.
    let fresh = Tree::with_config(MODEL_CONFIG);
    std::fs::copy(
        sample("metadata-2007.csv"),
        fresh.path("metadata/metadata-2007.csv"),
    )
    .unwrap();
    let output = fresh.cmd(&["search", "black holes"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no vectors yet") && stderr.contains("papersys embed"),
        "{stderr}"
    );
}

#[test]
fn the_first_search_says_it_builds_the_cache_and_later_ones_do_not() {
    let tree = embedded_tree();
    let stderr = |tree: &Tree| {
        let output = tree.cmd(&["search", "dark matter halos"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    let first = stderr(&tree);
    assert!(first.contains("building the vector cache of"), "{first}");
    let second = stderr(&tree);
    assert!(!second.contains("building the vector cache"), "{second}");
}

#[test]
fn the_cache_is_built_once_reused_and_rebuilt_for_changed_years_only() {
    let tree = embedded_tree();
    let query = "gravitational waves from binary black holes";
    assert!(!tree.model_dir().join(".cache/vectors").exists());
    let first = run_json(&tree, &["search", query]);
    let before: BTreeMap<&str, _> = ["2007", "2010", "2025"]
        .into_iter()
        .map(|y| (y, identity(&segment(&tree, y))))
        .collect();
    let second = run_json(&tree, &["search", query]);
    assert_eq!(first, second);
    for (year, id) in &before {
        assert_eq!(&identity(&segment(&tree, year)), id, "{year} reused");
    }

    // The held-back papers arrive and are embedded: only 2025 is refreshed.
    let all = records("metadata-2025.csv");
    write_csv(&tree.path("metadata/metadata-2025.csv"), &all);
    tree.cmd(&["embed", "-q"]).assert().success();
    let newcomer = &all[all.len() - 2];
    let doc = run_json(&tree, &["search", &text_of(newcomer), "-k", "3"]);
    assert_eq!(doc["results"][0]["paper_id"], newcomer.paper_id.as_str());
    assert_eq!(
        doc["results"][0]["title"],
        newcomer
            .title
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .as_str()
    );
    // 2025 gets a delta beside its segment, which stays as it was.
    let delta = tree.model_dir().join(".cache/vectors/2025.delta.seg");
    assert!(delta.exists());
    assert_eq!(identity(&segment(&tree, "2025")), before["2025"]);
    assert_eq!(identity(&segment(&tree, "2007")), before["2007"]);
    assert_eq!(identity(&segment(&tree, "2010")), before["2010"]);
    let similar = run_json(&tree, &["similar", &newcomer.paper_id, "-k", "3"]);
    assert_eq!(similar["results"].as_array().unwrap().len(), 3);

    // A year file that disappears takes its segment with it.
    std::fs::remove_file(tree.model_dir().join("2007.parquet")).unwrap();
    let doc = run_json(&tree, &["search", query, "-k", "400"]);
    assert!(
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["year"] != 2007)
    );
    assert!(!segment(&tree, "2007").exists());
}

#[test]
fn a_truncated_or_garbled_cache_is_rebuilt() {
    let tree = embedded_tree();
    let record = &records("metadata-2010.csv")[12];
    let expected = run_json(&tree, &["similar", &record.paper_id, "-k", "20"]);
    let good = std::fs::read(segment(&tree, "2010")).unwrap();

    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment(&tree, "2010"))
        .unwrap();
    file.set_len(good.len() as u64 / 2).unwrap();
    drop(file);
    assert_eq!(
        run_json(&tree, &["similar", &record.paper_id, "-k", "20"]),
        expected
    );
    assert_eq!(
        std::fs::read(segment(&tree, "2010")).unwrap().len(),
        good.len(),
        "rebuilt whole"
    );

    // One flipped byte in every 4 KiB, the length kept.
    for year in ["2010", "2025"] {
        let mut bytes = std::fs::read(segment(&tree, year)).unwrap();
        for i in (100..bytes.len()).step_by(4096) {
            bytes[i] ^= 0x5a;
        }
        std::fs::write(segment(&tree, year), &bytes).unwrap();
    }
    assert_eq!(
        run_json(&tree, &["similar", &record.paper_id, "-k", "20"]),
        expected
    );
    let rebuilt = std::fs::read(segment(&tree, "2010")).unwrap();
    assert!(
        rebuilt == good,
        "rebuilt to the same bytes (the build is deterministic)"
    );

    // One flipped byte in the int8 matrix: found when the scan reads its
    // block, which rebuilds the file and answers anyway.
    let mut bytes = std::fs::read(segment(&tree, "2010")).unwrap();
    let footer_at = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let footer: Value = serde_json::from_slice(&bytes[footer_at..]).unwrap();
    let int8_at = footer["sections"][0][0].as_u64().unwrap() as usize;
    bytes[int8_at + 384 * 7] ^= 0x01;
    std::fs::write(segment(&tree, "2010"), &bytes).unwrap();
    let output = tree
        .cmd(&["similar", &record.paper_id, "-k", "20", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("damaged"));
    assert_eq!(serde_json::from_slice::<Value>(&output.stdout).unwrap(), expected);
    assert!(std::fs::read(segment(&tree, "2010")).unwrap() == good);

    // Garbled titles: checked only when the results are joined to them,
    // which finds the damage, rebuilds and answers anyway.
    let mut bytes = good.clone();
    let (titles_at, titles_len) = (
        footer["sections"][8][0].as_u64().unwrap() as usize,
        footer["sections"][8][1].as_u64().unwrap() as usize,
    );
    for byte in &mut bytes[titles_at..titles_at + titles_len] {
        *byte ^= 0x20;
    }
    std::fs::write(segment(&tree, "2010"), &bytes).unwrap();
    let output = tree
        .cmd(&["similar", &record.paper_id, "-k", "20", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("damaged"));
    assert_eq!(serde_json::from_slice::<Value>(&output.stdout).unwrap(), expected);
    assert!(std::fs::read(segment(&tree, "2010")).unwrap() == good);

    // Garbage in place of the file.
    std::fs::write(segment(&tree, "2025"), b"not a cache").unwrap();
    assert_eq!(
        run_json(&tree, &["similar", &record.paper_id, "-k", "20"]),
        expected
    );
}

#[test]
fn search_works_when_the_cache_cannot_be_written() {
    let tree = embedded_tree();
    let record = &records("metadata-2025.csv")[3];
    let args = ["search", &text_of(record), "-k", "8"];
    let cached = run_json(&tree, &args);
    std::fs::remove_dir_all(tree.model_dir().join(".cache")).unwrap();

    // `.cache` taken by a file: nothing can be created under it, even by root.
    std::fs::write(tree.model_dir().join(".cache"), b"").unwrap();
    let output = tree.cmd(&args).arg("--json").output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be written"), "{stderr}");
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc, cached);
    std::fs::remove_file(tree.model_dir().join(".cache")).unwrap();

    // A read-only model directory (permissions; root ignores them).
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("SKIPPED: the permission-based read-only check needs a non-root user (running as root)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tree.model_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let output = tree.cmd(&args).arg("--json").output().unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc, cached);
    assert!(!dir.join(".cache").exists());
}

/// The engine alone on synthetic vectors: top k equals brute force (f64
/// cosine, ties by id) for many queries and filters, with and without the
/// cache.
#[test]
fn the_engine_equals_brute_force() {
    let tree = Tree::with_config(
        "[embedding]\n[[embedding.models]]\nalias = \"jasper_v1\"\nname = \"m\"\ndimension = 24\n",
    );
    let dim = 24;
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut all: Vec<(String, u16, Vec<f32>)> = Vec::new();
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    for (year, n) in [(2001u16, 900usize), (2002, 2500), (2003, 40)] {
        let mut rows = Vec::new();
        for i in 0..n {
            // Clustered, with exact duplicates, so that ties and near ties occur.
            let v: Vec<f32> = if i % 7 == 3 && !rows.is_empty() {
                let prev: &VectorRow = &rows[rows.len() - 1];
                prev.embedding.clone()
            } else {
                (0..dim)
                    .map(|j| if j < 3 { 3.0 + next() * 0.1 } else { next() })
                    .collect()
            };
            let id = format!("{year}.{i:05}");
            all.push((id.clone(), year, v.clone()));
            rows.push(VectorRow {
                paper_id: id,
                embedding: v,
                generated_at: "2025-01-01T00:00:00+00:00".into(),
                source: year_file::SOURCE.into(),
                text_hash: None,
            });
        }
        year_file::write_rows(&tree.model_dir().join(format!("{year}.parquet")), rows, dim).unwrap();
    }
    let config = Config::load(&tree.path("papersys.toml")).unwrap();
    let model = &config.models[0];
    let cached = VectorIndex::open(&config, model).unwrap();
    let memory = VectorIndex::open_with(&config, model, CacheMode::Off).unwrap();
    assert_eq!(cached.len(), all.len());
    for trial in 0..60 {
        let query: Vec<f32> = if trial % 3 == 0 {
            all[trial * 37 % all.len()].2.clone()
        } else {
            (0..dim).map(|j| if j < 3 { 3.0 } else { next() }).collect()
        };
        let k = [1, 5, 10, 50, 3000][trial % 5];
        let years = (trial % 4 == 1).then(|| [papersys::metadata::Year::parse("2002").unwrap()].into());
        let exclude: Vec<usize> = if trial % 2 == 0 {
            vec![trial, trial * 11]
        } else {
            vec![]
        };
        let filter = Filter {
            years: years.clone(),
            categories: Vec::new(),
            exclude: exclude.clone(),
        };
        let qn: f64 = query
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let mut expected: Vec<(f64, &str)> = all
            .iter()
            .enumerate()
            .filter(|(i, (_, y, _))| {
                !exclude.contains(i)
                    && years.as_ref().is_none_or(|ys: &std::collections::BTreeSet<_>| {
                        ys.contains(&papersys::metadata::Year::parse(&y.to_string()).unwrap())
                    })
            })
            .map(|(_, (id, _, v))| {
                let n: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
                let dot: f64 = v
                    .iter()
                    .zip(&query)
                    .map(|(&a, &b)| f64::from(a) * (f64::from(b) / qn))
                    .sum();
                (dot / n, id.as_str())
            })
            .collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        expected.truncate(k);
        for index in [&cached, &memory] {
            let hits = index.top_k(&query, k, &filter).unwrap();
            let got: Vec<&str> = hits.iter().map(|h| index.id(h.row)).collect();
            let want: Vec<&str> = expected.iter().map(|e| e.1).collect();
            assert_eq!(got.len(), want.len(), "trial {trial}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Equal ids, or a tie the summation order may split differently.
                assert!(
                    g == w || (hits[i].score - expected[i].0).abs() < 1e-12,
                    "trial {trial} rank {i}: {g} vs {w}"
                );
                assert!((hits[i].score - expected[i].0).abs() < 1e-12);
            }
        }
    }
    // Reopening reuses every segment.
    let again = VectorIndex::open(&config, model).unwrap();
    assert_eq!(again.report.reused.len(), 3);
    assert!(again.report.built.is_empty());
}

/// A model whose sentence-transformers config defines a query prompt: the
/// query is embedded with it (not with the document prompt the stored
/// vectors were made with), and the identity check still accepts the model.
#[test]
fn queries_get_the_models_query_prompt() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("backends/native/tests/fixtures/tiny-bert");
    let tree = Tree::with_config(
        "[embedding]\n[[embedding.models]]\nalias = \"jasper_v1\"\nname = \"tiny-bert\"\ndimension = 32\nmodel_path = \"model\"\n",
    );
    copy_dir(&fixture, &tree.path("model"));
    std::fs::write(
        tree.path("model/config_sentence_transformers.json"),
        r#"{"prompts": {"document": "passage: ", "query": "query: "}, "default_prompt_name": null}"#,
    )
    .unwrap();
    let rows: Vec<_> = records("metadata-2007.csv").into_iter().take(20).collect();
    write_csv(&tree.path("metadata/metadata-2007.csv"), &rows);
    tree.cmd(&["embed", "-q"]).assert().success();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(tree.model_dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_identity"]["document_prefix"], "passage: ");

    let text = text_of(&rows[4]);
    let doc = run_json(&tree, &["search", &text, "-k", "100"]);
    let got = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["paper_id"] == rows[4].paper_id.as_str())
        .unwrap()["score"]
        .as_f64()
        .unwrap();

    let embed = |prefix: &str, text: &str| -> Vec<f64> {
        use papersys_backend_core::Embedder;
        let options = papersys_backend_native::NativeOptions {
            name: "tiny-bert".into(),
            model_path: Some(tree.path("model")),
            document_prefix: Some(prefix.into()),
            ..Default::default()
        };
        let model = papersys_backend_native::NativeEmbedder::load(&options).unwrap();
        let batch = model.prepare(vec![text.to_string()]).unwrap();
        model
            .embed(&batch)
            .unwrap()
            .row(0)
            .iter()
            .map(|&v| f64::from(v))
            .collect()
    };
    let cosine = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
    };
    let stored = embed("passage: ", &text);
    let with_query_prompt = cosine(&embed("query: ", &text), &stored);
    let without = cosine(&embed("", &text), &stored);
    assert!(
        (got - with_query_prompt).abs() < 1e-5,
        "{got} vs {with_query_prompt}"
    );
    assert!((with_query_prompt - without).abs() > 1e-4 && with_query_prompt < 0.9999);
}

const CSV_HEADER: &str = "paper_id,title,abstract,categories,primary_category,authors,published_at,updated_at,doi,comment,journal_ref,license,source\n";

fn csv_row(id: &str, title: &str) -> String {
    format!(
        "{id},\"{title}\",\"An abstract.\",cs.LG;stat.ML,cs.LG,\"A. Author\",2024-03-01T00:00:00Z,2024-03-01T00:00:00Z,,,,,test\n"
    )
}

fn unit_rows(ids: &[String], dim: usize, seed: &mut u64) -> Vec<VectorRow> {
    ids.iter()
        .map(|id| {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    *seed ^= *seed << 13;
                    *seed ^= *seed >> 7;
                    *seed ^= *seed << 17;
                    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            VectorRow {
                paper_id: id.clone(),
                embedding: v,
                generated_at: "2025-01-01T00:00:00+00:00".into(),
                source: year_file::SOURCE.into(),
                text_hash: None,
            }
        })
        .collect()
}

/// Segment files, per query (id, score bits, title) of the top 20, and
/// the years refreshed.
type CacheState = (Vec<Vec<u8>>, Vec<Vec<(String, u64, String)>>, Vec<String>);

/// Every year's segment file and the answers to some queries.
fn cache_state(config: &Config, queries: &[Vec<f32>]) -> CacheState {
    let model = &config.models[0];
    let index = VectorIndex::open(config, model).unwrap();
    let answers = index
        .top_k_many(queries, 20, &Filter::default())
        .unwrap()
        .iter()
        .map(|hits| {
            hits.iter()
                .map(|h| {
                    let paper = index.paper(h.row).unwrap();
                    (
                        paper.paper_id.to_string(),
                        h.score.to_bits(),
                        paper.title.to_string(),
                    )
                })
                .collect()
        })
        .collect();
    let dir = config.data_root.join("embeddings/jasper_v1/.cache/vectors");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let files = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    (files, answers, index.report.refreshed.clone())
}

/// After papers are added to a year (appended metadata rows, vectors merged
/// as `embed` merges them), after a paper that had no vector gets one, and
/// after a metadata row changes in place, the refreshed cache is byte for
/// byte the cache built from nothing, and answers the same.
#[test]
fn an_incremental_refresh_equals_a_build_from_nothing() {
    let dim = 8;
    let tree = Tree::with_config(&format!(
        "[embedding]\n[[embedding.models]]\nalias = \"jasper_v1\"\nname = \"m\"\ndimension = {dim}\n"
    ));
    let csv = tree.path("metadata/metadata-2024.csv");
    std::fs::create_dir_all(tree.path("metadata")).unwrap();
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    let parquet = tree.model_dir().join("2024.parquet");
    // Three row groups and a bit (16,384 rows each); every 50th paper has no vector.
    let ids: Vec<String> = (0..50_000).map(|i| format!("2403.{i:05}")).collect();
    let mut text = String::from(CSV_HEADER);
    for id in &ids {
        text.push_str(&csv_row(id, &format!("Paper {id}")));
    }
    std::fs::write(&csv, &text).unwrap();
    let mut seed = 0x2545f4914f6cdd1du64;
    let embedded: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 50 != 7)
        .map(|(_, id)| id.clone())
        .collect();
    year_file::merge(&parquet, unit_rows(&embedded, dim, &mut seed), dim).unwrap();
    // A small second year that never changes.
    std::fs::write(
        tree.path("metadata/metadata-2023.csv"),
        format!("{CSV_HEADER}{}", csv_row("2301.00001", "Old")),
    )
    .unwrap();
    year_file::merge(
        &tree.model_dir().join("2023.parquet"),
        unit_rows(&["2301.00001".to_string()], dim, &mut seed),
        dim,
    )
    .unwrap();
    let config = Config::load(&tree.path("papersys.toml")).unwrap();
    let queries: Vec<Vec<f32>> =
        unit_rows(&(0..7).map(|i| i.to_string()).collect::<Vec<_>>(), dim, &mut seed)
            .into_iter()
            .map(|r| r.embedding)
            .collect();
    let cache = tree.model_dir().join(".cache");
    let from_nothing = |config: &Config| {
        std::fs::remove_dir_all(&cache).unwrap();
        cache_state(config, &queries)
    };
    let (_, _, refreshed) = cache_state(&config, &queries);
    assert!(refreshed.is_empty());

    // A day's papers, twice: rows appended to the CSV, vectors merged (ids
    // sort last). The year's segment stays as it was; a delta beside it
    // holds the new and changed rows, and the answers are those of a cache
    // built from nothing.
    let base = std::fs::read(tree.model_dir().join(".cache/vectors/2024.seg")).unwrap();
    let delta = tree.model_dir().join(".cache/vectors/2024.delta.seg");
    for day in 0..2 {
        let new: Vec<String> = (0..700).map(|i| format!("2412.{:05}", day * 700 + i)).collect();
        let mut appended = std::fs::OpenOptions::new().append(true).open(&csv).unwrap();
        for id in &new {
            std::io::Write::write_all(&mut appended, csv_row(id, &format!("New {id}")).as_bytes()).unwrap();
        }
        drop(appended);
        year_file::merge(&parquet, unit_rows(&new, dim, &mut seed), dim).unwrap();
        let (_, answers, refreshed) = cache_state(&config, &queries);
        assert_eq!(refreshed, ["2024"]);
        assert!(std::fs::read(tree.model_dir().join(".cache/vectors/2024.seg")).unwrap() == base);
        let delta_len = std::fs::metadata(&delta).unwrap().len();
        assert!(
            delta_len < base.len() as u64 / 2,
            "the delta ({delta_len} bytes) holds the changed row groups only"
        );
        let index = VectorIndex::open(&config, &config.models[0]).unwrap();
        assert!(index.report.refreshed.is_empty(), "the delta is reused");
        assert_eq!(index.len(), embedded.len() + 1 + 700 * (day + 1));
        let row = index.find(&new[699]).unwrap();
        assert_eq!(index.paper(row).unwrap().title, format!("New {}", new[699]));
        let every: Vec<&str> = index.ids().collect();
        assert_eq!(every.len(), index.len());
        drop(index);
        // The same answers as a cache built from nothing (which has no delta).
        let saved = std::fs::read_dir(tree.model_dir().join(".cache/vectors"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect::<Vec<_>>();
        let (_, answers_again, _) = from_nothing(&config);
        assert_eq!(answers, answers_again);
        assert!(!delta.exists());
        // Back to the base and delta, for the next step.
        std::fs::remove_dir_all(tree.model_dir().join(".cache/vectors")).unwrap();
        std::fs::create_dir_all(tree.model_dir().join(".cache/vectors")).unwrap();
        for (path, bytes) in saved {
            std::fs::write(path, bytes).unwrap();
        }
    }
    assert!(delta.exists());

    // A paper that had metadata but no vector gets one (the rows after it shift).
    year_file::merge(&parquet, unit_rows(&[ids[20_007].clone()], dim, &mut seed), dim).unwrap();
    let (files, answers, refreshed) = cache_state(&config, &queries);
    assert_eq!(refreshed, ["2024"]);
    let (files_again, answers_again, _) = from_nothing(&config);
    assert_eq!(answers, answers_again);
    assert!(files == files_again);

    // A title changes in place (not an append): the metadata is read again.
    let changed = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("Paper 2403.00003\"", "Renamed\"");
    std::fs::write(&csv, changed).unwrap();
    let (files, answers, refreshed) = cache_state(&config, &queries);
    assert_eq!(refreshed, ["2024"]);
    let (files_again, answers_again, _) = from_nothing(&config);
    assert_eq!(answers, answers_again);
    assert!(files == files_again);
    let index = VectorIndex::open(&config, &config.models[0]).unwrap();
    assert_eq!(
        index.paper(index.find("2403.00003").unwrap()).unwrap().title,
        "Renamed"
    );
}
