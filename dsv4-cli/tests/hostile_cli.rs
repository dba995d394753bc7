//! Hostile and careless input, end to end through the `dsv4` binary: one test per class of the
//! adversarial pass (non-finite weights, outputs that could destroy inputs, oversized values,
//! files that are not what they claim, flags that were silently ignored). Every refusal is one
//! line on stderr and a non-zero exit; nothing is left half-written. (Over 600 lines: the
//! classes share this file's helpers for corrupting a checkpoint.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{dsv4, error};
use serde_json::Value;

/// A fresh random `tiny` checkpoint (single file, with the real tokenizer).
fn tiny() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = dir.path().join("w");
    let out = dsv4(&["init", "--preset", "tiny", "--out", s(&weights)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, weights)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs an `inspect` that must fail (it prints its report, then the error); its error line.
fn inspect_error(args: &[&str]) -> String {
    let out = dsv4(args);
    assert!(!out.status.success(), "should fail: {args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    stderr
}

/// The byte range of tensor `name` in a safetensors file.
fn tensor_range(file: &Path, name: &str) -> std::ops::Range<usize> {
    let bytes = std::fs::read(file).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let offsets = &header[name]["data_offsets"];
    let at = |i: usize| offsets[i].as_u64().expect("offset") as usize + 8 + n;
    at(0)..at(1)
}

/// Overwrites tensor `name` of `file` with `pattern` repeated.
fn fill(file: &Path, name: &str, pattern: &[u8]) {
    let range = tensor_range(file, name);
    let mut bytes = std::fs::read(file).expect("read");
    for (i, b) in bytes[range].iter_mut().enumerate() {
        *b = pattern[i % pattern.len()];
    }
    std::fs::write(file, bytes).expect("write");
}

/// Entries of `dir` whose names start with a dot: partial outputs left behind.
fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// E4M3 NaN bytes (read as ±480 before), BF16 NaN and F32 infinities: `inspect --deep` names
/// each tensor with its counts, `score` refuses to write non-finite logits and leaves no file,
/// `run` refuses at the first token.
#[test]
fn non_finite_weights_are_found_and_never_written_as_results() {
    let (tmp, w) = tiny();
    let file = w.join("model.safetensors");
    // Plain inspect passes: the bytes are well-formed, only their values are wrong.
    fill(
        &file,
        "layers.0.attn.wq_a.weight",
        &[0x7F, 0x38, 0xFF, 0x38],
    );
    assert!(dsv4(&["inspect", "--weights", s(&w)]).status.success());
    fill(&file, "norm.weight", &[0xC0, 0x7F, 0x80, 0x3F]); // BF16 NaN, 1.0
    let deep = dsv4(&["inspect", "--weights", s(&w), "--deep", "--json"]);
    assert!(!deep.status.success());
    let report: Value = serde_json::from_slice(&deep.stdout).expect("json");
    let problems: Vec<&str> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        problems.contains(
            &"model.safetensors: tensor `layers.0.attn.wq_a.weight`: 1024 NaN and 0 infinite value(s) among its 2048 F8_E4M3 values"
        ),
        "{problems:?}"
    );
    assert!(
        problems.contains(
            &"model.safetensors: tensor `norm.weight`: 32 NaN and 0 infinite value(s) among its 64 BF16 values"
        ),
        "{problems:?}"
    );

    let out = tmp.path().join("logits.npy");
    let message = error(&[
        "score",
        "--weights",
        s(&w),
        "--ids",
        "1,2,3",
        "--out",
        s(&out),
    ]);
    assert!(
        message.starts_with("error: the logits of position 0 are not finite"),
        "{message}"
    );
    assert!(!out.exists());
    assert!(
        hidden_files(tmp.path()).is_empty(),
        "{:?}",
        hidden_files(tmp.path())
    );
    let message = error(&["run", "--weights", s(&w), "--prompt-ids", "1,2"]);
    assert!(message.contains("NaN"), "{message}");

    // An F32 weight holding +inf and -inf is counted as such.
    let (_tmp2, w2) = tiny();
    let file2 = w2.join("model.safetensors");
    fill(
        &file2,
        "layers.0.hc_attn_scale",
        &[0, 0, 0x80, 0x7F, 0, 0, 0x80, 0xFF],
    );
    let message = inspect_error(&["inspect", "--weights", s(&w2), "--deep"]);
    assert!(
        message.contains(
            "tensor `layers.0.hc_attn_scale`: 0 NaN and 3 infinite value(s) among its 3 F32 values"
        ),
        "{message}"
    );
}

/// `score --out` can destroy nothing: not the checkpoint's files (by any name), not an existing
/// file without `--force`; a failed run leaves neither the output nor a temporary file.
#[test]
fn score_never_overwrites_an_input_or_leaves_a_partial_file() {
    let (tmp, w) = tiny();
    let weights_file = w.join("model.safetensors");
    let size = std::fs::metadata(&weights_file).expect("meta").len();
    let message = error(&[
        "score",
        "--weights",
        s(&w),
        "--ids",
        "0,1",
        "--out",
        s(&weights_file),
    ]);
    assert_eq!(
        message,
        format!(
            "error: refusing to write {}: this command reads that file; choose another output",
            weights_file.display()
        )
    );
    // Another spelling of the same file, and a link to it, even with --force.
    let dotted = w.join(".").join("config.json");
    assert!(error(&[
        "score",
        "--weights",
        s(&w),
        "--ids",
        "0",
        "--out",
        s(&dotted),
        "--force"
    ])
    .contains("this command reads that file"));
    let link = tmp.path().join("link.npy");
    std::os::unix::fs::symlink(&weights_file, &link).expect("symlink");
    assert!(error(&[
        "score",
        "--weights",
        s(&w),
        "--ids",
        "0",
        "--out",
        s(&link),
        "--force"
    ])
    .contains("this command reads that file"));
    let ids_file = tmp.path().join("ids.txt");
    std::fs::write(&ids_file, "0 1").expect("write");
    assert!(error(&[
        "score",
        "--weights",
        s(&w),
        "--ids-file",
        s(&ids_file),
        "--out",
        s(&ids_file),
        "--force"
    ])
    .contains("this command reads that file"));
    assert_eq!(std::fs::metadata(&weights_file).expect("meta").len(), size);

    let out = tmp.path().join("logits.npy");
    std::fs::write(&out, b"keep me").expect("write");
    assert_eq!(
        error(&[
            "score",
            "--weights",
            s(&w),
            "--ids",
            "0,1",
            "--out",
            s(&out)
        ]),
        format!(
            "error: {} exists; give --force to replace it",
            out.display()
        )
    );
    assert_eq!(std::fs::read(&out).expect("read"), b"keep me");
    let ok = dsv4(&[
        "score",
        "--weights",
        s(&w),
        "--ids",
        "0,1",
        "--out",
        s(&out),
        "--force",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(std::fs::read(&out).expect("read")[..6], *b"\x93NUMPY");
    // A failure after the output was opened (an id past the vocabulary at position 2) leaves
    // the existing file as it was and no temporary file.
    let before = std::fs::read(&out).expect("read");
    assert!(error(&[
        "score",
        "--weights",
        s(&w),
        "--ids",
        "0,1,999999",
        "--out",
        s(&out),
        "--force"
    ])
    .contains("out of range"));
    assert_eq!(std::fs::read(&out).expect("read"), before);
    assert!(hidden_files(tmp.path()).is_empty());
}

/// Peak memory of `score` stays bounded by its chunk, not the sequence: 2,048 tokens on the
/// tiny preset (vocab 129,280: 1 GiB of logits at once before the default chunk) stay far below
/// what holding every row would take.
#[test]
fn score_memory_is_bounded_by_the_chunk() {
    let (tmp, w) = tiny();
    let ids: Vec<String> = (0..2048).map(|i| (i * 37 % 129_000).to_string()).collect();
    let ids_file = tmp.path().join("ids.txt");
    std::fs::write(&ids_file, ids.join(" ")).expect("write");
    let out = tmp.path().join("logits.npy");
    let before = children_max_rss_kib();
    let status = Command::new(env!("CARGO_BIN_EXE_dsv4"))
        .args([
            "score",
            "--weights",
            s(&w),
            "--ids-file",
            s(&ids_file),
            "--out",
            s(&out),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert!(status.success());
    let peak_mib = children_max_rss_kib().max(before) / 1024;
    // [2048 x 129,280] f32 logits alone are 1,010 MiB.
    assert!(peak_mib < 500, "peak RSS {peak_mib} MiB");
    let len = std::fs::metadata(&out).expect("meta").len();
    assert!(len > 2048 * 129_280 * 4, "{len}");
}

fn children_max_rss_kib() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss as u64
    }
}

/// Files that are not what their name says: a directory, a FIFO, a device or a loop of links
/// in place of the weights, config or an input file are named as such, never read without end.
#[test]
fn paths_that_are_not_regular_files_are_named() {
    let (tmp, w) = tiny();
    let weights_file = w.join("model.safetensors");
    std::fs::remove_file(&weights_file).expect("rm");
    std::fs::create_dir(&weights_file).expect("mkdir");
    assert_eq!(
        inspect_error(&["inspect", "--weights", s(&w)]),
        format!("error: {}: not a regular file", weights_file.display())
    );
    std::fs::remove_dir(&weights_file).expect("rmdir");
    let fifo = std::ffi::CString::new(s(&weights_file)).expect("cstring");
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert!(
        error(&["run", "--weights", s(&w), "--prompt-ids", "1"]).ends_with("not a regular file")
    );
    std::fs::remove_file(&weights_file).expect("rm fifo");
    std::os::unix::fs::symlink(&weights_file, &weights_file).expect("loop");
    let message = inspect_error(&["inspect", "--weights", s(&w)]);
    assert!(message.contains("symbolic links"), "{message}");

    let out = tmp.path().join("o.npy");
    for (flag, path) in [("--ids-file", "/dev/zero"), ("--ids-file", s(tmp.path()))] {
        let message = error(&["score", "--weights", s(&w), flag, path, "--out", s(&out)]);
        assert!(message.ends_with("it is not a regular file"), "{message}");
    }
    assert!(error(&["run", "--prompt-file", "/dev/zero"]).ends_with("it is not a regular file"));
    assert!(
        error(&["tokenize", "--weights", s(&w), "--file", "/dev/zero"])
            .ends_with("it is not a regular file")
    );
    assert!(error(&["plan", "--config", "/dev/zero"]).ends_with("it is not a regular file"));
}

/// An index may only name shard files inside the checkpoint directory.
#[test]
fn an_index_cannot_reach_outside_the_checkpoint() {
    let (_tmp, w) = tiny();
    for shard in ["../model.safetensors", "/etc/passwd", "sub/x.safetensors"] {
        let index = serde_json::json!({"weight_map": {"head.weight": shard}});
        std::fs::write(w.join("model.safetensors.index.json"), index.to_string()).expect("write");
        assert_eq!(
            inspect_error(&["inspect", "--weights", s(&w)]),
            format!("error: model.safetensors.index.json names shard `{shard}`: expected a file name inside the checkpoint directory")
        );
    }
}

/// A name holding a newline stays on the error's one line, escaped: a shard named by an index
/// (found by fuzzing the index), a directory or file typed as a flag.
#[test]
fn paths_with_newlines_stay_on_one_line() {
    let (tmp, w) = tiny();
    let index = serde_json::json!({"weight_map": {"head.weight": "a\nb.safetensors"}});
    std::fs::write(w.join("model.safetensors.index.json"), index.to_string()).expect("write");
    let message = inspect_error(&["inspect", "--weights", s(&w)]);
    assert!(message.contains("a\\nb.safetensors"), "{message}");

    let odd = tmp.path().join("odd\nname");
    std::fs::create_dir(&odd).expect("mkdir");
    let message = inspect_error(&["inspect", "--weights", s(&odd)]);
    assert!(message.contains("odd\\nname"), "{message}");
    let message = error(&["plan", "--config", s(&odd.join("config.json"))]);
    assert!(message.contains("odd\\nname"), "{message}");
}

/// A tokenizer.json that is not one, or is another model's (more ids than the model embeds), is
/// a problem `inspect` reports and `run` refuses; the hash-routing table's expert ids are
/// checked by `inspect` as `run` checks them.
#[test]
fn inspect_checks_the_tokenizer_and_the_routing_table() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = tmp.path().join("hca16");
    std::fs::create_dir(&w).expect("mkdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/parity/fixtures/hca16");
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(name), w.join(name)).expect("copy");
    }
    let v: Value = serde_json::from_slice(&dsv4(&["inspect", "--weights", s(&w), "--json"]).stdout)
        .expect("json");
    assert!(v["tokenizer_ids"].is_null());
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/deepseek-v4/tokenizer.json");
    std::fs::copy(&real, w.join("tokenizer.json")).expect("copy");
    let message = inspect_error(&["inspect", "--weights", s(&w)]);
    assert!(
        message.ends_with(
            "has 129280 ids, more than the model's vocabulary of 512: it belongs to another model"
        ),
        "{message}"
    );
    assert!(
        error(&["run", "--weights", s(&w), "--prompt", "hi"]).contains("belongs to another model")
    );
    std::fs::write(w.join("tokenizer.json"), "not json").expect("write");
    assert!(
        inspect_error(&["inspect", "--weights", s(&w)]).contains("is not a valid tokenizer.json")
    );

    let (_tmp2, w2) = tiny();
    let file = w2.join("model.safetensors");
    let range = tensor_range(&file, "layers.0.ffn.gate.tid2eid");
    let mut bytes = std::fs::read(&file).expect("read");
    // Token 5, slot 1 names expert 999 (tiny has 8).
    bytes[range.start + 11 * 8..range.start + 12 * 8].copy_from_slice(&999i64.to_le_bytes());
    std::fs::write(&file, bytes).expect("write");
    let message = inspect_error(&["inspect", "--weights", s(&w2)]);
    assert!(
        message.ends_with(
            "tensor `layers.0.ffn.gate.tid2eid`: token 5, slot 1 names expert 999, but there are 8"
        ),
        "{message}"
    );
}

