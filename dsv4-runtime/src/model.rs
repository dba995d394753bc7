//! The whole model (spec §4.1), readable top to bottom: embed into n streams, then per layer
//! hc_pre → attn_norm → attention → hc_post and hc_pre → ffn_norm → MoE → hc_post, then hc_head →
//! norm → head. One call processes a chunk of consecutive tokens of one request.

use dsv4_kernels::ops::{rms_norm, RopeFrequencies, Yarn};
use dsv4_model::{ModelConfig, RopeKind};

use dsv4_cache::{BlockPool, BlockSizeError, CacheDtypes, ModelCacheSchema, StoreError};

use crate::attention::{attention, AttentionDims, AttentionStep};
use crate::mhc::{hc_head, hc_mix, hc_post, hc_pre, HcConfig};
use crate::moe::{moe, MoeConfig};
use crate::numerics::Numerics;
use crate::profile;
use crate::state::SeqState;
use crate::weights::ModelWeights;

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
        Ok(Self {
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
                index_heads: config.index_n_heads,
                index_dim: config.index_head_dim,
                index_topk: config.index_topk,
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

    /// A fresh per-request state taking pages from `pool`.
    pub fn new_state(&self, pool: BlockPool) -> SeqState {
        SeqState::new(&self.schema, pool)
    }

    /// Runs `tokens` (the next positions of `state`'s request) and returns logits: `V` values
    /// per position asked for, f32.
    pub fn forward(
        &self,
        tokens: &[u32],
        state: &mut SeqState,
        which: Logits,
    ) -> Result<Vec<f32>, ForwardError> {
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

        // Every stream starts as the token's embedding.
        let mut x = vec![0.0f32; t_len * n * d];
        let mut row = vec![0.0f32; d];
        for (t, &id) in tokens.iter().enumerate() {
            w.embed.row(id as usize, &mut row);
            for s in 0..n {
                x[(t * n + s) * d..(t * n + s + 1) * d].copy_from_slice(&row);
            }
        }

        let SeqState { layers, pool, .. } = state;
        let last_layer = w.layers.len().saturating_sub(1);
        for (i, (layer, layer_state)) in w.layers.iter().zip(layers.iter_mut()).enumerate() {
            // Past the last layer only the logits rows matter: when that is the last token,
            // the last layer caches every token but computes one output.
            let first_output = match which {
                Logits::Last if i == last_layer => t_len - 1,
                _ => 0,
            };
            let streams = first_output * n * d;
            let _layer = profile::range_fmt(format_args!("layer {i}"));
            let rope = match layer.spec.rope {
                RopeKind::Main => &self.main_rope,
                RopeKind::Compress => &self.compress_rope,
            };
            // Attention sublayer.
            let attention_range = profile::range("attention");
            let (h, mixes) = self.enter(&x, &layer.hc_attn, &layer.attn_norm);
            let step = AttentionStep {
                ratio: layer.spec.attention.ratio(),
                p0,
                first_output,
                state: layer_state,
                pool,
                rope,
            };
            let y = attention(&layer.attn, &h, step, self.attention, self.numerics)?;
            Self::leave(&mut x[streams..], &y, &mixes[first_output..], n * d);
            drop(attention_range);
            // MoE sublayer.
            let _moe = profile::range("moe");
            let x_out = &mut x[streams..];
            let (h, mixes) = self.enter(x_out, &layer.hc_ffn, &layer.ffn_norm);
            let y = moe(
                &layer.moe,
                &h,
                &tokens[first_output..],
                self.moe,
                self.numerics,
            );
            Self::leave(x_out, &y, &mixes, n * d);
        }
        state.position += t_len;

        let _head = profile::range("head");
        let rows: Vec<usize> = match which {
            Logits::All => (0..t_len).collect(),
            Logits::Last => t_len.checked_sub(1).into_iter().collect(),
        };
        let mut u = vec![0.0f32; rows.len() * d];
        for (i, &t) in rows.iter().enumerate() {
            let out = &mut u[i * d..(i + 1) * d];
            hc_head(&x[t * n * d..(t + 1) * n * d], &w.hc_head, self.hc, out);
            rms_norm(out, Some(&w.norm), c.rms_norm_eps as f32);
        }
        Ok(w.head.forward_vec(&u))
    }

    /// Mixes each token's streams into a sublayer input and norms it; returns the inputs
    /// (`T × D`) and each token's mix.
    fn enter(
        &self,
        x: &[f32],
        hc: &crate::weights::HcWeights,
        norm: &[f32],
    ) -> (Vec<f32>, Vec<crate::mhc::HcMix>) {
        let d = norm.len();
        let streams = self.hc.streams * d;
        let mut h = vec![0.0f32; x.len() / self.hc.streams];
        let mixes = x
            .chunks(streams)
            .zip(h.chunks_mut(d))
            .map(|(xt, ht)| {
                let mix = hc_mix(xt, hc, self.hc);
                hc_pre(xt, &mix.pre, ht);
                rms_norm(ht, Some(norm), self.config.rms_norm_eps as f32);
                mix
            })
            .collect();
        (h, mixes)
    }

    /// Folds a sublayer's output back into every token's streams.
    fn leave(x: &mut [f32], y: &[f32], mixes: &[crate::mhc::HcMix], streams: usize) {
        let d = y.len() / mixes.len().max(1);
        for ((xt, yt), mix) in x.chunks_mut(streams).zip(y.chunks(d)).zip(mixes) {
            hc_post(xt, yt, mix);
        }
    }
}
