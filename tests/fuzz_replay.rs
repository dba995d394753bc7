//! Replays the saved fuzz corpora (`fuzz/corpus/<target>/`: seeds, what the runs found, and the
//! inputs that once crashed a parser) through the fuzz targets' bodies on the stable toolchain,
//! so every input the fuzzers kept stays a regression test under
//! `cargo test` (which has neither nightly nor cargo-fuzz). The bodies are the same file the
//! cargo-fuzz entry points include; each must return normally on every input.

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::path::PathBuf;

/// Runs `body` over every file of `fuzz/corpus/<target>/`, which must exist and hold inputs.
fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for file in &files {
        let data = std::fs::read(file).expect("a corpus file is readable");
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(
            outcome.is_ok(),
            "{target} panicked on {} (reproduce: cargo +nightly fuzz run {target} {})",
            file.display(),
            file.display()
        );
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn config_corpus() {
    replay("config", targets::config);
}

#[test]
fn safetensors_header_corpus() {
    replay("safetensors_header", targets::safetensors_header);
}

#[test]
fn safetensors_index_corpus() {
    replay("safetensors_index", targets::safetensors_index);
}

#[test]
fn tokenizer_corpus() {
    replay("tokenizer", targets::tokenizer);
}

#[test]
fn cli_numbers_corpus() {
    replay("cli_numbers", targets::cli_numbers);
}
