//! `precision = "int8"` against sentence-transformers fp32 and against the
//! engine's own f32 path: all-MiniLM-L6-v2 on 220 real arXiv texts, and
//! every architecture's tiny checkpoint on its crafted texts (each one's
//! dense layers are packed by its own file). On a CPU without AVX512-VNNI
//! the int8 request must fall back to f32, which these tests check instead
//! (and the forced fallback is checked on every CPU).

mod common;

use common::{assert_close, assert_parity, cosines, embed, fixture_options, fixtures, read_reference};
use papersys_backend_core::{Embedder, Embeddings};
use papersys_backend_native::kernels::int8::Int8Dispatch;
use papersys_backend_native::{CpuDispatch, DEFAULT_MODEL, NativeEmbedder, NativeOptions, Precision};

/// The floors on real abstracts: the "cosine ≥ 0.99 to fp32" for
/// every text, and a mean that keeps rankings (measured: see
/// docs/benchmarks.md).
const MIN_COSINE: f64 = 0.99;
const MEAN_COSINE: f64 = 0.997;
/// The floors on the tiny checkpoints' crafted texts (measured 0.9991
/// worst, 0.99966 lowest mean, both on tiny-qwen3).
const TINY_MIN_COSINE: f64 = 0.998;
const TINY_MEAN_COSINE: f64 = 0.9995;

fn with_precision(mut opts: NativeOptions, precision: &str) -> NativeOptions {
    opts.precision = Precision::parse(precision).expect("a precision spelling");
    opts
}

fn minilm(precision: &str) -> NativeOptions {
    with_precision(
        NativeOptions {
            threads: Some(2),
            batch_size: 32,
            ..NativeOptions::default()
        },
        precision,
    )
}

/// Loads `int8` and `f32`, checks what each says it runs and records, and
/// returns (int8 vectors, f32 vectors) of the fixture's texts, with the
/// fixture's reference.
fn both(int8: &NativeOptions, f32: &NativeOptions, fixture: &str) -> (Embeddings, Embeddings, Vec<f32>) {
    let reference = read_reference(&fixtures().join(fixture));
    let fast = NativeEmbedder::load(int8).unwrap_or_else(|e| {
        panic!(
            "cannot load {}: {e} (run scripts/fetch-model.sh for {DEFAULT_MODEL})",
            int8.name
        )
    });
    let exact = NativeEmbedder::load(f32).unwrap();
    assert_eq!(exact.compute_path(), "cpu float32");
    assert_eq!(exact.identity().precision, None);
    // Token ids checked id for id, every text's cosine to sentence-transformers.
    let got = assert_parity(&fast, &reference, MIN_COSINE);
    let want = embed(&exact, &reference.texts);
    match Int8Dispatch::detect() {
        Int8Dispatch::Avx512Vnni(_) => {
            assert_eq!(fast.compute_path(), "cpu int8 (avx512-vnni)", "{fixture}");
            assert_eq!(fast.identity().precision.as_deref(), Some("int8"));
            assert_ne!(
                got.as_flat(),
                want.as_flat(),
                "{fixture}: int8 gave the f32 vectors"
            );
        }
        Int8Dispatch::Float32Fallback => {
            assert_eq!(
                fast.compute_path(),
                "cpu float32 (int8 requested, no AVX512-VNNI)"
            );
            assert_eq!(fast.identity().precision, None);
            assert_eq!(
                got.as_flat(),
                want.as_flat(),
                "{fixture}: the fallback is not the f32 path"
            );
        }
    }
    (got, want, reference.vectors)
}

#[test]
fn minilm_int8_stays_within_cosine_0_99_of_fp32_on_real_abstracts() {
    let (got, want, reference) = both(&minilm("int8"), &minilm("float32"), "minilm");
    assert_close(
        "all-MiniLM-L6-v2 int8 vs sentence-transformers fp32",
        cosines(&got, &reference),
        MIN_COSINE,
        MEAN_COSINE,
    );
    assert_close(
        "all-MiniLM-L6-v2 int8 vs papersys fp32",
        cosines(&got, want.as_flat()),
        MIN_COSINE,
        MEAN_COSINE,
    );
}

