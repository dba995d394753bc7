//! `config.json` of a DeepSeek-V4 checkpoint: parsed from the native release spelling or the
//! transformers spelling into one validated [`ModelConfig`] (docs/model.md §1).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::files::{read_text, ReadError};
use crate::json_fields::JsonFields;

mod fields;
use fields::{
    aliased_usize, check_fixed_strings, compress_ratios, expert_dtype, num_hash_layers,
    quantization, rope_head_dim, rope_scaling, rope_theta, scoring_func,
};

/// Largest `config.json` read (the released ones are under 3 KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most MTP stages a config may declare (released models ship 1, later variants 3).
const MAX_MTP_STAGES: usize = 16;
/// Most decoder layers a config may declare (V4-Pro has 61).
const MAX_LAYERS: usize = 1 << 10;
/// Longest context a config may declare (V4 declares 2^20).
const MAX_POSITIONS: usize = 1 << 26;
/// Most routed experts over all layers (V4-Pro: 62 × 384 = 23,808).
const MAX_EXPERT_LAYERS: usize = 1 << 18;
/// Largest compress ratio accepted (HCA's is 128).
const MAX_COMPRESS_RATIO: usize = 1 << 12;
/// Most end-of-sequence ids accepted.
const MAX_EOS_TOKENS: usize = 1 << 10;
/// Why the upper bounds exist, for the error message.
const BOUND_REASON: &str = "the engine's bound, far above any released model";

/// Why a config could not be used; every variant renders as one line naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The text is not JSON.
    #[error("config is not valid JSON: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("config field `{field}` is missing")]
    Missing {
        /// Dotted name of the field.
        field: String,
    },
    /// A field holds a value of the wrong type or out of range.
    #[error("config field `{field}` = {value}: expected {expected}")]
    Invalid {
        /// Dotted name of the field.
        field: String,
        /// The value found, abbreviated.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
}

/// YaRN context extension of the compress RoPE (docs/model.md §4.7); used only by layers with m > 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct YarnScaling {
    /// Context extension factor f (16 in the release).
    pub factor: f64,
    /// Training context the correction range is computed from (65536).
    pub original_max_position_embeddings: usize,
    /// β_fast: rotations per original context above which a pair keeps its frequency (32).
    pub beta_fast: f64,
    /// β_slow: rotations below which a pair is fully interpolated (1).
    pub beta_slow: f64,
}

/// How the router turns gate logits into scores. V4 ships only `sqrtsoftplus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoringFunc {
    /// sqrt(softplus(logit)).
    SqrtSoftplus,
}

/// Storage format of the routed experts named by `expert_dtype` (docs/model.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpertDtype {
    /// Packed E2M1 with one UE8M0 scale per 32 inputs (V4-Flash, V4-Pro).
    Fp4,
    /// E4M3 with 128×128 UE8M0 block scales (V4-Flash-Base).
    Fp8,
}

/// Block-wise FP8 quantization of the dense linears (`quantization_config`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fp8Quantization {
    /// Output × input extent of one scale block ([128, 128] in the release).
    pub weight_block_size: [usize; 2],
}

