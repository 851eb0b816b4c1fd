//! papersys' native embedding engine: sentence-transformers models run in
//! this process, with no Python and no server.
//!
//! [`NativeEmbedder::load`] finds the model ([`resolve_model`]: `model_path`,
//! the Hugging Face cache, the hub), reads the sentence-transformers files
//! (pooling, normalisation, `max_seq_length`, prompts) and builds the CPU
//! engine: a hand-written BERT / XLM-RoBERTa forward pass on packed batches
//! over the `gemm` crate, with fused vectorised softmax, GELU and LayerNorm.
//! GPU builds (`cuda` feature) run a candle engine instead.

#![warn(missing_docs)]

mod chain;
mod config;
mod loader;
mod models;
mod options;
mod pooling;
mod tokenize;
mod weights;

#[cfg(feature = "candle")]
mod candle_engine;

pub mod kernels;

use std::sync::Mutex;

use papersys_backend_core::{
    BatchingHint, EmbedError, Embedder, Embeddings, ModelIdentity, PreparedBatch, TokenBatch,
};

pub use loader::{ModelFiles, ModelSource, hf_hub_cache_dir, resolve_model};
pub use models::supported_model_types;
pub use options::{
    BACKEND_NAMES, DEFAULT_MAX_LENGTH, DEFAULT_MODEL, Device, NATIVE_KEYS, NativeOptions, NativeTable,
    Precision,
};

use chain::Chain;
use config::{ModelConfig, SentenceConfig};
use kernels::bf16::Bf16Dispatch;
use kernels::int8::Int8Dispatch;
use models::{DenseFormat, ModelShape, TokenModel};
use tokenize::TextTokenizer;
use weights::WeightsFile;

/// Most tokens one forward pass holds; larger batches are split, which
/// bounds the activation buffers (~14 KiB per token for MiniLM) without
/// costing speed (the GEMMs are already large at this size).
const TOKENS_PER_PASS: usize = 4096;

/// Everything read from a model directory before the weights are run.
struct ModelSetup {
    files: ModelFiles,
    model: ModelConfig,
    shape: ModelShape,
    sentence: SentenceConfig,
    tokenizer: TextTokenizer,
    max_tokens: usize,
    chain: Chain,
}

/// Reads configs and tokenizer of the located model and works out the
/// effective truncation and document prefix.
fn setup(
    opts: &NativeOptions,
    model_shape: impl Fn(&ModelConfig) -> Result<ModelShape, EmbedError>,
) -> Result<ModelSetup, EmbedError> {
    let files = resolve_model(opts)?;
    let sentence = config::read_sentence_config(&files.dir)?;
    let model = ModelConfig::read(&files.dir.join(&sentence.transformer_path))?;
    let shape = model_shape(&model)?;
    let positions = shape.max_tokens;
    // sentence-transformers' own default when max_seq_length is absent.
    #[derive(serde::Deserialize)]
    struct TokenizerConfig {
        model_max_length: Option<f64>,
    }
    let st_limit = match sentence.max_seq_length {
        Some(n) => n,
        None => {
            let tc: Option<TokenizerConfig> = config::read_json(&files.dir.join("tokenizer_config.json"))?;
            let model_max = tc
                .and_then(|t| t.model_max_length)
                .filter(|v| *v >= 1.0 && *v < 1e9);
            model_max.map_or(positions, |m| (m as usize).min(positions))
        }
    };
    let max_tokens = [
        Some(st_limit),
        Some(positions),
        opts.max_length.filter(|&n| n > 0),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(positions);
    if max_tokens < 2 {
        return Err(EmbedError::Load(format!(
            "max_length {max_tokens} leaves no room for text"
        )));
    }
    let prefix = effective_document_prefix(opts, &sentence);
    let tokenizer_path = files.dir.join(&sentence.transformer_path).join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(EmbedError::Load(format!(
            "{} is missing",
            tokenizer_path.display()
        )));
    }
    let tokenizer = TextTokenizer::load(&tokenizer_path, max_tokens, prefix, sentence.lowercase)?;
    let prompt_tokens = if sentence.include_prompt {
        0
    } else {
        tokenizer.prefix_tokens()?
    };
    let chain = Chain::build(
        &sentence,
        shape.hidden,
        opts.expected_dimension,
        prompt_tokens,
        &opts.name,
    )?;
    Ok(ModelSetup {
        files,
        model,
        shape,
        sentence,
        tokenizer,
        max_tokens,
        chain,
    })
}

