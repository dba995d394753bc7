//! Per-thread buffers kept between calls, so hot paths reuse their memory instead of
//! allocating per call.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread's spare buffers of one kind: a stack, since calls can nest (see [`with_buffer`]).
pub type Buffers<T> = RefCell<Vec<T>>;

/// Runs `f` on one of this thread's buffers in `slot`. The buffer is taken out of the slot for
/// the call and put back after, rather than borrowed: parallel work that `f` starts may run
/// another caller on this same thread while `f` waits, and that caller then takes the next
/// spare buffer. The slot keeps one buffer per level of such nesting, so once each has grown
/// to its size, no call allocates.
pub fn with_buffer<T: Default, R>(
    slot: &'static LocalKey<Buffers<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut buffer = slot.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    let result = f(&mut buffer);
    slot.with(|s| s.borrow_mut().push(buffer));
    result
}

/// Resizes `v` to `len` default values (zeros), reusing its capacity.
pub fn zeroed<T: Clone + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    v.clear();
    v.resize(len, T::default());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: Buffers<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    /// A call nested inside another on the same thread (as a stolen parallel task would be)
    /// gets its own buffer, and the next round reuses both: the same memory, no new growth.
    #[test]
    fn nested_calls_reuse_their_own_buffers() {
        let round = || {
            with_buffer(&SLOT, |outer| {
                outer.resize(100, 1);
                let inner = with_buffer(&SLOT, |inner| {
                    assert!(inner.is_empty() || inner.as_ptr() != outer.as_ptr());
                    inner.resize(50, 2);
                    (inner.as_ptr(), inner.capacity())
                });
                ((outer.as_ptr(), outer.capacity()), inner)
            })
        };
        let first = round();
        let second = round();
        assert_eq!(first, second);
        assert_eq!(SLOT.with(|s| s.borrow().len()), 2);
    }
}
