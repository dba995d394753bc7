//! A request's cache bytes in host memory, in the byte layouts of docs/model.md §6: window rings
//! and paged entry streams whose pages are granted by the request's [`BlockPool`] (which counts
//! them against the budget the planner priced) and allocated here.

use std::sync::Arc;

use dsv4_cache::{BlockPool, PoolFull};

use crate::cache_codec::{CodecError, IndexerFormat, KvFormat};

/// How one stream's entries are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryCodec {
    /// KV entries (window keys, compressed entries) with `rope` trailing rotary dims.
    Kv {
        /// Byte layout.
        format: KvFormat,
        /// Rotary dims kept in BF16 by the FP8 layout.
        rope: usize,
    },
    /// Lightning Indexer keys.
    Index(IndexerFormat),
}

impl EntryCodec {
    /// Bytes of one entry of `width` values.
    pub fn bytes(self, width: usize) -> usize {
        match self {
            Self::Kv { format, rope } => format.entry_bytes(width, rope),
            Self::Index(format) => format.key_bytes(width),
        }
    }

    fn encode(self, values: &[f32], out: &mut [u8]) -> Result<(), CodecError> {
        match self {
            Self::Kv { format, rope } => format.encode(values, rope, out),
            Self::Index(format) => format.encode(values, out),
        }
    }

    fn decode(self, bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
        match self {
            Self::Kv { format, rope } => format.decode(bytes, rope, out),
            Self::Index(format) => format.decode(bytes, out),
        }
    }
}

/// Why a cache operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No page was available.
    #[error(transparent)]
    Full(#[from] PoolFull),
    /// An entry did not fit its layout (a programming error, reported rather than hidden).
    #[error("cache entry layout: {0}")]
    Codec(#[from] CodecError),
    /// A window ring of no slots was used (a layer that reads another's window has none).
    #[error("this layer keeps no window of its own")]
    NoWindow,
}

/// The pages of one paged stream (laid out by the schema's `PagedStream`): append-only
/// entries of `width` values, `per_page` to a page. A clone shares the pages (a full page is
/// never written again); the first entry pushed into a shared partial page copies it.
#[derive(Debug, Clone)]
pub struct StreamPages {
    codec: EntryCodec,
    width: usize,
    entry_bytes: usize,
    per_page: usize,
    pages: Vec<Arc<Vec<u8>>>,
    len: usize,
}

impl StreamPages {
    /// An empty stream; `per_page` is the block size divided by the stream's ratio.
    pub fn new(codec: EntryCodec, width: usize, per_page: usize) -> Self {
        Self {
            codec,
            width,
            entry_bytes: codec.bytes(width),
            per_page,
            pages: Vec::new(),
            len: 0,
        }
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one entry, taking a page from `pool` when the last is full.
    pub fn push(&mut self, values: &[f32], pool: &mut BlockPool) -> Result<(), StoreError> {
        let slot = self.len % self.per_page;
        if slot == 0 {
            let bytes = self.per_page * self.entry_bytes;
            pool.take(bytes)?;
            self.pages.push(Arc::new(vec![0u8; bytes]));
        }
        // Copies the page only if a clone shares it.
        let page = Arc::make_mut(&mut self.pages[self.len / self.per_page]);
        let bytes = &mut page[slot * self.entry_bytes..(slot + 1) * self.entry_bytes];
        self.codec.encode(values, bytes)?;
        self.len += 1;
        Ok(())
    }

    /// Entry `index` decoded into `out` (`width` values).
    pub fn read(&self, index: usize, out: &mut [f32]) -> Result<(), StoreError> {
        let page = &self.pages[index / self.per_page];
        let slot = index % self.per_page;
        self.codec.decode(
            &page[slot * self.entry_bytes..(slot + 1) * self.entry_bytes],
            out,
        )?;
        Ok(())
    }

    /// Entries `range` decoded into `out` (`range.len() × width` values).
    pub fn read_range(
        &self,
        range: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<(), StoreError> {
        for (i, row) in range.zip(out.chunks_mut(self.width)) {
            self.read(i, row)?;
        }
        Ok(())
    }

    /// Bytes of the pages held.
    pub fn bytes(&self) -> u64 {
        (self.pages.len() * self.per_page * self.entry_bytes) as u64
    }

    /// Pages held that another stream (a clone) holds too.
    pub fn shared_pages(&self) -> usize {
        self.pages
            .iter()
            .filter(|p| Arc::strong_count(p) > 1)
            .count()
    }
}

/// The last `slots` KV entries by position (`position % slots`), encoded.
#[derive(Debug, Clone)]
pub struct WindowRing {
    codec: EntryCodec,
    entry_bytes: usize,
    slots: usize,
    data: Vec<u8>,
}

impl WindowRing {
    /// A ring of `slots` entries of `width` values.
    pub fn new(codec: EntryCodec, width: usize, slots: usize) -> Self {
        let entry_bytes = codec.bytes(width);
        Self {
            codec,
            entry_bytes,
            slots,
            data: vec![0u8; slots * entry_bytes],
        }
    }

    /// Stores the entry of `position`, replacing the one `slots` positions before.
    pub fn write(&mut self, position: usize, values: &[f32]) -> Result<(), StoreError> {
        let slot = position
            .checked_rem(self.slots)
            .ok_or(StoreError::NoWindow)?;
        let bytes = &mut self.data[slot * self.entry_bytes..(slot + 1) * self.entry_bytes];
        self.codec.encode(values, bytes)?;
        Ok(())
    }

    /// The entry of `position` (one of the last `slots` written), decoded into `out`.
    pub fn read(&self, position: usize, out: &mut [f32]) -> Result<(), StoreError> {
        let slot = position
            .checked_rem(self.slots)
            .ok_or(StoreError::NoWindow)?;
        let bytes = &self.data[slot * self.entry_bytes..(slot + 1) * self.entry_bytes];
        self.codec.decode(bytes, out)?;
        Ok(())
    }

    /// Encodes then decodes `values` in place: what reading them back after `write` gives.
    /// Entries up to 8 KiB (every V4 width, even in f32) pass through the stack.
    pub fn round_trip(&self, values: &mut [f32]) -> Result<(), StoreError> {
        const STACK: usize = 8192;
        let mut stack = [0u8; STACK];
        let mut heap = Vec::new();
        let bytes = if self.entry_bytes <= STACK {
            &mut stack[..self.entry_bytes]
        } else {
            heap.resize(self.entry_bytes, 0);
            &mut heap[..]
        };
        self.codec.encode(values, bytes)?;
        self.codec.decode(bytes, values)?;
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_counted_and_a_budget_is_enforced() {
        let codec = EntryCodec::Kv {
            format: KvFormat::F32,
            rope: 2,
        };
        // 4 values of 4 bytes, 2 entries per page: 32-byte pages; room for 2 pages.
        let mut pool = BlockPool::with_budget(64);
        let mut stream = StreamPages::new(codec, 4, 2);
        for i in 0..4 {
            stream.push(&[i as f32; 4], &mut pool).expect("fits");
        }
        assert_eq!(
            (pool.pages(), pool.used_bytes(), stream.bytes()),
            (2, 64, 64)
        );
        let err = stream.push(&[9.0; 4], &mut pool).expect_err("third page");
        assert_eq!(
            err.to_string(),
            "the KV cache is full: 64 of 64 bytes in use, a page of 32 more does not fit"
        );
        let mut out = [0.0; 4];
        stream.read(3, &mut out).expect("read");
        assert_eq!(out, [3.0; 4]);
        assert_eq!(stream.len(), 4);
    }
}
