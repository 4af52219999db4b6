//! The HTTP client for upstream calls: hyper-util's pooled client over
//! rustls (ring, the platform's certificate verifier), HTTP/1.1 keep-alive
//! and HTTP/2 by ALPN, or HTTP/2 without TLS for upstreams configured with
//! `http2_prior_knowledge`.
//!
//! One client per serving worker, so a worker's requests use connections its
//! own runtime drives (see `workers`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::ProviderConfig;

pub type Body = Full<Bytes>;
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

#[derive(Debug)]
pub struct HttpClients {
    clients: Vec<HttpClient>,
}

impl HttpClients {
    pub fn new(config: &ProviderConfig, workers: usize) -> std::io::Result<HttpClients> {
        let clients = (0..workers.max(1)).map(|_| build(config)).collect::<std::io::Result<_>>()?;
        Ok(HttpClients { clients })
    }

    /// The client of the current serving worker.
    pub fn get(&self) -> &HttpClient {
        &self.clients[crate::workers::index() % self.clients.len()]
    }
}

/// A client for the gateway's own outgoing calls (the alert webhook).
pub fn plain(connect_timeout: Duration) -> std::io::Result<HttpClient> {
    Ok(Client::builder(TokioExecutor::new()).build(connector(connect_timeout)?))
}

fn build(config: &ProviderConfig) -> std::io::Result<HttpClient> {
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .http2_only(config.http2_prior_knowledge)
        .build(connector(config.timeouts.connect)?))
}

/// TCP (no Nagle, keep-alive probes) under rustls, HTTP/1.1 or HTTP/2 by ALPN.
fn connector(connect_timeout: Duration) -> std::io::Result<HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}
