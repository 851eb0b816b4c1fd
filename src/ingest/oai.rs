//! arXiv's OAI-PMH interface: one polite HTTP client, and the parser of
//! `ListRecords` pages in the `arXiv`, `arXivRaw` and `oai_dc` formats.
//!
//! The client sends one request at a time on one connection, at least
//! `request_interval` apart, with a User-Agent naming papersys and the
//! contact. A 429 or 503 waits for its `Retry-After` (seconds or an HTTP
//! date); other 5xx, timeouts, dropped connections and pages that are cut
//! short or are not XML are retried with a doubling back-off, at most
//! `max_retries` times. OAI-PMH errors are answers, not failures:
//! `noRecordsMatch` is an empty page, `badResumptionToken` is reported for
//! the harvest to restart its window.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::config::{IngestConfig, MetadataFormat};
use super::row::{ArxivPaper, Author};

/// Longest back-off between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Longest `Retry-After` waited for; a server asking for more ends the
/// window (a later run continues).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);
/// Largest page accepted (arXiv's are a few MB).
const MAX_PAGE_BYTES: u64 = 512 << 20;

/// What one `ListRecords` request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// The first page of a window.
    Start {
        /// `from`, `YYYY-MM-DD`.
        from: String,
        /// `until`, `YYYY-MM-DD` (inclusive).
        until: String,
        /// setSpec, or every set.
        set: Option<String>,
    },
    /// A following page.
    Resume {
        /// The resumption token of the previous page.
        token: String,
    },
}

/// One parsed `ListRecords` page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The server's `responseDate`.
    pub response_date: String,
    /// Records with metadata, in page order.
    pub records: Vec<ArxivPaper>,
    /// Records with `status="deleted"` (counted, nothing is removed).
    pub deleted: u64,
    /// Records skipped (no metadata, no id, a date that cannot be read), with why.
    pub skipped: Vec<String>,
    /// The token of the next page; `None` on the last page (absent or empty token).
    pub token: Option<String>,
    /// `completeListSize` of the resumption token, when given.
    pub complete_list_size: Option<u64>,
    /// The server answered `noRecordsMatch`: an empty window.
    pub no_records_match: bool,
}

/// Why a page could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Not a complete OAI-PMH document (cut short, not XML): retried like a 5xx.
    #[error("malformed page: {0}")]
    Malformed(String),
    /// The resumption token expired or is unknown.
    #[error("badResumptionToken: {0}")]
    BadResumptionToken(String),
    /// Another OAI-PMH error (`badArgument`, `cannotDisseminateFormat`, ...).
    #[error("the server answered OAI-PMH error `{code}`: {message}")]
    Protocol {
        /// The error code.
        code: String,
        /// The server's text.
        message: String,
    },
}

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum OaiError {
    /// Every attempt failed with a retryable error.
    #[error("gave up after {attempts} attempts; the last said: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The resumption token is no longer valid: the window must start again.
    #[error("the server no longer knows resumption token {0:?} (badResumptionToken)")]
    BadResumptionToken(String),
    /// An answer that retrying cannot change (404, an OAI-PMH `badArgument`).
    #[error("{0}")]
    Fatal(String),
}

/// Counters of the requests a client made.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClientStats {
    /// HTTP requests sent.
    pub requests: u64,
    /// Requests that were retries.
    pub retries: u64,
    /// Seconds spent waiting (interval, back-off, `Retry-After`).
    pub waited_s: f64,
}

/// The OAI-PMH client: one connection, one request at a time.
pub struct Client {
    agent: ureq::Agent,
    base_url: String,
    format: MetadataFormat,
    interval: Duration,
    max_retries: u32,
    retry_delay: Duration,
    timeout: Duration,
    last_request: Option<Instant>,
    raw_dir: Option<PathBuf>,
    pages_saved: u64,
    stats: ClientStats,
}

