//! Job webhooks: when a job ends (`completed` or `failed`), its final state
//! is POSTed to the job's `webhook_url`, signed, and retried with backoff
//! until a 2xx or `[queue] webhook_attempts`; the delivery's status is
//! kept on the job (`webhook` in `GET /v1/jobs/{id}`).
//!
//! The body is `{"type": "job.completed" | "job.failed", "created_at",
//! "job": <the job as GET /v1/jobs/{id} shows it>}`, the same bytes on every
//! attempt. `x-floodgate-signature: sha256=<hex>` is the HMAC-SHA256 of
//! those bytes keyed by the owner's webhook secret; each virtual key has
//! its own, derived as HMAC-SHA256(`[queue] webhook_secret`, or else the
//! master key, `"floodgate-webhook:" + key id`), so nodes agree without
//! storing it and one key's secret says nothing about another's. Jobs of
//! the master key use the id `app`. `GET /admin/queue/webhook-secret`
//! shows a key's secret. Receivers deduplicate on `x-floodgate-delivery`
//! (the job id: a job is delivered once, however many attempts it takes).
//!
//! Deliveries run in the background on the node where the job ended; a
//! node that dies mid-delivery leaves the status `pending` or `retrying`.
//! The URL is never logged: webhook URLs often carry a token.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::Jobs;
use crate::config::QueueConfig;
use crate::providers::client::{self, HttpClient};
use crate::queue::{Job, JobStatus};
use crate::routing::backoff::Backoff;
use crate::telemetry::metric;
use crate::time::{now_ms, rfc3339};

pub const SIGNATURE_HEADER: &str = "x-floodgate-signature";
pub const EVENT_HEADER: &str = "x-floodgate-event";
pub const DELIVERY_HEADER: &str = "x-floodgate-delivery";
pub const ATTEMPT_HEADER: &str = "x-floodgate-delivery-attempt";

#[derive(Debug)]
pub struct Webhooks {
    /// What every key's secret is derived from; `None`: unsigned.
    base: Option<SecretString>,
    timeout: Duration,
    attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
    client: OnceLock<Option<HttpClient>>,
}

fn hmac(key: &[u8], message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    crate::keys::hex(ring::hmac::sign(&key, message).as_ref())
}

impl Webhooks {
    pub fn new(base: Option<SecretString>, config: &QueueConfig) -> Webhooks {
        Webhooks {
            base,
            timeout: config.webhook_timeout,
            attempts: config.webhook_attempts,
            retry_base: config.retry_base,
            retry_max: config.retry_max,
            client: OnceLock::new(),
        }
    }

    /// The signing secret of a job owner's webhooks (`None`: the master
    /// key's); `None` when webhooks are unsigned.
    pub fn secret_for(&self, owner: Option<&str>) -> Option<String> {
        let base = self.base.as_ref()?;
        let id = owner.unwrap_or("app");
        let derived =
            hmac(base.expose_secret().as_bytes(), format!("floodgate-webhook:{id}").as_bytes());
        Some(format!("whsec_{derived}"))
    }

    /// `sha256=<hex>` of `body` under the owner's secret.
    pub fn sign(&self, owner: Option<&str>, body: &[u8]) -> Option<String> {
        self.secret_for(owner).map(|secret| format!("sha256={}", hmac(secret.as_bytes(), body)))
    }

    fn client(&self) -> Option<&HttpClient> {
        self.client
            .get_or_init(|| match client::plain(self.timeout) {
                Ok(client) => Some(client),
                Err(error) => {
                    tracing::error!(%error, "cannot build the job webhooks' HTTP client");
                    None
                }
            })
            .as_ref()
    }
}

