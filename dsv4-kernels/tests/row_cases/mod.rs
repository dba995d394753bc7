//! Row-kernel cases shared by the kernel tests: every stored format at widths with and without
//! whole blocks, pairs of groups and tails, each checked against its scalar twin within a bound
//! on float rounding (a fraction of Σ|w·x|).

use super::common::{bytes, e4m3_bytes, floats};

use dsv4_kernels::linear::Scales;
use dsv4_kernels::simd::{self, scalar, InputOrder};

/// A row kernel's stored weights.
pub enum Kernel {
    Bf16(Vec<u8>),
    /// Two rows (run as a pair and the first alone) and their scales.
    Fp8 {
        rows: [Vec<u8>; 2],
        scales: [Vec<u8>; 2],
        f32_scales: bool,
    },
    Fp4 {
        packed: Vec<u8>,
        scales: Vec<u8>,
        f32_scales: bool,
    },
}

/// One kernel call: weights and `x` already in the kernel's input order.
pub struct Case {
    label: String,
    kernel: Kernel,
    x: Vec<f32>,
}

fn scales(bytes: &[u8], f32_scales: bool) -> Scales<'_> {
    if f32_scales {
        Scales::F32(bytes)
    } else {
        Scales::E8M0(bytes)
    }
}

impl Case {
    fn new(label: String, kernel: Kernel, order: InputOrder, x: &[f32]) -> Self {
        let mut arranged = vec![0.0; x.len()];
        order.arrange(x, &mut arranged);
        Case {
            label,
            kernel,
            x: arranged,
        }
    }

    /// The same case with every weight and input made non-negative: its sums are Σ|w·x|,
    /// what the rounding error of a sum in another order is proportional to.
    fn magnitudes(&self) -> Vec<f32> {
        let clear = |bytes: &[u8], sign: u8| bytes.iter().map(|b| b & !sign).collect::<Vec<_>>();
        let kernel = match &self.kernel {
            // The sign is the top bit of each little-endian value's second byte.
            Kernel::Bf16(w) => {
                Kernel::Bf16(w.chunks(2).flat_map(|c| [c[0], c[1] & 0x7F]).collect())
            }
            Kernel::Fp8 {
                rows,
                scales,
                f32_scales,
            } => Kernel::Fp8 {
                rows: [clear(&rows[0], 0x80), clear(&rows[1], 0x80)],
                scales: scales.clone(),
                f32_scales: *f32_scales,
            },
            // Each nibble's top bit.
            Kernel::Fp4 {
                packed,
                scales,
                f32_scales,
            } => Kernel::Fp4 {
                packed: clear(packed, 0x88),
                scales: scales.clone(),
                f32_scales: *f32_scales,
            },
        };
        let abs = Case {
            label: String::new(),
            kernel,
            x: self.x.iter().map(|v| v.abs()).collect(),
        };
        let mut out = vec![0.0; abs.outputs()];
        abs.scalar(&mut out);
        out
    }

    /// How many sums the case produces.
    pub fn outputs(&self) -> usize {
        match self.kernel {
            Kernel::Fp8 { .. } => 3,
            _ => 1,
        }
    }

    /// The scalar twins' sums.
    fn scalar(&self, out: &mut [f32]) {
        // SAFETY: the scalar kernels run on any CPU.
        unsafe { self.run(&SCALAR, out) }
    }

    /// The sums of the kernels this CPU runs (what the linear layers call).
    #[allow(dead_code)] // Each test file uses one of `dispatched` and `avx512`.
    pub fn dispatched(&self, out: &mut [f32]) {
        // SAFETY: the dispatchers pick what this CPU runs.
        unsafe { self.run(&DISPATCHED, out) }
    }

    /// The AVX-512 kernels' sums. Allocation-free, so it can run on the emulated CPU.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW.
    #[allow(dead_code)]
    pub unsafe fn avx512(&self, out: &mut [f32]) {
        self.run(&AVX512, out)
    }

    /// The case's sums by `kernels`: an FP8 case gives its pair's two and its first row's alone.
    ///
    /// # Safety
    /// The CPU must run `kernels`.
    unsafe fn run(&self, kernels: &RowKernels, out: &mut [f32]) {
        let x = &self.x;
        match &self.kernel {
            Kernel::Bf16(w) => out[0] = (kernels.bf16)(w, x),
            Kernel::Fp8 {
                rows,
                scales: s,
                f32_scales,
            } => {
                let s = [scales(&s[0], *f32_scales), scales(&s[1], *f32_scales)];
                [out[0], out[1]] = (kernels.fp8_pair)([&rows[0][..], &rows[1][..]], x, s);
                [out[2]] = (kernels.fp8_one)([&rows[0][..]], x, [s[0]]);
            }
            Kernel::Fp4 {
                packed,
                scales: s,
                f32_scales,
            } => out[0] = (kernels.fp4)(packed, x, scales(s, *f32_scales)),
        }
    }
}

