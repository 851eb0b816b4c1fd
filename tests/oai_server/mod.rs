//! A loopback OAI-PMH server for the ingestion tests and benchmark: it pages
//! real arXiv records (`../shared/data/arxiv-real/records.jsonl`) in the
//! `arXiv` and `arXivRaw` formats, by datestamp and set, and can inject
//! each fault a harvest must survive. Plain std sockets, one thread per
//! connection, HTTP/1.1 keep-alive.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One paper as the server holds it.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: String,
    pub title: String,
    pub abstract_text: String,
    /// Space separated, primary first.
    pub categories: String,
    /// Authors as one string (`A. One, B. Two and C. Three`).
    pub authors: String,
    /// ISO-8601 UTC.
    pub published_at: String,
    /// ISO-8601 UTC.
    pub updated_at: String,
    pub doi: String,
    pub comment: String,
    pub journal_ref: String,
    pub license: String,
    /// `YYYY-MM-DD`: when the record last changed (what from/until select on).
    pub datestamp: String,
    /// A deleted record: header only.
    pub deleted: bool,
}

/// Path of the real records: `shared/` beside the checkout (`../shared`),
/// or beside a worktree's parent (`../../shared`).
pub fn records_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let beside = root.join("../shared/data/arxiv-real/records.jsonl");
    if beside.is_file() {
        return beside;
    }
    root.join("../../shared/data/arxiv-real/records.jsonl")
}

/// The first `n` real records, with datestamps spread over `days` days from
/// `first_day` (record i on day i % days).
pub fn real_records(n: usize, first_day: &str, days: usize) -> Vec<Record> {
    let path = records_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the real records {} are needed by this test: {e}", path.display()));
    let first: jiff::civil::Date = first_day.parse().unwrap();
    text.lines()
        .take(n)
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let day = first
                .checked_add(jiff::Span::new().days((i % days) as i64))
                .unwrap();
            let published = s("published_at");
            let updated = if s("updated_at").is_empty() {
                published.clone()
            } else {
                s("updated_at")
            };
            Record {
                id: s("paper_id"),
                title: s("title"),
                abstract_text: s("abstract"),
                categories: s("categories"),
                authors: s("authors"),
                published_at: published,
                updated_at: updated,
                doi: s("doi"),
                comment: s("comment"),
                journal_ref: s("journal_ref"),
                license: s("license"),
                datestamp: day.to_string(),
                deleted: false,
            }
        })
        .collect()
}

/// What the server does to one request instead of answering it.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 with this `Retry-After` value.
    TooMany(String),
    /// 503, with a `Retry-After` when given.
    Unavailable(Option<String>),
    /// 500.
    ServerError,
    /// Waits this long, then answers normally (longer than the client's timeout).
    Slow(Duration),
    /// Closes the connection without a word.
    Drop,
    /// A 200 whose XML stops halfway (Content-Length matching what is sent).
    Truncated,
    /// A 200 announcing more bytes than it sends, then closing.
    ShortBody,
    /// An OAI-PMH `badResumptionToken` error.
    BadToken,
    /// A 200 that is not XML.
    Garbage,
}

/// A request as the server read it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub params: HashMap<String, String>,
    pub user_agent: String,
    pub at: Instant,
}

struct Shared {
    records: Mutex<Vec<Record>>,
    page_size: Mutex<usize>,
    faults: Mutex<HashMap<usize, Fault>>,
    /// Fault every request after this number (a window that never recovers).
    fail_from: Mutex<Option<(usize, Fault)>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// A running server; stops when dropped.
pub struct OaiServer {
    pub url: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    port: u16,
}

impl OaiServer {
    pub fn start(records: Vec<Record>, page_size: usize) -> OaiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            records: Mutex::new(records),
            page_size: Mutex::new(page_size),
            faults: Mutex::new(HashMap::new()),
            fail_from: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&accept_shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        OaiServer {
            url: format!("http://127.0.0.1:{port}/oai"),
            shared,
            accept: Some(accept),
            port,
        }
    }

    /// Injects `fault` into request number `n` (0-based, counting every request).
    pub fn fault(&self, n: usize, fault: Fault) {
        self.shared.faults.lock().unwrap().insert(n, fault);
    }

    /// Injects `fault` into every request from number `n` on.
    pub fn fail_from(&self, n: usize, fault: Fault) {
        *self.shared.fail_from.lock().unwrap() = Some((n, fault));
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        self.shared.faults.lock().unwrap().clear();
        *self.shared.fail_from.lock().unwrap() = None;
    }

    /// Replaces the records served.
    pub fn set_records(&self, records: Vec<Record>) {
        *self.shared.records.lock().unwrap() = records;
    }

    pub fn records(&self) -> Vec<Record> {
        self.shared.records.lock().unwrap().clone()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }
}

