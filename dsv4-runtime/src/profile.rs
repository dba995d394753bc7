//! NVTX ranges for Nsight Systems: `let _range = profile::range("decode step");` opens a range
//! on the calling thread that closes when the guard drops.
//!
//! With no profiler attached every push and pop is a no-op inside the NVTX header code (no
//! library is loaded, nothing is linked beyond libc): about 45 ns per range, the cost of the
//! `nvtx` crate copying the name into a C string. That is negligible per layer, op or step, but
//! not per element, so ranges stay out of inner loops. Under `nsys profile -t nvtx` the ranges
//! appear on the thread's timeline and in `nsys stats -r nvtxsum` (see `docs/profiling.md`).
//!
//! Ranges are push/pop ranges: they nest on one thread, so a guard must drop on the thread
//! that made it (it is not `Send`) and in reverse order of creation, as scoped guards do.

use std::fmt;
use std::marker::PhantomData;

/// An open NVTX range; dropping it pops the range.
#[must_use = "the range closes as soon as the guard is dropped; bind it: `let _range = ...`"]
pub struct Range {
    // Push/pop ranges belong to the thread that pushed them.
    _thread: PhantomData<*const ()>,
}

/// Opens a range named `name` on this thread until the returned guard drops.
#[inline]
pub fn range(name: &'static str) -> Range {
    nvtx::range_push!("{}", name);
    Range {
        _thread: PhantomData,
    }
}

/// Opens a range with a formatted name, e.g. `range_fmt(format_args!("layer {i}"))`.
#[inline]
pub fn range_fmt(name: fmt::Arguments<'_>) -> Range {
    nvtx::range_push!("{}", name);
    Range {
        _thread: PhantomData,
    }
}

impl Drop for Range {
    #[inline]
    fn drop(&mut self) {
        nvtx::range_pop!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_nest_and_pop_without_a_profiler() {
        let outer = range("outer");
        {
            let _inner = range_fmt(format_args!("layer {}", 3));
            let _innermost = range("op");
        }
        drop(outer);
        // Many ranges in a row stay cheap and balanced with nothing attached.
        for _ in 0..1000 {
            let _range = range("step");
        }
    }
}
