//! The one tile loop every kernel set runs ([`tile`]), generic over a set's vector type
//! ([`Lanes`]) and a format's decoder for it ([`Decoder`]); each set instantiates it inside a
//! function compiled for its instructions, where everything here inlines.

use std::ops::Range;

use super::{PackedFormat, ScaleType};

/// Most vectors one step of a group decodes into per input (32 rows of 8-lane vectors).
pub(crate) const MAX_VECS: usize = 4;

/// The quiet NaN a UE8M0 scale byte of 0xFF decodes to (as an `i32` for the SIMD set-ups).
pub(crate) const F32_NAN_BITS: i32 = 0x7FC0_0000;

/// A packed linear as the tile loop reads it.
pub(crate) struct Job {
    pub(crate) weights: *const u8,
    pub(crate) scales: *const u8,
    pub(crate) scale_type: Option<ScaleType>,
    pub(crate) inp: usize,
    pub(crate) out: usize,
    pub(crate) rows: usize,
    pub(crate) groups: usize,
    pub(crate) steps: usize,
    /// Inputs per step.
    pub(crate) step: usize,
    pub(crate) step_bytes: usize,
    pub(crate) steps_per_block: usize,
    pub(crate) blocks: usize,
    pub(crate) format: PackedFormat,
}

// SAFETY: the pointers are into a packed linear's bytes, which are only read and outlive the
// product that shares the job between its tasks.
unsafe impl Sync for Job {}

/// `y` (`n × width`) shared by tasks that each write the columns of their own groups.
pub(crate) struct SharedOutput {
    ptr: *mut f32,
    width: usize,
}

// SAFETY: tasks write disjoint column ranges of rows inside the slice the pointer came from,
// which outlives the parallel call.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    pub(crate) fn new(y: &mut [f32], width: usize) -> Self {
        Self {
            ptr: y.as_mut_ptr(),
            width,
        }
    }

    /// Writes `values` at row `t`, columns `first..first + values.len()`.
    ///
    /// SAFETY: the columns lie inside the row and belong to the calling task.
    unsafe fn write(&self, t: usize, first: usize, values: &[f32]) {
        let dst = self.ptr.add(t * self.width + first);
        std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len());
    }
}

/// A kernel set's vector of f32 lanes. Every operation rounds as IEEE does; `fma` once.
pub(crate) trait Lanes: Copy {
    /// Lanes per vector.
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    /// `a · b + c`, rounded once.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// Loads `LANES` values from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// Stores the lanes at `p` (`LANES` values).
    unsafe fn store(self, p: *mut f32);
    /// `LANES` block scales at `p` as multipliers (UE8M0 byte `b` is 2^(b − 127)).
    unsafe fn scales(p: *const u8, kind: ScaleType) -> Self;
}

/// One format's decoding for one kernel set: a step of a group (`STEP` inputs of
/// `VECS · LANES` rows) into vectors, rows in lane order.
pub(crate) trait Decoder {
    type V: Lanes;
    /// Vectors per input of a group.
    const VECS: usize;
    /// Inputs per step.
    const STEP: usize;
    /// Factor on every block sum that undoes the decode's own offset (FP8's 2^8).
    const OFFSET: f32 = 1.0;
    /// `out[j][v]`: input `j` of the step, rows `v·LANES..` of the group (`v < VECS`).
    unsafe fn decode(p: *const u8) -> [[Self::V; MAX_VECS]; 2];
}

/// A group already decoded by `D` into f32, step after step (`STEP · VECS` vectors each): the
/// same values `D` gives, read back with plain loads.
struct Decoded<D>(std::marker::PhantomData<D>);

impl<D: Decoder> Decoder for Decoded<D> {
    type V = D::V;
    const VECS: usize = D::VECS;
    const STEP: usize = D::STEP;
    const OFFSET: f32 = D::OFFSET;

    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[Self::V; MAX_VECS]; 2] {
        let lanes = <D::V as Lanes>::LANES;
        let p = p.cast::<f32>();
        let mut w = [[<D::V as Lanes>::zero(); MAX_VECS]; 2];
        for (j, w) in w.iter_mut().enumerate().take(D::STEP) {
            for (v, w) in w.iter_mut().enumerate().take(D::VECS) {
                *w = <D::V as Lanes>::load(p.add((j * D::VECS + v) * lanes));
            }
        }
        w
    }
}

impl Job {
    /// Floats of scratch a task of a product of `n` rows hands [`run_groups`]: two groups
    /// decoded (used when the rows take more than one tile).
    pub(crate) fn scratch_len(&self, n: usize) -> usize {
        if n > 1 {
            2 * self.steps * self.step * self.rows
        } else {
            0
        }
    }
}

