//! `dsv4 plan` end to end: the numbers the issue names, the inverse memory question, and one-line
//! errors for bad input.

mod common;

use common::{dsv4, error};

use serde_json::Value;

const GIB: f64 = (1u64 << 30) as f64;

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = dsv4(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn flash_at_one_million_tokens_in_bf16() {
    let v = json(&["plan", "--preset", "flash", "--context", "1048576"]);
    assert_eq!(v["bytes_per_token"], 6880.0);
    assert_eq!(v["paged_bytes"].as_f64().expect("number") / GIB, 6.71875);
    let v32 = &v["comparisons"][0];
    assert_eq!(v32["name"], "v32_dense_mla_bf16");
    assert_eq!(v32["bytes_per_token"], 85_888);
    assert_eq!(v32["total_bytes"].as_f64().expect("number") / GIB, 83.875);
    let layers = v["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 43);
    assert_eq!(layers[2]["kind"], "CSA");
    assert_eq!(layers[2]["bytes_per_token"], 320.0);
    assert_eq!(layers[3]["kind"], "HCA");
    assert_eq!(layers[3]["bytes_per_token"], 8.0);
    assert_eq!(v["pools"].as_array().map(Vec::len), Some(3));
    let total = v["total_bytes"].as_u64().expect("total");
    let fixed = v["fixed_bytes_per_request"].as_u64().expect("fixed");
    assert_eq!(total, 6880 * (1 << 20) + fixed);
}

#[test]
fn compact_dtypes_and_pro() {
    let flash = json(&[
        "plan",
        "--preset",
        "flash",
        "--kv-cache-dtype",
        "fp8",
        "--indexer-cache-dtype",
        "fp4",
    ]);
    assert_eq!(flash["bytes_per_token"], 3514.25);
    assert_eq!(flash["context"], 1_048_576);
    let pro = json(&["plan", "--preset", "pro"]);
    assert_eq!(pro["bytes_per_token"], 9848.0);
    let pro8 = json(&[
        "plan",
        "--preset",
        "pro",
        "--kv-cache-dtype",
        "fp8",
        "--indexer-cache-dtype",
        "fp4",
    ]);
    assert_eq!(pro8["bytes_per_token"], 5031.4375);
}

fn total_at(context: u64, batch: u64) -> u64 {
    let (c, b) = (context.to_string(), batch.to_string());
    json(&["plan", "--preset", "flash", "--context", &c, "--batch", &b])["total_bytes"]
        .as_u64()
        .expect("total")
}

#[test]
fn memory_question_is_consistent_with_forward_plans() {
    let budget = 5u64 << 30;
    let v = json(&["plan", "--preset", "flash", "--memory", "5GiB", "--kv-only"]);
    let context = v["fit"]["max_context"].as_u64().expect("max_context");
    assert_eq!(v["fit"]["available_bytes"], budget);
    assert_eq!(v["context"], context);
    assert!(total_at(context, 1) <= budget);
    assert!(total_at(context + 1, 1) > budget);

    let v = json(&[
        "plan",
        "--preset",
        "flash",
        "--memory",
        "80GiB",
        "--kv-only",
        "--context",
        "1048576",
    ]);
    let batch = v["fit"]["max_batch"].as_u64().expect("max_batch");
    assert!(total_at(1 << 20, batch) <= 80 << 30);
    assert!(total_at(1 << 20, batch + 1) > 80 << 30);

    let v = json(&[
        "plan",
        "--preset",
        "flash",
        "--memory",
        "80GiB",
        "--kv-only",
    ]);
    assert_eq!(v["fit"]["max_context"], 1_048_576);
    assert_eq!(v["fit"]["limited_by"], "max_position_embeddings");
}

#[test]
fn memory_counts_the_weights_unless_told_otherwise() {
    // Flash's release weights are about 148.7 GiB, so they fit 192 GiB and not 80 GiB.
    let v = json(&["plan", "--preset", "flash", "--memory", "192GiB"]);
    let weights = v["fit"]["weight_bytes"].as_f64().expect("weights") / GIB;
    assert!((148.0..149.5).contains(&weights), "{weights}");
    assert_eq!(v["fit"]["max_context"], 1_048_576);
    let message = error(&["plan", "--preset", "flash", "--memory", "80GiB"]);
    assert!(
        message.starts_with("error: the weights alone take "),
        "{message}"
    );
    assert!(message.contains("--kv-only"), "{message}");
}

#[test]
fn human_output_names_units() {
    let out = dsv4(&["plan", "--preset", "tiny"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("growth per token      104 B/token"), "{text}");
    assert!(text.contains("total KV cache"), "{text}");
    assert!(
        text.contains("DeepSeek-V3.2-shaped dense MLA cache, bf16"),
        "{text}"
    );
}

#[test]
fn config_and_weights_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    std::fs::write(&config, include_str!("../../dsv4-model/presets/tiny.json")).expect("write");
    let by_file = json(&[
        "plan",
        "--config",
        config.to_str().expect("utf8"),
        "--context",
        "4096",
    ]);
    let by_dir = json(&[
        "plan",
        "--weights",
        dir.path().to_str().expect("utf8"),
        "--context",
        "4096",
    ]);
    let by_preset = json(&["plan", "--preset", "tiny", "--context", "4096"]);
    assert_eq!(by_file["total_bytes"], by_preset["total_bytes"]);
    assert_eq!(by_dir["total_bytes"], by_preset["total_bytes"]);
}

#[test]
fn bad_input_gets_one_line_errors() {
    assert_eq!(
        error(&["plan", "--preset", "huge"]),
        "error: invalid value 'huge' for '--preset <NAME>': unknown preset `huge`: expected one of flash, pro, tiny, small"
    );
    assert_eq!(
        error(&["plan", "--preset", "flash", "--block-size", "100"]),
        "error: block size 100 is not a positive multiple of compress ratio 128 (layer 3)"
    );
    assert_eq!(
        error(&["plan", "--preset", "flash", "--context", "2000000"]),
        "error: context 2000000 exceeds the model's max_position_embeddings = 1048576"
    );
    assert!(error(&["plan", "--preset", "flash", "--memory", "80XB"])
        .contains("invalid byte size `80XB`"));
    assert!(
        error(&["plan", "--preset", "flash", "--kv-cache-dtype", "fp16"])
            .contains("unknown KV cache dtype `fp16`")
    );
    assert!(error(&["plan", "--preset", "flash", "--context", "many"]).contains("'--context <N>'"));
    assert!(error(&["plan"]).contains("required"));
    assert!(
        error(&["plan", "--preset", "flash", "--batch", "0"]).ends_with("batch must be at least 1")
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.json");
    let message = error(&["plan", "--config", missing.to_str().expect("utf8")]);
    assert!(
        message.contains("nope.json") && message.contains("cannot read"),
        "{message}"
    );
    let bad = dir.path().join("config.json");
    let text = include_str!("../../dsv4-model/presets/tiny.json")
        .replace("\"o_groups\": 2", "\"o_groups\": 3");
    std::fs::write(&bad, text).expect("write");
    let message = error(&["plan", "--weights", dir.path().to_str().expect("utf8")]);
    assert!(
        message.ends_with(
            "config field `o_groups` = 3: expected a divisor of num_attention_heads = 4"
        ),
        "{message}"
    );
}

/// Sizes that would wrap 64 bits are refused, wherever the large number comes from: the batch,
/// the block size, the headroom, or the memory question's search.
#[test]
fn sizes_beyond_64_bits_are_refused_not_wrapped() {
    assert_eq!(
        error(&["plan", "--preset", "flash", "--batch", "4294967296"]),
        "error: the cache of 4294967296 request(s) of 1048576 tokens would exceed 2^64 bytes"
    );
    assert_eq!(
        error(&[
            "plan",
            "--preset",
            "flash",
            "--batch",
            &usize::MAX.to_string()
        ]),
        format!(
            "error: the cache of {} request(s) of 1048576 tokens would exceed 2^64 bytes",
            usize::MAX
        )
    );
    for block in [
        "9223372036854775808",
        "18446744073709551600",
        "1099511627776",
    ] {
        assert_eq!(
            error(&["plan", "--preset", "flash", "--block-size", block]),
            format!("error: block size {block} is above the largest supported, 1048576 tokens")
        );
    }
    assert!(error(&[
        "plan",
        "--preset",
        "pro",
        "--headroom",
        "4294967295",
        "--batch",
        "100000000"
    ])
    .ends_with("would exceed 2^64 bytes"));
    // The memory question over a huge memory: the answer is bounded by the model, not wrapped.
    let v = json(&[
        "plan",
        "--preset",
        "flash",
        "--memory",
        "16000000TiB",
        "--kv-only",
    ]);
    assert_eq!(v["context"], 1_048_576);
    assert_eq!(v["fit"]["limited_by"], "max_position_embeddings");
    let v = json(&[
        "plan",
        "--preset",
        "flash",
        "--memory",
        "16000000TiB",
        "--context",
        "1048576",
    ]);
    let batch = v["batch"].as_u64().expect("batch");
    let total = v["total_bytes"].as_u64().expect("total");
    // 16,000,000 TiB over the 7,231,614,976 bytes one request of 2^20 tokens takes (hand-checked
    // from the flash plan above), less the weights.
    assert!(
        batch > 2_000_000_000 && total <= 16_000_000u64 << 40,
        "{batch} {total}"
    );
    // Where the plan fits but a dense comparison would not, the comparison says so.
    let v = json(&["plan", "--preset", "flash", "--batch", "2000000000"]);
    assert!(v["comparisons"][0]["total_bytes"].is_null());
    assert!(v["total_bytes"].as_u64().is_some());
}

#[test]
fn help_and_version() {
    let out = dsv4(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("dsv4 "));
    let out = dsv4(&["plan", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--kv-cache-dtype"));
}

/// The sharing policies priced as derived by hand for V4-Flash (dsv4-cache/tests/sharing.rs has
/// the derivations): CLA groups of 2 store 11 of 21 CSA and 10 of 20 HCA layers, indexer reuse
/// 2 keeps keys in 11 CSA layers; `--compare` lists every strategy; `upper` is refused.
#[test]
fn sharing_policies_and_the_comparison() {
    let cla = json(&["plan", "--preset", "flash", "--share-kv", "2"]);
    assert_eq!(cla["bytes_per_token"], 3600.0);
    assert_eq!(cla["sharing"]["kv_groups"][1], serde_json::json!([2, 4]));
    assert_eq!(cla["sharing"]["unshared_bytes_per_token"], 6880.0);
    let compact = json(&[
        "plan",
        "--preset",
        "flash",
        "--share-kv",
        "2",
        "--kv-cache-dtype",
        "fp8",
        "--indexer-cache-dtype",
        "fp4",
    ]);
    assert_eq!(compact["bytes_per_token"], 1838.625);
    let reuse = json(&["plan", "--preset", "flash", "--indexer-reuse", "2"]);
    assert_eq!(reuse["bytes_per_token"], 6240.0);
    assert!(json(&["plan", "--preset", "flash"])["sharing"].is_null());

    let v = json(&[
        "plan",
        "--preset",
        "flash",
        "--context",
        "1048576",
        "--batch",
        "4",
        "--compare",
        "--shared-prefix",
        "524288",
    ]);
    let rows = v["strategies"].as_array().expect("strategies");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in [
        "dsv4_paged",
        "dsv4_contiguous",
        "dsv4_bf16",
        "dsv4_fp8",
        "dsv4_fp8_fp4",
        "cla_2",
        "indexer_reuse_2",
        "indexer_reuse_4",
        "shared_prefix",
        "v32_dense_mla_bf16",
        "v32_dense_mla_fp8",
        "full_attention",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for r in rows {
        for key in [
            "bytes_per_token",
            "fixed_bytes_per_request",
            "total_bytes",
            "ratio_to_default",
        ] {
            assert!(r[key].is_number(), "{key} of {r}");
        }
    }
    assert_eq!(rows[0]["total_bytes"], v["total_bytes"]);
    assert_eq!(rows[0]["ratio_to_default"], 1.0);

    let e = error(&[
        "plan",
        "--preset",
        "flash",
        "--share-kv",
        "2",
        "--share-kv-direction",
        "upper",
    ]);
    assert!(e.contains("only `lower` (causal)"), "{e}");
    let e = error(&["plan", "--preset", "flash", "--share-kv", "1"]);
    assert!(e.contains("at least 2 layers"), "{e}");
}
