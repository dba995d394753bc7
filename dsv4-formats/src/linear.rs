//! Linears as the checkpoint stores them: plain floats, FP8 with 128×128 block scales, FP4 with
//! group-32 scales. Views of the stored bytes, read row by row (the embedding) or packed for the
//! products (the kernels' panel layout); every stored format widens to f32 exactly.

use crate::formats::{dequant_fp4_group, dequant_fp8_block, e4m3_to_f32, e8m0_to_f32};
use crate::formats::{fp4_unpack, E2M1_VALUES, FP4_GROUP, FP8_BLOCK};

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
                        *v = e4m3_to_f32(byte) * s;
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
}
