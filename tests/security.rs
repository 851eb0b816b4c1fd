//! Secrets and paths: an API key given as `env:NAME` appears in no output
//! of any command and in no file; nothing is ever written outside the data
//! root, whatever the config or the symlinks inside the data root say.

mod common;
mod harness;
#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use std::path::Path;

use common::Tree;
use harness::*;
use support::{Reply, TestServer, ok_reply};

const KEY: &str = "sk-papersys-canary-b41e77d2";

#[test]
fn an_env_api_key_appears_in_no_output_no_error_and_no_file() {
    // A careless server: echoes the Authorization header in errors, in a
    // header and in a 401.
    let server = TestServer::start(|request, n| {
        let auth = request.header("authorization").unwrap_or_default().to_string();
        if request.inputs().iter().any(|t| t.contains("POISON")) {
            return Reply::text(500, &format!("{{\"error\": \"bad request from {auth}\"}}"))
                .header("x-echo", &auth);
        }
        if n % 7 == 3 {
            return Reply::text(429, &format!("slow down, {auth}")).header("retry-after", "0");
        }
        ok_reply(request, DIM)
    });
    let tree = Tree::with_config(&remote_config(
        &server.url,
        3,
        "api_key = \"env:PAPERSYS_CANARY\"",
    ));
    papers(&tree, 2024, 10);
    tree.csv(
        "metadata/metadata-2023.csv",
        &[
            ("2301.00001", "POISON", "poisoned"),
            ("2301.00002", "fine", "paper"),
        ],
    );
    let env = [("PAPERSYS_CANARY", KEY.to_string())];
    let mut outputs = Vec::new();
    for args in [
        &["embed", "--dry-run"][..],
        &["embed", "--dry-run", "--json"],
        &["embed", "-vv"],
        &["embed", "--json", "-vv"],
        &["embed", "--reembed", "--json"],
        &["backlog", "--json"],
        &["status", "--json"],
        &["status", "-vv"],
        &["embed", "--model", "nope"],
    ] {
        let out = run(&tree, args, &env);
        outputs.push((format!("{args:?}"), out.stdout, out.stderr));
    }
    // RUST_LOG=trace turns on every crate's logs, the HTTP client's included.
    let mut traced = std::process::Command::new(assert_cmd::cargo::cargo_bin("papersys"));
    let out = traced
        .arg("--config")
        .arg(tree.path("papersys.toml"))
        .args(["embed", "--reembed"])
        .env("PAPERSYS_CANARY", KEY)
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    outputs.push(("RUST_LOG=trace".into(), out.stdout, out.stderr));
    // A server that refuses the key outright.
    let refusing = TestServer::start(|request, _| {
        let auth = request.header("authorization").unwrap_or_default().to_string();
        Reply::text(401, &format!("invalid key {auth}"))
    });
    let refused = Tree::with_config(&remote_config(
        &refusing.url,
        3,
        "api_key = \"env:PAPERSYS_CANARY\"",
    ));
    papers(&refused, 2024, 3);
    let out = run(&refused, &["embed", "--json"], &env);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    outputs.push(("401".into(), out.stdout, out.stderr));

    assert!(
        server
            .recorded()
            .iter()
            .all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))),
        "the key does reach the server"
    );
    for (what, stdout, stderr) in &outputs {
        for (stream, bytes) in [("stdout", stdout), ("stderr", stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(KEY), "{what} {stream} leaks the key:\n{text}");
            assert!(
                !text.contains(&KEY[10..]),
                "{what} {stream} leaks part of the key"
            );
        }
    }
    for root in [tree.root(), refused.root()] {
        for path in walk(root) {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(KEY),
                "{} holds the key",
                path.display()
            );
        }
    }
}

#[test]
fn debug_output_of_configs_and_errors_never_holds_a_key() {
    // Panic and error messages print values with {:?}: the config and the
    // resolved secret must not show the key there either.
    let text = remote_config("http://127.0.0.1:9", 3, &format!("api_key = \"{KEY}\""));
    let config = papersys::config::Config::parse(&text, Path::new("/srv/p/papersys.toml")).unwrap();
    assert!(!format!("{config:?}").contains(KEY));
    let papersys::config::BackendConfig::Remote(remote) = &config.models[0].backend else {
        panic!("remote");
    };
    let secret = remote
        .api_key
        .as_ref()
        .unwrap()
        .resolve("api_key", &config.models[0].alias)
        .unwrap();
    assert!(!format!("{secret:?}").contains(KEY));
    let mut options =
        papersys_backend_remote::RemoteOptions::new("m", vec!["http://127.0.0.1:9".to_string()], DIM);
    options.api_key = Some(secret);
    assert!(!format!("{options:?}").contains(KEY));
}

