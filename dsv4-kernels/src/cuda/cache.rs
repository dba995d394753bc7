//! The cache on the device (`csrc/cache.cuh`, `csrc/cache.cu`): the format enums with the C
//! numbers, a window ring ([`DeviceRing`]) and a paged stream ([`DevicePages`]) in device
//! memory, and the launchers that write entries in every format bit for bit as
//! [`cache_codec`]'s encoders do ([`kv_encode`], [`indexer_encode`]) and read them back as f32
//! ([`cache_read`]).

use std::ops::Range;

use super::twins::{Check, Rng};
use super::{dim, DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::cache_codec::{self, CodecError};

/// Threads per block of the cache kernels: one entry per block, a 64-value FP8 block or a
/// 32-value FP4 group per warp.
const THREADS: u32 = 128;

/// `Dsv4KvFormat` of `csrc/cache.cuh`: how a KV entry (window key or compressed entry) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum KvFormat {
    /// f32 values.
    F32 = 0,
    /// bf16 values.
    Bf16 = 1,
    /// `[nope E4M3][rope bf16][UE8M0 scale per 64 nope dims, zero-padded to 8]`.
    Fp8 = 2,
}

impl From<cache_codec::KvFormat> for KvFormat {
    fn from(f: cache_codec::KvFormat) -> Self {
        match f {
            cache_codec::KvFormat::F32 => Self::F32,
            cache_codec::KvFormat::Bf16 => Self::Bf16,
            cache_codec::KvFormat::Fp8 => Self::Fp8,
        }
    }
}

impl From<KvFormat> for cache_codec::KvFormat {
    fn from(f: KvFormat) -> Self {
        match f {
            KvFormat::F32 => Self::F32,
            KvFormat::Bf16 => Self::Bf16,
            KvFormat::Fp8 => Self::Fp8,
        }
    }
}

impl KvFormat {
    /// Bytes of one entry of `width` values, the last `rope` rotary.
    pub fn entry_bytes(self, width: usize, rope: usize) -> usize {
        cache_codec::kv_entry_bytes(self.into(), width, rope)
    }
}

/// `Dsv4IndexerFormat` of `csrc/cache.cuh`: how a Lightning Indexer key is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum IndexerFormat {
    /// f32 values.
    F32 = 0,
    /// bf16 values.
    Bf16 = 1,
    /// `[E4M3 values][f32 scale]`.
    Fp8 = 2,
    /// `[E2M1 pairs, low nibble first][UE8M0 scale per 32 values]`.
    Fp4 = 3,
}

impl From<cache_codec::IndexerFormat> for IndexerFormat {
    fn from(f: cache_codec::IndexerFormat) -> Self {
        match f {
            cache_codec::IndexerFormat::F32 => Self::F32,
            cache_codec::IndexerFormat::Bf16 => Self::Bf16,
            cache_codec::IndexerFormat::Fp8 => Self::Fp8,
            cache_codec::IndexerFormat::Fp4 => Self::Fp4,
        }
    }
}

impl From<IndexerFormat> for cache_codec::IndexerFormat {
    fn from(f: IndexerFormat) -> Self {
        match f {
            IndexerFormat::F32 => Self::F32,
            IndexerFormat::Bf16 => Self::Bf16,
            IndexerFormat::Fp8 => Self::Fp8,
            IndexerFormat::Fp4 => Self::Fp4,
        }
    }
}

impl IndexerFormat {
    /// Bytes of one key of `width` values.
    pub fn key_bytes(self, width: usize) -> usize {
        cache_codec::indexer_key_bytes(self.into(), width)
    }
}

/// What a run of cache entries holds: KV entries (with their rotary dims) or indexer keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// KV entries whose last `rope` values are rotary.
    Kv(KvFormat, usize),
    /// Indexer keys.
    Indexer(IndexerFormat),
}

