//! The memory planner: KV bytes for a context and batch, the inverse question (largest context or
//! batch that fits a memory size after the weights), and what dense caches would cost instead.

use dsv4_model::ModelConfig;
use serde::Serialize;

use crate::{
    BlockBudget, BlockSizeError, BudgetOverflow, CacheDtypes, LayerCacheSchema, ModelCacheSchema,
    PoolBudget, SchemaError, Sharing, SharingError,
};

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The block size does not suit the schedule.
    #[error(transparent)]
    BlockSize(#[from] BlockSizeError),
    /// The sharing policy cannot be honoured.
    #[error(transparent)]
    Sharing(#[from] SharingError),
    /// The sizes asked for do not fit in 64 bits of bytes.
    #[error(transparent)]
    TooLarge(#[from] BudgetOverflow),
    /// More tokens asked for than the model supports.
    #[error("context {context} exceeds the model's max_position_embeddings = {max}")]
    ContextTooLong {
        /// Tokens asked for.
        context: usize,
        /// The model's limit.
        max: usize,
    },
    /// A batch of zero requests.
    #[error("batch must be at least 1")]
    EmptyBatch,
    /// The weights alone exceed the memory given.
    #[error("the weights alone take {weight_bytes} bytes, more than the {memory_bytes} bytes of memory given (use --kv-only to plan the cache alone)")]
    WeightsExceedMemory {
        /// Bytes of the weights.
        weight_bytes: u64,
        /// Memory given.
        memory_bytes: u64,
    },
    /// Not even one request of the smallest size fits.
    #[error(
        "{available_bytes} bytes are left for the cache, but {what} needs {needed_bytes} bytes"
    )]
    NothingFits {
        /// Bytes left after the weights.
        available_bytes: u64,
        /// What was tried.
        what: String,
        /// Bytes it needs.
        needed_bytes: u64,
    },
}

impl From<SchemaError> for PlanError {
    fn from(e: SchemaError) -> Self {
        match e {
            SchemaError::BlockSize(e) => Self::BlockSize(e),
            SchemaError::Sharing(e) => Self::Sharing(e),
        }
    }
}

/// What the plan should solve for when a memory size is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solve {
    /// Price the given context and batch.
    Forward,
    /// The largest context that fits at the given batch.
    MaxContext,
    /// The largest batch that fits at the given context.
    MaxBatch,
}

/// Inputs of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest {
    /// Formats of entries and indexer keys.
    pub dtypes: CacheDtypes,
    /// Tokens per logical block.
    pub block_size: usize,
    /// Extra pages per pool, in percent.
    pub headroom_percent: u32,
    /// Tokens per request (ignored when solving for the context).
    pub context: usize,
    /// Requests (ignored when solving for the batch).
    pub batch: usize,
    /// Memory for weights and cache, when the inverse question is asked.
    pub memory_bytes: Option<u64>,
    /// Bytes of the weights held in that memory (0 to plan the cache alone).
    pub weight_bytes: u64,
    /// What to solve for.
    pub solve: Solve,
    /// The requests' sharing policy.
    pub sharing: Sharing,
}

/// The price of one layer type, for the human summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    /// Layer id.
    pub layer: usize,
    /// `SWA`, `CSA` or `HCA`.
    pub kind: &'static str,
    /// Compress ratio (0 for SWA).
    pub ratio: usize,
    /// Paged growth per token of context.
    pub bytes_per_token: f64,
    /// Bytes per KV entry.
    pub entry_bytes: u64,
    /// Bytes per indexer key (CSA only).
    pub indexer_key_bytes: Option<u64>,
    /// Window ring bytes per request.
    pub window_bytes: u64,
    /// Compressor tail bytes per request.
    pub tail_bytes: u64,
}

/// A dense cache priced for comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DenseCache {
    /// Short key.
    pub name: &'static str,
    /// What is priced.
    pub description: String,
    /// Bytes per token of context (every token stored in every layer).
    pub bytes_per_token: u64,
    /// For the plan's context and batch; `None` beyond 2^64 bytes (a dense cache can overflow
    /// where the compressed plan fits).
    pub total_bytes: Option<u64>,
}

/// The answer to a memory question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    /// Memory given.
    pub memory_bytes: u64,
    /// Of which the weights take.
    pub weight_bytes: u64,
    /// Left for the cache.
    pub available_bytes: u64,
    /// Largest context that fits, when solving for it.
    pub max_context: Option<usize>,
    /// Largest batch that fits, when solving for it.
    pub max_batch: Option<usize>,
    /// `memory` or `max_position_embeddings`.
    pub limited_by: &'static str,
}

