//! Launchers of `csrc/indexer.cu`: the Lightning Indexer's selection (docs/model.md §4.6), the
//! twin of [`crate::indexer::indexer_topk`].
//!
//! Layouts, for a chunk of `T` queries and top-k `k`:
//! - in: the queries `q` (`T × Hi × Di` f32) and head weights `w` (`T × Hi` f32) as the twin
//!   takes them (the `1/(√Di·√Hi)` scaling already applied), and the indexer keys as a paged
//!   stream of `csrc/cache.cuh` ([`DeviceKeys`]: a table of u64 page addresses, entry `i` in page
//!   `i / per_page` at slot `i % per_page`, each in `cache_codec::IndexerFormat`'s bytes);
//! - out ([`Choice`]): `indices` `T × k` u32, query `t`'s chosen entries best first at
//!   `indices[t·k ..]`; `scores` `T × k` f32, their scores alongside; `lens` `T` u32, the slots in
//!   use (`min(k, visible)`). Slots from `lens[t]` on hold `u32::MAX` and −inf. The sparse
//!   attention reads `indices` and `lens` in exactly this layout.
//!
//! The op is one launch of `indexer_topk` (grid `T`), or, with a [`Split`] of `S > 1`, one launch
//! of `indexer_topk` over `T × S` blocks (each scoring `1/S` of a query's keys) into a scratch of
//! [`split_scratch_bytes`] followed by one of `indexer_topk_merge` (grid `T`). Both give the
//! same bits: the ranking is a total order and every entry's score is computed the same way
//! whatever block holds it. Decode (`T = 1`) wants a split to spread a long context over the
//! GPU ([`suggested_splits`]); a prefill chunk has blocks enough with none.

use super::twins::{Check, Rng};
use super::{dim, DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::cache_codec::IndexerFormat;
use crate::cache_store::{EntryCodec, StreamPages};
use crate::indexer::{IndexerScratch, IndexerShape, Selection};

/// Threads per block of both kernels (`DSV4_INDEX_THREADS`).
const THREADS: u32 = 256;
/// Keys per tile of `indexer_topk` (`DSV4_INDEX_TILE`).
const TILE: usize = 64;
/// Head groups of `indexer_topk` (`DSV4_INDEX_GROUPS`).
const GROUPS: usize = THREADS as usize / 32;
/// The most dynamic shared memory a launch asks for: an A100's opt-in limit (sm_90 allows more).
const MAX_SHARED: usize = 163 * 1024;
/// Largest top-k the kernels take (its candidate buffer then fills 96 KiB).
pub const MAX_TOPK: usize = 4096;

/// A paged stream of indexer keys on the device (`csrc/cache.cuh`).
#[derive(Debug, Clone, Copy)]
pub struct DeviceKeys {
    /// The table of page addresses, one u64 per page.
    pub pages: DevicePtr,
    /// Keys per page.
    pub per_page: usize,
    /// How each key is stored.
    pub format: IndexerFormat,
    /// Keys stored; no query reads past them.
    pub len: usize,
}

/// A chunk of CSA queries at consecutive positions.
#[derive(Debug, Clone, Copy)]
pub struct Queries {
    /// `tokens × Hi × Di` f32.
    pub q: DevicePtr,
    /// `tokens × Hi` f32 head weights.
    pub w: DevicePtr,
    /// Queries T.
    pub tokens: usize,
    /// Position of the first query; query `t` sees the first `⌊(q0 + t + 1)/ratio⌋` keys.
    pub q0: usize,
    /// The layer's compress ratio m.
    pub ratio: usize,
}

/// Where a selection goes: `rows × k` u32 indices, `rows × k` f32 scores, `rows` u32 lengths.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// Entry indices, best first.
    pub indices: DevicePtr,
    /// Their scores.
    pub scores: DevicePtr,
    /// Slots in use per row.
    pub lens: DevicePtr,
}

/// Each query's keys split over `splits` blocks, their choices held in `scratch`
/// ([`split_scratch_bytes`] bytes) until `indexer_topk_merge` combines them.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    /// Blocks per query (1 is no split; at most 65535).
    pub splits: usize,
    /// The blocks' choices.
    pub scratch: DevicePtr,
}

