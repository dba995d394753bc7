//! The product of a linear's weight with one or many input rows, over the weight re-laid once
//! (at load) into panels: groups of 16 (or 32) consecutive output rows whose values for one or
//! two consecutive inputs sit side by side, as many bytes as the stored format takes, so one load
//! decodes one vector element per row.
//!
//! Every output is computed in one fixed order, whatever the call: input by input, a fused
//! multiply-add per input into a per-block sum (blocks of 128 inputs; 32 for FP4, its scale
//! group), each block's sum then added into the row's total by one more fused multiply-add with
//! the block's scale (1 for plain floats). Vector lanes are output rows, so a row's order never
//! depends on how many rows or input vectors share the call, where they sit in a tile, or how the
//! work is split over threads: one token decoded alone gets bit for bit what it gets inside a
//! prefill chunk. Every kernel set (portable, AVX2, AVX-512) runs this same order with correctly
//! rounded fused multiply-adds, so they agree with each other bit for bit too.
//!
//! Decoding is exact: E4M3 bytes widen to f32 through FP16 (values times 2^-8, undone in the
//! block sum), E2M1 codes through a table, BF16 and F16 by widening.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;
mod pack;
mod portable;

pub use pack::{pack_all, Pack, PackError, PackJob};

use rayon::prelude::*;

use crate::formats::{FP4_GROUP, FP8_BLOCK};
use crate::scratch::{with_buffer, Buffers};
use crate::simd::KernelSet;
use kernel::{Job, SharedOutput};
use std::cell::RefCell;

thread_local! {
    /// Each worker's scratch for a group decoded once and read by every tile of rows.
    static SCRATCH: Buffers<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Inputs per accumulation block of every format but FP4 (FP8's scale block).
const BLOCK: usize = FP8_BLOCK;

/// Output rows per parallel task of a one-row product (at most).
const ROWS_PER_TASK: usize = 128;

/// Tasks per worker a one-row product is split into at least (when it has the rows).
const TASKS_PER_WORKER: usize = 4;

/// The value format of a packed linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    /// IEEE float32.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE float16.
    F16,
    /// E4M3 with one scale per 128 × 128 block.
    Fp8,
    /// E2M1 with one scale per 32 inputs of a row.
    Fp4,
}

impl PackedFormat {
    /// Stored bytes per value, in halves (FP4 takes one half byte).
    fn half_bytes(self) -> usize {
        match self {
            Self::F32 => 8,
            Self::Bf16 | Self::F16 => 4,
            Self::Fp8 => 2,
            Self::Fp4 => 1,
        }
    }

    /// Inputs per accumulation block.
    fn block(self) -> usize {
        match self {
            Self::Fp4 => FP4_GROUP,
            _ => BLOCK,
        }
    }
}

/// How the block scales of a packed FP8 or FP4 linear are stored: one per row and block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleType {
    /// UE8M0 bytes.
    E8M0,
    /// Little-endian f32.
    F32,
}

impl ScaleType {
    fn size(self) -> usize {
        match self {
            Self::E8M0 => 1,
            Self::F32 => 4,
        }
    }
}

/// How one kernel set lays out a format: rows per group, inputs per step, and which row each
/// slot of a step holds (`None`: slot `q` holds row `q`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) rows: usize,
    pub(crate) step: usize,
    pub(crate) row_at: Option<&'static [u8]>,
}

/// Everything a packed linear's bytes need to be read: its shape, format and the kernel set
/// whose layout they are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedSpec {
    /// Output features.
    pub out: usize,
    /// Input features.
    pub inp: usize,
    /// Value format.
    pub format: PackedFormat,
    /// Block scales (FP8 and FP4).
    pub scales: Option<ScaleType>,
    /// The kernel set the layout is for.
    pub set: KernelSet,
}

impl PackedSpec {
    fn layout(&self) -> Layout {
        self.set.layout(self.format)
    }

    fn groups(&self) -> usize {
        self.out.div_ceil(self.layout().rows)
    }

    fn steps(&self) -> usize {
        self.inp.div_ceil(self.layout().step)
    }

    fn blocks(&self) -> usize {
        self.inp.div_ceil(self.format.block())
    }

