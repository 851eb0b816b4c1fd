//! A fault-injecting OpenAI-embeddings server on a loopback port, for the
//! tests and the client benchmark: plain std sockets, one thread per
//! connection, HTTP/1.1 keep-alive, and a handler that decides every reply.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;

/// A request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn inputs(&self) -> Vec<String> {
        self.json()["input"]
            .as_array()
            .expect("input is an array")
            .iter()
            .map(|v| v.as_str().expect("input holds strings").to_string())
            .collect()
    }

    pub fn wants_base64(&self) -> bool {
        self.json()["encoding_format"] == "base64"
    }
}

/// What the server does with one request.
pub enum Reply {
    /// An HTTP response; the connection stays open.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Arc<[u8]>,
    },
    /// Sleeps, then replies.
    Delay(Duration, Box<Reply>),
    /// Closes the connection without a word.
    Drop,
    /// Replies, then closes the connection (as an idle keep-alive timeout does).
    Close(Box<Reply>),
    /// 200 announcing and streaming `bytes` bytes of JSON-ish padding.
    Huge { bytes: usize },
}

impl Reply {
    pub fn bytes(status: u16, body: impl Into<Arc<[u8]>>) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::bytes(status, body.as_bytes().to_vec())
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    pub fn then_close(self) -> Reply {
        Reply::Close(Box::new(self))
    }

    pub fn after(self, delay: Duration) -> Reply {
        Reply::Delay(delay, Box::new(self))
    }
}

type Handler = dyn Fn(&Request, usize) -> Reply + Send + Sync;

#[derive(Default)]
struct Shared {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    recorded: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

/// A running server; stops when dropped.
pub struct TestServer {
    pub url: String,
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves on a free loopback port; `handler` gets each request and its
    /// 0-based number. Requests are recorded for inspection.
    pub fn start(handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> TestServer {
        Self::start_with(true, handler)
    }

    /// Like [`TestServer::start`]; `record = false` keeps no request (benchmarks).
    pub fn start_with(
        record: bool,
        handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Self::serve_on(listener, record, handler)
    }

    /// Serves on loopback port `port` without recording requests (benchmarks).
    pub fn start_on(
        port: u16,
        handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the loopback port");
        Self::serve_on(listener, false, handler)
    }

    fn serve_on(
        listener: TcpListener,
        record: bool,
        handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = accept_shared.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &shared, &*handler, record));
            }
        });
        TestServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Most requests that were being handled at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn recorded(&self) -> Vec<Request> {
        self.shared.recorded.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A loopback URL where nothing listens (connections are refused).
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn serve(stream: TcpStream, shared: &Shared, handler: &Handler, record: bool) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let number = shared.requests.fetch_add(1, Ordering::SeqCst);
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        if record {
            shared.recorded.lock().unwrap().push(request.clone());
        }
        let reply = handler(&request, number);
        let keep = send(&mut writer, reply);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !keep {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { headers, body })
}

/// Writes `reply`; false when the connection must close.
fn send(writer: &mut TcpStream, reply: Reply) -> bool {
    match reply {
        Reply::Respond {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                reason(status),
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            writer.write_all(head.as_bytes()).is_ok() && writer.write_all(&body).is_ok()
        }
        Reply::Delay(delay, reply) => {
            std::thread::sleep(delay);
            send(writer, *reply)
        }
        Reply::Drop => false,
        Reply::Close(reply) => {
            send(writer, *reply);
            false
        }
        Reply::Huge { bytes } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\n\r\n"
            );
            if writer.write_all(head.as_bytes()).is_err() || writer.write_all(b"{\"data\":[").is_err() {
                return false;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut left = bytes.saturating_sub(9);
            while left > 0 {
                let n = left.min(chunk.len());
                if writer.write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n;
            }
            false
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The vector the fake model gives `text`: deterministic, finite, distinct per text.
pub fn fake_vector(text: &str, dimension: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (0..dimension)
        .map(|_| {
            h = h
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// An embeddings response body with `items` as (index, vector) in the given order.
pub fn embeddings_body(items: &[(usize, Vec<f32>)], base64: bool) -> Vec<u8> {
    let data: Vec<serde_json::Value> = items
        .iter()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                serde_json::json!(vector)
            };
            serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "object": "list",
        "model": "fake",
        "data": data,
        "usage": {"prompt_tokens": 0, "total_tokens": 0}
    }))
    .unwrap()
}

/// A correct answer to `request` with the fake model's `dimension`-long
/// vectors, in the format asked for, items in reverse order (a valid
/// shuffle that clients must undo by `index`).
pub fn ok_reply(request: &Request, dimension: usize) -> Reply {
    let items: Vec<(usize, Vec<f32>)> = request
        .inputs()
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| (i, fake_vector(text, dimension)))
        .collect();
    Reply::bytes(200, embeddings_body(&items, request.wants_base64()))
}
