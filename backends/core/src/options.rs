//! Value types the backends' option tables share.
//!
//! Each backend crate owns the keys of a model table that only it reads
//! (`NativeTable`, `RemoteTable`), as serde structs the config file is
//! deserialised into; these are the types their fields have in common.
//! Their `Deserialize` impls carry the check, so a bad value is refused
//! where it is parsed, with the position the parser knows.

use serde::de::{Deserializer, Error as _, Unexpected};
use serde::{Deserialize, Serialize};

/// A positive integer (`threads`, `max_length`, `max_concurrency`, ...):
/// zero and negative values are refused while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Positive(usize);

impl Positive {
    /// `n` when it is at least 1.
    pub fn new(n: usize) -> Option<Positive> {
        (n > 0).then_some(Positive(n))
    }

    /// The value (at least 1).
    pub fn get(self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(deserializer)?;
        usize::try_from(n)
            .ok()
            .and_then(Positive::new)
            .ok_or_else(|| D::Error::invalid_value(Unexpected::Signed(n), &"a positive integer"))
    }
}

/// A number of seconds greater than zero (`timeout_s`); integers and
/// fractions are both accepted.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Seconds(f64);

impl Seconds {
    /// The duration (never zero).
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = f64::deserialize(deserializer)?;
        match std::time::Duration::try_from_secs_f64(s) {
            Ok(d) if !d.is_zero() => Ok(Seconds(s)),
            _ => Err(D::Error::invalid_value(
                Unexpected::Float(s),
                &"a positive number of seconds",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_refuses_zero_and_negatives_with_the_value() {
        assert_eq!(serde_json::from_str::<Positive>("8").unwrap().get(), 8);
        for bad in ["0", "-4"] {
            let e = serde_json::from_str::<Positive>(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("a positive integer"), "{e}");
        }
        assert!(serde_json::from_str::<Positive>("\"8\"").is_err());
    }

    #[test]
    fn seconds_take_fractions_and_refuse_zero() {
        let s: Seconds = serde_json::from_str("2.5").unwrap();
        assert_eq!(s.duration(), std::time::Duration::from_millis(2500));
        assert_eq!(
            serde_json::from_str::<Seconds>("3").unwrap().duration().as_secs(),
            3
        );
        for bad in ["0", "-1.0", "1e300"] {
            let e = serde_json::from_str::<Seconds>(bad).unwrap_err().to_string();
            assert!(e.contains("positive number of seconds"), "{bad}: {e}");
        }
    }
}
