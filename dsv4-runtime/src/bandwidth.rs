//! The machine's memory bandwidth, measured (not assumed) with a STREAM-style triad on all
//! worker threads, so decode speed can be judged against what this machine can stream.

use std::time::Instant;

use rayon::prelude::*;

/// f32 elements per array: 3 × 256 MiB, far beyond any cache.
const ELEMENTS: usize = 64 << 20;

/// Best-of-`runs` triad bandwidth `a = b + s·c` in bytes per second, counting 12 bytes per
/// element as STREAM does (no write-allocate traffic).
pub fn triad_bandwidth(runs: usize) -> f64 {
    let mut a = vec![0.0f32; ELEMENTS];
    let b = vec![1.0f32; ELEMENTS];
    let c = vec![2.0f32; ELEMENTS];
    let chunk = ELEMENTS / (4 * rayon::current_num_threads().max(1));
    let mut best = f64::MAX;
    for run in 0..runs.max(1) {
        let s = 3.0 + run as f32;
        let start = Instant::now();
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk).zip(c.par_chunks(chunk)))
            .for_each(|(a, (b, c))| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + s * c;
                }
            });
        best = best.min(start.elapsed().as_secs_f64());
    }
    // Keep the result observable so the loop is not optimised away.
    std::hint::black_box(&a);
    (12 * ELEMENTS) as f64 / best
}