    /// Bytes of one step of one group.
    fn step_bytes(&self) -> usize {
        let l = self.layout();
        l.rows * l.step * self.format.half_bytes() / 2
    }

    fn weight_bytes(&self) -> usize {
        self.groups() * self.steps() * self.step_bytes()
    }

    fn scale_bytes(&self) -> usize {
        self.scales.map_or(0, |s| {
            self.groups() * self.blocks() * self.layout().rows * s.size()
        })
    }

    /// Bytes of the packed form: the groups' steps, then their scales.
    pub fn len(&self) -> usize {
        self.weight_bytes() + self.scale_bytes()
    }

    /// Whether the packed form holds no bytes (no rows or no inputs).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A linear in the panel layout, borrowed from where it was packed.
#[derive(Debug, Clone, Copy)]
pub struct PackedLinear<'a> {
    spec: PackedSpec,
    bytes: &'a [u8],
}

/// A packed linear that owns its bytes (tests, and weights made at run time).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    spec: PackedSpec,
    bytes: Vec<u8>,
}

impl Default for PackedWeights {
    fn default() -> Self {
        Self {
            spec: PackedSpec {
                out: 0,
                inp: 0,
                format: PackedFormat::F32,
                scales: None,
                set: KernelSet::current(),
            },
            bytes: Vec::new(),
        }
    }
}

impl PackedWeights {
    /// Packs `values` (`out × inp` f32, zeros where it is shorter) for the kernels this CPU
    /// runs, in place of what this held and in its memory: for weights made at run time (the
    /// indexer's query heads, a linear over the keys).
    pub fn repack_f32(&mut self, values: &[f32], out: usize, inp: usize) -> PackedLinear<'_> {
        self.spec = PackedSpec {
            out,
            inp,
            format: PackedFormat::F32,
            scales: None,
            set: KernelSet::current(),
        };
        let layout = self.spec.layout();
        self.bytes.clear();
        self.bytes.resize(self.spec.len(), 0);
        for (i, slot) in self.bytes.chunks_exact_mut(4).enumerate() {
            // Slot order: group, input, then row within the group.
            let (gk, lane) = (i / layout.rows, i % layout.rows);
            let (g, k) = (gk / inp, gk % inp);
            let r = g * layout.rows + layout.row_at.map_or(lane, |t| usize::from(t[lane]));
            if let Some(v) = values.get(r * inp + k).filter(|_| r < out) {
                slot.copy_from_slice(&v.to_le_bytes());
            }
        }
        self.linear()
    }

    /// The packed linear.
    pub fn linear(&self) -> PackedLinear<'_> {
        PackedLinear {
            spec: self.spec,
            bytes: &self.bytes,
        }
    }
}

impl<'a> PackedLinear<'a> {
    /// A packed linear over `bytes`, which [`LinearView::pack_into`] wrote for `spec`.
    pub fn new(spec: PackedSpec, bytes: &'a [u8]) -> Result<Self, PackError> {
        if bytes.len() != spec.len() {
            return Err(PackError::Packed {
                got: bytes.len(),
                need: spec.len(),
            });
        }
        Ok(Self { spec, bytes })
    }

    /// Its spec.
    pub fn spec(&self) -> &PackedSpec {
        &self.spec
    }

    /// Output features.
    pub fn out(&self) -> usize {
        self.spec.out
    }

    /// Input features.
    pub fn inp(&self) -> usize {
        self.spec.inp
    }

    /// Whether the weight is FP8 or FP4 (the inputs the reference numerics quantize).
    pub fn is_quantized(&self) -> bool {
        self.spec.scales.is_some()
    }

