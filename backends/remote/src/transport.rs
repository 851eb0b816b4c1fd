//! One HTTP exchange with one server, and what its failure means.

use std::time::{Duration, SystemTime};

use papersys_backend_core::Secret;

use crate::options::ServerUrl;
use crate::protocol::{self, DecodeErrorKind};

/// What a failed exchange means for the batch and for the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// 429: the server is alive but busy; wait and retry, no strike against it.
    RateLimited,
    /// 5xx, timeout, connection error, malformed answer: retry, and a strike
    /// towards pausing the server.
    Transient,
    /// The server does not take base64 (only while it is on trial).
    EncodingRejected,
    /// Retrying cannot help (bad key, unknown model, wrong dimension, NaN,
    /// oversized answer): the batch fails at once.
    Fatal,
}

/// A failed exchange.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    /// For the user; already free of the API key.
    pub message: String,
    /// What the server asked for in `Retry-After` (or `retry-after-ms`).
    pub retry_after: Option<Duration>,
    /// The server answered 429 or 503: it is there, only busy.
    pub busy: bool,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            retry_after: None,
            busy: false,
        }
    }
}

/// One request: everything [`exchange`] needs besides the server.
pub(crate) struct Call<'a> {
    pub api_key: Option<&'a Secret>,
    pub body: &'a [u8],
    /// Base64 is on trial at this server: a refusal means "use float".
    pub base64_trial: bool,
    pub texts: usize,
    pub dimension: usize,
    pub model: &'a str,
    pub timeout: Duration,
}

/// Bytes a response of `texts` vectors may take: 48 per float (a JSON
/// number with a sign, 17 digits, an exponent, a comma and spaces) plus
/// 1 MiB for the envelope, so a runaway body is cut off long before it
/// matters for memory.
pub(crate) fn body_limit(texts: usize, dimension: usize) -> u64 {
    (texts as u64) * (dimension as u64) * 48 + (1 << 20)
}

/// Posts `call.body` to `server` and decodes the answer.
pub(crate) fn exchange(
    agent: &ureq::Agent,
    server: &ServerUrl,
    call: &Call<'_>,
) -> Result<Vec<f32>, Failure> {
    exchange_inner(agent, server, call).map_err(|mut failure| {
        failure.message = redact(&failure.message, call.api_key);
        failure
    })
}

fn exchange_inner(agent: &ureq::Agent, server: &ServerUrl, call: &Call<'_>) -> Result<Vec<f32>, Failure> {
    let mut request = agent
        .post(&server.endpoint)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json");
    if let Some(key) = call.api_key {
        request = request.header("Authorization", format!("Bearer {}", key.expose()));
    }
    let mut response = request.send(call.body).map_err(|e| transport_failure(e, call))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        let body = response
            .body_mut()
            .with_config()
            .limit(body_limit(call.texts, call.dimension))
            .read_to_vec()
            .map_err(|e| transport_failure(e, call))?;
        return protocol::decode_response(&body, call.texts, call.dimension).map_err(|e| {
            let kind = match e.kind {
                DecodeErrorKind::Base64 | DecodeErrorKind::Base64Dimension if call.base64_trial => {
                    FailureKind::EncodingRejected
                }
                DecodeErrorKind::Malformed | DecodeErrorKind::Base64 => FailureKind::Transient,
                DecodeErrorKind::Dimension
                | DecodeErrorKind::Base64Dimension
                | DecodeErrorKind::NonFinite => FailureKind::Fatal,
            };
            Failure::new(kind, e.message)
        });
    }
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let detail = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .map(|body| protocol::excerpt(&body))
        .unwrap_or_else(|_| "(body unreadable)".into());
    let (kind, message) = match status {
        429 => (
            FailureKind::RateLimited,
            format!("HTTP 429 Too Many Requests: {detail}"),
        ),
        408 | 500..=599 => (FailureKind::Transient, format!("HTTP {status}: {detail}")),
        400 | 415 | 422 if call.base64_trial => (
            FailureKind::EncodingRejected,
            format!("HTTP {status} to a base64 request: {detail}"),
        ),
        401 | 403 => (
            FailureKind::Fatal,
            if call.api_key.is_some() {
                format!("HTTP {status}: the server refused the API key; check `api_key` ({detail})")
            } else {
                format!("HTTP {status}: the server wants an API key; set `api_key = \"env:NAME\"` ({detail})")
            },
        ),
        404 => (
            FailureKind::Fatal,
            format!(
                "HTTP 404 for /v1/embeddings: is this an OpenAI-compatible embedding server serving model {:?}? \
                 (Infinity needs `--url-prefix /v1`) ({detail})",
                call.model
            ),
        ),
        413 => (
            FailureKind::Fatal,
            format!("HTTP 413: request too large; lower `request_batch_size` ({detail})"),
        ),
        300..=399 => (
            FailureKind::Fatal,
            format!(
                "HTTP {status}: redirected to {}; set `base_url` to the address that answers",
                location.as_deref().unwrap_or("elsewhere")
            ),
        ),
        _ => (FailureKind::Fatal, format!("HTTP {status}: {detail}")),
    };
    Err(Failure {
        kind,
        message,
        retry_after,
        busy: status == 429 || status == 503,
    })
}

/// Sorts a ureq error into retryable or not, with a message that says what to do.
fn transport_failure(error: ureq::Error, call: &Call<'_>) -> Failure {
    use FailureKind::*;
    match error {
        ureq::Error::Timeout(_) => Failure::new(
            Transient,
            format!("no complete answer within {:?} (timeout)", call.timeout),
        ),
        ureq::Error::BodyExceedsLimit(limit) => Failure::new(
            Fatal,
            format!(
                "answered a body larger than {limit} bytes, far more than {} vectors of dimension {} need",
                call.texts, call.dimension
            ),
        ),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Failure::new(
            Transient,
            "connection refused: no server is listening there; start it or fix `base_url`",
        ),
        ureq::Error::Io(e) => Failure::new(Transient, format!("connection error: {e}")),
        ureq::Error::ConnectionFailed => Failure::new(Transient, "could not connect; is the server running?"),
        ureq::Error::HostNotFound => Failure::new(Transient, "host not found; check `base_url`"),
        ureq::Error::Protocol(e) => Failure::new(Transient, format!("broken HTTP answer: {e}")),
        ureq::Error::BadUri(e) => Failure::new(Fatal, format!("bad URL: {e}")),
        other => Failure::new(Fatal, other.to_string()),
    }
}

/// How long a response asks the client to wait: `retry-after-ms`
/// (OpenAI), else `Retry-After` as seconds (fractions accepted) or an
/// HTTP date.
pub(crate) fn retry_after(headers: &ureq::http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms.min(1e9) / 1000.0));
    }
    parse_retry_after(header("retry-after")?, now)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Replaces every occurrence of the API key with `***`.
pub(crate) fn redact(message: &str, key: Option<&Secret>) -> String {
    match key.map(Secret::expose) {
        Some(key) if !key.is_empty() && message.contains(key) => message.replace(key, "***"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5", now), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        let mut headers = ureq::http::HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_millis(250)));
    }

    #[test]
    fn keys_are_redacted() {
        let key = Secret::new("sk-123");
        assert_eq!(redact("echo: Bearer sk-123!", Some(&key)), "echo: Bearer ***!");
        assert_eq!(redact("nothing", None), "nothing");
    }

    #[test]
    fn body_limit_scales_with_the_batch() {
        assert_eq!(body_limit(0, 384), 1 << 20);
        assert!(body_limit(64, 1024) > 64 * 1024 * 20);
    }
}
