//! The seeded random choices of a run: which background papers become
//! negatives, and which scored candidates are shown.

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

/// The background sampling key of a paper: a seeded 64-bit hash of its id.
/// The papers with the smallest keys form the sample (bottom-k sampling), so
/// the sample is uniform, depends only on the seed and the set of eligible
/// papers (not on file order), and can be kept while streaming the year
/// files with memory for k vectors only.
pub fn background_key(seed: u64, paper_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(paper_id.as_bytes(), seed)
}

/// Number of background negatives for `likes` likes, as the original:
/// `max(1, floor(bg_sample_rate * likes))`.
pub fn background_target(bg_sample_rate: f64, likes: usize) -> usize {
    ((bg_sample_rate * likes as f64).floor() as usize).max(1)
}

/// The original's adaptive sampling. `target = max(1, floor(n *
/// sample_rate))` papers are shown: when at least that many score at or
/// above `high`, a uniform sample of them; otherwise all of them, then
/// papers of the boundary band `[boundary, high)` drawn without replacement
/// with weight `score - boundary`, then, if still short, a uniform sample of
/// the rest (exploration). Deterministic for a seed and a score order.
pub fn adaptive_sample(scores: &[f64], sample_rate: f64, high: f64, boundary: f64, seed: u64) -> Vec<bool> {
    let n = scores.len();
    let mut show = vec![false; n];
    if n == 0 {
        return show;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let target = ((n as f64 * sample_rate).floor() as usize).clamp(1, n);
    let high_idx: Vec<usize> = (0..n).filter(|&i| scores[i] >= high).collect();
    if high_idx.len() >= target {
        for k in index::sample(&mut rng, high_idx.len(), target) {
            show[high_idx[k]] = true;
        }
        return show;
    }
    for &i in &high_idx {
        show[i] = true;
    }
    let mut remaining = target - high_idx.len();
    let band: Vec<usize> = (0..n)
        .filter(|&i| scores[i] >= boundary && scores[i] < high)
        .collect();
    if !band.is_empty() && remaining > 0 {
        let amount = remaining.min(band.len());
        let weight = |k: usize| (scores[band[k]] - boundary).max(0.0);
        let all_zero = band.iter().all(|&i| scores[i] <= boundary);
        let chosen: Vec<usize> = if all_zero {
            index::sample(&mut rng, band.len(), amount).into_vec()
        } else {
            index::sample_weighted(&mut rng, band.len(), weight, amount)
                .map(|v| v.into_vec())
                .unwrap_or_default()
        };
        for k in chosen {
            show[band[k]] = true;
            remaining -= 1;
        }
    }
    if remaining > 0 {
        let rest: Vec<usize> = (0..n).filter(|&i| !show[i]).collect();
        let amount = remaining.min(rest.len());
        for k in index::sample(&mut rng, rest.len(), amount) {
            show[rest[k]] = true;
        }
    }
    show
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(flags: &[bool]) -> Vec<usize> {
        (0..flags.len()).filter(|&i| flags[i]).collect()
    }

    #[test]
    fn high_scores_first_then_the_band_then_the_rest() {
        let scores = [0.95, 0.9, 0.7, 0.65, 0.1, 0.2, 0.3, 0.4, 0.5, 0.05];
        // target 1 of 10 at rate 0.1: one of the two high papers.
        let one = shown(&adaptive_sample(&scores, 0.1, 0.85, 0.6, 7));
        assert_eq!(one.len(), 1);
        assert!(one[0] < 2);
        // target 3: both high papers and one of the band.
        let three = shown(&adaptive_sample(&scores, 0.3, 0.85, 0.6, 7));
        assert_eq!(three.len(), 3);
        assert!(three.contains(&0) && three.contains(&1));
        assert!(three[2] == 2 || three[2] == 3);
        // target 6: high, band, and two more from the rest.
        let six = shown(&adaptive_sample(&scores, 0.6, 0.85, 0.6, 7));
        assert_eq!(six.len(), 6);
        assert!([0, 1, 2, 3].iter().all(|i| six.contains(i)));
    }

    #[test]
    fn at_least_one_and_the_same_for_a_seed() {
        let scores: Vec<f64> = (0..50).map(|i| i as f64 / 100.0).collect();
        let a = adaptive_sample(&scores, 0.001, 0.85, 0.6, 42);
        assert_eq!(shown(&a).len(), 1);
        assert_eq!(a, adaptive_sample(&scores, 0.001, 0.85, 0.6, 42));
        assert!(adaptive_sample(&[], 0.5, 0.85, 0.6, 1).is_empty());
    }

    #[test]
    fn background_target_is_the_originals() {
        assert_eq!(background_target(5.0, 3), 15);
        assert_eq!(background_target(0.1, 3), 1);
        assert_ne!(background_key(1, "2401.00001"), background_key(2, "2401.00001"));
    }
}