    /// `y[t] = W x[t]` for every row `t` of `x` (`n × inp`), into `y` (`n × out`). Work is
    /// split over groups of output rows; each output is one task's, in the order the module
    /// doc gives, so neither `n` nor the thread count changes a bit of it.
    pub fn forward(&self, x: &[f32], y: &mut [f32]) {
        assert!(
            self.spec.set.is_available(),
            "weights packed for the {} kernels, which this CPU does not run",
            self.spec.set.name()
        );
        let Some((job, n)) = self.prepare(x, y) else {
            return;
        };
        let output = SharedOutput::new(y, self.spec.out);
        let groups = job.groups;
        let rows = job.rows;
        let per_task = if n == 1 {
            // One row: several tasks per worker, short outputs (a few long rows) included.
            let workers = rayon::current_num_threads();
            (ROWS_PER_TASK / rows)
                .min(groups.div_ceil(TASKS_PER_WORKER * workers))
                .max(1)
        } else {
            // Pairs of groups: the widest tile of several rows (AVX-512's) takes two.
            2
        };
        (0..groups.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let first = task * per_task;
                let range = first..(first + per_task).min(groups);
                with_buffer(&SCRATCH, |scratch| {
                    let len = job.scratch_len(n);
                    if scratch.len() < len {
                        scratch.resize(len, 0.0);
                    }
                    // SAFETY: tasks write the columns of disjoint groups of rows, and each has
                    // its own scratch.
                    unsafe {
                        self.spec
                            .set
                            .run(&job, range, x, n, &output, &mut scratch[..len])
                    };
                });
            });
    }

    /// [`Self::forward`] on the calling thread alone, allocating nothing: how the AVX-512
    /// kernels are tested on an emulated CPU.
    ///
    /// # Safety
    /// The CPU must run the kernel set the weights were packed for.
    pub unsafe fn forward_on_this_thread(&self, x: &[f32], y: &mut [f32]) {
        if let Some((job, n)) = self.prepare(x, y) {
            let output = SharedOutput::new(y, self.spec.out);
            self.spec
                .set
                .run(&job, 0..job.groups, x, n, &output, &mut []);
        }
    }

    /// The job of a product of `x` into `y` and its row count, `None` when there is nothing
    /// to compute.
    fn prepare(&self, x: &[f32], y: &[f32]) -> Option<(Job, usize)> {
        let (inp, out) = (self.spec.inp, self.spec.out);
        let n = x.len().checked_div(inp).unwrap_or(0);
        assert!(
            y.len() >= n * out,
            "output holds {} values, {n} rows of {out} need more",
            y.len()
        );
        (n > 0 && out > 0).then(|| (self.job(), n))
    }

    fn job(&self) -> Job {
        let spec = &self.spec;
        let layout = spec.layout();
        let weight_bytes = spec.weight_bytes();
        Job {
            weights: self.bytes.as_ptr(),
            scales: self.bytes[weight_bytes..].as_ptr(),
            scale_type: spec.scales,
            inp: spec.inp,
            out: spec.out,
            rows: layout.rows,
            groups: spec.groups(),
            steps: spec.steps(),
            step: layout.step,
            step_bytes: spec.step_bytes(),
            steps_per_block: spec.format.block() / layout.step,
            blocks: spec.blocks(),
            format: spec.format,
        }
    }
}

impl KernelSet {
    /// How this set lays out `format`.
    pub(crate) fn layout(self, format: PackedFormat) -> Layout {
        let step = match format {
            PackedFormat::Bf16 | PackedFormat::Fp4 => 2,
            _ => 1,
        };
        match (self, format) {
            #[cfg(target_arch = "x86_64")]
            (KernelSet::Avx2, PackedFormat::Fp4) => avx2::FP4_LAYOUT,
            _ => Layout {
                rows: 16,
                step,
                row_at: None,
            },
        }
    }

    /// Runs `job` for groups `range` against the `n` rows of `x`.
    ///
    /// SAFETY: `job` comes from a packed linear of this set, `x` holds `n × inp` values and
    /// `output` `n × out`; no other task writes these groups' columns or `scratch` meanwhile.
    unsafe fn run(
        self,
        job: &Job,
        range: std::ops::Range<usize>,
        x: &[f32],
        n: usize,
        output: &SharedOutput,
        scratch: &mut [f32],
    ) {
        match self {
            KernelSet::Portable => portable::run(job, range, x, n, output, scratch),
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => avx2::run(job, range, x, n, output, scratch),
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512 => avx512::run(job, range, x, n, output, scratch),
            #[cfg(not(target_arch = "x86_64"))]
            _ => portable::run(job, range, x, n, output, scratch),
        }
    }
}
