//! A decode step on the CUDA backend (its kernels on the host, `cuda-sim`) allocates no device
//! memory once warm, and launches the same kernels at every position where the same compressors
//! close an entry. Its own test binary: the CPU's allocation test counts every heap allocation
//! of its process.

use std::path::Path;

use dsv4_cache::{CacheDtypes, IndexerCacheDtype, KvCacheDtype};
use dsv4_runtime::{CudaBackend, Logits, Numerics};
use dsv4_tests::with_model_on;

/// Device allocations and launches of each of `steps` decode steps on `cuda-sim` after a
/// 5-token prefill, with each step's position.
fn device_use_per_step(
    numerics: Numerics,
    dtypes: CacheDtypes,
    steps: u32,
) -> Vec<(usize, u64, u64)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/fixtures/hca16");
    with_model_on(CudaBackend::sim(), &dir, numerics, dtypes, |model| {
        let counters = model.backend().gpu().counters();
        let mut state = model.new_request(5 + steps as usize).expect("request");
        let mut logits = Vec::new();
        model
            .forward_into(&[1, 2, 3, 4, 5], &mut state, Logits::Last, &mut logits)
            .expect("prefill");
        (0..steps)
            .map(|step| {
                let position = state.position;
                let (allocations, launches) = (counters.allocations(), counters.launches());
                model
                    .forward_into(&[7 + step % 64], &mut state, Logits::Last, &mut logits)
                    .expect("decode");
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
    let compact = CacheDtypes {
        kv: KvCacheDtype::Fp8,
        indexer: IndexerCacheDtype::Fp4,
    };
    for (numerics, dtypes) in [
        (Numerics::Exact, CacheDtypes::default()),
        (Numerics::Reference, compact),
    ] {
        let steps = device_use_per_step(numerics, dtypes, 40);
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
