//! The per-layer cache schema: what each layer keeps per request and how many bytes it takes.
//! The planner, the block pool and the kernels all read this one description (design notes).

use dsv4_model::{AttentionKind, LayerSchedule, ModelConfig};
use serde::Serialize;

use crate::sharing::{Sharing, SharingError};
use crate::CacheDtypes;

/// Bytes of one f32 in the compressor tails.
const F32_BYTES: u64 = 4;
/// A tail token keeps its projected value and its gate logit.
const VALUE_AND_GATE: u64 = 2;

/// What a paged stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Compressed KV entries of a CSA or HCA layer.
    Entries,
    /// Lightning Indexer keys of a CSA layer.
    IndexerKeys,
}

/// Entries that grow with the context, one every `ratio` tokens, stored in paged blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PagedStream {
    /// Entries or indexer keys.
    pub kind: StreamKind,
    /// Tokens per entry.
    pub ratio: usize,
    /// Values per entry (Dh or Di).
    pub width: usize,
    /// Stored bytes per entry in the chosen dtype.
    pub entry_bytes: u64,
    /// Entries in one block of `block_size` tokens.
    pub entries_per_block: usize,
    /// Bytes of one block (page) of this stream.
    pub page_bytes: u64,
}

impl PagedStream {
    fn new(kind: StreamKind, ratio: usize, width: usize, entry_bytes: u64, block: usize) -> Self {
        let entries_per_block = block / ratio;
        Self {
            kind,
            ratio,
            width,
            entry_bytes,
            entries_per_block,
            page_bytes: entries_per_block as u64 * entry_bytes,
        }
    }

    /// Entries formed after `context` tokens: only closed windows count.
    pub fn entries(&self, context: usize) -> usize {
        context / self.ratio
    }

    /// Blocks one request needs to hold the entries of `context` tokens.
    pub fn blocks(&self, context: usize) -> usize {
        self.entries(context).div_ceil(self.entries_per_block)
    }

    /// Growth in bytes per token of context.
    pub fn bytes_per_token(&self) -> f64 {
        self.entry_bytes as f64 / self.ratio as f64
    }
}

/// A compressor's f32 tail: raw projected values and gate logits of tokens not yet pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TailBuffer {
    /// Which compressor and which half (`csa_tail_a`, `csa_tail_b`, `indexer_tail_a`, …).
    pub name: &'static str,
    /// Token slots.
    pub tokens: usize,
    /// f32 values per slot for each of value and gate.
    pub width: usize,
    /// Bytes: tokens × width × (value + gate) × 4.
    pub bytes: u64,
}

impl TailBuffer {
    fn new(name: &'static str, tokens: usize, width: usize) -> Self {
        Self {
            name,
            tokens,
            width,
            bytes: tokens as u64 * width as u64 * VALUE_AND_GATE * F32_BYTES,
        }
    }
}

/// Everything one layer caches per request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCacheSchema {
    /// Layer id.
    pub layer: usize,
    /// SWA, CSA or HCA with its ratio.
    pub attention: AttentionKind,
    /// Window ring: the last `window_entries` raw keys (current token included); 0 in a layer
    /// that reads another's.
    pub window_entries: usize,
    /// Values per KV entry (Dh).
    pub entry_width: usize,
    /// Trailing rotary values per KV entry (Dr).
    pub rope_width: usize,
    /// Bytes per KV entry (window and compressed alike).
    pub entry_bytes: u64,
    /// Compressed entries (CSA, HCA).
    pub entries: Option<PagedStream>,
    /// Indexer keys (CSA).
    pub indexer_keys: Option<PagedStream>,
    /// Compressor tails, f32.
    pub tails: Vec<TailBuffer>,
    /// The layer whose window, entries and indexer keys this one reads instead of storing its
    /// own (a CLA group's member); it then stores nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_source: Option<usize>,
    /// The layer whose indexer selection this one reuses; it then stores no indexer keys and
    /// runs no indexer compressor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexer_source: Option<usize>,
}

impl LayerCacheSchema {
    /// The layer's paged streams.
    pub fn streams(&self) -> impl Iterator<Item = &PagedStream> {
        self.entries.iter().chain(self.indexer_keys.iter())
    }

    /// Paged growth per token of context.
    pub fn bytes_per_token(&self) -> f64 {
        // Folded from +0.0: an empty f64 sum is -0.0.
        self.streams()
            .map(PagedStream::bytes_per_token)
            .fold(0.0, |a, b| a + b)
    }

    /// Bytes of the window ring.
    pub fn window_bytes(&self) -> u64 {
        self.window_entries as u64 * self.entry_bytes
    }

    /// Bytes of all compressor tails.
    pub fn tail_bytes(&self) -> u64 {
        self.tails.iter().map(|t| t.bytes).sum()
    }

    /// Fixed bytes per request: window and tails.
    pub fn fixed_bytes(&self) -> u64 {
        self.window_bytes() + self.tail_bytes()
    }
}

/// A block size the schedule cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockSizeError {
    /// Some layer's ratio does not divide it.
    #[error(
        "block size {block_size} is not a positive multiple of compress ratio {ratio} (layer {layer})"
    )]
    NotMultiple {
        /// The rejected block size.
        block_size: usize,
        /// The ratio it fails.
        ratio: usize,
        /// The first layer with that ratio.
        layer: usize,
    },
    /// Larger than any context could fill, and large enough to overflow page sizes.
    #[error("block size {block_size} is above the largest supported, {MAX_BLOCK_SIZE} tokens")]
    TooLarge {
        /// The rejected block size.
        block_size: usize,
    },
}

