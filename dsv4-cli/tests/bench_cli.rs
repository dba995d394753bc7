//! `dsv4 bench` end to end on a parity fixture: the JSON report is self-consistent (effective
//! bandwidth = bytes per token × decode tok/s, ratio = effective / median triad, median ≤ best)
//! and names the instruction set its kernels use; bad flags give one-line errors.

mod common;

use std::path::Path;

use common::{dsv4_with_env, error};
use serde_json::Value;

/// What this CPU should run the kernels with, detected here.
fn expected_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            return "AVX-512";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "AVX2+FMA";
        }
    }
    "portable"
}

/// `dsv4 bench --json` on the parity fixture with `vars` set.
fn bench_report(vars: &[(&str, &str)]) -> Value {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/parity/fixtures/hca16");
    let weights = fixture.to_str().expect("utf-8 path");
    let args = [
        "bench",
        "--weights",
        weights,
        "--prompt-len",
        "8",
        "--gen",
        "4",
        "--threads",
        "2",
        "--json",
    ];
    let out = dsv4_with_env(&args, vars);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn bench_reports_consistent_figures() {
    let r = bench_report(&[]);
    assert_eq!(r["cpu_kernels"], expected_kernels(), "{r}");
    let f = |key: &str| r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
    assert_eq!(f("threads"), 2.0);
    assert_eq!(f("prompt_tokens"), 8.0);
    assert_eq!(
        f("decode_tokens"),
        3.0,
        "the first decode step is a warm-up"
    );
    assert!(f("prefill_tokens_per_s") > 0.0 && f("decode_tokens_per_s") > 0.0);
    let effective = f("weight_bytes_per_token") * f("decode_tokens_per_s") / 1e9;
    assert!((f("effective_bandwidth_gb_per_s") - effective).abs() <= 1e-9 * effective);
    let median = f("measured_memory_bandwidth_gb_per_s");
    assert!(median > 0.0 && median <= f("best_memory_bandwidth_gb_per_s"));
    let ratio = effective / median;
    assert!((f("bandwidth_ratio") - ratio).abs() <= 1e-9 * ratio);
    // The portable kernels, when asked for.
    let r = bench_report(&[("DSV4_NO_SIMD", "1")]);
    assert_eq!(r["cpu_kernels"], "portable", "{r}");
}

#[test]
fn bad_bench_flags_are_one_line_errors() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/parity/fixtures/hca16");
    let weights = fixture.to_str().expect("utf-8 path");
    let e = error(&["bench", "--weights", weights, "--gen", "1"]);
    assert!(e.contains("--gen at least 2"), "{e}");
    let e = error(&["bench", "--weights", weights, "--prefill-chunk", "0"]);
    assert!(e.contains("--prefill-chunk 0: expected at least 1"), "{e}");
    let e = error(&["bench", "--weights", weights, "--threads", "5000"]);
    assert!(e.contains("--threads 5000: at most 1024"), "{e}");
    let e = error(&["bench", "--weights", weights, "--device", "cuda"]);
    assert!(e.starts_with("error: --device cuda: "), "{e}");
    let e = error(&["bench", "--weights", "/nonexistent/checkpoint"]);
    assert!(e.contains("/nonexistent/checkpoint"), "{e}");
}
