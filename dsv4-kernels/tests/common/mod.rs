//! Deterministic test data shared by the kernel tests.

/// A pseudo-random byte stream (a 64-bit LCG's top byte), the same on every machine.
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
