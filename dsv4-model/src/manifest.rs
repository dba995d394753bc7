//! The tensor manifest: every tensor a checkpoint in the release layout holds, with its native
//! name, shape and dtype (spec §2), derived from the config alone.

use serde::Serialize;

use crate::{AttentionKind, ExpertDtype, LayerSchedule, LayerSpec, MlpKind, ModelConfig};

/// Element types of the release safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    /// bfloat16.
    #[serde(rename = "BF16")]
    Bf16,
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
    /// 64-bit integers (`tid2eid`).
    #[serde(rename = "I64")]
    I64,
}

impl DType {
    /// Bytes one stored element takes.
    pub fn size(self) -> u64 {
        match self {
            Self::F8E4M3 | Self::F8E8M0 | Self::I8 => 1,
            Self::Bf16 => 2,
            Self::F32 => 4,
            Self::I64 => 8,
        }
    }

    /// The dtype's name in a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::Bf16 => "BF16",
            Self::F32 => "F32",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E8M0 => "F8_E8M0",
            Self::I8 => "I8",
            Self::I64 => "I64",
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
    /// Stored element type.
    pub dtype: DType,
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

/// Every tensor of a checkpoint in the native release layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Tensors in a stable order: globals, decoder layers, MTP stages.
    pub tensors: Vec<TensorSpec>,
}

/// Edge of an FP8 weight scale block.
const FP8_BLOCK: usize = 128;
/// Inputs sharing one FP4 scale.
const FP4_GROUP: usize = 32;

/// Collects tensors under a name prefix with shared component and flags.
struct Emitter<'a> {
    tensors: &'a mut Vec<TensorSpec>,
    prefix: String,
    mtp: bool,
    fp8_linears: bool,
}

impl Emitter<'_> {
    fn push(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        dtype: DType,
        params: u64,
        component: Component,
        activity: Activity,
    ) {
        self.tensors.push(TensorSpec {
            name: format!("{}{name}", self.prefix),
            shape,
            dtype,
            params,
            component,
            activity,
            mtp: self.mtp,
        });
    }

    /// A tensor whose every element is a parameter read by every token.
    fn dense(&mut self, name: &str, shape: Vec<usize>, dtype: DType, component: Component) {
        let params = shape.iter().map(|&d| d as u64).product();
        self.push(name, shape, dtype, params, component, Activity::Full);
    }

    /// An `[out, in]` linear: FP8 with a 128×128 UE8M0 scale grid in quantized checkpoints, else BF16.
    fn linear(&mut self, name: &str, out: usize, inp: usize, component: Component) {
        self.linear_as(name, out, inp, component, Activity::Full);
    }

    fn linear_as(&mut self, name: &str, out: usize, inp: usize, c: Component, a: Activity) {
        let params = (out * inp) as u64;
        if self.fp8_linears {
            self.push(
                &format!("{name}.weight"),
                vec![out, inp],
                DType::F8E4M3,
                params,
                c,
                a,
            );
            let grid = vec![out.div_ceil(FP8_BLOCK), inp.div_ceil(FP8_BLOCK)];
            self.push(&format!("{name}.scale"), grid, DType::F8E8M0, 0, c, a);
        } else {
            self.push(
                &format!("{name}.weight"),
                vec![out, inp],
                DType::Bf16,
                params,
                c,
                a,
            );
        }
    }

    /// A routed expert's `[out, in]` linear in FP4: packed bytes and one scale per 32 inputs.
    fn fp4_linear(&mut self, name: &str, out: usize, inp: usize) {
        let (c, a) = (Component::RoutedExperts, Activity::RoutedExpert);
        let params = (out * inp) as u64;
        self.push(
            &format!("{name}.weight"),
            vec![out, inp / 2],
            DType::I8,
            params,
            c,
            a,
        );
        let scales = vec![out, inp / FP4_GROUP];
        self.push(&format!("{name}.scale"), scales, DType::F8E8M0, 0, c, a);
    }
}

impl Manifest {
    /// The release-layout manifest of a config (routed experts FP4 unless `expert_dtype` says FP8,
    /// or BF16 when the config declares no quantization).
    pub fn release(config: &ModelConfig) -> Self {
        let schedule = LayerSchedule::new(config);
        let mut tensors = Vec::new();
        let fp8_linears = config.quantization.is_some();
        let (d, v, n) = (config.hidden_size, config.vocab_size, config.hc_mult);
        let mut top = Emitter {
            tensors: &mut tensors,
            prefix: String::new(),
            mtp: false,
            fp8_linears,
        };
        top.push(
            "embed.weight",
            vec![v, d],
            DType::Bf16,
            (v * d) as u64,
            Component::Embedding,
            Activity::RowLookup,
        );
        top.dense("head.weight", vec![v, d], DType::Bf16, Component::Head);
        top.dense("norm.weight", vec![d], DType::Bf16, Component::Norms);
        hc_head(&mut top, n, d);
        for layer in &schedule.layers {
            let mut e = Emitter {
                tensors: &mut tensors,
                prefix: format!("layers.{}.", layer.index),
                mtp: false,
                fp8_linears,
            };
            block(&mut e, config, layer);
        }
        for (k, layer) in schedule.mtp.iter().enumerate() {
            let mut e = Emitter {
                tensors: &mut tensors,
                prefix: format!("mtp.{k}."),
                mtp: true,
                fp8_linears,
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
            e.push(
                "ffn.gate.tid2eid",
                table,
                DType::I64,
                0,
                r,
                Activity::RowLookup,
            );
        }
    }
    let fp4 = e.fp8_linears && config.expert_dtype != Some(ExpertDtype::Fp8);
    for x in 0..experts {
        for (w, out, inp) in [("w1", inter, d), ("w3", inter, d), ("w2", d, inter)] {
            let name = format!("ffn.experts.{x}.{w}");
            if fp4 {
                e.fp4_linear(&name, out, inp);
            } else {
                let (c, a) = (Component::RoutedExperts, Activity::RoutedExpert);
                e.linear_as(&name, out, inp, c, a);
            }
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
