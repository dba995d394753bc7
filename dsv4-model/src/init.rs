//! Random-weight checkpoints in the exact release layout, for tests, demos and benchmarks: every
//! tensor of the manifest, FP8 linears with UE8M0 block scales, FP4 routed experts, sharded with
//! an index when large. Weights are scaled so activations keep a realistic range.

use crate::shown::shown_path;
use std::collections::BTreeMap;
use std::path::Path;

use dsv4_formats::formats::{
    e8m0_to_f32, f32_to_e2m1, f32_to_e4m3, fp4_pack, ue8m0_ceil, E2M1_MAX, E4M3_MAX, FP4_GROUP,
    FP8_BLOCK,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};
use crate::{DType, LinearFormat, Manifest, ModelConfig, TensorKind, TensorSpec};

/// Default largest shard: checkpoints above it are split with an index, as the release is.
pub const DEFAULT_SHARD_BYTES: u64 = 512 << 20;

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// The system's reason.
        reason: String,
    },
}

/// What `write_random_checkpoint` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSummary {
    /// Files written (shards, index, config).
    pub files: Vec<String>,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
}

/// Writes a random checkpoint of `config` in the release layout into `dir` (which must exist):
/// `config.json` (the given text), then `model.safetensors`, or shards plus
/// `model.safetensors.index.json` when larger than `max_shard_bytes`. The same seed writes the
/// same bytes whatever the thread count.
pub fn write_random_checkpoint(
    config: &ModelConfig,
    config_json: &str,
    dir: &Path,
    seed: u64,
    max_shard_bytes: u64,
) -> Result<InitSummary, InitError> {
    let manifest = Manifest::release(config);
    let shards = plan_shards(&manifest.tensors, max_shard_bytes);
    let mut files = Vec::new();
    write_file(&dir.join("config.json"), config_json.as_bytes())?;
    files.push("config.json".to_string());
    let mut weight_map = BTreeMap::new();
    let count = shards.len();
    for (i, shard) in shards.iter().enumerate() {
        let name = if count == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", i + 1)
        };
        let tensors: Vec<(&TensorSpec, Vec<u8>)> = shard
            .par_iter()
            .map(|&spec| (spec, random_tensor(config, spec, seed)))
            .collect();
        let views = tensors
            .iter()
            .map(|(spec, data)| {
                let view = TensorView::new(safetensors_dtype(spec.dtype), spec.shape.clone(), data)
                    .map_err(|e| write_error(&dir.join(&name), &e.to_string()))?;
                Ok((spec.name.clone(), view))
            })
            .collect::<Result<Vec<_>, InitError>>()?;
        let path = dir.join(&name);
        let bytes =
            safetensors::serialize(views, None).map_err(|e| write_error(&path, &e.to_string()))?;
        write_file(&path, &bytes)?;
        for (spec, _) in &tensors {
            weight_map.insert(spec.name.clone(), name.clone());
        }
        files.push(name);
    }
    let tensor_bytes = manifest.tensors.iter().map(TensorSpec::bytes).sum();
    if count > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": tensor_bytes},
            "weight_map": weight_map,
        });
        let text = serde_json::to_string_pretty(&index).unwrap_or_default();
        write_file(&dir.join(INDEX_FILE), text.as_bytes())?;
        files.push(INDEX_FILE.to_string());
    }
    Ok(InitSummary {
        files,
        tensors: manifest.tensors.len(),
        tensor_bytes,
    })
}

fn write_error(path: &Path, reason: &str) -> InitError {
    InitError::Write {
        path: shown_path(path),
        reason: reason.to_string(),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    std::fs::write(path, bytes).map_err(|e| write_error(path, &e.to_string()))
}

/// Groups tensors in manifest order into shards of at most `max` bytes (a larger tensor alone).
fn plan_shards(tensors: &[TensorSpec], max: u64) -> Vec<Vec<&TensorSpec>> {
    let mut shards: Vec<Vec<&TensorSpec>> = vec![Vec::new()];
    let mut size = 0;
    for spec in tensors {
        let bytes = spec.bytes();
        if size + bytes > max && size > 0 {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        if let Some(last) = shards.last_mut() {
            last.push(spec);
        }
    }
    shards
}

fn safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::Bf16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        DType::F32 => Dtype::F32,
        DType::F8E4M3 => Dtype::F8_E4M3,
        DType::F8E8M0 => Dtype::F8_E8M0,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
    }
}

/// A generator for one tensor, seeded from the checkpoint seed and the tensor's name.
fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    // FNV-1a of the name, mixed with the seed.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    ChaCha8Rng::seed_from_u64(hash ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `count` samples of N(mean, std²).
fn normal(rng: &mut ChaCha8Rng, count: usize, mean: f32, std: f32) -> Vec<f32> {
    match Normal::new(mean, std) {
        Ok(dist) => (0..count).map(|_| dist.sample(rng)).collect(),
        Err(_) => vec![mean; count],
    }
}

