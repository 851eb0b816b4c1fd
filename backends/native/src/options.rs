//! What a model table says about the native engine, parsed once into types:
//! [`NativeTable`] is the part of a `[[embedding.models]]` table only this
//! backend reads, [`Device`] and [`Precision`] its typed values, and
//! [`NativeOptions`] everything [`crate::NativeEmbedder::load`] needs.

use std::path::PathBuf;

use papersys_backend_core::{EmbedError, Positive};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

/// The model papersys uses when none is configured.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Names a model table's `backend` may give for this engine (the first is
/// the default when `backend` is absent).
pub const BACKEND_NAMES: &[&str] = &[
    "sentence_transformer",
    "sentence_transformers",
    "sentence-transformers",
    "native",
];

/// Truncation in tokens when the model table sets no `max_length` (the
/// model's own limit applies when it is lower).
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// The keys of a model table only the native engine reads: the fields of
/// [`NativeTable`].
pub const NATIVE_KEYS: &[&str] = &["model_path", "threads", "max_length", "device", "precision"];

/// The native engine's keys of a model table, typed. Unknown keys are
/// refused; the config loader hands over only the keys in [`NATIVE_KEYS`]
/// and names a key of another backend itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeTable {
    /// A local model directory; the loader resolves it against the config
    /// file's directory. It must exist: a missing one is an error, not a
    /// fall-back to the Hugging Face cache.
    pub model_path: Option<PathBuf>,
    /// CPU threads; absent: every core.
    pub threads: Option<Positive>,
    /// Truncation limit in tokens; absent: [`DEFAULT_MAX_LENGTH`].
    pub max_length: Option<Positive>,
    /// Where the forward pass runs; absent: the CPU.
    #[serde(default)]
    pub device: Device,
    /// Compute precision; absent or `"auto"`: `None`, which lets the
    /// device decide (see [`Precision::effective`]).
    #[serde(default, deserialize_with = "precision_setting")]
    pub precision: Option<Precision>,
}

/// How to find and run a model: the native part of a model table plus the
/// keys every backend shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeOptions {
    /// Hub model id (`sentence-transformers/all-MiniLM-L6-v2`), also the
    /// recorded model name.
    pub name: String,
    /// A local model directory; when set it must hold the model (it is
    /// never silently replaced by the Hugging Face cache's copy).
    pub model_path: Option<PathBuf>,
    /// Truncation limit in tokens; the effective one is the smallest of
    /// this, the model's `max_seq_length` and its position table.
    pub max_length: Option<usize>,
    /// Texts per batch the pipeline should send.
    pub batch_size: usize,
    /// Where the forward pass runs.
    pub device: Device,
    /// Requested precision; `None` is `"auto"` (see [`Precision::effective`]).
    pub precision: Option<Precision>,
    /// Worker threads; `None` uses every core.
    pub threads: Option<usize>,
    /// Text put before every document; `None` takes the model's own document
    /// prompt from `config_sentence_transformers.json` (E5 needs `passage: `).
    pub document_prefix: Option<String>,
    /// The vector length the model table declares (`dimension`), checked
    /// against the model's.
    pub expected_dimension: Option<usize>,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            name: DEFAULT_MODEL.into(),
            model_path: None,
            max_length: None,
            batch_size: 32,
            device: Device::Cpu,
            precision: None,
            threads: None,
            document_prefix: None,
            expected_dimension: None,
        }
    }
}

impl NativeOptions {
    /// The options of a model table: `table` (its native keys) and the keys
    /// every backend shares.
    pub fn from_table(
        name: &str,
        batch_size: usize,
        dimension: usize,
        document_prefix: Option<String>,
        table: &NativeTable,
    ) -> NativeOptions {
        NativeOptions {
            name: name.to_string(),
            model_path: table.model_path.clone(),
            max_length: Some(table.max_length.map_or(DEFAULT_MAX_LENGTH, Positive::get)),
            batch_size,
            device: table.device,
            precision: table.precision,
            threads: table.threads.map(Positive::get),
            document_prefix,
            expected_dimension: Some(dimension),
        }
    }
}

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The native CPU engine (`""` or `"cpu"`).
    #[default]
    Cpu,
    /// A CUDA GPU (`"cuda"` is ordinal 0, `"cuda:N"`), through the candle
    /// engine; only in builds with the `cuda` feature.
    Cuda(usize),
}

