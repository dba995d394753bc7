//! The attention sublayer (docs/model.md §4.3–4.6) for a chunk of consecutive tokens: low-rank queries
//! with a per-head norm, one shared K=V head, a sliding window plus compressed entries (all of
//! them in HCA layers, the Lightning Indexer's top-k in CSA layers), per-head sinks, the inverse
//! rotation of the output and the grouped output projection.

use dsv4_cache::{BlockPool, PagedEntries, StoreError};
use dsv4_kernels::panel::PackedLinear;

use dsv4_kernels::attend::{sparse_attend, Compressed, KeySet};
use dsv4_kernels::grouped::grouped_linear;
use dsv4_kernels::indexer::{indexer_topk, IndexerScratch, IndexerShape, Selection};
use dsv4_kernels::ops::{rms_norm, RopeFrequencies};

use crate::compressor::CompressorTail;
use crate::profile;
use crate::state::LayerState;
use crate::weights::{AttentionWeights, CompressorWeights};
use dsv4_kernels::numerics::{Numerics, Product};
use dsv4_kernels::scratch::zeroed;

/// Model dimensions and constants the attention needs.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Query heads H.
    pub heads: usize,
    /// Head width Dh.
    pub head_dim: usize,
    /// Rotary dims Dr (trailing).
    pub rope_dim: usize,
    /// Output groups G.
    pub groups: usize,
    /// Per-group width Ro.
    pub group_rank: usize,
    /// Window W.
    pub window: usize,
    /// Indexer heads Hi.
    pub indexer_heads: usize,
    /// Indexer width Di.
    pub indexer_dim: usize,
    /// Entries a CSA query attends.
    pub indexer_topk: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
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
}

/// Buffers one layer's attention reuses from call to call (kept in the request's workspace),
/// so a decode step does not allocate once they have grown to its sizes.
#[derive(Debug, Default)]
pub struct AttentionBuffers {
    q_lat: Vec<f32>,
    kv: Vec<f32>,
    /// Value and gate projections of the main and the indexer compressor.
    projected: [[Vec<f32>; 2]; 2],
    indexer_w: Vec<f32>,
    q: Vec<f32>,
    indexer_q: Vec<f32>,
    /// A closed compressor window's entry.
    entry: Vec<f32>,
    window: Vec<f32>,
    entries: Vec<f32>,
    /// Each query's indexer choice: `k` slots per query, `chosen_len` in use.
    chosen: Vec<(f32, usize)>,
    chosen_len: Vec<usize>,
    indexer: IndexerScratch,
    ids: Vec<usize>,
    slot: Vec<usize>,
    outputs: Vec<f32>,
    group_inputs: Vec<f32>,
    parts: Vec<f32>,
    z: Vec<f32>,
}

