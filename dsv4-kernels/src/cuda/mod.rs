//! The CUDA kernels of `csrc/` as Rust calls them: a device layer with two implementations behind
//! one interface, the GPU through the CUDA driver ([`driver`], with the `cuda` feature) and the
//! same kernel source compiled for the host with the project's SIMT emulation ([`sim`],
//! `cuda-sim`, always built), plus one launcher per kernel, named as its CPU twin. Code above
//! this module cannot tell the two devices apart.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub mod attend;
pub mod cache;
pub mod compressor;
#[cfg(feature = "cuda")]
pub mod driver;
pub mod embed;
pub mod indexer;
pub mod layout;
pub mod linear;
pub mod mhc;
pub mod moe;
pub mod norm;
pub mod numerics;
pub mod rope;
pub mod sample;
pub mod sim;
pub mod twins;
pub mod weights;

/// A device failure, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The device's memory cannot hold an allocation.
    #[error("out of device memory: {needed} bytes wanted, {free} free; `dsv4 plan` says what a smaller context or cache dtype needs")]
    OutOfMemory {
        /// Bytes asked for.
        needed: u64,
        /// Bytes the device had free.
        free: u64,
    },
    /// No kernel of that name was built for this device.
    #[error("no kernel `{0}` on this device")]
    NoKernel(String),
    /// A launch failed (on `cuda-sim`: a kernel bug the emulation found).
    #[error("kernel `{kernel}`: {message}")]
    Launch {
        /// The kernel.
        kernel: String,
        /// What went wrong.
        message: String,
    },
    /// A copy or another driver call failed.
    #[error("{0}")]
    Driver(String),
    /// A copy whose host and device sides differ in size, or past a buffer's end.
    #[error("copy of {bytes} bytes into or out of a buffer of {capacity}")]
    CopySize {
        /// Bytes of the host side.
        bytes: usize,
        /// Bytes of the device side.
        capacity: usize,
    },
}

/// A kernel loaded on a device (an index into the device's own table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function(pub usize);

/// Grid, block and dynamic shared memory of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// `blocks` blocks of `threads` threads in x, no dynamic shared memory.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Self {
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            shared_bytes: 0,
        }
    }
}

/// What a device does: memory, copies, kernels. Addresses are device addresses (host pointers on
/// `cuda-sim`); kernel parameters follow `cuLaunchKernel`'s convention, a pointer to each value.
pub trait Device: Send + Sync {
    /// One line naming the device.
    fn name(&self) -> String;
    /// Bytes of device memory free now, where the device has memory of its own (a GPU);
    /// `None` when its allocations come from the host's memory.
    fn free_bytes(&self) -> Option<u64>;
    /// Allocates `bytes` bytes.
    fn alloc(&self, bytes: usize) -> Result<u64, DeviceError>;
    /// Frees an allocation of [`Device::alloc`].
    fn free(&self, address: u64);
    /// Copies host bytes to the device.
    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), DeviceError>;
    /// Copies device bytes to the host.
    fn read(&self, address: u64, bytes: &mut [u8]) -> Result<(), DeviceError>;
    /// Sets `bytes` bytes to `value`.
    fn fill(&self, address: u64, value: u8, bytes: usize) -> Result<(), DeviceError>;
    /// Copies `bytes` bytes between two device ranges that do not overlap.
    fn copy(&self, to: u64, from: u64, bytes: usize) -> Result<(), DeviceError>;
    /// The kernel named `name`.
    fn function(&self, name: &str) -> Result<Function, DeviceError>;
    /// Launches `function`, in order after every earlier launch and copy.
    ///
    /// # Safety
    /// `params` must match the kernel's parameters in number and type, and every address among
    /// them must be valid for what the kernel reads and writes there.
    unsafe fn launch(
        &self,
        function: Function,
        config: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<(), DeviceError>;
    /// Waits for every launch and copy so far.
    fn synchronize(&self) -> Result<(), DeviceError>;
}

/// The most parameters a kernel takes.
const MAX_PARAMS: usize = 32;

/// How often the device was asked to allocate and launch, for the tests that hold a decode
/// step to no allocation and one launch per op.
#[derive(Debug, Default)]
pub struct Counters {
    allocations: AtomicU64,
    launches: AtomicU64,
}

impl Counters {
    /// Allocations so far.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }

    /// Launches so far.
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }
}

/// A device with its kernels looked up once and its use counted.
#[derive(Clone)]
pub struct Gpu {
    device: Arc<dyn Device>,
    functions: Arc<Mutex<HashMap<&'static str, Function>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.device.name())
    }
}

