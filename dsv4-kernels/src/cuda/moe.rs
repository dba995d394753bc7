//! Launchers of `csrc/moe.cu`: the router's choice of experts (`moe_route`) and the experts in
//! three kernels (`experts_gate_up`, `experts_down`, `experts_sum`), twins of [`crate::moe`]
//! and of the runtime's fixed-order sum over a token's experts.
//!
//! Layouts the caller keeps:
//! - a chunk's routing ([`Routes`]): expert ids `T × K` (u32) and weights `T × K` (f32), row
//!   major, each token's in choice order; an id of `u32::MAX` (a hash-table token id out of
//!   range) names no expert and is skipped;
//! - the experts' weights ([`ExpertTable`]): one table of `(E + 1) × 3` records of 24 bytes,
//!   `{data: u64, scales: u64, format: u32, scale_kind: u32}` (`csrc/weights.cuh`'s numbers),
//!   expert slot 0 the shared expert and slot `1 + e` routed expert `e`, linears in the order
//!   w1 (gate, `[I, D]`), w3 (up, `[I, D]`), w2 (down, `[D, I]`); the weights stay as stored;
//! - scratch ([`ExpertsScratch`]): `T·(K+1) × I` hidden values and `T·(K+1) × D` partial outputs
//!   (f32), row `t·(K+1) + s` for token `t` and slot `s` (0 shared, `1 + j` its `j`-th choice).

