//! Launchers of `csrc/embed.cu`: token embedding into the hyper-connection streams.

use super::twins::{Check, Rng, StoredWeight};
use super::weights::{DeviceWeight, Format};
use super::{dim, DeviceError, DevicePtr, Gpu, LaunchConfig};

/// Threads per block (columns of one token).
const THREADS: usize = 256;

/// `x` (`tokens × streams × D` f32) ← for each of the `tokens` u32 ids at `ids`, row `id` of
/// `table` (`[V, D]`, read in its stored format) in each of the `streams` streams: the twin of
/// the CPU backend's `embed`. An id ≥ V gives a row of zeros (the device cannot report it; the
/// runtime validates ids before they are uploaded).
pub fn embed(
    gpu: &Gpu,
    table: &DeviceWeight,
    ids: DevicePtr,
    x: DevicePtr,
    tokens: usize,
    streams: usize,
) -> Result<(), DeviceError> {
    let d = table.inp;
    if tokens
        .checked_mul(streams)
        .and_then(|r| r.checked_mul(d))
        .is_none()
    {
        return Err(DeviceError::Launch {
            kernel: "embed".to_owned(),
            message: format!("{tokens} × {streams} × {d} overflows"),
        });
    }
    if tokens == 0 || streams == 0 || d == 0 {
        return Ok(());
    }
    if d.div_ceil(THREADS) > 65535 {
        return Err(DeviceError::Launch {
            kernel: "embed".to_owned(),
            message: format!("rows of {d} need more than 65535 blocks in y"),
        });
    }
    let config = LaunchConfig {
        grid: [dim(tokens)?, dim(d.div_ceil(THREADS))?, 1],
        ..LaunchConfig::linear(1, THREADS as u32)
    };
    let w = table.params();
    let [format, scale_kind, data, scales] = w.as_params();
    // SAFETY: the kernel reads `tokens` ids at `ids`, one in-range row of the table (the table's
    // own buffers, `out × inp` in its format), and writes `tokens × streams × D` f32 at `x`.
    unsafe {
        gpu.launch(
            "embed",
            config,
            &[
                format,
                scale_kind,
                data,
                scales,
                &dim(table.out)?,
                &dim(d)?,
                &ids,
                &x,
                &dim(streams)?,
            ],
        )
    }
}

/// [`embed`] against rows from [`crate::linear::LinearView::row`] copied into each stream: V4's
/// D = 4096 with 4 streams from a BF16 table, an FP8 table, an odd f32 one (D = 7, 1 stream),
/// and an out-of-range id. Tolerance 0: the same exact decode of each stored value.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();
    let cases: [(Format, usize, usize, usize, &[u32]); 4] = [
        (Format::Bf16, 1000, 4096, 4, &[0, 999, 417]),
        (Format::Fp8Block, 300, 200, 2, &[129, 5, 299, 128]),
        (Format::F32, 5, 7, 1, &[4, 0, 2, 2]),
        (Format::Bf16, 10, 300, 3, &[3, 10, 7]),
    ];
    for (format, vocab, d, streams, ids) in cases {
        let stored = StoredWeight::random(rng, format, vocab, d);
        let view = stored.view();
        let table = DeviceWeight::upload(gpu, &view)?;
        let device_ids =
            gpu.upload(&ids.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<_>>())?;
        let x = gpu.alloc(ids.len() * streams * d * 4)?;
        embed(gpu, &table, device_ids.ptr(), x.ptr(), ids.len(), streams)?;
        let gpu_out = x.read_f32(ids.len() * streams * d)?;
        let mut cpu = vec![0.0f32; ids.len() * streams * d];
        for (xt, &id) in cpu.chunks_mut(streams * d).zip(ids) {
            let (first, rest) = xt.split_at_mut(d);
            if (id as usize) < vocab {
                view.row(id as usize, first);
            }
            for stream in rest.chunks_mut(d) {
                stream.copy_from_slice(first);
            }
        }
        let out_of_range = if ids.iter().any(|&i| i as usize >= vocab) {
            ", an id ≥ V (zeros)"
        } else {
            ""
        };
        checks.push(Check::new(
            "embed",
            format!(
                "{format:?} V {vocab} D {d}, {streams} streams, T {}{out_of_range}",
                ids.len()
            ),
            &gpu_out,
            &cpu,
            0.0,
        ));
    }
    Ok(checks)
}
