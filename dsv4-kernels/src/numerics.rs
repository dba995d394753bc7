//! Numerics modes (docs/model.md §5), passed down as a value: `exact` computes in f32 with weights
//! dequantized exactly and nothing else quantized (what transformers' float32 model computes);
//! `reference` adds the release's quantization simulations.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::panel::PackedLinear;
use crate::quant::{act_quant_fp8, fp4_sim, hadamard, kv_fp8_sim};
use crate::scratch::{with_buffer, Buffers};

thread_local! {
    /// Each thread's buffers for an input being quantized for the reference numerics.
    static QUANTIZED_INPUT: Buffers<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One product of [`Numerics::linears`]: `y = W x`.
pub struct Product<'a> {
    /// The weight.
    pub weight: &'a PackedLinear<'a>,
    /// Input rows.
    pub x: &'a [f32],
    /// Output, resized to fit.
    pub y: &'a mut Vec<f32>,
}

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
    /// `W x` for each row of `x` into `y` (resized; its capacity reused), quantizing the input
    /// first where the reference does.
    pub fn linear_into(self, w: &PackedLinear, x: &[f32], y: &mut Vec<f32>) {
        y.clear();
        y.resize(x.len() / w.inp() * w.out(), 0.0);
        if self == Self::Reference && w.is_quantized() {
            with_buffer(&QUANTIZED_INPUT, |xq| {
                xq.clear();
                xq.extend_from_slice(x);
                xq.chunks_mut(w.inp()).for_each(act_quant_fp8);
                w.forward(xq, y);
            });
        } else {
            w.forward(x, y);
        }
    }

    /// [`Self::linear_into`] of several independent products in one parallel region (each
    /// still split over rows inside it): a decode step wakes the workers once per group of
    /// small linears instead of once per linear. Empty slots are skipped.
    pub fn linears(self, products: &mut [Option<Product>]) {
        products.par_iter_mut().flatten().for_each(|p| {
            self.linear_into(p.weight, p.x, p.y);
        });
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
    pub fn indexer_vector(self, v: &mut [f32]) {
        if self == Self::Reference && hadamard(v).is_ok() {
            fp4_sim(v);
        }
    }
}
