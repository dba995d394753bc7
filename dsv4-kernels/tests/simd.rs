//! The SIMD dot products against their scalar twins, and the fused row products against the
//! exact dequantization (tested against ml_dtypes in formats.rs) followed by a plain sum.

mod common;
mod row_cases;

use common::{bytes, close, e4m3_bytes, floats};

use dsv4_kernels::formats::{dequant_fp4_group, dequant_fp8_block, e8m0_to_f32};
use dsv4_kernels::linear::{FloatDtype, LinearView, LinearWeight, Scales};
use dsv4_kernels::simd::{self, scalar, InputOrder};

#[test]
fn simd_dots_match_scalar_dots() {
    println!("AVX2+FMA in use: {}", simd::has_avx2());
    for n in [1, 7, 16, 31, 128, 1000, 1024] {
        let x = floats(n, 1);
        let a = floats(n, 2);
        let magnitude: f32 = x.iter().map(|v| v.abs()).sum::<f32>() * 448.0;
        assert!(
            close(simd::dot_f32(&a, &x), scalar::dot_f32(&a, &x), magnitude),
            "f32 {n}"
        );
        let le: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            scalar::dot_f32_le(&le, &x),
            scalar::dot_f32(&a, &x),
            "f32 bytes {n}"
        );
        // Read in place at every alignment, not only where the allocator put the bytes.
        let mut shifted = vec![0u8; le.len() + 3];
        for offset in 0..4 {
            shifted[offset..offset + le.len()].copy_from_slice(&le);
            let got = simd::dot_f32_le(&shifted[offset..offset + le.len()], &x);
            assert!(
                close(got, scalar::dot_f32(&a, &x), magnitude),
                "f32 bytes {n} at offset {offset}"
            );
        }
        // Two rows against four vectors, and one.
        let rows = [floats(n, 20), floats(n, 21)];
        let vectors = [floats(n, 22), floats(n, 23), floats(n, 24), floats(n, 25)];
        let four = [0, 1, 2, 3].map(|r| &vectors[r][..]);
        let got = simd::dots4([&rows[0][..], &rows[1][..]], four);
        let [alone] = simd::dots4([&rows[1][..]], four);
        for (k, row) in rows.iter().enumerate() {
            for (r, v) in vectors.iter().enumerate() {
                let want = scalar::dot_f32(row, v);
                assert!(
                    close(got[k][r], want, magnitude),
                    "dots4 {n}: row {k} vector {r}"
                );
            }
        }
        assert_eq!(alone, got[1], "dots4 {n}: one row as in a pair");
        let w = bytes(2 * n, 3);
        let bf: Vec<u8> = w.chunks(2).flat_map(|c| [c[0], c[1] & 0x3F]).collect();
        check_row_twins(
            InputOrder::Bf16,
            &x,
            [&|x| simd::dot_bf16_row(&bf, x), &|x| {
                scalar::dot_bf16_row(&bf, x)
            }],
            (scalar::dot_bf16(&bf, &x), magnitude * 4.0),
            &format!("bf16 row {n}"),
        );
    }
    // The fused rows against block-by-block scalar sums with the same scales, stored as f32
    // and as UE8M0 bytes.
    for n in [32, 96, 128, 224, 384, 1024] {
        let x = floats(n, 5);
        let e8m0: Vec<u8> = (0..n).map(|i| 120 + (i % 9) as u8).collect();
        let f32s: Vec<u8> = (0..n)
            .flat_map(|b| (0.5 + b as f32).to_le_bytes())
            .collect();
        for scales in [Scales::E8M0(&e8m0), Scales::F32(&f32s)] {
            let scale = |i: usize| scales.get(i);
            let top = (0..n).map(scale).fold(0.0, f32::max);
            let q = e4m3_bytes(n, 4);
            let want = scaled_blocks((&q, 128), (&x, 128), scalar::dot_e4m3, scale);
            check_row_twins(
                InputOrder::Fp8,
                &x,
                [&|x| simd::dot_fp8_row(&q, x, scales), &|x| {
                    scalar::dot_fp8_row(&q, x, scales)
                }],
                (want, 448.0 * n as f32 * top),
                &format!("fp8 row {n} {scales:?}"),
            );
            let p = bytes(n / 2, 6);
            let want = scaled_blocks((&p, 16), (&x, 32), scalar::dot_e2m1, scale);
            check_row_twins(
                InputOrder::Fp4,
                &x,
                [&|x| simd::dot_fp4_row(&p, x, scales), &|x| {
                    scalar::dot_fp4_row(&p, x, scales)
                }],
                (want, 6.0 * n as f32 * top),
                &format!("fp4 row {n} {scales:?}"),
            );
        }
    }
}

