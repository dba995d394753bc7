//! Launchers of `csrc/mhc.cu`: manifold-constrained hyper-connections (docs/model.md §4.2).
//!
//! Layouts on the device, all f32:
//! - the streams `x`: `T × n × D`, stream-major per token (stream 0's `D` values first);
//! - the mixes: `T × (2 + n)·n`, per token `pre` (`n`), then `post` (`n`), then `comb` (`n × n`,
//!   `comb[j·n + k]` the weight of old stream `j` in new stream `k`): the order of the rows of
//!   `hc_*_fn`, and of the runtime's `HcMix`;
//! - a sublayer's input `h` and output `y`: `T × D`.
//!
//! To update only tokens `first..` of a chunk (the last layer runs its sublayers for the last
//! token only), pass pointers offset to that token in `x`, `y` and the mixes.

use super::twins::{Check, Rng, StoredWeight};
use super::weights::{DeviceWeight, Format};
use super::{dim, DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::mhc;
use crate::ops::sigmoid;
use crate::panel::PackedWeights;
use crate::simd::dot_f32;

/// Threads per block of every mHC kernel.
const THREADS: u32 = 256;

/// The most streams the kernels take: `hc_mixes` runs its Sinkhorn with one thread per entry
/// of the `n × n` matrix, and `hc_post` keeps `n` old values per thread in shared memory.
pub const MAX_STREAMS: usize = 16;

/// Floats of one token's mixes: `n` pre, `n` post, `n²` comb.
pub fn mix_width(streams: usize) -> usize {
    (2 + streams) * streams
}

/// The config's fields the hyper-connections read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HcConfig {
    /// Streams n (`hc_mult`).
    pub streams: usize,
    /// Sinkhorn rounds (`hc_sinkhorn_iters`; the first row normalisation is the softmax).
    pub sinkhorn_iters: usize,
    /// Epsilon of the weights and the normalisations (`hc_eps`).
    pub hc_eps: f32,
    /// Epsilon of the RMS over all streams (`rms_norm_eps`).
    pub norm_eps: f32,
}

/// One hyper-connection's weights on the device: `φ` (`[rows, n·D]`, as stored), the bias per
/// row and the scales (3 for a sublayer: pre, post, comb; 1 for the head), f32.
#[derive(Debug, Clone, Copy)]
pub struct HcWeights<'a> {
    /// `hc_*_fn`.
    pub proj: &'a DeviceWeight,
    /// `hc_*_base`.
    pub base: &'a DeviceBuffer,
    /// `hc_*_scale`.
    pub scale: &'a DeviceBuffer,
}

fn invalid(kernel: &str, message: String) -> DeviceError {
    DeviceError::Launch {
        kernel: kernel.to_string(),
        message,
    }
}

/// Checks `w` is a hyper-connection of `rows` rows over `n·d` inputs with `scales` scales.
fn check_weights(
    kernel: &str,
    w: &HcWeights,
    rows: usize,
    inputs: usize,
    scales: usize,
) -> Result<(), DeviceError> {
    if w.proj.out != rows || w.proj.inp != inputs {
        return Err(invalid(
            kernel,
            format!(
                "projection is [{}, {}], not [{rows}, {inputs}]",
                w.proj.out, w.proj.inp
            ),
        ));
    }
    if w.base.len() < rows * 4 || w.scale.len() < scales * 4 {
        return Err(invalid(
            kernel,
            format!(
                "{} bias bytes and {} scale bytes for {rows} rows and {scales} scales",
                w.base.len(),
                w.scale.len()
            ),
        ));
    }
    Ok(())
}

fn check_streams(kernel: &str, n: usize, d: usize) -> Result<(), DeviceError> {
    if n == 0 || n > MAX_STREAMS || d == 0 {
        return Err(invalid(
            kernel,
            format!("{n} streams of width {d} (1 to {MAX_STREAMS} streams)"),
        ));
    }
    Ok(())
}

/// Blocks of [`THREADS`] covering `tokens × d` values, one per thread.
fn elementwise(kernel: &str, tokens: usize, d: usize) -> Result<u32, DeviceError> {
    let values = tokens
        .checked_mul(d)
        .ok_or_else(|| invalid(kernel, format!("{tokens} × {d} values")))?;
    dim(values.div_ceil(THREADS as usize))
}

