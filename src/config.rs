//! The config file: its `[embedding]` part, typed and validated.
//!
//! The file is shared with the rest of a paper pipeline (scheduler, backups,
//! recommender, LLMs), so everything outside `data_root`, `[ingestion]` and
//! `[embedding]` is ignored. Inside `[embedding]` and its model tables every
//! key must be known: a typo is reported with its line instead of silently
//! falling back to a default. Parsing happens in two steps, like ripgrep's
//! flags: `Raw*` structs mirror the TOML with spans, then [`Config`] holds
//! resolved, checked values the rest of the program can trust. A model
//! table's backend-specific keys are parsed by the backend crates' own
//! types (`NativeTable`, `RemoteTable`; see `config/model.rs`): this module
//! keeps the spans, the aliases and the secrets.

mod model;
mod near_miss;

/// The key a stage reads that `key` is likely a typo of (see
/// `near_miss::suggestion`): one rule for every section's "did you mean".
pub fn suggest_key<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    near_miss::suggestion(key, known)
}

/// The near-misses among the keys of a section papersys shares with other
/// tools, with their lines (see `near_miss::in_section`): one check, one
/// wording for `[ingestion]` and `[recommend_pipeline]`.
pub(crate) fn keys_near_miss(
    text: &str,
    section: &str,
    known: &[(&str, &[&str])],
) -> Vec<near_miss::NearMiss> {
    near_miss::in_section(text, section, known)
}

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use papersys_backend_core::Secret;
use serde::Deserialize;
use toml::Spanned;

/// File names tried, in order, when `--config` is not given.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] = ["papersys.toml", "config/papersys.toml"];

/// Why a config could not be used. Every variant names the file, and the
/// line where one is known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No config file at any default location.
    #[error(
        "no config file found (tried {}); pass --config PATH or create papersys.toml (see examples/papersys.toml)",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// Every path that was looked at.
        tried: Vec<PathBuf>,
    },
    /// The file exists but cannot be read.
    #[error("cannot read config {}: {source}", .path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax or type error; the message from the TOML parser carries
    /// line, column and the offending text.
    #[error("invalid config {}: {message}", .path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{}:{line}: {message}", .path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// What is wrong and what to do.
        message: String,
    },
    /// An `env:NAME` value whose variable is not set.
    #[error(
        "`{key}` of model `{alias}` reads environment variable {var}, which is not set; export it or change the config"
    )]
    MissingEnv {
        /// Config key, e.g. `api_key`.
        key: &'static str,
        /// Model alias.
        alias: String,
        /// Variable name.
        var: String,
    },
}

/// Which papers of the backlog go first when a run is capped with `--limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BacklogPriority {
    /// Newest year first, newest ids first within a year.
    RecentFirst,
    /// Oldest year first, oldest ids first.
    OldestFirst,
}

/// A model alias: a directory name under the embeddings directory.
///
/// Validated so that it can never steer a write outside its directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Alias(String);

impl Alias {
    /// Checks the contract's rule: letters, digits, `_`, `-`, `.`; not `.`
    /// or `..`; not empty.
    pub fn parse(value: &str) -> Result<Alias, String> {
        if value.is_empty() {
            return Err("model alias is empty".into());
        }
        if value == "." || value == ".." {
            return Err(format!("model alias {value:?} is not allowed"));
        }
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "model alias {value:?} contains {bad:?}; use only letters, digits, '_', '-' and '.'"
            ));
        }
        Ok(Alias(value.to_string()))
    }

    /// The alias as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Alias {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a credential comes from. Resolved only when a backend is built, so
/// commands that do not talk to a server never need the variable set.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `env:NAME`: read variable `NAME` when used.
    Env(String),
    /// The value written in the file.
    Literal(Secret),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "env:{var}"),
            SecretSource::Literal(_) => f.write_str("***"),
        }
    }
}

impl SecretSource {
    fn parse(value: &str) -> SecretSource {
        match value.strip_prefix("env:") {
            Some(var) => SecretSource::Env(var.trim().to_string()),
            None => SecretSource::Literal(Secret::new(value)),
        }
    }

    /// Reads the credential (from the environment for `env:NAME`).
    pub fn resolve(&self, key: &'static str, alias: &Alias) -> Result<Secret, ConfigError> {
        match self {
            SecretSource::Literal(secret) => Ok(secret.clone()),
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                _ => Err(ConfigError::MissingEnv {
                    key,
                    alias: alias.to_string(),
                    var: var.clone(),
                }),
            },
        }
    }
}

