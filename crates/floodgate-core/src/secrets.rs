//! Keeping secrets out of everything we emit.
//!
//! Keys are held as [`SecretString`] (masked in `Debug`). Upstream error
//! messages are the one place a secret can come back to us from outside: real
//! providers echo a rejected key, whole or partly masked ("Incorrect API key
//! provided: sk-abc***xyz"). Every upstream message goes through
//! [`Scrubber::scrub`] before it reaches a log line, a metric or a response.

use std::borrow::Cow;

use secrecy::{ExposeSecret, SecretString};

const REDACTED: &str = "[REDACTED]";
/// Length of the head and tail of a key that, seen in a word, redact the word.
const FRAGMENT: usize = 6;

#[derive(Debug, Default)]
pub struct Scrubber {
    secrets: Vec<SecretString>,
}

impl Scrubber {
    pub fn new(secrets: impl IntoIterator<Item = SecretString>) -> Self {
        let mut secrets: Vec<SecretString> =
            secrets.into_iter().filter(|s| !s.expose_secret().is_empty()).collect();
        // Longest first, so a key that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.expose_secret().len()));
        Scrubber { secrets }
    }

    /// Replaces every known secret, and every word holding the head or tail
    /// of one (a partly masked echo), with `[REDACTED]`.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            let secret = secret.expose_secret();
            if out.contains(secret) {
                out = Cow::Owned(out.replace(secret, REDACTED));
            }
            if secret.len() >= 2 * FRAGMENT + 4 {
                let head = &secret[..floor_boundary(secret, FRAGMENT)];
                let tail = &secret[ceil_boundary(secret, secret.len() - FRAGMENT)..];
                if out.contains(head) || out.contains(tail) {
                    out = Cow::Owned(redact_words(&out, head, tail));
                }
            }
        }
        out
    }
}

fn redact_words(text: &str, head: &str, tail: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains(head) || word.contains(tail) {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '(' | ')') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new([SecretString::from("sk-live-abcdef0123456789xyz")])
    }

    #[test]
    fn whole_key_is_redacted() {
        let out = scrubber().scrub("bad key sk-live-abcdef0123456789xyz given");
        assert_eq!(out, "bad key [REDACTED] given");
    }

    #[test]
    fn partly_masked_echo_is_redacted() {
        let out = scrubber().scrub("Incorrect API key provided: sk-liv***9xyz. See docs.");
        assert_eq!(out, "Incorrect API key provided: [REDACTED] See docs.");
        let out = scrubber().scrub("key ending 456789xyz rejected");
        assert_eq!(out, "key ending [REDACTED] rejected");
    }

    #[test]
    fn unrelated_text_is_untouched_and_borrowed() {
        let out = scrubber().scrub("model not found");
        assert!(matches!(out, Cow::Borrowed("model not found")));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
