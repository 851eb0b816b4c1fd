//! `[recommend_pipeline]`: the Python original's keys, parsed from
//! [`Config::text`] with spans so that a bad value is reported as
//! `file:line`. The file is shared with the rest of the pipeline, so keys
//! papersys does not know are not errors; a key that looks like a
//! misspelt known one is warned about.

use std::path::{Path, PathBuf};

use jiff::civil::Date;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{Alias, Config, ConfigError};

/// The original's default categories.
const DEFAULT_CATEGORIES: [&str; 7] = ["cs.CL", "cs.CV", "cs.AI", "cs.LG", "stat.ML", "cs.IR", "cs.CY"];

/// The resolved `[recommend_pipeline]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendConfig {
    /// Categories a candidate or background paper must have one of; empty: any.
    pub categories: Vec<String>,
    /// Model aliases whose vectors are concatenated, in this order.
    pub embedding_columns: Vec<Alias>,
    /// The preference store.
    pub preference_dir: PathBuf,
    /// Background papers are drawn from years >= this (of their date).
    pub background_start_year: i32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Background papers drawn per like.
    pub bg_sample_rate: f64,
    /// Inverse L2 regularisation strength.
    pub c: f64,
    /// L-BFGS iterations at most.
    pub max_iter: u64,
    /// Default window: the last N days.
    pub last_n_days: u32,
    /// Configured window (both or neither).
    pub start_date: Option<Date>,
    /// Configured window end (inclusive).
    pub end_date: Option<Date>,
    /// Scores at or above are recommended first.
    pub high_threshold: f64,
    /// Scores in [boundary, high) are drawn weighted by score.
    pub boundary_threshold: f64,
    /// Share of the candidates to show.
    pub sample_rate: f64,
    /// Parent of the run directories.
    pub output_dir: PathBuf,
    /// File name of the scored candidates.
    pub output_path: String,
    /// File name of the recommended subset.
    pub recommended_path: String,
    /// File name of the run manifest.
    pub manifest_path: String,
    /// Warnings about the section (near-miss keys, ignored keys).
    pub warnings: Vec<String>,
}

#[derive(Default, Deserialize)]
struct RawRoot {
    recommend_pipeline: Option<RawSection>,
}

#[derive(Default, Deserialize)]
struct RawSection {
    data: Option<RawData>,
    trainer: Option<RawTrainer>,
    predict: Option<RawPredict>,
}

