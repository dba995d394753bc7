//! The attention sublayer on the CPU (docs/model.md §4.3–4.6) for a chunk of consecutive tokens:
//! low-rank queries with a per-head norm, one shared K=V head, a sliding window plus compressed
//! entries (all of them in HCA layers, the Lightning Indexer's top-k in CSA layers), per-head
//! sinks, the inverse rotation of the output and the grouped output projection.

use dsv4_cache::BlockPool;
use dsv4_kernels::cache_store::{StoreError, StreamPages};
use dsv4_kernels::panel::PackedLinear;

use dsv4_kernels::attend::{sparse_attend, Compressed, KeySet};
use dsv4_kernels::grouped::grouped_linear;
use dsv4_kernels::indexer::{indexer_topk, IndexerScratch, IndexerShape, Selection};
use dsv4_kernels::ops::{rms_norm, RopeFrequencies};

use crate::model::state::LayerState;
use crate::model::weights::{AttentionWeights, CompressorWeights, IndexerWeights};
use crate::profile;
use dsv4_kernels::compressor::CompressorTail;
use dsv4_kernels::numerics::{Numerics, Product};
use dsv4_kernels::scratch::zeroed;

/// The config's fields the attention reads, under the config's names (floats as f32).
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Query heads H.
    pub num_attention_heads: usize,
    /// Head width Dh.
    pub head_dim: usize,
    /// Rotary dims Dr (trailing).
    pub qk_rope_head_dim: usize,
    /// Output groups G.
    pub o_groups: usize,
    /// Per-group width Ro.
    pub o_lora_rank: usize,
    /// Window W.
    pub sliding_window: usize,
    /// Indexer heads Hi.
    pub index_n_heads: usize,
    /// Indexer width Di.
    pub index_head_dim: usize,
    /// Entries a CSA query attends.
    pub index_topk: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
}

/// One layer's attention inputs besides the weights.
pub struct AttentionStep<'s> {
    /// Compress ratio m (`None` for window-only layers).
    pub ratio: Option<usize>,
    /// Absolute position of the chunk's first token.
    pub p0: usize,
    /// The first token of the chunk whose output is wanted: every token's keys and compressed
    /// entries enter the cache, but queries, attention and the output projection run only from
    /// here (the last layer of a prefill that wants the last logits needs one output).
    pub first_output: usize,
    /// The layer's cache.
    pub state: &'s mut LayerState,
    /// Where paged streams take pages.
    pub pool: &'s mut BlockPool,
    /// The layer's RoPE table.
    pub rope: &'s RopeFrequencies,
    /// What the layer shares under the request's policy.
    pub sharing: Sharing<'s>,
}

/// What a layer shares with others under the request's cache-sharing policy
/// (`dsv4_cache::Sharing`); layers run in order, so a source has run before its readers.
pub enum Sharing<'s> {
    /// Keeps its own cache and selection, which no other layer reads.
    Alone,
    /// Keeps its own; it saves the window its queries saw for the layers reading its cache
    /// (`window`), and its indexer selection for the layers reusing it (`selection`).
    Source {
        /// Where to save the window, when layers read this one's cache.
        window: Option<&'s mut Vec<f32>>,
        /// Where to save the selection, when layers reuse it.
        selection: Option<&'s mut SavedSelection>,
    },
    /// Reads another layer's window, entries and indexer keys (a CLA group's member): it stores
    /// and computes none of them.
    KvMember {
        /// The source layer's cache.
        source: &'s LayerState,
        /// The window the source's queries saw in this chunk.
        window: &'s [f32],
    },
    /// Reuses another layer's indexer selection: it keeps no indexer keys and runs no indexer.
    IndexerMember {
        /// The source's selection in this chunk.
        selection: &'s SavedSelection,
    },
}

