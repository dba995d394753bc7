//! The attention sublayer on the device (docs/model.md §4.3–4.6), the CPU's steps
//! (model/attention.rs) as launches over a chunk: the products, the query path, the window
//! keys rounded through the cache, the compressors writing entries into device pages, the
//! Lightning Indexer's top-k, sparse attention, and the grouped output projection. One launch
//! per op; the window ring is written last, after every query has read it.

use dsv4_cache::{BlockPool, ModelCacheSchema};
use dsv4_kernels::cuda::attend::{self, CompressedKeys, DeviceKeys, Paged, Queries, Ring};
use dsv4_kernels::cuda::cache::{
    cache_read, indexer_encode, kv_encode, Codec, DevicePages, DeviceRing, IndexerFormat, KvFormat,
    Location, Rows,
};
use dsv4_kernels::cuda::compressor::{compress_pool, ChunkRows, DeviceTail, PoolWeights};
use dsv4_kernels::cuda::indexer::{self, Choice};
use dsv4_kernels::cuda::rope::{rope, DeviceRope, Positions, RopeShape};
use dsv4_kernels::cuda::weights::{DeviceWeight, Format};
use dsv4_kernels::cuda::{layout, linear, norm, numerics, DeviceError, DevicePtr, Gpu};
use dsv4_kernels::indexer::IndexerShape;
use dsv4_kernels::numerics::Numerics;

use super::seq::{CudaSeqCache, Grown};
use super::weights::{CompressorVectors, CudaWeights};
use crate::backend::{AttentionAt, ModelConstants, OpError};
use crate::model::weights::CompressorWeights;
use crate::profile;

/// What one layer keeps for one request on the device: the layout of the CPU's
/// [`LayerState`](crate::model::state::LayerState), as the same schema prices it.
#[derive(Debug)]
pub struct DeviceLayerState {
    /// The last `W` keys by position.
    window: DeviceRing,
    /// Compressed entries (CSA, HCA).
    entries: Option<DevicePages>,
    /// Indexer keys (CSA).
    indexer_keys: Option<DevicePages>,
    /// Main compressor tail.
    compressor: Option<DeviceTail>,
    /// Indexer compressor tail.
    indexer_compressor: Option<DeviceTail>,
    /// How KV entries and indexer keys are stored.
    kv_format: KvFormat,
    indexer_format: IndexerFormat,
}

impl DeviceLayerState {
    /// Every layer's fresh state as `schema` lays it out.
    pub fn for_schema(gpu: &Gpu, schema: &ModelCacheSchema) -> Result<Vec<Self>, DeviceError> {
        let kv = KvFormat::from(schema.dtypes.kv.format());
        let index = IndexerFormat::from(schema.dtypes.indexer.format());
        schema
            .layers
            .iter()
            .map(|l| {
                let pages = |s: &dsv4_cache::PagedStream, bytes: usize| {
                    DevicePages::new(gpu, s.entries_per_block, bytes)
                };
                let overlap = l.attention.has_indexer();
                Ok(Self {
                    window: DeviceRing::new(
                        gpu,
                        l.window_entries,
                        kv.entry_bytes(l.entry_width, l.rope_width),
                    )?,
                    entries: l
                        .entries
                        .as_ref()
                        .map(|s| pages(s, kv.entry_bytes(s.width, l.rope_width)))
                        .transpose()?,
                    indexer_keys: l
                        .indexer_keys
                        .as_ref()
                        .map(|s| pages(s, index.key_bytes(s.width)))
                        .transpose()?,
                    compressor: l
                        .entries
                        .as_ref()
                        .map(|s| DeviceTail::new(gpu, s.ratio, s.width, overlap))
                        .transpose()?,
                    indexer_compressor: l
                        .indexer_keys
                        .as_ref()
                        .map(|s| DeviceTail::new(gpu, s.ratio, s.width, true))
                        .transpose()?,
                    kv_format: kv,
                    indexer_format: index,
                })
            })
            .collect()
    }

    /// Bytes this layer's cache holds now (as the CPU's `LayerState::bytes` counts them).
    pub fn bytes(&self) -> u64 {
        let ring = self.window.slots() * self.window.entry_bytes();
        let tails: usize = [&self.compressor, &self.indexer_compressor]
            .into_iter()
            .flatten()
            .map(|t| t.buffer().len())
            .sum();
        let paged: usize = [&self.entries, &self.indexer_keys]
            .into_iter()
            .flatten()
            .map(|p| p.pages().len() * p.per_page() * p.entry_bytes())
            .sum();
        (ring + tails + paged) as u64
    }
}

