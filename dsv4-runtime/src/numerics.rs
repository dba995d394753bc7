//! Numerics modes (contract §4), passed down as a value: `exact` computes in f32 with weights
//! dequantized exactly and nothing else quantized (what transformers' float32 model computes);
//! `reference` adds the release's quantization simulations.

use dsv4_kernels::linear::{LinearView, LinearWeight};
use dsv4_kernels::quant::{act_quant_fp8, fp4_sim, hadamard, kv_fp8_sim};
use rayon::prelude::*;

/// How activations are rounded between ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numerics {
    /// f32 activations and accumulation, no activation quantization.
    Exact,
    /// The official release numerics' simulations: FP8 (UE8M0, per 128) quantization of every
    /// input to an FP8 or FP4 linear, FP8 (per 64) simulation of the KV nope dims, and Hadamard +
    /// FP4 (per 32) simulation of indexer queries and keys. BF16 rounding points between ops are
    /// not simulated: activations stay f32.
    Reference,
}

impl Numerics {
    /// `W x` for each row of `x`, quantizing the input first where the reference does.
    pub fn linear(self, w: &LinearView, x: &[f32]) -> Vec<f32> {
        let quantized = matches!(
            w.weight,
            LinearWeight::Fp8Block { .. } | LinearWeight::Fp4Group { .. }
        );
        if self == Self::Reference && quantized {
            let mut xq = x.to_vec();
            xq.chunks_mut(w.inp).for_each(act_quant_fp8);
            w.forward_vec(&xq)
        } else {
            w.forward_vec(x)
        }
    }

    /// [`Self::linear`] of several independent products in one parallel region (each still
    /// split over rows inside it): a decode step wakes the workers once per group of small
    /// linears instead of once per linear.
    pub fn linears(self, products: &[(&LinearView, &[f32])]) -> Vec<Vec<f32>> {
        products
            .par_iter()
            .map(|(w, x)| self.linear(w, x))
            .collect()
    }

    /// A KV entry (window key or compressed entry) after norm and RoPE: FP8 simulation of its
    /// `nope` leading dims in reference mode.
    pub fn kv_entry(self, entry: &mut [f32], nope: usize) {
        if self == Self::Reference {
            kv_fp8_sim(entry, nope);
        }
    }

    /// An indexer query head or key after RoPE: Hadamard rotation then FP4 simulation in
    /// reference mode (the width is a power of two, as config validation ensures).
    pub fn index_vector(self, v: &mut [f32]) {
        if self == Self::Reference && hadamard(v).is_ok() {
            fp4_sim(v);
        }
    }
}
