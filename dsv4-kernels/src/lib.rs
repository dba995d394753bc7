//! Compute kernels for DeepSeek-V4: the packed linears with a kernel set per instruction set
//! chosen at run time, attention and the other CPU ops over plain slices, on the number formats
//! of `dsv4-formats`. (The CUDA kernels of `csrc/`, each with a CPU twin of the same name, are
//! still to come.)

pub mod attend;
pub mod grouped;
pub mod indexer;
pub mod moe;
pub mod numerics;
pub mod ops;
pub mod panel;
pub mod scratch;
pub mod simd;
pub mod threads;

// The formats the kernels compute on, under the paths kernel code and its users know them by.
pub use dsv4_formats::{cache_codec, formats, linear, quant};