/// The attention's intermediates on the device, grown to the largest chunk seen.
#[derive(Debug, Default)]
pub struct AttentionScratch {
    /// An input quantized for an FP8/FP4 product (reference numerics).
    quantized: Grown,
    q_lat: Grown,
    q: Grown,
    kv: Grown,
    /// The chunk's keys encoded in the cache format, to read them back as the cache will.
    fresh: Option<DeviceRing>,
    /// Value and gate projections of the main and the indexer compressor.
    projected: [[Grown; 2]; 2],
    /// Entries a compressor closes in the chunk.
    closed: Grown,
    indexer_q: Grown,
    indexer_w: Grown,
    /// The indexer's choice: indices, scores, lengths.
    chosen: [Grown; 3],
    outputs: Grown,
    group_inputs: Grown,
    parts: Grown,
    z: Grown,
}

/// The chunk and the layer's constants every step reads.
struct Chunk<'c> {
    p0: usize,
    /// Tokens in the chunk, and the first with an output.
    t_len: usize,
    first_output: usize,
    k: &'c ModelConstants,
    /// The layer's compress ratio.
    ratio: Option<usize>,
}

impl Chunk<'_> {
    fn t_out(&self) -> usize {
        self.t_len - self.first_output
    }

    fn q0(&self) -> usize {
        self.p0 + self.first_output
    }
}

/// `y = W·x` for `rows` rows, the input quantized first where the reference numerics do.
fn product(
    gpu: &Gpu,
    numerics: Numerics,
    w: &DeviceWeight,
    (x, rows): (DevicePtr, usize),
    y: DevicePtr,
    quantized: &mut Grown,
) -> Result<(), DeviceError> {
    let is_quantized = matches!(w.format, Format::Fp8Block | Format::Fp4Group);
    if numerics == Numerics::Reference && is_quantized {
        let bytes = 4 * rows * w.inp;
        let xq = quantized.at_least(gpu, bytes)?;
        // SAFETY: both buffers hold `rows × inp` floats and are distinct.
        unsafe { gpu.copy(xq, x, bytes)? };
        numerics::act_quant_fp8(gpu, xq, rows, w.inp)?;
        linear::linear(gpu, w, xq, y, rows)
    } else {
        linear::linear(gpu, w, x, y, rows)
    }
}

