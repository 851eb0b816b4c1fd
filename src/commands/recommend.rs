//! `papersys recommend`: train on the preferences, score the papers of a
//! date window, pick the ones to show, and write the run.

use std::collections::HashSet;
use std::path::PathBuf;

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;

use super::{IssueReport, unique_issues};
use crate::config::{Alias, Config};
use crate::error::Error;
use crate::metadata::{self, InputIssue};
use crate::prefs::{PrefStore, Preference};
use crate::recommend::config::RecommendConfig;
use crate::recommend::features::{self, AliasSource, Wanted};
use crate::recommend::output::{self, FileNames, RunFiles, Scored, TrainingRow};
use crate::recommend::{RecommendError, logreg, papers, select};

/// Gradient norm at which L-BFGS stops: well below scikit-learn's default
/// `tol` (1e-4), so the solution is the optimum's to many digits.
const TOLERANCE: f64 = 1e-7;

/// Which dates are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowChoice {
    /// The last N days up to today (UTC), and anything dated later.
    LastDays(u32),
    /// From one date to another, both included.
    Range {
        /// First date.
        from: Date,
        /// Last date.
        until: Date,
    },
}

/// What `papersys recommend` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct RecommendOptions {
    /// Model aliases whose vectors are concatenated; empty: the config's `embedding_columns`.
    pub models: Vec<String>,
    /// The window; `None`: the config's (`start_date`/`end_date`, else `last_n_days`).
    pub window: Option<WindowChoice>,
    /// Show every candidate instead of a sample.
    pub force_all: bool,
    /// Compute everything, write nothing.
    pub dry_run: bool,
    /// "Today" for `LastDays`; `None`: the current UTC date.
    pub today: Option<Date>,
}

/// The dates a run scored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First date, included.
    pub from: String,
    /// Last date, included; `None`: open-ended.
    pub until: Option<String>,
    /// In words.
    pub description: String,
}

/// A model whose vectors fed the run.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSource {
    /// Alias.
    pub alias: String,
    /// Its directory.
    pub dir: String,
    /// Vector length.
    pub dimension: usize,
    /// Year files read.
    pub files: usize,
    /// The model that made the vectors (from its manifest), when recorded.
    pub model_identity: Option<serde_json::Value>,
}

/// Counts of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Likes recorded (current preference).
    pub likes: usize,
    /// Dislikes recorded.
    pub dislikes: usize,
    /// Neutral (seen, not learned from, not recommended).
    pub neutral: usize,
    /// Likes with vectors: the positives.
    pub likes_used: usize,
    /// Dislikes with vectors.
    pub dislikes_used: usize,
    /// Rated papers left out: no vector in some model.
    pub rated_without_vectors: usize,
    /// Rated papers left out: a null or non-finite value.
    pub rated_non_finite: usize,
    /// Papers eligible as background (categories, years, not rated).
    pub background_eligible: usize,
    /// Of those, with usable vectors.
    pub background_usable: u64,
    /// Background negatives drawn.
    pub background_sampled: usize,
    /// Candidates in the window (categories, not rated).
    pub candidates: usize,
    /// Candidates left out: no vector in some model.
    pub candidates_without_vectors: usize,
    /// Candidates left out: a null or non-finite value.
    pub candidates_non_finite: usize,
    /// Candidates scored.
    pub scored: usize,
    /// Candidates shown.
    pub recommended: usize,
}

/// The model fitted.
#[derive(Clone, Debug, Serialize)]
pub struct Training {
    /// Positives.
    pub positives: usize,
    /// Negatives (dislikes + background).
    pub negatives: usize,
    /// `C`.
    pub c: f64,
    /// `max_iter`.
    pub max_iter: u64,
    /// Iterations taken.
    pub iterations: u64,
    /// False when `max_iter` ran out.
    pub converged: bool,
    /// Seed.
    pub seed: u64,
    /// Background papers per like.
    pub bg_sample_rate: f64,
}

/// One shown paper.
#[derive(Clone, Debug, Serialize)]
pub struct Pick {
    /// arXiv id.
    pub id: String,
    /// Title (one line).
    pub title: String,
    /// Authors, `;`-joined.
    pub authors: String,
    /// Categories, `;`-joined.
    pub categories: String,
    /// Date (updated, else published).
    pub date: String,
    /// Probability of a like.
    pub score: f64,
}