/// A source layer's indexer selection of one chunk: entry ids (not yet rows), `k` slots per
/// query from position `q0`.
#[derive(Debug, Default)]
pub struct SavedSelection {
    q0: usize,
    chosen: Vec<(f32, usize)>,
    len: Vec<usize>,
}

/// Buffers one layer's attention reuses from call to call (kept in the request's workspace),
/// so a decode step does not allocate once they have grown to its sizes.
#[derive(Debug, Default)]
pub struct AttentionBuffers {
    /// The query latent, the queries, and the indexer's queries and head weights.
    queries: QueryBuffers,
    /// Window keys of the chunk's tokens.
    kv: Vec<f32>,
    /// Value and gate projections of the main and the indexer compressor.
    projected: [[Vec<f32>; 2]; 2],
    /// A closed compressor window's entry.
    entry: Vec<f32>,
    /// The decoded keys the queries attend.
    keys: KeyBuffers,
    indexer: IndexerScratch,
    /// The grouped output projection's intermediates.
    output: OutputBuffers,
}

#[derive(Debug, Default)]
struct QueryBuffers {
    q_lat: Vec<f32>,
    q: Vec<f32>,
    indexer_q: Vec<f32>,
    indexer_w: Vec<f32>,
}

#[derive(Debug, Default)]
struct KeyBuffers {
    window: Vec<f32>,
    entries: Vec<f32>,
    /// Each query's indexer choice: `k` slots per query, `chosen_len` in use.
    chosen: Vec<(f32, usize)>,
    chosen_len: Vec<usize>,
    ids: Vec<usize>,
    slot: Vec<usize>,
}

#[derive(Debug, Default)]
struct OutputBuffers {
    outputs: Vec<f32>,
    group_inputs: Vec<f32>,
    parts: Vec<f32>,
    z: Vec<f32>,
}

/// What every step of one layer's attention reads: the chunk, the layer's constants and the
/// numerics mode.
struct Chunk<'c> {
    /// Absolute position of the chunk's first token.
    p0: usize,
    /// Tokens in the chunk.
    t_len: usize,
    /// Absolute position of the first token with an output, and how many have one.
    q0: usize,
    t_out: usize,
    rope: &'c RopeFrequencies,
    dims: AttentionDims,
    numerics: Numerics,
}

/// Runs attention for `h` (`T × D`, already normed) and writes the outputs of tokens
/// `first_output..T` into `y` (`(T − first_output) × D`): one function per layer kind, all
/// sharing the query and window path and the output projection.
pub fn attention(
    w: &AttentionWeights<PackedLinear>,
    h: &[f32],
    step: AttentionStep,
    dims: AttentionDims,
    numerics: Numerics,
    buf: &mut AttentionBuffers,
    y: &mut Vec<f32>,
) -> Result<(), StoreError> {
    let AttentionStep {
        ratio,
        p0,
        first_output,
        state,
        pool,
        rope,
        sharing,
    } = step;
    let t_len = h.len() / w.wq_a.inp();
    let c = Chunk {
        p0,
        t_len,
        q0: p0 + first_output,
        t_out: t_len - first_output,
        rope,
        dims,
        numerics,
    };
    let h_out = &h[first_output * w.wq_a.inp()..];
    let own = Own {
        keys: !matches!(sharing, Sharing::KvMember { .. }),
        indexer: !matches!(
            sharing,
            Sharing::KvMember { .. } | Sharing::IndexerMember { .. }
        ),
        selects: !matches!(sharing, Sharing::IndexerMember { .. }),
    };
    project(w, h, h_out, numerics, own, buf);
    let mut layer = Layer {
        state,
        pool,
        sharing,
    };
    match (ratio, &w.compressor, &w.indexer) {
        (Some(m), Some(main), Some(indexer)) => {
            csa_attention(w, (main, indexer), m, &c, &mut layer, buf, y)
        }
        (Some(m), Some(main), None) => hca_attention(w, main, m, &c, &mut layer, buf, y),
        _ => window_attention(w, &c, &mut layer, buf, y),
    }
}

