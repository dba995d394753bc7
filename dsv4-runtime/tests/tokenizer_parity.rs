//! The vendored DeepSeek-V4 tokenizer against the reference: ids equal to the Python
//! `tokenizers` library's on a varied corpus, lossless round trips, and chat prompts equal to
//! DeepSeek's own encoder, all from `tests/tokenizer/fixtures.json` (no Python needed here).
//! Also bad files and bad ids giving one-line errors.

use std::path::{Path, PathBuf};

use dsv4_runtime::text::chat::{ChatRequest, ReasoningEffort, ThinkingMode};
use dsv4_runtime::{Tokenizer, TokenizerError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    tokenizer_sha256: String,
    cases: Vec<TextCase>,
    chat: ChatFixtures,
}

#[derive(Deserialize)]
struct TextCase {
    name: String,
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct ChatFixtures {
    cases: Vec<ChatCase>,
}

#[derive(Deserialize)]
struct ChatCase {
    name: String,
    system: Option<String>,
    user: String,
    thinking: bool,
    reasoning_effort: Option<String>,
    text: String,
    ids: Vec<u32>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn tokenizer_path() -> PathBuf {
    repo().join("assets/deepseek-v4/tokenizer.json")
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(tokenizer_path()).expect("vendored tokenizer loads")
}

fn fixtures() -> Fixtures {
    let text = std::fs::read_to_string(repo().join("tests/tokenizer/fixtures.json"))
        .expect("fixtures.json readable");
    serde_json::from_str(&text).expect("fixtures.json parses")
}

#[test]
fn fixtures_were_made_from_the_vendored_file() {
    // Guards against regenerating fixtures from one tokenizer.json and vendoring another.
    let fixtures = fixtures();
    assert_eq!(
        fixtures.tokenizer_sha256,
        "8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf"
    );
    let size = std::fs::metadata(tokenizer_path()).expect("stat").len();
    assert_eq!(size, 6_367_146, "vendored tokenizer.json changed size");
}

#[test]
fn special_ids_match_the_v4_config() {
    let tok = tokenizer();
    assert_eq!(tok.bos_id(), 0);
    assert_eq!(tok.eos_id(), 1);
    assert_eq!(tok.vocab_size(), 129_280);
    // Special tokens written in the text are one id each; a look-alike is not.
    for (text, id) in [
        ("<｜User｜>", 128_803),
        ("<｜Assistant｜>", 128_804),
        ("<think>", 128_821),
        ("</think>", 128_822),
        ("｜DSML｜", 128_825),
        ("<｜latest_reminder｜>", 128_828),
    ] {
        assert_eq!(tok.encode(text).expect("encodes"), vec![id], "{text}");
    }
    assert!(tok.encode("<|User|>").expect("encodes").len() > 1);
    assert_eq!(
        tok.decode(&[0]).expect("decodes"),
        "<｜begin▁of▁sentence｜>"
    );
}

#[test]
fn ids_equal_the_reference_and_round_trip() {
    let tok = tokenizer();
    let fixtures = fixtures();
    assert!(fixtures.cases.len() >= 40, "corpus shrank");
    let mut failures = Vec::new();
    for case in &fixtures.cases {
        let ids = tok.encode(&case.text).expect("encodes");
        if ids != case.ids {
            failures.push(format!(
                "{}: ids differ\n  want {:?}\n  got  {:?}",
                case.name, case.ids, ids
            ));
            continue;
        }
        let back = tok.decode(&ids).expect("decodes");
        if back != case.text {
            failures.push(format!(
                "{}: decode(encode(text)) = {back:?}, want {:?}",
                case.name, case.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn chat_prompts_equal_deepseeks_encoder() {
    let tok = tokenizer();
    let fixtures = fixtures();
    assert!(fixtures.chat.cases.len() >= 4);
    for case in &fixtures.chat.cases {
        let effort = match case.reasoning_effort.as_deref() {
            None | Some("high") => ReasoningEffort::Default,
            Some("max") => ReasoningEffort::Max,
            Some(other) => panic!("{}: unknown reasoning_effort {other}", case.name),
        };
        let request = ChatRequest {
            system: case.system.as_deref(),
            user: &case.user,
            mode: if case.thinking {
                ThinkingMode::Thinking
            } else {
                ThinkingMode::Chat
            },
            effort,
        };
        let prompt = request.encode(&tok).expect("encodes");
        assert_eq!(prompt.text, case.text, "{}: text", case.name);
        assert_eq!(prompt.ids, case.ids, "{}: ids", case.name);
        assert_eq!(
            prompt.ids[0],
            tok.bos_id(),
            "{}: starts with BOS",
            case.name
        );
    }
}

#[test]
fn chat_ids_match_a_served_v4_prompt() {
    // A prompt as a vLLM server renders and tokenizes it for V4 with thinking off (published
    // render fixtures of an independent gateway): the same ids from a different stack.
    let tok = tokenizer();
    let prompt = ChatRequest {
        user: "Reply with the single word pong.",
        ..ChatRequest::default()
    }
    .encode(&tok)
    .expect("encodes");
    assert_eq!(
        prompt.ids,
        [0, 128_803, 19_905, 418, 270, 4031, 2004, 280, 700, 16, 128_804, 128_822]
    );
}

#[test]
fn bad_ids_name_the_id() {
    let tok = tokenizer();
    let err = tok.decode(&[19_923, 129_280]).expect_err("out of range");
    assert_eq!(
        err,
        TokenizerError::IdOutOfRange {
            id: 129_280,
            vocab_size: 129_280
        }
    );
    let message = err.to_string();
    assert!(message.contains("129280"), "{message}");
    assert!(!message.contains('\n'));
    assert!(tok.decode(&[u32::MAX]).is_err());
    assert_eq!(tok.decode(&[]).expect("empty"), "");
}

#[test]
fn pathological_whitespace_still_encodes() {
    // The pre-tokenizer's look-ahead (`\s+(?!\S)`) runs on a backtracking engine; long runs
    // must neither fail nor change the round trip.
    let tok = tokenizer();
    for text in [
        " ".repeat(20_000),
        format!("{}x", " ".repeat(20_000)),
        "\n".repeat(20_000),
        format!("a{}b", " \t".repeat(10_000)),
    ] {
        let ids = tok.encode(&text).expect("encodes");
        assert_eq!(tok.decode(&ids).expect("decodes"), text);
    }
}

#[test]
fn bad_files_give_one_line_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let missing = dir.join("nope.json");
    let err = Tokenizer::from_file(&missing).expect_err("missing");
    assert!(matches!(err, TokenizerError::Read(_)), "{err}");
    assert!(err.to_string().contains("nope.json"), "{err}");
    // Not a regular file: refused at once rather than read without end.
    for special in [Path::new("/dev/zero"), dir] {
        let err = Tokenizer::from_file(special).expect_err("not a file");
        assert!(
            err.to_string().ends_with("it is not a regular file"),
            "{err}"
        );
    }

    let cases: [(&str, &[u8]); 5] = [
        ("empty.json", b""),
        ("text.json", b"not json at all"),
        ("object.json", b"{}"),
        ("binary.json", &[0xff, 0xfe, 0x00, 0x12]),
        (
            "wrong_model.json",
            br#"{"model": {"type": "BPE", "vocab": 7}}"#,
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = Tokenizer::from_file(&path).expect_err(name);
        let message = err.to_string();
        assert!(message.contains(name), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    // A truncated copy of the real file.
    let real = std::fs::read(tokenizer_path()).expect("read");
    let path = dir.join("truncated.json");
    std::fs::write(&path, &real[..real.len() / 2]).expect("write");
    let err = Tokenizer::from_file(&path).expect_err("truncated");
    assert!(matches!(err, TokenizerError::Parse { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn a_tokenizer_without_bos_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let path = dir.join("tokenizer.json");
    std::fs::write(
        &path,
        br#"{"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
            "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}"#,
    )
    .expect("write");
    let err = Tokenizer::from_file(&path).expect_err("no BOS");
    assert!(
        matches!(err, TokenizerError::MissingSpecial { role: "BOS", .. }),
        "{err}"
    );
    // A tokenizer_config.json beside it may name other special tokens.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        br#"{"bos_token": "a", "eos_token": {"content": "b"}}"#,
    )
    .expect("write");
    let tok = Tokenizer::from_file(&path).expect("loads with named specials");
    assert_eq!((tok.bos_id(), tok.eos_id()), (0, 1));
}
