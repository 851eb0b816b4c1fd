//! Gemma 3 as EmbeddingGemma runs it, on tiny random checkpoints
//! (scripts/fixtures/make_modernbert.py) against sentence-transformers:
//! bidirectional attention, sliding layers with a 16-token window, GQA,
//! q/k norms, EmbeddingGemma's document prompt.

mod common;

use common::{assert_parity, fixture_options, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::NativeEmbedder;

#[test]
fn tiny_gemma3_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-gemma3"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-gemma3", 2, 7)).unwrap();
    let id = embedder.identity();
    assert_eq!(
        (id.dimension, id.max_tokens, id.pooling, id.normalize),
        (32, 96, Pooling::Mean, true)
    );
    assert_eq!(embedder.document_prefix(), "title: none | text: ");
    // The sliding window is 16 tokens (8 each side): most texts are far longer.
    let long = reference.ids.iter().filter(|ids| ids.len() > 17).count();
    assert!(
        long * 2 > reference.ids.len(),
        "only {long} texts exceed the window"
    );
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn one_thread_and_single_text_batches_agree() {
    let reference = read_reference(&fixtures().join("tiny-gemma3"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-gemma3", 1, 1)).unwrap();
    assert_parity(&embedder, &reference, 0.99999);
}

/// EmbeddingGemma's whole chain: Pooling → Dense(32→64) → Dense(64→32) →
/// Normalize, both Dense without bias and with the identity activation.
#[test]
fn tiny_gemma3_with_dense_modules_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-gemma3-dense"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-gemma3-dense", 2, 7)).unwrap();
    assert_eq!(embedder.identity().dimension, 32);
    assert_parity(&embedder, &reference, 0.99999);
}
