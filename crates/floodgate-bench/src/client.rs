//! The HTTP side: one hyper client per source address (HTTP/1.1 keep-alive, `TCP_NODELAY`,
//! sockets bound to that address before connecting), sending one request and reading its answer
//! (streams parsed incrementally), and the classification of what went wrong.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate_protocol::sse::SseParser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::config::{Api, Mix};
use crate::events::{EventClass, classify};

/// Linux `EMFILE` ("Too many open files") and `ENFILE` (the system-wide table is full).
pub(crate) const EMFILE: i32 = 24;
pub(crate) const ENFILE: i32 = 23;
/// Linux `EADDRNOTAVAIL` ("Cannot assign requested address": no ephemeral port left).
pub(crate) const EADDRNOTAVAIL: i32 = 99;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Why a request failed, when it was not an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The server refused the connection (nothing listening).
    ConnectRefused,
    /// The connection was reset before the response head arrived.
    ConnectionReset,
    /// Connecting failed otherwise (unreachable, bad source address, ...).
    Connect,
    /// The client ran out of file descriptors (`EMFILE`).
    ClientOpenFiles,
    /// The client ran out of ephemeral ports (`EADDRNOTAVAIL`).
    ClientEphemeralPorts,
    /// The request (a stream: its whole body) took longer than `--timeout`.
    Timeout,
    /// The request failed after connecting, before a response head (e.g. closed without one).
    Request,
    /// A non-streamed body failed part-way.
    BodyRead,
    /// A stream ended (cleanly or not) without its terminal event.
    StreamIncomplete,
    /// A stream carried an error event.
    StreamError,
    /// Not sent: the client was at its in-flight cap (open loop).
    Dropped,
}

impl ErrorKind {
    /// Whether no connection was made (the request never reached the server).
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused
                | ErrorKind::Connect
                | ErrorKind::ClientOpenFiles
                | ErrorKind::ClientEphemeralPorts
        )
    }

    /// A short human description (the client limits are worded by [`crate::ClientLimits`]).
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect: refused",
            ErrorKind::ConnectionReset => "connection reset before the response",
            ErrorKind::Connect => "connect: other failure",
            ErrorKind::ClientOpenFiles => "client limit: open files",
            ErrorKind::ClientEphemeralPorts => "client limit: ephemeral ports",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Request => "request failed before a response",
            ErrorKind::BodyRead => "body read error",
            ErrorKind::StreamIncomplete => "stream ended without its terminal event",
            ErrorKind::StreamError => "stream carried an error event",
            ErrorKind::Dropped => "dropped: client at its in-flight cap",
        }
    }
}

/// How one sent request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A non-2xx answer.
    Status(u16),
    Kind(ErrorKind),
}

/// When the parts of a successful answer arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exchange {
    /// The end of the body.
    pub done: Instant,
    /// The first content event of a stream.
    pub first_content: Option<Instant>,
    /// Time between successive content events of a stream.
    pub gaps: Vec<Duration>,
}

/// The endpoint, with the headers every request carries.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub api: Api,
}

/// The HTTP clients, one per source address, each with its own connection pool.
#[derive(Debug)]
pub(crate) struct Clients {
    clients: Vec<HttpClient>,
    next: AtomicUsize,
}

impl Clients {
    /// Clients for `source_ips` (none: one client, the system picks the address) sharing a
    /// budget of `connections` kept-alive connections.
    pub(crate) fn new(source_ips: &[IpAddr], connections: usize) -> Clients {
        let addresses: Vec<Option<IpAddr>> = if source_ips.is_empty() {
            vec![None]
        } else {
            source_ips.iter().copied().map(Some).collect()
        };
        let idle = connections.div_ceil(addresses.len()).max(1);
        let clients = addresses.into_iter().map(|address| client(address, idle)).collect();
        Clients { clients, next: AtomicUsize::new(0) }
    }

    /// The client for `worker` (a closed-loop worker keeps its address, and so its kept-alive
    /// connection), or the next one round robin.
    fn pick(&self, worker: Option<usize>) -> &HttpClient {
        let index = worker.unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed));
        &self.clients[index % self.clients.len()]
    }

    /// Sends one request of kind `mix` and reads the whole answer, within `timeout`.
    pub(crate) async fn exchange(
        &self,
        worker: Option<usize>,
        target: &Target,
        mix: &Mix,
        timeout: Duration,
    ) -> Result<Exchange, Failure> {
        let client = self.pick(worker);
        match tokio::time::timeout(timeout, attempt(client, target, mix)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Failure::Kind(ErrorKind::Timeout)),
        }
    }
}

