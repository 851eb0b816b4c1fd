//! The commands, as library functions returning serialisable reports. The
//! CLI only parses arguments, calls these and renders what they return.

pub mod backlog;
pub mod embed;
pub mod ingest;
pub mod prefs;
pub mod recommend;
pub mod search;
pub mod status;
pub mod update;

use serde::Serialize;

use crate::config::{Config, ModelConfig};
use crate::error::Error;
use crate::metadata::InputIssue;
use crate::store::manifest::Manifest;

/// Picks the models a command works on: the named ones (in the order
/// given), all of them, or `default` when neither is asked for.
pub fn select_models<'c>(
    config: &'c Config,
    aliases: &[String],
    all: bool,
    default_all: bool,
) -> Result<Vec<&'c ModelConfig>, Error> {
    if config.models.is_empty() {
        return Err(Error::Usage(format!(
            "{} defines no [[embedding.models]]; add one (see examples/papersys.toml)",
            config.path.display()
        )));
    }
    if all || (aliases.is_empty() && default_all) {
        return Ok(config.models.iter().collect());
    }
    if aliases.is_empty() {
        return Ok(vec![&config.models[0]]);
    }
    let mut chosen: Vec<&ModelConfig> = Vec::new();
    for alias in aliases {
        let model = config.model(alias).ok_or_else(|| {
            let known: Vec<&str> = config.models.iter().map(|m| m.alias.as_str()).collect();
            Error::Usage(format!(
                "no model `{alias}` in {}; configured models: {}",
                config.path.display(),
                known.join(", ")
            ))
        })?;
        if !chosen.iter().any(|m| m.alias == model.alias) {
            chosen.push(model);
        }
    }
    Ok(chosen)
}

/// The document prefix whose hashes the store's `text_hash` column holds:
/// the config's explicit `document_prefix`, else the one recorded with the
/// vectors on disk, else none. Needs no model, so `backlog` and `--dry-run`
/// work without loading one.
pub fn store_prefix(model: &ModelConfig, manifest: Option<&Manifest>) -> String {
    if let Some(prefix) = &model.document_prefix {
        return prefix.clone();
    }
    manifest
        .and_then(|m| m.model_identity.as_ref())
        .map(|identity| identity.document_prefix.clone())
        .unwrap_or_default()
}

/// An input problem in reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssueReport {
    /// File the problem is in.
    pub file: String,
    /// Line, when the problem is a row.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl From<&InputIssue> for IssueReport {
    fn from(issue: &InputIssue) -> Self {
        IssueReport {
            file: issue.path.display().to_string(),
            line: issue.line,
            message: issue.message.clone(),
        }
    }
}

/// Sorts and de-duplicates issues gathered from several models' refreshes.
pub fn unique_issues(issues: impl IntoIterator<Item = InputIssue>) -> Vec<IssueReport> {
    let mut reports: Vec<IssueReport> = issues.into_iter().map(|i| IssueReport::from(&i)).collect();
    reports.sort_by(|a, b| (&a.file, a.line, &a.message).cmp(&(&b.file, b.line, &b.message)));
    reports.dedup();
    reports
}
