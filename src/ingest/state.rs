//! The harvest state: per OAI-PMH set, the last window harvested to the end
//! and the server's `responseDate` for it. Kept beside the CSVs as
//! `harvest-state.json`, replaced atomically after each window's rows are
//! committed, so a run with no `--from` continues where the last one
//! stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::store::atomic::write_atomic;

/// File name of the state, inside the metadata directory.
pub const STATE_FILE: &str = "harvest-state.json";

/// Key of a harvest of every set (no `categories`).
pub const ALL_SETS: &str = "*";

/// Current layout version of the file.
const VERSION: u32 = 1;

/// Why the state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read the harvest state {}: {source}", .path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a harvest state papersys wrote.
    #[error(
        "the harvest state {} is damaged ({message}); fix it, or delete it and pass --from YYYY-MM-DD to say where to continue",
        .path.display()
    )]
    Damaged {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file could not be written.
    #[error("cannot write the harvest state {}: {source}", .path.display())]
    Write {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What is known about one set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetState {
    /// First day of the last window harvested to the end (`YYYY-MM-DD`).
    pub from: String,
    /// Last day of that window (inclusive).
    pub until: String,
    /// The server's `responseDate` when that window started.
    pub response_date: String,
    /// The endpoint harvested.
    pub base_url: String,
    /// The metadata format harvested.
    pub metadata_prefix: String,
    /// When the window was committed (UTC).
    pub completed_at: String,
}

/// The whole state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HarvestState {
    /// Layout version.
    pub version: u32,
    /// Per setSpec ([`ALL_SETS`] for a harvest of everything).
    pub sets: BTreeMap<String, SetState>,
}

impl HarvestState {
    /// The state file of a metadata directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(dir: &Path) -> Result<HarvestState, StateError> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HarvestState::default()),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let state: HarvestState = serde_json::from_slice(&bytes).map_err(|e| StateError::Damaged {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.version != VERSION {
            return Err(StateError::Damaged {
                path,
                message: format!("layout version {} is not {VERSION}", state.version),
            });
        }
        for (set, entry) in &state.sets {
            for (key, value) in [("from", &entry.from), ("until", &entry.until)] {
                if super::config::parse_day(value).is_err() {
                    return Err(StateError::Damaged {
                        path,
                        message: format!("set {set:?}: `{key}` = {value:?} is not a YYYY-MM-DD date"),
                    });
                }
            }
        }
        Ok(state)
    }

    /// Writes the state atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = Self::path(dir);
        let mut state = self.clone();
        state.version = VERSION;
        write_atomic(&path, |w| {
            serde_json::to_writer_pretty(&mut *w, &state).map_err(std::io::Error::other)?;
            std::io::Write::write_all(w, b"\n")
        })
        .map_err(|source| StateError::Write { path, source })
    }

    /// Where an incremental harvest of `set` starts: the last day of its
    /// last completed window, asked again (one day of overlap: datestamps
    /// have day granularity and that day may have changed after the
    /// harvest), and never after the day of the server's `responseDate`.
    pub fn resume_from(&self, set: &str) -> Option<Date> {
        let entry = self.sets.get(set)?;
        let until = super::config::parse_day(&entry.until).ok()?;
        let answered = entry
            .response_date
            .get(..10)
            .and_then(|d| super::config::parse_day(d).ok());
        Some(match answered {
            Some(day) if day < until => day,
            _ => until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn entry(until: &str, response: &str) -> SetState {
        SetState {
            from: "2024-01-01".into(),
            until: until.into(),
            response_date: response.into(),
            base_url: "http://x".into(),
            metadata_prefix: "arXiv".into(),
            completed_at: "2024-01-08T00:00:00Z".into(),
        }
    }

    #[test]
    fn saves_loads_and_resumes_with_a_day_of_overlap() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HarvestState::load(dir.path()).unwrap(), HarvestState::default());
        let mut state = HarvestState::default();
        state
            .sets
            .insert("cs:cs:AI".into(), entry("2024-01-07", "2024-01-08T10:00:00Z"));
        state
            .sets
            .insert(ALL_SETS.into(), entry("2024-01-07", "2024-01-05T10:00:00Z"));
        state.save(dir.path()).unwrap();
        let loaded = HarvestState::load(dir.path()).unwrap();
        assert_eq!(loaded.sets, state.sets);
        assert_eq!(loaded.resume_from("cs:cs:AI"), Some(date(2024, 1, 7)));
        assert_eq!(loaded.resume_from(ALL_SETS), Some(date(2024, 1, 5)));
        assert_eq!(loaded.resume_from("math"), None);
    }

    #[test]
    fn a_damaged_state_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let message = HarvestState::load(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("harvest-state.json") && message.contains("--from"),
            "{message}"
        );
    }
}
