//! Bad input through the binary: every case gets a message naming the file
//! and line (or the config key), the documented exit code (0 when the rest
//! of the input is still used, 2 for a config or usage error, 1 for a
//! failure at run time), and nothing is written from it.

mod common;
mod harness;
#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use std::path::Path;

use common::Tree;
use harness::*;
use support::{TestServer, ok_reply};

fn server() -> TestServer {
    TestServer::start(|request, _| ok_reply(request, DIM))
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Ids in the backlog and the year files after `embed`.
fn stored_ids(tree: &Tree) -> Vec<String> {
    live_vectors(&model_dir(tree), "stored").into_keys().collect()
}

/// Writes raw bytes as a metadata file.
fn raw(tree: &Tree, rel: &str, bytes: &[u8]) {
    let path = tree.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Metadata CSV cases: (name, file, bytes, expected message, ids that must
/// be embedded, ids that must not). Each runs `embed` and exits 0: one bad
/// row must not hold back a year of papers, and none goes unexplained.
#[test]
fn bad_metadata_rows_and_files_are_named_with_their_line_and_nothing_is_written_from_them() {
    let latin1_title =
        b"paper_id,title,abstract\n1607.08199,G\xe9om\xe9trie,abstract\n2401.00002,t,a\n".to_vec();
    let latin1_unused =
        b"paper_id,title,abstract,journal_ref\n1607.08199,Bridgeland,Stability,\xc9pijournal de G\xe9om\xe9trie\n".to_vec();
    let utf16: Vec<u8> = "paper_id,title,abstract\n2401.00001,t,a\n"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut binary: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    binary.retain(|&b| b != b'\n' && b != 0);
    binary.extend_from_slice(b"\n1,2,3\n");
    type Case<'a> = (&'a str, &'a str, Vec<u8>, &'a str, &'a [&'a str], &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "unbalanced quote",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n2401.00001,t,a\n2401.00002,\"broken,a\n2401.00003,t,a\n".to_vec(),
            "metadata-2024.csv:3: a quoted field is never closed",
            &["2401.00001", "2401.00003"],
            &["2401.00002"],
        ),
        (
            "missing required columns",
            "metadata/metadata-2024.csv",
            b"paper_id,summary\n2401.00001,x\n".to_vec(),
            "metadata-2024.csv: missing required column(s) title, abstract (header has: paper_id, summary)",
            &[],
            &["2401.00001"],
        ),
        (
            "header only",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n".to_vec(),
            "metadata-2024.csv: header only, no rows",
            &[],
            &[],
        ),
        (
            "empty file",
            "metadata/metadata-2024.csv",
            Vec::new(),
            "metadata-2024.csv: empty file: no header row; file skipped",
            &[],
            &[],
        ),
        (
            "Latin-1 in a used field (the shared record 1607.08199)",
            "metadata/metadata-2016.csv",
            latin1_title,
            "metadata-2016.csv:2: invalid UTF-8 in `title`",
            &["2401.00002"],
            &["1607.08199"],
        ),
        (
            "Latin-1 in a column papersys does not use",
            "metadata/metadata-2016.csv",
            latin1_unused,
            "metadata-2016.csv:2: invalid UTF-8 in column `journal_ref`",
            &["1607.08199"],
            &[],
        ),
        (
            "NUL byte in an abstract",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n2401.00001,t,a\x00b\n2401.00002,t,a\n".to_vec(),
            "metadata-2024.csv:2: NUL byte in `abstract`",
            &["2401.00002"],
            &["2401.00001"],
        ),
        (
            "NUL byte in an id",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n\"2401.0\x001\",t,a\n2401.00002,t,a\n".to_vec(),
            "metadata-2024.csv:2: `paper_id` \"2401.0\\0",
            &["2401.00002"],
            &[],
        ),
        (
            "a UTF-16 file",
            "metadata/metadata-2024.csv",
            utf16,
            "metadata-2024.csv: the header row holds NUL bytes",
            &[],
            &["2401.00001"],
        ),
        (
            "binary garbage",
            "metadata/metadata-2024.csv",
            binary,
            "metadata-2024.csv: missing required column(s) paper_id, title, abstract",
            &[],
            &[],
        ),
        (
            "a short row",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n2401.00001,only-two\n2401.00002,t,a\n".to_vec(),
            "metadata-2024.csv:2: expected 3 fields, found 2",
            &["2401.00002"],
            &["2401.00001"],
        ),
        (
            "a long row",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n2401.00001,t,a,extra\n2401.00002,t,a\n".to_vec(),
            "metadata-2024.csv:2: expected 3 fields, found 4",
            &["2401.00002"],
            &["2401.00001"],
        ),
        (
            "an empty id",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n,t,a\n2401.00002,t,a\n".to_vec(),
            "metadata-2024.csv:2: empty `paper_id`",
            &["2401.00002"],
            &[],
        ),
        (
            "an id with a space",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n\"2401 00001\",t,a\n2401.00002,t,a\n".to_vec(),
            "metadata-2024.csv:2: `paper_id` \"2401 00001\" contains ' '",
            &["2401.00002"],
            &["2401 00001"],
        ),
        (
            "text after a closing quote",
            "metadata/metadata-2024.csv",
            b"paper_id,title,abstract\n2401.00001,\"ab\"cd,a\n2401.00002,t,a\n".to_vec(),
            "metadata-2024.csv:2: text after the closing quote of field 2",
            &["2401.00002"],
            &["2401.00001"],
        ),
        (
            "a file with no year in its name",
            "metadata/metadata-latest-dump.csv",
            b"paper_id,title,abstract\n2401.00001,t,a\n".to_vec(),
            "metadata-latest-dump.csv: no four-digit year in the file name",
            &[],
            &["2401.00001"],
        ),
    ];
    let server = server();
    for (name, file, bytes, message, embedded, not_embedded) in cases {
        let tree = Tree::with_config(&remote_config(&server.url, 100, ""));
        raw(&tree, file, &bytes);
        let out = run(&tree, &["embed"], &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert!(
            stderr(&out).contains(message),
            "{name}: wanted {message:?} in {}",
            text(&out)
        );
        let ids = if model_dir(&tree).exists() {
            stored_ids(&tree)
        } else {
            Vec::new()
        };
        for id in embedded {
            assert!(ids.iter().any(|i| i == id), "{name}: {id} embedded");
        }
        for id in not_embedded {
            assert!(!ids.iter().any(|i| i == id), "{name}: nothing written from {id}");
        }
        let json = run(&tree, &["backlog", "--json"], &[]);
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let issues = report["input_issues"].as_array().unwrap();
        assert!(!issues.is_empty(), "{name}: the --json report lists the issue");
    }
}

#[test]
fn a_one_megabyte_field_is_embedded_and_a_runaway_quote_is_cut_at_64_mb() {
    let server = server();
    let tree = Tree::with_config(&remote_config(&server.url, 100, ""));
    let big = "word ".repeat(210_000);
    tree.csv(
        "metadata/metadata-2024.csv",
        &[("2401.00001", "t", &big), ("2401.00002", "t", "a")],
    );
    let out = run(&tree, &["embed", "-q"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stored_ids(&tree), ["2401.00001", "2401.00002"]);
    // An opening quote never closed, with 65 MB behind it: memory stays bounded.
    let mut bytes = b"paper_id,title,abstract\n2401.00003,\"".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 65 << 20));
    bytes.extend_from_slice(b"\n2401.00004,t,a\n");
    raw(&tree, "metadata/metadata-2023.csv", &bytes);
    let out = run(&tree, &["backlog"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("metadata-2023.csv:2: row is longer than 64 MB"),
        "{}",
        text(&out)
    );
}

#[test]
fn duplicate_ids_keep_the_last_row_and_number_like_ids_stay_strings() {
    let server = server();
    let tree = Tree::with_config(&remote_config(&server.url, 100, ""));
    let ids = ["2401.10000", "0704.0001", "1e5", "007", "1.50", "2401.10000"];
    let rows: Vec<(&str, String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, format!("title {i}"), format!("abstract {i}")))
        .collect();
    let borrowed: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (*a, b.as_str(), c.as_str()))
        .collect();
    tree.csv("metadata/metadata-2024.csv", &borrowed);
    // The same id again in a later file of the year (files of a year are
    // read in path order, the later row winning).
    tree.csv("metadata/metadata-2024_z.csv", &[("0704.0001", "newest", "text")]);
    let out = run(&tree, &["embed"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let vectors = live_vectors(&model_dir(&tree), "ids");
    let got: Vec<&str> = vectors.keys().map(String::as_str).collect();
    assert_eq!(
        got,
        ["007", "0704.0001", "1.50", "1e5", "2401.10000"],
        "exact strings"
    );
    assert_eq!(
        vectors["2401.10000"],
        support::fake_vector("title 5\n\nabstract 5", DIM),
        "the last row wins"
    );
    assert_eq!(
        vectors["0704.0001"],
        support::fake_vector("newest\n\ntext", DIM),
        "the later file wins"
    );
    let out = run(&tree, &["backlog", "--json"], &[]);
    assert!(
        stderr(&out).contains("2 rows of 2024's metadata repeat a paper_id"),
        "{}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["models"][0]["years"][0]["duplicate_rows"], 2);
}

/// Config cases: (name, config text, expected messages). Each exits 2,
/// names the file and the key or line, and creates nothing.
#[test]
fn bad_configs_exit_2_naming_file_and_key_and_write_nothing() {
    let model = "[[embedding.models]]\nalias = \"m\"\nname = \"n\"\ndimension = 4\n";
    let remote = "[[embedding.models]]\nalias = \"r\"\nname = \"n\"\ndimension = 4\nbackend = \"openai\"\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "a wrong type",
            model.replace("dimension = 4", "dimension = \"384\""),
            vec![":4:", "`dimension`"],
        ),
        (
            "an unknown key in a model",
            format!("{model}batchsize = 8\n"),
            vec!["unknown key `batchsize`", ":5:", "did you mean `batch_size`?"],
        ),
        (
            "an unknown key in [embedding]",
            format!("[embedding]\ncheckpoint_intervall = 5\n{model}"),
            vec!["checkpoint_intervall", "line 2"],
        ),
        (
            "a negative batch size",
            format!("{model}batch_size = -4\n"),
            vec![":5:", "`batch_size` must be a positive integer, got -4"],
        ),
        (
            "a zero dimension",
            model.replace("dimension = 4", "dimension = 0"),
            vec![":4:", "`dimension`"],
        ),
        (
            "a zero checkpoint interval",
            format!("[embedding]\ncheckpoint_interval = 0\n{model}"),
            vec![":2:", "`checkpoint_interval`"],
        ),
        (
            "an output_dir escaping the data root",
            format!("[embedding]\noutput_dir = \"../../etc\"\n{model}"),
            vec![":2:", "outside data_root"],
        ),
        (
            "an absolute output_dir elsewhere",
            format!("[embedding]\noutput_dir = \"/tmp/elsewhere\"\n{model}"),
            vec![":2:", "outside data_root"],
        ),
        (
            "an alias ../x",
            model.replace("\"m\"", "\"../x\""),
            vec![":2:", "\"../x\""],
        ),
        (
            "an alias with a slash",
            model.replace("\"m\"", "\"a/b\""),
            vec![":2:", "'/'"],
        ),
        (
            "an alias ..",
            model.replace("\"m\"", "\"..\""),
            vec![":2:", "not allowed"],
        ),
        (
            "an empty alias",
            model.replace("\"m\"", "\"\""),
            vec![":2:", "empty"],
        ),
        ("a duplicate alias", format!("{model}{model}"), vec!["used twice"]),
        (
            "a TOML syntax error",
            "[embedding\nx = 1\n".to_string(),
            vec!["line 1"],
        ),
        (
            "an unknown backend",
            format!("{model}backend = \"onnx\"\n"),
            vec![":5:", "\"onnx\""],
        ),
        (
            "a bad device",
            format!("{model}device = \"gpu\"\n"),
            vec![":5:", "`device`"],
        ),
        (
            "a bad precision",
            format!("{model}precision = \"int4\"\n"),
            vec![":5:", "`precision`"],
        ),
        (
            "an empty data_root",
            format!("data_root = \"\"\n{model}"),
            vec![":1:", "`data_root` is empty"],
        ),
        (
            "a server key on a native model",
            format!("{model}base_url = \"http://x\"\n"),
            vec![":5:", "`base_url` only applies to server backends"],
        ),
        (
            "a native-only key on a server model: device",
            format!("{remote}device = \"cuda\"\n"),
            vec![
                ":6:",
                "`device` only applies to the native engine",
                "backend = \"openai\"",
            ],
        ),
        (
            "a native-only key on a server model: precision",
            format!("{remote}base_url = \"http://127.0.0.1:9\"\nprecision = \"float16\"\n"),
            vec![":7:", "`precision` only applies to the native engine"],
        ),
        (
            "a native-only key on a server model: max_length",
            format!("{remote}max_length = 256\n"),
            vec![":6:", "`max_length` only applies to the native engine"],
        ),
        (
            "a threads value of zero",
            format!("{model}threads = 0\n"),
            vec![":5:", "`threads`", "a positive integer"],
        ),
        (
            "a base_url without a scheme",
            format!("{remote}base_url = \"gpu1:8000\"\n"),
            vec![":6:", "must start with http://"],
        ),
        (
            "api_key = \"env:\" with no name",
            format!("{remote}base_url = \"http://127.0.0.1:9\"\napi_key = \"env:\"\n"),
            vec![":7:", "does not name an environment variable"],
        ),
        (
            "a negative timeout",
            format!("{remote}timeout_s = -1.0\n"),
            vec![":6:", "`timeout_s`"],
        ),
        (
            "no model at all",
            "[embedding]\n".to_string(),
            vec!["defines no [[embedding.models]]"],
        ),
    ];
    for (name, config, wanted) in cases {
        let tree = Tree::with_config(&config);
        tree.csv("metadata/metadata-2024.csv", &[("2401.00001", "t", "a")]);
        let before = snapshot(tree.root());
        for command in [&["embed"][..], &["backlog"], &["status"]] {
            let out = run(&tree, command, &[]);
            assert_eq!(out.status.code(), Some(2), "{name} / {command:?}: {}", text(&out));
            let err = stderr(&out);
            if name != "no model at all" {
                assert!(err.contains("papersys.toml"), "{name}: names the file: {err}");
            }
            for w in &wanted {
                assert!(err.contains(w), "{name}: wanted {w:?} in {err}");
            }
        }
        assert_eq!(snapshot(tree.root()), before, "{name}: nothing written");
    }
    // A config that is not UTF-8, or a directory.
    let tree = Tree::new();
    std::fs::write(tree.path("papersys.toml"), b"data_root = \"\xff\"\n").unwrap();
    let out = run(&tree, &["status"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("papersys.toml") && stderr(&out).contains("UTF-8"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(tree.path("papersys.toml")).unwrap();
    std::fs::create_dir(tree.path("papersys.toml")).unwrap();
    let out = run(&tree, &["status"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("cannot read config"), "{}", text(&out));
}

#[test]
fn bad_command_lines_exit_2() {
    let tree = Tree::new();
    tree.csv("metadata/metadata-2024.csv", &[("2401.00001", "t", "a")]);
    for (args, wanted) in [
        (&["embed", "--years", "24"][..], "\"24\""),
        (&["embed", "--years", "2025-2020"], "backwards"),
        (&["embed", "--limit", "-1"], "'-1'"),
        (&["embed", "--model", "nope"], "no model `nope`"),
        (&["embed", "--frobnicate"], "--frobnicate"),
    ] {
        let out = run(&tree, args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(wanted), "{args:?}: {}", text(&out));
    }
    let disabled = Tree::with_config(&common::CONFIG.replace("[embedding]", "[embedding]\nenabled = false"));
    let out = run(&disabled, &["embed"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("enabled = false"), "{}", text(&out));
}

fn tiny_bert() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("backends/native/tests/fixtures/tiny-bert")
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, dst).unwrap();
    }
}

/// Model directories: missing tokenizer.json, weights of the wrong shape,
/// a dimension that differs from the model's, a path that does not exist.
/// The run stops before embedding anything, naming the file or tensor.
#[test]
fn broken_model_directories_and_a_wrong_dimension_stop_before_anything_is_embedded() {
    type Break = fn(&Path);
    let cases: [(&str, Break, usize, &[&str], i32); 4] = [
        (
            "no tokenizer.json",
            |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap(),
            32,
            &["tokenizer.json"],
            1,
        ),
        (
            "weights of the wrong shape",
            |d| {
                let config = d.join("config.json");
                let text = std::fs::read_to_string(&config)
                    .unwrap()
                    .replace("\"intermediate_size\": 64", "\"intermediate_size\": 65");
                std::fs::write(config, text).unwrap();
            },
            32,
            &["encoder.layer.0.intermediate.dense.weight", "[64, 32]"],
            1,
        ),
        (
            "a dimension that differs from the model's",
            |_| {},
            384,
            &["32", "384", "`dimension`"],
            1,
        ),
        (
            "a model path that does not exist",
            |d| std::fs::remove_dir_all(d).unwrap(),
            32,
            &["papersys.toml:5:", "`model_path`", "does not exist"],
            2,
        ),
    ];
    for (name, damage, dimension, wanted, code) in cases {
        let tree = Tree::new();
        let model = tree.path("model");
        copy_dir(&tiny_bert(), &model);
        damage(&model);
        std::fs::write(
            tree.path("papersys.toml"),
            format!(
                "[[embedding.models]]\nalias = \"tiny\"\nname = \"tiny-bert\"\ndimension = {dimension}\nmodel_path = \"model\"\n"
            ),
        )
        .unwrap();
        tree.csv("metadata/metadata-2024.csv", &[("2401.00001", "t", "a")]);
        let out = run(&tree, &["embed"], &[]);
        assert_eq!(out.status.code(), Some(code), "{name}: {}", text(&out));
        for w in wanted {
            assert!(stderr(&out).contains(w), "{name}: wanted {w:?}: {}", text(&out));
        }
        if code == 2 {
            // The path itself, never a silent fall-back to the cache's copy.
            let shown = model.display().to_string();
            assert!(
                stderr(&out).contains(&shown),
                "{name}: wanted {shown}: {}",
                text(&out)
            );
        }
        assert!(
            stderr(&out).contains("`tiny`"),
            "{name}: names the model: {}",
            text(&out)
        );
        let dir = tree.path("embeddings/tiny");
        assert!(
            papersys::store::manifest::year_files(&dir).unwrap().is_empty(),
            "{name}: no vector written"
        );
    }
}

#[test]
fn empty_and_missing_metadata_directories_and_a_data_root_that_is_a_file() {
    let server = server();
    let tree = Tree::with_config(&remote_config(&server.url, 100, ""));
    let out = run(&tree, &["embed"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stderr(&out).contains("nothing to embed"), "{}", text(&out));
    std::fs::remove_dir(tree.path("metadata")).unwrap();
    let out = run(&tree, &["embed"], &[]);
    assert_eq!(out.status.code(), Some(2), "a config problem: {}", text(&out));
    assert!(stderr(&out).contains("metadata") && stderr(&out).contains("[ingestion].output_dir"));
    let file_root = Tree::with_config(&format!(
        "data_root = \"root-file\"\n{}",
        remote_config(&server.url, 100, "")
    ));
    std::fs::write(file_root.path("root-file"), b"not a directory").unwrap();
    let out = run(&file_root, &["embed"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("root-file"), "{}", text(&out));
    assert_eq!(
        std::fs::read(file_root.path("root-file")).unwrap(),
        b"not a directory"
    );
}