/// Bytes of the scratch of a [`Split`]: `T·S` rows of `k` u32 indices, then of `k` f32 scores,
/// then `T·S` u32 lengths.
pub fn split_scratch_bytes(tokens: usize, k: usize, splits: usize) -> usize {
    tokens * splits * (8 * k + 4)
}

/// A split for a decode-sized chunk: enough blocks to cover about `blocks` (the device's SMs
/// times a few), each with at least 1024 keys, none for a chunk that has the blocks already.
pub fn suggested_splits(tokens: usize, visible: usize, blocks: usize) -> usize {
    if tokens == 0 || tokens >= blocks {
        return 1;
    }
    (blocks / tokens)
        .min(visible.div_ceil(1024))
        .clamp(1, 65535)
}

/// `dsv4_index_capacity` of `csrc/indexer.cu`: candidate slots of a top-k of `k`.
fn capacity(k: usize) -> usize {
    (k + k.max(THREADS as usize)).next_power_of_two()
}

/// Shared bytes of the running top-k: the threshold, the candidates' ranks and scores, and
/// two halves of per-warp counts.
fn topk_shared_bytes(k: usize) -> usize {
    8 + 12 * capacity(k) + 64 * 4
}

/// Dynamic shared memory of `indexer_topk`: the top-k, the query's heads and weights, a tile
/// of decoded keys at an odd row stride, and the head groups' partial scores.
pub fn indexer_shared_bytes(shape: IndexerShape) -> usize {
    let (hi, di) = (shape.heads, shape.dim);
    topk_shared_bytes(shape.topk) + 4 * (hi * di + hi + TILE * (di + 1) + GROUPS * TILE)
}

fn launch_error(kernel: &str, message: String) -> DeviceError {
    DeviceError::Launch {
        kernel: kernel.to_string(),
        message,
    }
}

/// Each query's top-k entries by `Σ_h w_h · ReLU(q_h · K)` among the keys visible to it, best
/// first (larger score, NaN below everything, ties to the lower entry): the twin of
/// [`crate::indexer::indexer_topk`], writing `T` rows of [`Choice`]. One launch, or two with a
/// [`Split`] of more than one block per query.
pub fn indexer_topk(
    gpu: &Gpu,
    keys: &DeviceKeys,
    queries: &Queries,
    shape: IndexerShape,
    out: &Choice,
    split: Option<Split>,
) -> Result<(), DeviceError> {
    const KERNEL: &str = "indexer_topk";
    let (hi, di, k) = (shape.heads, shape.dim, shape.topk);
    let t_len = queries.tokens;
    if t_len == 0 {
        return Ok(());
    }
    if queries.ratio == 0 || hi == 0 || di == 0 || k == 0 || k > MAX_TOPK || keys.per_page == 0 {
        return Err(launch_error(
            KERNEL,
            format!(
                "shape Hi {hi}, Di {di}, k {k} (1 to {MAX_TOPK}), ratio {}, {} keys per page",
                queries.ratio, keys.per_page
            ),
        ));
    }
    let visible = (queries.q0 + t_len) / queries.ratio;
    if visible > keys.len || keys.len >= u32::MAX as usize {
        return Err(launch_error(
            KERNEL,
            format!(
                "the last query sees {visible} keys but {} are stored",
                keys.len
            ),
        ));
    }
    let shared = indexer_shared_bytes(shape);
    if shared > MAX_SHARED {
        return Err(launch_error(
            KERNEL,
            format!("Hi {hi} × Di {di} with k {k} needs {shared} bytes of shared memory"),
        ));
    }
    let splits = split.map_or(1, |s| s.splits);
    if splits == 0 || splits > 65535 {
        return Err(launch_error(
            KERNEL,
            format!("{splits} splits (1 to 65535)"),
        ));
    }
    let rows = t_len * splits;
    // One split writes the final rows; several write the scratch's, merged below.
    let target = match split {
        Some(s) if s.splits > 1 => Choice {
            indices: s.scratch,
            scores: DevicePtr(s.scratch.0 + (4 * rows * k) as u64),
            lens: DevicePtr(s.scratch.0 + (8 * rows * k) as u64),
        },
        _ => *out,
    };
    let config = LaunchConfig {
        grid: [dim(t_len)?, dim(splits)?, 1],
        block: [THREADS, 1, 1],
        shared_bytes: dim(shared)?,
    };
    // SAFETY: the kernel reads `T × Hi × Di` values at `q`, `T × Hi` at `w`, and at most
    // `keys.len` keys of the stream (checked above to hold every visible one); it writes `rows`
    // rows of `k` slots and `rows` lengths at `target`, which the caller's buffers (or the
    // scratch of `split_scratch_bytes`) hold.
    unsafe {
        gpu.launch(
            KERNEL,
            config,
            &[
                &keys.pages,
                &dim(keys.per_page)?,
                &(super::cache::IndexerFormat::from(keys.format) as u32),
                &dim(keys.len)?,
                &queries.q,
                &queries.w,
                &dim(queries.q0)?,
                &dim(queries.ratio)?,
                &dim(hi)?,
                &dim(di)?,
                &dim(k)?,
                &target.indices,
                &target.scores,
                &target.lens,
            ],
        )?;
    }
    if splits > 1 {
        indexer_topk_merge(gpu, &target, splits, t_len, k, out)?;
    }
    Ok(())
}