/// The prefix put before every document: the model table's
/// `document_prefix` when set (even to `""`), else the model's own document
/// prompt from `config_sentence_transformers.json`.
fn effective_document_prefix(opts: &NativeOptions, sentence: &SentenceConfig) -> String {
    opts.document_prefix
        .clone()
        .or_else(|| sentence.document_prompt.clone())
        .unwrap_or_default()
}

/// The document prefix `opts` leads to, found without loading the weights
/// (the model is located as [`resolve_model`] does, which may download it).
pub fn document_prefix(opts: &NativeOptions) -> Result<String, EmbedError> {
    let files = resolve_model(opts)?;
    let sentence = config::read_sentence_config(&files.dir)?;
    Ok(effective_document_prefix(opts, &sentence))
}

/// The prompt the model's own `config_sentence_transformers.json` puts before
/// a query, as sentence-transformers' `encode_query` picks it (`""` when it
/// defines none). Found without loading the weights, like [`document_prefix`].
pub fn query_prompt(opts: &NativeOptions) -> Result<String, EmbedError> {
    let files = resolve_model(opts)?;
    let sentence = config::read_sentence_config(&files.dir)?;
    Ok(sentence.query_prompt.unwrap_or_default())
}

/// SHA-256 of the weights, hashed from their content (streamed). For a
/// Hugging Face cache this equals the blob's name (LFS blobs are named by
/// the SHA-256 of their content), so identities recorded when the name was
/// trusted still match; a blob whose name lies no longer decides it.
fn weights_sha256(weights: &WeightsFile) -> String {
    weights.sha256()
}

/// Packs the model's dense layers for a reduced `precision` when this CPU
/// runs it, else leaves them f32 with a warning that says why; returns what
/// the forward pass runs on (for logs and status).
fn pack_dense_layers(
    model: &mut dyn TokenModel,
    precision: Precision,
    dispatch: CpuDispatch,
    opts: &NativeOptions,
) -> String {
    let (format, feature) = match precision {
        Precision::BF16 => (
            match dispatch.bf16 {
                Bf16Dispatch::Avx512Bf16(isa) => Some(DenseFormat::Bf16(isa)),
                Bf16Dispatch::Float32Fallback => None,
            },
            "AVX512-BF16",
        ),
        Precision::Int8 => (
            match dispatch.int8 {
                Int8Dispatch::Avx512Vnni(isa) => Some(DenseFormat::Int8(isa)),
                Int8Dispatch::Float32Fallback => None,
            },
            "AVX512-VNNI",
        ),
        Precision::F32 | Precision::F16 => return "cpu float32".to_string(),
    };
    match format {
        Some(format) => {
            model.pack_dense(format);
            format!("cpu {precision} ({})", format.kernel())
        }
        None => {
            tracing::warn!(
                model = %opts.name,
                "precision \"{precision}\" needs a CPU with {feature}, which this one lacks: \
                 computing in float32 instead (vectors are recorded as float32); \
                 set precision = \"float32\" to silence this"
            );
            format!("cpu float32 ({precision} requested, no {feature})")
        }
    }
}

fn resolve_threads(threads: Option<usize>) -> usize {
    threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The reduced-precision GEMMs the CPU engine may run: what this CPU has,
/// or a path forced absent to test what a CPU without it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuDispatch {
    /// For `precision = "bfloat16"`.
    pub bf16: Bf16Dispatch,
    /// For `precision = "int8"`.
    pub int8: Int8Dispatch,
}

impl CpuDispatch {
    /// The best paths this CPU has.
    pub fn detect() -> Self {
        CpuDispatch {
            bf16: Bf16Dispatch::detect(),
            int8: Int8Dispatch::detect(),
        }
    }
}

