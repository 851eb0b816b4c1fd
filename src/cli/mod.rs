//! Command-line interface: raw arguments ([`LowArgs`], parsed by clap) are
//! resolved once into what the commands need ([`HiArgs`]: a loaded config
//! and the chosen models), then dispatched. Output goes to stdout (a table,
//! or one JSON document with `--json`); logs go to stderr.

mod render;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands::embed::{EmbedOptions, parse_years};
use crate::commands::recommend::{RecommendOptions, WindowChoice};
use crate::commands::search::QueryOptions;
use crate::commands::{self, select_models};
use crate::config::{Config, ModelConfig};
use crate::error::{EXIT_OK, Error};
use crate::pipeline::ProgressMode;
use crate::plan::RefreshOptions;
use crate::prefs::Preference;
use crate::query::CacheMode;

/// papersys keeps sentence embeddings of arXiv paper metadata complete,
/// correct and up to date.
#[derive(Debug, Parser)]
#[command(name = "papersys", version, about, long_about = None)]
pub struct LowArgs {
    /// Config file [default: ./papersys.toml, then ./config/papersys.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v: debug, -vv: trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print one JSON document on stdout instead of a table
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do
    #[command(subcommand)]
    pub command: CommandArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    /// Refresh the backlog (papers without a usable vector) and show it per year and reason
    Backlog(BacklogArgs),
    /// Show papers in metadata, vectors on disk and papers waiting, per model and year (read only)
    Status(StatusArgs),
    /// Embed every paper that lacks a current vector (resumable; safe to interrupt)
    Embed(EmbedArgs),
    /// The papers closest to a text (exact cosine over every vector)
    Search(SearchArgs),
    /// The papers closest to one paper, or to the mean of several
    Similar(SimilarArgs),
    /// Harvest arXiv metadata (OAI-PMH; incremental by default) or import Kaggle's snapshot into metadata-YYYY.csv
    Ingest(IngestArgs),
    /// Record or show what you like and dislike (what the recommender learns from)
    #[command(subcommand)]
    Prefs(PrefsArgs),
    /// Learn from your preferences and pick the recent papers worth reading
    Recommend(RecommendArgs),
    /// The daily job: ingest (incremental), embed every model, recommend; stops at the first failure
    Update,
}

/// `papersys prefs` subcommands.
#[derive(Debug, Subcommand)]
pub enum PrefsArgs {
    /// Record a preference for papers (ids, arXiv URLs or DOIs; versions are ignored)
    Add(PrefsAddArgs),
    /// Import a preference CSV (id/paper_id/arxiv_id + preference [+ recorded_at]) or a Zotero CSV export (as likes)
    Import(PrefsImportArgs),
    /// Show every paper's current preference, newest first
    List,
}

/// Arguments of `papersys prefs add`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("preference").required(true).multiple(false))]
pub struct PrefsAddArgs {
    /// arXiv ids, e.g. 2401.00001 hep-th/9901001 arXiv:2401.00001v2
    #[arg(value_name = "PAPER_ID", required = true)]
    ids: Vec<String>,
    /// Papers you want more of
    #[arg(long, group = "preference")]
    like: bool,
    /// Papers you want fewer of
    #[arg(long, group = "preference")]
    dislike: bool,
    /// Seen, no opinion: neither learned from nor recommended again
    #[arg(long, group = "preference")]
    neutral: bool,
}

/// Arguments of `papersys prefs import`.
#[derive(Debug, Args)]
pub struct PrefsImportArgs {
    /// The CSV file
    #[arg(value_name = "FILE.csv")]
    file: PathBuf,
}

