//! Cost of a request from its token counts: a small built-in table of list
//! prices, overridden and extended by `[[pricing]]` in the config.
//!
//! Prices are USD per million tokens. A model missing from both costs 0 and
//! is reported once in the log, so an operator knows to add it.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Mutex;

use floodgate_protocol::Usage;

use crate::config::PriceConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Price {
    input: f64,
    output: f64,
    /// Cached input tokens; the input price when unknown.
    cache_read: Option<f64>,
}

/// List prices at the time of writing (USD per million tokens).
const BUILT_IN: &[(&str, f64, f64, Option<f64>)] = &[
    ("gpt-4o", 2.50, 10.00, Some(1.25)),
    ("gpt-4o-mini", 0.15, 0.60, Some(0.075)),
    ("gpt-4.1", 2.00, 8.00, Some(0.50)),
    ("gpt-4.1-mini", 0.40, 1.60, Some(0.10)),
    ("gpt-4.1-nano", 0.10, 0.40, Some(0.025)),
    ("o4-mini", 1.10, 4.40, Some(0.275)),
    ("text-embedding-3-small", 0.02, 0.0, None),
    ("text-embedding-3-large", 0.13, 0.0, None),
    ("claude-haiku-4-5", 1.00, 5.00, Some(0.10)),
    ("claude-sonnet-4-5", 3.00, 15.00, Some(0.30)),
    ("claude-opus-4-1", 15.00, 75.00, Some(1.50)),
    ("claude-3-5-haiku-latest", 0.80, 4.00, Some(0.08)),
    ("gemini-2.5-flash", 0.30, 2.50, Some(0.075)),
    ("gemini-2.5-pro", 1.25, 10.00, Some(0.31)),
    ("gemini-2.0-flash", 0.10, 0.40, Some(0.025)),
    // The built-in mock provider's model: free, and known, so it is not reported.
    ("mock", 0.0, 0.0, None),
];

#[derive(Debug)]
pub struct PriceTable {
    prices: HashMap<String, Price, foldhash::fast::RandomState>,
    unknown_reported: Mutex<HashSet<String>>,
}

impl PriceTable {
    pub fn new(overrides: &[PriceConfig]) -> Self {
        let mut prices: HashMap<String, Price, foldhash::fast::RandomState> = BUILT_IN
            .iter()
            .map(|(model, input, output, cache_read)| {
                (
                    model.to_string(),
                    Price { input: *input, output: *output, cache_read: *cache_read },
                )
            })
            .collect();
        for p in overrides {
            prices.insert(
                p.model.clone(),
                Price {
                    input: p.input_usd_per_mtok,
                    output: p.output_usd_per_mtok,
                    cache_read: p.cache_read_usd_per_mtok,
                },
            );
        }
        PriceTable { prices, unknown_reported: Mutex::new(HashSet::new()) }
    }

    /// Cost in USD of `usage` on upstream model `model`.
    pub fn cost(&self, model: &str, usage: &Usage) -> f64 {
        let Some(price) = self.lookup(model) else {
            if let Ok(mut seen) = self.unknown_reported.lock()
                && seen.len() < 1000
                && seen.insert(model.to_string())
            {
                tracing::info!(
                    model,
                    "no price known for this model; its cost is recorded as 0 (add [[pricing]])"
                );
            }
            return 0.0;
        };
        let cached = f64::from(usage.cache_read_tokens.min(usage.input_tokens));
        let uncached = f64::from(usage.input_tokens) - cached;
        let cache_price = price.cache_read.unwrap_or(price.input);
        (uncached * price.input
            + cached * cache_price
            + f64::from(usage.output_tokens) * price.output)
            / 1_000_000.0
    }

    /// Exact name, else the longest known name the model starts with, so
    /// dated snapshots (`gpt-4o-mini-2024-07-18`) find their family's price.
    fn lookup(&self, model: &str) -> Option<Price> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        if let Some(price) = self.prices.get(model) {
            return Some(*price);
        }
        self.prices
            .iter()
            .filter(|(name, _)| {
                model.starts_with(name.as_str()) && model.as_bytes().get(name.len()) == Some(&b'-')
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| *price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u32, output: u32, cached: u32) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cached,
            ..Usage::default()
        }
    }

    #[test]
    fn built_in_override_and_snapshot_names() {
        let table = PriceTable::new(&[PriceConfig {
            model: "gpt-4o-mini".into(),
            input_usd_per_mtok: 1.0,
            output_usd_per_mtok: 2.0,
            cache_read_usd_per_mtok: None,
        }]);
        assert!((table.cost("gpt-4o-mini", &usage(1_000_000, 1_000_000, 0)) - 3.0).abs() < 1e-9);
        // A dated snapshot takes its family's price, not a shorter prefix's.
        assert!((table.cost("gpt-4o-2024-08-06", &usage(1_000_000, 0, 0)) - 2.5).abs() < 1e-9);
        assert!((table.cost("gpt-4o-mini-2024-07-18", &usage(1_000_000, 0, 0)) - 1.0).abs() < 1e-9);
        assert_eq!(table.cost("unknown-model", &usage(10, 10, 0)), 0.0);
    }

    #[test]
    fn cached_tokens_take_the_cache_price() {
        let table = PriceTable::new(&[]);
        let cost = table.cost("gpt-4o", &usage(1_000_000, 0, 400_000));
        assert!((cost - (0.6 * 2.5 + 0.4 * 1.25)).abs() < 1e-9);
    }
}
