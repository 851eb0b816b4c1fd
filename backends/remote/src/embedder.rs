//! [`RemoteEmbedder`]: the [`Embedder`] that sends batches to a fleet of servers.

use std::time::{Duration, Instant};

use papersys_backend_core::{
    BatchingHint, EmbedError, Embedder, Embeddings, ModelIdentity, Pooling, PreparedBatch, Secret,
};

use crate::fleet::{Fleet, Policy, Server, ServerStats, Wire};
use crate::options::{Encoding, RemoteOptions, ServerUrl};
use crate::protocol::{self, Extras};
use crate::rate::{TokenBucket, estimate_tokens};
use crate::transport::{self, Call, Failure, FailureKind};

/// Embeds through OpenAI-compatible `/v1/embeddings` servers.
///
/// Thread-safe: the pipeline calls [`Embedder::embed`] from
/// `max_concurrency × servers` threads at once, one request batch per
/// call. Each call goes to the least loaded healthy server, is retried
/// with backoff (on another server when there is one) and only ever
/// returns complete, checked vectors. See the crate documentation for the
/// failure policy.
pub struct RemoteEmbedder {
    identity: ModelIdentity,
    model: String,
    api_key: Option<Secret>,
    request_batch_size: usize,
    max_concurrency: usize,
    timeout: Duration,
    max_retries: u32,
    extras: Extras,
    fleet: Fleet,
    limiter: Option<TokenBucket>,
}

/// What [`RemoteEmbedder::check`] found at one server.
#[derive(Debug)]
pub struct ServerCheck {
    /// The server's base URL (credentials masked).
    pub server: String,
    /// Round-trip time of a one-text request, or why it failed.
    pub outcome: Result<Duration, EmbedError>,
}