/// What a layer computes of its own under its sharing role.
#[derive(Clone, Copy)]
struct Own {
    /// Its window keys and compressed entries (not a CLA member).
    keys: bool,
    /// Its indexer keys (neither a CLA member nor reusing a selection).
    indexer: bool,
    /// Its indexer queries and selection (not reusing a selection).
    selects: bool,
}

/// One layer's cache, the pool its pages come from, and its sharing role.
struct Layer<'s> {
    state: &'s mut LayerState,
    pool: &'s mut BlockPool,
    sharing: Sharing<'s>,
}

impl Layer<'_> {
    /// The cache the layer's queries read: its source's for a CLA member, else its own.
    fn keys(&self) -> &LayerState {
        match &self.sharing {
            Sharing::KvMember { source, .. } => source,
            _ => self.state,
        }
    }
}

/// A window-only layer: each query attends its window.
fn window_attention(
    w: &AttentionWeights<PackedLinear>,
    c: &Chunk,
    layer: &mut Layer,
    buf: &mut AttentionBuffers,
    y: &mut Vec<f32>,
) -> Result<(), StoreError> {
    queries(w, c, true, &mut buf.queries);
    window(w, c, layer, buf)?;
    attend(w, c, Visible::Window, buf, y);
    Ok(())
}

/// The window the chunk's queries see: the layer's own ([`window_keys`], saved for its readers
/// when it is a source), or a CLA member's source's.
fn window(
    w: &AttentionWeights<PackedLinear>,
    c: &Chunk,
    layer: &mut Layer,
    buf: &mut AttentionBuffers,
) -> Result<(), StoreError> {
    match &mut layer.sharing {
        Sharing::KvMember { window, .. } => {
            buf.keys.window.clear();
            buf.keys.window.extend_from_slice(window);
        }
        sharing => {
            window_keys(w, c, layer.state, &mut buf.kv, &mut buf.keys.window)?;
            if let Sharing::Source {
                window: Some(saved),
                ..
            } = sharing
            {
                saved.clear();
                saved.extend_from_slice(&buf.keys.window);
            }
        }
    }
    Ok(())
}

/// An HCA layer: each query attends its window and every entry closed by its position.
#[allow(clippy::too_many_arguments)]
fn hca_attention(
    w: &AttentionWeights<PackedLinear>,
    main: &CompressorWeights<PackedLinear>,
    m: usize,
    c: &Chunk,
    layer: &mut Layer,
    buf: &mut AttentionBuffers,
    y: &mut Vec<f32>,
) -> Result<(), StoreError> {
    queries(w, c, true, &mut buf.queries);
    window(w, c, layer, buf)?;
    // The compressor runs before attention so an entry closed by a token is visible to it.
    compress_entries(main, (c, m), layer, buf)?;
    // The chunk's queries see at most the entries closed by its last token.
    let visible = match &layer.keys().entries {
        Some(stream) => {
            let closed = (c.p0 + c.t_len) / m;
            let entries = zeroed(&mut buf.keys.entries, closed * c.dims.head_dim);
            stream.read_range(0..closed, entries)?;
            Visible::Closed { ratio: m }
        }
        None => Visible::Window,
    };
    attend(w, c, visible, buf, y);
    Ok(())
}