use super::twins::{Check, Rng, StoredWeight};
use super::weights::{DeviceWeight, Format};
use super::{dim, DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::linear::LinearView;
use crate::moe::{ExpertChoice, ExpertRows, ExpertWeights, RouteScratch, Routing};
use crate::numerics::Numerics;
use crate::panel::{Pack, PackedLinear, PackedWeights};

/// Threads per block of `experts_gate_up` and `experts_down` (one output row each).
const EXPERT_THREADS: u32 = 128;
/// Threads per block of `experts_sum`.
const SUM_THREADS: u32 = 256;
/// Rows one pass of `experts_gate_up`/`experts_down` over its weight rows serves (`MOE_BATCH`).
const BATCH: usize = 8;
/// Most experts per token (`MOE_MAX_K`).
pub const MAX_K: usize = 32;
/// Channels per activation scale of the reference numerics.
const ACT_BLOCK: usize = 128;
/// Warps (tokens) per block of `moe_route` at most.
const ROUTE_WARPS: usize = 4;
/// Dynamic shared memory `moe_route` may ask for (below the 48 KiB every device allows).
const ROUTE_SHARED: usize = 40 * 1024;
/// Bytes of one record of the expert table.
const RECORD: usize = 24;

/// How `moe_route` chooses a token's experts (the device side of [`ExpertChoice`]).
#[derive(Debug, Clone, Copy)]
pub enum DeviceChoice {
    /// Hash routing: `table` is `tid2eid` as u32 `[vocab, K]` ([`upload_tid2eid`]), `tokens` the
    /// chunk's token ids (u32, `T`).
    Hash {
        /// The table.
        table: DevicePtr,
        /// Token ids.
        tokens: DevicePtr,
        /// Rows of the table.
        vocab: usize,
    },
    /// The top-K of score + bias (`E` f32).
    Biased(DevicePtr),
    /// The top-K of the scores.
    Scores,
}

/// A chunk's routing on the device: `T × K` expert ids (u32) and weights (f32).
#[derive(Debug, Clone, Copy)]
pub struct Routes {
    /// Expert ids.
    pub ids: DevicePtr,
    /// Routing weights.
    pub weights: DevicePtr,
    /// Tokens T.
    pub tokens: usize,
    /// Experts per token K.
    pub k: usize,
}

fn invalid(kernel: &str, message: String) -> DeviceError {
    DeviceError::Launch {
        kernel: kernel.to_string(),
        message,
    }
}

/// `tid2eid` (`[vocab, K]`, every entry below E, as the weights loader checks) as the u32 table
/// [`DeviceChoice::Hash`] reads.
pub fn upload_tid2eid(gpu: &Gpu, table: &[usize]) -> Result<DeviceBuffer, DeviceError> {
    let mut bytes = Vec::with_capacity(table.len() * 4);
    for &e in table {
        let e = u32::try_from(e)
            .map_err(|_| invalid("moe_route", format!("tid2eid entry {e} is not a u32")))?;
        bytes.extend_from_slice(&e.to_le_bytes());
    }
    gpu.upload(&bytes)
}

/// Router scores and each token's K experts with their weights for `routes.tokens` tokens
/// whose router logits are `logits` (`T × experts`): the twin of [`crate::moe::router_scores`]
/// then [`crate::moe::moe_route`] per token, one launch. `scores`, when given, receives the
/// scores (`T × experts`).
pub fn moe_route(
    gpu: &Gpu,
    logits: DevicePtr,
    choice: DeviceChoice,
    routing: Routing,
    experts: usize,
    routes: Routes,
    scores: Option<DevicePtr>,
) -> Result<(), DeviceError> {
    let (t, k) = (routes.tokens, routes.k);
    if t == 0 {
        return Ok(());
    }
    let hash = matches!(choice, DeviceChoice::Hash { .. });
    if k == 0 || (!hash && k > experts) {
        return Err(invalid(
            "moe_route",
            format!("{k} experts per token of {experts}"),
        ));
    }
    let per_warp = 12 * experts;
    if per_warp > ROUTE_SHARED {
        return Err(invalid(
            "moe_route",
            format!("{experts} experts exceed one warp's shared memory"),
        ));
    }
    let warps = (ROUTE_SHARED / per_warp).clamp(1, ROUTE_WARPS).min(t);
    let (bias, table, tokens, vocab) = match choice {
        DeviceChoice::Hash {
            table,
            tokens,
            vocab,
        } => (DevicePtr(0), table, tokens, vocab),
        DeviceChoice::Biased(bias) => (bias, DevicePtr(0), DevicePtr(0), 0),
        DeviceChoice::Scores => (DevicePtr(0), DevicePtr(0), DevicePtr(0), 0),
    };
    let config = LaunchConfig {
        grid: [dim(t.div_ceil(warps))?, 1, 1],
        block: [dim(32 * warps)?, 1, 1],
        shared_bytes: dim(warps * per_warp)?,
    };
    let scores = scores.unwrap_or(DevicePtr(0));
    let norm = u32::from(routing.norm_topk_prob);
    // SAFETY: the kernel reads T × E logits, E biases when given, T token ids and their table
    // rows of K when hashing, and writes T × K ids and weights (and T × E scores when given),
    // all of which the caller's buffers hold.
    unsafe {
        gpu.launch(
            "moe_route",
            config,
            &[
                &logits,
                &bias,
                &table,
                &tokens,
                &dim(vocab)?,
                &dim(t)?,
                &dim(experts)?,
                &dim(k)?,
                &norm,
                &routing.routed_scaling_factor,
                &routes.ids,
                &routes.weights,
                &scores,
            ],
        )
    }
}

/// The shared and routed experts' weights on the device, as stored, with the table of their
/// addresses the expert kernels index by expert (see the module doc for its layout). Owns the
/// weights, so the addresses stay valid while it lives.
#[derive(Debug)]
pub struct ExpertTable {
    table: DeviceBuffer,
    _weights: Vec<DeviceWeight>,
    routed: usize,
    d: usize,
    inter: usize,
}

impl ExpertTable {
    /// Uploads the shared expert and every routed expert as stored.
    pub fn upload(
        gpu: &Gpu,
        shared: &ExpertWeights<LinearView>,
        routed: &[ExpertWeights<LinearView>],
    ) -> Result<Self, DeviceError> {
        let up =
            |e: &ExpertWeights<LinearView>| -> Result<ExpertWeights<DeviceWeight>, DeviceError> {
                Ok(ExpertWeights {
                    w1: DeviceWeight::upload(gpu, &e.w1)?,
                    w2: DeviceWeight::upload(gpu, &e.w2)?,
                    w3: DeviceWeight::upload(gpu, &e.w3)?,
                })
            };
        let routed = routed
            .iter()
            .map(|e| up(e).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(gpu, up(shared)?, routed)
    }

    /// The table over experts already on the device. A routed expert that is `None` (not on
    /// this device) gets null addresses: a launch must not route a token to it.
    pub fn new(
        gpu: &Gpu,
        shared: ExpertWeights<DeviceWeight>,
        routed: Vec<Option<ExpertWeights<DeviceWeight>>>,
    ) -> Result<Self, DeviceError> {
        let (d, inter) = (shared.w1.inp, shared.w1.out);
        let mut bytes = Vec::with_capacity((1 + routed.len()) * 3 * RECORD);
        let mut weights = Vec::new();
        for (slot, expert) in std::iter::once(Some(shared)).chain(routed).enumerate() {
            let Some(e) = expert else {
                bytes.resize(bytes.len() + 3 * RECORD, 0);
                continue;
            };
            for (w, (out, inp)) in [(e.w1, (inter, d)), (e.w3, (inter, d)), (e.w2, (d, inter))] {
                if (w.out, w.inp) != (out, inp) {
                    return Err(invalid(
                        "experts",
                        format!(
                            "expert slot {slot}: a {}×{} linear where {out}×{inp} is wanted",
                            w.out, w.inp
                        ),
                    ));
                }
                let p = w.params();
                bytes.extend_from_slice(&p.data.0.to_le_bytes());
                bytes.extend_from_slice(&p.scales.0.to_le_bytes());
                bytes.extend_from_slice(&p.format.to_le_bytes());
                bytes.extend_from_slice(&p.scale_kind.to_le_bytes());
                weights.push(w);
            }
        }
        let routed = bytes.len() / (3 * RECORD) - 1;
        Ok(Self {
            table: gpu.upload(&bytes)?,
            _weights: weights,
            routed,
            d,
            inter,
        })
    }

    /// Routed experts E.
    pub fn routed(&self) -> usize {
        self.routed
    }

    /// Model width D.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Intermediate width I.
    pub fn inter(&self) -> usize {
        self.inter
    }

    /// The table's address, as the kernels take it.
    pub fn ptr(&self) -> DevicePtr {
        self.table.ptr()
    }
}

/// The experts' scratch for up to `rows / (K + 1)` tokens: hidden values `rows × I` and partial
/// outputs `rows × D` (f32).
#[derive(Debug)]
pub struct ExpertsScratch {
    /// SwiGLU outputs, row `t·(K+1) + s`.
    pub hidden: DeviceBuffer,
    /// Each row's expert output, row `t·(K+1) + s`.
    pub partial: DeviceBuffer,
    rows: usize,
}

impl ExpertsScratch {
    /// Scratch for `tokens` tokens of `k` experts each over `table`'s widths.
    pub fn new(
        gpu: &Gpu,
        table: &ExpertTable,
        tokens: usize,
        k: usize,
    ) -> Result<Self, DeviceError> {
        let rows = tokens * (k + 1);
        Ok(Self {
            hidden: gpu.alloc(rows * table.inter * 4)?,
            partial: gpu.alloc(rows * table.d * 4)?,
            rows,
        })
    }
}

/// Checks a launch of the expert kernels against the table and the scratch rows.
fn expert_shape(
    kernel: &str,
    table: &ExpertTable,
    routes: &Routes,
    rows: usize,
) -> Result<(), DeviceError> {
    if routes.k == 0 || routes.k > MAX_K {
        return Err(invalid(
            kernel,
            format!("{} experts per token (1 to {MAX_K})", routes.k),
        ));
    }
    if routes.tokens * (routes.k + 1) > rows {
        return Err(invalid(
            kernel,
            format!(
                "scratch of {rows} rows for {} tokens of {} experts",
                routes.tokens, routes.k
            ),
        ));
    }
    if table.d == 0 || table.inter == 0 {
        return Err(invalid(kernel, "experts without width".to_string()));
    }
    Ok(())
}

/// Dynamic shared memory of the reference numerics' activation scales for inputs of `inp`.
fn act_shared(numerics: Numerics, inp: usize) -> Result<u32, DeviceError> {
    match numerics {
        Numerics::Exact => Ok(0),
        Numerics::Reference => dim(BATCH * inp.div_ceil(ACT_BLOCK) * 4),
    }
}

/// The expert kernels' grid: a block per [`EXPERT_THREADS`] of the `out` outputs, per routed
/// expert and the shared one, with room for the activation scales of inputs of `inp`.
fn experts_config(
    table: &ExpertTable,
    out: usize,
    inp: usize,
    numerics: Numerics,
) -> Result<LaunchConfig, DeviceError> {
    Ok(LaunchConfig {
        grid: [
            dim(out.div_ceil(EXPERT_THREADS as usize))?,
            dim(table.routed + 1)?,
            1,
        ],
        block: [EXPERT_THREADS, 1, 1],
        shared_bytes: act_shared(numerics, inp)?,
    })
}

/// Gate and up projections of every routed row with SwiGLU and its clamp into
/// `scratch.hidden`: w1, w3 of the shared expert for each token, of each chosen expert for its
/// rows (each expert's weights read once per 8 of its rows; unchosen experts not at all). In
/// reference numerics the input is FP8-quantized for quantized weights and the result scaled by
/// the routing weight, as [`crate::moe::experts`] does.
pub fn experts_gate_up(
    gpu: &Gpu,
    table: &ExpertTable,
    x: DevicePtr,
    routes: &Routes,
    swiglu_limit: f32,
    numerics: Numerics,
    scratch: &ExpertsScratch,
) -> Result<(), DeviceError> {
    expert_shape("experts_gate_up", table, routes, scratch.rows)?;
    if routes.tokens == 0 {
        return Ok(());
    }
    let config = experts_config(table, table.inter, table.d, numerics)?;
    let reference = u32::from(numerics == Numerics::Reference);
    // SAFETY: the table holds (E + 1) × 3 records over live weights of the table's shapes; x is
    // T × D, the routes T × K, the scratch T·(K+1) rows of I (checked above).
    unsafe {
        gpu.launch(
            "experts_gate_up",
            config,
            &[
                &table.ptr(),
                &x,
                &routes.ids,
                &routes.weights,
                &dim(routes.tokens)?,
                &dim(routes.k)?,
                &dim(table.d)?,
                &dim(table.inter)?,
                &swiglu_limit,
                &reference,
                &scratch.hidden.ptr(),
            ],
        )
    }
}

/// Down projection of every routed row's hidden values into `scratch.partial`, times the
/// routing weight in exact numerics (reference numerics weighted the hidden values and quantize
/// them for a quantized w2).
pub fn experts_down(
    gpu: &Gpu,
    table: &ExpertTable,
    routes: &Routes,
    numerics: Numerics,
    scratch: &ExpertsScratch,
) -> Result<(), DeviceError> {
    expert_shape("experts_down", table, routes, scratch.rows)?;
    if routes.tokens == 0 {
        return Ok(());
    }
    let config = experts_config(table, table.d, table.inter, numerics)?;
    let reference = u32::from(numerics == Numerics::Reference);
    // SAFETY: as experts_gate_up; the partial scratch holds T·(K+1) rows of D.
    unsafe {
        gpu.launch(
            "experts_down",
            config,
            &[
                &table.ptr(),
                &scratch.hidden.ptr(),
                &routes.ids,
                &routes.weights,
                &dim(routes.tokens)?,
                &dim(routes.k)?,
                &dim(table.d)?,
                &dim(table.inter)?,
                &reference,
                &scratch.partial.ptr(),
            ],
        )
    }
}

/// `out` (`T × D`) = each token's shared expert output, then its routed experts' by expert
/// index (equal ids by slot), added in that order from 0 as the runtime's CPU MoE adds them.
pub fn experts_sum(
    gpu: &Gpu,
    table: &ExpertTable,
    routes: &Routes,
    scratch: &ExpertsScratch,
    out: DevicePtr,
) -> Result<(), DeviceError> {
    expert_shape("experts_sum", table, routes, scratch.rows)?;
    if routes.tokens == 0 {
        return Ok(());
    }
    let config = LaunchConfig {
        grid: [
            dim(table.d.div_ceil(SUM_THREADS as usize))?,
            dim(routes.tokens)?,
            1,
        ],
        block: [SUM_THREADS, 1, 1],
        shared_bytes: 0,
    };
    // SAFETY: the partial scratch holds T·(K+1) rows of D (rows of unrouted slots are not
    // read), the ids T × K, `out` T × D.
    unsafe {
        gpu.launch(
            "experts_sum",
            config,
            &[
                &scratch.partial.ptr(),
                &routes.ids,
                &dim(routes.tokens)?,
                &dim(routes.k)?,
                &dim(table.routed)?,
                &dim(table.d)?,
                &out,
            ],
        )
    }
}

/// The MoE's experts for a chunk `x` (`T × D`, normed) routed by `routes`, into `out`
/// (`T × D`): [`experts_gate_up`], [`experts_down`], [`experts_sum`], three launches.
#[allow(clippy::too_many_arguments)]
pub fn experts(
    gpu: &Gpu,
    table: &ExpertTable,
    x: DevicePtr,
    routes: &Routes,
    swiglu_limit: f32,
    numerics: Numerics,
    scratch: &ExpertsScratch,
    out: DevicePtr,
) -> Result<(), DeviceError> {
    experts_gate_up(gpu, table, x, routes, swiglu_limit, numerics, scratch)?;
    experts_down(gpu, table, routes, numerics, scratch)?;
    experts_sum(gpu, table, routes, scratch, out)
}

// ---------------------------------------------------------------------------------------------
// Twins.

fn u32_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// How a twin case routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Biased,
    Scores,
    Hash,
}

/// A case's router inputs, its CPU routing and the same on the device.
struct Routed {
    /// CPU: each token's `(expert, weight)` pairs.
    cpu: Vec<Vec<(usize, f32)>>,
    cpu_scores: Vec<f32>,
    ids: DeviceBuffer,
    weights: DeviceBuffer,
    scores: DeviceBuffer,
    /// The device inputs, alive until the outputs are read.
    _inputs: [DeviceBuffer; 4],
}

/// Routes `logits` (`T × E`) on the CPU and the device.
#[allow(clippy::too_many_arguments)]
fn route_both(
    gpu: &Gpu,
    rng: &mut Rng,
    logits: Vec<f32>,
    bias: Vec<f32>,
    kind: Kind,
    e: usize,
    routing: Routing,
    duplicates: bool,
) -> Result<Routed, DeviceError> {
    let k = routing.num_experts_per_tok;
    let t = logits.len() / e;
    // Hash routing: a table of 13 token ids, distinct experts per row unless `duplicates`.
    let vocab = 13;
    let mut table = Vec::new();
    if kind == Kind::Hash {
        for _ in 0..vocab {
            let mut row: Vec<usize> = Vec::new();
            while row.len() < k {
                let x = (rng.next_u64() % e as u64) as usize;
                if duplicates || !row.contains(&x) || k > e {
                    row.push(x);
                }
            }
            table.extend(row);
        }
    }
    let tokens: Vec<u32> = (0..t)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect();
    // CPU.
    let mut cpu_scores = logits.clone();
    let mut cpu = Vec::with_capacity(t);
    let mut scratch = RouteScratch::default();
    for (ti, row) in cpu_scores.chunks_mut(e).enumerate() {
        crate::moe::router_scores(row);
        let token = tokens[ti] as usize;
        let choice = match kind {
            Kind::Hash => ExpertChoice::Hash(&table[token * k..(token + 1) * k]),
            Kind::Biased => ExpertChoice::Biased(&bias),
            Kind::Scores => ExpertChoice::Scores,
        };
        cpu.push(crate::moe::moe_route(row, choice, routing, &mut scratch).to_vec());
    }
    // Device.
    let device_logits = gpu.upload_f32(&logits)?;
    let device_bias = gpu.upload_f32(&bias)?;
    let device_table = upload_tid2eid(gpu, &table)?;
    let device_tokens = gpu.upload(&u32_bytes(&tokens))?;
    let ids = gpu.alloc(t * k * 4)?;
    let weights = gpu.alloc(t * k * 4)?;
    let scores = gpu.alloc(t * e * 4)?;
    let choice = match kind {
        Kind::Hash => DeviceChoice::Hash {
            table: device_table.ptr(),
            tokens: device_tokens.ptr(),
            vocab,
        },
        Kind::Biased => DeviceChoice::Biased(device_bias.ptr()),
        Kind::Scores => DeviceChoice::Scores,
    };
    let routes = Routes {
        ids: ids.ptr(),
        weights: weights.ptr(),
        tokens: t,
        k,
    };
    moe_route(
        gpu,
        device_logits.ptr(),
        choice,
        routing,
        e,
        routes,
        Some(scores.ptr()),
    )?;
    Ok(Routed {
        cpu,
        cpu_scores,
        ids,
        weights,
        scores,
        _inputs: [device_logits, device_bias, device_table, device_tokens],
    })
}

impl Routed {
    fn routes(&self) -> Routes {
        Routes {
            ids: self.ids.ptr(),
            weights: self.weights.ptr(),
            tokens: self.cpu.len(),
            k: self.cpu.first().map_or(0, Vec::len),
        }
    }

    /// The id, weight and score checks of this routing.
    fn checks(&self, shape: &str) -> Result<Vec<Check>, DeviceError> {
        let (t, k) = (self.cpu.len(), self.routes().k);
        let ids: Vec<f32> = self
            .ids
            .read_u32(t * k)?
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let cpu_ids: Vec<f32> = self.cpu.iter().flatten().map(|&(e, _)| e as f32).collect();
        let cpu_weights: Vec<f32> = self.cpu.iter().flatten().map(|&(_, w)| w).collect();
        Ok(vec![
            // Ids exactly (as f32: below 2^24).
            Check::new("moe_route", format!("{shape} ids"), &ids, &cpu_ids, 0.0),
            // expf/log1pf/sqrtf of a GPU differ from the host's libm by a few ulps; a weight is
            // a ratio of such scores: ≤ 8 ulp (cuda-sim, on the host's libm, matches exactly).
            Check::new(
                "moe_route",
                format!("{shape} weights"),
                &self.weights.read_f32(t * k)?,
                &cpu_weights,
                1e-6,
            ),
            Check::new(
                "moe_route",
                format!("{shape} scores"),
                &self.scores.read_f32(self.cpu_scores.len())?,
                &self.cpu_scores,
                1e-6,
            ),
        ])
    }
}

fn routing(k: usize, norm: bool, factor: f32) -> Routing {
    Routing {
        num_experts_per_tok: k,
        norm_topk_prob: norm,
        routed_scaling_factor: factor,
    }
}

/// `moe_route` at V4-Flash's E = 256, K = 6 (and Pro's E = 384), with bias, without, hashed,
/// with ties, and at odd sizes.
fn route_twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = Vec::new();
    // (T, E, K, kind, logit scale, norm, factor)
    let cases = [
        (1, 256, 6, Kind::Biased, 4.0, true, 1.5),
        (7, 256, 6, Kind::Biased, 4.0, true, 1.5),
        (7, 256, 6, Kind::Scores, 30.0, true, 1.5),
        (7, 256, 6, Kind::Hash, 4.0, true, 1.5),
        (1, 256, 6, Kind::Hash, 4.0, true, 1.5),
        (3, 384, 6, Kind::Biased, 4.0, true, 2.5),
        (5, 7, 3, Kind::Biased, 2.0, false, 1.0),
        (33, 40, 1, Kind::Scores, 3.0, true, 1.5),
    ];
    for (t, e, k, kind, scale, norm, factor) in cases {
        let logits = rng.values(t * e, scale);
        let bias = rng.values(e, 0.5);
        let r = route_both(
            gpu,
            rng,
            logits,
            bias,
            kind,
            e,
            routing(k, norm, factor),
            false,
        )?;
        let shape = format!(
            "T={t} E={e} K={k} {kind:?}{}",
            if norm { "" } else { " unnormed" }
        );
        checks.extend(r.checks(&shape)?);
    }
    // Ties: equal logits everywhere, equal top values at scattered indices, and equal biased
    // keys, each to the lower index as the CPU ranks them.
    let e = 256;
    let mut logits = vec![0.25f32; 3 * e];
    for (i, l) in logits[e..2 * e].iter_mut().enumerate() {
        *l = if i % 37 == 5 {
            3.0
        } else {
            (i % 11) as f32 * 0.1
        };
    }
    for (i, l) in logits[2 * e..].iter_mut().enumerate() {
        *l = (i % 5) as f32;
    }
    let r = route_both(
        gpu,
        rng,
        logits.clone(),
        vec![0.0; e],
        Kind::Biased,
        e,
        routing(6, true, 1.5),
        false,
    )?;
    checks.extend(r.checks("T=3 E=256 K=6 ties")?);
    let r = route_both(
        gpu,
        rng,
        logits,
        vec![0.0; e],
        Kind::Scores,
        e,
        routing(6, true, 1.5),
        false,
    )?;
    checks.extend(r.checks("T=3 E=256 K=6 ties unbiased")?);
    Ok(checks)
}

