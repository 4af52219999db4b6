//! Deterministic, similarity-preserving embedding vectors: the same text always gets the same
//! unit vector, and texts sharing most of their words get close ones.
//!
//! A text's vector is the normalised sum of its words' vectors (words: the text split on
//! whitespace, lowercased), so case and spacing do not matter, a 9-word sentence with one word
//! changed has cosine similarity about 8/9 with the original, and texts with no word in common
//! are near 0 apart. A text with no word (empty or only whitespace) gets the vector of its whole
//! text. Each vector comes from hashing its text with FNV-1a and seeding a SplitMix64 sequence
//! with the hash, both written out here so that the vectors never change with a dependency's
//! version.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The vector for `text` with `dimensions` components, normalised to length 1 (as OpenAI's and
/// Gemini's embeddings are).
pub fn embedding_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut values = vec![0.0f32; dimensions];
    let mut words = 0usize;
    for word in text.split_whitespace() {
        add_hashed(&mut values, &word.to_lowercase());
        words += 1;
    }
    if words == 0 {
        add_hashed(&mut values, text);
    }
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for value in &mut values {
            *value /= norm;
        }
    }
    values
}

/// Adds the (unnormalised) vector of `text`'s hash to `values`.
fn add_hashed(values: &mut [f32], text: &str) {
    let mut state = fnv1a(text.as_bytes());
    for value in values {
        *value += unit_interval(&mut state);
    }
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

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_deterministic_unit_length_and_text_dependent() {
        let a = embedding_vector("hello", 16);
        assert_eq!(a, embedding_vector("hello", 16));
        assert_ne!(a, embedding_vector("hello!", 16));
        assert_eq!(a.len(), 16);
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(embedding_vector("hello", 0).is_empty());
    }

    #[test]
    fn texts_sharing_most_words_are_close_and_others_are_not() {
        let dims = 256;
        let question = embedding_vector("What is the capital of France?", dims);
        // Case and whitespace do not count.
        let same = embedding_vector("  what is the CAPITAL\tof France? ", dims);
        assert!((cosine(&question, &same) - 1.0).abs() < 1e-5);

        // Nine words, one changed: about 8/9.
        let sentence = embedding_vector("the quick brown fox jumps over the lazy dog", dims);
        let changed = embedding_vector("the quick brown fox jumps over the lazy cat", dims);
        let similarity = cosine(&sentence, &changed);
        assert!(similarity > 0.5 && similarity < 0.95, "{similarity}");

        let unrelated = embedding_vector("pack my box with five dozen liquor jugs", dims);
        let similarity = cosine(&sentence, &unrelated);
        assert!(similarity.abs() < 0.3, "{similarity}");
        let similarity = cosine(&question, &unrelated);
        assert!(similarity.abs() < 0.3, "{similarity}");
    }

    #[test]
    fn text_without_words_keeps_the_whole_text_vector() {
        let (empty, blank, blanker) =
            (embedding_vector("", 8), embedding_vector(" ", 8), embedding_vector("  \n", 8));
        for vector in [&empty, &blank, &blanker] {
            let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
        assert_ne!(empty, blank);
        assert_ne!(blank, blanker);
        // A one-word text is that word's vector.
        assert_eq!(embedding_vector(" Hello ", 8), embedding_vector("hello", 8));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(to_base64(&[1.0]), "AACAPw==");
        assert_eq!(to_base64(&[]), "");
    }
}