/// A full plan: the schema priced at one context and batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    /// Tokens per request.
    pub context: usize,
    /// Requests.
    pub batch: usize,
    /// Tokens per logical block.
    pub block_size: usize,
    /// KV entry format.
    pub kv_cache_dtype: &'static str,
    /// Indexer key format.
    pub indexer_cache_dtype: &'static str,
    /// Paged growth of the whole model per token of context.
    pub bytes_per_token: f64,
    /// Windows and tails of one request.
    pub fixed_bytes_per_request: u64,
    /// Paged bytes of the batch (block-granular, headroom included).
    pub paged_bytes: u64,
    /// Everything the batch needs.
    pub total_bytes: u64,
    /// Per decoder layer.
    pub layers: Vec<LayerReport>,
    /// Page pools.
    pub pools: Vec<PoolBudget>,
    /// Extra pages per pool, in percent.
    pub headroom_percent: u32,
    /// Dense caches at the same context and batch.
    pub comparisons: Vec<DenseCache>,
    /// The memory answer, when `--memory` was given.
    pub fit: Option<Fit>,
    /// What the sharing policy shares and saves, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<SharingReport>,
}

/// A sharing policy's groups and what it saves, from the schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharingReport {
    /// The policy.
    pub policy: Sharing,
    /// CLA groups, each source layer first, then the layers reading its cache.
    pub kv_groups: Vec<Vec<usize>>,
    /// Indexer runs, each selecting layer first, then the layers reusing its selection.
    pub indexer_groups: Vec<Vec<usize>>,
    /// Paged growth per token without the policy.
    pub unshared_bytes_per_token: f64,
    /// The batch's bytes without the policy.
    pub unshared_total_bytes: u64,
    /// `unshared_total_bytes − total_bytes`.
    pub saved_bytes: u64,
}

/// Groups of layers by their source: each source first, then the layers naming it, for the
/// layers where `source` names one.
fn groups(
    schema: &ModelCacheSchema,
    source: impl Fn(&LayerCacheSchema) -> Option<usize>,
) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for layer in &schema.layers {
        if let Some(src) = source(layer) {
            match groups.iter_mut().find(|g| g[0] == src) {
                Some(group) => group.push(layer.layer),
                None => groups.push(vec![src, layer.layer]),
            }
        }
    }
    groups
}

/// DeepSeek-V3.2's attention cache shape: 61 MLA layers of a 512-wide latent plus 64 rope dims,
/// and a 128-wide indexer key per token.
struct V32Shape;

impl V32Shape {
    const LAYERS: u64 = 61;
    const LATENT: u64 = 512;
    const ROPE: u64 = 64;
    const INDEX_DIM: u64 = 128;

    /// BF16 latent, rope and indexer key: 61 × ((512 + 64) × 2 + 128 × 2) = 85,888 B.
    fn bf16_bytes_per_token() -> u64 {
        Self::LAYERS * ((Self::LATENT + Self::ROPE) * 2 + Self::INDEX_DIM * 2)
    }

    /// Its released FP8 cache: E4M3 latent with an f32 scale per 128 dims, BF16 rope, FP8 indexer
    /// key with one f32 scale: 61 × (656 + 132) B.
    fn fp8_bytes_per_token() -> u64 {
        let latent = Self::LATENT + Self::LATENT / 128 * 4 + Self::ROPE * 2;
        Self::LAYERS * (latent + Self::INDEX_DIM + 4)
    }
}

/// Dense caches priced at `tokens` tokens of context in total.
pub(crate) fn dense_caches(
    config: &ModelConfig,
    schema: &ModelCacheSchema,
    tokens: u64,
) -> Vec<DenseCache> {
    let layers = schema.layers.len() as u64;
    let entry = schema
        .layers
        .first()
        .map(|l| l.entry_bytes)
        .unwrap_or_default();
    let dense = |name, description: String, bytes_per_token: u64| DenseCache {
        name,
        description,
        bytes_per_token,
        total_bytes: bytes_per_token.checked_mul(tokens),
    };
    vec![
        dense(
            "v32_dense_mla_bf16",
            "DeepSeek-V3.2-shaped dense MLA cache, bf16 (61 layers)".into(),
            V32Shape::bf16_bytes_per_token(),
        ),
        dense(
            "v32_dense_mla_fp8",
            "DeepSeek-V3.2-shaped dense MLA cache, fp8 (61 layers)".into(),
            V32Shape::fp8_bytes_per_token(),
        ),
        dense(
            "full_attention",
            format!(
                "this model's {} layers under full attention, {} entries of {} values",
                config.num_hidden_layers, schema.dtypes.kv, config.head_dim
            ),
            layers * entry,
        ),
    ]
}

