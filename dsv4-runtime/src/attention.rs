//! The attention sublayer (spec §4.3–4.6) for a chunk of consecutive tokens: low-rank queries
//! with a per-head norm, one shared K=V head, a sliding window plus compressed entries (all of
//! them in HCA layers, the Lightning Indexer's top-k in CSA layers), per-head sinks, the inverse
//! rotation of the output and the grouped output projection.

use dsv4_cache::{BlockPool, PagedEntries, StoreError};
use dsv4_kernels::panel::{PackedLinear, PackedWeights};
use std::cell::RefCell;

use dsv4_kernels::attend::attend_shared_kv;
use dsv4_kernels::ops::{best_first, keep_best, rms_norm, RopeFrequencies};
use dsv4_kernels::scratch::{with_buffer, Buffers};
use rayon::prelude::*;

use crate::compressor::CompressorTail;
use crate::numerics::{Numerics, Product};
use crate::profile;
use crate::state::LayerState;
use crate::weights::{AttentionWeights, CompressorWeights};
use crate::workspace::zeroed;

/// Indexer keys scored per tile: the indexer never holds more than this many decoded keys, and
/// each query keeps only a running top-k, so prefill memory does not grow with chunk × entries.
const INDEX_TILE: usize = 4096;

/// Indexer tasks per worker a tile is split into at least (when it has the entries).
const INDEX_TASKS_PER_WORKER: usize = 4;

/// Fewest entries one indexer task scores.
const INDEX_MIN_PIECE: usize = 64;

/// Heads of one token attended by one parallel task.
const HEADS_PER_TASK: usize = 4;

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
                indexer_top_k(
                    state.indexer_keys.as_ref(),
                    (indexer_q, indexer_w),
                    (q0, m),
                    dims,
                    selection,
                    indexer,
                )?;
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
    let compressed = |t: usize| match hca_ratio {
        Some(m) => (q0 + t + 1) / m,
        None => chosen_len.get(t).copied().unwrap_or(0),
    };

    let scale = 1.0 / (dh as f32).sqrt();
    let sparse = profile::range(c"sparse attention");
    // Tasks of a few heads of one token, so a single decoded token still uses every core.
    let (window, entries, chosen) = (&*window, &*entries, &*chosen);
    zeroed(outputs, t_out * heads * dh)
        .par_chunks_mut(heads * dh)
        .enumerate()
        .for_each(|(t, token_out)| {
            let p = q0 + t;
            let lo = (p + 1).saturating_sub(dims.window).max(first);
            let in_window = p + 1 - lo;
            let key = |j: usize| -> &[f32] {
                if j < in_window {
                    &window[(lo + j - first) * dh..][..dh]
                } else {
                    let c = j - in_window;
                    let e = if csa { chosen[t * k + c].1 } else { c };
                    &entries[e * dh..(e + 1) * dh]
                }
            };
            let keys = in_window + compressed(t);
            token_out
                .par_chunks_mut(HEADS_PER_TASK * dh)
                .enumerate()
                .for_each(|(task, out)| {
                    let first_head = task * HEADS_PER_TASK;
                    let task_heads = out.len() / dh;
                    let qt = &q[(t * heads + first_head) * dh..][..task_heads * dh];
                    let sinks = &w.sink[first_head..first_head + task_heads];
                    attend_shared_kv(qt, keys, key, sinks, scale, out);
                    for o in out.chunks_mut(dh) {
                        rope.rotate(&mut o[dn..], p, true);
                    }
                });
        });
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
    zeroed(parts, groups * t_out * ro)
        .par_chunks_mut(t_out * ro)
        .zip(group_inputs.par_chunks(t_out * group_in))
        .enumerate()
        .for_each(|(g, (part, input))| w.wo_a[g].forward(input, part));
    let z = zeroed(z, t_out * groups * ro);
    for (g, part) in parts.chunks(t_out * ro).enumerate() {
        for t in 0..t_out {
            z[t * groups * ro + g * ro..][..ro].copy_from_slice(&part[t * ro..(t + 1) * ro]);
        }
    }
    numerics.linear_into(&w.wo_b, z, y);
    Ok(())
}

/// Where [`indexer_top_k`] writes: `k` slots of `(score, entry)` per query, `len[t]` in use.
struct Selection<'a> {
    slots: &'a mut [(f32, usize)],
    len: &'a mut [usize],
}

/// The indexer's scratch, kept between calls: a tile of decoded keys that a prefill chunk's
/// queries share, and each piece's own top-k before the merge.
#[derive(Debug, Default)]
struct IndexerScratch {
    /// Each query's heads packed as a linear over the keys.
    heads: Vec<PackedWeights>,
    tile: Vec<f32>,
    piece_slots: Vec<(f32, usize)>,
    piece_len: Vec<usize>,
}

