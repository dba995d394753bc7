//! The seam between the model and what runs it. [`crate::Model`] calls the ops of this trait in
//! the order of the forward pass (docs/model.md §4.1) and never touches a weight, a cache byte or
//! an intermediate itself: those live where the backend puts them (host memory for
//! [`CpuBackend`], device memory for a GPU backend), so the same model code drives either.

mod cpu;
mod cuda;

pub use cpu::{CpuBackend, CpuSeqCache};
pub use cuda::{CudaBackend, CudaUnavailable};

use dsv4_cache::{ModelCacheSchema, Sharing};
/// A cache failure an op can report (a page past the request's budget).
pub use dsv4_kernels::cache_store::StoreError;
/// A device failure an op can report (out of device memory, a failed launch).
pub use dsv4_kernels::cuda::DeviceError;
use dsv4_kernels::numerics::Numerics;
use dsv4_kernels::ops::RopeFrequencies;
/// The cuts of a draw, as [`Backend::sample`] takes them.
pub use dsv4_kernels::sample::SampleCut;

use crate::model::attention::AttentionDims;
use crate::model::load::{Linears, LoadedCheckpoint};
use crate::model::mhc::HcConfig;
use crate::model::moe::MoeConfig;
use crate::model::weights::WeightsError;

/// Which sublayer of a decoder layer an op is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sublayer {
    /// The attention sublayer of layer `.0`.
    Attention(usize),
    /// The MoE sublayer of layer `.0`.
    Moe(usize),
}

/// Why an op failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The cache could not take an entry.
    #[error(transparent)]
    Cache(#[from] StoreError),
    /// The device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The backend cannot do what was asked (yet).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// What every op reads from the config, derived once by the model: the same for every backend.
#[derive(Debug, Clone)]
pub struct ModelConstants {
    /// RoPE of window-only layers (`rope_theta`).
    pub main_rope: RopeFrequencies,
    /// RoPE of compressed layers (`compress_rope_theta` with YaRN).
    pub compress_rope: RopeFrequencies,
    /// Hyper-connection settings.
    pub hc: HcConfig,
    /// Attention dimensions.
    pub attention: AttentionDims,
    /// Router settings.
    pub moe: MoeConfig,
    /// The numerics mode.
    pub numerics: Numerics,
    /// Model width D.
    pub hidden_size: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
}

/// One layer's attention step of a chunk.
#[derive(Debug, Clone, Copy)]
pub struct AttentionAt<'a> {
    /// The layer.
    pub layer: usize,
    /// Compress ratio m (`None` for window-only layers).
    pub ratio: Option<usize>,
    /// Absolute position of the chunk's first token.
    pub p0: usize,
    /// The first token of the chunk whose output is wanted (every token's keys are cached).
    pub first_output: usize,
    /// The layer's RoPE table.
    pub rope: &'a RopeFrequencies,
}

/// The decode state of one request: its next position and its cache as backend `B` holds it.
#[derive(Debug)]
pub struct SeqState<B: Backend = CpuBackend> {
    /// Tokens processed so far (the next token's absolute position).
    pub position: usize,
    /// The cache and the forward pass's intermediates.
    pub cache: B::SeqCache,
    /// The cache-sharing policy its cache follows.
    pub sharing: Sharing,
}

impl<B: Backend> SeqState<B> {
    /// Bytes the cache holds now: window rings, compressor tails and paged blocks.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.bytes()
    }
}

/// Free memory where a backend keeps request caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeMemory {
    /// Bytes free now.
    pub bytes: u64,
    /// Which memory ("host", "device").
    pub memory: &'static str,
}

impl FreeMemory {
    /// The host's `MemAvailable`, where it can be read.
    pub fn host() -> Option<Self> {
        crate::memory::available_bytes().map(|bytes| Self {
            bytes,
            memory: "host",
        })
    }
}

/// A request's cache as a backend holds it.
pub trait SeqCache: Send {
    /// Bytes it holds now: window rings, compressor tails and paged blocks.
    fn bytes(&self) -> u64;
}