/// A server backend's settings: its typed keys (owned by the remote
/// backend crate) and the credential, which only this module handles.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteConfig {
    /// The protocol name the config used (`openai`, `vllm`, `tei`, ...),
    /// kept for messages.
    pub flavor: String,
    /// The server keys of the table, parsed by the remote backend.
    pub table: papersys_backend_remote::RemoteTable,
    /// Bearer token.
    pub api_key: Option<SecretSource>,
}

/// Which engine computes a model's vectors, with the keys of the table only
/// that engine reads (parsed by its crate).
#[derive(Clone, Debug, PartialEq)]
pub enum BackendConfig {
    /// The native engine (`backend = "sentence_transformer"`, the default).
    Native(papersys_backend_native::NativeTable),
    /// A server speaking the OpenAI embeddings protocol.
    Remote(RemoteConfig),
}

/// One `[[embedding.models]]` table, resolved. The keys every backend
/// shares are here; the rest live in [`ModelConfig::backend`].
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Directory name of the model's store.
    pub alias: Alias,
    /// Model id (hub name) or served model name.
    pub name: String,
    /// Vector length the store expects.
    pub dimension: usize,
    /// Texts per batch.
    pub batch_size: usize,
    /// Explicit document prefix; `None` lets the model's own config decide.
    pub document_prefix: Option<String>,
    /// Engine and its settings.
    pub backend: BackendConfig,
    /// Line of the model table in the config file, for messages.
    pub line: usize,
    /// Where each key of the table was written, for errors found only when
    /// the model is loaded (a `model_path` that does not exist).
    pub spans: TableSpans,
}

/// The file and the line of every key of one model table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSpans {
    /// The config file.
    pub path: PathBuf,
    /// Line of the table's header.
    pub line: usize,
    /// Line of each key written in the table.
    pub keys: BTreeMap<String, usize>,
}

impl ModelConfig {
    /// A [`ConfigError::Invalid`] about `key` of this model's table, at the
    /// key's line (the table's when the key is not written there).
    pub fn invalid_key(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.spans.path.clone(),
            line: self.spans.keys.get(key).copied().unwrap_or(self.spans.line),
            message: format!("model `{}`: `{key}`: {message}", self.alias),
        }
    }
}

/// The resolved config: absolute paths, checked values.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The file this came from.
    pub path: PathBuf,
    /// Root of the data tree; every write stays inside it.
    pub data_root: PathBuf,
    /// Where metadata CSVs are read from.
    pub metadata_dir: PathBuf,
    /// Parent of the per-model directories.
    pub embeddings_dir: PathBuf,
    /// `[embedding].enabled`.
    pub enabled: bool,
    /// Order of work under `--limit`.
    pub backlog_priority: BacklogPriority,
    /// Papers between durable commits during a run.
    pub checkpoint_interval: usize,
    /// Models in config order; the first is the default.
    pub models: Vec<ModelConfig>,
    /// The whole file as read: the stages that own other sections
    /// (`[ingestion]`, `[recommend_pipeline]`) parse theirs from it, with
    /// spans for their messages.
    pub text: String,
}

/// Everything but the file's text, which may hold a literal `api_key`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("data_root", &self.data_root)
            .field("metadata_dir", &self.metadata_dir)
            .field("embeddings_dir", &self.embeddings_dir)
            .field("enabled", &self.enabled)
            .field("backlog_priority", &self.backlog_priority)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("models", &self.models)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

impl Config {
    /// Finds and loads the config: `explicit` when given, else the default
    /// paths relative to the working directory.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Config::load(path);
        }
        let tried: Vec<PathBuf> = DEFAULT_CONFIG_PATHS.iter().map(PathBuf::from).collect();
        match tried.iter().find(|p| p.is_file()) {
            Some(path) => Config::load(path),
            None => Err(ConfigError::NotFound { tried }),
        }
    }

    /// Loads and validates one config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let absolute = absolute_path(path);
        Config::parse(&text, &absolute)
    }

    /// Parses config text as if it were read from `path` (which anchors
    /// relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for miss in near_miss::find(text) {
            match miss.line {
                Some(line) => tracing::warn!("{}:{line}: {}", path.display(), miss.message),
                None => tracing::warn!("{}: {}", path.display(), miss.message),
            }
        }
        Resolver { path, text }.resolve(raw)
    }

    /// The model with this alias.
    pub fn model(&self, alias: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.alias.as_str() == alias)
    }

    /// A [`ConfigError::Invalid`] for the value at byte `offset` of
    /// [`Config::text`] (a `toml::Spanned` span start): the stages that
    /// parse their own sections report `file:line: message` like this one.
    pub fn invalid_at(&self, offset: usize, message: String) -> ConfigError {
        Resolver {
            path: &self.path,
            text: &self.text,
        }
        .error_at(offset, message)
    }

    /// The store directory of a model: `<embeddings_dir>/<alias>`.
    pub fn model_dir(&self, alias: &Alias) -> PathBuf {
        self.embeddings_dir.join(alias.as_str())
    }
}

