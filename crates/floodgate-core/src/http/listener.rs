//! The listening side: a bounded number of client connections.
//!
//! Every client connection holds a file descriptor, and a request on it may
//! hold a second one towards an HTTP/1.1 upstream. A server that accepts
//! without limit runs out of descriptors under a connection flood and then
//! fails everything, upstream connects and requests already admitted
//! included (the benchmark suite's open-loop overload showed exactly that:
//! at the open-files limit every request became a 502).
//!
//! Like nginx with `worker_connections`, Floodgate holds at most
//! `server.max_connections`. A newcomer at the limit waits (the kernel's
//! accept queue holds the ones behind it) while the oldest connections that
//! have already been served are asked to close once their current answer is
//! done; an idle keep-alive connection closes at once. Without that, idle
//! keep-alive connections would keep every place while new clients, whose
//! handshake the kernel had completed, sent requests nobody read. nginx
//! reuses idle keep-alive connections the same way when it runs out.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::telemetry::{self, metric};

/// Pause after an accept error that is not about one connection (such as
/// running out of file descriptors), so the loop does not spin on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How long a newcomer at the limit waits for drained connections to close
/// before more are drained.
const DRAIN_WAIT: Duration = Duration::from_millis(50);

/// Open client connections on this node, shared by every serving worker.
#[derive(Debug)]
pub struct Connections {
    /// One permit per connection that may still open.
    places: Arc<Semaphore>,
    max: usize,
    /// Every open connection, oldest first (entries of closed ones are
    /// skipped and pruned).
    registry: Mutex<VecDeque<Weak<Connection>>>,
}

/// What the node knows of one client connection.
#[derive(Debug, Default)]
pub struct Connection {
    /// Set by the first request: a connection whose first request has not
    /// been read yet is never drained (closing it would reset the client).
    served: AtomicBool,
    drain: Notify,
}

impl Connection {
    /// Marks the connection as having served a request.
    pub fn served(&self) {
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves when the node asks this connection to close after its
    /// current answer.
    pub async fn drained(&self) {
        self.drain.notified().await;
    }
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        let max = max.max(1);
        Arc::new(Connections {
            places: Arc::new(Semaphore::new(max)),
            max,
            registry: Mutex::new(VecDeque::new()),
        })
    }

    pub fn open(&self) -> usize {
        self.max - self.places.available_permits()
    }

    fn try_reserve(&self) -> Option<Slot> {
        self.places.clone().try_acquire_owned().ok().map(Slot::new)
    }

    /// A place for one more connection: at the limit, drains the oldest
    /// served connections (a batch at a time) until one closes.
    async fn reserve(&self) -> Slot {
        loop {
            if let Some(slot) = self.try_reserve() {
                return slot;
            }
            let drained = self.drain_oldest((self.max / 64).max(1));
            if drained > 0 {
                telemetry::counter(metric::HTTP_CONNECTIONS_DRAINED, &[]).increment(drained);
            }
            let freed = self.places.clone().acquire_owned();
            if let Ok(Ok(permit)) = tokio::time::timeout(DRAIN_WAIT, freed).await {
                return Slot::new(permit);
            }
        }
    }

    /// Asks up to `batch` of the oldest served connections to close after
    /// their current answer; returns how many were asked.
    fn drain_oldest(&self, batch: usize) -> u64 {
        let mut registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut drained = 0u64;
        let mut kept = 0;
        // Closed entries go; unserved ones stay in place; served ones are drained and leave.
        while drained < batch as u64 && kept < registry.len() {
            let Some(entry) = registry.get(kept) else { break };
            match entry.upgrade() {
                None => {
                    registry.remove(kept);
                }
                Some(connection) if connection.served.load(Ordering::Relaxed) => {
                    registry.remove(kept);
                    connection.drain.notify_one();
                    drained += 1;
                }
                Some(_) => kept += 1,
            }
        }
        drained
    }

    fn register(&self, connection: &Arc<Connection>) {
        let mut registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if registry.len() > 64 && registry.len() > 2 * self.open() {
            registry.retain(|c| c.strong_count() > 0);
        }
        registry.push_back(Arc::downgrade(connection));
    }
}

/// One connection's place; dropping it (when the connection closes) frees it.
#[derive(Debug)]
struct Slot {
    _place: OwnedSemaphorePermit,
}

impl Slot {
    fn new(place: OwnedSemaphorePermit) -> Slot {
        telemetry::gauge(metric::HTTP_CONNECTIONS, &[]).increment(1.0);
        Slot { _place: place }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        telemetry::gauge(metric::HTTP_CONNECTIONS, &[]).decrement(1.0);
    }
}

/// One serving worker's side of the shared listening socket.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    connections: Arc<Connections>,
}

impl Acceptor {
    pub fn new(listener: TcpListener, connections: Arc<Connections>) -> Acceptor {
        Acceptor { listener, connections }
    }

    /// The next client connection, once it has a place on the node.
    pub async fn accept(&mut self) -> (ClientStream, SocketAddr, Arc<Connection>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    // Accepted first, so draining happens only for a client that is there.
                    let slot = self.connections.reserve().await;
                    let connection = Arc::new(Connection::default());
                    self.connections.register(&connection);
                    return (ClientStream { stream, _slot: slot }, addr, connection);
                }
                Err(error) if per_connection(&error) => {}
                Err(error) => {
                    tracing::error!(
                        %error,
                        open = self.connections.open(),
                        "cannot accept a connection; lower server.max_connections below the open-files limit (ulimit -n)"
                    );
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

fn per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A client connection holding its place among `max_connections`.
#[derive(Debug)]
pub struct ClientStream {
    stream: TcpStream,
    _slot: Slot,
}

impl ClientStream {
    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_node_drains_its_oldest_served_connection_and_never_an_unserved_one() {
        let connections = Connections::new(2);
        let (a, b) = (Arc::new(Connection::default()), Arc::new(Connection::default()));
        let slots = [connections.try_reserve().unwrap(), connections.try_reserve().unwrap()];
        connections.register(&a);
        connections.register(&b);
        assert!(connections.try_reserve().is_none(), "the node is full");
        // Nothing served yet: nothing to drain.
        assert_eq!(connections.drain_oldest(1), 0);
        b.served();
        a.served();
        assert_eq!(connections.drain_oldest(1), 1);
        // `a`, the oldest, was asked (the permit waits for it); `b` was not.
        tokio::time::timeout(Duration::from_secs(1), a.drained()).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(20), b.drained()).await.is_err());
        let waiting = tokio::spawn({
            let connections = connections.clone();
            async move { connections.reserve().await }
        });
        drop(slots);
        let _slot = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(connections.open(), 1);
    }
}