/// Oversized values through every command: refused in one line before any output or
/// allocation, never wrapped, never a panic.
#[test]
fn oversized_values_are_refused_before_anything_runs() {
    let (tmp, w) = tiny();
    let huge = u64::MAX.to_string();
    assert_eq!(
        error(&[
            "run",
            "--weights",
            s(&w),
            "--prompt-ids",
            "1",
            "--block-size",
            "18446744073709551600"
        ]),
        "error: block size 18446744073709551600 is above the largest supported, 1048576 tokens"
    );
    assert!(error(&["bench", "--weights", s(&w), "--prompt-len", &huge])
        .contains("exceeds the model's context"));
    assert!(error(&["bench", "--weights", s(&w), "--gen", &huge])
        .contains("exceeds the model's context"));
    // A config value far beyond any model, through the commands that read a config.
    let config = w.join("config.json");
    let text = std::fs::read_to_string(&config).expect("read");
    for (field, value) in [
        ("sliding_window", "18446744073709551615"),
        ("index_topk", "1099511627776"),
        ("num_nextn_predict_layers", "9223372036854775808"),
        ("n_routed_experts", "1000000"),
        ("hc_sinkhorn_iters", "1000000000"),
        ("max_position_embeddings", "9223372036854775808"),
    ] {
        let mut v: Value = serde_json::from_str(&text).expect("json");
        v[field] = serde_json::from_str(value).expect("number");
        std::fs::write(&config, v.to_string()).expect("write");
        for args in [
            vec!["inspect", "--weights", s(&w)],
            vec!["plan", "--weights", s(&w)],
            vec!["run", "--weights", s(&w), "--prompt-ids", "1"],
        ] {
            let message = error(&args);
            assert!(
                message.contains(&format!("config field `{field}` = {value}: expected")),
                "{args:?}: {message}"
            );
            // Named once, not repeated by an error chain.
            assert_eq!(message.matches("config field").count(), 1, "{message}");
        }
    }
    drop(tmp);
}

