//! Manifold-constrained hyper-connections (docs/model.md §4.2): `n` residual streams mixed around
//! every sublayer by weights computed from the streams themselves, the combination matrix made
//! doubly stochastic by Sinkhorn normalisation.

use dsv4_kernels::mhc::{hc_post, hc_pre, sinkhorn};
use dsv4_kernels::ops::sigmoid;
use dsv4_kernels::panel::PackedLinear;
use dsv4_kernels::simd::dot_f32;

use crate::model::weights::HcWeights;

/// How one token's streams enter and leave a sublayer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HcMix<'a> {
    /// Weight of each stream in the sublayer's input.
    pub pre: &'a [f32],
    /// Weight of the sublayer's output in each new stream.
    pub post: &'a [f32],
    /// `comb[j·n + k]`: weight of old stream `j` in new stream `k`.
    pub comb: &'a [f32],
}

/// The mixes of a chunk's tokens, stored flat, with the scratch computing and applying them
/// needs; kept from call to call so a decode step does not allocate for them.
#[derive(Debug, Default)]
pub struct HcMixes {
    streams: usize,
    pre: Vec<f32>,
    post: Vec<f32>,
    comb: Vec<f32>,
    mu: Vec<f32>,
    old: Vec<f32>,
}

impl HcMixes {
    /// Computes the mix of every token of `x` (`T × n·D`, stream-major per token).
    pub fn compute(&mut self, x: &[f32], d: usize, w: &HcWeights<PackedLinear>, c: HcConfig) {
        let n = c.hc_mult;
        let tokens = x.len() / (n * d);
        self.streams = n;
        for v in [&mut self.pre, &mut self.post] {
            v.clear();
            v.resize(tokens * n, 0.0);
        }
        self.comb.clear();
        self.comb.resize(tokens * n * n, 0.0);
        project(x, w, c.rms_norm_eps, &mut self.mu);
        for (t, mu) in self.mu.chunks(w.proj.out()).enumerate() {
            mix_into(
                mu,
                w,
                c,
                &mut self.pre[t * n..(t + 1) * n],
                &mut self.post[t * n..(t + 1) * n],
                &mut self.comb[t * n * n..(t + 1) * n * n],
            );
        }
    }

    /// Tokens whose mixes are held.
    pub fn tokens(&self) -> usize {
        self.pre.len().checked_div(self.streams).unwrap_or(0)
    }

    /// Token `t`'s mix.
    pub fn get(&self, t: usize) -> HcMix<'_> {
        let n = self.streams;
        HcMix {
            pre: &self.pre[t * n..(t + 1) * n],
            post: &self.post[t * n..(t + 1) * n],
            comb: &self.comb[t * n * n..(t + 1) * n * n],
        }
    }

    /// Folds a sublayer's output `y` (`T' × D`) into the streams `x` (`T' × n·D`) of tokens
    /// `first..first + T'` of the chunk.
    pub fn leave(&mut self, x: &mut [f32], y: &[f32], d: usize, first: usize) {
        let n = self.streams;
        let mut old = std::mem::take(&mut self.old);
        for (t, (xt, yt)) in x.chunks_mut(n * d).zip(y.chunks(d)).enumerate() {
            let mix = self.get(first + t);
            hc_post(xt, yt, (mix.post, mix.comb), &mut old);
        }
        self.old = old;
    }

    /// The final collapse of one token's streams `x` into `out`:
    /// `Σᵢ (sigmoid(s·μᵢ + bᵢ) + eps) · xᵢ`.
    pub fn collapse(
        &mut self,
        x: &[f32],
        w: &HcWeights<PackedLinear>,
        c: HcConfig,
        out: &mut [f32],
    ) {
        let n = c.hc_mult;
        let mu = &mut self.mu;
        project(x, w, c.rms_norm_eps, mu);
        for i in 0..n {
            mu.push(sigmoid(w.scale[0] * mu[i] + w.base[i]) + c.hc_eps);
        }
        hc_pre(x, &mu[n..2 * n], out);
    }
}