/// The ops the model calls, plus the upload of weights as stored and the allocation of a
/// request's cache. Each op reads and writes the request's intermediates in `seq`: the
/// residual streams `x` (`T × n·D`), a sublayer's input `h` and output `y` (`T × D`).
pub trait Backend: Sync {
    /// The model's weights as this backend holds them.
    type Weights<'w>: Sync;
    /// One request's cache and intermediates.
    type SeqCache: SeqCache;

    /// What this backend's [`Backend::upload`] needs loading to do with the linears.
    fn linears(&self) -> Linears {
        Linears::Packed
    }

    /// The weights of a loaded, checked checkpoint, as stored (FP8/FP4 bytes and their scales,
    /// floats), laid out for this backend's kernels.
    fn upload<'w>(&self, loaded: &'w LoadedCheckpoint) -> Result<Self::Weights<'w>, WeightsError>;

    /// The memory free where this backend keeps request caches, so a request too large for it
    /// is refused before anything is allocated: the host's `MemAvailable` by default.
    fn free_memory(&self) -> Option<FreeMemory> {
        FreeMemory::host()
    }

    /// A fresh request's cache laid out by `schema`, its pages capped at `paged_bytes`.
    fn new_seq_cache(
        &self,
        schema: &ModelCacheSchema,
        paged_bytes: u64,
    ) -> Result<Self::SeqCache, OpError>;

    /// A request's cache to resume from `seq`'s (a kept prefix): its paged entries shared where
    /// their pages are full (immutable once written), its windows and tails copied, its pages
    /// capped at `paged_bytes`; the intermediates start fresh.
    fn snapshot(&self, seq: &Self::SeqCache, paged_bytes: u64) -> Result<Self::SeqCache, OpError>;

    /// `x` ← each token's embedding, copied into every stream.
    fn embed(
        &self,
        w: &Self::Weights<'_>,
        k: &ModelConstants,
        tokens: &[u32],
        seq: &mut Self::SeqCache,
    ) -> Result<(), OpError>;

    /// `h` ← the sublayer's input for tokens `from..` of the chunk: their streams mixed by
    /// weights computed from the streams (`hc_pre`), then the sublayer's RMSNorm.
    fn hc_pre(
        &self,
        w: &Self::Weights<'_>,
        k: &ModelConstants,
        sublayer: Sublayer,
        from: usize,
        seq: &mut Self::SeqCache,
    ) -> Result<(), OpError>;

    /// `y` ← the attention of `h` for tokens `at.first_output..`, caching every token's keys
    /// and compressed entries.
    fn attention(
        &self,
        w: &Self::Weights<'_>,
        k: &ModelConstants,
        at: AttentionAt,
        seq: &mut Self::SeqCache,
    ) -> Result<(), OpError>;

    /// `y` ← the MoE of `h`, whose rows are the tokens `tokens`.
    fn moe(
        &self,
        w: &Self::Weights<'_>,
        k: &ModelConstants,
        layer: usize,
        tokens: &[u32],
        seq: &mut Self::SeqCache,
    ) -> Result<(), OpError>;

    /// The streams of tokens `from..` take the sublayer's output `y` (`hc_post`), with the
    /// mixes the last `hc_pre` computed.
    fn hc_post(
        &self,
        k: &ModelConstants,
        from: usize,
        seq: &mut Self::SeqCache,
    ) -> Result<(), OpError>;

    /// The logits of tokens `from..` (`V` values per token, f32): their streams collapsed,
    /// normed, projected. They stay where the backend computed them, for [`Backend::logits`]
    /// and [`Backend::sample`].
    fn head(
        &self,
        w: &Self::Weights<'_>,
        k: &ModelConstants,
        from: usize,
        seq: &mut Self::SeqCache,
    ) -> Result<(), OpError>;

    /// `out` ← the last head's logits, on the host (resized, its capacity reused).
    fn read_logits(&self, seq: &Self::SeqCache, out: &mut Vec<f32>) -> Result<(), OpError>;

    /// The token a draw picks from the last row (`vocab` logits) of the last head: the argmax
    /// when `draw` is `None`, else [`dsv4_kernels::sample::sample`] of `u` under `cut`, computed
    /// where the logits are. `None` when no logit is a candidate.
    fn sample(
        &self,
        seq: &mut Self::SeqCache,
        vocab: usize,
        cut: &SampleCut,
        draw: Option<f64>,
    ) -> Result<Option<u32>, OpError>;
}
