//! Text in and out: the tokenizer and the V4 chat encoding.

pub mod chat;
pub mod tokenizer;