/// A hyper client whose sockets are bound to `address` (none: the system's choice), keeping
/// up to `idle` connections alive.
pub(crate) fn client(address: Option<IpAddr>, idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_local_address(address);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

async fn attempt(client: &HttpClient, target: &Target, mix: &Mix) -> Result<Exchange, Failure> {
    let mut request = Request::new(Full::new(mix.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = target.uri.clone();
    *request.headers_mut() = target.headers.clone();
    let response = client
        .request(request)
        .await
        .map_err(|error| Failure::Kind(classify_error(&error, error.is_connect())))?;
    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        // Reading the error body to its end keeps the connection usable; its content does not
        // matter, and a failure to read it changes nothing about the status.
        let _ignored = drain(body).await;
        return Err(Failure::Status(status.as_u16()));
    }
    if mix.stream {
        read_stream(body, target.api).await
    } else {
        drain(body).await.map_err(|_| Failure::Kind(ErrorKind::BodyRead))?;
        Ok(Exchange { done: Instant::now(), first_content: None, gaps: Vec::new() })
    }
}

/// Reads a body to its end, discarding it.
pub(crate) async fn drain(mut body: Incoming) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

/// What a stream has shown so far.
#[derive(Debug, Default)]
struct StreamProgress {
    first_content: Option<Instant>,
    last_content: Option<Instant>,
    gaps: Vec<Duration>,
    ended: bool,
}

impl StreamProgress {
    /// Takes every complete event from `parser`, stamped `now`.
    fn take(&mut self, parser: &mut SseParser, api: Api, now: Instant) -> Result<(), Failure> {
        while let Some(event) = parser.next_event() {
            match classify(api, &event) {
                EventClass::Content => {
                    match self.last_content {
                        Some(previous) => self.gaps.push(now.saturating_duration_since(previous)),
                        None => self.first_content = Some(now),
                    }
                    self.last_content = Some(now);
                }
                EventClass::Terminal => self.ended = true,
                EventClass::Error => return Err(Failure::Kind(ErrorKind::StreamError)),
                EventClass::Other => {}
            }
        }
        Ok(())
    }
}

/// Reads an SSE body as it arrives, stamping content events.
async fn read_stream(mut body: Incoming, api: Api) -> Result<Exchange, Failure> {
    let mut parser = SseParser::default();
    let mut progress = StreamProgress::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // A connection lost after the terminal event still delivered the whole answer.
            if progress.ended {
                break;
            }
            return Err(Failure::Kind(ErrorKind::StreamIncomplete));
        };
        if let Some(data) = frame.data_ref() {
            let now = Instant::now();
            parser.push(data).map_err(|_| Failure::Kind(ErrorKind::BodyRead))?;
            progress.take(&mut parser, api, now)?;
        }
    }
    parser.finish();
    progress.take(&mut parser, api, Instant::now())?;
    if !progress.ended {
        return Err(Failure::Kind(ErrorKind::StreamIncomplete));
    }
    Ok(Exchange {
        done: Instant::now(),
        first_content: progress.first_content,
        gaps: progress.gaps,
    })
}

/// The kind of a client error, from the I/O error at the root of its chain when there is one;
/// `connecting` tells whether it happened while connecting.
pub(crate) fn classify_error(
    error: &(dyn std::error::Error + 'static),
    connecting: bool,
) -> ErrorKind {
    if let Some(io) = root_io_error(error) {
        match io.raw_os_error() {
            Some(EMFILE | ENFILE) => return ErrorKind::ClientOpenFiles,
            Some(EADDRNOTAVAIL) => return ErrorKind::ClientEphemeralPorts,
            _ => {}
        }
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return ErrorKind::ConnectRefused,
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => return ErrorKind::ConnectionReset,
            _ => {}
        }
    }
    if connecting { ErrorKind::Connect } else { ErrorKind::Request }
}

fn root_io_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut found = None;
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        current = error.source();
    }
    found
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// An error wrapping `source`, as hyper wraps the I/O error that caused it.
    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Wrapper(#[source] io::Error);

    fn kind_of(source: io::Error, connecting: bool) -> ErrorKind {
        classify_error(&Wrapper(source), connecting)
    }

    #[test]
    fn os_errors_name_the_client_limit_or_the_server() {
        assert_eq!(kind_of(io::Error::from_raw_os_error(24), true), ErrorKind::ClientOpenFiles);
        assert_eq!(kind_of(io::Error::from_raw_os_error(23), true), ErrorKind::ClientOpenFiles);
        assert_eq!(
            kind_of(io::Error::from_raw_os_error(99), true),
            ErrorKind::ClientEphemeralPorts
        );
        assert_eq!(kind_of(io::Error::from_raw_os_error(111), true), ErrorKind::ConnectRefused);
        assert_eq!(kind_of(io::Error::from_raw_os_error(104), false), ErrorKind::ConnectionReset);
    }

    #[test]
    fn other_errors_fall_back_on_the_phase() {
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        assert_eq!(kind_of(timed_out(), true), ErrorKind::Connect);
        assert_eq!(kind_of(timed_out(), false), ErrorKind::Request);
        assert_eq!(classify_error(&Wrapper(io::Error::other("x")), false), ErrorKind::Request);
    }

    #[test]
    fn only_failures_to_connect_are_connect_kinds() {
        assert!(ErrorKind::ClientEphemeralPorts.is_connect());
        assert!(ErrorKind::ConnectRefused.is_connect());
        assert!(!ErrorKind::ConnectionReset.is_connect());
        assert!(!ErrorKind::Timeout.is_connect());
    }
}