impl Drop for OaiServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut user_agent = String::new();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "user-agent" => user_agent = value.trim().to_string(),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        if length > 0 {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let params = parse_query(target.split_once('?').map_or("", |(_, q)| q));
        let number = {
            let mut seen = shared.seen.lock().unwrap();
            seen.push(Seen {
                params: params.clone(),
                user_agent,
                at: Instant::now(),
            });
            seen.len() - 1
        };
        let fault = shared.faults.lock().unwrap().remove(&number).or_else(|| {
            shared
                .fail_from
                .lock()
                .unwrap()
                .as_ref()
                .filter(|(from, _)| number >= *from)
                .map(|(_, f)| f.clone())
        });
        let body = answer(shared, &params);
        let result = match fault {
            None => respond(&mut stream, 200, &[], body.as_bytes()),
            Some(Fault::TooMany(after)) => respond(&mut stream, 429, &[("Retry-After", &after)], b"slow down"),
            Some(Fault::Unavailable(after)) => match after {
                Some(after) => respond(&mut stream, 503, &[("Retry-After", &after)], b"busy"),
                None => respond(&mut stream, 503, &[], b"busy"),
            },
            Some(Fault::ServerError) => respond(&mut stream, 500, &[], b"oops"),
            Some(Fault::Slow(delay)) => {
                std::thread::sleep(delay);
                respond(&mut stream, 200, &[], body.as_bytes())
            }
            Some(Fault::Drop) => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::Truncated) => respond(&mut stream, 200, &[], &body.as_bytes()[..body.len() / 2]),
            Some(Fault::ShortBody) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body.as_bytes()[..body.len() / 3]);
                let _ = stream.flush();
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Some(Fault::BadToken) => respond(
                &mut stream,
                200,
                &[],
                envelope(
                    &params,
                    "<error code=\"badResumptionToken\">The value of the resumptionToken argument is invalid or expired.</error>",
                )
                .as_bytes(),
            ),
            Some(Fault::Garbage) => respond(&mut stream, 200, &[], b"<html><body>Service Unavailable</body></html>"),
        };
        if result.is_err() {
            return;
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Other",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn envelope(params: &HashMap<String, String>, inner: &str) -> String {
    let mut attrs = String::new();
    for key in [
        "verb",
        "metadataPrefix",
        "from",
        "until",
        "set",
        "resumptionToken",
    ] {
        if let Some(v) = params.get(key) {
            attrs.push_str(&format!(" {key}=\"{}\"", escape(v)));
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OAI-PMH xmlns=\"http://www.openarchives.org/OAI/2.0/\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n<responseDate>{}</responseDate>\n\
         <request{attrs}>http://127.0.0.1/oai</request>\n{inner}\n</OAI-PMH>\n",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// The setSpecs a category belongs to, from the narrowest up.
fn sets_of(category: &str) -> Vec<String> {
    let Ok(spec) = papersys::ingest::config::category_set_spec(category) else {
        return Vec::new();
    };
    let parts: Vec<&str> = spec.spec.split(':').collect();
    (1..=parts.len()).map(|n| parts[..n].join(":")).collect()
}

fn in_set(record: &Record, set: Option<&String>) -> bool {
    match set {
        None => true,
        Some(set) => record
            .categories
            .split_whitespace()
            .any(|c| sets_of(c).contains(set)),
    }
}

/// The answer to a (fault-free) request.
fn answer(shared: &Shared, params: &HashMap<String, String>) -> String {
    if params.get("verb").map(String::as_str) != Some("ListRecords") {
        return envelope(params, "<error code=\"badVerb\">only ListRecords here</error>");
    }
    // Query state travels in the token: from|until|set|prefix|cursor.
    let (from, until, set, prefix, cursor) = match params.get("resumptionToken") {
        Some(token) => {
            let parts: Vec<&str> = token.split('|').collect();
            if parts.len() != 5 {
                return envelope(params, "<error code=\"badResumptionToken\">unknown token</error>");
            }
            (
                parts[0].to_string(),
                parts[1].to_string(),
                (!parts[2].is_empty()).then(|| parts[2].to_string()),
                parts[3].to_string(),
                parts[4].parse::<usize>().unwrap_or(0),
            )
        }
        None => (
            params.get("from").cloned().unwrap_or_default(),
            params
                .get("until")
                .cloned()
                .unwrap_or_else(|| "9999-12-31".into()),
            params.get("set").cloned(),
            params.get("metadataPrefix").cloned().unwrap_or_default(),
            0,
        ),
    };
    if prefix != "arXiv" && prefix != "arXivRaw" {
        return envelope(
            params,
            "<error code=\"cannotDisseminateFormat\">no such format</error>",
        );
    }
    let records = shared.records.lock().unwrap();
    let mut matching: Vec<&Record> = records
        .iter()
        .filter(|r| r.datestamp >= from && r.datestamp <= until && in_set(r, set.as_ref()))
        .collect();
    matching.sort_by(|a, b| (&a.datestamp, &a.id).cmp(&(&b.datestamp, &b.id)));
    if matching.is_empty() {
        return envelope(
            params,
            "<error code=\"noRecordsMatch\">The combination of the values of the from, until, set and metadataPrefix arguments results in an empty list.</error>",
        );
    }
    let page_size = *shared.page_size.lock().unwrap();
    let end = (cursor + page_size).min(matching.len());
    let mut inner = String::from("<ListRecords>\n");
    for record in &matching[cursor..end] {
        inner.push_str(&record_xml(record, &prefix));
    }
    if end < matching.len() {
        inner.push_str(&format!(
            "<resumptionToken cursor=\"{cursor}\" completeListSize=\"{}\">{}</resumptionToken>\n",
            matching.len(),
            escape(&format!(
                "{from}|{until}|{}|{prefix}|{end}",
                set.clone().unwrap_or_default()
            ))
        ));
    } else if cursor > 0 {
        inner.push_str(&format!(
            "<resumptionToken cursor=\"{cursor}\" completeListSize=\"{}\"/>\n",
            matching.len()
        ));
    }
    inner.push_str("</ListRecords>");
    envelope(params, &inner)
}

fn rfc2822(iso: &str) -> String {
    let ts: jiff::Timestamp = iso.parse().unwrap();
    ts.strftime("%a, %-d %b %Y %H:%M:%S GMT").to_string()
}

fn split_authors(authors: &str) -> Vec<(String, String)> {
    authors
        .replace(" and ", ", ")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| match a.rsplit_once(' ') {
            Some((fore, key)) => (key.to_string(), fore.to_string()),
            None => (a.to_string(), String::new()),
        })
        .collect()
}

fn record_xml(r: &Record, prefix: &str) -> String {
    let sets: Vec<String> = r
        .categories
        .split_whitespace()
        .filter_map(|c| sets_of(c).last().cloned())
        .collect();
    let mut header = format!(
        "<header{}>\n <identifier>oai:arXiv.org:{}</identifier>\n <datestamp>{}</datestamp>\n",
        if r.deleted { " status=\"deleted\"" } else { "" },
        r.id,
        r.datestamp
    );
    for set in sets {
        header.push_str(&format!(" <setSpec>{set}</setSpec>\n"));
    }
    header.push_str("</header>\n");
    if r.deleted {
        return format!("<record>\n{header}</record>\n");
    }
    let optional = |tag: &str, value: &str| {
        if value.is_empty() {
            String::new()
        } else {
            format!("<{tag}>{}</{tag}>", escape(value))
        }
    };
    let metadata = if prefix == "arXivRaw" {
        let mut versions = format!(
            "<version version=\"v1\"><date>{}</date><size>10kb</size></version>",
            rfc2822(&r.published_at)
        );
        if r.updated_at != r.published_at {
            versions.push_str(&format!(
                "<version version=\"v2\"><date>{}</date><size>11kb</size></version>",
                rfc2822(&r.updated_at)
            ));
        }
        format!(
            "<arXivRaw xmlns=\"http://arxiv.org/OAI/arXivRaw/\">\n <id>{}</id><submitter>Someone</submitter>{versions}<title>{}</title><authors>{}</authors><categories>{}</categories>{}{}{}{}<abstract>{}</abstract></arXivRaw>",
            r.id,
            escape(&r.title),
            escape(&r.authors),
            escape(&r.categories),
            optional("comments", &r.comment),
            optional("journal-ref", &r.journal_ref),
            optional("doi", &r.doi),
            optional("license", &r.license),
            escape(&r.abstract_text)
        )
    } else {
        let authors: String = split_authors(&r.authors)
            .iter()
            .map(|(key, fore)| {
                format!(
                    "<author><keyname>{}</keyname>{}</author>",
                    escape(key),
                    if fore.is_empty() {
                        String::new()
                    } else {
                        format!("<forenames>{}</forenames>", escape(fore))
                    }
                )
            })
            .collect();
        let created = &r.published_at[..10];
        let updated = &r.updated_at[..10];
        format!(
            "<arXiv xmlns=\"http://arxiv.org/OAI/arXiv/\">\n <id>{}</id><created>{created}</created>{}<authors>{authors}</authors><title>{}</title><categories>{}</categories>{}{}{}{}<abstract>{}</abstract></arXiv>",
            r.id,
            if updated != created {
                format!("<updated>{updated}</updated>")
            } else {
                String::new()
            },
            escape(&r.title),
            escape(&r.categories),
            optional("comments", &r.comment),
            optional("journal-ref", &r.journal_ref),
            optional("doi", &r.doi),
            optional("license", &r.license),
            escape(&r.abstract_text)
        )
    };
    format!("<record>\n{header}<metadata>\n{metadata}\n</metadata>\n</record>\n")
}