/// The CPU engine: the model, a dedicated thread pool and a reused buffer
/// for the token vectors.
struct CpuEngine {
    model: Box<dyn TokenModel>,
    /// What the linear layers run on, for logs and status.
    path: String,
    pool: rayon::ThreadPool,
    threads: usize,
    hidden: Mutex<Vec<f32>>,
}

enum Engine {
    Cpu(CpuEngine),
    #[cfg(feature = "candle")]
    Candle(candle_engine::CandleEngine),
}

/// A sentence-transformers model loaded for embedding; implements
/// [`Embedder`].
pub struct NativeEmbedder {
    identity: ModelIdentity,
    tokenizer: TextTokenizer,
    batch_size: usize,
    chain: Chain,
    engine: Engine,
}

impl NativeEmbedder {
    /// Finds and loads the model of `opts` onto its device.
    pub fn load(opts: &NativeOptions) -> Result<Self, EmbedError> {
        let precision = Precision::effective(opts.precision, opts.device);
        match opts.device {
            Device::Cpu => Self::load_cpu(opts, precision, CpuDispatch::detect()),
            Device::Cuda(ordinal) => Self::load_cuda(opts, ordinal, precision),
        }
    }

    /// Loads the model into the CPU engine with the reduced-precision paths
    /// given instead of the detected ones: [`Bf16Dispatch::select`]`(false)`
    /// runs what a CPU without AVX512-BF16 gets, [`Int8Dispatch::select`]
    /// `(false)` one without AVX512-VNNI. `opts.device` must be the CPU.
    pub fn load_cpu_with(opts: &NativeOptions, dispatch: CpuDispatch) -> Result<Self, EmbedError> {
        if opts.device != Device::Cpu {
            return Err(EmbedError::Unsupported(format!(
                "load_cpu_with needs device \"cpu\", not {:?}",
                opts.device
            )));
        }
        Self::load_cpu(opts, Precision::effective(opts.precision, Device::Cpu), dispatch)
    }

    /// What the forward pass runs on: `cpu float32`, `cpu bfloat16
    /// (avx512-bf16)`, `cpu int8 (avx512-vnni)`, `cpu float32 (bfloat16
    /// requested, no AVX512-BF16)`, or the candle engine's device and dtype.
    pub fn compute_path(&self) -> String {
        match &self.engine {
            Engine::Cpu(cpu) => cpu.path.clone(),
            #[cfg(feature = "candle")]
            Engine::Candle(_) => match self.identity.precision.as_deref() {
                Some(p) => format!("candle {p}"),
                None => "candle".to_string(),
            },
        }
    }

    #[cfg(feature = "cuda")]
    fn load_cuda(opts: &NativeOptions, ordinal: usize, precision: Precision) -> Result<Self, EmbedError> {
        Self::load_candle(opts, candle_engine::CandleDevice::Cuda(ordinal), precision)
    }

    #[cfg(not(feature = "cuda"))]
    fn load_cuda(opts: &NativeOptions, _ordinal: usize, _precision: Precision) -> Result<Self, EmbedError> {
        Err(options::cuda_not_built(opts.device))
    }