/// Runs groups `range` of `job` against the `n` rows of `x`: one row in tiles of `GEMV` groups
/// (independent sums to cover the latency of the fused multiply-adds), several in tiles of
/// `WIDE` groups (at most 2) and up to `ROWS` rows of `x`. Only speed depends on the tiles: every output's order is
/// the same in all of them.
///
/// SAFETY: as [`tile`], for every group of `range`; `scratch` is this task's alone.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn run_groups<
    D: Decoder,
    const GEMV: usize,
    const ROWS: usize,
    const WIDE: usize,
>(
    job: &Job,
    range: Range<usize>,
    x: &[f32],
    n: usize,
    output: &SharedOutput,
    scratch: &mut [f32],
) {
    if n == 1 {
        let source = Source::packed(job);
        let mut g = range.start;
        while g + GEMV <= range.end {
            tile::<D, GEMV, 1>(job, &source, g, x, 0, output);
            g += GEMV;
        }
        // The rest in tiles of 4, 2 and 1 groups (those smaller than `GEMV`): a tile of one
        // group is a single chain of dependent multiply-adds.
        if GEMV > 4 && range.end - g >= 4 {
            tile::<D, 4, 1>(job, &source, g, x, 0, output);
            g += 4;
        }
        while GEMV > 2 && range.end - g >= 2 {
            tile::<D, 2, 1>(job, &source, g, x, 0, output);
            g += 2;
        }
        if g < range.end {
            tile::<D, 1, 1>(job, &source, g, x, 0, output);
        }
        return;
    }
    // Several tiles of rows: each group is decoded once into `scratch` and every tile reads the
    // decoded values (the same values, so the same sums) instead of decoding again, `WIDE`
    // groups to a tile (more outputs per broadcast input).
    if n <= ROWS || scratch.len() < job.scratch_len(n) {
        for g in range {
            row_tiles::<D, 1, ROWS>(job, &Source::packed(job), g, x, n, output);
        }
        return;
    }
    let lanes = <D::V as Lanes>::LANES;
    let group_floats = job.steps * D::STEP * D::VECS * lanes;
    let mut g = range.start;
    while g < range.end {
        let wide = WIDE.min(range.end - g);
        for p in 0..wide {
            let group = job.weights.add((g + p) * job.steps * job.step_bytes);
            let out = scratch.as_mut_ptr().add(p * group_floats);
            for s in 0..job.steps {
                let w = D::decode(group.add(s * job.step_bytes));
                for j in 0..D::STEP {
                    for v in 0..D::VECS {
                        w[j][v].store(out.add(((s * D::STEP + j) * D::VECS + v) * lanes));
                    }
                }
            }
        }
        let source = Source {
            base: scratch.as_ptr().cast::<u8>(),
            first: g,
            group_bytes: group_floats * 4,
            step_bytes: D::STEP * D::VECS * lanes * 4,
        };
        if wide == WIDE {
            row_tiles::<Decoded<D>, WIDE, ROWS>(job, &source, g, x, n, output);
        } else {
            for p in 0..wide {
                row_tiles::<Decoded<D>, 1, ROWS>(job, &source, g + p, x, n, output);
            }
        }
        g += wide;
    }
}

/// Where a tile reads group `g`'s steps: `base + (g − first) · group_bytes + s · step_bytes`.
struct Source {
    base: *const u8,
    first: usize,
    group_bytes: usize,
    step_bytes: usize,
}

impl Source {
    /// The packed weights themselves.
    fn packed(job: &Job) -> Self {
        Self {
            base: job.weights,
            first: 0,
            group_bytes: job.steps * job.step_bytes,
            step_bytes: job.step_bytes,
        }
    }
}

/// Groups `g..g + P` against the `n` rows of `x`, in tiles of `ROWS` rows, then 8, 4, 2 and 1
/// (those shorter than `ROWS`).
#[inline(always)]
unsafe fn row_tiles<D: Decoder, const P: usize, const ROWS: usize>(
    job: &Job,
    source: &Source,
    g: usize,
    x: &[f32],
    n: usize,
    output: &SharedOutput,
) {
    let mut t = 0;
    while t + ROWS <= n {
        tile::<D, P, ROWS>(job, source, g, x, t, output);
        t += ROWS;
    }
    if ROWS > 8 && n - t >= 8 {
        tile::<D, P, 8>(job, source, g, x, t, output);
        t += 8;
    }
    if ROWS > 4 && n - t >= 4 {
        tile::<D, P, 4>(job, source, g, x, t, output);
        t += 4;
    }
    while ROWS > 2 && n - t >= 2 {
        tile::<D, P, 2>(job, source, g, x, t, output);
        t += 2;
    }
    if t < n {
        tile::<D, P, 1>(job, source, g, x, t, output);
    }
}

