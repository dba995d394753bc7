//! Flags shared by the commands that run the model.

use anyhow::Result;
use clap::{Args, ValueEnum};
use dsv4_cache::{CacheDtypes, IndexerCacheDtype, KvCacheDtype, DEFAULT_BLOCK_SIZE};
use dsv4_runtime::{Backend, CpuBackend, LoadedCheckpoint, Model, Numerics};

use crate::sharing_args::SharingArgs;

/// `--numerics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NumericsArg {
    /// f32 throughout, weights dequantized exactly (matches transformers in float32).
    Exact,
    /// The release's quantization simulations (FP8 activations, FP8 KV nope, FP4 indexer).
    Reference,
}

/// Numerics and cache settings of a run.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Numerics mode.
    #[arg(long, value_enum, default_value_t = NumericsArg::Exact)]
    numerics: NumericsArg,
    /// Format of cached KV entries [default: f32 with exact numerics, bf16 with reference].
    #[arg(long, value_name = "f32|bf16|fp8")]
    kv_cache_dtype: Option<KvCacheDtype>,
    /// Format of cached indexer keys [default: f32 with exact numerics, bf16 with reference].
    #[arg(long, value_name = "f32|bf16|fp8|fp4")]
    indexer_cache_dtype: Option<IndexerCacheDtype>,
    /// Tokens per cache block; a multiple of every compress ratio.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BLOCK_SIZE)]
    block_size: usize,
    /// The request's cache-sharing policy (as `dsv4 plan` prices it).
    #[command(flatten)]
    pub sharing: SharingArgs,
}

impl EngineArgs {
    /// The runtime's numerics mode.
    pub fn numerics(&self) -> Numerics {
        match self.numerics {
            NumericsArg::Exact => Numerics::Exact,
            NumericsArg::Reference => Numerics::Reference,
        }
    }

    /// The model over a loaded checkpoint on the CPU backend.
    pub fn model<'a>(&self, loaded: &'a LoadedCheckpoint) -> Result<Model<'a>> {
        self.model_on(CpuBackend, loaded)
    }

    /// The model over a loaded checkpoint on `backend`, its weights uploaded there.
    pub fn model_on<'a, B: Backend>(
        &self,
        backend: B,
        loaded: &'a LoadedCheckpoint,
    ) -> Result<Model<'a, B>> {
        let weights = backend.upload(loaded)?;
        let model = Model::with_backend(
            backend,
            &loaded.config,
            weights,
            self.numerics(),
            self.cache_dtypes(),
            self.block_size,
        )?;
        Ok(model)
    }

    pub fn cache_dtypes(&self) -> CacheDtypes {
        let (kv, indexer) = match self.numerics {
            NumericsArg::Exact => (KvCacheDtype::F32, IndexerCacheDtype::F32),
            NumericsArg::Reference => (KvCacheDtype::Bf16, IndexerCacheDtype::Bf16),
        };
        CacheDtypes {
            kv: self.kv_cache_dtype.unwrap_or(kv),
            indexer: self.indexer_cache_dtype.unwrap_or(indexer),
        }
    }
}
