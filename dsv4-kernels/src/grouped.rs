//! The grouped output projection's first half (docs/model.md §4.3): each group of heads' outputs
//! through its own low-rank linear, the groups in one parallel region.

use rayon::prelude::*;

use crate::panel::PackedLinear;

/// `parts[g] = weights[g] · inputs[g]` for every group `g`, where `inputs` holds the groups'
/// input rows one group after another (`G × T × in`) and `parts` receives their outputs the same
/// way (`G × T × out`).
pub fn grouped_linear(weights: &[PackedLinear], inputs: &[f32], parts: &mut [f32]) {
    let groups = weights.len().max(1);
    if parts.is_empty() || inputs.is_empty() {
        // No rows (a chunk without outputs): nothing to project, and no empty chunks to split.
        return;
    }
    parts
        .par_chunks_mut(parts.len() / groups)
        .zip(inputs.par_chunks(inputs.len() / groups))
        .zip(weights.par_iter())
        .for_each(|((part, input), w)| w.forward(input, part));
}
