//! Throughput of the native engine on a texts file, printed as JSON.
//!
//! ```text
//! cargo run --release -p papersys-backend-native --example embed_bench -- \
//!     --texts texts.jsonl --threads 2 --batch-size 32 --runs 3
//! cargo run --release -p papersys-backend-native --example embed_bench -- --gemm --threads 2
//! cargo run --release -p papersys-backend-native --example embed_bench -- \
//!     --texts texts.jsonl --precision bfloat16
//! ```
//!
//! Texts are sorted by length and cut into batches as the pipeline does;
//! a producer thread tokenises the next batch while the engine embeds the
//! current one. `--gemm` instead measures the fp32 GEMM rate of the `gemm`
//! crate at the model's largest shape (for the hardware bound), or at
//! `--gemm-shape MxKxN`, and beside it the engine's bf16 and int8 GEMMs
//! (activation packing included) where this CPU has their instructions;
//! `--gemm --peak` adds the instruction-bound fp32 FMA and int8 VNNI rates
//! on the same threads (the ceiling of every GEMM here).

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use papersys_backend_core::{Embedder, PreparedBatch};
use papersys_backend_native::{NativeEmbedder, NativeOptions, Precision};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    texts: Option<PathBuf>,
    name: String,
    model_path: Option<PathBuf>,
    threads: Option<usize>,
    batch_size: usize,
    runs: usize,
    warmup: usize,
    limit: Option<usize>,
    max_length: Option<usize>,
    gemm: bool,
    gemm_shape: (usize, usize, usize),
    peak: bool,
    save: Option<PathBuf>,
    precision: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        texts: None,
        name: NativeOptions::default().name,
        model_path: None,
        threads: None,
        batch_size: 32,
        runs: 3,
        warmup: 64,
        limit: None,
        max_length: None,
        gemm: false,
        gemm_shape: (8192, 384, 1536),
        peak: false,
        save: None,
        precision: "auto".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--texts" => args.texts = Some(value()?.into()),
            "--name" => args.name = value()?,
            "--model-path" => args.model_path = Some(value()?.into()),
            "--threads" => args.threads = Some(number(value()?)?),
            "--batch-size" => args.batch_size = number(value()?)?,
            "--runs" => args.runs = number(value()?)?,
            "--warmup" => args.warmup = number(value()?)?,
            "--limit" => args.limit = Some(number(value()?)?),
            "--max-length" => args.max_length = Some(number(value()?)?),
            "--save-f32" => args.save = Some(value()?.into()),
            "--precision" => args.precision = value()?,
            "--gemm" => args.gemm = true,
            "--peak" => args.peak = true,
            "--gemm-shape" => {
                let v = value()?;
                let dims: Vec<usize> = v
                    .split('x')
                    .map(|d| d.parse::<usize>().map_err(|e| format!("--gemm-shape {v}: {e}")))
                    .collect::<Result<_, _>>()?;
                let [m, k, n] = dims[..] else {
                    return Err(format!("--gemm-shape {v}: expected MxKxN"));
                };
                args.gemm_shape = (m, k, n);
            }
            "-h" | "--help" => {
                println!(
                    "embed_bench --texts FILE.jsonl [--threads N] [--batch-size N] [--runs N] [--warmup N] \
                     [--limit N] [--max-length N] [--name ID] [--model-path DIR] [--save-f32 FILE] [--precision P] | --gemm [--gemm-shape MxKxN] [--peak] [--threads N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Peak resident memory of this process in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn read_texts(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| e.to_string())?;
            v["text"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "a line has no \"text\"".to_string())
        })
        .collect()
}

/// One pass over `texts` in pipeline style; returns the vectors in input order.
fn embed_all(
    embedder: &NativeEmbedder,
    texts: &[String],
    batch_size: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
    let mut out = vec![Vec::new(); texts.len()];
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<(Vec<usize>, PreparedBatch)>(2);
        let order = &order;
        scope.spawn(move || {
            for chunk in order.chunks(batch_size) {
                let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
                match embedder.prepare(batch) {
                    Ok(prepared) => {
                        if tx.send((chunk.to_vec(), prepared)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("tokenization failed: {e}");
                        return;
                    }
                }
            }
        });
        for (indices, prepared) in rx {
            let embeddings = embedder.embed(&prepared).map_err(|e| e.to_string())?;
            for (row, i) in embeddings.rows().zip(indices) {
                out[i] = row.to_vec();
            }
        }
        Ok::<(), String>(())
    })?;
    if out.iter().any(Vec::is_empty) {
        return Err("some texts were not embedded".into());
    }
    Ok(out)
}

