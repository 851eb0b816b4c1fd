//! What the packed GEMMs ([`super::bf16`], [`super::int8`]) share: how an
//! output of `m` rows × column panels is split among rayon tasks, and how a
//! tile's accumulators are written out.

use std::ops::Range;

use rayon::prelude::*;

/// Calls `tile(rows, panel)` once for every register tile: at most `mr`
/// consecutive rows of one panel, each (row, panel) in exactly one call.
/// A task owns `mc` rows × a group of panels (tasks are disjoint), so a
/// task's activations stay in L2 while its panels stream past them; groups
/// are sized so that `threads` workers all get work even for a short batch.
/// Runs in the current rayon pool.
pub(crate) fn for_each_tile(
    m: usize,
    panels: usize,
    threads: usize,
    mr: usize,
    mc: usize,
    tile: impl Fn(Range<usize>, usize) + Sync,
) {
    if m == 0 || panels == 0 {
        return;
    }
    let (mr, mc) = (mr.max(1), mc.max(1));
    let row_chunks = m.div_ceil(mc);
    let groups = (2 * threads.max(1)).div_ceil(row_chunks).clamp(1, panels);
    let per_group = panels.div_ceil(groups);
    (0..row_chunks * groups).into_par_iter().for_each(|task| {
        let (chunk, group) = (task / groups, task % groups);
        let rows = chunk * mc..(chunk * mc + mc).min(m);
        for panel in group * per_group..((group + 1) * per_group).min(panels) {
            let mut r = rows.start;
            while r < rows.end {
                let end = (r + mr).min(rows.end);
                tile(r..end, panel);
                r = end;
            }
        }
    });
}

/// The output buffer's address, shared by the tasks of [`for_each_tile`],
/// each of which writes only its own tiles.
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: the address itself is only copied; every writer through it writes
// the disjoint tile regions `for_each_tile` hands out, once each.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// The lane mask of the first `left` values of a 16-lane vector (all 16
/// when `left` ≥ 16): a panel's last, partial vector.
#[cfg(target_arch = "x86_64")]
pub(crate) fn lanes(left: usize) -> u16 {
    if left >= 16 { u16::MAX } else { (1u16 << left) - 1 }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// Writes the lanes of `x` that `mask` selects to `dst`, added to what
    /// is there when `accumulate`.
    ///
    /// # Safety
    /// AVX-512F; every lane `mask` selects is a writable value at `dst`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn store(dst: *mut f32, mask: __mmask16, x: __m512, accumulate: bool) {
        // SAFETY: the masked load and store touch only the selected lanes.
        unsafe {
            let x = if accumulate {
                _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, dst))
            } else {
                x
            };
            _mm512_mask_storeu_ps(dst, mask, x);
        }
    }
}

/// Reproducible values in [-1, 1) for the kernels' tests.
#[cfg(test)]
pub(crate) fn lcg(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn every_row_of_every_panel_is_visited_once_in_tiles_of_at_most_mr() {
        for (m, panels, threads) in [
            (1, 1, 1),
            (5, 3, 2),
            (97, 2, 2),
            (200, 7, 5),
            (13, 1, 8),
            (0, 3, 2),
        ] {
            let seen = Mutex::new(vec![0u32; m * panels]);
            for_each_tile(m, panels, threads, 6, 96, |rows, panel| {
                assert!(!rows.is_empty() && rows.len() <= 6, "{rows:?}");
                let mut seen = seen.lock().unwrap();
                for r in rows {
                    seen[r * panels + panel] += 1;
                }
            });
            assert!(
                seen.into_inner().unwrap().iter().all(|&n| n == 1),
                "m {m}, panels {panels}, threads {threads}"
            );
        }
    }
}