impl Codec {
    /// Bytes of one entry of `width` values.
    pub fn entry_bytes(self, width: usize) -> usize {
        match self {
            Self::Kv(f, rope) => f.entry_bytes(width, rope),
            Self::Indexer(f) => f.key_bytes(width),
        }
    }

    /// The CPU's encoding of one entry (`values.len()` = width) into `out`.
    pub fn encode(self, values: &[f32], out: &mut [u8]) -> Result<(), CodecError> {
        match self {
            Self::Kv(f, rope) => cache_codec::KvFormat::from(f).encode(values, rope, out),
            Self::Indexer(f) => cache_codec::IndexerFormat::from(f).encode(values, out),
        }
    }

    /// The CPU's decoding of one entry of `out.len()` values.
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
        match self {
            Self::Kv(f, rope) => cache_codec::KvFormat::from(f).decode(bytes, rope, out),
            Self::Indexer(f) => cache_codec::IndexerFormat::from(f).decode(bytes, out),
        }
    }

    fn numbers(self) -> (u32, u32, usize) {
        match self {
            Self::Kv(f, rope) => (0, f as u32, rope),
            Self::Indexer(f) => (1, f as u32, 0),
        }
    }
}

/// A window ring on the device: `slots` entries of `entry_bytes` in one buffer, position p in
/// slot `p % slots` (docs/model.md §7.1). Fixed size; zeroed when made.
#[derive(Debug)]
pub struct DeviceRing {
    buffer: DeviceBuffer,
    slots: usize,
    entry_bytes: usize,
}

impl DeviceRing {
    /// A zeroed ring of `slots` entries of `entry_bytes` each.
    pub fn new(gpu: &Gpu, slots: usize, entry_bytes: usize) -> Result<Self, DeviceError> {
        if slots == 0 || entry_bytes == 0 {
            return Err(shape(
                "a window ring",
                "needs at least one slot of one byte",
            ));
        }
        let bytes = slots
            .checked_mul(entry_bytes)
            .ok_or_else(|| shape("a window ring", "is too large"))?;
        Ok(Self {
            buffer: gpu.zeros(bytes)?,
            slots,
            entry_bytes,
        })
    }

    /// Its slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Bytes of one entry.
    pub fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// Its buffer (`slots × entry_bytes`).
    pub fn buffer(&self) -> &DeviceBuffer {
        &self.buffer
    }
}

/// Pages the first page table holds; the table doubles whenever it is full (the twins' stream
/// of 12 one-entry pages goes through one doubling).
const FIRST_TABLE_PAGES: usize = 8;

/// A paged stream on the device (compressed entries, indexer keys): entry i in page
/// `i / per_page` at slot `i % per_page`, the pages' addresses in a device page table of u64
/// that the kernels read (`dsv4_paged_entry` in `csrc/cache.cuh`).
///
/// Growth policy. Entries are claimed with [`DevicePages::extend`]; a page is allocated the
/// first time an entry in it is claimed, and its address written into the table (an 8-byte
/// copy, no allocation). The table starts with room for 8 pages and doubles when full (the old
/// one is copied and freed), so it reallocates O(log pages) times over a stream's life. A steady
/// decode therefore allocates only when it crosses into a new page: once every `per_page`
/// entries (at the default block of 256 tokens: every 256 tokens for CSA and for HCA), never
/// every step. A caller that knows how far a request may grow (prompt + max tokens) can call
/// [`DevicePages::reserve`] at admission, and decode then never allocates at all.
#[derive(Debug)]
pub struct DevicePages {
    gpu: Gpu,
    per_page: usize,
    entry_bytes: usize,
    pages: Vec<DeviceBuffer>,
    table: DeviceBuffer,
    len: usize,
}

