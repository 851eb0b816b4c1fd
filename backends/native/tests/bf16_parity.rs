//! `precision = "bfloat16"` against sentence-transformers fp32 and against
//! the engine's own f32 path: all-MiniLM-L6-v2 on 220 real arXiv texts and
//! the tiny checkpoints' crafted texts. Cosine ≥ 0.9995 for every text and
//! ≥ 0.9999 on average. On a CPU without AVX512-BF16 the bf16 request must
//! fall back to f32, which these tests check instead (and the forced
//! fallback is checked on every CPU).

mod common;

use common::{assert_close, assert_parity, cosines, embed, fixtures, read_reference};
use papersys_backend_core::Embedder;
use papersys_backend_native::kernels::bf16::Bf16Dispatch;
use papersys_backend_native::{CpuDispatch, DEFAULT_MODEL, NativeEmbedder, NativeOptions, Precision};

const MIN_COSINE: f64 = 0.9995;
const MEAN_COSINE: f64 = 0.9999;

fn minilm(precision: &str) -> NativeOptions {
    NativeOptions {
        threads: Some(2),
        batch_size: 32,
        precision: Precision::parse(precision).expect("a precision spelling"),
        ..NativeOptions::default()
    }
}

fn tiny(dir: &str, precision: &str) -> NativeOptions {
    NativeOptions {
        name: format!("test/{dir}"),
        model_path: Some(fixtures().join(dir)),
        threads: Some(2),
        batch_size: 7,
        precision: Precision::parse(precision).expect("a precision spelling"),
        ..NativeOptions::default()
    }
}

/// bf16 against sentence-transformers and the f32 engine on one fixture.
fn check(name: &str, fixture: &str, bf16: NativeOptions, f32: NativeOptions) {
    let reference = read_reference(&fixtures().join(fixture));
    let fast = NativeEmbedder::load(&bf16).unwrap_or_else(|e| {
        panic!(
            "cannot load {}: {e} (run scripts/fetch-model.sh for {DEFAULT_MODEL})",
            bf16.name
        )
    });
    let exact = NativeEmbedder::load(&f32).unwrap();
    assert_eq!(exact.compute_path(), "cpu float32");
    assert_eq!(exact.identity().precision, None);
    // Token ids checked id for id, every text's cosine to sentence-transformers.
    let got = assert_parity(&fast, &reference, MIN_COSINE);
    let want = embed(&exact, &reference.texts);
    match Bf16Dispatch::detect() {
        Bf16Dispatch::Avx512Bf16(_) => {
            assert_eq!(fast.compute_path(), "cpu bfloat16 (avx512-bf16)");
            assert_eq!(fast.identity().precision.as_deref(), Some("bfloat16"));
            assert_ne!(got.as_flat(), want.as_flat(), "{name}: bf16 gave the f32 vectors");
        }
        Bf16Dispatch::Float32Fallback => {
            assert_eq!(
                fast.compute_path(),
                "cpu float32 (bfloat16 requested, no AVX512-BF16)"
            );
            assert_eq!(fast.identity().precision, None);
            assert_eq!(
                got.as_flat(),
                want.as_flat(),
                "{name}: the fallback is not the f32 path"
            );
        }
    }
    assert_close(
        &format!("{name} bf16 vs sentence-transformers fp32"),
        cosines(&got, &reference.vectors),
        MIN_COSINE,
        MEAN_COSINE,
    );
    assert_close(
        &format!("{name} bf16 vs papersys fp32"),
        cosines(&got, want.as_flat()),
        MIN_COSINE,
        MEAN_COSINE,
    );
}

#[test]
fn minilm_bf16_matches_fp32_on_real_abstracts() {
    check(
        "all-MiniLM-L6-v2",
        "minilm",
        minilm("bfloat16"),
        minilm("float32"),
    );
}

#[test]
fn tiny_checkpoints_bf16_match_fp32_on_crafted_texts() {
    check(
        "tiny-bert",
        "tiny-bert",
        tiny("tiny-bert", "bfloat16"),
        tiny("tiny-bert", "auto"),
    );
    check(
        "tiny-xlmr",
        "tiny-xlmr",
        tiny("tiny-xlmr", "bf16"),
        tiny("tiny-xlmr", "float32"),
    );
}

/// What a CPU without AVX512-BF16 gets, forced on this one: the f32
/// engine, recorded as float32, with the f32 engine's exact vectors.
#[test]
fn forced_absent_bf16_runs_the_f32_path() {
    let reference = read_reference(&fixtures().join("tiny-bert"));
    let without_bf16 = CpuDispatch {
        bf16: Bf16Dispatch::select(false),
        ..CpuDispatch::detect()
    };
    let forced = NativeEmbedder::load_cpu_with(&tiny("tiny-bert", "bfloat16"), without_bf16).unwrap();
    assert_eq!(
        forced.compute_path(),
        "cpu float32 (bfloat16 requested, no AVX512-BF16)"
    );
    assert_eq!(forced.identity().precision, None);
    let exact = NativeEmbedder::load(&tiny("tiny-bert", "float32")).unwrap();
    assert_eq!(
        embed(&forced, &reference.texts).as_flat(),
        embed(&exact, &reference.texts).as_flat()
    );
    // Forcing f32 on a bf16-capable CPU: `float32` never runs bf16.
    let f32 = NativeEmbedder::load_cpu_with(&tiny("tiny-bert", "float32"), CpuDispatch::detect()).unwrap();
    assert_eq!(f32.compute_path(), "cpu float32");
}
