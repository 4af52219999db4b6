//! Deterministic embedding vectors: the same text always gets the same unit vector.
//!
//! The text is hashed with FNV-1a and the hash seeds a SplitMix64 sequence, both written out
//! here so that the vectors never change with a dependency's version.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The vector for `text` with `dimensions` components, normalised to length 1 (as OpenAI's and
/// Gemini's embeddings are).
pub fn embedding_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes());
    let mut values: Vec<f32> = (0..dimensions).map(|_| unit_interval(&mut state)).collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for value in &mut values {
            *value /= norm;
        }
    }
    values
}

/// `values` as base64 of their little-endian `f32` bytes (OpenAI's `encoding_format: base64`).
pub(crate) fn to_base64(values: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    STANDARD.encode(bytes)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The next SplitMix64 output mapped to `[-1, 1)`.
fn unit_interval(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // The top 24 bits fit an f32 mantissa exactly.
    let top = u32::try_from(z >> 40).unwrap_or(0);
    (top as f32 / (1u32 << 23) as f32) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_length_and_text_dependent() {
        let a = embedding_vector("hello", 16);
        assert_eq!(a, embedding_vector("hello", 16));
        assert_ne!(a, embedding_vector("hello!", 16));
        assert_eq!(a.len(), 16);
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(to_base64(&[1.0]), "AACAPw==");
        assert_eq!(to_base64(&[]), "");
    }
}