impl DevicePages {
    /// An empty stream of pages of `per_page` entries of `entry_bytes` each.
    pub fn new(gpu: &Gpu, per_page: usize, entry_bytes: usize) -> Result<Self, DeviceError> {
        if per_page == 0 || entry_bytes == 0 {
            return Err(shape(
                "a paged stream",
                "needs pages of at least one entry of one byte",
            ));
        }
        dim(per_page)?;
        if per_page.checked_mul(entry_bytes).is_none() {
            return Err(shape("a paged stream", "has pages too large to allocate"));
        }
        Ok(Self {
            gpu: gpu.clone(),
            per_page,
            entry_bytes,
            pages: Vec::new(),
            table: gpu.zeros(FIRST_TABLE_PAGES * 8)?,
            len: 0,
        })
    }

    /// Entries claimed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry was claimed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries the allocated pages hold.
    pub fn capacity(&self) -> usize {
        self.pages.len() * self.per_page
    }

    /// Entries per page.
    pub fn per_page(&self) -> usize {
        self.per_page
    }

    /// Bytes of one entry.
    pub fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// The allocated pages, in order (`per_page × entry_bytes` each).
    pub fn pages(&self) -> &[DeviceBuffer] {
        &self.pages
    }

    /// The device page table (one u64 address per page), as a kernel parameter.
    pub fn table(&self) -> DevicePtr {
        self.table.ptr()
    }

    /// Allocates pages until `entries` more than [`Self::len`] fit (claims nothing).
    pub fn reserve(&mut self, entries: usize) -> Result<(), DeviceError> {
        let wanted = self
            .len
            .checked_add(entries)
            .ok_or_else(|| shape("a paged stream", "cannot grow that far"))?;
        // Entry indices are 32-bit on the device.
        dim(wanted)?;
        let pages = wanted.div_ceil(self.per_page);
        while self.pages.len() < pages {
            let index = self.pages.len();
            if index * 8 >= self.table.len() {
                let table = self.gpu.zeros(self.table.len() * 2)?;
                let addresses: Vec<u8> = self
                    .pages
                    .iter()
                    .flat_map(|p| p.ptr().0.to_le_bytes())
                    .collect();
                table.write(&addresses)?;
                self.table = table;
            }
            let page = self.gpu.zeros(self.per_page * self.entry_bytes)?;
            self.table
                .write_at(index * 8, &page.ptr().0.to_le_bytes())?;
            self.pages.push(page);
        }
        Ok(())
    }

    /// Claims `count` entries, allocating pages as needed, and returns their indices.
    pub fn extend(&mut self, count: usize) -> Result<Range<usize>, DeviceError> {
        self.reserve(count)?;
        let first = self.len;
        self.len += count;
        Ok(first..self.len)
    }
}

/// Where a run of entries lives.
#[derive(Debug, Clone, Copy)]
pub enum Location<'a> {
    /// In a window ring, from position `position` on (entry t in slot `(position + t) % slots`).
    Ring {
        /// The ring.
        ring: &'a DeviceRing,
        /// Position of the first entry.
        position: usize,
    },
    /// In a paged stream, entries `first` on (all claimed).
    Paged {
        /// The stream.
        pages: &'a DevicePages,
        /// Index of the first entry.
        first: usize,
    },
}

impl Location<'_> {
    fn entry_bytes(&self) -> usize {
        match self {
            Self::Ring { ring, .. } => ring.entry_bytes,
            Self::Paged { pages, .. } => pages.entry_bytes,
        }
    }

    /// The kernel parameters (ring, slots, page table, per_page, first) for `count` entries.
    fn params(&self, count: usize) -> Result<(DevicePtr, u32, DevicePtr, u32, u32), DeviceError> {
        match *self {
            Self::Ring { ring, position } => {
                if count > ring.slots {
                    return Err(shape("a window ring", "holds fewer slots than asked for"));
                }
                let first = position % ring.slots;
                Ok((
                    ring.buffer.ptr(),
                    dim(ring.slots)?,
                    DevicePtr(0),
                    1,
                    dim(first)?,
                ))
            }
            Self::Paged { pages, first } => {
                if first.checked_add(count).is_none_or(|end| end > pages.len) {
                    return Err(shape("a paged stream", "has not claimed these entries"));
                }
                Ok((
                    DevicePtr(0),
                    1,
                    pages.table(),
                    dim(pages.per_page)?,
                    dim(first)?,
                ))
            }
        }
    }
}

