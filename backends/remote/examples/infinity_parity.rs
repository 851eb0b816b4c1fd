//! Embeds real arXiv records through a running OpenAI-compatible server
//! (`scripts/e2e-infinity.sh` starts Infinity for it) with the pipeline's
//! pattern, writes the vectors and texts for comparison with a reference,
//! and prints the throughput.
//!
//! ```text
//! cargo run --release -p papersys-backend-remote --example infinity_parity -- \
//!     --base-url http://127.0.0.1:7997 --records records.jsonl --out DIR \
//!     [--model sentence-transformers/all-MiniLM-L6-v2] [--dim 384] [--batch 32] [--concurrency 4] [--limit N]
//! ```
//! Writes `DIR/texts.jsonl` (one JSON string per line, the exact texts
//! sent: `(title + "\n\n" + abstract).trim()`) and `DIR/vectors.f32`
//! (row-major little-endian `f32`, one row per text).

use std::io::{BufRead, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use papersys_backend_core::Embedder;
use papersys_backend_remote::{RemoteEmbedder, RemoteOptions};

struct Args {
    base_url: String,
    records: String,
    out: String,
    model: String,
    dim: usize,
    batch: usize,
    concurrency: usize,
    limit: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        base_url: String::new(),
        records: String::new(),
        out: String::new(),
        model: "sentence-transformers/all-MiniLM-L6-v2".into(),
        dim: 384,
        batch: 32,
        concurrency: 4,
        limit: usize::MAX,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--base-url" => args.base_url = value.clone(),
            "--records" => args.records = value.clone(),
            "--out" => args.out = value.clone(),
            "--model" => args.model = value.clone(),
            "--dim" => args.dim = number()?,
            "--batch" => args.batch = number()?,
            "--concurrency" => args.concurrency = number()?,
            "--limit" => args.limit = number()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.base_url.is_empty() || args.records.is_empty() || args.out.is_empty() {
        return Err("--base-url, --records and --out are required".into());
    }
    Ok(args)
}

/// `(title + "\n\n" + abstract).trim()` of every record.
fn read_texts(path: &str, limit: usize) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut texts = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        if texts.len() >= limit {
            break;
        }
        let line = line.map_err(|e| format!("{path}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("{path}:{}: {e}", number + 1))?;
        let field = |name: &str| record[name].as_str().unwrap_or("").to_string();
        texts.push(
            format!("{}\n\n{}", field("title"), field("abstract"))
                .trim()
                .to_string(),
        );
    }
    Ok(texts)
}

fn run(args: Args) -> Result<(), String> {
    let texts = read_texts(&args.records, args.limit)?;
    let mut options = RemoteOptions::new(&args.model, [args.base_url.as_str()], args.dim);
    options.request_batch_size = args.batch;
    options.max_concurrency = args.concurrency;
    let embedder = RemoteEmbedder::new(options).map_err(|e| e.to_string())?;
    for report in embedder.check().map_err(|e| e.to_string())? {
        match report.outcome {
            Ok(latency) => println!("server {} answers ({latency:.1?} for one text)", report.server),
            Err(e) => println!("warning: {e}"),
        }
    }
    let chunks: Vec<&[String]> = texts.chunks(args.batch).collect();
    let results: Mutex<Vec<Option<Vec<f32>>>> = Mutex::new(vec![None; chunks.len()]);
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..embedder.batching().max_in_flight {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks.len() {
                        return;
                    }
                    let outcome = embedder
                        .prepare(chunks[i].to_vec())
                        .and_then(|batch| embedder.embed(&batch));
                    match outcome {
                        Ok(vectors) => {
                            results.lock().expect("results")[i] = Some(vectors.as_flat().to_vec());
                        }
                        Err(e) => {
                            *failed.lock().expect("failure") = Some(e.to_string());
                            return;
                        }
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(message) = failed.into_inner().map_err(|e| e.to_string())? {
        return Err(message);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out))?;
    let mut vectors = std::io::BufWriter::new(
        std::fs::File::create(format!("{}/vectors.f32", args.out)).map_err(|e| e.to_string())?,
    );
    for rows in results.into_inner().map_err(|e| e.to_string())? {
        let rows = rows.ok_or("a batch has no vectors")?;
        for value in rows {
            vectors
                .write_all(&value.to_le_bytes())
                .map_err(|e| e.to_string())?;
        }
    }
    vectors.flush().map_err(|e| e.to_string())?;
    let mut lines = String::new();
    for text in &texts {
        lines.push_str(&serde_json::to_string(text).map_err(|e| e.to_string())?);
        lines.push('\n');
    }
    std::fs::write(format!("{}/texts.jsonl", args.out), lines).map_err(|e| e.to_string())?;
    for stats in embedder.server_stats() {
        println!(
            "server {}: {} requests, {} failed, base64 {:?}",
            stats.server, stats.requests, stats.failures, stats.base64
        );
    }
    println!(
        "embedded {} papers through the server in {elapsed:.1} s: {:.1} papers/s (batch {}, {} in flight)",
        texts.len(),
        texts.len() as f64 / elapsed,
        args.batch,
        args.concurrency
    );
    Ok(())
}

fn main() {
    let result = parse_args().and_then(run);
    if let Err(message) = result {
        eprintln!("infinity_parity: {message}");
        std::process::exit(1);
    }
}
