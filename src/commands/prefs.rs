//! `papersys prefs add | import | list`: recording what the user thinks of
//! papers, and showing it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use jiff::Timestamp;
use serde::Serialize;

use super::{IssueReport, unique_issues};
use crate::config::Config;
use crate::error::Error;
use crate::metadata::{self, InputIssue};
use crate::prefs::import::{self, ImportFormat};
use crate::prefs::{Event, PrefStore, Preference, format_time, ids};
use crate::recommend::config::RecommendConfig;

/// What a `prefs add` or `prefs import` recorded.
#[derive(Clone, Debug, Serialize)]
pub struct PrefsChangeReport {
    /// The file imported (`None` for `prefs add`).
    pub file: Option<String>,
    /// The format recognised (`None` for `prefs add`).
    pub format: Option<ImportFormat>,
    /// Data rows read from the file.
    pub rows: u64,
    /// Events appended to the store.
    pub recorded: usize,
    /// Of those, likes.
    pub likes: usize,
    /// Of those, dislikes.
    pub dislikes: usize,
    /// Of those, neutral.
    pub neutral: usize,
    /// Ids given more than once in this input.
    pub duplicates: usize,
    /// Papers whose preference this input changed from an earlier, different one
    /// (or that it gave two different preferences).
    pub conflicts: usize,
    /// Ids not (yet) in the metadata: kept, used once ingested and embedded.
    pub unknown: Vec<String>,
    /// Zotero items without an arXiv id (skipped).
    pub not_arxiv: u64,
    /// The store's directory.
    pub store: String,
    /// Rows skipped, by file and line.
    pub input_issues: Vec<IssueReport>,
}

/// One paper's current preference.
#[derive(Clone, Debug, Serialize)]
pub struct PrefEntry {
    /// arXiv id.
    pub paper_id: String,
    /// Current preference.
    pub preference: Preference,
    /// When it was recorded.
    pub recorded_at: String,
    /// Title from the metadata; `None` when the paper is not there (yet).
    pub title: Option<String>,
}

/// `papersys prefs list`.
#[derive(Clone, Debug, Serialize)]
pub struct PrefsListReport {
    /// The store's directory.
    pub store: String,
    /// Likes.
    pub likes: usize,
    /// Dislikes.
    pub dislikes: usize,
    /// Neutral.
    pub neutral: usize,
    /// Papers not in the metadata.
    pub unknown: usize,
    /// Every rated paper, newest first.
    pub preferences: Vec<PrefEntry>,
    /// Bad rows of the store, by file and line.
    pub input_issues: Vec<IssueReport>,
}

fn store_of(config: &Config) -> Result<PrefStore, Error> {
    Ok(PrefStore::new(
        RecommendConfig::from_config(config)?.preference_dir,
    ))
}

