//! Packing a stored linear into the panel layout, once at load: the layout chosen for the
//! kernel set this CPU runs, the rows of a grouped projection packed group by group, many
//! linears in parallel.

use rayon::prelude::*;

use super::{PackedFormat, PackedSpec, PackedWeights, ScaleType};
use crate::formats::{E8M0_NAN, FP4_GROUP, FP8_BLOCK};
use crate::linear::{FloatDtype, LinearView, LinearWeight, Scales};
use crate::simd::KernelSet;

/// Why a weight cannot be packed or a packed one read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// The stored bytes are fewer than the shape needs.
    #[error("stored weight holds {got} bytes, its shape needs {need}")]
    Stored {
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The packed buffer is not the size the spec gives.
    #[error("packed buffer holds {got} bytes, the spec needs {need}")]
    Packed {
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The rows asked for are not all in the weight.
    #[error("rows {first}..{} asked of a weight of {out} rows (or of other inputs)", first + count)]
    Rows {
        /// First row.
        first: usize,
        /// Rows asked for.
        count: usize,
        /// Rows of the weight.
        out: usize,
    },
    /// FP4 rows must be whole scale groups.
    #[error("FP4 rows of {0} values are not whole groups of {FP4_GROUP}")]
    Fp4Width(usize),
}

/// Packing a stored linear into the panel layout (a trait, because the stored views belong to
/// `dsv4-formats`).
pub trait Pack {
    /// The spec of this weight packed for the kernels this CPU runs.
    fn packed_spec(&self) -> PackedSpec {
        self.packed_spec_for(KernelSet::current())
    }

    /// The spec of this weight packed for `set`.
    fn packed_spec_for(&self, set: KernelSet) -> PackedSpec;

    /// This weight packed for the kernels this CPU runs, into a buffer of its own.
    fn pack(&self) -> Result<PackedWeights, PackError> {
        self.pack_for(KernelSet::current())
    }

    /// This weight packed for `set`, into a buffer of its own.
    fn pack_for(&self, set: KernelSet) -> Result<PackedWeights, PackError> {
        let spec = self.packed_spec_for(set);
        let mut bytes = vec![0u8; spec.len()];
        self.pack_into(&spec, &mut bytes)?;
        Ok(PackedWeights { spec, bytes })
    }

    /// Writes this weight in `spec`'s layout (from [`Self::packed_spec_for`]) into `dst`,
    /// which holds `spec.len()` bytes.
    fn pack_into(&self, spec: &PackedSpec, dst: &mut [u8]) -> Result<(), PackError> {
        self.pack_rows_into(0, spec, dst)
    }

    /// Writes rows `first..first + spec.out` of this weight, as a linear of their own, in
    /// `spec`'s layout into `dst` (`spec.len()` bytes): how a projection applied per group of
    /// output rows is packed, group by group.
    fn pack_rows_into(
        &self,
        first: usize,
        spec: &PackedSpec,
        dst: &mut [u8],
    ) -> Result<(), PackError>;
}

/// One linear to pack: rows `first..first + spec.out` of `view` into `dst` (`spec.len()` bytes).
pub struct PackJob<'a> {
    /// The weight as stored.
    pub view: &'a LinearView<'a>,
    /// Its first row to pack.
    pub first: usize,
    /// The layout to pack into.
    pub spec: &'a PackedSpec,
    /// Where the packed bytes go.
    pub dst: &'a mut [u8],
}

/// Packs every job, in parallel; a failure names its job by index.
pub fn pack_all(jobs: Vec<PackJob>) -> Result<(), (usize, PackError)> {
    jobs.into_par_iter().enumerate().try_for_each(|(i, job)| {
        job.view
            .pack_rows_into(job.first, job.spec, job.dst)
            .map_err(|e| (i, e))
    })
}