/// Flags that used to be ignored or misread: `--system`/`--thinking` without `--chat`, an empty
/// id between commas, a negative number after a flag; sampling flags are checked before the
/// weights are read (here there are none to read).
#[test]
fn flags_are_never_silently_ignored() {
    let missing = "/nonexistent/weights";
    assert_eq!(
        error(&[
            "run",
            "--weights",
            missing,
            "--prompt-ids",
            "1",
            "--system",
            "be brief"
        ]),
        "error: --system and --thinking shape a chat prompt: give --chat TEXT, or drop them"
    );
    assert!(
        error(&["run", "--weights", missing, "--prompt", "x", "--thinking"]).contains("--chat")
    );
    assert_eq!(
        error(&["run", "--weights", missing, "--prompt-ids", "1,,2"]),
        "error: empty id at item 2 of the list (two commas in a row, or a comma at an end?)"
    );
    assert_eq!(
        error(&[
            "run",
            "--weights",
            missing,
            "--prompt-ids",
            "1",
            "--temperature",
            "-1"
        ]),
        "error: --temperature -1: expected a finite number >= 0 (0 = greedy)"
    );
    assert!(error(&[
        "run",
        "--weights",
        missing,
        "--prompt-ids",
        "1",
        "--top-p",
        "-0.5"
    ])
    .starts_with("error: --top-p -0.5"));
    // clap's errors keep their point on the one line printed.
    assert_eq!(
        error(&[
            "tokenize",
            "--tokenizer",
            "t.json",
            "--text",
            "hi",
            "--system",
            "x"
        ]),
        "error: the following required arguments were not provided: --chat"
    );
    let (tmp, w) = tiny();
    assert!(error(&[
        "score",
        "--weights",
        s(&w),
        "--ids",
        "1,,2",
        "--out",
        s(&tmp.path().join("o.npy"))
    ])
    .contains("empty id at item 2"));
}

