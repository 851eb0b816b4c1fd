//! Query text to a vector, with the model that made the stored vectors.
//!
//! The backend is built exactly as `papersys embed` builds it, except that
//! the text put before each query is the model's *query* prompt (as
//! sentence-transformers' `encode_query` picks it from
//! `config_sentence_transformers.json`) instead of its document prefix. The
//! model must be the one the manifest records: otherwise its vectors would
//! not be comparable with the stored ones and the query is refused.

use papersys_backend_core::{Embedder, ModelIdentity};

use crate::backend;
use crate::config::{BackendConfig, ModelConfig};
use crate::error::Error;

/// The model of an alias, loaded for queries.
pub struct QueryEncoder {
    embedder: Box<dyn Embedder>,
    prompt: String,
    identity: ModelIdentity,
}

impl QueryEncoder {
    /// Loads `model` for queries and checks it against `recorded` (the
    /// manifest's `model_identity`; `None` for a manifest without one, which
    /// is accepted with a warning).
    pub fn load(model: &ModelConfig, recorded: Option<&ModelIdentity>) -> Result<QueryEncoder, Error> {
        let (document_prefix, prompt) = match &model.backend {
            BackendConfig::Native(native) => {
                let options = backend::native_options(model, native);
                let document = papersys_backend_native::document_prefix(&options)
                    .map_err(|e| backend::in_model(model, e))?;
                let query = papersys_backend_native::query_prompt(&options)
                    .map_err(|e| backend::in_model(model, e))?;
                (document, query)
            }
            // A server's model files are not here to read prompts from.
            BackendConfig::Remote(_) => (model.document_prefix.clone().unwrap_or_default(), String::new()),
        };
        let mut for_queries = model.clone();
        for_queries.document_prefix = Some(prompt.clone());
        let embedder = backend::build(&for_queries)?;
        let mut identity = embedder.identity().clone();
        identity.document_prefix = document_prefix;
        match recorded {
            Some(recorded) => {
                let mismatches = identity.mismatches(recorded);
                if !mismatches.is_empty() {
                    let details: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
                    return Err(Error::Usage(format!(
                        "model `{}`: the configured model is not the one that made the stored vectors ({}); \
                         its query vectors would not be comparable. Put the recorded model back in the config, \
                         or re-embed with `papersys embed --model {} --reembed`",
                        model.alias,
                        details.join("; "),
                        model.alias
                    )));
                }
            }
            None => tracing::warn!(
                "model `{}`: the manifest does not record which model made the vectors; assuming {}",
                model.alias,
                model.name
            ),
        }
        if !prompt.is_empty() {
            tracing::debug!("query prompt {prompt:?}");
        }
        Ok(QueryEncoder {
            embedder,
            prompt,
            identity,
        })
    }

    /// The text put before every query (`""` when the model defines none).
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// The identity of the model, with its document prefix (as recorded).
    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// One vector per query, in order.
    pub fn encode(&self, queries: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let dim = self.identity.dimension;
        let mut out = Vec::with_capacity(queries.len());
        let batch = self.embedder.batching().batch_size.max(1);
        for chunk in queries.chunks(batch) {
            let prepared = self.embedder.prepare(chunk.to_vec())?;
            let vectors = self.embedder.embed(&prepared)?;
            vectors.validate(chunk.len(), dim)?;
            out.extend(vectors.rows().map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}
