//! Scalar versions, the reference the SIMD versions are tested against.

/// Σ a·b.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The largest value of `x`, NaN never winning a comparison; −∞ when there is none.
pub fn max_f32(x: &[f32]) -> f32 {
    x.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `out[i] = Σⱼ weights[j] · row(j)[offset + i]`.
pub fn weighted_sum<'r>(
    row: impl Fn(usize) -> &'r [f32],
    weights: &[f32],
    out: &mut [f32],
    offset: usize,
) {
    out.fill(0.0);
    for (j, &w) in weights.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(&row(j)[offset..]) {
            *o += w * v;
        }
    }
}