/// Arguments of `papersys recommend`.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Model alias whose vectors are used (repeatable; concatenated in order)
    /// [default: recommend_pipeline.data.embedding_columns]
    #[arg(long = "model", value_name = "ALIAS")]
    models: Vec<String>,
    /// Score the papers of the last N days [default: predict.last_n_days]
    #[arg(long, value_name = "N", conflicts_with_all = ["from", "until"], value_parser = clap::value_parser!(u32).range(1..))]
    last_n_days: Option<u32>,
    /// First date to score (YYYY-MM-DD), with --until
    #[arg(long, value_name = "DATE", requires = "until", value_parser = parse_date)]
    from: Option<jiff::civil::Date>,
    /// Last date to score (YYYY-MM-DD, included), with --from
    #[arg(long, value_name = "DATE", requires = "from", value_parser = parse_date)]
    until: Option<jiff::civil::Date>,
    /// Show every candidate, not the adaptive sample
    #[arg(long)]
    force_all: bool,
    /// Train and score, but write nothing
    #[arg(long)]
    dry_run: bool,
}

fn parse_date(text: &str) -> Result<jiff::civil::Date, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

/// Which models a command works on.
#[derive(Debug, Args)]
pub struct ModelSelection {
    /// Model alias from the config (repeatable)
    #[arg(long = "model", value_name = "ALIAS")]
    pub models: Vec<String>,
    /// Every model in the config
    #[arg(long, conflicts_with = "models")]
    pub all_models: bool,
}

/// Arguments of `papersys backlog`.
#[derive(Debug, Args)]
pub struct BacklogArgs {
    #[command(flatten)]
    models: ModelSelection,
    /// Ignore cached metadata indexes and read every CSV again
    #[arg(long)]
    no_cache: bool,
}

/// Arguments of `papersys embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    models: ModelSelection,
    /// Embed at most N papers per model, newest first (see backlog_priority)
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Take the work from backlog.parquet (refreshed first when older than the inputs)
    #[arg(long)]
    backlog: bool,
    /// Print the plan only: load no model, write nothing
    #[arg(long)]
    dry_run: bool,
    /// Only these years: 2023,2024 or 2019-2024
    #[arg(long, value_name = "YEARS")]
    years: Option<String>,
    /// Give every selected paper a fresh vector, even a current one
    #[arg(long)]
    reembed: bool,
}

/// What `search` and `similar` share.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Model alias [default: the first model of the config]
    #[arg(long = "model", value_name = "ALIAS")]
    model: Option<String>,
    /// Number of results
    #[arg(short = 'k', long = "top", value_name = "K", default_value_t = 10)]
    k: usize,
    /// Only these years: 2023,2024 or 2019-2024 (applied before ranking)
    #[arg(long, value_name = "YEARS")]
    years: Option<String>,
    /// Only papers with this category (repeatable: any of them; applied before ranking)
    #[arg(long = "category", value_name = "CATEGORY")]
    categories: Vec<String>,
    /// Read the year files directly instead of the vector cache (slower; writes nothing)
    #[arg(long)]
    no_cache: bool,
}

/// Arguments of `papersys search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// The text (several words are joined with spaces)
    #[arg(
        value_name = "TEXT",
        required_unless_present = "queries",
        conflicts_with = "queries"
    )]
    text: Vec<String>,
    /// A file of queries, one per line; prints one JSON line per query
    #[arg(long, value_name = "FILE")]
    queries: Option<PathBuf>,
}

/// Arguments of `papersys similar`.
#[derive(Debug, Args)]
pub struct SimilarArgs {
    #[command(flatten)]
    query: QueryArgs,
    /// Paper ids (several: papers close to their mean)
    #[arg(value_name = "PAPER_ID", required = true)]
    ids: Vec<String>,
}

/// Arguments of `papersys status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Model alias from the config (repeatable) [default: every model]
    #[arg(long = "model", value_name = "ALIAS")]
    models: Vec<String>,
}

/// Arguments of `papersys ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// First day to harvest [default: where the last harvest stopped, else start_date]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<String>,
    /// Last day to harvest, inclusive [default: end_date, else today (UTC)]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub until: Option<String>,
    /// Category or setSpec to harvest, instead of the config's (repeatable): cs.AI, hep-th, math, cs:cs:LG
    #[arg(long = "category", value_name = "C")]
    pub categories: Vec<String>,
    /// Stop after N records
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Ask only the first page of each window; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Import Kaggle's arXiv snapshot (.json, .json.gz or .zip) instead of harvesting
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "until", "limit", "dry_run"])]
    pub snapshot: Option<PathBuf>,
}