/// The row kernels this CPU runs (AVX-512, AVX2 or the portable ones, as detected) against
/// their scalar twins, within a rounding bound rather than the loose one above. On an AVX-512
/// machine, `DSV4_NO_AVX512=1` points this at the AVX2 kernels.
#[test]
fn dispatched_row_kernels_match_their_scalar_twins_closely() {
    println!(
        "AVX-512 in use: {}, AVX2+FMA: {}",
        simd::has_avx512(),
        simd::has_avx2()
    );
    let cases = row_cases::cases();
    let total: usize = cases.iter().map(row_cases::Case::outputs).sum();
    let mut got = vec![0.0f32; total];
    let mut at = 0;
    for case in &cases {
        let n = case.outputs();
        case.dispatched(&mut got[at..at + n]);
        at += n;
    }
    row_cases::check(&cases, &got, "dispatched");
}

/// A fused row's definition summed block by block: `Σ_b scale(b) · dot(stored block b,
/// input block b)`, blocks being `bytes.1` stored bytes and `x.1` input values.
fn scaled_blocks(
    bytes: (&[u8], usize),
    x: (&[f32], usize),
    dot: fn(&[u8], &[f32]) -> f32,
    scale: impl Fn(usize) -> f32,
) -> f32 {
    bytes
        .0
        .chunks(bytes.1)
        .zip(x.0.chunks(x.1))
        .enumerate()
        .map(|(b, (stored, xs))| dot(stored, xs) * scale(b))
        .sum()
}

/// One twin of a row kernel, taking its input in kernel order.
type RowKernel<'a> = &'a dyn Fn(&[f32]) -> f32;

/// A row kernel's SIMD and scalar twins, both fed `x` arranged into `order`, each within
/// `close` of `want` (the same sum taken in natural order) at `scale`.
fn check_row_twins(
    order: InputOrder,
    x: &[f32],
    twins: [RowKernel; 2],
    (want, scale): (f32, f32),
    label: &str,
) {
    let ordered = arranged(order, x);
    for (twin, name) in twins.into_iter().zip(["simd", "scalar"]) {
        let got = twin(&ordered);
        assert!(close(got, want, scale), "{name} {label}: {got} vs {want}");
    }
}

fn arranged(order: InputOrder, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    order.arrange(x, &mut out);
    out
}

/// The SIMD maximum (greedy sampling's) agrees with the scalar one, NaN never winning.
#[test]
fn simd_maximum_matches_the_scalar_one_with_nans_and_infinities() {
    for n in [0, 1, 7, 31, 32, 33, 100, 1000, 1027] {
        let base = floats(n, 9);
        let mut cases = vec![base.clone()];
        // NaN in every lane position, including before and at the maximum.
        let mut with_nan = base.clone();
        for v in with_nan.iter_mut().step_by(3) {
            *v = f32::NAN;
        }
        cases.push(with_nan);
        cases.push(vec![f32::NAN; n]);
        cases.push(vec![f32::NEG_INFINITY; n]);
        let mut with_inf = base.clone();
        if n > 0 {
            with_inf[n / 2] = f32::INFINITY;
        }
        cases.push(with_inf);
        for (c, x) in cases.iter().enumerate() {
            let (got, want) = (simd::max_f32(x), scalar::max_f32(x));
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "length {n} case {c}: {got} against {want}"
            );
            assert!(!got.is_nan(), "length {n} case {c}: NaN won");
        }
    }
}

#[test]
fn hot_path_scale_multipliers_equal_the_checked_decode() {
    // Every UE8M0 byte but 0xFF (NaN, which checked checkpoints never hold), including 0
    // (2^-127, a subnormal) that the branch-free multiplier reaches by its maximum.
    for b in 0..=254u8 {
        let want = e8m0_to_f32(b).expect("not NaN");
        assert_eq!(
            simd::e8m0_multiplier(b).to_bits(),
            want.to_bits(),
            "byte {b}"
        );
    }
}

