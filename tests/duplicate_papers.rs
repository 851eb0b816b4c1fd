//! One paper in two years' CSVs (another tool filed it twice, or a move
//! left a copy behind): it belongs to the year of its newest row
//! (`updated_at`, then the later year), gets one backlog row, is counted
//! once, has one vector in that year's file, and is warned about once per
//! run naming both files. When the year it belongs to changes, its vector
//! moves there (not recomputed), and a crash in the middle of the move
//! loses nothing.

mod common;
mod harness;
#[path = "../backends/remote/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use common::Tree;
use harness::{DIM, model_dir, remote_config, run, text};
use papersys::store::year_file;
use support::{TestServer, fake_vector, ok_reply};

fn server() -> TestServer {
    TestServer::start(|request, _| ok_reply(request, DIM))
}

/// Writes `metadata/metadata-<year>.csv` with rows (id, title, updated_at);
/// the abstract is "Abstract of <id>".
fn csv(tree: &Tree, year: u32, rows: &[(&str, &str, &str)]) {
    let path = tree.path(&format!("metadata/metadata-{year}.csv"));
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer
        .write_record(["paper_id", "title", "abstract", "categories", "updated_at"])
        .unwrap();
    for (id, title, updated) in rows {
        writer
            .write_record([*id, *title, &format!("Abstract of {id}"), "cs.CL", *updated])
            .unwrap();
    }
    writer.flush().unwrap();
}

fn embedded_text(id: &str, title: &str) -> String {
    papersys::text::prepare_text(title, &format!("Abstract of {id}"))
}

/// Vectors per year file: year -> id -> vector.
fn vectors(tree: &Tree) -> BTreeMap<String, BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for (year, path) in papersys::store::manifest::year_files(&model_dir(tree)).unwrap() {
        let rows = year_file::read_rows(&path, DIM).unwrap();
        out.insert(
            year.to_string(),
            rows.into_iter().map(|r| (r.paper_id, r.embedding)).collect(),
        );
    }
    out
}

