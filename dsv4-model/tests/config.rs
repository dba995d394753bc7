//! Config parsing: the shipped values, the transformers spelling, and one test per class of bad
//! config, each with the exact one-line error a user sees.

use dsv4_model::{
    AttentionKind, ConfigError, LayerSchedule, MlpKind, ModelConfig, Preset, RopeKind,
};
use serde_json::{json, Value};

fn flash_json() -> Value {
    serde_json::from_str(Preset::Flash.config_json()).expect("preset is JSON")
}

fn error_of(value: Value) -> String {
    let err = ModelConfig::from_json(&value).expect_err("config should be rejected");
    let text = err.to_string();
    assert!(!text.contains('\n'), "error spans lines: {text}");
    text
}

fn with(mut value: Value, key: &str, new: Value) -> Value {
    value[key] = new;
    value
}

fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().expect("object").remove(key);
    value
}

#[test]
fn flash_preset_carries_the_shipped_values() {
    let c = Preset::Flash.config();
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads
        ),
        (129280, 4096, 43, 64)
    );
    assert_eq!(
        (c.head_dim, c.qk_rope_head_dim, c.q_lora_rank),
        (512, 64, 1024)
    );
    assert_eq!(
        (c.o_groups, c.o_lora_rank, c.sliding_window),
        (8, 1024, 128)
    );
    assert_eq!(c.compress_ratios.len(), 44);
    assert_eq!((c.rope_theta, c.compress_rope_theta), (10000.0, 160000.0));
    let yarn = c.rope_scaling.as_ref().expect("yarn");
    assert_eq!(
        (
            yarn.factor,
            yarn.original_max_position_embeddings,
            yarn.beta_fast,
            yarn.beta_slow
        ),
        (16.0, 65536, 32.0, 1.0)
    );
    assert_eq!(
        (c.index_n_heads, c.index_head_dim, c.index_topk),
        (64, 128, 512)
    );
    assert_eq!((c.hc_mult, c.hc_sinkhorn_iters, c.hc_eps), (4, 20, 1e-6));
    assert_eq!(
        (
            c.n_routed_experts,
            c.num_experts_per_tok,
            c.moe_intermediate_size
        ),
        (256, 6, 2048)
    );
    assert_eq!(
        (c.num_hash_layers, c.routed_scaling_factor, c.swiglu_limit),
        (3, 1.5, 10.0)
    );
    assert_eq!(c.max_position_embeddings, 1_048_576);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(0), vec![1])
    );
}

#[test]
fn pro_preset_carries_the_shipped_values() {
    let c = Preset::Pro.config();
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
        (7168, 61, 128)
    );
    assert_eq!((c.q_lora_rank, c.o_groups, c.index_topk), (1536, 16, 1024));
    assert_eq!((c.n_routed_experts, c.moe_intermediate_size), (384, 3072));
    assert_eq!(c.routed_scaling_factor, 2.5);
    assert_eq!(c.compress_ratios.len(), 62);
}

fn indices(schedule: &LayerSchedule, label: &str) -> Vec<usize> {
    schedule
        .layers
        .iter()
        .filter(|l| l.attention.label() == label)
        .map(|l| l.index)
        .collect()
}

#[test]
fn flash_schedule_is_swa_swa_then_csa_even_hca_odd() {
    let s = LayerSchedule::new(&Preset::Flash.config());
    assert_eq!(indices(&s, "SWA"), vec![0, 1]);
    assert_eq!(indices(&s, "CSA"), (2..=42).step_by(2).collect::<Vec<_>>());
    assert_eq!(indices(&s, "HCA"), (3..=41).step_by(2).collect::<Vec<_>>());
    assert_eq!(s.layers[3].attention, AttentionKind::Hca { ratio: 128 });
    assert_eq!(s.layers[0].rope, RopeKind::Main);
    assert_eq!(s.layers[2].rope, RopeKind::Compress);
    let hash: Vec<usize> = s
        .layers
        .iter()
        .filter(|l| l.mlp == MlpKind::Hash)
        .map(|l| l.index)
        .collect();
    assert_eq!(hash, vec![0, 1, 2]);
    assert_eq!(s.mtp.len(), 1);
    assert_eq!(s.mtp[0].index, 43);
    assert_eq!(s.mtp[0].attention, AttentionKind::Window);
    assert_eq!(s.mtp[0].mlp, MlpKind::Routed);
}