/// One attempt's failure.
enum Attempt {
    /// Worth another try, after `wait` when the server said so.
    Retry { message: String, wait: Option<Duration> },
    /// Not worth another try.
    Fatal(OaiError),
}

impl Client {
    /// A client for the config's endpoint and format. `raw_dir`, when
    /// given, receives every page as received.
    pub fn new(config: &IngestConfig, raw_dir: Option<PathBuf>) -> Client {
        let loopback = ["://127.0.0.1", "://localhost", "://[::1]"]
            .iter()
            .any(|h| config.base_url.contains(h));
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .user_agent(config.user_agent());
        if loopback {
            builder = builder.proxy(None);
        }
        Client {
            agent: builder.build().new_agent(),
            base_url: config.base_url.clone(),
            format: config.format,
            interval: config.request_interval,
            max_retries: config.max_retries,
            retry_delay: config.retry_delay,
            timeout: config.request_timeout,
            last_request: None,
            raw_dir,
            pages_saved: 0,
            stats: ClientStats::default(),
        }
    }

    /// What the client did so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Fetches and parses one page, retrying what is worth retrying.
    pub fn list_records(&mut self, query: &Query) -> Result<Page, OaiError> {
        let mut last = String::new();
        for attempt in 0..=self.max_retries {
            if attempt > 0 {
                self.stats.retries += 1;
            }
            match self.attempt(query) {
                Ok(page) => return Ok(page),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retry { message, wait }) => {
                    if attempt == self.max_retries {
                        last = message;
                        break;
                    }
                    let backoff = self
                        .retry_delay
                        .saturating_mul(1u32 << attempt.min(16))
                        .min(MAX_WAIT);
                    let wait = match wait {
                        Some(w) if w > MAX_RETRY_AFTER => {
                            return Err(OaiError::GaveUp {
                                attempts: attempt + 1,
                                last: format!(
                                    "{message}: the server asks to wait {:.0} s, more than an hour; run again later",
                                    w.as_secs_f64()
                                ),
                            });
                        }
                        Some(w) => w,
                        None => backoff,
                    };
                    tracing::warn!(
                        "OAI-PMH request failed ({message}); retry {} of {} in {:.1} s",
                        attempt + 1,
                        self.max_retries,
                        wait.as_secs_f64()
                    );
                    self.sleep(wait);
                    last = message;
                }
            }
        }
        Err(OaiError::GaveUp {
            attempts: self.max_retries + 1,
            last,
        })
    }

    fn sleep(&mut self, wait: Duration) {
        if !wait.is_zero() {
            std::thread::sleep(wait);
            self.stats.waited_s += wait.as_secs_f64();
        }
    }

    fn attempt(&mut self, query: &Query) -> Result<Page, Attempt> {
        if let Some(last) = self.last_request {
            let since = last.elapsed();
            if since < self.interval {
                self.sleep(self.interval - since);
            }
        }
        let mut request = self.agent.get(&self.base_url).query("verb", "ListRecords");
        request = match query {
            Query::Start { from, until, set } => {
                let mut r = request
                    .query("metadataPrefix", self.format.prefix())
                    .query("from", from)
                    .query("until", until);
                if let Some(set) = set {
                    r = r.query("set", set);
                }
                r
            }
            Query::Resume { token } => request.query("resumptionToken", token),
        };
        self.stats.requests += 1;
        let result = request.call();
        self.last_request = Some(Instant::now());
        let mut response = result.map_err(|e| self.transport_failure(e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let wait = retry_after(response.headers(), SystemTime::now());
            let detail = response
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_vec()
                .map(|b| excerpt(&b))
                .unwrap_or_default();
            return Err(match status {
                429 | 503 => Attempt::Retry {
                    message: format!("HTTP {status}{}", retry_note(wait)),
                    wait,
                },
                408 | 500..=599 => Attempt::Retry {
                    message: format!("HTTP {status}: {detail}"),
                    wait: None,
                },
                404 => Attempt::Fatal(OaiError::Fatal(format!(
                    "HTTP 404 from {}: is `oai_base_url` an OAI-PMH endpoint? arXiv's is {}",
                    self.base_url,
                    super::config::DEFAULT_BASE_URL
                ))),
                _ => Attempt::Fatal(OaiError::Fatal(format!(
                    "HTTP {status} from {}: {detail}",
                    self.base_url
                ))),
            });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport_failure(e))?;
        self.save_raw(&body);
        let text = decode_body(&body);
        match parse_page(&text) {
            Ok(page) => Ok(page),
            Err(PageError::Malformed(message)) => Err(Attempt::Retry {
                message: format!("malformed page ({} bytes): {message}", body.len()),
                wait: None,
            }),
            Err(PageError::BadResumptionToken(_)) => {
                let token = match query {
                    Query::Resume { token } => token.clone(),
                    Query::Start { .. } => String::new(),
                };
                Err(Attempt::Fatal(OaiError::BadResumptionToken(token)))
            }
            Err(PageError::Protocol { code, message }) => Err(Attempt::Fatal(OaiError::Fatal(format!(
                "the server answered OAI-PMH error `{code}`: {message}{}",
                match code.as_str() {
                    "cannotDisseminateFormat" => " (check `metadata_prefix`)",
                    "badArgument" | "noSetHierarchy" => " (check `categories` and the dates)",
                    _ => "",
                }
            )))),
        }
    }

    fn save_raw(&mut self, body: &[u8]) {
        let Some(dir) = &self.raw_dir else { return };
        self.pages_saved += 1;
        let name = format!(
            "{}-{:05}.xml",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
            self.pages_saved
        );
        let result = std::fs::create_dir_all(dir)
            .and_then(|()| crate::store::atomic::write_bytes_atomic(&dir.join(&name), body));
        if let Err(e) = result {
            tracing::warn!("cannot save the raw page {}: {e}", dir.join(name).display());
        }
    }

    fn transport_failure(&self, error: ureq::Error) -> Attempt {
        let message = match error {
            ureq::Error::Timeout(_) => format!("no complete answer within {:?} (timeout)", self.timeout),
            ureq::Error::BodyExceedsLimit(limit) => {
                return Attempt::Fatal(OaiError::Fatal(format!(
                    "{} answered a page larger than {limit} bytes",
                    self.base_url
                )));
            }
            ureq::Error::Io(e) => format!("connection error: {e}"),
            ureq::Error::ConnectionFailed => "could not connect".to_string(),
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::Protocol(e) => format!("broken HTTP answer: {e}"),
            ureq::Error::BadUri(e) => {
                return Attempt::Fatal(OaiError::Fatal(format!("bad URL {}: {e}", self.base_url)));
            }
            other => format!("{other}"),
        };
        Attempt::Retry { message, wait: None }
    }
}

