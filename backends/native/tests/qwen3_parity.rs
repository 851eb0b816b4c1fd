//! Qwen3 (Qwen3-Embedding's architecture) against sentence-transformers on a
//! tiny random checkpoint made by `scripts/fixtures/make_qwen3.py`: documents
//! and queries (the "Instruct: ...\nQuery:" prompt), last-token pooling on
//! the `<|endoftext|>` the tokenizer's post-processor appends.

mod common;

use common::{assert_parity, cosine, fixture_options, fixtures, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{NativeEmbedder, NativeOptions};

/// `<|endoftext|>` in the fixture's tokenizer.
const END_OF_TEXT: u32 = 700;

#[test]
fn tiny_qwen3_documents_match_sentence_transformers() {
    let reference = read_reference(&fixtures().join("tiny-qwen3"));
    // The post-processor's end-of-text token closes every text, truncated
    // ones (48 tokens) included: last-token pooling reads it.
    assert!(reference.ids.iter().all(|ids| ids.last() == Some(&END_OF_TEXT)));
    assert!(reference.ids.iter().any(|ids| ids.len() == 48));
    for (threads, batch) in [(1, 5), (2, 32)] {
        let embedder = NativeEmbedder::load(&fixture_options("tiny-qwen3", threads, batch)).unwrap();
        let id = embedder.identity();
        assert_eq!(
            (id.dimension, id.max_tokens, id.pooling, id.normalize),
            (64, 48, Pooling::LastToken, true)
        );
        assert_eq!(id.document_prefix, "");
        assert_parity(&embedder, &reference, 0.99999);
    }
}

#[test]
fn tiny_qwen3_queries_match_sentence_transformers() {
    let dir = fixtures().join("tiny-qwen3").join("query");
    let reference = read_reference(&dir);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let want_prompt = meta["prompt"].as_str().unwrap();
    let opts = fixture_options("tiny-qwen3", 2, 4);
    let prompt = papersys_backend_native::query_prompt(&opts).unwrap();
    assert_eq!(prompt, want_prompt);
    assert!(prompt.starts_with("Instruct: ") && prompt.ends_with("\nQuery:"));
    let embedder = NativeEmbedder::load(&opts).unwrap();
    let queries: Vec<String> = reference.texts.iter().map(|t| format!("{prompt}{t}")).collect();
    for (i, (q, want)) in queries.iter().zip(&reference.ids).enumerate() {
        let got = embedder.tokenize(&[q]).unwrap().input_ids;
        assert_eq!(&got, want, "token ids of query {i} differ");
    }
    let got = embedder.embed(&embedder.prepare(queries).unwrap()).unwrap();
    let d = reference.dimension;
    for (i, row) in got.rows().enumerate() {
        let c = cosine(row, &reference.vectors[i * d..(i + 1) * d]);
        assert!(c >= 0.99999, "query {i}: cosine {c}");
    }
}

#[test]
fn a_text_alone_and_in_a_batch_gets_the_same_vector() {
    let reference = read_reference(&fixtures().join("tiny-qwen3"));
    let embedder = NativeEmbedder::load(&fixture_options("tiny-qwen3", 2, 8)).unwrap();
    let all = embedder
        .embed(&embedder.prepare(reference.texts.clone()).unwrap())
        .unwrap();
    for i in [0, 5, 18] {
        let one = embedder
            .embed(&embedder.prepare(vec![reference.texts[i].clone()]).unwrap())
            .unwrap();
        let d = one
            .row(0)
            .iter()
            .zip(all.row(i))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "text {i} differs by {d} alone vs in a batch");
    }
}

/// The fixture copied to a temporary directory with `edit` applied to the
/// parsed config.json.
fn with_config(edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = fixtures().join("tiny-qwen3");
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let dst = tmp.path().join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir(&dst).unwrap();
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                std::fs::copy(&inner, dst.join(inner.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&path, dst).unwrap();
        }
    }
    let config = tmp.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&config, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    tmp
}

fn load_error(dir: &tempfile::TempDir) -> String {
    let opts = NativeOptions {
        model_path: Some(dir.path().to_path_buf()),
        ..fixture_options("tiny-qwen3", 1, 4)
    };
    NativeEmbedder::load(&opts).err().unwrap().to_string()
}

#[test]
fn scaled_rope_and_sliding_windows_are_refused_by_name() {
    let yarn = with_config(|v| {
        v["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0});
    });
    let e = load_error(&yarn);
    assert!(
        e.contains("yarn") && e.contains("RoPE") && e.contains("config.json"),
        "{e}"
    );

    // The transformers 4 spelling of Qwen3-Embedding's config.json.
    let old = with_config(|v| {
        let o = v.as_object_mut().unwrap();
        o.remove("rope_parameters");
        o.insert("rope_theta".into(), 10000.0.into());
        o.insert(
            "rope_scaling".into(),
            serde_json::json!({"type": "linear", "factor": 2.0}),
        );
    });
    let e = load_error(&old);
    assert!(e.contains("linear") && e.contains("RoPE"), "{e}");

    let sliding = with_config(|v| v["use_sliding_window"] = true.into());
    let e = load_error(&sliding);
    assert!(e.contains("sliding-window"), "{e}");

    // The same config in transformers 4 form with rope_scaling null loads.
    let plain = with_config(|v| {
        let o = v.as_object_mut().unwrap();
        o.remove("rope_parameters");
        o.insert("rope_theta".into(), 10000.0.into());
        o.insert("rope_scaling".into(), serde_json::Value::Null);
    });
    let opts = NativeOptions {
        model_path: Some(plain.path().to_path_buf()),
        ..fixture_options("tiny-qwen3", 1, 4)
    };
    let reference = read_reference(&fixtures().join("tiny-qwen3"));
    assert_parity(&NativeEmbedder::load(&opts).unwrap(), &reference, 0.99999);
}

#[test]
fn bfloat16_stays_close_to_sentence_transformers() {
    use papersys_backend_native::Precision;
    use papersys_backend_native::kernels::bf16::Bf16Isa;
    let reference = read_reference(&fixtures().join("tiny-qwen3"));
    let opts = NativeOptions {
        precision: Precision::parse("bfloat16").expect("a precision spelling"),
        ..fixture_options("tiny-qwen3", 2, 7)
    };
    let embedder = NativeEmbedder::load(&opts).unwrap();
    match Bf16Isa::detect() {
        Some(_) => assert_eq!(embedder.compute_path(), "cpu bfloat16 (avx512-bf16)"),
        None => assert!(
            embedder.compute_path().starts_with("cpu float32"),
            "{}",
            embedder.compute_path()
        ),
    }
    let got = embedder
        .embed(&embedder.prepare(reference.texts.clone()).unwrap())
        .unwrap();
    let d = reference.dimension;
    for (i, row) in got.rows().enumerate() {
        let c = cosine(row, &reference.vectors[i * d..(i + 1) * d]);
        eprintln!("bf16 text {i}: cosine {c:.6}");
        assert!(c >= 0.999, "bf16 text {i}: cosine {c}");
    }
}
