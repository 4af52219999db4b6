//! Routing rules: send a request to other targets than the alias's when it
//! matches conditions, such as a cheap model for short prompts without tools
//! (what apps otherwise do by hand to save cost). Rules are tried in order;
//! the first whose every condition holds chooses the targets, else the
//! alias's own targets serve.

use super::Target;
use super::estimate::Tokenizer;
use crate::config::RuleConfig;

#[derive(Debug)]
pub struct Rule {
    max_prompt_tokens: Option<u32>,
    min_prompt_tokens: Option<u32>,
    tools: Option<bool>,
    images: Option<bool>,
    pub targets: Vec<Target>,
}

/// What rules look at in a request. The prompt is counted only if a rule
/// has a token condition (counting may run a tokenizer).
pub trait Features {
    fn prompt_tokens(&self, tokenizer: Tokenizer) -> u32;
    fn has_tools(&self) -> bool;
    fn has_images(&self) -> bool;
}

impl Rule {
    pub fn new(config: &RuleConfig, targets: Vec<Target>) -> Rule {
        Rule {
            max_prompt_tokens: config.max_prompt_tokens,
            min_prompt_tokens: config.min_prompt_tokens,
            tools: config.tools,
            images: config.images,
            targets,
        }
    }

    pub fn counts_tokens(&self) -> bool {
        self.max_prompt_tokens.is_some() || self.min_prompt_tokens.is_some()
    }

    /// `tokenizer` counts the prompt for token conditions.
    pub fn matches(&self, request: &dyn Features, tokenizer: Tokenizer) -> bool {
        if self.tools.is_some_and(|want| want != request.has_tools()) {
            return false;
        }
        if self.images.is_some_and(|want| want != request.has_images()) {
            return false;
        }
        if self.max_prompt_tokens.is_none() && self.min_prompt_tokens.is_none() {
            return true;
        }
        let tokens = request.prompt_tokens(tokenizer);
        self.max_prompt_tokens.is_none_or(|max| tokens <= max)
            && self.min_prompt_tokens.is_none_or(|min| tokens >= min)
    }
}

/// The first matching rule's index and targets, or `None` for the alias's own.
pub fn choose<'a>(
    rules: &'a [Rule],
    request: &dyn Features,
    tokenizer: Tokenizer,
) -> Option<(usize, &'a [Target])> {
    rules
        .iter()
        .enumerate()
        .find(|(_, rule)| !rule.targets.is_empty() && rule.matches(request, tokenizer))
        .map(|(i, rule)| (i, rule.targets.as_slice()))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct Req {
        tokens: u32,
        tools: bool,
        images: bool,
        counted: Cell<u32>,
    }

    impl Features for Req {
        fn prompt_tokens(&self, _: Tokenizer) -> u32 {
            self.counted.set(self.counted.get() + 1);
            self.tokens
        }
        fn has_tools(&self) -> bool {
            self.tools
        }
        fn has_images(&self) -> bool {
            self.images
        }
    }

    fn req(tokens: u32, tools: bool) -> Req {
        Req { tokens, tools, images: false, counted: Cell::new(0) }
    }

    fn rule(max: Option<u32>, min: Option<u32>, tools: Option<bool>) -> Rule {
        Rule {
            max_prompt_tokens: max,
            min_prompt_tokens: min,
            tools,
            images: None,
            targets: Vec::new(),
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let cheap = rule(Some(500), None, Some(false));
        assert!(cheap.matches(&req(100, false), Tokenizer::Approx));
        assert!(cheap.matches(&req(500, false), Tokenizer::Approx));
        assert!(!cheap.matches(&req(501, false), Tokenizer::Approx));
        assert!(!cheap.matches(&req(100, true), Tokenizer::Approx));
        let long = rule(None, Some(10_000), None);
        assert!(long.matches(&req(10_000, true), Tokenizer::Approx));
        assert!(!long.matches(&req(9_999, false), Tokenizer::Approx));
        let images = Rule { images: Some(true), ..rule(None, None, None) };
        assert!(!images.matches(&req(1, false), Tokenizer::Approx));
        assert!(images.matches(&Req { images: true, ..req(1, false) }, Tokenizer::Approx));
    }

    #[test]
    fn tokens_are_counted_only_when_a_condition_needs_them() {
        let r = req(100, true);
        assert!(!rule(Some(500), None, Some(false)).matches(&r, Tokenizer::Approx));
        assert_eq!(r.counted.get(), 0, "the tools condition failed first");
        assert!(rule(None, None, Some(true)).matches(&r, Tokenizer::Approx));
        assert_eq!(r.counted.get(), 0);
        assert!(rule(Some(500), None, None).matches(&r, Tokenizer::Approx));
        assert_eq!(r.counted.get(), 1);
    }
}
