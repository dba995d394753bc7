//! The DeepSeek-V4 runtime: model forward over a backend, the decode loop, sampler, tokenizer
//! and chat formatting.
//!
//! Empty until the CPU engine lands (issue "The engine on CPU").
