//! `papersys ingest` against a loopback OAI-PMH server serving real arXiv
//! records: paging, every fault a harvest must survive, windows committed
//! one by one, the harvest state, and what the rows look like.

mod common;
mod oai_server;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::Tree;
use oai_server::{Fault, OaiServer, Record, real_records};
use papersys::metadata::{PaperRecord, read_records};
use predicates::str::contains;

/// A config pointing at `url`; each `key = value` line of `overrides`
/// replaces the default of that key or adds one.
fn config(url: &str, overrides: &str) -> String {
    let defaults = [
        "output_dir = \"metadata\"".to_string(),
        format!("oai_base_url = \"{url}\""),
        "metadata_prefix = \"arXivRaw\"".to_string(),
        "request_interval = 0".to_string(),
        "retry_delay = 0.01".to_string(),
        "max_retries = 3".to_string(),
        "request_timeout = 2".to_string(),
        "window_days = 7".to_string(),
    ];
    let key = |line: &str| line.split('=').next().unwrap_or_default().trim().to_string();
    let overridden: Vec<String> = overrides.lines().map(key).collect();
    let mut lines: Vec<String> = defaults
        .into_iter()
        .filter(|line| !overridden.contains(&key(line)))
        .collect();
    lines.extend(overrides.lines().map(str::to_string));
    format!(
        "[ingestion]\n{}\n\n[embedding]\n[[embedding.models]]\nalias = \"jasper_v1\"\nname = \"test/model\"\ndimension = 4\n",
        lines.join("\n")
    )
}

fn tree(server: &OaiServer, overrides: &str) -> Tree {
    Tree::with_config(&config(&server.url, overrides))
}

/// Every row of every `metadata-YYYY.csv`, by id, with the file's year.
fn rows(tree: &Tree) -> BTreeMap<String, (String, PaperRecord)> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(tree.path("metadata")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(year) = name
            .strip_prefix("metadata-")
            .and_then(|n| n.strip_suffix(".csv"))
        else {
            continue;
        };
        let mut issues = Vec::new();
        read_records(&path, &mut issues, |_, record| {
            let previous = all.insert(record.paper_id.clone(), (year.to_string(), record));
            assert!(previous.is_none(), "a paper stored twice");
        })
        .unwrap();
        assert!(issues.is_empty(), "{issues:?}");
    }
    all
}

/// Bytes of every CSV in the metadata directory.
fn csv_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn ingest(tree: &Tree, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["ingest"];
    all.extend_from_slice(args);
    tree.json(&all)
}

fn ids(records: &[Record]) -> Vec<String> {
    let mut ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids
}

const WEEK1: [&str; 4] = ["--from", "2024-01-01", "--until", "2024-01-07"];

#[test]
fn a_two_page_harvest_makes_two_requests_and_writes_arxiv_raw_rows_exactly() {
    let records = real_records(5, "2024-01-01", 3);
    let server = OaiServer::start(records.clone(), 3);
    let tree = tree(&server, "contact = \"ops@example.org\"");
    let report = ingest(&tree, &WEEK1);
    assert_eq!(server.requests(), 2);
    assert_eq!(report["requests"], 2);
    assert_eq!(report["records"], 5);
    assert_eq!(report["new"], 5);
    let seen = server.seen();
    assert_eq!(seen[0].params["metadataPrefix"], "arXivRaw");
    assert_eq!(seen[0].params["from"], "2024-01-01");
    assert_eq!(seen[0].params["until"], "2024-01-07");
    assert!(!seen[0].params.contains_key("set"));
    assert!(seen[1].params.contains_key("resumptionToken"));
    assert_eq!(
        seen[0].user_agent,
        format!("papersys/{} (+ops@example.org)", env!("CARGO_PKG_VERSION"))
    );
    let stored = rows(&tree);
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), ids(&records));
    for r in &records {
        let (year, row) = &stored[&r.id];
        assert_eq!(year, &r.published_at[..4]);
        assert_eq!(row.title, r.title, "{}", r.id);
        assert_eq!(row.abstract_text, r.abstract_text);
        assert_eq!(
            row.categories,
            r.categories.split(' ').collect::<Vec<_>>().join(";")
        );
        assert_eq!(row.primary_category, r.categories.split(' ').next().unwrap());
        assert_eq!(
            row.authors,
            papersys::ingest::row::split_author_string(&r.authors)
        );
        assert_eq!(row.published_at, r.published_at);
        assert_eq!(row.updated_at, r.updated_at);
        assert_eq!(row.doi, r.doi);
        assert_eq!(row.comment, r.comment);
        assert_eq!(row.journal_ref, r.journal_ref);
        assert_eq!(row.license, r.license);
        assert_eq!(row.source, "papersys.oai-pmh.arXivRaw");
    }
    let latest = std::fs::read_to_string(tree.path("metadata/latest.csv")).unwrap();
    assert!(latest.starts_with("paper_id,title,abstract,categories,primary_category,authors,published_at"));
}

