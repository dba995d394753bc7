//! The model's weights as the forward pass reads them: linears packed for the kernels (FP8, FP4
//! or float, never dequantized whole; see [`crate::model::load`]), the embedding a view of the mapped
//! checkpoint, small vectors copied to f32. The structs are generic over the linear type `L`:
//! loading binds them once with the stored views to find every linear, then with the packed
//! ones.

use std::collections::HashMap;

use dsv4_kernels::linear::LinearView;
pub use dsv4_kernels::moe::ExpertWeights;
use dsv4_kernels::panel::{Pack, PackedLinear, PackedSpec};
use dsv4_model::{
    CheckReport, Checkpoint, LayerSchedule, LayerSpec, MlpKind, ModelConfig, TensorSpec,
};

/// Rows `first..first + count` of a stored linear, to be packed as a linear of their own.
#[derive(Debug, Clone, Copy)]
pub struct LinearRows<'a> {
    /// The stored weight.
    pub view: LinearView<'a>,
    /// First row.
    pub first: usize,
    /// Rows.
    pub count: usize,
}

impl<'a> LinearRows<'a> {
    /// Every row of `view`.
    pub fn all(view: LinearView<'a>) -> Self {
        Self {
            view,
            first: 0,
            count: view.out,
        }
    }

    /// The packed layout of these rows as a linear of their own.
    pub(crate) fn spec(&self) -> PackedSpec {
        PackedSpec {
            out: self.count,
            ..self.view.packed_spec()
        }
    }
}

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
pub struct HcWeights<L> {
    /// `[rows, n·D]` projection of the flattened streams (a linear, so its rows split over the
    /// workers like any other).
    pub proj: L,
    /// Bias per row.
    pub base: Vec<f32>,
    /// Scales of the pre, post and comb parts (the head has only the first).
    pub scale: Vec<f32>,
}

/// A compressor: value and gate projections, gate position bias, output norm.
pub struct CompressorWeights<L> {
    /// `[m, c·w]` gate bias by position in window.
    pub ape: Vec<f32>,
    /// Value projection `[c·w, D]`.
    pub wkv: L,
    /// Gate projection `[c·w, D]`.
    pub wgate: L,
    /// RMSNorm weight `[w]`.
    pub norm: Vec<f32>,
}

/// The Lightning Indexer of a CSA layer.
pub struct IndexerWeights<L> {
    /// Query projection from the query latent, `[Hi·Di, Rq]`.
    pub wq_b: L,
    /// Per-head weights from the normed input, `[Hi, D]`.
    pub weights_proj: L,
    /// The indexer's own compressor (width Di).
    pub compressor: CompressorWeights<L>,
}

/// Attention of one layer.
pub struct AttentionWeights<L> {
    /// `[Rq, D]`.
    pub wq_a: L,
    /// `[Rq]`.
    pub q_norm: Vec<f32>,
    /// `[H·Dh, Rq]`.
    pub wq_b: L,
    /// `[Dh, D]`.
    pub wkv: L,
    /// `[Dh]`.
    pub kv_norm: Vec<f32>,
    /// `[G·Ro, H·Dh/G]`, applied per group: group `g`'s rows `g·Ro..(g+1)·Ro`, as a linear of
    /// their own each (CPU), or as one linear of every group (CUDA: see
    /// `LinearSource::linear_groups`).
    pub wo_a: Vec<L>,
    /// `[D, G·Ro]`.
    pub wo_b: L,
    /// Per-head sink logits `[H]`.
    pub sink: Vec<f32>,
    /// Main compressor (CSA, HCA).
    pub compressor: Option<CompressorWeights<L>>,
    /// Lightning Indexer (CSA).
    pub indexer: Option<IndexerWeights<L>>,
}

/// The MoE of one layer.
pub struct MoeWeights<L> {
    /// Router `[E, D]`.
    pub gate: L,
    /// Selection bias `[E]` (routed layers).
    pub bias: Option<Vec<f32>>,
    /// Experts of each token id, `[V, K]` (hash layers).
    pub tid2eid: Option<Vec<usize>>,
    /// Routed experts.
    pub experts: Vec<ExpertWeights<L>>,
    /// The shared expert.
    pub shared: ExpertWeights<L>,
}

/// One decoder block.
pub struct LayerWeights<L> {
    /// Its place in the schedule.
    pub spec: LayerSpec,
    /// Pre-attention RMSNorm.
    pub attn_norm: Vec<f32>,
    /// Pre-MoE RMSNorm.
    pub ffn_norm: Vec<f32>,
    /// Hyper-connection around attention.
    pub hc_attn: HcWeights<L>,
    /// Hyper-connection around the MoE.
    pub hc_ffn: HcWeights<L>,
    /// Attention.
    pub attn: AttentionWeights<L>,
    /// MoE.
    pub moe: MoeWeights<L>,
}

