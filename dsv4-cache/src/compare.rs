//! `dsv4 plan --compare`: one model, context and batch under each cache strategy side by side,
//! every figure exact from a schema (none estimated): dense caches of other designs, this
//! model's cache in each dtype, contiguous allocation against paged blocks, the sharing
//! policies, and a batch sharing a common prefix.

use dsv4_model::ModelConfig;
use serde::Serialize;

use crate::planner::dense_caches;
use crate::{
    BlockBudget, BudgetOverflow, CacheDtypes, IndexerCacheDtype, KvCacheDtype, ModelCacheSchema,
    PlanError, PlanRequest, Sharing,
};

/// One strategy priced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Strategy {
    /// Short key.
    pub name: String,
    /// What is priced.
    pub description: String,
    /// Growth per token of context.
    pub bytes_per_token: f64,
    /// Bytes every request holds whatever its length (windows, compressor tails).
    pub fixed_bytes_per_request: u64,
    /// The whole batch; `None` beyond 2^64 bytes.
    pub total_bytes: Option<u64>,
    /// `total_bytes` over the default strategy's (this model's paged cache in the plan's dtypes).
    pub ratio_to_default: Option<f64>,
}

/// Prices every strategy for `request`'s context and batch (its dtypes are the default's), with
/// `shared_prefix` tokens common to the batch's requests (0: none). Headroom is left out: each
/// row is what the strategy itself needs.
pub fn compare(
    config: &ModelConfig,
    request: &PlanRequest,
    shared_prefix: usize,
) -> Result<Vec<Strategy>, PlanError> {
    let (context, batch, block) = (request.context, request.batch, request.block_size);
    if context > config.max_position_embeddings {
        return Err(PlanError::ContextTooLong {
            context,
            max: config.max_position_embeddings,
        });
    }
    if batch == 0 {
        return Err(PlanError::EmptyBatch);
    }
    let overflow = BudgetOverflow { context, batch };
    let tokens = (context as u64)
        .checked_mul(batch as u64)
        .ok_or(overflow.clone())?;
    let dtypes = request.dtypes;
    let schema = |dtypes: CacheDtypes, sharing: Sharing| {
        ModelCacheSchema::with_sharing(config, dtypes, block, sharing)
    };
    let paged = |s: &ModelCacheSchema| BlockBudget::new(s, context, batch, 0);
    let mut rows: Vec<Strategy> = Vec::new();
    let mut row = |name: &str, description: String, s: &ModelCacheSchema, total: Option<u64>| {
        rows.push(Strategy {
            name: name.to_string(),
            description,
            bytes_per_token: s.bytes_per_token(),
            fixed_bytes_per_request: s.fixed_bytes_per_request(),
            total_bytes: total,
            ratio_to_default: None,
        });
    };

    let default = schema(dtypes, Sharing::default())?;
    let default_total = paged(&default)?.total_bytes;
    let dtype_names = format!("{} entries, {} indexer keys", dtypes.kv, dtypes.indexer);
    row(
        "dsv4_paged",
        format!("this model's cache in paged blocks, {dtype_names} (the default)"),
        &default,
        Some(default_total),
    );
    // Each request holding its whole context's entries from the start.
    let mut contiguous = 0u64;
    for layer in &default.layers {
        for stream in layer.streams() {
            let entries = stream.entries(config.max_position_embeddings) as u64;
            let bytes = entries
                .checked_mul(stream.entry_bytes)
                .ok_or(overflow.clone())?;
            contiguous = contiguous.checked_add(bytes).ok_or(overflow.clone())?;
        }
    }
    let contiguous = contiguous
        .checked_add(default.fixed_bytes_per_request())
        .and_then(|r| r.checked_mul(batch as u64));
    row(
        "dsv4_contiguous",
        format!(
            "the same, each request allocated for the full {}-token context at once",
            config.max_position_embeddings
        ),
        &default,
        contiguous,
    );
    for (name, kv, indexer) in [
        ("dsv4_bf16", KvCacheDtype::Bf16, IndexerCacheDtype::Bf16),
        ("dsv4_fp8", KvCacheDtype::Fp8, IndexerCacheDtype::Bf16),
        ("dsv4_fp8_fp4", KvCacheDtype::Fp8, IndexerCacheDtype::Fp4),
    ] {
        let s = schema(CacheDtypes { kv, indexer }, Sharing::default())?;
        let total = paged(&s)?.total_bytes;
        row(
            name,
            format!("paged, {kv} entries, {indexer} indexer keys"),
            &s,
            Some(total),
        );
    }
    let policies = [
        (
            "cla_2",
            "CLA groups of 2 (lower layer the source, from layer 0)",
            Sharing::kv_groups(2),
        ),
        (
            "indexer_reuse_2",
            "indexer top-k reused over runs of 2 CSA layers",
            Sharing::indexer_runs(2),
        ),
        (
            "indexer_reuse_4",
            "indexer top-k reused over runs of 4 CSA layers",
            Sharing::indexer_runs(4),
        ),
    ];
    for (name, what, sharing) in policies {
        let s = schema(dtypes, sharing)?;
        let total = paged(&s)?.total_bytes;
        row(name, format!("{what}, {dtype_names}"), &s, Some(total));
    }
    if shared_prefix > 0 {
        let total = prefix_shared_bytes(&default, context, batch, shared_prefix.min(context))
            .ok_or(overflow.clone())?;
        row(
            "shared_prefix",
            format!(
                "{batch} requests sharing a {}-token prefix: its full pages held once",
                shared_prefix.min(context)
            ),
            &default,
            Some(total),
        );
    }
    for dense in dense_caches(config, &default, tokens) {
        rows.push(Strategy {
            name: dense.name.to_string(),
            description: dense.description,
            bytes_per_token: dense.bytes_per_token as f64,
            fixed_bytes_per_request: 0,
            total_bytes: dense.total_bytes,
            ratio_to_default: None,
        });
    }
    for r in &mut rows {
        r.ratio_to_default = r
            .total_bytes
            .map(|t| t as f64 / default_total.max(1) as f64);
    }
    Ok(rows)
}

/// Bytes of `batch` requests of `context` tokens whose first `prefix` tokens are common: each
/// stream's pages wholly inside the prefix (immutable once written) are held once, the rest and
/// every window and tail once per request.
fn prefix_shared_bytes(
    schema: &ModelCacheSchema,
    context: usize,
    batch: usize,
    prefix: usize,
) -> Option<u64> {
    let batch = batch as u64;
    let mut total = schema.fixed_bytes_per_request().checked_mul(batch)?;
    for layer in &schema.layers {
        for stream in layer.streams() {
            let shared = (stream.entries(prefix) / stream.entries_per_block) as u64;
            let own = (stream.blocks(context) as u64).saturating_sub(shared);
            let pages = own.checked_mul(batch)?.checked_add(shared)?;
            total = total.checked_add(pages.checked_mul(stream.page_bytes)?)?;
        }
    }
    Some(total)
}
