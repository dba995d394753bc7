//! The DeepSeek-V4 KV cache: per-layer cache schema (windows, compressed entries, indexer keys,
//! compressor tails), byte sizes per cache dtype, block budgets and the memory planner.
//!
//! One schema serves the planner and the allocator, so `dsv4 plan` cannot drift from what the
//! engine allocates.

mod budget;
mod compare;
mod dtype;
mod planner;
mod pool;
mod schema;
mod sharing;

pub use budget::{BlockBudget, BudgetOverflow, PoolBudget};
pub use compare::{compare, Strategy};
pub use dtype::{CacheDtypes, IndexerCacheDtype, KvCacheDtype, UnknownDtype};
pub use planner::{
    layer_kinds, plan, DenseCache, Fit, LayerReport, PlanError, PlanReport, PlanRequest,
    SharingReport, Solve,
};
pub use pool::{BlockPool, PoolFull};
pub use schema::{
    BlockSizeError, LayerCacheSchema, ModelCacheSchema, PagedStream, SchemaError, StreamKind,
    TailBuffer, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE,
};
pub use sharing::{KvSharing, ShareDirection, Sharing, SharingError, Sources};
