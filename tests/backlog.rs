//! `papersys backlog` and `papersys status` through the binary: the
//! behaviour the Python original tested, plus what it never checked.

mod common;

use common::{Tree, backlog_rows, vector};
use papersys::store::year_file;
use predicates::str::contains;

const THREE: [(&str, &str, &str); 3] = [
    ("2401.00001", "First", "Abstract one."),
    ("2401.00002", "Second", "Abstract two."),
    ("2401.00003", "Third", "Abstract three."),
];

#[test]
fn nested_year_directory_gives_three_missing_file_rows() {
    let tree = Tree::new();
    tree.csv("metadata/2024/test.csv", &THREE);
    tree.cmd(&["backlog"])
        .assert()
        .success()
        .stdout(contains("3 papers wait"));
    let rows = backlog_rows(&tree.model_dir());
    assert_eq!(rows.len(), 3);
    for (row, (id, _, _)) in rows.iter().zip(THREE) {
        assert_eq!(row.0, id);
        assert_eq!(row.1, "missing_embedding_file");
        assert_eq!(row.2, "metadata/2024/test.csv");
        assert_eq!(row.3, "2024");
    }
}

#[test]
fn a_year_file_with_two_of_three_leaves_the_third() {
    let tree = Tree::new();
    tree.csv("metadata/2024/test.csv", &THREE);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    year_file::merge(
        &tree.model_dir().join("2024.parquet"),
        vec![vector("2401.00001"), vector("2401.00002")],
        4,
    )
    .unwrap();
    tree.cmd(&["backlog"]).assert().success();
    assert_eq!(
        backlog_rows(&tree.model_dir()),
        [(
            "2401.00003".to_string(),
            "missing_embedding".to_string(),
            "metadata/2024/test.csv".to_string(),
            "2024".to_string()
        )]
    );
}

#[test]
fn flat_layout_origin_is_relative_to_the_data_root() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE[..1]);
    tree.csv("metadata/latest.csv", &THREE);
    tree.cmd(&["backlog"]).assert().success();
    let rows = backlog_rows(&tree.model_dir());
    assert_eq!(rows.len(), 1, "latest.csv is never an input");
    assert_eq!(rows[0].2, "metadata/metadata-2024.csv");
}

#[test]
fn manifest_describes_the_files_after_a_write() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2023.csv", &THREE[..1]);
    tree.csv("metadata/metadata-2024.csv", &THREE[1..]);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    year_file::merge(
        &tree.model_dir().join("2023.parquet"),
        vec![vector("2401.00001")],
        4,
    )
    .unwrap();
    year_file::merge(
        &tree.model_dir().join("2024.parquet"),
        vec![vector("2401.00002"), vector("2401.00003")],
        4,
    )
    .unwrap();
    tree.cmd(&["backlog"])
        .assert()
        .success()
        .stdout(contains("nothing waits"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.model_dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"], "jasper_v1");
    assert_eq!(manifest["dimension"], 4);
    assert_eq!(manifest["total_rows"], 3);
    assert_eq!(manifest["years"], serde_json::json!({"2023": 1, "2024": 2}));
    assert_eq!(
        manifest["files"],
        serde_json::json!(["2023.parquet", "2024.parquet"])
    );
    assert!(
        !tree.model_dir().join("backlog.parquet").exists(),
        "an empty backlog is removed"
    );
}

#[test]
fn refreshing_twice_gives_the_same_rows_and_the_cache_changes_nothing() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE);
    tree.csv("metadata/metadata-2023.csv", &THREE[..1]);
    let first = tree.json(&["backlog"]);
    let rows_first = backlog_rows(&tree.model_dir());
    let second = tree.json(&["backlog"]);
    assert_eq!(first, second);
    assert_eq!(rows_first, backlog_rows(&tree.model_dir()));
    let uncached = tree.json(&["backlog", "--no-cache"]);
    assert_eq!(first, uncached);
}

