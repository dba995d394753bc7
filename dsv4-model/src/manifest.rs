//! The tensor manifest: every tensor a checkpoint in the release layout holds, with its native
//! name, shape and dtype (docs/model.md §2), derived from the config alone.

use serde::Serialize;

use crate::{AttentionKind, ExpertDtype, LayerSchedule, LayerSpec, MlpKind, ModelConfig};
use dsv4_formats::formats::{FP4_GROUP, FP8_BLOCK};

/// Element types of the release safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    /// bfloat16.
    #[serde(rename = "BF16")]
    Bf16,
    /// IEEE float16.
    #[serde(rename = "F16")]
    F16,
    /// IEEE float32.
    #[serde(rename = "F32")]
    F32,
    /// OCP float8 E4M3 (finite, max 448).
    #[serde(rename = "F8_E4M3")]
    F8E4M3,
    /// Unsigned power-of-two scale byte: value 2^(b − 127).
    #[serde(rename = "F8_E8M0")]
    F8E8M0,
    /// Bytes holding two packed E2M1 values, low nibble first.
    #[serde(rename = "I8")]
    I8,
    /// Unsigned bytes (some exporters store packed FP4 so).
    #[serde(rename = "U8")]
    U8,
    /// 32-bit integers.
    #[serde(rename = "I32")]
    I32,
    /// 64-bit integers (`tid2eid`).
    #[serde(rename = "I64")]
    I64,
}

impl DType {
    /// Bytes one stored element takes.
    pub fn size(self) -> u64 {
        match self {
            Self::F8E4M3 | Self::F8E8M0 | Self::I8 | Self::U8 => 1,
            Self::Bf16 | Self::F16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::I64 => 8,
        }
    }

    /// The dtype's name in a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::Bf16 => "BF16",
            Self::F16 => "F16",
            Self::F32 => "F32",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E8M0 => "F8_E8M0",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::I32 => "I32",
            Self::I64 => "I64",
        }
    }

    /// The dtype a safetensors header names, if dsv4 reads it.
    pub fn from_safetensors_name(name: &str) -> Option<Self> {
        [
            Self::Bf16,
            Self::F16,
            Self::F32,
            Self::F8E4M3,
            Self::F8E8M0,
            Self::I8,
            Self::U8,
            Self::I32,
            Self::I64,
        ]
        .into_iter()
        .find(|d| d.safetensors_name() == name)
    }

    /// Whether values of this dtype are floats usable as plain weights.
    pub fn is_plain_float(self) -> bool {
        matches!(self, Self::Bf16 | Self::F16 | Self::F32)
    }
}

/// How the stored bytes of a tensor are to be read; decides which dtypes a checkpoint may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// Plain floats: BF16, F16 or F32.
    Float,
    /// E4M3 elements of a block-scaled linear.
    Fp8,
    /// Packed E2M1 pairs, low nibble first (I8 or U8).
    Fp4Packed,
    /// Scale multipliers: UE8M0 bytes, or F32 (transformers' `weight_scale_inv`).
    Scale,
    /// Integer table: I64 or I32.
    Index,
}

impl TensorKind {
    /// Whether a checkpoint may store this kind of tensor as `dtype`.
    pub fn accepts(self, dtype: DType) -> bool {
        match self {
            Self::Float => dtype.is_plain_float(),
            Self::Fp8 => dtype == DType::F8E4M3,
            Self::Fp4Packed => matches!(dtype, DType::I8 | DType::U8),
            Self::Scale => matches!(dtype, DType::F8E8M0 | DType::F32),
            Self::Index => matches!(dtype, DType::I64 | DType::I32),
        }
    }
}

/// Storage of a family of linears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearFormat {
    /// E4M3 with a 128×128 grid of scales.
    Fp8Block,
    /// Packed E2M1 with one scale per 32 inputs.
    Fp4Group,
    /// Plain floats, no scales.
    Float,
}

impl LinearFormat {
    /// Short name, as `expert_dtype` spells the quantized ones.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp8Block => "fp8",
            Self::Fp4Group => "fp4",
            Self::Float => "float",
        }
    }
}

/// A linear layer `y = W x` with `W` of `[out, inp]`, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Linear {
    /// Output features.
    pub out: usize,
    /// Input features.
    pub inp: usize,
    /// Storage format.
    pub format: LinearFormat,
}

