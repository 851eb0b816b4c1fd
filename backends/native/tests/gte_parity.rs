//! GTE (`NewModel`: gte-base-en-v1.5, gte-large-en-v1.5,
//! gte-multilingual-base) against sentence-transformers on tiny random
//! checkpoints made by `scripts/fixtures/make_gte.py`.
//!
//! The reference is transformers 5.24's `GteModel` (its port of the hub's
//! `NewModel`) wrapped by sentence-transformers 6.2, with the hub code's NTK
//! RoPE frequencies put in for `tiny-gte`. `tiny-gte` is shaped as users'
//! checkpoints are: the hub's `model_type: "new"` config.json (NTK-scaled
//! RoPE, no token types) and weight names (`encoder.layer.N.attention.qkv_proj`,
//! `mlp.up_gate_proj`, `attn_ln`, `mlp_ln`), CLS pooling; `tiny-gte-hf` is
//! transformers 5's own spelling (`model_type: "gte"`, `rope_parameters`,
//! separate q/k/v and gate/up weights, two token types), CLS + Normalize.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{Reference, assert_parity, cosine, fixtures, options_at, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{NativeEmbedder, NativeOptions};

fn hub() -> std::path::PathBuf {
    fixtures().join("tiny-gte")
}

#[test]
fn tiny_gte_hub_checkpoint_matches_sentence_transformers() {
    let reference = read_reference(&hub());
    let embedder = NativeEmbedder::load(&options_at(&hub(), 2, 7)).unwrap();
    let id = embedder.identity();
    assert_eq!(
        (id.dimension, id.max_tokens, id.pooling, id.normalize),
        (32, 128, Pooling::Cls, false)
    );
    // Most texts fill all 128 positions: RoPE at every distance matters.
    let full = reference.ids.iter().filter(|ids| ids.len() == 128).count();
    assert!(
        full * 2 > reference.ids.len(),
        "only {full} texts reach 128 tokens"
    );
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn tiny_gte_transformers_spelling_matches_sentence_transformers() {
    let dir = fixtures().join("tiny-gte-hf");
    let reference = read_reference(&dir);
    let embedder = NativeEmbedder::load(&options_at(&dir, 2, 5)).unwrap();
    let id = embedder.identity();
    assert_eq!(
        (id.dimension, id.max_tokens, id.pooling, id.normalize),
        (32, 128, Pooling::Cls, true)
    );
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn one_thread_and_single_text_batches_agree() {
    let reference = read_reference(&hub());
    let embedder = NativeEmbedder::load(&options_at(&hub(), 1, 1)).unwrap();
    assert_parity(&embedder, &reference, 0.99999);
}

/// `src` copied to a temporary directory, config.json edited by `edit`.
fn copy_with_config(src: &Path, edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
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

/// The lowest cosine between the engine's vectors and the reference's.
fn worst_cosine(dir: &Path, reference: &Reference) -> f64 {
    let embedder = NativeEmbedder::load(&options_at(dir, 2, 8)).unwrap();
    let got = embedder
        .embed(&embedder.prepare(reference.texts.clone()).unwrap())
        .unwrap();
    let d = reference.dimension;
    got.rows()
        .enumerate()
        .map(|(i, row)| cosine(row, &reference.vectors[i * d..(i + 1) * d]))
        .fold(1.0, f64::min)
}

/// Rewrites `dir/model.safetensors` (f32 tensors): `edit` may change each
/// tensor's bytes and returns its new name.
fn rewrite_weights(dir: &Path, edit: impl Fn(&str, &mut [u8]) -> String) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut data: HashMap<String, (Vec<usize>, Vec<u8>)> = HashMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let mut raw = view.data().to_vec();
        let name = edit(&name, &mut raw);
        data.insert(name, (view.shape().to_vec(), raw));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, (shape, raw))| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

/// The parity tests fail on a plausible mistake: each mutation below stays
/// far under the 0.99999 bound (1 - cosine at least 100 times the slack).
#[test]
fn the_parity_check_sees_a_missing_ntk_scaling_or_swapped_gate() {
    let reference = read_reference(&hub());
    // Unscaled RoPE (rope_scaling dropped): positions rotate too fast.
    let plain = copy_with_config(&hub(), |v| {
        v.as_object_mut().unwrap().remove("rope_scaling");
    });
    let c = worst_cosine(plain.path(), &reference);
    eprintln!("without NTK scaling: worst cosine {c:.4}");
    assert!(c < 0.999, "dropping the NTK scaling still gives cosine {c}");

    // gelu on the wrong half of up_gate_proj.
    let swapped = copy_with_config(&hub(), |_| {});
    rewrite_weights(swapped.path(), |name, raw| {
        if name.ends_with("mlp.up_gate_proj.weight") {
            let half = raw.len() / 2;
            let (up, gate) = raw.split_at_mut(half);
            up.swap_with_slice(gate);
        }
        name.to_string()
    });
    let c = worst_cosine(swapped.path(), &reference);
    eprintln!("gate and up swapped: worst cosine {c:.4}");
    assert!(c < 0.999, "swapping gate and up still gives cosine {c}");
}

#[test]
fn either_weight_layout_loads_under_either_model_type() {
    // transformers 5 saves GteModel with the hub's weight names by default,
    // under its own `model_type: "gte"`.
    let reference = read_reference(&hub());
    let dir = copy_with_config(&hub(), |v| v["model_type"] = "gte".into());
    let embedder = NativeEmbedder::load(&options_at(dir.path(), 2, 7)).unwrap();
    assert_parity(&embedder, &reference, 0.99999);

    let src = fixtures().join("tiny-gte-hf");
    let reference = read_reference(&src);
    let dir = copy_with_config(&src, |v| v["model_type"] = "new".into());
    let embedder = NativeEmbedder::load(&options_at(dir.path(), 2, 7)).unwrap();
    assert_parity(&embedder, &reference, 0.99999);
}

#[test]
fn a_checkpoint_saved_from_a_task_model_loads() {
    // NewForMaskedLM / NewForSequenceClassification keep the encoder under `new.`.
    let reference = read_reference(&hub());
    let dir = copy_with_config(&hub(), |_| {});
    rewrite_weights(dir.path(), |name, _| format!("new.{name}"));
    let embedder = NativeEmbedder::load(&options_at(dir.path(), 2, 7)).unwrap();
    assert_parity(&embedder, &reference, 0.99999);

    // Neither layout's names: the error says what was looked for.
    rewrite_weights(dir.path(), |name, _| {
        name.replace("new.encoder.layer.", "new.blocks.")
    });
    let e = NativeEmbedder::load(&options_at(dir.path(), 1, 4))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("new.encoder.layer.0.attention.qkv_proj.weight")
            && e.contains("new.layers.0.self_attn.q_proj.weight"),
        "{e}"
    );
}

#[test]
fn unimplemented_options_are_refused_by_name() {
    for (key, value, word) in [
        (
            "logn_attention_scale",
            serde_json::json!(true),
            "logn_attention_scale",
        ),
        ("layer_norm_type", serde_json::json!("rms_norm"), "rms_norm"),
        (
            "rope_scaling",
            serde_json::json!({"type": "dynamic", "factor": 2.0}),
            "dynamic",
        ),
    ] {
        let dir = copy_with_config(&hub(), |v| v[key] = value.clone());
        let e = NativeEmbedder::load(&options_at(dir.path(), 1, 4))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(word) && e.contains("config.json"), "{key}: {e}");
    }
}

#[test]
fn bfloat16_stays_close_to_sentence_transformers() {
    use papersys_backend_native::Precision;
    use papersys_backend_native::kernels::bf16::Bf16Isa;
    let reference = read_reference(&hub());
    let opts = NativeOptions {
        precision: Precision::parse("bfloat16").expect("a precision spelling"),
        ..options_at(&hub(), 2, 7)
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
    let worst = got
        .rows()
        .enumerate()
        .map(|(i, row)| cosine(row, &reference.vectors[i * d..(i + 1) * d]))
        .fold(1.0, f64::min);
    eprintln!("bf16: worst cosine {worst:.6}");
    assert!(worst >= 0.999, "bf16 worst cosine {worst}");
}
