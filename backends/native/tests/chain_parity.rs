//! The sentence-transformers module chain (pooling modes, Dense, Normalize,
//! prompts, Matryoshka truncation) against sentence-transformers' own
//! vectors (fixtures by scripts/fixtures/make_chain.py).

mod common;

use common::{assert_parity, cosine, fixture_options, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{NativeEmbedder, NativeOptions};

#[test]
fn every_pooling_mode_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-chain-pool"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-chain-pool", 2, 5)).unwrap();
    let id = embedder.identity();
    assert_eq!(
        (id.dimension, id.pooling, id.normalize),
        (6 * 32, Pooling::Concatenated, false)
    );
    let got = assert_parity(&embedder, &reference, 0.99999);
    // Each mode's 32 values on their own, so that no mode hides behind the
    // others: cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken.
    for (m, mode) in ["cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken"]
        .iter()
        .enumerate()
    {
        for (i, row) in got.rows().enumerate() {
            let want = &reference.vectors[i * 192..(i + 1) * 192];
            let c = cosine(&row[m * 32..(m + 1) * 32], &want[m * 32..(m + 1) * 32]);
            assert!(c >= 0.99999, "{mode} pooling of text {i}: cosine {c}");
        }
    }
}

#[test]
fn dense_dense_normalize_matches_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-chain-dense"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-chain-dense", 2, 5)).unwrap();
    let id = embedder.identity();
    assert_eq!(
        (id.dimension, id.pooling, id.normalize),
        (16, Pooling::Mean, true)
    );
    let got = assert_parity(&embedder, &reference, 0.99999);
    for row in got.rows() {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

#[test]
fn matryoshka_dimension_matches_truncate_dim_and_is_recorded() {
    let reference = read_reference(&fixtures().join("tiny-chain-dense").join("dim8"));
    let mut opts = fixture_options("tiny-chain-dense", 2, 5);
    opts.expected_dimension = Some(8);
    let embedder = NativeEmbedder::load(&opts).unwrap();
    let truncated = embedder.identity().clone();
    assert_eq!((truncated.dimension, truncated.normalize), (8, true));
    let got = assert_parity(&embedder, &reference, 0.99999);
    for row in got.rows() {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "truncated vectors are normalised again: {norm}"
        );
    }
    // The full model's vectors are not comparable with the truncated ones.
    let full = NativeEmbedder::load(&fixture_options("tiny-chain-dense", 2, 5)).unwrap();
    let fields: Vec<_> = full
        .identity()
        .mismatches(&truncated)
        .iter()
        .map(|m| m.field)
        .collect();
    assert_eq!(fields, ["dimension"]);
    // A dimension above the model's output stays an error.
    opts.expected_dimension = Some(17);
    let e = NativeEmbedder::load(&opts).err().unwrap().to_string();
    assert!(e.contains("dimension 16") && e.contains("says 17"), "{e}");
}

#[test]
fn named_prompts_for_documents_and_queries_left_out_of_pooling() {
    let documents = read_reference(&fixtures().join("tiny-chain-prompts"));
    let opts = fixture_options("tiny-chain-prompts", 2, 5);
    let embedder = NativeEmbedder::load(&opts).unwrap();
    assert_eq!(embedder.identity().document_prefix, "passage: ");
    assert_eq!(embedder.identity().pooling, Pooling::WeightedMean);
    assert_parity(&embedder, &documents, 0.99999);

    // Queries as `papersys search` loads the model: the query prompt in
    // place of the document prefix.
    let queries = read_reference(&fixtures().join("tiny-chain-prompts").join("query"));
    let prompt = papersys_backend_native::query_prompt(&opts).unwrap();
    assert_eq!(prompt, "query: ");
    let for_queries = NativeEmbedder::load(&NativeOptions {
        document_prefix: Some(prompt),
        ..opts
    })
    .unwrap();
    assert_parity(&for_queries, &queries, 0.99999);
}

#[test]
fn default_prompt_name_applies_to_documents_and_queries() {
    let reference = read_reference(&fixtures().join("tiny-chain-default"));
    let opts = fixture_options("tiny-chain-default", 2, 5);
    let prompt = "Represent this paper for retrieval: ";
    assert_eq!(papersys_backend_native::document_prefix(&opts).unwrap(), prompt);
    assert_eq!(papersys_backend_native::query_prompt(&opts).unwrap(), prompt);
    let embedder = NativeEmbedder::load(&opts).unwrap();
    assert_eq!(embedder.identity().pooling, Pooling::LastToken);
    assert_parity(&embedder, &reference, 0.99999);
    // The model table's document_prefix overrides the model's prompt.
    let plain = NativeEmbedder::load(&NativeOptions {
        document_prefix: Some(String::new()),
        ..opts
    })
    .unwrap();
    assert_eq!(plain.document_prefix(), "");
}

#[cfg(feature = "candle")]
#[test]
fn the_candle_engine_runs_the_same_chain() {
    let reference = read_reference(&fixtures().join("tiny-chain-dense").join("dim8"));
    let mut opts = fixture_options("tiny-chain-dense", 2, 5);
    opts.expected_dimension = Some(8);
    let embedder = NativeEmbedder::load_candle_cpu(&opts, papersys_backend_native::Precision::F32).unwrap();
    assert_eq!(embedder.identity().dimension, 8);
    assert_parity(&embedder, &reference, 0.99999);
}
