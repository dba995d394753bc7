//! A corpus of corrupted checkpoints, one defect each, with the exact problem a user is told.
//! Every case starts from a sound random `tiny` checkpoint and breaks one thing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dsv4_model::{check, write_random_checkpoint, Checkpoint, ModelConfig, Preset, INDEX_FILE};
use serde_json::{json, Value};

/// A fresh tiny checkpoint; `shard_bytes` small enough forces shards and an index.
fn tiny(shard_bytes: u64) -> (tempfile::TempDir, ModelConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Preset::Tiny.config();
    write_random_checkpoint(
        &config,
        Preset::Tiny.config_json(),
        dir.path(),
        7,
        shard_bytes,
    )
    .expect("init");
    (dir, config)
}

/// All problems found, rendered as users see them.
fn problems(dir: &Path, config: &ModelConfig) -> Vec<String> {
    let checkpoint = Checkpoint::open(dir).expect("opens");
    check(config, &checkpoint)
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A safetensors file split into its header (as JSON) and data section.
struct Parts {
    header: BTreeMap<String, Value>,
    data: Vec<u8>,
}

fn read_parts(path: &Path) -> Parts {
    let bytes = std::fs::read(path).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    Parts {
        header: serde_json::from_slice(&bytes[8..8 + n]).expect("header"),
        data: bytes[8 + n..].to_vec(),
    }
}

fn write_parts(path: &Path, parts: &Parts) {
    let header = serde_json::to_vec(&parts.header).expect("json");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&parts.data);
    std::fs::write(path, bytes).expect("write");
}

fn single(dir: &Path) -> PathBuf {
    dir.join("model.safetensors")
}

fn offsets(parts: &Parts, name: &str) -> (usize, usize) {
    let o = &parts.header[name]["data_offsets"];
    (
        o[0].as_u64().expect("begin") as usize,
        o[1].as_u64().expect("end") as usize,
    )
}

#[test]
fn a_sound_checkpoint_has_no_problems() {
    let (dir, config) = tiny(u64::MAX);
    assert_eq!(problems(dir.path(), &config), Vec::<String>::new());
    let (dir, config) = tiny(8 << 20);
    assert!(dir.path().join(INDEX_FILE).is_file());
    assert_eq!(problems(dir.path(), &config), Vec::<String>::new());
}

#[test]
fn missing_tensors_are_each_named() {
    let (dir, config) = tiny(u64::MAX);
    let path = single(dir.path());
    let mut parts = read_parts(&path);
    // Dropping an entry leaves its bytes unreferenced; the header still describes sound tensors.
    parts.header.remove("layers.2.attn.compressor.ape");
    parts.header.remove("norm.weight");
    write_parts(&path, &parts);
    assert_eq!(
        problems(dir.path(), &config),
        vec![
            "tensor `norm.weight`: missing",
            "tensor `layers.2.attn.compressor.ape`: missing",
        ]
    );
}

#[test]
fn wrong_shapes_and_dtypes_are_named() {
    let (dir, config) = tiny(u64::MAX);
    let path = single(dir.path());
    let mut parts = read_parts(&path);
    // Same bytes, other shape: [64, 64] FP8 weight declared [32, 128].
    parts
        .header
        .get_mut("layers.0.attn.wkv.weight")
        .expect("wkv")["shape"] = json!([32, 128]);
    // A BF16 norm re-declared F16 is still a plain float and passes; an F32 sink re-declared
    // I32 is not.
    parts
        .header
        .get_mut("layers.1.attn.q_norm.weight")
        .expect("q_norm")["dtype"] = json!("F16");
    parts
        .header
        .get_mut("layers.1.attn.attn_sink")
        .expect("sink")["dtype"] = json!("I32");
    write_parts(&path, &parts);
    assert_eq!(
        problems(dir.path(), &config),
        vec![
            "model.safetensors: tensor `layers.0.attn.wkv.weight`: shape [32, 128] where [64, 64] is expected",
            "model.safetensors: tensor `layers.1.attn.attn_sink`: dtype I32 where BF16, F16 or F32 is expected",
        ],
        "F16 norms are accepted as plain floats"
    );
}

