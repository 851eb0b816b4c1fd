//! What the user configures for a server-backed model, and its validation.

use std::time::Duration;

use papersys_backend_core::{EmbedError, Positive, Seconds, Secret};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

/// Names a model table's `backend` may give for this protocol: all mean
/// "an OpenAI-compatible `/v1/embeddings` server".
pub const BACKEND_NAMES: &[&str] = &["openai", "vllm", "tei", "infinity", "ollama"];

/// The keys of a model table only a server backend reads: the fields of
/// [`RemoteTable`], and `api_key`, which the config loader keeps itself
/// (a secret, resolved from the environment only when used).
pub const REMOTE_KEYS: &[&str] = &[
    "base_url",
    "base_urls",
    "request_batch_size",
    "max_concurrency",
    "timeout_s",
    "max_retries",
    "tokens_per_minute",
    "dimensions",
    "truncate_prompt_tokens",
    "api_key",
];

/// Per-request timeout of a model table without `timeout_s`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A server backend's keys of a model table, typed (all but `api_key`, see
/// [`REMOTE_KEYS`]). Unknown keys are refused.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteTable {
    /// One server.
    pub base_url: Option<BaseUrl>,
    /// Several servers (added after `base_url` when both are given).
    pub base_urls: Option<Vec<BaseUrl>>,
    /// Texts per request; absent: the model table's `batch_size`.
    pub request_batch_size: Option<Positive>,
    /// Requests in flight per server; absent: 4.
    pub max_concurrency: Option<Positive>,
    /// Per-request timeout; absent: [`DEFAULT_TIMEOUT`].
    pub timeout_s: Option<Seconds>,
    /// Retries of a failed request; absent: 5.
    pub max_retries: Option<u64>,
    /// Token budget per minute, shared by all servers.
    pub tokens_per_minute: Option<Positive>,
    /// `dimensions` sent to models that support shortened outputs.
    pub dimensions: Option<Positive>,
    /// vLLM's `truncate_prompt_tokens`.
    pub truncate_prompt_tokens: Option<Positive>,
}

impl RemoteTable {
    /// Every server of the table, `base_url` first. May be empty in a
    /// config carried over from the Python project, which is an error only
    /// when the model is used.
    pub fn base_urls(&self) -> Vec<String> {
        self.base_url
            .iter()
            .chain(self.base_urls.iter().flatten())
            .map(|url| url.0.clone())
            .collect()
    }
}

/// A server address as a model table writes it: `http://` or `https://`
/// (checked while parsing; [`crate::RemoteEmbedder::new`] checks the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// The address, surrounding spaces removed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for BaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let url = raw.trim();
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(BaseUrl(url.to_string()))
        } else {
            Err(D::Error::custom(format!(
                "base URL {:?} must start with http:// or https://",
                mask_userinfo(url)
            )))
        }
    }
}

/// How vectors travel in responses (`encoding_format` of the request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// JSON arrays of numbers: every server understands them.
    Float,
    /// Base64 of little-endian `f32`: about a third of the bytes of `Float`
    /// and far cheaper to parse. A server that does not support it fails.
    Base64,
    /// Ask each server for base64 first; a server that answers that request
    /// with 400, 415 or 422, or with base64 that does not decode to the
    /// expected length, is switched to `Float` for good (and the batch is
    /// resent at once, without counting as a retry). After one good base64
    /// answer the server is trusted with base64 from then on.
    #[default]
    Auto,
}

