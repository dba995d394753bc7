//! One query position's attention over keys that every head shares (V4's single K=V head):
//! each key is read once per four heads for the scores, a softmax per head whose sink logit
//! joins only the denominator, and the keys summed back as values with the weights held in
//! registers over the keys.

use std::cell::RefCell;

use crate::scratch::{with_buffer, Buffers};
use crate::simd::{dot_f32, dots4, weighted_sums};

thread_local! {
    /// Each worker's score buffers, kept between calls.
    static SCORES: Buffers<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each worker's tables of the current call's key rows (only read during that call).
    static KEY_ROWS: Buffers<Vec<*const f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[h] = Σⱼ pₕⱼ · key(j)` with `pₕⱼ = exp(sₕⱼ − M) / (exp(sinkₕ − M) + Σᵢ exp(sₕᵢ − M))`,
/// `sₕⱼ = scale · q[h] · key(j)`, over keys `0..keys`, for the `sinks.len()` heads of `q`
/// (`H × d`) into `out` (`H × d`).
pub fn attend_shared_kv<'k>(
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
