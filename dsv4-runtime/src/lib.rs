//! The DeepSeek-V4 runtime: model forward over a backend, the decode loop, sampler, tokenizer
//! and chat formatting.

pub mod attention;
pub mod backend;
pub mod chat;
pub mod engine;
pub mod generate;
pub mod load;
pub mod memory;
pub mod mhc;
pub mod model;
pub mod moe;
pub mod profile;
pub mod sampler;
pub mod state;
pub mod stop;
pub mod tokenizer;
pub mod weights;
pub mod workspace;

/// The kernels' worker threads: how many, and running a step on one.
pub use dsv4_kernels::threads;

pub use backend::{Backend, CpuBackend, CudaBackend, SeqState};
pub use chat::{ChatPrompt, ChatRequest, ReasoningEffort, ThinkingMode};
pub use dsv4_kernels::numerics::Numerics;
/// The CPU kernel set the products run on here (`avx512`, `avx2+fma` or `portable`).
pub use dsv4_kernels::simd::kernel_instruction_set;
pub use engine::Request;
pub use generate::{generate, FinishReason, GenerateError, GenerateRequest, Generation, Timings};
pub use load::{LoadError, LoadedCheckpoint};
pub use model::{ForwardError, Logits, Model, RequestError};
pub use tokenizer::{Tokenizer, TokenizerError};
pub use weights::{ModelWeights, WeightsError};
