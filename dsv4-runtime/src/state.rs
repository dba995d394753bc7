//! Per-request decode state of every layer (docs/model.md §7): the window ring of raw keys, compressed
//! entries and indexer keys in paged blocks, and the f32 compressor tails, laid out by the same
//! cache schema the planner prices.

use dsv4_cache::{
    BlockPool, CacheDtypes, EntryCodec, ModelCacheSchema, PagedEntries, StreamKind, WindowRing,
};

use crate::compressor::CompressorTail;
use crate::workspace::Workspace;

/// What one layer keeps for one request.
#[derive(Debug)]
pub struct LayerState {
    /// The last `W` keys by position.
    pub window: WindowRing,
    /// Compressed entries (CSA, HCA), final once emitted.
    pub entries: Option<PagedEntries>,
    /// Indexer keys (CSA).
    pub indexer_keys: Option<PagedEntries>,
    /// Main compressor tail.
    pub compressor: Option<CompressorTail>,
    /// Indexer compressor tail.
    pub indexer_compressor: Option<CompressorTail>,
}

/// The decode state of one request.
#[derive(Debug)]
pub struct SeqState {
    /// Per decoder layer.
    pub layers: Vec<LayerState>,
    /// Tokens processed so far (the next token's absolute position).
    pub position: usize,
    /// Where the paged streams take their pages.
    pub pool: BlockPool,
    /// Buffers the forward pass reuses between steps of this request.
    pub(crate) workspace: Workspace,
}

impl SeqState {
    /// A fresh request laid out by `schema`, taking pages from `pool`.
    pub fn new(schema: &ModelCacheSchema, pool: BlockPool) -> Self {
        let dtypes: CacheDtypes = schema.dtypes;
        let layers = schema
            .layers
            .iter()
            .map(|l| {
                let kv = EntryCodec::Kv {
                    format: dtypes.kv.format(),
                    rope: l.rope_width,
                };
                let stream = |s: &dsv4_cache::PagedStream| {
                    let codec = match s.kind {
                        StreamKind::Entries => kv,
                        StreamKind::IndexerKeys => EntryCodec::Index(dtypes.indexer.format()),
                    };
                    PagedEntries::new(codec, s.width, s.entries_per_block)
                };
                let overlap = l.attention.has_indexer();
                LayerState {
                    window: WindowRing::new(kv, l.entry_width, l.window_entries),
                    entries: l.entries.as_ref().map(stream),
                    indexer_keys: l.indexer_keys.as_ref().map(stream),
                    compressor: l
                        .entries
                        .map(|s| CompressorTail::new(s.ratio, s.width, overlap)),
                    indexer_compressor: l
                        .indexer_keys
                        .map(|s| CompressorTail::new(s.ratio, s.width, true)),
                }
            })
            .collect();
        Self {
            layers,
            position: 0,
            pool,
            workspace: Workspace::default(),
        }
    }

    /// Bytes the cache holds now: window rings, compressor tails and paged blocks.
    pub fn cache_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                let tails: u64 = [&l.compressor, &l.indexer_compressor]
                    .into_iter()
                    .flatten()
                    .map(CompressorTail::bytes)
                    .sum();
                let paged: u64 = [&l.entries, &l.indexer_keys]
                    .into_iter()
                    .flatten()
                    .map(PagedEntries::bytes)
                    .sum();
                l.window.bytes() + tails + paged
            })
            .sum()
    }
}
