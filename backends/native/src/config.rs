//! What the model directory says: the transformer's `config.json` and the
//! sentence-transformers files around it (`modules.json`, the pooling
//! config, `sentence_bert_config.json`, `config_sentence_transformers.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use papersys_backend_core::{EmbedError, Pooling};
use serde::Deserialize;

/// The fields of a Hugging Face `config.json` the encoder needs.
#[derive(Clone, Debug, Deserialize)]
pub struct TransformerConfig {
    /// `bert`, `xlm-roberta`, ...
    pub model_type: String,
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
    let modules: Option<Vec<Module>> = read_json(&dir.join("modules.json"))?;
    let mut pooling = Pooling::Mean;
    let mut normalize = false;
    let mut transformer_path = String::new();
    let mut include_prompt = true;
    if let Some(modules) = modules {
        let mut saw_pooling = false;
        for module in &modules {
            let kind = module.kind.rsplit('.').next().unwrap_or(&module.kind);
            match kind {
                "Transformer" => transformer_path = module.path.clone(),
                "Pooling" => {
                    let path = dir.join(&module.path).join("config.json");
                    let file: PoolingFile = read_json(&path)?
                        .ok_or_else(|| EmbedError::Load(format!("{} is missing", path.display())))?;
                    pooling = parse_pooling(&file, &path)?;
                    include_prompt = file.include_prompt;
                    saw_pooling = true;
                }
                "Normalize" => normalize = true,
                _ => {
                    return Err(EmbedError::Unsupported(format!(
                        "{}: module {} is not supported (supported: Transformer, Pooling, Normalize)",
                        dir.join("modules.json").display(),
                        module.kind
                    )));
                }
            }
        }
        if !saw_pooling {
            return Err(EmbedError::Unsupported(format!(
                "{}: no Pooling module; token embeddings cannot be stored as one vector",
                dir.join("modules.json").display()
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
    if !include_prompt {
        return Err(EmbedError::Unsupported(format!(
            "{}: pooling with include_prompt=false is not supported",
            dir.display()
        )));
    }
    Ok(SentenceConfig {
        pooling,
        normalize,
        max_seq_length: sbert.max_seq_length,
        lowercase: sbert.do_lower_case,
        document_prompt,
        query_prompt,
        transformer_path,
    })
}

fn parse_pooling(file: &PoolingFile, path: &Path) -> Result<Pooling, EmbedError> {
    if let Some(mode) = &file.pooling_mode {
        let single = match mode {
            serde_json::Value::String(s) => Some(s.as_str()),
            serde_json::Value::Array(list) if list.len() == 1 => list[0].as_str(),
            _ => None,
        };
        return match single {
            Some("mean") => Ok(Pooling::Mean),
            Some("cls") => Ok(Pooling::Cls),
            Some("lasttoken") => Ok(Pooling::LastToken),
            _ => Err(EmbedError::Unsupported(format!(
                "{}: pooling_mode {mode} is not supported (supported: mean, cls, lasttoken)",
                path.display()
            ))),
        };
    }
    let unsupported = [
        (file.pooling_mode_max_tokens, "max"),
        (file.pooling_mode_mean_sqrt_len_tokens, "mean_sqrt_len"),
        (file.pooling_mode_weightedmean_tokens, "weightedmean"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(EmbedError::Unsupported(format!(
            "{}: {name} pooling is not supported (supported: mean, cls, lasttoken)",
            path.display()
        )));
    }
    match (
        file.pooling_mode_mean_tokens,
        file.pooling_mode_cls_token,
        file.pooling_mode_lasttoken,
    ) {
        (true, false, false) => Ok(Pooling::Mean),
        (false, true, false) => Ok(Pooling::Cls),
        (false, false, true) => Ok(Pooling::LastToken),
        _ => Err(EmbedError::Unsupported(format!(
            "{}: exactly one of mean, cls, lasttoken pooling must be on",
            path.display()
        ))),
    }
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
            r#"{"pooling_mode_max_tokens": true}"#,
        );
        let e = read_sentence_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("max pooling is not supported"), "{e}");
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
            r#"[{"type":"sentence_transformers.models.Dense","path":"2_Dense"}]"#,
        );
        let e = read_sentence_config(dir.path()).unwrap_err().to_string();
        assert!(e.contains("sentence_transformers.models.Dense"), "{e}");
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