/// Everything [`crate::RemoteEmbedder`] needs: the served model, the fleet
/// of servers and how politely to drive them.
///
/// Build one with [`RemoteOptions::new`] and adjust fields; [`crate::RemoteEmbedder::new`]
/// checks them.
#[derive(Clone)]
pub struct RemoteOptions {
    /// Model name the servers serve, sent as `"model"` (e.g. `sentence-transformers/all-MiniLM-L6-v2`).
    pub model: String,
    /// One base URL per server, e.g. `http://127.0.0.1:7997`. A trailing
    /// `/v1` and trailing slashes are accepted and not doubled: requests go
    /// to `{base}/v1/embeddings`.
    pub base_urls: Vec<String>,
    /// Sent as `Authorization: Bearer …` when set; never logged nor put in an error.
    pub api_key: Option<Secret>,
    /// Texts per request (the pipeline's batch size).
    pub request_batch_size: usize,
    /// Requests in flight per server; the pipeline runs `max_concurrency ×
    /// servers` batches at once.
    pub max_concurrency: usize,
    /// Limit on one whole request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Further attempts per batch after a retryable failure (429, 5xx,
    /// timeout, dropped connection, malformed answer).
    pub max_retries: u32,
    /// Client-side budget of tokens per minute over the whole fleet, for
    /// hosted APIs that limit it; tokens are estimated (see [`crate::estimate_tokens`]).
    pub tokens_per_minute: Option<u64>,
    /// Sent as `"dimensions"` for models with shortened (Matryoshka)
    /// outputs; must then equal `expected_dimension`.
    pub dimensions: Option<usize>,
    /// Sent as `"truncate_prompt_tokens"` when set: vLLM then truncates
    /// longer texts to this many tokens (as the native engine does at the
    /// model's `max_seq_length`) instead of refusing them with HTTP 400.
    /// Only for vLLM; other servers truncate on their own or reject the field.
    /// Also recorded as the identity's `max_tokens`.
    pub truncate_prompt_tokens: Option<usize>,
    /// Length every returned vector must have.
    pub expected_dimension: usize,
    /// Put before every text by `prepare` (E5's `passage: `).
    pub document_prefix: String,
    /// Wire format of vectors.
    pub encoding: Encoding,
    /// First backoff after a failure; doubles per consecutive failure of a
    /// server, with jitter (each wait is 50–100 % of the nominal one).
    pub backoff_base: Duration,
    /// Longest wait before retrying a server, also the cap on a `Retry-After`
    /// the server asks for.
    pub backoff_max: Duration,
    /// Consecutive failures (5xx, timeouts, connection errors, malformed
    /// answers; not 429) after which a server is paused.
    pub breaker_threshold: u32,
    /// How long a paused server is skipped before one probe request may try it again.
    pub breaker_cooldown: Duration,
}