fn retry_note(wait: Option<Duration>) -> String {
    wait.map(|w| format!(", Retry-After {:.0} s", w.as_secs_f64()))
        .unwrap_or_default()
}

/// How long a response asks the client to wait: `Retry-After` as seconds
/// or as an HTTP date.
pub fn retry_after(headers: &ureq::http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    parse_retry_after(value, now)
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The page as text: UTF-8, with any byte that is not valid UTF-8 read as
/// Latin-1 (a record stored in Latin-1 keeps its accents instead of
/// failing the page).
pub fn decode_body(body: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(body) {
        return Cow::Borrowed(text);
    }
    let mut text = String::with_capacity(body.len() + 16);
    for chunk in body.utf8_chunks() {
        text.push_str(chunk.valid());
        text.extend(chunk.invalid().iter().map(|&b| char::from(b)));
    }
    Cow::Owned(text)
}

/// Where the parser is inside a record.
#[derive(Default)]
struct RecordState {
    deleted: bool,
    header_id: String,
    in_metadata: bool,
    format: Option<&'static str>,
    paper: ArxivPaper,
    author: Author,
    created: String,
    updated: String,
    versions: Vec<(u32, String)>,
    version: u32,
    dc_dates: Vec<String>,
    dc_identifier: String,
}

/// Parses a `ListRecords` response.
pub fn parse_page(text: &str) -> Result<Page, PageError> {
    let mut reader = Reader::from_str(text);
    let mut page = Page::default();
    let mut path: Vec<String> = Vec::new();
    let mut buffer = String::new();
    let mut record: Option<RecordState> = None;
    let mut error_code: Option<String> = None;
    let mut saw_root_end = false;
    let mut saw_list = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| PageError::Malformed(format!("{e} at byte {}", reader.error_position())))?;
        match event {
            Event::Start(start) => {
                let name = local(&start);
                buffer.clear();
                on_start(&start, &name, &mut record, &mut page, &mut error_code);
                if name == "ListRecords" {
                    saw_list = true;
                }
                path.push(name);
            }
            Event::Empty(start) => {
                let name = local(&start);
                buffer.clear();
                on_start(&start, &name, &mut record, &mut page, &mut error_code);
                on_end(&name, &path, &mut buffer, &mut record, &mut page, &mut error_code)?;
            }
            Event::End(end) => {
                let name = path.pop().unwrap_or_default();
                let _ = end;
                on_end(&name, &path, &mut buffer, &mut record, &mut page, &mut error_code)?;
                buffer.clear();
                if path.is_empty() {
                    saw_root_end = name == "OAI-PMH";
                }
            }
            Event::Text(t) => buffer.push_str(&t.xml10_content()),
            Event::CData(c) => buffer.push_str(&c),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => buffer.push(c),
                _ => match &*r {
                    "quot" => buffer.push('"'),
                    "amp" => buffer.push('&'),
                    "lt" => buffer.push('<'),
                    "gt" => buffer.push('>'),
                    "apos" => buffer.push('\''),
                    other => {
                        buffer.push('&');
                        buffer.push_str(other);
                        buffer.push(';');
                    }
                },
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root_end {
        return Err(PageError::Malformed(
            "the document ends before </OAI-PMH> (cut short)".into(),
        ));
    }
    if !saw_list && !page.no_records_match {
        return Err(PageError::Malformed(
            "neither <ListRecords> nor <error> in the answer".into(),
        ));
    }
    Ok(page)
}

fn local(start: &BytesStart<'_>) -> String {
    start.local_name().as_ref().to_string()
}

fn attribute(start: &BytesStart<'_>, name: &str) -> Option<String> {
    start
        .attributes()
        .flatten()
        .find(|a| {
            let key = a.key.as_ref();
            key == name || key.rsplit(':').next() == Some(name)
        })
        .map(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map(|v| v.into_owned())
                .unwrap_or_else(|_| a.value.to_string())
        })
}