/// Runs one layer's attention for the chunk in `seq.h` (`T × D`, normed), writing the outputs
/// of tokens `at.first_output..` into `seq.y`.
pub fn attention(
    gpu: &Gpu,
    w: &CudaWeights,
    k: &ModelConstants,
    at: AttentionAt,
    seq: &mut CudaSeqCache,
) -> Result<(), OpError> {
    let c = Chunk {
        p0: at.p0,
        t_len: seq.tokens,
        first_output: at.first_output,
        k,
        ratio: at.ratio,
    };
    let compressed_rope = at.ratio.is_some();
    seq.rope_table(gpu, k, compressed_rope)?;
    let CudaSeqCache {
        layers,
        pool,
        h,
        y,
        rope: tables,
        attention: s,
        ..
    } = seq;
    let table = tables
        .as_ref()
        .map(|t| &t[usize::from(compressed_rope)])
        .ok_or_else(|| DeviceError::Driver("RoPE tables missing".into()))?;
    let layer = &w.model.layers[at.layer].attn;
    let vectors = &w.layers[at.layer];
    let state = &mut layers[at.layer];
    let d = k.attention;
    let (t, t_out, dh, dr) = (c.t_len, c.t_out(), d.head_dim, d.qk_rope_head_dim);
    let h = h.ptr();
    let h_out = h.offset(4 * c.first_output * k.hidden_size);
    let num = k.numerics;

    // The queries: q_lat = q_norm(wq_a h), q = wq_b q_lat, per-head norm and RoPE.
    let q_lat = s.q_lat.at_least(gpu, 4 * t_out * layer.wq_a.out)?;
    product(
        gpu,
        num,
        &layer.wq_a,
        (h_out, t_out),
        q_lat,
        &mut s.quantized,
    )?;
    norm::rms_norm(
        gpu,
        q_lat,
        Some(vectors.q_norm.ptr()),
        t_out,
        layer.wq_a.out,
        d.rms_norm_eps,
    )?;
    let q = s.q.at_least(gpu, 4 * t_out * layer.wq_b.out)?;
    product(gpu, num, &layer.wq_b, (q_lat, t_out), q, &mut s.quantized)?;
    let heads = d.num_attention_heads;
    norm::rms_norm(gpu, q, None, t_out * heads, dh, d.rms_norm_eps)?;
    let query_shape = RopeShape {
        tokens: t_out,
        heads,
        head_dim: dh,
        rotary: dr,
    };
    rope(gpu, q, table, run(c.q0()), query_shape, false)?;

    // The window keys: kv_norm(wkv h) with RoPE, read back as the cache will give them.
    let kv = s.kv.at_least(gpu, 4 * t * dh)?;
    product(gpu, num, &layer.wkv, (h, t), kv, &mut s.quantized)?;
    norm::rms_norm(gpu, kv, Some(vectors.kv_norm.ptr()), t, dh, d.rms_norm_eps)?;
    let key_shape = RopeShape {
        tokens: t,
        heads: 1,
        head_dim: dh,
        rotary: dr,
    };
    rope(gpu, kv, table, run(c.p0), key_shape, false)?;
    kv_simulation(gpu, num, kv, t, dh, dh - dr)?;
    let (kv_format, indexer_format) = (state.kv_format, state.indexer_format);
    let fresh = fresh_ring(gpu, &mut s.fresh, t, state.window.entry_bytes())?;
    let key_rows = Rows {
        ptr: kv,
        count: t,
        stride: dh,
    };
    kv_encode(
        gpu,
        key_rows,
        kv_format,
        dh,
        dr,
        Location::Ring {
            ring: fresh,
            position: 0,
        },
    )?;
    let codec = Codec::Kv(kv_format, dr);
    cache_read(
        gpu,
        codec,
        dh,
        Location::Ring {
            ring: fresh,
            position: 0,
        },
        t,
        kv,
    )?;

    // The compressors run before attention, so an entry a token closes is visible to it.
    let mut compressed = CompressedKeys::None;
    if let (Some(m), Some(cw), Some(cv)) = (c.ratio, &layer.compressor, &vectors.compressor) {
        if let (Some(ix), Some(iv)) = (&layer.indexer, &vectors.indexer_compressor) {
            let stream = Stream {
                tail: state.indexer_compressor.as_mut(),
                pages: state.indexer_keys.as_mut(),
                codec: Codec::Indexer(indexer_format),
            };
            compress(
                gpu,
                &c,
                m,
                (&ix.compressor, iv),
                stream,
                (h, table),
                s,
                pool,
                1,
            )?;
            indexer_queries(gpu, &c, ix, q_lat, h_out, table, s)?;
        }
        let stream = Stream {
            tail: state.compressor.as_mut(),
            pages: state.entries.as_mut(),
            codec,
        };
        compress(gpu, &c, m, (cw, cv), stream, (h, table), s, pool, 0)?;
        compressed = match (&layer.indexer, &state.indexer_keys) {
            (Some(_), Some(keys)) => select(gpu, &c, m, (keys, indexer_format), s)?,
            _ => CompressedKeys::Closed { ratio: m },
        };
    }

    // Sparse attention over the window (the ring, then the chunk's own keys) and the entries.
    let outputs = s.outputs.at_least(gpu, 4 * t_out * heads * dh)?;
    let entries = match &state.entries {
        Some(p) => Paged {
            pages: p.table(),
            per_page: p.per_page(),
            entries: p.len(),
            format: kv_format.into(),
        },
        None => Paged {
            pages: DevicePtr(0),
            per_page: 1,
            entries: 0,
            format: kv_format.into(),
        },
    };
    let keys = DeviceKeys {
        width: dh,
        rope: dr,
        window_size: d.sliding_window,
        ring: Ring {
            entries: state.window.buffer().ptr(),
            slots: state.window.slots(),
            format: kv_format.into(),
        },
        fresh: kv,
        p0: c.p0,
        fresh_len: t,
        entries,
        compressed,
    };
    let queries = Queries {
        q,
        out: outputs,
        sinks: vectors.sink.ptr(),
        tokens: t_out,
        q0: c.q0(),
        heads,
    };
    let scale = 1.0 / (dh as f32).sqrt();
    let sparse = profile::range(c"sparse attention");
    attend::sparse_attend(gpu, &queries, &keys, scale, table.table())?;
    drop(sparse);
    // Every query has read the ring: the chunk's keys enter it (its last `W` of them).
    let ring = Location::Ring {
        ring: &state.window,
        position: c.p0,
    };
    kv_encode(gpu, key_rows, kv_format, dh, dr, ring)?;

    // The grouped output projection: group g's heads through its rows of wo_a, the groups'
    // outputs concatenated through wo_b.
    let groups = d.o_groups;
    let group_in = heads * dh / groups;
    let ro = d.o_lora_rank;
    let group_inputs = s.group_inputs.at_least(gpu, 4 * t_out * heads * dh)?;
    layout::swap_axes(gpu, outputs, group_inputs, (t_out, groups, group_in))?;
    let parts = s.parts.at_least(gpu, 4 * groups * t_out * ro)?;
    linear::grouped_linear(gpu, &vectors.wo_a, group_inputs, parts, t_out)?;
    let z = s.z.at_least(gpu, 4 * t_out * groups * ro)?;
    layout::swap_axes(gpu, parts, z, (groups, t_out, ro))?;
    product(gpu, num, &layer.wo_b, (z, t_out), y.ptr(), &mut s.quantized)?;
    Ok(())
}

