//! The CUDA backend's place in the seam. It is not built yet: [`CudaBackend::new`] says so, and
//! no value of the type can exist, so none of its ops can be reached.

use std::convert::Infallible;

use dsv4_cache::ModelCacheSchema;
use dsv4_kernels::cache_store::StoreError;

use super::{AttentionAt, Backend, ModelConstants, SeqCache, Sublayer};
use crate::load::LoadedCheckpoint;
use crate::weights::WeightsError;

/// The CUDA backend (not built yet).
#[derive(Debug)]
pub struct CudaBackend {
    never: Infallible,
}

/// Why the CUDA backend cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--device cuda: the CUDA backend is not built yet; use --device cpu")]
pub struct CudaUnavailable;

impl CudaBackend {
    /// The CUDA backend, or why there is none.
    pub fn new() -> Result<Self, CudaUnavailable> {
        Err(CudaUnavailable)
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

    fn name(&self) -> &'static str {
        "cuda"
    }

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