impl RemoteEmbedder {
    /// Checks `options` and sets up one connection pool per server. Does not
    /// contact any server (see [`RemoteEmbedder::check`]).
    pub fn new(options: RemoteOptions) -> Result<Self, EmbedError> {
        options.validate()?;
        let urls = options
            .base_urls
            .iter()
            .map(|raw| ServerUrl::parse(raw))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, url) in urls.iter().enumerate() {
            if urls[..i].iter().any(|other| other.endpoint == url.endpoint) {
                return Err(EmbedError::Unsupported(format!(
                    "base_urls lists {} twice",
                    url.display
                )));
            }
        }
        let pool = options.max_concurrency * urls.len();
        let direct = agent(&options, pool, true);
        let proxied = agent(&options, pool, false);
        let servers = urls
            .into_iter()
            .map(|url| Server {
                agent: if url.loopback {
                    direct.clone()
                } else {
                    proxied.clone()
                },
                url,
            })
            .collect();
        let wire = match options.encoding {
            Encoding::Float => Wire::Float,
            Encoding::Base64 => Wire::Base64,
            Encoding::Auto => Wire::Base64Trial,
        };
        let fleet = Fleet::new(
            servers,
            wire,
            Policy {
                max_concurrency: options.max_concurrency,
                backoff_base: options.backoff_base,
                backoff_max: options.backoff_max,
                breaker_threshold: options.breaker_threshold,
                breaker_cooldown: options.breaker_cooldown,
            },
        );
        let identity = ModelIdentity {
            name: options.model.clone(),
            revision: None,
            weights_sha256: None,
            dimension: options.expected_dimension,
            max_tokens: options.truncate_prompt_tokens.unwrap_or(0),
            pooling: Pooling::Unknown,
            // A server does not say; with pooling unknown it is not compared.
            normalize: false,
            document_prefix: options.document_prefix.clone(),
            backend: "openai".into(),
            precision: None,
        };
        Ok(RemoteEmbedder {
            identity,
            model: options.model,
            api_key: options.api_key,
            request_batch_size: options.request_batch_size,
            max_concurrency: options.max_concurrency,
            timeout: options.timeout,
            max_retries: options.max_retries,
            extras: Extras {
                dimensions: options.dimensions,
                truncate_prompt_tokens: options.truncate_prompt_tokens,
            },
            fleet,
            limiter: options.tokens_per_minute.map(TokenBucket::new),
        })
    }

    /// Sends a one-text request to every server at once and reports what
    /// each answered; also settles whether each takes base64.
    ///
    /// Meant for the start of a run, to fail fast: returns an error when no
    /// server answers, or when any answers with something retrying cannot
    /// fix (a refused key, an unknown model, vectors of the wrong
    /// dimension). Servers that are merely down are listed in the `Ok`
    /// reports, so the caller can warn and go on with the others. A server
    /// that answers 429 or 503 is busy, not down: it is asked again under
    /// the same retry, `Retry-After` and backoff policy as the batches.
    pub fn check(&self) -> Result<Vec<ServerCheck>, EmbedError> {
        let texts = vec![format!("{}papersys check", self.identity.document_prefix)];
        let outcomes: Vec<Result<Duration, Failure>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.fleet.servers.len())
                .map(|index| {
                    let texts = &texts;
                    scope.spawn(move || self.check_one(index, texts))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Failure {
                            kind: FailureKind::Fatal,
                            message: "health check panicked".into(),
                            retry_after: None,
                            busy: false,
                        })
                    })
                })
                .collect()
        });
        let any_ok = outcomes.iter().any(Result::is_ok);
        let named = |keep: &dyn Fn(&Failure) -> bool| -> Vec<String> {
            self.fleet
                .servers
                .iter()
                .zip(&outcomes)
                .filter_map(|(server, outcome)| match outcome {
                    Err(failure) if keep(failure) => {
                        Some(format!("{}: {}", server.url.display, failure.message))
                    }
                    _ => None,
                })
                .collect()
        };
        let fatal = named(&|f| f.kind == FailureKind::Fatal);
        if !any_ok || !fatal.is_empty() {
            let all_busy = outcomes.iter().all(|o| o.as_ref().is_err_and(|f| f.busy));
            let failing = named(&|_| true);
            let message = if !fatal.is_empty() {
                format!("a server refuses this model's requests: {}", fatal.join("; "))
            } else if all_busy {
                format!(
                    "every embedding server is busy ({}); they answer, but kept asking papersys to wait. \
                     Try again later, or raise `max_retries` to wait longer",
                    failing.join("; ")
                )
            } else {
                format!(
                    "no embedding server answers ({}). Start an OpenAI-compatible embedding server \
                     (vLLM, TEI, Infinity, Ollama) serving {:?} and set `base_url` to its address",
                    failing.join("; "),
                    self.model
                )
            };
            let names: Vec<&str> = self
                .fleet
                .servers
                .iter()
                .map(|s| s.url.display.as_str())
                .collect();
            return Err(EmbedError::Remote {
                server: names.join(", "),
                message,
            });
        }
        Ok(self
            .fleet
            .servers
            .iter()
            .zip(outcomes)
            .map(|(server, outcome)| ServerCheck {
                server: server.url.display.clone(),
                outcome: outcome.map_err(|failure| EmbedError::Remote {
                    server: server.url.display.clone(),
                    message: failure.message,
                }),
            })
            .collect())
    }

    /// One server's health check. A busy answer (429 or 503) is retried
    /// under the batches' policy: up to `max_retries` more attempts, each
    /// after the wait `Retry-After` asks for or the exponential backoff,
    /// and each wait is logged.
    fn check_one(&self, index: usize, texts: &[String]) -> Result<Duration, Failure> {
        let server = &self.fleet.servers[index];
        let mut retries = 0u32;
        loop {
            let wire = self.fleet.wire(index);
            let body = protocol::request_body(&self.model, texts, wire.format(), self.extras);
            let started = Instant::now();
            match transport::exchange(&server.agent, &server.url, &self.call(&body, wire, texts.len())) {
                Ok(_) => {
                    self.fleet.learn_wire(index, wire, true);
                    return Ok(started.elapsed());
                }
                Err(failure) if failure.kind == FailureKind::EncodingRejected => {
                    self.fleet.learn_wire(index, wire, false);
                }
                Err(failure) if failure.busy && retries < self.max_retries => {
                    retries += 1;
                    let wait = self.fleet.backoff(retries, failure.retry_after);
                    tracing::warn!(
                        "{} is busy ({}); waiting {:.1} s before asking again (retry {retries} of {})",
                        server.url.display,
                        failure.message,
                        wait.as_secs_f64(),
                        self.max_retries
                    );
                    std::thread::sleep(wait);
                }
                Err(mut failure) => {
                    if failure.busy {
                        failure.message =
                            format!("{} (still busy after {} attempts)", failure.message, retries + 1);
                    }
                    return Err(failure);
                }
            }
        }
    }

    /// Counters and health of every server, e.g. for the end-of-run summary.
    pub fn server_stats(&self) -> Vec<ServerStats> {
        self.fleet.stats()
    }

    fn call<'a>(&'a self, body: &'a [u8], wire: Wire, texts: usize) -> Call<'a> {
        Call {
            api_key: self.api_key.as_ref(),
            body,
            base64_trial: wire == Wire::Base64Trial,
            texts,
            dimension: self.identity.dimension,
            model: &self.model,
            timeout: self.timeout,
        }
    }
}