/// Runs attention for `h` (`T × D`, already normed) and writes the outputs of tokens
/// `first_output..T` into `y` (`(T − first_output) × D`).
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
    } = step;
    let d = w.wq_a.inp();
    let t_len = h.len() / d;
    // Tokens with an output, from absolute position `q0`.
    let (h_out, q0) = (&h[first_output * d..], p0 + first_output);
    let t_out = t_len - first_output;
    let (heads, dh, dr) = (dims.heads, dims.head_dim, dims.rope_dim);
    let dn = dh - dr;
    let AttentionBuffers {
        q_lat,
        kv,
        projected,
        indexer_w,
        q,
        indexer_q,
        entry,
        window,
        entries,
        chosen,
        chosen_len,
        indexer,
        ids,
        slot,
        outputs,
        group_inputs,
        parts,
        z,
    } = buf;

    // Every product of `h` at once: the query latent, the window key, the compressors'
    // value and gate projections and the indexer's head weights.
    {
        let product = |weight, x, y| Some(Product { weight, x, y });
        let [[main_a, main_g], [indexer_a, indexer_g]] = projected;
        let main = w.compressor.as_ref();
        let index = w.indexer.as_ref();
        let mut products = [
            product(&w.wq_a, h_out, &mut *q_lat),
            product(&w.wkv, h, &mut *kv),
            main.and_then(|cw| product(&cw.wkv, h, main_a)),
            main.and_then(|cw| product(&cw.wgate, h, main_g)),
            index.and_then(|ix| product(&ix.compressor.wkv, h, indexer_a)),
            index.and_then(|ix| product(&ix.compressor.wgate, h, indexer_g)),
            index.and_then(|ix| product(&ix.weights_proj, h_out, &mut *indexer_w)),
        ];
        numerics.linears(&mut products);
    }

    // Query path: q_lat = q_norm(wq_a h); q = wq_b q_lat, per-head unweighted RMSNorm, RoPE;
    // the indexer's queries come from the same latent.
    q_lat
        .chunks_mut(w.q_norm.len())
        .for_each(|r| rms_norm(r, Some(&w.q_norm), dims.eps));
    {
        let mut products = [
            Some(Product {
                weight: &w.wq_b,
                x: q_lat,
                y: &mut *q,
            }),
            w.indexer.as_ref().map(|ix| Product {
                weight: &ix.wq_b,
                x: q_lat,
                y: &mut *indexer_q,
            }),
        ];
        numerics.linears(&mut products);
    }
    for (t, row) in q.chunks_mut(heads * dh).enumerate() {
        for head in row.chunks_mut(dh) {
            rms_norm(head, None, dims.eps);
            rope.rotate(&mut head[dn..], q0 + t, false);
        }
    }

    // Window keys: kv_norm(wkv h) with RoPE, as the cache will give them back.
    for (t, row) in kv.chunks_mut(dh).enumerate() {
        rms_norm(row, Some(&w.kv_norm), dims.eps);
        rope.rotate(&mut row[dn..], p0 + t, false);
        numerics.kv_entry(row, dn);
        state.window.round_trip(row)?;
    }

    // Compressors run before attention so an entry closed by a token is visible to it.
    let [[main_a, main_g], [indexer_a, indexer_g]] = &*projected;
    let chunk = ratio.map(|m| Chunk {
        p0,
        m,
        rope,
        dr,
        eps: dims.eps,
    });
    if let (Some(chunk), Some(ix)) = (&chunk, &w.indexer) {
        if let (Some(tail), Some(keys)) = (
            state.indexer_compressor.as_mut(),
            state.indexer_keys.as_mut(),
        ) {
            let sink = EntrySink { stream: keys, pool };
            compress(
                &ix.compressor,
                (indexer_a, indexer_g),
                tail,
                sink,
                chunk,
                entry,
                |k| numerics.indexer_vector(k),
            )?;
        }
        let (hi, di) = (dims.indexer_heads, dims.indexer_dim);
        for (t, row) in indexer_q.chunks_mut(hi * di).enumerate() {
            for head in row.chunks_mut(di) {
                rope.rotate(&mut head[di - dr..], q0 + t, false);
                numerics.indexer_vector(head);
            }
        }
        let scale = 1.0 / ((di as f32).sqrt() * (hi as f32).sqrt());
        indexer_w.iter_mut().for_each(|v| *v *= scale);
    }
    if let (Some(chunk), Some(cw)) = (&chunk, &w.compressor) {
        if let (Some(tail), Some(stream)) = (state.compressor.as_mut(), state.entries.as_mut()) {
            let sink = EntrySink { stream, pool };
            compress(cw, (main_a, main_g), tail, sink, chunk, entry, |e| {
                numerics.kv_entry(e, dn)
            })?;
        }
    }

    // The keys each query sees: the window (earlier chunks' from the ring) ...
    let first = p0.saturating_sub(dims.window - 1);
    let window = zeroed(window, (p0 + t_len - first) * dh);
    for pos in first..p0 {
        state
            .window
            .read(pos, &mut window[(pos - first) * dh..][..dh])?;
    }
    window[(p0 - first) * dh..].copy_from_slice(kv);
    // ... and the compressed entries: all visible ones (HCA) or the indexer's choice (CSA),
    // which `chosen` then lists as positions in `entries`.
    let k = dims.indexer_topk;
    let p_last = p0 + t_len - 1;
    let csa = w.indexer.is_some();
    // HCA queries see every entry closed by their position: ⌊(p + 1)/m⌋.
    let mut hca_ratio = None;
    match (ratio, &state.entries) {
        (Some(m), Some(stream)) => {
            let visible_max = (p_last + 1) / m;
            if csa {
                let selection = Selection {
                    slots: zeroed(chosen, t_out * k),
                    len: zeroed(chosen_len, t_out),
                };
                if let Some(keys) = state.indexer_keys.as_ref() {
                    let _range = profile::range(c"indexer");
                    let shape = IndexerShape {
                        heads: dims.indexer_heads,
                        dim: dims.indexer_dim,
                        topk: k,
                    };
                    let q = (&indexer_q[..], &indexer_w[..]);
                    indexer_topk(keys, q, (q0, m), shape, selection, indexer)?;
                }
                ids.clear();
                for (list, &len) in chosen.chunks(k).zip(chosen_len.iter()) {
                    ids.extend(list[..len].iter().map(|c| c.1));
                }
                ids.sort_unstable();
                ids.dedup();
                let slot = zeroed(slot, visible_max);
                let entries = zeroed(entries, ids.len() * dh);
                for (n, &e) in ids.iter().enumerate() {
                    stream.read(e, &mut entries[n * dh..(n + 1) * dh])?;
                    slot[e] = n;
                }
                for (list, &len) in chosen.chunks_mut(k).zip(chosen_len.iter()) {
                    list[..len].iter_mut().for_each(|c| c.1 = slot[c.1]);
                }
            } else {
                let entries = zeroed(entries, visible_max * dh);
                stream.read_range(0..visible_max, entries)?;
                hca_ratio = Some(m);
            }
        }
        _ => {
            zeroed(chosen_len, t_out);
        }
    }
    let compressed = match (hca_ratio, csa) {
        (Some(ratio), _) => Compressed::Closed { ratio },
        (None, true) => Compressed::Selected {
            slots: chosen,
            k,
            len: chosen_len,
        },
        (None, false) => Compressed::None,
    };
    let keys = KeySet {
        width: dh,
        window,
        window_first: first,
        window_size: dims.window,
        entries,
        compressed,
    };
    let sparse = profile::range(c"sparse attention");
    let scale = 1.0 / (dh as f32).sqrt();
    let outputs = zeroed(outputs, t_out * heads * dh);
    sparse_attend(q, q0, &keys, &w.sink, scale, rope, outputs);
    drop(sparse);

    for (t, row) in kv.chunks(dh).enumerate() {
        state.window.write(p0 + t, row)?;
    }

    // Grouped output projection: group g's heads through its rows of wo_a, the groups in one
    // parallel region.
    let groups = dims.groups;
    let group_in = heads * dh / groups;
    let ro = dims.group_rank;
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
    numerics.linear_into(&w.wo_b, z, y);
    Ok(())
}

/// A chunk as a compressor sees it.
struct Chunk<'c> {
    p0: usize,
    m: usize,
    rope: &'c RopeFrequencies,
    dr: usize,
    eps: f32,
}

/// Where a compressor's entries go: a paged stream and the pool its pages come from.
struct EntrySink<'s> {
    stream: &'s mut PagedEntries,
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
    c: &Chunk,
    entry: &mut Vec<f32>,
    finish: impl Fn(&mut [f32]),
) -> Result<(), StoreError> {
    let _range = profile::range(c"compressor");
    let cw = w.wkv.out();
    for (t, (a, g)) in a.chunks(cw).zip(g.chunks(cw)).enumerate() {
        if let Some(index) = tail.push(c.p0 + t, (a, g), w, c.eps, entry) {
            let width = entry.len();
            c.rope
                .rotate(&mut entry[width - c.dr..], c.m * index, false);
            finish(entry);
            sink.stream.push(entry, sink.pool)?;
        }
    }
    Ok(())
}
