//! `dsv4 run` and `dsv4 score` end to end on the parity fixtures and the demo model: the JSON
//! keys scripts rely on, transformers' greedy continuation, the context limit, and one-line
//! errors for bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{dsv4, dsv4_with_env, error};
use dsv4_cli::npy::read_npy_f32;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/parity/fixtures")
        .join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference");
    serde_json::from_str(&text).expect("json")
}

fn id_list(v: &Value) -> String {
    let ids: Vec<String> = v
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.to_string())
        .collect();
    ids.join(",")
}

fn run_json(args: &[&str]) -> (Value, String) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = dsv4(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (
        serde_json::from_slice(&out.stdout).expect("one JSON object"),
        stderr,
    )
}

/// `--device cuda-sim` (the CUDA backend, its kernels on the CPU, sampling on the device) says
/// it is a testing device and generates transformers' greedy continuation, and a seeded draw
/// gives the CPU's tokens.
#[test]
fn cuda_sim_runs_greedy_and_seeded_generation_as_the_cpu_does() {
    let r = reference("hca16");
    let dir = fixture("hca16");
    let prompt = id_list(&r["greedy"]["prompt_ids"]);
    let weights = dir.to_str().expect("utf-8");
    let greedy = [
        "--weights",
        weights,
        "--prompt-ids",
        &prompt,
        "--max-new-tokens",
        "8",
    ];
    let (v, stderr) = run_json(&[&greedy[..], &["--device", "cuda-sim"]].concat());
    assert!(stderr.contains("a testing device"), "{stderr}");
    let want: Vec<Value> = r["greedy"]["generated_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .take(8)
        .cloned()
        .collect();
    assert_eq!(v["generated_ids"], Value::Array(want));
    let seeded = [
        "--temperature",
        "0.9",
        "--top-k",
        "30",
        "--top-p",
        "0.9",
        "--seed",
        "21",
    ];
    let on = |device: &str| {
        run_json(&[&greedy[..], &seeded[..], &["--device", device]].concat()).0["generated_ids"]
            .clone()
    };
    assert_eq!(on("cuda-sim"), on("cpu"));
}

#[test]
fn greedy_run_matches_transformers_and_reports_timings() {
    let r = reference("hca128");
    let dir = fixture("hca128");
    let prompt = id_list(&r["greedy"]["prompt_ids"]);
    let (v, stderr) = run_json(&[
        "--weights",
        dir.to_str().expect("utf-8"),
        "--prompt-ids",
        &prompt,
        "--temperature",
        "0",
        "--max-new-tokens",
        "16",
    ]);
    assert_eq!(v["generated_ids"], r["greedy"]["generated_ids"]);
    assert_eq!(v["prompt_ids"], r["greedy"]["prompt_ids"]);
    assert_eq!(v["finish_reason"], "length");
    assert!(v["text"].is_null(), "no tokenizer, no text");
    assert!(
        v["timings"]["prefill_tokens_per_s"]
            .as_f64()
            .expect("number")
            > 0.0
    );
    assert!(
        v["timings"]["decode_tokens_per_s"]
            .as_f64()
            .expect("number")
            > 0.0
    );
    assert!(stderr.contains("prompt tokens, prefill"), "{stderr}");
}

#[test]
fn the_demo_model_runs_without_weights_and_says_so() {
    let (v, stderr) = run_json(&[
        "--prompt",
        "Hello, world",
        "--max-new-tokens",
        "5",
        "--seed",
        "3",
        "--temperature",
        "0.8",
    ]);
    assert!(stderr.contains("built-in demo model"), "{stderr}");
    assert!(stderr.contains("King James Bible"), "{stderr}");
    assert_eq!(v["generated_ids"].as_array().map(Vec::len), Some(5));
    assert!(v["text"].is_string());
    // The demo was trained on English prose: greedy, it writes words of it, not the noise of
    // random weights over a large vocabulary.
    let (v, _) = run_json(&[
        "--prompt",
        "And the LORD said unto Moses,",
        "--max-new-tokens",
        "24",
    ]);
    let text = v["text"].as_str().expect("text");
    assert!(
        text.chars()
            .all(|c| c.is_ascii_alphabetic() || " ,.;:'\n".contains(c)),
        "{text:?}"
    );
    assert!(text.split_whitespace().count() >= 8, "{text:?}");
    // Streaming mode prints the text itself.
    let out = dsv4(&["run", "--chat", "Hi", "--max-new-tokens", "3"]);
    assert!(out.status.success());
    assert!(!out.stdout.is_empty());
}

#[test]
fn generation_stops_at_the_context_limit() {
    // The hca16 fixture with its context cut to 48 tokens: a 40-token prompt leaves room for 8.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = fixture("hca16");
    let config = std::fs::read_to_string(src.join("config.json")).expect("config");
    let mut config: Value = serde_json::from_str(&config).expect("json");
    config["max_position_embeddings"] = 48.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .expect("copy");
    let prompt = id_list(&reference("hca16")["greedy"]["prompt_ids"]);
    let (v, _) = run_json(&[
        "--weights",
        dir.path().to_str().expect("utf-8"),
        "--prompt-ids",
        &prompt,
        "--max-new-tokens",
        "100",
    ]);
    assert_eq!(v["finish_reason"], "context");
    assert_eq!(v["generated_ids"].as_array().map(Vec::len), Some(9));
}

#[test]
fn score_writes_transformers_logits_whatever_the_chunk_and_device() {
    let r = reference("hca16");
    let dir = tempfile::tempdir().expect("tempdir");
    let ids_file = dir.path().join("ids.txt");
    // Whitespace and commas both separate ids.
    std::fs::write(&ids_file, id_list(&r["ids"]).replacen(',', " \n", 5)).expect("write");
    let want: Vec<f32> = std::fs::read(fixture("hca16").join("logits.f32"))
        .expect("logits")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // The portable kernels too: DSV4_NO_SIMD switches AVX2 off for the whole process.
    let portable = [("DSV4_NO_SIMD", "1")];
    let weights = fixture("hca16");
    // And the CUDA backend, its kernels on the CPU.
    for (chunk, vars, device) in [
        ("7", &[][..], "cpu"),
        ("200", &[][..], "cpu"),
        ("7", &portable[..], "cpu"),
        ("64", &[][..], "cuda-sim"),
    ] {
        let out = dir
            .path()
            .join(format!("logits-{chunk}-{}-{device}.npy", vars.len()));
        let args = [
            "score",
            "--weights",
            weights.to_str().expect("utf-8"),
            "--ids-file",
            ids_file.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
            "--chunk",
            chunk,
            "--device",
            device,
        ];
        let status = dsv4_with_env(&args, vars);
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let npy = read_npy_f32(&out).expect("npy");
        assert_eq!(npy.shape, vec![200, 512]);
        let worst = npy
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-3, "chunk {chunk} {vars:?} on {device}: {worst}");
    }
}

