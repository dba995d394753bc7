//! Launchers of `csrc/norm.cu`.

use super::twins::{Check, Rng};
use super::{dim, DeviceError, DevicePtr, Gpu, LaunchConfig};

/// Threads per block of the row-wise kernels.
const THREADS: u32 = 256;

/// RMSNorm of `rows` rows of `d` values at `x`, in place, times `weight` (`d` values) when
/// given: the twin of [`crate::ops::rms_norm`].
pub fn rms_norm(
    gpu: &Gpu,
    x: DevicePtr,
    weight: Option<DevicePtr>,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<(), DeviceError> {
    if rows == 0 {
        return Ok(());
    }
    let weight = weight.unwrap_or(DevicePtr(0));
    let config = LaunchConfig::linear(dim(rows)?, THREADS);
    // SAFETY: the kernel reads `d` weights and touches `rows × d` values at `x`, which the
    // caller's buffers hold.
    unsafe { gpu.launch("rms_norm", config, &[&x, &weight, &dim(d)?, &eps]) }
}

/// [`rms_norm`] against its twin at V4-Flash's width and odd ones, with and without weights.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();
    for (rows, d, weighted) in [
        (3, 4096, true),
        (2, 4096, false),
        (5, 7, true),
        (1, 1000, true),
        (4, 512, false),
    ] {
        let x = rng.values(rows * d, 3.0);
        let w = rng.values(d, 1.5);
        let device_x = gpu.upload_f32(&x)?;
        let device_w = gpu.upload_f32(&w)?;
        rms_norm(
            gpu,
            device_x.ptr(),
            weighted.then(|| device_w.ptr()),
            rows,
            d,
            1e-6,
        )?;
        let mut cpu = x;
        for row in cpu.chunks_mut(d) {
            crate::ops::rms_norm(row, weighted.then_some(&w[..]), 1e-6);
        }
        let shape = format!("{rows}×{d}{}", if weighted { " weighted" } else { "" });
        checks.push(Check::new(
            "rms_norm",
            shape,
            &device_x.read_f32(rows * d)?,
            &cpu,
            2e-6,
        ));
    }
    Ok(checks)
}