/// A command with everything resolved.
pub enum HiArgs {
    /// `papersys backlog`.
    Backlog {
        /// The config.
        config: Config,
        /// Aliases of the chosen models.
        models: Vec<String>,
        /// Refresh options.
        options: RefreshOptions,
    },
    /// `papersys embed`.
    Embed {
        /// The config.
        config: Config,
        /// Aliases of the chosen models.
        models: Vec<String>,
        /// What to embed.
        options: EmbedOptions,
    },
    /// `papersys ingest`.
    Ingest {
        /// The config.
        config: Config,
        /// What to harvest.
        options: commands::ingest::IngestOptions,
    },
    /// `papersys search`.
    Search {
        /// The config.
        config: Config,
        /// Alias of the model.
        model: String,
        /// The text, unless `queries`.
        text: String,
        /// A file of queries.
        queries: Option<PathBuf>,
        /// Results and filters.
        options: QueryOptions,
    },
    /// `papersys similar`.
    Similar {
        /// The config.
        config: Config,
        /// Alias of the model.
        model: String,
        /// The papers.
        ids: Vec<String>,
        /// Results and filters.
        options: QueryOptions,
    },
    /// `papersys status`.
    Status {
        /// The config.
        config: Config,
        /// Aliases of the chosen models.
        models: Vec<String>,
    },
    /// `papersys prefs ...`.
    Prefs {
        /// The config.
        config: Config,
        /// What to do.
        action: PrefsAction,
    },
    /// `papersys recommend`.
    Recommend {
        /// The config.
        config: Config,
        /// What to do.
        options: RecommendOptions,
    },
    /// `papersys update`.
    Update {
        /// The config.
        config: Config,
        /// How the stages run.
        options: commands::update::UpdateOptions,
    },
}

/// A `papersys prefs` action, resolved.
pub enum PrefsAction {
    /// Record `preference` for these ids.
    Add(Vec<String>, Preference),
    /// Import a file.
    Import(PathBuf),
    /// Show the store.
    List,
}

impl HiArgs {
    /// Loads the config and checks the model selection.
    pub fn resolve(low: &LowArgs) -> Result<HiArgs, Error> {
        let config = Config::discover(low.config.as_deref())?;
        let chosen = |selection: &ModelSelection| -> Result<Vec<String>, Error> {
            let models = select_models(&config, &selection.models, selection.all_models, false)?;
            Ok(models.iter().map(|m| m.alias.to_string()).collect())
        };
        Ok(match &low.command {
            CommandArgs::Backlog(args) => HiArgs::Backlog {
                models: chosen(&args.models)?,
                options: RefreshOptions {
                    no_cache: args.no_cache,
                },
                config,
            },
            CommandArgs::Embed(args) => HiArgs::Embed {
                models: chosen(&args.models)?,
                options: EmbedOptions {
                    limit: args.limit,
                    from_backlog: args.backlog,
                    dry_run: args.dry_run,
                    years: args
                        .years
                        .as_deref()
                        .map(parse_years)
                        .transpose()
                        .map_err(Error::Usage)?,
                    reembed: args.reembed,
                    origins: None,
                    progress: if low.quiet || low.json {
                        ProgressMode::Quiet
                    } else {
                        ProgressMode::Auto
                    },
                },
                config,
            },
            CommandArgs::Ingest(args) => HiArgs::Ingest {
                options: commands::ingest::IngestOptions {
                    from: args
                        .from
                        .as_deref()
                        .map(|v| commands::ingest::parse_date_arg("--from", v))
                        .transpose()?,
                    until: args
                        .until
                        .as_deref()
                        .map(|v| commands::ingest::parse_date_arg("--until", v))
                        .transpose()?,
                    categories: commands::ingest::parse_categories(&args.categories)?,
                    limit: args.limit,
                    dry_run: args.dry_run,
                    progress: if low.quiet || low.json {
                        ProgressMode::Quiet
                    } else {
                        ProgressMode::Auto
                    },
                    snapshot: args.snapshot.clone(),
                },
                config,
            },
            CommandArgs::Search(args) => HiArgs::Search {
                model: query_model(&config, &args.query)?,
                text: args.text.join(" "),
                queries: args.queries.clone(),
                options: query_options(&args.query)?,
                config,
            },
            CommandArgs::Similar(args) => HiArgs::Similar {
                model: query_model(&config, &args.query)?,
                ids: args.ids.clone(),
                options: query_options(&args.query)?,
                config,
            },
            CommandArgs::Prefs(args) => HiArgs::Prefs {
                action: match args {
                    PrefsArgs::Add(add) => PrefsAction::Add(
                        add.ids.clone(),
                        if add.like {
                            Preference::Like
                        } else if add.dislike {
                            Preference::Dislike
                        } else {
                            Preference::Neutral
                        },
                    ),
                    PrefsArgs::Import(import) => PrefsAction::Import(import.file.clone()),
                    PrefsArgs::List => PrefsAction::List,
                },
                config,
            },
            CommandArgs::Update => HiArgs::Update {
                options: commands::update::UpdateOptions {
                    progress: if low.quiet || low.json {
                        ProgressMode::Quiet
                    } else {
                        ProgressMode::Auto
                    },
                },
                config,
            },
            CommandArgs::Recommend(args) => HiArgs::Recommend {
                options: RecommendOptions {
                    models: args.models.clone(),
                    window: match (args.last_n_days, args.from, args.until) {
                        (Some(n), _, _) => Some(WindowChoice::LastDays(n)),
                        (None, Some(from), Some(until)) => Some(WindowChoice::Range { from, until }),
                        _ => None,
                    },
                    force_all: args.force_all,
                    dry_run: args.dry_run,
                    today: None,
                },
                config,
            },
            CommandArgs::Status(args) => HiArgs::Status {
                models: select_models(&config, &args.models, false, true)?
                    .iter()
                    .map(|m| m.alias.to_string())
                    .collect(),
                config,
            },
        })
    }
}