fn on_start(
    start: &BytesStart<'_>,
    name: &str,
    record: &mut Option<RecordState>,
    page: &mut Page,
    error_code: &mut Option<String>,
) {
    match name {
        "record" => *record = Some(RecordState::default()),
        "header" => {
            if let Some(r) = record.as_mut() {
                r.deleted = attribute(start, "status").as_deref() == Some("deleted");
            }
        }
        "metadata" => {
            if let Some(r) = record.as_mut() {
                r.in_metadata = true;
            }
        }
        "arXiv" | "arXivRaw" | "dc" => {
            if let Some(r) = record.as_mut().filter(|r| r.in_metadata && r.format.is_none()) {
                r.format = Some(match name {
                    "arXiv" => "arXiv",
                    "arXivRaw" => "arXivRaw",
                    _ => "dc",
                });
            }
        }
        "version" => {
            if let Some(r) = record.as_mut() {
                r.version = attribute(start, "version")
                    .and_then(|v| v.trim_start_matches('v').parse().ok())
                    .unwrap_or(r.versions.len() as u32 + 1);
            }
        }
        "resumptionToken" => {
            page.complete_list_size = attribute(start, "completeListSize").and_then(|v| v.parse().ok());
        }
        "error" => *error_code = Some(attribute(start, "code").unwrap_or_default()),
        _ => {}
    }
}

