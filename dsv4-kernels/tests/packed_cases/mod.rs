//! Stored weights of every format at odd shapes, and the order the `panel` module documents
//! written out plainly from the stored bytes with `formats`' decoders (which are tested against
//! ml_dtypes): what every kernel set's packed product must give bit for bit.
#![allow(dead_code)]

use crate::common::{bytes, e4m3_bytes, floats};

use dsv4_kernels::formats::{e4m3_to_f32, fp4_unpack, E2M1_VALUES, FP4_GROUP, FP8_BLOCK};
use dsv4_kernels::linear::{FloatDtype, LinearView, LinearWeight, Scales};

/// Row `o`'s unscaled values and the multiplier of each of its blocks, with the block length.
fn row_parts(view: &LinearView, o: usize) -> (Vec<f32>, Vec<f32>, usize) {
    let inp = view.inp;
    match view.weight {
        LinearWeight::Float { .. } => {
            let mut row = vec![0.0; inp];
            view.row(o, &mut row);
            (row, vec![1.0; inp.div_ceil(FP8_BLOCK)], FP8_BLOCK)
        }
        LinearWeight::Fp8Block { q, scales } => {
            let cols = inp.div_ceil(FP8_BLOCK);
            let values = q[o * inp..(o + 1) * inp]
                .iter()
                .map(|&b| e4m3_to_f32(b))
                .collect();
            let m = (0..cols)
                .map(|b| scales.get(o / FP8_BLOCK * cols + b))
                .collect();
            (values, m, FP8_BLOCK)
        }
        LinearWeight::Fp4Group { packed, scales } => {
            let groups = inp / FP4_GROUP;
            let values = packed[o * inp / 2..(o + 1) * inp / 2]
                .iter()
                .flat_map(|&b| {
                    let (even, odd) = fp4_unpack(b);
                    [
                        E2M1_VALUES[usize::from(even)],
                        E2M1_VALUES[usize::from(odd)],
                    ]
                })
                .collect();
            let m = (0..groups).map(|g| scales.get(o * groups + g)).collect();
            (values, m, FP4_GROUP)
        }
    }
}

/// The documented order: per block, a chain of fused multiply-adds of value and input from
/// zero, then the row's total += block sum × multiplier, rounded once.
pub fn reference(view: &LinearView, x: &[f32]) -> Vec<f32> {
    let inp = view.inp;
    x.chunks(inp)
        .flat_map(|xr| {
            (0..view.out).map(move |o| {
                let (values, multipliers, block) = row_parts(view, o);
                let mut total = 0.0f32;
                for (b, (w, xs)) in values.chunks(block).zip(xr.chunks(block)).enumerate() {
                    let sum = w
                        .iter()
                        .zip(xs)
                        .fold(0.0f32, |acc, (w, x)| w.mul_add(*x, acc));
                    total = sum.mul_add(multipliers[b], total);
                }
                total
            })
        })
        .collect()
}

/// The reference against Σ in f64 over the exactly dequantized weight: within 1e-6 of Σ|w·x|.
pub fn check_reference_in_f64(view: &LinearView, x: &[f32], want: &[f32], label: &str) {
    let inp = view.inp;
    let dense = view.dequantize();
    for (t, xr) in x.chunks(inp).enumerate() {
        for o in 0..view.out {
            let w = &dense[o * inp..(o + 1) * inp];
            let exact: f64 = w
                .iter()
                .zip(xr)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let size: f64 = w
                .iter()
                .zip(xr)
                .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
                .sum();
            let got = f64::from(want[t * view.out + o]);
            assert!(
                (got - exact).abs() <= 1e-6 * size.max(1e-30),
                "{label}: row {t} output {o}: {got} against {exact} in f64"
            );
        }
    }
}

/// Stored weights of one format and shape, with what they were made from.
pub struct Stored {
    pub label: String,
    pub out: usize,
    pub inp: usize,
    data: Vec<u8>,
    scales: Vec<u8>,
    format: Format,
}