/// The best `k` of each query's `splits` rows of `parts` (rows `t·splits + s`, each sorted best
/// first) into row `t` of `out`, for `tokens` queries: the second launch of a split
/// [`indexer_topk`].
pub fn indexer_topk_merge(
    gpu: &Gpu,
    parts: &Choice,
    splits: usize,
    tokens: usize,
    k: usize,
    out: &Choice,
) -> Result<(), DeviceError> {
    const KERNEL: &str = "indexer_topk_merge";
    if tokens == 0 {
        return Ok(());
    }
    if k == 0 || k > MAX_TOPK || splits == 0 {
        return Err(launch_error(
            KERNEL,
            format!("k {k} (1 to {MAX_TOPK}), {splits} splits"),
        ));
    }
    let config = LaunchConfig {
        grid: [dim(tokens)?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: dim(topk_shared_bytes(k))?,
    };
    // SAFETY: the kernel reads `tokens × splits` rows of `k` slots and lengths at `parts` and
    // writes `tokens` rows and lengths at `out`, which the caller's buffers hold.
    unsafe {
        gpu.launch(
            KERNEL,
            config,
            &[
                &parts.indices,
                &parts.scores,
                &parts.lens,
                &dim(splits)?,
                &dim(k)?,
                &out.indices,
                &out.scores,
                &out.lens,
            ],
        )
    }
}

/// A stream of keys both as the CPU holds it and as the device does (the same encoded bytes).
struct TwinKeys {
    cpu: StreamPages,
    _pages: Vec<DeviceBuffer>,
    _table: DeviceBuffer,
    device: DeviceKeys,
}

impl TwinKeys {
    fn new(
        gpu: &Gpu,
        format: IndexerFormat,
        width: usize,
        per_page: usize,
        keys: &[f32],
    ) -> Result<Self, DeviceError> {
        let codec_error =
            |e: &dyn std::fmt::Display| DeviceError::Driver(format!("twin keys: {e}"));
        let mut cpu = StreamPages::new(EntryCodec::Index(format), width, per_page);
        let mut pool = dsv4_cache::BlockPool::unbounded();
        let key_bytes = format.key_bytes(width);
        let mut pages = Vec::new();
        for page_keys in keys.chunks(per_page * width) {
            let mut bytes = vec![0u8; per_page * key_bytes];
            for (key, out) in page_keys.chunks(width).zip(bytes.chunks_mut(key_bytes)) {
                format.encode(key, out).map_err(|e| codec_error(&e))?;
                cpu.push(key, &mut pool).map_err(|e| codec_error(&e))?;
            }
            pages.push(gpu.upload(&bytes)?);
        }
        let addresses: Vec<u8> = pages.iter().flat_map(|p| p.ptr().0.to_le_bytes()).collect();
        // A table of at least one slot, so an empty stream still has an address.
        let table = gpu.upload(if addresses.is_empty() {
            &[0u8; 8]
        } else {
            &addresses
        })?;
        let device = DeviceKeys {
            pages: table.ptr(),
            per_page,
            format,
            len: keys.len() / width,
        };
        Ok(Self {
            cpu,
            _pages: pages,
            _table: table,
            device,
        })
    }
}

/// What inputs a twin case draws.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Inputs {
    /// Uniform keys and queries, head weights of either sign.
    Random,
    /// Keys drawn from five patterns (exact duplicates, so scores tie exactly) of small
    /// integers, queries of small integers and power-of-two weights (every score exact in f32);
    /// the second and third queries have every dot negative (every score ±0, all tied).
    Ties,
}