#[test]
fn a_changed_csv_is_read_again() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE[..2]);
    tree.cmd(&["backlog"]).assert().success();
    assert_eq!(backlog_rows(&tree.model_dir()).len(), 2);
    tree.csv("metadata/metadata-2024.csv", &THREE);
    tree.cmd(&["backlog"]).assert().success();
    assert_eq!(backlog_rows(&tree.model_dir()).len(), 3);
}

#[test]
fn repeated_ids_keep_the_last_row_and_are_counted() {
    let tree = Tree::new();
    tree.csv(
        "metadata/metadata-2024.csv",
        &[
            ("2401.1", "t", "old"),
            ("2401.2", "t", "a"),
            ("2401.1", "t", "new"),
        ],
    );
    let report = tree.json(&["backlog"]);
    let year = &report["models"][0]["years"][0];
    assert_eq!(year["papers"], 2);
    assert_eq!(year["duplicate_rows"], 1);
    tree.cmd(&["backlog"])
        .assert()
        .success()
        .stderr(contains("repeat a paper_id"));
}

#[test]
fn empty_texts_wait_with_their_own_reason() {
    let tree = Tree::new();
    tree.csv(
        "metadata/metadata-2024.csv",
        &[("2401.1", "  ", ""), ("2401.2", "t", "a")],
    );
    let report = tree.json(&["backlog"]);
    assert_eq!(
        report["models"][0]["waiting_by_reason"],
        serde_json::json!({"empty_text": 1, "missing_embedding_file": 1})
    );
}

#[test]
fn bad_rows_are_reported_with_file_and_line_and_the_rest_is_used() {
    let tree = Tree::new();
    std::fs::write(
        tree.path("metadata/metadata-2024.csv"),
        "paper_id,title,abstract\n2401.1,t,a\n2401.2,\"broken,a\n2401.3,t,a\n2401.4,only-two\n",
    )
    .unwrap();
    std::fs::write(tree.path("metadata/metadata-2023.csv"), "paper_id,summary\n1,x\n").unwrap();
    let output = tree.cmd(&["backlog"]).output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("metadata-2024.csv:3: a quoted field is never closed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("metadata-2024.csv:5: expected 3 fields, found 2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("metadata-2023.csv: missing required column(s) title, abstract"),
        "{stderr}"
    );
    let ids: Vec<String> = backlog_rows(&tree.model_dir()).into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["2401.1", "2401.3"]);
}

#[test]
fn json_output_is_one_document_and_logs_stay_on_stderr() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE);
    let report = tree.json(&["backlog", "-v"]);
    assert_eq!(report["models"][0]["waiting"], 3);
    let status = tree.json(&["status"]);
    assert_eq!(status["models"][0]["years"][0]["waiting"], 3);
    assert_eq!(status["models"][0]["backlog_current"], true);
}

#[test]
fn status_shows_papers_vectors_waiting_and_files() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    year_file::merge(
        &tree.model_dir().join("2024.parquet"),
        vec![vector("2401.00001")],
        4,
    )
    .unwrap();
    tree.cmd(&["backlog"]).assert().success();
    let status = tree.json(&["status"]);
    let year = &status["models"][0]["years"][0];
    assert_eq!(year["year"], "2024");
    assert_eq!(year["papers"], 3);
    assert_eq!(year["vectors"], 1);
    assert_eq!(year["waiting"], 2);
    assert_eq!(year["file"], "embeddings/jasper_v1/2024.parquet");
    assert!(year["file_bytes"].as_u64().unwrap() > 0);
    tree.cmd(&["status"])
        .assert()
        .success()
        .stdout(contains("2024"))
        .stdout(contains("total"));
}