/// f32 rows on the device: row t at `ptr + 4·t·stride`.
#[derive(Debug, Clone, Copy)]
pub struct Rows {
    /// The first row.
    pub ptr: DevicePtr,
    /// Rows.
    pub count: usize,
    /// f32 values from one row to the next (at least the row's width).
    pub stride: usize,
}

fn shape(what: &str, message: &str) -> DeviceError {
    DeviceError::Launch {
        kernel: String::new(),
        message: format!("{what} {message}"),
    }
}

fn named(kernel: &str, e: DeviceError) -> DeviceError {
    match e {
        DeviceError::Launch { kernel: k, message } if k.is_empty() => DeviceError::Launch {
            kernel: kernel.into(),
            message,
        },
        e => e,
    }
}

/// Launches an encoder: the rows a ring would overwrite within the launch are skipped (only the
/// last `slots` rows reach it), so no two blocks write one slot.
fn encode(
    gpu: &Gpu,
    kernel: &'static str,
    rows: Rows,
    codec: Codec,
    width: usize,
    to: Location,
) -> Result<(), DeviceError> {
    if rows.count == 0 {
        return Ok(());
    }
    if width == 0 || rows.stride < width {
        return Err(shape("rows", "must hold the entry's values"));
    }
    if let Codec::Kv(_, rope) = codec {
        if rope > width {
            return Err(shape("an entry", "has more rotary dims than values"));
        }
    }
    if to.entry_bytes() != codec.entry_bytes(width) {
        return Err(shape(
            "the destination",
            "holds entries of another size than this format's",
        ));
    }
    let (mut ptr, mut count, mut to) = (rows.ptr, rows.count, to);
    if let Location::Ring { ring, position } = to {
        let skip = count.saturating_sub(ring.slots);
        ptr = DevicePtr(ptr.0 + (skip * rows.stride * 4) as u64);
        count -= skip;
        to = Location::Ring {
            ring,
            position: position + skip,
        };
    }
    let (ring, slots, table, per_page, first) = to.params(count)?;
    let (stride, n, w) = (dim(rows.stride)?, dim(count)?, dim(width)?);
    let config = LaunchConfig::linear(n, THREADS);
    // SAFETY: the kernel reads `count` rows of `width` values at `stride` from `ptr` (the
    // caller's buffer) and writes `count` whole entries of the destination's size, each inside
    // the ring's buffer or a claimed entry of an allocated page (checked above).
    unsafe {
        match codec {
            Codec::Kv(format, rope) => gpu.launch(
                kernel,
                config,
                &[
                    &ptr,
                    &stride,
                    &n,
                    &(format as u32),
                    &w,
                    &dim(rope)?,
                    &ring,
                    &slots,
                    &table,
                    &per_page,
                    &first,
                ],
            ),
            Codec::Indexer(format) => gpu.launch(
                kernel,
                config,
                &[
                    &ptr,
                    &stride,
                    &n,
                    &(format as u32),
                    &w,
                    &ring,
                    &slots,
                    &table,
                    &per_page,
                    &first,
                ],
            ),
        }
    }
}

/// Encodes `rows.count` KV entries of `width` values (the last `rope` rotary) from f32 rows into
/// `to`, bit for bit as [`cache_codec::KvFormat::encode`]: the twin of that encoder, one launch
/// for the whole run. Into a ring, a run longer than the ring writes only its last `slots` rows
/// (the earlier ones would be overwritten within the run).
pub fn kv_encode(
    gpu: &Gpu,
    rows: Rows,
    format: KvFormat,
    width: usize,
    rope: usize,
    to: Location,
) -> Result<(), DeviceError> {
    encode(gpu, "kv_encode", rows, Codec::Kv(format, rope), width, to)
        .map_err(|e| named("kv_encode", e))
}

