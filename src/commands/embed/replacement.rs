//! `papersys embed --reembed` over all years under a changed model: the new
//! model's vectors are embedded into the replacement store (`.reembed/`, see
//! [`crate::store::replacement`]), and the replacement store is promoted once every
//! paper has its new vector. Lives with the command, not the store, because
//! it drives the pipeline; the store only holds and promotes files.

use std::collections::BTreeMap;

use papersys_backend_core::ModelIdentity;
use serde::Serialize;

use super::{EmbedOptions, ModelRun, YearRun, execute, files_touched, select_work};
use crate::config::{Config, ModelConfig};
use crate::error::Error;
use crate::metadata::{Discovery, Year, origin_of};
use crate::plan::{self, Access, PlanInputs};
use crate::store::StoreWriter;
use crate::store::backlog;

/// Progress of replacing every vector of an alias with a new model's.
#[derive(Clone, Debug, Serialize)]
pub struct Replacement {
    /// The model whose vectors are being replaced.
    pub from: String,
    /// The model replacing them.
    pub to: String,
    /// Whether the new vectors are now the live ones.
    pub promoted: bool,
    /// Where the old year files were moved (kept until the user deletes them).
    pub old_vectors: Option<String>,
    /// Papers still to embed before the switch.
    pub remaining: u64,
}

/// `--reembed` over all years under a changed model: embed into the replacement
/// store, and promote it once every paper has its new vector.
#[allow(clippy::too_many_arguments)]
pub(super) fn replace_model(
    config: &Config,
    model: &ModelConfig,
    writer: &StoreWriter,
    discovery: &Discovery,
    options: &EmbedOptions,
    embedder: &dyn papersys_backend_core::Embedder,
    old: &ModelIdentity,
    issues: &mut Vec<crate::metadata::InputIssue>,
) -> Result<ModelRun, Error> {
    let identity = embedder.identity().clone();
    let store = writer.replacement_store().open_writer()?;
    if let Some(recorded) = store.manifest()?.and_then(|m| m.model_identity)
        && !identity.mismatches(&recorded).is_empty()
    {
        return Err(Error::Usage(format!(
            "model `{}`: {} holds vectors of yet another model ({}); delete that directory to replace the \
             vectors with {} instead",
            model.alias,
            store.dir.display(),
            recorded.name,
            identity.name
        )));
    }
    tracing::warn!(
        "{}: replacing every vector made by {} with {}; new vectors go to {} and replace the old \
         ones in one step once every paper has one",
        model.alias,
        old.name,
        identity.name,
        store.dir.display()
    );
    // Relative to the replacement store, "missing" is exactly what is left to do.
    let replacement_options = EmbedOptions {
        reembed: false,
        ..options.clone()
    };
    let work = select_work(
        model,
        Access::Write(&store),
        config,
        discovery,
        &replacement_options,
        issues,
    )?;
    let mut report = execute(
        config,
        model,
        &store,
        discovery,
        &replacement_options,
        &work,
        embedder,
    )?;
    let remaining = backlog::read(&store.dir)
        .map(|rows| rows.iter().filter(|r| r.reason.is_embeddable()).count() as u64)
        .unwrap_or(u64::MAX);
    let mut replacement = Replacement {
        from: old.name.clone(),
        to: identity.name.clone(),
        promoted: false,
        old_vectors: None,
        remaining,
    };
    // An interrupted run leaves checkpoints in the replacement store: never promote before they are folded.
    if remaining == 0 && report.failed == 0 && !report.interrupted {
        drop(store);
        let moved = writer.promote_replacement(&identity)?;
        let after = plan::refresh(writer, PlanInputs::new(discovery, &identity.document_prefix))?;
        report.waiting_after = after.rows.iter().filter(|r| r.reason.is_embeddable()).count() as u64;
        replacement.promoted = true;
        replacement.old_vectors = Some(origin_of(&moved, &config.data_root));
        let years: BTreeMap<Year, YearRun> = report
            .years
            .iter()
            .filter_map(|y| Year::parse(&y.year).map(|k| (k, y.clone())))
            .collect();
        report.files = files_touched(config, writer, &years, true);
        tracing::info!(
            "{}: every vector is now {}'s; the old ones are in {} (delete them when no longer needed)",
            model.alias,
            identity.name,
            moved.display()
        );
    }
    report.replacement = Some(replacement);
    Ok(report)
}
