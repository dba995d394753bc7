//! The MoE sublayer on the device (docs/model.md §4.8): the router's logits, each token's
//! experts and weights (`moe_route`: sqrt-softplus scores, bias for selection only or the
//! token-id table), then the shared and the chosen experts (`experts`), reading only the
//! chosen experts' weights.

use dsv4_kernels::cuda::moe::{self, DeviceChoice, ExpertTable, ExpertsScratch, Routes};
use dsv4_kernels::cuda::{linear, DeviceError, Gpu};

use super::seq::{CudaSeqCache, Grown};
use super::weights::CudaWeights;
use crate::backend::{ModelConstants, OpError};
use crate::profile;

/// The MoE's intermediates on the device, grown to the largest chunk seen.
#[derive(Debug, Default)]
pub struct MoeScratch {
    logits: Grown,
    ids: Grown,
    weights: Grown,
    /// The experts' hidden values and partial outputs, and the tokens they were sized for.
    experts: Option<(ExpertsScratch, usize)>,
}

/// Expert scratch for at least `tokens` tokens (made anew only for a larger chunk).
fn experts_scratch<'s>(
    gpu: &Gpu,
    scratch: &'s mut Option<(ExpertsScratch, usize)>,
    table: &ExpertTable,
    tokens: usize,
    k: usize,
) -> Result<&'s ExpertsScratch, DeviceError> {
    if scratch.as_ref().is_none_or(|(_, n)| *n < tokens) {
        *scratch = None;
        *scratch = Some((ExpertsScratch::new(gpu, table, tokens, k)?, tokens));
    }
    scratch
        .as_ref()
        .map(|(s, _)| s)
        .ok_or_else(|| DeviceError::Driver("no expert scratch".into()))
}

/// The MoE output of `seq.h` (the rows of `tokens`, the chunk's last ones) into `seq.y`.
pub fn moe(
    gpu: &Gpu,
    w: &CudaWeights,
    k: &ModelConstants,
    layer: usize,
    tokens: &[u32],
    seq: &mut CudaSeqCache,
) -> Result<(), OpError> {
    let t = tokens.len();
    let from = seq.tokens - t;
    let bound = &w.model.layers[layer].moe;
    let device = &w.layers[layer];
    let experts = bound.gate.out;
    let kk = k.moe.routing.num_experts_per_tok;
    let s = &mut seq.moe;
    let routing = profile::range(c"moe routing");
    let logits = s.logits.at_least(gpu, 4 * t * experts)?;
    linear::linear(gpu, &bound.gate, seq.h.ptr(), logits, t)?;
    let choice = match (&device.tid2eid, &device.bias) {
        (Some(table), _) => DeviceChoice::Hash {
            table: table.ptr(),
            tokens: seq.ids.ptr().offset(4 * from),
            vocab: table.len() / (4 * kk.max(1)),
        },
        (None, Some(bias)) => DeviceChoice::Biased(bias.ptr()),
        (None, None) => DeviceChoice::Scores,
    };
    let routes = Routes {
        ids: s.ids.at_least(gpu, 4 * t * kk)?,
        weights: s.weights.at_least(gpu, 4 * t * kk)?,
        tokens: t,
        k: kk,
    };
    moe::moe_route(gpu, logits, choice, k.moe.routing, experts, routes, None)?;
    drop(routing);
    let _experts = profile::range(c"experts");
    let table = &device.experts;
    let scratch = experts_scratch(gpu, &mut s.experts, table, t, kk)?;
    moe::experts(
        gpu,
        table,
        seq.h.ptr(),
        &routes,
        k.moe.swiglu_limit,
        k.numerics,
        scratch,
        seq.y.ptr(),
    )?;
    Ok(())
}