    fn load_cpu(
        opts: &NativeOptions,
        precision: Precision,
        dispatch: CpuDispatch,
    ) -> Result<Self, EmbedError> {
        let setup = setup(opts, |cfg| (models::architecture(cfg)?.shape)(cfg))?;
        let weights = WeightsFile::open(&setup.files.weights())?;
        let mut model = (models::architecture(&setup.model)?.load)(&setup.model, &weights.tensors()?)?;
        if model.hidden_size() != setup.shape.hidden {
            return Err(EmbedError::Load(format!(
                "{}: the checkpoint makes token vectors of {} values, config.json says {}",
                setup.files.dir.display(),
                model.hidden_size(),
                setup.shape.hidden
            )));
        }
        let path = pack_dense_layers(model.as_mut(), precision, dispatch, opts);
        let sha = weights_sha256(&weights);
        drop(weights);
        let threads = resolve_threads(opts.threads);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("papersys-embed-{i}"))
            .build()
            .map_err(|e| EmbedError::Load(format!("cannot start {threads} embedding threads: {e}")))?;
        let mut identity = Self::identity_of(opts, &setup, sha);
        identity.precision = model.dense_format().map(|f| f.precision().as_str().to_string());
        tracing::info!(model = %identity.name, dir = %setup.files.dir.display(), threads, max_tokens = setup.max_tokens, compute = %path, "native CPU engine loaded");
        Ok(NativeEmbedder {
            identity,
            tokenizer: setup.tokenizer,
            batch_size: opts.batch_size.max(1),
            chain: setup.chain,
            engine: Engine::Cpu(CpuEngine {
                model,
                path,
                pool,
                threads,
                hidden: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Loads the model into the candle engine on the CPU: the code path GPU
    /// builds run, checked on machines without a GPU. Unlike the CPU engine
    /// this honours [`Precision::F16`] (slowly), to test the f16 path too.
    #[cfg(feature = "candle")]
    pub fn load_candle_cpu(opts: &NativeOptions, precision: Precision) -> Result<Self, EmbedError> {
        Self::load_candle(opts, candle_engine::CandleDevice::Cpu, precision)
    }

    #[cfg(feature = "candle")]
    fn load_candle(
        opts: &NativeOptions,
        device: candle_engine::CandleDevice,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        let setup = setup(opts, |cfg| match cfg.model_type.as_str() {
            "bert" | "xlm-roberta" | "roberta" => (models::architecture(cfg)?.shape)(cfg),
            other => Err(candle_engine::unsupported_model_type(other)),
        })?;
        let weights = WeightsFile::open(&setup.files.weights())?;
        let sha = weights_sha256(&weights);
        drop(weights);
        let engine = candle_engine::CandleEngine::load(&setup.files, &setup.model, device, precision)?;
        let mut identity = Self::identity_of(opts, &setup, sha);
        identity.precision = (precision == Precision::BF16).then(|| "bfloat16".to_string());
        Ok(NativeEmbedder {
            identity,
            tokenizer: setup.tokenizer,
            batch_size: opts.batch_size.max(1),
            chain: setup.chain,
            engine: Engine::Candle(engine),
        })
    }

    fn identity_of(opts: &NativeOptions, setup: &ModelSetup, sha: String) -> ModelIdentity {
        ModelIdentity {
            name: opts.name.clone(),
            revision: setup.files.revision.clone(),
            weights_sha256: Some(sha),
            dimension: setup.chain.dimension(),
            max_tokens: setup.max_tokens,
            pooling: setup.sentence.pooling,
            normalize: setup.sentence.normalize,
            document_prefix: setup.tokenizer.prefix().to_string(),
            backend: "native".into(),
            precision: None,
        }
    }

    /// The text put before every document (part of the hashed text).
    pub fn document_prefix(&self) -> &str {
        self.tokenizer.prefix()
    }

    /// Effective truncation in tokens, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_tokens()
    }

    /// Tokenises `texts` (prefix added, truncated, packed).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<TokenBatch, EmbedError> {
        self.tokenizer.encode_batch(texts)
    }

    /// Embeds packed token ids: one vector per sequence, in order.
    pub fn embed_tokens(&self, batch: &TokenBatch) -> Result<Embeddings, EmbedError> {
        let dim = self.identity.dimension;
        let cu = &batch.cu_seq_lengths;
        let well_formed = cu.first().is_none_or(|&c| c == 0)
            && cu.windows(2).all(|w| w[0] <= w[1])
            && cu.last().map_or(batch.input_ids.is_empty(), |&c| {
                c as usize == batch.input_ids.len()
            });
        if !well_formed {
            return Err(EmbedError::Inference(
                "malformed token batch: cu_seq_lengths must start at 0, never decrease and end at the number of ids"
                    .into(),
            ));
        }
        let mut out = Vec::with_capacity(batch.len() * dim);
        let n = batch.len();
        let mut first = 0;
        while first < n {
            // Up to batch_size texts and TOKENS_PER_PASS tokens (at least one
            // text) per forward pass: bounds the activation buffers.
            let mut last = first + 1;
            while last < n
                && last - first < self.batch_size
                && (cu[last + 1] - cu[first]) as usize <= TOKENS_PER_PASS
            {
                last += 1;
            }
            let base = batch.cu_seq_lengths[first];
            let ids = &batch.input_ids[base as usize..batch.cu_seq_lengths[last] as usize];
            let cu: Vec<u32> = batch.cu_seq_lengths[first..=last]
                .iter()
                .map(|c| c - base)
                .collect();
            self.run(ids, &cu, &mut out)?;
            first = last;
        }
        let embeddings = Embeddings::new(dim, out)?;
        embeddings.validate(n, dim)?;
        Ok(embeddings)
    }

    fn run(&self, ids: &[u32], cu: &[u32], out: &mut Vec<f32>) -> Result<(), EmbedError> {
        match &self.engine {
            Engine::Cpu(cpu) => {
                let mut guard = cpu.hidden.lock().unwrap_or_else(|e| e.into_inner());
                let hidden: &mut Vec<f32> = &mut guard;
                cpu.pool
                    .install(|| cpu.model.forward(ids, cu, cpu.threads, hidden))?;
                self.chain.apply(hidden, cu, out);
            }
            #[cfg(feature = "candle")]
            Engine::Candle(engine) => {
                let hidden = engine.forward(ids, cu)?;
                self.chain.apply(&hidden, cu, out);
            }
        }
        Ok(())
    }
}

impl Embedder for NativeEmbedder {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn batching(&self) -> BatchingHint {
        BatchingHint {
            batch_size: self.batch_size,
            max_in_flight: 1,
        }
    }

    fn prepare(&self, texts: Vec<String>) -> Result<PreparedBatch, EmbedError> {
        self.tokenize(&texts).map(PreparedBatch::Tokens)
    }

    fn embed(&self, batch: &PreparedBatch) -> Result<Embeddings, EmbedError> {
        match batch {
            PreparedBatch::Tokens(tokens) => self.embed_tokens(tokens),
            PreparedBatch::Texts(texts) => self.embed_tokens(&self.tokenize(texts)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_without_the_feature_is_an_error_about_device() {
        if cfg!(feature = "cuda") {
            return;
        }
        let opts = NativeOptions {
            device: Device::Cuda(0),
            ..NativeOptions::default()
        };
        match NativeEmbedder::load(&opts) {
            Err(EmbedError::BadOption { key, message }) => {
                assert_eq!(key, "device");
                assert!(message.contains("--features"), "{message}");
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a CPU-only build loaded a CUDA model"),
        }
    }

    /// A cache blob whose name is not the SHA-256 of its content: the
    /// identity takes the content's hash.
    #[test]
    fn the_weights_hash_comes_from_the_content_not_the_blob_name() {
        let _guard = loader::tests::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--org--tiny");
        let commit = "e".repeat(40);
        let snap = repo.join("snapshots").join(&commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), &commit).unwrap();
        for sub in ["", "1_Pooling", "2_Normalize"] {
            std::fs::create_dir_all(snap.join(sub)).unwrap();
            for entry in std::fs::read_dir(fixture.join(sub)).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    std::fs::copy(entry.path(), snap.join(sub).join(entry.file_name())).unwrap();
                }
            }
        }
        let liar = "ab".repeat(32);
        std::fs::rename(snap.join("model.safetensors"), repo.join("blobs").join(&liar)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{liar}"), snap.join("model.safetensors")).unwrap();
        // SAFETY: tests touching the environment hold ENV_LOCK.
        unsafe {
            std::env::set_var("HF_HUB_CACHE", cache.path());
            std::env::set_var("HF_HUB_OFFLINE", "1");
        }
        let loaded = NativeEmbedder::load(&NativeOptions {
            name: "org/tiny".into(),
            ..NativeOptions::default()
        });
        unsafe { std::env::remove_var("HF_HUB_CACHE") };
        let embedder = loaded.unwrap();
        let content = WeightsFile::open(&fixture.join("model.safetensors"))
            .unwrap()
            .sha256();
        assert_ne!(content, liar);
        assert_eq!(
            embedder.identity().weights_sha256.as_deref(),
            Some(content.as_str())
        );
        assert_eq!(embedder.identity().revision.as_deref(), Some(commit.as_str()));
    }
}
