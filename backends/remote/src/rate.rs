//! Client-side token budget (`tokens_per_minute`) shared by all threads.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Estimated tokens of one text: a quarter of its characters, rounded up,
/// at least 1.
///
/// English averages about four characters per token in the BPE and
/// WordPiece vocabularies embedding models use, so this needs no tokenizer
/// and is close enough to pace requests against a provider's per-minute
/// limit. It underestimates scripts with many tokens per character (CJK);
/// set `tokens_per_minute` below the provider's limit to leave headroom.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// A token bucket that may go into debt: each request reserves its cost at
/// once and its caller sleeps until the debt is paid off. Reservations are
/// taken in order, so concurrent callers are served fairly and the long-run
/// rate never exceeds the budget. The bucket holds one second's worth and
/// starts full, so any minute carries at most `tokens_per_minute × 61/60`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_second: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket refilled at `tokens_per_minute / 60` per second.
    pub fn new(tokens_per_minute: u64) -> Self {
        let per_second = tokens_per_minute as f64 / 60.0;
        let capacity = per_second.max(1.0);
        TokenBucket {
            per_second,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Reserves `cost` tokens and returns how long the caller must wait before sending.
    pub fn reserve(&self, cost: u64) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (level, last) = *state;
        let refilled = (level + now.duration_since(last).as_secs_f64() * self.per_second).min(self.capacity);
        let after = refilled - cost as f64;
        *state = (after, now);
        if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.per_second)
        }
    }

    /// Reserves `cost` tokens and sleeps until they may be spent.
    pub fn acquire(&self, cost: u64) {
        let wait = self.reserve(cost);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_a_quarter_of_characters() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(&"é".repeat(8)), 2);
    }

    #[test]
    fn bucket_goes_into_debt_and_makes_callers_wait() {
        let bucket = TokenBucket::new(6_000);
        assert_eq!(bucket.reserve(100), Duration::ZERO);
        let wait = bucket.reserve(100);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let next = bucket.reserve(50);
        assert!(next > Duration::from_millis(1_400), "{next:?}");
    }
}
