//! The Lightning Indexer's selection (docs/model.md §4.6): each CSA query's top-k compressed
//! entries by `Σ_h w_h · ReLU(q_h · K)` over the indexer keys visible to it, scored tile by tile
//! with a running top-k per query, so memory stays bounded by a tile, not chunk × entries.

use std::cell::RefCell;

use crate::cache_store::{StoreError, StreamPages};
use rayon::prelude::*;

use crate::ops::{best_first, keep_best};
use crate::panel::PackedWeights;
use crate::scratch::{with_buffer, zeroed, Buffers};

/// Indexer keys scored per tile: the indexer never holds more than this many decoded keys, and
/// each query keeps only a running top-k, so prefill memory does not grow with chunk × entries.
const INDEX_TILE: usize = 4096;

/// Indexer tasks per worker a tile is split into at least (when it has the entries).
const INDEX_TASKS_PER_WORKER: usize = 4;

/// Fewest entries one indexer task scores.
const INDEX_MIN_PIECE: usize = 64;

/// The indexer's shape.
#[derive(Debug, Clone, Copy)]
pub struct IndexerShape {
    /// Indexer heads Hi.
    pub heads: usize,
    /// Indexer head width Di.
    pub dim: usize,
    /// Entries each query selects at most, k.
    pub topk: usize,
}

/// Where [`indexer_topk`] writes: `k` slots of `(score, entry)` per query, `len[t]` in use.
pub struct Selection<'a> {
    /// `k` slots per query.
    pub slots: &'a mut [(f32, usize)],
    /// Slots in use per query.
    pub len: &'a mut [usize],
}

/// The indexer's scratch, kept between calls: a tile of decoded keys that a prefill chunk's
/// queries share, and each piece's own top-k before the merge.
#[derive(Debug, Default)]
pub struct IndexerScratch {
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
///
/// The queries `indexer_q` (`T × Hi × Di`) and their head weights `indexer_w` (`T × Hi`) are
/// those of consecutive positions from `q0`; a query at `p` sees the `⌊(p + 1)/m⌋` keys closed
/// by then.
pub fn indexer_topk(
    keys: &StreamPages,
    (indexer_q, indexer_w): (&[f32], &[f32]),
    (q0, m): (usize, usize),
    shape: IndexerShape,
    selection: Selection,
    scratch: &mut IndexerScratch,
) -> Result<(), StoreError> {
    let (hi, di, k) = (shape.heads, shape.dim, shape.topk);
    let t_len = indexer_w.len() / hi.max(1);
    if t_len == 0 || m == 0 {
        return Ok(());
    }
    let visible = |t: usize| (q0 + t + 1) / m;
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
        let pieces = (INDEX_TASKS_PER_WORKER * crate::threads::workers())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_codec::IndexerFormat;
    use crate::cache_store::{EntryCodec, StreamPages};
    use crate::ops::top_k;
    use dsv4_cache::BlockPool;

    /// The indexer's choice, with one query's entries split into pieces over the workers and
    /// with several queries, equals the top-k of every visible entry's score computed directly.
    #[test]
    fn split_indexer_keeps_the_top_k_of_every_visible_entry() {
        let (hi, di, k, m) = (6, 16, 24, 4);
        let shape = IndexerShape {
            heads: hi,
            dim: di,
            topk: k,
        };
        let value = |i: usize| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * 0.5;
        let entries = 1100;
        let mut keys = StreamPages::new(EntryCodec::Index(IndexerFormat::F32), di, 64);
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
                indexer_topk(
                    &keys,
                    (&indexer_q, &indexer_w),
                    (q0, m),
                    shape,
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