/// The storage of the dense linears and of the routed experts of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightFormats {
    /// Attention, shared-expert and MTP projections.
    pub dense: LinearFormat,
    /// Routed experts.
    pub experts: LinearFormat,
}

impl WeightFormats {
    /// What the release ships for a config: FP8 linears when `quantization_config` is present,
    /// FP4 experts unless `expert_dtype` says FP8; plain floats otherwise.
    pub fn release(config: &ModelConfig) -> Self {
        if config.quantization.is_none() {
            return Self {
                dense: LinearFormat::Float,
                experts: LinearFormat::Float,
            };
        }
        let experts = match config.expert_dtype {
            Some(ExpertDtype::Fp8) => LinearFormat::Fp8Block,
            _ => LinearFormat::Fp4Group,
        };
        Self {
            dense: LinearFormat::Fp8Block,
            experts,
        }
    }
}

/// The part of the model a tensor belongs to, for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// `embed.weight`.
    Embedding,
    /// Query, window KV and output projections and the attention sinks.
    Attention,
    /// Main KV compressors of CSA and HCA layers.
    Compressor,
    /// Lightning Indexer (query projection, head weights, its own compressor).
    Indexer,
    /// Hyper-connection mixing parameters (`hc_*`).
    HyperConnections,
    /// RMSNorm weights.
    Norms,
    /// MoE gate, its bias and the hash table.
    Router,
    /// The always-on shared expert.
    SharedExperts,
    /// The routed experts.
    RoutedExperts,
    /// MTP-only projections (`e_proj`, `h_proj`).
    MtpProjections,
    /// `head.weight`.
    Head,
}

/// How much of a tensor one token reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Read whole for every token.
    Full,
    /// One of the routed experts: K of E are read per token.
    RoutedExpert,
    /// A lookup table: one row per token.
    RowLookup,
}

/// One tensor of the release layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    /// Native name (no `model.` prefix).
    pub name: String,
    /// Stored shape (FP4 tensors: packed, the input dim halved).
    pub shape: Vec<usize>,
    /// Stored element type in the release layout.
    pub dtype: DType,
    /// How its bytes are read, and so which dtypes a checkpoint may store it as.
    pub kind: TensorKind,
    /// The linear this weight or scale belongs to, if any.
    pub linear: Option<Linear>,
    /// Learned parameters it holds (logical elements; 0 for scales and lookup tables).
    pub params: u64,
    /// Accounting bucket.
    pub component: Component,
    /// How much of it a token reads.
    pub activity: Activity,
    /// Whether it belongs to an MTP stage.
    pub mtp: bool,
}

impl TensorSpec {
    /// Stored elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Stored bytes.
    pub fn bytes(&self) -> u64 {
        self.elements() * self.dtype.size()
    }
}

/// Every tensor of a checkpoint, by native name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Tensors in a stable order: globals, decoder layers, MTP stages.
    pub tensors: Vec<TensorSpec>,
}

/// Collects tensors under a name prefix with shared component and flags.
struct Emitter<'a> {
    tensors: &'a mut Vec<TensorSpec>,
    prefix: String,
    mtp: bool,
    formats: WeightFormats,
}

