//! `papersys prefs add | import | list` through the binary.

mod common;

use std::path::Path;

use common::Tree;
use predicates::str::contains;

/// A tree whose metadata holds two of the sample's papers.
fn tree() -> Tree {
    let tree = Tree::new();
    tree.csv(
        "metadata/metadata-2025.csv",
        &[
            ("2504.21091", "A New High-latitude H I Cloud", "A"),
            ("0704.0007", "Old", "A"),
        ],
    );
    tree
}

fn current(tree: &Tree) -> Vec<(String, String)> {
    let list = tree.json(&["prefs", "list"]);
    list["preferences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["paper_id"].as_str().unwrap().to_string(),
                p["preference"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn events(tree: &Tree) -> String {
    let mut all = String::new();
    let mut files: Vec<_> = std::fs::read_dir(tree.path("preferences"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    for file in files {
        all.push_str(&std::fs::read_to_string(file).unwrap());
    }
    all
}

#[test]
fn add_records_and_the_latest_preference_wins() {
    let tree = tree();
    let added = tree.json(&[
        "prefs",
        "add",
        "--like",
        "2504.21091v2",
        "arXiv:0704.0007",
        "2401.99999",
    ]);
    assert_eq!(added["recorded"], 3);
    assert_eq!(added["unknown"], serde_json::json!(["2401.99999"]));
    // The same like again (a duplicate), then a change of mind.
    tree.cmd(&["prefs", "add", "--like", "2504.21091"])
        .assert()
        .success();
    let changed = tree.json(&["prefs", "add", "--dislike", "https://arxiv.org/abs/0704.0007v1"]);
    assert_eq!(changed["conflicts"], 1);
    let mut now = current(&tree);
    now.sort();
    assert_eq!(
        now,
        [
            ("0704.0007".to_string(), "dislike".to_string()),
            ("2401.99999".to_string(), "like".to_string()),
            ("2504.21091".to_string(), "like".to_string()),
        ]
    );
    // Every event is kept, in order.
    let log = events(&tree);
    assert_eq!(log.matches("2504.21091,like,").count(), 2, "{log}");
    assert_eq!(log.matches("0704.0007,").count(), 2, "{log}");
    tree.cmd(&["prefs", "add", "--neutral", "0704.0007"])
        .assert()
        .success();
    assert!(current(&tree).contains(&("0704.0007".to_string(), "neutral".to_string())));
    let list = tree.cmd(&["prefs", "list"]).output().unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(text.contains("A New High-latitude H I Cloud"), "{text}");
    assert!(text.contains("(not in the metadata)"), "{text}");
}

#[test]
fn add_refuses_what_is_not_an_id_and_records_nothing() {
    let tree = tree();
    tree.cmd(&["prefs", "add", "--like", "2504.21091", "not-an-id"])
        .assert()
        .code(2)
        .stderr(contains("`not-an-id` is not an arXiv id"));
    assert!(!tree.path("preferences").exists());
    tree.cmd(&["prefs", "add", "2504.21091"]).assert().code(2);
    tree.cmd(&["prefs", "add", "--like", "--dislike", "2504.21091"])
        .assert()
        .code(2);
}

#[test]
fn import_orders_by_recorded_at_then_by_row_and_names_bad_rows() {
    let tree = tree();
    std::fs::write(
        tree.path("mine.csv"),
        "arxiv_id,preference,recorded_at\n\
         2504.21091,dislike,2025-05-02T00:00:00Z\n\
         2504.21091,like,2025-05-01T00:00:00Z\n\
         0704.0007,like,2025-05-01T00:00:00Z\n\
         0704.0007,dislike,2025-05-01T00:00:00Z\n\
         bogus,like,2025-05-01T00:00:00Z\n\
         2401.00001,love,2025-05-01T00:00:00Z\n\
         2401.00002,like,someday\n",
    )
    .unwrap();
    let output = tree
        .cmd(&["prefs", "import", "mine.csv", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["format"], "preferences");
    assert_eq!(report["rows"], 7);
    assert_eq!(report["recorded"], 4);
    assert_eq!(report["duplicates"], 2);
    assert_eq!(report["conflicts"], 2);
    let lines: Vec<u64> = report["input_issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [6, 7, 8]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mine.csv:6: row skipped: `bogus` is not an arXiv id"),
        "{stderr}"
    );
    let mut now = current(&tree);
    now.sort();
    // Latest recorded_at wins for the first; the later row wins the tie.
    assert_eq!(
        now,
        [
            ("0704.0007".to_string(), "dislike".to_string()),
            ("2504.21091".to_string(), "dislike".to_string()),
        ]
    );
}

#[test]
fn a_zotero_export_becomes_likes() {
    let tree = tree();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zotero-export.csv");
    let report = tree.json(&["prefs", "import", fixture.to_str().unwrap()]);
    assert_eq!(report["format"], "zotero");
    assert_eq!(report["rows"], 5);
    assert_eq!(report["recorded"], 4, "{report}");
    assert_eq!(report["likes"], 4);
    assert_eq!(report["not_arxiv"], 1, "the book");
    assert_eq!(report["duplicates"], 1, "the item saved twice");
    assert_eq!(report["unknown"], serde_json::json!(["hep-th/9901001"]));
    let mut now = current(&tree);
    now.sort();
    assert_eq!(
        now,
        [
            ("0704.0007".to_string(), "like".to_string()),
            ("2504.21091".to_string(), "like".to_string()),
            ("hep-th/9901001".to_string(), "like".to_string()),
        ]
    );
    // Date Added is the event time: a later dislike overrides the library.
    let log = events(&tree);
    assert!(
        log.contains("0704.0007,like,2024-01-15T10:23:45.000000Z"),
        "{log}"
    );
    tree.cmd(&["prefs", "add", "--dislike", "0704.0007"])
        .assert()
        .success();
    tree.cmd(&["prefs", "import", fixture.to_str().unwrap()])
        .assert()
        .success();
    assert!(current(&tree).contains(&("0704.0007".to_string(), "dislike".to_string())));
}

#[test]
fn an_unusable_import_file_is_a_usage_error() {
    let tree = tree();
    std::fs::write(
        tree.path("x.csv"),
        "user_id,paper_id,preference_score\nu1,2501.00001,0.8\n",
    )
    .unwrap();
    tree.cmd(&["prefs", "import", "x.csv"])
        .assert()
        .code(2)
        .stderr(contains("not a preference file"));
    tree.cmd(&["prefs", "import", "missing.csv"])
        .assert()
        .code(1)
        .stderr(contains("missing.csv"));
}
