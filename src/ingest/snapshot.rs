//! Importing Kaggle's arXiv snapshot (`arxiv-metadata-oai-snapshot.json`:
//! one JSON object per line, ~2.8M lines), plain, `.gz` or `.zip` (the
//! format is told by the file's first bytes, not its name).
//!
//! Streaming: one line at a time goes through [`super::row::to_record`]
//! into a [`Merger`], which spills to sorted runs past its memory budget,
//! so memory does not grow with the file. A line that is not a snapshot
//! record is reported with its number and skipped; the rest is imported.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::merge::{MergeError, MergeOptions, MergeReport, Merger};
use super::row::{ArxivPaper, Author, SOURCE_SNAPSHOT, into_record, normalize_date};
use crate::metadata::PaperRecord;

/// At most this many bad lines are listed in the report (all are counted).
pub const MAX_LISTED_ISSUES: usize = 100;

/// How to import a snapshot.
#[derive(Clone, Debug, Default)]
pub struct SnapshotOptions {
    /// Category filters (`cs.AI`, `hep-th`, `math`); a paper is imported
    /// when one of its categories equals a filter or lies in it (`math`
    /// holds `math.CO`). Empty: every paper.
    pub categories: Vec<String>,
    /// Memory budget of the merge.
    pub merge: MergeOptions,
}

/// Counts so far, passed to the progress callback.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotCounts {
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Uncompressed bytes read.
    pub bytes: u64,
    /// Records handed to the merge.
    pub imported: u64,
    /// Records outside the category filter.
    pub filtered_out: u64,
    /// Lines skipped as malformed.
    pub bad_lines: u64,
}

/// A snapshot line that was skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineIssue {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotReport {
    /// The snapshot file.
    pub file: PathBuf,
    /// Read counts.
    #[serde(flatten)]
    pub counts: SnapshotCounts,
    /// The first [`MAX_LISTED_ISSUES`] bad lines.
    pub issues: Vec<LineIssue>,
    /// The merge into the year files.
    pub merge: MergeReport,
    /// Wall time of the import, in seconds.
    pub seconds: f64,
}

/// Why an import stopped. Year files already replaced stay valid (each
/// replacement is atomic); rerunning the import completes it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot cannot be opened or read.
    #[error("cannot read snapshot {}{}: {source}", .path.display(), .line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Read {
        /// The snapshot file.
        path: PathBuf,
        /// Line being read, when known.
        line: Option<u64>,
        /// The I/O error.
        source: io::Error,
    },
    /// A `.zip` snapshot that is not one JSON file.
    #[error("snapshot {}: {message}", .path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The merge into the metadata directory failed.
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// One snapshot line (`null` reads as absent; other keys are ignored).
#[derive(Default)]
struct Line {
    id: String,
    title: Option<String>,
    abstract_text: Option<String>,
    authors: Option<String>,
    authors_parsed: Option<Vec<Vec<String>>>,
    categories: Option<String>,
    versions: Option<Vec<Version>>,
    comments: Option<String>,
    journal_ref: Option<String>,
    doi: Option<String>,
    license: Option<String>,
}

/// The keys of a snapshot line that are read.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Id,
    Title,
    Abstract,
    Authors,
    AuthorsParsed,
    Categories,
    Versions,
    Comments,
    #[serde(rename = "journal-ref")]
    JournalRef,
    Doi,
    License,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Line, D::Error> {
        struct LineVisitor;
        impl<'de> serde::de::Visitor<'de> for LineVisitor {
            type Value = Line;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
                use serde::de::IgnoredAny;
                let mut line = Line::default();
                let mut id = None;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Id => id = Some(map.next_value::<String>()?),
                        Key::Title => line.title = map.next_value()?,
                        Key::Abstract => line.abstract_text = map.next_value()?,
                        Key::Authors => line.authors = map.next_value()?,
                        // Only used without an author string; Kaggle puts it
                        // last, so it is usually skipped without allocating.
                        Key::AuthorsParsed if line.authors.is_some() => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        Key::AuthorsParsed => line.authors_parsed = map.next_value()?,
                        Key::Categories => line.categories = map.next_value()?,
                        Key::Versions => line.versions = map.next_value()?,
                        Key::Comments => line.comments = map.next_value()?,
                        Key::JournalRef => line.journal_ref = map.next_value()?,
                        Key::Doi => line.doi = map.next_value()?,
                        Key::License => line.license = map.next_value()?,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                line.id = id.ok_or_else(|| serde::de::Error::missing_field("id"))?;
                Ok(line)
            }
        }
        deserializer.deserialize_map(LineVisitor)
    }
}