#[test]
fn pro_schedule_is_hca_hca_then_csa_even_hca_odd() {
    let s = LayerSchedule::new(&Preset::Pro.config());
    assert!(indices(&s, "SWA").is_empty());
    assert_eq!(indices(&s, "CSA"), (2..=60).step_by(2).collect::<Vec<_>>());
    let mut hca = vec![0, 1];
    hca.extend((3..=59).step_by(2));
    assert_eq!(indices(&s, "HCA"), hca);
}

#[test]
fn tiny_preset_covers_every_layer_kind() {
    let s = LayerSchedule::new(&Preset::Tiny.config());
    let kinds: Vec<AttentionKind> = s.layers.iter().map(|l| l.attention).collect();
    assert!(kinds.contains(&AttentionKind::Window));
    assert!(kinds.contains(&AttentionKind::Csa { ratio: 4 }));
    assert!(kinds.iter().any(|k| matches!(k, AttentionKind::Hca { .. })));
    assert!(s.layers.iter().any(|l| l.mlp == MlpKind::Hash));
    assert!(s.layers.iter().any(|l| l.mlp == MlpKind::Routed));
    assert!(Preset::Tiny.config().hc_mult > 1);
}

#[test]
fn schedules_match_snapshots() {
    for preset in [Preset::Flash, Preset::Pro, Preset::Tiny] {
        let schedule = LayerSchedule::new(&preset.config());
        let compact: Vec<String> = schedule
            .layers
            .iter()
            .chain(&schedule.mtp)
            .map(|l| {
                format!(
                    "{:>2} {} m={} rope={:?} mlp={:?}",
                    l.index,
                    l.attention.label(),
                    l.attention.ratio().unwrap_or(0),
                    l.rope,
                    l.mlp
                )
            })
            .collect();
        insta::assert_snapshot!(format!("schedule_{}", preset.name()), compact.join("\n"));
    }
}

#[test]
fn compress_ratios_are_sliced_to_the_decoder_and_mtp_takes_the_rest() {
    let config = ModelConfig::from_json(&with(
        with(
            flash_json(),
            "compress_ratios",
            json!([0, 0, 4, 128, 4, 0, 0, 0]),
        ),
        "num_hidden_layers",
        json!(5),
    ))
    .expect("valid");
    assert_eq!(config.decoder_ratios(), &[0, 0, 4, 128, 4]);
    assert_eq!(config.mtp_ratio(0), 0);
    assert_eq!(config.mtp_ratio(5), 0);
}

/// The Flash config as transformers writes it: `layer_types`, `mlp_layer_types`,
/// `partial_rotary_factor`, `rope_parameters`, and the attribute aliases.
fn flash_transformers_json() -> Value {
    let mut v = flash_json();
    let native = Preset::Flash.config();
    let layer_types: Vec<&str> = native
        .decoder_ratios()
        .iter()
        .map(|r| match r {
            0 => "sliding_attention",
            4 => "compressed_sparse_attention",
            _ => "heavily_compressed_attention",
        })
        .collect();
    let mlp_types: Vec<&str> = (0..43)
        .map(|i| if i < 3 { "hash_moe" } else { "moe" })
        .collect();
    for key in [
        "compress_ratios",
        "num_hash_layers",
        "qk_rope_head_dim",
        "rope_theta",
        "compress_rope_theta",
        "rope_scaling",
        "n_routed_experts",
        "moe_intermediate_size",
    ] {
        v = without(v, key);
    }
    v["layer_types"] = json!(layer_types);
    v["compress_rates"] =
        json!({"compressed_sparse_attention": 4, "heavily_compressed_attention": 128});
    v["mlp_layer_types"] = json!(mlp_types);
    v["partial_rotary_factor"] = json!(0.125);
    v["num_local_experts"] = json!(256);
    v["intermediate_size"] = json!(2048);
    v["rope_parameters"] = json!({
        "main": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.125},
        "compress": {"rope_type": "yarn", "rope_theta": 160000.0, "factor": 16.0,
                     "original_max_position_embeddings": 65536, "beta_fast": 32.0, "beta_slow": 1.0,
                     "partial_rotary_factor": 0.125, "attention_factor": 1.0}
    });
    v["eos_token_id"] = json!([1]);
    v
}

