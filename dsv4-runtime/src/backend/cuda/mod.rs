//! The CUDA backend: weights uploaded as stored, the request's cache and intermediates in device
//! memory, every op a launch of the kernels in `csrc/` through `dsv4-kernels`' device layer.
//! The same code drives a GPU (`--device cuda`, through the CUDA driver) and the kernels
//! compiled for the host (`--device cuda-sim`, a testing device). The token is sampled on the
//! device, so a decode step copies back 4 bytes; logits come back only when asked for (scoring).

mod attention;
mod moe;
mod seq;
mod weights;

use dsv4_cache::ModelCacheSchema;
use dsv4_kernels::cuda::{linear, mhc, norm, sample, Gpu};
use dsv4_kernels::sample::SampleCut;

use super::{AttentionAt, Backend, FreeMemory, ModelConstants, OpError, Sublayer};
use crate::model::load::{Linears, LoadedCheckpoint};
use crate::model::weights::WeightsError;
pub use seq::CudaSeqCache;
pub use weights::CudaWeights;

/// The CUDA backend on one device.
#[derive(Debug, Clone)]
pub struct CudaBackend {
    gpu: Gpu,
}

/// Why the CUDA backend cannot run on a GPU here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaUnavailable {
    /// This binary was built without the `cuda` feature.
    #[error("--device cuda: this dsv4 was built without the `cuda` feature (rebuild with `--features cuda`, which needs nvcc); use --device cpu, or --device cuda-sim to run the CUDA kernels on the CPU")]
    NotBuilt,
    /// No driver, no GPU, or a GPU that cannot load the kernels.
    #[error("--device cuda: {0}; use --device cpu")]
    NoGpu(String),
}

impl CudaBackend {
    /// GPU 0 through the CUDA driver, or why there is none here.
    pub fn new() -> Result<Self, CudaUnavailable> {
        Self::driver()
    }

    #[cfg(not(feature = "cuda"))]
    fn driver() -> Result<Self, CudaUnavailable> {
        Err(CudaUnavailable::NotBuilt)
    }

    #[cfg(feature = "cuda")]
    fn driver() -> Result<Self, CudaUnavailable> {
        use dsv4_kernels::cuda::driver::DriverDevice;
        let device = DriverDevice::open().map_err(|e| CudaUnavailable::NoGpu(e.to_string()))?;
        Ok(Self::on(Gpu::new(std::sync::Arc::new(device))))
    }

    /// The CUDA kernels compiled for this CPU (`cuda-sim`): a testing device.
    pub fn sim() -> Self {
        Self::on(Gpu::sim())
    }

    /// The backend on `gpu` (a simulated device with a chosen fiber order, say).
    pub fn on(gpu: Gpu) -> Self {
        Self { gpu }
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl Backend for CudaBackend {
    type Weights<'w> = CudaWeights<'w>;
    type SeqCache = CudaSeqCache;

    fn upload<'w>(&self, loaded: &'w LoadedCheckpoint) -> Result<CudaWeights<'w>, WeightsError> {
        weights::upload(&self.gpu, loaded)
    }

    fn linears(&self) -> Linears {
        // Uploaded as stored, from the mapped files.
        Linears::AsStored
    }

    fn free_memory(&self) -> Option<FreeMemory> {
        // A GPU's own memory; cuda-sim allocates the host's.
        match self.gpu.free_bytes() {
            Some(bytes) => Some(FreeMemory {
                bytes,
                memory: "device",
            }),
            None => FreeMemory::host(),
        }
    }

    fn new_seq_cache(
        &self,
        schema: &ModelCacheSchema,
        paged_bytes: u64,
    ) -> Result<CudaSeqCache, OpError> {
        if !schema.sharing.is_none() {
            return Err(OpError::Unsupported(
                "the CUDA backend does not run cache-sharing policies yet (--share-kv, --indexer-reuse); use --device cpu",
            ));
        }
        CudaSeqCache::new(&self.gpu, schema, paged_bytes)
    }

    fn snapshot(&self, _seq: &CudaSeqCache, _paged_bytes: u64) -> Result<CudaSeqCache, OpError> {
        Err(OpError::Unsupported(
            "the CUDA backend does not keep request states for prefix reuse yet; use --device cpu",
        ))
    }

    fn embed(
        &self,
        w: &CudaWeights,
        k: &ModelConstants,
        tokens: &[u32],
        seq: &mut CudaSeqCache,
    ) -> Result<(), OpError> {
        seq.embed(&self.gpu, w, k, tokens)
    }

    fn hc_pre(
        &self,
        w: &CudaWeights,
        k: &ModelConstants,
        sublayer: Sublayer,
        from: usize,
        seq: &mut CudaSeqCache,
    ) -> Result<(), OpError> {
        let (proj, vectors, norm_weight) = match sublayer {
            Sublayer::Attention(i) => (
                &w.model.layers[i].hc_attn.proj,
                &w.layers[i].hc_attn,
                &w.layers[i].attn_norm,
            ),
            Sublayer::Moe(i) => (
                &w.model.layers[i].hc_ffn.proj,
                &w.layers[i].hc_ffn,
                &w.layers[i].ffn_norm,
            ),
        };
        let (n, d) = (k.hc.hc_mult, k.hidden_size);
        let rows = seq.tokens - from;
        let x = seq.x.ptr().offset(4 * from * n * d);
        let (h, mixes) = (seq.h.ptr(), seq.mixes.ptr());
        let hc = mhc::HcWeights {
            proj,
            base: &vectors.base,
            scale: &vectors.scale,
        };
        mhc::hc_mixes(&self.gpu, x, hc, mixes, rows, d, hc_config(k))?;
        mhc::hc_pre(&self.gpu, h, x, mixes, rows, n, d)?;
        norm::rms_norm(&self.gpu, h, Some(norm_weight.ptr()), rows, d, k.eps)?;
        seq.mixes_from = from;
        Ok(())
    }

