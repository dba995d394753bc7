//! A decode step on the CUDA backend (its kernels on the host, `cuda-sim`), sampling included,
//! allocates no device memory once warm, and launches the same kernels at every position where the same compressors
//! close an entry. Its own test binary: the CPU's allocation test counts every heap allocation
//! of its process.

use std::path::Path;

use dsv4_cache::CacheDtypes;
use dsv4_runtime::engine::sampler::{Sampler, SamplingParams};
use dsv4_runtime::{CudaBackend, Numerics, Request};
use dsv4_tests::{decode_settings, with_model_on};

/// Device allocations and launches of each of `steps` decode steps (the forward of a token and
/// the sampling of the next, on the device) on `cuda-sim` after a 5-token prefill and a first
/// sample, with each step's position.
fn device_use_per_step(
    numerics: Numerics,
    dtypes: CacheDtypes,
    sampling: SamplingParams,
    steps: u32,
) -> Vec<(usize, u64, u64)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/fixtures/hca16");
    with_model_on(CudaBackend::sim(), &dir, numerics, dtypes, |model| {
        let counters = model.backend().gpu().counters();
        let mut request = Request::new(model, 5 + steps as usize).expect("request");
        let mut sampler = Sampler::new(sampling).expect("sampler");
        request.feed(&[1, 2, 3, 4, 5], 5).expect("prefill");
        let mut token = request.sample(&mut sampler).expect("sample");
        (0..steps)
            .map(|_| {
                let position = request.position();
                let (allocations, launches) = (counters.allocations(), counters.launches());
                request.decode(token).expect("decode");
                token = request.sample(&mut sampler).expect("sample");
                (
                    position,
                    counters.allocations() - allocations,
                    counters.launches() - launches,
                )
            })
            .collect()
    })
}

/// On the CUDA backend (here its kernels on the host) a decode step allocates no device memory
/// but when a paged stream takes a new page, and launches the same kernels at every position
/// where the same compressors close an entry (the fixture's layers compress by 4 and 16): the
/// launch count never grows with the context.
#[test]
fn cuda_sim_decode_steps_do_not_allocate_device_memory_once_warm() {
    for (numerics, dtypes, sampling) in decode_settings() {
        let steps = device_use_per_step(numerics, dtypes, sampling, 40);
        let allocating: Vec<_> = steps.iter().filter(|s| s.1 > 0).collect();
        println!("{numerics:?}: steps that allocated on the device (position, allocations, launches): {allocating:?}");
        // Pages: the m = 16 stream's first entry (position 15) and nothing else in 45 tokens
        // (64 CSA entries and 16 HCA entries fill a page of a 256-token block).
        assert!(allocating.len() <= 2, "{numerics:?}: {allocating:?}");
        assert!(
            allocating.iter().all(|s| s.0 % 16 == 15),
            "{numerics:?}: {allocating:?}"
        );
        for a in &steps {
            for b in &steps {
                let closes = |p: usize| (p % 4 == 3, p % 16 == 15);
                if closes(a.0) == closes(b.0) {
                    assert_eq!(
                        a.2, b.2,
                        "{numerics:?}: launches at positions {} and {}",
                        a.0, b.0
                    );
                }
            }
        }
        println!(
            "{numerics:?}: launches per step: {:?}",
            steps.iter().map(|s| s.2).collect::<Vec<_>>()
        );
    }
}