/// Encodes `rows.count` indexer keys of `width` values into `to`, bit for bit as
/// [`cache_codec::IndexerFormat::encode`]; as [`kv_encode`] otherwise.
pub fn indexer_encode(
    gpu: &Gpu,
    rows: Rows,
    format: IndexerFormat,
    width: usize,
    to: Location,
) -> Result<(), DeviceError> {
    encode(
        gpu,
        "indexer_encode",
        rows,
        Codec::Indexer(format),
        width,
        to,
    )
    .map_err(|e| named("indexer_encode", e))
}

/// Decodes `count` entries of `width` values at `from` into f32 rows at `out` (`count × width`
/// values), through `csrc/cache.cuh`'s readers: the twin of [`Codec::decode`], and a way to
/// inspect a cache.
pub fn cache_read(
    gpu: &Gpu,
    codec: Codec,
    width: usize,
    from: Location,
    count: usize,
    out: DevicePtr,
) -> Result<(), DeviceError> {
    let run = || {
        if count == 0 {
            return Ok(());
        }
        if let Codec::Kv(_, rope) = codec {
            if rope > width {
                return Err(shape("an entry", "has more rotary dims than values"));
            }
        }
        if from.entry_bytes() != codec.entry_bytes(width) {
            return Err(shape(
                "the source",
                "holds entries of another size than this format's",
            ));
        }
        let (ring, slots, table, per_page, first) = from.params(count)?;
        let (indexer, format, rope) = codec.numbers();
        let config = LaunchConfig::linear(dim(count)?, THREADS);
        // SAFETY: the kernel reads `count` whole entries inside the ring or claimed entries of
        // allocated pages (checked by `params`) and writes `count × width` floats at `out`.
        unsafe {
            gpu.launch(
                "cache_read",
                config,
                &[
                    &out,
                    &indexer,
                    &format,
                    &dim(width)?,
                    &dim(rope)?,
                    &ring,
                    &slots,
                    &table,
                    &per_page,
                    &first,
                    &dim(count)?,
                ],
            )
        }
    };
    run().map_err(|e| named("cache_read", e))
}

/// Where a twin case writes: a ring or a paged stream.
#[derive(Debug, Clone, Copy)]
enum Place {
    Ring { slots: usize, position: usize },
    Paged { per_page: usize, first: usize },
}

/// Values that probe the encoders' rounding: mostly a few mantissa bits at a random binade
/// (many exact ties between E4M3 or E2M1 codes once scaled), plus zeros of both signs, values
/// far below their block's largest (subnormal codes, flushes to zero) and plain uniform ones.
fn probing_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
            let binade = ((r >> 8) % 24) as i32 - 12;
            match (r >> 4) % 8 {
                0 => 0.0,
                1 => -0.0,
                2 => sign * ((r >> 32) % 64) as f32 / 16.0 * (binade as f32 - 12.0).exp2(),
                3 => rng.uniform() * 3.0,
                _ => sign * ((r >> 32) % 64) as f32 / 16.0 * (binade as f32).exp2(),
            }
        })
        .collect()
}

