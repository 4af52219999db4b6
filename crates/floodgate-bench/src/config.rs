//! What to run: [`BenchConfig`] as the command line gives it, the argument parsers the CLI
//! shares, and the checked [`Plan`] the load generators follow.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;

use crate::error::BenchError;
use crate::request;
use crate::scenario::Scenario;

/// The open-loop in-flight cap when neither `--max-in-flight` nor `--connections` is given.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 20_000;

/// A benchmark run as asked for. Exactly one of `rate`, `concurrency` and `scenario` is set;
/// [`crate::run`] refuses anything else with [`BenchError::Usage`].
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The full endpoint, e.g. `http://127.0.0.1:8080/v1/chat/completions` (OpenAI body) or
    /// `.../v1/messages` (Anthropic body).
    pub url: String,
    /// Open loop: arrivals per second.
    pub rate: Option<f64>,
    /// Closed loop: workers, each with one request in flight.
    pub concurrency: Option<usize>,
    /// A user population.
    pub scenario: Option<Scenario>,
    /// The measured time (after the warm-up); required unless the scenario gives one.
    pub duration: Option<Duration>,
    /// Load sent before measuring starts, not recorded.
    pub warmup: Duration,
    pub stream: bool,
    pub model: String,
    pub key: Option<String>,
    /// At most this many TCP connections (see the crate documentation).
    pub connections: Option<usize>,
    /// Open loop: arrivals beyond this many requests in flight are dropped, not sent.
    pub max_in_flight: Option<usize>,
    /// Local addresses client sockets are bound to, round robin; empty: the system's choice.
    pub source_ips: Vec<IpAddr>,
    /// Approximate size of the user prompt (four characters a token).
    pub prompt_tokens: u32,
    /// `max_tokens` sent; Anthropic requires one, so 256 is sent there when this is `None`.
    pub max_tokens: Option<u32>,
    /// Per request, a stream's whole body included.
    pub timeout: Duration,
    /// No progress bar.
    pub quiet: bool,
    /// Free text carried into the reports.
    pub label: Option<String>,
}

impl BenchConfig {
    /// The defaults of the command line, for `url`, with no load chosen yet.
    pub fn new(url: impl Into<String>) -> Self {
        BenchConfig {
            url: url.into(),
            rate: None,
            concurrency: None,
            scenario: None,
            duration: None,
            warmup: Duration::ZERO,
            stream: false,
            model: "gpt-4o-mini".to_string(),
            key: None,
            connections: None,
            max_in_flight: None,
            source_ips: Vec::new(),
            prompt_tokens: 20,
            max_tokens: None,
            timeout: Duration::from_secs(60),
            quiet: false,
            label: None,
        }
    }
}

/// The wire format the endpoint speaks, from the URL's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `.../chat/completions`: OpenAI Chat Completions.
    OpenAi,
    /// `.../messages`: Anthropic Messages.
    Anthropic,
}

/// Parses a humantime duration ("30s", "2m", "1500ms"), for clap's `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error} (write e.g. \"30s\" or \"2m\")"))
}

/// Parses `--source-ips`: one address, or an IPv4 range `A-B` (both ends included, at most 256).
pub fn parse_ip_range(text: &str) -> Result<Vec<IpAddr>, String> {
    let parse = |part: &str| {
        part.trim().parse::<IpAddr>().map_err(|_| format!("{part:?} is not an IP address"))
    };
    let Some((first, last)) = text.split_once('-') else {
        return Ok(vec![parse(text)?]);
    };
    let (IpAddr::V4(first), IpAddr::V4(last)) = (parse(first)?, parse(last)?) else {
        return Err("a range of source addresses must be IPv4 (A-B)".to_string());
    };
    let (from, to) = (u32::from(first), u32::from(last));
    if from > to {
        return Err(format!("the range {text} ends before it starts"));
    }
    if to - from >= 256 {
        return Err(format!("the range {text} has more than 256 addresses"));
    }
    Ok((from..=to).map(|n| IpAddr::V4(n.into())).collect())
}

/// How load is generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    /// Constant arrival rate, at most `cap` requests in flight.
    Open { rate: f64, cap: usize },
    /// `concurrency` workers sending back to back.
    Closed { concurrency: usize },
    /// `users` users with think time, started over `ramp_up`.
    Users { users: usize, ramp_up: Duration },
}

/// One kind of request, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    pub weight: u32,
    pub model: String,
    pub stream: bool,
    pub think_time: Duration,
    pub body: Bytes,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub url: String,
    pub uri: Uri,
    pub api: Api,
    pub key: Option<String>,
    pub load: Load,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    pub mixes: Vec<Mix>,
    /// `--stream` and `--model` as given (a scenario's mix entries may differ).
    pub stream: bool,
    pub model: String,
    pub source_ips: Vec<IpAddr>,
    /// The total connection budget (spread over the source addresses).
    pub connections: usize,
    /// The most connections the run can open: the budget, or for the open loop what its rate
    /// can keep in flight within the timeout when that is less (for the limit warnings).
    pub peak_connections: usize,
    /// Requests that may be in flight at once before a worker waits (closed loop and users
    /// with fewer connections than workers); `None`: no waiting.
    pub gate: Option<usize>,
    pub progress: bool,
    pub label: Option<String>,
}

