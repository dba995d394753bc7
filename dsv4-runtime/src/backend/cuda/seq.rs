//! A request on the device: its cache (window rings, compressor tails, paged entries and
//! indexer keys) and the forward's intermediates, each a buffer that grows to the largest chunk
//! seen and is then reused, so a decode step allocates nothing once the first one has run.

use dsv4_cache::{BlockPool, ModelCacheSchema};
use dsv4_kernels::cuda::mhc::mix_width;
use dsv4_kernels::cuda::rope::DeviceRope;
use dsv4_kernels::cuda::{embed, DeviceBuffer, DeviceError, DevicePtr, Gpu};

use super::attention::{AttentionScratch, DeviceLayerState};
use super::moe::MoeScratch;
use super::weights::CudaWeights;
use crate::backend::{ModelConstants, OpError, SeqCache};

/// A device buffer that grows to the largest size asked of it; growing drops its contents.
#[derive(Debug, Default)]
pub struct Grown(Option<DeviceBuffer>);

impl Grown {
    /// The buffer, at least `bytes` long.
    pub fn at_least(&mut self, gpu: &Gpu, bytes: usize) -> Result<DevicePtr, DeviceError> {
        if self.0.as_ref().is_none_or(|b| b.len() < bytes) {
            // Free the old one first, so the device never holds both.
            self.0 = None;
            self.0 = Some(gpu.alloc(bytes.max(4))?);
        }
        Ok(self.ptr())
    }

    /// The buffer's start (null before the first [`Grown::at_least`]).
    pub fn ptr(&self) -> DevicePtr {
        self.0.as_ref().map_or(DevicePtr(0), DeviceBuffer::ptr)
    }

    /// The buffer, if it was ever sized.
    pub fn buffer(&self) -> Option<&DeviceBuffer> {
        self.0.as_ref()
    }
}

/// A request's cache and intermediates on the device.
#[derive(Debug)]
pub struct CudaSeqCache {
    /// Per decoder layer.
    pub(super) layers: Vec<DeviceLayerState>,
    /// Where the paged streams take their pages (the request's budget).
    pub(super) pool: BlockPool,
    /// The chunk's tokens (rows of `x`).
    pub(super) tokens: usize,
    /// The first row the mixes of the last `hc_pre` are for.
    pub(super) mixes_from: usize,
    /// Residual streams `T × n·D`.
    pub(super) x: Grown,
    /// A sublayer's input `T × D`.
    pub(super) h: Grown,
    /// A sublayer's output `T × D`.
    pub(super) y: Grown,
    /// The last `hc_pre`'s mixes.
    pub(super) mixes: Grown,
    /// The chunk's token ids (u32).
    pub(super) ids: Grown,
    /// The head's collapsed, normed rows and their logits.
    pub(super) u: Grown,
    pub(super) logits: Grown,
    /// Values in `logits` (rows × V of the last head).
    pub(super) logit_values: usize,
    /// The sampler's weights and partial sums, and the token it picked.
    pub(super) sample_scratch: Grown,
    pub(super) sampled: Grown,
    /// RoPE tables (main, compress), uploaded on the first forward.
    pub(super) rope: Option<[DeviceRope; 2]>,
    pub(super) attention: AttentionScratch,
    pub(super) moe: MoeScratch,
}

impl SeqCache for CudaSeqCache {
    fn bytes(&self) -> u64 {
        self.layers.iter().map(DeviceLayerState::bytes).sum()
    }
}

impl CudaSeqCache {
    /// A fresh request's cache as `schema` lays it out, its pages capped at `paged_bytes`.
    pub fn new(gpu: &Gpu, schema: &ModelCacheSchema, paged_bytes: u64) -> Result<Self, OpError> {
        Ok(Self {
            layers: DeviceLayerState::for_schema(gpu, schema)?,
            pool: BlockPool::with_budget(paged_bytes),
            tokens: 0,
            mixes_from: 0,
            x: Grown::default(),
            h: Grown::default(),
            y: Grown::default(),
            mixes: Grown::default(),
            ids: Grown::default(),
            u: Grown::default(),
            logits: Grown::default(),
            logit_values: 0,
            sample_scratch: Grown::default(),
            sampled: Grown::default(),
            rope: None,
            attention: AttentionScratch::default(),
            moe: MoeScratch::default(),
        })
    }

    /// The RoPE table of `k` that `rope` names (uploaded once).
    pub(super) fn rope_table(
        &mut self,
        gpu: &Gpu,
        k: &ModelConstants,
        compress: bool,
    ) -> Result<&DeviceRope, DeviceError> {
        if self.rope.is_none() {
            self.rope = Some([
                DeviceRope::upload(gpu, &k.main_rope)?,
                DeviceRope::upload(gpu, &k.compress_rope)?,
            ]);
        }
        match &self.rope {
            Some(tables) => Ok(&tables[usize::from(compress)]),
            None => Err(DeviceError::Driver("RoPE tables missing".into())),
        }
    }

    /// `x` ← the tokens' embeddings in every stream.
    pub(super) fn embed(
        &mut self,
        gpu: &Gpu,
        w: &CudaWeights,
        k: &ModelConstants,
        tokens: &[u32],
    ) -> Result<(), OpError> {
        let (n, d, t) = (k.hc.hc_mult, k.hidden_size, tokens.len());
        self.tokens = t;
        let ids = self.ids.at_least(gpu, 4 * t)?;
        // SAFETY: the ids' bytes, read as bytes (the device, like the host, is little endian).
        let id_bytes = unsafe { std::slice::from_raw_parts(tokens.as_ptr().cast::<u8>(), 4 * t) };
        if let Some(buffer) = self.ids.buffer() {
            buffer.write(id_bytes)?;
        }
        let x = self.x.at_least(gpu, 4 * t * n * d)?;
        self.h.at_least(gpu, 4 * t * d)?;
        self.y.at_least(gpu, 4 * t * d)?;
        self.mixes.at_least(gpu, 4 * t * mix_width(n))?;
        embed::embed(gpu, &w.embed, ids, x, t, n)?;
        Ok(())
    }
}
