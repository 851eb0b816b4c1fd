//! The servers, their load and health: which one gets the next request,
//! backoff after failures and the circuit breaker.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use papersys_backend_core::EmbedError;

use crate::options::ServerUrl;
use crate::protocol::Format;
use crate::transport::{Failure, FailureKind};

/// One server: where it is and the client that talks to it.
pub(crate) struct Server {
    pub url: ServerUrl,
    pub agent: ureq::Agent,
}

/// Which `encoding_format` a server gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    Float,
    /// Base64 until the server refuses it.
    Base64Trial,
    Base64,
}

impl Wire {
    pub fn format(self) -> Format {
        match self {
            Wire::Float => Format::Float,
            Wire::Base64Trial | Wire::Base64 => Format::Base64,
        }
    }
}

/// Circuit breaker of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breaker {
    /// Healthy: takes requests.
    Closed,
    /// Paused until the instant; then one probe request may go.
    Open(Instant),
    /// Paused, with the probe in flight.
    Probing,
}

#[derive(Debug)]
struct ServerState {
    in_flight: usize,
    /// Not before this instant (backoff or `Retry-After`).
    retry_at: Option<Instant>,
    /// Failures in a row that count for the breaker.
    strikes: u32,
    /// Retryable failures in a row (including 429s): the backoff exponent.
    backoff_level: u32,
    breaker: Breaker,
    wire: Wire,
    requests: u64,
    failures: u64,
    pauses: u64,
    last_error: Option<String>,
}

/// Backoff and breaker settings.
pub(crate) struct Policy {
    pub max_concurrency: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
}

/// All servers and their shared state.
pub(crate) struct Fleet {
    pub servers: Vec<Server>,
    state: Mutex<Vec<ServerState>>,
    changed: Condvar,
    policy: Policy,
}

/// Counters and health of one server, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStats {
    /// The server's base URL (credentials masked).
    pub server: String,
    /// Requests sent, including retries and failed ones.
    pub requests: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Requests in flight now.
    pub in_flight: usize,
    /// True while the circuit breaker keeps the server out of rotation.
    pub paused: bool,
    /// How often the breaker paused it.
    pub pauses: u64,
    /// Whether vectors come as base64 (`Some(true)`), float (`Some(false)`)
    /// or base64 is still on trial (`None`).
    pub base64: Option<bool>,
    /// Its most recent failure, if any.
    pub last_error: Option<String>,
}