/// What `papersys recommend` did.
#[derive(Clone, Debug, Serialize)]
pub struct RecommendReport {
    /// The run's id (its directory name); `None` for a dry run.
    pub run_id: Option<String>,
    /// The run's directory; `None` for a dry run.
    pub run_dir: Option<String>,
    /// Nothing was written.
    pub dry_run: bool,
    /// Every candidate shown.
    pub force_all: bool,
    /// The dates scored.
    pub window: Window,
    /// Thresholds of the selection.
    pub thresholds: serde_json::Value,
    /// Models used, in feature order.
    pub models: Vec<ModelSource>,
    /// Counts.
    pub counts: Counts,
    /// The fitted model.
    pub training: Training,
    /// Shown papers, best first.
    pub recommended: Vec<Pick>,
    /// Warnings (config near-misses, an unconverged solver).
    pub warnings: Vec<String>,
    /// Bad rows of the preference and metadata files.
    pub input_issues: Vec<IssueReport>,
}

impl WindowChoice {
    fn resolve(self, today: Date) -> Result<Window, Error> {
        Ok(match self {
            WindowChoice::LastDays(n) => {
                let from = today
                    .checked_sub(i64::from(n).days())
                    .map_err(|e| Error::Usage(format!("--last-n-days {n}: {e}")))?;
                Window {
                    from: from.to_string(),
                    until: None,
                    description: format!("the last {n} days (since {from})"),
                }
            }
            WindowChoice::Range { from, until } => {
                if from > until {
                    return Err(Error::Usage(format!("--from {from} is after --until {until}")));
                }
                Window {
                    from: from.to_string(),
                    until: Some(until.to_string()),
                    description: format!("{from} to {until}"),
                }
            }
        })
    }
}

fn rec_err(e: impl Into<RecommendError>) -> Error {
    Error::Recommend(e.into())
}