fn on_end(
    name: &str,
    path: &[String],
    buffer: &mut String,
    record: &mut Option<RecordState>,
    page: &mut Page,
    error_code: &mut Option<String>,
) -> Result<(), PageError> {
    let parent = path.last().map(String::as_str).unwrap_or("");
    let text = std::mem::take(buffer);
    match name {
        "responseDate" if record.is_none() => page.response_date = text.trim().to_string(),
        "resumptionToken" => {
            let token = text.trim();
            page.token = (!token.is_empty()).then(|| token.to_string());
        }
        "error" => {
            let code = error_code.take().unwrap_or_default();
            match code.as_str() {
                "noRecordsMatch" => page.no_records_match = true,
                "badResumptionToken" => return Err(PageError::BadResumptionToken(text.trim().to_string())),
                _ => {
                    return Err(PageError::Protocol {
                        code,
                        message: text.trim().to_string(),
                    });
                }
            }
        }
        "record" => {
            if let Some(state) = record.take() {
                finish_record(state, page);
            }
        }
        _ => {
            if let Some(r) = record.as_mut() {
                if r.in_metadata {
                    metadata_field(r, name, parent, text);
                } else if name == "identifier" && parent == "header" {
                    r.header_id = text.trim().to_string();
                }
            }
        }
    }
    Ok(())
}

fn metadata_field(r: &mut RecordState, name: &str, parent: &str, text: String) {
    let p = &mut r.paper;
    match (r.format, name) {
        (Some("dc"), "title") => p.title = text,
        (Some("dc"), "creator") => p.authors.push(match text.split_once(", ") {
            Some((keyname, forenames)) => Author {
                keyname: keyname.to_string(),
                forenames: forenames.to_string(),
                suffix: String::new(),
            },
            None => Author {
                keyname: text,
                ..Author::default()
            },
        }),
        (Some("dc"), "description") => match text.strip_prefix("Comment: ") {
            Some(comment) if p.comment.is_empty() => p.comment = comment.to_string(),
            _ if p.abstract_text.is_empty() => p.abstract_text = text,
            _ => {}
        },
        (Some("dc"), "date") => r.dc_dates.push(text.trim().to_string()),
        (Some("dc"), "identifier") => {
            if let Some(id) = text.trim().strip_prefix("http://arxiv.org/abs/") {
                r.dc_identifier = id.to_string();
            } else if let Some(id) = text.trim().strip_prefix("https://arxiv.org/abs/") {
                r.dc_identifier = id.to_string();
            }
        }
        (Some("dc"), _) => {}
        (_, "id") => p.id = text.trim().to_string(),
        (_, "title") => p.title = text,
        (_, "abstract") => p.abstract_text = text,
        (_, "categories") => p.categories = text.split_whitespace().map(str::to_string).collect(),
        (_, "comments") => p.comment = text,
        (_, "journal-ref") => p.journal_ref = text,
        (_, "doi") => p.doi = text,
        (_, "license") => p.license = text,
        (_, "created") => r.created = text.trim().to_string(),
        (_, "updated") => r.updated = text.trim().to_string(),
        (_, "keyname") if parent == "author" => r.author.keyname = text,
        (_, "forenames") if parent == "author" => r.author.forenames = text,
        (_, "suffix") if parent == "author" => r.author.suffix = text,
        (_, "author") => p.authors.push(std::mem::take(&mut r.author)),
        (Some("arXivRaw"), "authors") => p.authors_text = text,
        (_, "date") if parent == "version" => r.versions.push((r.version, text.trim().to_string())),
        _ => {}
    }
}

