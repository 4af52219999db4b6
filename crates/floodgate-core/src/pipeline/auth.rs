//! Client authentication: `Authorization: Bearer <key>` or `x-api-key: <key>`.
//!
//! A presented key is, in order: the master key (compared in constant
//! time); an end-user JWT when `[auth.jwt]` is configured and the token looks
//! like one; else a virtual key, looked up by its hash in the node's
//! [`KeyRegistry`]. With no master key configured, client auth is off (and
//! `serve` refuses to listen beyond loopback unless told
//! `--allow-unauthenticated`), except that a JWT, when sent and configured,
//! is still verified. Keys are never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};

use crate::http::error::{ApiError, format_for_path};
use crate::keys::{KeyRefusal, KeyRegistry};
use crate::pipeline::jwt::{EndUser, JwtVerifier};
use crate::secrets::constant_time_eq;
use crate::store::VirtualKey;

#[derive(Debug)]
pub struct Auth {
    master_key: Option<SecretString>,
    keys: Option<Arc<KeyRegistry>>,
    jwt: Option<Arc<JwtVerifier>>,
}

/// Who is calling, in request extensions.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off.
    Anonymous,
    Master,
    /// A virtual key.
    Key(Arc<VirtualKey>),
    /// An end user with a valid JWT.
    User(EndUser),
}

impl Caller {
    pub fn is_master(&self) -> bool {
        matches!(self, Caller::Master)
    }

    pub fn key(&self) -> Option<&Arc<VirtualKey>> {
        match self {
            Caller::Key(key) => Some(key),
            _ => None,
        }
    }
}

impl Auth {
    pub fn new(
        master_key: Option<SecretString>,
        keys: Option<Arc<KeyRegistry>>,
        jwt: Option<Arc<JwtVerifier>>,
    ) -> Self {
        Auth { master_key, keys, jwt }
    }

    pub fn enabled(&self) -> bool {
        self.master_key.is_some()
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let presented = presented_key(headers);
        if let (Some(token), Some(jwt)) = (presented, &self.jwt)
            && JwtVerifier::looks_like_jwt(token)
        {
            return jwt
                .verify(token)
                .map(Caller::User)
                .map_err(|e| ApiError::InvalidToken(e.to_string()));
        }
        let Some(master) = &self.master_key else {
            return Ok(Caller::Anonymous);
        };
        let presented = presented.ok_or(ApiError::MissingKey)?;
        if constant_time_eq(presented.as_bytes(), master.expose_secret().as_bytes()) {
            return Ok(Caller::Master);
        }
        let Some(keys) = &self.keys else {
            return Err(ApiError::InvalidKey);
        };
        match keys.lookup(presented, crate::time::now_ms()) {
            Ok(key) => Ok(Caller::Key(key)),
            Err(KeyRefusal::Unknown) => Err(ApiError::InvalidKey),
            Err(KeyRefusal::Expired { at_ms }) => {
                Err(ApiError::KeyExpired { at: crate::time::rfc3339(at_ms) })
            }
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
        let auth = Auth::new(Some(SecretString::from("master-key-0123456789")), None, None);
        assert!(
            auth.check(&headers(&[("authorization", "Bearer master-key-0123456789")]))
                .unwrap()
                .is_master()
        );
        assert!(
            auth.check(&headers(&[("x-api-key", "master-key-0123456789")])).unwrap().is_master()
        );
        assert!(matches!(auth.check(&headers(&[])), Err(ApiError::MissingKey)));
        assert!(matches!(
            auth.check(&headers(&[("authorization", "Bearer nope")])),
            Err(ApiError::InvalidKey)
        ));
    }

    #[test]
    fn no_master_key_means_auth_off() {
        assert!(matches!(
            Auth::new(None, None, None).check(&headers(&[])).unwrap(),
            Caller::Anonymous
        ));
    }
}
