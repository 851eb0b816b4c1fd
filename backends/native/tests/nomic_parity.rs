//! NomicBert (nomic-embed-text-v1 / v1.5's architecture) on a tiny random
//! checkpoint made by `scripts/fixtures/make_nomic.py`. The reference is
//! transformers 5.24's `NomicBertModel` wrapped by sentence-transformers 6.2
//! (mean pooling, Normalize, nomic-embed's "search_query: " /
//! "search_document: " prompts); the checkpoint is saved in the hub layout
//! users download (trust_remote_code config keys and tensor names), which
//! transformers reads through its own nomic_bert weight conversion.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{Reference, assert_parity, cosine, fixtures, options_at, read_reference};
use papersys_backend_core::{Embedder, Pooling};
use papersys_backend_native::{NativeEmbedder, NativeOptions};

fn fixture() -> std::path::PathBuf {
    fixtures().join("tiny-nomic")
}

#[test]
fn tiny_nomic_documents_match_sentence_transformers() {
    let reference = read_reference(&fixture());
    // Truncated (96 tokens) and short texts both.
    assert!(reference.ids.iter().any(|ids| ids.len() == 96));
    assert!(reference.ids.iter().any(|ids| ids.len() < 20));
    for (threads, batch) in [(1, 5), (2, 32)] {
        let embedder = NativeEmbedder::load(&options_at(&fixture(), threads, batch)).unwrap();
        let id = embedder.identity();
        assert_eq!(
            (id.dimension, id.max_tokens, id.pooling, id.normalize),
            (32, 96, Pooling::Mean, true)
        );
        // encode_document's prompt, from config_sentence_transformers.json.
        assert_eq!(id.document_prefix, "search_document: ");
        assert_parity(&embedder, &reference, 0.99999);
    }
}

/// Worst cosine of `embedder`'s vectors of `reference`'s texts.
fn worst_of(embedder: &NativeEmbedder, reference: &Reference) -> f64 {
    let got = embedder
        .embed(&embedder.prepare(reference.texts.clone()).unwrap())
        .unwrap();
    let d = reference.dimension;
    got.rows()
        .enumerate()
        .map(|(i, row)| cosine(row, &reference.vectors[i * d..(i + 1) * d]))
        .fold(1.0, f64::min)
}

/// Worst cosine of `embedder`'s document vectors against the reference.
fn worst_cosine(embedder: &NativeEmbedder) -> f64 {
    worst_of(embedder, &read_reference(&fixture()))
}

#[test]
fn tiny_nomic_queries_match_sentence_transformers() {
    let dir = fixture().join("query");
    let reference = read_reference(&dir);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    // Queries as `papersys search` loads the model: encode_query's prompt in
    // place of the document prefix.
    let opts = options_at(&fixture(), 2, 4);
    let prompt = papersys_backend_native::query_prompt(&opts).unwrap();
    assert_eq!(prompt, "search_query: ");
    assert_eq!(prompt, meta["prompt"].as_str().unwrap());
    let for_queries = NativeEmbedder::load(&NativeOptions {
        document_prefix: Some(prompt),
        ..opts
    })
    .unwrap();
    assert_parity(&for_queries, &reference, 0.99999);
}

