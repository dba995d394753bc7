//! Every CUDA kernel against its CPU twin on random inputs, at V4-Flash's widths and at odd
//! shapes, each with its stated tolerance. `dsv4 selftest` prints the table; the tests run it
//! under each fiber order of `cuda-sim`.

use super::weights::Format;
use super::{
    attend, cache, compressor, embed, indexer, layout, linear, mhc, moe, norm, numerics, rope,
    sample, DeviceError, Gpu,
};
use crate::linear::{FloatDtype, LinearView, LinearWeight, Scales};

/// One kernel at one shape against its twin.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The kernel.
    pub kernel: &'static str,
    /// The shape, in words.
    pub shape: String,
    /// The largest difference from the twin, relative to the twin's magnitude where that is
    /// above 1 (so an absolute difference for small values).
    pub error: f32,
    /// The most that [`Check::error`] may be.
    pub tolerance: f32,
}

impl Check {
    /// Compares a kernel's output with its twin's.
    pub fn new(
        kernel: &'static str,
        shape: String,
        gpu: &[f32],
        cpu: &[f32],
        tolerance: f32,
    ) -> Self {
        let error = if gpu.len() != cpu.len() {
            f32::INFINITY
        } else {
            gpu.iter()
                .zip(cpu)
                .map(|(&g, &c)| difference(g, c))
                .fold(0.0, f32::max)
        };
        Self {
            kernel,
            shape,
            error,
            tolerance,
        }
    }

    /// Whether the kernel agrees with its twin (a NaN difference does not).
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance
    }
}

/// `|g − c| / max(|c|, 1)`; equal values (infinities and NaNs included) differ by 0, a NaN
/// against a number by infinity.
fn difference(g: f32, c: f32) -> f32 {
    if g == c || (g.is_nan() && c.is_nan()) {
        return 0.0;
    }
    let d = (g - c).abs() / c.abs().max(1.0);
    if d.is_nan() {
        f32::INFINITY
    } else {
        d
    }
}

/// A small seeded generator for the twins' inputs (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` uniform values times `scale`.
    pub fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// A kernel family's twin checks.
pub type Twin = fn(&Gpu, &mut Rng) -> Result<Vec<Check>, DeviceError>;

/// Every family's checks, by kernel file.
pub const TWINS: &[(&str, Twin)] = &[
    ("attend", attend::twins),
    ("cache", cache::twins),
    ("compressor", compressor::twins),
    ("embed", embed::twins),
    ("indexer", indexer::twins),
    ("layout", layout::twins),
    ("linear", linear::twins),
    ("mhc", mhc::twins),
    ("moe", moe::twins),
    ("norm", norm::twins),
    ("numerics", numerics::twins),
    ("rope", rope::twins),
    ("sample", sample::twins),
];

/// Runs every family's checks on `gpu` from `seed`; a family whose launch fails reports the
/// error in place of its checks.
pub fn run_all(gpu: &Gpu, seed: u64) -> Vec<(&'static str, Result<Vec<Check>, DeviceError>)> {
    TWINS
        .iter()
        .map(|&(family, twin)| (family, twin(gpu, &mut Rng::new(seed))))
        .collect()
}

/// A random weight in a stored format, for the twins of the kernels that read weights.
#[derive(Debug, Clone)]
pub struct StoredWeight {
    /// The format.
    pub format: Format,
    /// Output features.
    pub out: usize,
    /// Input features.
    pub inp: usize,
    /// The stored elements.
    pub data: Vec<u8>,
    /// The stored scales: UE8M0 bytes (empty for floats).
    pub scales: Vec<u8>,
}

impl StoredWeight {
    /// A random `[out, inp]` weight; FP4 needs `inp` a multiple of 32. Values are about ±1/√inp.
    pub fn random(rng: &mut Rng, format: Format, out: usize, inp: usize) -> Self {
        let n = out * inp;
        let unit = 1.0 / (inp.max(1) as f32).sqrt();
        let data = match format {
            Format::F32 => super::f32_bytes(&rng.values(n, unit)),
            Format::Bf16 => rng
                .values(n, unit)
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            Format::F16 => rng
                .values(n, unit)
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            // Every byte but the two NaNs.
            Format::Fp8Block => rng
                .bytes(n)
                .into_iter()
                .map(|b| if b & 0x7f == 0x7f { b ^ 1 } else { b })
                .collect(),
            Format::Fp4Group => rng.bytes(n / 2),
        };
        // Scales around 2^-7 (E4M3 reaches 448) or 2^-3 (E2M1 reaches 6), so W stays near unit.
        let scales = match format {
            Format::Fp8Block => (0..out.div_ceil(128) * inp.div_ceil(128))
                .map(|_| 120 + (rng.next_u64() % 4) as u8)
                .collect(),
            Format::Fp4Group => (0..out * (inp / 32))
                .map(|_| 122 + (rng.next_u64() % 4) as u8)
                .collect(),
            _ => Vec::new(),
        };
        Self {
            format,
            out,
            inp,
            data,
            scales,
        }
    }

    /// The weight as the CPU reads it.
    pub fn view(&self) -> LinearView<'_> {
        let weight = match self.format {
            Format::F32 => LinearWeight::Float {
                dtype: FloatDtype::F32,
                data: &self.data,
            },
            Format::Bf16 => LinearWeight::Float {
                dtype: FloatDtype::Bf16,
                data: &self.data,
            },
            Format::F16 => LinearWeight::Float {
                dtype: FloatDtype::F16,
                data: &self.data,
            },
            Format::Fp8Block => LinearWeight::Fp8Block {
                q: &self.data,
                scales: Scales::E8M0(&self.scales),
            },
            Format::Fp4Group => LinearWeight::Fp4Group {
                packed: &self.data,
                scales: Scales::E8M0(&self.scales),
            },
        };
        LinearView {
            out: self.out,
            inp: self.inp,
            weight,
        }
    }
}