/// Plans the cache of `config` for `request`.
pub fn plan(config: &ModelConfig, request: &PlanRequest) -> Result<PlanReport, PlanError> {
    let schema = ModelCacheSchema::with_sharing(
        config,
        request.dtypes,
        request.block_size,
        request.sharing,
    )?;
    let max_context = config.max_position_embeddings;
    let budget = |context: usize, batch: usize| {
        BlockBudget::new(&schema, context, batch, request.headroom_percent)
    };
    if request.solve != Solve::MaxContext && request.context > max_context {
        return Err(PlanError::ContextTooLong {
            context: request.context,
            max: max_context,
        });
    }
    if request.solve != Solve::MaxBatch && request.batch == 0 {
        return Err(PlanError::EmptyBatch);
    }
    let (mut context, mut batch) = (request.context, request.batch);
    let fit = match request.memory_bytes {
        None => None,
        Some(memory_bytes) => {
            let available_bytes = memory_bytes.checked_sub(request.weight_bytes).ok_or(
                PlanError::WeightsExceedMemory {
                    weight_bytes: request.weight_bytes,
                    memory_bytes,
                },
            )?;
            let fits = |c: usize, b: usize| {
                budget(c, b).is_ok_and(|budget| budget.total_bytes <= available_bytes)
            };
            let nothing_fits = |what: String, c: usize, b: usize| match budget(c, b) {
                Ok(budget) => PlanError::NothingFits {
                    available_bytes,
                    what,
                    needed_bytes: budget.total_bytes,
                },
                Err(overflow) => PlanError::TooLarge(overflow),
            };
            let mut fit = Fit {
                memory_bytes,
                weight_bytes: request.weight_bytes,
                available_bytes,
                max_context: None,
                max_batch: None,
                limited_by: "memory",
            };
            match request.solve {
                Solve::Forward => {}
                Solve::MaxContext => {
                    if !fits(0, batch) {
                        let what = format!("the fixed state of {batch} request(s)");
                        return Err(nothing_fits(what, 0, batch));
                    }
                    context = largest(0, max_context, |c| fits(c, batch));
                    if context == max_context {
                        fit.limited_by = "max_position_embeddings";
                    }
                    fit.max_context = Some(context);
                }
                Solve::MaxBatch => {
                    if !fits(context, 1) {
                        let what = format!("one request of {context} tokens");
                        return Err(nothing_fits(what, context, 1));
                    }
                    let per_request = budget(context, 1)?.total_bytes.max(1);
                    let upper =
                        usize::try_from(available_bytes / per_request + 1).unwrap_or(usize::MAX);
                    batch = largest(1, upper, |b| fits(context, b));
                    fit.max_batch = Some(batch);
                }
            }
            Some(fit)
        }
    };
    let chosen = budget(context, batch)?;
    let layers = schema
        .layers
        .iter()
        .map(|l| LayerReport {
            layer: l.layer,
            kind: l.attention.label(),
            ratio: l.attention.ratio().unwrap_or(0),
            bytes_per_token: l.bytes_per_token(),
            entry_bytes: l.entry_bytes,
            indexer_key_bytes: l.indexer_keys.map(|k| k.entry_bytes),
            window_bytes: l.window_bytes(),
            tail_bytes: l.tail_bytes(),
        })
        .collect();
    let tokens = (context as u64)
        .checked_mul(batch as u64)
        .ok_or(BudgetOverflow { context, batch })?;
    let sharing = if request.sharing.is_none() {
        None
    } else {
        let unshared = ModelCacheSchema::new(config, request.dtypes, request.block_size)?;
        let unshared_total =
            BlockBudget::new(&unshared, context, batch, request.headroom_percent)?.total_bytes;
        Some(SharingReport {
            policy: request.sharing,
            kv_groups: groups(&schema, |l| l.kv_source),
            indexer_groups: groups(&schema, |l| l.indexer_source),
            unshared_bytes_per_token: unshared.bytes_per_token(),
            unshared_total_bytes: unshared_total,
            saved_bytes: unshared_total.saturating_sub(chosen.total_bytes),
        })
    };
    Ok(PlanReport {
        context,
        batch,
        block_size: schema.block_size,
        kv_cache_dtype: schema.dtypes.kv.name(),
        indexer_cache_dtype: schema.dtypes.indexer.name(),
        bytes_per_token: schema.bytes_per_token(),
        fixed_bytes_per_request: schema.fixed_bytes_per_request(),
        paged_bytes: chosen.paged_bytes,
        total_bytes: chosen.total_bytes,
        layers,
        pools: chosen.pools,
        headroom_percent: request.headroom_percent,
        comparisons: dense_caches(config, &schema, tokens),
        fit,
        sharing,
    })
}

/// The largest `x` in `[lo, hi]` with `ok(x)`, given `ok(lo)` and `ok` true up to a point, then false.
fn largest(lo: usize, hi: usize, ok: impl Fn(usize) -> bool) -> usize {
    let (mut good, mut top) = (lo, hi);
    while good < top {
        let mid = good + (top - good).div_ceil(2);
        if ok(mid) {
            good = mid;
        } else {
            top = mid - 1;
        }
    }
    good
}

/// Layers of each attention kind, in schedule order of first appearance, with their count.
pub fn layer_kinds(report: &PlanReport) -> Vec<(&LayerReport, usize)> {
    let mut kinds: Vec<(&LayerReport, usize)> = Vec::new();
    for layer in &report.layers {
        match kinds
            .iter_mut()
            .find(|(l, _)| l.kind == layer.kind && l.ratio == layer.ratio)
        {
            Some((_, count)) => *count += 1,
            None => kinds.push((layer, 1)),
        }
    }
    kinds
}
