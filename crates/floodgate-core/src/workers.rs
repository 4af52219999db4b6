//! Thread-per-core serving: which serving thread the current code runs on.
//!
//! `App::serve` runs one single-threaded runtime per worker, each accepting
//! from the same listening socket. A request is then handled start to finish
//! on one thread — its client connection, its upstream connection (each
//! provider keeps one connection pool per worker) and its stream — so no
//! request pays for waking another thread. Measured with a bare hyper proxy
//! on this project's 2-core machine: 14.8 µs of CPU per request this way
//! against 17.3–18.3 µs with one work-stealing runtime (BENCHMARKS.md).

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The serving worker this thread is (0 outside serving threads).
pub fn index() -> usize {
    current().unwrap_or(0)
}

/// The serving worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

pub(crate) fn set_index(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}

/// Workers when the config does not say: one per available CPU.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The listen backlog asked for; the kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds a listening socket with a deep accept queue.
///
/// `tokio::net::TcpListener::bind` asks for a backlog of 1,024. When
/// thousands of clients connect in the same instant — the first second of a
/// load, or every client reconnecting after a deploy — a full queue makes the
/// kernel drop SYNs, and each dropped client waits a whole second for its SYN
/// to be retransmitted. That shows up as a wall of one-second latencies and,
/// under an open-loop load, as a backlog the server never catches up with.
pub fn bind_listener(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