/// `R` FP8 rows against one input.
type Fp8Rows<const R: usize> = unsafe fn([&[u8]; R], &[f32], [Scales; R]) -> [f32; R];

/// One implementation of each row kernel.
struct RowKernels {
    bf16: unsafe fn(&[u8], &[f32]) -> f32,
    fp8_pair: Fp8Rows<2>,
    fp8_one: Fp8Rows<1>,
    fp4: unsafe fn(&[u8], &[f32], Scales) -> f32,
}

/// The portable twins, the reference.
const SCALAR: RowKernels = RowKernels {
    bf16: scalar::dot_bf16_row,
    fp8_pair: scalar_fp8_rows::<2>,
    fp8_one: scalar_fp8_rows::<1>,
    fp4: scalar::dot_fp4_row,
};

/// The scalar FP8 row, row by row.
fn scalar_fp8_rows<const R: usize>(q: [&[u8]; R], x: &[f32], s: [Scales; R]) -> [f32; R] {
    std::array::from_fn(|r| scalar::dot_fp8_row(q[r], x, s[r]))
}

/// What the linear layers call.
const DISPATCHED: RowKernels = RowKernels {
    bf16: simd::dot_bf16_row,
    fp8_pair: simd::dot_fp8_rows::<2>,
    fp8_one: simd::dot_fp8_rows::<1>,
    fp4: simd::dot_fp4_row,
};

/// The 512-bit kernels.
const AVX512: RowKernels = RowKernels {
    bf16: simd::avx512::dot_bf16_row,
    fp8_pair: simd::avx512::dot_fp8_rows::<2>,
    fp8_one: simd::avx512::dot_fp8_rows::<1>,
    fp4: simd::avx512::dot_fp4_row,
};

/// Every row kernel at widths with and without whole blocks, pairs of groups and tails.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for n in [1, 31, 32, 64, 96, 100, 1000, 1024] {
        let x = floats(n, 1);
        // The upper halves of f32 values, as BF16 bytes.
        let w: Vec<u8> = floats(n, 3)
            .iter()
            .flat_map(|v| {
                let [_, _, lo, hi] = v.to_le_bytes();
                [lo, hi]
            })
            .collect();
        let label = format!("bf16 row {n}");
        cases.push(Case::new(label, Kernel::Bf16(w), InputOrder::Bf16, &x));
    }
    for n in [32, 96, 128, 224, 384, 640, 1024, 2048] {
        let x = floats(n, 5);
        for f32_scales in [false, true] {
            let scale_bytes = |seed: usize| -> Vec<u8> {
                if f32_scales {
                    (0..n)
                        .flat_map(|b| (0.5 + (b + seed) as f32).to_le_bytes())
                        .collect()
                } else {
                    (0..n).map(|i| 120 + ((i + seed) % 9) as u8).collect()
                }
            };
            let fp8 = Kernel::Fp8 {
                rows: [e4m3_bytes(n, 4), e4m3_bytes(n, 7)],
                scales: [scale_bytes(0), scale_bytes(1)],
                f32_scales,
            };
            let label = format!("fp8 rows {n} f32 scales {f32_scales}");
            cases.push(Case::new(label, fp8, InputOrder::Fp8, &x));
            let fp4 = Kernel::Fp4 {
                packed: bytes(n / 2, 6),
                scales: scale_bytes(2),
                f32_scales,
            };
            let label = format!("fp4 row {n} f32 scales {f32_scales}");
            cases.push(Case::new(label, fp4, InputOrder::Fp4, &x));
        }
    }
    cases
}

/// Asserts that `got` (every case's sums, in case order) matches the scalar twins' within
/// 10^-6 of Σ|w·x|, naming the kernel as `what`.
pub fn check(cases: &[Case], got: &[f32], what: &str) {
    let mut at = 0;
    for case in cases {
        let n = case.outputs();
        let mut want = vec![0.0f32; n];
        case.scalar(&mut want);
        let magnitudes = case.magnitudes();
        for (k, (g, w)) in got[at..at + n].iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * magnitudes[k],
                "{} sum {k}: {what} {g} against scalar {w} (Σ|w·x| {})",
                case.label,
                magnitudes[k]
            );
        }
        at += n;
    }
    assert_eq!(at, got.len(), "one sum per output");
}
