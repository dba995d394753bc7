//! Cache entry layouts (docs/model.md §6): byte counts, bytes against an independent numpy +
//! ml_dtypes encoder (fixtures/quant.json, `codec` section, made by make_quant.py), round trips
//! against the reference simulations, and small layouts worked out by hand.

mod common;

use dsv4_formats::cache_codec::*;
use dsv4_formats::quant::{fp4_sim, kv_fp8_sim};
use serde_json::Value;

use common::{assert_bits_eq, floats_from_bits as floats, quant_fixture as fixture};

fn hex(s: &Value) -> Vec<u8> {
    let s = s.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn bf16_round(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// Deterministic test values spread over many binades, with a few signed zeros.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let binade = ((state >> 20) % 24) as i32 - 12;
            if i % 97 == 5 {
                -0.0
            } else {
                u * (binade as f32).exp2()
            }
        })
        .collect()
}

#[test]
fn byte_counts_match_contract_section_5() {
    // V4 dims: Dh = 512, Dr = 64, Di = 128.
    assert_eq!(kv_entry_bytes(KvFormat::F32, 512, 64), 2048);
    assert_eq!(kv_entry_bytes(KvFormat::Bf16, 512, 64), 1024);
    assert_eq!(kv_entry_bytes(KvFormat::Fp8, 512, 64), 448 + 128 + 8);
    assert_eq!(KvFormat::Fp8.entry_bytes(512, 64), 584);
    assert_eq!(indexer_key_bytes(IndexerFormat::Bf16, 128), 256);
    assert_eq!(indexer_key_bytes(IndexerFormat::Fp8, 128), 132);
    assert_eq!(indexer_key_bytes(IndexerFormat::Fp4, 128), 68);
    assert_eq!(IndexerFormat::Fp4.key_bytes(128), 64 + 4);
    // Scale padding (same numbers as dsv4-cache's own tests): 48 nope dims → 1 scale → 8 bytes;
    // 576 nope dims → 9 scales → 16 bytes.
    assert_eq!(kv_entry_bytes(KvFormat::Fp8, 64, 16), 48 + 32 + 8);
    assert_eq!(kv_entry_bytes(KvFormat::Fp8, 640, 64), 576 + 128 + 16);
    // No nope dims, no scales.
    assert_eq!(kv_entry_bytes(KvFormat::Fp8, 64, 64), 128);
}

#[test]
fn encoders_match_the_independent_generator_byte_for_byte() {
    let f = fixture();
    let codec = &f["codec"];
    for e in codec["kv_fp8"].as_array().expect("kv_fp8") {
        let x = floats(&e["input"]);
        let rope = e["rope"].as_u64().expect("rope") as usize;
        assert_eq!(x.len() as u64, e["width"].as_u64().expect("width"));
        let want = hex(&e["bytes"]);
        let mut got = vec![0xAAu8; KvFormat::Fp8.entry_bytes(x.len(), rope)];
        KvFormat::Fp8.encode(&x, rope, &mut got).expect("encode");
        assert_eq!(got, want, "kv fp8 width {} rope {rope}", x.len());
    }
    for e in codec["kv_bf16"].as_array().expect("kv_bf16") {
        let x = floats(&e["input"]);
        let mut got = vec![0u8; 2 * x.len()];
        KvFormat::Bf16.encode(&x, 0, &mut got).expect("encode");
        assert_eq!(got, hex(&e["bytes"]), "kv bf16");
        let mut got = vec![0u8; 2 * x.len()];
        IndexerFormat::Bf16.encode(&x, &mut got).expect("encode");
        assert_eq!(got, hex(&e["bytes"]), "indexer bf16");
    }
    for (key, format) in [
        ("indexer_fp8", IndexerFormat::Fp8),
        ("indexer_fp4", IndexerFormat::Fp4),
    ] {
        for (i, e) in codec[key].as_array().expect(key).iter().enumerate() {
            let x = floats(&e["input"]);
            let mut got = vec![0xAAu8; format.key_bytes(x.len())];
            format.encode(&x, &mut got).expect("encode");
            assert_eq!(got, hex(&e["bytes"]), "{key} case {i}");
        }
    }
}