impl Gpu {
    /// Wraps a device.
    pub fn new(device: Arc<dyn Device>) -> Self {
        Self {
            device,
            functions: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// The emulated device (`cuda-sim`) with its default fiber order and worker count.
    pub fn sim() -> Self {
        Self::new(Arc::new(sim::SimDevice::default()))
    }

    /// One line naming the device.
    pub fn name(&self) -> String {
        self.device.name()
    }

    /// Bytes of device memory free now (`None` on a device that allocates host memory).
    pub fn free_bytes(&self) -> Option<u64> {
        self.device.free_bytes()
    }

    /// What was allocated and launched so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A buffer of `bytes` bytes, contents undefined.
    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer, DeviceError> {
        let address = self.device.alloc(bytes)?;
        self.counters.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(DeviceBuffer {
            device: Arc::clone(&self.device),
            address,
            bytes,
        })
    }

    /// A buffer holding `bytes`.
    pub fn upload(&self, bytes: &[u8]) -> Result<DeviceBuffer, DeviceError> {
        let buffer = self.alloc(bytes.len())?;
        buffer.write(bytes)?;
        Ok(buffer)
    }

    /// A buffer holding `values`.
    pub fn upload_f32(&self, values: &[f32]) -> Result<DeviceBuffer, DeviceError> {
        self.upload(&f32_bytes(values))
    }

    /// A buffer of `bytes` zero bytes.
    pub fn zeros(&self, bytes: usize) -> Result<DeviceBuffer, DeviceError> {
        let buffer = self.alloc(bytes)?;
        self.device.fill(buffer.address, 0, bytes)?;
        Ok(buffer)
    }

    /// Copies `bytes` bytes from `from` to `to`, on the device.
    ///
    /// # Safety
    /// Both ranges must lie in live buffers of this device and not overlap.
    pub unsafe fn copy(
        &self,
        to: DevicePtr,
        from: DevicePtr,
        bytes: usize,
    ) -> Result<(), DeviceError> {
        self.device.copy(to.0, from.0, bytes)
    }

    /// Launches the kernel `name` with `params` (each a [`Param`]).
    ///
    /// # Safety
    /// As [`Device::launch`]: the parameters must be the kernel's, and the buffers they name
    /// large enough for what it touches.
    pub unsafe fn launch(
        &self,
        name: &'static str,
        config: LaunchConfig,
        params: &[&dyn Param],
    ) -> Result<(), DeviceError> {
        let function = self.function(name)?;
        // On the stack: a launch allocates nothing on the host either.
        let mut pointers = [std::ptr::null_mut::<c_void>(); MAX_PARAMS];
        if params.len() > MAX_PARAMS {
            return Err(DeviceError::Launch {
                kernel: name.into(),
                message: format!("{} parameters (at most {MAX_PARAMS})", params.len()),
            });
        }
        for (pointer, p) in pointers.iter_mut().zip(params) {
            *pointer = p.as_param();
        }
        self.counters.launches.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller vouches for the parameters.
        unsafe {
            self.device
                .launch(function, config, &mut pointers[..params.len()])
        }
    }

    /// Waits for every launch and copy so far.
    pub fn synchronize(&self) -> Result<(), DeviceError> {
        self.device.synchronize()
    }

    fn function(&self, name: &'static str) -> Result<Function, DeviceError> {
        let mut functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&f) = functions.get(name) {
            return Ok(f);
        }
        let f = self.device.function(name)?;
        functions.insert(name, f);
        Ok(f)
    }
}

/// Device memory, freed when dropped.
pub struct DeviceBuffer {
    device: Arc<dyn Device>,
    address: u64,
    bytes: usize,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({} bytes)", self.bytes)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.device.free(self.address);
    }
}

impl DeviceBuffer {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The address `offset` bytes in, as a kernel parameter.
    pub fn at(&self, offset: usize) -> DevicePtr {
        DevicePtr(self.address + offset as u64)
    }

    /// Its start, as a kernel parameter.
    pub fn ptr(&self) -> DevicePtr {
        DevicePtr(self.address)
    }

    /// Overwrites its first `bytes.len()` bytes.
    pub fn write(&self, bytes: &[u8]) -> Result<(), DeviceError> {
        self.write_at(0, bytes)
    }

    /// Overwrites `bytes.len()` bytes from `offset`.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<(), DeviceError> {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.bytes)
        {
            return Err(DeviceError::CopySize {
                bytes: bytes.len(),
                capacity: self.bytes.saturating_sub(offset),
            });
        }
        self.device.write(self.address + offset as u64, bytes)
    }

    /// Its first `bytes.len()` bytes.
    pub fn read(&self, bytes: &mut [u8]) -> Result<(), DeviceError> {
        if bytes.len() > self.bytes {
            return Err(DeviceError::CopySize {
                bytes: bytes.len(),
                capacity: self.bytes,
            });
        }
        self.device.read(self.address, bytes)
    }

    /// Its first `n` f32 values.
    pub fn read_f32(&self, n: usize) -> Result<Vec<f32>, DeviceError> {
        let mut values = vec![0.0; n];
        self.read_f32_into(&mut values)?;
        Ok(values)
    }

    /// Its first `n` u32 values.
    pub fn read_u32(&self, n: usize) -> Result<Vec<u32>, DeviceError> {
        let mut bytes = vec![0u8; n * 4];
        self.read(&mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Its first `values.len()` f32 values into `values`.
    pub fn read_f32_into(&self, values: &mut [f32]) -> Result<(), DeviceError> {
        // SAFETY: any bytes are a valid f32; the slice's bytes are exactly its values'.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), values.len() * 4)
        };
        self.read(bytes)
    }
}

/// A device address as a kernel parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    /// The address `bytes` further on.
    pub fn offset(self, bytes: usize) -> Self {
        Self(self.0 + bytes as u64)
    }
}

/// A value passed to a kernel: `as_param` points at it, as `cuLaunchKernel` wants.
pub trait Param {
    /// A pointer to the value (the kernel only reads it).
    fn as_param(&self) -> *mut c_void;
}

macro_rules! by_value {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn as_param(&self) -> *mut c_void {
                (self as *const $t).cast_mut().cast()
            }
        }
    )*};
}
by_value!(u32, i32, u64, f32, f64, DevicePtr);

/// A size as a kernel's 32-bit dimension.
pub fn dim(n: usize) -> Result<u32, DeviceError> {
    u32::try_from(n).map_err(|_| DeviceError::Launch {
        kernel: String::new(),
        message: format!("dimension {n} does not fit in 32 bits"),
    })
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
