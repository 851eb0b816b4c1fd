//! The OpenAI embeddings wire format: request bodies and strict decoding of
//! responses into one flat, input-ordered buffer.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// `encoding_format` of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// JSON numbers.
    Float,
    /// Base64 of little-endian `f32`.
    Base64,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Float => "float",
            Format::Base64 => "base64",
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncate_prompt_tokens: Option<usize>,
}

/// Optional request fields, as configured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Extras {
    pub dimensions: Option<usize>,
    pub truncate_prompt_tokens: Option<usize>,
}

/// The JSON body of `POST /v1/embeddings`.
pub(crate) fn request_body(model: &str, input: &[String], format: Format, extras: Extras) -> Vec<u8> {
    let request = Request {
        model,
        input,
        encoding_format: format.as_str(),
        dimensions: extras.dimensions,
        truncate_prompt_tokens: extras.truncate_prompt_tokens,
    };
    // Serialising strings and integers into a Vec cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

/// Why a response was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeErrorKind {
    /// Not JSON, not the expected shape, wrong count or indices: possibly a
    /// transient fault of the server or something in between.
    Malformed,
    /// Base64 that does not decode to whole `f32`s (the server may encode
    /// something else, or not support base64 properly).
    Base64,
    /// Base64 of whole `f32`s, but not `dimension` of them: a wrong
    /// dimension from a server that takes base64, or (while base64 is on
    /// trial) one that encodes something else, such as `f64`.
    Base64Dimension,
    /// Vectors of another length than configured: a configuration error.
    Dimension,
    /// NaN or infinity: the model itself misbehaves on this input.
    NonFinite,
}

/// A refused response: why, and a message for the user.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub kind: DecodeErrorKind,
    pub message: String,
}

impl DecodeError {
    fn new(kind: DecodeErrorKind, message: String) -> Self {
        DecodeError { kind, message }
    }
}

/// One vector as sent: numbers (`null` read as NaN, as orjson writes it) or base64.
enum Vector {
    Floats(Vec<f32>),
    Base64(String),
}

impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VectorVisitor;
        impl<'de> Visitor<'de> for VectorVisitor {
            type Value = Vector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of numbers or a base64 string")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vector, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1024));
                while let Some(value) = seq.next_element::<Option<f32>>()? {
                    out.push(value.unwrap_or(f32::NAN));
                }
                Ok(Vector::Floats(out))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Vector, E> {
                Ok(Vector::Base64(value.to_owned()))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Vector, E> {
                Ok(Vector::Base64(value))
            }
        }
        deserializer.deserialize_any(VectorVisitor)
    }
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vector,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

/// Decodes and checks a 2xx body: exactly `texts` vectors, each `index`
/// in range and used once, each of `dimension` finite floats. Returns them
/// row-major in input order; any defect refuses the whole response.
pub(crate) fn decode_response(body: &[u8], texts: usize, dimension: usize) -> Result<Vec<f32>, DecodeError> {
    use DecodeErrorKind::*;
    let response: Response = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            DecodeError::new(
                Malformed,
                format!("answered JSON that is not an embeddings response ({e})"),
            )
        } else if contains_non_finite_literal(body) {
            DecodeError::new(
                NonFinite,
                "answered NaN or Infinity, which the model produced and JSON cannot carry".into(),
            )
        } else {
            DecodeError::new(
                Malformed,
                format!("answered a body that is not JSON: {}", excerpt(body)),
            )
        }
    })?;
    if response.data.len() != texts {
        return Err(DecodeError::new(
            Malformed,
            format!("returned {} vectors for {texts} texts", response.data.len()),
        ));
    }
    let mut out = vec![0f32; texts * dimension];
    let mut seen = vec![false; texts];
    for item in response.data {
        let index = item.index;
        if index >= texts {
            return Err(DecodeError::new(
                Malformed,
                format!("returned vector index {index}, out of range for {texts} texts"),
            ));
        }
        if std::mem::replace(&mut seen[index], true) {
            return Err(DecodeError::new(
                Malformed,
                format!("returned vector index {index} twice"),
            ));
        }
        let row = &mut out[index * dimension..(index + 1) * dimension];
        match item.embedding {
            Vector::Floats(values) => {
                if values.len() != dimension {
                    return Err(dimension_error(values.len(), dimension));
                }
                row.copy_from_slice(&values);
            }
            Vector::Base64(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| {
                        DecodeError::new(
                            Base64,
                            format!("returned a vector that is not valid base64 ({e})"),
                        )
                    })?;
                if bytes.len() != dimension * 4 && bytes.len() % 4 == 0 {
                    return Err(DecodeError::new(
                        Base64Dimension,
                        format!(
                            "returned base64 vectors of dimension {}, expected {dimension}: check the model's \
                             `dimension` (and `dimensions`, if set) against what the served model produces",
                            bytes.len() / 4
                        ),
                    ));
                }
                if bytes.len() != dimension * 4 {
                    return Err(DecodeError::new(
                        Base64,
                        format!(
                            "returned a base64 vector of {} bytes where {dimension} little-endian f32 take {}",
                            bytes.len(),
                            dimension * 4
                        ),
                    ));
                }
                for (value, chunk) in row.iter_mut().zip(bytes.chunks_exact(4)) {
                    *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                }
            }
        }
    }
    if let Some(position) = out.iter().position(|v| !v.is_finite()) {
        return Err(DecodeError::new(
            NonFinite,
            format!(
                "returned a non-finite value ({}) in the vector of text {} of the batch",
                out[position],
                position / dimension
            ),
        ));
    }
    Ok(out)
}

