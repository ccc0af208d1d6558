//! Payloads: deterministic bytes to send, and a comparison that names the first byte that
//! differs. The benchmark includes this file by path.

#![allow(dead_code)] // the benchmark uses only `pattern`

/// Asserts two byte strings are equal, reporting the first difference instead of both blobs.
pub fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "echo differs at byte {at}: got {:#04x}, want {:#04x}",
            got[at], want[at]
        );
    }
    assert_eq!(got.len(), want.len(), "echo length differs");
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