impl Plan {
    /// Checks `config`; every refusal is a [`BenchError::Usage`] saying what to change.
    pub(crate) fn new(config: &BenchConfig, interactive: bool) -> Result<Plan, BenchError> {
        let usage = |message: &str| BenchError::Usage(message.to_string());
        let (uri, api) = endpoint(&config.url)?;
        let duration = config
            .duration
            .or_else(|| config.scenario.as_ref().and_then(|s| s.duration))
            .ok_or_else(|| usage("--duration is required (e.g. --duration 30s)"))?;
        if duration.is_zero() {
            return Err(usage("--duration must be more than zero"));
        }
        if config.timeout.is_zero() {
            return Err(usage("--timeout must be more than zero"));
        }
        if config.connections == Some(0) || config.max_in_flight == Some(0) {
            return Err(usage("--connections and --max-in-flight must be at least 1"));
        }
        if config.prompt_tokens == 0 {
            return Err(usage("--prompt-tokens must be at least 1"));
        }
        let load = load(config, duration)?;
        let (connections, gate) = match load {
            Load::Open { cap, .. } => (config.connections.unwrap_or(cap), None),
            Load::Closed { concurrency: workers } | Load::Users { users: workers, .. } => {
                let connections = config.connections.unwrap_or(workers);
                (connections, (connections < workers).then_some(connections))
            }
        };
        let peak_connections = match load {
            Load::Open { rate, .. } => {
                let reachable = (rate * config.timeout.as_secs_f64()).ceil();
                connections.min(if reachable >= usize::MAX as f64 {
                    usize::MAX
                } else {
                    reachable as usize
                })
            }
            Load::Closed { .. } | Load::Users { .. } => connections,
        };
        Ok(Plan {
            url: config.url.clone(),
            peak_connections,
            uri,
            api,
            key: config.key.clone(),
            load,
            warmup: config.warmup,
            duration,
            timeout: config.timeout,
            mixes: mixes(config, api),
            stream: config.stream,
            model: config.model.clone(),
            source_ips: config.source_ips.clone(),
            connections,
            gate,
            progress: interactive && !config.quiet,
            label: config.label.clone(),
        })
    }

    /// Arrivals scheduled in an open-loop phase of `length` (floor(rate × length)).
    pub(crate) fn arrivals(rate: f64, length: Duration) -> u64 {
        // Rounding first absorbs float noise such as 0.1 × 30 = 2.9999999999999996.
        let exact = rate * length.as_secs_f64();
        let rounded = (exact * 1e9).round() / 1e9;
        rounded.floor() as u64
    }
}

/// The URI and wire format of `url`.
fn endpoint(url: &str) -> Result<(Uri, Api), BenchError> {
    let uri: Uri =
        url.parse().map_err(|e| BenchError::Usage(format!("--url {url:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(BenchError::Usage(format!(
            "--url {url:?} must be an http:// URL with a host (https is not supported)"
        )));
    }
    let path = uri.path().trim_end_matches('/');
    let api = if path.ends_with("/chat/completions") {
        Api::OpenAi
    } else if path.ends_with("/messages") {
        Api::Anthropic
    } else {
        return Err(BenchError::Usage(format!(
            "--url {url:?} must end with /v1/chat/completions (OpenAI) or /v1/messages (Anthropic)"
        )));
    };
    Ok((uri, api))
}

fn load(config: &BenchConfig, duration: Duration) -> Result<Load, BenchError> {
    let usage = |message: &str| Err(BenchError::Usage(message.to_string()));
    match (config.rate, config.concurrency, &config.scenario) {
        (Some(_), Some(_), _) => usage("--rate and --concurrency cannot be used together"),
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
            usage("--scenario sets its own users; leave out --rate and --concurrency")
        }
        (None, None, None) => {
            usage("give --rate R (open loop), --concurrency C (closed loop) or --scenario FILE")
        }
        (Some(rate), None, None) => {
            if !(rate.is_finite() && rate > 0.0) {
                return usage("--rate must be a positive number of requests per second");
            }
            if Plan::arrivals(rate, duration) == 0 {
                return usage("--rate × --duration schedules no request at all");
            }
            let cap = config.max_in_flight.or(config.connections).unwrap_or(DEFAULT_MAX_IN_FLIGHT);
            Ok(Load::Open { rate, cap })
        }
        (None, Some(0), None) => usage("--concurrency must be at least 1"),
        (None, Some(concurrency), None) => Ok(Load::Closed { concurrency }),
        (None, None, Some(scenario)) => {
            Ok(Load::Users { users: scenario.users, ramp_up: scenario.ramp_up })
        }
    }
}

/// The request kinds: the scenario's mix, or one kind from the command line.
fn mixes(config: &BenchConfig, api: Api) -> Vec<Mix> {
    let build = |weight, model: &str, stream, prompt_tokens, max_tokens, think_time| Mix {
        weight,
        model: model.to_string(),
        stream,
        think_time,
        body: request::body(api, model, stream, prompt_tokens, max_tokens),
    };
    match &config.scenario {
        Some(scenario) => scenario
            .mix
            .iter()
            .map(|entry| {
                build(
                    entry.weight,
                    entry.model.as_deref().unwrap_or(&config.model),
                    entry.stream.unwrap_or(config.stream),
                    entry.prompt_tokens.unwrap_or(config.prompt_tokens),
                    entry.max_tokens.or(config.max_tokens),
                    entry.think_time,
                )
            })
            .collect(),
        None => vec![build(
            1,
            &config.model,
            config.stream,
            config.prompt_tokens,
            config.max_tokens,
            Duration::ZERO,
        )],
    }
}

#[cfg(test)]
mod tests;
