//! Linears over weights as the checkpoint stores them: plain floats, FP8 with 128×128 block
//! scales, FP4 with group-32 scales. The product dequantizes one weight row at a time (exactly:
//! every stored format widens to f32 without rounding) and never holds a dequantized matrix.

use rayon::prelude::*;

use crate::formats::{dequant_fp4_group, dequant_fp8_block, e8m0_to_f32, E2M1_VALUES};
use crate::formats::{fp4_unpack, FP4_GROUP, FP8_BLOCK};
use crate::simd::{
    dot_bf16_row, dot_f32, dot_f32_le, dot_fp4_row, dot_fp8_row, dot_fp8_rows, e4m3_shifted,
    e8m0_multiplier, InputOrder, E4M3_RESCALE,
};

/// Element type of a plain float weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatDtype {
    /// bfloat16.
    Bf16,
    /// IEEE float16.
    F16,
    /// IEEE float32.
    F32,
}

impl FloatDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bf16 | Self::F16 => 2,
            Self::F32 => 4,
        }
    }

    /// Decodes little-endian elements into `out` (as many as fit in both).
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Self::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Self::Bf16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Self::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
        }
    }

    /// All elements of `bytes` as f32.
    pub fn to_vec(self, bytes: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; bytes.len() / self.size()];
        self.decode(bytes, &mut out);
        out
    }
}

/// Scale multipliers as stored: UE8M0 bytes, or little-endian f32 (transformers' `weight_scale_inv`).
#[derive(Debug, Clone, Copy)]
pub enum Scales<'a> {
    /// One byte per scale, value 2^(b − 127).
    E8M0(&'a [u8]),
    /// Four bytes per scale.
    F32(&'a [u8]),
}

impl Scales<'_> {
    /// The multiplier at `index` (NaN bytes are rejected when a checkpoint is checked).
    #[inline]
    pub fn get(&self, index: usize) -> f32 {
        match self {
            Self::E8M0(bytes) => e8m0_to_f32(bytes[index]).unwrap_or(f32::NAN),
            Self::F32(bytes) => {
                let b = &bytes[4 * index..4 * index + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
        }
    }

    /// The multiplier at `index` on the hot path: UE8M0 bytes decode without a check for the
    /// NaN byte (checked checkpoints hold none).
    #[inline]
    pub fn multiplier(&self, index: usize) -> f32 {
        match self {
            Self::E8M0(bytes) => e8m0_multiplier(bytes[index]),
            Self::F32(_) => self.get(index),
        }
    }

    /// The `len` scales from `start` (one row's groups or one block row's columns).
    pub fn range(&self, start: usize, len: usize) -> Self {
        match self {
            Self::E8M0(bytes) => Self::E8M0(&bytes[start..start + len]),
            Self::F32(bytes) => Self::F32(&bytes[4 * start..4 * (start + len)]),
        }
    }

    /// Every multiplier, in storage order.
    pub fn to_vec(&self) -> Vec<f32> {
        let n = match self {
            Self::E8M0(bytes) => bytes.len(),
            Self::F32(bytes) => bytes.len() / 4,
        };
        (0..n).map(|i| self.get(i)).collect()
    }
}

/// The stored weight of a linear.
#[derive(Debug, Clone, Copy)]
pub enum LinearWeight<'a> {
    /// Plain floats `[out, inp]`.
    Float {
        /// Element type.
        dtype: FloatDtype,
        /// Little-endian elements.
        data: &'a [u8],
    },
    /// E4M3 `[out, inp]` with a `[ceil(out/128), ceil(inp/128)]` scale grid.
    Fp8Block {
        /// E4M3 bytes.
        q: &'a [u8],
        /// Block scales.
        scales: Scales<'a>,
    },
    /// Packed E2M1 `[out, inp/2]` (low nibble first) with `[out, inp/32]` scales.
    Fp4Group {
        /// Packed bytes.
        packed: &'a [u8],
        /// Group scales.
        scales: Scales<'a>,
    },
}

/// A linear `y = W x` with `W` of `[out, inp]`, borrowed from where it is stored.
#[derive(Debug, Clone, Copy)]
pub struct LinearView<'a> {
    /// Output features.
    pub out: usize,
    /// Input features.
    pub inp: usize,
    /// The stored weight.
    pub weight: LinearWeight<'a>,
}

/// Most output rows handed to one parallel task.
const ROWS_PER_TASK: usize = 128;

/// Tasks per worker a matrix-vector product is split into at least (when it has the rows).
const TASKS_PER_WORKER: usize = 4;

/// Longest input rearranged on the stack (32 KiB); covers every V4 width.
const STACK_INPUT: usize = 8192;

/// Inputs up to this long are rearranged in an 8 KiB buffer: every decode input of the small
/// shapes, and most of the release ones.
const SMALL_INPUT: usize = 2048;

/// An `N`-value buffer on whole cache lines of its own.
#[repr(align(64))]
struct CacheLines<const N: usize>([f32; N]);

