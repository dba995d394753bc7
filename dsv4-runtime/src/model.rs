//! The whole model (docs/model.md §4.1), readable top to bottom: embed into n streams, then per layer
//! hc_pre → attn_norm → attention → hc_post and hc_pre → ffn_norm → MoE → hc_post, then hc_head →
//! norm → head. One call processes a chunk of consecutive tokens of one request.

use dsv4_kernels::panel::PackedLinear;
use std::ffi::CString;

use dsv4_kernels::ops::{rms_norm, RopeFrequencies, Yarn};
use dsv4_kernels::threads;
use dsv4_model::{ModelConfig, RopeKind};

use dsv4_cache::{
    BlockBudget, BlockPool, BlockSizeError, BudgetOverflow, CacheDtypes, ModelCacheSchema,
    StoreError,
};

use crate::attention::{attention, AttentionDims, AttentionStep};
use crate::memory;
use crate::mhc::{hc_pre, HcConfig, HcMixes};
use crate::moe::{moe, MoeConfig};
use crate::profile;
use crate::state::SeqState;
use crate::weights::ModelWeights;
use crate::workspace::Workspace;
use dsv4_kernels::numerics::Numerics;
use dsv4_kernels::scratch::zeroed;

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
    /// The cache could not take an entry.
    #[error(transparent)]
    Cache(#[from] StoreError),
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
    /// The cache would not fit in the memory the machine has left.
    #[error("a request of {tokens} tokens needs {needed} bytes of cache (windows, compressor tails and pages), more than the {available} bytes of memory available")]
    OutOfMemory {
        /// Tokens asked for.
        tokens: usize,
        /// Bytes its cache takes at most.
        needed: u64,
        /// `MemAvailable`.
        available: u64,
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

/// A model ready to run: its weights and everything derived once from the config.
pub struct Model<'a> {
    weights: ModelWeights<'a>,
    config: ModelConfig,
    main_rope: RopeFrequencies,
    compress_rope: RopeFrequencies,
    hc: HcConfig,
    attention: AttentionDims,
    moe: MoeConfig,
    numerics: Numerics,
    schema: ModelCacheSchema,
    /// NVTX range name of each layer ("layer 0", ...), made once.
    layer_ranges: Vec<CString>,
}

impl<'a> Model<'a> {
    /// A model over bound weights, computing in `numerics`, caching in `dtypes` with blocks of
    /// `block_size` tokens (a multiple of every compress ratio).
    pub fn new(
        config: &ModelConfig,
        weights: ModelWeights<'a>,
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
        let layer_ranges = (0..weights.layers.len())
            .map(|i| CString::new(format!("layer {i}")).unwrap_or_default())
            .collect();
        Ok(Self {
            layer_ranges,
            weights,
            schema,
            main_rope: RopeFrequencies::new(dr, config.rope_theta, None),
            compress_rope: RopeFrequencies::new(dr, config.compress_rope_theta, yarn),
            hc: HcConfig {
                streams: config.hc_mult,
                sinkhorn_iters: config.hc_sinkhorn_iters,
                eps: config.hc_eps as f32,
                norm_eps: config.rms_norm_eps as f32,
            },
            attention: AttentionDims {
                heads: config.num_attention_heads,
                head_dim: config.head_dim,
                rope_dim: dr,
                groups: config.o_groups,
                group_rank: config.o_lora_rank,
                window: config.sliding_window,
                indexer_heads: config.index_n_heads,
                indexer_dim: config.index_head_dim,
                indexer_topk: config.index_topk,
                eps: config.rms_norm_eps as f32,
            },
            moe: MoeConfig {
                experts_per_token: config.num_experts_per_tok,
                routed_scaling_factor: config.routed_scaling_factor as f32,
                normalize: config.norm_topk_prob,
                swiglu_limit: config.swiglu_limit as f32,
            },
            config: config.clone(),
            numerics,
        })
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
    pub fn new_request(&self, tokens: usize) -> Result<SeqState, RequestError> {
        let max = self.config.max_position_embeddings;
        if tokens > max {
            return Err(RequestError::TooLong { tokens, max });
        }
        let budget = BlockBudget::new(&self.schema, tokens, 1, 0)?;
        if let Some(available) = memory::available_bytes() {
            if budget.total_bytes > available {
                return Err(RequestError::OutOfMemory {
                    tokens,
                    needed: budget.total_bytes,
                    available,
                });
            }
        }
        let pool = BlockPool::with_budget(budget.paged_bytes);
        Ok(SeqState::new(&self.schema, pool))
    }

    /// Runs `tokens` (the next positions of `state`'s request) and returns logits: `V` values
    /// per position asked for, f32.
    pub fn forward(
        &self,
        tokens: &[u32],
        state: &mut SeqState,
        which: Logits,
    ) -> Result<Vec<f32>, ForwardError> {
        let mut logits = Vec::new();
        self.forward_into(tokens, state, which, &mut logits)?;
        Ok(logits)
    }

    /// [`Self::forward`] into `logits` (resized, its capacity reused). Every intermediate
    /// lives in buffers `state` keeps, so a decode step allocates nothing once they have grown
    /// (paged blocks aside: a stream takes a page when it fills one).
    pub fn forward_into(
        &self,
        tokens: &[u32],
        state: &mut SeqState,
        which: Logits,
        logits: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        // The whole call runs on a worker thread, so its many parallel regions start cheaply.
        threads::on_worker(|| self.forward_on_worker(tokens, state, which, logits))
    }

    /// [`Self::forward_into`], on a worker thread.
    fn forward_on_worker(
        &self,
        tokens: &[u32],
        state: &mut SeqState,
        which: Logits,
        logits: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        let c = &self.config;
        let (d, n, vocab) = (c.hidden_size, c.hc_mult, c.vocab_size);
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
        let w = &self.weights;
        let SeqState {
            layers,
            pool,
            workspace,
            position,
        } = state;
        let Workspace {
            x,
            h,
            y,
            u,
            mixes,
            attention: attention_buffers,
            moe: moe_buffers,
        } = workspace;

        // Every stream starts as the token's embedding.
        let x = zeroed(x, t_len * n * d);
        for (xt, &id) in x.chunks_mut(n * d).zip(tokens) {
            let (first, rest) = xt.split_at_mut(d);
            w.embed.row(id as usize, first);
            for stream in rest.chunks_mut(d) {
                stream.copy_from_slice(first);
            }
        }

        let last_layer = w.layers.len().saturating_sub(1);
        for (i, (layer, layer_state)) in w.layers.iter().zip(layers.iter_mut()).enumerate() {
            let _layer = profile::range(&self.layer_ranges[i]);
            let rope = match layer.spec.rope {
                RopeKind::Main => &self.main_rope,
                RopeKind::Compress => &self.compress_rope,
            };
            // Past the last layer only the logits rows matter: when that is the last token,
            // the last layer caches every token but computes one output.
            let first_output = match which {
                Logits::Last if i == last_layer => t_len.saturating_sub(1),
                _ => 0,
            };
            let streams = first_output * n * d;
            // Attention sublayer.
            let attention_range = profile::range(c"attention");
            self.enter(x, &layer.hc_attn, &layer.attn_norm, mixes, h);
            let step = AttentionStep {
                ratio: layer.spec.attention.ratio(),
                p0,
                first_output,
                state: layer_state,
                pool,
                rope,
            };
            attention(
                &layer.attn,
                h,
                step,
                self.attention,
                self.numerics,
                attention_buffers,
                y,
            )?;
            mixes.leave(&mut x[streams..], y, d, first_output);
            drop(attention_range);
            // MoE sublayer.
            let _moe = profile::range(c"moe");
            let x_out = &mut x[streams..];
            self.enter(x_out, &layer.hc_ffn, &layer.ffn_norm, mixes, h);
            let tokens_out = &tokens[first_output..];
            moe(
                &layer.moe,
                h,
                tokens_out,
                self.moe,
                self.numerics,
                moe_buffers,
                y,
            );
            mixes.leave(x_out, y, d, 0);
        }
        *position += t_len;

        let _head = profile::range(c"head");
        let first_row = match which {
            Logits::All => 0,
            Logits::Last => t_len.saturating_sub(1),
        };
        let u = zeroed(u, (t_len - first_row) * d);
        for (out, xt) in u.chunks_mut(d).zip(x.chunks(n * d).skip(first_row)) {
            mixes.collapse(xt, &w.hc_head, self.hc, out);
            rms_norm(out, Some(&w.norm), c.rms_norm_eps as f32);
        }
        w.head
            .forward(u, zeroed(logits, (t_len - first_row) * vocab));
        Ok(())
    }

    /// Mixes each token's streams `x` into a sublayer input `h` (`T × D`) and norms it; the
    /// mixes stay in `mixes` for the way back.
    fn enter(
        &self,
        x: &[f32],
        hc: &crate::weights::HcWeights<PackedLinear>,
        norm: &[f32],
        mixes: &mut HcMixes,
        h: &mut Vec<f32>,
    ) {
        let d = norm.len();
        let n = self.hc.streams;
        mixes.compute(x, d, hc, self.hc);
        let h = zeroed(h, x.len() / n);
        for (t, (xt, ht)) in x.chunks(n * d).zip(h.chunks_mut(d)).enumerate() {
            hc_pre(xt, mixes.get(t).pre, ht);
            rms_norm(ht, Some(norm), self.config.rms_norm_eps as f32);
        }
    }
}
