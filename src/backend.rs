//! From a model table to a `dyn Embedder`: the one place that knows which
//! backend crates exist. Everything downstream talks to the trait.

use papersys_backend_core::{EmbedError, Embedder};
use papersys_backend_native::{NativeEmbedder, NativeOptions};
use papersys_backend_remote::{RemoteEmbedder, RemoteOptions};

use crate::config::{BackendConfig, ModelConfig, NativeConfig};
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
            if remote.base_urls.is_empty() {
                return Err(Error::Usage(format!(
                    "model `{}` uses backend \"{}\" but has no base_url: papersys talks to a running \
                     OpenAI-compatible server rather than starting one. Start it (for vLLM: \
                     `vllm serve {} --task embed --port 8000`) and set base_url = \"http://HOST:8000\" \
                     (or base_urls = [...] for several) in the model's table",
                    model.alias, remote.flavor, model.name
                )));
            }
            let mut options = RemoteOptions::new(&model.name, remote.base_urls.clone(), model.dimension);
            options.api_key = match &remote.api_key {
                Some(source) => Some(source.resolve("api_key", &model.alias)?),
                None => None,
            };
            options.request_batch_size = remote.request_batch_size;
            options.max_concurrency = remote.max_concurrency;
            options.timeout = remote.timeout;
            options.max_retries = remote.max_retries;
            options.tokens_per_minute = remote.tokens_per_minute;
            options.dimensions = remote.dimensions;
            options.truncate_prompt_tokens = remote.truncate_prompt_tokens;
            options.document_prefix = model.document_prefix.clone().unwrap_or_default();
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
pub fn native_options(model: &ModelConfig, native: &NativeConfig) -> NativeOptions {
    NativeOptions {
        name: model.name.clone(),
        model_path: native.model_path.clone(),
        max_length: Some(model.max_length),
        batch_size: model.batch_size,
        device: model.device.clone(),
        precision: model.precision.as_str().to_string(),
        threads: native.threads,
        document_prefix: model.document_prefix.clone(),
        expected_dimension: Some(model.dimension),
    }
}

/// `error` with the model's alias in its message, usage errors as such.
pub fn in_model(model: &ModelConfig, error: EmbedError) -> Error {
    match error {
        EmbedError::Load(message) => {
            Error::Embed(EmbedError::Load(format!("model `{}`: {message}", model.alias)))
        }
        EmbedError::Unsupported(message) => Error::Usage(format!("model `{}`: {message}", model.alias)),
        other => Error::Embed(other),
    }
}
