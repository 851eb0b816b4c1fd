//! Token vectors to one text vector, as sentence-transformers' `Pooling`
//! and `Normalize` modules do it.

use papersys_backend_core::Pooling;

/// Pools the token vectors `hidden` ([tokens, dim], packed by `cu`) into
/// one row per sequence, appended to `out`; L2-normalises when `normalize`.
pub fn pool(hidden: &[f32], cu: &[u32], dim: usize, pooling: Pooling, normalize: bool, out: &mut Vec<f32>) {
    for w in cu.windows(2) {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let base = out.len();
        out.resize(base + dim, 0.0);
        let row = &mut out[base..];
        if end > start {
            match pooling {
                Pooling::Cls => row.copy_from_slice(&hidden[start * dim..(start + 1) * dim]),
                Pooling::LastToken => row.copy_from_slice(&hidden[(end - 1) * dim..end * dim]),
                Pooling::Mean | Pooling::Unknown => {
                    for t in start..end {
                        for (r, v) in row.iter_mut().zip(&hidden[t * dim..(t + 1) * dim]) {
                            *r += v;
                        }
                    }
                    let inv = 1.0 / (end - start) as f32;
                    row.iter_mut().for_each(|r| *r *= inv);
                }
            }
        }
        if normalize {
            // torch.nn.functional.normalize: v / max(‖v‖, 1e-12)
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|r| *r /= norm);
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
