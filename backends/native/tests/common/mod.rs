//! Reading the reference fixtures written by `scripts/make_fixtures_native.py`.

use std::path::{Path, PathBuf};

use papersys_backend_core::{Embedder, Embeddings};
use papersys_backend_native::{NativeEmbedder, NativeOptions};

/// Texts, their reference token ids and sentence-transformers vectors.
pub struct Reference {
    pub texts: Vec<String>,
    pub ids: Vec<Vec<u32>>,
    pub dimension: usize,
    pub vectors: Vec<f32>,
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Engine options for the model in `dir`, on `threads` threads, `batch_size` texts a batch.
#[allow(
    dead_code,
    reason = "each test crate includes this module; not all load fixtures this way"
)]
pub fn options_at(dir: &Path, threads: usize, batch_size: usize) -> NativeOptions {
    let name = dir
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    NativeOptions {
        name: format!("test/{name}"),
        model_path: Some(dir.to_path_buf()),
        threads: Some(threads),
        batch_size,
        ..NativeOptions::default()
    }
}

/// [`options_at`] the fixture directory `name`.
#[allow(
    dead_code,
    reason = "each test crate includes this module; not all load fixtures this way"
)]
pub fn fixture_options(name: &str, threads: usize, batch_size: usize) -> NativeOptions {
    options_at(&fixtures().join(name), threads, batch_size)
}

pub fn read_reference(dir: &Path) -> Reference {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let dimension = meta["dimension"].as_u64().unwrap() as usize;
    let mut texts = Vec::new();
    let mut ids = Vec::new();
    for line in std::fs::read_to_string(dir.join("texts.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        texts.push(v["text"].as_str().unwrap().to_string());
        ids.push(
            v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect(),
        );
    }
    let bytes = std::fs::read(dir.join("vectors.f32")).unwrap();
    let vectors: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(vectors.len(), texts.len() * dimension);
    Reference {
        texts,
        ids,
        dimension,
        vectors,
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// `texts` embedded the way the pipeline does (prepare, then embed).
#[allow(
    dead_code,
    reason = "each test crate includes this module; not all compare whole runs"
)]
pub fn embed(embedder: &NativeEmbedder, texts: &[String]) -> Embeddings {
    let prepared = embedder.prepare(texts.to_vec()).unwrap();
    embedder.embed(&prepared).unwrap()
}

/// (worst, mean) cosine of `got`'s rows against `want` (flat rows).
#[allow(
    dead_code,
    reason = "each test crate includes this module; not all compare whole runs"
)]
pub fn cosines(got: &Embeddings, want: &[f32]) -> (f64, f64) {
    let d = got.dimension();
    let all: Vec<f64> = got
        .rows()
        .enumerate()
        .map(|(i, row)| cosine(row, &want[i * d..(i + 1) * d]))
        .collect();
    let worst = all.iter().copied().fold(1.0, f64::min);
    (worst, all.iter().sum::<f64>() / all.len() as f64)
}

/// Prints `what`'s worst and mean cosine and holds them to their floors.
#[allow(
    dead_code,
    reason = "each test crate includes this module; not all compare whole runs"
)]
pub fn assert_close(what: &str, (worst, mean): (f64, f64), min: f64, mean_floor: f64) {
    eprintln!("{what}: worst cosine {worst:.7}, mean {mean:.8}");
    assert!(worst >= min, "{what}: worst cosine {worst} < {min}");
    assert!(mean >= mean_floor, "{what}: mean cosine {mean} < {mean_floor}");
}

/// Checks tokenisation id-for-id and every vector's cosine similarity.
pub fn assert_parity(embedder: &NativeEmbedder, reference: &Reference, min_cosine: f64) -> Embeddings {
    for (i, (text, want)) in reference.texts.iter().zip(&reference.ids).enumerate() {
        let got = embedder.tokenize(&[text]).unwrap();
        assert_eq!(&got.input_ids, want, "token ids of text {i} differ: {text:?}");
    }
    let prepared = embedder.prepare(reference.texts.clone()).unwrap();
    let embeddings = embedder.embed(&prepared).unwrap();
    assert_eq!(embeddings.len(), reference.texts.len());
    assert_eq!(embeddings.dimension(), reference.dimension);
    let mut worst = (1.0f64, 0usize);
    for (i, row) in embeddings.rows().enumerate() {
        let want = &reference.vectors[i * reference.dimension..(i + 1) * reference.dimension];
        let c = cosine(row, want);
        if c < worst.0 {
            worst = (c, i);
        }
    }
    eprintln!("worst cosine {:.7} (text {})", worst.0, worst.1);
    assert!(
        worst.0 >= min_cosine,
        "text {} has cosine {} < {min_cosine}: {:?}",
        worst.1,
        worst.0,
        reference.texts[worst.1]
    );
    embeddings
}