impl Emitter<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        dtype: DType,
        kind: TensorKind,
        params: u64,
        component: Component,
        activity: Activity,
    ) {
        self.tensors.push(TensorSpec {
            name: format!("{}{name}", self.prefix),
            shape,
            dtype,
            kind,
            linear: None,
            params,
            component,
            activity,
            mtp: self.mtp,
        });
    }

    /// A float tensor whose every element is a parameter read by every token.
    fn dense(&mut self, name: &str, shape: Vec<usize>, dtype: DType, component: Component) {
        let params = shape.iter().map(|&d| d as u64).product();
        let (kind, activity) = (TensorKind::Float, Activity::Full);
        self.push(name, shape, dtype, kind, params, component, activity);
    }

    /// A dense `[out, in]` linear in the checkpoint's dense format.
    fn linear(&mut self, name: &str, out: usize, inp: usize, component: Component) {
        let format = self.formats.dense;
        self.linear_as(name, out, inp, format, component, Activity::Full);
    }

    /// An `[out, in]` linear stored as `format`: weight, plus its scales when quantized.
    fn linear_as(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        format: LinearFormat,
        c: Component,
        a: Activity,
    ) {
        let params = (out * inp) as u64;
        let weight = format!("{name}.weight");
        let scale = format!("{name}.scale");
        let first = self.tensors.len();
        match format {
            LinearFormat::Fp8Block => {
                let grid = vec![out.div_ceil(FP8_BLOCK), inp.div_ceil(FP8_BLOCK)];
                self.push(
                    &weight,
                    vec![out, inp],
                    DType::F8E4M3,
                    TensorKind::Fp8,
                    params,
                    c,
                    a,
                );
                self.push(&scale, grid, DType::F8E8M0, TensorKind::Scale, 0, c, a);
            }
            LinearFormat::Fp4Group => {
                let packed = vec![out, inp / 2];
                let groups = vec![out, inp / FP4_GROUP];
                self.push(
                    &weight,
                    packed,
                    DType::I8,
                    TensorKind::Fp4Packed,
                    params,
                    c,
                    a,
                );
                self.push(&scale, groups, DType::F8E8M0, TensorKind::Scale, 0, c, a);
            }
            LinearFormat::Float => {
                self.push(
                    &weight,
                    vec![out, inp],
                    DType::Bf16,
                    TensorKind::Float,
                    params,
                    c,
                    a,
                );
            }
        }
        for spec in &mut self.tensors[first..] {
            spec.linear = Some(Linear { out, inp, format });
        }
    }
}

impl Manifest {
    /// The manifest of the release layout of a config (see [`WeightFormats::release`]).
    pub fn release(config: &ModelConfig) -> Self {
        Self::new(config, WeightFormats::release(config))
    }

    /// The manifest of a checkpoint whose linears are stored as `formats`.
    pub fn new(config: &ModelConfig, formats: WeightFormats) -> Self {
        let schedule = LayerSchedule::new(config);
        let mut tensors = Vec::new();
        let (d, v, n) = (config.hidden_size, config.vocab_size, config.hc_mult);
        let mut top = Emitter {
            tensors: &mut tensors,
            prefix: String::new(),
            mtp: false,
            formats,
        };
        let (float, lookup) = (TensorKind::Float, Activity::RowLookup);
        let params = (v * d) as u64;
        top.push(
            "embed.weight",
            vec![v, d],
            DType::Bf16,
            float,
            params,
            Component::Embedding,
            lookup,
        );
        top.dense("head.weight", vec![v, d], DType::Bf16, Component::Head);
        top.dense("norm.weight", vec![d], DType::Bf16, Component::Norms);
        hc_head(&mut top, n, d);
        for layer in &schedule.layers {
            let mut e = Emitter {
                tensors: &mut tensors,
                prefix: format!("layers.{}.", layer.index),
                mtp: false,
                formats,
            };
            block(&mut e, config, layer);
        }
        for (k, layer) in schedule.mtp.iter().enumerate() {
            let mut e = Emitter {
                tensors: &mut tensors,
                prefix: format!("mtp.{k}."),
                mtp: true,
                formats,
            };
            block(&mut e, config, layer);
            e.linear("e_proj", d, d, Component::MtpProjections);
            e.linear("h_proj", d, d, Component::MtpProjections);
            for norm in ["enorm", "hnorm", "norm"] {
                e.dense(
                    &format!("{norm}.weight"),
                    vec![d],
                    DType::Bf16,
                    Component::Norms,
                );
            }
            hc_head(&mut e, n, d);
        }
        Self { tensors }
    }