#[test]
fn fp8_entry_layout_by_hand() {
    // Dh = 6, Dr = 2: nope [1, −2, 0, 3.5] has amax 3.5 → 3.5/448 = 2^-7 → scale byte 120 (0x78).
    // x / 2^-7 = 128 (0x70), −256 (0xF8), 0 (0x00), 448 (0x7E). Rope [1, −0.5] in BF16 LE:
    // 0x3F80 → 80 3F, 0xBF00 → 00 BF. Then 1 scale byte + 7 zero pad bytes.
    let x = [1.0, -2.0, 0.0, 3.5, 1.0, -0.5];
    let mut bytes = [0xAAu8; 16];
    assert_eq!(KvFormat::Fp8.entry_bytes(6, 2), 16);
    KvFormat::Fp8.encode(&x, 2, &mut bytes).expect("encode");
    assert_eq!(
        bytes,
        [0x70, 0xF8, 0x00, 0x7E, 0x80, 0x3F, 0x00, 0xBF, 0x78, 0, 0, 0, 0, 0, 0, 0]
    );
    let mut back = [0.0f32; 6];
    KvFormat::Fp8.decode(&bytes, 2, &mut back).expect("decode");
    assert_eq!(back, x);

    // Two nope blocks (65 dims): the 65th value gets its own scale, byte 9 of the scale area is
    // still padding. Block 0 all 1.0 → scale 2^-8 (byte 119), codes 256 = 0x78; block 1 = [0.5]
    // → scale 2^-9 (byte 118), code 0x78 again.
    let mut x = vec![1.0f32; 65];
    x[64] = 0.5;
    x.push(2.0); // one rope dim
    let mut bytes = vec![0u8; KvFormat::Fp8.entry_bytes(66, 1)];
    assert_eq!(bytes.len(), 65 + 2 + 8);
    KvFormat::Fp8.encode(&x, 1, &mut bytes).expect("encode");
    assert!(bytes[..65].iter().all(|&b| b == 0x78));
    assert_eq!(&bytes[65..67], &[0x00, 0x40]); // BF16 2.0 = 0x4000
    assert_eq!(&bytes[67..], &[119, 118, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn indexer_layouts_by_hand() {
    // FP4, 4 values [1, −3, 0.25, 6]: amax 6 → scale 1 (byte 127). Codes 2, 13 (sign|5), 0 (0.25
    // ties to even 0), 7. Bytes: 2 | 13 << 4 = 0xD2, 0 | 7 << 4 = 0x70, then the scale 0x7F.
    let mut bytes = [0u8; 3];
    IndexerFormat::Fp4
        .encode(&[1.0, -3.0, 0.25, 6.0], &mut bytes)
        .expect("encode");
    assert_eq!(bytes, [0xD2, 0x70, 0x7F]);
    let mut back = [9.0f32; 4];
    IndexerFormat::Fp4
        .decode(&bytes, &mut back)
        .expect("decode");
    assert_eq!(back, [1.0, -3.0, 0.0, 6.0]);

    // FP8, 4 values [2, −1, 0, 0.5]: amax 2 → 2/448 → 2^ceil(−7.8) = 2^-7. Codes 256 (0x78),
    // −128 (0xF0), 0, 64 (0x68); scale 2^-7 as f32 LE = 0x3C000000 → 00 00 00 3C.
    let mut bytes = [0u8; 8];
    IndexerFormat::Fp8
        .encode(&[2.0, -1.0, 0.0, 0.5], &mut bytes)
        .expect("encode");
    assert_eq!(bytes, [0x78, 0xF0, 0x00, 0x68, 0x00, 0x00, 0x00, 0x3C]);

    // Odd width: 3 FP4 values take 2 packed bytes, the last high nibble zero.
    let mut bytes = [0xFFu8; 3];
    IndexerFormat::Fp4
        .encode(&[6.0, 1.0, -6.0], &mut bytes)
        .expect("encode");
    assert_eq!(bytes, [0x27, 0x0F, 0x7F]);
    let mut back = [0.0f32; 3];
    IndexerFormat::Fp4
        .decode(&bytes, &mut back)
        .expect("decode");
    assert_eq!(back, [6.0, 1.0, -6.0]);
}

#[test]
fn f32_and_bf16_round_trips() {
    let mut x = values(512, 1);
    x[3] = f32::MAX;
    x[4] = f32::from_bits(1); // smallest subnormal
    let mut bytes = vec![0u8; KvFormat::F32.entry_bytes(512, 64)];
    KvFormat::F32.encode(&x, 64, &mut bytes).expect("encode");
    let mut back = vec![0.0f32; 512];
    KvFormat::F32.decode(&bytes, 64, &mut back).expect("decode");
    assert_bits_eq(&back, &x, "f32 exact");

    let mut bytes = vec![0u8; KvFormat::Bf16.entry_bytes(512, 64)];
    KvFormat::Bf16.encode(&x, 64, &mut bytes).expect("encode");
    KvFormat::Bf16
        .decode(&bytes, 64, &mut back)
        .expect("decode");
    for (i, (&b, &v)) in back.iter().zip(&x).enumerate() {
        assert_eq!(b.to_bits(), bf16_round(v).to_bits(), "element {i}");
        if v.is_normal() && b.is_finite() {
            // Round to nearest: within half a BF16 ulp (2^-8 relative).
            assert!((b - v).abs() <= v.abs() * 2f32.powi(-8), "element {i}");
        }
    }
    // BF16 ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 → 1.
    let mut b = [0u8; 2];
    IndexerFormat::Bf16
        .encode(&[1.0 + 2f32.powi(-8)], &mut b)
        .expect("encode");
    assert_eq!(b, [0x80, 0x3F]);
}

#[test]
fn fp8_entry_round_trip_is_the_reference_simulation() {
    for (width, rope, seed) in [
        (512usize, 64usize, 7u64),
        (96, 16, 8),
        (600, 24, 9),
        (70, 6, 10),
    ] {
        let x = values(width, seed);
        let nope = width - rope;
        let mut sim = x.clone();
        kv_fp8_sim(&mut sim, nope);

        let mut bytes = vec![0u8; KvFormat::Fp8.entry_bytes(width, rope)];
        let mut back = vec![0.0f32; width];

        // Encoding the simulated entry is exact on the nope dims; rope dims come back as BF16.
        KvFormat::Fp8
            .encode(&sim, rope, &mut bytes)
            .expect("encode");
        KvFormat::Fp8
            .decode(&bytes, rope, &mut back)
            .expect("decode");
        assert_bits_eq(&back[..nope], &sim[..nope], "nope of encode(sim(x))");
        let rope_bf16: Vec<f32> = x[nope..].iter().map(|&v| bf16_round(v)).collect();
        assert_bits_eq(&back[nope..], &rope_bf16, "rope dims are bf16(x)");

        // Encoding the raw entry applies the same rule: the cache holds sim(x) either way.
        KvFormat::Fp8.encode(&x, rope, &mut bytes).expect("encode");
        KvFormat::Fp8
            .decode(&bytes, rope, &mut back)
            .expect("decode");
        assert_bits_eq(&back[..nope], &sim[..nope], "nope of encode(x)");

        // An entry whose rope dims are already BF16 survives bit for bit.
        let mut stored = sim.clone();
        for v in &mut stored[nope..] {
            *v = bf16_round(*v);
        }
        KvFormat::Fp8
            .encode(&stored, rope, &mut bytes)
            .expect("encode");
        KvFormat::Fp8
            .decode(&bytes, rope, &mut back)
            .expect("decode");
        assert_bits_eq(&back, &stored, "whole entry");
    }
}

#[test]
fn fp4_key_round_trip_is_the_reference_simulation() {
    for (width, seed) in [(128usize, 11u64), (96, 12), (33, 13)] {
        let x = values(width, seed);
        let mut sim = x.clone();
        fp4_sim(&mut sim);
        let mut bytes = vec![0u8; IndexerFormat::Fp4.key_bytes(width)];
        let mut back = vec![0.0f32; width];
        IndexerFormat::Fp4.encode(&x, &mut bytes).expect("encode");
        IndexerFormat::Fp4
            .decode(&bytes, &mut back)
            .expect("decode");
        assert_bits_eq(&back, &sim, "decode(encode(x)) = fp4_sim(x)");
        IndexerFormat::Fp4.encode(&sim, &mut bytes).expect("encode");
        IndexerFormat::Fp4
            .decode(&bytes, &mut back)
            .expect("decode");
        assert_bits_eq(&back, &sim, "decode(encode(fp4_sim(x))) = fp4_sim(x)");
    }
}

#[test]
fn fp8_key_scale_is_a_power_of_two_and_fp4_keys_survive() {
    // Indexer keys as the reference leaves them (FP4-simulated) fit the per-key FP8 layout
    // exactly when their block scales lie within E4M3's range of each other (here, 4 binades).
    let mut x = values(128, 21);
    for (b, chunk) in x.chunks_mut(32).enumerate() {
        for v in chunk {
            *v = (*v).clamp(-0.5, 0.5) * (b as f32).exp2();
        }
    }
    fp4_sim(&mut x);
    let mut bytes = [0u8; 132];
    IndexerFormat::Fp8.encode(&x, &mut bytes).expect("encode");
    let s = f32::from_le_bytes([bytes[128], bytes[129], bytes[130], bytes[131]]);
    assert!(
        s > 0.0 && s.to_bits() & 0x007F_FFFF == 0,
        "power of two: {s}"
    );
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        448.0 * s >= amax && 448.0 * s / 2.0 < amax,
        "smallest such power"
    );
    let mut back = [0.0f32; 128];
    IndexerFormat::Fp8
        .decode(&bytes, &mut back)
        .expect("decode");
    assert_bits_eq(&back, &x, "fp4-simulated key through the fp8 layout");

    // A plain-scaled (non power of two) f32 scale, as vLLM writes without ue8m0, decodes too.
    let mut bytes = [0u8; 5];
    bytes[0] = 0x38; // E4M3 1.0
    bytes[1..].copy_from_slice(&0.3f32.to_le_bytes());
    let mut one = [0.0f32];
    IndexerFormat::Fp8.decode(&bytes, &mut one).expect("decode");
    assert_eq!(one, [0.3]);
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let x = [1.0f32; 8];
    let mut small = [0u8; 10];
    assert_eq!(
        KvFormat::Fp8.encode(&x, 2, &mut small),
        Err(CodecError::ByteCount {
            width: 8,
            expected: 6 + 4 + 8,
            got: 10
        })
    );
    assert_eq!(small, [0u8; 10], "out untouched on error");
    assert_eq!(
        KvFormat::Bf16.encode(&x, 9, &mut [0u8; 16]),
        Err(CodecError::RopeExceedsWidth { rope: 9, width: 8 })
    );
    let mut out = [0.0f32; 8];
    assert!(matches!(
        KvFormat::F32.decode(&[0u8; 31], 0, &mut out),
        Err(CodecError::ByteCount { .. })
    ));
    assert!(matches!(
        IndexerFormat::Fp4.encode(&x, &mut [0u8; 4]),
        Err(CodecError::ByteCount { expected: 5, .. })
    ));

    // A NaN scale byte (0xFF) is corruption, reported with its block.
    let mut bytes = [0u8; 18];
    KvFormat::Fp8.encode(&x, 2, &mut bytes).expect("encode");
    bytes[10] = 0xFF;
    assert_eq!(
        KvFormat::Fp8.decode(&bytes, 2, &mut out),
        Err(CodecError::NanScale { block: 0 })
    );
    let mut key = [0u8; 5];
    IndexerFormat::Fp4.encode(&x, &mut key).expect("encode");
    key[4] = 0xFF;
    assert_eq!(
        IndexerFormat::Fp4.decode(&key, &mut out),
        Err(CodecError::NanScale { block: 0 })
    );
    let mut key = [0u8; 12];
    IndexerFormat::Fp8.encode(&x, &mut key).expect("encode");
    key[8..].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert_eq!(
        IndexerFormat::Fp8.decode(&key, &mut out),
        Err(CodecError::BadScale(f32::INFINITY.to_bits()))
    );
    assert_eq!(
        CodecError::BadScale(f32::INFINITY.to_bits()).to_string(),
        "indexer key scale with bits 0x7f800000 is not a positive finite number"
    );
}
