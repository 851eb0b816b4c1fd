//! The sample runner: embed a small batch from the newest metadata CSV (or
//! from the files the backlog points at) and print the files written. The
//! counterpart of the Python original's `scripts/run_embedding_sample.py`.
//!
//! ```text
//! cargo run --release --example embedding_sample -- [--config F] [--model A] [--limit 5] [--backlog] [--dry-run]
//! ```
//!
//! Without `--config` it uses `./papersys.toml`, `config/papersys.toml`, or
//! the bundled `examples/papersys.toml`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use papersys::commands::embed::{self, EmbedOptions};
use papersys::commands::{select_models, store_prefix};
use papersys::config::{Config, DEFAULT_CONFIG_PATHS};
use papersys::metadata::discover;
use papersys::pipeline::ProgressMode;
use papersys::plan::{self, PlanInputs};
use papersys::store::ModelStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    config: Option<PathBuf>,
    model: Option<String>,
    limit: usize,
    backlog: bool,
    dry_run: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        model: None,
        limit: 5,
        backlog: false,
        dry_run: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--config" => args.config = Some(it.next().ok_or("--config needs a path")?.into()),
            "--model" => args.model = Some(it.next().ok_or("--model needs an alias")?),
            "--limit" => {
                let value = it.next().ok_or("--limit needs a number")?;
                args.limit = value
                    .parse()
                    .map_err(|_| format!("--limit: {value:?} is not a number"))?;
            }
            "--backlog" => args.backlog = true,
            "--dry-run" => args.dry_run = true,
            "-h" | "--help" => {
                return Err(
                    "usage: embedding_sample [--config F] [--model A] [--limit N] [--backlog] [--dry-run]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| {
            DEFAULT_CONFIG_PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/papersys.toml"))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let path = config_path(args.config);
    let config = Config::load(&path)?;
    let aliases: Vec<String> = args.model.into_iter().collect();
    let model = select_models(&config, &aliases, false, false)?[0];
    let discovery = discover(&config.metadata_dir, &config.data_root)?;
    println!("config: {}", path.display());
    println!("model:  {} ({})", model.alias, model.name);

    let origins: BTreeSet<String> = if args.backlog {
        let store = ModelStore::new(&config, model);
        let prefix = store_prefix(model, store.manifest()?.as_ref());
        let inputs = PlanInputs::new(&discovery, &prefix);
        let (waiting, _) = plan::compute(plan::Access::ReadOnly(&store), inputs)?;
        waiting
            .rows
            .into_iter()
            .filter(|r| r.reason.is_embeddable())
            .map(|r| r.origin)
            .collect()
    } else {
        discovery
            .files
            .iter()
            .max_by_key(|f| (f.year, f.path.clone()))
            .map(|f| f.origin.clone())
            .into_iter()
            .collect()
    };
    if origins.is_empty() {
        println!(
            "nothing to embed: {}",
            if args.backlog {
                "the backlog is empty"
            } else {
                "no metadata CSV found"
            }
        );
        return Ok(());
    }
    println!(
        "from:   {}",
        origins.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let options = EmbedOptions {
        limit: Some(args.limit),
        from_backlog: args.backlog,
        dry_run: args.dry_run,
        years: None,
        reembed: false,
        origins: Some(origins),
        progress: ProgressMode::Auto,
    };
    let report = embed::run(&config, &[model], &options)?;
    let run = &report.models[0];
    if run.dry_run {
        println!("would embed {} papers; would change:", run.planned);
    } else {
        println!(
            "embedded {} papers ({:.1} papers/s); files written:",
            run.embedded, run.papers_per_s
        );
    }
    for file in &run.files {
        println!("  {}", config.data_root.join(file).display());
    }
    if run.planned == 0 {
        println!("  (none: every paper of those files already has a current vector)");
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
