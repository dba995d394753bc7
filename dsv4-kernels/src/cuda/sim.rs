//! `cuda-sim`: the kernels of `csrc/` compiled for the host with the SIMT emulation of
//! `csrc/sim/` and linked into this crate (see build.rs). A testing device: it runs the CUDA
//! backend's memory management, launches and every kernel on the CPU, slowly, and tells nothing
//! about speed on a GPU.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use super::{Device, DeviceError, Function, LaunchConfig};

extern "C" {
    fn dsv4_sim_function(name: *const c_char) -> c_int;
    fn dsv4_sim_function_count() -> usize;
    fn dsv4_sim_function_name(i: usize) -> *const c_char;
    #[allow(clippy::too_many_arguments)]
    fn dsv4_sim_launch(
        function: c_int,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        params: *mut *mut c_void,
        order: c_int,
        seed: u64,
        workers: u32,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn dsv4_sim_malloc(bytes: usize) -> *mut c_void;
    fn dsv4_sim_free(p: *mut c_void);
}

/// The order in which the emulation runs the threads of a block between collectives. A correct
/// kernel gives the same result in each; one missing a `__syncthreads` shows it in some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiberOrder {
    /// Thread 0 first.
    Forward,
    /// The last thread first.
    Reverse,
    /// An order drawn from the seed, anew for each block and round.
    Random(u64),
}

impl FiberOrder {
    /// The orders every twin test runs under.
    pub const CHECKED: [FiberOrder; 3] = [Self::Forward, Self::Reverse, Self::Random(0x5eed)];

    fn code(self) -> (c_int, u64) {
        match self {
            Self::Forward => (0, 0),
            Self::Reverse => (1, 0),
            Self::Random(seed) => (2, seed),
        }
    }
}

/// The emulated device.
#[derive(Debug, Clone, Copy)]
pub struct SimDevice {
    /// The order of a block's threads.
    pub order: FiberOrder,
    /// OS threads that run blocks in parallel.
    pub workers: u32,
}

impl Default for SimDevice {
    fn default() -> Self {
        Self {
            order: FiberOrder::Forward,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

/// The names of the kernels linked into the emulation.
pub fn kernel_names() -> Vec<String> {
    // SAFETY: the registry is filled by static constructors before main and never changes.
    let count = unsafe { dsv4_sim_function_count() };
    (0..count)
        .filter_map(|i| {
            // SAFETY: `i` is in range; the name lives as long as the program.
            let name = unsafe { dsv4_sim_function_name(i) };
            // SAFETY: a non-null name is a NUL-terminated string of the registry.
            (!name.is_null()).then(|| {
                unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect()
}

impl Device for SimDevice {
    fn name(&self) -> String {
        "cuda-sim (the CUDA kernels compiled for this CPU: a testing device, not a GPU)".into()
    }

    fn free_bytes(&self) -> Option<u64> {
        None
    }

    fn alloc(&self, bytes: usize) -> Result<u64, DeviceError> {
        // SAFETY: plain allocation.
        let p = unsafe { dsv4_sim_malloc(bytes) };
        if p.is_null() {
            return Err(DeviceError::OutOfMemory {
                needed: bytes as u64,
                free: 0,
            });
        }
        Ok(p as u64)
    }

    fn free(&self, address: u64) {
        // SAFETY: `address` came from `alloc` and is freed once (DeviceBuffer's drop).
        unsafe { dsv4_sim_free(address as *mut c_void) }
    }

    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), DeviceError> {
        // SAFETY: the caller (DeviceBuffer) checked the range lies in the allocation.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len()) };
        Ok(())
    }

    fn read(&self, address: u64, bytes: &mut [u8]) -> Result<(), DeviceError> {
        // SAFETY: as in `write`.
        unsafe {
            std::ptr::copy_nonoverlapping(address as *const u8, bytes.as_mut_ptr(), bytes.len())
        };
        Ok(())
    }

    fn fill(&self, address: u64, value: u8, bytes: usize) -> Result<(), DeviceError> {
        // SAFETY: as in `write`.
        unsafe { std::ptr::write_bytes(address as *mut u8, value, bytes) };
        Ok(())
    }

    fn copy(&self, to: u64, from: u64, bytes: usize) -> Result<(), DeviceError> {
        // SAFETY: `Gpu::copy`'s caller vouches for both ranges.
        unsafe { std::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, bytes) };
        Ok(())
    }

    fn function(&self, name: &str) -> Result<Function, DeviceError> {
        let c = CString::new(name).map_err(|_| DeviceError::NoKernel(name.into()))?;
        // SAFETY: a NUL-terminated name.
        let index = unsafe { dsv4_sim_function(c.as_ptr()) };
        usize::try_from(index)
            .map(Function)
            .map_err(|_| DeviceError::NoKernel(name.into()))
    }

    unsafe fn launch(
        &self,
        function: Function,
        config: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<(), DeviceError> {
        let (order, seed) = self.order.code();
        let mut error = [0 as c_char; 512];
        let index = c_int::try_from(function.0).unwrap_or(c_int::MAX);
        // SAFETY: the caller vouches for the parameters; the emulation checks the configuration.
        let rc = unsafe {
            dsv4_sim_launch(
                index,
                config.grid.as_ptr(),
                config.block.as_ptr(),
                config.shared_bytes,
                params.as_mut_ptr(),
                order,
                seed,
                self.workers.max(1),
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the emulation wrote a NUL-terminated message into `error`.
        let message = unsafe { CStr::from_ptr(error.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Err(DeviceError::Launch {
            kernel: kernel_names().get(function.0).cloned().unwrap_or_default(),
            message,
        })
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        // Launches run to completion before they return.
        Ok(())
    }
}