impl Fleet {
    pub fn new(servers: Vec<Server>, wire: Wire, policy: Policy) -> Self {
        let state = servers
            .iter()
            .map(|_| ServerState {
                in_flight: 0,
                retry_at: None,
                strikes: 0,
                backoff_level: 0,
                breaker: Breaker::Closed,
                wire,
                requests: 0,
                failures: 0,
                pauses: 0,
                last_error: None,
            })
            .collect();
        Fleet {
            servers,
            state: Mutex::new(state),
            changed: Condvar::new(),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ServerState>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot on the best server: among those not paused, not backing
    /// off and below `max_concurrency`, the one with the fewest requests in
    /// flight (then fewest recent failures, then fewest requests so far).
    /// Waits while every usable server is full or backing off; fails at once
    /// when the breaker has paused every server.
    pub fn acquire(&self) -> Result<Lease<'_>, EmbedError> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut best: Option<(usize, (usize, u32, u64))> = None;
            let mut wake: Option<Instant> = None;
            let mut all_paused = true;
            for (i, s) in state.iter().enumerate() {
                let half_open = match s.breaker {
                    Breaker::Open(until) if until > now => {
                        wake = earliest(wake, until);
                        continue;
                    }
                    Breaker::Probing => {
                        all_paused = false;
                        continue;
                    }
                    Breaker::Open(_) => true,
                    Breaker::Closed => false,
                };
                all_paused = false;
                if let Some(at) = s.retry_at
                    && at > now
                {
                    wake = earliest(wake, at);
                    continue;
                }
                let full = if half_open {
                    s.in_flight > 0
                } else {
                    s.in_flight >= self.policy.max_concurrency
                };
                if full {
                    continue;
                }
                let key = (s.in_flight, s.strikes, s.requests);
                if best.is_none_or(|(_, k)| key < k) {
                    best = Some((i, key));
                }
            }
            if let Some((index, _)) = best {
                let s = &mut state[index];
                let probe = matches!(s.breaker, Breaker::Open(_));
                if probe {
                    s.breaker = Breaker::Probing;
                }
                s.in_flight += 1;
                s.requests += 1;
                return Ok(Lease {
                    fleet: self,
                    index,
                    wire: s.wire,
                    done: false,
                });
            }
            if all_paused {
                return Err(self.all_paused_error(&state, now));
            }
            state = match wake {
                Some(at) => {
                    self.changed
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    fn all_paused_error(&self, state: &[ServerState], now: Instant) -> EmbedError {
        let names: Vec<&str> = self.servers.iter().map(|s| s.url.display.as_str()).collect();
        let details: Vec<String> = self
            .servers
            .iter()
            .zip(state)
            .map(|(server, s)| {
                let left = match s.breaker {
                    Breaker::Open(until) => until.saturating_duration_since(now).as_secs_f64().ceil(),
                    _ => 0.0,
                };
                format!(
                    "{} failed {} times in a row, paused for {left:.0} s more (last error: {})",
                    server.url.display,
                    s.strikes,
                    s.last_error.as_deref().unwrap_or("none")
                )
            })
            .collect();
        EmbedError::Remote {
            server: names.join(", "),
            message: format!(
                "every server keeps failing: {}; check that they run and that `base_url(s)` point at them",
                details.join("; ")
            ),
        }
    }

    /// A snapshot of every server's counters.
    pub fn stats(&self) -> Vec<ServerStats> {
        let state = self.lock();
        self.servers
            .iter()
            .zip(state.iter())
            .map(|(server, s)| ServerStats {
                server: server.url.display.clone(),
                requests: s.requests,
                failures: s.failures,
                in_flight: s.in_flight,
                paused: s.breaker != Breaker::Closed,
                pauses: s.pauses,
                base64: match s.wire {
                    Wire::Float => Some(false),
                    Wire::Base64 => Some(true),
                    Wire::Base64Trial => None,
                },
                last_error: s.last_error.clone(),
            })
            .collect()
    }

    /// The wire format server `index` gets now.
    pub fn wire(&self, index: usize) -> Wire {
        self.lock()[index].wire
    }

    /// Records the outcome of a request made outside the slot accounting
    /// (a health check): only what was learnt about base64.
    pub fn learn_wire(&self, index: usize, used: Wire, accepted: bool) {
        let mut state = self.lock();
        let s = &mut state[index];
        if s.wire == Wire::Base64Trial && used == Wire::Base64Trial {
            s.wire = if accepted { Wire::Base64 } else { Wire::Float };
        }
    }

    /// How long to wait after the `level`-th retryable failure in a row:
    /// what `Retry-After` asked (capped, plus up to 10 %), else exponential
    /// backoff with jitter.
    pub(crate) fn backoff(&self, level: u32, retry_after: Option<Duration>) -> Duration {
        let max = self.policy.backoff_max;
        match retry_after {
            Some(asked) => {
                let asked = asked.min(max);
                asked + asked.mul_f64(0.1 * unit_random())
            }
            None => {
                let nominal = self
                    .policy
                    .backoff_base
                    .saturating_mul(1u32 << level.saturating_sub(1).min(20))
                    .min(max);
                nominal.mul_f64(0.5 + 0.5 * unit_random())
            }
        }
    }

    fn release(&self, index: usize, outcome: Outcome<'_>) {
        let mut state = self.lock();
        let server = &self.servers[index].url.display;
        let s = &mut state[index];
        s.in_flight = s.in_flight.saturating_sub(1);
        let was_probe = s.breaker == Breaker::Probing;
        match outcome {
            Outcome::Success(used) => {
                if was_probe || s.strikes > 0 {
                    tracing::info!(server = %server, "embedding server answers again");
                }
                // `retry_at` stays: a `Retry-After` another request just got still holds.
                s.strikes = 0;
                s.backoff_level = 0;
                s.breaker = Breaker::Closed;
                if used == Wire::Base64Trial && s.wire == Wire::Base64Trial {
                    s.wire = Wire::Base64;
                }
            }
            Outcome::Base64Rejected(failure) => {
                if s.wire == Wire::Base64Trial {
                    tracing::info!(server = %server, reason = %failure.message, "server does not take base64 vectors; using float");
                    s.wire = Wire::Float;
                }
                if was_probe {
                    s.breaker = Breaker::Open(Instant::now());
                }
            }
            Outcome::Failure(failure) => {
                s.failures += 1;
                s.last_error = Some(failure.message.clone());
                let now = Instant::now();
                if failure.kind != FailureKind::Fatal {
                    s.backoff_level = s.backoff_level.saturating_add(1);
                    let at = now + self.backoff(s.backoff_level, failure.retry_after);
                    s.retry_at = Some(s.retry_at.map_or(at, |old| old.max(at)));
                }
                if failure.kind == FailureKind::Transient {
                    s.strikes = s.strikes.saturating_add(1);
                    if was_probe
                        || (s.breaker == Breaker::Closed && s.strikes >= self.policy.breaker_threshold)
                    {
                        s.breaker = Breaker::Open(now + self.policy.breaker_cooldown);
                        s.pauses += 1;
                        tracing::warn!(
                            server = %server,
                            failures_in_a_row = s.strikes,
                            pause_s = self.policy.breaker_cooldown.as_secs_f64(),
                            last_error = %failure.message,
                            "embedding server keeps failing; pausing it"
                        );
                    }
                } else if was_probe {
                    // Answered, even if with a refusal: it is up again.
                    s.breaker = Breaker::Closed;
                    s.strikes = 0;
                }
            }
        }
        drop(state);
        self.changed.notify_all();
    }
}

enum Outcome<'a> {
    Success(Wire),
    Base64Rejected(&'a Failure),
    Failure(&'a Failure),
}

/// A slot on one server for one request; give it back with
/// [`Lease::succeed`], [`Lease::reject_base64`] or [`Lease::fail`] (dropping
/// it counts as a failure).
pub(crate) struct Lease<'a> {
    fleet: &'a Fleet,
    pub index: usize,
    pub wire: Wire,
    done: bool,
}

impl Lease<'_> {
    pub fn server(&self) -> &Server {
        &self.fleet.servers[self.index]
    }

    pub fn succeed(mut self) {
        self.done = true;
        self.fleet.release(self.index, Outcome::Success(self.wire));
    }

    pub fn reject_base64(mut self, failure: &Failure) {
        self.done = true;
        self.fleet.release(self.index, Outcome::Base64Rejected(failure));
    }

    pub fn fail(mut self, failure: &Failure) {
        self.done = true;
        self.fleet.release(self.index, Outcome::Failure(failure));
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.done {
            let failure = Failure {
                kind: FailureKind::Transient,
                message: "request abandoned".into(),
                retry_after: None,
                busy: false,
            };
            self.fleet.release(self.index, Outcome::Failure(&failure));
        }
    }
}

fn earliest(current: Option<Instant>, candidate: Instant) -> Option<Instant> {
    Some(current.map_or(candidate, |c| c.min(candidate)))
}

/// A random number in [0, 1) for jitter, from the standard library's
/// randomly keyed hasher (no RNG crate needed for this).
fn unit_random() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize, max_concurrency: usize) -> Fleet {
        let agent = ureq::Agent::new_with_defaults();
        let servers = (0..n)
            .map(|i| Server {
                url: ServerUrl::parse(&format!("http://127.0.0.1:{}", 10 + i)).unwrap(),
                agent: agent.clone(),
            })
            .collect();
        Fleet::new(
            servers,
            Wire::Float,
            Policy {
                max_concurrency,
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(100),
                breaker_threshold: 2,
                breaker_cooldown: Duration::from_millis(200),
            },
        )
    }

    fn transient() -> Failure {
        Failure {
            kind: FailureKind::Transient,
            message: "HTTP 500".into(),
            retry_after: None,
            busy: false,
        }
    }

    #[test]
    fn least_loaded_server_is_chosen() {
        let fleet = fleet(2, 2);
        let a = fleet.acquire().unwrap();
        let b = fleet.acquire().unwrap();
        assert_ne!(a.index, b.index);
        let c = fleet.acquire().unwrap();
        assert_eq!(
            c.index, a.index,
            "a tie goes to the server with fewer requests so far"
        );
        b.succeed();
        let d = fleet.acquire().unwrap();
        assert_ne!(d.index, c.index, "the server with no request in flight wins");
        for lease in [a, c, d] {
            lease.succeed();
        }
    }

    #[test]
    fn breaker_pauses_then_probes_then_closes() {
        let fleet = fleet(1, 4);
        for _ in 0..2 {
            fleet.acquire().unwrap().fail(&transient());
        }
        let err = fleet.acquire().err().unwrap().to_string();
        assert!(
            err.contains("http://127.0.0.1:10") && err.contains("HTTP 500"),
            "{err}"
        );
        std::thread::sleep(Duration::from_millis(250));
        let probe = fleet.acquire().unwrap();
        assert!(fleet.stats()[0].paused);
        probe.succeed();
        assert!(!fleet.stats()[0].paused);
        assert_eq!(fleet.stats()[0].pauses, 1);
    }

    #[test]
    fn backoff_grows_with_jitter_and_respects_caps() {
        let fleet = fleet(1, 1);
        for _ in 0..50 {
            let first = fleet.backoff(1, None);
            assert!(
                first >= Duration::from_millis(5) && first <= Duration::from_millis(10),
                "{first:?}"
            );
            assert!(fleet.backoff(30, None) <= Duration::from_millis(100));
            let asked = fleet.backoff(1, Some(Duration::from_secs(3600)));
            assert!(asked >= Duration::from_millis(100) && asked <= Duration::from_millis(110));
        }
    }
}
