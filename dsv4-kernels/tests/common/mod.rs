//! Deterministic test data shared by the kernel tests.

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
