//! Memory bandwidth, measured (not assumed): the host's with a STREAM-style triad on all worker
//! threads, a device's with its own copy kernel, so decode speed can be judged against what the
//! machine running it can stream.

use std::time::Instant;

use dsv4_kernels::cuda::layout::stream_copy;
use dsv4_kernels::cuda::{DeviceError, Gpu};
use rayon::prelude::*;

/// f32 elements per array: 3 × 256 MiB, far beyond any cache.
const ELEMENTS: usize = 64 << 20;

/// The triad `a = b + s·c` run `runs` times; each run's bandwidth in bytes per second,
/// counting 12 bytes per element as STREAM does (no write-allocate traffic).
pub fn triad_runs(runs: usize) -> Vec<f64> {
    let mut a = vec![0.0f32; ELEMENTS];
    let b = vec![1.0f32; ELEMENTS];
    let c = vec![2.0f32; ELEMENTS];
    let chunk = ELEMENTS / (4 * rayon::current_num_threads().max(1));
    let rates = (0..runs.max(1))
        .map(|run| {
            let s = 3.0 + run as f32;
            let start = Instant::now();
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk).zip(c.par_chunks(chunk)))
                .for_each(|(a, (b, c))| {
                    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                        *a = b + s * c;
                    }
                });
            (12 * ELEMENTS) as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    // Keep the result observable so the loops are not optimised away.
    std::hint::black_box(&a);
    rates
}

/// A device's memory bandwidth by its own copy kernel (`stream_copy`): `runs` copies of a
/// `bytes`-byte buffer, each timed from a synchronised start to a synchronised end; bytes per
/// second counting the read and the write.
pub fn device_copy_runs(gpu: &Gpu, runs: usize, bytes: usize) -> Result<Vec<f64>, DeviceError> {
    let (from, to) = (gpu.zeros(bytes)?, gpu.zeros(bytes)?);
    // One untimed copy first: the first launch loads the kernel.
    stream_copy(gpu, from.ptr(), to.ptr(), bytes)?;
    gpu.synchronize()?;
    (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            stream_copy(gpu, from.ptr(), to.ptr(), bytes)?;
            gpu.synchronize()?;
            Ok((2 * bytes) as f64 / start.elapsed().as_secs_f64())
        })
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