/// The mixes of `tokens` tokens of streams `x` (`T × n × d`) into `mixes` (`T × (2+n)·n`): the
/// twin of the runtime's `HcMixes::compute` (RMS-scaled projection, sigmoids, Sinkhorn).
pub fn hc_mixes(
    gpu: &Gpu,
    x: DevicePtr,
    w: HcWeights,
    mixes: DevicePtr,
    tokens: usize,
    d: usize,
    c: HcConfig,
) -> Result<(), DeviceError> {
    let n = c.streams;
    check_streams("hc_mixes", n, d)?;
    let rows = mix_width(n);
    check_weights("hc_mixes", &w, rows, n * d, 3)?;
    if tokens == 0 {
        return Ok(());
    }
    let config = LaunchConfig {
        grid: [dim(tokens)?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: dim(rows * 4)?,
    };
    let weight = w.proj.params();
    let [format, scale_kind, data, scales] = weight.as_params();
    let (out, inp) = (dim(rows)?, dim(n * d)?);
    let (base, scale) = (w.base.ptr(), w.scale.ptr());
    let (n32, iters) = (dim(n)?, dim(c.sinkhorn_iters)?);
    // SAFETY: the kernel reads `tokens × n·d` floats at `x`, the weight as checked above,
    // `rows` biases and 3 scales, and writes `tokens × rows` floats at `mixes`; `n² ≤ THREADS`.
    unsafe {
        gpu.launch(
            "hc_mixes",
            config,
            &[
                &x,
                format,
                scale_kind,
                data,
                scales,
                &out,
                &inp,
                &base,
                &scale,
                &mixes,
                &n32,
                &iters,
                &c.hc_eps,
                &c.norm_eps,
            ],
        )
    }
}

/// The sublayer inputs `h[t] = Σᵢ preᵢ · x[t]ᵢ` (`T × d`) from the streams `x` and `mixes`: the
/// twin of [`crate::mhc::hc_pre`] (before the sublayer's RMSNorm, `rms_norm`).
pub fn hc_pre(
    gpu: &Gpu,
    h: DevicePtr,
    x: DevicePtr,
    mixes: DevicePtr,
    tokens: usize,
    n: usize,
    d: usize,
) -> Result<(), DeviceError> {
    check_streams("hc_pre", n, d)?;
    if tokens == 0 {
        return Ok(());
    }
    let config = LaunchConfig::linear(elementwise("hc_pre", tokens, d)?, THREADS);
    // SAFETY: the kernel reads `tokens × n × d` streams and `tokens` mixes, and writes
    // `tokens × d` floats at `h`.
    unsafe {
        gpu.launch(
            "hc_pre",
            config,
            &[&h, &x, &mixes, &dim(tokens)?, &dim(n)?, &dim(d)?],
        )
    }
}

/// The streams `x` (`T × n × d`) after a sublayer whose output is `y` (`T × d`), in place:
/// `x'ₖ = postₖ · y + Σⱼ comb[j, k] · xⱼ`, the twin of [`crate::mhc::hc_post`].
pub fn hc_post(
    gpu: &Gpu,
    x: DevicePtr,
    y: DevicePtr,
    mixes: DevicePtr,
    tokens: usize,
    n: usize,
    d: usize,
) -> Result<(), DeviceError> {
    check_streams("hc_post", n, d)?;
    if tokens == 0 {
        return Ok(());
    }
    let config = LaunchConfig {
        grid: [elementwise("hc_post", tokens, d)?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: dim(n * THREADS as usize * 4)?,
    };
    // SAFETY: the kernel reads `tokens × d` outputs and `tokens` mixes, and updates
    // `tokens × n × d` floats at `x`.
    unsafe {
        gpu.launch(
            "hc_post",
            config,
            &[&x, &y, &mixes, &dim(tokens)?, &dim(n)?, &dim(d)?],
        )
    }
}

/// The head's collapse of the streams `x` (`T × n × d`) into `out` (`T × d`):
/// `Σᵢ (sigmoid(α₀·μᵢ + bᵢ) + eps) · xᵢ` with the head's weights (`n` rows, 1 scale), the twin
/// of the runtime's `HcMixes::collapse`.
pub fn hc_collapse(
    gpu: &Gpu,
    out: DevicePtr,
    x: DevicePtr,
    w: HcWeights,
    tokens: usize,
    d: usize,
    c: HcConfig,
) -> Result<(), DeviceError> {
    let n = c.streams;
    check_streams("hc_collapse", n, d)?;
    check_weights("hc_collapse", &w, n, n * d, 1)?;
    if tokens == 0 {
        return Ok(());
    }
    let config = LaunchConfig {
        grid: [dim(tokens)?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: dim(n * 4)?,
    };
    let weight = w.proj.params();
    let [format, scale_kind, data, scales] = weight.as_params();
    let (rows, inp) = (dim(n)?, dim(n * d)?);
    let (base, scale) = (w.base.ptr(), w.scale.ptr());
    // SAFETY: the kernel reads `tokens × n·d` floats at `x`, the weight as checked above, `n`
    // biases and 1 scale, and writes `tokens × d` floats at `out`.
    unsafe {
        gpu.launch(
            "hc_collapse",
            config,
            &[
                &out,
                &x,
                format,
                scale_kind,
                data,
                scales,
                &rows,
                &inp,
                &base,
                &scale,
                &dim(n)?,
                &dim(d)?,
                &c.hc_eps,
                &c.norm_eps,
            ],
        )
    }
}

/// The runtime's projection (`HcMixes`'s `project`): `(φ · x̄) · rsqrt(mean(x̄²) + eps)` per
/// token, through the same packed f32 linear and dot product, `T × rows`.
fn reference_project(x: &[f32], phi: &StoredWeight, norm_eps: f32) -> Vec<f32> {
    let (rows, width) = (phi.out, phi.inp);
    let mut packed = PackedWeights::default();
    let linear = packed.repack_f32(&phi.view().dequantize(), rows, width);
    let mut mu = vec![0.0; x.len() / width * rows];
    linear.forward(x, &mut mu);
    for (xt, mt) in x.chunks(width).zip(mu.chunks_mut(rows)) {
        let r = 1.0 / (dot_f32(xt, xt) / width as f32 + norm_eps).sqrt();
        mt.iter_mut().for_each(|v| *v *= r);
    }
    mu
}

/// The runtime's `HcMixes::compute`, in the device layout.
fn reference_mixes(
    x: &[f32],
    phi: &StoredWeight,
    base: &[f32],
    scale: &[f32],
    c: HcConfig,
) -> Vec<f32> {
    let n = c.streams;
    let mut mixes = reference_project(x, phi, c.norm_eps);
    for mix in mixes.chunks_mut(mix_width(n)) {
        for (i, v) in mix.iter_mut().enumerate() {
            *v = if i < n {
                sigmoid(scale[0] * *v + base[i]) + c.hc_eps
            } else if i < 2 * n {
                2.0 * sigmoid(scale[1] * *v + base[i])
            } else {
                scale[2] * *v + base[i]
            };
        }
        mhc::sinkhorn(&mut mix[2 * n..], n, c.sinkhorn_iters, c.hc_eps);
    }
    mixes
}

/// The runtime's `HcMixes::collapse`, for every token.
fn reference_collapse(
    x: &[f32],
    phi: &StoredWeight,
    base: &[f32],
    scale: f32,
    c: HcConfig,
    d: usize,
) -> Vec<f32> {
    let n = c.streams;
    let mu = reference_project(x, phi, c.norm_eps);
    let mut out = vec![0.0; x.len() / n];
    for ((xt, mt), ot) in x.chunks(n * d).zip(mu.chunks(n)).zip(out.chunks_mut(d)) {
        let pre: Vec<f32> = (0..n)
            .map(|i| sigmoid(scale * mt[i] + base[i]) + c.hc_eps)
            .collect();
        mhc::hc_pre(xt, &pre, ot);
    }
    out
}

/// Every mHC kernel against its twin at V4-Flash's shape (n = 4 streams of 4096, 20 Sinkhorn
/// rounds, eps 1e-6) for one and three tokens, and at odd ones (2 streams of 7 with a bf16 φ,
/// one stream of 5).
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();
    for (n, d, tokens, format) in [
        (4, 4096, 1, Format::F32),
        (4, 4096, 3, Format::F32),
        (2, 7, 2, Format::Bf16),
        (1, 5, 3, Format::F32),
    ] {
        let c = HcConfig {
            streams: n,
            sinkhorn_iters: 20,
            hc_eps: 1e-6,
            norm_eps: 1e-6,
        };
        let rows = mix_width(n);
        let shape = format!("T={tokens} n={n} D={d}");
        let x = rng.values(tokens * n * d, 2.0);
        let phi = StoredWeight::random(rng, format, rows, n * d);
        let base = rng.values(rows, 1.0);
        let scale = rng.values(3, 3.0);
        let device_x = gpu.upload_f32(&x)?;
        let device_phi = DeviceWeight::upload(gpu, &phi.view())?;
        let (device_base, device_scale) = (gpu.upload_f32(&base)?, gpu.upload_f32(&scale)?);
        let w = HcWeights {
            proj: &device_phi,
            base: &device_base,
            scale: &device_scale,
        };

        // The mixes: the projection sums 16384 f32 terms in another order (~1e-7 on μ), the
        // GPU's expf is within 2 ulp, and 20 Sinkhorn rounds carry it along without growing it
        // much (measured 2e-7, 6e-7 with scales of ±30); values are at most 2, so the error is
        // absolute.
        let device_mixes = gpu.zeros(tokens * rows * 4)?;
        hc_mixes(gpu, device_x.ptr(), w, device_mixes.ptr(), tokens, d, c)?;
        let cpu_mixes = reference_mixes(&x, &phi, &base, &scale, c);
        checks.push(Check::new(
            "hc_mixes",
            shape.clone(),
            &device_mixes.read_f32(tokens * rows)?,
            &cpu_mixes,
            1e-5,
        ));

        // The rest from the CPU's mixes, so each kernel is checked on its own.
        let mixes = gpu.upload_f32(&cpu_mixes)?;

        // hc_pre: the CPU's sum in its order (exact on cuda-sim); nvcc fuses each multiply-add,
        // one rounding fewer per stream: a few ulps of terms up to ~2 (streams ±2, pre ≤ 1).
        let h = gpu.zeros(tokens * d * 4)?;
        hc_pre(gpu, h.ptr(), device_x.ptr(), mixes.ptr(), tokens, n, d)?;
        let mut cpu_h = vec![0.0; tokens * d];
        for (t, ht) in cpu_h.chunks_mut(d).enumerate() {
            let pre = &cpu_mixes[t * rows..t * rows + n];
            mhc::hc_pre(&x[t * n * d..(t + 1) * n * d], pre, ht);
        }
        checks.push(Check::new(
            "hc_pre",
            shape.clone(),
            &h.read_f32(tokens * d)?,
            &cpu_h,
            2e-6,
        ));

        // hc_post: likewise the CPU's order, exact on cuda-sim; fused multiply-adds on the GPU
        // move it by a few ulps of terms up to ~4 (post ≤ 2, y ±2) over n + 1 additions.
        let y = rng.values(tokens * d, 2.0);
        let device_y = gpu.upload_f32(&y)?;
        hc_post(
            gpu,
            device_x.ptr(),
            device_y.ptr(),
            mixes.ptr(),
            tokens,
            n,
            d,
        )?;
        let mut cpu_x = x.clone();
        let mut old = Vec::new();
        for (t, (xt, yt)) in cpu_x.chunks_mut(n * d).zip(y.chunks(d)).enumerate() {
            let mix = &cpu_mixes[t * rows..(t + 1) * rows];
            mhc::hc_post(xt, yt, (&mix[n..2 * n], &mix[2 * n..]), &mut old);
        }
        checks.push(Check::new(
            "hc_post",
            shape.clone(),
            &device_x.read_f32(tokens * n * d)?,
            &cpu_x,
            4e-6,
        ));

        // hc_collapse on the original streams, with a head of n rows and one scale: the
        // projection's summation order moves pre by ~1e-7, times n streams of ±2 (measured
        // 5e-7).
        let head = StoredWeight::random(rng, format, n, n * d);
        let head_base = rng.values(n, 1.0);
        let head_scale = rng.values(1, 3.0);
        let device_head = DeviceWeight::upload(gpu, &head.view())?;
        let (device_head_base, device_head_scale) =
            (gpu.upload_f32(&head_base)?, gpu.upload_f32(&head_scale)?);
        let head_w = HcWeights {
            proj: &device_head,
            base: &device_head_base,
            scale: &device_head_scale,
        };
        device_x.write(&super::f32_bytes(&x))?;
        let collapsed = gpu.zeros(tokens * d * 4)?;
        hc_collapse(gpu, collapsed.ptr(), device_x.ptr(), head_w, tokens, d, c)?;
        checks.push(Check::new(
            "hc_collapse",
            shape,
            &collapsed.read_f32(tokens * d)?,
            &reference_collapse(&x, &head, &head_base, head_scale[0], c, d),
            1e-5,
        ));
    }
    Ok(checks)
}
