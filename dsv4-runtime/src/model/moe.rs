//! The MoE sublayer (docs/model.md §4.8): sqrt-softplus router scores, experts chosen by the
//! token-id table (hash layers) or by top-K of score + bias (bias for selection only), weights
//! normalised over the chosen experts and scaled, SwiGLU experts with clamps, plus the shared
//! expert.

use dsv4_kernels::moe::{
    experts, moe_route, router_scores, ExpertChoice, ExpertRows, RouteScratch, Routing,
};
use dsv4_kernels::panel::PackedLinear;

use crate::model::weights::MoeWeights;
use crate::profile;
use dsv4_kernels::numerics::Numerics;
use dsv4_kernels::scratch::zeroed;

/// The config's fields the MoE reads, under the config's names (floats as f32).
#[derive(Debug, Clone, Copy)]
pub struct MoeConfig {
    /// How tokens choose their experts.
    pub routing: Routing,
    /// SwiGLU clamp (0 = none): gate ≤ limit, |up| ≤ limit.
    pub swiglu_limit: f32,
}

/// Buffers the MoE reuses from call to call: the router's scores and one set per expert
/// (index 0 the shared expert, then the routed ones by index).
#[derive(Debug, Default)]
pub struct MoeBuffers {
    /// Router scores, `T × E`.
    scores: Vec<f32>,
    route: RouteScratch,
    experts: Vec<ExpertRows>,
}

/// The MoE output for `h` (`T × D`, normed) of tokens `tokens`, into `out` (`T × D`).
pub fn moe(
    w: &MoeWeights<PackedLinear>,
    h: &[f32],
    tokens: &[u32],
    c: MoeConfig,
    numerics: Numerics,
    buf: &mut MoeBuffers,
    out: &mut Vec<f32>,
) {
    let d = w.gate.inp();
    // Group tokens by expert so each expert's weights are read once per chunk.
    let routing = profile::range(c"moe routing");
    buf.experts
        .resize_with(1 + w.experts.len(), Default::default);
    for b in buf.experts.iter_mut() {
        b.rows.clear();
    }
    buf.experts[0]
        .rows
        .extend((0..tokens.len()).map(|t| (t, 1.0)));
    // Every token's router scores in one product, then each token's choice.
    let mut scores = std::mem::take(&mut buf.scores);
    w.gate
        .forward(h, zeroed(&mut scores, tokens.len() * w.gate.out()));
    router_scores(&mut scores);
    let k = c.routing.num_experts_per_tok;
    for (t, (row, &token)) in scores.chunks(w.gate.out()).zip(tokens).enumerate() {
        let choice = match (&w.tid2eid, &w.bias) {
            (Some(table), _) => {
                ExpertChoice::Hash(&table[token as usize * k..(token as usize + 1) * k])
            }
            (None, Some(bias)) => ExpertChoice::Biased(bias),
            (None, None) => ExpertChoice::Scores,
        };
        for &(e, weight) in moe_route(row, choice, c.routing, &mut buf.route) {
            buf.experts[1 + e].rows.push((t, weight));
        }
    }
    buf.scores = scores;
    drop(routing);
    let _experts = profile::range(c"experts");
    let swiglu_limit = c.swiglu_limit;
    experts(
        &w.shared,
        &w.experts,
        h,
        swiglu_limit,
        numerics,
        &mut buf.experts,
    );
    // Sum in a fixed order (shared, then routed by index) whatever ran first.
    let out = zeroed(out, h.len());
    for b in &buf.experts {
        for (&(t, _), y) in b.rows.iter().zip(b.y.chunks(d)) {
            out[t * d..(t + 1) * d]
                .iter_mut()
                .zip(y)
                .for_each(|(o, v)| *o += v);
        }
    }
}