/// Groups `g0..g0 + P` of `job` times rows `t0..t0 + M` of `x`: every output's per-block sums
/// and total in registers, each decoded step shared by the `M` rows. (Plain indexed loops
/// throughout: iterators or `array::from_fn` over these arrays kept them in memory.)
///
/// SAFETY: the groups exist, `x` holds rows `t0..t0 + M` of `inp` values, `output` those rows
/// of `out`, and no other task writes these groups' columns.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<D: Decoder, const P: usize, const M: usize>(
    job: &Job,
    source: &Source,
    g0: usize,
    x: &[f32],
    t0: usize,
    output: &SharedOutput,
) {
    let lanes = <D::V as Lanes>::LANES;
    let zero = <D::V as Lanes>::zero();
    let mut weights = [source.base; P];
    for (p, w) in weights.iter_mut().enumerate() {
        *w = source
            .base
            .add((g0 + p - source.first) * source.group_bytes);
    }
    let mut xs = [x.as_ptr(); M];
    for (m, row) in xs.iter_mut().enumerate() {
        *row = x.as_ptr().add((t0 + m) * job.inp);
    }
    let mut total = [[[zero; MAX_VECS]; M]; P];
    // Steps whose every input exists (all but a last odd input of a two-input step).
    let whole = job.inp / D::STEP;
    for b in 0..job.blocks {
        let first = b * job.steps_per_block;
        let end = (first + job.steps_per_block).min(job.steps);
        let mut acc = [[[zero; MAX_VECS]; M]; P];
        for s in first..end.min(whole) {
            step::<D, P, M>(
                &mut acc,
                &weights,
                &xs,
                s * source.step_bytes,
                s * D::STEP,
                D::STEP,
            );
        }
        if end > whole {
            let k = whole * D::STEP;
            step::<D, P, M>(
                &mut acc,
                &weights,
                &xs,
                whole * source.step_bytes,
                k,
                job.inp - k,
            );
        }
        for p in 0..P {
            let mut multipliers = [<D::V as Lanes>::splat(1.0); MAX_VECS];
            if let Some(kind) = job.scale_type {
                let at = ((g0 + p) * job.blocks + b) * job.rows;
                for v in 0..D::VECS {
                    let scales = job.scales.add((at + v * lanes) * kind.size());
                    multipliers[v] = <D::V as Lanes>::scales(scales, kind);
                }
            }
            for m in 0..M {
                for v in 0..D::VECS {
                    let mut sum = acc[p][m][v];
                    if D::OFFSET != 1.0 {
                        // Exact: a power of two on a sum of values decoded times its inverse.
                        sum = <D::V as Lanes>::mul(sum, <D::V as Lanes>::splat(D::OFFSET));
                    }
                    total[p][m][v] = <D::V as Lanes>::fma(sum, multipliers[v], total[p][m][v]);
                }
            }
        }
    }
    let mut values = [0.0f32; MAX_VECS * 16];
    for p in 0..P {
        let first = (g0 + p) * job.rows;
        let count = job.rows.min(job.out - first);
        for m in 0..M {
            for v in 0..D::VECS {
                total[p][m][v].store(values.as_mut_ptr().add(v * lanes));
            }
            output.write(t0 + m, first, &values[..count]);
        }
    }
}

/// One step of [`tile`]: inputs `k..k + inputs` (`inputs <= STEP`), decoded from `offset` in
/// each group, into the accumulators.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn step<D: Decoder, const P: usize, const M: usize>(
    acc: &mut [[[D::V; MAX_VECS]; M]; P],
    weights: &[*const u8; P],
    xs: &[*const f32; M],
    offset: usize,
    k: usize,
    inputs: usize,
) {
    for p in 0..P {
        let w = D::decode(weights[p].add(offset));
        for j in 0..D::STEP {
            if j >= inputs {
                break;
            }
            for m in 0..M {
                let xv = <D::V as Lanes>::splat(*xs[m].add(k + j));
                for v in 0..D::VECS {
                    acc[p][m][v] = <D::V as Lanes>::fma(w[j][v], xv, acc[p][m][v]);
                }
            }
        }
    }
}
