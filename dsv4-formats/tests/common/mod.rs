//! Deterministic test data shared by the number-format tests here and the kernel tests of
//! `dsv4-kernels` (which include this file by path).

/// A pseudo-random byte stream (a 64-bit LCG's top byte), the same on every machine.
#[allow(dead_code)]
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Deterministic f32 values in [-2, 2).
#[allow(dead_code)]
pub fn floats(n: usize, seed: u64) -> Vec<f32> {
    bytes(n, seed)
        .iter()
        .map(|&b| (f32::from(b) - 127.5) / 64.0)
        .collect()
}

/// Whether two sums agree to float rounding, relative to the size of what was summed.
#[allow(dead_code)]
pub fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-5 * scale.max(1.0)
}

/// Finite E4M3 bytes (0x7F and 0xFF are NaN).
#[allow(dead_code)]
pub fn e4m3_bytes(n: usize, seed: u64) -> Vec<u8> {
    bytes(n, seed)
        .into_iter()
        .map(|b| if b & 0x7F == 0x7F { b - 1 } else { b })
        .collect()
}

/// The reference values made by fixtures/make_quant.py.
#[allow(dead_code)]
pub fn quant_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("../fixtures/quant.json")).expect("fixture is JSON")
}

/// f32 values stored as their bit patterns (so signed zeros survive JSON).
#[allow(dead_code)]
pub fn floats_from_bits(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array of f32 bit patterns")
        .iter()
        .map(|b| f32::from_bits(b.as_u64().expect("bits") as u32))
        .collect()
}

/// Bit-for-bit equality (signed zeros and NaN payloads included), naming the first difference.
#[allow(dead_code)]
pub fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}