/// `path` made absolute against the working directory, `..` resolved
/// lexically (the file may sit behind a symlink the user meant).
fn absolute_path(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    normalize(&joined)
}

/// Removes `.` and resolves `..` lexically.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[derive(Deserialize)]
struct RawFile {
    data_root: Option<Spanned<String>>,
    ingestion: Option<RawIngestion>,
    embedding: Option<RawEmbedding>,
}

/// `[ingestion]` belongs to another tool; only `output_dir` matters here.
#[derive(Deserialize)]
struct RawIngestion {
    output_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedding {
    enabled: Option<bool>,
    output_dir: Option<Spanned<String>>,
    backlog_priority: Option<Spanned<String>>,
    checkpoint_interval: Option<Spanned<i64>>,
    /// Read from the spanned document by `model::tables`, key by key.
    #[serde(rename = "models")]
    _models: Option<serde::de::IgnoredAny>,
}

struct Resolver<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Resolver<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error_at(&self, offset: usize, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(offset),
            message,
        }
    }

    fn invalid<T>(&self, offset: usize, message: String) -> Result<T, ConfigError> {
        Err(self.error_at(offset, message))
    }

    fn positive(&self, key: &str, value: &Spanned<i64>) -> Result<usize, ConfigError> {
        match usize::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => Ok(n),
            _ => self.invalid(
                value.span().start,
                format!("`{key}` must be a positive integer, got {}", value.get_ref()),
            ),
        }
    }

    fn resolve(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let config_dir = self.path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let data_root = match &raw.data_root {
            Some(root) if root.get_ref().trim().is_empty() => {
                return self.invalid(root.span().start, "`data_root` is empty".into());
            }
            Some(root) => normalize(&config_dir.join(root.get_ref())),
            None => config_dir.clone(),
        };
        let metadata_dir = match raw.ingestion.and_then(|i| i.output_dir) {
            Some(dir) => normalize(&data_root.join(dir.get_ref())),
            None => data_root.join("metadata"),
        };
        let embedding = raw.embedding.unwrap_or(RawEmbedding {
            enabled: None,
            output_dir: None,
            backlog_priority: None,
            checkpoint_interval: None,
            _models: None,
        });
        let embeddings_dir = match &embedding.output_dir {
            Some(dir) => {
                let resolved = normalize(&data_root.join(dir.get_ref()));
                if !resolved.starts_with(&data_root) {
                    return self.invalid(
                        dir.span().start,
                        format!(
                            "`embedding.output_dir` = {:?} lies outside data_root {}; papersys only writes inside the data root",
                            dir.get_ref(),
                            data_root.display()
                        ),
                    );
                }
                resolved
            }
            None => data_root.join("embeddings"),
        };
        let backlog_priority = match &embedding.backlog_priority {
            None => BacklogPriority::RecentFirst,
            Some(p) => {
                match p.get_ref().as_str() {
                    "recent_first" => BacklogPriority::RecentFirst,
                    "oldest_first" => BacklogPriority::OldestFirst,
                    other => {
                        return self.invalid(
                        p.span().start,
                        format!("`backlog_priority` = {other:?}; expected \"recent_first\" or \"oldest_first\""),
                    );
                    }
                }
            }
        };
        let checkpoint_interval = match &embedding.checkpoint_interval {
            None => 1000,
            Some(n) => self.positive("checkpoint_interval", n)?,
        };
        let mut seen = HashSet::new();
        let mut models = Vec::new();
        for table in model::tables(self)? {
            let model = self.model(table, &config_dir)?;
            if !seen.insert(model.alias.clone()) {
                return Err(ConfigError::Invalid {
                    path: self.path.to_path_buf(),
                    line: model.spans.keys.get("alias").copied().unwrap_or(model.line),
                    message: format!(
                        "model alias `{}` is used twice; aliases must be unique",
                        model.alias
                    ),
                });
            }
            models.push(model);
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            data_root,
            metadata_dir,
            embeddings_dir,
            enabled: embedding.enabled.unwrap_or(true),
            backlog_priority,
            checkpoint_interval,
            models,
            text: self.text.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/srv/papers/config/papersys.toml"))
    }

    const MINIMAL: &str = r#"
data_root = "../data"

[embedding]
[[embedding.models]]
alias = "jasper_v1"
name = "sentence-transformers/all-MiniLM-L6-v2"
dimension = 384
"#;

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.data_root, Path::new("/srv/papers/data"));
        assert_eq!(config.metadata_dir, Path::new("/srv/papers/data/metadata"));
        assert_eq!(config.embeddings_dir, Path::new("/srv/papers/data/embeddings"));
        assert_eq!(config.checkpoint_interval, 1000);
        assert_eq!(config.backlog_priority, BacklogPriority::RecentFirst);
        let model = &config.models[0];
        assert_eq!(model.batch_size, 32);
        let BackendConfig::Native(native) = &model.backend else {
            panic!("native by default");
        };
        assert_eq!(native, &papersys_backend_native::NativeTable::default());
    }

    #[test]
    fn missing_data_root_means_the_config_directory() {
        let config = parse("[embedding]\n").unwrap();
        assert_eq!(config.data_root, Path::new("/srv/papers/config"));
        assert!(config.models.is_empty());
    }

    #[test]
    fn ingestion_output_dir_is_the_metadata_directory() {
        let config = parse("data_root = \"/d\"\n[ingestion]\noutput_dir = \"meta\"\nbatch = 3\n").unwrap();
        assert_eq!(config.metadata_dir, Path::new("/d/meta"));
    }

    #[test]
    fn unknown_key_in_a_model_table_names_key_and_line() {
        let text = format!("{MINIMAL}batchsize = 8\n");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("unknown key `batchsize`"), "{message}");
        assert!(message.contains(":9:"), "{message}");
        assert!(message.contains("did you mean `batch_size`?"), "{message}");
    }

    #[test]
    fn unknown_key_in_embedding_is_an_error() {
        let message = parse("[embedding]\ncheckpoint_intervall = 5\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("checkpoint_intervall"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn bad_aliases_are_refused() {
        for alias in ["../x", "a/b", "..", ".", "", "a\\\\b", "é"] {
            let text = MINIMAL.replace("jasper_v1", alias);
            let err = parse(&text).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { line: 6, .. }),
                "{alias}: {err}"
            );
        }
        assert!(Alias::parse("qwen3_v1.2-b").is_ok());
    }

    #[test]
    fn negative_and_zero_numbers_name_the_key() {
        let message = parse(&format!("{MINIMAL}batch_size = -4\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`batch_size` must be a positive integer, got -4"),
            "{message}"
        );
        assert!(message.contains(":9:"), "{message}");
        let message = parse(&MINIMAL.replace("384", "0")).unwrap_err().to_string();
        assert!(message.contains("`dimension`"), "{message}");
    }

    #[test]
    fn wrong_type_is_reported_by_the_parser_with_its_line() {
        let message = parse(&MINIMAL.replace("384", "\"384\"")).unwrap_err().to_string();
        assert!(
            message.contains(":8:") && message.contains("`dimension`"),
            "{message}"
        );
    }

    #[test]
    fn output_dir_escaping_the_data_root_is_refused() {
        let text = MINIMAL.replace("[embedding]", "[embedding]\noutput_dir = \"../../etc\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("outside data_root"), "{message}");
    }

    #[test]
    fn duplicate_aliases_are_refused() {
        let text = format!("{MINIMAL}{}", &MINIMAL[MINIMAL.find("[[").unwrap()..]);
        assert!(parse(&text).unwrap_err().to_string().contains("used twice"));
    }

    #[test]
    fn remote_models_parse_and_keys_stay_unresolved() {
        let text = r#"
[embedding]
[[embedding.models]]
alias = "qwen3_v1"
name = "Qwen/Qwen3-Embedding-0.6B"
dimension = 1024
backend = "vllm"
base_urls = ["http://gpu1:8000", "http://gpu2:8000"]
api_key = "env:PAPERSYS_TEST_UNSET_KEY"
max_concurrency = 8
timeout_s = 2.5
"#;
        let config = parse(text).unwrap();
        let BackendConfig::Remote(remote) = &config.models[0].backend else {
            panic!("expected a remote backend");
        };
        assert_eq!(remote.table.base_urls().len(), 2);
        assert_eq!(
            remote.table.timeout_s.map(|t| t.duration()),
            Some(Duration::from_millis(2500))
        );
        let key = remote.api_key.as_ref().unwrap();
        assert_eq!(format!("{key:?}"), "env:PAPERSYS_TEST_UNSET_KEY");
        let err = key.resolve("api_key", &config.models[0].alias).unwrap_err();
        assert!(err.to_string().contains("PAPERSYS_TEST_UNSET_KEY"));
    }

    #[test]
    fn literal_api_keys_never_show_in_debug_output() {
        let text = r#"
[[embedding.models]]
alias = "hosted"
name = "text-embedding-3-small"
dimension = 1536
backend = "openai"
base_url = "https://api.example.com"
api_key = "sk-live-abcdef123456"
"#;
        let config = parse(text).unwrap();
        assert!(!format!("{config:?}").contains("sk-live"));
    }

    #[test]
    fn remote_keys_on_a_native_model_are_refused() {
        let message = parse(&format!("{MINIMAL}base_url = \"http://x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`base_url` only applies to server backends"),
            "{message}"
        );
    }

    #[test]
    fn native_keys_on_a_remote_model_are_refused_with_their_line() {
        let remote = "[[embedding.models]]\nalias = \"r\"\nname = \"n\"\ndimension = 4\nbackend = \"vllm\"\nbase_url = \"http://x\"\n";
        for (key, value) in [
            ("device", "\"cuda\""),
            ("precision", "\"float16\""),
            ("max_length", "128"),
            ("model_path", "\"m\""),
            ("threads", "2"),
        ] {
            let err = parse(&format!("{remote}{key} = {value}\n")).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { line: 7, .. }),
                "{key}: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{key}` only applies to the native engine"))
                    && message.contains("backend = \"vllm\""),
                "{message}"
            );
        }
        assert!(parse(remote).is_ok());
    }

    #[test]
    fn device_and_precision_are_parsed_once_into_the_native_table() {
        use papersys_backend_native::{Device, Precision};
        let cases = [
            ("", "auto", Device::Cpu, None),
            ("cpu", "float32", Device::Cpu, Some(Precision::F32)),
            ("cuda", "fp16", Device::Cuda(0), Some(Precision::F16)),
            ("cuda:1", "float16", Device::Cuda(1), Some(Precision::F16)),
            ("CUDA:2", "FP32", Device::Cuda(2), Some(Precision::F32)),
        ];
        for (device, precision, want_device, want_precision) in cases {
            let text = format!(
                "{MINIMAL}device = \"{device}\"\nprecision = \"{precision}\"\nmodel_path = \"../model\"\n"
            );
            let config = parse(&text).unwrap();
            let BackendConfig::Native(native) = &config.models[0].backend else {
                panic!("native");
            };
            assert_eq!(
                (native.device, native.precision),
                (want_device, want_precision),
                "{device} {precision}"
            );
            assert_eq!(native.model_path.as_deref(), Some(Path::new("/srv/papers/model")));
        }
        let message = parse(&format!("{MINIMAL}precision = \"int4\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(":9:") && message.contains("`precision`") && message.contains("\"int4\""),
            "{message}"
        );
        let message = parse(&format!("{MINIMAL}threads = 0\n")).unwrap_err().to_string();
        assert!(
            message.contains(":9:") && message.contains("`threads`") && message.contains("positive integer"),
            "{message}"
        );
    }

    #[test]
    fn key_lines_are_kept_for_errors_found_when_the_model_loads() {
        let config = parse(&format!("{MINIMAL}model_path = \"\"\n")).unwrap();
        let model = &config.models[0];
        let BackendConfig::Native(native) = &model.backend else {
            panic!("native");
        };
        assert_eq!(native.model_path, None, "an empty model_path means none");
        let err = model.invalid_key("model_path", "nope".into()).to_string();
        assert_eq!(
            err,
            "/srv/papers/config/papersys.toml:9: model `jasper_v1`: `model_path`: nope"
        );
        let err = model.invalid_key("device", "nope".into()).to_string();
        assert!(
            err.contains(":5:"),
            "a key not written falls back to the table's line: {err}"
        );
    }

    #[test]
    fn unknown_backend_lists_the_known_ones() {
        let message = parse(&format!("{MINIMAL}backend = \"onnx\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("\"onnx\"") && message.contains("openai"),
            "{message}"
        );
    }

    #[test]
    fn an_explicit_missing_path_is_a_read_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::discover(Some(&missing)).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("nope.toml"));
    }
}
