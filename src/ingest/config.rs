//! The `[ingestion]` section of the config, typed and checked.
//!
//! The section is shared with the Python original, which has keys papersys
//! does not use (`enabled`, `curated_dir`, ...): unknown keys are accepted,
//! and only a near miss of a known key (`request_intervall`) is warned
//! about (by [`crate::config`], which knows every key papersys reads). A
//! known key with a wrong value is an error naming its line.

use std::path::PathBuf;
use std::time::Duration;

use jiff::civil::Date;
use serde::Deserialize;
use toml::Spanned;

use crate::config::{Config, ConfigError};

/// arXiv's current OAI-PMH endpoint.
pub const DEFAULT_BASE_URL: &str = "https://oaipmh.arxiv.org/oai";

/// The metadata formats papersys can turn into rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MetadataFormat {
    /// `arXiv`: structured authors, `created`/`updated` days.
    #[serde(rename = "arXiv")]
    Arxiv,
    /// `arXivRaw`: every version with its date and time.
    #[serde(rename = "arXivRaw")]
    ArxivRaw,
    /// `oai_dc`: Dublin Core; no category codes (rows carry none).
    #[serde(rename = "oai_dc")]
    OaiDc,
}

impl MetadataFormat {
    /// The `metadataPrefix` value.
    pub fn prefix(self) -> &'static str {
        match self {
            MetadataFormat::Arxiv => "arXiv",
            MetadataFormat::ArxivRaw => "arXivRaw",
            MetadataFormat::OaiDc => "oai_dc",
        }
    }

    /// Parses a `metadataPrefix` (exact spelling, as OAI-PMH compares them).
    pub fn parse(value: &str) -> Option<MetadataFormat> {
        match value {
            "arXiv" => Some(MetadataFormat::Arxiv),
            "arXivRaw" => Some(MetadataFormat::ArxivRaw),
            "oai_dc" => Some(MetadataFormat::OaiDc),
            _ => None,
        }
    }

    /// The `source` column of rows harvested in this format.
    pub fn source(self) -> String {
        format!("papersys.oai-pmh.{}", self.prefix())
    }
}

/// One OAI-PMH set to harvest, with the config value it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSpec {
    /// The setSpec sent to the server (`cs:cs:AI`).
    pub spec: String,
    /// What the config (or `--category`) said (`cs.AI`).
    pub category: String,
}

/// The resolved `[ingestion]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestConfig {
    /// Where the year CSVs and the harvest state live.
    pub metadata_dir: PathBuf,
    /// First day to harvest when there is no state and no `--from`.
    pub start_date: Option<Date>,
    /// Last day to harvest (default: today, UTC).
    pub end_date: Option<Date>,
    /// Records held before a commit inside a window (default: the whole window).
    pub batch_size: Option<usize>,
    /// Retries of one request before its window fails.
    pub max_retries: u32,
    /// First back-off delay; doubles with each retry.
    pub retry_delay: Duration,
    /// The OAI-PMH endpoint.
    pub base_url: String,
    /// The metadata format asked for.
    pub format: MetadataFormat,
    /// Sets to harvest; empty harvests everything.
    pub sets: Vec<SetSpec>,
    /// Keep every page as received under `<metadata_dir>/raw-responses/`.
    pub save_raw_responses: bool,
    /// Least time between two requests (arXiv asks for 3 s).
    pub request_interval: Duration,
    /// Put into the User-Agent (an e-mail or URL).
    pub contact: Option<String>,
    /// Days per harvest window.
    pub window_days: u32,
    /// Longest wait for one complete answer.
    pub request_timeout: Duration,
}

#[derive(Deserialize)]
struct RawFile {
    ingestion: Option<RawIngestion>,
}

#[derive(Deserialize)]
struct RawIngestion {
    start_date: Option<Spanned<String>>,
    end_date: Option<Spanned<String>>,
    batch_size: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    retry_delay: Option<Spanned<f64>>,
    oai_base_url: Option<Spanned<String>>,
    metadata_prefix: Option<Spanned<String>>,
    categories: Option<Spanned<Vec<Spanned<String>>>>,
    save_raw_responses: Option<bool>,
    request_interval: Option<Spanned<f64>>,
    contact: Option<Spanned<String>>,
    window_days: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<f64>>,
}

