//! The remote backend against a fault-injecting loopback server: every
//! fault ends in correct vectors after retries or in a clear error, never
//! in partial or wrong vectors.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use papersys_backend_core::{Embedder, Embeddings, PreparedBatch, Secret};
use papersys_backend_remote::{Encoding, RemoteEmbedder, RemoteOptions};
use support::{Reply, Request, TestServer, dead_url, embeddings_body, fake_vector, ok_reply};

const DIM: usize = 8;
/// What a fake server does with one request.
type Fault = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

const KEY: &str = "sk-test-7f3a9c-DO-NOT-LEAK";

fn options(urls: &[&str]) -> RemoteOptions {
    let mut o = RemoteOptions::new("fake-model", urls.iter().copied(), DIM);
    o.request_batch_size = 4;
    o.max_concurrency = 2;
    o.timeout = Duration::from_secs(5);
    o.max_retries = 3;
    o.backoff_base = Duration::from_millis(10);
    o.backoff_max = Duration::from_secs(3);
    o.breaker_threshold = 50;
    o.breaker_cooldown = Duration::from_secs(60);
    o
}

fn texts(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag} paper {i}\n\nabstract {i}"))
        .collect()
}

fn embed(
    embedder: &RemoteEmbedder,
    texts: &[String],
) -> Result<Embeddings, papersys_backend_core::EmbedError> {
    let batch = embedder.prepare(texts.to_vec()).unwrap();
    embedder.embed(&batch)
}

/// The result holds exactly the fake model's vector of each text, in order.
fn assert_correct(result: &Embeddings, texts: &[String]) {
    assert_eq!(result.len(), texts.len());
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(result.row(i), fake_vector(text, DIM).as_slice(), "row {i}");
    }
}

/// Replies `faults` in turn to the first requests, then answers correctly.
fn scripted(faults: Vec<Fault>) -> TestServer {
    TestServer::start(move |request, n| match faults.get(n) {
        Some(fault) => fault(request),
        None => ok_reply(request, DIM),
    })
}

