//! The model's weights as the forward pass reads them: large linears as borrowed views of the
//! mapped checkpoint (FP8, FP4 or float, never dequantized whole), small vectors copied to f32.

use std::collections::HashMap;

use dsv4_kernels::linear::LinearView;
use dsv4_model::{
    CheckReport, Checkpoint, LayerSchedule, LayerSpec, MlpKind, ModelConfig, TensorSpec,
};

/// Why weights could not be bound to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    /// The checkpoint failed its checks; the first problem and the count are given.
    #[error("checkpoint has {count} problem(s), the first: {first}")]
    Problems {
        /// Number of problems.
        count: usize,
        /// The first, rendered.
        first: String,
    },
    /// A tensor holds values the model cannot use.
    #[error("tensor `{tensor}`: {message}")]
    Invalid {
        /// Native name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
}

/// Mixing parameters of one hyper-connection (`hc_*_fn`, `_base`, `_scale`).
#[derive(Debug, Clone)]
pub struct HcWeights<'a> {
    /// `[rows, n·D]` projection of the flattened streams (a linear, so one token's rows split
    /// over the workers and a chunk's tokens go through the blocked product).
    pub proj: LinearView<'a>,
    /// Bias per row.
    pub base: Vec<f32>,
    /// Scales of the pre, post and comb parts (the head has only the first).
    pub scale: Vec<f32>,
}

/// A compressor: value and gate projections, gate position bias, output norm.
pub struct CompressorWeights<'a> {
    /// `[m, c·w]` gate bias by position in window.
    pub ape: Vec<f32>,
    /// Value projection `[c·w, D]`.
    pub wkv: LinearView<'a>,
    /// Gate projection `[c·w, D]`.
    pub wgate: LinearView<'a>,
    /// RMSNorm weight `[w]`.
    pub norm: Vec<f32>,
}

/// The Lightning Indexer of a CSA layer.
pub struct IndexerWeights<'a> {
    /// Query projection from the query latent, `[Hi·Di, Rq]`.
    pub wq_b: LinearView<'a>,
    /// Per-head weights from the normed input, `[Hi, D]`.
    pub weights_proj: LinearView<'a>,
    /// The indexer's own compressor (width Di).
    pub compressor: CompressorWeights<'a>,
}

/// Attention of one layer.
pub struct AttentionWeights<'a> {
    /// `[Rq, D]`.
    pub wq_a: LinearView<'a>,
    /// `[Rq]`.
    pub q_norm: Vec<f32>,
    /// `[H·Dh, Rq]`.
    pub wq_b: LinearView<'a>,
    /// `[Dh, D]`.
    pub wkv: LinearView<'a>,
    /// `[Dh]`.
    pub kv_norm: Vec<f32>,
    /// `[G·Ro, H·Dh/G]`, applied per group.
    pub wo_a: LinearView<'a>,
    /// `[D, G·Ro]`.
    pub wo_b: LinearView<'a>,
    /// Per-head sink logits `[H]`.
    pub sink: Vec<f32>,
    /// Main compressor (CSA, HCA).
    pub compressor: Option<CompressorWeights<'a>>,
    /// Lightning Indexer (CSA).
    pub indexer: Option<IndexerWeights<'a>>,
}

/// One SwiGLU expert.
pub struct ExpertWeights<'a> {
    /// Gate projection `[I, D]`.
    pub w1: LinearView<'a>,
    /// Down projection `[D, I]`.
    pub w2: LinearView<'a>,
    /// Up projection `[I, D]`.
    pub w3: LinearView<'a>,
}

/// The MoE of one layer.
pub struct MoeWeights<'a> {
    /// Router `[E, D]`.
    pub gate: LinearView<'a>,
    /// Selection bias `[E]` (routed layers).
    pub bias: Option<Vec<f32>>,
    /// Experts of each token id, `[V, K]` (hash layers).
    pub tid2eid: Option<Vec<usize>>,
    /// Routed experts.
    pub experts: Vec<ExpertWeights<'a>>,
    /// The shared expert.
    pub shared: ExpertWeights<'a>,
}

