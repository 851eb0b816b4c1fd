//! Token vectors to one text vector, as sentence-transformers' `Pooling`
//! and `Normalize` modules do it.

use papersys_backend_core::Pooling;

use crate::chain::{self, PoolMode, pool_one};

/// Pools the token vectors `hidden` ([tokens, dim], packed by `cu`) into
/// one row per sequence, appended to `out`; L2-normalises when `normalize`.
/// The engine runs the whole module chain ([`crate::chain::Chain`]); this
/// single-mode form serves the architectures' unit tests.
#[allow(dead_code, reason = "used by the architectures' unit tests")]
pub fn pool(hidden: &[f32], cu: &[u32], dim: usize, pooling: Pooling, normalize: bool, out: &mut Vec<f32>) {
    let mode = match pooling {
        Pooling::Cls => PoolMode::Cls,
        Pooling::LastToken => PoolMode::LastToken,
        Pooling::Max => PoolMode::Max,
        Pooling::MeanSqrtLen => PoolMode::MeanSqrtLen,
        Pooling::WeightedMean => PoolMode::WeightedMean,
        Pooling::Mean | Pooling::Unknown | Pooling::Concatenated => PoolMode::Mean,
    };
    for w in cu.windows(2) {
        let base = out.len();
        out.resize(base + dim, 0.0);
        let row = &mut out[base..];
        pool_one(hidden, dim, w[0] as usize, w[1] as usize, 0, mode, row);
        if normalize {
            chain::normalize(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_each_sequence() {
        let hidden = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 0.0];
        let cu = [0, 3, 4];
        let mut out = Vec::new();
        pool(&hidden, &cu, 2, Pooling::Mean, false, &mut out);
        assert_eq!(out, [3.0, 4.0, 10.0, 0.0]);
        out.clear();
        pool(&hidden, &cu, 2, Pooling::Cls, false, &mut out);
        assert_eq!(out, [1.0, 2.0, 10.0, 0.0]);
        out.clear();
        pool(&hidden, &cu, 2, Pooling::LastToken, true, &mut out);
        let n = (61.0f32).sqrt();
        assert_eq!(out, [5.0 / n, 6.0 / n, 1.0, 0.0]);
    }
}
