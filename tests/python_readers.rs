//! The files papersys writes must read in Python (pyarrow, polars) with the
//! contract's types: the recommender downstream depends on it. The Python
//! environment comes from `scripts/python-env.sh` (installed on first use).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Tree, vector};
use papersys::store::year_file;

fn python() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(repo.join("scripts/python-env.sh"))
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "scripts/python-env.sh failed (it needs python3 and PyPI): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn year_files_manifest_and_backlog_read_in_pyarrow_and_polars() {
    let tree = Tree::new();
    tree.csv(
        "metadata/metadata-2024.csv",
        &[
            ("2401.10000", "T", "A"),
            ("2401.00002", "T", "A"),
            ("2401.00003", "T", "A"),
        ],
    );
    tree.csv("metadata/metadata-2023.csv", &[("2301.00001", "T", "A")]);
    std::fs::create_dir_all(tree.model_dir()).unwrap();
    let mut first = vector("2401.10000");
    first.embedding = vec![0.25, -1.5, 3.0e-8, 1.0];
    year_file::merge(
        &tree.model_dir().join("2024.parquet"),
        vec![first.clone(), vector("2401.00002")],
        4,
    )
    .unwrap();
    tree.cmd(&["backlog"]).assert().success();
    let expected = serde_json::json!({ "2401.10000": first.embedding });
    let expected_path = tree.path("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python())
        .arg(repo.join("scripts/check_readers.py"))
        .arg(tree.root())
        .arg("jasper_v1")
        .arg("--expect-vectors")
        .arg(&expected_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