#[test]
fn the_arxiv_format_gives_structured_authors_and_days() {
    // Every real record, quirks included, in pages of 1,000.
    let records = real_records(2694, "2024-01-02", 1);
    let server = OaiServer::start(records.clone(), 1000);
    let tree = tree(&server, "metadata_prefix = \"arXiv\"");
    let report = ingest(&tree, &WEEK1);
    assert_eq!(report["metadata_prefix"], "arXiv");
    assert_eq!(report["skipped"], 0, "{report}");
    assert_eq!(server.requests(), 3);
    let stored = rows(&tree);
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), ids(&records));
    for r in &records {
        assert_eq!(stored[&r.id].1.abstract_text, r.abstract_text, "{}", r.id);
        assert_eq!(stored[&r.id].1.title, r.title, "{}", r.id);
    }
    let r = &records[0];
    let row = &stored[&r.id].1;
    assert_eq!(row.title, r.title);
    assert_eq!(row.published_at, format!("{}T00:00:00Z", &r.published_at[..10]));
    assert_eq!(row.updated_at, format!("{}T00:00:00Z", &r.updated_at[..10]));
    assert!(row.authors.contains(';'), "{}", row.authors);
    assert_eq!(row.source, "papersys.oai-pmh.arXiv");
}

#[test]
fn every_fault_is_survived_and_each_record_stored_once() {
    let faults = [
        Fault::TooMany("1".into()),
        // An HTTP date, filled in just before its run.
        Fault::TooMany("DATE".into()),
        Fault::Unavailable(Some("0".into())),
        Fault::Unavailable(None),
        Fault::ServerError,
        Fault::Slow(Duration::from_millis(2500)),
        Fault::Drop,
        Fault::Truncated,
        Fault::ShortBody,
        Fault::Garbage,
        Fault::BadToken,
    ];
    let records = real_records(12, "2024-01-01", 7);
    for mut fault in faults {
        if let Fault::TooMany(after) = &mut fault
            && after == "DATE"
        {
            *after = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
        }
        let server = OaiServer::start(records.clone(), 5);
        // Request 1 is the second page: a fault there tests the token too.
        server.fault(1, fault.clone());
        let tree = tree(&server, "");
        let report = ingest(&tree, &WEEK1);
        assert!(report["records"].as_u64().unwrap() >= 12, "{fault:?}: {report}");
        assert_eq!(
            rows(&tree).keys().cloned().collect::<Vec<_>>(),
            ids(&records),
            "{fault:?}"
        );
        match fault {
            Fault::BadToken => assert_eq!(report["restarted_windows"], 1, "{fault:?}"),
            _ => assert_eq!(report["retries"], 1, "{fault:?}: {report}"),
        }
        if let Fault::TooMany(_) = fault {
            assert!(
                report["waited_s"].as_f64().unwrap() >= 0.9,
                "Retry-After honoured: {report}"
            );
        }
        assert!(tree.path("metadata/harvest-state.json").is_file());
    }
}

#[test]
fn no_records_match_is_an_empty_window_not_an_error() {
    let server = OaiServer::start(real_records(4, "2024-01-10", 1), 100);
    let tree = tree(&server, "");
    let report = ingest(&tree, &["--from", "2024-01-01", "--until", "2024-01-14"]);
    assert_eq!(report["windows"][0]["records"], 0);
    assert_eq!(report["windows"][0]["completed"], true);
    assert_eq!(report["windows"][1]["records"], 4);
    assert_eq!(rows(&tree).len(), 4);
}