/// The fixture copied to a temporary directory, `weights` (a file of the
/// fixture) as its model.safetensors, `edit` applied to config.json.
fn variant(
    weights: &str,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> tempfile::TempDir {
    fn copy(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            let to = dst.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &to);
            } else {
                std::fs::copy(&path, to).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    copy(&fixture(), tmp.path());
    std::fs::copy(fixture().join(weights), tmp.path().join("model.safetensors")).unwrap();
    let config = tmp.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&config, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    tmp
}

fn load(dir: &tempfile::TempDir) -> Result<NativeEmbedder, String> {
    NativeEmbedder::load(&options_at(dir.path(), 2, 8)).map_err(|e| e.to_string())
}

#[test]
fn interleaved_rotary_pairs_are_read_as_the_hub_code_rotates_them() {
    // interleaved.safetensors is the reference model with each head's query
    // and key rows permuted for adjacent-pair rotation.
    let interleaved = variant("interleaved.safetensors", |c| {
        c.insert("rotary_emb_interleaved".into(), true.into());
    });
    let reference = read_reference(&fixture());
    assert_parity(&load(&interleaved).unwrap(), &reference, 0.99999);

    // The same weights rotated half-split, and the reference weights rotated
    // in pairs, give other vectors: the test sees the rotation layout.
    let wrong = variant("interleaved.safetensors", |_| {});
    let w1 = worst_cosine(&load(&wrong).unwrap());
    let flipped = variant("model.safetensors", |c| {
        c.insert("rotary_emb_interleaved".into(), true.into());
    });
    let w2 = worst_cosine(&load(&flipped).unwrap());
    eprintln!("wrong rotation layout: worst cosine {w1:.4} / {w2:.4}");
    assert!(w1 < 0.99 && w2 < 0.99, "{w1} {w2}");

    // A wrong rotary base is seen too.
    let base = variant("model.safetensors", |c| {
        c.insert("rotary_emb_base".into(), 10000.into());
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": 10000.0}),
        );
    });
    let w3 = worst_cosine(&load(&base).unwrap());
    eprintln!("rotary base 10000 instead of 1000: worst cosine {w3:.4}");
    assert!(w3 < 0.999, "{w3}");
}

#[test]
fn the_hub_bias_options_match_a_reference_with_biases() {
    // biased.safetensors: the reference model with random biases on Wqkv,
    // out_proj (qkv_proj_bias gives both), fc11/fc12 and fc2.
    let with_flags = variant("biased.safetensors", |c| {
        for k in ["qkv_proj_bias", "mlp_fc1_bias", "mlp_fc2_bias"] {
            c.insert(k.into(), true.into());
        }
    });
    let reference = read_reference(&fixture().join("biased"));
    assert_parity(&load(&with_flags).unwrap(), &reference, 0.99999);
    // Flags off: the biases are not read, and the vectors differ.
    let without = variant("biased.safetensors", |_| {});
    let worst = worst_of(&load(&without).unwrap(), &reference);
    eprintln!("biases ignored: worst cosine {worst:.4}");
    assert!(worst < 0.999, "{worst}");
}

/// The hub keys of the fixture's config.json, which transformers 5 does not
/// write.
const HUB_KEYS: [&str; 20] = [
    "activation_function",
    "causal",
    "prenorm",
    "parallel_block",
    "use_rms_norm",
    "n_embd",
    "n_head",
    "n_layer",
    "n_inner",
    "n_positions",
    "max_trained_positions",
    "layer_norm_epsilon",
    "qkv_proj_bias",
    "mlp_fc1_bias",
    "mlp_fc2_bias",
    "rotary_emb_base",
    "rotary_emb_fraction",
    "rotary_emb_interleaved",
    "rotary_emb_scale_base",
    "rotary_scaling_factor",
];

#[test]
fn each_spelling_alone_loads_the_same_model() {
    let reference = read_reference(&fixture());
    // What transformers 5.24's save_pretrained writes: its own config keys,
    // the hub's tensor names.
    let tf_config = variant("model.safetensors", |c| {
        for k in HUB_KEYS {
            assert!(c.remove(k).is_some(), "{k}");
        }
    });
    assert_parity(&load(&tf_config).unwrap(), &reference, 0.99999);

    // The hub's keys alone (configs written before transformers 5).
    let hub_only = variant("model.safetensors", |c| {
        for k in [
            "hidden_size",
            "num_attention_heads",
            "num_hidden_layers",
            "intermediate_size",
            "hidden_act",
            "layer_norm_eps",
            "max_position_embeddings",
            "rope_parameters",
        ] {
            assert!(c.remove(k).is_some(), "{k}");
        }
    });
    assert_parity(&load(&hub_only).unwrap(), &reference, 0.99999);

    // transformers' in-memory names (its conversion's targets).
    let tf_names = variant("model.safetensors", |c| {
        for k in HUB_KEYS {
            c.remove(k);
        }
    });
    rewrite_weights(tf_names.path(), |name, shape, data| {
        let Some(rest) = name.strip_prefix("encoder.layers.") else {
            return vec![(
                name.replace("emb_ln", "embeddings.LayerNorm"),
                shape.to_vec(),
                data.to_vec(),
            )];
        };
        let (i, part) = rest.split_once('.').unwrap();
        if part == "attn.Wqkv.weight" {
            let third = data.len() / 3;
            return ["q", "k", "v"]
                .iter()
                .zip(data.chunks_exact(third))
                .map(|(k, chunk)| {
                    (
                        format!("layers.{i}.self_attn.{k}_proj.weight"),
                        vec![shape[0] / 3, shape[1]],
                        chunk.to_vec(),
                    )
                })
                .collect();
        }
        let part = part
            .replace("attn.out_proj", "self_attn.o_proj")
            .replace("fc11", "up_proj")
            .replace("fc12", "gate_proj")
            .replace("fc2", "down_proj")
            .replace("norm1", "post_attention_layernorm")
            .replace("norm2", "post_mlp_layernorm");
        vec![(format!("layers.{i}.{part}"), shape.to_vec(), data.to_vec())]
    });
    assert_parity(&load(&tf_names).unwrap(), &reference, 0.99999);
}

