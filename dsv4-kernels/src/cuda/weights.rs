//! Weights on the device as the checkpoint stores them (FP8/FP4 bytes and their scales, floats),
//! uploaded once and read in place by the kernels (`csrc/weights.cuh`, whose numbers the enums
//! here carry).

use super::{DeviceBuffer, DeviceError, DevicePtr, Gpu, Param};
use crate::linear::{FloatDtype, LinearView, LinearWeight, Scales};

/// `Dsv4Format` of `csrc/weights.cuh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Format {
    /// f32 elements.
    F32 = 0,
    /// bfloat16 elements.
    Bf16 = 1,
    /// IEEE half elements.
    F16 = 2,
    /// E4M3 with 128×128 block scales.
    Fp8Block = 3,
    /// Packed E2M1 with group-32 scales.
    Fp4Group = 4,
}

/// `Dsv4ScaleKind` of `csrc/weights.cuh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ScaleKind {
    /// One UE8M0 byte per scale.
    E8m0 = 0,
    /// One little-endian f32 per scale.
    F32 = 1,
}

/// A linear's weight in device memory.
#[derive(Debug)]
pub struct DeviceWeight {
    /// Element format.
    pub format: Format,
    /// How its scales are stored (ignored for float formats).
    pub scale_kind: ScaleKind,
    /// The stored elements.
    pub data: DeviceBuffer,
    /// The stored scales (`None` for float formats).
    pub scales: Option<DeviceBuffer>,
    /// Output features.
    pub out: usize,
    /// Input features.
    pub inp: usize,
}

impl DeviceWeight {
    /// Uploads a stored linear as it is.
    pub fn upload(gpu: &Gpu, view: &LinearView) -> Result<Self, DeviceError> {
        Self::upload_rows(gpu, view, 0, view.out)
    }

    /// Uploads rows `first..first + count` of a stored linear as a linear of their own (a
    /// group of `wo_a`), with the scales that cover them; FP8 rows must start on a 128-row
    /// block.
    pub fn upload_rows(
        gpu: &Gpu,
        view: &LinearView,
        first: usize,
        count: usize,
    ) -> Result<Self, DeviceError> {
        let inp = view.inp;
        let rows = first..first + count;
        let cut = |bytes: &[u8], per_row: usize| -> Result<Vec<u8>, DeviceError> {
            bytes
                .get(rows.start * per_row..rows.end * per_row)
                .map(<[u8]>::to_vec)
                .ok_or(DeviceError::CopySize {
                    bytes: rows.end * per_row,
                    capacity: bytes.len(),
                })
        };
        let (format, data, scales) = match view.weight {
            LinearWeight::Float { dtype, data } => {
                let format = match dtype {
                    FloatDtype::F32 => Format::F32,
                    FloatDtype::Bf16 => Format::Bf16,
                    FloatDtype::F16 => Format::F16,
                };
                (format, cut(data, inp * dtype.size())?, None)
            }
            LinearWeight::Fp8Block { q, scales } => {
                if !first.is_multiple_of(128) {
                    return Err(DeviceError::Driver(format!(
                        "FP8 rows from {first} do not start on a 128-row scale block"
                    )));
                }
                let cols = inp.div_ceil(128);
                let grid = (first / 128)..(first + count).div_ceil(128);
                (Format::Fp8Block, cut(q, inp)?, Some((scales, grid, cols)))
            }
            LinearWeight::Fp4Group { packed, scales } => {
                let groups = inp / 32;
                (
                    Format::Fp4Group,
                    cut(packed, inp / 2)?,
                    Some((scales, rows.clone(), groups)),
                )
            }
        };
        // The scale rows `range` of a grid `per_row` scales wide, `size` bytes each.
        let scale_rows =
            |bytes: &[u8], range: std::ops::Range<usize>, per_row: usize, size: usize| {
                let (from, to) = (size * range.start * per_row, size * range.end * per_row);
                let rows = bytes.get(from..to).ok_or(DeviceError::CopySize {
                    bytes: to,
                    capacity: bytes.len(),
                })?;
                gpu.upload(rows)
            };
        let (scale_kind, scales) = match scales {
            None => (ScaleKind::E8m0, None),
            Some((Scales::E8M0(bytes), range, per_row)) => {
                (ScaleKind::E8m0, Some(scale_rows(bytes, range, per_row, 1)?))
            }
            Some((Scales::F32(bytes), range, per_row)) => {
                (ScaleKind::F32, Some(scale_rows(bytes, range, per_row, 4)?))
            }
        };
        Ok(Self {
            format,
            scale_kind,
            data: gpu.upload(&data)?,
            scales,
            out: count,
            inp,
        })
    }

    /// A weight of no rows: what a struct of bound weights keeps where its weight moved
    /// elsewhere.
    pub fn empty(gpu: &Gpu) -> Result<Self, DeviceError> {
        Ok(Self {
            format: Format::F32,
            scale_kind: ScaleKind::E8m0,
            data: gpu.alloc(0)?,
            scales: None,
            out: 0,
            inp: 0,
        })
    }

    /// Bytes it holds on the device.
    pub fn bytes(&self) -> u64 {
        (self.data.len() + self.scales.as_ref().map_or(0, DeviceBuffer::len)) as u64
    }

    /// Its kernel parameters in `csrc/weights.cuh` order: format, scale kind, data, scales.
    pub fn params(&self) -> WeightParams {
        WeightParams {
            format: self.format as u32,
            scale_kind: self.scale_kind as u32,
            data: self.data.ptr(),
            scales: self.scales.as_ref().map_or(DevicePtr(0), DeviceBuffer::ptr),
        }
    }
}

/// A weight's first four kernel parameters, held so they can be pointed at.
#[derive(Debug, Clone, Copy)]
pub struct WeightParams {
    /// `Dsv4Format`.
    pub format: u32,
    /// `Dsv4ScaleKind`.
    pub scale_kind: u32,
    /// The elements.
    pub data: DevicePtr,
    /// The scales (null for float formats).
    pub scales: DevicePtr,
}

impl WeightParams {
    /// The four as kernel parameters.
    pub fn as_params(&self) -> [&dyn Param; 4] {
        [&self.format, &self.scale_kind, &self.data, &self.scales]
    }
}
