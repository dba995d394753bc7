//! Sparse shared-KV attention against the formula evaluated in f64: scores, a softmax whose
//! sink joins only the denominator, and the weighted sum of the keys, over the key set each
//! query sees (window only, window + every closed entry, window + a selection).

mod common;

use common::floats;

use dsv4_kernels::attend::{sparse_attend, Compressed, KeySet};
use dsv4_kernels::ops::RopeFrequencies;

/// `out` (`H × d`) for one query `q` over `keys` by the formula, in f64.
fn attention_by_formula(
    q: &[f32],
    keys: &[&[f32]],
    sinks: &[f32],
    scale: f32,
    d: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; q.len()];
    for (h, &sink) in sinks.iter().enumerate() {
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
        let max = s.iter().copied().fold(f64::from(sink), f64::max);
        let denominator: f64 =
            (f64::from(sink) - max).exp() + s.iter().map(|v| (v - max).exp()).sum::<f64>();
        for i in 0..d {
            out[h * d + i] = s
                .iter()
                .zip(keys)
                .map(|(v, k)| (v - max).exp() / denominator * f64::from(k[i]))
                .sum();
        }
    }
    out
}

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
        let no_rope = RopeFrequencies::new(0, 10000.0, None);
        // One query at position n − 1 whose window holds all n keys.
        let key_set = KeySet {
            width: d,
            window: &key_data,
            window_first: 0,
            window_size: n,
            entries: &[],
            compressed: Compressed::None,
        };
        let mut out = vec![f32::NAN; heads * d];
        sparse_attend(&q, n - 1, &key_set, &sinks, scale, &no_rope, &mut out);
        let want = attention_by_formula(&q, &keys, &sinks, scale, d);
        for (i, (got, want)) in out.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-5,
                "heads {heads} d {d} n {n}: value {i}: {got} vs {want}"
            );
        }
    }
}

/// Several queries of a chunk, each over its own window (positions `p + 1 − W ..= p`) plus its
/// compressed entries: every entry closed by its position (HCA) or its own selection in the
/// selection's order (CSA).
#[test]
fn each_query_sees_its_window_and_its_compressed_entries() {
    let (heads, d, window_size, ratio) = (5, 24, 4, 3);
    let (q0, t_len) = (6, 3);
    let first = q0 + 1 - window_size;
    let window_data = floats((q0 + t_len - first) * d, 11);
    let entry_data = floats(4 * d, 12);
    let entry = |e: usize| &entry_data[e * d..(e + 1) * d];
    let q = floats(t_len * heads * d, 13);
    let sinks: Vec<f32> = (0..heads).map(|h| 0.3 * h as f32 - 1.0).collect();
    let scale = 0.2;
    let no_rope = RopeFrequencies::new(0, 10000.0, None);
    let k = 2;
    let slots = [(0.0, 3), (0.0, 1), (0.0, 0), (0.0, 0), (0.0, 2), (0.0, 0)];
    let len = [2, 1, 2];
    let cases = [
        Compressed::Closed { ratio },
        Compressed::Selected {
            slots: &slots,
            k,
            len: &len,
        },
    ];
    for compressed in cases {
        let key_set = KeySet {
            width: d,
            window: &window_data,
            window_first: first,
            window_size,
            entries: &entry_data,
            compressed,
        };
        let mut out = vec![f32::NAN; t_len * heads * d];
        sparse_attend(&q, q0, &key_set, &sinks, scale, &no_rope, &mut out);
        for t in 0..t_len {
            let p = q0 + t;
            let mut keys: Vec<&[f32]> = (p + 1 - window_size..=p)
                .map(|pos| &window_data[(pos - first) * d..][..d])
                .collect();
            match compressed {
                Compressed::Closed { ratio } => keys.extend((0..(p + 1) / ratio).map(entry)),
                Compressed::Selected { .. } => {
                    keys.extend(slots[t * k..t * k + len[t]].iter().map(|s| entry(s.1)))
                }
                Compressed::None => {}
            }
            let qt = &q[t * heads * d..(t + 1) * heads * d];
            let want = attention_by_formula(qt, &keys, &sinks, scale, d);
            let got = &out[t * heads * d..(t + 1) * heads * d];
            for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-5,
                    "{compressed:?}, query {t}, value {i}: {got} vs {want}"
                );
            }
        }
    }
}