fn query_model(config: &Config, args: &QueryArgs) -> Result<String, Error> {
    let aliases: Vec<String> = args.model.iter().cloned().collect();
    let models = select_models(config, &aliases, false, false)?;
    Ok(models.first().map(|m| m.alias.to_string()).unwrap_or_default())
}

fn query_options(args: &QueryArgs) -> Result<QueryOptions, Error> {
    Ok(QueryOptions {
        k: args.k,
        years: args
            .years
            .as_deref()
            .map(parse_years)
            .transpose()
            .map_err(Error::Usage)?,
        categories: args.categories.clone(),
        cache: if args.no_cache {
            CacheMode::Off
        } else {
            CacheMode::ReadWrite
        },
    })
}

fn models_of<'c>(config: &'c Config, aliases: &[String]) -> Vec<&'c ModelConfig> {
    aliases.iter().filter_map(|a| config.model(a)).collect()
}

/// Runs the command and writes its output; returns the exit code.
pub fn run(low: LowArgs) -> Result<i32, Error> {
    let json = low.json;
    let hi = HiArgs::resolve(&low)?;
    let mut out = std::io::stdout().lock();
    let written = match hi {
        HiArgs::Backlog {
            config,
            models,
            options,
        } => {
            let report = commands::backlog::run(&config, &models_of(&config, &models), options)?;
            render::warn_issues(&report.input_issues);
            if json {
                render::json(&mut out, &report)
            } else {
                render::backlog(&mut out, &report)
            }
        }
        HiArgs::Embed {
            config,
            models,
            options,
        } => {
            if !options.dry_run
                && let Err(e) = crate::interrupt::install()
            {
                tracing::warn!("Ctrl-C cannot be handled gracefully ({e}); it ends the run at once");
            }
            let report = commands::embed::run(&config, &models_of(&config, &models), &options)?;
            render::warn_issues(&report.input_issues);
            let written = if json {
                render::json(&mut out, &report)
            } else {
                render::embed(&mut out, &report)
            };
            if let Some(message) = report.interruption() {
                let _ = written.and_then(|()| out.flush());
                eprintln!("{message}");
                return Ok(crate::interrupt::EXIT_INTERRUPTED);
            }
            if report.failed() > 0 {
                let _ = written.and_then(|()| out.flush());
                return Err(Error::Run(format!(
                    "{} papers could not be embedded (the errors are logged above); they wait in the backlog \
                     with reason `embedding_failed` and the next `papersys embed` retries them",
                    report.failed()
                )));
            }
            written
        }
        HiArgs::Ingest { config, options } => {
            let report = commands::ingest::run(&config, &options)?;
            let written = if json {
                render::json(&mut out, &report)
            } else {
                render::ingest(&mut out, &report)
            };
            if let commands::ingest::IngestReport::Harvest(harvest) = &report
                && let Some(failed) = &harvest.failed
            {
                let _ = written.and_then(|()| out.flush());
                return Err(Error::Run(format!(
                    "window {}..{} (set {}) failed: {}. Every window before it is committed; \
                     run `papersys ingest` again to continue from there",
                    failed.from, failed.until, failed.set, failed.error
                )));
            }
            written
        }
        HiArgs::Search {
            config,
            model,
            text,
            queries,
            options,
        } => {
            let model = models_of(&config, std::slice::from_ref(&model));
            let model = model.first().ok_or_else(|| Error::Usage("no model".into()))?;
            match queries {
                Some(path) => {
                    let batch = commands::search::search_batch(&config, model, &path, &options)?;
                    render::json_lines(&mut out, &batch.reports)
                }
                None => {
                    let report = commands::search::search(&config, model, &text, &options)?;
                    if json {
                        render::json(&mut out, &report)
                    } else {
                        render::search(&mut out, &report, render::terminal_width())
                    }
                }
            }
        }
        HiArgs::Similar {
            config,
            model,
            ids,
            options,
        } => {
            let model = models_of(&config, std::slice::from_ref(&model));
            let model = model.first().ok_or_else(|| Error::Usage("no model".into()))?;
            let report = commands::search::similar(&config, model, &ids, &options)?;
            if json {
                render::json(&mut out, &report)
            } else {
                render::search(&mut out, &report, render::terminal_width())
            }
        }
        HiArgs::Prefs { config, action } => match action {
            PrefsAction::List => {
                let report = commands::prefs::list(&config)?;
                render::warn_issues(&report.input_issues);
                if json {
                    render::json(&mut out, &report)
                } else {
                    render::prefs_list(&mut out, &report)
                }
            }
            PrefsAction::Add(ids, preference) => {
                let report = commands::prefs::add(&config, &ids, preference)?;
                if json {
                    render::json(&mut out, &report)
                } else {
                    render::prefs_change(&mut out, &report)
                }
            }
            PrefsAction::Import(file) => {
                let report = commands::prefs::import_file(&config, &file)?;
                if json {
                    render::json(&mut out, &report)
                } else {
                    render::prefs_change(&mut out, &report)
                }
            }
        },
        HiArgs::Recommend { config, options } => {
            let report = commands::recommend::run(&config, &options)?;
            render::warn_issues(&report.input_issues);
            if json {
                render::json(&mut out, &report)
            } else {
                render::recommend(&mut out, &report)
            }
        }
        HiArgs::Update { config, options } => {
            if let Err(e) = crate::interrupt::install() {
                tracing::warn!("Ctrl-C cannot be handled gracefully ({e}); it ends the run at once");
            }
            let outcome = commands::update::run(&config, &options);
            let written = if json {
                render::json(&mut out, &outcome.report)
            } else {
                render::update(&mut out, &outcome.report)
            };
            if let Some(error) = outcome.error {
                let _ = written.and_then(|()| out.flush());
                return Err(error);
            }
            written
        }
        HiArgs::Status { config, models } => {
            let report = commands::status::run(&config, &models_of(&config, &models))?;
            if json {
                render::json(&mut out, &report)
            } else {
                render::status(&mut out, &report)
            }
        }
    };
    // A closed stdout (`papersys status | head`) is not a failure.
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Run(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(EXIT_OK),
    }
}