fn always(reply: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> TestServer {
    TestServer::start(move |request, _| reply(request))
}

#[test]
fn shuffled_answers_are_put_back_in_input_order_and_the_request_is_openai_shaped() {
    let server = always(|r| ok_reply(r, DIM));
    let mut o = options(&[&format!("{}/v1/", server.url)]);
    o.api_key = Some(Secret::new(KEY));
    o.document_prefix = "passage: ".into();
    o.dimensions = Some(DIM);
    o.truncate_prompt_tokens = Some(256);
    o.encoding = Encoding::Float;
    let embedder = RemoteEmbedder::new(o).unwrap();
    let input = texts(4, "order");
    let result = embed(&embedder, &input).unwrap();
    let prefixed: Vec<String> = input.iter().map(|t| format!("passage: {t}")).collect();
    assert_correct(&result, &prefixed);
    let request = &server.recorded()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let json = request.json();
    assert_eq!(json["model"], "fake-model");
    assert_eq!(json["encoding_format"], "float");
    assert_eq!(json["dimensions"], DIM);
    assert_eq!(json["truncate_prompt_tokens"], 256);
    assert_eq!(embedder.identity().max_tokens, 256);
    assert_eq!(request.inputs(), prefixed);
    assert_eq!(embedder.batching().batch_size, 4);
    assert_eq!(embedder.batching().max_in_flight, 2);
    assert_eq!(embedder.identity().backend, "openai");
    assert!(embed(&embedder, &[]).unwrap().is_empty());
    assert_eq!(server.requests(), 1, "an empty batch sends nothing");
}

#[test]
fn connections_the_server_closed_between_requests_are_not_failures() {
    let server = always(|r| ok_reply(r, DIM).then_close());
    let embedder = RemoteEmbedder::new(options(&[&server.url])).unwrap();
    for round in 0..5 {
        let input = texts(2, &format!("closed {round}"));
        assert_correct(&embed(&embedder, &input).unwrap(), &input);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(embedder.server_stats()[0].failures, 0);
    assert_eq!(server.requests(), 5);
}

#[test]
fn rate_limits_are_retried_with_and_without_retry_after() {
    let server = scripted(vec![
        Box::new(|_| Reply::text(429, r#"{"error":"slow down"}"#)),
        Box::new(|_| Reply::text(429, "busy").header("Retry-After", "1")),
    ]);
    let embedder = RemoteEmbedder::new(options(&[&server.url])).unwrap();
    let input = texts(3, "429");
    let started = Instant::now();
    assert_correct(&embed(&embedder, &input).unwrap(), &input);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(server.requests(), 3);
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let server = scripted(vec![Box::new(|_| {
        let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
        Reply::text(503, "restarting").header("Retry-After", &when)
    })]);
    let embedder = RemoteEmbedder::new(options(&[&server.url])).unwrap();
    let input = texts(2, "date");
    let started = Instant::now();
    assert_correct(&embed(&embedder, &input).unwrap(), &input);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn server_errors_timeouts_drops_and_garbage_are_retried() {
    let server = scripted(vec![
        Box::new(|_| Reply::text(500, "oops")),
        Box::new(|_| Reply::text(502, "<html>bad gateway</html>")),
        Box::new(|r| ok_reply(r, DIM).after(Duration::from_millis(1500))),
        Box::new(|_| Reply::Drop),
        Box::new(|_| Reply::text(200, "<html>not json</html>")),
        Box::new(|_| Reply::bytes(200, embeddings_body(&[(0, vec![0.5; DIM])], false))),
        Box::new(|r| {
            let items: Vec<_> = r.inputs().iter().map(|t| (0, fake_vector(t, DIM))).collect();
            Reply::bytes(200, embeddings_body(&items, false))
        }),
    ]);
    let mut o = options(&[&server.url]);
    o.timeout = Duration::from_millis(400);
    o.max_retries = 7;
    let embedder = RemoteEmbedder::new(o).unwrap();
    let input = texts(3, "mixed");
    assert_correct(&embed(&embedder, &input).unwrap(), &input);
    assert_eq!(server.requests(), 8);
    let stats = &embedder.server_stats()[0];
    assert_eq!((stats.requests, stats.failures), (8, 7));
}

#[test]
fn retries_are_bounded_and_the_error_names_the_server_and_the_fault() {
    let one = || (0, vec![0.5; DIM]);
    let cases: Vec<(Fault, &str)> = vec![
        (Box::new(|_| Reply::text(500, "model crashed")), "HTTP 500"),
        (
            Box::new(|_| Reply::text(200, "<html>proxy error</html>")),
            "not JSON",
        ),
        (
            Box::new(move |_| Reply::bytes(200, embeddings_body(&[one()], false))),
            "returned 1 vectors for 3 texts",
        ),
        (
            Box::new(move |_| {
                Reply::bytes(200, embeddings_body(&[one(), one(), (1, vec![0.5; DIM])], false))
            }),
            "index 0 twice",
        ),
    ];
    for (reply, expected) in cases {
        let server = always(reply);
        let mut o = options(&[&server.url]);
        o.max_retries = 2;
        let embedder = RemoteEmbedder::new(o).unwrap();
        let message = embed(&embedder, &texts(3, "bounded")).unwrap_err().to_string();
        assert!(message.contains(&server.url), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("gave up after 3 attempts"), "{message}");
        assert_eq!(server.requests(), 3);
    }
}

#[test]
fn wrong_dimension_and_non_finite_values_fail_at_once() {
    let cases: Vec<(Fault, &str)> = vec![
        (
            Box::new(|r| {
                let items: Vec<_> = r
                    .inputs()
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i, fake_vector(t, DIM * 2)))
                    .collect();
                Reply::bytes(200, embeddings_body(&items, false))
            }),
            "dimension 16, expected 8",
        ),
        (
            Box::new(|r| {
                let mut items: Vec<_> = r
                    .inputs()
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i, fake_vector(t, DIM)))
                    .collect();
                items[1].1[3] = f32::NAN;
                Reply::bytes(200, embeddings_body(&items, true))
            }),
            "non-finite value (NaN) in the vector of text 1",
        ),
        (
            Box::new(|_| {
                let row = "[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]";
                let nan_row = "[0.1,null,0.1,0.1,0.1,0.1,0.1,0.1]";
                Reply::text(
                    200,
                    &format!(
                        r#"{{"data":[{{"index":0,"embedding":{row}}},{{"index":1,"embedding":{nan_row}}},{{"index":2,"embedding":{row}}}]}}"#
                    ),
                )
            }),
            "non-finite value",
        ),
        (
            Box::new(|_| Reply::text(200, r#"{"data":[{"index":0,"embedding":[NaN,0,0,0,0,0,0,0]}]}"#)),
            "NaN or Infinity",
        ),
    ];
    for (reply, expected) in cases {
        let server = always(reply);
        let embedder = RemoteEmbedder::new(options(&[&server.url])).unwrap();
        let message = embed(&embedder, &texts(3, "fatal")).unwrap_err().to_string();
        assert!(
            message.contains(expected) && message.contains(&server.url),
            "{message}"
        );
        assert_eq!(server.requests(), 1, "{expected}: not retried");
    }
}

#[test]
fn a_wrong_dimension_in_base64_from_a_server_trusted_with_it_fails_at_once() {
    let server = always(|r| {
        let items: Vec<_> = r
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, t)| (i, fake_vector(t, DIM + 1)))
            .collect();
        Reply::bytes(200, embeddings_body(&items, r.wants_base64()))
    });
    let mut o = options(&[&server.url]);
    o.encoding = Encoding::Base64;
    let embedder = RemoteEmbedder::new(o).unwrap();
    let message = embed(&embedder, &texts(3, "b64dim")).unwrap_err().to_string();
    assert!(message.contains("dimension 9, expected 8"), "{message}");
    assert_eq!(server.requests(), 1, "not retried");
    // On trial, the same answer first sends the client to float, which then fails for good.
    let embedder = RemoteEmbedder::new(options(&[&server.url])).unwrap();
    let message = embed(&embedder, &texts(3, "b64dim")).unwrap_err().to_string();
    assert!(message.contains("dimension 9, expected 8"), "{message}");
    assert_eq!(server.requests(), 3);
    assert_eq!(embedder.server_stats()[0].base64, Some(false));
}

#[test]
fn a_huge_body_is_cut_off_without_reading_it() {
    let server = always(|_| Reply::Huge { bytes: 2 << 30 });
    let embedder = RemoteEmbedder::new(options(&[&server.url])).unwrap();
    let started = Instant::now();
    let message = embed(&embedder, &texts(4, "huge")).unwrap_err().to_string();
    assert!(message.contains("larger than"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests(), 1);
}

#[test]
fn two_servers_one_failing_all_work_completes_on_the_healthy_one() {
    let healthy = always(|r| ok_reply(r, DIM).after(Duration::from_millis(5)));
    for failing_url in [None, Some(dead_url())] {
        let failing = always(|_| Reply::text(500, "CUDA out of memory"));
        let bad = failing_url.clone().unwrap_or_else(|| failing.url.clone());
        let mut o = options(&[&bad, &healthy.url]);
        o.breaker_threshold = 3;
        o.max_retries = 4;
        let embedder = RemoteEmbedder::new(o).unwrap();
        let threads = embedder.batching().max_in_flight;
        assert_eq!(threads, 4);
        let done = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (embedder, done) = (&embedder, &done);
                scope.spawn(move || {
                    for b in 0..10 {
                        let input = texts(4, &format!("fleet {t} {b}"));
                        assert_correct(&embed(embedder, &input).unwrap(), &input);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 40);
        let stats = embedder.server_stats();
        assert!(stats[0].paused && stats[0].pauses >= 1, "{stats:?}");
        assert_eq!(stats[0].requests, stats[0].failures);
        assert!(
            stats[0].requests <= 8,
            "the failing server got {} requests",
            stats[0].requests
        );
        assert!(stats[0].last_error.is_some());
        assert_eq!(stats[1].failures, 0);
    }
}

#[test]
fn when_every_server_is_paused_embed_fails_fast_naming_each() {
    let a = always(|_| Reply::text(500, "disk full"));
    let b = dead_url();
    let mut o = options(&[&a.url, &b]);
    o.breaker_threshold = 2;
    o.max_retries = 20;
    let embedder = RemoteEmbedder::new(o).unwrap();
    let started = Instant::now();
    let message = embed(&embedder, &texts(2, "paused")).unwrap_err().to_string();
    assert!(message.contains("every server keeps failing"), "{message}");
    assert!(
        message.contains(&a.url) && message.contains("disk full"),
        "{message}"
    );
    assert!(
        message.contains(&b) && message.contains("connection refused"),
        "{message}"
    );
    let sent = a.requests();
    assert_eq!(sent, 2);
    let again = embed(&embedder, &texts(2, "paused")).unwrap_err().to_string();
    assert!(again.contains("every server keeps failing"));
    assert_eq!(a.requests(), sent, "a paused server gets nothing");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_paused_server_is_probed_after_its_cooldown_and_rejoins() {
    let server = scripted(vec![Box::new(|_| Reply::Drop), Box::new(|_| Reply::Drop)]);
    let mut o = options(&[&server.url]);
    o.breaker_threshold = 2;
    o.breaker_cooldown = Duration::from_millis(300);
    let embedder = RemoteEmbedder::new(o).unwrap();
    assert!(embed(&embedder, &texts(2, "probe")).is_err());
    assert!(embedder.server_stats()[0].paused);
    std::thread::sleep(Duration::from_millis(400));
    let input = texts(2, "probe");
    assert_correct(&embed(&embedder, &input).unwrap(), &input);
    assert!(!embedder.server_stats()[0].paused);
}

#[test]
fn concurrency_reaches_but_never_exceeds_max_concurrency_per_server() {
    let a = always(|r| ok_reply(r, DIM).after(Duration::from_millis(100)));
    let b = always(|r| ok_reply(r, DIM).after(Duration::from_millis(100)));
    let mut o = options(&[&a.url, &b.url]);
    o.max_concurrency = 3;
    let embedder = RemoteEmbedder::new(o).unwrap();
    assert_eq!(embedder.batching().max_in_flight, 6);
    std::thread::scope(|scope| {
        for t in 0..10 {
            let embedder = &embedder;
            scope.spawn(move || {
                for b in 0..3 {
                    let input = texts(4, &format!("conc {t} {b}"));
                    assert_correct(&embed(embedder, &input).unwrap(), &input);
                }
            });
        }
    });
    assert_eq!((a.peak_in_flight(), b.peak_in_flight()), (3, 3));
    assert_eq!(a.requests() + b.requests(), 30);
    assert!(
        a.requests() >= 10 && b.requests() >= 10,
        "{} / {}",
        a.requests(),
        b.requests()
    );
}

#[test]
fn tokens_per_minute_paces_requests() {
    let server = always(|r| ok_reply(r, DIM));
    let mut o = options(&[&server.url]);
    // 200 tokens/s; each batch of 4 texts × 100 chars is 100 tokens.
    o.tokens_per_minute = Some(12_000);
    let embedder = RemoteEmbedder::new(o).unwrap();
    let input: Vec<String> = (0..4).map(|i| format!("{i:0>100}")).collect();
    let started = Instant::now();
    for _ in 0..6 {
        assert_correct(&embed(&embedder, &input).unwrap(), &input);
    }
    let elapsed = started.elapsed();
    // 600 tokens with a one-second (200-token) burst: at least 2 s.
    assert!(
        elapsed >= Duration::from_millis(1_800) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
}

#[test]
fn the_api_key_never_shows_in_errors_or_debug_output() {
    let echo = |status: u16| {
        move |r: &Request, _| {
            Reply::text(
                status,
                &format!("invalid token: {}", r.header("authorization").unwrap_or("-")),
            )
        }
    };
    for status in [401, 500] {
        let server = TestServer::start(echo(status));
        let mut o = options(&[&server.url]);
        o.api_key = Some(Secret::new(KEY));
        o.max_retries = 1;
        assert!(!format!("{o:?}").contains(KEY));
        let embedder = RemoteEmbedder::new(o).unwrap();
        assert!(!format!("{embedder:?}").contains(KEY));
        let error = embed(&embedder, &texts(1, "key")).unwrap_err();
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(
                !text.contains(KEY) && text.contains("invalid token: Bearer ***"),
                "{text}"
            );
        }
        for stats in embedder.server_stats() {
            assert!(!format!("{stats:?}").contains(KEY));
        }
        let check = embedder.check().unwrap_err().to_string();
        assert!(!check.contains(KEY), "{check}");
        if status == 401 {
            assert!(error.to_string().contains("check `api_key`"));
        }
    }
}

#[test]
fn base64_is_used_where_accepted_and_dropped_where_refused() {
    let accepts = always(|r| ok_reply(r, DIM));
    let refuses = always(|r| {
        if r.wants_base64() {
            Reply::text(422, r#"{"detail":"encoding_format: unexpected value"}"#)
        } else {
            ok_reply(r, DIM)
        }
    });
    let garbles = always(|r| {
        if r.wants_base64() {
            let items: Vec<_> = r
                .inputs()
                .iter()
                .enumerate()
                .map(|(i, t)| (i, fake_vector(t, DIM / 2)))
                .collect();
            Reply::bytes(200, embeddings_body(&items, true))
        } else {
            ok_reply(r, DIM)
        }
    });
    for (server, base64) in [(&accepts, true), (&refuses, false), (&garbles, false)] {
        let embedder = RemoteEmbedder::new(options(&[&server.url])).unwrap();
        assert_eq!(embedder.server_stats()[0].base64, None);
        for round in 0..3 {
            let input = texts(3, &format!("b64 {round}"));
            assert_correct(&embed(&embedder, &input).unwrap(), &input);
        }
        assert_eq!(embedder.server_stats()[0].base64, Some(base64));
        let formats: Vec<bool> = server.recorded().iter().map(Request::wants_base64).collect();
        let expected = if base64 {
            vec![true; 3]
        } else {
            vec![true, false, false, false]
        };
        assert_eq!(formats, expected);
        assert_eq!(
            embedder.server_stats()[0].failures,
            0,
            "a refused base64 is no failure"
        );
    }
    let float_only = always(|r| ok_reply(r, DIM));
    let mut o = options(&[&float_only.url]);
    o.encoding = Encoding::Float;
    let embedder = RemoteEmbedder::new(o).unwrap();
    embed(&embedder, &texts(2, "float")).unwrap();
    assert!(!float_only.recorded()[0].wants_base64());
}

#[test]
fn check_tells_which_servers_answer() {
    let up = always(|r| ok_reply(r, DIM));
    let down = dead_url();
    let embedder = RemoteEmbedder::new(options(&[&up.url, &down])).unwrap();
    let reports = embedder.check().unwrap();
    assert!(reports[0].outcome.is_ok());
    let err = reports[1].outcome.as_ref().unwrap_err().to_string();
    assert!(err.contains(&down) && err.contains("connection refused"), "{err}");
    assert_eq!(
        embedder.server_stats()[0].base64,
        Some(true),
        "check settles base64"
    );

    let only_down = RemoteEmbedder::new(options(&[&down])).unwrap();
    let message = only_down.check().unwrap_err().to_string();
    assert!(
        message.contains("Start an OpenAI-compatible embedding server") && message.contains(&down),
        "{message}"
    );

    let wrong_dim = always(|r| {
        let items: Vec<_> = r
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, t)| (i, fake_vector(t, 4)))
            .collect();
        Reply::bytes(200, embeddings_body(&items, false))
    });
    let misconfigured = RemoteEmbedder::new(options(&[&up.url, &wrong_dim.url])).unwrap();
    let message = misconfigured.check().unwrap_err().to_string();
    assert!(
        message.contains("dimension 4, expected 8") && message.contains(&wrong_dim.url),
        "{message}"
    );

    let not_found = always(|_| Reply::text(404, r#"{"detail":"Not Found"}"#));
    let wrong_path = RemoteEmbedder::new(options(&[&not_found.url])).unwrap();
    let message = wrong_path.check().unwrap_err().to_string();
    assert!(
        message.contains("HTTP 404") && message.contains("fake-model"),
        "{message}"
    );
}

#[test]
fn bad_configuration_is_refused_up_front() {
    let message = RemoteEmbedder::new(RemoteOptions::new("m", Vec::<String>::new(), 8))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("start") && message.contains("base_url"),
        "{message}"
    );
    let twice = RemoteEmbedder::new(RemoteOptions::new(
        "m",
        ["http://127.0.0.1:1/v1", "http://127.0.0.1:1"],
        8,
    ));
    assert!(twice.unwrap_err().to_string().contains("twice"));
    let tokens = RemoteEmbedder::new(RemoteOptions::new("m", ["http://127.0.0.1:1"], 8)).unwrap();
    let error = tokens
        .embed(&PreparedBatch::Tokens(Default::default()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("token ids"), "{error}");
}