/// The stored bytes of one random tensor. Linears of shape `[out, in]` draw N(0, 1/in) so a
/// unit-RMS input gives a unit-RMS output (and the head unit-std logits); norms sit near 1.
fn random_tensor(config: &ModelConfig, spec: &TensorSpec, seed: u64) -> Vec<u8> {
    // Quantized linears and their scales come from the weight's generator, so a `.scale` tensor
    // is produced together with its `.weight`.
    let base = spec
        .name
        .strip_suffix(".weight")
        .or_else(|| spec.name.strip_suffix(".scale"))
        .unwrap_or(&spec.name);
    let mut rng = rng_for(seed, base);
    let elements = spec.elements() as usize;
    match (spec.linear, spec.kind) {
        (Some(linear), TensorKind::Fp8 | TensorKind::Fp4Packed | TensorKind::Scale) => {
            let (out, inp) = (linear.out, linear.inp);
            let w = normal(&mut rng, out * inp, 0.0, (inp as f32).recip().sqrt());
            let (q, scales) = match linear.format {
                LinearFormat::Fp4Group => quantize_fp4(&w, out, inp),
                _ => quantize_fp8(&w, out, inp),
            };
            if spec.kind == TensorKind::Scale {
                scales
            } else {
                q
            }
        }
        (_, TensorKind::Index) => {
            let (e, k) = (config.n_routed_experts, config.num_experts_per_tok);
            let mut ids = Vec::with_capacity(elements * 8);
            for _ in 0..config.vocab_size {
                let mut experts: Vec<i64> = (0..e as i64).collect();
                for slot in 0..k {
                    let pick = rng.random_range(slot..e);
                    experts.swap(slot, pick);
                    ids.extend_from_slice(&experts[slot].to_le_bytes());
                }
            }
            ids
        }
        _ => {
            let values = float_values(spec, &mut rng, elements);
            encode_float(&values, spec.dtype)
        }
    }
}

/// Values of a float tensor by its role.
fn float_values(spec: &TensorSpec, rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let name = spec.name.as_str();
    let last = name.rsplit('.').next().unwrap_or(name);
    if name.ends_with("norm.weight") {
        return normal(rng, n, 1.0, 0.05);
    }
    if name == "embed.weight" {
        return normal(rng, n, 0.0, 1.0);
    }
    if last.ends_with("_fn") {
        return normal(rng, n, 0.0, (spec.shape[1] as f32).recip().sqrt());
    }
    if last.ends_with("_base") {
        return normal(rng, n, 0.0, 0.5);
    }
    if last.ends_with("_scale") {
        return normal(rng, n, 1.0, 0.2);
    }
    match last {
        "attn_sink" => normal(rng, n, 0.0, 1.0),
        "ape" => normal(rng, n, 0.0, 0.5),
        "bias" => normal(rng, n, 0.0, 0.1),
        _ if spec.shape.len() == 2 => normal(rng, n, 0.0, (spec.shape[1] as f32).recip().sqrt()),
        _ => normal(rng, n, 0.0, 1.0),
    }
}

fn encode_float(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

/// FP8 E4M3 elements and a 128×128 grid of UE8M0 scales, each the power of two at or above the
/// block's amax / 448.
fn quantize_fp8(w: &[f32], out: usize, inp: usize) -> (Vec<u8>, Vec<u8>) {
    let (rows, cols) = (out.div_ceil(FP8_BLOCK), inp.div_ceil(FP8_BLOCK));
    let mut scales = vec![0u8; rows * cols];
    for (o, row) in w.chunks_exact(inp).enumerate() {
        for (c, block) in row.chunks(FP8_BLOCK).enumerate() {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = &mut scales[(o / FP8_BLOCK) * cols + c];
            *s = (*s).max(ue8m0_ceil(amax.max(1e-4) / E4M3_MAX));
        }
    }
    let mut q = Vec::with_capacity(w.len());
    for (o, row) in w.chunks_exact(inp).enumerate() {
        for (i, v) in row.iter().enumerate() {
            let scale = e8m0_to_f32(scales[(o / FP8_BLOCK) * cols + i / FP8_BLOCK]).unwrap_or(1.0);
            q.push(f32_to_e4m3(v / scale));
        }
    }
    (q, scales)
}

/// Packed FP4 E2M1 pairs (low nibble first) and one UE8M0 scale per 32 inputs.
fn quantize_fp4(w: &[f32], out: usize, inp: usize) -> (Vec<u8>, Vec<u8>) {
    let mut packed = Vec::with_capacity(out * inp / 2);
    let mut scales = Vec::with_capacity(out * inp / FP4_GROUP);
    for group in w.chunks_exact(FP4_GROUP) {
        let amax = group.iter().fold(0f32, |m, v| m.max(v.abs()));
        let byte = ue8m0_ceil(amax.max(1e-4) / E2M1_MAX);
        let scale = e8m0_to_f32(byte).unwrap_or(1.0);
        scales.push(byte);
        for pair in group.chunks_exact(2) {
            packed.push(fp4_pack(
                f32_to_e2m1(pair[0] / scale),
                f32_to_e2m1(pair[1] / scale),
            ));
        }
    }
    (packed, scales)
}