#[test]
fn a_window_failing_after_max_retries_exits_1_naming_it_and_keeps_earlier_windows() {
    let records = real_records(20, "2024-01-01", 14);
    let server = OaiServer::start(records.clone(), 100);
    // Request 0 is the first window; every later one fails.
    server.fail_from(1, Fault::ServerError);
    let tree = tree(&server, "max_retries = 2");
    tree.cmd(&["ingest", "--from", "2024-01-01", "--until", "2024-01-14"])
        .assert()
        .code(1)
        .stderr(contains("window 2024-01-08..2024-01-14"))
        .stderr(contains("HTTP 500"));
    assert_eq!(server.requests(), 4, "one request, then 1 + 2 retries");
    let first_week: Vec<String> = {
        let mut ids: Vec<String> = records
            .iter()
            .filter(|r| r.datestamp.as_str() <= "2024-01-07")
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(rows(&tree).keys().cloned().collect::<Vec<_>>(), first_week);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.path("metadata/harvest-state.json")).unwrap()).unwrap();
    assert_eq!(state["sets"]["*"]["until"], "2024-01-07");
    // The next run (no --from) continues from the state and completes.
    server.heal();
    let report = ingest(&tree, &["--until", "2024-01-14"]);
    assert_eq!(report["from"], "2024-01-07");
    assert_eq!(rows(&tree).keys().cloned().collect::<Vec<_>>(), ids(&records));
}

#[test]
fn harvesting_the_same_window_twice_changes_no_byte() {
    let server = OaiServer::start(real_records(40, "2024-01-01", 7), 15);
    let tree = tree(&server, "");
    ingest(&tree, &WEEK1);
    let before = csv_bytes(&tree.path("metadata"));
    assert!(before.len() >= 2, "{:?}", before.keys());
    let again = ingest(&tree, &WEEK1);
    assert_eq!(again["new"], 0);
    assert_eq!(again["updated"], 0);
    assert_eq!(again["unchanged"], 40);
    assert_eq!(csv_bytes(&tree.path("metadata")), before);
}

#[test]
fn limit_stops_after_n_records_and_leaves_the_window_open() {
    let server = OaiServer::start(real_records(3, "2024-01-01", 3), 100);
    let tree = tree(&server, "");
    let report = ingest(
        &tree,
        &["--from", "2024-01-01", "--until", "2024-01-07", "--limit", "2"],
    );
    assert_eq!(report["records"], 2);
    assert_eq!(report["new"], 2);
    assert_eq!(report["limit_reached"], true);
    assert_eq!(rows(&tree).len(), 2);
    assert!(
        !tree.path("metadata/harvest-state.json").exists(),
        "a window cut short is not complete"
    );
}

#[test]
fn a_later_updated_at_wins_and_an_older_one_does_not() {
    let mut records = real_records(3, "2024-01-01", 1);
    let server = OaiServer::start(records.clone(), 100);
    let tree = tree(&server, "");
    ingest(&tree, &WEEK1);
    let id = records[1].id.clone();
    records[1].title = "A revised title".into();
    records[1].updated_at = "2024-01-02T10:00:00Z".into();
    records[1].datestamp = "2024-01-02".into();
    server.set_records(records.clone());
    let report = ingest(&tree, &WEEK1);
    assert_eq!(report["updated"], 1);
    assert_eq!(rows(&tree)[&id].1.title, "A revised title");
    records[1].title = "An older title".into();
    records[1].updated_at = "2023-06-01T00:00:00Z".into();
    server.set_records(records);
    let report = ingest(&tree, &WEEK1);
    assert_eq!(report["updated"], 0);
    assert_eq!(report["older"], 1);
    assert_eq!(rows(&tree)[&id].1.title, "A revised title");
}

