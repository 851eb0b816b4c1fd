//! A string that must never be shown.

/// An API key or similar credential.
///
/// `Debug` and `Display` print `***`, so a secret that ends up in a log line,
/// an error message or a panic cannot leak; the value is only reachable
/// through [`Secret::expose`], which callers use at the one place it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the HTTP header that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let key = Secret::new("sk-very-secret-1234");
        assert_eq!(format!("{key}"), "***");
        assert!(!format!("{key:?}").contains("sk-very"));
        assert_eq!(key.expose(), "sk-very-secret-1234");
    }
}