/// Rewrites `dir/model.safetensors` (F32 tensors), each tensor replaced by
/// what `map(name, shape, bytes)` returns.
#[allow(clippy::type_complexity)]
fn rewrite_weights(dir: &Path, map: impl Fn(&str, &[usize], &[u8]) -> Vec<(String, Vec<usize>, Vec<u8>)>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: HashMap<String, (Vec<usize>, Vec<u8>)> = HashMap::new();
    for (name, view) in st.tensors() {
        for (n, shape, data) in map(&name, view.shape(), view.data()) {
            out.insert(n, (shape, data));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = out
        .iter()
        .map(|(n, (shape, data))| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap();
            (n.clone(), view)
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn swapping_the_gate_and_up_projections_is_seen() {
    // fc12 is the gate (silu(fc12·x) · fc11·x): the other way round gives
    // other vectors, so the parity tests see which is which.
    let swapped = variant("model.safetensors", |_| {});
    rewrite_weights(swapped.path(), |name, shape, data| {
        let name = if name.contains("fc11") {
            name.replace("fc11", "fc12")
        } else {
            name.replace("fc12", "fc11")
        };
        vec![(name, shape.to_vec(), data.to_vec())]
    });
    let worst = worst_cosine(&load(&swapped).unwrap());
    eprintln!("fc11 and fc12 swapped: worst cosine {worst:.4}");
    assert!(worst < 0.999, "{worst}");
}

#[test]
fn options_the_engine_does_not_run_are_refused_by_name() {
    let cases: [(&str, serde_json::Value, &str); 8] = [
        ("prenorm", true.into(), "prenorm"),
        ("causal", true.into(), "causal"),
        ("rotary_scaling_factor", 2.0.into(), "rotary_scaling_factor"),
        ("moe_every_n_layers", 2.into(), "moe_every_n_layers"),
        ("rotary_emb_fraction", 0.5.into(), "rotary_emb_fraction"),
        ("activation_function", "gelu".into(), "activation_function"),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "dynamic", "rope_theta": 1000.0}),
            "dynamic",
        ),
        ("hidden_size", 64.into(), "disagree"),
    ];
    for (key, value, want) in cases {
        let dir = variant("model.safetensors", |c| {
            c.insert(key.into(), value.clone());
        });
        let e = load(&dir)
            .err()
            .unwrap_or_else(|| panic!("{key} {value} was accepted"));
        assert!(e.contains(want) && e.contains("config.json"), "{key}: {e}");
    }
}

#[test]
fn bfloat16_stays_close_to_sentence_transformers() {
    use papersys_backend_native::Precision;
    use papersys_backend_native::kernels::bf16::Bf16Isa;
    let opts = NativeOptions {
        precision: Precision::parse("bfloat16").expect("a precision spelling"),
        ..options_at(&fixture(), 2, 7)
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
    let worst = worst_cosine(&embedder);
    eprintln!("bf16: worst cosine {worst:.6}");
    assert!(worst >= 0.999, "bf16 worst cosine {worst}");
}
