//! One `[[embedding.models]]` table. The keys every backend shares
//! (`alias`, `name`, `dimension`, ...) are read here; the keys only one
//! backend reads are handed, as a table, to that backend's own typed
//! options (`papersys_backend_native::NativeTable`,
//! `papersys_backend_remote::RemoteTable`), which parse and check them.
//! What stays here: spans (every error names the file and line), the alias
//! and the credential (`api_key`). A key of the other backend is named with
//! its line instead of being silently ignored.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use papersys_backend_native::{NATIVE_KEYS, NativeTable};
use papersys_backend_remote::{REMOTE_KEYS, RemoteTable};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    Alias, BackendConfig, ConfigError, ModelConfig, RemoteConfig, Resolver, SecretSource, TableSpans,
    normalize,
};

/// Keys of a model table every backend reads.
const COMMON_KEYS: [&str; 7] = [
    "alias",
    "name",
    "dimension",
    "batch_size",
    "backend",
    "document_prefix",
    "infinity_engine",
];

/// The keys every backend shares, typed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    alias: Spanned<String>,
    name: Spanned<String>,
    dimension: Spanned<i64>,
    batch_size: Option<Spanned<i64>>,
    backend: Option<Spanned<String>>,
    document_prefix: Option<String>,
    /// Used by the Python project's Infinity backend to pick its engine;
    /// accepted so its configs load, and ignored.
    #[serde(rename = "infinity_engine")]
    _infinity_engine: Option<String>,
}

/// Which backend a table's `backend` names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Native,
    Remote,
}

impl Kind {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Native => NATIVE_KEYS,
            Kind::Remote => REMOTE_KEYS,
        }
    }
}

/// One key of a table: its name, where the key and where its value are.
struct Entry<'i> {
    name: String,
    key: Range<usize>,
    value: Spanned<DeValue<'i>>,
}

