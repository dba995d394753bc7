//! The DeepSeek-V4 runtime: model forward over a backend, the decode loop, sampler, tokenizer
//! and chat formatting.
//!
//! So far the tokenizer and chat formatting; the forward pass lands with the CPU engine (issue
//! "The engine on CPU").

pub mod chat;
pub mod tokenizer;

pub use chat::{ChatPrompt, ChatRequest, ReasoningEffort, ThinkingMode};
pub use tokenizer::{Tokenizer, TokenizerError};
