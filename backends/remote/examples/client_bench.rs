//! The client's own overhead: drives `RemoteEmbedder` the way the embed
//! pipeline does (`max_in_flight` threads, each preparing and embedding one
//! request batch after another) against a loopback server that answers
//! instantly with precomputed bytes, and prints papers/s for float and
//! base64 answers. Figures only; nothing is asserted.
//!
//! ```text
//! cargo run --release -p papersys-backend-remote --example client_bench -- \
//!     [--papers 100000] [--batch 64] [--concurrency 4] [--servers 1] [--dim 384] [--chars 1000]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use papersys_backend_core::Embedder;
use papersys_backend_remote::{Encoding, RemoteEmbedder, RemoteOptions};
use support::{Reply, TestServer, embeddings_body, fake_vector};

struct Args {
    papers: usize,
    batch: usize,
    concurrency: usize,
    servers: usize,
    dim: usize,
    chars: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        papers: 100_000,
        batch: 64,
        concurrency: 4,
        servers: 1,
        dim: 384,
        chars: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .ok_or(format!("{flag} needs a value"))?
            .parse()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--papers" => args.papers = value,
            "--batch" => args.batch = value,
            "--concurrency" => args.concurrency = value,
            "--servers" => args.servers = value,
            "--dim" => args.dim = value,
            "--chars" => args.chars = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// CPU seconds this thread has used so far (Linux; `None` elsewhere).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("client_bench: {message}");
            std::process::exit(2);
        }
    };
    // Precomputed answers for a full batch, in both encodings.
    let vectors: Vec<(usize, Vec<f32>)> = (0..args.batch)
        .map(|i| (i, fake_vector(&i.to_string(), args.dim)))
        .collect();
    let float_body: Arc<[u8]> = embeddings_body(&vectors, false).into();
    let base64_body: Arc<[u8]> = embeddings_body(&vectors, true).into();
    println!(
        "answer bytes per batch of {}: float {} KiB, base64 {} KiB",
        args.batch,
        float_body.len() / 1024,
        base64_body.len() / 1024
    );
    let servers: Vec<TestServer> = (0..args.servers)
        .map(|_| {
            let (float_body, base64_body) = (float_body.clone(), base64_body.clone());
            TestServer::start_with(false, move |request, _| {
                // The encoding is the last field the client writes.
                let tail = &request.body[request.body.len().saturating_sub(48)..];
                let base64 = tail.windows(6).any(|w| w == b"base64");
                Reply::bytes(
                    200,
                    if base64 {
                        base64_body.clone()
                    } else {
                        float_body.clone()
                    },
                )
            })
        })
        .collect();
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let text: String = "We study the embedding of arXiv abstracts into vector spaces. "
        .chars()
        .cycle()
        .take(args.chars)
        .collect();
    let batches = args.papers.div_ceil(args.batch);
    println!(
        "{} papers of {} chars, batches of {}, {} server(s) × {} in flight, dimension {}, {} cores",
        batches * args.batch,
        args.chars,
        args.batch,
        args.servers,
        args.concurrency,
        args.dim,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for encoding in [Encoding::Float, Encoding::Base64] {
        let mut options = RemoteOptions::new("bench", urls.iter().copied(), args.dim);
        options.request_batch_size = args.batch;
        options.max_concurrency = args.concurrency;
        options.encoding = encoding;
        let embedder = match RemoteEmbedder::new(options) {
            Ok(embedder) => embedder,
            Err(e) => {
                eprintln!("client_bench: {e}");
                std::process::exit(1);
            }
        };
        let threads = embedder.batching().max_in_flight;
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let client_cpu: f64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (embedder, next, text) = (&embedder, &next, &text);
                    scope.spawn(move || {
                        let cpu_start = thread_cpu_seconds();
                        while next.fetch_add(1, Ordering::Relaxed) < batches {
                            let texts = vec![text.clone(); args.batch];
                            let batch = embedder.prepare(texts).expect("prepare");
                            let vectors = embedder.embed(&batch).expect("embed");
                            assert_eq!(vectors.len(), args.batch);
                        }
                        thread_cpu_seconds()
                            .zip(cpu_start)
                            .map_or(0.0, |(end, start)| end - start)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("worker")).sum()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let papers = (batches * args.batch) as f64;
        let per_core = if client_cpu > 0.0 {
            format!("{:.0}", papers / client_cpu)
        } else {
            "n/a".into()
        };
        println!(
            "{:<6}: {:>9.0} papers/s wall ({:.2} s, client and server sharing the cores); \
             client threads used {:.2} CPU-s = {} papers per client CPU-second",
            format!("{encoding:?}").to_lowercase(),
            papers / elapsed,
            elapsed,
            client_cpu,
            per_core
        );
    }
}