/// Every field of a V4 config that the engine uses, validated (docs/model.md §1.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// V: rows of `embed` and `head`.
    pub vocab_size: usize,
    /// D: width of the residual streams.
    pub hidden_size: usize,
    /// L: decoder blocks, MTP excluded.
    pub num_hidden_layers: usize,
    /// H: query heads.
    pub num_attention_heads: usize,
    /// Always 1: one shared K=V head.
    pub num_key_value_heads: usize,
    /// Dh: width of q, k=v and o per head.
    pub head_dim: usize,
    /// Dr: rotary dims, the trailing part of each head.
    pub qk_rope_head_dim: usize,
    /// Rq: query latent width.
    pub q_lora_rank: usize,
    /// G: groups of the grouped output projection.
    pub o_groups: usize,
    /// Ro: per-group intermediate width of the output projection.
    pub o_lora_rank: usize,
    /// W: window of raw keys, the current token included.
    pub sliding_window: usize,
    /// Compress ratio per decoder layer, then one per MTP stage (0 = window only, 4 = CSA, else HCA).
    pub compress_ratios: Vec<usize>,
    /// RoPE base of window-only layers.
    pub rope_theta: f64,
    /// RoPE base of compressed layers.
    pub compress_rope_theta: f64,
    /// YaRN of the compress RoPE; `None` means plain RoPE there too.
    pub rope_scaling: Option<YarnScaling>,
    /// Longest context the model supports.
    pub max_position_embeddings: usize,
    /// Hi: Lightning Indexer heads.
    pub index_n_heads: usize,
    /// Di: Lightning Indexer key and query width.
    pub index_head_dim: usize,
    /// Ki: compressed entries a CSA query attends.
    pub index_topk: usize,
    /// n: residual streams of the hyper-connections.
    pub hc_mult: usize,
    /// Sinkhorn iterations of the mHC combination matrix.
    pub hc_sinkhorn_iters: usize,
    /// Epsilon of the mHC weights and normalisations.
    pub hc_eps: f64,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// E: routed experts per MoE layer.
    pub n_routed_experts: usize,
    /// Shared experts per MoE layer (always 1).
    pub n_shared_experts: usize,
    /// K: routed experts per token.
    pub num_experts_per_tok: usize,
    /// I: intermediate width of routed and shared experts.
    pub moe_intermediate_size: usize,
    /// Leading layers that route by the token-id table `tid2eid`.
    pub num_hash_layers: usize,
    /// Router score function.
    pub scoring_func: ScoringFunc,
    /// Multiplier of the normalised routing weights.
    pub routed_scaling_factor: f64,
    /// Whether routing weights are normalised over the selected experts.
    pub norm_topk_prob: bool,
    /// SwiGLU clamp (0 = none).
    pub swiglu_limit: f64,
    /// MTP stages shipped after the decoder.
    pub num_nextn_predict_layers: usize,
    /// FP8 block quantization of dense linears; `None` for unquantized checkpoints.
    pub quantization: Option<Fp8Quantization>,
    /// Declared routed-expert format, when the config names one (tensors decide at load).
    pub expert_dtype: Option<ExpertDtype>,
    /// Beginning-of-sequence token, if declared.
    pub bos_token_id: Option<usize>,
    /// End-of-sequence tokens (one or more).
    pub eos_token_ids: Vec<usize>,
    /// Whether `head` shares `embed`'s storage.
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Reads and validates a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path, MAX_CONFIG_BYTES, "a config")?;
        Self::from_json_str(&text)
    }

    /// Parses and validates config JSON text in either spelling.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_json(&value)
    }

    /// Parses and validates an already-decoded JSON value.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let f = JsonFields::root(value, "config")?;
        let num_hidden_layers = f.usize("num_hidden_layers")?;
        if num_hidden_layers > MAX_LAYERS {
            // Checked first: the per-layer lists are read against it.
            return Err(f.invalid(
                "num_hidden_layers",
                &Value::from(num_hidden_layers),
                &format!("a positive integer at most {MAX_LAYERS} ({BOUND_REASON})"),
            ));
        }
        let head_dim = f.usize("head_dim")?;
        let config = Self {
            vocab_size: f.usize("vocab_size")?,
            hidden_size: f.usize("hidden_size")?,
            num_hidden_layers,
            num_attention_heads: f.usize("num_attention_heads")?,
            num_key_value_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(1),
            head_dim,
            qk_rope_head_dim: rope_head_dim(&f, head_dim)?,
            q_lora_rank: f.usize("q_lora_rank")?,
            o_groups: f.usize("o_groups")?,
            o_lora_rank: f.usize("o_lora_rank")?,
            sliding_window: f.usize("sliding_window")?,
            compress_ratios: compress_ratios(&f, num_hidden_layers)?,
            rope_theta: rope_theta(&f, "rope_theta", "main")?,
            compress_rope_theta: rope_theta(&f, "compress_rope_theta", "compress")?,
            rope_scaling: rope_scaling(&f)?,
            max_position_embeddings: f.usize("max_position_embeddings")?,
            index_n_heads: f.usize("index_n_heads")?,
            index_head_dim: f.usize("index_head_dim")?,
            index_topk: f.usize("index_topk")?,
            hc_mult: f.usize("hc_mult")?,
            hc_sinkhorn_iters: f.usize("hc_sinkhorn_iters")?,
            hc_eps: f.f64("hc_eps")?,
            rms_norm_eps: f.f64("rms_norm_eps")?,
            n_routed_experts: aliased_usize(&f, "n_routed_experts", "num_local_experts")?,
            n_shared_experts: f.opt_usize("n_shared_experts")?.unwrap_or(1),
            num_experts_per_tok: f.usize("num_experts_per_tok")?,
            moe_intermediate_size: aliased_usize(&f, "moe_intermediate_size", "intermediate_size")?,
            num_hash_layers: num_hash_layers(&f, num_hidden_layers)?,
            scoring_func: scoring_func(&f)?,
            routed_scaling_factor: f.f64("routed_scaling_factor")?,
            norm_topk_prob: f.opt_bool("norm_topk_prob")?.unwrap_or(true),
            swiglu_limit: f.opt_f64("swiglu_limit")?.unwrap_or(0.0),
            num_nextn_predict_layers: f.opt_usize("num_nextn_predict_layers")?.unwrap_or(0),
            quantization: quantization(&f)?,
            expert_dtype: expert_dtype(&f)?,
            bos_token_id: f.opt_usize("bos_token_id")?,
            eos_token_ids: f.opt_token_ids("eos_token_id")?,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        };
        check_fixed_strings(&f)?;
        config.validate()?;
        Ok(config)
    }

    /// Compress ratio of decoder layer `layer` (`compress_ratios[..L]`).
    pub fn decoder_ratios(&self) -> &[usize] {
        &self.compress_ratios[..self.num_hidden_layers]
    }

    /// Compress ratio of MTP stage `stage`: the entry after the decoder's, 0 when the list stops.
    pub fn mtp_ratio(&self, stage: usize) -> usize {
        self.compress_ratios
            .get(self.num_hidden_layers + stage)
            .copied()
            .unwrap_or(0)
    }

    /// The counts and widths that must be positive, each with its upper bound. Every bound is at
    /// least eight times V4-Pro's value (vocab 129,280; hidden 7,168; 61 layers; 128 heads of 512;
    /// window 128; 2^20 positions; index top-k 1,024; 384 experts of 3,072; 20 Sinkhorn
    /// iterations) and keeps every size the engine derives from them within 64 bits and within
    /// reason, so a hostile config is refused before anything is allocated.
    fn bounded_fields(&self) -> [(&'static str, usize, usize); 19] {
        [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 12),
            ("qk_rope_head_dim", self.qk_rope_head_dim, 1 << 12),
            ("q_lora_rank", self.q_lora_rank, 1 << 16),
            ("o_groups", self.o_groups, 1 << 10),
            ("o_lora_rank", self.o_lora_rank, 1 << 16),
            ("sliding_window", self.sliding_window, 1 << 16),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
            ("index_n_heads", self.index_n_heads, 1 << 10),
            ("index_head_dim", self.index_head_dim, 1 << 12),
            ("index_topk", self.index_topk, 1 << 16),
            ("hc_mult", self.hc_mult, 1 << 6),
            ("hc_sinkhorn_iters", self.hc_sinkhorn_iters, 1 << 10),
            ("n_routed_experts", self.n_routed_experts, 1 << 14),
            ("num_experts_per_tok", self.num_experts_per_tok, 1 << 10),
            ("moe_intermediate_size", self.moe_intermediate_size, 1 << 18),
        ]
    }

    /// Checks ranges and the consistency between fields; the first problem is returned.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, value: String, expected: &str| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                value,
                expected: expected.to_string(),
            })
        };
        for &(field, value, max) in &self.bounded_fields() {
            if value == 0 || value > max {
                let expected = format!("a positive integer at most {max} ({})", BOUND_REASON);
                return bad(field, value.to_string(), &expected);
            }
        }
        if self.num_nextn_predict_layers > MAX_MTP_STAGES {
            return bad(
                "num_nextn_predict_layers",
                self.num_nextn_predict_layers.to_string(),
                &format!("at most {MAX_MTP_STAGES} ({BOUND_REASON})"),
            );
        }
        // The manifest lists six tensors per expert per layer: bound the product too.
        let expert_layers = (self.num_hidden_layers + self.num_nextn_predict_layers)
            .saturating_mul(self.n_routed_experts);
        if expert_layers > MAX_EXPERT_LAYERS {
            return bad(
                "n_routed_experts",
                self.n_routed_experts.to_string(),
                &format!(
                    "at most {} with {} decoder and MTP layers (layers x experts at most {MAX_EXPERT_LAYERS}, {BOUND_REASON})",
                    MAX_EXPERT_LAYERS / (self.num_hidden_layers + self.num_nextn_predict_layers),
                    self.num_hidden_layers + self.num_nextn_predict_layers
                ),
            );
        }
        let max_ratios = self.num_hidden_layers + MAX_MTP_STAGES;
        if self.compress_ratios.len() > max_ratios {
            return bad(
                "compress_ratios",
                format!("{} entries", self.compress_ratios.len()),
                &format!("at most num_hidden_layers + {MAX_MTP_STAGES} = {max_ratios} entries"),
            );
        }
        if let Some(ratio) = self
            .compress_ratios
            .iter()
            .find(|r| **r > MAX_COMPRESS_RATIO)
        {
            return bad(
                "compress_ratios",
                format!("an entry of {ratio}"),
                &format!("ratios of at most {MAX_COMPRESS_RATIO} ({BOUND_REASON})"),
            );
        }
        if self.eos_token_ids.len() > MAX_EOS_TOKENS {
            return bad(
                "eos_token_id",
                format!("{} ids", self.eos_token_ids.len()),
                &format!("at most {MAX_EOS_TOKENS} ids"),
            );
        }
        if self.num_key_value_heads != 1 {
            return bad(
                "num_key_value_heads",
                self.num_key_value_heads.to_string(),
                "1 (V4 shares one K=V head across all query heads)",
            );
        }
        if self.n_shared_experts != 1 {
            return bad(
                "n_shared_experts",
                self.n_shared_experts.to_string(),
                "1 (V4 has exactly one shared expert)",
            );
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) || self.qk_rope_head_dim >= self.head_dim {
            return bad(
                "qk_rope_head_dim",
                self.qk_rope_head_dim.to_string(),
                &format!(
                    "an even number below head_dim = {} (rotary pairs on the trailing dims)",
                    self.head_dim
                ),
            );
        }
        if self.qk_rope_head_dim > self.index_head_dim {
            return bad(
                "index_head_dim",
                self.index_head_dim.to_string(),
                &format!(
                    "at least qk_rope_head_dim = {} (indexer keys carry the rotary dims)",
                    self.qk_rope_head_dim
                ),
            );
        }
        if !self.index_head_dim.is_power_of_two() {
            return bad(
                "index_head_dim",
                self.index_head_dim.to_string(),
                "a power of two (the indexer's Hadamard rotation needs one)",
            );
        }
        if !self.num_attention_heads.is_multiple_of(self.o_groups) {
            return bad(
                "o_groups",
                self.o_groups.to_string(),
                &format!(
                    "a divisor of num_attention_heads = {}",
                    self.num_attention_heads
                ),
            );
        }
        if self.num_experts_per_tok > self.n_routed_experts {
            return bad(
                "num_experts_per_tok",
                self.num_experts_per_tok.to_string(),
                &format!("at most n_routed_experts = {}", self.n_routed_experts),
            );
        }
        if self.num_hash_layers > self.num_hidden_layers {
            return bad(
                "num_hash_layers",
                self.num_hash_layers.to_string(),
                &format!("at most num_hidden_layers = {}", self.num_hidden_layers),
            );
        }
        for (field, value) in [("hc_eps", self.hc_eps), ("rms_norm_eps", self.rms_norm_eps)] {
            if value <= 0.0 {
                return bad(field, value.to_string(), "a positive number");
            }
        }
        for (field, value) in [
            ("rope_theta", self.rope_theta),
            ("compress_rope_theta", self.compress_rope_theta),
            ("routed_scaling_factor", self.routed_scaling_factor),
        ] {
            if value <= 0.0 {
                return bad(field, value.to_string(), "a positive number");
            }
        }
        if self.swiglu_limit < 0.0 {
            return bad(
                "swiglu_limit",
                self.swiglu_limit.to_string(),
                "0 (no clamp) or a positive limit",
            );
        }
        if let Some(yarn) = &self.rope_scaling {
            if yarn.factor < 1.0 {
                return bad(
                    "rope_scaling.factor",
                    yarn.factor.to_string(),
                    "a factor of at least 1",
                );
            }
            let original = yarn.original_max_position_embeddings;
            if original == 0 || original > MAX_POSITIONS {
                return bad(
                    "rope_scaling.original_max_position_embeddings",
                    original.to_string(),
                    &format!("a positive integer at most {MAX_POSITIONS} ({BOUND_REASON})"),
                );
            }
            if !(yarn.beta_fast > yarn.beta_slow && yarn.beta_slow > 0.0) {
                return bad(
                    "rope_scaling.beta_fast",
                    yarn.beta_fast.to_string(),
                    &format!(
                        "a number above beta_slow = {}, which must be positive",
                        yarn.beta_slow
                    ),
                );
            }
        }
        if let Some(q) = &self.quantization {
            if q.weight_block_size != [128, 128] {
                return bad(
                    "quantization_config.weight_block_size",
                    format!("{:?}", q.weight_block_size),
                    "[128, 128] (the only block shape V4 ships)",
                );
            }
        }
        let out_of_vocab = |id: &usize| *id >= self.vocab_size;
        let expected = format!("a token id below vocab_size = {}", self.vocab_size);
        if let Some(id) = self.bos_token_id.filter(out_of_vocab) {
            return bad("bos_token_id", id.to_string(), &expected);
        }
        if let Some(id) = self.eos_token_ids.iter().find(|id| out_of_vocab(id)) {
            return bad("eos_token_id", id.to_string(), &expected);
        }
        Ok(())
    }
}