#[test]
fn bad_input_gets_one_line_errors() {
    let w = fixture("hca16");
    let w = w.to_str().expect("utf-8");
    let dir = tempfile::tempdir().expect("tempdir");
    let x = dir.path().join("x.npy");
    let x = x.to_str().expect("utf-8");
    assert!(
        error(&["run", "--weights", w, "--prompt", "hi"]).contains("--prompt needs a tokenizer")
    );
    assert!(error(&["run", "--weights", w, "--prompt-ids", "0,999999"])
        .contains("prompt token id 999999 is out of range"));
    assert!(
        error(&["run", "--weights", w, "--prompt-ids", "0,x"]).contains("`x` is not a token id")
    );
    assert!(error(&[
        "run",
        "--weights",
        w,
        "--prompt-ids",
        "0",
        "--device",
        "cuda"
    ])
    .contains("--device cuda: "));
    assert!(
        error(&["run", "--weights", w, "--prompt-ids", "0", "--top-p", "2"]).contains("--top-p")
    );
    assert!(
        error(&["run", "--weights", w, "--prompt-ids", "0", "--stop", ""]).contains("stop string")
    );
    assert!(
        error(&["run", "--weights", w, "--prompt-ids", "0", "--stop", "x"])
            .contains("needs a tokenizer")
    );
    assert!(error(&["run", "--weights", w]).contains("--prompt"));
    assert!(error(&[
        "run",
        "--weights",
        w,
        "--prompt-ids",
        "0",
        "--prefill-chunk",
        "0"
    ])
    .contains("--prefill-chunk 0"));
    assert!(error(&[
        "run",
        "--weights",
        w,
        "--prompt-ids",
        "0",
        "--threads",
        "999999"
    ])
    .contains("--threads 999999: at most 1024"));
    assert!(
        error(&["run", "--weights", "/nonexistent/dir", "--prompt-ids", "0"])
            .contains("/nonexistent/dir")
    );
    assert!(error(&[
        "score",
        "--weights",
        w,
        "--ids",
        "1,2",
        "--out",
        x,
        "--chunk",
        "0"
    ])
    .contains("--chunk 0"));
    assert!(
        error(&["score", "--weights", w, "--ids", "1,600", "--out", x])
            .contains("token id 600 at position 1 is out of range")
    );
    assert!(error(&[
        "score",
        "--weights",
        w,
        "--ids",
        "1,2",
        "--out",
        "/nonexistent/x.npy"
    ])
    .contains("cannot create"));
}

