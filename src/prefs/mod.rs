//! The preference store: what the user liked, disliked or set back to
//! neutral, as an append-only event log under the data root.
//!
//! `preferences/events-YYYY.csv` (YYYY: the year of `recorded_at`), columns
//! `paper_id,preference,recorded_at`. A paper's preference is its latest
//! event by `recorded_at`; events with the same instant are ordered by file
//! (ascending year) and then by line, and the later one wins. Files are
//! rewritten atomically with every earlier event kept, under a lock, so
//! concurrent `prefs` commands never lose one another's events.

pub mod ids;
pub mod import;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;

use crate::metadata::InputIssue;
use crate::store::atomic::{create_owned_dir, write_atomic};
use crate::store::lock::WriterLock;

/// Header of every event file.
pub const HEADER: [&str; 3] = ["paper_id", "preference", "recorded_at"];

/// What the user thinks of a paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    /// A positive example for the recommender.
    Like,
    /// A negative example.
    Dislike,
    /// Seen, no opinion: neither learned from nor recommended again.
    Neutral,
}

impl Preference {
    /// Parses `like`, `dislike` or `neutral` (any case, surrounding blanks ignored).
    pub fn parse(text: &str) -> Option<Preference> {
        match text.trim().to_ascii_lowercase().as_str() {
            "like" => Some(Preference::Like),
            "dislike" => Some(Preference::Dislike),
            "neutral" => Some(Preference::Neutral),
            _ => None,
        }
    }

    /// The word written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Preference::Like => "like",
            Preference::Dislike => "dislike",
            Preference::Neutral => "neutral",
        }
    }
}

impl fmt::Display for Preference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Canonical arXiv id (no version).
    pub paper_id: String,
    /// The preference.
    pub preference: Preference,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

/// Why the preference store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PrefsError {
    /// The OS refused.
    #[error("{}: {source}", .path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An event file whose header is not the store's.
    #[error(
        "{} is not a preference event file (its header must be `paper_id,preference,recorded_at`); \
         move it out of the preferences directory, or import it with `papersys prefs import`",
        .path.display()
    )]
    NotEventFile {
        /// The file.
        path: PathBuf,
    },
    /// Another process is writing the store.
    #[error(transparent)]
    Locked(#[from] crate::store::lock::LockError),
    /// A file given to `prefs import` that cannot be used at all.
    #[error("{}: {message}", .path.display())]
    ImportFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        message: String,
    },
}

impl PrefsError {
    /// True when the user asked for something unusable (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, PrefsError::ImportFile { .. })
    }
}

/// Formats a timestamp the way event files store it: UTC, microseconds.
pub fn format_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses `recorded_at`: RFC 3339 with an offset, or a civil date or
/// date-time without one (`2024-01-15`, `2024-01-15 10:23:45`, as Zotero
/// writes `Date Added`), taken as UTC.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        return d.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp());
    }
    None
}

/// The store at `<data_root>/<preference_dir>`.
#[derive(Clone, Debug)]
pub struct PrefStore {
    dir: PathBuf,
}

/// Every event in the store plus the rows that could not be used.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    /// Events in precedence order (file year, then line).
    pub events: Vec<Event>,
    /// Bad rows, named by file and line; they are skipped.
    pub issues: Vec<InputIssue>,
}

impl EventLog {
    /// Each paper's current preference: its latest event (ties: the later
    /// in file order), by paper id.
    pub fn current(&self) -> BTreeMap<String, (Preference, Timestamp)> {
        let mut out: BTreeMap<String, (Preference, Timestamp)> = BTreeMap::new();
        for event in &self.events {
            match out.get(&event.paper_id) {
                Some((_, at)) if *at > event.recorded_at => {}
                _ => {
                    out.insert(event.paper_id.clone(), (event.preference, event.recorded_at));
                }
            }
        }
        out
    }
}