/// One decoder block.
pub struct LayerWeights<'a> {
    /// Its place in the schedule.
    pub spec: LayerSpec,
    /// Pre-attention RMSNorm.
    pub attn_norm: Vec<f32>,
    /// Pre-MoE RMSNorm.
    pub ffn_norm: Vec<f32>,
    /// Hyper-connection around attention.
    pub hc_attn: HcWeights<'a>,
    /// Hyper-connection around the MoE.
    pub hc_ffn: HcWeights<'a>,
    /// Attention.
    pub attn: AttentionWeights<'a>,
    /// MoE.
    pub moe: MoeWeights<'a>,
}

/// Every weight of the decoder.
pub struct ModelWeights<'a> {
    /// `[V, D]` embedding rows.
    pub embed: LinearView<'a>,
    /// `[V, D]` output head.
    pub head: LinearView<'a>,
    /// Final RMSNorm.
    pub norm: Vec<f32>,
    /// Final stream collapse.
    pub hc_head: HcWeights<'a>,
    /// Decoder blocks.
    pub layers: Vec<LayerWeights<'a>>,
}

/// Reads tensors of a checked checkpoint by native name.
struct Binder<'a, 'r> {
    checkpoint: &'a Checkpoint,
    specs: HashMap<&'r str, &'r TensorSpec>,
}

