//! What the model directory says: the transformer's `config.json` and the
//! sentence-transformers files around it (`modules.json`, the pooling
//! config, `sentence_bert_config.json`, `config_sentence_transformers.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use papersys_backend_core::{EmbedError, Pooling};
use serde::Deserialize;

use crate::chain::{ChainModule, DenseSpec, PoolMode};

/// The fields of a Hugging Face `config.json` the encoder needs.
#[derive(Clone, Debug, Deserialize)]
pub struct TransformerConfig {
    /// Width of every token vector (the embedding dimension).
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Rows of the position embedding table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding table.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Rows of the word embedding table.
    pub vocab_size: usize,
    /// Padding token id (XLM-R positions start after it).
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}
fn default_position_type() -> String {
    "absolute".into()
}

/// How sentence-transformers turns token vectors into the text vector.
#[derive(Clone, Debug, PartialEq)]
pub struct SentenceConfig {
    /// Pooling of token vectors.
    pub pooling: Pooling,
    /// Whether a `Normalize` module follows pooling.
    pub normalize: bool,
    /// `max_seq_length` of `sentence_bert_config.json`, if given.
    pub max_seq_length: Option<usize>,
    /// `do_lower_case` of `sentence_bert_config.json`: the text is lowercased
    /// before tokenisation.
    pub lowercase: bool,
    /// The document prompt the model's own config asks for (see [`document_prompt`]).
    pub document_prompt: Option<String>,
    /// The query prompt the model's own config asks for (see [`query_prompt`]).
    pub query_prompt: Option<String>,
    /// Subdirectory of the transformer module (`""` for the model root).
    pub transformer_path: String,
    /// The Pooling module's modes, concatenated in this order.
    pub pool_modes: Vec<PoolMode>,
    /// `include_prompt` of the Pooling module: false leaves the prompt's
    /// tokens out of the pooling.
    pub include_prompt: bool,
    /// The modules after Pooling (Dense, Normalize), in order.
    pub after_pooling: Vec<ChainModule>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize, Default)]
struct PoolingFile {
    /// sentence-transformers >= 6: `"mean"`, `"cls"`, ... (or a list of them).
    #[serde(default)]
    pooling_mode: Option<serde_json::Value>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct SbertFile {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize, Default)]
struct StFile {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

/// Reads and parses a JSON file; a missing file is `Ok(None)`.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, EmbedError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EmbedError::Load(format!("cannot read {}: {e}", path.display())));
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EmbedError::Load(format!("cannot parse {}: {e}", path.display())))
}

/// The transformer's `config.json`: its `model_type` and the whole
/// document, which each architecture reads into its own struct.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// `bert`, `xlm-roberta`, `qwen3`, ...
    pub model_type: String,
    /// Where it was read from, for error messages.
    pub path: PathBuf,
    /// The parsed document.
    pub raw: serde_json::Value,
}

impl ModelConfig {
    /// Reads `dir/config.json` (required; `model_type` required).
    pub fn read(dir: &Path) -> Result<Self, EmbedError> {
        let path = dir.join("config.json");
        let raw: serde_json::Value =
            read_json(&path)?.ok_or_else(|| EmbedError::Load(format!("{} is missing", path.display())))?;
        let model_type = raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                EmbedError::Load(format!(
                    "{}: no \"model_type\" string; is this a Hugging Face transformers config?",
                    path.display()
                ))
            })?
            .to_string();
        Ok(ModelConfig {
            model_type,
            path,
            raw,
        })
    }

    /// The document as an architecture's own config struct; a missing or
    /// mistyped field is an error naming the file.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, EmbedError> {
        T::deserialize(&self.raw)
            .map_err(|e| EmbedError::Load(format!("cannot parse {}: {e}", self.path.display())))
    }

    /// The document as the BERT-family encoder reads it.
    pub fn transformer(&self) -> Result<TransformerConfig, EmbedError> {
        self.parse()
    }
}