/// Each query's top-k compressed entries by indexer score (`Σ_h w_h · ReLU(q_h · K_w)`) among
/// the entries visible to it, scoring keys tile by tile with a running top-k per query;
/// each query's choice ends sorted best first. A tile's entries are split into pieces so that
/// a few queries (a decode step has one) still use every worker; each piece keeps its own
/// top-k, merged into the query's afterwards (the ranking is a total order, so the merge
/// keeps exactly what one pass would).
fn indexer_top_k(
    keys: Option<&PagedEntries>,
    (indexer_q, indexer_w): (&[f32], &[f32]),
    (q0, m): (usize, usize),
    dims: AttentionDims,
    selection: Selection,
    scratch: &mut IndexerScratch,
) -> Result<(), StoreError> {
    let _range = profile::range(c"indexer");
    let (hi, di, k) = (dims.indexer_heads, dims.indexer_dim, dims.indexer_topk);
    let t_len = indexer_w.len() / hi;
    let visible = |t: usize| (q0 + t + 1) / m;
    let Some(keys) = keys else {
        return Ok(());
    };
    let total = visible(t_len - 1);
    if scratch.heads.len() < t_len {
        scratch.heads.resize_with(t_len, PackedWeights::default);
    }
    for (heads, q) in scratch.heads.iter_mut().zip(indexer_q.chunks(hi * di)) {
        heads.repack_f32(q, hi, di);
    }
    let heads = &scratch.heads[..t_len];
    // Several queries share one decoded tile of keys. A lone query (decode) has each piece
    // decode its own keys instead, which then stay in its worker's cache for the product.
    let shared_tile = t_len > 1;
    // Every value of the tile's used part is decoded before it is read, so it only grows.
    let tile_len = if shared_tile {
        INDEX_TILE.min(total.max(1)) * di
    } else {
        0
    };
    if scratch.tile.len() < tile_len {
        scratch.tile.resize(tile_len, 0.0);
    }
    let tile = &mut scratch.tile[..tile_len];
    for start in (0..total).step_by(INDEX_TILE) {
        let end = (start + INDEX_TILE).min(total);
        if shared_tile {
            // Keys are decoded in parallel pieces too.
            tile[..(end - start) * di]
                .par_chunks_mut(INDEX_MIN_PIECE * di)
                .enumerate()
                .try_for_each(|(c, keys_out)| {
                    let first = start + c * INDEX_MIN_PIECE;
                    keys.read_range(first..first + keys_out.len() / di, keys_out)
                })?;
        }
        let tile = &tile[..];
        let pieces = (INDEX_TASKS_PER_WORKER * rayon::current_num_threads())
            .div_ceil(t_len)
            .min((end - start).div_ceil(INDEX_MIN_PIECE))
            .max(1);
        let piece = (end - start).div_ceil(pieces);
        let piece_slots = zeroed(&mut scratch.piece_slots, t_len * pieces * k);
        let piece_len = zeroed(&mut scratch.piece_len, t_len * pieces);
        piece_slots
            .par_chunks_mut(k)
            .zip(piece_len.par_iter_mut())
            .enumerate()
            .try_for_each(|(i, (slots, len))| -> Result<(), StoreError> {
                let (t, p) = (i / pieces, i % pieces);
                let first = start + p * piece;
                let last = (first + piece).min(end).min(visible(t));
                if first >= last {
                    return Ok(());
                }
                // The query's heads as a linear over the piece's keys: one product gives
                // every head's dot with every key.
                let heads = heads[t].linear();
                let weights = &indexer_w[t * hi..][..hi];
                let mut select = |piece_keys: &[f32]| {
                    with_buffer(&HEAD_DOTS, |dots| {
                        heads.forward(piece_keys, zeroed(dots, (last - first) * hi));
                        with_buffer(&CANDIDATES, |candidates| {
                            candidates.clear();
                            candidates.extend((first..last).zip(dots.chunks(hi)).map(|(e, d)| {
                                let score: f32 =
                                    d.iter().zip(weights).map(|(v, w)| w * v.max(0.0)).sum();
                                (score, e)
                            }));
                            keep_into(candidates, slots, len);
                        });
                    })
                };
                if shared_tile {
                    select(&tile[(first - start) * di..(last - start) * di]);
                    return Ok(());
                }
                with_buffer(&PIECE_KEYS, |own| {
                    // Decoded in full before it is read, so it only grows.
                    let n = (last - first) * di;
                    if own.len() < n {
                        own.resize(n, 0.0);
                    }
                    keys.read_range(first..last, &mut own[..n])?;
                    select(&own[..n]);
                    Ok(())
                })
            })?;
        let (piece_slots, piece_len) = (&*piece_slots, &*piece_len);
        selection
            .slots
            .par_chunks_mut(k)
            .zip(selection.len.par_iter_mut())
            .enumerate()
            .for_each(|(t, (slots, len))| {
                with_buffer(&CANDIDATES, |candidates| {
                    candidates.clear();
                    candidates.extend_from_slice(&slots[..*len]);
                    let lens = &piece_len[t * pieces..(t + 1) * pieces];
                    for (found, &n) in piece_slots[t * pieces * k..].chunks(k).zip(lens) {
                        candidates.extend_from_slice(&found[..n]);
                    }
                    keep_into(candidates, slots, len);
                });
            });
    }
    for (slots, &len) in selection.slots.chunks_mut(k).zip(selection.len.iter()) {
        slots[..len].sort_unstable_by(|a, b| best_first(*a, *b));
    }
    Ok(())
}

