//! The ops of manifold-constrained hyper-connections (docs/model.md §4.2) over one token's `n`
//! residual streams: the sublayer input as a mix of the streams (`hc_pre`), the streams updated
//! with the sublayer's output (`hc_post`), and the Sinkhorn normalisation that makes the
//! combination matrix doubly stochastic.

use crate::ops::softmax;

/// Makes `comb` (`n × n`) doubly stochastic: each row a softmax plus `eps`, then `iters − 1`
/// rounds of row normalisation, each round (and the softmax) followed by a column
/// normalisation, every sum taken with `eps` added.
pub fn sinkhorn(comb: &mut [f32], n: usize, iters: usize, eps: f32) {
    for row in comb.chunks_mut(n) {
        softmax(row);
        row.iter_mut().for_each(|v| *v += eps);
    }
    normalize_columns(comb, n, eps);
    for _ in 1..iters {
        for row in comb.chunks_mut(n) {
            let sum: f32 = row.iter().sum::<f32>() + eps;
            row.iter_mut().for_each(|v| *v /= sum);
        }
        normalize_columns(comb, n, eps);
    }
}

fn normalize_columns(m: &mut [f32], n: usize, eps: f32) {
    for k in 0..n {
        let sum: f32 = (0..n).map(|j| m[j * n + k]).sum::<f32>() + eps;
        (0..n).for_each(|j| m[j * n + k] /= sum);
    }
}

/// The sublayer input `Σᵢ preᵢ · xᵢ`.
pub fn hc_pre(x: &[f32], pre: &[f32], out: &mut [f32]) {
    let d = out.len();
    out.iter_mut().for_each(|v| *v = 0.0);
    for (stream, &p) in x.chunks_exact(d).zip(pre) {
        out.iter_mut().zip(stream).for_each(|(o, v)| *o += p * v);
    }
}

/// New streams `x'ₖ = postₖ · y + Σⱼ comb[j, k] · xⱼ` (sum over the first index), in place;
/// `old` is scratch for the streams before the update.
pub fn hc_post(x: &mut [f32], y: &[f32], (post, comb): (&[f32], &[f32]), old: &mut Vec<f32>) {
    let d = y.len();
    let n = post.len();
    old.clear();
    old.extend_from_slice(x);
    for k in 0..n {
        let out = &mut x[k * d..(k + 1) * d];
        out.iter_mut().zip(y).for_each(|(o, v)| *o = post[k] * v);
        for j in 0..n {
            let c = comb[j * n + k];
            out.iter_mut()
                .zip(&old[j * d..(j + 1) * d])
                .for_each(|(o, v)| *o += c * v);
        }
    }
}
