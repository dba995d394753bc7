//! The MoE sublayer (spec §4.8): sqrt-softplus router scores, experts chosen by the token-id
//! table (hash layers) or by top-K of score + bias (bias for selection only), weights normalised
//! over the chosen experts and scaled, SwiGLU experts with clamps, plus the shared expert.

use dsv4_kernels::ops::{silu, softplus, top_k};

use rayon::prelude::*;

use crate::numerics::Numerics;
use crate::profile;
use crate::weights::{ExpertWeights, MoeWeights};

/// Router settings.
#[derive(Debug, Clone, Copy)]
pub struct MoeConfig {
    /// Experts per token K.
    pub experts_per_token: usize,
    /// Multiplier of the routing weights.
    pub routed_scaling_factor: f32,
    /// Whether weights are normalised over the chosen experts.
    pub normalize: bool,
    /// SwiGLU clamp (0 = none): gate ≤ limit, |up| ≤ limit.
    pub swiglu_limit: f32,
}

/// `(expert, weight)` pairs for one token.
fn route(w: &MoeWeights, h: &[f32], token: u32, c: MoeConfig) -> Vec<(usize, f32)> {
    let scores: Vec<f32> = w
        .gate
        .forward_vec(h)
        .into_iter()
        .map(|l| softplus(l).sqrt())
        .collect();
    let k = c.experts_per_token;
    let chosen: Vec<usize> = match (&w.tid2eid, &w.bias) {
        (Some(table), _) => table[token as usize * k..(token as usize + 1) * k].to_vec(),
        (None, Some(bias)) => {
            let biased: Vec<f32> = scores.iter().zip(bias).map(|(s, b)| s + b).collect();
            top_k(&biased, k)
        }
        (None, None) => top_k(&scores, k),
    };
    let total: f32 = chosen.iter().map(|&e| scores[e]).sum();
    chosen
        .into_iter()
        .map(|e| {
            let weight = if c.normalize {
                scores[e] / total
            } else {
                scores[e]
            };
            (e, weight * c.routed_scaling_factor)
        })
        .collect()
}

/// One expert on rows `x` (`n × D`), each row scaled by its routing weight `gamma`.
fn expert(
    e: &ExpertWeights,
    x: &[f32],
    gamma: &[f32],
    c: MoeConfig,
    numerics: Numerics,
) -> Vec<f32> {
    let mut g = numerics.linear(&e.w1, x);
    let v = numerics.linear(&e.w3, x);
    let limit = c.swiglu_limit;
    let inter = e.w1.out;
    for (row, (g, v)) in g.chunks_mut(inter).zip(v.chunks(inter)).enumerate() {
        for (g, &v) in g.iter_mut().zip(v) {
            let (gate, up) = if limit > 0.0 {
                (g.min(limit), v.clamp(-limit, limit))
            } else {
                (*g, v)
            };
            *g = silu(gate) * up;
        }
        // The reference weights the intermediate before w2; transformers weights w2's output.
        if numerics == Numerics::Reference {
            g.iter_mut().for_each(|z| *z *= gamma[row]);
        }
    }
    let mut y = numerics.linear(&e.w2, &g);
    if numerics == Numerics::Exact {
        let d = e.w2.out;
        for (row, out) in y.chunks_mut(d).enumerate() {
            out.iter_mut().for_each(|v| *v *= gamma[row]);
        }
    }
    y
}

/// The MoE output for `h` (`T × D`, normed) of tokens `tokens`.
pub fn moe(
    w: &MoeWeights,
    h: &[f32],
    tokens: &[u32],
    c: MoeConfig,
    numerics: Numerics,
) -> Vec<f32> {
    let d = w.gate.inp;
    // Group tokens by expert so each expert's weights are read once per chunk.
    let routing = profile::range("moe routing");
    let mut by_expert: Vec<Vec<(usize, f32)>> = vec![Vec::new(); w.experts.len()];
    for (t, (row, &token)) in h.chunks(d).zip(tokens).enumerate() {
        for (e, weight) in route(w, row, token, c) {
            by_expert[e].push((t, weight));
        }
    }
    drop(routing);
    let _experts = profile::range("experts");
    // The shared expert and every chosen routed expert run in one parallel region (each
    // expert's linears split further inside it), so a decode step wakes the workers once per
    // MoE rather than once per linear.
    let shared_rows: Vec<(usize, f32)> = (0..tokens.len()).map(|t| (t, 1.0)).collect();
    let work: Vec<(&ExpertWeights, &[(usize, f32)])> =
        std::iter::once((&w.shared, &shared_rows[..]))
            .chain(
                w.experts
                    .iter()
                    .zip(&by_expert)
                    .filter(|(_, rows)| !rows.is_empty())
                    .map(|(e, rows)| (e, &rows[..])),
            )
            .collect();
    let outputs: Vec<Vec<f32>> = work
        .par_iter()
        .map(|&(e, rows)| {
            let x: Vec<f32> = rows
                .iter()
                .flat_map(|&(t, _)| h[t * d..(t + 1) * d].iter().copied())
                .collect();
            let gamma: Vec<f32> = rows.iter().map(|&(_, g)| g).collect();
            expert(e, &x, &gamma, c, numerics)
        })
        .collect();
    // Sum in a fixed order (shared, then routed by index) whatever ran first.
    let mut out = vec![0.0f32; h.len()];
    for (&(_, rows), y) in work.iter().zip(&outputs) {
        for (&(t, _), y) in rows.iter().zip(y.chunks(d)) {
            out[t * d..(t + 1) * d]
                .iter_mut()
                .zip(y)
                .for_each(|(o, v)| *o += v);
        }
    }
    out
}
