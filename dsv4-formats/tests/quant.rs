//! The quantize–dequantize simulations against values computed independently with numpy +
//! ml_dtypes (fixtures/quant.json, made by make_quant.py from the spec's written definitions),
//! compared bit for bit, plus properties and hand-computed cases.

mod common;

use dsv4_formats::formats::e8m0_to_f32;
use dsv4_formats::quant::*;

use common::{assert_bits_eq, floats_from_bits as floats, quant_fixture as fixture};

#[test]
fn simulations_match_ml_dtypes_bit_for_bit() {
    let f = fixture();
    let cases = f["cases"].as_array().expect("cases");
    let mut seen = [0usize; 3];
    for case in cases {
        let name = format!("{} / {}", case["op"], case["name"]);
        let mut x = floats(&case["input"]);
        let want = floats(&case["output"]);
        match case["op"].as_str().expect("op") {
            "act_quant_fp8" => {
                act_quant_fp8(&mut x);
                seen[0] += 1;
            }
            "kv_fp8_sim" => {
                kv_fp8_sim(&mut x, case["nope"].as_u64().expect("nope") as usize);
                seen[1] += 1;
            }
            "fp4_sim" => {
                fp4_sim(&mut x);
                seen[2] += 1;
            }
            op => panic!("unknown op {op}"),
        }
        assert_bits_eq(&x, &want, &name);
    }
    assert!(
        seen.iter().all(|&n| n >= 5),
        "fixture covers every op: {seen:?}"
    );
}

#[test]
fn simulations_are_idempotent() {
    // A simulated block is representable at its own (or half its) scale: simulating again is a
    // no-op. That is what lets an FP8/FP4 cache store simulated values without further loss.
    let f = fixture();
    for case in f["cases"].as_array().expect("cases") {
        let once = floats(&case["output"]);
        let mut twice = once.clone();
        match case["op"].as_str().expect("op") {
            "act_quant_fp8" => act_quant_fp8(&mut twice),
            "kv_fp8_sim" => kv_fp8_sim(&mut twice, case["nope"].as_u64().expect("nope") as usize),
            _ => fp4_sim(&mut twice),
        }
        assert_bits_eq(&twice, &once, &format!("{} twice", case["name"]));
    }
}

#[test]
fn act_quant_by_hand() {
    // amax = 3.5 → 3.5 / 448 = 2^-7 exactly → scale 2^-7; x / s = 128, −256, 0, 448 are all E4M3.
    let mut x = [1.0, -2.0, 0.0, 3.5];
    act_quant_fp8(&mut x);
    assert_eq!(x, [1.0, -2.0, 0.0, 3.5]);
    // amax = 1 → 1/448 → scale 2^-8 (448 · 2^-8 = 1.75 ≥ 1). 0.3 / 2^-8 = 76.8 → E4M3 step 8 in
    // [64, 128) → 80 → 80 · 2^-8 = 0.3125. 1.0 / 2^-8 = 256 exactly.
    let mut x = [1.0, 0.3, -0.0];
    act_quant_fp8(&mut x);
    assert_eq!(x, [1.0, 0.3125, -0.0]);
    assert!(x[2].is_sign_negative());
    // All zeros: the 1e-4 floor gives a finite scale and zeros stay zeros.
    let mut z = [0.0f32; 7];
    act_quant_fp8(&mut z);
    assert_eq!(z, [0.0; 7]);
    assert_eq!(fp8_block_scale(&[0.0; 4]), 127 - 22); // 2^ceil(log2(1e-4 / 448)) = 2^-22
}

#[test]
fn blocks_are_independent() {
    // act_quant over 300 values is act_quant over 128 + 128 + 44 separately.
    let x: Vec<f32> = (0..300)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * if i < 128 { 1e-3 } else { 10.0 })
        .collect();
    let mut whole = x.clone();
    act_quant_fp8(&mut whole);
    let mut parts = x.clone();
    for chunk in parts.chunks_mut(128) {
        act_quant_fp8(chunk);
    }
    assert_bits_eq(&whole, &parts, "act_quant blocks");

    // kv_fp8_sim leaves the rope dims alone and uses 64-blocks on the nope dims.
    let entry: Vec<f32> = (0..80).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let mut sim = entry.clone();
    kv_fp8_sim(&mut sim, 70);
    assert_bits_eq(&sim[70..], &entry[70..], "rope dims untouched");
    let mut manual = entry[..70].to_vec();
    for chunk in manual.chunks_mut(64) {
        act_quant_fp8(chunk); // same rule, one block per call
    }
    assert_bits_eq(&sim[..70], &manual, "nope blocks of 64");
}