/// The `[[embedding.models]]` tables of the config, with their spans.
pub(super) fn tables<'i>(resolver: &Resolver<'i>) -> Result<Vec<Spanned<DeValue<'i>>>, ConfigError> {
    let root = DeTable::parse(resolver.text).map_err(|e| ConfigError::Parse {
        path: resolver.path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let Some(models) = root
        .get_ref()
        .get("embedding")
        .and_then(|e| e.get_ref().as_table())
        .and_then(|e| e.get("models"))
    else {
        return Ok(Vec::new());
    };
    let not_tables = || {
        resolver.error_at(
            models.span().start,
            "`embedding.models` must be an array of tables, written [[embedding.models]]".into(),
        )
    };
    let array = models.get_ref().as_array().ok_or_else(not_tables)?;
    if array.iter().any(|t| t.get_ref().as_table().is_none()) {
        return Err(not_tables());
    }
    Ok(array.iter().cloned().collect())
}

impl Resolver<'_> {
    /// Resolves one model table (relative paths against `config_dir`).
    pub(super) fn model(
        &self,
        table: Spanned<DeValue<'_>>,
        config_dir: &Path,
    ) -> Result<ModelConfig, ConfigError> {
        let span = table.span();
        let line = self.line_of(span.start);
        let DeValue::Table(items) = table.into_inner() else {
            return self.invalid(span.start, "a model must be a table".into());
        };
        let alias_text = items
            .get("alias")
            .and_then(|a| a.get_ref().as_str())
            .unwrap_or("?")
            .to_string();
        let mut entries: Vec<Entry<'_>> = items
            .into_iter()
            .map(|(key, value)| Entry {
                name: key.get_ref().to_string(),
                key: key.span(),
                value,
            })
            .collect();
        entries.sort_by_key(|e| e.key.start);
        let spans = TableSpans {
            path: self.path.to_path_buf(),
            line,
            keys: entries
                .iter()
                .map(|e| (e.name.clone(), self.line_of(e.key.start)))
                .collect::<BTreeMap<_, _>>(),
        };
        let locations: Vec<(String, Range<usize>, Range<usize>)> = entries
            .iter()
            .map(|e| (e.name.clone(), e.key.clone(), e.value.span()))
            .collect();
        let fail = |e: toml::de::Error| self.table_error(&e, &alias_text, span.start, &locations);

        let (common, rest): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| COMMON_KEYS.contains(&e.name.as_str()));
        let raw = RawModel::deserialize(deserializer(span.clone(), common)).map_err(fail)?;
        let alias = match Alias::parse(raw.alias.get_ref()) {
            Ok(alias) => alias,
            Err(message) => return self.invalid(raw.alias.span().start, message),
        };
        if raw.name.get_ref().trim().is_empty() {
            return self.invalid(
                raw.name.span().start,
                format!("model `{alias}` has an empty `name`"),
            );
        }
        let dimension = self.positive("dimension", &raw.dimension)?;
        let batch_size = match &raw.batch_size {
            Some(n) => self.positive("batch_size", n)?,
            None => 32,
        };
        let backend_name = raw
            .backend
            .as_ref()
            .map_or(papersys_backend_native::BACKEND_NAMES[0].to_string(), |b| {
                b.get_ref().trim().to_ascii_lowercase()
            });
        let kind = if papersys_backend_native::BACKEND_NAMES.contains(&backend_name.as_str()) {
            Kind::Native
        } else if papersys_backend_remote::BACKEND_NAMES.contains(&backend_name.as_str()) {
            Kind::Remote
        } else {
            let offset = raw.backend.as_ref().map_or(span.start, |b| b.span().start);
            return self.invalid(
                offset,
                format!(
                    "model `{alias}`: unknown backend {backend_name:?}; expected \"sentence_transformer\" (native) or one of {} (an OpenAI-compatible server)",
                    quoted(papersys_backend_remote::BACKEND_NAMES)
                ),
            );
        };

        let mut own = Vec::new();
        let mut api_key = None;
        for entry in rest {
            let key = entry.name.as_str();
            if kind.keys().contains(&key) {
                if key == "api_key" {
                    api_key = Some(entry.value);
                } else {
                    own.push(entry);
                }
            } else if NATIVE_KEYS.contains(&key) {
                return self.invalid(
                    entry.key.start,
                    format!(
                        "model `{alias}`: `{key}` only applies to the native engine; this model uses backend = \"{backend_name}\" (a server, which decides it): remove `{key}`"
                    ),
                );
            } else if REMOTE_KEYS.contains(&key) {
                return self.invalid(
                    entry.key.start,
                    format!(
                        "model `{alias}`: `{key}` only applies to server backends (backend = {}); this model uses the native engine: remove `{key}` or set `backend`",
                        quoted(papersys_backend_remote::BACKEND_NAMES)
                    ),
                );
            } else {
                let known: Vec<&str> = COMMON_KEYS.iter().chain(kind.keys()).copied().collect();
                let hint = match super::suggest_key(key, &known) {
                    Some(known) => format!("; did you mean `{known}`?"),
                    None => format!("; a model table reads `{}`", known.join("`, `")),
                };
                return self.invalid(
                    entry.key.start,
                    format!("model `{alias}`: unknown key `{key}`{hint}"),
                );
            }
        }
        let backend = match kind {
            Kind::Native => {
                let mut table = NativeTable::deserialize(deserializer(span.clone(), own)).map_err(fail)?;
                table.model_path = table.model_path.and_then(|p| {
                    let p = p.to_string_lossy().trim().to_string();
                    (!p.is_empty()).then(|| normalize(&config_dir.join(p)))
                });
                BackendConfig::Native(table)
            }
            Kind::Remote => {
                let table = RemoteTable::deserialize(deserializer(span.clone(), own)).map_err(fail)?;
                let api_key = match api_key {
                    Some(value) => {
                        let key =
                            Spanned::<String>::deserialize(ValueDeserializer::from(value)).map_err(fail)?;
                        Some(self.api_key(&key, &alias)?)
                    }
                    None => None,
                };
                BackendConfig::Remote(RemoteConfig {
                    flavor: backend_name,
                    table,
                    api_key,
                })
            }
        };
        Ok(ModelConfig {
            alias,
            name: raw.name.get_ref().trim().to_string(),
            dimension,
            batch_size,
            document_prefix: raw.document_prefix,
            backend,
            line,
            spans,
        })
    }

    /// `api_key`: a literal or `env:NAME` with a usable variable name.
    fn api_key(&self, key: &Spanned<String>, alias: &Alias) -> Result<SecretSource, ConfigError> {
        if let Some(var) = key.get_ref().strip_prefix("env:") {
            let var = var.trim();
            if var.is_empty() || var.contains(['=', '\0']) {
                return self.invalid(
                    key.span().start,
                    format!(
                        "model `{alias}`: `api_key` = \"env:{var}\" does not name an environment variable; write api_key = \"env:NAME\""
                    ),
                );
            }
        }
        Ok(SecretSource::parse(key.get_ref()))
    }

    /// A parser error inside a model table as `file:line: model `alias`:
    /// `key`: message`, the key found from where the error points.
    fn table_error(
        &self,
        error: &toml::de::Error,
        alias: &str,
        table_start: usize,
        locations: &[(String, Range<usize>, Range<usize>)],
    ) -> ConfigError {
        let at = error.span().map_or(table_start, |s| s.start);
        let key = locations
            .iter()
            .find(|(_, key, value)| key.contains(&at) || value.contains(&at) || value.start == at)
            .map(|(name, ..)| name);
        let message = match key {
            Some(key) => format!("model `{alias}`: `{key}`: {}", error.message()),
            None => format!("model `{alias}`: {}", error.message()),
        };
        self.error_at(at, message)
    }
}

/// A deserializer over some entries of a table (spans kept).
fn deserializer<'i>(span: Range<usize>, entries: Vec<Entry<'i>>) -> ValueDeserializer<'i> {
    let mut table = DeTable::new();
    for entry in entries {
        table.insert(
            Spanned::new(entry.key, std::borrow::Cow::Owned(entry.name)),
            entry.value,
        );
    }
    ValueDeserializer::from(Spanned::new(span, DeValue::Table(table)))
}

/// `"a", "b" or "c"`.
fn quoted(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}
