//! The GPU through the CUDA driver API (cudarc, loaded at run time): the fatbins nvcc built from
//! `csrc/` (build.rs) loaded as modules, device memory, copies and launches on the context's
//! default stream, in order. A machine without libcuda, with a driver too old for the fatbins,
//! or without a GPU gets a one-line error, never a panic.

use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, DriverError};

use super::{Device, DeviceError, Function, LaunchConfig};

include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));

/// One GPU with the kernels of every `csrc/` file loaded.
pub struct DriverDevice {
    context: Arc<CudaContext>,
    name: String,
    functions: Vec<(String, sys::CUfunction)>,
    _modules: Vec<sys::CUmodule>,
}

// SAFETY: CUDA function and module handles may be used from any thread once the context is
// bound there, which every call below does first.
unsafe impl Send for DriverDevice {}
// SAFETY: as above; the driver serialises calls on a context.
unsafe impl Sync for DriverDevice {}

/// Why there is no GPU to run on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoGpu {
    /// No CUDA driver library on this machine.
    #[error("no CUDA driver (libcuda) found on this machine")]
    NoDriver,
    /// The driver could not open a GPU.
    #[error("the CUDA driver cannot open GPU 0: {0}")]
    NoDevice(String),
    /// The GPU could not load the kernels (a driver older than the CUDA 13.0 they were built with).
    #[error("GPU 0 ({name}) cannot load the kernels of csrc/{file}.cu: {why} (they need a CUDA 13.0 driver, R580 or newer)")]
    Module {
        /// The GPU.
        name: String,
        /// The kernel file.
        file: &'static str,
        /// The driver's error.
        why: String,
    },
}

fn driver(e: DriverError) -> DeviceError {
    DeviceError::Driver(e.to_string())
}

impl DriverDevice {
    /// GPU 0 with every kernel loaded.
    pub fn open() -> Result<Self, NoGpu> {
        // SAFETY: only looks for the library and loads it; no driver call is made yet.
        if !unsafe { sys::is_culib_present() } {
            return Err(NoGpu::NoDriver);
        }
        let context = CudaContext::new(0).map_err(|e| NoGpu::NoDevice(e.to_string()))?;
        let name = context.name().unwrap_or_else(|e| format!("a GPU ({e})"));
        context
            .bind_to_thread()
            .map_err(|e| NoGpu::NoDevice(e.to_string()))?;
        let mut functions = Vec::new();
        let mut modules = Vec::new();
        for &(file, image, kernels) in MODULES {
            let module_error = |e: DriverError| NoGpu::Module {
                name: name.clone(),
                file,
                why: e.to_string(),
            };
            // SAFETY: `image` is a fatbin nvcc wrote, embedded whole.
            let module = unsafe { result::module::load_data(image.as_ptr().cast()) }
                .map_err(module_error)?;
            modules.push(module);
            for &kernel in kernels {
                let c = CString::new(kernel).map_err(|_| NoGpu::Module {
                    name: name.clone(),
                    file,
                    why: format!("kernel name {kernel:?}"),
                })?;
                // SAFETY: the module was just loaded and is kept for the device's life.
                let f = unsafe { result::module::get_function(module, c) }.map_err(module_error)?;
                functions.push((kernel.to_owned(), f));
            }
        }
        Ok(Self {
            context,
            name,
            functions,
            _modules: modules,
        })
    }

    /// Total device memory, in bytes.
    pub fn total_memory(&self) -> u64 {
        self.context.total_mem().map_or(0, |b| b as u64)
    }

    fn bind(&self) -> Result<(), DeviceError> {
        self.context.bind_to_thread().map_err(driver)
    }
}

impl Device for DriverDevice {
    fn name(&self) -> String {
        format!("{} (CUDA)", self.name)
    }

    fn free_bytes(&self) -> Option<u64> {
        self.bind().ok()?;
        result::mem_get_info().ok().map(|(free, _)| free as u64)
    }

    fn alloc(&self, bytes: usize) -> Result<u64, DeviceError> {
        self.bind()?;
        // SAFETY: plain allocation on the bound context.
        unsafe { result::malloc_sync(bytes.max(1)) }.map_err(|e| {
            let free = result::mem_get_info().map_or(0, |(free, _)| free as u64);
            if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
                DeviceError::OutOfMemory {
                    needed: bytes as u64,
                    free,
                }
            } else {
                driver(e)
            }
        })
    }

    fn free(&self, address: u64) {
        if self.bind().is_ok() {
            // SAFETY: `address` came from `alloc` and is freed once; a failure here leaves
            // nothing to recover.
            let _ = unsafe { result::free_sync(address) };
        }
    }

    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), DeviceError> {
        self.bind()?;
        // SAFETY: the caller checked the range lies in the allocation.
        unsafe { result::memcpy_htod_sync(address, bytes) }.map_err(driver)
    }

    fn read(&self, address: u64, bytes: &mut [u8]) -> Result<(), DeviceError> {
        self.bind()?;
        // SAFETY: as in `write`.
        unsafe { result::memcpy_dtoh_sync(bytes, address) }.map_err(driver)
    }

    fn fill(&self, address: u64, value: u8, bytes: usize) -> Result<(), DeviceError> {
        self.bind()?;
        // SAFETY: as in `write`.
        unsafe { result::memset_d8_sync(address, value, bytes) }.map_err(driver)
    }

    fn copy(&self, to: u64, from: u64, bytes: usize) -> Result<(), DeviceError> {
        self.bind()?;
        // SAFETY: `Gpu::copy`'s caller vouches for both ranges.
        unsafe { result::memcpy_dtod_sync(to, from, bytes) }.map_err(driver)
    }

    fn function(&self, name: &str) -> Result<Function, DeviceError> {
        self.functions
            .iter()
            .position(|(n, _)| n == name)
            .map(Function)
            .ok_or_else(|| DeviceError::NoKernel(name.into()))
    }

    unsafe fn launch(
        &self,
        function: Function,
        config: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<(), DeviceError> {
        self.bind()?;
        let (name, f) = self
            .functions
            .get(function.0)
            .ok_or_else(|| DeviceError::NoKernel(format!("#{}", function.0)))?;
        let launch_error = |e: DriverError| DeviceError::Launch {
            kernel: name.clone(),
            message: e.to_string(),
        };
        if config.shared_bytes > 48 * 1024 {
            // SAFETY: `f` is a loaded function; the attribute only raises its shared-memory cap.
            unsafe {
                result::function::set_function_attribute(
                    *f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    config.shared_bytes as i32,
                )
            }
            .map_err(launch_error)?;
        }
        let [gx, gy, gz] = config.grid;
        let [bx, by, bz] = config.block;
        // SAFETY: the caller vouches for the parameters; the default stream orders launches.
        unsafe {
            result::launch_kernel(
                *f,
                (gx, gy, gz),
                (bx, by, bz),
                config.shared_bytes,
                std::ptr::null_mut(),
                params,
            )
        }
        .map_err(launch_error)
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        self.bind()?;
        result::ctx::synchronize().map_err(driver)
    }
}
