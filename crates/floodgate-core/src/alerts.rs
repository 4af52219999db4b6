//! Quota-use alerts: when a key's or a provider's use of one of its limits
//! crosses a threshold (70 %, 85 %, 95 % by default), one log line, one
//! metric increment and, when `[alerts] webhook_url` is set, one JSON POST.
//!
//! Deciding *when* to alert belongs to `providers::quota`; this module only
//! delivers. The webhook is called from a background task fed by a bounded
//! channel, so a slow or dead webhook never delays a request: when the
//! channel is full the alert is still logged and counted, and the drop is
//! counted too. The webhook URL is never logged (chat webhooks carry their
//! secret in the URL).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AlertsConfig;
use crate::providers::client;
use crate::telemetry::metric;

/// Alerts waiting for the webhook; beyond this they are dropped (and counted).
const WEBHOOK_QUEUE: usize = 1024;

/// One threshold crossed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Always `"quota_alert"`, so a webhook receiver can tell it apart.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub provider: String,
    /// The key's position in the provider's list; `None` for the provider as a whole.
    pub key: Option<usize>,
    /// `rpm`, `tpm`, `daily_requests` or `daily_tokens`.
    pub quota: &'static str,
    pub threshold: f64,
    pub used: u64,
    pub limit: u64,
    /// Unix seconds.
    pub at: u64,
}

impl Alert {
    pub fn scope(&self) -> &'static str {
        if self.key.is_some() { "key" } else { "provider" }
    }
}

/// Where alerts go. One per app, shared by every provider's quota tracking.
#[derive(Debug)]
pub struct Alerts {
    pub thresholds: Vec<f64>,
    webhook: Option<mpsc::Sender<Alert>>,
}

/// The background half: posts alerts to the webhook until cancelled.
#[derive(Debug)]
pub struct WebhookWriter {
    url: http::Uri,
    timeout: Duration,
    rx: mpsc::Receiver<Alert>,
}

impl Alerts {
    /// Alerts delivered by log and metric, plus a webhook writer to spawn
    /// when a webhook is configured.
    pub fn new(config: &AlertsConfig) -> (Arc<Alerts>, Option<WebhookWriter>) {
        let writer = config.webhook_url.as_ref().and_then(|url| url.parse::<http::Uri>().ok());
        match writer {
            Some(url) => {
                let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
                let alerts = Alerts { thresholds: config.thresholds.clone(), webhook: Some(tx) };
                let writer = WebhookWriter { url, timeout: config.webhook_timeout, rx };
                (Arc::new(alerts), Some(writer))
            }
            None => {
                (Arc::new(Alerts { thresholds: config.thresholds.clone(), webhook: None }), None)
            }
        }
    }

    /// Alerts that go nowhere but the log and metrics (tests, tools).
    pub fn log_only(thresholds: Vec<f64>) -> Arc<Alerts> {
        Arc::new(Alerts { thresholds, webhook: None })
    }

    pub fn fire(&self, alert: Alert) {
        let key = alert.key.map(|k| k.to_string()).unwrap_or_default();
        tracing::warn!(
            target: "floodgate::alerts",
            provider = %alert.provider,
            key = %key,
            quota = alert.quota,
            threshold = alert.threshold,
            used = alert.used,
            limit = alert.limit,
            "quota use crossed {:.0}% of {}",
            alert.threshold * 100.0,
            alert.quota,
        );
        let labels = [
            ("scope", alert.scope().to_string()),
            ("provider", alert.provider.clone()),
            ("key", key),
            ("quota", alert.quota.to_string()),
            ("threshold", format!("{:.2}", alert.threshold)),
        ];
        metrics::counter!(metric::QUOTA_ALERTS, &labels).increment(1);
        if let Some(tx) = &self.webhook
            && tx.try_send(alert).is_err()
        {
            metrics::counter!(metric::ALERT_WEBHOOK_FAILURES, "reason" => "queue_full")
                .increment(1);
        }
    }
}

impl WebhookWriter {
    pub async fn run(mut self, stop: CancellationToken) {
        let client = match client::plain(self.timeout) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the alert webhook's HTTP client; alerts are logged only");
                return;
            }
        };
        loop {
            let alert = tokio::select! {
                () = stop.cancelled() => return,
                alert = self.rx.recv() => match alert {
                    Some(alert) => alert,
                    None => return,
                },
            };
            let body = match serde_json::to_vec(&alert) {
                Ok(body) => body,
                Err(_) => continue,
            };
            let mut request =
                match Request::post(self.url.clone()).body(Full::new(Bytes::from(body))) {
                    Ok(request) => request,
                    Err(_) => continue,
                };
            request
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            request.headers_mut().insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("floodgate/", env!("CARGO_PKG_VERSION"))),
            );
            let outcome = tokio::time::timeout(self.timeout, client.request(request)).await;
            let reason = match outcome {
                Ok(Ok(response)) if response.status().is_success() => None,
                Ok(Ok(response)) => Some(format!("answered {}", response.status().as_u16())),
                Ok(Err(error)) => Some(format!("failed: {}", crate::providers::innermost(&error))),
                Err(_) => {
                    Some(format!("timed out after {}", humantime::format_duration(self.timeout)))
                }
            };
            if let Some(reason) = reason {
                tracing::warn!(provider = %alert.provider, quota = alert.quota, "the alert webhook {reason}");
                metrics::counter!(metric::ALERT_WEBHOOK_FAILURES, "reason" => "delivery")
                    .increment(1);
            }
        }
    }
}
