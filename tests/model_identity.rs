//! Every year file and checkpoint records the model that made it, so two
//! models' vectors cannot mix under one alias even when `manifest.json` is
//! lost, and a lost manifest is rebuilt with the model it recorded.

mod common;

#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use common::{REMOTE_ALIAS, REMOTE_DIM, Tree};
use papersys::store::year_file;
use support::{Request, TestServer, ok_reply};

fn is_check(request: &Request) -> bool {
    let inputs = request.inputs();
    inputs.len() == 1 && inputs[0].contains("papersys check")
}

fn papers(tree: &Tree, range: std::ops::Range<usize>) {
    tree.generated_papers(range);
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn without_its_manifest_a_store_still_refuses_another_model_of_the_same_dimension() {
    let server = TestServer::start(|request, _| ok_reply(request, REMOTE_DIM));
    let config = common::remote_config(&[&server.url], 1000, "");
    let tree = Tree::with_config(&config);
    papers(&tree, 0..10);
    let dir = tree.path(&format!("embeddings/{REMOTE_ALIAS}"));
    let first = tree.json(&["embed"]);
    assert_eq!(first["models"][0]["embedded"], 10);
    let year = dir.join("2024.parquet");
    let recorded = year_file::footer(&year)
        .unwrap()
        .identity
        .expect("the year file records its model");
    assert_eq!(recorded.name, "fake-model");
    assert_eq!(recorded.dimension, REMOTE_DIM);

    // The manifest is lost, the config now names another model of the same
    // dimension, and new papers wait.
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    std::fs::write(
        tree.path("papersys.toml"),
        config.replace("name = \"fake-model\"", "name = \"other-model\""),
    )
    .unwrap();
    papers(&tree, 0..14);
    let before = std::fs::read(&year).unwrap();
    let requests_before = server.requests();

    let output = tree.cmd(&["embed"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2024.parquet"), "names the file: {stderr}");
    assert!(
        stderr.contains("fake-model") && stderr.contains("other-model"),
        "names both models: {stderr}"
    );
    assert_eq!(
        std::fs::read(&year).unwrap(),
        before,
        "the year file is untouched"
    );
    assert!(!dir.join(".pending").exists(), "nothing checkpointed");
    let sent: Vec<Request> = server.recorded()[requests_before..].to_vec();
    assert!(sent.iter().all(is_check), "only the start-up check was sent");
    // The rebuilt manifest records the model the files say made them.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_identity"]["name"], "fake-model");
    assert_eq!(manifest["total_rows"], 10);
    assert!(
        entries(&dir).iter().all(|n| !n.contains(".tmp")),
        "{:?}",
        entries(&dir)
    );
}

#[test]
fn year_files_that_record_no_model_are_adopted_and_then_record_it() {
    let server = TestServer::start(|request, _| ok_reply(request, REMOTE_DIM));
    let tree = Tree::with_config(&common::remote_config(&[&server.url], 1000, ""));
    papers(&tree, 0..6);
    let dir = tree.path(&format!("embeddings/{REMOTE_ALIAS}"));
    std::fs::create_dir_all(&dir).unwrap();
    // As the Python original writes it: no identity, no manifest.
    let old: Vec<year_file::VectorRow> = (0..3)
        .map(|i| year_file::VectorRow {
            paper_id: format!("2401.{i:05}"),
            embedding: vec![0.25; REMOTE_DIM],
            generated_at: papersys::store::manifest::now_iso(),
            source: year_file::SOURCE.to_string(),
            text_hash: None,
        })
        .collect();
    let year = dir.join("2024.parquet");
    year_file::write_rows(&year, old, REMOTE_DIM).unwrap();
    assert_eq!(year_file::footer(&year).unwrap().identity, None);

    let report = tree.json(&["embed"]);
    assert_eq!(
        report["models"][0]["embedded"], 3,
        "only the papers without a vector"
    );
    let footer = year_file::footer(&year).unwrap();
    assert_eq!(footer.rows, 6);
    assert_eq!(footer.identity.unwrap().name, "fake-model");
    let rows = year_file::read_rows(&year, REMOTE_DIM).unwrap();
    assert_eq!(
        rows[0].embedding,
        vec![0.25; REMOTE_DIM],
        "the adopted vectors are kept"
    );
}

fn manifest_identity(tree: &Tree) -> serde_json::Value {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.model_dir().join("manifest.json")).unwrap()).unwrap();
    manifest["model_identity"].clone()
}

/// The precision is part of the model identity: vectors made in float32
/// and in bfloat16 never mix under one alias without `--reembed`. On a CPU
/// without AVX512-BF16 the bfloat16 request runs float32 (with a warning)
/// and is recorded as such, so the store is kept.
#[test]
fn a_float32_store_refuses_a_bfloat16_run_without_reembed() {
    use papersys_backend_native::kernels::bf16::Bf16Dispatch;
    let tree = Tree::with_config(common::REAL_MODEL);
    papers(&tree, 0..4);
    assert_eq!(tree.json(&["embed"])["models"][0]["embedded"], 4);
    assert_eq!(
        manifest_identity(&tree).get("precision"),
        None,
        "float32 is not recorded"
    );
    std::fs::write(
        tree.path("papersys.toml"),
        common::REAL_MODEL.replace("batch_size = 32", "batch_size = 32\nprecision = \"bfloat16\""),
    )
    .unwrap();
    papers(&tree, 0..6);
    let output = tree.cmd(&["embed"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    match Bf16Dispatch::detect() {
        Bf16Dispatch::Avx512Bf16(_) => {
            assert_eq!(output.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains("precision") && stderr.contains("bfloat16") && stderr.contains("float32"),
                "names the precisions: {stderr}"
            );
            let again = tree.json(&["embed", "--reembed"]);
            assert_eq!(again["models"][0]["embedded"], 6);
            assert_eq!(manifest_identity(&tree)["precision"], "bfloat16");
            // And back to float32, with new papers waiting: refused the same way.
            std::fs::write(tree.path("papersys.toml"), common::REAL_MODEL).unwrap();
            papers(&tree, 0..8);
            assert_eq!(tree.cmd(&["embed"]).output().unwrap().status.code(), Some(2));
        }
        Bf16Dispatch::Float32Fallback => {
            assert!(output.status.success(), "{stderr}");
            assert!(stderr.contains("AVX512-BF16"), "warns: {stderr}");
            assert_eq!(manifest_identity(&tree).get("precision"), None);
        }
    }
}

/// `precision = "int8"` is recorded the same way: a float32 store refuses
/// it without `--reembed`, which then records "int8". On a CPU without
/// AVX512-VNNI the request runs float32 (with a warning) and the store is
/// kept.
#[test]
fn a_float32_store_refuses_an_int8_run_without_reembed() {
    use papersys_backend_native::kernels::int8::Int8Dispatch;
    let tree = Tree::with_config(common::REAL_MODEL);
    papers(&tree, 0..3);
    assert_eq!(tree.json(&["embed"])["models"][0]["embedded"], 3);
    std::fs::write(
        tree.path("papersys.toml"),
        common::REAL_MODEL.replace("batch_size = 32", "batch_size = 32\nprecision = \"int8\""),
    )
    .unwrap();
    papers(&tree, 0..5);
    let output = tree.cmd(&["embed"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    match Int8Dispatch::detect() {
        Int8Dispatch::Avx512Vnni(_) => {
            assert_eq!(output.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains("precision") && stderr.contains("int8") && stderr.contains("float32"),
                "names the precisions: {stderr}"
            );
            let again = tree.json(&["embed", "--reembed"]);
            assert_eq!(again["models"][0]["embedded"], 5);
            assert_eq!(manifest_identity(&tree)["precision"], "int8");
        }
        Int8Dispatch::Float32Fallback => {
            assert!(output.status.success(), "{stderr}");
            assert!(stderr.contains("AVX512-VNNI"), "warns: {stderr}");
            assert_eq!(manifest_identity(&tree).get("precision"), None);
        }
    }
}