impl PrefStore {
    /// The store in `dir` (which need not exist yet).
    pub fn new(dir: PathBuf) -> PrefStore {
        PrefStore { dir }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The event files, ascending by year.
    fn files(&self) -> Result<Vec<(u16, PathBuf)>, PrefsError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PrefsError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| PrefsError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let year = name
                .strip_prefix("events-")
                .and_then(|rest| rest.strip_suffix(".csv"))
                .filter(|y| y.len() == 4)
                .and_then(|y| y.parse::<u16>().ok());
            if let Some(year) = year {
                files.push((year, entry.path()));
            }
        }
        files.sort();
        Ok(files)
    }

    /// Reads every event. A missing directory is an empty store.
    pub fn load(&self) -> Result<EventLog, PrefsError> {
        let mut log = EventLog::default();
        for (_, path) in self.files()? {
            read_event_file(&path, &mut log)?;
        }
        Ok(log)
    }

    /// Appends `events` (in order) to the files of their years, keeping
    /// every event already there. Each file is replaced atomically.
    pub fn append(&self, events: &[Event]) -> Result<(), PrefsError> {
        if events.is_empty() {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PrefsError::Io { path, source }
        };
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        create_owned_dir(&self.dir).map_err(io(&self.dir))?;
        let _lock = WriterLock::acquire(&self.dir)?;
        let mut by_year: BTreeMap<i16, Vec<&Event>> = BTreeMap::new();
        for event in events {
            let year = event.recorded_at.to_zoned(jiff::tz::TimeZone::UTC).year();
            by_year.entry(year).or_default().push(event);
        }
        for (year, new) in by_year {
            let path = self.dir.join(format!("events-{year:04}.csv"));
            let existing = match std::fs::read(&path) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(PrefsError::Io { path, source }),
            };
            if let Some(bytes) = &existing {
                let header = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
                let header = String::from_utf8_lossy(header);
                if header.trim_start_matches('\u{feff}').trim_end() != HEADER.join(",") {
                    return Err(PrefsError::NotEventFile { path });
                }
            }
            write_atomic(&path, |out| {
                use std::io::Write;
                match &existing {
                    Some(bytes) => {
                        out.write_all(bytes)?;
                        if !bytes.ends_with(b"\n") {
                            out.write_all(b"\n")?;
                        }
                    }
                    None => writeln!(out, "{}", HEADER.join(","))?,
                }
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(out);
                for event in &new {
                    writer.write_record([
                        event.paper_id.as_str(),
                        event.preference.as_str(),
                        &format_time(event.recorded_at),
                    ])?;
                }
                writer.flush()
            })
            .map_err(io(&path))?;
        }
        Ok(())
    }
}

/// `bytes` without a leading UTF-8 byte order mark (Zotero and Excel write
/// one; the csv crate would read it as part of the first field).
pub(crate) fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(bytes)
}