/// One twin case.
#[derive(Debug, Clone, Copy)]
struct Case {
    format: IndexerFormat,
    shape: IndexerShape,
    keys: usize,
    per_page: usize,
    tokens: usize,
    q0: usize,
    splits: usize,
    inputs: Inputs,
}

const M: usize = 4;

fn draw(rng: &mut Rng, case: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let IndexerShape { heads, dim, .. } = case.shape;
    match case.inputs {
        Inputs::Random => {
            let keys = rng.values(case.keys * dim, 1.0);
            let q = rng.values(case.tokens * heads * dim, 1.0);
            let unit = 1.0 / (heads as f32).sqrt();
            let w = (0..case.tokens * heads)
                .map(|_| (rng.uniform() + 0.5) * unit)
                .collect();
            (keys, q, w)
        }
        Inputs::Ties => {
            let small = |rng: &mut Rng| [-2.0f32, -1.0, 1.0, 2.0][(rng.next_u64() % 4) as usize];
            // Dim 0 of every pattern positive, so a query of −1 there and 0 elsewhere has every
            // dot negative.
            let patterns: Vec<Vec<f32>> = (0..5)
                .map(|_| {
                    (0..dim)
                        .map(|j| {
                            let v = small(rng);
                            if j == 0 {
                                v.abs()
                            } else {
                                v
                            }
                        })
                        .collect()
                })
                .collect();
            let keys = (0..case.keys)
                .flat_map(|e| patterns[(e * 3 + e / 7) % 5].iter().copied())
                .collect();
            let mut q = Vec::with_capacity(case.tokens * heads * dim);
            let mut w = Vec::with_capacity(case.tokens * heads);
            for t in 0..case.tokens {
                for _ in 0..heads {
                    for j in 0..dim {
                        q.push(match t {
                            0 => small(rng),
                            _ => -f32::from(u8::from(j == 0)),
                        });
                    }
                    let power = [0.125f32, 0.25, 0.5, 1.0][(rng.next_u64() % 4) as usize];
                    w.push(match t {
                        // Every weight negative: every score −0.
                        2 => -power,
                        _ if rng.next_u64().is_multiple_of(3) => -power,
                        _ => power,
                    });
                }
            }
            (keys, q, w)
        }
    }
}

/// A query's score of entry `e` in f64, from the CPU's decoded key: the reference a swap of two
/// near-tied entries is judged by.
fn reference_score(keys: &StreamPages, q: &[f32], w: &[f32], di: usize, e: usize) -> f64 {
    let mut key = vec![0.0f32; di];
    if keys.read(e, &mut key).is_err() {
        return f64::NAN;
    }
    q.chunks(di)
        .zip(w)
        .map(|(qh, &wh)| {
            let dot: f64 = qh
                .iter()
                .zip(&key)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            wh as f64 * dot.max(0.0)
        })
        .sum()
}