    /// The tensor with the given native name.
    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// The final stream collapse `hc_head_*`.
fn hc_head(e: &mut Emitter, n: usize, d: usize) {
    let c = Component::HyperConnections;
    e.dense("hc_head_fn", vec![n, n * d], DType::F32, c);
    e.dense("hc_head_base", vec![n], DType::F32, c);
    e.dense("hc_head_scale", vec![1], DType::F32, c);
}

/// One decoder block (or the block inside an MTP stage).
fn block(e: &mut Emitter, config: &ModelConfig, layer: &LayerSpec) {
    let d = config.hidden_size;
    let n = config.hc_mult;
    for norm in ["attn_norm", "ffn_norm"] {
        e.dense(
            &format!("{norm}.weight"),
            vec![d],
            DType::Bf16,
            Component::Norms,
        );
    }
    let mix = (2 + n) * n;
    for sub in ["attn", "ffn"] {
        let c = Component::HyperConnections;
        e.dense(&format!("hc_{sub}_fn"), vec![mix, n * d], DType::F32, c);
        e.dense(&format!("hc_{sub}_base"), vec![mix], DType::F32, c);
        e.dense(&format!("hc_{sub}_scale"), vec![3], DType::F32, c);
    }
    attention(e, config, layer.attention);
    moe(e, config, layer.mlp);
}

fn attention(e: &mut Emitter, config: &ModelConfig, kind: AttentionKind) {
    let (d, h, dh) = (
        config.hidden_size,
        config.num_attention_heads,
        config.head_dim,
    );
    let (rq, g, ro) = (config.q_lora_rank, config.o_groups, config.o_lora_rank);
    let a = Component::Attention;
    e.linear("attn.wq_a", rq, d, a);
    e.dense(
        "attn.q_norm.weight",
        vec![rq],
        DType::Bf16,
        Component::Norms,
    );
    e.linear("attn.wq_b", h * dh, rq, a);
    e.linear("attn.wkv", dh, d, a);
    e.dense(
        "attn.kv_norm.weight",
        vec![dh],
        DType::Bf16,
        Component::Norms,
    );
    e.linear("attn.wo_a", g * ro, h * dh / g, a);
    e.linear("attn.wo_b", d, g * ro, a);
    e.dense("attn.attn_sink", vec![h], DType::F32, a);
    let Some(ratio) = kind.ratio() else {
        return;
    };
    let overlap = if kind.has_indexer() { 2 } else { 1 };
    compressor(
        e,
        "attn.compressor",
        ratio,
        overlap * dh,
        dh,
        d,
        Component::Compressor,
    );
    if kind.has_indexer() {
        let (hi, di) = (config.index_n_heads, config.index_head_dim);
        let c = Component::Indexer;
        e.linear("attn.indexer.wq_b", hi * di, rq, c);
        e.dense(
            "attn.indexer.weights_proj.weight",
            vec![hi, d],
            DType::Bf16,
            c,
        );
        compressor(e, "attn.indexer.compressor", ratio, 2 * di, di, d, c);
    }
}

/// A compressor: gate position bias `ape`, BF16 value and gate projections of width `width`, norm of `dim`.
fn compressor(
    e: &mut Emitter,
    name: &str,
    ratio: usize,
    width: usize,
    dim: usize,
    d: usize,
    c: Component,
) {
    e.dense(&format!("{name}.ape"), vec![ratio, width], DType::F32, c);
    e.dense(
        &format!("{name}.wkv.weight"),
        vec![width, d],
        DType::Bf16,
        c,
    );
    e.dense(
        &format!("{name}.wgate.weight"),
        vec![width, d],
        DType::Bf16,
        c,
    );
    e.dense(
        &format!("{name}.norm.weight"),
        vec![dim],
        DType::Bf16,
        Component::Norms,
    );
}

fn moe(e: &mut Emitter, config: &ModelConfig, mlp: MlpKind) {
    let (d, experts, inter) = (
        config.hidden_size,
        config.n_routed_experts,
        config.moe_intermediate_size,
    );
    let r = Component::Router;
    e.dense("ffn.gate.weight", vec![experts, d], DType::Bf16, r);
    match mlp {
        MlpKind::Routed => e.dense("ffn.gate.bias", vec![experts], DType::F32, r),
        MlpKind::Hash => {
            let table = vec![config.vocab_size, config.num_experts_per_tok];
            let (kind, lookup) = (TensorKind::Index, Activity::RowLookup);
            e.push("ffn.gate.tid2eid", table, DType::I64, kind, 0, r, lookup);
        }
    }
    let (c, a) = (Component::RoutedExperts, Activity::RoutedExpert);
    for x in 0..experts {
        for (w, out, inp) in [("w1", inter, d), ("w3", inter, d), ("w2", d, inter)] {
            let name = format!("ffn.experts.{x}.{w}");
            e.linear_as(&name, out, inp, e.formats.experts, c, a);
        }
    }
    for (w, out, inp) in [("w1", inter, d), ("w3", inter, d), ("w2", d, inter)] {
        e.linear(
            &format!("ffn.shared_experts.{w}"),
            out,
            inp,
            Component::SharedExperts,
        );
    }
}