/// A CSA layer: each query attends its window and the compressed entries its Lightning
/// Indexer selects among those closed by its position.
#[allow(clippy::too_many_arguments)]
fn csa_attention(
    w: &AttentionWeights<PackedLinear>,
    (main, indexer): (
        &CompressorWeights<PackedLinear>,
        &IndexerWeights<PackedLinear>,
    ),
    m: usize,
    c: &Chunk,
    layer: &mut Layer,
    buf: &mut AttentionBuffers,
    y: &mut Vec<f32>,
) -> Result<(), StoreError> {
    let reuses = matches!(layer.sharing, Sharing::IndexerMember { .. });
    queries(w, c, !reuses, &mut buf.queries);
    window(w, c, layer, buf)?;
    // Both compressors run before attention so an entry closed by a token is visible to it.
    compress_indexer_keys(&indexer.compressor, (c, m), layer, buf)?;
    compress_entries(main, (c, m), layer, buf)?;
    match &mut layer.sharing {
        Sharing::IndexerMember { selection } => reuse_selection(c, selection, &mut buf.keys),
        sharing => {
            indexer_queries(c, &mut buf.queries);
            let keys = match sharing {
                Sharing::KvMember { source, .. } => &**source,
                _ => &*layer.state,
            };
            indexer_select(c, m, keys, &buf.queries, &mut buf.indexer, &mut buf.keys)?;
            if let Sharing::Source {
                selection: Some(saved),
                ..
            } = sharing
            {
                saved.q0 = c.q0;
                saved.chosen.clone_from(&buf.keys.chosen);
                saved.len.clone_from(&buf.keys.chosen_len);
            }
        }
    }
    gather_selected(c, m, layer.keys(), &mut buf.keys)?;
    attend(w, c, Visible::Selected, buf, y);
    Ok(())
}

/// A reusing layer's selection: its source's for the same queries (the source may have had
/// more outputs in the chunk: the last layer of a prefill computes only the last one).
fn reuse_selection(c: &Chunk, saved: &SavedSelection, b: &mut KeyBuffers) {
    let k = c.dims.index_topk;
    let skip = c.q0 - saved.q0;
    b.chosen.clear();
    b.chosen
        .extend_from_slice(&saved.chosen[skip * k..(skip + c.t_out) * k]);
    b.chosen_len.clear();
    b.chosen_len
        .extend_from_slice(&saved.len[skip..skip + c.t_out]);
}

/// The main compressor over the chunk: the entries it closes, with the KV simulation of the
/// numerics mode, into the layer's entry stream.
fn compress_entries(
    main: &CompressorWeights<PackedLinear>,
    (c, m): (&Chunk, usize),
    layer: &mut Layer,
    buf: &mut AttentionBuffers,
) -> Result<(), StoreError> {
    // A CLA member keeps no compressor: its schema gives it none.
    let (state, pool) = (&mut *layer.state, &mut *layer.pool);
    let (Some(tail), Some(stream)) = (state.compressor.as_mut(), state.entries.as_mut()) else {
        return Ok(());
    };
    let dn = c.dims.head_dim - c.dims.qk_rope_head_dim;
    let [a, g] = &buf.projected[0];
    let sink = EntrySink { stream, pool };
    let kv_entry = |e: &mut [f32]| c.numerics.kv_entry(e, dn);
    compress(main, (a, g), tail, sink, (c, m), &mut buf.entry, kv_entry)
}

/// The indexer's compressor over the chunk: the keys it closes, with the indexer simulation of
/// the numerics mode, into the layer's indexer key stream.
fn compress_indexer_keys(
    w: &CompressorWeights<PackedLinear>,
    (c, m): (&Chunk, usize),
    layer: &mut Layer,
    buf: &mut AttentionBuffers,
) -> Result<(), StoreError> {
    // A CLA member or a reusing layer keeps no indexer compressor: its schema gives it none.
    let (state, pool) = (&mut *layer.state, &mut *layer.pool);
    let (Some(tail), Some(stream)) = (
        state.indexer_compressor.as_mut(),
        state.indexer_keys.as_mut(),
    ) else {
        return Ok(());
    };
    let [a, g] = &buf.projected[1];
    let sink = EntrySink { stream, pool };
    let indexer_key = |k: &mut [f32]| c.numerics.indexer_vector(k);
    compress(w, (a, g), tail, sink, (c, m), &mut buf.entry, indexer_key)
}