/// [`indexer_topk`] (with its merge when split) against its twin: all four key formats at
/// V4-Flash's Hi = 64, Di = 128, k = 512 with fewer keys than k, many more (3000), a prefill
/// chunk whose later queries see more keys and exact ties; and odd shapes.
///
/// Tolerances: scores 1e-5 (relative above 1): the dots sum in another order than the CPU's
/// packed product, f32 rounding ~ √Di · 2^-24 on scores of a few units. Indices 0: every slot
/// equal, except that on random inputs two entries may trade places when their f64 reference
/// scores differ by at most 1e-5 relative (a legitimate flip of a near tie); the index error
/// counts every other difference (lengths, slots, duplicates, entries not visible). The tie
/// cases have exact scores, so no swap is allowed there. Split cases also run unsplit: the
/// two must agree in every bit (tolerance 0).
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let flash = |topk| IndexerShape {
        heads: 64,
        dim: 128,
        topk,
    };
    let formats = [
        IndexerFormat::F32,
        IndexerFormat::Bf16,
        IndexerFormat::Fp8,
        IndexerFormat::Fp4,
    ];
    let mut cases = Vec::new();
    for (i, &format) in formats.iter().enumerate() {
        let case = |shape, keys, per_page, tokens, q0, splits, inputs| Case {
            format,
            shape,
            keys,
            per_page,
            tokens,
            q0,
            splits,
            inputs,
        };
        // Decode with fewer keys than k; with many more, whole and split over blocks.
        cases.push(case(flash(512), 300, 64, 1, 4 * 300 - 1, 1, Inputs::Random));
        cases.push(case(
            flash(512),
            3000,
            64,
            1,
            4 * 3000 - 1,
            1 + 3 * (i % 2),
            Inputs::Random,
        ));
        // A prefill chunk of 6 whose queries see 697 to 699 of 700 keys.
        cases.push(case(flash(512), 700, 64, 6, 2790, 1, Inputs::Random));
        // Exact ties across the k boundary, and two all-zero queries.
        cases.push(case(
            flash(512),
            1300,
            64,
            3,
            4 * 1300 - 3,
            1 + 2 * (i % 2),
            Inputs::Ties,
        ));
        // Odd shapes: a small top-k split three ways; k = 1 with queries that see nothing; a k
        // above a block's width but not a power of two.
        let odd = IndexerShape {
            heads: 5,
            dim: 40,
            topk: 7,
        };
        cases.push(case(odd, 90, 7, 5, 4 * 60, 3, Inputs::Random));
        let tiny = IndexerShape {
            heads: 3,
            dim: 33,
            topk: 1,
        };
        cases.push(case(tiny, 10, 3, 4, 1, 1, Inputs::Random));
        let wide = IndexerShape {
            heads: 8,
            dim: 64,
            topk: 300,
        };
        cases.push(case(wide, 900, 37, 2, 4 * 800, 2, Inputs::Ties));
    }
    let mut checks = Vec::new();
    for case in &cases {
        checks.extend(run_case(gpu, rng, case)?);
    }
    Ok(checks)
}

/// A selection read back: indices, scores, lengths.
type Selected = (Vec<u32>, Vec<f32>, Vec<u32>);