impl IngestConfig {
    /// Reads `[ingestion]` from the config's text. A missing section gives
    /// the defaults.
    pub fn from_config(config: &Config) -> Result<IngestConfig, ConfigError> {
        let raw: RawFile = toml::from_str(&config.text).map_err(|e| ConfigError::Parse {
            path: config.path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut resolved = IngestConfig {
            metadata_dir: config.metadata_dir.clone(),
            start_date: None,
            end_date: None,
            batch_size: None,
            max_retries: 5,
            retry_delay: Duration::from_secs(5),
            base_url: DEFAULT_BASE_URL.to_string(),
            format: MetadataFormat::Arxiv,
            sets: Vec::new(),
            save_raw_responses: false,
            request_interval: Duration::from_secs(3),
            contact: None,
            window_days: 7,
            request_timeout: Duration::from_secs(120),
        };
        let Some(raw) = raw.ingestion else {
            return Ok(resolved);
        };
        let date = |value: &Spanned<String>, key: &str| -> Result<Option<Date>, ConfigError> {
            let text = value.get_ref().trim();
            if text.is_empty() {
                return Ok(None);
            }
            parse_day(text).map(Some).map_err(|_| {
                config.invalid_at(
                    value.span().start,
                    format!("`{key}` = {text:?} is not a date; write it as YYYY-MM-DD"),
                )
            })
        };
        if let Some(value) = &raw.start_date {
            resolved.start_date = date(value, "start_date")?;
        }
        if let Some(value) = &raw.end_date {
            resolved.end_date = date(value, "end_date")?;
        }
        if let (Some(start), Some(end), Some(value)) = (resolved.start_date, resolved.end_date, &raw.end_date)
            && end < start
        {
            return Err(config.invalid_at(
                value.span().start,
                format!("`end_date` {end} is before `start_date` {start}"),
            ));
        }
        let positive = |value: &Spanned<i64>, key: &str| -> Result<u64, ConfigError> {
            match u64::try_from(*value.get_ref()) {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(config.invalid_at(
                    value.span().start,
                    format!("`{key}` must be a positive integer, got {}", value.get_ref()),
                )),
            }
        };
        let seconds = |value: &Spanned<f64>, key: &str| -> Result<Duration, ConfigError> {
            let v = *value.get_ref();
            if v.is_finite() && (0.0..=86_400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(config.invalid_at(
                    value.span().start,
                    format!("`{key}` must be a number of seconds between 0 and 86400, got {v}"),
                ))
            }
        };
        if let Some(value) = &raw.batch_size {
            resolved.batch_size = Some(positive(value, "batch_size")? as usize);
        }
        if let Some(value) = &raw.max_retries {
            resolved.max_retries = match u32::try_from(*value.get_ref()) {
                Ok(n) if n <= 100 => n,
                _ => {
                    return Err(config.invalid_at(
                        value.span().start,
                        format!("`max_retries` must be between 0 and 100, got {}", value.get_ref()),
                    ));
                }
            };
        }
        if let Some(value) = &raw.retry_delay {
            resolved.retry_delay = seconds(value, "retry_delay")?;
        }
        if let Some(value) = &raw.request_interval {
            resolved.request_interval = seconds(value, "request_interval")?;
        }
        if let Some(value) = &raw.request_timeout {
            resolved.request_timeout = seconds(value, "request_timeout")?;
            if resolved.request_timeout.is_zero() {
                return Err(
                    config.invalid_at(value.span().start, "`request_timeout` must be more than 0".into())
                );
            }
        }
        if let Some(value) = &raw.window_days {
            resolved.window_days = match u32::try_from(*value.get_ref()) {
                Ok(n) if (1..=366).contains(&n) => n,
                _ => {
                    return Err(config.invalid_at(
                        value.span().start,
                        format!("`window_days` must be between 1 and 366, got {}", value.get_ref()),
                    ));
                }
            };
        }
        if let Some(value) = &raw.oai_base_url {
            let url = value.get_ref().trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#', ' ']) {
                return Err(config.invalid_at(
                    value.span().start,
                    format!(
                        "`oai_base_url` = {url:?} is not an http(s) URL without a query; arXiv's is {DEFAULT_BASE_URL:?}"
                    ),
                ));
            }
            resolved.base_url = url.to_string();
        }
        if let Some(value) = &raw.metadata_prefix {
            resolved.format = MetadataFormat::parse(value.get_ref().trim()).ok_or_else(|| {
                config.invalid_at(
                    value.span().start,
                    format!(
                        "`metadata_prefix` = {:?} is not supported; use \"arXiv\" (the default), \"arXivRaw\" \
                         (every version's date) or \"oai_dc\"",
                        value.get_ref()
                    ),
                )
            })?;
        }
        if let Some(list) = &raw.categories {
            for value in list.get_ref() {
                let spec = category_set_spec(value.get_ref()).map_err(|message| {
                    config.invalid_at(value.span().start, format!("`categories`: {message}"))
                })?;
                if !resolved.sets.iter().any(|s| s.spec == spec.spec) {
                    resolved.sets.push(spec);
                }
            }
        }
        if let Some(value) = raw.save_raw_responses {
            resolved.save_raw_responses = value;
        }
        if let Some(value) = &raw.contact {
            let contact = value.get_ref().trim();
            if contact.chars().any(|c| c.is_control()) {
                return Err(config.invalid_at(
                    value.span().start,
                    "`contact` must be one line (it goes into the User-Agent header)".into(),
                ));
            }
            resolved.contact = (!contact.is_empty()).then(|| contact.to_string());
        }
        Ok(resolved)
    }

    /// The configured categories as arXiv category strings (`cs.AI`,
    /// `hep-th`, `math`), for sources that filter rows rather than ask for
    /// sets (the snapshot); a literal setSpec is turned back into its
    /// category (`cs:cs:AI` → `cs.AI`). Empty means every category.
    pub fn category_filters(&self) -> Vec<String> {
        self.sets.iter().map(|s| set_spec_category(&s.spec)).collect()
    }

    /// The User-Agent sent with every request.
    pub fn user_agent(&self) -> String {
        let version = env!("CARGO_PKG_VERSION");
        match &self.contact {
            Some(contact) => format!("papersys/{version} (+{contact})"),
            None => format!("papersys/{version}"),
        }
    }
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<Date, String> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        return Err(format!("{text:?} is not a date; write it as YYYY-MM-DD"));
    }
    text.parse::<Date>()
        .map_err(|e| format!("{text:?} is not a date ({e}); write it as YYYY-MM-DD"))
}

