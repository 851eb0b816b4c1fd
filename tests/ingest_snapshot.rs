//! `ingest::snapshot`: Kaggle snapshot lines built from the real records in
//! `../shared/data/arxiv-real/records.jsonl` (and from the real arXivRaw
//! response), imported as `.json`, `.gz` and `.zip`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use papersys::ingest::merge::{self, LATEST_FILE, MergeOptions};
use papersys::ingest::row::{self, ArxivPaper, SOURCE_SNAPSHOT};
use papersys::ingest::snapshot::{self, SnapshotOptions};
use papersys::metadata::{PaperRecord, read_records};
use serde_json::{Value, json};

/// `../shared/data/arxiv-real` beside the repository (a worktree one level
/// deeper finds it two levels up).
fn real_data() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../shared", "../../shared"]
        .iter()
        .map(|up| repo.join(up).join("data/arxiv-real"))
        .find(|p| p.join("records.jsonl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "../shared/data/arxiv-real/records.jsonl is required beside {}",
                repo.display()
            )
        })
}

fn real_records() -> Vec<Value> {
    let path = real_data().join("records.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the real arXiv records are required)", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn rfc2822(iso: &str) -> String {
    let ts: jiff::Timestamp = iso.parse().unwrap();
    ts.strftime("%a, %-d %b %Y %H:%M:%S GMT").to_string()
}

fn null_if_empty(v: &str) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

/// A Kaggle snapshot line for a records.jsonl record: RFC 2822 version
/// dates, `null` for absent fields, and an `authors_parsed` that is a lossy
/// re-parse (as Kaggle's is), which the author string must win over.
fn kaggle_line(r: &Value) -> String {
    let s = |k: &str| r[k].as_str().unwrap().to_string();
    let mut versions = vec![json!({"version": "v1", "created": rfc2822(&s("published_at"))})];
    if s("updated_at") != s("published_at") {
        versions.push(json!({"version": "v2", "created": rfc2822(&s("updated_at"))}));
    }
    json!({
        "id": s("paper_id"),
        "submitter": null,
        "authors": s("authors"),
        "title": s("title"),
        "comments": null_if_empty(&s("comment")),
        "journal-ref": null_if_empty(&s("journal_ref")),
        "doi": null_if_empty(&s("doi")),
        "report-no": null,
        "categories": s("categories"),
        "license": null_if_empty(&s("license")),
        "abstract": s("abstract"),
        "versions": versions,
        "update_date": &s("updated_at")[..10],
        "authors_parsed": [["Lossy", "A. -B.", ""]],
    })
    .to_string()
}

/// The row records.jsonl's record must become.
fn expected_row(r: &Value) -> PaperRecord {
    let s = |k: &str| r[k].as_str().unwrap().to_string();
    // Atom-derived records carry MSC/ACM terms such as "62H05, 62H12" and
    // "G.3; I.2": separators inside an entry split it too.
    let categories = s("categories")
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join(";");
    PaperRecord {
        paper_id: s("paper_id"),
        title: s("title"),
        abstract_text: s("abstract"),
        primary_category: categories.split(';').next().unwrap().to_string(),
        categories,
        authors: row::split_author_string(&s("authors")),
        published_at: row::normalize_date(&s("published_at")).unwrap(),
        updated_at: row::normalize_date(&s("updated_at")).unwrap(),
        doi: s("doi"),
        comment: s("comment"),
        journal_ref: s("journal_ref"),
        license: s("license"),
        source: SOURCE_SNAPSHOT.to_string(),
    }
}

/// Lines that are not records: one early, one past the first batch of
/// lines handed to a parsing thread (2,048).
const BAD_LINES: [usize; 2] = [7, 2500];

/// The snapshot text: every real record, broken lines at `BAD_LINES` and a
/// blank line at the end.
fn snapshot_text(records: &[Value]) -> String {
    let mut lines: Vec<String> = records.iter().map(kaggle_line).collect();
    lines.insert(
        BAD_LINES[0] - 1,
        r#"{"id": "0704.9999", "title": "cut short"#.to_string(),
    );
    lines.insert(BAD_LINES[1] - 1, "\u{1}\u{2} not json".to_string());
    lines.push(String::new());
    lines.join("\n") + "\n"
}

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn rows_of(dir: &Path) -> Vec<PaperRecord> {
    let mut rows = Vec::new();
    for (name, _) in files_of(dir) {
        if name.starts_with("metadata-") {
            let mut issues = Vec::new();
            read_records(&dir.join(&name), &mut issues, |_, r| rows.push(r)).unwrap();
            assert!(issues.is_empty(), "{issues:?}");
        }
    }
    rows
}

fn import(file: &Path, dir: &Path, options: &SnapshotOptions) -> snapshot::SnapshotReport {
    let mut calls = 0;
    let report = snapshot::import_snapshot(file, dir, options, &mut |_| calls += 1).unwrap();
    assert!(calls >= 1, "progress is reported");
    report
}

#[test]
fn json_gz_and_zip_snapshots_import_every_real_record_by_the_row_rule() {
    let records = real_records();
    let text = snapshot_text(&records);
    let work = tempfile::tempdir().unwrap();
    let plain = work.path().join("arxiv-metadata-oai-snapshot.json");
    std::fs::write(&plain, &text).unwrap();
    let gz = work.path().join("snapshot.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(text.as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let zipped = work.path().join("arxiv.zip");
    let mut zw = zip::ZipWriter::new(std::fs::File::create(&zipped).unwrap());
    zw.start_file(
        "arxiv-metadata-oai-snapshot.json",
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
    )
    .unwrap();
    zw.write_all(text.as_bytes()).unwrap();
    zw.finish().unwrap();

    let mut trees = Vec::new();
    for file in [&plain, &gz, &zipped] {
        let dir = tempfile::tempdir().unwrap();
        let report = import(file, dir.path(), &SnapshotOptions::default());
        assert_eq!(report.counts.imported, records.len() as u64, "{}", file.display());
        assert_eq!(report.counts.bad_lines, 2);
        let named: Vec<u64> = report.issues.iter().map(|i| i.line).collect();
        assert_eq!(
            named,
            BAD_LINES.map(|l| l as u64),
            "bad lines are named by number"
        );
        assert!(report.issues[0].message.contains("not a snapshot record"));
        assert_eq!(report.counts.lines, records.len() as u64 + 3);
        assert_eq!(report.merge.totals.new, records.len() as u64);
        assert_eq!(report.merge.latest_rows, records.len() as u64);
        trees.push(dir);
    }
    let first = files_of(trees[0].path());
    for dir in &trees[1..] {
        assert_eq!(
            files_of(dir.path()),
            first,
            "the three formats give the same bytes"
        );
    }

    let dir = trees[0].path();
    let mut expected: Vec<PaperRecord> = records.iter().map(expected_row).collect();
    expected.sort_by(|a, b| (year(a), &a.paper_id).cmp(&(year(b), &b.paper_id)));
    let rows = rows_of(dir);
    assert_eq!(rows.len(), expected.len());
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    // Spot checks of the rule on known papers.
    let by_id: BTreeMap<&str, &PaperRecord> = rows.iter().map(|r| (r.paper_id.as_str(), r)).collect();
    let p = by_id["0704.0001"];
    assert_eq!(p.authors, "C. Bal\\'azs;E. L. Berger;P. M. Nadolsky;C.-P. Yuan");
    assert_eq!(
        (p.published_at.as_str(), p.updated_at.as_str()),
        ("2007-04-02T19:18:42Z", "2007-07-24T20:10:27Z")
    );
    assert!(p.abstract_text.starts_with("  A fully differential") && p.abstract_text.ends_with("events.\n"));
    let p = by_id["0704.0002"];
    assert_eq!(
        (p.categories.as_str(), p.primary_category.as_str()),
        ("math.CO;cs.CG", "math.CO")
    );
    assert_eq!(p.authors, "Ileana Streinu;Louis Theran");
    assert_eq!(p.published_at, "2007-03-31T02:26:18Z");
    assert!(files_of(dir).contains_key("metadata-2007.csv"));
    assert_eq!(
        rows_from(&dir.join(LATEST_FILE)).len(),
        records.len(),
        "latest.csv lists every row the import added"
    );
}

fn year(r: &PaperRecord) -> String {
    r.published_at[..4].to_string()
}

fn rows_from(path: &Path) -> Vec<PaperRecord> {
    let mut rows = Vec::new();
    let mut issues = Vec::new();
    read_records(path, &mut issues, |_, r| rows.push(r)).unwrap();
    assert!(issues.is_empty(), "{issues:?}");
    rows
}

#[test]
fn reimporting_changes_no_byte_and_a_small_budget_spills_to_the_same_files() {
    let records = real_records();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("snapshot.json");
    std::fs::write(&file, snapshot_text(&records)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    import(&file, dir.path(), &SnapshotOptions::default());
    let before = files_of(dir.path());
    let again = import(&file, dir.path(), &SnapshotOptions::default());
    assert_eq!(again.merge.totals.unchanged, records.len() as u64);
    assert_eq!(
        (
            again.merge.totals.new,
            again.merge.totals.updated,
            again.merge.latest_rows
        ),
        (0, 0, 0)
    );
    assert!(again.merge.totals.files_written.is_empty());
    assert_eq!(
        files_of(dir.path()),
        before,
        "no byte changes, no temporaries left"
    );

    let spilled = tempfile::tempdir().unwrap();
    let options = SnapshotOptions {
        merge: MergeOptions {
            memory_budget: 256 << 10,
        },
        ..SnapshotOptions::default()
    };
    import(&file, spilled.path(), &options);
    assert_eq!(files_of(spilled.path()), before);
}

#[test]
fn the_category_filter_keeps_matching_papers_only() {
    let records = real_records();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("snapshot.json");
    std::fs::write(&file, snapshot_text(&records)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = SnapshotOptions {
        categories: vec!["hep-th".to_string(), "math".to_string()],
        ..SnapshotOptions::default()
    };
    let report = import(&file, dir.path(), &options);
    let wanted = |cats: &str| {
        cats.split_whitespace()
            .any(|c| c == "hep-th" || c.starts_with("math.") || c == "math")
    };
    let expected = records
        .iter()
        .filter(|r| wanted(r["categories"].as_str().unwrap()))
        .count();
    assert!(expected > 50 && expected < records.len(), "{expected}");
    assert_eq!(report.counts.imported, expected as u64);
    assert_eq!(report.counts.filtered_out, (records.len() - expected) as u64);
    let rows = rows_of(dir.path());
    assert_eq!(rows.len(), expected);
    assert!(rows.iter().all(|r| wanted(&r.categories.replace(';', " "))));
}

#[test]
fn unreadable_inputs_are_named() {
    let work = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = work.path().join("nope.json");
    let err = snapshot::import_snapshot(&missing, dir.path(), &SnapshotOptions::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.json"), "{err}");

    let zipped = work.path().join("two.zip");
    let mut zw = zip::ZipWriter::new(std::fs::File::create(&zipped).unwrap());
    for name in ["a.json", "b.json"] {
        zw.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zw.write_all(b"{}\n").unwrap();
    }
    zw.finish().unwrap();
    let err = snapshot::import_snapshot(&zipped, dir.path(), &SnapshotOptions::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("two.zip") && err.contains("a.json"), "{err}");
}

fn raw_papers() -> Vec<ArxivPaper> {
    let path = real_data().join("oai/ListRecords_arXivRaw_from-2014-10-01_with-resumptionToken.xml");
    let text = std::fs::read_to_string(&path).unwrap();
    let page = papersys::ingest::oai::parse_page(&text).unwrap();
    assert_eq!(page.records.len(), 6);
    page.records
}

/// The Kaggle line arXiv would have exported for a paper at the time of the
/// harvest: same strings, RFC 2822 version dates, `null` for absent fields.
fn kaggle_line_of(p: &ArxivPaper) -> String {
    let versions: Vec<Value> = p
        .version_dates
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"version": format!("v{}", i + 1), "created": d}))
        .collect();
    json!({
        "id": p.id,
        "submitter": "someone",
        "authors": p.authors_text,
        "title": p.title,
        "comments": null_if_empty(&p.comment),
        "journal-ref": null_if_empty(&p.journal_ref),
        "doi": null_if_empty(&p.doi),
        "report-no": null,
        "categories": p.categories.join(" "),
        "license": null_if_empty(&p.license),
        "abstract": p.abstract_text,
        "versions": versions,
        "update_date": "2015-01-06",
        "authors_parsed": [["Lossy", "A. -B.", ""]],
    })
    .to_string()
}

#[test]
fn snapshot_and_arxivraw_rows_of_the_same_papers_are_identical_but_for_source() {
    let papers = raw_papers();
    let raw_source = "papersys.oai-pmh.arXivRaw";
    let harvested: Vec<PaperRecord> = papers.iter().map(|p| row::to_record(p, raw_source)).collect();
    for (p, h) in papers.iter().zip(&harvested) {
        assert!(
            p.version_dates[0].ends_with("GMT"),
            "arXivRaw dates as sent: {:?}",
            p.version_dates
        );
        let line = kaggle_line_of(p);
        let from_snapshot = row::to_record(&snapshot::parse_line(line.as_bytes()).unwrap(), SOURCE_SNAPSHOT);
        let mut expected = h.clone();
        expected.source = SOURCE_SNAPSHOT.to_string();
        assert_eq!(from_snapshot, expected, "{}", p.id);
    }
    let by_id: BTreeMap<&str, &PaperRecord> = harvested.iter().map(|r| (r.paper_id.as_str(), r)).collect();
    let r = by_id["0704.0471"];
    assert!(
        r.abstract_text.contains("extremely \" stiff \" and \" soft \""),
        "&quot; decoded"
    );
    assert_eq!(r.doi, "10.1103/PhysRevC.76.024606 10.1103/PhysRevC.76.039902");
    assert_eq!(r.authors, "D.V. Shetty;S.J. Yennello;G.A. Souliotis");
    assert_eq!(
        r.title,
        "Density dependence of the symmetry energy and the nuclear equation of\n  state: A Dynamical and Statistical model perspective"
    );
    let r = by_id["0704.0716"];
    assert_eq!(
        (r.published_at.as_str(), r.updated_at.as_str()),
        ("2007-04-05T12:45:03Z", "2008-11-14T09:07:25Z")
    );

    // The same papers in records.jsonl (arXiv's .abs files, a later state
    // of the metadata: DOIs, journal refs and the latest version changed
    // since 2015) agree on every column the harvest could not have changed.
    let records = real_records();
    let mut compared = 0;
    for rec in &records {
        let Some(h) = by_id.get(rec["paper_id"].as_str().unwrap()) else {
            continue;
        };
        let s = snapshot::parse_line(kaggle_line(rec).as_bytes()).unwrap();
        let s = row::to_record(&s, SOURCE_SNAPSHOT);
        assert_eq!(
            (
                &s.title,
                &s.abstract_text,
                &s.authors,
                &s.categories,
                &s.primary_category,
                &s.published_at
            ),
            (
                &h.title,
                &h.abstract_text,
                &h.authors,
                &h.categories,
                &h.primary_category,
                &h.published_at
            ),
            "{}",
            s.paper_id
        );
        compared += 1;
    }
    assert_eq!(compared, 3);

    // Merged after a snapshot import, the harvest changes nothing.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("snapshot.json");
    let text: String = papers.iter().map(|p| kaggle_line_of(p) + "\n").collect();
    std::fs::write(&file, text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    import(&file, dir.path(), &SnapshotOptions::default());
    let before = files_of(dir.path());
    let report = merge::merge_records(dir.path(), harvested).unwrap();
    assert_eq!(report.totals.unchanged, 6);
    assert_eq!(files_of(dir.path()), before);
}

#[test]
fn arxiv_format_records_follow_the_same_row_rule() {
    let path = real_data().join("oai/ListRecords_arXiv_set-physics-hep-th_from-2017-12-14.xml");
    let page = papersys::ingest::oai::parse_page(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rows: Vec<PaperRecord> = page
        .records
        .iter()
        .map(|p| row::to_record(p, "papersys.oai-pmh.arXiv"))
        .collect();
    let by_id: BTreeMap<&str, &PaperRecord> = rows.iter().map(|r| (r.paper_id.as_str(), r)).collect();
    let r = by_id["1412.8323"];
    assert_eq!(r.authors, "Philipp A Hoehn", "forenames keyname");
    assert_eq!(
        r.title,
        "Toolbox for reconstructing quantum theory from rules on information\n  acquisition"
    );
    assert!(
        r.abstract_text
            .starts_with("  We develop an operational approach")
    );
    assert!(
        r.abstract_text
            .ends_with("of quantum theory in terms of questions.\n")
    );
    assert_eq!(
        r.categories,
        "quant-ph;gr-qc;hep-th;math-ph;math.MP;physics.hist-ph"
    );
    assert_eq!(r.primary_category, "quant-ph");
    assert_eq!(
        (r.published_at.as_str(), r.updated_at.as_str()),
        ("2014-12-29T00:00:00Z", "2017-12-13T00:00:00Z"),
        "day-only dates become midnight UTC"
    );
    assert!(
        r.comment.starts_with(
            "78 pages, many figures, graphs and references. Version accepted for\n  publication"
        )
    );
    assert_eq!(r.license, "http://creativecommons.org/licenses/by/4.0/");
    assert_eq!((r.doi.as_str(), r.journal_ref.as_str()), ("", ""));
    let r = by_id["1507.07790"];
    assert_eq!(r.authors, "Luis B. Castro;Edilberto O. Silva");
    assert_eq!(r.doi, "10.1088/1751-8121/aa9c53");
    assert_eq!(r.journal_ref, "J. Phys. A: Math. Theor. 51 (2018) 035201");
    assert_eq!(r.source, "papersys.oai-pmh.arXiv");
}