/// The config's fields every hyper-connection reads, under the config's names (floats as f32).
#[derive(Debug, Clone, Copy)]
pub struct HcConfig {
    /// Streams n.
    pub hc_mult: usize,
    /// Sinkhorn iterations (the first row normalisation is the softmax).
    pub hc_sinkhorn_iters: usize,
    /// Epsilon of the weights and normalisations.
    pub hc_eps: f32,
    /// Epsilon of the unweighted RMS over all streams.
    pub rms_norm_eps: f32,
}

/// `(φ · x̄) · rsqrt(mean(x̄²) + eps)` for each token's flattened streams `x̄` (`x` is
/// `T × n·D`), one value per row of φ, into `mu` (`T × rows`).
fn project(x: &[f32], w: &HcWeights<PackedLinear>, norm_eps: f32, mu: &mut Vec<f32>) {
    let (width, rows) = (w.proj.inp(), w.proj.out());
    mu.clear();
    mu.resize(x.len() / width * rows, 0.0);
    w.proj.forward(x, mu);
    for (xt, mt) in x.chunks(width).zip(mu.chunks_mut(rows)) {
        let r = 1.0 / (dot_f32(xt, xt) / width as f32 + norm_eps).sqrt();
        mt.iter_mut().for_each(|v| *v *= r);
    }
}

/// The mix of one token from its projections `mu` (`(2 + n)·n`) into `pre`, `post` (`n`) and
/// `comb` (`n × n`).
fn mix_into(
    mu: &[f32],
    w: &HcWeights<PackedLinear>,
    c: HcConfig,
    pre: &mut [f32],
    post: &mut [f32],
    comb: &mut [f32],
) {
    let n = c.hc_mult;
    for (i, p) in pre.iter_mut().enumerate() {
        *p = sigmoid(w.scale[0] * mu[i] + w.base[i]) + c.hc_eps;
    }
    for (i, p) in post.iter_mut().enumerate() {
        *p = 2.0 * sigmoid(w.scale[1] * mu[n + i] + w.base[n + i]);
    }
    for (i, v) in comb.iter_mut().enumerate() {
        *v = w.scale[2] * mu[2 * n + i] + w.base[2 * n + i];
    }
    sinkhorn(comb, n, c.hc_sinkhorn_iters, c.hc_eps);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsv4_kernels::panel::PackedWeights;

    #[test]
    fn sinkhorn_makes_comb_nearly_doubly_stochastic_and_keeps_orientation() {
        let n = 3;
        let d = 2;
        let rows = (2 + n) * n;
        let proj: Vec<f32> = (0..rows * n * d)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let mut packed = PackedWeights::default();
        let w = HcWeights {
            proj: packed.repack_f32(&proj, rows, n * d),
            base: (0..rows).map(|i| (i as f32) * 0.05).collect(),
            scale: vec![1.0, 1.0, 1.0],
        };
        let c = HcConfig {
            hc_mult: n,
            hc_sinkhorn_iters: 20,
            hc_eps: 1e-6,
            rms_norm_eps: 1e-6,
        };
        let x: Vec<f32> = (0..n * d).map(|i| i as f32 - 2.5).collect();
        let mut mixes = HcMixes::default();
        mixes.compute(&x, d, &w, c);
        let mix = mixes.get(0);
        for k in 0..n {
            let col: f32 = (0..n).map(|j| mix.comb[j * n + k]).sum();
            assert!((col - 1.0).abs() < 1e-4, "column {k}: {col}");
            let row: f32 = mix.comb[k * n..(k + 1) * n].iter().sum();
            assert!((row - 1.0).abs() < 1e-3, "row {k}: {row}");
        }
        // Orientation: a comb that moves stream 0 to stream 1 must put x₀ into x'₁.
        let swap: (&[f32], &[f32]) = (&[0.0; 3], &[0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let mut streams = vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        hc_post(&mut streams, &[0.0, 0.0], swap, &mut Vec::new());
        assert_eq!(streams, vec![3.0, 3.0, 1.0, 1.0, 2.0, 2.0]);
    }
}