/// Delivers `job`'s webhook, recording each attempt's outcome on the job.
pub async fn deliver(jobs: std::sync::Arc<Jobs>, job: Job) {
    let Some(url) = job.webhook_url.as_deref().and_then(|u| u.parse::<http::Uri>().ok()) else {
        return;
    };
    let webhooks = &jobs.webhooks;
    let kind = if job.status == JobStatus::Completed { "job.completed" } else { "job.failed" };
    let body = json!({"type": kind, "created_at": rfc3339(now_ms()), "job": super::view(&job)});
    let body = Bytes::from(body.to_string());
    let signature = webhooks.sign(job.owner.as_deref(), &body);
    let mut backoff = Backoff::new(webhooks.retry_base, webhooks.retry_max);
    let record = |status: Value| {
        let jobs = jobs.clone();
        let id = job.id.clone();
        async move {
            if let Err(error) = jobs.queue.set_webhook(&id, &status).await {
                super::backend_error("set_webhook", &error);
            }
        }
    };
    for attempt in 1..=webhooks.attempts {
        let outcome = match webhooks.client() {
            None => Err("no HTTP client".to_string()),
            Some(client) => {
                let mut request = match Request::post(url.clone()).body(Full::new(body.clone())) {
                    Ok(request) => request,
                    Err(error) => {
                        record(json!({"status": "failed", "attempts": 0,
                                      "last_error": format!("the webhook_url cannot be called: {error}")}))
                        .await;
                        return;
                    }
                };
                let headers = request.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(
                    header::USER_AGENT,
                    HeaderValue::from_static(concat!("floodgate/", env!("CARGO_PKG_VERSION"))),
                );
                headers.insert(EVENT_HEADER, HeaderValue::from_static(kind));
                if let Ok(id) = HeaderValue::from_str(&job.id) {
                    headers.insert(DELIVERY_HEADER, id);
                }
                headers.insert(ATTEMPT_HEADER, HeaderValue::from(attempt));
                if let Some(signature) =
                    signature.as_deref().and_then(|s| HeaderValue::from_str(s).ok())
                {
                    headers.insert(SIGNATURE_HEADER, signature);
                }
                match tokio::time::timeout(webhooks.timeout, client.request(request)).await {
                    Ok(Ok(response)) if response.status().is_success() => {
                        Ok(response.status().as_u16())
                    }
                    Ok(Ok(response)) => Err(format!("answered {}", response.status().as_u16())),
                    Ok(Err(error)) => {
                        Err(format!("failed: {}", crate::providers::innermost(&error)))
                    }
                    Err(_) => Err(format!(
                        "timed out after {}",
                        humantime::format_duration(webhooks.timeout)
                    )),
                }
            }
        };
        match outcome {
            Ok(status) => {
                metrics::counter!(metric::QUEUE_WEBHOOKS, "outcome" => "delivered").increment(1);
                record(json!({"status": "delivered", "attempts": attempt, "last_status": status,
                              "delivered_at": rfc3339(now_ms())}))
                .await;
                return;
            }
            Err(reason) => {
                metrics::counter!(metric::QUEUE_WEBHOOKS, "outcome" => "failed_attempt")
                    .increment(1);
                tracing::warn!(job = %job.id, attempt, "the job's webhook {reason}");
                if attempt == webhooks.attempts {
                    metrics::counter!(metric::QUEUE_WEBHOOKS, "outcome" => "gave_up").increment(1);
                    record(json!({"status": "failed", "attempts": attempt, "last_error": reason}))
                        .await;
                    return;
                }
                let delay = backoff.next_delay().max(Duration::from_millis(100));
                record(json!({"status": "retrying", "attempts": attempt, "last_error": reason,
                              "next_attempt_at": rfc3339(now_ms() + delay.as_millis() as i64)}))
                .await;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhooks(base: Option<&str>) -> Webhooks {
        let config = crate::config::QueueConfig::defaults(
            crate::config::StateBackendKind::Memory,
            "sqlite::memory:",
        );
        Webhooks::new(base.map(|b| SecretString::from(b.to_string())), &config)
    }

    #[test]
    fn each_key_has_its_own_secret_and_nodes_agree() {
        let (a, b) =
            (webhooks(Some("base-secret-0123456789")), webhooks(Some("base-secret-0123456789")));
        assert_eq!(a.secret_for(Some("key_1")), b.secret_for(Some("key_1")));
        assert_ne!(a.secret_for(Some("key_1")), a.secret_for(Some("key_2")));
        assert_ne!(a.secret_for(Some("key_1")), a.secret_for(None));
        let other = webhooks(Some("another-base-0123456789"));
        assert_ne!(a.secret_for(Some("key_1")), other.secret_for(Some("key_1")));
        assert!(webhooks(None).sign(Some("key_1"), b"{}").is_none());
    }

    #[test]
    fn the_signature_is_an_hmac_of_the_body() {
        let w = webhooks(Some("base-secret-0123456789"));
        let secret = w.secret_for(Some("key_1")).unwrap();
        let expected = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            b"{\"a\":1}",
        );
        assert_eq!(
            w.sign(Some("key_1"), b"{\"a\":1}").unwrap(),
            format!("sha256={}", crate::keys::hex(expected.as_ref()))
        );
        assert_ne!(w.sign(Some("key_1"), b"{\"a\":1}"), w.sign(Some("key_1"), b"{\"a\":2}"));
    }
}
