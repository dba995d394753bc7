//! The blocked product (several input rows at once) against a float64 product of the exactly
//! dequantized weight, for every stored format, with ragged panels, ragged tiles and row ranges
//! that start inside a panel.

mod common;

use common::{bytes, floats};

use dsv4_kernels::linear::{FloatDtype, LinearView, LinearWeight, Scales};

/// Checks `forward_rows(rows, x)` against Σ in f64 over the dequantized weight, each output
/// within 1e-6 of the sum of |w·x| (f32 rounding of a sum of that size).
fn check(view: &LinearView, rows: std::ops::Range<usize>, n: usize, label: &str) {
    let inp = view.inp;
    let dense = view.dequantize();
    let x = floats(n * inp, 21 + n as u64);
    let width = rows.len();
    let mut y = vec![f32::NAN; n * width];
    view.forward_rows(rows.clone(), &x, &mut y);
    for t in 0..n {
        for (j, o) in rows.clone().enumerate() {
            let w = &dense[o * inp..(o + 1) * inp];
            let xr = &x[t * inp..(t + 1) * inp];
            let want: f64 = w
                .iter()
                .zip(xr)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let size: f64 = w
                .iter()
                .zip(xr)
                .map(|(a, b)| f64::from((a * b).abs()))
                .sum();
            let got = f64::from(y[t * width + j]);
            assert!(
                (got - want).abs() <= 1e-6 * size.max(1.0),
                "{label}: n={n} output {o} row {t}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn blocked_product_matches_the_dequantized_product() {
    let (out, inp) = (150, 384);
    let fp8 = bytes(out * inp, 1)
        .into_iter()
        .map(|b| if b & 0x7F == 0x7F { b - 1 } else { b })
        .collect::<Vec<u8>>();
    let fp8_scales: Vec<u8> = (0..2 * 3).map(|i| 117 + 3 * i as u8).collect();
    let fp4 = bytes(out * inp / 2, 2);
    let fp4_scales: Vec<u8> = bytes(out * inp / 32, 3)
        .iter()
        .map(|b| 118 + b % 7)
        .collect();
    let bf16: Vec<u8> = bytes(out * inp * 2, 4)
        .chunks(2)
        .flat_map(|c| [c[0], c[1] & 0x3F])
        .collect();
    let f32s: Vec<u8> = bytes(out * inp, 5)
        .iter()
        .flat_map(|&b| ((f32::from(b) - 128.0) / 256.0).to_le_bytes())
        .collect();
    let f16s: Vec<u8> = bytes(out * inp * 2, 6)
        .chunks(2)
        .flat_map(|c| [c[0], c[1] & 0x3B])
        .collect();
    // The transformers spelling of the FP8 scales: one f32 per block.
    let fp8_f32_scales: Vec<u8> = fp8_scales
        .iter()
        .flat_map(|&b| (f32::from(b) / 128.0).to_le_bytes())
        .collect();
    let views = [
        (
            "f32",
            LinearWeight::Float {
                dtype: FloatDtype::F32,
                data: &f32s,
            },
        ),
        (
            "f16",
            LinearWeight::Float {
                dtype: FloatDtype::F16,
                data: &f16s,
            },
        ),
        (
            "fp8 with f32 scales",
            LinearWeight::Fp8Block {
                q: &fp8,
                scales: Scales::F32(&fp8_f32_scales),
            },
        ),
        (
            "fp8",
            LinearWeight::Fp8Block {
                q: &fp8,
                scales: Scales::E8M0(&fp8_scales),
            },
        ),
        (
            "fp4",
            LinearWeight::Fp4Group {
                packed: &fp4,
                scales: Scales::E8M0(&fp4_scales),
            },
        ),
        (
            "bf16",
            LinearWeight::Float {
                dtype: FloatDtype::Bf16,
                data: &bf16,
            },
        ),
    ];
    for (label, weight) in views {
        let view = LinearView { out, inp, weight };
        for n in [1, 2, 5, 6, 7, 13] {
            check(&view, 0..out, n, label);
        }
        // A grouped projection's slice: starts mid-panel, ends ragged.
        check(&view, 5..141, 9, label);
    }
}
