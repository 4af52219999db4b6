//! Command-line interface: clap structs only.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "floodgate",
    version,
    about = "One binary between an AI app, its users and the LLM providers."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Validate a config file; every problem is reported with its line.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Run a fast fake OpenAI + Anthropic + Gemini server (for demos, tests and benchmarks).
    MockUpstream(MockArgs),
    /// Load-test an OpenAI or Anthropic endpoint: open or closed loop, HDR latency, time to
    /// first token, JSON and HTML reports. With --realtime: hold WebSocket or Socket.IO
    /// connections to gateway nodes, publish to a room, measure delivery and server memory.
    /// Bad arguments exit with code 64.
    Bench(Box<BenchArgs>),
    /// Probe a running node's readiness (`GET /health/ready`): exit 0 when it answers 200,
    /// 1 otherwise, with one line saying why. For container health checks (the image has no
    /// curl).
    Health(HealthArgs),
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The node's base URL; `/health/ready` is appended.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// How long to wait for the answer (connection included), e.g. `3s`, `500ms`.
    #[arg(long, value_parser = floodgate_bench::parse_duration, default_value = "3s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without one: 127.0.0.1:8080, in-memory state,
    /// SQLite file floodgate.db, providers from OPENAI_API_KEY /
    /// ANTHROPIC_API_KEY / GEMINI_API_KEY, or a built-in mock provider.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Listen address, overriding the config and FLOODGATE_LISTEN.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Allow listening beyond loopback without a master key.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Log format, overriding the config and FLOODGATE_LOG_FORMAT.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Pretty,
    Json,
}