fn ids(vectors: &BTreeMap<String, BTreeMap<String, Vec<f32>>>, year: &str) -> Vec<String> {
    vectors
        .get(year)
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_paper_in_two_years_csvs_is_planned_counted_warned_about_and_embedded_once() {
    let server = server();
    let tree = Tree::with_config(&remote_config(&server.url, 1000, ""));
    csv(
        &tree,
        2023,
        &[
            ("2301.00001", "Only in 2023", "2023-01-05T00:00:00Z"),
            ("2312.00009", "Old title", "2023-12-20T10:00:00Z"),
        ],
    );
    csv(
        &tree,
        2024,
        &[
            ("2312.00009", "New title", "2024-01-03T09:00:00Z"),
            ("2401.00002", "Only in 2024", ""),
        ],
    );

    let output = run(&tree, &["backlog", "--json"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("2312.00009").count(),
        1,
        "one warning names the paper: {stderr}"
    );
    assert!(
        stderr.contains("metadata-2023.csv") && stderr.contains("metadata/metadata-2024.csv"),
        "the warning names both files: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["models"][0]["waiting"], 3, "{report}");
    let rows = common::backlog_rows(&model_dir(&tree));
    let duplicated: Vec<_> = rows.iter().filter(|r| r.0 == "2312.00009").collect();
    assert_eq!(duplicated.len(), 1, "one backlog row per paper: {rows:?}");
    assert_eq!(duplicated[0].2, "metadata/metadata-2024.csv");
    assert_eq!(duplicated[0].3, "2024");

    let status = tree.json(&["status"]);
    assert_eq!(status["models"][0]["papers"], 3, "{status}");
    assert_eq!(status["models"][0]["waiting"], 3, "{status}");
    let plan = tree.json(&["embed", "--dry-run"]);
    assert_eq!(plan["models"][0]["planned"], 3, "{plan}");

    let output = run(&tree, &["embed", "--json"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["models"][0]["embedded"], 3, "{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("2312.00009").count(),
        1,
        "warned once per run, though the run refreshes twice: {stderr}"
    );
    let stored = vectors(&tree);
    assert_eq!(ids(&stored, "2023"), ["2301.00001"]);
    assert_eq!(ids(&stored, "2024"), ["2312.00009", "2401.00002"]);
    assert_eq!(
        stored["2024"]["2312.00009"],
        fake_vector(&embedded_text("2312.00009", "New title"), DIM),
        "the newest row's text was embedded"
    );
    let after = tree.json(&["status"]);
    assert_eq!(after["models"][0]["vectors"], 3, "{after}");
    assert_eq!(after["models"][0]["waiting"], 0, "{after}");
}

#[test]
fn when_a_newer_row_appears_in_another_year_the_vector_moves_there_without_being_recomputed() {
    let server = server();
    let tree = Tree::with_config(&remote_config(&server.url, 1000, ""));
    let old = [
        ("2301.00001", "Stays", "2023-01-05T00:00:00Z"),
        ("2312.00009", "Filed twice", "2023-12-20T10:00:00Z"),
    ];
    csv(&tree, 2023, &old);
    let output = run(&tree, &["embed", "-q"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let before = vectors(&tree);
    assert_eq!(ids(&before, "2023"), ["2301.00001", "2312.00009"]);
    let requests = server.requests();

    // Another tool files the paper again under 2024, with a newer date.
    csv(
        &tree,
        2024,
        &[
            ("2312.00009", "Filed twice", "2024-02-01T00:00:00+00:00"),
            ("2401.00002", "New", "2024-02-01T00:00:00Z"),
        ],
    );
    let plan = tree.json(&["embed", "--dry-run"]);
    assert_eq!(plan["models"][0]["planned"], 1, "only the new paper: {plan}");
    let report = tree.json(&["embed"]);
    assert_eq!(report["models"][0]["embedded"], 1, "{report}");
    let sent: Vec<String> = server.recorded()[requests..]
        .iter()
        .flat_map(|r| r.inputs())
        .collect();
    assert!(
        sent.contains(&embedded_text("2401.00002", "New"))
            && !sent.contains(&embedded_text("2312.00009", "Filed twice")),
        "the moved paper was not sent again: {sent:?}"
    );
    let moved = vectors(&tree);
    assert_eq!(ids(&moved, "2023"), ["2301.00001"]);
    assert_eq!(ids(&moved, "2024"), ["2312.00009", "2401.00002"]);
    assert_eq!(moved["2024"]["2312.00009"], before["2023"]["2312.00009"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir(&tree).join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["total_rows"], 3, "{manifest}");

    // The 2023 row becomes the newest: the vector moves back on the next refresh.
    csv(
        &tree,
        2023,
        &[
            ("2301.00001", "Stays", "2023-01-05T00:00:00Z"),
            ("2312.00009", "Filed twice", "2025-01-01T00:00:00Z"),
        ],
    );
    let backlog = tree.json(&["backlog"]);
    assert_eq!(backlog["models"][0]["waiting"], 0, "{backlog}");
    let back = vectors(&tree);
    assert_eq!(ids(&back, "2023"), ["2301.00001", "2312.00009"]);
    assert_eq!(ids(&back, "2024"), ["2401.00002"]);
}

/// The refresh state lets an unchanged year reuse its rows; a newer row of
/// one of its papers in another year's CSV must still take the paper out
/// of it (the caches are keyed by every metadata file, not the year's own,
/// and the changed year's ids are checked against the others' id hashes).
#[test]
fn a_year_whose_files_did_not_change_still_gives_up_a_paper_that_now_belongs_elsewhere() {
    let server = server();
    let tree = Tree::with_config(&remote_config(&server.url, 1000, ""));
    csv(
        &tree,
        2023,
        &[
            ("2301.00001", "Stays", "2023-01-05T00:00:00Z"),
            ("2312.00009", "Waits", "2023-12-20T10:00:00Z"),
        ],
    );
    csv(&tree, 2024, &[("2401.00002", "Other", "2024-02-01T00:00:00Z")]);
    assert_eq!(tree.json(&["backlog"])["models"][0]["waiting"], 3);
    // The next refresh finds the duplicate through 2023's saved id hashes,
    // without the rest of 2023's metadata.
    let hashes = tree.path("embeddings/.cache/metadata-index/2023.ids");
    assert!(hashes.exists(), "{} was saved", hashes.display());
    // Only 2024's CSV changes: 2023's inputs are as the refresh state saw them.
    csv(
        &tree,
        2024,
        &[
            ("2312.00009", "Waits", "2024-01-10T00:00:00Z"),
            ("2401.00002", "Other", "2024-02-01T00:00:00Z"),
        ],
    );
    let report = tree.json(&["backlog"]);
    assert_eq!(report["models"][0]["waiting"], 3, "{report}");
    let rows = common::backlog_rows(&model_dir(&tree));
    let years: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.3.as_str())).collect();
    assert_eq!(
        years,
        [
            ("2301.00001", "2023"),
            ("2312.00009", "2024"),
            ("2401.00002", "2024")
        ]
    );
    let years = report["models"][0]["years"].as_array().unwrap();
    assert_eq!(years[0]["papers"], 1, "{report}");
    assert_eq!(
        years[0]["duplicate_rows"], 0,
        "not a repeat within 2023: {report}"
    );
    assert_eq!(years[1]["papers"], 2, "{report}");
}

/// SIGKILL between the two file replacements of a move: the vector is then
/// in both files (never in none), and the next refresh finishes the move.
#[test]
fn a_move_killed_half_way_loses_nothing_and_the_next_refresh_finishes_it() {
    if !cfg!(feature = "fault-injection") {
        harness::unavailable("the kill points (--features fault-injection)");
        return;
    }
    let server = server();
    let tree = Tree::with_config(&remote_config(&server.url, 1000, ""));
    csv(
        &tree,
        2023,
        &[("2312.00009", "Filed twice", "2023-12-20T10:00:00Z")],
    );
    let output = run(&tree, &["embed", "-q"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let vector = vectors(&tree)["2023"]["2312.00009"].clone();
    csv(
        &tree,
        2024,
        &[("2312.00009", "Filed twice", "2024-02-01T00:00:00Z")],
    );

    let output = run(
        &tree,
        &["backlog"],
        &[("PAPERSYS_FAULT_POINT", "relocate.after_move:1".to_string())],
    );
    assert!(harness::killed(&output), "the kill landed: {}", text(&output));
    let half = vectors(&tree);
    assert_eq!(ids(&half, "2023"), ["2312.00009"], "still in the old file");
    assert_eq!(ids(&half, "2024"), ["2312.00009"], "already in the new one");

    let output = run(&tree, &["backlog", "-q"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let done = vectors(&tree);
    assert_eq!(ids(&done, "2023"), Vec::<String>::new());
    assert_eq!(done["2024"]["2312.00009"], vector);
    harness::check_manifest(&model_dir(&tree), "after the move");
}
