//! The accept loop and the per-connection tasks.
//!
//! The mock runs its own loop (instead of `axum::serve`) so that a handler can kill its own
//! connection: each connection gets a [`ConnCtx`] put into every request's extensions, and the
//! connection task drops the connection when the context's kill token fires, with `SO_LINGER`
//! 0 when a reset was asked for so that the client sees a TCP reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

/// Concurrent HTTP/2 streams per connection the mock accepts.
const MAX_H2_STREAMS: u32 = 50_000;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::routes;
use crate::state::Shared;

/// How long in-flight responses may run after shutdown before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long the loop pauses after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What a handler knows about the connection its request came on.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    kill: CancellationToken,
    reset: AtomicBool,
}

impl ConnCtx {
    fn new(kill: CancellationToken) -> Arc<Self> {
        Arc::new(Self { kill, reset: AtomicBool::new(false) })
    }

    /// A context tied to no connection, for requests that did not come through the accept
    /// loop: closing it does nothing.
    pub(crate) fn detached() -> Arc<Self> {
        Self::new(CancellationToken::new())
    }

    /// Drops the connection.
    pub(crate) fn close(&self) {
        self.kill.cancel();
    }

    /// Drops the connection with a TCP reset.
    pub(crate) fn reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.kill.cancel();
    }
}

/// Accepts connections until `shared.shutdown` fires, then drains them.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let shutdown = shared.shutdown.clone();
    let force = CancellationToken::new();
    let tracker = TaskTracker::new();
    let router = routes::router(shared);
    let mut builder = Builder::new(TokioExecutor::new());
    // HTTP/2 clients (a gateway speaking h2c) may multiplex thousands of
    // streams over one connection; hyper's default cap is 200.
    builder.http2().max_concurrent_streams(MAX_H2_STREAMS);
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Accept errors are per connection or transient (EMFILE): keep serving.
                    tracing::warn!(%error, "mock upstream accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "mock upstream could not set TCP_NODELAY");
        }
        let conn = Connection {
            builder: builder.clone(),
            router: router.clone(),
            shutdown: shutdown.clone(),
            ctx: ConnCtx::new(force.child_token()),
        };
        tracker.spawn(conn.serve(stream));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        force.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: Builder<TokioExecutor>,
    router: Router,
    shutdown: CancellationToken,
    ctx: Arc<ConnCtx>,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let io = TokioIo::new(KillableStream { inner: stream, ctx: Arc::clone(&self.ctx) });
        let ctx = Arc::clone(&self.ctx);
        let service =
            self.router.map_request(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(Arc::clone(&ctx));
                request
            });
        let conn = self.builder.serve_connection(io, TowerToHyperService::new(service));
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "mock upstream connection ended with an error");
                    }
                    return;
                }
                // Returning drops the connection (and with it the socket) at once.
                () = self.ctx.kill.cancelled() => return,
                () = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The TCP stream of a connection; on drop it sets `SO_LINGER` 0 if its connection was reset,
/// so that closing it sends a TCP RST instead of a FIN.
struct KillableStream {
    inner: TcpStream,
    ctx: Arc<ConnCtx>,
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        if self.ctx.reset.load(Ordering::Acquire)
            && let Err(error) = self.inner.set_zero_linger()
        {
            tracing::debug!(%error, "mock upstream could not set SO_LINGER");
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