/// Prompts from a file or standard input, for prompts longer than a command line can carry.
#[test]
fn prompts_come_from_files_and_standard_input() {
    let (tmp, w) = tiny();
    let ids_file = tmp.path().join("ids.txt");
    std::fs::write(&ids_file, "1, 2, 3\n").expect("write");
    let by_flag = dsv4(&[
        "run",
        "--weights",
        s(&w),
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    let by_file = dsv4(&[
        "run",
        "--weights",
        s(&w),
        "--prompt-ids-file",
        s(&ids_file),
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    let ids = |out: &std::process::Output| -> Value {
        serde_json::from_slice::<Value>(&out.stdout).expect("json")["generated_ids"].clone()
    };
    assert_eq!(ids(&by_flag), ids(&by_file));

    let text = "The capital of France is";
    let by_prompt = dsv4(&[
        "run",
        "--weights",
        s(&w),
        "--prompt",
        text,
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsv4"))
        .args([
            "run",
            "--weights",
            s(&w),
            "--prompt-file",
            "-",
            "--max-new-tokens",
            "3",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let by_stdin = child.wait_with_output().expect("wait");
    assert!(
        by_stdin.status.success(),
        "{}",
        String::from_utf8_lossy(&by_stdin.stderr)
    );
    assert_eq!(ids(&by_prompt), ids(&by_stdin));
    // A prompt longer than the 128 KiB one argument may hold is read whole (and here is longer
    // than the tiny model's context).
    let long = tmp.path().join("long.txt");
    std::fs::write(&long, "word ".repeat(40_000)).expect("write");
    assert_eq!(
        error(&["run", "--weights", s(&w), "--prompt-file", s(&long)]),
        "error: the prompt has 40001 tokens, more than the model's context of 4096"
    );
}

/// A tensor name of a megabyte is clipped in messages, not echoed in full.
#[test]
fn huge_names_are_clipped_in_messages() {
    let (_tmp, w) = tiny();
    let file = w.join("model.safetensors");
    let name = "x".repeat(1 << 20);
    let header = serde_json::json!({ name.clone(): {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]} });
    let text = header.to_string();
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&[0, 0]);
    std::fs::write(&file, bytes).expect("write");
    let out = dsv4(&["inspect", "--weights", s(&w)]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in report.lines().chain(stderr.lines()) {
        assert!(line.len() < 1000, "a line of {} bytes", line.len());
    }
    assert!(
        report.contains("... (1048576 bytes)"),
        "{}",
        &report[..2000.min(report.len())]
    );
}
