//! The `floodgate` binary: parse the command line, read config, build, run,
//! wait for a signal, drain. Bad config exits with code 64 and one readable
//! message per problem.

mod cli;

/// mimalloc: the request path allocates many small short-lived buffers, and
/// glibc's malloc was about 12 % of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use floodgate_core::config::{self, ConfigError, Env, LogFormat, Overrides};
use floodgate_core::{App, shutdown, telemetry};
use floodgate_mock_upstream::{ErrorKind, MockConfig, RateLimit};

use cli::{
    BenchArgs, Cli, Command, ErrorKindArg, HealthArgs, LogFormatArg, MockArgs, RealtimeArg,
    ServeArgs,
};

/// EX_USAGE from sysexits.h: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}"), 1),
    };
    let env: Env = std::env::vars().collect();
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args, &env)),
        Command::CheckConfig { file } => check_config(&file, &env),
        Command::MockUpstream(args) => runtime.block_on(mock_upstream(args)),
        Command::Bench(args) => runtime.block_on(bench(*args)),
        Command::Health(args) => runtime.block_on(health(args)),
    }
}

/// Help and version go to stdout with code 0. Other command-line errors keep clap's code 2,
/// except for `bench`, whose contract is EX_USAGE (64) for every bad argument.
fn usage_error(error: &clap::Error) -> ExitCode {
    if !error.use_stderr() || std::env::args().nth(1).as_deref() != Some("bench") {
        error.exit();
    }
    // If stderr is gone there is nowhere left to report the problem; the code still says it.
    let _ignored = error.print();
    ExitCode::from(EXIT_CONFIG)
}

/// `floodgate bench`: arguments → [`floodgate_bench::BenchConfig`] → run → table and reports.
async fn bench(mut args: BenchArgs) -> ExitCode {
    if let Some(transport) = args.realtime {
        return realtime_bench(args, transport).await;
    }
    if let Some(flag) = realtime_only(&args) {
        return fail(&format!("{flag} needs --realtime"), floodgate_bench::EXIT_USAGE);
    }
    let url = match args.url.len() {
        1 => args.url.remove(0),
        _ => {
            let message = "--url: give one endpoint (several --url only with --realtime)";
            return fail(message, floodgate_bench::EXIT_USAGE);
        }
    };
    let scenario = match args.scenario.as_deref().map(floodgate_bench::Scenario::from_file) {
        None => None,
        Some(Ok(scenario)) => Some(scenario),
        Some(Err(error)) => return fail(&error.to_string(), error.exit_code()),
    };
    let config = floodgate_bench::BenchConfig {
        url,
        rate: args.rate,
        concurrency: args.concurrency,
        scenario,
        duration: args.duration,
        warmup: args.warmup,
        stream: args.stream,
        model: args.model,
        key: args.key,
        connections: args.connections,
        max_in_flight: args.max_in_flight,
        source_ips: args.source_ips.map(|ips| ips.0).unwrap_or_default(),
        prompt_tokens: args.prompt_tokens,
        max_tokens: args.max_tokens,
        timeout: args.timeout.unwrap_or(Duration::from_secs(60)),
        quiet: args.quiet,
        label: args.label,
    };
    let report = match floodgate_bench::run(config).await {
        Ok(report) => report,
        Err(error) => return fail(&error.to_string(), error.exit_code()),
    };
    if let Err(error) = report.print_table() {
        return fail(&format!("cannot print the summary: {error}"), 1);
    }
    let written = [
        args.json.as_deref().map(|path| report.write_json(path)),
        args.html.as_deref().map(|path| report.write_html(path)),
    ];
    for result in written.into_iter().flatten() {
        if let Err(error) = result {
            return fail(&error.to_string(), error.exit_code());
        }
    }
    ExitCode::SUCCESS
}