thread_local! {
    /// Each worker's buffers for the head-by-key dots of one indexer piece.
    static HEAD_DOTS: Buffers<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each worker's buffers for the decoded keys of one indexer piece (a lone query's).
    static PIECE_KEYS: Buffers<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each worker's buffers for the `(score, entry)` candidates of one selection.
    static CANDIDATES: Buffers<Vec<(f32, usize)>> = const { RefCell::new(Vec::new()) };
}

/// The best `slots.len()` of `candidates` (which it reorders) into `slots`, `len` of them.
fn keep_into(candidates: &mut [(f32, usize)], slots: &mut [(f32, usize)], len: &mut usize) {
    let n = keep_best(candidates, slots.len());
    slots[..n].copy_from_slice(&candidates[..n]);
    *len = n;
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

#[cfg(test)]
mod tests {
    use super::*;
    use dsv4_cache::{BlockPool, EntryCodec, PagedEntries};
    use dsv4_kernels::cache_codec::IndexerFormat;
    use dsv4_kernels::ops::top_k;

    /// The indexer's choice, with one query's entries split into pieces over the workers and
    /// with several queries, equals the top-k of every visible entry's score computed directly.
    #[test]
    fn split_indexer_keeps_the_top_k_of_every_visible_entry() {
        let (hi, di, k, m) = (6, 16, 24, 4);
        let dims = AttentionDims {
            heads: 1,
            head_dim: 1,
            rope_dim: 0,
            groups: 1,
            group_rank: 1,
            window: 1,
            indexer_heads: hi,
            indexer_dim: di,
            indexer_topk: k,
            eps: 1e-6,
        };
        let value = |i: usize| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * 0.5;
        let entries = 1100;
        let mut keys = PagedEntries::new(EntryCodec::Index(IndexerFormat::F32), di, 64);
        let mut pool = BlockPool::unbounded();
        for e in 0..entries {
            let key: Vec<f32> = (0..di).map(|j| value(e * di + j)).collect();
            keys.push(&key, &mut pool).expect("room");
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        for t_len in [1, 2, 5] {
            // Queries at the last positions that see every entry, or nearly.
            let q0 = entries * m - t_len;
            let indexer_q: Vec<f32> = (0..t_len * hi * di).map(|i| value(i + 17)).collect();
            let indexer_w: Vec<f32> = (0..t_len * hi).map(|i| value(i + 5) + 0.6).collect();
            let mut slots = vec![(0.0, 0); t_len * k];
            let mut len = vec![0; t_len];
            let mut scratch = IndexerScratch::default();
            pool.install(|| {
                let selection = Selection {
                    slots: &mut slots,
                    len: &mut len,
                };
                indexer_top_k(
                    Some(&keys),
                    (&indexer_q, &indexer_w),
                    (q0, m),
                    dims,
                    selection,
                    &mut scratch,
                )
            })
            .expect("indexer");
            for t in 0..t_len {
                let visible = (q0 + t + 1) / m;
                let scores: Vec<f32> = (0..visible)
                    .map(|e| {
                        let key: Vec<f32> = (0..di).map(|j| value(e * di + j)).collect();
                        (0..hi)
                            .map(|h| {
                                let q = &indexer_q[(t * hi + h) * di..][..di];
                                let dot: f32 = q.iter().zip(&key).map(|(a, b)| a * b).sum();
                                indexer_w[t * hi + h] * dot.max(0.0)
                            })
                            .sum()
                    })
                    .collect();
                let got: Vec<usize> = slots[t * k..t * k + len[t]].iter().map(|s| s.1).collect();
                assert_eq!(got, top_k(&scores, k), "{t_len} queries, query {t}");
            }
        }
    }
}
