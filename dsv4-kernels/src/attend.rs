//! Sparse attention over keys that every head shares (V4's single K=V head): each query sees
//! its sliding window of raw keys plus compressed entries (every closed one in HCA layers, the
//! indexer's selection in CSA layers), with a per-head sink logit that joins only the softmax
//! denominator, and its output's rotary dims rotated back by the query's position
//! (docs/model.md §4.3). One query's scores read each key once per four heads, and the keys
//! are summed back as values with the weights held in registers over the keys.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::ops::RopeFrequencies;
use crate::scratch::{with_buffer, Buffers};
use crate::simd::{dot_f32, dots4, weighted_sums};

/// Heads of one token attended by one parallel task, so a single decoded token still spreads
/// over every worker.
const HEADS_PER_TASK: usize = 4;

thread_local! {
    /// Each worker's score buffers, kept between calls.
    static SCORES: Buffers<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each worker's tables of the current call's key rows (only read during that call).
    static KEY_ROWS: Buffers<Vec<*const f32>> = const { RefCell::new(Vec::new()) };
}

/// The keys a chunk's queries attend, decoded: rows of `d` values.
#[derive(Debug, Clone, Copy)]
pub struct KeySet<'a> {
    /// Values per key d (the queries' head width).
    pub width: usize,
    /// Window keys of consecutive positions from `window_first`.
    pub window: &'a [f32],
    /// Position of `window`'s first row.
    pub window_first: usize,
    /// Window length W: a query at `p` sees the window keys of positions `p + 1 − W ..= p`.
    pub window_size: usize,
    /// Compressed entries.
    pub entries: &'a [f32],
    /// Which rows of `entries` each query sees.
    pub compressed: Compressed<'a>,
}

/// The compressed entries each query of a chunk sees.
#[derive(Debug, Clone, Copy)]
pub enum Compressed<'a> {
    /// None (window-only layers).
    None,
    /// Every entry closed by the query's position `p`: the first `⌊(p + 1)/ratio⌋` (HCA).
    Closed {
        /// Compress ratio m.
        ratio: usize,
    },
    /// Each query's own rows (CSA, the indexer's selection): `k` slots per query, the second
    /// of each pair a row of `entries`, the first `len[t]` of query `t`'s in use.
    Selected {
        /// `(score, row)` slots, `k` per query.
        slots: &'a [(f32, usize)],
        /// Slots per query.
        k: usize,
        /// Slots in use per query.
        len: &'a [usize],
    },
}

/// Attention of the queries `q` (`T × H × d`, the first at position `q0`) over `keys`, with
/// scores scaled by `scale` and a sink logit per head, into `out` (`T × H × d`), each output
/// head's trailing rotary dims rotated back by its query's position with `rope`. Tasks of a
/// few heads of one token run in parallel; each output is computed in one fixed order.
pub fn sparse_attend(
    q: &[f32],
    q0: usize,
    keys: &KeySet,
    sinks: &[f32],
    scale: f32,
    rope: &RopeFrequencies,
    out: &mut [f32],
) {
    let heads = sinks.len();
    let KeySet {
        width: d,
        window,
        window_first,
        window_size,
        entries,
        compressed,
    } = *keys;
    if heads == 0 || d == 0 {
        return;
    }
    let nope = d.saturating_sub(2 * rope.inv_freq.len());
    out.par_chunks_mut(heads * d)
        .enumerate()
        .for_each(|(t, token_out)| {
            let p = q0 + t;
            let lo = (p + 1).saturating_sub(window_size).max(window_first);
            let in_window = p + 1 - lo;
            let (seen, selected): (usize, &[(f32, usize)]) = match compressed {
                Compressed::None => (0, &[]),
                Compressed::Closed { ratio } => ((p + 1) / ratio, &[]),
                Compressed::Selected { slots, k, len } => {
                    let n = len.get(t).copied().unwrap_or(0);
                    (n, &slots[t * k..t * k + n])
                }
            };
            let key = |j: usize| -> &[f32] {
                if j < in_window {
                    &window[(lo + j - window_first) * d..][..d]
                } else {
                    let c = j - in_window;
                    let e = selected.get(c).map_or(c, |s| s.1);
                    &entries[e * d..(e + 1) * d]
                }
            };
            token_out
                .par_chunks_mut(HEADS_PER_TASK * d)
                .enumerate()
                .for_each(|(task, out)| {
                    let first_head = task * HEADS_PER_TASK;
                    let task_heads = out.len() / d;
                    let qt = &q[(t * heads + first_head) * d..][..task_heads * d];
                    let sinks = &sinks[first_head..first_head + task_heads];
                    attend_shared_kv(qt, in_window + seen, key, sinks, scale, out);
                    for o in out.chunks_mut(d) {
                        rope.rotate(&mut o[nope..], p, true);
                    }
                });
        });
}

/// `out[h] = Σⱼ pₕⱼ · key(j)` with `pₕⱼ = exp(sₕⱼ − M) / (exp(sinkₕ − M) + Σᵢ exp(sₕᵢ − M))`,
/// `sₕⱼ = scale · q[h] · key(j)`, over keys `0..keys`, for the `sinks.len()` heads of `q`
/// (`H × d`) into `out` (`H × d`).
fn attend_shared_kv<'k>(
    q: &[f32],
    keys: usize,
    key: impl Fn(usize) -> &'k [f32] + Copy,
    sinks: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    with_buffer(&KEY_ROWS, |rows| {
        with_buffer(&SCORES, |scores| {
            let heads = sinks.len();
            let d = q.len() / heads.max(1);
            let n = keys;
            // Every key row looked up once into a table: the score and sum loops visit each row
            // once per block of heads or columns, and a table is cheaper to walk there than the
            // caller's lookup (window, entries, a selection list).
            rows.clear();
            rows.extend((0..n).map(|j| key(j)[..d].as_ptr()));
            let rows = &*rows;
            // SAFETY: each pointer starts `d` values of a row borrowed for `'k`, which outlives
            // this call, and the table is read only during it.
            let key = |j: usize| -> &[f32] { unsafe { std::slice::from_raw_parts(rows[j], d) } };
            scores.clear();
            scores.resize(heads * n, 0.0);
            let head = |h: usize| &q[h * d..(h + 1) * d];
            // Two keys against four heads at a time (a last odd key alone).
            let mut j = 0;
            while j < n {
                let count = (n - j).min(2);
                let mut h = 0;
                while h + 4 <= heads {
                    let four = [head(h), head(h + 1), head(h + 2), head(h + 3)];
                    let rows = if count == 2 {
                        dots4([key(j), key(j + 1)], four)
                    } else {
                        let [row] = dots4([key(j)], four);
                        [row, [0.0; 4]]
                    };
                    for (k, row) in rows.iter().take(count).enumerate() {
                        for (i, s) in row.iter().enumerate() {
                            scores[(h + i) * n + j + k] = s * scale;
                        }
                    }
                    h += 4;
                }
                for h in h..heads {
                    for k in j..j + count {
                        scores[h * n + k] = dot_f32(head(h), key(k)) * scale;
                    }
                }
                j += count;
            }
            // Probabilities in place (the sink joins only the denominator), then their sums of
            // keys.
            for (h, &sink) in sinks.iter().enumerate() {
                let s = &mut scores[h * n..(h + 1) * n];
                let max = s.iter().copied().fold(sink, f32::max);
                let mut denominator = (sink - max).exp();
                for v in s.iter_mut() {
                    *v = (*v - max).exp();
                    denominator += *v;
                }
                s.iter_mut().for_each(|v| *v /= denominator);
            }
            weighted_sums(key, n, scores, out);
        })
    });
}
