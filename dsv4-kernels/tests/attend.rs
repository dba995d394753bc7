//! Shared-KV attention of one query against the formula evaluated in f64: scores, a softmax
//! whose sink joins only the denominator, and the weighted sum of the keys.

mod common;

use common::floats;

use dsv4_kernels::attend::attend_shared_kv;

#[test]
fn shared_kv_attention_matches_the_formula() {
    // Head counts with and without a remainder of the four-head pass; widths below and above
    // the 64-wide register block.
    for (heads, d, n) in [(16, 96, 37), (6, 512, 130), (3, 40, 1)] {
        let q = floats(heads * d, 1 + heads as u64);
        let key_data = floats(n * d, 2 + d as u64);
        let keys: Vec<&[f32]> = key_data.chunks(d).collect();
        let sinks: Vec<f32> = (0..heads).map(|h| h as f32 * 0.7 - 2.0).collect();
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![f32::NAN; heads * d];
        attend_shared_kv(&q, n, |j| keys[j], &sinks, scale, &mut out);
        for h in 0..heads {
            let qh = &q[h * d..(h + 1) * d];
            let s: Vec<f64> = keys
                .iter()
                .map(|k| {
                    qh.iter()
                        .zip(*k)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let max = s.iter().copied().fold(f64::from(sinks[h]), f64::max);
            let denominator: f64 =
                (f64::from(sinks[h]) - max).exp() + s.iter().map(|v| (v - max).exp()).sum::<f64>();
            for i in 0..d {
                let want: f64 = s
                    .iter()
                    .zip(&keys)
                    .map(|(v, k)| (v - max).exp() / denominator * f64::from(k[i]))
                    .sum();
                let got = f64::from(out[h * d + i]);
                assert!(
                    (got - want).abs() <= 1e-5,
                    "heads {heads} d {d} n {n}: head {h} dim {i}: {got} vs {want}"
                );
            }
        }
    }
}
