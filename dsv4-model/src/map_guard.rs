//! A checkpoint file truncated while it is mapped makes the next read of a page past its new end
//! raise SIGBUS, which would kill the process without a word. Each mapped file is registered
//! here; a SIGBUS whose address falls in one prints one line naming the file and exits with
//! status 1. Faults elsewhere keep the default action.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

use memmap2::Mmap;

/// Mapped files watched at once (V4-Pro has 64 shards); files past this are mapped unwatched.
const SLOTS: usize = 1024;
/// Bytes of a file's name kept for the message.
const NAME_BYTES: usize = 120;

/// One watched mapping; `len` 0 marks a free slot. The handler reads it lock-free.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    name_len: AtomicUsize,
    name: [AtomicU8; NAME_BYTES],
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    name_len: AtomicUsize::new(0),
    name: [const { AtomicU8::new(0) }; NAME_BYTES],
};

static SLOTS_TABLE: [Slot; SLOTS] = [FREE; SLOTS];
/// Serializes registration (the handler never takes it).
static REGISTER: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();
/// The action SIGBUS had before (Rust's own, or the default), put back for faults not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A read-only file mapping watched for truncation while it lives.
pub(crate) struct GuardedMap {
    map: Mmap,
    slot: Option<usize>,
}

impl GuardedMap {
    /// Watches `map`, named `name` in the message.
    pub(crate) fn new(map: Mmap, name: &str) -> Self {
        INSTALL.call_once(install_handler);
        let slot = register(map.as_ptr() as usize, map.len(), name);
        Self { map, slot }
    }

    /// The mapping itself.
    pub(crate) fn map(&self) -> &Mmap {
        &self.map
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let _held = REGISTER.lock();
            SLOTS_TABLE[i].len.store(0, Ordering::Release);
        }
    }
}

fn register(start: usize, len: usize, name: &str) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let _held = REGISTER.lock().ok()?;
    let i = SLOTS_TABLE
        .iter()
        .position(|s| s.len.load(Ordering::Acquire) == 0)?;
    let slot = &SLOTS_TABLE[i];
    let bytes = name.as_bytes();
    let n = bytes.len().min(NAME_BYTES);
    for (cell, &b) in slot.name.iter().zip(&bytes[..n]) {
        cell.store(b, Ordering::Relaxed);
    }
    slot.name_len.store(n, Ordering::Relaxed);
    slot.start.store(start, Ordering::Relaxed);
    // Published last: the handler only trusts a slot whose length it sees non-zero.
    slot.len.store(len, Ordering::Release);
    Some(i)
}

fn install_handler() {
    // SAFETY: a zeroed sigaction is a valid starting value; the handler only reads atomics,
    // calls write(2) and _exit(2), which are async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) == 0 {
            let _ = PREVIOUS.set(previous);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &SLOTS_TABLE {
        let len = slot.len.load(Ordering::Acquire);
        let start = slot.start.load(Ordering::Relaxed);
        if len == 0 || addr < start || addr - start >= len {
            continue;
        }
        let mut name = [0u8; NAME_BYTES];
        let n = slot.name_len.load(Ordering::Relaxed).min(NAME_BYTES);
        for (b, cell) in name.iter_mut().zip(&slot.name) {
            *b = cell.load(Ordering::Relaxed);
        }
        write_stderr(b"error: ");
        write_stderr(&name[..n]);
        write_stderr(
            b" changed while it was being read (it is shorter than when it was opened); stopping\n",
        );
        // SAFETY: _exit is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(1) };
    }
    // Not a mapped checkpoint: the previous action takes the fault when it recurs on return.
    // SAFETY: sigaction is async-signal-safe; PREVIOUS was set before this handler was installed.
    unsafe {
        match PREVIOUS.get() {
            Some(previous) => libc::sigaction(signal, previous, std::ptr::null_mut()),
            None => libc::signal(signal, libc::SIG_DFL) as libc::c_int,
        };
    }
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: write(2) on fd 2 with a valid buffer; a short or failed write is ignored.
    unsafe {
        libc::write(2, bytes.as_ptr().cast(), bytes.len());
    }
}
