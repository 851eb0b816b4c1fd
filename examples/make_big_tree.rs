//! Generates a large synthetic data tree for benchmarks: yearly metadata
//! CSVs shaped like arXiv (rows of ~1.2 KB, per-year counts following
//! arXiv's growth, old-style ids before 2007) and, for a chosen fraction of
//! each year's papers, year files of random unit vectors.
//!
//! ```text
//! cargo run --release --example make_big_tree -- --out /tmp/big --rows 2800000 --coverage 0.95
//! ```
//!
//! Deterministic for a given `--seed`. Writes `papersys.toml` at the root so
//! every command can be pointed at the tree at once. Year files carry text
//! hashes as papersys writes them; `--no-hashes` makes them look like files
//! written by the Python original (no `text_hash` column values).

use std::io::Write;
use std::path::PathBuf;

use papersys::store::manifest::now_iso;
use papersys::store::year_file::{self, SOURCE, VectorRow};
use papersys::text::TextHash;

/// Thousands of new arXiv submissions per year, 1991-2025 (shape only).
const GROWTH: [f64; 35] = [
    0.3, 3.0, 7.0, 10.0, 13.0, 16.0, 19.0, 24.0, 27.0, 30.0, 32.0, 35.0, 38.0, 43.0, 46.0, 50.0, 55.0, 59.0,
    63.0, 70.0, 76.0, 84.0, 92.0, 97.0, 105.0, 113.0, 124.0, 141.0, 155.0, 178.0, 181.0, 186.0, 208.0, 241.0,
    270.0,
];

const WORDS: [&str; 48] = [
    "quantum",
    "network",
    "model",
    "learning",
    "spectral",
    "entropy",
    "lattice",
    "gauge",
    "boson",
    "galaxy",
    "stochastic",
    "convex",
    "manifold",
    "operator",
    "kernel",
    "transformer",
    "diffusion",
    "inference",
    "robust",
    "sparse",
    "bound",
    "theorem",
    "estimate",
    "dynamics",
    "field",
    "symmetry",
    "topological",
    "phase",
    "transition",
    "algorithm",
    "graph",
    "random",
    "matrix",
    "optimal",
    "control",
    "signal",
    "energy",
    "density",
    "observation",
    "simulation",
    "neural",
    "language",
    "protein",
    "cluster",
    "dark",
    "matter",
    "$\\alpha$",
    "O(n^2)",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: fast, deterministic, good enough for fake text.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn words(&mut self, count: u64, out: &mut String) {
        for i in 0..count {
            if i > 0 {
                out.push(if self.below(14) == 0 { '\n' } else { ' ' });
            }
            out.push_str(WORDS[self.below(WORDS.len() as u64) as usize]);
            if self.below(11) == 0 {
                out.push(',');
            }
        }
    }

    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| (self.below(2001) as f32 - 1000.0) / 1000.0)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

fn paper_id(year: u32, i: u64) -> String {
    if year < 2007 {
        format!("hep-th/{:02}{:05}", year % 100, i)
    } else {
        format!("{:02}{:02}.{:05}", year % 100, 1 + i % 12, i / 12)
    }
}

fn csv_field(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

struct Args {
    out: PathBuf,
    rows: u64,
    coverage: f64,
    first: u32,
    last: u32,
    dim: usize,
    alias: String,
    seed: u64,
    hashes: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        out: PathBuf::from("/tmp/papersys-big"),
        rows: 2_800_000,
        coverage: 0.95,
        first: 1991,
        last: 2025,
        dim: 384,
        alias: "jasper_v1".into(),
        seed: 7,
        hashes: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => args.out = PathBuf::from(value()?),
            "--rows" => args.rows = value()?.parse().map_err(|e| format!("--rows: {e}"))?,
            "--coverage" => args.coverage = value()?.parse().map_err(|e| format!("--coverage: {e}"))?,
            "--first" => args.first = value()?.parse().map_err(|e| format!("--first: {e}"))?,
            "--last" => args.last = value()?.parse().map_err(|e| format!("--last: {e}"))?,
            "--dim" => args.dim = value()?.parse().map_err(|e| format!("--dim: {e}"))?,
            "--alias" => args.alias = value()?,
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--no-hashes" => args.hashes = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(1991..=2025).contains(&args.first) || args.last < args.first || args.last > 2025 {
        return Err("--first/--last must lie within 1991..=2025".into());
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let meta = args.out.join("metadata");
    let emb = args.out.join("embeddings").join(&args.alias);
    std::fs::create_dir_all(&meta)?;
    std::fs::create_dir_all(&emb)?;
    let years: Vec<u32> = (args.first..=args.last).collect();
    let weights: Vec<f64> = years.iter().map(|y| GROWTH[(y - 1991) as usize]).collect();
    let total: f64 = weights.iter().sum();
    let mut rng = Rng(args.seed.max(1));
    let stamp = now_iso();
    let started = std::time::Instant::now();
    for (year, weight) in years.iter().zip(&weights) {
        let n = ((args.rows as f64) * weight / total).round() as u64;
        let path = meta.join(format!("metadata-{year}.csv"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        writeln!(
            out,
            "paper_id,title,abstract,categories,primary_category,authors,published_at,updated_at,doi,comment,journal_ref,license,source"
        )?;
        let mut vectors = Vec::new();
        for i in 0..n {
            let id = paper_id(*year, i);
            let mut title = String::new();
            let title_words = 6 + rng.below(10);
            rng.words(title_words, &mut title);
            let mut abstract_text = String::from("  ");
            let abstract_words = 85 + rng.below(76);
            rng.words(abstract_words, &mut abstract_text);
            abstract_text.push('\n');
            let authors = (0..1 + rng.below(6))
                .map(|k| format!("A. Author{k}"))
                .collect::<Vec<_>>()
                .join(";");
            writeln!(
                out,
                "{id},{},{},cs.LG;stat.ML,cs.LG,{},{year}-01-15T00:00:00Z,{year}-01-15T00:00:00Z,,{},,http://creativecommons.org/licenses/by/4.0/,synthetic",
                csv_field(&title),
                csv_field(&abstract_text),
                csv_field(&authors),
                csv_field("12 pages, 3 figures"),
            )?;
            if (rng.below(10_000) as f64) < args.coverage * 10_000.0 {
                vectors.push(VectorRow {
                    paper_id: id,
                    embedding: rng.unit_vector(args.dim),
                    generated_at: stamp.clone(),
                    source: SOURCE.into(),
                    text_hash: args
                        .hashes
                        .then(|| TextHash::of_paper("", &title, &abstract_text)),
                });
            }
        }
        out.flush()?;
        if !vectors.is_empty() {
            year_file::merge(&emb.join(format!("{year}.parquet")), vectors, args.dim)?;
        }
        eprintln!("{year}: {n} papers ({:.0} s)", started.elapsed().as_secs_f64());
    }
    std::fs::write(
        args.out.join("papersys.toml"),
        format!(
            "[embedding]\n[[embedding.models]]\nalias = \"{}\"\nname = \"sentence-transformers/all-MiniLM-L6-v2\"\ndimension = {}\n",
            args.alias, args.dim
        ),
    )?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
