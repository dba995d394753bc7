//! The deep check: every stored value of a checkpoint read for the encodings of NaN and infinity,
//! which a header check cannot see and which would otherwise surface as wrong or NaN logits.

use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, Problem, TensorView};
use crate::DType;

/// NaN and infinity encodings found in one tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NonFinite {
    /// NaN encodings (for E4M3 bytes 0x7F and 0xFF, for E8M0 scales 0xFF).
    pub nan: u64,
    /// Infinities (E4M3 and E8M0 have none).
    pub inf: u64,
}

impl NonFinite {
    /// Counts the NaN and infinity encodings of `view`'s values; integer tensors have none.
    pub fn of(view: &TensorView) -> Self {
        let data = view.data;
        match view.dtype {
            DType::F8E4M3 => Self::count(data.iter().map(|&b| (b & 0x7F == 0x7F, false))),
            DType::F8E8M0 => Self::count(data.iter().map(|&b| (b == 0xFF, false))),
            DType::Bf16 => Self::count(halves(data).map(|h| classify(u32::from(h), 0x7F80, 0x7F))),
            DType::F16 => Self::count(halves(data).map(|h| classify(u32::from(h), 0x7C00, 0x3FF))),
            DType::F32 => Self::count(
                data.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .map(|w| classify(w, 0x7F80_0000, 0x007F_FFFF)),
            ),
            DType::I8 | DType::U8 | DType::I32 | DType::I64 => Self::default(),
        }
    }

    fn count(flags: impl Iterator<Item = (bool, bool)>) -> Self {
        flags.fold(Self::default(), |acc, (nan, inf)| Self {
            nan: acc.nan + u64::from(nan),
            inf: acc.inf + u64::from(inf),
        })
    }

    /// Whether any was found.
    pub fn any(&self) -> bool {
        self.nan + self.inf > 0
    }
}

/// Little-endian 16-bit words.
fn halves(data: &[u8]) -> impl Iterator<Item = u16> + '_ {
    data.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// (is NaN, is infinite) of an IEEE-style word with exponent bits `exp` and mantissa bits `man`.
fn classify(word: u32, exp: u32, man: u32) -> (bool, bool) {
    let special = word & exp == exp;
    (special && word & man != 0, special && word & man == 0)
}

/// Every tensor of `checkpoint` holding NaN or infinite values, one problem each with the counts,
/// in name order; tensors are read in parallel.
pub fn scan_values(checkpoint: &Checkpoint) -> Vec<Problem> {
    let names: Vec<&str> = checkpoint.names().collect();
    let mut found: Vec<(&str, Problem)> = names
        .par_iter()
        .filter_map(|&name| {
            let view = checkpoint.tensor(name)?;
            let counts = NonFinite::of(&view);
            counts.any().then(|| {
                let message = format!(
                    "{} NaN and {} infinite value(s) among its {} {} values",
                    counts.nan,
                    counts.inf,
                    view.data.len() as u64 / view.dtype.size(),
                    view.dtype.safetensors_name()
                );
                (name, Problem::tensor(Some(view.file), view.name, message))
            })
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    found.into_iter().map(|(_, p)| p).collect()
}