impl Device {
    /// Parses a `device` value: `""` or `"cpu"`, `"cuda"`, `"cuda:N"`, in
    /// any case, surrounding spaces ignored. Whether this build can run on
    /// it is [`Device::check_built`]'s question.
    pub fn parse(device: &str) -> Result<Device, String> {
        let d = device.trim().to_ascii_lowercase();
        match d.as_str() {
            "" | "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(ordinal)) => Ok(Device::Cuda(ordinal)),
                _ => Err(format!(
                    "device {device:?} is not supported; expected \"\", \"cpu\", \"cuda\" or \"cuda:N\""
                )),
            },
        }
    }

    /// An error when this build cannot run on the device (CUDA without the
    /// `cuda` feature), saying how to get a build that can.
    pub fn check_built(self) -> Result<(), EmbedError> {
        if matches!(self, Device::Cuda(_)) && !cfg!(feature = "cuda") {
            return Err(cuda_not_built(self));
        }
        Ok(())
    }
}

/// The error for a CUDA device in a build without the `cuda` feature.
pub(crate) fn cuda_not_built(device: Device) -> EmbedError {
    EmbedError::BadOption {
        key: "device",
        message: format!(
            "{device} needs a GPU build, but this papersys was built without the `cuda` \
             cargo feature of papersys-backend-native; rebuild on a machine with the CUDA \
             toolkit with that feature enabled (cargo build --release --features \
             papersys-backend-native/cuda), or set device = \"cpu\""
        ),
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Device::parse(&s).map_err(D::Error::custom)
    }
}

/// Numeric precision of the forward pass. `"auto"` is not a variant: it is
/// the absence of a request (`Option<Precision>::None`), which
/// [`Precision::effective`] turns into one of these.
///
/// Adding a variant: give it its spellings in [`Precision::SPELLINGS`] (the
/// first is its canonical name, [`Precision::as_str`]), say in
/// [`Precision::effective`] what the CPU engine does with it, and map it to
/// a dtype in the candle engine (`candle_engine.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 everywhere.
    F32,
    /// f16 weights and activations (CUDA only); vectors are still stored as f32.
    F16,
    /// bf16 weights and activations of the linear layers, f32 sums; the
    /// rest (LayerNorm, softmax, GELU, attention) in f32. The CPU engine runs
    /// it where the CPU has AVX512-BF16, else f32 with a warning.
    BF16,
    /// int8 weights of the linear layers (one scale per output) and int8
    /// activations (one scale and zero point per token), exact integer
    /// sums; the rest in f32. CPU engine only, where the CPU has
    /// AVX512-VNNI (else f32 with a warning). Vectors stay within cosine
    /// 0.99 of f32 (see docs/benchmarks.md for measured figures).
    Int8,
}

impl Precision {
    /// Every spelling a `precision` value may have (any case, surrounding
    /// spaces ignored) and what it asks for; `None` is "auto". The first
    /// spelling of each precision is its canonical name.
    pub const SPELLINGS: &[(&str, Option<Precision>)] = &[
        ("auto", None),
        ("", None),
        ("float32", Some(Precision::F32)),
        ("fp32", Some(Precision::F32)),
        ("f32", Some(Precision::F32)),
        ("float16", Some(Precision::F16)),
        ("fp16", Some(Precision::F16)),
        ("f16", Some(Precision::F16)),
        ("half", Some(Precision::F16)),
        ("bfloat16", Some(Precision::BF16)),
        ("bf16", Some(Precision::BF16)),
        ("int8", Some(Precision::Int8)),
    ];

    /// Parses a `precision` value; `Ok(None)` is "auto".
    pub fn parse(precision: &str) -> Result<Option<Precision>, String> {
        let p = precision.trim().to_ascii_lowercase();
        Self::SPELLINGS
            .iter()
            .find(|(spelling, _)| *spelling == p)
            .map(|(_, parsed)| *parsed)
            .ok_or_else(|| {
                let canonical: Vec<String> = Self::SPELLINGS
                    .iter()
                    .filter(|(s, parsed)| !s.is_empty() && parsed.is_none_or(|p| p.as_str() == *s))
                    .map(|(s, _)| format!("{s:?}"))
                    .collect();
                format!(
                    "precision {precision:?} is not supported; expected one of {}",
                    canonical.join(", ")
                )
            })
    }