/// The cache schema of a whole model (decoder layers; MTP stages are not run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCacheSchema {
    /// Tokens per logical block, the same for every layer.
    pub block_size: usize,
    /// Formats of entries and indexer keys.
    pub dtypes: CacheDtypes,
    /// One schema per decoder layer.
    pub layers: Vec<LayerCacheSchema>,
    /// The sharing policy the layers follow.
    #[serde(skip_serializing_if = "Sharing::is_none")]
    pub sharing: Sharing,
}

/// Why a schema could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The block size does not suit the schedule.
    #[error(transparent)]
    BlockSize(#[from] BlockSizeError),
    /// The sharing policy cannot be honoured.
    #[error(transparent)]
    Sharing(#[from] SharingError),
}

/// Default tokens per logical block: 64 CSA entries, 2 HCA entries.
pub const DEFAULT_BLOCK_SIZE: usize = 256;

/// Largest block accepted: 2^20 tokens, the context V4 declares, so a page is at most one layer's
/// whole context.
pub const MAX_BLOCK_SIZE: usize = 1 << 20;

impl ModelCacheSchema {
    /// The schema of a request following `sharing`: a CLA member keeps nothing of its own (it
    /// reads its source's window, entries and indexer keys), a layer reusing another's indexer
    /// selection keeps no indexer keys and no indexer tails.
    pub fn with_sharing(
        config: &ModelConfig,
        dtypes: CacheDtypes,
        block_size: usize,
        sharing: Sharing,
    ) -> Result<Self, SchemaError> {
        sharing.validate()?;
        let mut schema = Self::new(config, dtypes, block_size)?;
        let schedule = LayerSchedule::new(config);
        for (layer, sources) in schema
            .layers
            .iter_mut()
            .zip(sharing.sources(&schedule.layers))
        {
            if let Some(source) = sources.kv {
                layer.kv_source = Some(source);
                layer.window_entries = 0;
                layer.entries = None;
                layer.indexer_keys = None;
                layer.tails.clear();
            }
            if let Some(source) = sources.indexer {
                layer.indexer_source = Some(source);
                layer.indexer_keys = None;
                layer.tails.retain(|t| !t.name.starts_with("indexer"));
            }
        }
        // A policy that shares nothing (runs of 1) is no policy.
        if !sharing.is_none() {
            schema.sharing = sharing;
        }
        Ok(schema)
    }

    /// Builds the schema, every layer keeping its own cache; `block_size` must be a multiple of
    /// every compress ratio.
    pub fn new(
        config: &ModelConfig,
        dtypes: CacheDtypes,
        block_size: usize,
    ) -> Result<Self, BlockSizeError> {
        if block_size > MAX_BLOCK_SIZE {
            return Err(BlockSizeError::TooLarge { block_size });
        }
        let schedule = LayerSchedule::new(config);
        let (dh, dr, di) = (
            config.head_dim,
            config.qk_rope_head_dim,
            config.index_head_dim,
        );
        let entry_bytes = dtypes.kv.entry_bytes(dh, dr);
        let mut layers = Vec::with_capacity(schedule.layers.len());
        for spec in &schedule.layers {
            let attention = spec.attention;
            let mut schema = LayerCacheSchema {
                layer: spec.index,
                attention,
                window_entries: config.sliding_window,
                entry_width: dh,
                rope_width: dr,
                entry_bytes,
                entries: None,
                indexer_keys: None,
                tails: Vec::new(),
                kv_source: None,
                indexer_source: None,
            };
            if let Some(ratio) = attention.ratio() {
                if block_size == 0 || !block_size.is_multiple_of(ratio) {
                    return Err(BlockSizeError::NotMultiple {
                        block_size,
                        ratio,
                        layer: spec.index,
                    });
                }
                let entries =
                    PagedStream::new(StreamKind::Entries, ratio, dh, entry_bytes, block_size);
                schema.entries = Some(entries);
                if attention.has_indexer() {
                    let key_bytes = dtypes.indexer.key_bytes(di);
                    let keys =
                        PagedStream::new(StreamKind::IndexerKeys, ratio, di, key_bytes, block_size);
                    schema.indexer_keys = Some(keys);
                    // Overlapping series: the previous window's A-half and the current window's
                    // A and B halves (docs/model.md §7.1), for the main and the indexer compressor.
                    schema.tails = vec![
                        TailBuffer::new("csa_tail_a", ratio, dh),
                        TailBuffer::new("csa_tail_b", ratio, 2 * dh),
                        TailBuffer::new("indexer_tail_a", ratio, di),
                        TailBuffer::new("indexer_tail_b", ratio, 2 * di),
                    ];
                } else {
                    schema.tails = vec![TailBuffer::new("hca_tail", ratio, dh)];
                }
            }
            layers.push(schema);
        }
        Ok(Self {
            block_size,
            dtypes,
            layers,
            sharing: Sharing::default(),
        })
    }

    /// Paged growth of the whole model per token of context.
    pub fn bytes_per_token(&self) -> f64 {
        self.layers
            .iter()
            .map(LayerCacheSchema::bytes_per_token)
            .fold(0.0, |a, b| a + b)
    }

    /// Fixed bytes per request: every window ring and compressor tail.
    pub fn fixed_bytes_per_request(&self) -> u64 {
        self.layers.iter().map(LayerCacheSchema::fixed_bytes).sum()
    }
}
