//! Launchers of `csrc/layout.cu`: regrouping for the grouped output projection, scaling, and
//! the copy that measures the device's memory bandwidth.

use super::twins::{Check, Rng};
use super::{dim, DeviceError, DevicePtr, Gpu, LaunchConfig};

const THREADS: u32 = 256;
/// Blocks of a grid-stride launch at most (enough to fill any GPU).
const MAX_BLOCKS: usize = 4096;

fn grid(values: usize) -> Result<u32, DeviceError> {
    dim(values.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS))
}

/// `out[b][a][c] = in[a][b][c]` for an `[a][b][c]` f32 array (`out` must not overlap `in`).
pub fn swap_axes(
    gpu: &Gpu,
    input: DevicePtr,
    out: DevicePtr,
    (a, b, c): (usize, usize, usize),
) -> Result<(), DeviceError> {
    let total = a
        .checked_mul(b)
        .and_then(|ab| ab.checked_mul(c))
        .ok_or_else(|| DeviceError::Launch {
            kernel: "swap_axes".into(),
            message: format!("{a} × {b} × {c} values overflow"),
        })?;
    if total == 0 {
        return Ok(());
    }
    let config = LaunchConfig::linear(grid(total)?, THREADS);
    // SAFETY: the kernel reads and writes `a·b·c` floats at `input` and `out`.
    unsafe {
        gpu.launch(
            "swap_axes",
            config,
            &[&input, &out, &dim(a)?, &dim(b)?, &dim(c)?],
        )
    }
}

/// `x[i] *= factor` for the first `n` values.
pub fn scale(gpu: &Gpu, x: DevicePtr, n: usize, factor: f32) -> Result<(), DeviceError> {
    if n == 0 {
        return Ok(());
    }
    let config = LaunchConfig::linear(grid(n)?, THREADS);
    // SAFETY: the kernel touches `n` floats at `x`.
    unsafe { gpu.launch("scale", config, &[&x, &dim(n)?, &factor]) }
}

/// [`swap_axes`] against the index arithmetic done on the host (the runtime's regrouping of
/// the attention outputs: T = 3 tokens of G = 8 groups of 4096, and odd shapes) and [`scale`]
/// against a multiply. Tolerance 0: both move or multiply each value once.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();
    for (a, b, c) in [(3, 8, 4096), (1, 8, 4096), (5, 3, 7), (2, 1, 1)] {
        let input = rng.values(a * b * c, 1.0);
        let mut want = vec![0.0; input.len()];
        for r in 0..a {
            for j in 0..b {
                for k in 0..c {
                    want[(j * a + r) * c + k] = input[(r * b + j) * c + k];
                }
            }
        }
        let x = gpu.upload_f32(&input)?;
        let y = gpu.zeros(input.len() * 4)?;
        swap_axes(gpu, x.ptr(), y.ptr(), (a, b, c))?;
        let got = y.read_f32(input.len())?;
        checks.push(Check::new(
            "swap_axes",
            format!("{a}×{b}×{c}"),
            &got,
            &want,
            0.0,
        ));
    }
    for n in [1usize, 1000, 64 * 4] {
        let values = rng.values(n, 3.0);
        let factor = 0.011_048_543;
        let x = gpu.upload_f32(&values)?;
        scale(gpu, x.ptr(), n, factor)?;
        let want: Vec<f32> = values.iter().map(|v| v * factor).collect();
        checks.push(Check::new(
            "scale",
            format!("{n}"),
            &x.read_f32(n)?,
            &want,
            0.0,
        ));
    }
    Ok(checks)
}

/// Copies `bytes` bytes (a multiple of 16) from `input` to `out` with the `stream_copy` kernel,
/// the device's own measure of its memory bandwidth.
pub fn stream_copy(
    gpu: &Gpu,
    input: DevicePtr,
    out: DevicePtr,
    bytes: usize,
) -> Result<(), DeviceError> {
    if !bytes.is_multiple_of(16) {
        return Err(DeviceError::Launch {
            kernel: "stream_copy".into(),
            message: format!("{bytes} bytes is not a whole number of 16-byte values"),
        });
    }
    let n = bytes / 16;
    if n == 0 {
        return Ok(());
    }
    let config = LaunchConfig::linear(grid(n)?, THREADS);
    // SAFETY: the kernel reads and writes `bytes` bytes at `input` and `out`.
    unsafe { gpu.launch("stream_copy", config, &[&input, &out, &(n as u64)]) }
}