impl<'a> Binder<'a, '_> {
    fn missing(name: &str) -> WeightsError {
        WeightsError::Invalid {
            tensor: name.to_string(),
            message: "absent or unreadable".into(),
        }
    }

    fn floats(&self, name: &str) -> Result<Vec<f32>, WeightsError> {
        self.checkpoint
            .tensor(name)
            .and_then(|t| t.to_f32())
            .ok_or_else(|| Self::missing(name))
    }

    fn linear(&self, base: &str) -> Result<LinearView<'a>, WeightsError> {
        let weight = format!("{base}.weight");
        let linear = self
            .specs
            .get(weight.as_str())
            .and_then(|s| s.linear)
            .ok_or_else(|| Self::missing(&weight))?;
        self.checkpoint
            .linear(base, linear)
            .ok_or_else(|| Self::missing(&weight))
    }

    /// A 2-D float tensor used as a linear (BF16 projections, embeddings, head).
    fn float_linear(&self, name: &str) -> Result<LinearView<'a>, WeightsError> {
        self.checkpoint
            .tensor(name)
            .and_then(|t| t.as_linear())
            .ok_or_else(|| Self::missing(name))
    }

    fn hc(&self, prefix: &str) -> Result<HcWeights<'a>, WeightsError> {
        Ok(HcWeights {
            proj: self.float_linear(&format!("{prefix}_fn"))?,
            base: self.floats(&format!("{prefix}_base"))?,
            scale: self.floats(&format!("{prefix}_scale"))?,
        })
    }

    fn compressor(&self, prefix: &str) -> Result<CompressorWeights<'a>, WeightsError> {
        Ok(CompressorWeights {
            ape: self.floats(&format!("{prefix}.ape"))?,
            wkv: self.float_linear(&format!("{prefix}.wkv.weight"))?,
            wgate: self.float_linear(&format!("{prefix}.wgate.weight"))?,
            norm: self.floats(&format!("{prefix}.norm.weight"))?,
        })
    }

    fn expert(&self, prefix: &str) -> Result<ExpertWeights<'a>, WeightsError> {
        Ok(ExpertWeights {
            w1: self.linear(&format!("{prefix}.w1"))?,
            w2: self.linear(&format!("{prefix}.w2"))?,
            w3: self.linear(&format!("{prefix}.w3"))?,
        })
    }

    fn layer(
        &self,
        config: &ModelConfig,
        spec: LayerSpec,
    ) -> Result<LayerWeights<'a>, WeightsError> {
        let p = format!("layers.{}.", spec.index);
        let a = |s: &str| format!("{p}attn.{s}");
        let compressor = match spec.attention.ratio() {
            Some(_) => Some(self.compressor(&a("compressor"))?),
            None => None,
        };
        let indexer = if spec.attention.has_indexer() {
            Some(IndexerWeights {
                wq_b: self.linear(&a("indexer.wq_b"))?,
                weights_proj: self.float_linear(&a("indexer.weights_proj.weight"))?,
                compressor: self.compressor(&a("indexer.compressor"))?,
            })
        } else {
            None
        };
        let attn = AttentionWeights {
            wq_a: self.linear(&a("wq_a"))?,
            q_norm: self.floats(&a("q_norm.weight"))?,
            wq_b: self.linear(&a("wq_b"))?,
            wkv: self.linear(&a("wkv"))?,
            kv_norm: self.floats(&a("kv_norm.weight"))?,
            wo_a: self.linear(&a("wo_a"))?,
            wo_b: self.linear(&a("wo_b"))?,
            sink: self.floats(&a("attn_sink"))?,
            compressor,
            indexer,
        };
        let (bias, tid2eid) = match spec.mlp {
            MlpKind::Routed => (Some(self.floats(&format!("{p}ffn.gate.bias"))?), None),
            MlpKind::Hash => (
                None,
                Some(self.tid2eid(config, &format!("{p}ffn.gate.tid2eid"))?),
            ),
        };
        let experts = (0..config.n_routed_experts)
            .map(|e| self.expert(&format!("{p}ffn.experts.{e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LayerWeights {
            spec,
            attn_norm: self.floats(&format!("{p}attn_norm.weight"))?,
            ffn_norm: self.floats(&format!("{p}ffn_norm.weight"))?,
            hc_attn: self.hc(&format!("{p}hc_attn"))?,
            hc_ffn: self.hc(&format!("{p}hc_ffn"))?,
            attn,
            moe: MoeWeights {
                gate: self.float_linear(&format!("{p}ffn.gate.weight"))?,
                bias,
                tid2eid,
                experts,
                shared: self.expert(&format!("{p}ffn.shared_experts"))?,
            },
        })
    }

    /// The hash table, every entry checked to name an expert.
    fn tid2eid(&self, config: &ModelConfig, name: &str) -> Result<Vec<usize>, WeightsError> {
        let table = self
            .checkpoint
            .tensor(name)
            .and_then(|t| t.to_i64())
            .ok_or_else(|| Self::missing(name))?;
        let experts = config.n_routed_experts;
        table
            .iter()
            .enumerate()
            .map(|(i, &e)| {
                usize::try_from(e)
                    .ok()
                    .filter(|&e| e < experts)
                    .ok_or_else(|| {
                        let (token, slot) = (
                            i / config.num_experts_per_tok,
                            i % config.num_experts_per_tok,
                        );
                        WeightsError::Invalid {
                            tensor: name.to_string(),
                            message: format!(
                            "token {token}, slot {slot} names expert {e}, but there are {experts}"
                        ),
                        }
                    })
            })
            .collect()
    }
}

impl<'a> ModelWeights<'a> {
    /// Binds the weights of a checkpoint that passed `check` (its report is required so no
    /// unchecked byte is ever read).
    pub fn bind(
        config: &ModelConfig,
        checkpoint: &'a Checkpoint,
        report: &CheckReport,
    ) -> Result<Self, WeightsError> {
        if let Some(first) = report.problems.first() {
            return Err(WeightsError::Problems {
                count: report.problems.len(),
                first: first.to_string(),
            });
        }
        let binder = Binder {
            checkpoint,
            specs: report
                .manifest
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
        };
        let layers = LayerSchedule::new(config)
            .layers
            .into_iter()
            .map(|spec| binder.layer(config, spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            embed: binder.float_linear("embed.weight")?,
            head: binder.float_linear("head.weight")?,
            norm: binder.floats("norm.weight")?,
            hc_head: binder.hc("hc_head")?,
            layers,
        })
    }
}
