//! Launchers of `csrc/rope.cu`: RoPE on the last rotary dims of each head.

use super::twins::{Check, Rng};
use super::{dim, DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::ops::{RopeFrequencies, Yarn};

/// Most threads per block of [`rope`].
const THREADS: usize = 256;

/// A RoPE frequency table on the device: [`RopeFrequencies::inv_freq`] as computed on the host.
#[derive(Debug)]
pub struct DeviceRope {
    table: DeviceBuffer,
    pairs: usize,
}

impl DeviceRope {
    /// Uploads `rope`'s table.
    pub fn upload(gpu: &Gpu, rope: &RopeFrequencies) -> Result<Self, DeviceError> {
        Ok(Self {
            table: gpu.upload_f32(&rope.inv_freq)?,
            pairs: rope.inv_freq.len(),
        })
    }

    /// The table (`Dr / 2` f32 angles per position), as a kernel parameter.
    pub fn table(&self) -> DevicePtr {
        self.table.ptr()
    }

    /// Rotary pairs it holds frequencies for.
    pub fn pairs(&self) -> usize {
        self.pairs
    }
}

/// Where the tokens of a [`rope`] launch sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Token `t` at `first + t·stride`: a chunk's queries and keys (stride 1), or a run of
    /// compressed entries `w, w + 1, ...` of ratio `m` (first `m·w`, stride `m`).
    Run {
        /// Position of the first token.
        first: u64,
        /// Step between consecutive tokens.
        stride: u64,
    },
    /// Token `t` at the `t`-th u32 of a device array (one per token).
    Listed(DevicePtr),
}

/// The layout [`rope`] rotates: `tokens × heads × head_dim` f32, rotating the last `rotary`
/// dims of each head (`rotary` even, at most `head_dim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeShape {
    /// Tokens (one block each).
    pub tokens: usize,
    /// Heads per token.
    pub heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Rotary dims at the end of each head (Dr).
    pub rotary: usize,
}

fn refused(message: String) -> DeviceError {
    DeviceError::Launch {
        kernel: "rope".to_owned(),
        message,
    }
}

/// Rotates, in place at `x` (`shape`), the interleaved pairs of each head's last `rotary` dims
/// by `position · inv_freq[i]` (the inverse rotation when `inverse`): the twin of
/// [`RopeFrequencies::rotate`] on `head[head_dim − rotary..]` of every head, with token `t` at
/// `positions`' position for `t`.
pub fn rope(
    gpu: &Gpu,
    x: DevicePtr,
    freq: &DeviceRope,
    positions: Positions,
    shape: RopeShape,
    inverse: bool,
) -> Result<(), DeviceError> {
    let RopeShape {
        tokens,
        heads,
        head_dim,
        rotary,
    } = shape;
    if rotary % 2 != 0 || rotary > head_dim || rotary / 2 > freq.pairs {
        return Err(refused(format!(
            "{rotary} rotary dims of heads of {head_dim} with a table of {} pairs",
            freq.pairs
        )));
    }
    let work = heads
        .checked_mul(rotary / 2)
        .filter(|_| tokens.checked_mul(heads * head_dim).is_some())
        .ok_or_else(|| refused(format!("{tokens} × {heads} × {head_dim} overflows")))?;
    dim(work)?;
    if tokens == 0 || work == 0 {
        return Ok(());
    }
    let (list, first, stride) = match positions {
        Positions::Run { first, stride } => {
            (tokens as u64 - 1)
                .checked_mul(stride)
                .and_then(|d| d.checked_add(first))
                .ok_or_else(|| refused(format!("positions from {first} by {stride} overflow")))?;
            (DevicePtr(0), first, stride)
        }
        Positions::Listed(list) => (list, 0, 0),
    };
    let threads = work.next_multiple_of(32).min(THREADS);
    let config = LaunchConfig {
        shared_bytes: dim(rotary * 4)?,
        ..LaunchConfig::linear(dim(tokens)?, dim(threads)?)
    };
    let inverse = i32::from(inverse);
    // SAFETY: the kernel touches `tokens × heads × head_dim` f32 at `x`, reads `rotary / 2`
    // frequencies (the table holds at least that many) and, when listed, `tokens` positions.
    unsafe {
        gpu.launch(
            "rope",
            config,
            &[
                &x,
                &freq.table.ptr(),
                &list,
                &first,
                &stride,
                &dim(heads)?,
                &dim(head_dim)?,
                &dim(rotary)?,
                &inverse,
            ],
        )
    }
}

