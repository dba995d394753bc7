//! Compute kernels for DeepSeek-V4: the release number formats, CPU ops over plain slices and,
//! behind the `cuda` feature, launchers for the hand-written kernels in `csrc/`, every CUDA op
//! with a CPU twin of the same name.

pub mod attend;
pub mod cache_codec;
pub mod formats;
pub mod linear;
pub mod ops;
pub mod panel;
pub mod quant;
pub mod scratch;
pub mod simd;