#[test]
fn a_scale_grid_that_does_not_match_its_weight() {
    let (dir, config) = tiny(u64::MAX);
    let path = single(dir.path());
    let mut parts = read_parts(&path);
    // wq_b is [256, 32]: its grid is [2, 1]; claim [1, 2] instead.
    parts
        .header
        .get_mut("layers.0.attn.wq_b.scale")
        .expect("scale")["shape"] = json!([1, 2]);
    // An expert's FP4 scales are [32, 2] (64 inputs / 32); claim an FP8-style [1, 1] grid over
    // the first byte of the same region.
    let (begin, _) = offsets(&parts, "layers.1.ffn.experts.3.w1.scale");
    let entry = parts
        .header
        .get_mut("layers.1.ffn.experts.3.w1.scale")
        .expect("scale");
    entry["shape"] = json!([1, 1]);
    entry["data_offsets"] = json!([begin, begin + 1]);
    write_parts(&path, &parts);
    assert_eq!(
        problems(dir.path(), &config),
        vec![
            "model.safetensors: tensor `layers.0.attn.wq_b.scale`: shape [1, 2] where [2, 1] is expected",
            "model.safetensors: tensor `layers.1.ffn.experts.3.w1.scale`: shape [1, 1] where [32, 2] is expected",
        ]
    );
}

#[test]
fn nan_scale_bytes_are_rejected() {
    let (dir, config) = tiny(u64::MAX);
    let path = single(dir.path());
    let mut parts = read_parts(&path);
    let (begin, _) = offsets(&parts, "layers.3.ffn.experts.5.w2.scale");
    // w2 is [64, 32]: one scale per row; row 3 gets the NaN byte.
    parts.data[begin + 3] = 0xFF;
    let (begin, _) = offsets(&parts, "layers.1.attn.wo_b.scale");
    parts.data[begin] = 0xFF;
    write_parts(&path, &parts);
    assert_eq!(
        problems(dir.path(), &config),
        vec![
            "model.safetensors: tensor `layers.1.attn.wo_b.scale`: scale byte 0xFF (NaN) at [0, 0]",
            "model.safetensors: tensor `layers.3.ffn.experts.5.w2.scale`: scale byte 0xFF (NaN) at [3, 0]",
        ]
    );
}

#[test]
fn truncated_files_are_caught_per_tensor() {
    let (dir, config) = tiny(u64::MAX);
    let path = single(dir.path());
    let parts = read_parts(&path);
    let len = std::fs::metadata(&path).expect("stat").len();
    // Cut into the last tensor's bytes.
    let last = parts
        .header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .max_by_key(|(_, v)| v["data_offsets"][1].as_u64())
        .map(|(k, _)| k.clone())
        .expect("a tensor");
    let (begin, end) = offsets(&parts, &last);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(len - 10).expect("truncate");
    let data_len = parts.data.len() - 10;
    let found = problems(dir.path(), &config);
    assert_eq!(
        found[0],
        format!(
            "model.safetensors: tensor `{last}`: data offsets [{begin}, {end}) fall outside the {data_len} data bytes (truncated file or lying header)"
        )
    );
    assert_eq!(found[1], format!("tensor `{last}`: missing"));
    assert_eq!(found.len(), 2);

    // Cut into the header itself.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(100).expect("truncate");
    let header_len = u64::from_le_bytes(
        std::fs::read(&path).expect("read")[..8]
            .try_into()
            .expect("8"),
    );
    let found = problems(dir.path(), &config);
    assert_eq!(
        found[0],
        format!("model.safetensors: header claims {header_len} bytes but the file has 100 (truncated or not safetensors)")
    );
}