/// `f` on `x` arranged into `order` in an `N`-value stack buffer (`x.len() <= N`). The buffer
/// owns its cache lines: every worker reads it for every row, and a line shared with the
/// calling thread's busy stack slots (when a worker calls) would be taken away from the
/// readers on each of that thread's writes (a head product measured 10.1 ms against 8.5 ms).
fn arranged<const N: usize, R>(order: InputOrder, x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    let mut buf = CacheLines([0.0f32; N]);
    let buf = &mut buf.0[..x.len()];
    order.arrange(x, buf);
    f(buf)
}

impl LinearView<'_> {
    /// `W` as f32, exactly. A copy: for tests and exports, not for the forward pass.
    pub fn dequantize(&self) -> Vec<f32> {
        match self.weight {
            LinearWeight::Float { dtype, data } => {
                dtype.to_vec(&data[..self.out * self.inp * dtype.size()])
            }
            LinearWeight::Fp8Block { q, scales } => {
                dequant_fp8_block(q, &scales.to_vec(), self.out, self.inp)
            }
            LinearWeight::Fp4Group { packed, scales } => {
                dequant_fp4_group(packed, &scales.to_vec(), self.out, self.inp)
            }
        }
    }

    /// Row `o` of `W` as f32, exactly, into `row` (`inp` values).
    pub fn row(&self, o: usize, row: &mut [f32]) {
        let inp = self.inp;
        match self.weight {
            LinearWeight::Float { dtype, data } => {
                let size = dtype.size();
                dtype.decode(&data[o * inp * size..(o + 1) * inp * size], row);
            }
            LinearWeight::Fp8Block { q, scales } => {
                let cols = inp.div_ceil(FP8_BLOCK);
                for (b, (chunk, out)) in q[o * inp..(o + 1) * inp]
                    .chunks(FP8_BLOCK)
                    .zip(row.chunks_mut(FP8_BLOCK))
                    .enumerate()
                {
                    let s = scales.get((o / FP8_BLOCK) * cols + b);
                    for (v, &byte) in out.iter_mut().zip(chunk) {
                        *v = e4m3_shifted(byte) * E4M3_RESCALE * s;
                    }
                }
            }
            LinearWeight::Fp4Group { packed, scales } => {
                let groups = inp / FP4_GROUP;
                let bytes = &packed[o * inp / 2..(o + 1) * inp / 2];
                for (g, (chunk, out)) in bytes
                    .chunks(FP4_GROUP / 2)
                    .zip(row.chunks_mut(FP4_GROUP))
                    .enumerate()
                {
                    let s = scales.get(o * groups + g);
                    for (pair, &byte) in out.chunks_exact_mut(2).zip(chunk) {
                        let (even, odd) = fp4_unpack(byte);
                        pair[0] = E2M1_VALUES[usize::from(even)] * s;
                        pair[1] = E2M1_VALUES[usize::from(odd)] * s;
                    }
                }
            }
        }
    }

    /// Row `o` of `W` times `x`, reading the stored row directly (no decoded copy). For one-off
    /// rows: it rearranges `x` for the row kernel on every call, where [`Self::forward`] does
    /// so once.
    pub fn row_dot(&self, o: usize, x: &[f32]) -> f32 {
        let mut y = [0.0];
        self.with_kernel_input(x, |x| self.rows_in_kernel_order(o, &mut y, x));
        y[0]
    }

    /// The input layout this weight's row kernel reads.
    fn input_order(&self) -> InputOrder {
        match self.weight {
            LinearWeight::Float {
                dtype: FloatDtype::Bf16,
                ..
            } => InputOrder::Bf16,
            LinearWeight::Float { .. } => InputOrder::Natural,
            LinearWeight::Fp8Block { .. } => InputOrder::Fp8,
            LinearWeight::Fp4Group { .. } => InputOrder::Fp4,
        }
    }

    /// Runs `f` on `x` laid out the way this weight's row kernel reads it
    /// ([`Self::input_order`]). The copy lives on the stack up to [`STACK_INPUT`] values (in a
    /// small buffer for the common widths, so short inputs do not clear 32 KiB), so the decode
    /// step does not allocate for it.
    fn with_kernel_input<R>(&self, x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
        let order = self.input_order();
        if order == InputOrder::Natural {
            return f(x);
        }
        match x.len() {
            n if n <= SMALL_INPUT => arranged::<SMALL_INPUT, R>(order, x, f),
            n if n <= STACK_INPUT => arranged::<STACK_INPUT, R>(order, x, f),
            _ => {
                let mut buf = vec![0.0f32; x.len()];
                order.arrange(x, &mut buf);
                f(&buf)
            }
        }
    }

    /// Rows `first..first + y.len()` times `x` (already in kernel order) into `y`. The format
    /// is matched once and its row kernel runs over every row, in pairs ([`in_row_pairs`]).
    fn rows_in_kernel_order(&self, first: usize, y: &mut [f32], x: &[f32]) {
        let inp = self.inp;
        match self.weight {
            LinearWeight::Float {
                dtype: dtype @ (FloatDtype::Bf16 | FloatDtype::F32),
                data,
            } => {
                // Rows a SIMD kernel reads in place.
                let dot = match dtype {
                    FloatDtype::Bf16 => dot_bf16_row,
                    _ => dot_f32_le,
                };
                let size = dtype.size();
                in_rows(first, y, |o| {
                    dot(&data[size * o * inp..size * (o + 1) * inp], x)
                });
            }
            LinearWeight::Float { dtype, data } => {
                let size = dtype.size();
                let row = |o: usize| {
                    // Decode through a stack buffer: no allocation per row on the hot path.
                    let bytes = &data[o * inp * size..(o + 1) * inp * size];
                    let mut buf = [0.0f32; 256];
                    let mut sum = 0.0;
                    for (chunk, xs) in bytes.chunks(256 * size).zip(x.chunks(256)) {
                        let part = &mut buf[..xs.len()];
                        dtype.decode(chunk, part);
                        sum += dot_f32(part, xs);
                    }
                    sum
                };
                in_rows(first, y, row);
            }
            LinearWeight::Fp8Block { q, scales } => {
                let cols = inp.div_ceil(FP8_BLOCK);
                let stored = |o: usize| {
                    let block_row = scales.range((o / FP8_BLOCK) * cols, cols);
                    (&q[o * inp..(o + 1) * inp], block_row)
                };
                let pair = |[a, b]: [usize; 2]| {
                    let ((r0, s0), (r1, s1)) = (stored(a), stored(b));
                    dot_fp8_rows([r0, r1], x, [s0, s1])
                };
                let row = |o: usize| {
                    let (r, s) = stored(o);
                    dot_fp8_row(r, x, s)
                };
                in_row_pairs(first, y, pair, row);
            }
            LinearWeight::Fp4Group { packed, scales } => {
                let groups = inp / FP4_GROUP;
                let row = |o: usize| {
                    let bytes = &packed[o * inp / 2..(o + 1) * inp / 2];
                    dot_fp4_row(bytes, x, scales.range(o * groups, groups))
                };
                in_rows(first, y, row);
            }
        }
    }

    /// `W x[r]` for every row `r` of `x` (`rows × inp`), as a new `rows × out` vector.
    pub fn forward_vec(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; x.len() / self.inp * self.out];
        self.forward(x, &mut y);
        y
    }

    /// `y[r] = W x[r]` for every row `r` of `x` (`rows × inp`), into `y` (`rows × out`).
    pub fn forward(&self, x: &[f32], y: &mut [f32]) {
        self.forward_rows(0..self.out, x, y);
    }

    /// `y[r] = W[rows] x[r]` for a range of `W`'s output rows (grouped projections use slices
    /// of one weight); `y` is `x_rows × rows.len()`. Work is split over output rows; one input
    /// row reads each weight row in place, several go through the blocked product
    /// ([`crate::gemm`]), which decodes each weight row once.
    pub fn forward_rows(&self, rows: std::ops::Range<usize>, x: &[f32], y: &mut [f32]) {
        let inp = self.inp;
        let n = x.len() / inp;
        let width = rows.len();
        let start = rows.start;
        if n == 1 {
            // Short outputs (a few long rows, like the hyper-connection projections) still
            // give every worker several tasks.
            let per_task = ROWS_PER_TASK
                .min(width.div_ceil(TASKS_PER_WORKER * rayon::current_num_threads()))
                .max(1);
            self.with_kernel_input(x, |x| {
                y[..width]
                    .par_chunks_mut(per_task)
                    .enumerate()
                    .for_each(|(task, out)| {
                        self.rows_in_kernel_order(start + task * per_task, out, x)
                    })
            });
            return;
        }
        crate::gemm::matmul(self, rows, x, y);
    }
}

/// `y[k] = row(first + k)` for every `k`, walking `y`'s two halves side by side: rows `k` and
/// `half + k` go to `pair` together. Two sequential streams per worker keep more reads in
/// flight than one, and formats with a two-row kernel share the work of a pair.
fn in_row_pairs(
    first: usize,
    y: &mut [f32],
    pair: impl Fn([usize; 2]) -> [f32; 2],
    row: impl Fn(usize) -> f32,
) {
    let half = y.len().div_ceil(2);
    let (front, back) = y.split_at_mut(half);
    for (k, v) in front.iter_mut().enumerate() {
        match back.get_mut(k) {
            Some(w) => [*v, *w] = pair([first + k, first + half + k]),
            None => *v = row(first + k),
        }
    }
}

/// [`in_row_pairs`] for a format without a two-row kernel: a pair is its two rows in turn.
fn in_rows(first: usize, y: &mut [f32], row: impl Fn(usize) -> f32) {
    in_row_pairs(first, y, |[a, b]| [row(a), row(b)], &row);
}

/// Σ a·b in f32 (SIMD where the CPU has it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_f32(a, b)
}