#[test]
fn a_second_writer_fails_at_once_naming_the_pid_and_status_still_works() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    let lock = papersys::store::lock::WriterLock::acquire(&tree.model_dir()).unwrap();
    tree.cmd(&["backlog"])
        .assert()
        .code(1)
        .stderr(contains(format!("pid {}", std::process::id())));
    tree.cmd(&["status"]).assert().success();
    drop(lock);
    tree.cmd(&["backlog"]).assert().success();
}

#[test]
fn a_damaged_year_file_is_moved_aside_and_its_papers_wait_again() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    std::fs::write(tree.model_dir().join("2024.parquet"), b"garbage").unwrap();
    tree.cmd(&["backlog"])
        .assert()
        .success()
        .stderr(contains("2024.parquet could not be read"));
    assert!(!tree.model_dir().join("2024.parquet").exists());
    let moved: Vec<_> = std::fs::read_dir(tree.model_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("2024.parquet.damaged-")
        })
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        std::fs::read(moved[0].path()).unwrap(),
        b"garbage",
        "never deleted or changed"
    );
    assert_eq!(backlog_rows(&tree.model_dir()).len(), 3);
}

#[test]
fn a_year_file_of_another_dimension_stops_with_its_name() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &THREE);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    let mut row = vector("2401.00001");
    row.embedding = vec![0.1; 8];
    year_file::merge(&tree.model_dir().join("2024.parquet"), vec![row], 8).unwrap();
    let before = std::fs::read(tree.model_dir().join("2024.parquet")).unwrap();
    tree.cmd(&["backlog"])
        .assert()
        .code(1)
        .stderr(contains("2024.parquet holds 8-dimensional vectors"));
    assert_eq!(
        std::fs::read(tree.model_dir().join("2024.parquet")).unwrap(),
        before
    );
}

#[test]
fn config_errors_exit_2_with_file_key_and_line() {
    let tree = Tree::with_config(
        "[embedding]\n[[embedding.models]]\nalias = \"a\"\nname = \"n\"\ndimension = 4\nbatchsize = 3\n",
    );
    tree.cmd(&["backlog"])
        .assert()
        .code(2)
        .stderr(contains("batchsize"))
        .stderr(contains("papersys.toml:6:"));
}

#[test]
fn a_missing_config_lists_the_paths_tried() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = assert_cmd::Command::cargo_bin("papersys").unwrap();
    cmd.current_dir(dir.path())
        .arg("status")
        .assert()
        .code(2)
        .stderr(contains("papersys.toml, config/papersys.toml"));
}

#[test]
fn an_unknown_alias_is_a_usage_error_listing_the_models() {
    let tree = Tree::new();
    tree.cmd(&["backlog", "--model", "nope"])
        .assert()
        .code(2)
        .stderr(contains("no model `nope`"))
        .stderr(contains("jasper_v1"));
}

#[test]
fn an_empty_metadata_directory_is_not_an_error() {
    let tree = Tree::new();
    tree.cmd(&["backlog"])
        .assert()
        .success()
        .stdout(contains("nothing waits"));
}

#[test]
fn a_missing_metadata_directory_names_the_config_keys() {
    let tree = Tree::new();
    std::fs::remove_dir(tree.path("metadata")).unwrap();
    // A configuration problem (issue 12 item 19): exit 2.
    tree.cmd(&["backlog"])
        .assert()
        .code(2)
        .stderr(contains("[ingestion].output_dir"));
}

#[test]
fn several_models_each_get_their_backlog() {
    let config = format!(
        "{}\n[[embedding.models]]\nalias = \"other\"\nname = \"x\"\ndimension = 4\n",
        common::CONFIG
    );
    let tree = Tree::with_config(&config);
    tree.csv("metadata/metadata-2024.csv", &THREE);
    let report = tree.json(&["backlog", "--all-models"]);
    assert_eq!(report["models"].as_array().unwrap().len(), 2);
    assert!(tree.path("embeddings/other/backlog.parquet").exists());
    assert!(tree.path("embeddings/jasper_v1/backlog.parquet").exists());
}