/// A row of the values where rounding is decided: every midpoint between two E4M3 codes (normal
/// binades and subnormals) or two E2M1 codes, each with its neighbours one ulp away, at scale 1
/// (each 64-block, FP4 group or FP8 key starts with the format's largest value, 448 or 6).
fn edge_values(codec: Codec, width: usize) -> Vec<f32> {
    let (fp4, block) = match codec {
        Codec::Kv(..) => (false, 64),
        Codec::Indexer(IndexerFormat::Fp4) => (true, 32),
        Codec::Indexer(_) => (false, usize::MAX),
    };
    let midpoints: Vec<f32> = if fp4 {
        vec![0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.5]
    } else {
        let normal = (-6..=8).flat_map(|e| {
            (0..8).map(move |k| (1.0 + (2 * k + 1) as f32 / 16.0) * (e as f32).exp2())
        });
        let subnormal = (0..8).map(|j| (j as f32 + 0.5) * (-9f32).exp2());
        normal.chain(subnormal).collect()
    };
    let edges: Vec<f32> = midpoints
        .iter()
        .flat_map(|&m| {
            let (up, down) = (
                f32::from_bits(m.to_bits() + 1),
                f32::from_bits(m.to_bits() - 1),
            );
            [m, -m, up, -down]
        })
        .collect();
    let top = if fp4 { 6.0 } else { 448.0 };
    (0..width)
        .map(|i| {
            if i % block == 0 {
                top
            } else {
                edges[i % edges.len()]
            }
        })
        .collect()
}

/// Random bytes that decode without error in `codec` (no NaN scale byte, a positive finite f32
/// scale), for the decoder's twin.
fn decodable_bytes(rng: &mut Rng, codec: Codec, width: usize) -> Vec<u8> {
    let mut bytes = rng.bytes(codec.entry_bytes(width));
    let fix = |b: &mut u8| {
        if *b == 0xff {
            *b = 0xfe;
        }
    };
    match codec {
        Codec::Kv(KvFormat::Fp8, rope) => {
            let nope = width - rope;
            let at = nope + 2 * rope;
            bytes[at..at + nope.div_ceil(64)].iter_mut().for_each(fix);
        }
        Codec::Indexer(IndexerFormat::Fp8) => {
            let s = (1.0 + rng.uniform().abs()) * (((rng.next_u64() % 60) as f32) - 30.0).exp2();
            bytes[width..].copy_from_slice(&s.to_le_bytes());
        }
        Codec::Indexer(IndexerFormat::Fp4) => {
            bytes[width.div_ceil(2)..].iter_mut().for_each(fix);
        }
        _ => {}
    }
    bytes
}

fn as_values(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| f32::from(b)).collect()
}

/// A twin case's destination on the device.
enum Holder {
    Ring(DeviceRing, usize),
    Paged(DevicePages, usize),
}

impl Holder {
    /// The place for `count` rows: a ring, or a stream with `first` entries claimed before them.
    fn new(gpu: &Gpu, place: Place, bytes: usize, count: usize) -> Result<Self, DeviceError> {
        Ok(match place {
            Place::Ring { slots, position } => {
                Self::Ring(DeviceRing::new(gpu, slots, bytes)?, position)
            }
            Place::Paged { per_page, first } => {
                let mut pages = DevicePages::new(gpu, per_page, bytes)?;
                pages.extend(first)?;
                pages.extend(count)?;
                Self::Paged(pages, first)
            }
        })
    }

    /// Where row `t` on goes.
    fn location(&self, t: usize) -> Location<'_> {
        match self {
            Self::Ring(ring, position) => Location::Ring {
                ring,
                position: position + t,
            },
            Self::Paged(pages, first) => Location::Paged {
                pages,
                first: first + t,
            },
        }
    }

    /// Index of row t's entry in [`Holder::buffers`] taken as one run of entries.
    fn entry_of(&self, t: usize) -> usize {
        match self {
            Self::Ring(ring, position) => (position + t) % ring.slots,
            Self::Paged(_, first) => first + t,
        }
    }

    fn buffers(&self) -> Vec<&DeviceBuffer> {
        match self {
            Self::Ring(ring, _) => vec![&ring.buffer],
            Self::Paged(pages, _) => pages.pages.iter().collect(),
        }
    }

    fn read(&self) -> Result<Vec<u8>, DeviceError> {
        let mut all = Vec::new();
        for b in self.buffers() {
            let mut bytes = vec![0u8; b.len()];
            b.read(&mut bytes)?;
            all.extend(bytes);
        }
        Ok(all)
    }

    fn write(&self, bytes: &[u8]) -> Result<(), DeviceError> {
        let mut at = 0;
        for b in self.buffers() {
            b.write(&bytes[at..at + b.len()])?;
            at += b.len();
        }
        Ok(())
    }
}