/// all-mpnet-base-v2 (installed by `scripts/fetch-mpnet.sh`, as
/// `mpnet_real_parity.rs` needs it) on its 120 real texts, against
/// sentence-transformers fp32.
#[test]
fn mpnet_int8_stays_within_cosine_0_99_of_fp32_on_real_abstracts() {
    let reference = read_reference(&fixtures().join("mpnet"));
    let opts = with_precision(
        NativeOptions {
            name: "sentence-transformers/all-mpnet-base-v2".into(),
            threads: Some(2),
            batch_size: 16,
            ..NativeOptions::default()
        },
        "int8",
    );
    let fast = NativeEmbedder::load(&opts)
        .unwrap_or_else(|e| panic!("cannot load all-mpnet-base-v2: {e} (run scripts/fetch-mpnet.sh first)"));
    if let Int8Dispatch::Avx512Vnni(_) = Int8Dispatch::detect() {
        assert_eq!(fast.compute_path(), "cpu int8 (avx512-vnni)");
    }
    let got = assert_parity(&fast, &reference, MIN_COSINE);
    assert_close(
        "all-mpnet-base-v2 int8 vs sentence-transformers fp32",
        cosines(&got, &reference.vectors),
        MIN_COSINE,
        MEAN_COSINE,
    );
}

/// Every architecture's int8 path, on its tiny random checkpoint. Random
/// weights have no outliers, so int8 keeps them closer than trained ones:
/// the floors are tighter than the real model's.
#[test]
fn every_architecture_runs_int8_close_to_its_f32_path() {
    for fixture in [
        "tiny-bert",
        "tiny-xlmr",
        "tiny-mpnet",
        "tiny-qwen3",
        "tiny-modernbert",
        "tiny-gemma3",
        "tiny-gemma3-dense",
        "tiny-gte",
        "tiny-nomic",
    ] {
        let opts = |p| with_precision(fixture_options(fixture, 2, 7), p);
        let (got, want, reference) = both(&opts("int8"), &opts("float32"), fixture);
        assert_close(
            &format!("{fixture} int8 vs papersys fp32"),
            cosines(&got, want.as_flat()),
            TINY_MIN_COSINE,
            TINY_MEAN_COSINE,
        );
        assert_close(
            &format!("{fixture} int8 vs sentence-transformers fp32"),
            cosines(&got, &reference),
            TINY_MIN_COSINE,
            TINY_MEAN_COSINE,
        );
    }
}

/// What a CPU without AVX512-VNNI gets, forced on this one: the f32
/// engine, recorded as float32, with the f32 engine's exact vectors.
#[test]
fn forced_absent_int8_runs_the_f32_path() {
    let reference = read_reference(&fixtures().join("tiny-bert"));
    let without_vnni = CpuDispatch {
        int8: Int8Dispatch::select(false),
        ..CpuDispatch::detect()
    };
    let tiny = |p| with_precision(fixture_options("tiny-bert", 2, 7), p);
    let forced = NativeEmbedder::load_cpu_with(&tiny("int8"), without_vnni).unwrap();
    assert_eq!(
        forced.compute_path(),
        "cpu float32 (int8 requested, no AVX512-VNNI)"
    );
    assert_eq!(forced.identity().precision, None);
    let exact = NativeEmbedder::load(&tiny("float32")).unwrap();
    assert_eq!(
        embed(&forced, &reference.texts).as_flat(),
        embed(&exact, &reference.texts).as_flat()
    );
    // Forcing f32 on a VNNI-capable CPU: `float32` never runs int8.
    let f32 = NativeEmbedder::load_cpu_with(&tiny("float32"), CpuDispatch::detect()).unwrap();
    assert_eq!(f32.compute_path(), "cpu float32");
}
