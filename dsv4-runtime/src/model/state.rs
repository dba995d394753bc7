//! What each layer keeps for a request on the CPU (docs/model.md §7): the window ring of raw
//! keys, compressed entries and indexer keys in paged blocks, and the f32 compressor tails, laid
//! out by the same cache schema the planner prices.

use dsv4_cache::{CacheDtypes, ModelCacheSchema, StreamKind};
use dsv4_kernels::cache_store::{EntryCodec, StreamPages, WindowRing};

use dsv4_kernels::compressor::CompressorTail;

/// What one layer keeps for one request. A clone shares the paged streams' full pages and
/// copies the window and the tails.
#[derive(Debug, Clone)]
pub struct LayerState {
    /// The last `W` keys by position.
    pub window: WindowRing,
    /// Compressed entries (CSA, HCA), final once emitted.
    pub entries: Option<StreamPages>,
    /// Indexer keys (CSA).
    pub indexer_keys: Option<StreamPages>,
    /// Main compressor tail.
    pub compressor: Option<CompressorTail>,
    /// Indexer compressor tail.
    pub indexer_compressor: Option<CompressorTail>,
}

impl LayerState {
    /// Every layer's fresh state as `schema` lays it out.
    pub fn for_schema(schema: &ModelCacheSchema) -> Vec<Self> {
        let dtypes: CacheDtypes = schema.dtypes;
        schema
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
                    StreamPages::new(codec, s.width, s.entries_per_block)
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
            .collect()
    }

    /// Bytes this layer's cache holds now.
    pub fn bytes(&self) -> u64 {
        let tails: u64 = [&self.compressor, &self.indexer_compressor]
            .into_iter()
            .flatten()
            .map(CompressorTail::bytes)
            .sum();
        let paged: u64 = [&self.entries, &self.indexer_keys]
            .into_iter()
            .flatten()
            .map(StreamPages::bytes)
            .sum();
        self.window.bytes() + tails + paged
    }
}