/// One encoder case: rows encoded into a ring or a stream prefilled with a pattern, compared byte
/// for byte with the CPU's encoder placing the same rows (untouched bytes must keep the
/// pattern); then the entries read back, and random decodable bytes read, against the CPU's
/// decoder.
fn twin_case(
    gpu: &Gpu,
    rng: &mut Rng,
    (codec, width): (Codec, usize),
    place: Place,
    (count, stride): (usize, usize),
) -> Result<Vec<Check>, DeviceError> {
    let bytes = codec.entry_bytes(width);
    let mut values = probing_values(rng, count * stride);
    // Row 0 far below the FP8 amax floor (scale from the floor, subnormal codes); row 1 all
    // zeros (the FP4 floor, every code zero).
    values.iter_mut().take(stride).for_each(|v| *v *= 1e-12);
    values
        .iter_mut()
        .skip(stride)
        .take(stride)
        .for_each(|v| *v = 0.0);
    if count > 2 {
        values[2 * stride..2 * stride + width].copy_from_slice(&edge_values(codec, width));
    }
    let device_rows = gpu.upload_f32(&values)?;
    let rows = Rows {
        ptr: device_rows.ptr(),
        count,
        stride,
    };
    let holder = Holder::new(gpu, place, bytes, count)?;
    let mut cpu = vec![0xa5; holder.read()?.len()];
    holder.write(&cpu)?;
    for t in 0..count {
        let at = holder.entry_of(t) * bytes;
        codec
            .encode(
                &values[t * stride..t * stride + width],
                &mut cpu[at..at + bytes],
            )
            .map_err(|e| shape("the CPU encoder", &e.to_string()))?;
    }
    let (kernel, format) = match codec {
        Codec::Kv(f, rope) => {
            kv_encode(gpu, rows, f, width, rope, holder.location(0))?;
            ("kv_encode", format!("{f:?} {width} rope {rope}"))
        }
        Codec::Indexer(f) => {
            indexer_encode(gpu, rows, f, width, holder.location(0))?;
            ("indexer_encode", format!("{f:?} {width}"))
        }
    };
    let shape_of = |what: &str| format!("{format}, {count} rows {what} {place:?}");
    let mut checks = vec![Check::new(
        kernel,
        shape_of("into"),
        &as_values(&holder.read()?),
        &as_values(&cpu),
        0.0,
    )];

    // Read back what a ring kept (its last `slots` rows) or the whole run.
    let kept = match place {
        Place::Ring { slots, .. } => count.min(slots),
        Place::Paged { .. } => count,
    };
    let from = count - kept;
    let out = gpu.alloc(kept * width * 4)?;
    let decode_all = |all: &[u8]| -> Result<Vec<f32>, DeviceError> {
        let mut expected = vec![0.0; kept * width];
        for (r, row) in expected.chunks_mut(width).enumerate() {
            let at = holder.entry_of(from + r) * bytes;
            codec
                .decode(&all[at..at + bytes], row)
                .map_err(|e| shape("the CPU decoder", &e.to_string()))?;
        }
        Ok(expected)
    };
    let expected = decode_all(&cpu)?;
    cache_read(gpu, codec, width, holder.location(from), kept, out.ptr())?;
    checks.push(Check::new(
        "cache_read",
        shape_of("encoded into"),
        &out.read_f32(kept * width)?,
        &expected,
        0.0,
    ));
    let mut random = cpu;
    for r in 0..kept {
        let at = holder.entry_of(from + r) * bytes;
        random[at..at + bytes].copy_from_slice(&decodable_bytes(rng, codec, width));
    }
    holder.write(&random)?;
    let expected = decode_all(&random)?;
    cache_read(gpu, codec, width, holder.location(from), kept, out.ptr())?;
    checks.push(Check::new(
        "cache_read",
        shape_of("of random bytes in"),
        &out.read_f32(kept * width)?,
        &expected,
        0.0,
    ));
    Ok(checks)
}