    /// The canonical name, as the config file spells it.
    pub fn as_str(self) -> &'static str {
        Self::SPELLINGS
            .iter()
            .find(|(_, parsed)| *parsed == Some(self))
            .map_or("", |(spelling, _)| spelling)
    }

    /// The precision the engine on `device` computes in when `requested`
    /// (`None`: auto) is asked for: the CPU engine computes in f32 unless
    /// bf16 is asked; a GPU honours the request and picks f16 for auto.
    pub fn effective(requested: Option<Precision>, device: Device) -> Precision {
        match (device, requested) {
            (Device::Cpu, Some(Precision::F16)) => {
                tracing::info!("precision float16 requested: the CPU engine computes in float32");
                Precision::F32
            }
            (Device::Cpu, Some(Precision::BF16)) => Precision::BF16,
            (Device::Cpu, Some(Precision::Int8)) => Precision::Int8,
            (Device::Cpu, _) => Precision::F32,
            (Device::Cuda(_), None) => Precision::F16,
            (Device::Cuda(_), Some(p)) => p,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn precision_setting<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Precision>, D::Error> {
    let s = String::deserialize(deserializer)?;
    Precision::parse(&s).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_in_any_case_and_refuse_the_rest() {
        for (text, device) in [
            ("", Device::Cpu),
            ("cpu", Device::Cpu),
            (" CPU ", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("CUDA:1", Device::Cuda(1)),
        ] {
            assert_eq!(Device::parse(text), Ok(device), "{text:?}");
        }
        for bad in ["gpu", "metal", "cuda:", "cuda:x", "cuda:-1"] {
            let e = Device::parse(bad).unwrap_err();
            assert!(e.contains("not supported") && e.contains("cuda:N"), "{e}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cuda_needs_the_feature() {
        if cfg!(feature = "cuda") {
            assert!(Device::Cuda(0).check_built().is_ok());
            return;
        }
        let e = Device::Cuda(1).check_built().unwrap_err();
        assert!(matches!(e, EmbedError::BadOption { key: "device", .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("cuda:1") && e.contains("--features"), "{e}");
        assert!(Device::Cpu.check_built().is_ok());
    }

    #[test]
    fn precision_spellings_and_the_auto_rule() {
        for (text, wanted) in [
            ("auto", None),
            ("float32", Some(Precision::F32)),
            ("FP32", Some(Precision::F32)),
            ("f32", Some(Precision::F32)),
            ("float16", Some(Precision::F16)),
            ("fp16", Some(Precision::F16)),
            ("half", Some(Precision::F16)),
            ("bfloat16", Some(Precision::BF16)),
            ("BF16", Some(Precision::BF16)),
            (" INT8 ", Some(Precision::Int8)),
        ] {
            assert_eq!(Precision::parse(text), Ok(wanted), "{text}");
        }
        let e = Precision::parse("int4").unwrap_err();
        assert!(
            e.contains("\"int4\"")
                && e.contains("\"auto\", \"float32\", \"float16\", \"bfloat16\", \"int8\""),
            "{e}"
        );
        assert_eq!(Precision::Int8.as_str(), "int8");
        assert_eq!(
            Precision::effective(Some(Precision::Int8), Device::Cpu),
            Precision::Int8
        );
        assert_eq!(Precision::F16.as_str(), "float16");
        assert_eq!(Precision::BF16.as_str(), "bfloat16");
        assert_eq!(
            Precision::effective(Some(Precision::BF16), Device::Cpu),
            Precision::BF16
        );
        assert_eq!(
            Precision::effective(Some(Precision::F16), Device::Cpu),
            Precision::F32
        );
        assert_eq!(Precision::effective(None, Device::Cuda(0)), Precision::F16);
        assert_eq!(
            Precision::effective(Some(Precision::F32), Device::Cuda(0)),
            Precision::F32
        );
    }

    #[test]
    fn the_table_takes_only_its_keys_typed() {
        let table: NativeTable = serde_json::from_str(
            r#"{"model_path": "m", "threads": 2, "max_length": 128, "device": "cuda:1", "precision": "fp16"}"#,
        )
        .unwrap();
        assert_eq!(table.device, Device::Cuda(1));
        assert_eq!(table.precision, Some(Precision::F16));
        assert_eq!(table.threads.map(Positive::get), Some(2));
        let auto: NativeTable = serde_json::from_str(r#"{"precision": "auto"}"#).unwrap();
        assert_eq!((auto.precision, auto.device), (None, Device::Cpu));
        let e = serde_json::from_str::<NativeTable>(r#"{"threads": 0}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive integer"), "{e}");
        // NATIVE_KEYS are exactly the struct's fields: serde lists them in
        // its unknown-field message.
        let e = serde_json::from_str::<NativeTable>(r#"{"zzz": 1}"#)
            .unwrap_err()
            .to_string();
        let listed: Vec<&str> = e.split('`').skip(3).step_by(2).collect();
        assert_eq!(listed, NATIVE_KEYS, "{e}");
    }

    #[test]
    fn options_from_a_table_default_the_truncation() {
        let options = NativeOptions::from_table("m", 8, 384, None, &NativeTable::default());
        assert_eq!(options.max_length, Some(DEFAULT_MAX_LENGTH));
        assert_eq!((options.batch_size, options.expected_dimension), (8, Some(384)));
        assert_eq!((options.device, options.precision), (Device::Cpu, None));
    }
}
