//! `dsv4 tokenize` end to end on the vendored DeepSeek-V4 tokenizer: text to ids, ids to text,
//! JSON output, chat prompts, and one-line errors for bad input.

mod common;

use common::{dsv4, error};

use std::path::{Path, PathBuf};

use serde_json::Value;

/// "Hello, world!" in DeepSeek-V4 ids (no BOS).
const HELLO_IDS: [u64; 4] = [19923, 14, 2058, 3];

fn tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/deepseek-v4/tokenizer.json")
        .canonicalize()
        .expect("vendored tokenizer.json")
}

/// Runs `dsv4 tokenize --tokenizer <vendored> ARGS` and returns stdout.
fn tokenize(args: &[&str]) -> String {
    let tok = tokenizer();
    let mut all = vec!["tokenize", "--tokenizer", tok.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let out = dsv4(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&tokenize(&all)).expect("stdout is one JSON object")
}

#[test]
fn text_to_ids() {
    assert_eq!(tokenize(&["--text", "Hello, world!"]), "19923 14 2058 3\n");
    // No BOS is added, and leading spaces are kept.
    let v = json(&["--text", "  two leading spaces"]);
    let ids: Vec<u64> = v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_u64().expect("int"))
        .collect();
    assert_ne!(ids[0], 0);
    let back = json(&["--decode", "--text", &format!("{ids:?}")]);
    assert_eq!(back["text"], "  two leading spaces");
}

#[test]
fn json_ids() {
    let v = json(&["--text", "Hello, world!"]);
    assert_eq!(v["ids"], serde_json::json!(HELLO_IDS));
    let v = json(&["--text", ""]);
    assert_eq!(v["ids"], serde_json::json!([]));
}

#[test]
fn decode_ids_with_spaces_or_commas() {
    assert_eq!(
        tokenize(&["--decode", "--text", "19923 14 2058 3"]),
        "Hello, world!\n"
    );
    assert_eq!(
        tokenize(&["--decode", "--text", "19923,14, 2058,\n3"]),
        "Hello, world!\n"
    );
    let v = json(&["--decode", "--text", "0 128803 19923 128804 128822"]);
    assert_eq!(
        v["text"],
        "<｜begin▁of▁sentence｜><｜User｜>Hello<｜Assistant｜></think>"
    );
}

#[test]
fn file_input_and_weights_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "fn main() {\r\n    println!(\"你好 🦀\");\r\n}\n";
    let input = dir.path().join("input.txt");
    std::fs::write(&input, text).expect("write");
    let weights = dir.path().join("ckpt");
    std::fs::create_dir(&weights).expect("mkdir");
    std::fs::copy(tokenizer(), weights.join("tokenizer.json")).expect("copy");

    let out = dsv4(&[
        "tokenize",
        "--weights",
        weights.to_str().expect("utf-8"),
        "--file",
        input.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<String> = v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.to_string())
        .collect();

    let ids_file = dir.path().join("ids.txt");
    std::fs::write(&ids_file, ids.join(",\n")).expect("write");
    let back = json(&["--decode", "--file", ids_file.to_str().expect("utf-8")]);
    assert_eq!(back["text"], text);
}

#[test]
fn chat_prompts() {
    let v = json(&["--chat", "--text", "Reply with the single word pong."]);
    assert_eq!(
        v["ids"],
        serde_json::json!([0, 128803, 19905, 418, 270, 4031, 2004, 280, 700, 16, 128804, 128822])
    );
    assert_eq!(
        v["prompt"],
        "<｜begin▁of▁sentence｜><｜User｜>Reply with the single word pong.<｜Assistant｜></think>"
    );
    let v = json(&[
        "--chat",
        "--thinking",
        "--system",
        "You are a helpful assistant.",
        "--text",
        "Write a haiku about Rust.",
    ]);
    assert_eq!(
        v["prompt"],
        "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Write a haiku about Rust.<｜Assistant｜><think>"
    );
    let ids = v["ids"].as_array().expect("ids");
    assert_eq!(ids.first(), Some(&Value::from(0)));
    assert_eq!(ids.last(), Some(&Value::from(128_821)));
}

#[test]
fn one_line_errors() {
    let tok = tokenizer();
    let tok = tok.to_str().expect("utf-8");

    let e = error(&[
        "tokenize",
        "--tokenizer",
        "/nonexistent/tokenizer.json",
        "--text",
        "x",
    ]);
    assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");

    let e = error(&["tokenize", "--weights", "/nonexistent-dir", "--text", "x"]);
    assert!(e.contains("/nonexistent-dir"), "{e}");

    let e = error(&[
        "tokenize",
        "--tokenizer",
        tok,
        "--file",
        "/nonexistent/input.txt",
    ]);
    assert!(e.contains("/nonexistent/input.txt"), "{e}");

    let e = error(&[
        "tokenize",
        "--tokenizer",
        tok,
        "--decode",
        "--text",
        "1 2 three",
    ]);
    assert!(e.contains("`three`"), "{e}");

    let e = error(&[
        "tokenize",
        "--tokenizer",
        tok,
        "--decode",
        "--text",
        "1 129280",
    ]);
    assert!(e.contains("129280") && e.contains("out of range"), "{e}");

    let e = error(&["tokenize", "--tokenizer", tok, "--decode", "--text", "-5"]);
    assert!(e.contains("-5"), "{e}");

    // A file that is not a tokenizer, and one that is not UTF-8 text.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"model\": 1").expect("write");
    let e = error(&[
        "tokenize",
        "--tokenizer",
        bad.to_str().expect("utf-8"),
        "--text",
        "x",
    ]);
    assert!(e.contains("bad.json"), "{e}");
    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, [0x66, 0xff, 0xfe]).expect("write");
    let e = error(&[
        "tokenize",
        "--tokenizer",
        tok,
        "--file",
        binary.to_str().expect("utf-8"),
    ]);
    assert!(e.contains("binary.txt") && e.contains("UTF-8"), "{e}");

    // Flag mistakes are clap's one-line errors.
    error(&["tokenize", "--text", "x"]);
    error(&["tokenize", "--tokenizer", tok]);
    error(&["tokenize", "--tokenizer", tok, "--text", "x", "--thinking"]);
    error(&[
        "tokenize",
        "--tokenizer",
        tok,
        "--text",
        "1",
        "--decode",
        "--chat",
    ]);
}
