//! An OpenAI-compatible embeddings server that does no work: every request
//! is answered at once with fixed vectors, from response bytes built once
//! per (batch size, encoding, variant) and reused. `bench/remote.sh` runs
//! it in its own process beside `papersys embed`, so the client's CPU and
//! the server's can be told apart.
//!
//! ```text
//! cargo run --release -p papersys-backend-remote --example instant_server -- \
//!     [--port 0] [--dim 384] [--batch 256] [--variants 16] [--float-only]
//! ```
//!
//! Prints its base URL (`http://127.0.0.1:PORT`) as the first line on
//! stdout, then serves until killed. `--port 0` (the default) takes a free
//! port. `--batch` pre-builds the answers for that batch size; other sizes
//! are built on first use. Requests get the `--variants` sets of vectors in
//! turn, every vector of them distinct, so that what the client stores
//! compresses about as badly as real vectors do (one set repeated would
//! shrink to nothing in Parquet's zstd and flatter the store). With
//! `--float-only`, base64 requests are refused with 400, as by a server
//! without base64: the client then falls back to JSON floats. The only
//! parsing done per request is counting the `input` strings and reading
//! `encoding_format`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde::de::IgnoredAny;
use support::{Reply, TestServer, embeddings_body, fake_vector};

/// The fields of a request the answer depends on.
#[derive(Deserialize)]
struct Shape<'a> {
    input: Vec<IgnoredAny>,
    #[serde(borrow, default)]
    encoding_format: Option<&'a str>,
}

/// Which answer: (number of texts, base64, variant).
type AnswerKey = (usize, bool, usize);

/// Finished answers.
struct Answers {
    dim: usize,
    variants: usize,
    next: AtomicUsize,
    built: Mutex<HashMap<AnswerKey, Arc<[u8]>>>,
}

impl Answers {
    fn new(dim: usize, variants: usize) -> Answers {
        Answers {
            dim,
            variants: variants.max(1),
            next: AtomicUsize::new(0),
            built: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `texts` texts, the variants in turn.
    fn next(&self, texts: usize, base64: bool) -> Arc<[u8]> {
        let variant = self.next.fetch_add(1, Ordering::Relaxed) % self.variants;
        self.get(texts, base64, variant)
    }

    fn get(&self, texts: usize, base64: bool, variant: usize) -> Arc<[u8]> {
        let key = (texts, base64, variant);
        if let Some(body) = self.built.lock().unwrap().get(&key) {
            return body.clone();
        }
        let items: Vec<(usize, Vec<f32>)> = (0..texts)
            .map(|i| (i, fake_vector(&format!("instant {variant} {i}"), self.dim)))
            .collect();
        let body: Arc<[u8]> = embeddings_body(&items, base64).into();
        self.built.lock().unwrap().entry(key).or_insert(body).clone()
    }
}

fn main() {
    let mut port = 0u16;
    let mut dim = 384usize;
    let mut batch = 256usize;
    let mut variants = 16usize;
    let mut float_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--float-only" {
            float_only = true;
            continue;
        }
        let value = args.next().unwrap_or_default();
        let parsed = match flag.as_str() {
            "--port" => value.parse().map(|v| port = v).is_ok(),
            "--dim" => value.parse().map(|v| dim = v).is_ok(),
            "--batch" => value.parse().map(|v| batch = v).is_ok(),
            "--variants" => value.parse().map(|v| variants = v).is_ok(),
            _ => false,
        };
        if !parsed {
            eprintln!("instant_server: bad argument {flag} {value:?}; see the example's documentation");
            std::process::exit(2);
        }
    }
    let answers = Arc::new(Answers::new(dim, variants));
    for variant in 0..answers.variants {
        answers.get(batch, !float_only, variant);
    }
    let handler =
        move |request: &support::Request, _: usize| match serde_json::from_slice::<Shape>(&request.body) {
            Ok(shape) => {
                let base64 = shape.encoding_format == Some("base64");
                if base64 && float_only {
                    return Reply::text(400, r#"{"error":"encoding_format base64 is not supported"}"#);
                }
                Reply::bytes(200, answers.next(shape.input.len(), base64))
            }
            Err(e) => Reply::text(400, &serde_json::json!({ "error": e.to_string() }).to_string()),
        };
    let server = if port == 0 {
        TestServer::start_with(false, handler)
    } else {
        TestServer::start_on(port, handler)
    };
    println!("{}", server.url);
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
