//! The bodies of the fuzz targets, one plain function per target and no libFuzzer types, so
//! that both the cargo-fuzz entry points (`fuzz/fuzz_targets/*.rs`) and the stable replay test
//! (`tests/fuzz_replay.rs`) include this file and run exactly the same code.
//!
//! Each function must return normally on every input: it calls a parser, ignores whether the
//! input was accepted, and asserts only what the parser promises about what it accepts.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Most command-line words taken from one input.
const MAX_ARGS: usize = 32;

/// Whether a message fits on one line.
fn one_line(message: &str) -> bool {
    !message.contains('\n') && !message.contains('\r')
}

/// `config`: the input as `config.json` text, through `ModelConfig::from_json_str`.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match dsv4_model::ModelConfig::from_json_str(&text) {
        Ok(config) => {
            assert!((1..=1024).contains(&config.num_hidden_layers));
            assert!((1..=1 << 26).contains(&config.max_position_embeddings));
            assert!(config.compress_ratios.len() >= config.num_hidden_layers);
            assert!(config.compress_ratios.len() <= config.num_hidden_layers + 16);
            assert!(config.num_nextn_predict_layers <= 16);
            assert!(config.qk_rope_head_dim < config.head_dim);
            assert!(config.num_experts_per_tok <= config.n_routed_experts);
            assert!(config.num_hash_layers <= config.num_hidden_layers);
            assert!(config
                .eos_token_ids
                .iter()
                .all(|&id| id < config.vocab_size));
            assert!(config.bos_token_id.is_none_or(|id| id < config.vocab_size));
            // What the engine derives first from an accepted config must not panic either.
            let schedule = dsv4_model::LayerSchedule::new(&config);
            assert_eq!(schedule.layers.len(), config.num_hidden_layers);
            assert_eq!(schedule.mtp.len(), config.num_nextn_predict_layers);
            let manifest = dsv4_model::Manifest::release(&config);
            let _ = dsv4_model::ParamReport::new(&config, &manifest);
            cache_budget(&config);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(one_line(&message), "config error spans lines: {message:?}");
        }
    }
}

/// The KV-cache schema of an accepted config, at a block size every ratio divides, and the
/// budget of one request at the longest context (an overflow is an error, never a panic).
fn cache_budget(config: &dsv4_model::ModelConfig) {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let block = config
        .compress_ratios
        .iter()
        .filter(|&&r| r > 0)
        .try_fold(1usize, |acc, &r| acc.checked_mul(r / gcd(acc, r)))
        .filter(|&b| b <= dsv4_cache::MAX_BLOCK_SIZE)
        .unwrap_or(dsv4_cache::DEFAULT_BLOCK_SIZE);
    let dtypes = dsv4_cache::CacheDtypes::default();
    if let Ok(schema) = dsv4_cache::ModelCacheSchema::new(config, dtypes, block) {
        let _ = schema.bytes_per_token();
        let _ = schema.fixed_bytes_per_request();
        let context = config.max_position_embeddings;
        let _ = dsv4_cache::BlockBudget::new(&schema, context, 1, 10);
        let _ = dsv4_cache::BlockBudget::new(&schema, context, usize::MAX, 10);
    }
}

/// `safetensors_header`: the input as a whole safetensors file, through `parse_header`.
pub fn safetensors_header(data: &[u8]) {
    let Ok(entries) = dsv4_model::parse_header(data) else {
        return;
    };
    for (_name, entry) in entries {
        let Ok((dtype, shape, range)) = entry else {
            continue;
        };
        // An accepted entry's bytes lie inside the file, after the header, and match its shape.
        let header_end = 8 + u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
        assert!(range.start >= header_end && range.start <= range.end);
        assert!(data.get(range.clone()).is_some());
        let elements: u64 = shape.iter().map(|&d| d as u64).product();
        assert_eq!(elements * dtype.size(), range.len() as u64);
    }
}

/// Builds a safetensors file holding zeroed tensors of the given dtypes and shapes.
pub fn safetensors_file(tensors: &[(&str, &str, &[usize])], metadata: &[(&str, &str)]) -> Vec<u8> {
    let size = |dtype: &str| match dtype {
        "F32" | "I32" => 4,
        "BF16" | "F16" => 2,
        "I64" => 8,
        _ => 1,
    };
    let mut header = String::from("{");
    if !metadata.is_empty() {
        let pairs: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("\"{k}\":\"{v}\""))
            .collect();
        header.push_str(&format!("\"__metadata__\":{{{}}}", pairs.join(",")));
    }
    let mut offset = 0usize;
    for (name, dtype, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * size(dtype);
        if header.len() > 1 {
            header.push(',');
        }
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            dims.join(","),
            offset + bytes
        ));
        offset += bytes;
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.resize(file.len() + offset, 0);
    file
}

/// The shard the `safetensors_index` inputs name: a few plain tensors and one transformers
/// fused expert tensor (split into per-expert views on open).
pub const SHARD_NAME: &str = "model-00001-of-00001.safetensors";

fn shard_bytes() -> Vec<u8> {
    safetensors_file(
        &[
            ("model.embed_tokens.weight", "BF16", &[8, 4]),
            (
                "model.layers.0.self_attn.q_a_proj.weight",
                "F8_E4M3",
                &[4, 4],
            ),
            (
                "model.layers.0.self_attn.q_a_proj.weight_scale_inv",
                "F8_E8M0",
                &[1, 1],
            ),
            (
                "model.layers.0.mlp.experts.gate_up_proj",
                "BF16",
                &[2, 4, 2],
            ),
            ("model.layers.0.mlp.experts.down_proj", "BF16", &[2, 2, 2]),
            ("model.norm.weight", "F32", &[4]),
            ("model.layers.0.mlp.gate.tid2eid", "I32", &[8, 2]),
        ],
        &[("format", "pt")],
    )
}