/// One experts twin: a chunk of `t` tokens routed to `k` of `e` experts (`hash`: by a table
/// with repeated experts), widths `d`, `inter`.
struct ExpertsCase {
    t: usize,
    e: usize,
    k: usize,
    d: usize,
    inter: usize,
    routed: Format,
    shared: Format,
    numerics: Numerics,
    hash: bool,
    /// Scale of x: large enough that the SwiGLU clamp bites.
    x_scale: f32,
}

/// A stored expert.
fn random_expert(
    rng: &mut Rng,
    format: Format,
    d: usize,
    inter: usize,
) -> ExpertWeights<StoredWeight> {
    ExpertWeights {
        w1: StoredWeight::random(rng, format, inter, d),
        w2: StoredWeight::random(rng, format, d, inter),
        w3: StoredWeight::random(rng, format, inter, d),
    }
}

fn upload_expert(
    gpu: &Gpu,
    e: &ExpertWeights<StoredWeight>,
) -> Result<ExpertWeights<DeviceWeight>, DeviceError> {
    Ok(ExpertWeights {
        w1: DeviceWeight::upload(gpu, &e.w1.view())?,
        w2: DeviceWeight::upload(gpu, &e.w2.view())?,
        w3: DeviceWeight::upload(gpu, &e.w3.view())?,
    })
}

