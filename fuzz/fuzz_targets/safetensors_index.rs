//! libFuzzer entry point of the `safetensors_index` target; the body lives in `src/targets.rs` so
//! that the stable replay test (`tests/fuzz_replay.rs`) runs the same code over the saved corpus.
#![no_main]

#[path = "../src/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::safetensors_index(data));