#[test]
fn transformers_spelling_gives_the_same_model() {
    let native = Preset::Flash.config();
    let hf = ModelConfig::from_json(&flash_transformers_json()).expect("valid");
    assert_eq!(
        LayerSchedule::new(&hf).layers,
        LayerSchedule::new(&native).layers
    );
    // transformers drops the MTP entry of compress_ratios; everything else is identical.
    let mut expected = native.clone();
    expected.compress_ratios.truncate(43);
    assert_eq!(hf, expected);
}

#[test]
fn unknown_keys_are_ignored() {
    let config = ModelConfig::from_json(&with(flash_json(), "dspark_block_size", json!(16)));
    assert!(config.is_ok());
}

#[test]
fn rejects_text_that_is_not_json() {
    let err = ModelConfig::from_json_str("{\"vocab_size\": 12,").unwrap_err();
    assert!(matches!(err, ConfigError::Json(_)));
    assert!(err.to_string().starts_with("config is not valid JSON: "));
}

#[test]
fn rejects_a_missing_field() {
    assert_eq!(
        error_of(without(flash_json(), "hidden_size")),
        "config field `hidden_size` is missing"
    );
    assert_eq!(
        error_of(without(flash_json(), "compress_ratios")),
        "config field `compress_ratios` is missing"
    );
}

#[test]
fn rejects_a_wrong_type() {
    assert_eq!(
        error_of(with(flash_json(), "hidden_size", json!("4096"))),
        "config field `hidden_size` = \"4096\": expected a non-negative integer"
    );
    assert_eq!(
        error_of(with(flash_json(), "compress_ratios", json!([0, "4"]))),
        "config field `compress_ratios` = [0,\"4\"]: expected an array of non-negative integers"
    );
    let mut nested = flash_json();
    nested["rope_scaling"]["factor"] = json!("sixteen");
    assert_eq!(
        error_of(nested),
        "config field `rope_scaling.factor` = \"sixteen\": expected a finite number"
    );
    assert_eq!(
        error_of(with(flash_json(), "norm_topk_prob", json!(1))),
        "config field `norm_topk_prob` = 1: expected true or false"
    );
    assert_eq!(
        error_of(json!([1, 2])),
        "config field `config` = [1,2]: expected a JSON object"
    );
}

#[test]
fn rejects_out_of_range_values() {
    assert_eq!(
        error_of(with(flash_json(), "num_attention_heads", json!(0))),
        "config field `num_attention_heads` = 0: expected a positive integer at most 1024 (the engine's bound, far above any released model)"
    );
    assert_eq!(
        error_of(with(flash_json(), "num_key_value_heads", json!(8))),
        "config field `num_key_value_heads` = 8: expected 1 (V4 shares one K=V head across all query heads)"
    );
    assert_eq!(
        error_of(with(flash_json(), "qk_rope_head_dim", json!(63))),
        "config field `qk_rope_head_dim` = 63: expected an even number below head_dim = 512 (rotary pairs on the trailing dims)"
    );
    assert_eq!(
        error_of(with(flash_json(), "index_head_dim", json!(96))),
        "config field `index_head_dim` = 96: expected a power of two (the indexer's Hadamard rotation needs one)"
    );
    assert_eq!(
        error_of(with(flash_json(), "rms_norm_eps", json!(-1e-6))),
        "config field `rms_norm_eps` = -0.000001: expected a positive number"
    );
    assert_eq!(
        error_of(with(flash_json(), "scoring_func", json!("softmax"))),
        "config field `scoring_func` = \"softmax\": expected \"sqrtsoftplus\" (the only router V4 uses)"
    );
    assert_eq!(
        error_of(with(flash_json(), "eos_token_id", json!(129280))),
        "config field `eos_token_id` = 129280: expected a token id below vocab_size = 129280"
    );
    let mut quant = flash_json();
    quant["quantization_config"]["weight_block_size"] = json!([64, 64]);
    assert_eq!(
        error_of(quant),
        "config field `quantization_config.weight_block_size` = [64, 64]: expected [128, 128] (the only block shape V4 ships)"
    );
}

