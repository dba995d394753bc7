//! The attention sublayer (spec §4.3–4.6) for a chunk of consecutive tokens: low-rank queries
//! with a per-head norm, one shared K=V head, a sliding window plus compressed entries (all of
//! them in HCA layers, the Lightning Indexer's top-k in CSA layers), per-head sinks, the inverse
//! rotation of the output and the grouped output projection.

use dsv4_cache::{BlockPool, PagedEntries, StoreError};
use dsv4_kernels::attend::attend_shared_kv;
use dsv4_kernels::linear::{dot, LinearView};
use dsv4_kernels::ops::{rms_norm, top_k, RopeFrequencies};
use rayon::prelude::*;

use crate::compressor::CompressorState;
use crate::numerics::Numerics;
use crate::profile;
use crate::state::LayerState;
use crate::weights::{AttentionWeights, CompressorWeights};

/// Indexer keys scored per tile: the indexer never holds more than this many decoded keys, and
/// each query keeps only a running top-k, so prefill memory does not grow with chunk × entries.
const INDEX_TILE: usize = 4096;

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
    pub index_heads: usize,
    /// Indexer width Di.
    pub index_dim: usize,
    /// Entries a CSA query attends.
    pub index_topk: usize,
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

/// Runs attention for `h` (`T × D`, already normed); returns the outputs of tokens
/// `first_output..T`, `(T − first_output) × D`.
pub fn attention(
    w: &AttentionWeights,
    h: &[f32],
    step: AttentionStep,
    dims: AttentionDims,
    numerics: Numerics,
) -> Result<Vec<f32>, StoreError> {
    let AttentionStep {
        ratio,
        p0,
        first_output,
        state,
        pool,
        rope,
    } = step;
    let d = w.wq_a.inp;
    let t_len = h.len() / d;
    // Tokens with an output, from absolute position `q0`.
    let (h_out, q0) = (&h[first_output * d..], p0 + first_output);
    let t_out = t_len - first_output;
    let (heads, dh, dr) = (dims.heads, dims.head_dim, dims.rope_dim);
    let dn = dh - dr;

    // Every product of `h` at once: the query latent, the window key, the compressors'
    // value and gate projections and the indexer's head weights.
    let compressors = [
        w.compressor.as_ref(),
        w.indexer.as_ref().map(|ix| &ix.compressor),
    ];
    let mut products: Vec<(&LinearView, &[f32])> = vec![(&w.wq_a, h_out), (&w.wkv, h)];
    for cw in compressors.iter().flatten() {
        products.extend([(&cw.wkv, h), (&cw.wgate, h)]);
    }
    if let Some(ix) = &w.indexer {
        products.push((&ix.weights_proj, h_out));
    }
    let mut results = numerics.linears(&products).into_iter();
    let mut next = || results.next().unwrap_or_default();
    let (mut q_lat, mut kv) = (next(), next());
    let mut projected = [None, None];
    for (slot, cw) in projected.iter_mut().zip(compressors) {
        if cw.is_some() {
            *slot = Some((next(), next()));
        }
    }
    let [main_projected, index_projected] = projected;
    let mut index_w = next();

    // Query path: q_lat = q_norm(wq_a h); q = wq_b q_lat, per-head unweighted RMSNorm, RoPE;
    // the indexer's queries come from the same latent.
    q_lat
        .chunks_mut(w.q_norm.len())
        .for_each(|r| rms_norm(r, Some(&w.q_norm), dims.eps));
    let mut products: Vec<(&LinearView, &[f32])> = vec![(&w.wq_b, &q_lat)];
    if let Some(ix) = &w.indexer {
        products.push((&ix.wq_b, &q_lat));
    }
    let mut results = numerics.linears(&products).into_iter();
    let mut q = results.next().unwrap_or_default();
    let mut index_q = results.next().unwrap_or_default();
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
    if let (Some(m), Some(ix), Some((a, g))) = (ratio, &w.indexer, &index_projected) {
        if let (Some(tail), Some(keys)) =
            (state.index_compressor.as_mut(), state.index_keys.as_mut())
        {
            let chunk = Chunk {
                p0,
                m,
                rope,
                dr,
                eps: dims.eps,
            };
            compress(&ix.compressor, (a, g), tail, keys, pool, &chunk, |k| {
                numerics.index_vector(k)
            })?;
        }
        let (hi, di) = (dims.index_heads, dims.index_dim);
        for (t, row) in index_q.chunks_mut(hi * di).enumerate() {
            for head in row.chunks_mut(di) {
                rope.rotate(&mut head[di - dr..], q0 + t, false);
                numerics.index_vector(head);
            }
        }
        let scale = 1.0 / ((di as f32).sqrt() * (hi as f32).sqrt());
        index_w.iter_mut().for_each(|v| *v *= scale);
    }
    if let (Some(m), Some(cw), Some((a, g))) = (ratio, &w.compressor, &main_projected) {
        if let (Some(tail), Some(entries)) = (state.compressor.as_mut(), state.entries.as_mut()) {
            let chunk = Chunk {
                p0,
                m,
                rope,
                dr,
                eps: dims.eps,
            };
            compress(cw, (a, g), tail, entries, pool, &chunk, |e| {
                numerics.kv_entry(e, dn)
            })?;
        }
    }

    // The keys each query sees: the window (earlier chunks' from the ring) ...
    let first = p0.saturating_sub(dims.window - 1);
    let mut window = vec![0.0f32; (p0 + t_len - first) * dh];
    for pos in first..p0 {
        state
            .window
            .read(pos, &mut window[(pos - first) * dh..][..dh])?;
    }
    window[(p0 - first) * dh..].copy_from_slice(&kv);
    // ... and the compressed entries: all visible ones (HCA) or the indexer's choice (CSA).
    let p_last = p0 + t_len - 1;
    let (entries, chosen) = match (ratio, &state.entries) {
        (Some(m), Some(stream)) => {
            let visible_max = (p_last + 1) / m;
            if w.indexer.is_some() {
                let keys = state.index_keys.as_ref();
                let chosen = indexer_top_k(keys, &index_q, &index_w, q0, m, dims)?;
                let mut entries = Vec::new();
                let mut ids: Vec<usize> = chosen.iter().flatten().copied().collect();
                ids.sort_unstable();
                ids.dedup();
                let mut row = vec![0.0f32; dh];
                let mut slot = vec![usize::MAX; visible_max];
                for (k, &e) in ids.iter().enumerate() {
                    stream.read(e, &mut row)?;
                    entries.extend_from_slice(&row);
                    slot[e] = k;
                }
                let chosen = chosen
                    .into_iter()
                    .map(|list| list.into_iter().map(|e| slot[e]).collect())
                    .collect();
                (entries, chosen)
            } else {
                let mut entries = vec![0.0f32; visible_max * dh];
                stream.read_range(0..visible_max, &mut entries)?;
                let chosen = (0..t_out)
                    .map(|t| (0..(q0 + t + 1) / m).collect())
                    .collect();
                (entries, chosen)
            }
        }
        _ => (Vec::new(), vec![Vec::new(); t_out]),
    };

    let scale = 1.0 / (dh as f32).sqrt();
    let sparse = profile::range("sparse attention");
    // Tasks of a few heads of one token, so a single decoded token still uses every core.
    let mut outputs = vec![0.0f32; t_out * heads * dh];
    outputs
        .par_chunks_mut(heads * dh)
        .enumerate()
        .for_each(|(t, token_out)| {
            let p = q0 + t;
            let lo = (p + 1).saturating_sub(dims.window).max(first);
            let mut keys: Vec<&[f32]> = (lo..=p)
                .map(|pos| &window[(pos - first) * dh..][..dh])
                .collect();
            keys.extend(
                chosen[t]
                    .iter()
                    .map(|&k: &usize| &entries[k * dh..(k + 1) * dh]),
            );
            token_out
                .par_chunks_mut(HEADS_PER_TASK * dh)
                .enumerate()
                .for_each(|(task, out)| {
                    let first_head = task * HEADS_PER_TASK;
                    let task_heads = out.len() / dh;
                    let mut scores = vec![0.0f32; task_heads * keys.len()];
                    let qt = &q[(t * heads + first_head) * dh..][..task_heads * dh];
                    let sinks = &w.sink[first_head..first_head + task_heads];
                    attend_shared_kv(qt, &keys, sinks, scale, &mut scores, out);
                    for o in out.chunks_mut(dh) {
                        rope.rotate(&mut o[dn..], p, true);
                    }
                });
        });
    drop(sparse);

    for (t, row) in kv.chunks(dh).enumerate() {
        state.window.write(p0 + t, row)?;
    }

    // Grouped output projection: group g's heads through rows g·Ro..(g+1)·Ro of wo_a.
    let group_in = heads * dh / dims.groups;
    let ro = dims.group_rank;
    // The groups run in one parallel region.
    let parts: Vec<Vec<f32>> = (0..dims.groups)
        .into_par_iter()
        .map(|g| {
            let input: Vec<f32> = outputs
                .chunks(heads * dh)
                .flat_map(|o| o[g * group_in..(g + 1) * group_in].iter().copied())
                .collect();
            let mut part = vec![0.0f32; t_out * ro];
            w.wo_a.forward_rows(g * ro..(g + 1) * ro, &input, &mut part);
            part
        })
        .collect();
    let mut z = vec![0.0f32; t_out * dims.groups * ro];
    for (g, part) in parts.iter().enumerate() {
        for t in 0..t_out {
            z[t * dims.groups * ro + g * ro..][..ro].copy_from_slice(&part[t * ro..(t + 1) * ro]);
        }
    }
    Ok(numerics.linear(&w.wo_b, &z))
}