/// Every input order is a permutation that `arrange` applies as `source` describes, and moves
/// nothing past the whole blocks its kernel decodes (the kernels read those in natural order).
#[test]
fn input_orders_are_permutations() {
    let orders = [
        (InputOrder::Natural, 1),
        (InputOrder::Bf16, 16),
        (InputOrder::Fp8, 128),
        (InputOrder::Fp4, 64),
    ];
    for (order, span) in orders {
        for len in [
            0, 1, 15, 16, 31, 32, 63, 64, 96, 127, 128, 200, 256, 300, 1024,
        ] {
            let mut seen = vec![false; len];
            for j in 0..len {
                let i = order.source(j, len);
                assert!(i < len && !seen[i], "{order:?} {len}: slot {j} repeats {i}");
                seen[i] = true;
                if j >= len / span * span {
                    assert_eq!(i, j, "{order:?} {len}: tail slot {j} moved");
                }
            }
            let x: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let want: Vec<f32> = (0..len).map(|j| order.source(j, len) as f32).collect();
            assert_eq!(arranged(order, &x), want, "{order:?} {len}");
        }
    }
}

#[test]
fn fused_rows_equal_dequantize_then_sum() {
    let (out, inp) = (130, 384);
    let x = floats(inp, 7);
    // Fused row products against the plain sum over the dequantized rows; the dequantization
    // itself must be what `view` gives.
    let check = |view: &LinearView, dense: &[f32], rows: &[usize], label: &str| {
        for &o in rows {
            let want: f32 = dense[o * inp..(o + 1) * inp]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum();
            let got = view.row_dot(o, &x);
            assert!(close(got, want, want.abs() + 1.0), "{label} row {o}");
        }
        assert_eq!(view.dequantize(), dense, "{label} dequantized");
    };
    let multipliers = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .iter()
            .map(|&b| e8m0_to_f32(b).expect("finite"))
            .collect()
    };

    // FP8 with a 2 × 3 grid of scales spread over several binades.
    let q = e4m3_bytes(out * inp, 8);
    let grid: Vec<u8> = (0..6).map(|i| 118 + 2 * i as u8).collect();
    let view = LinearView {
        out,
        inp,
        weight: LinearWeight::Fp8Block {
            q: &q,
            scales: Scales::E8M0(&grid),
        },
    };
    let dense = dequant_fp8_block(&q, &multipliers(&grid), out, inp);
    check(&view, &dense, &[0, 64, 127, 128, 129], "fp8");
    // The matrix-vector product takes rows in pairs through the two-row kernel, which must
    // give each row exactly what the one-row kernel gives.
    let pairs = view.forward_vec(&x);
    for (o, got) in pairs.iter().enumerate() {
        assert_eq!(
            got.to_bits(),
            view.row_dot(o, &x).to_bits(),
            "fp8 row {o} in a pair"
        );
    }

    // FP4 with one scale per 32 inputs.
    let packed = bytes(out * inp / 2, 9);
    let group: Vec<u8> = bytes(out * inp / 32, 10)
        .iter()
        .map(|b| 120 + b % 5)
        .collect();
    let view = LinearView {
        out,
        inp,
        weight: LinearWeight::Fp4Group {
            packed: &packed,
            scales: Scales::E8M0(&group),
        },
    };
    let dense = dequant_fp4_group(&packed, &multipliers(&group), out, inp);
    check(&view, &dense, &[0, 1, 77, 129], "fp4");

    // F32 rows (transformers-saved checkpoints) longer than one decode buffer.
    let wide = 600;
    let xf = floats(wide, 13);
    let wf: Vec<f32> = floats(3 * wide, 14);
    let raw: Vec<u8> = wf.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = LinearView {
        out: 3,
        inp: wide,
        weight: LinearWeight::Float {
            dtype: FloatDtype::F32,
            data: &raw,
        },
    };
    for o in 0..3 {
        let want: f32 = wf[o * wide..(o + 1) * wide]
            .iter()
            .zip(&xf)
            .map(|(a, b)| a * b)
            .sum();
        assert!(
            close(view.row_dot(o, &xf), want, want.abs() + 1.0),
            "f32 row {o}"
        );
    }

    // BF16, and several input rows at once (the prefill path) against one at a time.
    let raw: Vec<u8> = bytes(out * inp * 2, 11)
        .chunks(2)
        .flat_map(|c| [c[0], c[1] & 0x3F])
        .collect();
    let view = LinearView {
        out,
        inp,
        weight: LinearWeight::Float {
            dtype: FloatDtype::Bf16,
            data: &raw,
        },
    };
    let xs: Vec<f32> = floats(3 * inp, 12);
    let batched = view.forward_vec(&xs);
    for r in 0..3 {
        let single = view.forward_vec(&xs[r * inp..(r + 1) * inp]);
        for o in 0..out {
            assert!(
                close(batched[r * out + o], single[o], single[o].abs() + 1.0),
                "bf16 row {o} input {r}"
            );
        }
    }
}