#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    created: Option<String>,
}

/// Parses one snapshot line into a paper. `Err` says why the line is not a
/// usable record.
pub fn parse_line(line: &[u8]) -> Result<ArxivPaper, String> {
    let parsed: Line = serde_json::from_slice(line).map_err(|e| format!("not a snapshot record: {e}"))?;
    if parsed.id.trim().is_empty() {
        return Err("empty `id`".to_string());
    }
    let version_dates: Vec<String> = parsed
        .versions
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.created)
        .collect();
    if version_dates.is_empty() {
        return Err(format!("{}: no `versions[].created` date", parsed.id));
    }
    if let Some(bad) = version_dates.iter().find(|d| normalize_date(d).is_none()) {
        return Err(format!(
            "{}: version date {bad:?} is not an RFC 2822 date",
            parsed.id
        ));
    }
    let authors = parsed
        .authors_parsed
        .unwrap_or_default()
        .into_iter()
        .map(|parts| {
            let mut parts = parts.into_iter();
            Author {
                keyname: parts.next().unwrap_or_default(),
                forenames: parts.next().unwrap_or_default(),
                suffix: parts.next().unwrap_or_default(),
            }
        })
        .collect();
    Ok(ArxivPaper {
        id: parsed.id,
        title: parsed.title.unwrap_or_default(),
        abstract_text: parsed.abstract_text.unwrap_or_default(),
        categories: parsed.categories.into_iter().collect(),
        authors,
        authors_text: parsed.authors.unwrap_or_default(),
        version_dates,
        doi: parsed.doi.unwrap_or_default(),
        comment: parsed.comments.unwrap_or_default(),
        journal_ref: parsed.journal_ref.unwrap_or_default(),
        license: parsed.license.unwrap_or_default(),
    })
}

/// Whether a paper with `categories` passes `filters` (empty: all pass).
pub fn category_matches(categories: &[String], filters: &[String]) -> bool {
    if filters.is_empty() {
        return true;
    }
    categories.iter().flat_map(|c| c.split_whitespace()).any(|c| {
        filters.iter().any(|f| {
            c == f || (c.len() > f.len() && c.starts_with(f.as_str()) && c.as_bytes()[f.len()] == b'.')
        })
    })
}

/// Lines per batch handed to a parsing thread.
const BATCH_LINES: usize = 2048;

/// A run of consecutive lines, concatenated.
struct Batch {
    first_line: u64,
    data: Vec<u8>,
    ends: Vec<usize>,
}

/// What became of one non-blank line. Nearly every line is a row, so the
/// rows are kept inline rather than boxed.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Row(PaperRecord),
    FilteredOut,
    Bad { line: u64, message: String },
}

fn parse_batch(batch: &Batch, filters: &[String]) -> Vec<Parsed> {
    let mut out = Vec::with_capacity(batch.ends.len());
    let mut start = 0;
    for (i, &end) in batch.ends.iter().enumerate() {
        let line = &batch.data[start..end];
        start = end;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(match parse_line(line) {
            Ok(paper) if !category_matches(&paper.categories, filters) => Parsed::FilteredOut,
            Ok(paper) => Parsed::Row(into_record(paper, SOURCE_SNAPSHOT)),
            Err(message) => Parsed::Bad {
                line: batch.first_line + i as u64,
                message,
            },
        });
    }
    out
}