fn read_event_file(path: &Path, log: &mut EventLog) -> Result<(), PrefsError> {
    let bytes = std::fs::read(path).map_err(|source| PrefsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(without_bom(&bytes));
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h
            .iter()
            .map(|s| s.trim_start_matches('\u{feff}').to_string())
            .collect(),
        Err(_) => {
            return Err(PrefsError::NotEventFile {
                path: path.to_path_buf(),
            });
        }
    };
    if headers.is_empty() || headers != HEADER {
        if headers.iter().all(|h| h.is_empty()) {
            return Ok(());
        }
        return Err(PrefsError::NotEventFile {
            path: path.to_path_buf(),
        });
    }
    let issue = |line: u64, message: String| InputIssue::row(path, line, message);
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                log.issues.push(issue(line, format!("row skipped: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != 3 {
            log.issues.push(issue(
                line,
                format!("row skipped: {} fields, expected 3", record.len()),
            ));
            continue;
        }
        let Some(paper_id) = ids::normalize(&record[0]) else {
            log.issues.push(issue(
                line,
                format!("row skipped: `{}` is not an arXiv id", &record[0]),
            ));
            continue;
        };
        let Some(preference) = Preference::parse(&record[1]) else {
            log.issues.push(issue(
                line,
                format!(
                    "row skipped: preference `{}` is not like, dislike or neutral",
                    &record[1]
                ),
            ));
            continue;
        };
        let Some(recorded_at) = parse_time(&record[2]) else {
            log.issues.push(issue(
                line,
                format!("row skipped: recorded_at `{}` is not a time", &record[2]),
            ));
            continue;
        };
        log.events.push(Event {
            paper_id,
            preference,
            recorded_at,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn event(id: &str, preference: Preference, time: &str) -> Event {
        Event {
            paper_id: id.to_string(),
            preference,
            recorded_at: at(time),
        }
    }

    #[test]
    fn latest_event_wins_and_ties_go_to_the_later_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = PrefStore::new(dir.path().join("preferences"));
        store
            .append(&[
                event("2401.00001", Preference::Like, "2025-03-01T00:00:00Z"),
                event("2401.00002", Preference::Like, "2025-03-01T00:00:00Z"),
                event("2401.00002", Preference::Dislike, "2025-03-01T00:00:00Z"),
            ])
            .unwrap();
        // An older event recorded later in the log does not override a newer one.
        store
            .append(&[event("2401.00001", Preference::Dislike, "2024-12-31T23:59:59Z")])
            .unwrap();
        let log = store.load().unwrap();
        assert_eq!(log.events.len(), 4);
        let current = log.current();
        assert_eq!(current["2401.00001"].0, Preference::Like);
        assert_eq!(current["2401.00002"].0, Preference::Dislike);
        assert!(dir.path().join("preferences/events-2024.csv").is_file());
        let text = std::fs::read_to_string(dir.path().join("preferences/events-2025.csv")).unwrap();
        assert_eq!(
            text,
            "paper_id,preference,recorded_at\n\
             2401.00001,like,2025-03-01T00:00:00.000000Z\n\
             2401.00002,like,2025-03-01T00:00:00.000000Z\n\
             2401.00002,dislike,2025-03-01T00:00:00.000000Z\n"
        );
    }

    #[test]
    fn bad_rows_are_named_and_skipped_and_appends_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let prefs = dir.path().join("preferences");
        std::fs::create_dir_all(&prefs).unwrap();
        std::fs::write(
            prefs.join("events-2025.csv"),
            "paper_id,preference,recorded_at\n2401.00001,like,2025-01-01T00:00:00Z\nnope,like,2025-01-01T00:00:00Z\n2401.00003,love,2025-01-01T00:00:00Z\n2401.00004,like,yesterday",
        )
        .unwrap();
        let store = PrefStore::new(prefs.clone());
        let log = store.load().unwrap();
        assert_eq!(log.events.len(), 1);
        let lines: Vec<_> = log.issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, [Some(3), Some(4), Some(5)]);
        store
            .append(&[event("2401.00009", Preference::Neutral, "2025-06-01T00:00:00Z")])
            .unwrap();
        let text = std::fs::read_to_string(prefs.join("events-2025.csv")).unwrap();
        assert!(
            text.contains("2401.00004,like,yesterday\n2401.00009,neutral,"),
            "{text}"
        );
    }

    #[test]
    fn a_foreign_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let prefs = dir.path().join("preferences");
        std::fs::create_dir_all(&prefs).unwrap();
        std::fs::write(prefs.join("events-2025.csv"), "id,score\n1,2\n").unwrap();
        let store = PrefStore::new(prefs.clone());
        assert!(matches!(store.load(), Err(PrefsError::NotEventFile { .. })));
        let err = store
            .append(&[event("2401.00009", Preference::Like, "2025-06-01T00:00:00Z")])
            .unwrap_err();
        assert!(matches!(err, PrefsError::NotEventFile { .. }));
        assert_eq!(
            std::fs::read_to_string(prefs.join("events-2025.csv")).unwrap(),
            "id,score\n1,2\n"
        );
    }

    #[test]
    fn times_parse_in_the_spellings_met() {
        assert_eq!(
            parse_time("2024-01-15 10:23:45"),
            Some(at("2024-01-15T10:23:45Z"))
        );
        assert_eq!(parse_time("2024-01-15"), Some(at("2024-01-15T00:00:00Z")));
        assert_eq!(
            parse_time("2024-01-15T10:23:45+02:00"),
            Some(at("2024-01-15T08:23:45Z"))
        );
        assert_eq!(parse_time("soon"), None);
    }
}