/// Every finite E4M3 byte and every E2M1 code (and a spread of BF16 values), alone against a
/// one-hot input at each position of a row, comes out of the fused row product as exactly its
/// value (from `formats`, tested against ml_dtypes) times its block's or group's scale: no lane,
/// sign or order mix-ups.
#[test]
fn fused_rows_decode_every_code_exactly() {
    let inp = 256;
    // Row 0 against each one-hot input must give `want(j)` exactly.
    let check = |inp: usize, weight: LinearWeight, want: &dyn Fn(usize) -> f32, label: &str| {
        let view = LinearView {
            out: 1,
            inp,
            weight,
        };
        for j in 0..inp {
            let one_hot: Vec<f32> = (0..inp).map(|i| f32::from(i == j)).collect();
            assert_eq!(view.row_dot(0, &one_hot), want(j), "{label} at {j}");
        }
    };

    // Byte b at position b: every finite byte once, in both scale blocks (NaN bytes become 0).
    let q: Vec<u8> = (0..=255u8)
        .map(|b| if b & 0x7F == 0x7F { 0 } else { b })
        .collect();
    let grid = [121u8, 126];
    let fp8 = LinearWeight::Fp8Block {
        q: &q,
        scales: Scales::E8M0(&grid),
    };
    let fp8_value = |j: usize| {
        dsv4_kernels::formats::e4m3_to_f32(q[j]) * e8m0_to_f32(grid[j / 128]).expect("finite")
    };
    check(inp, fp8, &fp8_value, "fp8");
    // A row with a trailing partial block (read in natural order) after the whole ones.
    let long: Vec<u8> = q.iter().chain(&q[..40]).copied().collect();
    let grid3 = [121u8, 126, 118];
    let fp8 = LinearWeight::Fp8Block {
        q: &long,
        scales: Scales::E8M0(&grid3),
    };
    let fp8_value = |j: usize| {
        dsv4_kernels::formats::e4m3_to_f32(long[j]) * e8m0_to_f32(grid3[j / 128]).expect("finite")
    };
    check(long.len(), fp8, &fp8_value, "fp8 partial block");

    // BF16: both signs, exponents up to 0x7E (no Inf or NaN), varied mantissas, plus a tail
    // past the last whole 16-value block.
    let n = inp + 9;
    let raw: Vec<u8> = (0..n)
        .flat_map(|k| [(k * 37) as u8, (k * 11) as u8 & 0xBF])
        .collect();
    let bf16 = LinearWeight::Float {
        dtype: FloatDtype::Bf16,
        data: &raw,
    };
    let bf16_value = |j: usize| {
        f32::from_bits(u32::from(u16::from_le_bytes([raw[2 * j], raw[2 * j + 1]])) << 16)
    };
    check(n, bf16, &bf16_value, "bf16");

    // 8 groups (4 pairs); the codes cycle so each position meets several of the 16.
    let packed: Vec<u8> = (0..inp / 2).map(|k| (k * 7 + k / 16) as u8).collect();
    // Scale byte 0 (2^-127, subnormal) included.
    let groups: Vec<u8> = (0..inp / 32)
        .map(|g| if g == 0 { 0 } else { 120 + g as u8 })
        .collect();
    let fp4 = LinearWeight::Fp4Group {
        packed: &packed,
        scales: Scales::E8M0(&groups),
    };
    let fp4_value = |j: usize| {
        let byte = packed[j / 2];
        let code = if j.is_multiple_of(2) {
            byte & 0xF
        } else {
            byte >> 4
        };
        dsv4_kernels::formats::E2M1_VALUES[usize::from(code)]
            * e8m0_to_f32(groups[j / 32]).expect("finite")
    };
    check(inp, fp4, &fp4_value, "fp4");
}