/// A twin case: the codec and width, the destination, the rows and their stride.
type Case = ((Codec, usize), Place, (usize, usize));

/// [`kv_encode`], [`indexer_encode`] and [`cache_read`] against the CPU's codecs, bytes compared
/// with tolerance 0 (the encoders are exact: powers of two scales, one rounding per value, the
/// same rule on both sides) and decoded values with tolerance 0 (a decode is one exact
/// multiplication by a power of two or a float); at V4-Flash's widths (KV 512 with 64 rotary,
/// indexer keys 128) in every format, into rings that wrap and streams that cross pages, and at
/// odd widths (partial 64-blocks and 32-groups, odd key widths, no nope dims, one value).
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    use IndexerFormat as I;
    use KvFormat as K;
    let ring = |slots, position| Place::Ring { slots, position };
    let paged = |per_page, first| Place::Paged { per_page, first };
    let cases: Vec<Case> = vec![
        ((Codec::Kv(K::F32, 64), 512), ring(128, 123), (9, 512)),
        ((Codec::Kv(K::Bf16, 64), 512), ring(128, 123), (9, 512)),
        ((Codec::Kv(K::Fp8, 64), 512), ring(128, 123), (9, 512)),
        ((Codec::Kv(K::F32, 64), 512), paged(2, 1), (3, 512)),
        ((Codec::Kv(K::Bf16, 64), 512), paged(64, 60), (6, 512)),
        ((Codec::Kv(K::Fp8, 64), 512), paged(64, 60), (6, 512)),
        ((Codec::Kv(K::Fp8, 64), 512), paged(2, 0), (1, 512)),
        ((Codec::Kv(K::Fp8, 5), 37), ring(4, 2), (7, 40)),
        ((Codec::Kv(K::Fp8, 0), 200), paged(3, 1), (4, 203)),
        ((Codec::Kv(K::Fp8, 64), 64), paged(4, 0), (2, 64)),
        ((Codec::Kv(K::Fp8, 0), 1), ring(3, 0), (2, 1)),
        ((Codec::Kv(K::Fp8, 1), 130), paged(5, 3), (3, 131)),
        ((Codec::Kv(K::Bf16, 3), 7), ring(5, 9), (3, 7)),
        ((Codec::Indexer(I::F32), 128), paged(64, 62), (4, 128)),
        ((Codec::Indexer(I::Bf16), 128), paged(64, 62), (4, 128)),
        ((Codec::Indexer(I::Fp8), 128), paged(64, 62), (4, 128)),
        ((Codec::Indexer(I::Fp4), 128), paged(64, 62), (4, 128)),
        ((Codec::Indexer(I::Fp4), 128), ring(8, 5), (5, 130)),
        ((Codec::Indexer(I::Fp4), 33), paged(3, 2), (3, 33)),
        ((Codec::Indexer(I::Fp4), 7), paged(2, 0), (3, 9)),
        ((Codec::Indexer(I::Fp4), 1), ring(2, 1), (3, 1)),
        ((Codec::Indexer(I::Fp8), 100), paged(3, 1), (3, 101)),
        ((Codec::Indexer(I::Fp8), 1), paged(1, 9), (3, 1)),
        ((Codec::Indexer(I::Bf16), 33), ring(3, 4), (2, 33)),
    ];
    let mut checks = Vec::new();
    for (codec, place, rows) in cases {
        checks.extend(twin_case(gpu, rng, codec, place, rows)?);
    }
    Ok(checks)
}
