//! A day's new papers for benchmarks: appends `--count` metadata rows to a
//! tree's newest `metadata-YYYY.csv` and merges as many random unit vectors
//! into `embeddings/<alias>/YYYY.parquet` with the library's
//! `year_file::merge`, exactly as `papersys ingest` + `papersys embed`
//! leave a year (new arXiv ids sort after the year's others).
//!
//!   bench_daily_embed --tree DIR [--alias jasper_v1] [--count 1000] [--day 1] [--dim 384]
//!
//! `--day` (1-9) makes the ids of successive runs differ.

use std::io::Write;
use std::path::PathBuf;

use papersys::store::year_file::{self, SOURCE, VectorRow};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut tree = None;
    let (mut alias, mut count, mut day, mut dim) = ("jasper_v1".to_string(), 1000usize, 1u64, 384usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tree" => tree = Some(PathBuf::from(value)),
            "--alias" => alias = value,
            "--count" => count = value.parse()?,
            "--day" => day = value.parse()?,
            "--dim" => dim = value.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tree = tree.ok_or("--tree is required")?;
    if !(1..=9).contains(&day) || count > 10_000 {
        return Err("--day must be 1..=9 and --count at most 10000".into());
    }
    let mut csvs: Vec<PathBuf> = std::fs::read_dir(tree.join("metadata"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("metadata-") && n.ends_with(".csv"))
        })
        .collect();
    csvs.sort();
    let newest = csvs.last().ok_or("no metadata-YYYY.csv")?;
    let name = newest.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let year = &name["metadata-".len()..name.len() - ".csv".len()];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ day;
    let mut next = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let stamp = format!("{year}-12-31T00:00:00Z");
    let mut csv = std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(newest)?);
    let mut rows = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("{}99.{day}{i:04}", &year[2..]);
        writeln!(
            csv,
            "{id},\"Bench paper {id}\",\"An abstract.\",cs.LG,cs.LG,\"A. Author\",{stamp},{stamp},,,,,bench"
        )?;
        let mut v: Vec<f32> = (0..dim).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.iter_mut().for_each(|x| *x /= norm);
        rows.push(VectorRow {
            paper_id: id,
            embedding: v,
            generated_at: "2026-01-01T00:00:00+00:00".into(),
            source: SOURCE.into(),
            text_hash: None,
        });
    }
    csv.flush()?;
    let path = tree
        .join("embeddings")
        .join(&alias)
        .join(format!("{year}.parquet"));
    let outcome = year_file::merge(&path, rows, dim)?;
    println!(
        "appended {count} papers to {} and {} ({} rows now)",
        newest.display(),
        path.display(),
        outcome.rows
    );
    Ok(())
}
