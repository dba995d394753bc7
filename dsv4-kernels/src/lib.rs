//! Compute kernels for DeepSeek-V4 on the CPU, on the number formats of `dsv4-formats`: the
//! packed linears with a kernel set per instruction set chosen at run time, and the model's
//! ops under the paper's names (`sparse_attend`, `indexer_topk`, the MoE `experts` with
//! `swiglu`, `grouped_linear`, norms, RoPE, top-k). Every parallel region of the engine is
//! here, on one worker pool (`threads`); the callers schedule no threads.

pub mod attend;
pub mod cache_store;
pub mod compressor;
pub mod cuda;
pub mod grouped;
pub mod indexer;
pub mod mhc;
pub mod moe;
pub mod numerics;
pub mod ops;
pub mod panel;
pub mod sample;
pub mod scratch;
pub mod simd;
pub mod threads;

// The formats the kernels compute on, under the paths kernel code and its users know them by.
pub use dsv4_formats::{cache_codec, formats, linear, quant};
