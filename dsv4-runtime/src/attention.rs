//! The attention sublayer (spec §4.3–4.6) for a chunk of consecutive tokens: low-rank queries
//! with a per-head norm, one shared K=V head, a sliding window plus compressed entries (all of
//! them in HCA layers, the Lightning Indexer's top-k in CSA layers), per-head sinks, the inverse
//! rotation of the output and the grouped output projection.

use dsv4_kernels::ops::{rms_norm, top_k, RopeFrequencies};
use rayon::prelude::*;

use crate::numerics::Numerics;
use crate::state::LayerState;
use crate::weights::{AttentionWeights, CompressorWeights};

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

/// Runs attention for `h` (`T × D`, already normed) at positions `p0..p0+T`; returns `T × D`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    w: &AttentionWeights,
    ratio: Option<usize>,
    h: &[f32],
    p0: usize,
    state: &mut LayerState,
    rope: &RopeFrequencies,
    dims: AttentionDims,
    numerics: Numerics,
) -> Vec<f32> {
    let d = w.wq_a.inp;
    let t_len = h.len() / d;
    let (heads, dh, dr) = (dims.heads, dims.head_dim, dims.rope_dim);
    let dn = dh - dr;

    // Query path: q_lat = q_norm(wq_a h); q = wq_b q_lat, per-head unweighted RMSNorm, RoPE.
    let mut q_lat = numerics.linear(&w.wq_a, h);
    q_lat
        .chunks_mut(w.q_norm.len())
        .for_each(|r| rms_norm(r, Some(&w.q_norm), dims.eps));
    let mut q = numerics.linear(&w.wq_b, &q_lat);
    for (t, row) in q.chunks_mut(heads * dh).enumerate() {
        for head in row.chunks_mut(dh) {
            rms_norm(head, None, dims.eps);
            rope.rotate(&mut head[dn..], p0 + t, false);
        }
    }

    // Window key: kv_norm(wkv h) with RoPE; values are the keys.
    let mut kv = numerics.linear(&w.wkv, h);
    for (t, row) in kv.chunks_mut(dh).enumerate() {
        rms_norm(row, Some(&w.kv_norm), dims.eps);
        rope.rotate(&mut row[dn..], p0 + t, false);
        numerics.kv_entry(row, dn);
    }

    // Compressors run before attention so an entry closed by a token is visible to it.
    let mut index_q = Vec::new();
    let mut index_w = Vec::new();
    if let (Some(m), Some(ix)) = (ratio, &w.indexer) {
        if let Some(tail) = state.index_compressor.as_mut() {
            let keys = compress(&ix.compressor, tail, h, p0, m, rope, dr, dims.eps, |k, _| {
                numerics.index_vector(k)
            });
            state.index_keys.extend(keys);
        }
        let (hi, di) = (dims.index_heads, dims.index_dim);
        index_q = numerics.linear(&ix.wq_b, &q_lat);
        for (t, row) in index_q.chunks_mut(hi * di).enumerate() {
            for head in row.chunks_mut(di) {
                rope.rotate(&mut head[di - dr..], p0 + t, false);
                numerics.index_vector(head);
            }
        }
        index_w = ix.weights_proj.forward_vec(h);
        let scale = 1.0 / ((di as f32).sqrt() * (hi as f32).sqrt());
        index_w.iter_mut().for_each(|v| *v *= scale);
    }
    if let (Some(m), Some(cw)) = (ratio, &w.compressor) {
        if let Some(tail) = state.compressor.as_mut() {
            let entries = compress(cw, tail, h, p0, m, rope, dr, dims.eps, |e, dn| {
                numerics.kv_entry(e, dn)
            });
            state.entries.extend(entries);
        }
    }

    // Keys of the window: earlier chunks' from the ring, this chunk's from `kv`.
    let key_at = |pos: usize| -> &[f32] {
        if pos >= p0 {
            &kv[(pos - p0) * dh..(pos - p0 + 1) * dh]
        } else {
            state.window_key(pos)
        }
    };
    let scale = 1.0 / (dh as f32).sqrt();
    let state_ref = &*state;
    let outputs: Vec<Vec<f32>> = (0..t_len)
        .into_par_iter()
        .map(|t| {
            let p = p0 + t;
            let first = (p + 1).saturating_sub(dims.window);
            let mut keys: Vec<&[f32]> = (first..=p).map(key_at).collect();
            if let Some(m) = ratio {
                let visible = (p + 1) / m;
                let chosen: Vec<usize> = if w.indexer.is_some() {
                    let q = &index_q[t * dims.index_heads * dims.index_dim..][..dims.index_heads * dims.index_dim];
                    let weights = &index_w[t * dims.index_heads..][..dims.index_heads];
                    let scores: Vec<f32> = (0..visible)
                        .map(|e| {
                            let key = &state_ref.index_keys[e * dims.index_dim..][..dims.index_dim];
                            q.chunks(dims.index_dim)
                                .zip(weights)
                                .map(|(qh, wh)| wh * dot(qh, key).max(0.0))
                                .sum()
                        })
                        .collect();
                    top_k(&scores, dims.index_topk)
                } else {
                    (0..visible).collect()
                };
                keys.extend(chosen.iter().map(|&e| &state_ref.entries[e * dh..(e + 1) * dh]));
            }
            let mut out = vec![0.0f32; heads * dh];
            let mut scores = vec![0.0f32; keys.len()];
            for (head, o) in out.chunks_mut(dh).enumerate() {
                let qh = &q[(t * heads + head) * dh..][..dh];
                for (s, k) in scores.iter_mut().zip(&keys) {
                    *s = dot(qh, k) * scale;
                }
                let sink = w.sink[head];
                let max = scores.iter().copied().fold(sink, f32::max);
                let mut denominator = (sink - max).exp();
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    denominator += *s;
                }
                for (s, k) in scores.iter().zip(&keys) {
                    o.iter_mut().zip(*k).for_each(|(o, v)| *o += s * v);
                }
                o.iter_mut().for_each(|v| *v /= denominator);
                rope.rotate(&mut o[dn..], p, true);
            }
            out
        })
        .collect();

    for (t, row) in kv.chunks(dh).enumerate() {
        state.write_window(p0 + t, row);
    }

    // Grouped output projection: group g's heads through rows g·Ro..(g+1)·Ro of wo_a.
    let group_in = heads * dh / dims.groups;
    let ro = dims.group_rank;
    let mut z = vec![0.0f32; t_len * dims.groups * ro];
    let mut part = vec![0.0f32; t_len * ro];
    for g in 0..dims.groups {
        let input: Vec<f32> = outputs
            .iter()
            .flat_map(|o| o[g * group_in..(g + 1) * group_in].iter().copied())
            .collect();
        w.wo_a.forward_rows(g * ro..(g + 1) * ro, &input, &mut part);
        for t in 0..t_len {
            z[t * dims.groups * ro + g * ro..][..ro].copy_from_slice(&part[t * ro..(t + 1) * ro]);
        }
    }
    numerics.linear(&w.wo_b, &z)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Feeds a chunk to a compressor; returns the vectors of the entries it closes (normed, RoPE at
/// `m·w` on the trailing `dr` dims, then `finish`), concatenated.
#[allow(clippy::too_many_arguments)]
fn compress(
    w: &CompressorWeights,
    tail: &mut crate::compressor::CompressorState,
    h: &[f32],
    p0: usize,
    m: usize,
    rope: &RopeFrequencies,
    dr: usize,
    eps: f32,
    finish: impl Fn(&mut [f32], usize),
) -> Vec<f32> {
    let a = w.wkv.forward_vec(h);
    let g = w.wgate.forward_vec(h);
    let cw = w.wkv.out;
    let mut out = Vec::new();
    for (t, (a, g)) in a.chunks(cw).zip(g.chunks(cw)).enumerate() {
        if let Some(mut e) = tail.push(p0 + t, a, g, w, eps) {
            let width = e.vector.len();
            rope.rotate(&mut e.vector[width - dr..], m * e.index, false);
            finish(&mut e.vector, width - dr);
            out.extend(e.vector);
        }
    }
    out
}
