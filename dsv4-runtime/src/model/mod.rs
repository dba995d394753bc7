//! The whole model over a backend (docs/model.md §4.1), readable top to bottom: embed into n
//! streams, then per layer hc_pre → attn_norm → attention → hc_post and hc_pre → ffn_norm → MoE
//! → hc_post, then hc_head → norm → head, each step one of the backend's ops. One call
//! processes a chunk of consecutive tokens of one request.

pub mod attention;
pub mod load;
pub mod mhc;
pub mod moe;
pub mod state;
pub mod weights;
pub mod workspace;

use std::borrow::Cow;
use std::ffi::CString;

use dsv4_cache::{
    BlockBudget, BlockSizeError, BudgetOverflow, CacheDtypes, ModelCacheSchema, SchemaError,
    Sharing,
};
use dsv4_kernels::moe::Routing;
use dsv4_kernels::numerics::Numerics;
use dsv4_kernels::ops::{RopeFrequencies, Yarn};
use dsv4_kernels::sample::SampleCut;
use dsv4_kernels::threads;
use dsv4_model::{LayerSchedule, LayerSpec, ModelConfig, RopeKind};

use crate::backend::{
    AttentionAt, Backend, CpuBackend, ModelConstants, OpError, SeqState, Sublayer,
};
use crate::model::attention::AttentionDims;
use crate::model::mhc::HcConfig;
use crate::model::moe::MoeConfig;
use crate::model::weights::ModelWeights;
use crate::profile;