#[derive(Clone, Copy, Debug)]
pub enum Format {
    Float(FloatDtype),
    Fp8(bool),
    Fp4(bool),
}

impl Stored {
    pub fn new(format: Format, out: usize, inp: usize, seed: u64) -> Self {
        let f32_scales = |n: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| (0.3 + 0.17 * (i % 11) as f32).to_le_bytes())
                .collect()
        };
        let e8m0 = |n: usize| -> Vec<u8> { (0..n).map(|i| 118 + (i * 7 % 9) as u8).collect() };
        let (data, scales) = match format {
            Format::Float(FloatDtype::F32) => (
                floats(out * inp, seed)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                vec![],
            ),
            Format::Float(FloatDtype::Bf16) => (
                bytes(2 * out * inp, seed)
                    .chunks(2)
                    .flat_map(|c| [c[0], c[1] & 0xBF])
                    .collect(),
                vec![],
            ),
            Format::Float(FloatDtype::F16) => (
                floats(out * inp, seed)
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
                vec![],
            ),
            Format::Fp8(f32s) => {
                let n = out.div_ceil(FP8_BLOCK) * inp.div_ceil(FP8_BLOCK);
                let scales = if f32s { f32_scales(n) } else { e8m0(n) };
                (e4m3_bytes(out * inp, seed), scales)
            }
            Format::Fp4(f32s) => {
                let n = out * inp / FP4_GROUP;
                let scales = if f32s { f32_scales(n) } else { e8m0(n) };
                (bytes(out * inp / 2, seed), scales)
            }
        };
        Self {
            label: format!("{format:?} {out}x{inp}"),
            out,
            inp,
            data,
            scales,
            format,
        }
    }

    pub fn view(&self) -> LinearView<'_> {
        let scales = |f32s: bool| {
            if f32s {
                Scales::F32(&self.scales)
            } else {
                Scales::E8M0(&self.scales)
            }
        };
        let weight = match self.format {
            Format::Float(dtype) => LinearWeight::Float {
                dtype,
                data: &self.data,
            },
            Format::Fp8(f32s) => LinearWeight::Fp8Block {
                q: &self.data,
                scales: scales(f32s),
            },
            Format::Fp4(f32s) => LinearWeight::Fp4Group {
                packed: &self.data,
                scales: scales(f32s),
            },
        };
        LinearView {
            out: self.out,
            inp: self.inp,
            weight,
        }
    }
}

/// Every format at shapes with ragged groups (out not a multiple of 16 or 32), ragged blocks
/// and, for the two-input steps, an odd input count.
pub fn cases() -> Vec<Stored> {
    use FloatDtype::{Bf16, F16, F32};
    let mut cases = Vec::new();
    let mut seed = 1;
    let mut add = |format: Format, shapes: &[(usize, usize)]| {
        for &(out, inp) in shapes {
            cases.push(Stored::new(format, out, inp, seed));
            seed += 1;
        }
    };
    let float_shapes = [(1, 1), (5, 7), (33, 129), (70, 300), (16, 256)];
    add(Format::Float(F32), &float_shapes);
    add(Format::Float(Bf16), &float_shapes);
    add(Format::Float(F16), &float_shapes);
    let fp8_shapes = [(1, 64), (17, 200), (150, 384), (32, 128)];
    add(Format::Fp8(false), &fp8_shapes);
    add(Format::Fp8(true), &fp8_shapes[1..3]);
    let fp4_shapes = [(1, 32), (33, 96), (70, 320), (64, 160)];
    add(Format::Fp4(false), &fp4_shapes);
    add(Format::Fp4(true), &fp4_shapes[1..3]);
    cases
}

/// Rows of input for a case: `n` rows, with small and large values so sums cancel.
pub fn inputs(case: &Stored, n: usize) -> Vec<f32> {
    floats(n * case.inp, 1000 + case.inp as u64)
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 5 == 0 { v * 37.0 } else { *v })
        .collect()
}