impl Embedder for RemoteEmbedder {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn batching(&self) -> BatchingHint {
        BatchingHint {
            batch_size: self.request_batch_size,
            max_in_flight: self.max_concurrency * self.fleet.servers.len(),
        }
    }

    /// Puts the document prefix before every text.
    fn prepare(&self, texts: Vec<String>) -> Result<PreparedBatch, EmbedError> {
        let prefix = &self.identity.document_prefix;
        if prefix.is_empty() {
            return Ok(PreparedBatch::Texts(texts));
        }
        Ok(PreparedBatch::Texts(
            texts.into_iter().map(|text| format!("{prefix}{text}")).collect(),
        ))
    }

    /// Sends the batch as one request and returns its vectors in input
    /// order, or an error naming the server; never part of a batch.
    fn embed(&self, batch: &PreparedBatch) -> Result<Embeddings, EmbedError> {
        let texts = match batch {
            PreparedBatch::Texts(texts) => texts,
            PreparedBatch::Tokens(_) => {
                return Err(EmbedError::Unsupported(
                    "the remote backend sends texts; it cannot embed token ids".into(),
                ));
            }
        };
        let dimension = self.identity.dimension;
        if texts.is_empty() {
            return Embeddings::new(dimension, Vec::new());
        }
        let cost: u64 = texts.iter().map(|t| estimate_tokens(t)).sum();
        let mut bodies: [Option<Vec<u8>>; 2] = [None, None];
        let mut attempts = 0u32;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.acquire(cost);
            }
            let lease = self.fleet.acquire()?;
            let wire = lease.wire;
            let format = wire.format();
            let body = bodies[format as usize]
                .get_or_insert_with(|| protocol::request_body(&self.model, texts, format, self.extras));
            let server = lease.server();
            match transport::exchange(&server.agent, &server.url, &self.call(body, wire, texts.len())) {
                Ok(data) => {
                    lease.succeed();
                    return Embeddings::new(dimension, data);
                }
                Err(failure) if failure.kind == FailureKind::EncodingRejected => {
                    lease.reject_base64(&failure)
                }
                Err(failure) => {
                    let name = server.url.display.clone();
                    lease.fail(&failure);
                    attempts += 1;
                    if failure.kind == FailureKind::Fatal {
                        return Err(EmbedError::Remote {
                            server: name,
                            message: failure.message,
                        });
                    }
                    if attempts > self.max_retries {
                        return Err(EmbedError::Remote {
                            server: name,
                            message: format!("{} (gave up after {attempts} attempts)", failure.message),
                        });
                    }
                    tracing::debug!(server = %name, attempt = attempts, error = %failure.message, "retrying embedding request");
                }
            }
        }
    }
}

impl std::fmt::Debug for RemoteEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<&str> = self
            .fleet
            .servers
            .iter()
            .map(|s| s.url.display.as_str())
            .collect();
        f.debug_struct("RemoteEmbedder")
            .field("model", &self.model)
            .field("servers", &servers)
            .field("api_key", &self.api_key)
            .field("dimension", &self.identity.dimension)
            .finish_non_exhaustive()
    }
}

/// A client for all servers of one kind: loopback ones never go through a
/// proxy, the others honour `HTTPS_PROXY`/`NO_PROXY` and friends. Statuses
/// come back as responses (to read `Retry-After` and error bodies) and
/// redirects are not followed (a POST must not turn into a GET, nor the key
/// travel elsewhere).
fn agent(options: &RemoteOptions, pool: usize, direct: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(options.timeout))
        .max_idle_connections(pool.max(1))
        .max_idle_connections_per_host(options.max_concurrency)
        // Below uvicorn's 5 s keep-alive (vLLM, Infinity), so an idle
        // connection is dropped here before the server drops it.
        .max_idle_age(Duration::from_secs(4))
        .user_agent(concat!("papersys/", env!("CARGO_PKG_VERSION")));
    if direct {
        config = config.proxy(None);
    }
    config.build().new_agent()
}