    fn attention(
        &self,
        w: &CudaWeights,
        k: &ModelConstants,
        at: AttentionAt,
        seq: &mut CudaSeqCache,
    ) -> Result<(), OpError> {
        attention::attention(&self.gpu, w, k, at, seq)
    }

    fn moe(
        &self,
        w: &CudaWeights,
        k: &ModelConstants,
        layer: usize,
        tokens: &[u32],
        seq: &mut CudaSeqCache,
    ) -> Result<(), OpError> {
        moe::moe(&self.gpu, w, k, layer, tokens, seq)
    }

    fn hc_post(
        &self,
        k: &ModelConstants,
        from: usize,
        seq: &mut CudaSeqCache,
    ) -> Result<(), OpError> {
        let (n, d) = (k.hc.hc_mult, k.hidden_size);
        let rows = seq.tokens - from;
        // The last hc_pre mixed rows `mixes_from..`: this call's rows start `from − mixes_from`
        // mixes in.
        let first_mix = from - seq.mixes_from;
        let x = seq.x.ptr().offset(4 * from * n * d);
        let mixes = seq.mixes.ptr().offset(4 * first_mix * mhc::mix_width(n));
        mhc::hc_post(&self.gpu, x, seq.y.ptr(), mixes, rows, n, d)?;
        Ok(())
    }

    fn head(
        &self,
        w: &CudaWeights,
        k: &ModelConstants,
        from: usize,
        seq: &mut CudaSeqCache,
    ) -> Result<(), OpError> {
        let (n, d) = (k.hc.hc_mult, k.hidden_size);
        let rows = seq.tokens.saturating_sub(from);
        let vocab = w.model.head.out;
        let gpu = &self.gpu;
        let u = seq.u.at_least(gpu, 4 * rows * d)?;
        let out = seq.logits.at_least(gpu, 4 * rows * vocab)?;
        let x = seq.x.ptr().offset(4 * from * n * d);
        let hc = mhc::HcWeights {
            proj: &w.model.hc_head.proj,
            base: &w.hc_head.base,
            scale: &w.hc_head.scale,
        };
        mhc::hc_collapse(gpu, u, x, hc, rows, d, hc_config(k))?;
        norm::rms_norm(gpu, u, Some(w.norm.ptr()), rows, d, k.eps)?;
        linear::linear(gpu, &w.model.head, u, out, rows)?;
        seq.logit_values = rows * vocab;
        Ok(())
    }

    fn read_logits(&self, seq: &CudaSeqCache, out: &mut Vec<f32>) -> Result<(), OpError> {
        out.clear();
        out.resize(seq.logit_values, 0.0);
        if let Some(buffer) = seq.logits.buffer() {
            buffer.read_f32_into(out)?;
        }
        Ok(())
    }

    fn sample(
        &self,
        seq: &mut CudaSeqCache,
        vocab: usize,
        cut: &SampleCut,
        draw: Option<f64>,
    ) -> Result<Option<u32>, OpError> {
        let Some(first) = seq.logit_values.checked_sub(vocab) else {
            return Ok(None);
        };
        let gpu = &self.gpu;
        let row = seq.logits.ptr().offset(4 * first);
        let token = seq.sampled.at_least(gpu, 4)?;
        match draw {
            None => sample::sample_argmax(gpu, row, vocab, token)?,
            Some(u) => {
                let scratch = seq
                    .sample_scratch
                    .at_least(gpu, sample::scratch_bytes(vocab))?;
                sample::sample(gpu, row, vocab, cut, u, scratch, token)?;
            }
        }
        match seq.sampled.buffer() {
            Some(buffer) => Ok(sample::read_token(buffer)?),
            None => Ok(None),
        }
    }
}

/// The hyper-connection settings as the mHC kernels take them.
fn hc_config(k: &ModelConstants) -> mhc::HcConfig {
    mhc::HcConfig {
        streams: k.hc.hc_mult,
        sinkhorn_iters: k.hc.hc_sinkhorn_iters,
        hc_eps: k.hc.hc_eps,
        norm_eps: k.hc.rms_norm_eps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the feature the backend says it was not built in; with it, a machine without a
    /// CUDA driver (every CI machine) is told so in one line, and nothing panics.
    #[test]
    fn says_why_there_is_no_gpu() {
        let Err(why) = CudaBackend::new() else {
            // A machine with a GPU: nothing to check here (`dsv4 selftest --device cuda` is).
            return;
        };
        let message = why.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.starts_with("--device cuda: "), "{message}");
        #[cfg(not(feature = "cuda"))]
        assert_eq!(why, CudaUnavailable::NotBuilt);
        #[cfg(feature = "cuda")]
        assert!(matches!(why, CudaUnavailable::NoGpu(_)), "{message}");
    }
}