#[test]
fn block_quantizers_agree_with_simulations() {
    let f = fixture();
    for case in f["cases"].as_array().expect("cases") {
        let x = floats(&case["input"]);
        let want = floats(&case["output"]);
        let op = case["op"].as_str().expect("op");
        let (len, block) = match op {
            "act_quant_fp8" => (x.len(), ACT_BLOCK),
            "kv_fp8_sim" => (case["nope"].as_u64().expect("nope") as usize, KV_FP8_BLOCK),
            _ => (x.len(), FP4_BLOCK),
        };
        for (i, (xb, wb)) in x[..len]
            .chunks(block)
            .zip(want[..len].chunks(block))
            .enumerate()
        {
            let mut codes = vec![0u8; xb.len()];
            let (s, table): (u8, fn(u8) -> f32) = if op == "fp4_sim" {
                (fp4_quantize_block(xb, &mut codes), |c| {
                    dsv4_formats::formats::E2M1_VALUES[usize::from(c)]
                })
            } else {
                (
                    fp8_quantize_block(xb, &mut codes),
                    dsv4_formats::formats::e4m3_to_f32,
                )
            };
            let s = e8m0_to_f32(s).expect("finite scale");
            let got: Vec<f32> = codes.iter().map(|&c| table(c) * s).collect();
            assert_bits_eq(&got, wb, &format!("{} block {i}", case["name"]));
        }
    }
}

#[test]
fn fp4_by_hand() {
    // amax = 6 → scale 1: ties 0.25 → 0, 0.75 → 1, 1.25 → 1, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4.
    let mut x = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -5.0];
    fp4_sim(&mut x);
    assert_eq!(x, [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.0, -4.0]);
    assert!(x[8].is_sign_negative());
    // amax = 1 → 1/6 → scale 2^-2 (6 · 0.25 = 1.5 ≥ 1): 1.0 → 4 · 0.25, 0.3 → 1.2 → 1 → 0.25.
    let mut y = [1.0, 0.3];
    fp4_sim(&mut y);
    assert_eq!(y, [1.0, 0.25]);
    // Zeros: the floor 6·2^-126 gives scale 2^-126 (byte 1).
    assert_eq!(fp4_block_scale(&[0.0; 32]), 1);
}

fn sylvester_reference(x: &[f32]) -> Vec<f64> {
    let n = x.len();
    (0..n)
        .map(|j| {
            let s: f64 = (0..n)
                .map(|i| {
                    let sign = if (i & j).count_ones() % 2 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    f64::from(x[i]) * sign
                })
                .sum();
            s / (n as f64).sqrt()
        })
        .collect()
}

#[test]
fn hadamard_by_hand_n4() {
    // H_4 (Sylvester) rows: [1 1 1 1], [1 −1 1 −1], [1 1 −1 −1], [1 −1 −1 1].
    // x·H = [1+2+3+4, 1−2+3−4, 1+2−3−4, 1−2−3+4] = [10, −2, −4, 0]; / √4 → [5, −1, −2, 0].
    let mut x = [1.0, 2.0, 3.0, 4.0];
    hadamard(&mut x).expect("power of two");
    assert_eq!(x, [5.0, -1.0, -2.0, 0.0]);
    // n = 2: [a, b] → [a + b, a − b] / √2.
    let mut y = [1.0, 0.0];
    hadamard(&mut y).expect("power of two");
    assert_eq!(y, [std::f32::consts::FRAC_1_SQRT_2; 2]);
    let mut one = [3.5];
    hadamard(&mut one).expect("power of two");
    assert_eq!(one, [3.5]);
}

#[test]
fn hadamard_matches_float64_reference() {
    let f = fixture();
    for case in f["hadamard"].as_array().expect("hadamard") {
        let mut x = floats(&case["input"]);
        let want: Vec<f64> = case["output_f64"]
            .as_array()
            .expect("output")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        // Our own O(n²) definition agrees with the generator's matrix product.
        for (a, b) in sylvester_reference(&x).iter().zip(&want) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()));
        }
        let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt();
        hadamard(&mut x).expect("power of two");
        let n = x.len();
        for (i, (g, w)) in x.iter().zip(&want).enumerate() {
            // f32 butterflies: log2(n) additions, errors bounded by a few ulps of the norm.
            let tol = 4.0 * f64::from(f32::EPSILON) * (n as f64).log2().max(1.0) * norm;
            assert!(
                (f64::from(*g) - w).abs() <= tol,
                "n={n} element {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn hadamard_is_an_involution() {
    // H/√n is symmetric and orthogonal: applying it twice gives the input back.
    for n in [1usize, 2, 4, 16, 128, 1024] {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 4.0)
            .collect();
        let mut y = x.clone();
        hadamard(&mut y).expect("power of two");
        let energy_in: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum();
        let energy_out: f64 = y.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!(
            (energy_in - energy_out).abs() <= 1e-5 * energy_in.max(1.0),
            "n={n}: norm"
        );
        hadamard(&mut y).expect("power of two");
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            assert!((a - b).abs() <= 1e-6, "n={n} element {i}: {a} vs {b}");
        }
    }
}

#[test]
fn hadamard_rejects_other_lengths() {
    for n in [0usize, 3, 6, 100, 129] {
        let mut x = vec![1.0f32; n];
        assert_eq!(hadamard(&mut x), Err(NotPowerOfTwo(n)));
        assert!(x.iter().all(|&v| v == 1.0), "input left unchanged");
    }
    assert_eq!(
        NotPowerOfTwo(3).to_string(),
        "the Hadamard transform needs a power-of-two length, got 3"
    );
}
