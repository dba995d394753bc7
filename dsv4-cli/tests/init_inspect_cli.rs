//! `dsv4 init` then `dsv4 inspect` on the result, as a user would run them, and the refusals of
//! both on bad input.

mod common;

use common::{dsv4, error};
use serde_json::Value;

#[test]
fn init_tiny_then_inspect_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("tiny");
    let out = out.to_str().expect("utf-8");
    let init = dsv4(&["init", "--preset", "tiny", "--out", out, "--seed", "9"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(dir.path().join("tiny").join(file).is_file(), "{file}");
    }
    let inspect = dsv4(&["inspect", "--weights", out, "--json"]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: Value = serde_json::from_slice(&inspect.stdout).expect("JSON");
    assert_eq!(v["problems"], Value::Array(Vec::new()));
    assert_eq!(v["has_mtp"], true);
    assert_eq!(v["formats"]["dense"], "fp8_block");
    assert_eq!(v["formats"]["experts"], "fp4_group");
    assert_eq!(
        v["layers"].as_array().map(Vec::len),
        Some(5),
        "4 decoder layers and the MTP stage"
    );
    // Parameters of the tiny preset as its manifest counts them (checked against hand counts
    // for the real presets in dsv4-model's accounting tests).
    assert!(v["total_params"].as_u64().expect("params") > 16_000_000);
    assert_eq!(
        v["weight_bytes"].as_u64().expect("bytes"),
        v["dtypes"]
            .as_object()
            .expect("dtypes")
            .values()
            .map(|d| d["bytes"].as_u64().expect("bytes"))
            .sum::<u64>()
    );
    let human = dsv4(&["inspect", "--weights", out]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("problems: none"), "{text}");
    assert!(text.contains("routed experts: FP4 E2M1"), "{text}");

    // Same seed, same bytes.
    let again = dir.path().join("again");
    let again = again.to_str().expect("utf-8");
    assert!(
        dsv4(&["init", "--preset", "tiny", "--out", again, "--seed", "9"])
            .status
            .success()
    );
    let a = std::fs::read(dir.path().join("tiny/model.safetensors")).expect("read");
    let b = std::fs::read(dir.path().join("again/model.safetensors")).expect("read");
    assert!(a == b, "init is deterministic for a seed");

    // Init never overwrites; inspect reports a broken checkpoint and fails.
    assert!(error(&["init", "--preset", "tiny", "--out", out]).contains("is not empty"));
    let model = dir.path().join("tiny/model.safetensors");
    let bytes = std::fs::read(&model).expect("read");
    std::fs::write(&model, &bytes[..bytes.len() - 100]).expect("truncate");
    let broken = dsv4(&["inspect", "--weights", out]);
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("problem(s) found"), "{stderr}");
    assert!(String::from_utf8_lossy(&broken.stdout).contains("truncated file or lying header"));
}

#[test]
fn init_refuses_the_release_presets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8");
    assert!(
        error(&["init", "--preset", "flash", "--out", out]).contains("init writes tiny or small")
    );
}