/// Tokens at consecutive positions from `first`.
fn run(first: usize) -> Positions {
    Positions::Run {
        first: first as u64,
        stride: 1,
    }
}

/// The reference numerics' FP8 simulation of KV entries' `nope` leading dims.
fn kv_simulation(
    gpu: &Gpu,
    numerics: Numerics,
    x: DevicePtr,
    rows: usize,
    width: usize,
    nope: usize,
) -> Result<(), DeviceError> {
    if numerics == Numerics::Reference {
        numerics::kv_fp8_sim(gpu, x, rows, width, nope)?;
    }
    Ok(())
}

/// The reference numerics' Hadamard rotation and FP4 simulation of indexer vectors.
fn indexer_simulation(
    gpu: &Gpu,
    numerics: Numerics,
    x: DevicePtr,
    rows: usize,
    width: usize,
) -> Result<(), DeviceError> {
    if numerics == Numerics::Reference && width.is_power_of_two() {
        numerics::hadamard(gpu, x, rows, width)?;
        numerics::fp4_sim(gpu, x, rows, width)?;
    }
    Ok(())
}

/// A ring of at least `t` slots of `entry_bytes` for the chunk's keys.
fn fresh_ring<'r>(
    gpu: &Gpu,
    ring: &'r mut Option<DeviceRing>,
    t: usize,
    entry_bytes: usize,
) -> Result<&'r DeviceRing, DeviceError> {
    if ring
        .as_ref()
        .is_none_or(|r| r.slots() < t || r.entry_bytes() != entry_bytes)
    {
        *ring = None;
        *ring = Some(DeviceRing::new(gpu, t.max(1), entry_bytes)?);
    }
    ring.as_ref()
        .ok_or_else(|| DeviceError::Driver("no ring".into()))
}

/// A compressor's state and where its entries go.
struct Stream<'s> {
    tail: Option<&'s mut DeviceTail>,
    pages: Option<&'s mut DevicePages>,
    codec: Codec,
}

/// Feeds the chunk's value and gate projections to a compressor and stores the entries it
/// closes: normed (by the pooling kernel), RoPE at `m·w` on the trailing dims, the numerics'
/// simulation, then encoded into the stream's pages, each page taken from the request's
/// budget first. `which` picks the scratch pair (0 main, 1 indexer).
#[allow(clippy::too_many_arguments)]
fn compress(
    gpu: &Gpu,
    c: &Chunk,
    m: usize,
    (w, v): (&CompressorWeights<DeviceWeight>, &CompressorVectors),
    stream: Stream,
    (h, table): (DevicePtr, &DeviceRope),
    s: &mut AttentionScratch,
    pool: &mut BlockPool,
    which: usize,
) -> Result<(), OpError> {
    let (Some(tail), Some(pages)) = (stream.tail, stream.pages) else {
        return Ok(());
    };
    let _range = profile::range(c"compressor");
    let num = c.k.numerics;
    let t = c.t_len;
    let channels = w.wkv.out;
    let [a, g] = &mut s.projected[which];
    let a = a.at_least(gpu, 4 * t * channels)?;
    let g = g.at_least(gpu, 4 * t * channels)?;
    product(gpu, num, &w.wkv, (h, t), a, &mut s.quantized)?;
    product(gpu, num, &w.wgate, (h, t), g, &mut s.quantized)?;
    let width = tail.width();
    let most = t / m + 2;
    let closed = s.closed.at_least(gpu, 4 * most * width)?;
    let rows = ChunkRows {
        a,
        g,
        count: t,
        stride: channels,
    };
    let weights = PoolWeights {
        ape: v.ape.ptr(),
        norm: v.norm.ptr(),
        eps: c.k.eps,
    };
    let entries = compress_pool(gpu, tail, rows, weights, closed)?;
    let n = entries.len();
    if n == 0 {
        return Ok(());
    }
    let dr = c.k.attention.qk_rope_head_dim;
    let at = Positions::Run {
        first: (m * entries.start) as u64,
        stride: m as u64,
    };
    let shape = RopeShape {
        tokens: n,
        heads: 1,
        head_dim: width,
        rotary: dr,
    };
    rope(gpu, closed, table, at, shape, false)?;
    match stream.codec {
        Codec::Kv(..) => kv_simulation(gpu, num, closed, n, width, width - dr)?,
        Codec::Indexer(_) => indexer_simulation(gpu, num, closed, n, width)?,
    }
    // Pages come from the request's budget, as on the CPU.
    let page_bytes = pages.per_page() * pages.entry_bytes();
    let wanted = (pages.len() + n).div_ceil(pages.per_page());
    for _ in pages.pages().len()..wanted {
        pool.take(page_bytes)
            .map_err(dsv4_kernels::cache_store::StoreError::from)?;
    }
    let claimed = pages.extend(n)?;
    let rows = Rows {
        ptr: closed,
        count: n,
        stride: width,
    };
    let to = Location::Paged {
        pages,
        first: claimed.start,
    };
    match stream.codec {
        Codec::Kv(format, rope_dims) => kv_encode(gpu, rows, format, width, rope_dims, to)?,
        Codec::Indexer(format) => indexer_encode(gpu, rows, format, width, to)?,
    }
    Ok(())
}

