//! Importing Kaggle's arXiv snapshot (`arxiv-metadata-oai-snapshot.json`:
//! one JSON object per line, ~2.8M lines), plain, `.gz` or `.zip` (the
//! format is told by the file's first bytes, not its name).
//!
//! Streaming: the calling thread reads batches of lines; parsing threads
//! turn each line into its row by [`super::row::to_record`]'s rule (the
//! JSON's strings borrowed, the row encoded as its CSV line at once) and
//! the batches go, in file order, into a [`Merger`], which spills to sorted
//! runs past its memory budget, so memory does not grow with the file. A
//! line that is not a snapshot record is reported with its number and
//! skipped; the rest is imported.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::encoded::RowBatch;
use super::merge::{MergeError, MergeOptions, MergeReport, Merger, year_of};
use super::row::{
    ArxivPaper, Author, SOURCE_SNAPSHOT, join_categories_into, join_structured_authors, normalize_date,
    rfc2822_gmt, split_author_string_into,
};

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

/// A JSON string, borrowed from the line when it holds no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Text<'a>, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(TextVisitor).map(Text)
    }
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

fn text<'s>(t: &'s Option<Text<'_>>) -> &'s str {
    t.as_ref().map_or("", Text::as_str)
}

/// One snapshot line (`null` reads as absent; other keys are ignored).
#[derive(Default)]
struct Line<'a> {
    id: Option<Text<'a>>,
    title: Option<Text<'a>>,
    abstract_text: Option<Text<'a>>,
    authors: Option<Text<'a>>,
    authors_parsed: Option<Vec<Vec<String>>>,
    categories: Option<Text<'a>>,
    versions: Option<Vec<Version<'a>>>,
    comments: Option<Text<'a>>,
    journal_ref: Option<Text<'a>>,
    doi: Option<Text<'a>>,
    license: Option<Text<'a>>,
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

impl<'de: 'a, 'a> Deserialize<'de> for Line<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Line<'a>, D::Error> {
        struct LineVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for LineVisitor<'a> {
            type Value = Line<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Line<'a>, A::Error> {
                use serde::de::IgnoredAny;
                let mut line = Line::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Id => line.id = Some(map.next_value::<Text<'a>>()?),
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
                if line.id.is_none() {
                    return Err(serde::de::Error::missing_field("id"));
                }
                Ok(line)
            }
        }
        deserializer.deserialize_map(LineVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Version<'a> {
    #[serde(default, borrow)]
    created: Option<Text<'a>>,
}

/// A date as [`normalize_date`] writes it.
#[derive(Clone)]
enum IsoDate {
    Fast([u8; 20]),
    Slow(String),
}

impl IsoDate {
    fn of(text: &str) -> Option<IsoDate> {
        match rfc2822_gmt(text.trim()) {
            Some(iso) => Some(IsoDate::Fast(iso)),
            None => normalize_date(text).map(IsoDate::Slow),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            IsoDate::Fast(iso) => std::str::from_utf8(iso).unwrap_or(""),
            IsoDate::Slow(s) => s,
        }
    }
}

/// A line that is a usable record, with its first and last version dates
/// normalised.
struct Checked<'a> {
    line: Line<'a>,
    published: IsoDate,
    updated: IsoDate,
}

fn check(line: &[u8]) -> Result<Checked<'_>, String> {
    let parsed: Line<'_> = serde_json::from_slice(line).map_err(|e| format!("not a snapshot record: {e}"))?;
    let id = text(&parsed.id);
    if id.trim().is_empty() {
        return Err("empty `id`".to_string());
    }
    let mut dates = parsed
        .versions
        .iter()
        .flatten()
        .filter_map(|v| v.created.as_ref().map(Text::as_str));
    let mut first = None;
    let mut last = None;
    for date in dates.by_ref() {
        let Some(iso) = IsoDate::of(date) else {
            return Err(format!("{id}: version date {date:?} is not an RFC 2822 date"));
        };
        if first.is_none() {
            first = Some(iso);
        } else {
            last = Some(iso);
        }
    }
    let Some(published) = first else {
        return Err(format!("{id}: no `versions[].created` date"));
    };
    let updated = match last {
        Some(last) => last,
        None => published.clone(),
    };
    Ok(Checked {
        line: parsed,
        published,
        updated,
    })
}

fn structured_authors(parsed: &Option<Vec<Vec<String>>>) -> Vec<Author> {
    parsed
        .iter()
        .flatten()
        .map(|parts| {
            let part = |k: usize| parts.get(k).cloned().unwrap_or_default();
            Author {
                keyname: part(0),
                forenames: part(1),
                suffix: part(2),
            }
        })
        .collect()
}