/// Archives of arXiv's `physics` group: their sets are `physics:<archive>`.
const PHYSICS_ARCHIVES: [&str; 13] = [
    "astro-ph", "cond-mat", "gr-qc", "hep-ex", "hep-lat", "hep-ph", "hep-th", "math-ph", "nlin", "nucl-ex",
    "nucl-th", "physics", "quant-ph",
];

/// Groups whose archive has the group's name: their sets are `<group>:<group>:<CAT>`.
const GROUPS: [&str; 8] = ["cs", "econ", "eess", "math", "physics", "q-bio", "q-fin", "stat"];

/// The OAI-PMH set of a category as arXiv names it: `cs.AI` → `cs:cs:AI`,
/// `hep-th` → `physics:hep-th`, `astro-ph.GA` → `physics:astro-ph:GA`,
/// `math` → `math`. A value with a `:` is taken as a literal setSpec.
pub fn category_set_spec(category: &str) -> Result<SetSpec, String> {
    let value = category.trim();
    let make = |spec: String| SetSpec {
        spec,
        category: value.to_string(),
    };
    if value.is_empty() {
        return Err("an empty category".into());
    }
    if value.contains(':') {
        let valid = value.split(':').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        return if valid {
            Ok(make(value.to_string()))
        } else {
            Err(format!(
                "{value:?} is not a setSpec (parts of letters, digits, '-' separated by ':')"
            ))
        };
    }
    let (archive, sub) = match value.split_once('.') {
        Some((archive, sub)) if !sub.is_empty() => (archive, Some(sub)),
        Some(_) => return Err(format!("{value:?} ends with '.'; write e.g. \"cs.AI\"")),
        None => (value, None),
    };
    if let Some(sub) = sub
        && !sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "{value:?} is not an arXiv category (e.g. \"cs.AI\", \"hep-th\", \"math\")"
        ));
    }
    if PHYSICS_ARCHIVES.contains(&archive) && archive != "physics" {
        return Ok(make(match sub {
            Some(sub) => format!("physics:{archive}:{sub}"),
            None => format!("physics:{archive}"),
        }));
    }
    if GROUPS.contains(&archive) {
        return Ok(make(match sub {
            Some(sub) => format!("{archive}:{archive}:{sub}"),
            None => archive.to_string(),
        }));
    }
    Err(format!(
        "{value:?} is not an arXiv category: its archive {archive:?} is none of {}, {}; \
         or write a literal setSpec such as \"cs:cs:AI\"",
        GROUPS.join(", "),
        PHYSICS_ARCHIVES.join(", ")
    ))
}

