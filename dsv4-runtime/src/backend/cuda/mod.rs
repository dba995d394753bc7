//! The CUDA backend's place in the seam. Its kernels are not built yet, so no value of the type
//! can exist and none of its ops can be reached; [`CudaBackend::new`] says why, as precisely as
//! the machine allows: built without the `cuda` feature, no CUDA driver, no usable GPU, or (a
//! GPU found through the driver) kernels still to come.

use std::convert::Infallible;

use dsv4_cache::ModelCacheSchema;
use dsv4_kernels::cache_store::StoreError;

use super::{AttentionAt, Backend, ModelConstants, SeqCache, Sublayer};
use crate::model::load::LoadedCheckpoint;
use crate::model::weights::WeightsError;

/// The CUDA backend (its kernels are not built yet).
#[derive(Debug)]
pub struct CudaBackend {
    never: Infallible,
}

/// Why the CUDA backend cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaUnavailable {
    /// This binary was built without the `cuda` feature.
    #[error("--device cuda: this dsv4 was built without the `cuda` feature (and the CUDA backend's kernels are not built yet); use --device cpu")]
    NotBuilt,
    /// No CUDA driver library on this machine.
    #[error("--device cuda: no CUDA driver (libcuda) found on this machine; use --device cpu")]
    NoDriver,
    /// The driver could not open a GPU.
    #[error("--device cuda: the CUDA driver cannot open GPU 0: {0}; use --device cpu")]
    NoDevice(String),
    /// A GPU answered, but the backend has no kernels yet.
    #[error("--device cuda: found {name} ({memory_gib:.1} GiB), but the CUDA backend's kernels are not built yet; use --device cpu")]
    KernelsNotBuilt {
        /// The device's name.
        name: String,
        /// Its memory.
        memory_gib: f64,
    },
}

impl CudaBackend {
    /// The CUDA backend, or why there is none here.
    pub fn new() -> Result<Self, CudaUnavailable> {
        Err(probe())
    }
}

/// Why this binary cannot run the CUDA backend here.
#[cfg(not(feature = "cuda"))]
fn probe() -> CudaUnavailable {
    CudaUnavailable::NotBuilt
}

/// Why this binary cannot run the CUDA backend here: the driver is loaded at run time, so a
/// machine without one gets an error, never a panic.
#[cfg(feature = "cuda")]
fn probe() -> CudaUnavailable {
    use cudarc::driver::{result, sys, CudaContext};
    // SAFETY: only looks for the library and loads it; no driver call is made yet.
    if !unsafe { sys::is_culib_present() } {
        return CudaUnavailable::NoDriver;
    }
    let context = match CudaContext::new(0) {
        Ok(context) => context,
        Err(e) => return CudaUnavailable::NoDevice(e.to_string()),
    };
    let name = context.name().unwrap_or_else(|e| format!("a GPU ({e})"));
    let memory = context
        .bind_to_thread()
        .and_then(|()| result::mem_get_info())
        .map_or(0, |(_, total)| total);
    CudaUnavailable::KernelsNotBuilt {
        name,
        memory_gib: memory as f64 / (1u64 << 30) as f64,
    }
}

/// A request's cache on the device (none can exist yet).
#[derive(Debug)]
pub struct CudaSeqCache {
    never: Infallible,
}

impl SeqCache for CudaSeqCache {
    fn bytes(&self) -> u64 {
        match self.never {}
    }
}

impl Backend for CudaBackend {
    type Weights<'w> = Infallible;
    type SeqCache = CudaSeqCache;

    fn upload(&self, _: &LoadedCheckpoint) -> Result<Infallible, WeightsError> {
        match self.never {}
    }

    fn new_seq_cache(&self, _: &ModelCacheSchema, _: u64) -> CudaSeqCache {
        match self.never {}
    }

    fn embed(&self, _: &Infallible, _: &ModelConstants, _: &[u32], _: &mut CudaSeqCache) {
        match self.never {}
    }

    fn hc_pre(
        &self,
        _: &Infallible,
        _: &ModelConstants,
        _: Sublayer,
        _: usize,
        _: &mut CudaSeqCache,
    ) {
        match self.never {}
    }

    fn attention(
        &self,
        _: &Infallible,
        _: &ModelConstants,
        _: AttentionAt,
        _: &mut CudaSeqCache,
    ) -> Result<(), StoreError> {
        match self.never {}
    }

    fn moe(&self, _: &Infallible, _: &ModelConstants, _: usize, _: &[u32], _: &mut CudaSeqCache) {
        match self.never {}
    }

    fn hc_post(&self, _: &ModelConstants, _: usize, _: &mut CudaSeqCache) {
        match self.never {}
    }

    fn head(
        &self,
        _: &Infallible,
        _: &ModelConstants,
        _: usize,
        _: &mut CudaSeqCache,
        _: &mut Vec<f32>,
    ) {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the feature the backend says it was not built in; with it, a machine without a
    /// CUDA driver (every CI machine) is told so in one line, and never panics.
    #[test]
    fn says_why_there_is_no_cuda_backend() {
        // No CudaBackend value can exist, so the result can only be an error.
        let Err(why) = CudaBackend::new();
        let message = why.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.starts_with("--device cuda: "), "{message}");
        #[cfg(not(feature = "cuda"))]
        assert_eq!(why, CudaUnavailable::NotBuilt);
        #[cfg(feature = "cuda")]
        // SAFETY: only looks for the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            assert_eq!(why, CudaUnavailable::NoDriver);
        }
    }
}