#[derive(Default, Deserialize)]
struct RawData {
    categories: Option<Spanned<Vec<String>>>,
    embedding_columns: Option<Spanned<Vec<String>>>,
    preference_dir: Option<Spanned<String>>,
    metadata_dir: Option<Spanned<String>>,
    embeddings_root: Option<Spanned<String>>,
    background_start_year: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
struct RawTrainer {
    seed: Option<Spanned<i64>>,
    bg_sample_rate: Option<Spanned<f64>>,
    logistic_regression: Option<RawLogistic>,
}

#[derive(Default, Deserialize)]
struct RawLogistic {
    #[serde(rename = "C")]
    c: Option<Spanned<f64>>,
    max_iter: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
struct RawPredict {
    last_n_days: Option<Spanned<i64>>,
    start_date: Option<Spanned<String>>,
    end_date: Option<Spanned<String>>,
    high_threshold: Option<Spanned<f64>>,
    boundary_threshold: Option<Spanned<f64>>,
    sample_rate: Option<Spanned<f64>>,
    output_dir: Option<Spanned<String>>,
    output_path: Option<Spanned<String>>,
    recommended_path: Option<Spanned<String>>,
    manifest_path: Option<Spanned<String>>,
}

/// Every key this section knows, by table (for near-miss warnings).
const KNOWN: [(&str, &[&str]); 5] = [
    ("", &["data", "trainer", "predict"]),
    (
        "data",
        &[
            "categories",
            "embedding_columns",
            "preference_dir",
            "metadata_dir",
            "metadata_pattern",
            "embeddings_root",
            "background_start_year",
            "preference_start_year",
        ],
    ),
    ("trainer", &["seed", "bg_sample_rate", "logistic_regression"]),
    ("trainer.logistic_regression", &["C", "max_iter"]),
    (
        "predict",
        &[
            "last_n_days",
            "start_date",
            "end_date",
            "high_threshold",
            "boundary_threshold",
            "sample_rate",
            "output_dir",
            "output_path",
            "recommended_path",
            "manifest_path",
        ],
    ),
];

impl RecommendConfig {
    /// Parses `[recommend_pipeline]` of `config` (defaults where absent;
    /// `embedding_columns` defaults to the first configured model).
    pub fn from_config(config: &Config) -> Result<RecommendConfig, ConfigError> {
        let root: RawRoot = toml::from_str(&config.text).map_err(|e| ConfigError::Parse {
            path: config.path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let section = root.recommend_pipeline.unwrap_or_default();
        let data = section.data.unwrap_or_default();
        let trainer = section.trainer.unwrap_or_default();
        let logistic = trainer.logistic_regression.unwrap_or_default();
        let predict = section.predict.unwrap_or_default();
        let at = |s: &std::ops::Range<usize>, message: String| config.invalid_at(s.start, message);

        let categories = match &data.categories {
            Some(c) => c
                .get_ref()
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => DEFAULT_CATEGORIES.iter().map(|s| s.to_string()).collect(),
        };
        let embedding_columns = match &data.embedding_columns {
            Some(columns) => {
                if columns.get_ref().is_empty() {
                    return Err(at(
                        &columns.span(),
                        "`recommend_pipeline.data.embedding_columns` is empty; name at least one model alias"
                            .into(),
                    ));
                }
                let mut aliases = Vec::new();
                for name in columns.get_ref() {
                    let alias = Alias::parse(name).map_err(|e| {
                        at(
                            &columns.span(),
                            format!("`embedding_columns` entry {name:?}: {e}"),
                        )
                    })?;
                    if aliases.contains(&alias) {
                        return Err(at(
                            &columns.span(),
                            format!("`embedding_columns` names `{name}` twice"),
                        ));
                    }
                    aliases.push(alias);
                }
                aliases
            }
            None => config.models.iter().take(1).map(|m| m.alias.clone()).collect(),
        };
        let dir =
            |value: &Option<Spanned<String>>, key: &str, default: &str| -> Result<PathBuf, ConfigError> {
                match value {
                None => Ok(config.data_root.join(default)),
                Some(v) => inside_root(config, v.get_ref())
                    .ok_or_else(|| at(&v.span(), format!(
                        "`{key}` = {:?} lies outside data_root {}; papersys only writes inside the data root",
                        v.get_ref(),
                        config.data_root.display()
                    ))),
            }
            };
        let preference_dir = dir(
            &data.preference_dir,
            "recommend_pipeline.data.preference_dir",
            "preferences",
        )?;
        let output_dir = dir(
            &predict.output_dir,
            "recommend_pipeline.predict.output_dir",
            "recommendations",
        )?;
        let mut warnings = Vec::new();
        for (value, key, actual) in [
            (&data.metadata_dir, "metadata_dir", &config.metadata_dir),
            (&data.embeddings_root, "embeddings_root", &config.embeddings_dir),
        ] {
            if let Some(v) = value
                && inside_root(config, v.get_ref()).as_deref() != Some(actual.as_path())
            {
                warnings.push(format!(
                    "{}:{}: `recommend_pipeline.data.{key}` = {:?} is ignored: papersys reads {} (set by [ingestion]/[embedding] output_dir)",
                    config.path.display(),
                    line_of(&config.text, v.span().start),
                    v.get_ref(),
                    actual.display()
                ));
            }
        }
        let background_start_year = match &data.background_start_year {
            None => 2024,
            Some(y) if (1900..=9999).contains(y.get_ref()) => *y.get_ref() as i32,
            Some(y) => {
                return Err(at(
                    &y.span(),
                    format!("`background_start_year` = {} is not a year", y.get_ref()),
                ));
            }
        };
        let seed = match &trainer.seed {
            None => 42,
            Some(s) => u64::try_from(*s.get_ref()).map_err(|_| {
                at(
                    &s.span(),
                    format!("`seed` must be a non-negative integer, got {}", s.get_ref()),
                )
            })?,
        };
        let positive = |value: &Option<Spanned<f64>>, key: &str, default: f64| -> Result<f64, ConfigError> {
            match value {
                None => Ok(default),
                Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => Ok(*v.get_ref()),
                Some(v) => Err(at(
                    &v.span(),
                    format!("`{key}` must be a positive number, got {}", v.get_ref()),
                )),
            }
        };
        let unit = |value: &Option<Spanned<f64>>, key: &str, default: f64| -> Result<f64, ConfigError> {
            match value {
                None => Ok(default),
                Some(v) if (0.0..=1.0).contains(v.get_ref()) => Ok(*v.get_ref()),
                Some(v) => Err(at(
                    &v.span(),
                    format!("`{key}` must lie in [0, 1], got {}", v.get_ref()),
                )),
            }
        };
        let bg_sample_rate = positive(&trainer.bg_sample_rate, "bg_sample_rate", 5.0)?;
        let c = positive(&logistic.c, "C", 1.0)?;
        let max_iter = match &logistic.max_iter {
            None => 1000,
            Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
            Some(n) => {
                return Err(at(
                    &n.span(),
                    format!("`max_iter` must be at least 1, got {}", n.get_ref()),
                ));
            }
        };
        let last_n_days = match &predict.last_n_days {
            None => 7,
            Some(n) if (1..=100_000).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                return Err(at(
                    &n.span(),
                    format!("`last_n_days` must be at least 1, got {}", n.get_ref()),
                ));
            }
        };
        let date = |value: &Option<Spanned<String>>, key: &str| -> Result<Option<Date>, ConfigError> {
            match value {
                Some(v) if !v.get_ref().trim().is_empty() => {
                    v.get_ref().trim().parse::<Date>().map(Some).map_err(|_| {
                        at(
                            &v.span(),
                            format!("`{key}` = {:?} is not a date (YYYY-MM-DD)", v.get_ref()),
                        )
                    })
                }
                _ => Ok(None),
            }
        };
        let start_date = date(&predict.start_date, "start_date")?;
        let end_date = date(&predict.end_date, "end_date")?;
        if let (Some(start), Some(end)) = (start_date, end_date)
            && start > end
            && let Some(v) = &predict.start_date
        {
            return Err(at(
                &v.span(),
                format!("`start_date` {start} is after `end_date` {end}"),
            ));
        }
        if start_date.is_some() != end_date.is_some() {
            let span = predict
                .start_date
                .as_ref()
                .or(predict.end_date.as_ref())
                .map(|v| v.span())
                .unwrap_or(0..0);
            return Err(at(
                &span,
                "set both `start_date` and `end_date`, or neither (then `last_n_days` applies)".into(),
            ));
        }
        let high_threshold = unit(&predict.high_threshold, "high_threshold", 0.85)?;
        let boundary_threshold = unit(&predict.boundary_threshold, "boundary_threshold", 0.6)?;
        if boundary_threshold > high_threshold
            && let Some(v) = &predict.boundary_threshold
        {
            return Err(at(
                &v.span(),
                format!(
                    "`boundary_threshold` {boundary_threshold} is above `high_threshold` {high_threshold}"
                ),
            ));
        }
        let sample_rate = match &predict.sample_rate {
            Some(v) if *v.get_ref() <= 0.0 => {
                return Err(at(
                    &v.span(),
                    format!("`sample_rate` must lie in (0, 1], got {}", v.get_ref()),
                ));
            }
            other => unit(other, "sample_rate", 0.001)?,
        };
        let file = |value: &Option<Spanned<String>>,
                    key: &str,
                    default: &str|
         -> Result<String, ConfigError> {
            match value {
                None => Ok(default.to_string()),
                Some(v) => {
                    let name = v.get_ref().trim().trim_start_matches("./");
                    let plain = !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.');
                    let reserved = ["training.parquet", "recommended.md"].contains(&name);
                    if plain && !reserved {
                        Ok(name.to_string())
                    } else {
                        Err(at(
                            &v.span(),
                            format!(
                                "`{key}` = {:?} must be a plain file name (it is written inside each run's directory), \
                             other than training.parquet and recommended.md",
                                v.get_ref()
                            ),
                        ))
                    }
                }
            }
        };
        let output_path = file(&predict.output_path, "output_path", "predictions.parquet")?;
        let recommended_path = file(
            &predict.recommended_path,
            "recommended_path",
            "recommended.parquet",
        )?;
        let manifest_path = file(&predict.manifest_path, "manifest_path", "manifest.json")?;
        if output_path == recommended_path
            || output_path == manifest_path
            || recommended_path == manifest_path
        {
            let span = predict
                .output_path
                .as_ref()
                .or(predict.recommended_path.as_ref())
                .map(|v| v.span())
                .unwrap_or(0..0);
            return Err(at(
                &span,
                "`output_path`, `recommended_path` and `manifest_path` must differ".into(),
            ));
        }
        warnings.extend(near_misses(config));
        Ok(RecommendConfig {
            categories,
            embedding_columns,
            preference_dir,
            background_start_year,
            seed,
            bg_sample_rate,
            c,
            max_iter,
            last_n_days,
            start_date,
            end_date,
            high_threshold,
            boundary_threshold,
            sample_rate,
            output_dir,
            output_path,
            recommended_path,
            manifest_path,
            warnings,
        })
    }
}

/// `value` resolved against the data root, when it stays inside it.
fn inside_root(config: &Config, value: &str) -> Option<PathBuf> {
    let resolved = crate::config::normalize(&config.data_root.join(Path::new(value.trim())));
    resolved.starts_with(&config.data_root).then_some(resolved)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Unknown keys of the section that are one or two edits from a known key
/// (or equal ignoring case and `-`/`_`).
fn near_misses(config: &Config) -> Vec<String> {
    crate::config::keys_near_miss(&config.text, "recommend_pipeline", &KNOWN)
        .into_iter()
        .map(|miss| match miss.line {
            Some(line) => format!("{}:{line}: {}", config.path.display(), miss.message),
            None => format!("{}: {}", config.path.display(), miss.message),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(section: &str) -> Config {
        let text = format!(
            "data_root = \"/data\"\n[[embedding.models]]\nalias = \"m1\"\nname = \"x\"\ndimension = 4\n{section}"
        );
        Config::parse(&text, Path::new("/etc/papersys.toml")).unwrap()
    }

    #[test]
    fn the_originals_example_section_parses() {
        let c = config(
            r#"
[recommend_pipeline.data]
categories = ["cs.CL", "cs.CV"]
embedding_columns = ["jasper_v1", "conan_v1"]
preference_dir = "./preferences"
metadata_dir = "./metadata"
metadata_pattern = "metadata-*.csv"
embeddings_root = "./embeddings"
background_start_year = 2024
preference_start_year = 2023

[recommend_pipeline.trainer]
seed = 42
bg_sample_rate = 5.0

[recommend_pipeline.trainer.logistic_regression]
C = 1
max_iter = 1000

[recommend_pipeline.predict]
last_n_days = 7
start_date = ""
end_date = ""
high_threshold = 0.85
boundary_threshold = 0.6
sample_rate = 0.001
output_dir = "recommendations"
output_path = "predictions.parquet"
recommended_path = "recommended.parquet"
manifest_path = "manifest.json"
"#,
        );
        let r = RecommendConfig::from_config(&c).unwrap();
        assert_eq!(
            r.embedding_columns.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            ["jasper_v1", "conan_v1"]
        );
        assert_eq!(r.preference_dir, Path::new("/data/preferences"));
        assert_eq!(r.output_dir, Path::new("/data/recommendations"));
        assert_eq!((r.c, r.max_iter, r.seed, r.last_n_days), (1.0, 1000, 42, 7));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn defaults_without_a_section() {
        let r = RecommendConfig::from_config(&config("")).unwrap();
        assert_eq!(r.embedding_columns[0].as_str(), "m1");
        assert_eq!(r.categories.len(), 7);
        assert_eq!(
            (r.high_threshold, r.boundary_threshold, r.sample_rate),
            (0.85, 0.6, 0.001)
        );
    }

    #[test]
    fn bad_values_name_their_line_and_near_misses_warn() {
        let err =
            RecommendConfig::from_config(&config("[recommend_pipeline.predict]\n\nhigh_threshold = 1.5\n"))
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("papersys.toml:8: `high_threshold` must lie in [0, 1]"),
            "{err}"
        );
        let err =
            RecommendConfig::from_config(&config("[recommend_pipeline.predict]\noutput_dir = \"../x\"\n"))
                .unwrap_err();
        assert!(
            err.to_string()
                .contains(":7: `recommend_pipeline.predict.output_dir`"),
            "{err}"
        );
        let err = RecommendConfig::from_config(&config(
            "[recommend_pipeline.predict]\nstart_date = \"2025-01-01\"\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("set both"), "{err}");
        let r = RecommendConfig::from_config(&config(
            "[recommend_pipeline.predict]\nhigh_treshold = 0.9\nsomething_else = 1\n",
        ))
        .unwrap();
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].ends_with(
                ":7: `recommend_pipeline.predict.high_treshold` is not read by papersys; \
                 did you mean `recommend_pipeline.predict.high_threshold`?"
            ),
            "{:?}",
            r.warnings
        );
    }
}