fn dimension_error(got: usize, expected: usize) -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::Dimension,
        format!(
            "returned vectors of dimension {got}, expected {expected}: check the model's `dimension` \
             (and `dimensions`, if set) against what the served model produces"
        ),
    )
}

/// Whether a body that failed to parse holds Python's `NaN`/`Infinity` literals.
fn contains_non_finite_literal(body: &[u8]) -> bool {
    body.windows(3).any(|w| w == b"NaN") || body.windows(8).any(|w| w == b"Infinity")
}

/// The start of a body, on one line, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX * 4)]);
    let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > MAX {
        out = out.chars().take(MAX).collect::<String>() + "…";
    }
    if out.is_empty() {
        "(empty body)".into()
    } else {
        format!("{out:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(values: &[f32]) -> String {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn request_body_has_the_openai_fields() {
        let extras = Extras {
            dimensions: Some(2),
            truncate_prompt_tokens: Some(256),
        };
        let body = request_body("m", &["a".into(), "b".into()], Format::Base64, extras);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "model": "m", "input": ["a", "b"], "encoding_format": "base64",
                "dimensions": 2, "truncate_prompt_tokens": 256
            })
        );
        let plain =
            String::from_utf8(request_body("m", &["a".into()], Format::Float, Extras::default())).unwrap();
        assert!(
            !plain.contains("dimensions") && !plain.contains("truncate"),
            "{plain}"
        );
    }

    #[test]
    fn shuffled_float_and_base64_items_are_put_in_input_order() {
        let body = format!(
            r#"{{"object":"list","data":[{{"index":1,"embedding":"{}"}},{{"index":0,"embedding":[1.0,2.0]}}],"usage":{{}}}}"#,
            b64(&[3.0, 4.0])
        );
        assert_eq!(
            decode_response(body.as_bytes(), 2, 2).unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
    }

    #[test]
    fn defects_are_classified() {
        let kind = |body: &str, n, d| decode_response(body.as_bytes(), n, d).unwrap_err().kind;
        use DecodeErrorKind::*;
        assert_eq!(
            kind(r#"{"data":[{"index":0,"embedding":[1.0]}]}"#, 2, 1),
            Malformed
        );
        assert_eq!(
            kind(
                r#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[1]}]}"#,
                2,
                1
            ),
            Malformed
        );
        assert_eq!(kind(r#"{"data":[{"index":5,"embedding":[1]}]}"#, 1, 1), Malformed);
        assert_eq!(kind(r#"{"data":[{"embedding":[1]}]}"#, 1, 1), Malformed);
        assert_eq!(kind("<html>bad gateway</html>", 1, 1), Malformed);
        assert_eq!(
            kind(r#"{"data":[{"index":0,"embedding":[1,2,3]}]}"#, 1, 2),
            Dimension
        );
        assert_eq!(
            kind(r#"{"data":[{"index":0,"embedding":[1,null]}]}"#, 1, 2),
            NonFinite
        );
        assert_eq!(
            kind(r#"{"data":[{"index":0,"embedding":[1,NaN]}]}"#, 1, 2),
            NonFinite
        );
        assert_eq!(
            kind(r#"{"data":[{"index":0,"embedding":[1e39]}]}"#, 1, 1),
            NonFinite
        );
        let short = format!(r#"{{"data":[{{"index":0,"embedding":"{}"}}]}}"#, b64(&[1.0]));
        assert_eq!(kind(&short, 1, 2), Base64Dimension);
        let ragged = r#"{"data":[{"index":0,"embedding":"AAAAAAA="}]}"#;
        assert_eq!(kind(ragged, 1, 2), Base64);
        let nan = format!(
            r#"{{"data":[{{"index":0,"embedding":"{}"}}]}}"#,
            b64(&[1.0, f32::NAN])
        );
        assert_eq!(kind(&nan, 1, 2), NonFinite);
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        let long = "x\n".repeat(1000);
        let text = excerpt(long.as_bytes());
        assert!(text.chars().count() < 210 && !text.contains('\n'), "{text}");
        assert_eq!(excerpt(b""), "(empty body)");
    }
}
