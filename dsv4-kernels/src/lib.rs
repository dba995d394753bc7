//! Compute kernels for DeepSeek-V4: CPU ops over plain slices and, behind the `cuda` feature,
//! launchers for the hand-written kernels in `csrc/`, every CUDA op with a CPU twin of the same name.
//!
//! Empty until the CPU engine lands (issue "The engine on CPU").