/// The first flag given that only `--realtime` takes.
fn realtime_only(args: &BenchArgs) -> Option<&'static str> {
    [
        ("--connect-rate", args.connect_rate.is_some()),
        ("--room", args.room.is_some()),
        ("--publish-key", args.publish_key.is_some()),
        ("--publish-rate", args.publish_rate.is_some()),
        ("--message-bytes", args.message_bytes.is_some()),
        ("--publish-all-nodes", args.publish_all_nodes),
        ("--server-pid", !args.server_pid.is_empty()),
    ]
    .into_iter()
    .find_map(|(flag, given)| given.then_some(flag))
}

/// `floodgate bench --realtime`: arguments → [`floodgate_bench::RealtimeConfig`] → run →
/// table and JSON report.
async fn realtime_bench(args: BenchArgs, transport: RealtimeArg) -> ExitCode {
    use floodgate_bench::realtime;
    let config = floodgate_bench::RealtimeConfig {
        transport: match transport {
            RealtimeArg::Ws => floodgate_bench::Transport::Ws,
            RealtimeArg::Socketio => floodgate_bench::Transport::Socketio,
        },
        urls: args.url,
        connections: args.connections.unwrap_or(0),
        connect_rate: args.connect_rate.unwrap_or(realtime::DEFAULT_CONNECT_RATE),
        max_handshakes: args.max_in_flight.unwrap_or(realtime::DEFAULT_MAX_HANDSHAKES),
        source_ips: args.source_ips.map(|ips| ips.0).unwrap_or_default(),
        room: args.room.unwrap_or_else(|| realtime::DEFAULT_ROOM.to_string()),
        key: args.key,
        publish_key: args.publish_key,
        duration: args.duration,
        publish_rate: args.publish_rate,
        message_bytes: args.message_bytes.unwrap_or(realtime::DEFAULT_MESSAGE_BYTES),
        publish_all_nodes: args.publish_all_nodes,
        server_pids: args.server_pid,
        timeout: args.timeout.unwrap_or(realtime::DEFAULT_OPEN_TIMEOUT),
        quiet: args.quiet,
        label: args.label,
    };
    let report = match floodgate_bench::run_realtime(config).await {
        Ok(report) => report,
        Err(error) => return fail(&error.to_string(), error.exit_code()),
    };
    if let Err(error) = report.print_table() {
        return fail(&format!("cannot print the summary: {error}"), 1);
    }
    if let Some(Err(error)) = args.json.as_deref().map(|path| report.write_json(path)) {
        return fail(&error.to_string(), error.exit_code());
    }
    ExitCode::SUCCESS
}

async fn serve(args: ServeArgs, env: &Env) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        allow_unauthenticated: args.allow_unauthenticated,
        log_format: args.log_format.map(|f| match f {
            LogFormatArg::Pretty => LogFormat::Pretty,
            LogFormatArg::Json => LogFormat::Json,
        }),
    };
    let config = match config::load(args.config.as_deref(), env, &overrides) {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    let _log_guard = telemetry::init_logging(&config.log);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&format!("{error:#}"), 1),
    }
}