/// Each query's top-k compressed entries by indexer score (`Σ_h w_h · ReLU(q_h · K_w)`) among
/// the entries visible to it, scoring keys tile by tile with a running top-k per query.
fn indexer_top_k(
    keys: Option<&PagedEntries>,
    index_q: &[f32],
    index_w: &[f32],
    p0: usize,
    m: usize,
    dims: AttentionDims,
) -> Result<Vec<Vec<usize>>, StoreError> {
    let _range = profile::range("indexer");
    let (hi, di, k) = (dims.index_heads, dims.index_dim, dims.index_topk);
    let t_len = index_w.len() / hi;
    let visible = |t: usize| (p0 + t + 1) / m;
    let total = visible(t_len - 1);
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::new(); t_len];
    let Some(keys) = keys else {
        return Ok(vec![Vec::new(); t_len]);
    };
    let mut tile = vec![0.0f32; INDEX_TILE.min(total.max(1)) * di];
    for start in (0..total).step_by(INDEX_TILE) {
        let end = (start + INDEX_TILE).min(total);
        keys.read_range(start..end, &mut tile[..(end - start) * di])?;
        best.par_iter_mut().enumerate().for_each(|(t, best)| {
            let end = end.min(visible(t));
            if end <= start {
                return;
            }
            let q = &index_q[t * hi * di..][..hi * di];
            let weights = &index_w[t * hi..][..hi];
            let scores: Vec<f32> = (start..end)
                .map(|e| {
                    let key = &tile[(e - start) * di..][..di];
                    q.chunks(di)
                        .zip(weights)
                        .map(|(qh, wh)| wh * dot(qh, key).max(0.0))
                        .sum()
                })
                .collect();
            // Merge the tile into the running top-k; ties keep the lower entry.
            let mut merged: Vec<(f32, usize)> = std::mem::take(best);
            let picked = top_k(&scores, k);
            merged.extend(picked.into_iter().map(|i| (scores[i], start + i)));
            let order = top_k(&merged.iter().map(|c| c.0).collect::<Vec<_>>(), k);
            let mut kept: Vec<(f32, usize)> = order.into_iter().map(|i| merged[i]).collect();
            kept.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            *best = kept;
        });
    }
    Ok(best
        .into_iter()
        .map(|list| list.into_iter().map(|(_, e)| e).collect())
        .collect())
}