fn pack(w: &StoredWeight) -> Result<PackedWeights, DeviceError> {
    w.view()
        .pack()
        .map_err(|e| invalid("experts", format!("packing a twin weight: {e}")))
}

fn pack_expert(
    e: &ExpertWeights<StoredWeight>,
) -> Result<ExpertWeights<PackedWeights>, DeviceError> {
    Ok(ExpertWeights {
        w1: pack(&e.w1)?,
        w2: pack(&e.w2)?,
        w3: pack(&e.w3)?,
    })
}

fn linear_expert(e: &ExpertWeights<PackedWeights>) -> ExpertWeights<PackedLinear<'_>> {
    ExpertWeights {
        w1: e.w1.linear(),
        w2: e.w2.linear(),
        w3: e.w3.linear(),
    }
}

/// The experts on the device and on the CPU for one case; only the chosen experts have
/// weights (the others' table entries are null, so reading one would fault).
fn experts_case(gpu: &Gpu, rng: &mut Rng, c: &ExpertsCase) -> Result<Vec<Check>, DeviceError> {
    let limit = 10.0;
    let kind = if c.hash { Kind::Hash } else { Kind::Biased };
    let logits = rng.values(c.t * c.e, 3.0);
    let bias = rng.values(c.e, 0.5);
    let r = route_both(
        gpu,
        rng,
        logits,
        bias,
        kind,
        c.e,
        routing(c.k, true, 1.5),
        c.hash,
    )?;
    let shape = format!(
        "T={} D={} I={} K={} of E={} {:?}/{:?} {:?}{}",
        c.t,
        c.d,
        c.inter,
        c.k,
        c.e,
        c.routed,
        c.shared,
        c.numerics,
        if c.hash { " hash" } else { "" }
    );
    let mut checks = r.checks(&shape)?;
    let mut chosen = vec![false; c.e];
    r.cpu.iter().flatten().for_each(|&(e, _)| chosen[e] = true);
    let shared = random_expert(rng, c.shared, c.d, c.inter);
    let routed: Vec<Option<ExpertWeights<StoredWeight>>> = chosen
        .iter()
        .map(|&on| on.then(|| random_expert(rng, c.routed, c.d, c.inter)))
        .collect();
    let x = rng.values(c.t * c.d, c.x_scale / (c.d as f32).sqrt());
    // Device.
    let table = ExpertTable::new(
        gpu,
        upload_expert(gpu, &shared)?,
        routed
            .iter()
            .map(|e| e.as_ref().map(|e| upload_expert(gpu, e)).transpose())
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    let scratch = ExpertsScratch::new(gpu, &table, c.t, c.k)?;
    let device_x = gpu.upload_f32(&x)?;
    let out = gpu.alloc(c.t * c.d * 4)?;
    experts(
        gpu,
        &table,
        device_x.ptr(),
        &r.routes(),
        limit,
        c.numerics,
        &scratch,
        out.ptr(),
    )?;
    let gpu_out = out.read_f32(c.t * c.d)?;
    // CPU: the kernels crate's experts, then the runtime's sum (shared, then routed by index).
    let dummy = pack(&StoredWeight::random(rng, Format::F32, 1, 1))?;
    let packed_shared = pack_expert(&shared)?;
    let packed_routed = routed
        .iter()
        .map(|e| e.as_ref().map(pack_expert).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let routed_linears: Vec<ExpertWeights<PackedLinear>> = packed_routed
        .iter()
        .map(|e| match e {
            Some(e) => linear_expert(e),
            None => ExpertWeights {
                w1: dummy.linear(),
                w2: dummy.linear(),
                w3: dummy.linear(),
            },
        })
        .collect();
    let mut rows: Vec<ExpertRows> = (0..=c.e).map(|_| ExpertRows::default()).collect();
    rows[0].rows.extend((0..c.t).map(|t| (t, 1.0)));
    for (t, pairs) in r.cpu.iter().enumerate() {
        for &(e, w) in pairs {
            rows[1 + e].rows.push((t, w));
        }
    }
    crate::moe::experts(
        &linear_expert(&packed_shared),
        &routed_linears,
        &x,
        limit,
        c.numerics,
        &mut rows,
    );
    let mut cpu_out = vec![0.0f32; c.t * c.d];
    for b in &rows {
        for (&(t, _), y) in b.rows.iter().zip(b.y.chunks(c.d)) {
            cpu_out[t * c.d..(t + 1) * c.d]
                .iter_mut()
                .zip(y)
                .for_each(|(o, v)| *o += v);
        }
    }
    // Relative to the largest output: a sum's rounding scales with its terms, not its result.
    let scale = cpu_out.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let gpu_scaled: Vec<f32> = gpu_out.iter().map(|v| v / scale).collect();
    let cpu_scaled: Vec<f32> = cpu_out.iter().map(|v| v / scale).collect();
    // Same per-block FMA order as the CPU's panels, so cuda-sim matches bit for bit. A GPU's
    // expf (SiLU) differs from the host's by ≤ 2 ulp: ~1e-7 of the output in exact numerics; in
    // reference numerics that may flip one E4M3 rounding of a hidden value (2^-4 of it), whose
    // share of the largest output stays below ~4e-3.
    let tolerance = match c.numerics {
        Numerics::Exact => 1e-5,
        Numerics::Reference => 4e-3,
    };
    checks.push(Check::new(
        "experts",
        shape,
        &gpu_scaled,
        &cpu_scaled,
        tolerance,
    ));
    Ok(checks)
}

/// The MoE kernels against their twins.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let mut checks = route_twins(gpu, rng)?;
    let cases = [
        // V4-Flash's widths, one decoded token: FP4 routed experts, FP8 shared expert.
        ExpertsCase {
            t: 1,
            e: 4,
            k: 2,
            d: 4096,
            inter: 2048,
            routed: Format::Fp4Group,
            shared: Format::Fp8Block,
            numerics: Numerics::Exact,
            hash: false,
            x_scale: 2.0,
        },
        ExpertsCase {
            t: 3,
            e: 6,
            k: 2,
            d: 1024,
            inter: 512,
            routed: Format::Fp4Group,
            shared: Format::Fp8Block,
            numerics: Numerics::Reference,
            hash: false,
            x_scale: 2.0,
        },
        // Odd shapes: more rows than a batch, partial tiles, every format.
        ExpertsCase {
            t: 7,
            e: 5,
            k: 3,
            d: 64,
            inter: 96,
            routed: Format::Fp4Group,
            shared: Format::Fp8Block,
            numerics: Numerics::Exact,
            hash: false,
            x_scale: 8.0,
        },
        ExpertsCase {
            t: 7,
            e: 5,
            k: 3,
            d: 64,
            inter: 96,
            routed: Format::Fp4Group,
            shared: Format::Fp8Block,
            numerics: Numerics::Reference,
            hash: false,
            x_scale: 8.0,
        },
        ExpertsCase {
            t: 11,
            e: 3,
            k: 2,
            d: 100,
            inter: 72,
            routed: Format::Fp8Block,
            shared: Format::Bf16,
            numerics: Numerics::Exact,
            hash: true,
            x_scale: 8.0,
        },
        ExpertsCase {
            t: 5,
            e: 4,
            k: 3,
            d: 37,
            inter: 130,
            routed: Format::F16,
            shared: Format::F32,
            numerics: Numerics::Reference,
            hash: true,
            x_scale: 100.0,
        },
        ExpertsCase {
            t: 19,
            e: 2,
            k: 1,
            d: 160,
            inter: 33,
            routed: Format::Bf16,
            shared: Format::Fp8Block,
            numerics: Numerics::Exact,
            hash: false,
            x_scale: 4.0,
        },
        // More routed entries (T·K = 135) than a block scans at once: rows carried over.
        ExpertsCase {
            t: 45,
            e: 3,
            k: 3,
            d: 64,
            inter: 32,
            routed: Format::Fp4Group,
            shared: Format::Fp8Block,
            numerics: Numerics::Exact,
            hash: true,
            x_scale: 8.0,
        },
    ];
    for c in &cases {
        checks.extend(experts_case(gpu, rng, c)?);
    }
    Ok(checks)
}