/// Picks the prompt sentence-transformers would put before a document:
/// a prompt named `document`, `passage` or `corpus` (what `encode_document`
/// looks for), else the one named by `default_prompt_name`.
pub fn document_prompt(
    prompts: &BTreeMap<String, String>,
    default_prompt_name: Option<&str>,
) -> Option<String> {
    ["document", "passage", "corpus"]
        .iter()
        .find_map(|name| prompts.get(*name))
        .or_else(|| default_prompt_name.and_then(|name| prompts.get(name)))
        .cloned()
}

/// Picks the prompt sentence-transformers' `encode_query` puts before a
/// query: the prompt named `query`, else the one named by
/// `default_prompt_name`.
pub fn query_prompt(prompts: &BTreeMap<String, String>, default_prompt_name: Option<&str>) -> Option<String> {
    prompts
        .get("query")
        .or_else(|| default_prompt_name.and_then(|name| prompts.get(name)))
        .cloned()
}

/// Reads the sentence-transformers description of the model in `dir`.
/// Without `modules.json` the model is a bare transformer, which
/// sentence-transformers wraps with mean pooling and no normalisation.
pub fn read_sentence_config(dir: &Path) -> Result<SentenceConfig, EmbedError> {
    let modules_path = dir.join("modules.json");
    let modules: Option<Vec<Module>> = read_json(&modules_path)?;
    let mut pool_modes = vec![PoolMode::Mean];
    let mut after_pooling = Vec::new();
    let mut transformer_path = String::new();
    let mut include_prompt = true;
    if let Some(modules) = modules {
        let mut saw_pooling = false;
        for module in &modules {
            let kind = module.kind.rsplit('.').next().unwrap_or(&module.kind);
            match kind {
                "Transformer" => transformer_path = module.path.clone(),
                "Pooling" if !saw_pooling => {
                    let path = dir.join(&module.path).join("config.json");
                    let file: PoolingFile = read_json(&path)?
                        .ok_or_else(|| EmbedError::Load(format!("{} is missing", path.display())))?;
                    pool_modes = parse_pooling(&file, &path)?;
                    include_prompt = file.include_prompt;
                    saw_pooling = true;
                }
                "Dense" if saw_pooling => {
                    after_pooling.push(ChainModule::Dense(DenseSpec::read(&dir.join(&module.path))?));
                }
                "Normalize" if saw_pooling => after_pooling.push(ChainModule::Normalize),
                "Pooling" | "Dense" | "Normalize" => {
                    return Err(EmbedError::Unsupported(format!(
                        "{}: module {} at this place is not supported (supported: Transformer, then one Pooling, \
                         then Dense and Normalize modules in any order)",
                        modules_path.display(),
                        module.kind
                    )));
                }
                _ => {
                    return Err(EmbedError::Unsupported(format!(
                        "{}: module {} is not supported (supported: Transformer, Pooling, Dense, Normalize)",
                        modules_path.display(),
                        module.kind
                    )));
                }
            }
        }
        if !saw_pooling {
            return Err(EmbedError::Unsupported(format!(
                "{}: no Pooling module; token embeddings cannot be stored as one vector",
                modules_path.display()
            )));
        }
    }
    let sbert: SbertFile = read_json(&dir.join(&transformer_path).join("sentence_bert_config.json"))?
        .or(read_json(&dir.join("sentence_bert_config.json"))?)
        .unwrap_or_default();
    let st: StFile = read_json(&dir.join("config_sentence_transformers.json"))?.unwrap_or_default();
    let document_prompt =
        document_prompt(&st.prompts, st.default_prompt_name.as_deref()).filter(|p| !p.is_empty());
    let query_prompt = query_prompt(&st.prompts, st.default_prompt_name.as_deref()).filter(|p| !p.is_empty());
    let pooling = match pool_modes.as_slice() {
        [one] => one.identity(),
        _ => Pooling::Concatenated,
    };
    Ok(SentenceConfig {
        pooling,
        normalize: matches!(after_pooling.last(), Some(ChainModule::Normalize)),
        max_seq_length: sbert.max_seq_length,
        lowercase: sbert.do_lower_case,
        document_prompt,
        query_prompt,
        transformer_path,
        pool_modes,
        include_prompt,
        after_pooling,
    })
}