/// `--share-kv` and `--indexer-reuse` run on the CPU backend (the logits move once a CSA
/// query's top-k no longer covers every entry), are refused in one line on the CUDA backend,
/// and `upper` is refused before anything loads.
#[test]
fn sharing_policies_run_on_the_cpu_and_are_refused_elsewhere() {
    let r = reference("hca16");
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = id_list(&r["ids"]);
    let weights = fixture("hca16");
    let weights = weights.to_str().expect("utf-8");
    let score = |name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{name}.npy"));
        let path = out.to_str().expect("utf-8");
        let mut args = vec!["score", "--weights", weights, "--ids", &ids, "--out", path];
        args.extend_from_slice(extra);
        let status = dsv4(&args);
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        read_npy_f32(&out).expect("npy").data
    };
    let plain = score("plain", &[]);
    let cla = score("cla", &["--share-kv", "2"]);
    let reuse = score("reuse", &["--indexer-reuse", "2"]);
    assert_ne!(cla, plain);
    assert_ne!(reuse, plain);
    assert!(cla.iter().chain(&reuse).all(|v| v.is_finite()));
    for (extra, says) in [
        (["--device", "cuda-sim"], "run on --device cpu only"),
        (["--share-kv-direction", "upper"], "only `lower` (causal)"),
    ] {
        let mut args = vec!["run", "--weights", weights, "--prompt-ids", "1,2"];
        args.extend(["--share-kv", "2"]);
        args.extend(extra);
        let e = error(&args);
        assert!(e.contains(says), "{e}");
    }
}

/// A thinking-mode request keeps every layer's cache: with `--share-kv` it says the policy is
/// not applied and generates the tokens it generates without the flag.
#[test]
fn thinking_mode_requests_ignore_the_sharing_policy() {
    let chat = [
        "--chat",
        "Who begat Enos?",
        "--thinking",
        "--max-new-tokens",
        "12",
    ];
    let (plain, _) = run_json(&chat);
    let (shared, stderr) = run_json(&[&chat[..], &["--share-kv", "2"]].concat());
    assert!(
        stderr.contains("not applied to thinking-mode requests"),
        "{stderr}"
    );
    assert_eq!(shared["generated_ids"], plain["generated_ids"]);
    // Without thinking mode the policy applies, and this prompt is long enough to show it.
    let ids: Vec<String> = (0..120).map(|i| (3 + i * 7 % 2000).to_string()).collect();
    let ids = ids.join(",");
    let (a, _) = run_json(&["--prompt-ids", &ids, "--max-new-tokens", "12"]);
    let (b, _) = run_json(&[
        "--prompt-ids",
        &ids,
        "--max-new-tokens",
        "12",
        "--share-kv",
        "2",
    ]);
    assert_ne!(a["generated_ids"], b["generated_ids"]);
}
