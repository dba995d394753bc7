//! Block budgets: how many pages of each size a batch of requests needs at a given context.
//! Streams with equal page bytes share a pool; unlike streams never share a page.

use serde::Serialize;

use crate::{ModelCacheSchema, StreamKind};

/// One pool of equal-sized pages and what it must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolBudget {
    /// Bytes of one page (one block of one layer's stream).
    pub page_bytes: u64,
    /// Layer streams served, as `(layer, kind)`.
    pub streams: Vec<(usize, StreamKind)>,
    /// Pages needed for the batch, headroom included.
    pub blocks: u64,
    /// `blocks × page_bytes`.
    pub bytes: u64,
}

/// Pages and bytes for `batch` requests of `context` tokens each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockBudget {
    /// Tokens per request.
    pub context: usize,
    /// Requests.
    pub batch: usize,
    /// Extra pages reserved per pool, in percent (rounded up).
    pub headroom_percent: u32,
    /// Pools by descending page size.
    pub pools: Vec<PoolBudget>,
    /// Bytes of all pools.
    pub paged_bytes: u64,
    /// Windows and tails of the whole batch.
    pub fixed_bytes: u64,
    /// `paged_bytes + fixed_bytes`.
    pub total_bytes: u64,
}

/// A batch whose cache would not fit in 64 bits of bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cache of {batch} request(s) of {context} tokens would exceed 2^64 bytes")]
pub struct BudgetOverflow {
    /// Tokens per request.
    pub context: usize,
    /// Requests.
    pub batch: usize,
}

impl BlockBudget {
    /// Budgets `batch` requests of `context` tokens with `headroom_percent` extra pages per pool.
    /// Every product is checked: `batch` and `context` come from the user.
    pub fn new(
        schema: &ModelCacheSchema,
        context: usize,
        batch: usize,
        headroom_percent: u32,
    ) -> Result<Self, BudgetOverflow> {
        let overflow = BudgetOverflow { context, batch };
        let mul = |a: u64, b: u64| a.checked_mul(b).ok_or(overflow.clone());
        let add = |a: u64, b: u64| a.checked_add(b).ok_or(overflow.clone());
        let mut pools: Vec<PoolBudget> = Vec::new();
        for layer in &schema.layers {
            for stream in layer.streams() {
                let blocks = mul(stream.blocks(context) as u64, batch as u64)?;
                let pool = match pools.iter_mut().find(|p| p.page_bytes == stream.page_bytes) {
                    Some(pool) => pool,
                    None => {
                        pools.push(PoolBudget {
                            page_bytes: stream.page_bytes,
                            streams: Vec::new(),
                            blocks: 0,
                            bytes: 0,
                        });
                        let last = pools.len() - 1;
                        &mut pools[last]
                    }
                };
                pool.streams.push((layer.layer, stream.kind));
                pool.blocks = add(pool.blocks, blocks)?;
            }
        }
        let percent = 100 + u64::from(headroom_percent);
        let mut paged_bytes = 0u64;
        for pool in &mut pools {
            pool.blocks = mul(pool.blocks, percent)?.div_ceil(100);
            pool.bytes = mul(pool.blocks, pool.page_bytes)?;
            paged_bytes = add(paged_bytes, pool.bytes)?;
        }
        pools.sort_by_key(|p| std::cmp::Reverse(p.page_bytes));
        let fixed_bytes = mul(schema.fixed_bytes_per_request(), batch as u64)?;
        Ok(Self {
            context,
            batch,
            headroom_percent,
            pools,
            paged_bytes,
            fixed_bytes,
            total_bytes: add(paged_bytes, fixed_bytes)?,
        })
    }
}