/// The Pooling module's modes: `pooling_mode` (a name or a list of names,
/// sentence-transformers >= 6) or the older `pooling_mode_*_token(s)` flags
/// (several on: concatenated in sentence-transformers' fixed order; none on:
/// mean, as sentence-transformers falls back).
fn parse_pooling(file: &PoolingFile, path: &Path) -> Result<Vec<PoolMode>, EmbedError> {
    let parse = |name: &str| {
        PoolMode::parse(name).ok_or_else(|| {
            EmbedError::Unsupported(format!(
                "{}: pooling_mode {name:?} is not supported (supported: {})",
                path.display(),
                PoolMode::NAMES.join(", ")
            ))
        })
    };
    if let Some(mode) = &file.pooling_mode {
        return match mode {
            serde_json::Value::String(s) => Ok(vec![parse(s)?]),
            serde_json::Value::Array(list) if !list.is_empty() => list
                .iter()
                .map(|v| {
                    v.as_str().map(parse).unwrap_or_else(|| {
                        Err(EmbedError::Load(format!(
                            "{}: pooling_mode lists {v}, not a mode name",
                            path.display()
                        )))
                    })
                })
                .collect(),
            other => Err(EmbedError::Load(format!(
                "{}: pooling_mode {other} is neither a mode name nor a list of them",
                path.display()
            ))),
        };
    }
    let flags = [
        (file.pooling_mode_cls_token, PoolMode::Cls),
        (file.pooling_mode_max_tokens, PoolMode::Max),
        (file.pooling_mode_mean_tokens, PoolMode::Mean),
        (file.pooling_mode_mean_sqrt_len_tokens, PoolMode::MeanSqrtLen),
        (file.pooling_mode_weightedmean_tokens, PoolMode::WeightedMean),
        (file.pooling_mode_lasttoken, PoolMode::LastToken),
    ];
    let modes: Vec<PoolMode> = flags.iter().filter(|(on, _)| *on).map(|(_, m)| *m).collect();
    Ok(if modes.is_empty() {
        vec![PoolMode::Mean]
    } else {
        modes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const MODULES: &str = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
        {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#;

    #[test]
    fn reads_minilm_style_config() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", MODULES);
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": true}"#,
        );
        write(
            dir.path(),
            "sentence_bert_config.json",
            r#"{"max_seq_length": 256, "do_lower_case": false}"#,
        );
        let c = read_sentence_config(dir.path()).unwrap();
        assert_eq!(c.pooling, Pooling::Mean);
        assert!(c.normalize);
        assert_eq!(c.max_seq_length, Some(256));
        assert_eq!(c.document_prompt, None);
    }

    #[test]
    fn cls_and_last_token_pooling_and_no_normalize() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            &MODULES.replace(
                r#",
        {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}"#,
                "",
            ),
        );
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true}"#,
        );
        let c = read_sentence_config(dir.path()).unwrap();
        assert_eq!((c.pooling, c.normalize), (Pooling::Cls, false));
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_lasttoken": true}"#,
        );
        assert_eq!(
            read_sentence_config(dir.path()).unwrap().pooling,
            Pooling::LastToken
        );
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_max_tokens": true, "pooling_mode_cls_token": true}"#,
        );
        let c = read_sentence_config(dir.path()).unwrap();
        assert_eq!(c.pool_modes, [PoolMode::Cls, PoolMode::Max]);
        assert_eq!(c.pooling, Pooling::Concatenated);
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode": ["weightedmean", "mean_sqrt_len_tokens"], "include_prompt": false}"#,
        );
        let c = read_sentence_config(dir.path()).unwrap();
        assert_eq!(c.pool_modes, [PoolMode::WeightedMean, PoolMode::MeanSqrtLen]);
        assert!(!c.include_prompt);
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": "max"}"#);
        assert_eq!(read_sentence_config(dir.path()).unwrap().pooling, Pooling::Max);
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode": "median"}"#,
        );
        let e = read_sentence_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("\"median\" is not supported"), "{e}");
    }

    #[test]
    fn dense_and_normalize_follow_pooling_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"type":"sentence_transformers.models.Transformer","path":""},
                {"type":"sentence_transformers.models.Pooling","path":"1_Pooling"},
                {"type":"sentence_transformers.models.Normalize","path":"2_Normalize"},
                {"type":"sentence_transformers.models.Dense","path":"3_Dense"}]"#,
        );
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode": "cls"}"#);
        write(
            dir.path(),
            "3_Dense/config.json",
            r#"{"in_features": 32, "out_features": 16, "bias": false,
                "activation_function": "torch.nn.modules.activation.GELU"}"#,
        );
        let c = read_sentence_config(dir.path()).unwrap();
        assert!(
            !c.normalize,
            "a Dense after Normalize leaves vectors unnormalised"
        );
        let [ChainModule::Normalize, ChainModule::Dense(dense)] = c.after_pooling.as_slice() else {
            panic!("{:?}", c.after_pooling);
        };
        assert_eq!(
            (
                dense.in_features,
                dense.out_features,
                dense.bias,
                dense.activation
            ),
            (32, 16, false, crate::chain::Activation::Gelu)
        );
        write(
            dir.path(),
            "3_Dense/config.json",
            r#"{"in_features": 32, "out_features": 16, "activation_function": "my.Swish"}"#,
        );
        let e = read_sentence_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("my.Swish") && e.contains("3_Dense"), "{e}");
    }

    #[test]
    fn bare_transformer_means_mean_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let c = read_sentence_config(dir.path()).unwrap();
        assert_eq!(
            (c.pooling, c.normalize, c.max_seq_length),
            (Pooling::Mean, false, None)
        );
    }

    #[test]
    fn unknown_module_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"type":"sentence_transformers.models.WordWeights","path":"2_W"}]"#,
        );
        let e = read_sentence_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("sentence_transformers.models.WordWeights"), "{e}");
    }

    #[test]
    fn prompts_follow_sentence_transformers() {
        let mut prompts = BTreeMap::new();
        prompts.insert("query".to_string(), "query: ".to_string());
        assert_eq!(document_prompt(&prompts, None), None);
        assert_eq!(
            document_prompt(&prompts, Some("query")).as_deref(),
            Some("query: ")
        );
        prompts.insert("passage".to_string(), "passage: ".to_string());
        assert_eq!(
            document_prompt(&prompts, Some("query")).as_deref(),
            Some("passage: ")
        );
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": null}"#,
        );
        assert_eq!(
            read_sentence_config(dir.path())
                .unwrap()
                .document_prompt
                .as_deref(),
            Some("passage: ")
        );
    }

    #[test]
    fn query_prompt_follows_encode_query() {
        let mut prompts = BTreeMap::new();
        assert_eq!(query_prompt(&prompts, None), None);
        prompts.insert("passage".to_string(), "passage: ".to_string());
        prompts.insert(
            "retrieval".to_string(),
            "Instruct: find papers\nQuery: ".to_string(),
        );
        assert_eq!(query_prompt(&prompts, None), None);
        assert_eq!(
            query_prompt(&prompts, Some("retrieval")).as_deref(),
            Some("Instruct: find papers\nQuery: ")
        );
        prompts.insert("query".to_string(), "query: ".to_string());
        assert_eq!(
            query_prompt(&prompts, Some("retrieval")).as_deref(),
            Some("query: ")
        );
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": null}"#,
        );
        let config = read_sentence_config(dir.path()).unwrap();
        assert_eq!(config.query_prompt.as_deref(), Some("query: "));
        assert_eq!(config.document_prompt.as_deref(), Some("passage: "));
    }
}