#[test]
fn rejects_inconsistent_fields() {
    assert_eq!(
        error_of(with(flash_json(), "o_groups", json!(7))),
        "config field `o_groups` = 7: expected a divisor of num_attention_heads = 64"
    );
    assert_eq!(
        error_of(with(flash_json(), "num_experts_per_tok", json!(300))),
        "config field `num_experts_per_tok` = 300: expected at most n_routed_experts = 256"
    );
    assert_eq!(
        error_of(with(flash_json(), "num_hidden_layers", json!(50))),
        "config field `compress_ratios` = [0,0,4,128,4,128,4,128,4,128,4,128,4,...: expected at least num_hidden_layers = 50 entries, one per decoder layer"
    );
    let mut hf = flash_transformers_json();
    hf["qk_rope_head_dim"] = json!(32);
    assert_eq!(
        error_of(hf),
        "config field `partial_rotary_factor` = 0.125: expected qk_rope_head_dim / head_dim = 32/512, as qk_rope_head_dim says"
    );
    let mut both = flash_transformers_json();
    both["compress_ratios"] = json!(vec![4; 44]);
    assert_eq!(
        error_of(both),
        "config field `layer_types` = [\"sliding_attention\",\"sliding_attenti...: expected the schedule that compress_ratios gives (the two fields disagree)"
    );
    let mut hash = flash_transformers_json();
    hash["num_hash_layers"] = json!(2);
    assert_eq!(
        error_of(hash),
        "config field `num_hash_layers` = 2: expected 3, the count of hash_moe entries in mlp_layer_types"
    );
}

/// Every integer field, set far beyond any real model, is refused by name before anything is
/// sized from it (values of the kinds that crashed or wrapped: 2^64 - 1, 2^63, 2^40, 2^31, 10^8, 10^9).
#[test]
fn rejects_oversized_values_of_every_integer_field() {
    let base = flash_json();
    let keys: Vec<String> = base
        .as_object()
        .expect("the preset is an object")
        .iter()
        // RoPE bases are real numbers that the preset happens to write as integers.
        .filter(|(k, v)| v.is_u64() && !k.ends_with("rope_theta"))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(keys.len() >= 25, "{keys:?}");
    for key in &keys {
        for huge in [
            u64::MAX,
            1 << 63,
            1 << 40,
            1 << 31,
            1_000_000_000,
            100_000_000,
        ] {
            let config = with(base.clone(), key, json!(huge));
            assert!(
                ModelConfig::from_json(&config).is_err(),
                "{key} = {huge} was accepted"
            );
            let message = error_of(config);
            assert!(
                message.contains(&format!("`{key}`")) || message.contains("`rope_scaling"),
                "{key} = {huge}: {message}"
            );
        }
    }
    let mut nested = flash_json();
    nested["rope_scaling"]["original_max_position_embeddings"] = json!(1u64 << 40);
    assert!(error_of(nested).contains("`rope_scaling.original_max_position_embeddings` = 1099511627776: expected a positive integer at most 67108864"));
    let ratios = with(flash_json(), "compress_ratios", json!(vec![1u64 << 40; 44]));
    assert!(error_of(ratios).contains("ratios of at most 4096"));
    let many = with(flash_json(), "n_routed_experts", json!(10_000));
    assert_eq!(
        error_of(many),
        "config field `n_routed_experts` = 10000: expected at most 5957 with 44 decoder and MTP layers (layers x experts at most 262144, the engine's bound, far above any released model)"
    );
    let long = with(flash_json(), "compress_ratios", json!(vec![0; 100_000]));
    assert_eq!(
        error_of(long),
        "config field `compress_ratios` = 100000 entries: expected at most num_hidden_layers + 16 = 59 entries"
    );
}

/// The bounds sit far above the released models: eight times Pro's largest values still pass.
#[test]
fn accepts_values_well_beyond_the_released_models() {
    let mut big = flash_json();
    for (key, value) in [
        ("vocab_size", 8 * 129_280),
        ("hidden_size", 8 * 7168),
        ("num_attention_heads", 8 * 128),
        ("head_dim", 8 * 512),
        ("sliding_window", 8 * 128),
        ("max_position_embeddings", 8 << 20),
        ("index_topk", 8 * 1024),
        ("n_routed_experts", 8 * 384),
        ("moe_intermediate_size", 8 * 3072),
        ("hc_sinkhorn_iters", 8 * 20),
        ("num_nextn_predict_layers", 8),
    ] {
        big = with(big, key, json!(value));
    }
    assert!(dsv4_model::ModelConfig::from_json(&big).is_ok());
}
