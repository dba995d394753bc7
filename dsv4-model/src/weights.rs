//! Typed, borrowed views of a checkpoint's weights: linears as the small enum kernels match on
//! (float, FP8 block-scaled, FP4 group-scaled), and plain float or integer tensors. Nothing is
//! copied; `dequantize` makes an f32 copy for tests and exports only.

use dsv4_kernels::formats::{dequant_fp4_group, dequant_fp8_block, e8m0_to_f32};

use crate::checkpoint::{Checkpoint, TensorView};
use crate::{DType, Linear, LinearFormat};

/// Scale multipliers as stored: UE8M0 bytes, or little-endian f32 (transformers' `weight_scale_inv`).
#[derive(Debug, Clone, Copy)]
pub enum Scales<'a> {
    /// One byte per scale, value 2^(b − 127).
    E8M0(&'a [u8]),
    /// Four bytes per scale.
    F32(&'a [u8]),
}

impl Scales<'_> {
    /// The multiplier at `index` (NaN bytes were rejected when the checkpoint was checked).
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
    /// Plain floats `[out, inp]` of the given dtype.
    Float {
        /// BF16, F16 or F32.
        dtype: DType,
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

/// A linear `y = W x` with `W` of `[out, inp]`, borrowed from the checkpoint.
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
    /// `W` as f32, exactly (every stored format widens to f32 without rounding).
    pub fn dequantize(&self) -> Vec<f32> {
        match self.weight {
            LinearWeight::Float { dtype, data } => float_values(dtype, data),
            LinearWeight::Fp8Block { q, scales } => {
                dequant_fp8_block(q, &scales.to_vec(), self.out, self.inp)
            }
            LinearWeight::Fp4Group { packed, scales } => {
                dequant_fp4_group(packed, &scales.to_vec(), self.out, self.inp)
            }
        }
    }
}

/// Little-endian BF16, F16 or F32 bytes as f32 values (other dtypes give an empty vector).
pub fn float_values(dtype: DType, data: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::Bf16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => Vec::new(),
    }
}

impl TensorView<'_> {
    /// The values of a float tensor as f32, `None` for other dtypes.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        self.dtype
            .is_plain_float()
            .then(|| float_values(self.dtype, self.data))
    }

    /// The values of an integer table (I64 or I32) as i64, `None` for other dtypes.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self.dtype {
            DType::I64 => Some(
                self.data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            DType::I32 => Some(
                self.data
                    .chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
            ),
            _ => None,
        }
    }
}

impl Checkpoint {
    /// The linear whose native base name is `base` (`layers.0.attn.wq_a`), stored as `linear`
    /// says; `None` when its tensors are absent or of another storage (run `check` first).
    pub fn linear(&self, base: &str, linear: Linear) -> Option<LinearView<'_>> {
        let weight = self.tensor(&format!("{base}.weight"))?;
        let scales = || -> Option<Scales<'_>> {
            let s = self.tensor(&format!("{base}.scale"))?;
            match s.dtype {
                DType::F8E8M0 => Some(Scales::E8M0(s.data)),
                DType::F32 => Some(Scales::F32(s.data)),
                _ => None,
            }
        };
        let weight = match linear.format {
            LinearFormat::Float if weight.dtype.is_plain_float() => LinearWeight::Float {
                dtype: weight.dtype,
                data: weight.data,
            },
            LinearFormat::Fp8Block if weight.dtype == DType::F8E4M3 => LinearWeight::Fp8Block {
                q: weight.data,
                scales: scales()?,
            },
            LinearFormat::Fp4Group if matches!(weight.dtype, DType::I8 | DType::U8) => {
                LinearWeight::Fp4Group {
                    packed: weight.data,
                    scales: scales()?,
                }
            }
            _ => return None,
        };
        Some(LinearView {
            out: linear.out,
            inp: linear.inp,
            weight,
        })
    }
}