/// Titles of the metadata papers among `wanted` (last row wins), plus the
/// metadata's problems. A missing metadata directory has no papers.
fn titles(config: &Config, wanted: &HashSet<String>) -> (HashMap<String, String>, Vec<InputIssue>) {
    let mut found = HashMap::new();
    let mut issues = Vec::new();
    let Ok(discovery) = metadata::discover(&config.metadata_dir, &config.data_root) else {
        return (found, issues);
    };
    for file in &discovery.files {
        let read = metadata::read_rows(&file.path, &mut issues, |row| {
            let id = ids::normalize(row.paper_id).unwrap_or_else(|| row.paper_id.trim().to_string());
            if wanted.contains(&id) {
                found.insert(id, row.title.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        });
        if let Err(issue) = read {
            issues.push(issue);
        }
    }
    (found, issues)
}

fn record(
    config: &Config,
    events: Vec<Event>,
    file: Option<&Path>,
    format: Option<ImportFormat>,
    rows: u64,
    not_arxiv: u64,
    mut issues: Vec<InputIssue>,
) -> Result<PrefsChangeReport, Error> {
    let store = store_of(config)?;
    let before = store.load().map_err(prefs_err)?.current();
    let mut seen: HashMap<&str, Preference> = HashMap::new();
    let (mut duplicates, mut conflicts) = (0, 0);
    let mut conflicted: HashSet<&str> = HashSet::new();
    for event in &events {
        match seen.insert(&event.paper_id, event.preference) {
            Some(previous) => {
                duplicates += 1;
                if previous != event.preference && conflicted.insert(&event.paper_id) {
                    conflicts += 1;
                }
            }
            None => {
                if before
                    .get(&event.paper_id)
                    .is_some_and(|(p, _)| *p != event.preference)
                    && conflicted.insert(&event.paper_id)
                {
                    conflicts += 1;
                }
            }
        }
    }
    let wanted: HashSet<String> = events.iter().map(|e| e.paper_id.clone()).collect();
    let (known, _) = titles(config, &wanted);
    let mut unknown: Vec<String> = wanted
        .iter()
        .filter(|id| !known.contains_key(*id))
        .cloned()
        .collect();
    unknown.sort();
    store.append(&events).map_err(prefs_err)?;
    if !unknown.is_empty() {
        tracing::warn!(
            "{} of the papers are not in the metadata (yet): their preferences are kept and count once \
             the papers are ingested and embedded",
            unknown.len()
        );
    }
    let count = |p: Preference| events.iter().filter(|e| e.preference == p).count();
    issues.sort_by_key(|i| i.line);
    Ok(PrefsChangeReport {
        file: file.map(|f| f.display().to_string()),
        format,
        rows,
        recorded: events.len(),
        likes: count(Preference::Like),
        dislikes: count(Preference::Dislike),
        neutral: count(Preference::Neutral),
        duplicates,
        conflicts,
        unknown,
        not_arxiv,
        store: store.dir().display().to_string(),
        input_issues: unique_issues(issues),
    })
}

fn prefs_err(e: crate::prefs::PrefsError) -> Error {
    Error::Prefs(e)
}

/// `papersys prefs add ID... --like|--dislike|--neutral`.
pub fn add(
    config: &Config,
    paper_ids: &[String],
    preference: Preference,
) -> Result<PrefsChangeReport, Error> {
    if paper_ids.is_empty() {
        return Err(Error::Usage("give at least one paper id".into()));
    }
    let now = Timestamp::now();
    let mut events = Vec::with_capacity(paper_ids.len());
    for raw in paper_ids {
        let paper_id = ids::normalize(raw).ok_or_else(|| {
            Error::Usage(format!(
                "`{raw}` is not an arXiv id (expected e.g. 2401.00001, hep-th/9901001, arXiv:2401.00001v2 \
                 or https://arxiv.org/abs/2401.00001); nothing was recorded"
            ))
        })?;
        events.push(Event {
            paper_id,
            preference,
            recorded_at: now,
        });
    }
    record(config, events, None, None, paper_ids.len() as u64, 0, Vec::new())
}

/// `papersys prefs import FILE.csv`.
pub fn import_file(config: &Config, file: &Path) -> Result<PrefsChangeReport, Error> {
    let imported = import::read(file, Timestamp::now()).map_err(prefs_err)?;
    for issue in &imported.issues {
        tracing::warn!("{issue}");
    }
    record(
        config,
        imported.events,
        Some(file),
        Some(imported.format),
        imported.rows,
        imported.not_arxiv,
        imported.issues,
    )
}

/// `papersys prefs list`.
pub fn list(config: &Config) -> Result<PrefsListReport, Error> {
    let store = store_of(config)?;
    let log = store.load().map_err(prefs_err)?;
    let current = log.current();
    let wanted: HashSet<String> = current.keys().cloned().collect();
    let (known, _) = titles(config, &wanted);
    let mut by_time: BTreeMap<(std::cmp::Reverse<Timestamp>, String), Preference> = BTreeMap::new();
    for (id, (preference, at)) in &current {
        by_time.insert((std::cmp::Reverse(*at), id.clone()), *preference);
    }
    let preferences: Vec<PrefEntry> = by_time
        .into_iter()
        .map(|((at, id), preference)| PrefEntry {
            title: known.get(&id).cloned(),
            paper_id: id,
            preference,
            recorded_at: format_time(at.0),
        })
        .collect();
    let count = |p: Preference| preferences.iter().filter(|e| e.preference == p).count();
    Ok(PrefsListReport {
        store: store.dir().display().to_string(),
        likes: count(Preference::Like),
        dislikes: count(Preference::Dislike),
        neutral: count(Preference::Neutral),
        unknown: preferences.iter().filter(|e| e.title.is_none()).count(),
        preferences,
        input_issues: unique_issues(log.issues),
    })
}