impl Pack for LinearView<'_> {
    fn packed_spec_for(&self, set: KernelSet) -> PackedSpec {
        let (format, scales) = match self.weight {
            LinearWeight::Float { dtype, .. } => (
                match dtype {
                    FloatDtype::F32 => PackedFormat::F32,
                    FloatDtype::Bf16 => PackedFormat::Bf16,
                    FloatDtype::F16 => PackedFormat::F16,
                },
                None,
            ),
            LinearWeight::Fp8Block { scales, .. } => (PackedFormat::Fp8, Some(scale_type(scales))),
            LinearWeight::Fp4Group { scales, .. } => (PackedFormat::Fp4, Some(scale_type(scales))),
        };
        PackedSpec {
            out: self.out,
            inp: self.inp,
            format,
            scales,
            set,
        }
    }

    fn pack_rows_into(
        &self,
        first: usize,
        spec: &PackedSpec,
        dst: &mut [u8],
    ) -> Result<(), PackError> {
        let need = spec.len();
        if dst.len() != need {
            return Err(PackError::Packed {
                got: dst.len(),
                need,
            });
        }
        let inp = self.inp;
        let Some(out) = first
            .checked_add(spec.out)
            .filter(|&end| end <= self.out && spec.inp == inp)
        else {
            return Err(PackError::Rows {
                first,
                count: spec.out,
                out: self.out,
            });
        };
        let (stored, half_bytes) = match self.weight {
            LinearWeight::Float { dtype, data } => (data, 2 * dtype.size()),
            LinearWeight::Fp8Block { q, .. } => (q, 2),
            LinearWeight::Fp4Group { packed, .. } => {
                if !inp.is_multiple_of(FP4_GROUP) {
                    return Err(PackError::Fp4Width(inp));
                }
                (packed, 1)
            }
        };
        let row_bytes = inp * half_bytes / 2;
        let need_stored = out * row_bytes;
        if stored.len() < need_stored {
            return Err(PackError::Stored {
                got: stored.len(),
                need: need_stored,
            });
        }
        let layout = spec.layout();
        let slot_bytes = layout.step * half_bytes / 2;
        let (weights, scales) = dst.split_at_mut(spec.weight_bytes());
        // Slot `q` of step `s` of a group: the stored bytes of its row for the step's inputs,
        // which lie side by side in the row (zeros past the last row or input).
        for (g, group) in weights
            .chunks_mut(spec.steps() * spec.step_bytes())
            .enumerate()
        {
            for (s, step) in group.chunks_mut(spec.step_bytes()).enumerate() {
                for (q, slot) in step.chunks_mut(slot_bytes).enumerate() {
                    let r =
                        first + g * layout.rows + layout.row_at.map_or(q, |t| usize::from(t[q]));
                    if r >= out {
                        slot.fill(0);
                        continue;
                    }
                    let start = (s * slot_bytes).min(row_bytes);
                    let end = (start + slot_bytes).min(row_bytes);
                    let src = &stored[r * row_bytes + start..r * row_bytes + end];
                    slot[..src.len()].copy_from_slice(src);
                    slot[src.len()..].fill(0);
                }
            }
        }
        let Some(kind) = spec.scales else {
            return Ok(());
        };
        // Row `r`'s multiplier of block `b`, as stored (FP8: its 128-row block's).
        let (grid, per_row) = match self.weight {
            LinearWeight::Fp8Block { scales, .. } => (scales, false),
            LinearWeight::Fp4Group { scales, .. } => (scales, true),
            LinearWeight::Float { .. } => return Ok(()),
        };
        let blocks = spec.blocks();
        let grid_len = if per_row {
            out * blocks
        } else {
            out.div_ceil(FP8_BLOCK) * blocks
        };
        let have = match grid {
            Scales::E8M0(b) => b.len(),
            Scales::F32(b) => b.len() / 4,
        };
        if have < grid_len {
            return Err(PackError::Stored {
                got: have * kind.size(),
                need: grid_len * kind.size(),
            });
        }
        // An E4M3 NaN byte (0x7F, 0xFF) makes its row's product NaN, as the reference's does:
        // its row's multiplier for that block is packed as NaN, which costs the loop nothing.
        let holds_nan = |r: usize, b: usize| match self.weight {
            LinearWeight::Fp8Block { .. } => {
                let start = (b * FP8_BLOCK).min(row_bytes);
                let end = (start + FP8_BLOCK).min(row_bytes);
                stored[r * row_bytes + start..r * row_bytes + end]
                    .iter()
                    .any(|&q| q & 0x7F == 0x7F)
            }
            _ => false,
        };
        let size = kind.size();
        for (i, entry) in scales.chunks_mut(size).enumerate() {
            let (gb, lane) = (i / layout.rows, i % layout.rows);
            let (g, b) = (gb / blocks, gb % blocks);
            let r = first + g * layout.rows + lane;
            let at = match (r < out, per_row) {
                (false, _) => None,
                (true, true) => Some(r * blocks + b),
                (true, false) => Some(r / FP8_BLOCK * blocks + b),
            };
            let nan = r < out && holds_nan(r, b);
            match (grid, at) {
                (Scales::E8M0(_), Some(_)) if nan => entry[0] = E8M0_NAN,
                (Scales::F32(_), Some(_)) if nan => entry.copy_from_slice(&f32::NAN.to_le_bytes()),
                (Scales::E8M0(bytes), Some(at)) => entry[0] = bytes[at],
                (Scales::F32(bytes), Some(at)) => {
                    entry.copy_from_slice(&bytes[4 * at..4 * at + 4]);
                }
                // Rows past the last: multiplier 1 (their weights are zero).
                (Scales::E8M0(_), None) => entry[0] = 127,
                (Scales::F32(_), None) => entry.copy_from_slice(&1.0f32.to_le_bytes()),
            }
        }
        Ok(())
    }
}

fn scale_type(scales: Scales) -> ScaleType {
    match scales {
        Scales::E8M0(_) => ScaleType::E8M0,
        Scales::F32(_) => ScaleType::F32,
    }
}
