//! NVTX ranges for Nsight Systems: `let _range = profile::range(c"decode step");` opens a range
//! on the calling thread that closes when the guard drops.
//!
//! With no profiler attached every push and pop is a no-op inside the NVTX header code (no
//! library is loaded, nothing is linked beyond libc). Names are C strings made once (static
//! literals, or per-layer names the model builds when it loads), so opening a range costs a
//! call and allocates nothing: cheap per layer, op or step, though not per element, so ranges
//! stay out of inner loops. Under `nsys profile -t nvtx` the ranges appear on the thread's
//! timeline and in `nsys stats -r nvtxsum` (see `docs/profiling.md`).
//!
//! Ranges are push/pop ranges: they nest on one thread, so a guard must drop on the thread
//! that made it (it is not `Send`) and in reverse order of creation, as scoped guards do.

use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;

// The C entry point the `nvtx` crate compiles from its vendored NVTX headers (nvtx-sys/
// export.c); its own `range_push!` formats every name into a fresh `CString`, which would
// put an allocation in every decode step, so names go to it directly.
#[link(name = "nvtx")]
extern "C" {
    fn ffi_range_push(message: *const c_char) -> c_int;
}

/// An open NVTX range; dropping it pops the range.
#[must_use = "the range closes as soon as the guard is dropped; bind it: `let _range = ...`"]
pub struct Range {
    // Push/pop ranges belong to the thread that pushed them.
    _thread: PhantomData<*const ()>,
}

/// Opens a range named `name` on this thread until the returned guard drops.
#[inline]
pub fn range(name: &CStr) -> Range {
    // SAFETY: `name` is a NUL-terminated string that outlives the call; NVTX copies what it
    // keeps.
    unsafe { ffi_range_push(name.as_ptr()) };
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
        let outer = range(c"outer");
        {
            let name = std::ffi::CString::new(format!("layer {}", 3)).expect("no NUL");
            let _inner = range(&name);
            let _innermost = range(c"op");
        }
        drop(outer);
        // Many ranges in a row stay cheap and balanced with nothing attached.
        for _ in 0..1000 {
            let _range = range(c"step");
        }
    }
}