async fn run(config: config::Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let summary = describe(&config);
    let app = App::build(config).await?;
    let listener = floodgate_core::workers::bind_listener(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "{summary}");
    app.serve(listener, shutdown::on_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn describe(config: &config::Config) -> String {
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|p| {
            format!(
                "{} ({}, {} key{})",
                p.name,
                p.kind.as_str(),
                p.keys.len(),
                if p.keys.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    let auth = if config.master_key.is_some() { "on" } else { "off" };
    format!(
        "floodgate listening; providers: {}; models: {}; client auth {auth}",
        providers.join(", "),
        models.join(", ")
    )
}

#[expect(clippy::print_stdout, reason = "check-config's report is its output")]
fn check_config(file: &std::path::Path, env: &Env) -> ExitCode {
    match config::load(Some(file), env, &Overrides::default()) {
        Ok(config) => {
            println!(
                "{}: OK ({} provider{}, {} model{}, listen {})",
                file.display(),
                config.providers.len(),
                if config.providers.len() == 1 { "" } else { "s" },
                config.models.len(),
                if config.models.len() == 1 { "" } else { "s" },
                config.listen
            );
            ExitCode::SUCCESS
        }
        Err(error) => config_failure(&error),
    }
}

async fn mock_upstream(args: MockArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.error_rate) {
        return fail(
            &format!("--error-rate {} is not between 0 and 1", args.error_rate),
            EXIT_CONFIG,
        );
    }
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        chunks: args.chunks,
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        error_rate: args.error_rate,
        error_kind: match args.error_kind {
            ErrorKindArg::Status500 => ErrorKind::Status500,
            ErrorKindArg::Status429 => ErrorKind::Status429,
            ErrorKindArg::Hang => ErrorKind::Hang,
            ErrorKindArg::Reset => ErrorKind::Reset,
        },
        retry_after_secs: args.retry_after,
        rate_limit: (args.rpm.is_some() || args.tpm.is_some())
            .then_some(RateLimit { requests_per_minute: args.rpm, tokens_per_minute: args.tpm }),
        record: false,
    };
    let listener = match floodgate_core::workers::bind_listener((args.host, args.port).into()) {
        Ok(listener) => listener,
        Err(error) => {
            return fail(&format!("cannot listen on {}:{}: {error}", args.host, args.port), 1);
        }
    };
    let shown = listener
        .local_addr()
        .map_or_else(|_| format!("{}:{}", args.host, args.port), |a| a.to_string());
    announce(&format!(
        "mock upstream listening on http://{shown} (OpenAI base URL http://{shown}/v1)"
    ));
    match floodgate_mock_upstream::serve(listener, config, shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&format!("mock upstream failed: {error}"), 1),
    }
}

/// `floodgate health`: `GET {url}/health/ready`; 0 on a 200, 1 on anything else, one line
/// either way (the container image's health check: it has no curl).
async fn health(args: HealthArgs) -> ExitCode {
    let url = format!("{}/health/ready", args.url.trim_end_matches('/'));
    // Only for an https:// URL; a provider already installed is as good.
    let _ignored = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(args.timeout)
        .connect_timeout(args.timeout)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(error) => return fail(&format!("health: cannot make an HTTP client: {error}"), 1),
    };
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(error) => {
            // reqwest's own text names only the URL; the cause (refused, timed out) is below it.
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                reason = format!("{reason}: {cause}");
                source = cause.source();
            }
            return fail(&format!("health: {url} did not answer: {reason}"), 1);
        }
    };
    let code = response.status();
    // The readiness body says `ready`, `not_ready` or `draining`.
    let status = response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|body| body.get("status").and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_else(|| "no status in the body".to_string());
    if code == reqwest::StatusCode::OK {
        announce(&format!("floodgate: health: {url}: {} {status}", code.as_u16()));
        ExitCode::SUCCESS
    } else {
        fail(&format!("health: {url}: {} {status}", code.as_u16()), 1)
    }
}

#[expect(clippy::print_stdout, reason = "the CLI announces where it listens")]
fn announce(message: &str) {
    println!("{message}");
}

#[expect(clippy::print_stderr, reason = "errors before logging is set up go to stderr")]
fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("floodgate: {message}");
    ExitCode::from(code)
}

#[expect(clippy::print_stderr, reason = "config problems are the CLI's output")]
fn config_failure(error: &ConfigError) -> ExitCode {
    match error {
        ConfigError::Invalid(problems) => {
            eprintln!(
                "floodgate: the configuration is not valid ({} problem{}):",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            for problem in problems {
                eprintln!("  {problem}");
            }
        }
        ConfigError::Read { .. } => eprintln!("floodgate: {error}"),
    }
    ExitCode::from(EXIT_CONFIG)
}