/// Every product of `h` at once: the query latent, the window key, the compressors' value and
/// gate projections and the indexer's head weights (those of the layer's kind, and only what
/// the layer computes of its own).
fn project(
    w: &AttentionWeights<PackedLinear>,
    h: &[f32],
    h_out: &[f32],
    numerics: Numerics,
    own: Own,
    buf: &mut AttentionBuffers,
) {
    let product = |weight, x, y| Some(Product { weight, x, y });
    let [[main_a, main_g], [indexer_a, indexer_g]] = &mut buf.projected;
    let main = w.compressor.as_ref().filter(|_| own.keys);
    let index = w.indexer.as_ref();
    let index_keys = index.filter(|_| own.indexer);
    let index_queries = index.filter(|_| own.selects);
    let q = &mut buf.queries;
    let mut products = [
        product(&w.wq_a, h_out, &mut q.q_lat),
        own.keys.then_some(Product {
            weight: &w.wkv,
            x: h,
            y: &mut buf.kv,
        }),
        main.and_then(|cw| product(&cw.wkv, h, main_a)),
        main.and_then(|cw| product(&cw.wgate, h, main_g)),
        index_keys.and_then(|ix| product(&ix.compressor.wkv, h, indexer_a)),
        index_keys.and_then(|ix| product(&ix.compressor.wgate, h, indexer_g)),
        index_queries.and_then(|ix| product(&ix.weights_proj, h_out, &mut q.indexer_w)),
    ];
    numerics.linears(&mut products);
}

/// The query path: `q_lat = q_norm(wq_a h)`, then `q = wq_b q_lat` with a per-head unweighted
/// RMSNorm and RoPE; a CSA layer's indexer queries come from the same latent (when it `selects`).
fn queries(w: &AttentionWeights<PackedLinear>, c: &Chunk, selects: bool, b: &mut QueryBuffers) {
    let (heads, dh) = (c.dims.num_attention_heads, c.dims.head_dim);
    let dn = dh - c.dims.qk_rope_head_dim;
    b.q_lat
        .chunks_mut(w.q_norm.len())
        .for_each(|r| rms_norm(r, Some(&w.q_norm), c.dims.rms_norm_eps));
    let mut products = [
        Some(Product {
            weight: &w.wq_b,
            x: &b.q_lat,
            y: &mut b.q,
        }),
        w.indexer.as_ref().filter(|_| selects).map(|ix| Product {
            weight: &ix.wq_b,
            x: &b.q_lat,
            y: &mut b.indexer_q,
        }),
    ];
    c.numerics.linears(&mut products);
    for (t, row) in b.q.chunks_mut(heads * dh).enumerate() {
        for head in row.chunks_mut(dh) {
            rms_norm(head, None, c.dims.rms_norm_eps);
            c.rope.rotate(&mut head[dn..], c.q0 + t, false);
        }
    }
}

/// The indexer's queries with RoPE and (in reference numerics) their simulation, and its head
/// weights scaled by `1/√(Di·Hi)`.
fn indexer_queries(c: &Chunk, b: &mut QueryBuffers) {
    let (hi, di, dr) = (
        c.dims.index_n_heads,
        c.dims.index_head_dim,
        c.dims.qk_rope_head_dim,
    );
    for (t, row) in b.indexer_q.chunks_mut(hi * di).enumerate() {
        for head in row.chunks_mut(di) {
            c.rope.rotate(&mut head[di - dr..], c.q0 + t, false);
            c.numerics.indexer_vector(head);
        }
    }
    let scale = 1.0 / ((di as f32).sqrt() * (hi as f32).sqrt());
    b.indexer_w.iter_mut().for_each(|v| *v *= scale);
}

