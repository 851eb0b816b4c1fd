//! ModernBERT on a tiny random checkpoint (scripts/fixtures/make_modernbert.py)
//! against sentence-transformers: alternating global and 16-token local
//! attention, texts longer than the window.

mod common;

use common::{assert_parity, fixture_options, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{NativeEmbedder, NativeOptions};

#[test]
fn tiny_modernbert_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-modernbert"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-modernbert", 2, 7)).unwrap();
    let id = embedder.identity();
    assert_eq!(
        (id.dimension, id.max_tokens, id.pooling, id.normalize),
        (32, 96, Pooling::Mean, true)
    );
    // The local window is 16 tokens (8 each side): most texts are far longer.
    let long = reference.ids.iter().filter(|ids| ids.len() > 17).count();
    assert!(
        long * 2 > reference.ids.len(),
        "only {long} texts exceed the local window"
    );
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn one_thread_and_single_text_batches_agree() {
    let reference = read_reference(&fixtures().join("tiny-modernbert"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-modernbert", 1, 1)).unwrap();
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn unsupported_activation_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("tiny-modernbert");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    for dir in ["1_Pooling", "2_Normalize"] {
        if src.join(dir).is_dir() {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
            for entry in std::fs::read_dir(src.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, tmp.path().join(dir).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"hidden_activation\": \"gelu\""), "{text}");
    std::fs::write(
        &config,
        text.replace(
            "\"hidden_activation\": \"gelu\"",
            "\"hidden_activation\": \"silu\"",
        ),
    )
    .unwrap();
    let opts = NativeOptions {
        model_path: Some(tmp.path().to_path_buf()),
        ..fixture_options("tiny-modernbert", 1, 4)
    };
    let e = NativeEmbedder::load(&opts).err().unwrap().to_string();
    assert!(e.contains("hidden_activation") && e.contains("silu"), "{e}");
}