/// The category a setSpec stands for: `cs:cs:AI` → `cs.AI`,
/// `physics:hep-th` → `hep-th`, `physics:astro-ph:GA` → `astro-ph.GA`,
/// `math` → `math`.
pub fn set_spec_category(spec: &str) -> String {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [_, archive, sub] => format!("{archive}.{sub}"),
        [_, archive] => archive.to_string(),
        _ => spec.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Result<IngestConfig, ConfigError> {
        let config = Config::parse(text, Path::new("/cfg/papersys.toml")).unwrap();
        IngestConfig::from_config(&config)
    }

    #[test]
    fn categories_map_to_arxiv_sets() {
        let spec = |c: &str| category_set_spec(c).unwrap().spec;
        assert_eq!(spec("cs.AI"), "cs:cs:AI");
        assert_eq!(spec("hep-th"), "physics:hep-th");
        assert_eq!(spec("math"), "math");
        assert_eq!(spec("math.AG"), "math:math:AG");
        assert_eq!(spec("astro-ph.GA"), "physics:astro-ph:GA");
        assert_eq!(spec("cond-mat.str-el"), "physics:cond-mat:str-el");
        assert_eq!(spec("physics.optics"), "physics:physics:optics");
        assert_eq!(spec("q-bio.GN"), "q-bio:q-bio:GN");
        assert_eq!(spec("physics"), "physics");
        assert_eq!(spec("cs:cs:LG"), "cs:cs:LG");
        assert!(
            category_set_spec("foo.BAR")
                .unwrap_err()
                .contains("not an arXiv category")
        );
        assert!(category_set_spec("cs.").is_err());
        assert!(category_set_spec("cs::AI").is_err());
        for category in ["cs.AI", "hep-th", "math", "astro-ph.GA", "physics.optics"] {
            assert_eq!(set_spec_category(&spec(category)), category);
        }
    }

    #[test]
    fn python_keys_keep_their_meaning_and_unknown_keys_pass() {
        let config = load(
            "[ingestion]\nenabled = true\ncurated_dir = \"x\"\noutput_dir = \"meta\"\nstart_date = \"2024-01-01\"\n\
             end_date = \"2024-12-31\"\nbatch_size = 500\nmax_retries = 2\nretry_delay = 0.5\n\
             oai_base_url = \"http://export.arxiv.org/oai2\"\nmetadata_prefix = \"arXivRaw\"\n\
             categories = [\"cs.AI\", \"cs.LG\", \"cs.AI\"]\nsave_raw_responses = true\nrequest_interval = 0\n\
             contact = \"me@example.org\"\nwindow_days = 3\n",
        )
        .unwrap();
        assert_eq!(config.metadata_dir, Path::new("/cfg/meta"));
        assert_eq!(config.start_date, Some(jiff::civil::date(2024, 1, 1)));
        assert_eq!(config.end_date, Some(jiff::civil::date(2024, 12, 31)));
        assert_eq!(config.batch_size, Some(500));
        assert_eq!(config.max_retries, 2);
        assert_eq!(config.retry_delay, Duration::from_millis(500));
        assert_eq!(config.base_url, "http://export.arxiv.org/oai2");
        assert_eq!(config.format, MetadataFormat::ArxivRaw);
        let specs: Vec<_> = config.sets.iter().map(|s| s.spec.as_str()).collect();
        assert_eq!(specs, ["cs:cs:AI", "cs:cs:LG"]);
        assert!(config.save_raw_responses);
        assert_eq!(config.request_interval, Duration::ZERO);
        assert_eq!(config.window_days, 3);
        assert_eq!(
            config.user_agent(),
            format!("papersys/{} (+me@example.org)", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn defaults_without_a_section() {
        let config = load("data_root = \"/d\"\n").unwrap();
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.format, MetadataFormat::Arxiv);
        assert_eq!(config.request_interval, Duration::from_secs(3));
        assert_eq!(config.window_days, 7);
        assert!(config.sets.is_empty() && config.start_date.is_none());
    }

    #[test]
    fn bad_values_name_their_line() {
        let cases = [
            ("metadata_prefix = \"marc\"", "not supported"),
            ("start_date = \"2024/01/01\"", "YYYY-MM-DD"),
            ("categories = [\"cs.AI\", \"bogus.X\"]", "not an arXiv category"),
            ("request_interval = -1", "between 0 and 86400"),
            ("window_days = 0", "between 1 and 366"),
            ("oai_base_url = \"ftp://x\"", "http(s) URL"),
        ];
        for (line, expected) in cases {
            let err = load(&format!("[ingestion]\noutput_dir = \"m\"\n{line}\n")).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("papersys.toml:3:"), "{line}: {message}");
            assert!(message.contains(expected), "{line}: {message}");
        }
    }
}