fn run_case(gpu: &Gpu, rng: &mut Rng, case: &Case) -> Result<Vec<Check>, DeviceError> {
    let IndexerShape {
        heads: hi,
        dim: di,
        topk: k,
    } = case.shape;
    let t_len = case.tokens;
    let (keys, q, w) = draw(rng, case);
    let stream = TwinKeys::new(gpu, case.format, di, case.per_page, &keys)?;
    let device_q = gpu.upload_f32(&q)?;
    let device_w = gpu.upload_f32(&w)?;
    let queries = Queries {
        q: device_q.ptr(),
        w: device_w.ptr(),
        tokens: t_len,
        q0: case.q0,
        ratio: M,
    };
    // The kernel's outputs with `splits` blocks per query: indices, scores, lengths.
    let select = |splits: usize| -> Result<Selected, DeviceError> {
        let indices = gpu.alloc(t_len * k * 4)?;
        let scores = gpu.alloc(t_len * k * 4)?;
        let lens = gpu.alloc(t_len * 4)?;
        let scratch = gpu.alloc(split_scratch_bytes(t_len, k, splits).max(4))?;
        let out = Choice {
            indices: indices.ptr(),
            scores: scores.ptr(),
            lens: lens.ptr(),
        };
        let split = Split {
            splits,
            scratch: scratch.ptr(),
        };
        indexer_topk(gpu, &stream.device, &queries, case.shape, &out, Some(split))?;
        Ok((
            indices.read_u32(t_len * k)?,
            scores.read_f32(t_len * k)?,
            lens.read_u32(t_len)?,
        ))
    };
    let (gpu_indices, gpu_scores, gpu_lens) = select(case.splits)?;
    // A split selection is bit for bit the unsplit one (every slot, the unused included).
    let whole = if case.splits > 1 {
        let bits = |(i, s, l): &Selected| -> Vec<f32> {
            let exact = |v: &u32| *v as f32;
            i.iter()
                .map(exact)
                .chain(s.iter().copied())
                .chain(l.iter().map(exact))
                .collect()
        };
        let split = (gpu_indices.clone(), gpu_scores.clone(), gpu_lens.clone());
        Some((bits(&split), bits(&select(1)?)))
    } else {
        None
    };

    let mut slots = vec![(0.0f32, 0usize); t_len * k];
    let mut len = vec![0usize; t_len];
    crate::indexer::indexer_topk(
        &stream.cpu,
        (&q, &w),
        (case.q0, M),
        case.shape,
        Selection {
            slots: &mut slots,
            len: &mut len,
        },
        &mut IndexerScratch::default(),
    )
    .map_err(|e| DeviceError::Driver(format!("twin: {e}")))?;

    let (mut want, mut got) = (Vec::new(), Vec::new());
    let mut bad = 0usize;
    for t in 0..t_len {
        let visible = (case.q0 + t + 1) / M;
        let n = len[t];
        if gpu_lens[t] as usize != n {
            bad += 1;
            continue;
        }
        let row = &gpu_indices[t * k..t * k + n];
        let mut sorted: Vec<u32> = row.to_vec();
        sorted.sort_unstable();
        bad += sorted.windows(2).filter(|p| p[0] == p[1]).count();
        let (qt, wt) = (&q[t * hi * di..][..hi * di], &w[t * hi..][..hi]);
        for (slot, (&g, &(cpu_score, c))) in row.iter().zip(&slots[t * k..t * k + n]).enumerate() {
            let g = g as usize;
            want.push(cpu_score);
            got.push(gpu_scores[t * k + slot]);
            if g == c {
                continue;
            }
            let near_tie = case.inputs == Inputs::Random && g < visible && {
                let (rg, rc) = (
                    reference_score(&stream.cpu, qt, wt, di, g),
                    reference_score(&stream.cpu, qt, wt, di, c),
                );
                (rg - rc).abs() <= 1e-5 * rc.abs().max(1.0)
            };
            if !near_tie {
                bad += 1;
            }
        }
    }
    let kernel = if case.splits > 1 {
        "indexer_topk_merge"
    } else {
        "indexer_topk"
    };
    let shape = format!(
        "{:?} Hi {hi} Di {di} k {k}, {} keys, T {t_len} from {}{}{}",
        case.format,
        case.keys,
        case.q0,
        if case.splits > 1 {
            format!(", {} splits", case.splits)
        } else {
            String::new()
        },
        if case.inputs == Inputs::Ties {
            ", exact ties"
        } else {
            ""
        },
    );
    let mut checks = vec![
        Check::new(kernel, format!("{shape}: scores"), &got, &want, 1e-5),
        Check::new(
            kernel,
            format!("{shape}: indices"),
            &[bad as f32],
            &[0.0],
            0.0,
        ),
    ];
    if let Some((split, whole)) = whole {
        // Tolerance 0: the same scores and the same total order, however the keys are split.
        checks.push(Check::new(
            kernel,
            format!("{shape}: split = unsplit"),
            &split,
            &whole,
            0.0,
        ));
    }
    Ok(checks)
}
