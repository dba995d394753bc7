//! The number formats against ml_dtypes (fixtures/formats.json, made by make_formats.py) and
//! against values worked out by hand from docs/model.md §3.

mod common;

use common::bytes;

use dsv4_formats::formats::*;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/formats.json")).expect("fixture is JSON")
}

fn same(a: f32, b: &Value) -> bool {
    match b.as_f64() {
        None => a.is_nan(),
        Some(b) => a == b as f32 && a.is_sign_negative() == (b as f32).is_sign_negative(),
    }
}

#[test]
fn e4m3_decode_matches_ml_dtypes_for_every_byte() {
    let f = fixture();
    for (byte, want) in f["e4m3fn_decode"]
        .as_array()
        .expect("array")
        .iter()
        .enumerate()
    {
        let got = e4m3_to_f32(byte as u8);
        assert!(same(got, want), "byte {byte:#04x}: {got} vs {want}");
    }
}

#[test]
fn e8m0_decode_matches_ml_dtypes_for_every_byte() {
    let f = fixture();
    for (byte, want) in f["e8m0fnu_decode"]
        .as_array()
        .expect("array")
        .iter()
        .enumerate()
    {
        let got = e8m0_to_f32(byte as u8).unwrap_or(f32::NAN);
        assert!(same(got, want), "byte {byte}: {got} vs {want}");
        if let Some(v) = e8m0_to_f32(byte as u8) {
            assert_eq!(f32_to_e8m0(v), Some(byte as u8));
        }
    }
    // By hand: byte b is 2^(b − 127); 255 is NaN and has no value.
    assert_eq!(e8m0_to_f32(127), Some(1.0));
    assert_eq!(e8m0_to_f32(120), Some(1.0 / 128.0));
    assert_eq!(e8m0_to_f32(E8M0_NAN), None);
    assert_eq!(f32_to_e8m0(3.0), None);
}

#[test]
fn e2m1_table_matches_ml_dtypes() {
    let f = fixture();
    for (code, want) in f["e2m1fn_decode"]
        .as_array()
        .expect("array")
        .iter()
        .enumerate()
    {
        assert!(same(E2M1_VALUES[code], want), "code {code}");
    }
}

#[test]
fn encoders_round_to_nearest_even_like_ml_dtypes() {
    let f = fixture();
    for (key, encode) in [
        ("e4m3fn_encode", f32_to_e4m3 as fn(f32) -> u8),
        ("e2m1fn_encode", f32_to_e2m1 as fn(f32) -> u8),
    ] {
        let inputs = f[key]["inputs"].as_array().expect("inputs");
        let codes = f[key]["codes"].as_array().expect("codes");
        for (x, code) in inputs.iter().zip(codes) {
            let x = x.as_f64().expect("number") as f32;
            assert_eq!(
                u64::from(encode(x)),
                code.as_u64().expect("code"),
                "{key} of {x}"
            );
        }
    }
    // Saturation, which ml_dtypes does not do: the reference clamps to ±448 / ±6 before casting.
    assert_eq!(f32_to_e4m3(1000.0), 0x7E);
    assert_eq!(f32_to_e4m3(-1000.0), 0xFE);
    assert_eq!(f32_to_e2m1(7.5), 7);
    assert_eq!(f32_to_e2m1(-100.0), 15);
}

#[test]
fn fp4_nibbles_are_low_first() {
    // Byte 0x72: low nibble 2 (+1.0) is element 0, high nibble 7 (+6.0) is element 1.
    assert_eq!(fp4_unpack(0x72), (2, 7));
    assert_eq!(fp4_pack(2, 7), 0x72);
    // One row of 32 inputs, scale byte 128 (×2): elements alternate 1.0 and 6.0, times 2.
    let w = dequant_fp4_group(&[0x72; 16], &[2.0], 1, 32);
    assert_eq!(&w[..4], &[2.0, 12.0, 2.0, 12.0]);
}

#[test]
fn fp8_block_dequant_uses_the_block_grid() {
    // A 130 × 130 matrix of 1.0 (0x38) has a 2 × 2 grid; give each block its own scale.
    let q = vec![0x38u8; 130 * 130];
    let w = dequant_fp8_block(&q, &[1.0, 2.0, 4.0, 8.0], 130, 130);
    assert_eq!(w[0], 1.0);
    assert_eq!(w[129], 2.0);
    assert_eq!(w[128 * 130], 4.0);
    assert_eq!(w[129 * 130 + 129], 8.0);
}

#[test]
fn fp4_to_fp8_reencode_is_lossless() {
    let (out, inp) = (256, 384);
    let packed = bytes(out * inp / 2, 1);
    // Group scales spread over 4 binades around 2^-8, as real experts have.
    let scale_bytes: Vec<u8> = bytes(out * inp / 32, 2)
        .iter()
        .map(|b| 117 + b % 4)
        .collect();
    let scales: Vec<f32> = scale_bytes
        .iter()
        .map(|&b| e8m0_to_f32(b).expect("finite"))
        .collect();
    let fp8 = fp4_to_fp8(&packed, &scale_bytes, out, inp).expect("exact");
    assert_eq!(fp8.scales.len(), 2 * 3);
    // Tile scale = the tile's largest group scale / 2^6 (by hand for tile [0, 0]).
    let tile_max = (0..128)
        .flat_map(|o| scale_bytes[o * 12..][..4].iter().copied())
        .max()
        .expect("non-empty");
    assert_eq!(fp8.scales[0], tile_max - 6);
    let tile_scales: Vec<f32> = fp8
        .scales
        .iter()
        .map(|&b| e8m0_to_f32(b).expect("finite"))
        .collect();
    assert_eq!(
        dequant_fp8_block(&fp8.q, &tile_scales, out, inp),
        dequant_fp4_group(&packed, &scales, out, inp)
    );
}

#[test]
fn fp4_to_fp8_refuses_nan_and_inexact() {
    let packed = vec![0x11u8; 128 * 64];
    let mut scale_bytes = vec![127u8; 128 * 4];
    scale_bytes[5] = E8M0_NAN;
    assert_eq!(
        fp4_to_fp8(&packed, &scale_bytes, 128, 128),
        Err(ReencodeError::NanScale { row: 1, group: 1 })
    );
    // One group 2^-20 below its tile's largest: 0.5 · 2^-14 is below E4M3's smallest subnormal.
    let mut scale_bytes = vec![127u8; 128 * 4];
    scale_bytes[0] = 107;
    assert!(matches!(
        fp4_to_fp8(&packed, &scale_bytes, 128, 128),
        Err(ReencodeError::Inexact { row: 0, col: 0 })
    ));
}

#[test]
fn ue8m0_ceil_is_the_next_power_of_two() {
    // By hand: 1.0 → 2^0 (byte 127); 1.5 → 2^1; 448/448 → 2^0; 0.3 → 2^-1 (byte 126).
    assert_eq!(ue8m0_ceil(1.0), 127);
    assert_eq!(ue8m0_ceil(1.5), 128);
    assert_eq!(ue8m0_ceil(0.3), 126);
    assert_eq!(ue8m0_ceil(1e-4 / 448.0), 127 - 22);
    assert_eq!(ue8m0_ceil(0.0), 0);
    assert_eq!(ue8m0_ceil(f32::MAX), 254);
}
