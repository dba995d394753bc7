//! The MoE ops (docs/model.md §4.8): the router's scores and each token's choice of experts
//! with their weights (`moe_route`), and the experts, SwiGLU with its clamp on each expert's
//! gathered rows scaled by their routing weights, the shared expert and every chosen routed one
//! in one parallel region.

use rayon::prelude::*;

use crate::numerics::Numerics;
use crate::ops::{silu, softplus, top_k_into};
use crate::panel::PackedLinear;

/// The router's scores from the gate's logits, in place: `sqrt(softplus(l))`.
pub fn router_scores(logits: &mut [f32]) {
    logits.iter_mut().for_each(|l| *l = softplus(*l).sqrt());
}

/// How a token's experts are chosen.
#[derive(Debug, Clone, Copy)]
pub enum ExpertChoice<'a> {
    /// Hash routing: the token id's row of `tid2eid`.
    Hash(&'a [usize]),
    /// The top-k of score + bias (the bias selects; the weights stay the scores').
    Biased(&'a [f32]),
    /// The top-k of the scores.
    Scores,
}

/// Router settings, under the config's names.
#[derive(Debug, Clone, Copy)]
pub struct Routing {
    /// Experts per token k.
    pub num_experts_per_tok: usize,
    /// Whether the weights are normalised over the chosen experts.
    pub norm_topk_prob: bool,
    /// Multiplier of the weights.
    pub routed_scaling_factor: f32,
}

/// What [`moe_route`] keeps between calls, so routing allocates nothing once grown.
#[derive(Debug, Default)]
pub struct RouteScratch {
    biased: Vec<f32>,
    chosen: Vec<usize>,
    routed: Vec<(usize, f32)>,
}

/// One token's experts and their weights from its router `scores`: `(expert, weight)` pairs
/// in the order chosen (ties towards the lower index).
pub fn moe_route<'s>(
    scores: &[f32],
    choice: ExpertChoice,
    r: Routing,
    scratch: &'s mut RouteScratch,
) -> &'s [(usize, f32)] {
    let RouteScratch {
        biased,
        chosen,
        routed,
    } = scratch;
    let k = r.num_experts_per_tok;
    match choice {
        ExpertChoice::Hash(experts) => {
            chosen.clear();
            chosen.extend_from_slice(experts);
        }
        ExpertChoice::Biased(bias) => {
            biased.clear();
            biased.extend(scores.iter().zip(bias).map(|(s, b)| s + b));
            top_k_into(biased, k, chosen);
        }
        ExpertChoice::Scores => top_k_into(scores, k, chosen),
    }
    let total: f32 = chosen.iter().map(|&e| scores[e]).sum();
    routed.clear();
    routed.extend(chosen.iter().map(|&e| {
        let weight = if r.norm_topk_prob {
            scores[e] / total
        } else {
            scores[e]
        };
        (e, weight * r.routed_scaling_factor)
    }));
    routed
}

/// One SwiGLU expert's linears.
pub struct ExpertWeights<L> {
    /// Gate projection `[I, D]`.
    pub w1: L,
    /// Down projection `[D, I]`.
    pub w2: L,
    /// Up projection `[I, D]`.
    pub w3: L,
}

/// One expert's rows of a chunk, `(token, routing weight)`, filled by the router, and its
/// intermediates, kept between calls so a decode step does not allocate; `y` holds the
/// expert's output for its rows, in their order.
#[derive(Debug, Default)]
pub struct ExpertRows {
    /// `(token, routing weight)` per row.
    pub rows: Vec<(usize, f32)>,
    x: Vec<f32>,
    gamma: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Output rows, `rows.len() × D`.
    pub y: Vec<f32>,
}

/// SwiGLU of one intermediate value with the clamp `limit` (0 = none): `gate ≤ limit`,
/// `|up| ≤ limit`, then `silu(gate) · up`.
pub fn swiglu(gate: f32, up: f32, limit: f32) -> f32 {
    if limit > 0.0 {
        silu(gate.min(limit)) * up.clamp(-limit, limit)
    } else {
        silu(gate) * up
    }
}

/// Runs the shared expert on `rows[0]` and routed expert `i` on `rows[1 + i]` over their tokens'
/// rows of `h` (`T × D`), each row scaled by its routing weight. Experts without rows are
/// skipped; each expert's linears split further over the workers inside the region.
pub fn experts(
    shared: &ExpertWeights<PackedLinear>,
    routed: &[ExpertWeights<PackedLinear>],
    h: &[f32],
    swiglu_limit: f32,
    numerics: Numerics,
    rows: &mut [ExpertRows],
) {
    let d = shared.w1.inp();
    rows.par_iter_mut()
        .enumerate()
        .filter(|(_, b)| !b.rows.is_empty())
        .for_each(|(i, b)| {
            let Some(weights) = i.checked_sub(1).map_or(Some(shared), |e| routed.get(e)) else {
                return;
            };
            b.x.clear();
            for &(t, _) in &b.rows {
                b.x.extend_from_slice(&h[t * d..(t + 1) * d]);
            }
            b.gamma.clear();
            b.gamma.extend(b.rows.iter().map(|&(_, g)| g));
            expert(weights, b, swiglu_limit, numerics);
        });
}

/// One expert on its gathered rows `b.x` (`n × D`), each row scaled by its routing weight;
/// the result lands in `b.y`.
fn expert(e: &ExpertWeights<PackedLinear>, b: &mut ExpertRows, limit: f32, numerics: Numerics) {
    numerics.linear_into(&e.w1, &b.x, &mut b.gate);
    numerics.linear_into(&e.w3, &b.x, &mut b.up);
    let inter = e.w1.out();
    for (row, (g, v)) in b.gate.chunks_mut(inter).zip(b.up.chunks(inter)).enumerate() {
        for (g, &v) in g.iter_mut().zip(v) {
            *g = swiglu(*g, v, limit);
        }
        // The reference weights the intermediate before w2; transformers weights w2's output.
        if numerics == Numerics::Reference {
            g.iter_mut().for_each(|z| *z *= b.gamma[row]);
        }
    }
    numerics.linear_into(&e.w2, &b.gate, &mut b.y);
    if numerics == Numerics::Exact {
        let d = e.w2.out();
        for (row, out) in b.y.chunks_mut(d).enumerate() {
            out.iter_mut().for_each(|v| *v *= b.gamma[row]);
        }
    }
}
