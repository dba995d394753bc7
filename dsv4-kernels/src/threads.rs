//! The kernels' worker threads. Every parallel region of the CPU ops runs on rayon's pool; the
//! callers above (the runtime, the CLI) only say how many workers there are and where a step
//! starts, and schedule nothing themselves.

/// Runs `f` on a worker thread of the pool and waits for it. A step that enters many parallel
/// regions should start here: each region entered from a worker then costs a few
/// microseconds, where one entered from a thread outside the pool waits for a worker to take
/// it and wake the caller after (about 28 us against 3 us measured on 2 vCPUs, with about a
/// hundred regions per decoded token), and each worker's reused buffers stay its own.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Workers the ops split their work over.
pub fn workers() -> usize {
    rayon::current_num_threads()
}

/// Sets the number of workers for the whole process, once, before any op runs; `Err` says why
/// it could not (a pool already started, or threads the system refused).
pub fn set_workers(n: usize) -> Result<(), String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| e.to_string())
}
