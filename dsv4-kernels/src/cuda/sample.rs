//! Launchers of `csrc/sample.cu`: the next token from a row of logits on the device, so a
//! decode step copies back 4 bytes instead of the whole row.

use super::twins::{Check, Rng};
use super::{DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::sample::{SampleCut, SampleScratch, LEAF, MID};

/// The one block that samples a row of `vocab` logits: a thread per leaf of the canonical sum
/// (whose partial it adds up), in whole warps, at most 1024 (V4's 129 280 ids make 1010 leaves).
fn block(vocab: usize) -> LaunchConfig {
    let threads = vocab.div_ceil(LEAF).next_multiple_of(32).clamp(32, 1024);
    LaunchConfig::linear(1, threads as u32)
}

/// What the kernels write for a row without a candidate.
const NONE: u32 = u32::MAX;

/// Bytes of device scratch [`sample`] needs for a row of `vocab` logits: a weight per id and
/// the canonical sum's partials (a leaf's per [`LEAF`] ids, a mid's per [`MID`] leaves).
pub fn scratch_bytes(vocab: usize) -> usize {
    let leaves = vocab.div_ceil(LEAF);
    8 * (vocab + leaves + leaves.div_ceil(MID))
}

/// A row length as the kernels take it: ids below `u32::MAX`, which marks "no candidate".
fn vocab_dim(kernel: &str, vocab: usize) -> Result<u32, DeviceError> {
    match u32::try_from(vocab) {
        Ok(v) if v < NONE => Ok(v),
        _ => Err(DeviceError::Launch {
            kernel: kernel.to_owned(),
            message: format!("a row of {vocab} logits has ids past 32 bits"),
        }),
    }
}

/// The u32 at the start of `token` (written by a sampling kernel) as a token id; `None` for no
/// candidate.
pub fn read_token(token: &DeviceBuffer) -> Result<Option<u32>, DeviceError> {
    let mut bytes = [0u8; 4];
    token.read(&mut bytes)?;
    let id = u32::from_le_bytes(bytes);
    Ok((id != NONE).then_some(id))
}

/// `token` (one u32) ← the argmax of the `vocab` f32 logits at `logits`, lowest id on ties,
/// NaN never chosen, `u32::MAX` when none is above −∞: the twin of
/// [`crate::sample::sample_argmax`].
pub fn sample_argmax(
    gpu: &Gpu,
    logits: DevicePtr,
    vocab: usize,
    token: DevicePtr,
) -> Result<(), DeviceError> {
    let v = vocab_dim("sample_argmax", vocab)?;
    // SAFETY: the kernel reads `vocab` f32 at `logits` and writes one u32 at `token`.
    unsafe { gpu.launch("sample_argmax", block(vocab), &[&logits, &v, &token]) }
}

/// `token` (one u32) ← the token the draw `u ∈ [0, 1)` picks from the `vocab` f32 logits at
/// `logits` under `cut`, `u32::MAX` when none is a candidate: the twin of
/// [`crate::sample::sample`]. `scratch` holds [`scratch_bytes`]`(vocab)` bytes.
pub fn sample(
    gpu: &Gpu,
    logits: DevicePtr,
    vocab: usize,
    cut: &SampleCut,
    u: f64,
    scratch: DevicePtr,
    token: DevicePtr,
) -> Result<(), DeviceError> {
    let v = vocab_dim("sample", vocab)?;
    // A top-k past 32 bits keeps everything, as any top-k at or above the candidates does.
    let top_k = u32::try_from(cut.top_k).unwrap_or(u32::MAX);
    let partials = scratch.offset(8 * vocab);
    // SAFETY: the kernel reads `vocab` f32 at `logits`, uses the `scratch_bytes(vocab)` bytes
    // at `scratch` (weights, then partials) and writes one u32 at `token`.
    unsafe {
        gpu.launch(
            "sample",
            block(vocab),
            &[
                &logits,
                &v,
                &cut.temperature,
                &top_k,
                &cut.top_p,
                &u,
                &scratch,
                &partials,
                &token,
            ],
        )
    }
}

/// One row through a sampling kernel on the device, as its twin reports it: the id, or −1.
fn on_device(
    gpu: &Gpu,
    logits: &[f32],
    draw: Option<(&SampleCut, f64)>,
) -> Result<f32, DeviceError> {
    let row = gpu.upload_f32(logits)?;
    let scratch = gpu.alloc(scratch_bytes(logits.len()).max(8))?;
    let token = gpu.alloc(4)?;
    match draw {
        None => sample_argmax(gpu, row.ptr(), logits.len(), token.ptr())?,
        Some((cut, u)) => sample(
            gpu,
            row.ptr(),
            logits.len(),
            cut,
            u,
            scratch.ptr(),
            token.ptr(),
        )?,
    }
    Ok(read_token(&token)?.map_or(-1.0, |id| id as f32))
}

/// A check that the device's ids equal the twin's, each id as a number (−1 for none).
fn ids_check(kernel: &'static str, shape: String, gpu: &[f32], cpu: &[Option<u32>]) -> Check {
    let cpu: Vec<f32> = cpu.iter().map(|t| t.map_or(-1.0, |id| id as f32)).collect();
    Check::new(kernel, shape, gpu, &cpu, 0.0)
}

/// Logits on a grid of 9 values, so ties are common.
fn tied(rng: &mut Rng, vocab: usize) -> Vec<f32> {
    (0..vocab)
        .map(|_| (rng.next_u64() % 9) as f32 * 0.5 - 2.0)
        .collect()
}

/// [`sample_argmax`] and [`sample`] against their twins: V4's vocabulary of 129 280 under each
/// kind of cut, ties at the top-k boundary, NaN, ±∞, rows without a candidate, rows that end at
/// a leaf and a mid boundary, and draws at the very top of `[0, 1)` (where rounding can carry
/// the walk past the last cumulative end). Tolerance 0: the same token.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();
    let top = 1.0 - f64::EPSILON / 2.0;
    // The full vocabulary is left out where the emulation is slowed by a sanitizer
    // (scripts/cuda-sim-asan.sh): the same code runs at 4097 ids, past a leaf and a mid.
    let full = std::env::var_os("DSV4_SIM_SANITIZED").is_none();
    let mut rows: Vec<(String, Vec<f32>)> = Vec::new();
    if full {
        rows.push(("V 129280 spread".into(), rng.values(129_280, 12.0)));
    }
    rows.extend([
        ("V 300 tied".into(), tied(rng, 300)),
        ("V 128 (one leaf)".into(), rng.values(128, 3.0)),
        ("V 4097 (past a mid)".into(), tied(rng, 4097)),
        ("V 1".into(), vec![0.25]),
    ]);
    let mut special = rng.values(1000, 2.0);
    special[3] = f32::NAN;
    special[10] = f32::NEG_INFINITY;
    special[999] = 30.0;
    special[500] = 30.0;
    rows.push(("V 1000 NaN, −∞, tied max".into(), special));
    rows.push((
        "V 6 +∞".into(),
        vec![1e30, f32::INFINITY, 3.0, f32::NAN, f32::INFINITY, -0.0],
    ));
    rows.push((
        "V 3 no candidate".into(),
        vec![f32::NAN, f32::NEG_INFINITY, f32::NAN],
    ));

    let cuts = [
        (1.0, 0, 1.0),
        (0.7, 50, 1.0),
        (1.0, 0, 0.9),
        (0.8, 40, 0.95),
        (1.3, 7, 0.5),
        (2.0, 1, 1.0),
        (0.5, 0, 1e-6),
    ];
    let mut scratch = SampleScratch::default();
    for (name, logits) in &rows {
        let gpu_id = on_device(gpu, logits, None)?;
        let cpu_id = crate::sample::sample_argmax(logits);
        checks.push(ids_check(
            "sample_argmax",
            name.clone(),
            &[gpu_id],
            &[cpu_id],
        ));
        let (mut gpu_ids, mut cpu_ids) = (Vec::new(), Vec::new());
        for &(temperature, top_k, top_p) in &cuts {
            let cut = SampleCut {
                temperature,
                top_k,
                top_p,
            };
            // The full vocabulary is slow on cuda-sim (128 passes for a top-p): two draws.
            let draws = if logits.len() > 10_000 {
                vec![unit(rng), top]
            } else {
                vec![unit(rng), unit(rng), top, 0.0]
            };
            for u in draws {
                gpu_ids.push(on_device(gpu, logits, Some((&cut, u)))?);
                cpu_ids.push(crate::sample::sample(logits, &cut, u, &mut scratch));
            }
        }
        let shape = format!(
            "{name}, {} cuts × {} draws",
            cuts.len(),
            gpu_ids.len() / cuts.len()
        );
        checks.push(ids_check("sample", shape, &gpu_ids, &cpu_ids));
    }
    Ok(checks)
}

/// A uniform draw in `[0, 1)` from the top 53 bits, as the runtime's sampler makes them.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}