/// A directory made once per process, with a lock serialising the inputs written into it.
struct Scratch {
    dir: tempfile::TempDir,
    lock: Mutex<()>,
}

fn scratch(cell: &'static OnceLock<Scratch>, prepare: fn(&Path)) -> &'static Scratch {
    cell.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("dsv4-fuzz-")
            .tempdir()
            .expect("a temporary directory");
        prepare(dir.path());
        Scratch {
            dir,
            lock: Mutex::new(()),
        }
    })
}

/// `safetensors_index`: the input as index text through `parse_index`, then written as
/// `model.safetensors.index.json` beside one valid shard and opened with `Checkpoint::open`.
pub fn safetensors_index(data: &[u8]) {
    static DIR: OnceLock<Scratch> = OnceLock::new();
    let scratch = scratch(&DIR, |dir| {
        std::fs::write(dir.join(SHARD_NAME), shard_bytes()).expect("the shard is written");
    });
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dsv4_model::parse_index(text);
    }
    let _guard = scratch.lock.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch.dir.path();
    std::fs::write(dir.join(dsv4_model::INDEX_FILE), data).expect("the index is written");
    let checkpoint = match dsv4_model::Checkpoint::open(dir) {
        Ok(checkpoint) => checkpoint,
        Err(e) => {
            let message = e.to_string();
            assert!(one_line(&message), "open error spans lines: {message:?}");
            return;
        }
    };
    // Every tensor the checkpoint lets through is a sound view of the mapped shard.
    for name in checkpoint.names() {
        let view = checkpoint.tensor(name).expect("a listed tensor has a view");
        let elements: u64 = view.shape.iter().map(|&d| d as u64).product();
        assert_eq!(elements * view.dtype.size(), view.data.len() as u64);
    }
    assert!(checkpoint.file_names().all(|f| f == SHARD_NAME));
    for problem in &checkpoint.problems {
        let message = problem.to_string();
        assert!(one_line(&message), "problem spans lines: {message:?}");
    }
}

/// `tokenizer`: the input as `tokenizer.json` (no `tokenizer_config.json` beside it, so
/// DeepSeek-V4's BOS and EOS names are required), through `Tokenizer::from_file`; a tokenizer
/// that loads then encodes and decodes a short fixed text.
pub fn tokenizer(data: &[u8]) {
    static DIR: OnceLock<Scratch> = OnceLock::new();
    let scratch = scratch(&DIR, |_| {});
    let _guard = scratch.lock.lock().unwrap_or_else(|e| e.into_inner());
    let path: PathBuf = scratch.dir.path().join("tokenizer.json");
    std::fs::write(&path, data).expect("the tokenizer is written");
    let tokenizer = match dsv4_runtime::Tokenizer::from_file(&path) {
        Ok(tokenizer) => tokenizer,
        Err(e) => {
            let message = e.to_string();
            assert!(
                one_line(&message),
                "tokenizer error spans lines: {message:?}"
            );
            return;
        }
    };
    let vocab = tokenizer.vocab_size();
    for text in [
        "Hello, world! 12345",
        "<｜begin▁of▁sentence｜>hi<｜end▁of▁sentence｜> \u{e9}\u{1F600}\n\t",
        "",
    ] {
        if let Ok(ids) = tokenizer.encode(text) {
            let _ = tokenizer.decode(&ids);
        }
    }
    let _ = tokenizer.decode(&[tokenizer.bos_id(), tokenizer.eos_id()]);
    let _ = tokenizer.decode(&[u32::MAX, 0]);
    for id in [
        0,
        1,
        tokenizer.bos_id(),
        tokenizer.eos_id(),
        vocab as u32,
        u32::MAX,
    ] {
        let _ = tokenizer.check_id(id);
    }
    let _ = tokenizer.check_fits(129_280);
}

/// `cli_numbers`: the input through the CLI's byte-size and id-list parsers, and as the words
/// of a `dsv4` command line through clap (parsed only, never run).
pub fn cli_numbers(data: &[u8]) {
    use clap::Parser;

    let text = String::from_utf8_lossy(data);
    if let Err(e) = dsv4_cli::units::parse_bytes(&text) {
        assert!(one_line(&e), "byte-size error spans lines: {e:?}");
    }
    if let Err(e) = dsv4_cli::score::parse_ids(&text) {
        let message = e.to_string();
        assert!(one_line(&message), "id-list error spans lines: {message:?}");
    }
    // Words split on NUL when there is one (so a word may hold spaces), else on whitespace.
    let words: Vec<&[u8]> = if data.contains(&0) {
        data.split(|&b| b == 0).collect()
    } else {
        data.split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let mut args: Vec<OsString> = vec![OsString::from("dsv4")];
    for word in words.into_iter().take(MAX_ARGS) {
        let _ = dsv4_cli::units::parse_bytes(&String::from_utf8_lossy(word));
        args.push(os_string(word));
    }
    if let Err(e) = dsv4_cli::Cli::try_parse_from(args) {
        let _ = e.to_string();
    }
}

#[cfg(unix)]
fn os_string(bytes: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(bytes).to_os_string()
}

#[cfg(not(unix))]
fn os_string(bytes: &[u8]) -> OsString {
    OsString::from(String::from_utf8_lossy(bytes).into_owned())
}
