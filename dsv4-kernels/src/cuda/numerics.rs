//! Launchers of `csrc/numerics.cu`: the reference numerics' simulations (docs/model.md §3.4,
//! §3.5), row by row as [`crate::numerics::Numerics`] applies them on the CPU.

use super::twins::{Check, Rng};
use super::{dim, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::quant::{ACT_BLOCK, FP4_BLOCK, KV_FP8_BLOCK};

/// Threads per block of the warp-per-scale-block kernels (8 warps).
const THREADS: u32 = 256;
/// Widest row [`hadamard`] takes: its row lives in 32 KiB of shared memory.
pub const HADAMARD_MAX: usize = 8192;

/// A launch refused before it started.
fn refused(kernel: &str, message: String) -> DeviceError {
    DeviceError::Launch {
        kernel: kernel.to_owned(),
        message,
    }
}

/// Blocks of [`THREADS`] for one warp per scale block of `block_len` over `rows` rows whose
/// first `prefix` values are quantized.
fn warp_blocks(
    kernel: &str,
    rows: usize,
    prefix: usize,
    block_len: usize,
) -> Result<u32, DeviceError> {
    let warps = rows
        .checked_mul(prefix.div_ceil(block_len))
        .ok_or_else(|| refused(kernel, format!("{rows} rows of {prefix} overflow")))?;
    dim(warps.div_ceil((THREADS / 32) as usize))
}

/// FP8 activation quantization (UE8M0 scale per 128 values, E4M3), in place on `rows` rows of
/// `n` f32 at `x`: the twin of [`crate::quant::act_quant_fp8`] applied to each row.
pub fn act_quant_fp8(gpu: &Gpu, x: DevicePtr, rows: usize, n: usize) -> Result<(), DeviceError> {
    let blocks = warp_blocks("act_quant_fp8", rows, n, ACT_BLOCK)?;
    if blocks == 0 {
        return Ok(());
    }
    let config = LaunchConfig::linear(blocks, THREADS);
    // SAFETY: the kernel touches `rows × n` f32 at `x`, which the caller's buffer holds.
    unsafe { gpu.launch("act_quant_fp8", config, &[&x, &dim(rows)?, &dim(n)?]) }
}

/// The KV entry simulation, in place on `rows` entries of `width` f32 at `x`: the first `nope`
/// dims (clamped to `width`) through FP8 per 64, the rest untouched: the twin of
/// [`crate::quant::kv_fp8_sim`] on each entry.
pub fn kv_fp8_sim(
    gpu: &Gpu,
    x: DevicePtr,
    rows: usize,
    width: usize,
    nope: usize,
) -> Result<(), DeviceError> {
    let nope = nope.min(width);
    let blocks = warp_blocks("kv_fp8_sim", rows, nope, KV_FP8_BLOCK)?;
    if blocks == 0 {
        return Ok(());
    }
    let config = LaunchConfig::linear(blocks, THREADS);
    // SAFETY: the kernel touches the first `nope` of each of `rows` rows of `width` f32 at `x`.
    unsafe {
        gpu.launch(
            "kv_fp8_sim",
            config,
            &[&x, &dim(rows)?, &dim(width)?, &dim(nope)?],
        )
    }
}

/// The FP4 simulation (UE8M0 scale per 32 values, E2M1), in place on `rows` rows of `n` f32 at
/// `x`: the twin of [`crate::quant::fp4_sim`] on each row.
pub fn fp4_sim(gpu: &Gpu, x: DevicePtr, rows: usize, n: usize) -> Result<(), DeviceError> {
    let blocks = warp_blocks("fp4_sim", rows, n, FP4_BLOCK)?;
    if blocks == 0 {
        return Ok(());
    }
    let config = LaunchConfig::linear(blocks, THREADS);
    // SAFETY: the kernel touches `rows × n` f32 at `x`.
    unsafe { gpu.launch("fp4_sim", config, &[&x, &dim(rows)?, &dim(n)?]) }
}

/// The normalized Walsh–Hadamard transform, in place on `rows` rows of `n` f32 at `x`; `n` is a
/// power of two up to [`HADAMARD_MAX`]: the twin of [`crate::quant::hadamard`] on each row.
pub fn hadamard(gpu: &Gpu, x: DevicePtr, rows: usize, n: usize) -> Result<(), DeviceError> {
    if !n.is_power_of_two() || n > HADAMARD_MAX {
        return Err(refused(
            "hadamard",
            format!("width {n} is not a power of two up to {HADAMARD_MAX}"),
        ));
    }
    if rows == 0 {
        return Ok(());
    }
    // One thread per pair of a stage, in whole warps.
    let threads = (n / 2).clamp(32, THREADS as usize);
    let config = LaunchConfig {
        shared_bytes: dim(n * 4)?,
        ..LaunchConfig::linear(dim(rows)?, dim(threads)?)
    };
    // SAFETY: the kernel touches `rows × n` f32 at `x` and `n` floats of shared memory.
    unsafe { gpu.launch("hadamard", config, &[&x, &dim(n)?]) }
}

/// One FP8 block (`len` ≤ 128) of hand-picked values: exact ties between E4M3 neighbours
/// (normal and subnormal) at scale `2^k` (the block's amax is exactly `448·2^k`), then random.
fn e4m3_ties(rng: &mut Rng, k: i32, len: usize) -> Vec<f32> {
    let s = (k as f32).exp2();
    let mut v = vec![448.0 * s, -448.0 * s];
    for e in -6..=7 {
        for m in 0..8 {
            let tie = (1.0 + (2 * m + 1) as f32 / 16.0) * (e as f32).exp2() * s;
            v.push(if m % 2 == 0 { tie } else { -tie });
        }
    }
    v.extend((0..8).map(|m| (m as f32 + 0.5) * (-9f32).exp2() * s));
    v.extend(rng.values(len.saturating_sub(v.len()), 448.0 * s));
    v.truncate(len);
    v
}

/// One FP4 block (`len` ≤ 32): the E2M1 values and the ties between them at scale 1 (amax 6).
fn e2m1_ties(rng: &mut Rng, len: usize) -> Vec<f32> {
    let mut v = vec![6.0, -6.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];
    for tie in [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0f32] {
        v.extend([tie, -tie]);
    }
    v.extend(rng.values(len.saturating_sub(v.len()), 6.0));
    v.truncate(len);
    v
}

/// A row of blocks of `block` values with every edge case of the scale rule: an all-zero block
/// (signed zeros), exact ties, magnitudes far beyond the element format's range (saturation is
/// then the scale's job), subnormals, a NaN, an infinity; and a partial last block.
fn edge_row(rng: &mut Rng, block: usize, fp4: bool) -> Vec<f32> {
    let tiny = if fp4 {
        6.0 * f32::MIN_POSITIVE
    } else {
        f32::MIN_POSITIVE
    };
    let mut row = Vec::new();
    row.extend((0..block).map(|i| if i % 3 == 0 { -0.0 } else { 0.0 }));
    if fp4 {
        row.extend(e2m1_ties(rng, block));
        row.extend(e2m1_ties(rng, block).iter().map(|v| v * 2f32.powi(-20)));
    } else {
        row.extend(e4m3_ties(rng, 0, block));
        row.extend(e4m3_ties(rng, -5, block));
        row.extend(e4m3_ties(rng, 9, block));
    }
    let mut big = rng.values(block, 1e4);
    big[..5].copy_from_slice(&[1000.0, -5000.0, 1e6, 3e38, -f32::MAX]);
    row.extend(big);
    let mut small = rng.values(block, tiny);
    small[..3].copy_from_slice(&[f32::from_bits(1), -f32::from_bits(0x7f_ffff), tiny]);
    row.extend(small);
    let mut nan = rng.values(block, 3.0);
    nan[block / 2] = f32::NAN;
    row.extend(nan);
    let mut inf = rng.values(block, 3.0);
    inf[1] = f32::NEG_INFINITY;
    row.extend(inf);
    row.extend(rng.values(block / 2 + 3, 2.0));
    row
}

/// Random rows of `n` values around ±`scale`, with an outlier in every 97th value.
fn activations(rng: &mut Rng, rows: usize, n: usize, scale: f32) -> Vec<f32> {
    let mut x = rng.values(rows * n, scale);
    for v in x.iter_mut().step_by(97) {
        *v *= 300.0;
    }
    x
}

/// Runs `launch` on `x` uploaded and returns what it left.
fn on_device(
    gpu: &Gpu,
    x: &[f32],
    launch: impl FnOnce(DevicePtr) -> Result<(), DeviceError>,
) -> Result<Vec<f32>, DeviceError> {
    let buffer = gpu.upload_f32(x)?;
    launch(buffer.ptr())?;
    buffer.read_f32(x.len())
}

/// Every kernel of `numerics.cu` against its twin at V4-Flash's widths (D = 4096 activation rows,
/// 512-wide KV entries with 448 nope dims, 128-wide indexer vectors) and at edge shapes and
/// values. The quantizations and the Hadamard transform are the CPU's operations in the CPU's
/// order, so every tolerance is 0 (bit-exact values; NaN matches NaN).
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();

    let mut act_inputs: Vec<(String, usize, usize, Vec<f32>)> = vec![
        ("3×4096".into(), 3, 4096, activations(rng, 3, 4096, 3.0)),
        ("1×1024".into(), 1, 1024, activations(rng, 1, 1024, 0.01)),
        (
            "2×200 partial block".into(),
            2,
            200,
            activations(rng, 2, 200, 1.0),
        ),
        ("1×7".into(), 1, 7, rng.values(7, 5.0)),
    ];
    let edge = edge_row(rng, ACT_BLOCK, false);
    let n = edge.len();
    act_inputs.push((format!("1×{n} edge values"), 1, n, edge));
    for (shape, rows, n, x) in act_inputs {
        let gpu_out = on_device(gpu, &x, |p| act_quant_fp8(gpu, p, rows, n))?;
        let mut cpu = x;
        cpu.chunks_mut(n).for_each(crate::quant::act_quant_fp8);
        // Bit-exact: exact amax, the same scale byte, one E4M3 rounding.
        checks.push(Check::new("act_quant_fp8", shape, &gpu_out, &cpu, 0.0));
    }

    let kv_edge = edge_row(rng, KV_FP8_BLOCK, false);
    let kv_inputs: Vec<(String, usize, usize, usize, Vec<f32>)> = vec![
        (
            "3×512 nope 448".into(),
            3,
            512,
            448,
            activations(rng, 3, 512, 2.0),
        ),
        (
            "1×100 nope 70".into(),
            1,
            100,
            70,
            activations(rng, 1, 100, 1.0),
        ),
        ("2×50 nope ≥ width".into(), 2, 50, 64, rng.values(100, 4.0)),
        (
            format!("1×{} edge values nope 448", kv_edge.len()),
            1,
            kv_edge.len(),
            448,
            kv_edge,
        ),
    ];
    for (shape, rows, width, nope, x) in kv_inputs {
        let gpu_out = on_device(gpu, &x, |p| kv_fp8_sim(gpu, p, rows, width, nope))?;
        let mut cpu = x;
        cpu.chunks_mut(width)
            .for_each(|e| crate::quant::kv_fp8_sim(e, nope));
        // Bit-exact, as act_quant_fp8; the rotary dims come back untouched.
        checks.push(Check::new("kv_fp8_sim", shape, &gpu_out, &cpu, 0.0));
    }

    let fp4_edge = edge_row(rng, FP4_BLOCK, true);
    let fp4_inputs: Vec<(String, usize, usize, Vec<f32>)> = vec![
        ("192×128".into(), 192, 128, activations(rng, 192, 128, 1.0)),
        ("3×45 partial block".into(), 3, 45, rng.values(135, 8.0)),
        (
            format!("1×{} edge values", fp4_edge.len()),
            1,
            fp4_edge.len(),
            fp4_edge,
        ),
    ];
    for (shape, rows, n, x) in fp4_inputs {
        let gpu_out = on_device(gpu, &x, |p| fp4_sim(gpu, p, rows, n))?;
        let mut cpu = x;
        cpu.chunks_mut(n).for_each(crate::quant::fp4_sim);
        // Bit-exact: exact amax, the same scale byte, one E2M1 rounding.
        checks.push(Check::new("fp4_sim", shape, &gpu_out, &cpu, 0.0));
    }

    for (rows, n) in [(192, 128), (2, 4096), (3, 1), (2, 2), (5, 32)] {
        let x = activations(rng, rows, n, 2.0);
        let gpu_out = on_device(gpu, &x, |p| hadamard(gpu, p, rows, n))?;
        let mut cpu = x;
        for row in cpu.chunks_mut(n) {
            // The width is a power of two: the CPU transform cannot refuse it.
            let _ = crate::quant::hadamard(row);
        }
        // Bit-exact: the same butterflies in the same stage order, then the same f32 factor.
        checks.push(Check::new(
            "hadamard",
            format!("{rows}×{n}"),
            &gpu_out,
            &cpu,
            0.0,
        ));
    }

    // The indexer's reference simulation of 3 tokens' 64 query heads of 128 (docs/model.md §3.5):
    // hadamard then fp4_sim, against `Numerics::indexer_vector`.
    let (rows, n) = (3 * 64, 128);
    let x = activations(rng, rows, n, 1.5);
    let gpu_out = on_device(gpu, &x, |p| {
        hadamard(gpu, p, rows, n)?;
        fp4_sim(gpu, p, rows, n)
    })?;
    let mut cpu = x;
    cpu.chunks_mut(n)
        .for_each(|v| crate::numerics::Numerics::Reference.indexer_vector(v));
    // Bit-exact, as each kernel alone.
    checks.push(Check::new(
        "fp4_sim",
        format!("{rows}×{n} after hadamard (indexer_vector)"),
        &gpu_out,
        &cpu,
        0.0,
    ));
    Ok(checks)
}
