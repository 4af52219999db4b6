//! Command-line interface: clap structs only.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// `retry-after` seconds sent with 429s.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
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
