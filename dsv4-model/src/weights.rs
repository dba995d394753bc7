//! Typed, borrowed views of a checkpoint's weights: linears as the enum kernels match on
//! (`dsv4_formats::linear`), and plain float or integer tensors. Nothing is copied.

use dsv4_formats::linear::{FloatDtype, LinearView, LinearWeight, Scales};

use crate::checkpoint::{Checkpoint, TensorView};
use crate::{DType, Linear, LinearFormat};

impl DType {
    /// The kernels' float type of a plain float dtype.
    pub fn float(self) -> Option<FloatDtype> {
        match self {
            DType::Bf16 => Some(FloatDtype::Bf16),
            DType::F16 => Some(FloatDtype::F16),
            DType::F32 => Some(FloatDtype::F32),
            _ => None,
        }
    }
}

impl<'a> TensorView<'a> {
    /// The values of a float tensor as f32, `None` for other dtypes.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        self.dtype.float().map(|f| f.to_vec(self.data))
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

    /// A 2-D float tensor `[out, inp]` as a linear (embeddings, heads, BF16 projections).
    pub fn as_linear(&self) -> Option<LinearView<'a>> {
        let (&[out, inp], Some(dtype)) = (self.shape, self.dtype.float()) else {
            return None;
        };
        Some(LinearView {
            out,
            inp,
            weight: LinearWeight::Float {
                dtype,
                data: self.data,
            },
        })
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
        let weight = match (linear.format, weight.dtype.float()) {
            (LinearFormat::Float, Some(dtype)) => LinearWeight::Float {
                dtype,
                data: weight.data,
            },
            (LinearFormat::Fp8Block, _) if weight.dtype == DType::F8E4M3 => {
                LinearWeight::Fp8Block {
                    q: weight.data,
                    scales: scales()?,
                }
            }
            (LinearFormat::Fp4Group, _) if matches!(weight.dtype, DType::I8 | DType::U8) => {
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