/// Why a forward call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// A token id outside the vocabulary.
    #[error(
        "token id {id} at position {position} is out of range: the vocabulary has {vocab} ids"
    )]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Its absolute position.
        position: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// An op of the backend failed (the cache could not take an entry, the device failed).
    #[error(transparent)]
    Backend(#[from] OpError),
    /// The request would pass the model's context.
    #[error("position {position} is past the model's context of {max} tokens")]
    ContextFull {
        /// The first position that does not fit.
        position: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
}

/// Why a request's state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The backend could not make the request's cache (out of device memory).
    #[error(transparent)]
    Backend(#[from] OpError),
    /// More tokens than the model supports.
    #[error("a request of {tokens} tokens is longer than the model's context of {max}")]
    TooLong {
        /// Tokens asked for.
        tokens: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// Sizes beyond 64 bits.
    #[error(transparent)]
    TooLarge(#[from] BudgetOverflow),
    /// A sharing policy that cannot be honoured.
    #[error(transparent)]
    Sharing(#[from] SchemaError),
    /// The cache would not fit in the memory the machine has left.
    #[error("a request of {tokens} tokens needs {needed} bytes of cache (windows, compressor tails and pages), more than the {available} bytes of {memory} memory available; `dsv4 plan --context N` shows what a shorter context or a smaller cache dtype needs")]
    OutOfMemory {
        /// Tokens asked for.
        tokens: usize,
        /// Bytes its cache takes at most.
        needed: u64,
        /// Bytes free where the backend keeps caches.
        available: u64,
        /// Which memory that is ("host", "device").
        memory: &'static str,
    },
}

/// Which positions of a chunk need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every position (scoring).
    All,
    /// Only the last (generation).
    Last,
}

/// A model ready to run on backend `B`: its weights as the backend holds them and everything
/// derived once from the config.
pub struct Model<'a, B: Backend = CpuBackend> {
    backend: B,
    weights: B::Weights<'a>,
    config: ModelConfig,
    constants: ModelConstants,
    /// Each decoder layer's place in the schedule.
    layers: Vec<LayerSpec>,
    schema: ModelCacheSchema,
    /// NVTX range name of each layer ("layer 0", ...), made once.
    layer_ranges: Vec<CString>,
}

impl<'a> Model<'a> {
    /// A model on the CPU backend over bound weights, computing in `numerics`, caching in
    /// `dtypes` with blocks of `block_size` tokens (a multiple of every compress ratio).
    pub fn new(
        config: &ModelConfig,
        weights: ModelWeights<'a>,
        numerics: Numerics,
        dtypes: CacheDtypes,
        block_size: usize,
    ) -> Result<Self, BlockSizeError> {
        Self::with_backend(CpuBackend, config, weights, numerics, dtypes, block_size)
    }
}

impl<'a, B: Backend> Model<'a, B> {
    /// A model on `backend` over weights it holds ([`Backend::upload`]); see [`Model::new`].
    pub fn with_backend(
        backend: B,
        config: &ModelConfig,
        weights: B::Weights<'a>,
        numerics: Numerics,
        dtypes: CacheDtypes,
        block_size: usize,
    ) -> Result<Self, BlockSizeError> {
        let schema = ModelCacheSchema::new(config, dtypes, block_size)?;
        let dr = config.qk_rope_head_dim;
        let yarn = config.rope_scaling.as_ref().map(|y| Yarn {
            factor: y.factor,
            original_max_position_embeddings: y.original_max_position_embeddings as f64,
            beta_fast: y.beta_fast,
            beta_slow: y.beta_slow,
        });
        let layers = LayerSchedule::new(config).layers;
        let layer_ranges = (0..layers.len())
            .map(|i| CString::new(format!("layer {i}")).unwrap_or_default())
            .collect();
        let eps = config.rms_norm_eps as f32;
        let constants = ModelConstants {
            main_rope: RopeFrequencies::new(dr, config.rope_theta, None),
            compress_rope: RopeFrequencies::new(dr, config.compress_rope_theta, yarn),
            hc: HcConfig {
                hc_mult: config.hc_mult,
                hc_sinkhorn_iters: config.hc_sinkhorn_iters,
                hc_eps: config.hc_eps as f32,
                rms_norm_eps: eps,
            },
            attention: AttentionDims {
                num_attention_heads: config.num_attention_heads,
                head_dim: config.head_dim,
                qk_rope_head_dim: dr,
                o_groups: config.o_groups,
                o_lora_rank: config.o_lora_rank,
                sliding_window: config.sliding_window,
                index_n_heads: config.index_n_heads,
                index_head_dim: config.index_head_dim,
                index_topk: config.index_topk,
                rms_norm_eps: eps,
            },
            moe: MoeConfig {
                routing: Routing {
                    num_experts_per_tok: config.num_experts_per_tok,
                    norm_topk_prob: config.norm_topk_prob,
                    routed_scaling_factor: config.routed_scaling_factor as f32,
                },
                swiglu_limit: config.swiglu_limit as f32,
            },
            numerics,
            hidden_size: config.hidden_size,
            eps,
        };
        Ok(Self {
            backend,
            weights,
            config: config.clone(),
            constants,
            layers,
            schema,
            layer_ranges,
        })
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The cache layout requests of this model use.
    pub fn cache_schema(&self) -> &ModelCacheSchema {
        &self.schema
    }

    /// A fresh state for a request of at most `tokens` tokens. Its cache is priced by the
    /// planner first: refused when longer than the model's context or larger than the memory
    /// available, and its pages are capped at the plan, so nothing a request does can allocate
    /// more cache than was checked here.
    pub fn new_request(&self, tokens: usize) -> Result<SeqState<B>, RequestError> {
        self.new_request_sharing(tokens, Sharing::default())
    }

    /// [`Self::new_request`] for a request following a cache-sharing policy (CLA groups,
    /// indexer reuse): its cache laid out and priced by the schema of that policy, which
    /// `dsv4 plan` prints for the same flags. Other requests are untouched by it.
    pub fn new_request_sharing(
        &self,
        tokens: usize,
        sharing: Sharing,
    ) -> Result<SeqState<B>, RequestError> {
        let (schema, paged_bytes) = self.price(tokens, sharing)?;
        Ok(SeqState {
            position: 0,
            cache: self.backend.new_seq_cache(&schema, paged_bytes)?,
            sharing,
        })
    }

    /// A request of at most `tokens` tokens resuming from `kept` (a request whose tokens are a
    /// prefix of its own): priced as [`Self::new_request`] for its whole length, its cache
    /// `kept`'s with the full pages shared ([`Backend::snapshot`]). Feeding it the rest of its
    /// tokens gives the bits a cold request would.
    pub fn resume(&self, kept: &SeqState<B>, tokens: usize) -> Result<SeqState<B>, RequestError> {
        let (_, paged_bytes) = self.price(tokens.max(kept.position), kept.sharing)?;
        Ok(SeqState {
            position: kept.position,
            cache: self.backend.snapshot(&kept.cache, paged_bytes)?,
            sharing: kept.sharing,
        })
    }

    /// The schema of a request under `sharing` and its page budget for `tokens` tokens, checked
    /// against the model's context and the memory the backend has free.
    fn price(
        &self,
        tokens: usize,
        sharing: Sharing,
    ) -> Result<(Cow<'_, ModelCacheSchema>, u64), RequestError> {
        let max = self.config.max_position_embeddings;
        if tokens > max {
            return Err(RequestError::TooLong { tokens, max });
        }
        let schema = if sharing.is_none() {
            Cow::Borrowed(&self.schema)
        } else {
            let (dtypes, block) = (self.schema.dtypes, self.schema.block_size);
            Cow::Owned(ModelCacheSchema::with_sharing(
                &self.config,
                dtypes,
                block,
                sharing,
            )?)
        };
        let budget = BlockBudget::new(&schema, tokens, 1, 0)?;
        if let Some(free) = self.backend.free_memory() {
            if budget.total_bytes > free.bytes {
                return Err(RequestError::OutOfMemory {
                    tokens,
                    needed: budget.total_bytes,
                    available: free.bytes,
                    memory: free.memory,
                });
            }
        }
        Ok((schema, budget.paged_bytes))
    }

    /// Runs `tokens` (the next positions of `state`'s request) and returns logits: `V` values
    /// per position asked for, f32.
    pub fn forward(
        &self,
        tokens: &[u32],
        state: &mut SeqState<B>,
        which: Logits,
    ) -> Result<Vec<f32>, ForwardError> {
        let mut logits = Vec::new();
        self.forward_into(tokens, state, which, &mut logits)?;
        Ok(logits)
    }

    /// [`Self::forward`] into `logits` (resized, its capacity reused).
    pub fn forward_into(
        &self,
        tokens: &[u32],
        state: &mut SeqState<B>,
        which: Logits,
        logits: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        self.step(tokens, state, which)?;
        self.read_logits(state, logits)
    }

    /// Runs `tokens` (the next positions of `state`'s request), leaving the logits of the
    /// positions asked for where the backend computed them, for [`Self::read_logits`] and
    /// [`Self::sample`]. Every intermediate lives in buffers `state` keeps, so a decode step
    /// allocates nothing once they have grown (paged blocks aside: a stream takes a page when
    /// it fills one).
    pub fn step(
        &self,
        tokens: &[u32],
        state: &mut SeqState<B>,
        which: Logits,
    ) -> Result<(), ForwardError> {
        // The whole call runs on a worker thread, so its many parallel regions start cheaply.
        threads::on_worker(|| self.forward_on_worker(tokens, state, which))
    }

    /// `logits` ← the last step's logits (`V` values per position asked for), on the host.
    pub fn read_logits(
        &self,
        state: &SeqState<B>,
        logits: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        Ok(self.backend.read_logits(&state.cache, logits)?)
    }

    /// The token a draw picks from the last step's last position, where its logits are (see
    /// [`Backend::sample`]); `None` when no logit is a candidate.
    pub fn sample(
        &self,
        state: &mut SeqState<B>,
        cut: &SampleCut,
        draw: Option<f64>,
    ) -> Result<Option<u32>, OpError> {
        let vocab = self.config.vocab_size;
        self.backend.sample(&mut state.cache, vocab, cut, draw)
    }

    /// [`Self::step`], on a worker thread.
    fn forward_on_worker(
        &self,
        tokens: &[u32],
        state: &mut SeqState<B>,
        which: Logits,
    ) -> Result<(), ForwardError> {
        let c = &self.config;
        let vocab = c.vocab_size;
        let p0 = state.position;
        if p0 + tokens.len() > c.max_position_embeddings {
            return Err(ForwardError::ContextFull {
                position: c.max_position_embeddings,
                max: c.max_position_embeddings,
            });
        }
        if let Some((i, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab)
        {
            return Err(ForwardError::TokenOutOfRange {
                id,
                position: p0 + i,
                vocab,
            });
        }
        let t_len = tokens.len();
        let (b, w, k) = (&self.backend, &self.weights, &self.constants);
        let seq = &mut state.cache;
        b.embed(w, k, tokens, seq)?;
        let last_layer = self.layers.len().saturating_sub(1);
        for (i, spec) in self.layers.iter().enumerate() {
            let _layer = profile::range(&self.layer_ranges[i]);
            let rope = match spec.rope {
                RopeKind::Main => &k.main_rope,
                RopeKind::Compress => &k.compress_rope,
            };
            // Past the last layer only the logits rows matter: when that is the last token,
            // the last layer caches every token but computes one output.
            let first_output = match which {
                Logits::Last if i == last_layer => t_len.saturating_sub(1),
                _ => 0,
            };
            let attention_range = profile::range(c"attention");
            b.hc_pre(w, k, Sublayer::Attention(i), 0, seq)?;
            let ratio = spec.attention.ratio();
            let at = AttentionAt {
                layer: i,
                ratio,
                p0,
                first_output,
                rope,
            };
            b.attention(w, k, at, seq)?;
            b.hc_post(k, first_output, seq)?;
            drop(attention_range);
            let _moe = profile::range(c"moe");
            b.hc_pre(w, k, Sublayer::Moe(i), first_output, seq)?;
            b.moe(w, k, i, &tokens[first_output..], seq)?;
            b.hc_post(k, first_output, seq)?;
        }
        state.position += t_len;

        let _head = profile::range(c"head");
        let first_row = match which {
            Logits::All => 0,
            Logits::Last => t_len.saturating_sub(1),
        };
        b.head(w, k, first_row, seq)?;
        Ok(())
    }
}
