//! The number formats and byte layouts of DeepSeek-V4, in one leaf that the model description,
//! the cache and the kernels all read (as ggml's `ggml-common.h` is for ggml): the FP8 E4M3,
//! FP4 E2M1 and UE8M0 codes and the block- and group-scaled matrices built from them, the views
//! of stored linears, the block quantizers the reference numerics use, and the layouts of cached
//! entries and indexer keys with their scalar reference encode and decode. It depends on no
//! other crate of the workspace.

pub mod cache_codec;
pub mod formats;
pub mod linear;
pub mod quant;
