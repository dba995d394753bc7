//! Per-thread buffers kept between calls, so hot paths reuse their memory instead of
//! allocating per call.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Runs `f` on this thread's buffer in `slot`. The buffer is taken out of the slot for the
/// call and put back after, rather than borrowed: parallel work that `f` starts may run
/// another caller on this same thread while `f` waits, and that caller then finds an empty
/// buffer (it grows its own) instead of a borrowed one.
pub fn with_buffer<T: Default, R>(
    slot: &'static LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut buffer = slot.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let result = f(&mut buffer);
    slot.with(|s| *s.borrow_mut() = buffer);
    result
}