/// The window path: each token's key `kv_norm(wkv h)` with RoPE, as the cache will give it back;
/// then the keys the chunk's queries see in `window` (earlier chunks' from the ring, from
/// position `p0 + 1 − W`), and the chunk's keys written to the ring.
fn window_keys(
    w: &AttentionWeights<PackedLinear>,
    c: &Chunk,
    state: &mut LayerState,
    kv: &mut [f32],
    window: &mut Vec<f32>,
) -> Result<(), StoreError> {
    let dh = c.dims.head_dim;
    let dn = dh - c.dims.qk_rope_head_dim;
    for (t, row) in kv.chunks_mut(dh).enumerate() {
        rms_norm(row, Some(&w.kv_norm), c.dims.rms_norm_eps);
        c.rope.rotate(&mut row[dn..], c.p0 + t, false);
        c.numerics.kv_entry(row, dn);
        state.window.round_trip(row)?;
    }
    let first = window_first(c);
    let window = zeroed(window, (c.p0 + c.t_len - first) * dh);
    for pos in first..c.p0 {
        state
            .window
            .read(pos, &mut window[(pos - first) * dh..][..dh])?;
    }
    window[(c.p0 - first) * dh..].copy_from_slice(kv);
    for (t, row) in kv.chunks(dh).enumerate() {
        state.window.write(c.p0 + t, row)?;
    }
    Ok(())
}

/// The position of the first window key the chunk's queries see.
fn window_first(c: &Chunk) -> usize {
    c.p0.saturating_sub(c.dims.sliding_window - 1)
}

/// Each query's Lightning Indexer selection over the keys of `state` (entry ids).
fn indexer_select(
    c: &Chunk,
    m: usize,
    state: &LayerState,
    q: &QueryBuffers,
    scratch: &mut IndexerScratch,
    b: &mut KeyBuffers,
) -> Result<(), StoreError> {
    let k = c.dims.index_topk;
    let selection = Selection {
        slots: zeroed(&mut b.chosen, c.t_out * k),
        len: zeroed(&mut b.chosen_len, c.t_out),
    };
    let Some(keys) = &state.indexer_keys else {
        return Ok(());
    };
    {
        let _range = profile::range(c"indexer");
        let shape = IndexerShape {
            heads: c.dims.index_n_heads,
            dim: c.dims.index_head_dim,
            topk: k,
        };
        let queries = (&q.indexer_q[..], &q.indexer_w[..]);
        indexer_topk(keys, queries, (c.q0, m), shape, selection, scratch)?;
    }
    Ok(())
}

/// The selected entries of `state` decoded once into `entries` (each at most once for the
/// whole chunk), the selection rewritten to their rows.
fn gather_selected(
    c: &Chunk,
    m: usize,
    state: &LayerState,
    b: &mut KeyBuffers,
) -> Result<(), StoreError> {
    let (dh, k) = (c.dims.head_dim, c.dims.index_topk);
    let Some(stream) = &state.entries else {
        return Ok(());
    };
    b.ids.clear();
    for (list, &len) in b.chosen.chunks(k).zip(b.chosen_len.iter()) {
        b.ids.extend(list[..len].iter().map(|c| c.1));
    }
    b.ids.sort_unstable();
    b.ids.dedup();
    let slot = zeroed(&mut b.slot, (c.p0 + c.t_len) / m);
    let entries = zeroed(&mut b.entries, b.ids.len() * dh);
    for (n, &e) in b.ids.iter().enumerate() {
        stream.read(e, &mut entries[n * dh..(n + 1) * dh])?;
        slot[e] = n;
    }
    for (list, &len) in b.chosen.chunks_mut(k).zip(b.chosen_len.iter()) {
        list[..len].iter_mut().for_each(|c| c.1 = slot[c.1]);
    }
    Ok(())
}

/// Which compressed entries the queries of a layer see, besides their window.
#[derive(Clone, Copy)]
enum Visible {
    /// None.
    Window,
    /// Every entry closed by the query's position.
    Closed { ratio: usize },
    /// The indexer's selection in the key buffers.
    Selected,
}

