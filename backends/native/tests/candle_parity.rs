//! The candle engine (what GPU builds run) checked on the CPU: same
//! fixtures, same bounds as the native engine; f16 with a looser bound.
//! Run with `cargo test -p papersys-backend-native --features candle`.
#![cfg(feature = "candle")]

mod common;

use common::{assert_parity, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{NativeEmbedder, NativeOptions, Precision};

fn options(dir: &str) -> NativeOptions {
    NativeOptions {
        name: format!("test/{dir}"),
        model_path: Some(fixtures().join(dir)),
        batch_size: 8,
        ..NativeOptions::default()
    }
}

#[test]
fn candle_tiny_bert_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-bert"));
    let embedder = NativeEmbedder::load_candle_cpu(&options("tiny-bert"), Precision::F32).unwrap();
    assert_eq!(embedder.identity().max_tokens, 40);
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn candle_tiny_xlm_roberta_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-xlmr"));
    let embedder = NativeEmbedder::load_candle_cpu(&options("tiny-xlmr"), Precision::F32).unwrap();
    let id = embedder.identity();
    assert_eq!((id.max_tokens, id.pooling), (64, Pooling::Cls));
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn candle_f16_path_stays_close() {
    for dir in ["tiny-bert", "tiny-xlmr"] {
        let reference = read_reference(&fixtures().join(dir));
        let embedder = NativeEmbedder::load_candle_cpu(&options(dir), Precision::F16).unwrap();
        let vectors = assert_parity(&embedder, &reference, 0.999);
        assert!(vectors.as_flat().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn candle_minilm_matches_sentence_transformers() {
    let mut reference = read_reference(&fixtures().join("minilm"));
    let keep = 64;
    reference.texts.truncate(keep);
    reference.ids.truncate(keep);
    reference.vectors.truncate(keep * reference.dimension);
    let opts = NativeOptions {
        batch_size: 16,
        ..NativeOptions::default()
    };
    let embedder = NativeEmbedder::load_candle_cpu(&opts, Precision::F32)
        .unwrap_or_else(|e| panic!("run scripts/fetch-model.sh first to install the model.\n{e}"));
    assert_eq!(embedder.identity().max_tokens, 256);
    assert_parity(&embedder, &reference, 0.9999);
}
