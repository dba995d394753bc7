//! Elementwise and small reduction ops of the V4 forward pass, in f32, named as in the paper.

use std::cmp::Ordering;

/// `x · rsqrt(mean(x²) + eps)`, times `weight` when given (weighted RMSNorm), in place.
pub fn rms_norm(x: &mut [f32], weight: Option<&[f32]>, eps: f32) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let r = 1.0 / (mean + eps).sqrt();
    match weight {
        Some(w) => x.iter_mut().zip(w).for_each(|(v, w)| *v = *w * (*v * r)),
        None => x.iter_mut().for_each(|v| *v *= r),
    }
}

/// Logistic sigmoid.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// SiLU, `x · sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Softplus with torch's defaults: `ln(1 + eˣ)`, linear above 20.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Softmax in place, max-subtracted.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Indices of the `k` largest scores, largest first; ties go to the lower index and NaN ranks
/// below everything, so the selection never depends on thread count or chunking.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order = Vec::new();
    top_k_into(scores, k, &mut order);
    order
}

/// [`top_k`] into `order` (its capacity reused).
pub fn top_k_into(scores: &[f32], k: usize, order: &mut Vec<usize>) {
    let cmp = |a: &usize, b: &usize| best_first((scores[*a], *a), (scores[*b], *b));
    order.clear();
    order.extend(0..scores.len());
    let k = k.min(order.len());
    if k < order.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
    }
    order.sort_unstable_by(cmp);
    order.truncate(k);
}

/// A score as [`top_k`] ranks it: NaN below everything.
fn rank_key(s: f32) -> f32 {
    if s.is_nan() {
        f32::NEG_INFINITY
    } else {
        s
    }
}

/// The ranking of [`top_k`] and [`keep_best`] on `(score, index)` pairs, best first: the
/// larger score (NaN below everything), then the lower index.
pub fn best_first(a: (f32, usize), b: (f32, usize)) -> Ordering {
    rank_key(b.0).total_cmp(&rank_key(a.0)).then(a.1.cmp(&b.1))
}

/// Moves the best `k` of `candidates` (ranked by [`best_first`]) into its first `min(k, len)`
/// slots, in no particular order, and returns how many that is: a linear-time selection. The
/// ranking is a total order, so the kept set equals [`top_k`] of the candidates, and selections
/// of parts of a stream merge by selecting again among what each kept.
pub fn keep_best(candidates: &mut [(f32, usize)], k: usize) -> usize {
    let k = k.min(candidates.len());
    if k > 0 && k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, |a, b| best_first(*a, *b));
    }
    k
}

/// Rotary frequencies of the `rope` trailing dims of a head: `θ^(−2i/rope)` per pair, with
/// YaRN interpolation when given (docs/model.md §4.7; no attention-temperature scaling).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFrequencies {
    /// Angle per position of each pair.
    pub inv_freq: Vec<f32>,
}

/// YaRN parameters of a compressed-attention RoPE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// Context extension factor.
    pub factor: f64,
    /// Training context length.
    pub original_max_position_embeddings: f64,
    /// Rotations above which frequencies are kept.
    pub beta_fast: f64,
    /// Rotations below which frequencies are fully interpolated.
    pub beta_slow: f64,
}