/// A chunk as a compressor sees it.
struct Chunk<'c> {
    p0: usize,
    m: usize,
    rope: &'c RopeFrequencies,
    dr: usize,
    eps: f32,
}

/// Feeds a chunk's value and gate projections (`a`, `g`: `T × c·w`) to a compressor and stores
/// the entries it closes: normed, RoPE at `m·w` on the trailing `dr` dims, then `finish` (the
/// reference's simulation), then encoded into `stream`.
fn compress(
    w: &CompressorWeights,
    (a, g): (&[f32], &[f32]),
    tail: &mut CompressorState,
    stream: &mut PagedEntries,
    pool: &mut BlockPool,
    c: &Chunk,
    finish: impl Fn(&mut [f32]),
) -> Result<(), StoreError> {
    let _range = profile::range("compressor");
    let cw = w.wkv.out;
    for (t, (a, g)) in a.chunks(cw).zip(g.chunks(cw)).enumerate() {
        if let Some(mut e) = tail.push(c.p0 + t, a, g, w, c.eps) {
            let width = e.vector.len();
            c.rope
                .rotate(&mut e.vector[width - c.dr..], c.m * e.index, false);
            finish(&mut e.vector);
            stream.push(&e.vector, pool)?;
        }
    }
    Ok(())
}
