//! The DeepSeek-V4 runtime, by role: `model` (the forward over a backend, the weights it binds,
//! the CPU's sublayers), `backend` (the seam and its CPU and CUDA sides), `engine` (a request's
//! prefill and decode, the generation loop, sampling, stop strings) and `text` (the tokenizer
//! and the chat encoding).

pub mod backend;
pub mod engine;
pub mod memory;
pub mod model;
pub mod profile;
pub mod text;

/// The kernels' worker threads: how many, and running a step on one.
pub use dsv4_kernels::threads;

pub use backend::{Backend, CpuBackend, CudaBackend, SeqState};
pub use dsv4_kernels::numerics::Numerics;
/// The CPU kernel set the products run on here (`avx512`, `avx2+fma` or `portable`).
pub use dsv4_kernels::simd::kernel_instruction_set;
pub use engine::generate::{
    generate, FinishReason, GenerateError, GenerateRequest, Generation, Timings,
};
pub use engine::Request;
pub use model::load::{Linears, LoadError, LoadedCheckpoint};
pub use model::weights::{ModelWeights, WeightsError};
pub use model::{ForwardError, Logits, Model, RequestError};
pub use text::chat::{ChatPrompt, ChatRequest, ChatTurn, ReasoningEffort, ThinkingMode};
pub use text::tokenizer::{Tokenizer, TokenizerError};
