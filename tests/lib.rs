//! Cross-crate integration tests of dsv4; the tests live beside this file and are listed in
//! `Cargo.toml`. Helpers they share live here.

use std::path::{Path, PathBuf};

use dsv4_cache::{CacheDtypes, IndexerCacheDtype, KvCacheDtype, DEFAULT_BLOCK_SIZE};
use dsv4_runtime::engine::sampler::SamplingParams;
use dsv4_runtime::{Backend, CpuBackend, LoadedCheckpoint, Model, Numerics};
use serde_json::Value;

/// The settings the decode-step tests run: exact numerics with f32 caches and greedy sampling,
/// and reference numerics with the compact caches (FP8 entries, FP4 indexer keys) and a seeded
/// top-k/top-p draw.
pub fn decode_settings() -> [(Numerics, CacheDtypes, SamplingParams); 2] {
    let exact = CacheDtypes {
        kv: KvCacheDtype::F32,
        indexer: IndexerCacheDtype::F32,
    };
    let compact = CacheDtypes {
        kv: KvCacheDtype::Fp8,
        indexer: IndexerCacheDtype::Fp4,
    };
    let seeded = SamplingParams {
        temperature: 0.9,
        top_k: 20,
        top_p: 0.9,
        seed: 5,
    };
    [
        (Numerics::Exact, exact, SamplingParams::greedy()),
        (Numerics::Reference, compact, seeded),
    ]
}

/// Opens the checkpoint in `dir`, builds a model over it with `numerics` and cache `dtypes`,
/// and runs `f` with it (the model borrows the opened checkpoint, so it lives in here).
pub fn with_model<R>(
    dir: &Path,
    numerics: Numerics,
    dtypes: CacheDtypes,
    f: impl FnOnce(&Model) -> R,
) -> R {
    with_model_on(CpuBackend, dir, numerics, dtypes, f)
}

/// [`with_model`] on `backend`, the checkpoint loaded as the backend asks (packed for the CPU,
/// as stored for CUDA) and the weights uploaded there.
pub fn with_model_on<B: Backend, R>(
    backend: B,
    dir: &Path,
    numerics: Numerics,
    dtypes: CacheDtypes,
    f: impl FnOnce(&Model<B>) -> R,
) -> R {
    let loaded = LoadedCheckpoint::open_with_progress(dir, backend.linears(), |_, _| {})
        .expect("fixture loads");
    let weights = backend.upload(&loaded).expect("uploads");
    let model = Model::with_backend(
        backend,
        &loaded.config,
        weights,
        numerics,
        dtypes,
        DEFAULT_BLOCK_SIZE,
    )
    .expect("model");
    f(&model)
}

/// A parity fixture: a checkpoint made by make_fixtures.py, the ids it scored and
/// transformers' float32 logits of them.
pub struct Fixture {
    /// The checkpoint.
    pub dir: PathBuf,
    /// The scored ids.
    pub ids: Vec<u32>,
    /// Vocabulary size.
    pub vocab: usize,
    /// transformers' logits, `ids × vocab`.
    pub logits: Vec<f32>,
    /// The rest of reference.json (greedy continuations).
    pub reference: Value,
}

/// The committed fixture `name` (tests/parity/fixtures).
pub fn fixture(name: &str) -> Fixture {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("parity/fixtures")
        .join(name);
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference"),
    )
    .expect("json");
    let ids: Vec<u32> = reference["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    let vocab = reference["vocab_size"].as_u64().expect("vocab") as usize;
    let logits = std::fs::read(dir.join("logits.f32"))
        .expect("logits")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect::<Vec<_>>();
    assert_eq!(logits.len(), ids.len() * vocab);
    Fixture {
        dir,
        ids,
        vocab,
        logits,
        reference,
    }
}

/// The largest |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The argmax of a row (ties to the lower index) and its lead over the runner-up.
pub fn argmax_and_gap(row: &[f32]) -> (usize, f32) {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    (order[0], row[order[0]] - row[order[1]])
}

/// Bit-for-bit equality, naming the first position and logit that differ.
pub fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: logit {i} differs: {} against {}", got[i], want[i]);
    }
}