/// Parses one snapshot line into a paper. `Err` says why the line is not a
/// usable record.
pub fn parse_line(line: &[u8]) -> Result<ArxivPaper, String> {
    let checked = check(line)?;
    let l = &checked.line;
    Ok(ArxivPaper {
        id: text(&l.id).to_string(),
        title: text(&l.title).to_string(),
        abstract_text: text(&l.abstract_text).to_string(),
        categories: l.categories.iter().map(|c| c.as_str().to_string()).collect(),
        authors: structured_authors(&l.authors_parsed),
        authors_text: text(&l.authors).to_string(),
        version_dates: l
            .versions
            .iter()
            .flatten()
            .filter_map(|v| v.created.as_ref().map(|c| c.as_str().to_string()))
            .collect(),
        doi: text(&l.doi).to_string(),
        comment: text(&l.comments).to_string(),
        journal_ref: text(&l.journal_ref).to_string(),
        license: text(&l.license).to_string(),
    })
}

/// Strings a parsing thread reuses from line to line.
#[derive(Default)]
struct Scratch {
    categories: String,
    authors: String,
}

/// Parses one snapshot line and, when it passes `filters`, appends its row
/// to `rows`: the row [`super::row::into_record`] makes of
/// [`parse_line`]'s paper, made without copying the line's text.
/// `Ok(false)`: filtered out.
fn parse_into(
    line: &[u8],
    filters: &[String],
    rows: &mut RowBatch,
    scratch: &mut Scratch,
) -> Result<bool, String> {
    let checked = check(line)?;
    let l = &checked.line;
    if !categories_match(text(&l.categories), filters) {
        return Ok(false);
    }
    join_categories_into(l.categories.iter().map(Text::as_str), &mut scratch.categories);
    let primary_category = scratch.categories.split(';').next().unwrap_or("");
    let authors_text = text(&l.authors);
    if authors_text.trim().is_empty() {
        scratch.authors = join_structured_authors(&structured_authors(&l.authors_parsed));
    } else {
        split_author_string_into(authors_text, &mut scratch.authors);
    }
    let id = text(&l.id);
    let published_at = checked.published.as_str();
    let Some(year) = year_of(published_at) else {
        return Err(format!(
            "{id}: published_at {published_at:?} is not a date, so no year file can hold it"
        ));
    };
    rows.push(
        [
            id.trim(),
            text(&l.title),
            text(&l.abstract_text),
            &scratch.categories,
            primary_category,
            &scratch.authors,
            published_at,
            checked.updated.as_str(),
            text(&l.doi),
            text(&l.comments),
            text(&l.journal_ref),
            text(&l.license),
            SOURCE_SNAPSHOT,
        ],
        year,
    );
    Ok(true)
}

/// Whether a paper with `categories` passes `filters` (empty: all pass).
pub fn category_matches(categories: &[String], filters: &[String]) -> bool {
    filters.is_empty() || categories.iter().any(|c| categories_match(c, filters))
}

/// [`category_matches`] of one whitespace-separated category string.
fn categories_match(categories: &str, filters: &[String]) -> bool {
    filters.is_empty()
        || categories.split_whitespace().any(|c| {
            filters.iter().any(|f| {
                c == f || (c.len() > f.len() && c.starts_with(f.as_str()) && c.as_bytes()[f.len()] == b'.')
            })
        })
}

/// Bytes read per batch handed to a parsing thread (whole lines: a line
/// cut at the end moves to the next batch).
const BATCH_BYTES: usize = 4 << 20;

/// A run of consecutive lines, concatenated.
#[derive(Default)]
struct Batch {
    first_line: u64,
    data: Vec<u8>,
    /// End of each line in `data` (after its `\n`, if any).
    ends: Vec<usize>,
}

/// What became of a batch of lines: the rows of those imported, in line
/// order, and the others counted.
struct Parsed {
    rows: RowBatch,
    filtered_out: u64,
    bad: Vec<LineIssue>,
}

fn parse_batch(batch: &Batch, filters: &[String], mut rows: RowBatch, scratch: &mut Scratch) -> Parsed {
    rows.clear();
    rows.reserve(batch.data.len(), batch.ends.len());
    let mut parsed = Parsed {
        rows,
        filtered_out: 0,
        bad: Vec::new(),
    };
    let mut start = 0;
    for (i, &end) in batch.ends.iter().enumerate() {
        let line = &batch.data[start..end];
        start = end;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_into(line, filters, &mut parsed.rows, scratch) {
            Ok(true) => {}
            Ok(false) => parsed.filtered_out += 1,
            Err(message) => parsed.bad.push(LineIssue {
                line: batch.first_line + i as u64,
                message,
            }),
        }
    }
    parsed
}