impl RopeFrequencies {
    /// Frequencies for `rope` dims with base `theta`, YaRN-blended when `yarn` is given.
    pub fn new(rope: usize, theta: f64, yarn: Option<Yarn>) -> Self {
        let half = rope / 2;
        let base: Vec<f64> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / rope as f64))
            .collect();
        let inv_freq = match yarn {
            None => base.iter().map(|&f| f as f32).collect(),
            Some(y) => {
                // Pair index at which a frequency completes `rotations` turns over the training context.
                let correction = |rotations: f64| {
                    rope as f64
                        * (y.original_max_position_embeddings
                            / (rotations * 2.0 * std::f64::consts::PI))
                            .ln()
                        / (2.0 * theta.ln())
                };
                let low = correction(y.beta_fast).floor().max(0.0);
                let high = correction(y.beta_slow).ceil().min(rope as f64 - 1.0);
                let span = if high == low { 0.001 } else { high - low };
                base.iter()
                    .enumerate()
                    .map(|(i, &f)| {
                        let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                        (f / y.factor * ramp + f * (1.0 - ramp)) as f32
                    })
                    .collect()
            }
        };
        Self { inv_freq }
    }

    /// Rotates interleaved pairs `(2i, 2i+1)` of `x` (the rotary dims) by `position`; the
    /// inverse rotation undoes it.
    pub fn rotate(&self, x: &mut [f32], position: usize, inverse: bool) {
        let p = position as f32;
        for (pair, &f) in x.chunks_exact_mut(2).zip(&self.inv_freq) {
            let angle = p * f;
            let (sin, cos) = angle.sin_cos();
            let sin = if inverse { -sin } else { sin };
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = a * sin + b * cos;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_breaks_ties_towards_lower_indices() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0, 3.0], 2), vec![1, 2]);
        assert_eq!(top_k(&[0.0; 6], 3), vec![0, 1, 2]);
        assert_eq!(top_k(&[f32::NAN, 1.0, f32::NEG_INFINITY], 3), vec![1, 0, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
        // Pairs sorted by `best_first` come out in `top_k`'s order, NaN included.
        let scores = [f32::NAN, 3.0, f32::NEG_INFINITY, 3.0, -1.0];
        let mut pairs: Vec<(f32, usize)> = scores.iter().copied().zip(0..).collect();
        pairs.sort_by(|a, b| best_first(*a, *b));
        let order: Vec<usize> = pairs.iter().map(|p| p.1).collect();
        assert_eq!(order, top_k(&scores, scores.len()));
        assert_eq!(order, vec![1, 3, 4, 0, 2]);
    }

    #[test]
    fn keep_best_keeps_what_top_k_picks_whole_or_merged_from_pieces() {
        let scores: Vec<f32> = (0..300)
            .map(|i| match i % 17 {
                0 => f32::NAN,
                5 => 3.0,
                _ => ((i * 37 % 101) as f32).sin(),
            })
            .collect();
        let pairs: Vec<(f32, usize)> = scores.iter().copied().zip(0..).collect();
        let kept = |c: &[(f32, usize)]| {
            let mut ids: Vec<usize> = c.iter().map(|p| p.1).collect();
            ids.sort_unstable();
            ids
        };
        for k in [0, 1, 8, 40, 300, 400] {
            let mut want = top_k(&scores, k);
            want.sort_unstable();
            let mut whole = pairs.clone();
            let n = keep_best(&mut whole, k);
            assert_eq!(kept(&whole[..n]), want, "k = {k}");

            // Pieces selected on their own, last piece first, then merged with what was kept.
            let mut merged: Vec<(f32, usize)> = Vec::new();
            for piece in pairs.chunks(70).rev() {
                let mut own = piece.to_vec();
                let n = keep_best(&mut own, k);
                merged.extend_from_slice(&own[..n]);
                let n = keep_best(&mut merged, k);
                merged.truncate(n);
            }
            assert_eq!(kept(&merged), want, "merged pieces, k = {k}");
        }
    }

    #[test]
    fn yarn_breakpoints_match_the_spec_for_v4() {
        // θ = 160000, Dr = 64, f = 16, 65536, β 32/1: pairs 0..15 unscaled, 25..31 divided by 16.
        let yarn = Yarn {
            factor: 16.0,
            original_max_position_embeddings: 65536.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
        };
        let plain = RopeFrequencies::new(64, 160000.0, None);
        let scaled = RopeFrequencies::new(64, 160000.0, Some(yarn));
        for i in 0..=15 {
            assert_eq!(scaled.inv_freq[i], plain.inv_freq[i], "pair {i}");
        }
        for i in 25..32 {
            let want = plain.inv_freq[i] / 16.0;
            assert!((scaled.inv_freq[i] - want).abs() <= want * 1e-6, "pair {i}");
        }
        assert!(
            scaled.inv_freq[20] < plain.inv_freq[20]
                && scaled.inv_freq[20] > plain.inv_freq[20] / 16.0
        );
    }

    #[test]
    fn rotation_is_undone_by_its_inverse() {
        let rope = RopeFrequencies::new(8, 10000.0, None);
        let x = [1.0, 2.0, -0.5, 0.25, 3.0, -1.0, 0.0, 1.0];
        let mut y = x;
        rope.rotate(&mut y, 77, false);
        assert!((y[0] - x[0]).abs() > 1e-3);
        rope.rotate(&mut y, 77, true);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn norms_and_activations() {
        let mut x = [3.0, 4.0];
        rms_norm(&mut x, None, 0.0);
        // mean square 12.5 → x / sqrt(12.5).
        assert!((x[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
        assert_eq!(softplus(30.0), 30.0);
        assert!((softplus(0.0) - 2f32.ln()).abs() < 1e-7);
        let mut p = [1.0, 1.0, f32::NEG_INFINITY];
        softmax(&mut p);
        assert_eq!(p, [0.5, 0.5, 0.0]);
    }
}
