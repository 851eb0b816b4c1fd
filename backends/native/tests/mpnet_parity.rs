//! MPNet (all-mpnet-base-v2's architecture) on a tiny random checkpoint
//! against sentence-transformers (fixture by scripts/fixtures/make_mpnet.py).

mod common;

use common::{assert_parity, fixture_options, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::NativeEmbedder;

#[test]
fn tiny_mpnet_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-mpnet"));
    for (threads, batch) in [(1, 3), (2, 32)] {
        let embedder = NativeEmbedder::load(&fixture_options("tiny-mpnet", threads, batch)).unwrap();
        let id = embedder.identity();
        // max_position_embeddings 66 less the padding offset 2.
        assert_eq!(
            (id.dimension, id.max_tokens, id.pooling, id.normalize),
            (32, 64, Pooling::Mean, true)
        );
        assert_parity(&embedder, &reference, 0.99999);
    }
}

#[test]
fn mpnet_is_listed_as_supported() {
    assert!(papersys_backend_native::supported_model_types().contains(&"mpnet"));
}