fn finish_record(state: RecordState, page: &mut Page) {
    let RecordState {
        deleted,
        header_id,
        format,
        mut paper,
        created,
        updated,
        mut versions,
        dc_dates,
        dc_identifier,
        ..
    } = state;
    let header_id = header_id
        .strip_prefix("oai:arXiv.org:")
        .unwrap_or(&header_id)
        .to_string();
    if deleted {
        page.deleted += 1;
        return;
    }
    let Some(format) = format else {
        page.skipped
            .push(format!("record {header_id:?} has no arXiv metadata; skipped"));
        return;
    };
    if paper.id.is_empty() {
        paper.id = if dc_identifier.is_empty() {
            header_id.clone()
        } else {
            dc_identifier
        };
    }
    if paper.id.is_empty() {
        page.skipped
            .push("a record without an identifier; skipped".to_string());
        return;
    }
    let dates: Vec<String> = match format {
        "arXivRaw" => {
            versions.sort_by_key(|(n, _)| *n);
            versions.into_iter().map(|(_, d)| d).collect()
        }
        "arXiv" => [created, updated].into_iter().filter(|d| !d.is_empty()).collect(),
        _ => {
            let last = dc_dates.last().filter(|_| dc_dates.len() > 1).cloned();
            dc_dates.first().cloned().into_iter().chain(last).collect()
        }
    };
    if dates.is_empty() {
        page.skipped
            .push(format!("record {} has no date; skipped", paper.id));
        return;
    }
    paper.version_dates = dates;
    page.records.push(paper);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ingest/testdata");

    fn real(name: &str) -> Page {
        let bytes = std::fs::read(format!("{TESTDATA}/{name}")).unwrap();
        parse_page(&decode_body(&bytes)).unwrap()
    }

    fn wrap(records: &str, tail: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OAI-PMH xmlns=\"http://www.openarchives.org/OAI/2.0/\">\
             <responseDate>2024-01-02T03:04:05Z</responseDate><request verb=\"ListRecords\">x</request>\
             <ListRecords>{records}{tail}</ListRecords></OAI-PMH>"
        )
    }

    #[test]
    fn a_full_arxiv_record_field_by_field() {
        let xml = wrap(
            r#"<record><header><identifier>oai:arXiv.org:2301.00001</identifier><datestamp>2023-01-03</datestamp></header>
            <metadata><arXiv xmlns="http://arxiv.org/OAI/arXiv/"><id>2301.00001</id><created>2023-01-01</created>
            <updated>2023-01-02</updated><authors><author><keyname>Doe</keyname><forenames>John</forenames></author>
            <author><keyname>Smith</keyname><forenames>Jane</forenames><suffix>Jr</suffix><affiliation>X</affiliation></author></authors>
            <title>Test Paper
  Title</title><categories>cs.AI cs.CL</categories><comments>5 pages</comments><journal-ref>J. Test 1</journal-ref>
            <doi>10.1234/test.2023</doi><license>http://creativecommons.org/licenses/by/4.0/</license>
            <abstract>  This is a &quot;test&quot; abstract &amp; more.
</abstract></arXiv></metadata></record>"#,
            "",
        );
        let page = parse_page(&xml).unwrap();
        assert_eq!(page.response_date, "2024-01-02T03:04:05Z");
        assert_eq!(page.token, None);
        let p = &page.records[0];
        assert_eq!(p.id, "2301.00001");
        assert_eq!(p.title, "Test Paper\n  Title");
        assert_eq!(p.abstract_text, "  This is a \"test\" abstract & more.\n");
        assert_eq!(p.categories, ["cs.AI", "cs.CL"]);
        assert_eq!(
            p.authors,
            [
                Author {
                    keyname: "Doe".into(),
                    forenames: "John".into(),
                    suffix: String::new()
                },
                Author {
                    keyname: "Smith".into(),
                    forenames: "Jane".into(),
                    suffix: "Jr".into()
                }
            ]
        );
        assert_eq!(p.version_dates, ["2023-01-01", "2023-01-02"]);
        assert_eq!(p.doi, "10.1234/test.2023");
        assert_eq!(p.comment, "5 pages");
        assert_eq!(p.journal_ref, "J. Test 1");
        assert_eq!(p.license, "http://creativecommons.org/licenses/by/4.0/");
    }

    #[test]
    fn deleted_and_metadata_less_records_are_skipped_and_counted() {
        let xml = wrap(
            r#"<record><header status="deleted"><identifier>oai:arXiv.org:2301.00001</identifier></header></record>
            <record><header><identifier>oai:arXiv.org:2301.00002</identifier></header></record>"#,
            "<resumptionToken cursor=\"0\" completeListSize=\"3\"/>",
        );
        let page = parse_page(&xml).unwrap();
        assert!(page.records.is_empty());
        assert_eq!(page.deleted, 1);
        assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
        assert!(page.skipped[0].contains("2301.00002"));
        assert_eq!(page.token, None, "an empty final token ends the list");
        assert_eq!(page.complete_list_size, Some(3));
    }

    #[test]
    fn oai_errors_are_told_apart() {
        let error = |code: &str| {
            format!(
                "<OAI-PMH><responseDate>2024-01-01T00:00:00Z</responseDate><request>x</request>\
                 <error code=\"{code}\">text</error></OAI-PMH>"
            )
        };
        let empty = parse_page(&error("noRecordsMatch")).unwrap();
        assert!(empty.no_records_match && empty.records.is_empty());
        assert_eq!(
            parse_page(&error("badResumptionToken")).unwrap_err(),
            PageError::BadResumptionToken("text".into())
        );
        assert!(matches!(
            parse_page(&error("cannotDisseminateFormat")).unwrap_err(),
            PageError::Protocol { code, .. } if code == "cannotDisseminateFormat"
        ));
    }

    #[test]
    fn a_page_cut_short_or_not_xml_is_malformed() {
        let full = wrap("", "<resumptionToken>abc</resumptionToken>");
        for cut in [full.len() / 2, full.len() - 5] {
            assert!(
                matches!(parse_page(&full[..cut]), Err(PageError::Malformed(_))),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            parse_page("<html>Service Unavailable"),
            Err(PageError::Malformed(_))
        ));
        assert!(matches!(
            parse_page("<html><body/></html>"),
            Err(PageError::Malformed(_))
        ));
        assert_eq!(parse_page(&full).unwrap().token.as_deref(), Some("abc"));
    }

    #[test]
    fn latin1_bytes_and_control_characters_do_not_fail_the_page() {
        let xml = wrap(
            "<record><header><identifier>oai:arXiv.org:1607.08199</identifier></header><metadata><arXiv>\
             <id>1607.08199</id><created>2016-07-27</created><title>A\u{1}B</title>\
             <journal-ref>\u{fffd}</journal-ref></arXiv></metadata></record>",
            "",
        );
        let bytes = xml.replace('\u{fffd}', "\u{0}").into_bytes();
        let mut latin1 = Vec::new();
        for b in bytes {
            if b == 0 {
                latin1.extend_from_slice(b"\xc9pijournal de G\xe9om\xe9trie");
            } else {
                latin1.push(b);
            }
        }
        let page = parse_page(&decode_body(&latin1)).unwrap();
        assert_eq!(page.records[0].journal_ref, "Épijournal de Géométrie");
        assert_eq!(page.records[0].title, "A\u{1}B");
    }

    #[test]
    fn real_arxiv_pages_parse_into_the_right_papers() {
        let page = real("ListRecords_arXiv_set-physics-hep-th_from-2017-12-14.xml");
        assert_eq!(page.response_date, "2017-12-14T12:56:31Z");
        assert_eq!(page.records.len(), 3);
        assert_eq!(page.token, None);
        let p = &page.records[0];
        assert_eq!(p.id, "1412.8323");
        assert_eq!(
            p.title,
            "Toolbox for reconstructing quantum theory from rules on information\n  acquisition"
        );
        assert_eq!(p.categories[0], "quant-ph");
        assert_eq!(p.version_dates, ["2014-12-29", "2017-12-13"]);
        assert!(
            p.abstract_text
                .starts_with("  We develop an operational approach")
        );
        assert!(
            p.abstract_text
                .ends_with("of quantum theory in terms of questions.\n")
        );
        assert_eq!(p.authors[0].keyname, "Hoehn");
        assert_eq!(p.authors[0].forenames, "Philipp A");
        let ex = real("ListRecords_arXiv_set-physics-hep-ex_from-2017-12-14.xml");
        let ids: Vec<_> = ex.records.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["1706.05371", "1706.09418", "1707.00874"]);
        assert_eq!(ex.records[1].doi, "10.1140/epjc/s10052-017-5414-4");
        assert_eq!(ex.records[0].authors.len(), 13);
    }

    #[test]
    fn the_real_arxiv_raw_page_gives_versions_entities_and_two_dois() {
        let page = real("ListRecords_arXivRaw_from-2014-10-01_with-resumptionToken.xml");
        assert_eq!(page.records.len(), 6);
        assert_eq!(page.token.as_deref(), Some("726959|1001"));
        assert_eq!(page.complete_list_size, Some(58011));
        let first = &page.records[0];
        assert_eq!(first.id, "0704.0471");
        assert_eq!(
            first.title,
            "Density dependence of the symmetry energy and the nuclear equation of\n  state: A Dynamical and Statistical model perspective"
        );
        assert!(
            first
                .abstract_text
                .contains("extremely \" stiff \" and \" soft \"\nform")
        );
        assert_eq!(first.doi, "10.1103/PhysRevC.76.024606 10.1103/PhysRevC.76.039902");
        assert_eq!(
            first.authors_text,
            "D.V. Shetty, S.J. Yennello, and G.A. Souliotis"
        );
        assert_eq!(first.version_dates, ["Tue, 3 Apr 2007 22:04:11 GMT"]);
        let second = &page.records[1];
        assert_eq!(second.id, "0704.0716");
        assert_eq!(
            second.version_dates,
            [
                "Thu, 5 Apr 2007 12:45:03 GMT",
                "Fri, 28 Sep 2007 15:13:43 GMT",
                "Fri, 29 Feb 2008 16:05:39 GMT",
                "Fri, 14 Nov 2008 09:07:25 GMT"
            ]
        );
        assert_eq!(second.categories, ["math-ph", "math.MP"]);
        assert_eq!(
            second.comment,
            "54 pages, 2 figures; v2 updated and slightly expanded; v3 changes in\n  some proofs; v4 slightly expanded"
        );
        assert_eq!(
            second.license,
            "http://arxiv.org/licenses/nonexclusive-distrib/1.0/"
        );
    }

    #[test]
    fn the_real_oai_dc_page_parses() {
        let page = real("ListRecords_oai_dc_set-cs_from-2024-01-25_with-resumptionToken.xml");
        assert_eq!(page.records.len(), 5);
        assert_eq!(page.token.as_deref(), Some("6960524|1001"));
        let p = &page.records[0];
        assert_eq!(p.id, "1303.2033");
        assert_eq!(p.title, "Extended Fourier analysis of signals");
        assert_eq!(p.comment, "32 pages, 9 figures");
        assert!(
            p.abstract_text
                .starts_with(" This summary of the doctoral thesis")
        );
        assert_eq!(p.authors[0].keyname, "Liepins");
        assert_eq!(p.version_dates, ["2013-03-08", "2024-01-23"]);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
    }
}