/// The release's compressed-layer YaRN (docs/model.md §1.1).
const V4_YARN: Yarn = Yarn {
    factor: 16.0,
    original_max_position_embeddings: 65536.0,
    beta_fast: 32.0,
    beta_slow: 1.0,
};

/// [`rope`] against [`RopeFrequencies::rotate`] with V4-Flash's tables (main θ = 10000; compress
/// θ = 160000 with YaRN) on 64 heads of 512 with 64 rotary dims, at positions near 1000 and
/// 1,000,000, forward and inverse, compressed entries at stride 4, listed positions, and odd
/// shapes. Tolerance 2e-6 (relative above 1): the angle is the same f32 product on both sides,
/// but the GPU's sinf/cosf may differ from the host libm's in the last ulp or two, which moves
/// each output by about 2·2^-23·(|a| + |b|); on cuda-sim both call the same libm, so it is 0.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let main = RopeFrequencies::new(64, 10000.0, None);
    let yarn = RopeFrequencies::new(64, 160000.0, Some(V4_YARN));
    let pair = RopeFrequencies::new(2, 10000.0, None);
    let tables = [
        (DeviceRope::upload(gpu, &main)?, &main, "main"),
        (DeviceRope::upload(gpu, &yarn)?, &yarn, "yarn"),
        (DeviceRope::upload(gpu, &pair)?, &pair, "main"),
    ];
    let listed = [0u32, 7, 1_048_575];
    let position_list = gpu.upload(
        &listed
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect::<Vec<_>>(),
    )?;
    let v4 = |tokens| RopeShape {
        tokens,
        heads: 64,
        head_dim: 512,
        rotary: 64,
    };
    let run = |first, stride| Positions::Run { first, stride };
    let cases = [
        (0, v4(3), run(1000, 1), false, "queries"),
        (1, v4(3), run(1000, 1), false, "queries"),
        (0, v4(3), run(1_000_000, 1), false, "queries"),
        (1, v4(3), run(1_000_000, 1), false, "queries"),
        (0, v4(3), run(999_998, 1), true, "outputs, inverse"),
        (1, v4(2), run(1013, 1), true, "outputs, inverse"),
        (
            1,
            RopeShape {
                tokens: 5,
                heads: 1,
                head_dim: 512,
                rotary: 64,
            },
            run(4 * 249_998, 4),
            false,
            "compressed entries",
        ),
        (
            1,
            RopeShape {
                tokens: 3,
                heads: 1,
                head_dim: 128,
                rotary: 64,
            },
            Positions::Listed(position_list.ptr()),
            false,
            "indexer keys, listed",
        ),
        (
            2,
            RopeShape {
                tokens: 2,
                heads: 1,
                head_dim: 5,
                rotary: 2,
            },
            run(3, 1),
            false,
            "odd",
        ),
    ];
    let mut checks = Vec::new();
    for (table, shape, positions, inverse, what) in cases {
        let (device_table, freq, name) = &tables[table];
        let n = shape.tokens * shape.heads * shape.head_dim;
        let x = rng.values(n, 1.0);
        let buffer = gpu.upload_f32(&x)?;
        rope(gpu, buffer.ptr(), device_table, positions, shape, inverse)?;
        let gpu_out = buffer.read_f32(n)?;
        let mut cpu = x;
        for (t, token) in cpu.chunks_mut(shape.heads * shape.head_dim).enumerate() {
            let p = match positions {
                Positions::Run { first, stride } => (first + t as u64 * stride) as usize,
                Positions::Listed(_) => listed[t] as usize,
            };
            for head in token.chunks_mut(shape.head_dim) {
                freq.rotate(&mut head[shape.head_dim - shape.rotary..], p, inverse);
            }
        }
        let first = match positions {
            Positions::Run { first, .. } => first,
            Positions::Listed(_) => u64::from(listed[0]),
        };
        let shape_text = format!(
            "{}×{}×{} Dr {} {name} from {first} ({what})",
            shape.tokens, shape.heads, shape.head_dim, shape.rotary
        );
        checks.push(Check::new("rope", shape_text, &gpu_out, &cpu, 2e-6));
    }
    Ok(checks)
}
