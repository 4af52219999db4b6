//! The `--scenario` file: a population of simulated chat users, so that "10,000 chat users" is
//! one command.
//!
//! Schema (TOML, unknown keys refused, every problem reported with its line):
//!
//! ```toml
//! users = 10000        # concurrent simulated users (each a closed loop with think time); required
//! duration = "60s"     # default for --duration
//! ramp_up = "10s"      # users start evenly spread over this time (default 0: all at once)
//!
//! [[mix]]              # at least one; each request picks an entry with probability weight/sum
//! weight = 3           # default 1; at least 1
//! model = "gpt"        # default: --model
//! stream = true        # default: --stream
//! prompt_tokens = 200  # default: --prompt-tokens
//! max_tokens = 100     # default: --max-tokens
//! think_time = "5s"    # mean of an exponential pause between a user's requests (default 0)
//! ```
//!
//! Each user loops: pick a mix entry by weight, send, await the whole answer, think, repeat, until
//! the duration is over.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::error::BenchError;

/// A user population (see the module documentation for the file format).
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Concurrent simulated users.
    pub users: usize,
    /// The run's duration when `--duration` is not given.
    pub duration: Option<Duration>,
    /// Users start evenly spread over this time.
    pub ramp_up: Duration,
    /// The kinds of request users send, at least one.
    pub mix: Vec<MixEntry>,
}

/// One kind of request in a [`Scenario`]; `None` fields take the command line's value.
#[derive(Debug, Clone, PartialEq)]
pub struct MixEntry {
    /// Relative frequency, at least 1.
    pub weight: u32,
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub prompt_tokens: Option<u32>,
    pub max_tokens: Option<u32>,
    /// Mean of the exponential pause after each request of this kind.
    pub think_time: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    users: Spanned<u64>,
    duration: Option<HumanDuration>,
    ramp_up: Option<HumanDuration>,
    mix: Option<Spanned<Vec<RawMix>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMix {
    weight: Option<Spanned<u32>>,
    model: Option<String>,
    stream: Option<bool>,
    prompt_tokens: Option<Spanned<u32>>,
    max_tokens: Option<u32>,
    think_time: Option<HumanDuration>,
}

/// A duration written the humantime way ("500ms", "5s", "2m").
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(HumanDuration).map_err(|error| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({error}); write e.g. \"500ms\", \"5s\" or \"2m\""
            ))
        })
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| BenchError::ReadScenario { path: path.to_path_buf(), source })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and checks scenario text; `file` names it in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, BenchError> {
        let problem =
            |span: Option<std::ops::Range<usize>>, message: String| BenchError::Scenario {
                file: file.to_string(),
                line: span.map(|s| line_of(text, s.start)),
                message,
            };
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| problem(e.span(), e.message().to_string()))?;
        let users = usize::try_from(*raw.users.get_ref())
            .ok()
            .filter(|users| *users >= 1)
            .ok_or_else(|| problem(Some(raw.users.span()), "users must be at least 1".into()))?;
        let Some(raw_mix) = raw.mix else {
            return Err(problem(None, "at least one [[mix]] entry is needed".into()));
        };
        let mix_span = raw_mix.span();
        let raw_mix = raw_mix.into_inner();
        if raw_mix.is_empty() {
            return Err(problem(Some(mix_span), "at least one [[mix]] entry is needed".into()));
        }
        let mut mix = Vec::with_capacity(raw_mix.len());
        for entry in raw_mix {
            mix.push(mix_entry(entry).map_err(|(span, message)| problem(Some(span), message))?);
        }
        Ok(Scenario {
            users,
            duration: raw.duration.map(|d| d.0),
            ramp_up: raw.ramp_up.map_or(Duration::ZERO, |d| d.0),
            mix,
        })
    }
}

fn mix_entry(raw: RawMix) -> Result<MixEntry, (std::ops::Range<usize>, String)> {
    let weight = match raw.weight {
        Some(weight) if *weight.get_ref() == 0 => {
            return Err((
                weight.span(),
                "mix weight must be at least 1 (remove the entry to leave it out)".into(),
            ));
        }
        Some(weight) => weight.into_inner(),
        None => 1,
    };
    let prompt_tokens = match raw.prompt_tokens {
        Some(tokens) if *tokens.get_ref() == 0 => {
            return Err((tokens.span(), "prompt_tokens must be at least 1".into()));
        }
        other => other.map(Spanned::into_inner),
    };
    Ok(MixEntry {
        weight,
        model: raw.model,
        stream: raw.stream,
        prompt_tokens,
        max_tokens: raw.max_tokens,
        think_time: raw.think_time.map_or(Duration::ZERO, |d| d.0),
    })
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_counts_newlines_before_the_offset() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a", 99), 1);
    }
}