/// The indexer's queries from the query latent (RoPE, the numerics' simulation) and its head
/// weights from the normed input, scaled by `1/√(Di·Hi)`.
fn indexer_queries(
    gpu: &Gpu,
    c: &Chunk,
    ix: &crate::model::weights::IndexerWeights<DeviceWeight>,
    q_lat: DevicePtr,
    h_out: DevicePtr,
    table: &DeviceRope,
    s: &mut AttentionScratch,
) -> Result<(), DeviceError> {
    let d = c.k.attention;
    let (hi, di, t_out) = (d.index_n_heads, d.index_head_dim, c.t_out());
    let num = c.k.numerics;
    let iq = s.indexer_q.at_least(gpu, 4 * t_out * hi * di)?;
    product(gpu, num, &ix.wq_b, (q_lat, t_out), iq, &mut s.quantized)?;
    let iw = s.indexer_w.at_least(gpu, 4 * t_out * hi)?;
    product(
        gpu,
        num,
        &ix.weights_proj,
        (h_out, t_out),
        iw,
        &mut s.quantized,
    )?;
    let shape = RopeShape {
        tokens: t_out,
        heads: hi,
        head_dim: di,
        rotary: d.qk_rope_head_dim,
    };
    rope(gpu, iq, table, run(c.q0()), shape, false)?;
    indexer_simulation(gpu, num, iq, t_out * hi, di)?;
    let factor = 1.0 / ((di as f32).sqrt() * (hi as f32).sqrt());
    layout::scale(gpu, iw, t_out * hi, factor)
}

/// Each query's Lightning Indexer choice among the keys closed by its position.
fn select(
    gpu: &Gpu,
    c: &Chunk,
    m: usize,
    (keys, format): (&DevicePages, IndexerFormat),
    s: &mut AttentionScratch,
) -> Result<CompressedKeys, DeviceError> {
    let _range = profile::range(c"indexer");
    let d = c.k.attention;
    let (t_out, topk) = (c.t_out(), d.index_topk);
    let [indices, scores, lens] = &mut s.chosen;
    let choice = Choice {
        indices: indices.at_least(gpu, 4 * t_out * topk)?,
        scores: scores.at_least(gpu, 4 * t_out * topk)?,
        lens: lens.at_least(gpu, 4 * t_out)?,
    };
    let device_keys = indexer::DeviceKeys {
        pages: keys.table(),
        per_page: keys.per_page(),
        format: format.into(),
        len: keys.len(),
    };
    let queries = indexer::Queries {
        q: s.indexer_q.ptr(),
        w: s.indexer_w.ptr(),
        tokens: t_out,
        q0: c.q0(),
        ratio: m,
    };
    let shape = IndexerShape {
        heads: d.index_n_heads,
        dim: d.index_head_dim,
        topk,
    };
    indexer::indexer_topk(gpu, &device_keys, &queries, shape, &choice, None)?;
    Ok(CompressedKeys::Selected {
        indices: choice.indices,
        lens: choice.lens,
        k: topk,
    })
}