impl RemoteOptions {
    /// Options with papersys' defaults: 64 texts per request, 4 requests in
    /// flight per server, 60 s timeout, 5 retries, backoff from 0.5 s up to
    /// 60 s, a server paused for 30 s after 5 failures in a row, no token
    /// budget, [`Encoding::Auto`].
    pub fn new(
        model: impl Into<String>,
        base_urls: impl IntoIterator<Item = impl Into<String>>,
        expected_dimension: usize,
    ) -> Self {
        RemoteOptions {
            model: model.into(),
            base_urls: base_urls.into_iter().map(Into::into).collect(),
            api_key: None,
            request_batch_size: 64,
            max_concurrency: 4,
            timeout: Duration::from_secs(60),
            max_retries: 5,
            tokens_per_minute: None,
            dimensions: None,
            truncate_prompt_tokens: None,
            expected_dimension,
            document_prefix: String::new(),
            encoding: Encoding::Auto,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }

    /// The options of a model table: `table` (its server keys), the keys
    /// every backend shares and the resolved `api_key`. Defaults differ
    /// from [`RemoteOptions::new`]'s where the config file documents its
    /// own: `request_batch_size` is the table's `batch_size`, the timeout
    /// [`DEFAULT_TIMEOUT`].
    pub fn from_table(
        model: &str,
        dimension: usize,
        batch_size: usize,
        document_prefix: Option<String>,
        api_key: Option<Secret>,
        table: &RemoteTable,
    ) -> Self {
        let mut options = RemoteOptions::new(model, table.base_urls(), dimension);
        options.api_key = api_key;
        options.request_batch_size = table.request_batch_size.map_or(batch_size, Positive::get);
        options.max_concurrency = table.max_concurrency.map_or(4, Positive::get);
        options.timeout = table.timeout_s.map_or(DEFAULT_TIMEOUT, Seconds::duration);
        options.max_retries = table
            .max_retries
            .map_or(5, |n| u32::try_from(n).unwrap_or(u32::MAX));
        options.tokens_per_minute = table.tokens_per_minute.map(|n| n.get() as u64);
        options.dimensions = table.dimensions.map(Positive::get);
        options.truncate_prompt_tokens = table.truncate_prompt_tokens.map(Positive::get);
        options.document_prefix = document_prefix.unwrap_or_default();
        options
    }

    /// Rejects settings that cannot work, with a message naming the setting.
    pub(crate) fn validate(&self) -> Result<(), EmbedError> {
        let bad = |message: String| Err(EmbedError::Unsupported(message));
        if self.model.trim().is_empty() {
            return bad("remote model: `model` (the served model name) is empty".into());
        }
        if self.base_urls.is_empty() {
            return bad(format!(
                "remote model {}: no `base_url`: start an OpenAI-compatible embedding server \
                 (vLLM, TEI, Infinity, Ollama) and set `base_url` (or `base_urls`) to its address",
                self.model
            ));
        }
        if self.request_batch_size == 0 {
            return bad("`request_batch_size` must be at least 1".into());
        }
        if self.max_concurrency == 0 {
            return bad("`max_concurrency` must be at least 1".into());
        }
        if self.expected_dimension == 0 {
            return bad("`dimension` must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return bad("`timeout_s` must be more than 0".into());
        }
        if self.tokens_per_minute == Some(0) {
            return bad("`tokens_per_minute` must be more than 0 (leave it out for no limit)".into());
        }
        if self.truncate_prompt_tokens == Some(0) {
            return bad("`truncate_prompt_tokens` must be at least 1".into());
        }
        if self.breaker_threshold == 0 {
            return bad("the circuit breaker threshold must be at least 1".into());
        }
        if let Some(d) = self.dimensions
            && d != self.expected_dimension
        {
            return bad(format!(
                "`dimensions = {d}` asks the server for {d}-dimensional vectors but `dimension = {}`: \
                 set them to the same value",
                self.expected_dimension
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.base_urls.iter().map(|u| mask_userinfo(u)).collect();
        f.debug_struct("RemoteOptions")
            .field("model", &self.model)
            .field("base_urls", &urls)
            .field("api_key", &self.api_key)
            .field("request_batch_size", &self.request_batch_size)
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .field("dimensions", &self.dimensions)
            .field("truncate_prompt_tokens", &self.truncate_prompt_tokens)
            .field("expected_dimension", &self.expected_dimension)
            .field("document_prefix", &self.document_prefix)
            .field("encoding", &self.encoding)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .finish()
    }
}

/// A server's address, normalised.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// What errors and logs show: the base URL, credentials in it masked.
    pub display: String,
    /// Where requests go: `{base}/v1/embeddings`.
    pub endpoint: String,
    /// True for `localhost`, `127.0.0.0/8` and `[::1]`, which never go through a proxy.
    pub loopback: bool,
}

impl ServerUrl {
    /// Normalises `raw`: http or https only, no query or fragment, trailing
    /// slashes and one trailing `/v1` dropped.
    pub fn parse(raw: &str) -> Result<ServerUrl, EmbedError> {
        let trimmed = raw.trim();
        let lower = trimmed.to_ascii_lowercase();
        let scheme_len = if lower.starts_with("http://") {
            7
        } else if lower.starts_with("https://") {
            8
        } else {
            return Err(EmbedError::Unsupported(format!(
                "base_url {:?} must start with http:// or https://",
                mask_userinfo(trimmed)
            )));
        };
        if trimmed.contains(['?', '#']) || trimmed.contains(char::is_whitespace) {
            return Err(EmbedError::Unsupported(format!(
                "base_url {:?} must be a plain address such as http://127.0.0.1:8000 (no query, fragment or spaces)",
                mask_userinfo(trimmed)
            )));
        }
        let (scheme, rest) = trimmed.split_at(scheme_len);
        let mut rest = rest.trim_end_matches('/');
        if let Some(stripped) = rest.strip_suffix("/v1") {
            rest = stripped.trim_end_matches('/');
        }
        let base = format!("{scheme}{rest}");
        let authority = rest.split('/').next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or("");
        if host_port.is_empty() {
            return Err(EmbedError::Unsupported(format!(
                "base_url {:?} has no host",
                mask_userinfo(trimmed)
            )));
        }
        Ok(ServerUrl {
            display: mask_userinfo(&base),
            endpoint: format!("{base}/v1/embeddings"),
            loopback: is_loopback_host(host_port),
        })
    }
}

impl std::fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// Replaces `user:password@` in a URL with `***@`.
fn mask_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_string(),
    }
}

/// Whether `host[:port]` names this machine.
fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_without_doubling_v1() {
        for raw in [
            "http://127.0.0.1:7997",
            "http://127.0.0.1:7997/",
            "http://127.0.0.1:7997/v1",
            " http://127.0.0.1:7997/v1/ ",
        ] {
            let url = ServerUrl::parse(raw).unwrap();
            assert_eq!(url.endpoint, "http://127.0.0.1:7997/v1/embeddings", "{raw}");
            assert_eq!(url.display, "http://127.0.0.1:7997");
            assert!(url.loopback);
        }
        let hosted = ServerUrl::parse("https://api.example.com/openai/v1").unwrap();
        assert_eq!(hosted.endpoint, "https://api.example.com/openai/v1/embeddings");
        assert!(!hosted.loopback);
        assert!(ServerUrl::parse("http://[::1]:8080").unwrap().loopback);
        assert!(ServerUrl::parse("http://localhost").unwrap().loopback);
    }

    #[test]
    fn bad_urls_are_refused_and_credentials_masked() {
        assert!(ServerUrl::parse("127.0.0.1:8000").is_err());
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("http://").is_err());
        assert!(ServerUrl::parse("http://h/?a=1").is_err());
        let url = ServerUrl::parse("https://user:hunter2@h.example/v1").unwrap();
        assert_eq!(url.display, "https://***@h.example");
        assert!(!format!("{url:?}").contains("hunter2"));
        let mut options = RemoteOptions::new("m", ["https://user:hunter2@h.example"], 8);
        options.api_key = Some(Secret::new("sk-abc"));
        let debug = format!("{options:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("sk-abc"), "{debug}");
        let err = ServerUrl::parse("ftp://user:hunter2@h").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_table_parses_typed_and_becomes_options() {
        let table: RemoteTable = serde_json::from_str(
            r#"{"base_url": " http://a:1 ", "base_urls": ["http://b:2"], "timeout_s": 2.5, "max_retries": 0}"#,
        )
        .unwrap();
        assert_eq!(table.base_urls(), ["http://a:1", "http://b:2"]);
        let options = RemoteOptions::from_table("m", 8, 16, None, None, &table);
        assert_eq!(options.timeout, Duration::from_millis(2500));
        assert_eq!((options.request_batch_size, options.max_retries), (16, 0));
        let defaults = RemoteOptions::from_table("m", 8, 16, None, None, &RemoteTable::default());
        assert_eq!((defaults.timeout, defaults.max_concurrency), (DEFAULT_TIMEOUT, 4));
        let e = serde_json::from_str::<RemoteTable>(r#"{"base_url": "gpu1:8000"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with http://"), "{e}");
        let e = serde_json::from_str::<RemoteTable>(r#"{"timeout_s": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive number of seconds"), "{e}");
        // REMOTE_KEYS are the struct's fields plus `api_key`.
        let e = serde_json::from_str::<RemoteTable>(r#"{"zzz": 1}"#)
            .unwrap_err()
            .to_string();
        let mut listed: Vec<&str> = e.split('`').skip(3).step_by(2).collect();
        listed.push("api_key");
        assert_eq!(listed, REMOTE_KEYS, "{e}");
    }

    #[test]
    fn options_are_checked() {
        let ok = RemoteOptions::new("m", ["http://127.0.0.1:1"], 384);
        assert!(ok.validate().is_ok());
        let none = RemoteOptions::new("m", Vec::<String>::new(), 384);
        let message = none.validate().unwrap_err().to_string();
        assert!(
            message.contains("start") && message.contains("base_url"),
            "{message}"
        );
        let mut dims = ok.clone();
        dims.dimensions = Some(256);
        assert!(
            dims.validate()
                .unwrap_err()
                .to_string()
                .contains("dimensions = 256")
        );
        let mut zero = ok.clone();
        zero.request_batch_size = 0;
        assert!(zero.validate().is_err());
    }
}