/// Runs `embed` with the given symlink planted; the outside directory must
/// be byte-for-byte what it was.
fn plant(
    server: &TestServer,
    what: &str,
    setup: impl FnOnce(&Tree, &Path),
    expect_success: bool,
    message: &str,
) {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), b"keep me").unwrap();
    std::fs::create_dir(outside.path().join("empty")).unwrap();
    let tree = Tree::with_config(&remote_config(&server.url, 3, ""));
    let texts = papers(&tree, 2024, 7);
    setup(&tree, outside.path());
    let before = snapshot(outside.path());
    let out = run(&tree, &["embed"], &[]);
    assert_eq!(out.status.success(), expect_success, "{what}: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(message),
        "{what}: wanted {message:?}: {}",
        text(&out)
    );
    assert_eq!(
        snapshot(outside.path()),
        before,
        "{what}: something was written outside the data root"
    );
    assert_eq!(walk(&outside.path().join("empty")).len(), 0, "{what}");
    if expect_success {
        check_complete(&tree, &texts, "", what);
        for path in walk(tree.root()) {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            // Linked directories are left alone (never written through);
            // linked files papersys writes are replaced by real files.
            // (A link read as a damaged manifest is moved aside as it is.)
            let aside = path.to_string_lossy().contains(".damaged-");
            if meta.file_type().is_symlink() && !path.is_dir() && !aside {
                let target = std::fs::canonicalize(&path).unwrap_or_default();
                assert!(
                    !target.starts_with(outside.path()),
                    "{what}: {} still links out",
                    path.display()
                );
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn symlinks_inside_the_data_root_never_lead_a_write_outside_it() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start(|request, _| ok_reply(request, DIM));
    let dir = |t: &Tree| model_dir(t);
    plant(
        &server,
        "embeddings/ linked out",
        |t, o| symlink(o.join("empty"), t.path("embeddings")).unwrap(),
        false,
        "outside the data root",
    );
    plant(
        &server,
        "the model directory linked out",
        |t, o| {
            std::fs::create_dir(t.path("embeddings")).unwrap();
            symlink(o.join("empty"), dir(t)).unwrap();
        },
        false,
        "outside the data root",
    );
    plant(
        &server,
        ".pending/ linked out",
        |t, o| {
            std::fs::create_dir_all(dir(t)).unwrap();
            symlink(o.join("empty"), dir(t).join(".pending")).unwrap();
        },
        false,
        "symbolic link",
    );
    plant(
        &server,
        "the lock file linked to a file outside",
        |t, o| {
            std::fs::create_dir_all(dir(t)).unwrap();
            symlink(o.join("precious"), dir(t).join(".papersys.lock")).unwrap();
        },
        false,
        "symbolic link",
    );
    plant(
        &server,
        "the model's .cache/ linked out",
        |t, o| {
            std::fs::create_dir_all(dir(t)).unwrap();
            symlink(o.join("empty"), dir(t).join(".cache")).unwrap();
        },
        true,
        "",
    );
    plant(
        &server,
        "the shared metadata index linked out",
        |t, o| {
            std::fs::create_dir_all(t.path("embeddings")).unwrap();
            symlink(o.join("empty"), t.path("embeddings/.cache")).unwrap();
        },
        true,
        "",
    );
    plant(
        &server,
        ".reembed/ linked out",
        |t, o| {
            std::fs::create_dir_all(dir(t)).unwrap();
            symlink(o.join("empty"), dir(t).join(".reembed")).unwrap();
        },
        false,
        "",
    );
    for name in ["manifest.json", "backlog.parquet", "2024.parquet"] {
        plant(
            &server,
            &format!("{name} linked to a file outside"),
            |t, o| {
                std::fs::create_dir_all(dir(t)).unwrap();
                symlink(o.join("precious"), dir(t).join(name)).unwrap();
            },
            true,
            "",
        );
    }
}

#[test]
fn config_values_cannot_steer_writes_out_of_the_data_root() {
    // Refused at parse time (exit 2, nothing created): covered case by case
    // in bad_input.rs; here the end-to-end check that nothing lands outside.
    let outside = tempfile::tempdir().unwrap();
    let server = TestServer::start(|request, _| ok_reply(request, DIM));
    let escape = outside.path().display().to_string();
    let base = remote_config(&server.url, 3, "");
    let output_dir =
        |dir: &str| base.replace("[embedding]\n", &format!("[embedding]\noutput_dir = \"{dir}\"\n"));
    for (what, config) in [
        ("output_dir", output_dir(&escape)),
        ("alias", base.replace(ALIAS, "../../escape")),
        ("dotted output_dir", output_dir("embeddings/../../x")),
    ] {
        let tree = Tree::with_config(&config);
        papers(&tree, 2024, 2);
        let out = run(&tree, &["embed"], &[]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert!(walk(outside.path()).is_empty(), "{what}: wrote outside");
        assert!(!tree.root().parent().unwrap().join("escape").exists(), "{what}");
    }
}