#[test]
fn an_incremental_run_continues_from_the_state_with_a_day_of_overlap() {
    let records = real_records(30, "2024-01-01", 20);
    let server = OaiServer::start(records.clone(), 100);
    let tree = tree(&server, "start_date = \"2024-01-01\"");
    let first = ingest(&tree, &["--until", "2024-01-10"]);
    assert_eq!(first["from"], "2024-01-01");
    let requests = server.requests();
    let second = ingest(&tree, &["--until", "2024-01-20"]);
    assert_eq!(second["from"], "2024-01-10");
    assert_eq!(server.seen()[requests].params["from"], "2024-01-10");
    assert_eq!(rows(&tree).keys().cloned().collect::<Vec<_>>(), ids(&records));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.path("metadata/harvest-state.json")).unwrap()).unwrap();
    assert_eq!(state["sets"]["*"]["until"], "2024-01-20");
    assert_eq!(state["sets"]["*"]["metadata_prefix"], "arXivRaw");
    // A backfill of older days leaves the state where it was.
    ingest(&tree, &["--from", "2024-01-02", "--until", "2024-01-03"]);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.path("metadata/harvest-state.json")).unwrap()).unwrap();
    assert_eq!(state["sets"]["*"]["until"], "2024-01-20");
}

#[test]
fn without_state_or_start_date_the_run_says_what_to_set() {
    let server = OaiServer::start(real_records(2, "2024-01-01", 1), 100);
    let tree = tree(&server, "");
    tree.cmd(&["ingest"])
        .assert()
        .code(2)
        .stderr(contains("start_date"))
        .stderr(contains("--from"));
    assert_eq!(server.requests(), 0);
}

#[test]
fn dry_run_asks_only_first_pages_and_writes_nothing() {
    let server = OaiServer::start(real_records(30, "2024-01-01", 14), 5);
    let tree = tree(&server, "");
    let report = ingest(
        &tree,
        &["--from", "2024-01-01", "--until", "2024-01-14", "--dry-run"],
    );
    assert_eq!(report["dry_run"], true);
    assert_eq!(server.requests(), 2, "one page per window");
    assert_eq!(report["records"], 10);
    let left: Vec<_> = std::fs::read_dir(tree.path("metadata")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn deleted_records_are_counted_and_nothing_is_removed() {
    let mut records = real_records(4, "2024-01-01", 1);
    let server = OaiServer::start(records.clone(), 100);
    let tree = tree(&server, "");
    ingest(&tree, &WEEK1);
    records[0].deleted = true;
    records[0].datestamp = "2024-01-03".into();
    server.set_records(records.clone());
    let report = ingest(&tree, &WEEK1);
    assert_eq!(report["deleted"], 1);
    assert_eq!(report["records"], 3);
    assert_eq!(rows(&tree).len(), 4);
}

#[test]
fn categories_become_sets_and_a_paper_in_two_sets_is_one_row() {
    let records = real_records(300, "2024-01-01", 5);
    let server = OaiServer::start(records.clone(), 100);
    let tree = tree(&server, "categories = [\"hep-th\", \"hep-ph\"]");
    let report = ingest(&tree, &WEEK1);
    let sets: Vec<String> = server.seen().iter().map(|s| s.params["set"].clone()).collect();
    assert_eq!(sets, ["physics:hep-th", "physics:hep-ph"]);
    let wanted: Vec<String> = {
        let mut ids: Vec<String> = records
            .iter()
            .filter(|r| r.categories.split(' ').any(|c| c == "hep-th" || c == "hep-ph"))
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        ids
    };
    let both = records
        .iter()
        .filter(|r| {
            let c: Vec<&str> = r.categories.split(' ').collect();
            c.contains(&"hep-th") && c.contains(&"hep-ph")
        })
        .count();
    assert!(both > 0, "the sample has cross-listed papers");
    assert_eq!(rows(&tree).keys().cloned().collect::<Vec<_>>(), wanted);
    assert_eq!(report["new"].as_u64().unwrap() as usize, wanted.len());
    // --category replaces the config's list for one run.
    ingest(
        &tree,
        &[
            "--from",
            "2024-01-01",
            "--until",
            "2024-01-07",
            "--category",
            "math",
        ],
    );
    assert_eq!(server.seen().last().unwrap().params["set"], "math");
}

#[test]
fn a_second_ingest_fails_at_once_while_one_holds_the_lock() {
    let server = OaiServer::start(real_records(2, "2024-01-01", 1), 100);
    let tree = tree(&server, "");
    let _held = papersys::store::lock::WriterLock::acquire(&tree.path("metadata")).unwrap();
    tree.cmd(&["ingest", "--from", "2024-01-01", "--until", "2024-01-07"])
        .assert()
        .code(1)
        .stderr(contains("another papersys process"));
    assert_eq!(server.requests(), 0);
}

#[test]
fn requests_are_spaced_by_request_interval() {
    let server = OaiServer::start(real_records(9, "2024-01-01", 3), 3);
    let tree = tree(&server, "request_interval = 0.3");
    ingest(&tree, &WEEK1);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for pair in seen.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(290), "{gap:?}");
    }
}

