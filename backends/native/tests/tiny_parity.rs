//! Fast parity tests on tiny random checkpoints against sentence-transformers.

mod common;

use common::{assert_parity, fixture_options, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{NativeEmbedder, NativeOptions};

#[test]
fn tiny_bert_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-bert"));
    for (threads, batch) in [(1, 5), (2, 32)] {
        let embedder = NativeEmbedder::load(&fixture_options("tiny-bert", threads, batch)).unwrap();
        let id = embedder.identity();
        assert_eq!(
            (id.dimension, id.max_tokens, id.pooling, id.normalize),
            (32, 40, Pooling::Mean, true)
        );
        assert_eq!(id.document_prefix, "");
        assert_eq!(id.backend, "native");
        assert_eq!(id.weights_sha256.as_ref().map(|s| s.len()), Some(64));
        assert_parity(&embedder, &reference, 0.99999);
    }
}

#[test]
fn tiny_xlm_roberta_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-xlmr"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-xlmr", 2, 7)).unwrap();
    let id = embedder.identity();
    // max_position_embeddings 66 minus the padding offset 2: 64 tokens.
    assert_eq!(
        (id.dimension, id.max_tokens, id.pooling, id.normalize),
        (32, 64, Pooling::Cls, false)
    );
    // The document prompt of config_sentence_transformers.json.
    assert_eq!(embedder.document_prefix(), "passage: ");
    assert_eq!(id.document_prefix, "passage: ");
    let opts = fixture_options("tiny-xlmr", 1, 1);
    assert_eq!(
        papersys_backend_native::document_prefix(&opts).unwrap(),
        "passage: "
    );
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn output_order_and_batching_do_not_change_vectors() {
    let reference = read_reference(&fixtures().join("tiny-bert"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-bert", 2, 3)).unwrap();
    let all = embedder
        .embed(&embedder.prepare(reference.texts.clone()).unwrap())
        .unwrap();
    for (i, text) in reference.texts.iter().enumerate().step_by(5) {
        let one = embedder
            .embed(&embedder.prepare(vec![text.clone()]).unwrap())
            .unwrap();
        let d = one
            .row(0)
            .iter()
            .zip(all.row(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "text {i} differs by {d} alone vs in a batch");
    }
    let empty = embedder.embed(&embedder.prepare(Vec::new()).unwrap()).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn explicit_prefix_and_max_length_override_the_model() {
    let mut opts = fixture_options("tiny-xlmr", 1, 4);
    opts.document_prefix = Some(String::new());
    opts.max_length = Some(10);
    let embedder = NativeEmbedder::load(&opts).unwrap();
    assert_eq!(embedder.document_prefix(), "");
    assert_eq!(embedder.identity().max_tokens, 10);
    let long = "word ".repeat(100);
    assert_eq!(embedder.tokenize(&[long]).unwrap().input_ids.len(), 10);
}

#[test]
fn dimension_mismatch_names_both_numbers_and_the_key() {
    let mut opts = fixture_options("tiny-bert", 1, 4);
    opts.expected_dimension = Some(384);
    let e = NativeEmbedder::load(&opts).err().unwrap().to_string();
    assert!(
        e.contains("32") && e.contains("384") && e.contains("`dimension`"),
        "{e}"
    );
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in walk(&fixtures().join(name)) {
        let rel = entry.strip_prefix(fixtures().join(name)).unwrap();
        let dst = tmp.path().join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, dst).unwrap();
    }
    tmp
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn broken_model_directories_name_the_file_or_tensor() {
    let tmp = copy_fixture("tiny-bert");
    let opts = NativeOptions {
        model_path: Some(tmp.path().to_path_buf()),
        ..fixture_options("tiny-bert", 1, 4)
    };
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let e = NativeEmbedder::load(&opts).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");

    // A config that disagrees with the weights: the tensor is named.
    let tmp = copy_fixture("tiny-bert");
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 65");
    std::fs::write(&config, text).unwrap();
    let opts = NativeOptions {
        model_path: Some(tmp.path().to_path_buf()),
        ..opts
    };
    let e = NativeEmbedder::load(&opts).err().unwrap().to_string();
    assert!(
        e.contains("encoder.layer.0.intermediate.dense.weight") && e.contains("[64, 32]"),
        "{e}"
    );

    // An architecture the engine does not run.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"model_type\": \"bert\"", "\"model_type\": \"llama\"");
    std::fs::write(&config, text).unwrap();
    let e = NativeEmbedder::load(&opts).err().unwrap().to_string();
    assert!(
        e.contains("\"llama\"") && e.contains("bert") && e.contains("xlm-roberta"),
        "{e}"
    );
}

#[test]
fn malformed_token_batches_are_errors_not_panics() {
    use papersys_backend_core::{PreparedBatch, TokenBatch};
    let embedder = NativeEmbedder::load(&fixture_options("tiny-bert", 1, 4)).unwrap();
    for (ids, cu) in [
        (vec![2, 3], vec![0, 3]),
        (vec![2, 3, 4], vec![0, 2, 1, 3]),
        (vec![2, 3], vec![1, 2]),
        (vec![2, 9999], vec![0, 2]),
        (vec![2; 100], vec![0, 100]),
    ] {
        let batch = PreparedBatch::Tokens(TokenBatch {
            input_ids: ids,
            cu_seq_lengths: cu.clone(),
        });
        let e = embedder.embed(&batch).unwrap_err().to_string();
        assert!(e.contains("inference failed"), "{cu:?}: {e}");
    }
}
