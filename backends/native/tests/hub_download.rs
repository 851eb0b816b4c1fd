//! The hub download path, against a loopback server that answers the way
//! huggingface.co does (`HF_ENDPOINT`): `resolve/main/<file>` with range
//! requests, `etag` / `x-repo-commit` headers and 404 for absent files. The
//! real hub is unreachable from CI; this checks that papersys asks for the
//! right files, leaves a cache the offline lookup reads, records the
//! revision and weights hash, and embeds as sentence-transformers does.
//! One test in its own binary: it sets process-wide environment variables.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{assert_parity, fixtures, read_reference};
use papersys_backend_core::Embedder;
use papersys_backend_native::{ModelSource, NativeEmbedder, NativeOptions, resolve_model};
use sha2::{Digest, Sha256};

const REPO: &str = "papersys-test/tiny-bert";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `dir` as the hub serves `REPO`; returns its URL and the paths asked for.
fn fake_hub(dir: PathBuf) -> (String, Arc<Mutex<BTreeSet<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(BTreeSet::new()));
    let log = Arc::clone(&asked);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            // `Range: bytes=A-B` or `bytes=A-`, as the client sends them.
            let mut range: Option<(usize, Option<usize>)> = None;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().trim().strip_prefix("range: bytes=") {
                    let (from, to) = value.split_once('-').unwrap_or((value, ""));
                    range = from.parse().ok().map(|from| (from, to.parse().ok()));
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
            let prefix = format!("/{REPO}/resolve/main/");
            let file = path.strip_prefix(&prefix).map(|f| dir.join(f));
            log.lock().unwrap().insert(path.clone());
            let response = match file.filter(|f| f.is_file()) {
                Some(file) => {
                    let bytes = std::fs::read(&file).unwrap();
                    let etag = hex(&Sha256::digest(&bytes));
                    // Byte 0 alone first (the metadata request), then the rest.
                    let (start, last) = range.unwrap_or((0, None));
                    let end = last.map_or(bytes.len(), |last| (last + 1).min(bytes.len()));
                    let body = &bytes[start.min(end)..end];
                    let mut head = format!(
                        "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {}-{}/{}\r\n\
                         etag: \"{etag}\"\r\nx-repo-commit: {COMMIT}\r\nconnection: close\r\n\r\n",
                        body.len(),
                        start,
                        end.saturating_sub(1),
                        bytes.len()
                    )
                    .into_bytes();
                    head.extend_from_slice(body);
                    head
                }
                None => b"HTTP/1.1 404 Not Found\r\nx-error-code: EntryNotFound\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (url, asked)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_of(path: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn a_model_absent_everywhere_is_downloaded_from_the_hub_then_found_offline() {
    let model_dir = fixtures().join("tiny-bert");
    let (url, asked) = fake_hub(model_dir.clone());
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: this test binary has one test and no other threads reading the environment yet.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &url);
        std::env::set_var("HF_HUB_CACHE", cache.path());
        std::env::remove_var("HF_HUB_OFFLINE");
        std::env::remove_var("HF_TOKEN");
    }
    let options = NativeOptions {
        name: REPO.into(),
        batch_size: 8,
        ..NativeOptions::default()
    };

    let files = resolve_model(&options).unwrap();
    assert_eq!(files.source, ModelSource::HubDownload);
    assert_eq!(files.revision.as_deref(), Some(COMMIT));
    let weights = sha256_of(&model_dir.join("model.safetensors"));
    let asked: Vec<String> = asked.lock().unwrap().iter().cloned().collect();
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer_config.json",
        "1_Pooling/config.json",
    ] {
        let path = format!("/{REPO}/resolve/main/{file}");
        assert!(asked.contains(&path), "{path} not requested: {asked:?}");
    }

    // Now in the cache: found there without the hub, and it embeds correctly.
    // SAFETY: as above.
    unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    let files = resolve_model(&options).unwrap();
    assert_eq!(files.source, ModelSource::HfCache);
    let embedder = NativeEmbedder::load(&options).unwrap();
    assert_eq!(embedder.identity().revision.as_deref(), Some(COMMIT));
    assert_eq!(
        embedder.identity().weights_sha256.as_deref(),
        Some(weights.as_str())
    );
    assert_parity(&embedder, &read_reference(&model_dir), 0.99999);
}