fn gemm_rate(threads: usize, (m, k, n): (usize, usize, usize)) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 89) as f32 * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut best = f64::INFINITY;
    for _ in 0..8 {
        let t = Instant::now();
        pool.install(|| unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

/// The instruction-bound rates of this CPU on `threads` threads at once:
/// 512-bit fp32 FMAs and, where present, VNNI int8 dot products, each
/// thread running 12 independent accumulator chains with no memory
/// traffic. No GEMM passes these: `(name, GFLOP/s or GOP/s)`.
fn instruction_peaks(threads: usize) -> Vec<(&'static str, f64)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const STEPS: usize = 20_000_000;

        // Twelve independent chains in named registers: enough to cover the
        // latency of both units, with no loads or stores in the loop.
        macro_rules! chains {
            ($step:ident, $start:expr, $b:expr, $c:expr) => {{
                let mut acc = [$start; 12];
                let (b, c) = std::hint::black_box(($b, $c));
                let [
                    mut a0,
                    mut a1,
                    mut a2,
                    mut a3,
                    mut a4,
                    mut a5,
                    mut a6,
                    mut a7,
                    mut a8,
                    mut a9,
                    mut a10,
                    mut a11,
                ] = acc;
                for _ in 0..STEPS {
                    a0 = $step(a0, b, c);
                    a1 = $step(a1, b, c);
                    a2 = $step(a2, b, c);
                    a3 = $step(a3, b, c);
                    a4 = $step(a4, b, c);
                    a5 = $step(a5, b, c);
                    a6 = $step(a6, b, c);
                    a7 = $step(a7, b, c);
                    a8 = $step(a8, b, c);
                    a9 = $step(a9, b, c);
                    a10 = $step(a10, b, c);
                    a11 = $step(a11, b, c);
                }
                acc = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11];
                std::hint::black_box(acc);
            }};
        }

        /// # Safety
        /// AVX-512F.
        #[target_feature(enable = "avx512f")]
        unsafe fn fma_chains() {
            chains!(
                _mm512_fmadd_ps,
                _mm512_set1_ps(1.0),
                _mm512_set1_ps(0.999_9),
                _mm512_set1_ps(1e-4)
            );
        }

        /// # Safety
        /// AVX-512F and AVX512-VNNI.
        #[target_feature(enable = "avx512f,avx512vnni")]
        unsafe fn vnni_chains() {
            chains!(
                _mm512_dpbusd_epi32,
                _mm512_setzero_si512(),
                _mm512_set1_epi8(3),
                _mm512_set1_epi8(-2)
            );
        }

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        let rate = |run: fn(), ops_per_step: f64| {
            let t = Instant::now();
            pool.broadcast(|_| run());
            ops_per_step * (STEPS * 12 * threads) as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        let mut peaks = Vec::new();
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected just above.
            peaks.push(("fp32-fma-peak", rate(|| unsafe { fma_chains() }, 32.0)));
            if is_x86_feature_detected!("avx512vnni") {
                // SAFETY: AVX-512F and AVX512-VNNI detected just above.
                peaks.push(("int8-vnni-peak", rate(|| unsafe { vnni_chains() }, 128.0)));
            }
        }
        peaks
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        Vec::new()
    }
}