/// Imports the snapshot at `path` into `metadata_dir` (the caller holds the
/// ingestion lock). `progress` is called every 10,000 lines or so.
///
/// The calling thread reads and merges; lines are parsed on one thread per
/// CPU, in batches, and their rows merged in file order.
pub fn import_snapshot(
    path: &Path,
    metadata_dir: &Path,
    options: &SnapshotOptions,
    progress: &mut dyn FnMut(&SnapshotCounts),
) -> Result<SnapshotReport, SnapshotError> {
    let started = Instant::now();
    let mut merger = Merger::new(metadata_dir, options.merge.clone())?;
    let mut report = SnapshotReport {
        file: path.to_path_buf(),
        ..SnapshotReport::default()
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let max_in_flight = workers * 4;
    with_input(path, |input| {
        let (work_tx, work_rx) = crossbeam_channel::unbounded::<(u64, Batch)>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<(u64, Vec<Parsed>)>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let work_rx = work_rx.clone();
                let done_tx = done_tx.clone();
                let filters = &options.categories;
                scope.spawn(move || {
                    for (seq, batch) in work_rx {
                        if done_tx.send((seq, parse_batch(&batch, filters))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            let result = feed_and_merge(
                path,
                input,
                &work_tx,
                &done_rx,
                max_in_flight,
                &mut merger,
                &mut report,
                progress,
            );
            drop(work_tx);
            result
        })
    })?;
    progress(&report.counts);
    report.merge = merger.finish()?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Reads batches of lines and sends them to the parsers, and merges the
/// parsed batches in order, keeping at most `max_in_flight` batches between.
#[allow(clippy::too_many_arguments)]
fn feed_and_merge(
    path: &Path,
    input: &mut dyn BufRead,
    work_tx: &crossbeam_channel::Sender<(u64, Batch)>,
    done_rx: &crossbeam_channel::Receiver<(u64, Vec<Parsed>)>,
    max_in_flight: usize,
    merger: &mut Merger,
    report: &mut SnapshotReport,
    progress: &mut dyn FnMut(&SnapshotCounts),
) -> Result<(), SnapshotError> {
    let mut sent = 0u64;
    let mut applied = 0u64;
    let mut waiting: BTreeMap<u64, Vec<Parsed>> = BTreeMap::new();
    let mut eof = false;
    let mut last_progress = 0u64;
    while !eof || applied < sent {
        if !eof && sent - applied < max_in_flight as u64 {
            let mut batch = Batch {
                first_line: report.counts.lines + 1,
                data: Vec::with_capacity(BATCH_LINES * 2048),
                ends: Vec::with_capacity(BATCH_LINES),
            };
            while batch.ends.len() < BATCH_LINES {
                let read =
                    input
                        .read_until(b'\n', &mut batch.data)
                        .map_err(|source| SnapshotError::Read {
                            path: path.to_path_buf(),
                            line: Some(report.counts.lines + 1),
                            source,
                        })?;
                if read == 0 {
                    eof = true;
                    break;
                }
                report.counts.lines += 1;
                report.counts.bytes += read as u64;
                batch.ends.push(batch.data.len());
            }
            if !batch.ends.is_empty() {
                work_tx.send((sent, batch)).map_err(|_| parser_gone(path))?;
                sent += 1;
            }
            if report.counts.lines - last_progress >= 10_000 {
                last_progress = report.counts.lines;
                progress(&report.counts);
            }
            continue;
        }
        let (seq, parsed) = done_rx.recv().map_err(|_| parser_gone(path))?;
        waiting.insert(seq, parsed);
        while let Some(parsed) = waiting.remove(&applied) {
            applied += 1;
            for outcome in parsed {
                match outcome {
                    Parsed::Row(record) => {
                        merger.add(record)?;
                        report.counts.imported += 1;
                    }
                    Parsed::FilteredOut => report.counts.filtered_out += 1,
                    Parsed::Bad { line, message } => {
                        report.counts.bad_lines += 1;
                        tracing::warn!("{}:{line}: {message}; line skipped", path.display());
                        if report.issues.len() < MAX_LISTED_ISSUES {
                            report.issues.push(LineIssue { line, message });
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn parser_gone(path: &Path) -> SnapshotError {
    SnapshotError::Read {
        path: path.to_path_buf(),
        line: None,
        source: io::Error::other("a parsing thread stopped unexpectedly"),
    }
}

/// Calls `f` with the snapshot's decompressed lines: gzip when the file
/// starts with gzip's magic bytes, zip when with `PK\x03\x04` (the archive
/// must hold one file, or one `.json` file), plain JSON otherwise.
fn with_input<T>(
    path: &Path,
    f: impl FnOnce(&mut dyn BufRead) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    let read_err = |source| SnapshotError::Read {
        path: path.to_path_buf(),
        line: None,
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]).map_err(read_err)? {
            0 => break,
            n => got += n,
        }
    }
    file.rewind().map_err(read_err)?;
    const BUF: usize = 1 << 20;
    if got >= 2 && magic[..2] == [0x1f, 0x8b] {
        let decoder = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(BUF, file));
        return f(&mut BufReader::with_capacity(BUF, decoder));
    }
    if got == 4 && magic == *b"PK\x03\x04" {
        let archive_err = |message: String| SnapshotError::Archive {
            path: path.to_path_buf(),
            message,
        };
        let mut archive = zip::ZipArchive::new(BufReader::with_capacity(BUF, file))
            .map_err(|e| archive_err(format!("not a readable zip archive: {e}")))?;
        let names: Vec<String> = archive
            .file_names()
            .filter(|n| !n.ends_with('/'))
            .map(str::to_string)
            .collect();
        let json: Vec<&String> = names.iter().filter(|n| n.ends_with(".json")).collect();
        let name = match (names.len(), json.len()) {
            (1, _) => names[0].clone(),
            (_, 1) => json[0].clone(),
            _ => {
                return Err(archive_err(format!(
                    "the archive must hold one file (or one .json file) but holds {names:?}; extract the snapshot and pass its path"
                )));
            }
        };
        let entry = archive
            .by_name(&name)
            .map_err(|e| archive_err(format!("cannot read {name} in the archive: {e}")))?;
        return f(&mut BufReader::with_capacity(BUF, entry));
    }
    f(&mut BufReader::with_capacity(BUF, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::row::to_record;

    #[test]
    fn a_kaggle_line_parses_field_by_field() {
        let line = br#"{"id":"0704.0001","submitter":"Pavel Nadolsky","authors":"C. Bal\\'azs, E. L. Berger, P. M. Nadolsky, C.-P. Yuan","title":"Calculation of prompt diphoton production cross sections at Tevatron and\n  LHC energies","comments":"37 pages, 15 figures; published version","journal-ref":"Phys.Rev.D76:013009,2007","doi":"10.1103/PhysRevD.76.013009","report-no":"ANL-HEP-PR-07-12","categories":"hep-ph","license":null,"abstract":"  A fully differential calculation.\n","versions":[{"version":"v1","created":"Mon, 2 Apr 2007 19:18:42 GMT"},{"version":"v2","created":"Tue, 24 Jul 2007 20:10:27 GMT"}],"update_date":"2008-11-13","authors_parsed":[["Bal\u00e1zs","C.",""],["Berger","E. L.",""],["Nadolsky","P. M.",""],["Yuan","C. -P.",""]]}"#;
        let paper = parse_line(line).unwrap();
        let row = to_record(&paper, SOURCE_SNAPSHOT);
        assert_eq!(row.paper_id, "0704.0001");
        assert_eq!(
            row.title,
            "Calculation of prompt diphoton production cross sections at Tevatron and\n  LHC energies"
        );
        assert_eq!(row.abstract_text, "  A fully differential calculation.\n");
        assert_eq!(row.categories, "hep-ph");
        assert_eq!(row.primary_category, "hep-ph");
        assert_eq!(
            row.authors, "C. Bal\\'azs;E. L. Berger;P. M. Nadolsky;C.-P. Yuan",
            "the author string wins over authors_parsed"
        );
        assert_eq!(row.published_at, "2007-04-02T19:18:42Z");
        assert_eq!(row.updated_at, "2007-07-24T20:10:27Z");
        assert_eq!(row.doi, "10.1103/PhysRevD.76.013009");
        assert_eq!(row.comment, "37 pages, 15 figures; published version");
        assert_eq!(row.journal_ref, "Phys.Rev.D76:013009,2007");
        assert_eq!(row.license, "");
        assert_eq!(row.source, "papersys.ingest.snapshot");
    }

    #[test]
    fn authors_parsed_is_used_when_there_is_no_author_string() {
        let line = br#"{"id":"1","title":"t","abstract":"a","categories":"cs.AI cs.CL","versions":[{"created":"Mon, 2 Apr 2007 19:18:42 GMT"}],"authors_parsed":[["Smith","John","Jr"],["Doe","Ann"]]}"#;
        let row = to_record(&parse_line(line).unwrap(), SOURCE_SNAPSHOT);
        assert_eq!(row.authors, "John Smith Jr;Ann Doe");
        assert_eq!(row.categories, "cs.AI;cs.CL");
        assert_eq!(row.updated_at, row.published_at);
    }

    #[test]
    fn lines_that_are_not_records_say_why() {
        assert!(
            parse_line(b"{not json")
                .unwrap_err()
                .contains("not a snapshot record")
        );
        assert!(parse_line(br#"{"title":"no id"}"#).is_err());
        assert!(
            parse_line(br#"{"id":"1","versions":[]}"#)
                .unwrap_err()
                .contains("versions")
        );
        let err = parse_line(br#"{"id":"1","versions":[{"created":"someday"}]}"#).unwrap_err();
        assert!(err.contains("someday"), "{err}");
    }

    #[test]
    fn category_filters_match_exact_names_and_archives() {
        let cats = vec!["math.CO cs.CG".to_string()];
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(category_matches(&cats, &[]));
        assert!(category_matches(&cats, &f(&["math"])));
        assert!(category_matches(&cats, &f(&["cs.CG"])));
        assert!(!category_matches(&cats, &f(&["cs.AI", "hep-th"])));
        assert!(!category_matches(&cats, &f(&["mat"])));
        assert!(!category_matches(&["hep-th".to_string()], &f(&["hep"])));
    }
}