/// Imports the snapshot at `path` into `metadata_dir` (the caller holds the
/// ingestion lock). `progress` is called every 10,000 lines or so.
///
/// The calling thread reads and merges; lines are parsed on one thread per
/// CPU, in batches, and their rows merged in file order. The batches'
/// buffers go round (reader, parser, merger, reader) rather than being
/// allocated afresh.
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
    let max_in_flight = workers * 3;
    with_input(path, |input| {
        let (work_tx, work_rx) = crossbeam_channel::unbounded::<(u64, Batch, RowBatch)>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<(u64, Parsed, Batch)>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let work_rx = work_rx.clone();
                let done_tx = done_tx.clone();
                let filters = &options.categories;
                scope.spawn(move || {
                    let mut scratch = Scratch::default();
                    for (seq, batch, rows) in work_rx {
                        let parsed = parse_batch(&batch, filters, rows, &mut scratch);
                        if done_tx.send((seq, parsed, batch)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            let pipe = Pipe {
                path,
                work_tx: &work_tx,
                done_rx: &done_rx,
                max_in_flight,
            };
            let result = pipe.feed_and_merge(input, &mut merger, &mut report, progress);
            drop(work_tx);
            result
        })
    })?;
    progress(&report.counts);
    tracing::debug!(
        "{}: read and parsed in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    report.merge = merger.finish()?;
    report.seconds = started.elapsed().as_secs_f64();
    tracing::debug!("{}: imported in {:.1} s", path.display(), report.seconds);
    Ok(report)
}

/// The reading end of the parsing threads.
struct Pipe<'a> {
    path: &'a Path,
    work_tx: &'a crossbeam_channel::Sender<(u64, Batch, RowBatch)>,
    done_rx: &'a crossbeam_channel::Receiver<(u64, Parsed, Batch)>,
    max_in_flight: usize,
}

impl Pipe<'_> {
    /// Reads batches of lines and sends them to the parsers, and merges the
    /// parsed batches in order, keeping at most `max_in_flight` batches
    /// between.
    fn feed_and_merge(
        &self,
        input: &mut dyn BufRead,
        merger: &mut Merger,
        report: &mut SnapshotReport,
        progress: &mut dyn FnMut(&SnapshotCounts),
    ) -> Result<(), SnapshotError> {
        let mut sent = 0u64;
        let mut applied = 0u64;
        let mut waiting: BTreeMap<u64, Parsed> = BTreeMap::new();
        let mut free: Vec<Batch> = Vec::new();
        // The start of a line cut by the end of the previous read.
        let mut carry: Vec<u8> = Vec::new();
        let mut eof = false;
        let mut last_progress = 0u64;
        while !eof || applied < sent {
            if !eof && sent - applied < self.max_in_flight as u64 {
                let mut batch = free.pop().unwrap_or_default();
                batch.first_line = report.counts.lines + 1;
                batch.data.clear();
                batch.ends.clear();
                batch.data.append(&mut carry);
                eof = self.fill(input, &mut batch.data, report.counts.lines + 1)?;
                let complete = if eof {
                    batch.data.len()
                } else {
                    memchr::memrchr(b'\n', &batch.data).map_or(0, |at| at + 1)
                };
                carry.extend_from_slice(&batch.data[complete..]);
                batch.data.truncate(complete);
                batch
                    .ends
                    .extend(memchr::memchr_iter(b'\n', &batch.data).map(|at| at + 1));
                if batch.ends.last().copied().unwrap_or(0) < batch.data.len() {
                    // The last line of a file that does not end in `\n`.
                    batch.ends.push(batch.data.len());
                }
                report.counts.lines += batch.ends.len() as u64;
                report.counts.bytes += batch.data.len() as u64;
                if batch.ends.is_empty() {
                    free.push(batch);
                } else {
                    let rows = merger.spent_batch().unwrap_or_default();
                    self.work_tx
                        .send((sent, batch, rows))
                        .map_err(|_| parser_gone(self.path))?;
                    sent += 1;
                }
                if report.counts.lines - last_progress >= 10_000 {
                    last_progress = report.counts.lines;
                    progress(&report.counts);
                }
                continue;
            }
            let (seq, parsed, batch) = self.done_rx.recv().map_err(|_| parser_gone(self.path))?;
            free.push(batch);
            waiting.insert(seq, parsed);
            while let Some(parsed) = waiting.remove(&applied) {
                applied += 1;
                report.counts.imported += parsed.rows.len() as u64;
                report.counts.filtered_out += parsed.filtered_out;
                for issue in parsed.bad {
                    report.counts.bad_lines += 1;
                    tracing::warn!(
                        "{}:{}: {}; line skipped",
                        self.path.display(),
                        issue.line,
                        issue.message
                    );
                    if report.issues.len() < MAX_LISTED_ISSUES {
                        report.issues.push(issue);
                    }
                }
                merger.add_batch(parsed.rows)?;
            }
        }
        Ok(())
    }

    /// Appends [`BATCH_BYTES`] of the input to `data`, or what is left of
    /// it; `true` at the end of the input. The bytes are read straight into
    /// `data` (a plain file's buffer is bypassed for reads this large).
    fn fill(&self, input: &mut dyn BufRead, data: &mut Vec<u8>, line: u64) -> Result<bool, SnapshotError> {
        let want = BATCH_BYTES as u64;
        data.reserve(BATCH_BYTES);
        let got = input
            .take(want)
            .read_to_end(data)
            .map_err(|source| SnapshotError::Read {
                path: self.path.to_path_buf(),
                line: Some(line),
                source,
            })?;
        // `take` stops short only at the end of the input.
        Ok((got as u64) < want)
    }
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