#[derive(Debug, Args)]
pub struct MockArgs {
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Delay before each response head (and before a stream's first chunk).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Content chunks of a streamed answer (a non-streamed one has the same words).
    #[arg(long, default_value_t = 20)]
    pub chunks: usize,
    /// Delay between stream chunks.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    /// Fraction (0 to 1) of requests that fail.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// How failing requests fail.
    #[arg(long, value_enum, default_value_t = ErrorKindArg::Status500)]
    pub error_kind: ErrorKindArg,
    /// `retry-after` seconds sent with the 429s of --error-kind 429 (rate-limit 429s from
    /// --rpm/--tpm compute their own).
    #[arg(long, visible_alias = "retry-after-secs", default_value_t = 1)]
    pub retry_after: u64,
    /// Requests per minute per API key (a sliding 60 s window); over it, 429s with
    /// `retry-after`. With --rpm or --tpm, OpenAI and Anthropic answers carry the providers'
    /// rate-limit headers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion, as each answer reports them) per minute per API key.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tpm: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ErrorKindArg {
    #[value(name = "500")]
    Status500,
    #[value(name = "429")]
    Status429,
    Hang,
    Reset,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The full endpoint: http://HOST:PORT/v1/chat/completions (OpenAI body) or
    /// http://HOST:PORT/v1/messages (Anthropic body). With --realtime: a node's base URL,
    /// http://HOST:PORT on loopback, repeated or comma-separated for several nodes
    /// (connections are spread over them round robin).
    #[arg(long, required = true)]
    pub url: Vec<String>,
    /// Realtime mode: open --connections connections of this kind (ws: /ws; socketio:
    /// Socket.IO v4 on /socket.io/), each subscribed to --room, hold them for --duration
    /// (publishing meanwhile with --publish-rate), and report connects, delivery and server
    /// memory.
    #[arg(long, value_enum)]
    pub realtime: Option<RealtimeArg>,
    /// Open loop: requests per second at a constant arrival rate; latency counts from each
    /// request's intended send time.
    #[arg(long, conflicts_with = "realtime")]
    pub rate: Option<f64>,
    /// Closed loop: workers, each sending its next request when the previous one is answered.
    #[arg(long, conflicts_with = "realtime")]
    pub concurrency: Option<usize>,
    /// Measured time, e.g. 30s or 2m (a scenario file may set a default). With --realtime:
    /// how long every connection is held once all are open, and how long to publish.
    #[arg(long, value_parser = floodgate_bench::parse_duration)]
    pub duration: Option<Duration>,
    /// Stream the answers and measure time to first token and inter-token gaps.
    #[arg(long, conflicts_with = "realtime")]
    pub stream: bool,
    /// The model sent in every request.
    #[arg(long, default_value = "gpt-4o-mini")]
    pub model: String,
    /// API key: `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic). With
    /// --realtime: the connections' token (`?token=` on /ws, the Socket.IO CONNECT auth).
    #[arg(long)]
    pub key: Option<String>,
    /// At most this many TCP connections (closed loop: defaults to --concurrency; open loop:
    /// also the in-flight cap unless --max-in-flight is given). With --realtime: how many
    /// connections to open and hold (required).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Local addresses to spread client sockets over, round robin: one address or a range
    /// such as 127.0.0.1-127.0.0.8 (each has its own ephemeral ports).
    #[arg(long, value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,
    /// A TOML user population (users, ramp-up, weighted mix with think times).
    #[arg(long, conflicts_with = "realtime")]
    pub scenario: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page here.
    #[arg(long, conflicts_with = "realtime")]
    pub html: Option<PathBuf>,
    /// Approximate size of the user prompt in tokens (four characters a token).
    #[arg(long, default_value_t = 20)]
    pub prompt_tokens: u32,
    /// `max_tokens` to send (Anthropic requires one: 256 when not given).
    #[arg(long, conflicts_with = "realtime")]
    pub max_tokens: Option<u32>,
    /// Load sent before measuring starts, not recorded.
    #[arg(long, value_parser = floodgate_bench::parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Open loop: arrivals beyond this many requests in flight are dropped and counted
    /// (default --connections, else 20000). With --realtime: connections opening at once
    /// (default 1000).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Per request; for a stream, its whole body (default 60s). With --realtime: per
    /// connection, from its TCP connect to its subscription's acknowledgement (default 10s).
    #[arg(long, value_parser = floodgate_bench::parse_duration)]
    pub timeout: Option<Duration>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Free text carried into the JSON and HTML reports.
    #[arg(long)]
    pub label: Option<String>,
    // The flags below need --realtime; main.rs refuses them without it (clap's `requires`
    // gives way to the conflicts of --realtime with the HTTP flags).
    /// Realtime: connections started per second (default 2000).
    #[arg(long)]
    pub connect_rate: Option<f64>,
    /// Realtime: the room every connection subscribes to (topic room:NAME; default bench).
    #[arg(long)]
    pub room: Option<String>,
    /// Realtime: the publisher's bearer token (default --key).
    #[arg(long)]
    pub publish_key: Option<String>,
    /// Realtime: messages per second POSTed to /v1/rooms/NAME/messages during --duration
    /// (0 or none: the connections are only held).
    #[arg(long)]
    pub publish_rate: Option<f64>,
    /// Realtime: approximate size of each published message's data, in bytes (default 100).
    #[arg(long)]
    pub message_bytes: Option<usize>,
    /// Realtime: publish to every --url round robin instead of the first only.
    #[arg(long)]
    pub publish_all_nodes: bool,
    /// Realtime: a server process whose resident memory (VmRSS) is read before connecting,
    /// once connected and at the end, and reported per connection; repeated or
    /// comma-separated. Given once per --url, in the same order, each pid's growth is divided
    /// by the connections of its own node, otherwise by all of them.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
}

/// The transports of `--realtime`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RealtimeArg {
    /// Plain WebSocket on /ws.
    Ws,
    /// Socket.IO v4 over the websocket transport on /socket.io/.
    Socketio,
}

/// The addresses of `--source-ips`.
#[derive(Debug, Clone)]
pub struct SourceIps(pub Vec<IpAddr>);

fn parse_source_ips(text: &str) -> Result<SourceIps, String> {
    floodgate_bench::parse_ip_range(text).map(SourceIps)
}