#[test]
fn bad_values_are_config_errors_with_their_line() {
    let server = OaiServer::start(Vec::new(), 100);
    let tree = tree(&server, "metadata_prefix = \"marcxml\"");
    let text = std::fs::read_to_string(tree.path("papersys.toml")).unwrap();
    let line = text.lines().position(|l| l.contains("marcxml")).unwrap() + 1;
    tree.cmd(&["ingest", "--from", "2024-01-01"])
        .assert()
        .code(2)
        .stderr(contains(format!("papersys.toml:{line}:")))
        .stderr(contains("metadata_prefix"));
    tree.cmd(&["ingest", "--from", "2024-13-01"])
        .assert()
        .code(2)
        .stderr(contains("--from"));
    tree.cmd(&["ingest", "--category", "nonsense.X"])
        .assert()
        .code(2)
        .stderr(contains("not an arXiv category"));
}

#[test]
fn a_revised_abstract_arriving_by_oai_pmh_makes_exactly_that_paper_stale() {
    let mut records = real_records(10, "2024-01-01", 1);
    let server = OaiServer::start(records.clone(), 100);
    let model = config(&server.url, "").replace(
        "name = \"test/model\"\ndimension = 4",
        "name = \"sentence-transformers/all-MiniLM-L6-v2\"\ndimension = 384\nbatch_size = 16",
    );
    let tree = Tree::with_config(&model);
    ingest(&tree, &WEEK1);
    let embedded = tree.json(&["embed"]);
    assert_eq!(embedded["models"][0]["embedded"], 10);
    let revised = records[4].id.clone();
    // At the start: an edit past the model's truncation would not change the vector.
    records[4].abstract_text.insert_str(0, "Revised in v2: ");
    records[4].updated_at = "2024-01-03T00:00:00Z".into();
    records[4].datestamp = "2024-01-03".into();
    server.set_records(records);
    let report = ingest(&tree, &WEEK1);
    assert_eq!(report["updated"], 1);
    assert_eq!(report["unchanged"], 9);
    let backlog = tree.json(&["backlog"]);
    assert_eq!(
        backlog["models"][0]["waiting_by_reason"],
        serde_json::json!({"stale_embedding": 1})
    );
    let waiting = common::backlog_rows(&tree.model_dir());
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].0, revised);
}