/// The engine's packed GEMMs at the same shape, each with its activation
/// packing step, as a linear layer runs them: `(name, GFLOP/s)`.
fn packed_gemm_rates(threads: usize, (m, k, n): (usize, usize, usize)) -> Vec<(&'static str, f64)> {
    use papersys_backend_native::kernels::{bf16, int8};
    let a: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 * 0.01 - 0.3).collect();
    let w: Vec<f32> = (0..k * n).map(|i| (i % 89) as f32 * 0.01 - 0.4).collect();
    let mut c = vec![0.0f32; m * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let time = |run: &mut (dyn FnMut() + Send)| {
        let mut best = f64::INFINITY;
        for _ in 0..8 {
            let t = Instant::now();
            pool.install(&mut *run);
            best = best.min(t.elapsed().as_secs_f64());
        }
        2.0 * (m * k * n) as f64 / best / 1e9
    };
    let mut rates = Vec::new();
    if let Some(isa) = bf16::Bf16Isa::detect() {
        let packed = bf16::PackedBf16::pack(&w, k, n);
        let mut rows = Vec::new();
        rates.push((
            "bf16-avx512",
            time(&mut || {
                bf16::pack_rows(isa, &a, k, &mut rows);
                bf16::gemm(isa, &rows, m, &packed, &mut c, false, threads);
            }),
        ));
    }
    if let Some(isa) = int8::Int8Isa::detect() {
        let packed = int8::PackedInt8::pack(&w, k, n);
        let mut rows = int8::QuantizedRows::default();
        rates.push((
            "int8-vnni",
            time(&mut || {
                int8::quantize_rows(isa, &a, k, &mut rows);
                int8::gemm(isa, &rows, m, &packed, &mut c, false, threads);
            }),
        ));
    }
    rates
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("embed_bench: {e}");
            std::process::exit(2);
        }
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if args.gemm {
        let rate = gemm_rate(threads, args.gemm_shape);
        let (m, k, n) = args.gemm_shape;
        println!(
            "{}",
            serde_json::json!({"engine": "gemm-crate", "threads": threads, "shape": [m, k, n], "gemm_gflops": rate})
        );
        for (engine, rate) in packed_gemm_rates(threads, args.gemm_shape) {
            println!(
                "{}",
                serde_json::json!({"engine": engine, "threads": threads, "shape": [m, k, n], "gemm_gflops": rate})
            );
        }
        if args.peak {
            for (engine, rate) in instruction_peaks(threads) {
                println!(
                    "{}",
                    serde_json::json!({"engine": engine, "threads": threads, "peak_gops": rate})
                );
            }
        }
        return;
    }
    let Some(path) = &args.texts else {
        eprintln!("embed_bench: --texts is required");
        std::process::exit(2);
    };
    let mut texts = read_texts(path).unwrap_or_else(|e| {
        eprintln!("embed_bench: {e}");
        std::process::exit(2);
    });
    if let Some(limit) = args.limit {
        texts.truncate(limit);
    }
    let opts = NativeOptions {
        name: args.name.clone(),
        model_path: args.model_path.clone(),
        threads: Some(threads),
        batch_size: args.batch_size,
        max_length: args.max_length,
        precision: Precision::parse(&args.precision).unwrap_or_else(|e| {
            eprintln!("embed_bench: {e}");
            std::process::exit(2)
        }),
        ..NativeOptions::default()
    };
    let t = Instant::now();
    let embedder = NativeEmbedder::load(&opts).unwrap_or_else(|e| {
        eprintln!("embed_bench: {e}");
        std::process::exit(1);
    });
    let load_s = t.elapsed().as_secs_f64();
    let tokens: Vec<usize> = texts
        .iter()
        .map(|t| embedder.tokenize(&[t]).map(|b| b.input_ids.len()).unwrap_or(0))
        .collect();
    let warm: Vec<String> = texts.iter().take(args.warmup).cloned().collect();
    if let Err(e) = embed_all(&embedder, &warm, args.batch_size) {
        eprintln!("embed_bench: {e}");
        std::process::exit(1);
    }
    let mut times = Vec::new();
    let mut vectors = Vec::new();
    for _ in 0..args.runs.max(1) {
        let t = Instant::now();
        vectors = embed_all(&embedder, &texts, args.batch_size).unwrap_or_else(|e| {
            eprintln!("embed_bench: {e}");
            std::process::exit(1);
        });
        times.push(t.elapsed().as_secs_f64());
    }
    if let Some(save) = &args.save {
        let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        if let Err(e) = std::fs::write(save, bytes) {
            eprintln!("embed_bench: {}: {e}", save.display());
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let n = texts.len() as f64;
    let median = sorted[sorted.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "engine": "papersys-native",
            "precision": args.precision,
            "compute": embedder.compute_path(),
            "threads": threads,
            "batch_size": args.batch_size,
            "n_texts": texts.len(),
            "max_tokens": embedder.max_tokens(),
            "tokens_mean": tokens.iter().sum::<usize>() as f64 / n,
            "tokens": tokens,
            "model_load_s": load_s,
            "run_times_s": times,
            "texts_per_s_best": n / sorted[0],
            "texts_per_s_median": n / median,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}