/// Every weight of the decoder, its linears packed for the kernels (`L` as bound for use).
pub struct ModelWeights<'a, L = PackedLinear<'a>> {
    /// `[V, D]` embedding rows.
    pub embed: LinearView<'a>,
    /// `[V, D]` output head.
    pub head: L,
    /// Final RMSNorm.
    pub norm: Vec<f32>,
    /// Final stream collapse.
    pub hc_head: HcWeights<L>,
    /// Decoder blocks.
    pub layers: Vec<LayerWeights<L>>,
}

/// What a bound linear becomes: the stored view (to pack it), or the packed one.
pub(crate) trait LinearSource<'a> {
    /// The linear type of the bound weights.
    type Linear;

    /// The linear of weight tensor `name`, rows `rows`.
    fn linear(&self, name: &str, rows: LinearRows<'a>) -> Result<Self::Linear, WeightsError>;

    /// The linear `view` applied in `groups` groups of consecutive rows (`wo_a`): one linear
    /// per group, unless the source keeps the groups together (then one linear of them all).
    fn linear_groups(
        &self,
        name: &str,
        view: LinearView<'a>,
        groups: usize,
    ) -> Result<Vec<Self::Linear>, WeightsError> {
        let count = view.out / groups.max(1);
        (0..groups)
            .map(|g| {
                let rows = LinearRows {
                    view,
                    first: g * count,
                    count,
                };
                self.linear(name, rows)
            })
            .collect()
    }
}

/// Reads tensors of a checked checkpoint by native name, its linears through `source`.
struct Binder<'a, 'r, S> {
    checkpoint: &'a Checkpoint,
    specs: HashMap<&'r str, &'r TensorSpec>,
    source: &'r S,
}

impl<'a, S: LinearSource<'a>> Binder<'a, '_, S> {
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

    /// The stored view of the linear `base` (`base.weight`, and `base.scale` when quantized).
    fn stored(&self, base: &str) -> Result<(String, LinearView<'a>), WeightsError> {
        let weight = format!("{base}.weight");
        let view = self
            .specs
            .get(weight.as_str())
            .and_then(|s| s.linear)
            .and_then(|linear| self.checkpoint.linear(base, linear))
            .ok_or_else(|| Self::missing(&weight))?;
        Ok((weight, view))
    }

    fn linear(&self, base: &str) -> Result<S::Linear, WeightsError> {
        let (name, view) = self.stored(base)?;
        self.source.linear(&name, LinearRows::all(view))
    }

    /// The linear `base`, applied in `groups` groups of consecutive rows.
    fn linear_groups(&self, base: &str, groups: usize) -> Result<Vec<S::Linear>, WeightsError> {
        let (name, view) = self.stored(base)?;
        self.source.linear_groups(&name, view, groups)
    }

    /// A 2-D float tensor used as a linear (BF16 projections, head).
    fn float_linear(&self, name: &str) -> Result<S::Linear, WeightsError> {
        let view = self.float_view(name)?;
        self.source.linear(name, LinearRows::all(view))
    }

    /// A 2-D float tensor as a stored view (the embedding, read by rows).
    fn float_view(&self, name: &str) -> Result<LinearView<'a>, WeightsError> {
        self.checkpoint
            .tensor(name)
            .and_then(|t| t.as_linear())
            .ok_or_else(|| Self::missing(name))
    }

    fn hc(&self, prefix: &str) -> Result<HcWeights<S::Linear>, WeightsError> {
        Ok(HcWeights {
            proj: self.float_linear(&format!("{prefix}_fn"))?,
            base: self.floats(&format!("{prefix}_base"))?,
            scale: self.floats(&format!("{prefix}_scale"))?,
        })
    }

    fn compressor(&self, prefix: &str) -> Result<CompressorWeights<S::Linear>, WeightsError> {
        Ok(CompressorWeights {
            ape: self.floats(&format!("{prefix}.ape"))?,
            wkv: self.float_linear(&format!("{prefix}.wkv.weight"))?,
            wgate: self.float_linear(&format!("{prefix}.wgate.weight"))?,
            norm: self.floats(&format!("{prefix}.norm.weight"))?,
        })
    }

    fn expert(&self, prefix: &str) -> Result<ExpertWeights<S::Linear>, WeightsError> {
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
    ) -> Result<LayerWeights<S::Linear>, WeightsError> {
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
            wo_a: self.linear_groups(&a("wo_a"), config.o_groups)?,
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

impl<'a, L> ModelWeights<'a, L> {
    /// Binds the weights of a checkpoint that passed `check` (its report is required so no
    /// unchecked byte is ever read), each linear through `source`.
    pub(crate) fn bind_with<S: LinearSource<'a, Linear = L>>(
        config: &ModelConfig,
        checkpoint: &'a Checkpoint,
        report: &CheckReport,
        source: &S,
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
            source,
        };
        let layers = LayerSchedule::new(config)
            .layers
            .into_iter()
            .map(|spec| binder.layer(config, spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            embed: binder.float_view("embed.weight")?,
            head: binder.float_linear("head.weight")?,
            norm: binder.floats("norm.weight")?,
            hc_head: binder.hc("hc_head")?,
            layers,
        })
    }
}
