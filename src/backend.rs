//! From a model table to a `dyn Embedder`: the one place that knows which
//! backend crates exist. Everything downstream talks to the trait.

use papersys_backend_core::{EmbedError, Embedder};
use papersys_backend_native::{NativeEmbedder, NativeOptions, NativeTable};
use papersys_backend_remote::{RemoteEmbedder, RemoteOptions};

use crate::config::{BackendConfig, ModelConfig};
use crate::error::Error;

/// Builds (loads) the backend of `model`. For a server backend, every
/// server is probed once so that a fleet that is down fails here, with the
/// addresses, rather than after the first batch.
pub fn build(model: &ModelConfig) -> Result<Box<dyn Embedder>, Error> {
    match &model.backend {
        BackendConfig::Native(native) => {
            let options = native_options(model, native);
            let embedder = NativeEmbedder::load(&options).map_err(|e| in_model(model, e))?;
            Ok(Box::new(embedder))
        }
        BackendConfig::Remote(remote) => {
            if remote.table.base_urls().is_empty() {
                return Err(Error::Usage(format!(
                    "model `{}` uses backend \"{}\" but has no base_url: papersys talks to a running \
                     OpenAI-compatible server rather than starting one. Start it (for vLLM: \
                     `vllm serve {} --task embed --port 8000`) and set base_url = \"http://HOST:8000\" \
                     (or base_urls = [...] for several) in the model's table",
                    model.alias, remote.flavor, model.name
                )));
            }
            let api_key = match &remote.api_key {
                Some(source) => Some(source.resolve("api_key", &model.alias)?),
                None => None,
            };
            let options = RemoteOptions::from_table(
                &model.name,
                model.dimension,
                model.batch_size,
                model.document_prefix.clone(),
                api_key,
                &remote.table,
            );
            let embedder = RemoteEmbedder::new(options).map_err(|e| in_model(model, e))?;
            for check in embedder.check().map_err(|e| in_model(model, e))? {
                match check.outcome {
                    Ok(rtt) => tracing::info!("{} answers ({} ms)", check.server, rtt.as_millis()),
                    Err(e) => {
                        tracing::warn!("{} does not answer and gets no work for now: {e}", check.server)
                    }
                }
            }
            Ok(Box::new(embedder))
        }
    }
}

/// The native engine's options for `model` (what [`build`] loads).
pub fn native_options(model: &ModelConfig, native: &NativeTable) -> NativeOptions {
    NativeOptions::from_table(
        &model.name,
        model.batch_size,
        model.dimension,
        model.document_prefix.clone(),
        native,
    )
}

/// `error` with the model's alias in its message; usage errors as such,
/// an option the backend refused as a config error at the option's line.
pub fn in_model(model: &ModelConfig, error: EmbedError) -> Error {
    match error {
        EmbedError::Load(message) => {
            Error::Embed(EmbedError::Load(format!("model `{}`: {message}", model.alias)))
        }
        EmbedError::Unsupported(message) => Error::Usage(format!("model `{}`: {message}", model.alias)),
        EmbedError::BadOption { key, message } => Error::Config(model.invalid_key(key, message)),
        other => Error::Embed(other),
    }
}
