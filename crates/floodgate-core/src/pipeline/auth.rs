//! Client authentication: `Authorization: Bearer <key>` or `x-api-key: <key>`.
//!
//! In this version the one client key is the master key; with no master key
//! configured, client auth is off (and `serve` refuses to listen beyond
//! loopback unless told `--allow-unauthenticated`). Keys are compared in
//! constant time and never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};

use crate::http::error::{ApiError, format_for_path};
use crate::secrets::constant_time_eq;

#[derive(Debug)]
pub struct Auth {
    master_key: Option<SecretString>,
}

/// Who is calling, in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off.
    Anonymous,
    Master,
}

impl Auth {
    pub fn new(master_key: Option<SecretString>) -> Self {
        Auth { master_key }
    }

    pub fn enabled(&self) -> bool {
        self.master_key.is_some()
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(master) = &self.master_key else {
            return Ok(Caller::Anonymous);
        };
        let presented = presented_key(headers).ok_or(ApiError::MissingKey)?;
        if constant_time_eq(presented.as_bytes(), master.expose_secret().as_bytes()) {
            Ok(Caller::Master)
        } else {
            Err(ApiError::InvalidKey)
        }
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty())
}

pub async fn require_key(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.check(request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            error.into_response_for(format_for_path(request.uri().path())).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn bearer_or_x_api_key() {
        let auth = Auth::new(Some(SecretString::from("master-key-0123456789")));
        assert_eq!(
            auth.check(&headers(&[("authorization", "Bearer master-key-0123456789")])).unwrap(),
            Caller::Master
        );
        assert_eq!(
            auth.check(&headers(&[("x-api-key", "master-key-0123456789")])).unwrap(),
            Caller::Master
        );
        assert!(matches!(auth.check(&headers(&[])), Err(ApiError::MissingKey)));
        assert!(matches!(
            auth.check(&headers(&[("authorization", "Bearer nope")])),
            Err(ApiError::InvalidKey)
        ));
    }

    #[test]
    fn no_master_key_means_auth_off() {
        assert_eq!(Auth::new(None).check(&headers(&[])).unwrap(), Caller::Anonymous);
    }
}
