//! A decode step, sampling included, allocates nothing once the request's buffers have grown: over 200 steps on a
//! fixture model, heap allocations (counted by a wrapping global allocator) happen only on the
//! few steps where a buffer sized by the context doubles its capacity or a paged stream takes a
//! new block, never on the ordinary step.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use dsv4_cache::CacheDtypes;
use dsv4_runtime::engine::sampler::{Sampler, SamplingParams};
use dsv4_runtime::{Numerics, Request};
use dsv4_tests::{decode_settings, with_model};

/// The system allocator, counting allocations and reallocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations of each of `steps` decode steps (a token's forward and the sampling of the
/// next) after a 5-token prefill and a first sample.
fn allocations_per_step(
    numerics: Numerics,
    dtypes: CacheDtypes,
    sampling: SamplingParams,
    steps: u32,
) -> Vec<usize> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/fixtures/hca16");
    with_model(&dir, numerics, dtypes, |model| {
        let mut request = Request::new(model, 5 + steps as usize).expect("request");
        let mut sampler = Sampler::new(sampling).expect("sampler");
        // As `generate` does: the loop runs on a pool thread, so parallel work goes to its own
        // queue rather than through the pool's injector (whose blocks are heap-allocated).
        rayon::scope(|_| {
            request.feed(&[1, 2, 3, 4, 5], 5).expect("prefill");
            let mut token = request.sample(&mut sampler).expect("sample");
            (0..steps)
                .map(|_| {
                    let before = ALLOCATIONS.load(Ordering::Relaxed);
                    request.decode(token).expect("decode");
                    token = request.sample(&mut sampler).expect("sample");
                    ALLOCATIONS.load(Ordering::Relaxed) - before
                })
                .collect()
        })
    })
}

#[test]
fn decode_steps_do_not_allocate_once_warm() {
    for (numerics, dtypes, sampling) in decode_settings() {
        let counts = allocations_per_step(numerics, dtypes, sampling, 200);
        let allocating: Vec<(usize, usize)> = counts
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .collect();
        println!("{numerics:?}: steps that allocated (step, allocations): {allocating:?}");
        // Growth is geometric in the context and pages come every block, so a handful of the
        // 200 steps may allocate; a per-step allocation anywhere would make all 200 do so.
        assert!(
            allocating.len() <= 16,
            "{numerics:?}: {} of 200 steps allocated: {allocating:?}",
            allocating.len()
        );
        assert!(
            counts[150..].iter().filter(|&&n| n > 0).count() <= 2,
            "{numerics:?}: late steps allocated: {allocating:?}"
        );
    }
}