/// Sparse attention of the queries over their window and `compressed` entries, then the
/// grouped output projection: group g's heads through its own `wo_a`, the groups' outputs
/// concatenated through `wo_b`, into `y`.
fn attend(
    w: &AttentionWeights<PackedLinear>,
    c: &Chunk,
    visible: Visible,
    buf: &mut AttentionBuffers,
    y: &mut Vec<f32>,
) {
    let (heads, dh, t_out) = (c.dims.num_attention_heads, c.dims.head_dim, c.t_out);
    let b = &buf.keys;
    let compressed = match visible {
        Visible::Window => Compressed::None,
        Visible::Closed { ratio } => Compressed::Closed { ratio },
        Visible::Selected => Compressed::Selected {
            slots: &b.chosen,
            k: c.dims.index_topk,
            len: &b.chosen_len,
        },
    };
    let keys = KeySet {
        width: dh,
        window: &b.window,
        window_first: window_first(c),
        window_size: c.dims.sliding_window,
        entries: &b.entries,
        compressed,
    };
    let OutputBuffers {
        outputs,
        group_inputs,
        parts,
        z,
    } = &mut buf.output;
    let sparse = profile::range(c"sparse attention");
    let scale = 1.0 / (dh as f32).sqrt();
    let outputs = zeroed(outputs, t_out * heads * dh);
    sparse_attend(&buf.queries.q, c.q0, &keys, &w.sink, scale, c.rope, outputs);
    drop(sparse);

    let groups = c.dims.o_groups;
    let group_in = heads * dh / groups;
    let ro = c.dims.o_lora_rank;
    let group_inputs = zeroed(group_inputs, t_out * heads * dh);
    for (g, input) in group_inputs.chunks_mut(t_out * group_in).enumerate() {
        for (dst, o) in input.chunks_mut(group_in).zip(outputs.chunks(heads * dh)) {
            dst.copy_from_slice(&o[g * group_in..(g + 1) * group_in]);
        }
    }
    grouped_linear(&w.wo_a, group_inputs, zeroed(parts, groups * t_out * ro));
    let z = zeroed(z, t_out * groups * ro);
    for (g, part) in parts.chunks(t_out * ro).enumerate() {
        for t in 0..t_out {
            z[t * groups * ro + g * ro..][..ro].copy_from_slice(&part[t * ro..(t + 1) * ro]);
        }
    }
    c.numerics.linear_into(&w.wo_b, z, y);
}

/// Where a compressor's entries go: a paged stream and the pool its pages come from.
struct EntrySink<'s> {
    stream: &'s mut StreamPages,
    pool: &'s mut BlockPool,
}

/// Feeds a chunk's value and gate projections (`a`, `g`: `T × c·w`) to a compressor and stores
/// the entries it closes: normed, RoPE at `m·w` on the trailing `dr` dims, then `finish` (the
/// reference's simulation), then encoded into the sink's stream. `entry` is scratch.
fn compress(
    w: &CompressorWeights<PackedLinear>,
    (a, g): (&[f32], &[f32]),
    tail: &mut CompressorTail,
    sink: EntrySink,
    (c, m): (&Chunk, usize),
    entry: &mut Vec<f32>,
    finish: impl Fn(&mut [f32]),
) -> Result<(), StoreError> {
    let _range = profile::range(c"compressor");
    let cw = w.wkv.out();
    let dr = c.dims.qk_rope_head_dim;
    for (t, (a, g)) in a.chunks(cw).zip(g.chunks(cw)).enumerate() {
        let gate_norm = (&w.ape[..], &w.norm[..], c.dims.rms_norm_eps);
        if let Some(index) = tail.push(c.p0 + t, (a, g), gate_norm, entry) {
            let width = entry.len();
            c.rope.rotate(&mut entry[width - dr..], m * index, false);
            finish(entry);
            sink.stream.push(entry, sink.pool)?;
        }
    }
    Ok(())
}