/// Runs the recommender.
pub fn run(config: &Config, options: &RecommendOptions) -> Result<RecommendReport, Error> {
    let rc = RecommendConfig::from_config(config)?;
    for warning in &rc.warnings {
        tracing::warn!("{warning}");
    }
    let aliases: Vec<Alias> = if options.models.is_empty() {
        rc.embedding_columns.clone()
    } else {
        let mut out: Vec<Alias> = Vec::new();
        for name in &options.models {
            let alias = Alias::parse(name).map_err(|e| Error::Usage(format!("--model {name}: {e}")))?;
            if !out.contains(&alias) {
                out.push(alias);
            }
        }
        out
    };
    if aliases.is_empty() {
        return Err(Error::Usage(format!(
            "no model to read vectors from: {} defines no [[embedding.models]] and no \
             `recommend_pipeline.data.embedding_columns`",
            config.path.display()
        )));
    }
    let today = options
        .today
        .unwrap_or_else(|| Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date());
    let choice = options.window.unwrap_or(match (rc.start_date, rc.end_date) {
        (Some(from), Some(until)) => WindowChoice::Range { from, until },
        _ => WindowChoice::LastDays(rc.last_n_days),
    });
    let window = choice.resolve(today)?;
    let (from, until) = match choice {
        WindowChoice::Range { from, until } => (from, Some(until)),
        WindowChoice::LastDays(_) => (
            window
                .from
                .parse()
                .map_err(|_| Error::Usage("bad window".into()))?,
            None,
        ),
    };

    // Preferences.
    let store = PrefStore::new(rc.preference_dir.clone());
    let log = store.load().map_err(rec_err)?;
    let mut issues: Vec<InputIssue> = log.issues.clone();
    let current = log.current();
    let with = |p: Preference| -> Vec<String> {
        current
            .iter()
            .filter(|(_, (q, _))| *q == p)
            .map(|(id, _)| id.clone())
            .collect()
    };
    let (likes, dislikes) = (with(Preference::Like), with(Preference::Dislike));
    let mut counts = Counts {
        likes: likes.len(),
        dislikes: dislikes.len(),
        neutral: with(Preference::Neutral).len(),
        ..Counts::default()
    };
    if likes.is_empty() {
        return Err(rec_err(RecommendError::NoLikes {
            dir: rc.preference_dir.clone(),
        }));
    }
    let sources: Vec<AliasSource> = aliases
        .iter()
        .map(|alias| {
            let configured = config.model(alias.as_str()).map(|m| m.dimension);
            AliasSource::open(alias.clone(), config.model_dir(alias), configured)
        })
        .collect::<Result<_, _>>()
        .map_err(rec_err)?;

    // Metadata: candidates and the background, the last row of a paper winning.
    let categories: HashSet<&str> = rc.categories.iter().map(String::as_str).collect();
    let discovery = metadata::discover(&config.metadata_dir, &config.data_root)?;
    issues.extend(discovery.issues.iter().cloned());
    let rated = |id: &str| current.contains_key(id);
    let criteria = papers::Criteria {
        categories: &categories,
        rated: &rated,
        from,
        until,
        background_start_year: rc.background_start_year,
    };
    let started = std::time::Instant::now();
    let papers::Papers {
        candidates,
        background,
        window: window_papers,
    } = papers::scan(&discovery.files, &criteria, &mut issues);
    tracing::info!(
        "read {} metadata files in {:.2} s: {} candidates, {} background papers eligible",
        discovery.files.len(),
        started.elapsed().as_secs_f64(),
        candidates.len(),
        background.len()
    );
    counts.background_eligible = background.len();
    counts.candidates = candidates.len();
    let categories_text = if rc.categories.is_empty() {
        "(any)".to_string()
    } else {
        rc.categories.join(", ")
    };
    let no_candidates = |without_vectors: usize| {
        rec_err(RecommendError::NoCandidates {
            window: window.description.clone(),
            in_window: window_papers.len(),
            in_categories: window_papers.values().filter(|(c, _)| *c).count(),
            rated: window_papers.values().filter(|(c, r)| *c && *r).count(),
            without_vectors,
            categories: categories_text.clone(),
        })
    };
    if candidates.is_empty() {
        return Err(no_candidates(0));
    }

    // Vectors.
    let mut fixed: HashSet<String> = likes.iter().chain(&dislikes).cloned().collect();
    fixed.extend(candidates.keys().cloned());
    let wanted = Wanted {
        fixed: &fixed,
        background: &background,
        background_max: select::background_target(rc.bg_sample_rate, likes.len()),
        seed: rc.seed,
    };
    tracing::info!(
        "reading vectors of {} models for {} rated papers and {} candidates ({} background papers eligible)",
        sources.len(),
        likes.len() + dislikes.len(),
        candidates.len(),
        background.len()
    );
    let features = features::load(&sources, &wanted).map_err(rec_err)?;
    let usable = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|id| features.fixed.contains_key(*id))
            .cloned()
            .collect()
    };
    let (likes_used, dislikes_used) = (usable(&likes), usable(&dislikes));
    for id in likes.iter().chain(&dislikes) {
        if features.invalid.contains(id) {
            counts.rated_non_finite += 1;
        } else if !features.fixed.contains_key(id) {
            counts.rated_without_vectors += 1;
        }
    }
    counts.likes_used = likes_used.len();
    counts.dislikes_used = dislikes_used.len();
    counts.background_usable = features.background_usable;
    if likes_used.is_empty() {
        return Err(rec_err(RecommendError::LikesWithoutVectors {
            likes: likes.len(),
            models: aliases.iter().map(Alias::as_str).collect::<Vec<_>>().join(", "),
        }));
    }
    let target = select::background_target(rc.bg_sample_rate, likes_used.len());
    let mut sampled: Vec<&(String, Vec<f32>)> = features.background.iter().take(target).collect();
    sampled.sort_by(|a, b| a.0.cmp(&b.0));
    counts.background_sampled = sampled.len();

    // Training set: likes, dislikes, background, each by id.
    let dim = features.dimension;
    let mut training: Vec<TrainingRow> = Vec::new();
    let mut x: Vec<f32> = Vec::new();
    for (ids, label, kind) in [(&likes_used, 1, "like"), (&dislikes_used, 0, "dislike")] {
        for id in ids {
            x.extend_from_slice(&features.fixed[id]);
            training.push(TrainingRow {
                paper_id: id.clone(),
                label,
                kind,
            });
        }
    }
    for (id, vector) in &sampled {
        x.extend_from_slice(vector);
        training.push(TrainingRow {
            paper_id: id.clone(),
            label: 0,
            kind: "background",
        });
    }
    let labels: Vec<bool> = training.iter().map(|r| r.label == 1).collect();
    if labels.iter().all(|l| *l) {
        return Err(rec_err(RecommendError::SingleClass {
            likes: likes_used.len(),
            categories: categories_text,
            since: rc.background_start_year,
        }));
    }
    tracing::info!(
        "training on {} likes, {} dislikes, {} background papers ({} features)",
        likes_used.len(),
        dislikes_used.len(),
        sampled.len(),
        dim
    );
    let model = logreg::fit(&x, dim, &labels, rc.c, rc.max_iter, TOLERANCE).map_err(rec_err)?;
    let mut warnings = rc.warnings.clone();
    if !model.converged {
        let message = format!(
            "the solver did not converge within max_iter = {} iterations; raise \
             `recommend_pipeline.trainer.logistic_regression.max_iter`",
            rc.max_iter
        );
        tracing::warn!("{message}");
        warnings.push(message);
    }

    // Scores and the selection, over candidates in id order.
    let mut ids: Vec<&String> = candidates.keys().collect();
    ids.sort();
    let mut scored: Vec<Scored> = Vec::new();
    for id in ids {
        match features.fixed.get(id) {
            Some(vector) => scored.push(Scored {
                record: candidates[id].clone(),
                score: model.probability(vector),
                show: false,
            }),
            None if features.invalid.contains(id) => counts.candidates_non_finite += 1,
            None => counts.candidates_without_vectors += 1,
        }
    }
    if scored.is_empty() {
        return Err(no_candidates(
            counts.candidates_without_vectors + counts.candidates_non_finite,
        ));
    }
    let scores: Vec<f64> = scored.iter().map(|s| s.score).collect();
    let show = if options.force_all {
        vec![true; scores.len()]
    } else {
        select::adaptive_sample(
            &scores,
            rc.sample_rate,
            rc.high_threshold,
            rc.boundary_threshold,
            rc.seed,
        )
    };
    for (s, flag) in scored.iter_mut().zip(show) {
        s.show = flag;
    }
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.record.paper_id.cmp(&b.record.paper_id))
    });
    counts.scored = scored.len();
    counts.recommended = scored.iter().filter(|s| s.show).count();

    let one_line = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let recommended: Vec<Pick> = scored
        .iter()
        .filter(|s| s.show)
        .map(|s| Pick {
            id: s.record.paper_id.clone(),
            title: one_line(&s.record.title),
            authors: s.record.authors.clone(),
            categories: s.record.categories.clone(),
            date: s
                .record
                .effective_date()
                .get(..10)
                .unwrap_or_default()
                .to_string(),
            score: s.score,
        })
        .collect();
    let models: Vec<ModelSource> = sources
        .iter()
        .map(|s| ModelSource {
            alias: s.alias.to_string(),
            dir: s.dir.display().to_string(),
            dimension: s.dimension,
            files: s.files.len(),
            model_identity: s
                .manifest
                .as_ref()
                .and_then(|m| m.model_identity.as_ref())
                .and_then(|i| serde_json::to_value(i).ok()),
        })
        .collect();
    let mut report = RecommendReport {
        run_id: None,
        run_dir: None,
        dry_run: options.dry_run,
        force_all: options.force_all,
        window,
        thresholds: serde_json::json!({
            "high": rc.high_threshold,
            "boundary": rc.boundary_threshold,
            "sample_rate": rc.sample_rate,
            "last_n_days": rc.last_n_days,
            "start_date": rc.start_date.map(|d| d.to_string()).unwrap_or_default(),
            "end_date": rc.end_date.map(|d| d.to_string()).unwrap_or_default(),
        }),
        models,
        counts,
        training: Training {
            positives: likes_used.len(),
            negatives: training.len() - likes_used.len(),
            c: rc.c,
            max_iter: rc.max_iter,
            iterations: model.iterations,
            converged: model.converged,
            seed: rc.seed,
            bg_sample_rate: rc.bg_sample_rate,
        },
        recommended,
        warnings,
        input_issues: unique_issues(issues),
    };
    if options.dry_run {
        return Ok(report);
    }

    let now = Timestamp::now();
    let base = now.strftime("%Y%m%d-%H%M%S").to_string();
    let run_id = output::unique_run_id(&rc.output_dir, &base);
    let names = FileNames {
        predictions: rc.output_path.clone(),
        recommended: rc.recommended_path.clone(),
        manifest: rc.manifest_path.clone(),
    };
    let manifest = serde_json::json!({
        "run_id": run_id,
        "generated_at": crate::store::manifest::now_iso(),
        "force_include_all": options.force_all,
        "window": report.window,
        "counts": report.counts,
        "thresholds": report.thresholds,
        "training": report.training,
        "data_sources": {
            "categories": rc.categories,
            "embedding_columns": aliases.iter().map(Alias::as_str).collect::<Vec<_>>(),
            "preference_dir": rc.preference_dir.display().to_string(),
            "metadata_dir": config.metadata_dir.display().to_string(),
            "embeddings_root": config.embeddings_dir.display().to_string(),
            "background_start_year": rc.background_start_year,
            "metadata_files": discovery.files.iter().map(|f| f.origin.clone()).collect::<Vec<_>>(),
        },
        "models": report.models,
        "files": {
            "predictions": names.predictions,
            "recommended": names.recommended,
            "training": output::TRAINING_FILE,
            "digest": output::DIGEST_FILE,
        },
        "warnings": report.warnings,
        "source": "papersys.recommend",
    });
    let title = format!(
        "papersys recommendations {run_id} ({})",
        report.window.description
    );
    let dir: PathBuf = output::write_run(
        &rc.output_dir,
        &run_id,
        &RunFiles {
            predictions: &scored,
            training: &training,
            manifest: &manifest,
            title: &title,
            names: &names,
        },
    )
    .map_err(|source| {
        rec_err(RecommendError::Write {
            dir: rc.output_dir.clone(),
            source,
        })
    })?;
    report.run_id = Some(run_id);
    report.run_dir = Some(dir.display().to_string());
    Ok(report)
}