#[test]
fn headers_that_lie_about_offsets() {
    let (dir, config) = tiny(u64::MAX);
    let path = single(dir.path());
    let mut parts = read_parts(&path);
    // Offsets one byte short of what the shape needs.
    let (begin, end) = offsets(&parts, "hc_head_base");
    parts.header.get_mut("hc_head_base").expect("base")["data_offsets"] = json!([begin, end - 1]);
    // Offsets that overlap the previous tensor.
    let (b2, e2) = offsets(&parts, "hc_head_scale");
    let (b1, _) = offsets(&parts, "hc_head_fn");
    parts.header.get_mut("hc_head_scale").expect("scale")["data_offsets"] =
        json!([b1, b1 + (e2 - b2)]);
    write_parts(&path, &parts);
    let found = problems(dir.path(), &config);
    assert_eq!(
        found,
        vec![
            "model.safetensors: tensor `hc_head_base`: data offsets span 7 bytes but shape [2] of F32 needs 8".to_string(),
            "model.safetensors: tensor `hc_head_scale`: its bytes overlap tensor `hc_head_fn`".to_string(),
            "tensor `hc_head_base`: missing".to_string(),
        ]
    );
}

#[test]
fn shards_named_in_the_index_but_absent() {
    let (dir, config) = tiny(8 << 20);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(INDEX_FILE)).expect("index"))
            .expect("json");
    let shards: Vec<String> = {
        let mut s: Vec<String> = index["weight_map"]
            .as_object()
            .expect("map")
            .values()
            .map(|v| v.as_str().expect("file").to_string())
            .collect();
        s.sort();
        s.dedup();
        s
    };
    assert!(shards.len() >= 3, "{shards:?}");
    let gone = &shards[1];
    std::fs::remove_file(dir.path().join(gone)).expect("remove");
    let found = problems(dir.path(), &config);
    assert_eq!(
        found[0],
        format!("{gone}: named in {INDEX_FILE} but absent")
    );
    // Every tensor that lived there is then reported missing by name.
    let lost = index["weight_map"]
        .as_object()
        .expect("map")
        .iter()
        .filter(|(_, f)| f.as_str() == Some(gone.as_str()))
        .count();
    assert_eq!(found.len(), 1 + lost);
    assert!(found[1..].iter().all(|p| p.ends_with(": missing")));
}

#[test]
fn an_index_that_disagrees_with_its_shards() {
    let (dir, config) = tiny(8 << 20);
    let index_path = dir.path().join(INDEX_FILE);
    let mut index: Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).expect("index")).expect("json");
    let map = index["weight_map"].as_object_mut().expect("map");
    let file = map["norm.weight"].as_str().expect("file").to_string();
    map.insert("layers.9.attn.wq_a.weight".into(), json!(file.clone()));
    map.remove("norm.weight");
    std::fs::write(&index_path, serde_json::to_string(&index).expect("json")).expect("write");
    assert_eq!(
        problems(dir.path(), &config),
        vec![
            format!("{file}: tensor `layers.9.attn.wq_a.weight`: listed in {INDEX_FILE} but not in the file"),
            format!("{file}: tensor `norm.weight`: in the file but {INDEX_FILE} places it elsewhere or nowhere"),
            "tensor `norm.weight`: missing".to_string(),
        ]
    );
}

#[test]
fn expert_format_is_read_from_tensors_and_checked_against_the_config() {
    let (dir, _) = tiny(u64::MAX);
    let text = Preset::Tiny.config_json().replace(
        "\"num_nextn_predict_layers\": 1,",
        "\"num_nextn_predict_layers\": 1,\n  \"expert_dtype\": \"fp8\",",
    );
    let config = ModelConfig::from_json_str(&text).expect("valid");
    assert_eq!(
        problems(dir.path(), &config),
        vec!["tensor `layers.0.ffn.experts.0.w1.weight`: stored as fp4, but config.json declares expert_dtype fp8"]
    );
    let checkpoint = Checkpoint::open(dir.path()).expect("opens");
    let formats = check(&Preset::Tiny.config(), &checkpoint)
        .formats
        .expect("formats");
    assert_eq!(
        format!("{formats:?}"),
        "WeightFormats { dense: Fp8Block, experts: Fp4Group }"
    );
}

#[test]
fn no_weights_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Checkpoint::open(dir.path()).err().expect("no weights");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no model.safetensors or {INDEX_FILE}",
            dir.path().display()
        )
    );
    std::fs::write(dir.path().join("model.safetensors"), b"short").expect("write");
    let checkpoint = Checkpoint::open(dir.path()).expect("opens");
    assert_eq!(
        checkpoint.problems[0].to_string(),
        "model.safetensors: 5 bytes: too short for a safetensors header (truncated?)"
    );
}
