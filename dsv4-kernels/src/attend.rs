//! One query position's attention over keys that every head shares (V4's single K=V head):
//! each key is read once per four heads for the scores, a softmax per head whose sink logit
//! joins only the denominator, and the keys summed back as values with the weights held in
//! registers over the keys.

use crate::simd::{dot4_f32, dot_f32, weighted_sum};

/// `out[h] = Σⱼ pₕⱼ · keys[j]` with `pₕⱼ = exp(sₕⱼ − M) / (exp(sinkₕ − M) + Σᵢ exp(sₕᵢ − M))`,
/// `sₕⱼ = scale · q[h] · keys[j]`, for the `sinks.len()` heads of `q` (`H × d`) into `out`
/// (`H × d`). `scores` is scratch of at least `H · keys.len()` values.
pub fn attend_shared_kv(
    q: &[f32],
    keys: &[&[f32]],
    sinks: &[f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let heads = sinks.len();
    let d = q.len() / heads.max(1);
    let n = keys.len();
    let head = |h: usize| &q[h * d..(h + 1) * d];
    for (j, key) in keys.iter().enumerate() {
        let mut h = 0;
        while h + 4 <= heads {
            let four = dot4_f32(key, [head(h), head(h + 1), head(h + 2), head(h + 3)]);
            for (i, s) in four.into_iter().enumerate() {
                scores[(h + i) * n + j] = s * scale;
            }
            h += 4;
        }
        for h in h..heads {
            scores[h * n + j] = dot_f32(head(h), key) * scale;
        }
    }
    for (h, (o, &sink)) in out.chunks_mut(d).zip(sinks).enumerate() {
        let s = &mut scores[h * n..(h + 1) * n];
        let max = s.iter().copied().fold(sink, f32::max);
        let mut denominator = (sink - max).exp();
        for v in s.iter_mut() {
            *v = (*v - max).exp();
            denominator += *v;
        }
        weighted_sum(keys, s, o);
        o.iter_mut().for_each(|v| *v /= denominator);
    }
}