#[test]
fn killed_at_random_moments_then_rerun_every_record_is_stored_once() {
    let records = real_records(2694, "2024-01-01", 30);
    let server = OaiServer::start(records.clone(), 60);
    let tree = tree(&server, "window_days = 3\nrequest_interval = 0.002");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut rng = seed | 1;
    let args = ["ingest", "-q", "--from", "2024-01-01", "--until", "2024-01-30"];
    // How long a whole harvest takes here, so that every kill lands inside one.
    let reference = Tree::with_config(&config(&server.url, "window_days = 3\nrequest_interval = 0.002"));
    let started = std::time::Instant::now();
    reference.cmd(&args).assert().success();
    let whole = started.elapsed().as_millis() as u64;
    assert_eq!(rows(&reference).len(), records.len());
    for round in 0..4 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(20 + rng % whole.max(21));
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("papersys"))
            .arg("--config")
            .arg(tree.path("papersys.toml"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // Whatever is on disk now is readable: year files, latest.csv, the state.
        rows(&tree);
        if tree.path("metadata/harvest-state.json").exists() {
            papersys::ingest::state::HarvestState::load(&tree.path("metadata"))
                .unwrap_or_else(|e| panic!("seed {seed}, round {round}: {e}"));
        }
    }
    let report = ingest(&tree, &args[2..]);
    assert!(report["failed"].is_null(), "seed {seed}: {report}");
    assert_eq!(
        rows(&tree).keys().cloned().collect::<Vec<_>>(),
        ids(&records),
        "seed {seed}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.path("metadata/harvest-state.json")).unwrap()).unwrap();
    assert_eq!(state["sets"]["*"]["until"], "2024-01-30");
}

#[test]
fn snapshot_flag_imports_a_kaggle_file_with_the_config_categories() {
    let server = OaiServer::start(Vec::new(), 100);
    let tree = tree(&server, "categories = [\"hep-th\"]");
    let line = |id: &str, categories: &str| {
        serde_json::json!({
            "id": id, "title": "A title\n  wrapped", "abstract": "  An abstract.\n",
            "authors": "A. One and B. Two", "categories": categories,
            "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
        })
        .to_string()
    };
    let file = tree.path("snapshot.json");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            line("0704.0001", "hep-th"),
            line("0704.0002", "math.CO")
        ),
    )
    .unwrap();
    // What a killed import leaves: spilled runs of a process that is gone.
    // Pids are below 2^22 on Linux.
    let leftover = tree.path("metadata/.tmp-99999999-spill1");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("run-0"), b"x").unwrap();
    let report = ingest(&tree, &["--snapshot", file.to_str().unwrap()]);
    assert!(!leftover.exists(), "a dead import's spill directory is removed");
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["filtered_out"], 1, "{report}");
    let stored = rows(&tree);
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), ["0704.0001"]);
    assert_eq!(stored["0704.0001"].1.title, "A title\n  wrapped");
    assert_eq!(server.requests(), 0);
    tree.cmd(&[
        "ingest",
        "--snapshot",
        file.to_str().unwrap(),
        "--from",
        "2024-01-01",
    ])
    .assert()
    .code(2);
}

#[test]
fn a_retry_after_of_more_than_an_hour_ends_the_run_without_waiting() {
    let server = OaiServer::start(real_records(3, "2024-01-01", 1), 100);
    server.fault(0, Fault::Unavailable(Some("7200".into())));
    let tree = tree(&server, "");
    let started = std::time::Instant::now();
    tree.cmd(&["ingest", "--from", "2024-01-01", "--until", "2024-01-07"])
        .assert()
        .code(1)
        .stderr(contains("window 2024-01-01..2024-01-07"))
        .stderr(contains("7200 s"));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(server.requests(), 1);
}

#[test]
fn save_raw_responses_keeps_every_page_as_received() {
    let server = OaiServer::start(real_records(7, "2024-01-01", 1), 3);
    let tree = tree(&server, "save_raw_responses = true");
    ingest(&tree, &WEEK1);
    let mut pages: Vec<String> = std::fs::read_dir(tree.path("metadata/raw-responses"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    pages.sort();
    assert_eq!(pages.len(), 3);
    assert!(
        pages
            .iter()
            .all(|p| p.contains("<ListRecords>") && p.ends_with("</OAI-PMH>\n"))
    );
    assert_eq!(rows(&tree).len(), 7);
}

#[test]
fn the_summary_shows_counts_per_year_and_how_the_server_was_treated() {
    let records = real_records(5, "2024-01-01", 3);
    let server = OaiServer::start(records.clone(), 3);
    server.fault(0, Fault::ServerError);
    let tree = tree(&server, "");
    let output = tree
        .cmd(&["ingest", "--from", "2024-01-01", "--until", "2024-01-07"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("harvested 5 records (0 deleted, 0 skipped)"),
        "{stdout}"
    );
    assert!(stdout.contains("5 new, 0 updated, 0 unchanged"), "{stdout}");
    assert!(stdout.contains("3 requests, 1 retries"), "{stdout}");
    let year = &records[0].published_at[..4];
    assert!(
        stdout.lines().any(|l| l.trim_start().starts_with(year)),
        "{stdout}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("HTTP 500"), "the retry is logged: {stderr}");
    assert!(
        stderr.contains("window 2024-01-01..2024-01-07: 5 records in 2 pages"),
        "{stderr}"
    );
}
