//! Which model made a vector.

use serde::{Deserialize, Serialize};

/// How token vectors become one text vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Average of all token vectors (all-MiniLM-L6-v2, E5, GTE).
    Mean,
    /// The first token's vector (BGE).
    Cls,
    /// The last token's vector (decoder embedders such as Qwen3-Embedding).
    LastToken,
    /// Unknown: the backend cannot tell (a remote server).
    Unknown,
    /// The element-wise maximum of the token vectors.
    Max,
    /// The sum of the token vectors over the square root of their count.
    MeanSqrtLen,
    /// Average weighted by position (1, 2, 3, ...).
    WeightedMean,
    /// Several of the above, concatenated (sentence-transformers' list of
    /// pooling modes).
    Concatenated,
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "last_token",
            Pooling::Unknown => "unknown",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
            Pooling::WeightedMean => "weighted_mean",
            Pooling::Concatenated => "concatenated",
        })
    }
}

/// Everything that decides what vector a text gets.
///
/// Stored in `manifest.json` under `model_identity`. Two identities that
/// disagree on any of these fields produce incomparable vectors, so the
/// pipeline refuses to mix them under one alias.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// Model id or served model name, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub name: String,
    /// Hub commit the files came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// SHA-256 of the weights file, when the backend has the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// Vector length.
    pub dimension: usize,
    /// Effective truncation in tokens (0 when the backend cannot tell).
    pub max_tokens: usize,
    /// Pooling of token vectors.
    pub pooling: Pooling,
    /// Whether vectors are L2-normalised.
    pub normalize: bool,
    /// Text put before every document (E5's `passage: `); part of the hashed text.
    pub document_prefix: String,
    /// Which backend kind computed the vectors (`native`, `openai`, ...);
    /// informational, not compared.
    pub backend: String,
    /// The reduced precision the linear layers ran in (`bfloat16`), absent
    /// for the float32 reference (and in manifests written before it was
    /// recorded); compared as `float32` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

/// One field on which a configured model differs from the recorded one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityMismatch {
    /// Field name as in the manifest.
    pub field: &'static str,
    /// Value recorded in the manifest.
    pub recorded: String,
    /// Value of the model configured now.
    pub current: String,
}

impl std::fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: recorded {}, configured {}",
            self.field, self.recorded, self.current
        )
    }
}

impl ModelIdentity {
    /// Lists the fields on which `self` (the model configured now) would make
    /// different vectors than `recorded` (the model that made the vectors on
    /// disk). Facts only one side knows (a weights hash a server cannot give,
    /// a pooling it cannot tell) are not held against it.
    pub fn mismatches(&self, recorded: &ModelIdentity) -> Vec<IdentityMismatch> {
        let mut out = Vec::new();
        let mut check = |field: &'static str, recorded: String, current: String| {
            if recorded != current {
                out.push(IdentityMismatch {
                    field,
                    recorded,
                    current,
                });
            }
        };
        check("name", recorded.name.clone(), self.name.clone());
        check(
            "dimension",
            recorded.dimension.to_string(),
            self.dimension.to_string(),
        );
        check(
            "document_prefix",
            format!("{:?}", recorded.document_prefix),
            format!("{:?}", self.document_prefix),
        );
        check(
            "precision",
            recorded.precision.as_deref().unwrap_or("float32").to_string(),
            self.precision.as_deref().unwrap_or("float32").to_string(),
        );
        if let (Some(a), Some(b)) = (&recorded.weights_sha256, &self.weights_sha256) {
            check("weights_sha256", a.clone(), b.clone());
        }
        if recorded.max_tokens != 0 && self.max_tokens != 0 {
            check(
                "max_tokens",
                recorded.max_tokens.to_string(),
                self.max_tokens.to_string(),
            );
        }
        if recorded.pooling != Pooling::Unknown && self.pooling != Pooling::Unknown {
            check("pooling", recorded.pooling.to_string(), self.pooling.to_string());
            check(
                "normalize",
                recorded.normalize.to_string(),
                self.normalize.to_string(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> ModelIdentity {
        ModelIdentity {
            name: "sentence-transformers/all-MiniLM-L6-v2".into(),
            revision: Some("c9745ed1".into()),
            weights_sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db".into()),
            dimension: 384,
            max_tokens: 256,
            pooling: Pooling::Mean,
            normalize: true,
            document_prefix: String::new(),
            backend: "native".into(),
            precision: None,
        }
    }

    #[test]
    fn same_model_matches_even_across_backends() {
        let native = minilm();
        let mut served = minilm();
        served.backend = "openai".into();
        served.weights_sha256 = None;
        served.revision = None;
        served.max_tokens = 0;
        served.pooling = Pooling::Unknown;
        assert!(served.mismatches(&native).is_empty());
        assert!(native.mismatches(&served).is_empty());
    }

    #[test]
    fn different_weights_prefix_or_truncation_are_reported() {
        let recorded = minilm();
        let mut current = minilm();
        current.weights_sha256 = Some("00".into());
        current.document_prefix = "passage: ".into();
        current.max_tokens = 512;
        let fields: Vec<_> = current.mismatches(&recorded).iter().map(|m| m.field).collect();
        assert_eq!(fields, ["document_prefix", "weights_sha256", "max_tokens"]);
    }

    #[test]
    fn precision_is_compared_and_absent_means_float32() {
        let recorded = minilm();
        let mut current = minilm();
        current.precision = Some("bfloat16".into());
        let found = current.mismatches(&recorded);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].to_string(),
            "precision: recorded float32, configured bfloat16"
        );
        assert_eq!(recorded.mismatches(&current)[0].field, "precision");
        current.precision = Some("float32".into());
        assert!(current.mismatches(&recorded).is_empty());
        let json = serde_json::to_string(&minilm()).unwrap();
        assert!(!json.contains("precision"), "{json}");
    }

    #[test]
    fn identity_round_trips_through_json() {
        let id = minilm();
        let json = serde_json::to_string(&id).unwrap();
        assert!(json.contains("\"pooling\":\"mean\""), "{json}");
        let back: ModelIdentity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}
