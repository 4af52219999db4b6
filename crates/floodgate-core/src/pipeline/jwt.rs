//! End-user JWTs: who the person behind a request is, as the app's identity
//! provider signed it.
//!
//! [`JwtVerifier::verify`] checks a token's signature and claims and returns
//! the [`EndUser`] it names; it is synchronous and does no I/O, so it can sit
//! on the request path. Keys come from two places: one HS256 secret shared
//! with the app, and the RS256 / ES256 public keys of a JWKS document, which
//! [`JwtVerifier::run_refresh`] fetches in the background and swaps in whole.
//!
//! The algorithm a token may use follows from where its key comes from, never
//! from the token alone: HS256 is checked only against the configured secret
//! and RS256 / ES256 only against a JWKS key of that type. So `alg: none` and
//! the classic confusion (an HS256 token "signed" with the RSA public key as
//! its HMAC secret) have no key to be checked against and are refused.
//!
//! Errors say what was wrong and what would have been accepted; they never
//! carry the token or the secret, and the few token fields they name (`alg`,
//! `kid`) are shown only when short and printable.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::providers::client::HttpClient;
use crate::routing::Backoff;

/// How long one JWKS fetch (connect, headers and body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS document larger than this is refused; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Refreshes asked for by tokens with an unknown `kid` are at least this far
/// apart, so a stream of made-up kids cannot turn into a stream of fetches.
const ON_DEMAND_COOLDOWN: Duration = Duration::from_secs(30);
/// The first retry after a failed fetch; retries back off up to `jwks_refresh`.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash.
const MIN_HS256_SECRET_BYTES: usize = 32;
/// `jsonwebtoken` subtracts the leeway from the current Unix time, so it
/// must stay well below it; no real clock skew comes near an hour.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);

const HS256: &str = "HS256";
const RS256: &str = "RS256";
const ES256: &str = "ES256";

#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The HS256 secret shared with the app; enables HS256 tokens.
    pub hs256_secret: Option<SecretString>,
    /// Where the identity provider publishes its RS256 / ES256 public keys.
    pub jwks_url: Option<String>,
    /// The `iss` tokens must carry; `None` means not checked.
    pub issuer: Option<String>,
    /// Tokens must name one of these in `aud`; empty means not checked.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim naming the end user.
    pub user_claim: String,
    /// A top-level string claim naming the end user's limits tier.
    pub tier_claim: Option<String>,
    /// How often the JWKS is fetched again.
    pub jwks_refresh: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            jwks_url: None,
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::from_secs(30),
            user_claim: "sub".into(),
            tier_claim: None,
            jwks_refresh: Duration::from_secs(300),
        }
    }
}

/// The person a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUser {
    pub id: String,
    /// The tier claim's value, when configured and present as a string.
    pub tier: Option<String>,
}

/// Why a JWT configuration cannot be used (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("jwt: neither hs256_secret nor jwks_url is set; set at least one")]
    NoKeySource,
    #[error(
        "jwt: hs256_secret is {len} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES} (RFC 7518 §3.2)"
    )]
    ShortSecret { len: usize },
    #[error("jwt: jwks_url {url:?} is not an http:// or https:// URL: {reason}")]
    BadJwksUrl { url: String, reason: String },
    #[error("jwt: user_claim is empty; name the claim that identifies the end user, e.g. \"sub\"")]
    EmptyUserClaim,
    #[error("jwt: leeway of {}s is too large; at most {}s", .0.as_secs(), MAX_LEEWAY.as_secs())]
    LeewayTooLarge(Duration),
    #[error("jwt: jwks_refresh must be above zero")]
    ZeroRefresh,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error(
        "token is not a well-formed JWT ({reason}); expected header.payload.signature in base64url"
    )]
    Malformed { reason: &'static str },
    #[error("token has expired; exp may be at most {leeway_secs}s in the past")]
    Expired { leeway_secs: u64 },
    #[error("token is not valid yet; nbf may be at most {leeway_secs}s in the future")]
    NotYetValid { leeway_secs: u64 },
    #[error("token audience does not match; expected one of {expected:?}")]
    WrongAudience { expected: Vec<String> },
    #[error("token issuer does not match; expected {expected:?}")]
    WrongIssuer { expected: String },
    #[error("token signature does not verify with the configured {alg} key")]
    BadSignature { alg: &'static str },
    #[error("{}", unknown_key_message(kid.as_deref(), known))]
    UnknownKey {
        /// The token's `kid` (shown only when short and printable).
        kid: Option<String>,
        /// The kids of the loaded JWKS keys.
        known: Vec<String>,
    },
    #[error("token algorithm {alg:?} is not allowed here; allowed: {allowed:?}")]
    AlgorithmNotAllowed { alg: String, allowed: Vec<&'static str> },
    #[error("token claim {name:?} is missing or invalid; expected {expected}")]
    MissingClaim { name: String, expected: &'static str },
    #[error("no JWKS keys are loaded yet, so the token cannot be checked: {0}")]
    Jwks(String),
}

impl JwtError {
    /// A low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            JwtError::Malformed { .. } => "malformed",
            JwtError::Expired { .. } => "expired",
            JwtError::NotYetValid { .. } => "not_yet_valid",
            JwtError::WrongAudience { .. } => "wrong_audience",
            JwtError::WrongIssuer { .. } => "wrong_issuer",
            JwtError::BadSignature { .. } => "bad_signature",
            JwtError::UnknownKey { .. } => "unknown_key",
            JwtError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            JwtError::MissingClaim { .. } => "missing_claim",
            JwtError::Jwks(_) => "jwks_unavailable",
        }
    }
}

fn unknown_key_message(kid: Option<&str>, known: &[String]) -> String {
    match kid {
        Some(kid) => format!("token key id {kid:?} is not in the JWKS; known key ids: {known:?}"),
        None => format!(
            "token has no kid and the JWKS does not hold exactly one key of its type; \
             add a kid, one of {known:?}"
        ),
    }
}

/// `s` when it is short and printable ASCII, else a placeholder: the token's
/// header is the sender's text, and it goes into error messages and logs.
fn shown(s: &str) -> String {
    if s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) {
        s.to_string()
    } else {
        format!("<{} bytes, not shown>", s.len())
    }
}

/// One public key from the JWKS.
struct JwksKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// A JWKS snapshot; replaced whole on every successful fetch.
#[derive(Default)]
struct KeySet {
    keys: Vec<JwksKey>,
    by_kid: HashMap<String, usize>,
    /// Why the fetches so far failed, while none has succeeded.
    error: Option<String>,
}

impl KeySet {
    fn known(&self) -> Vec<String> {
        self.keys.iter().filter_map(|k| k.kid.clone()).collect()
    }

    /// The key for a token of `alg` with `kid`: by kid, or with no kid the
    /// one key of that type.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&JwksKey, JwtError> {
        let found = match kid {
            Some(kid) => self.by_kid.get(kid).map(|i| &self.keys[*i]),
            None => {
                let mut of_type = self.keys.iter().filter(|k| k.alg == alg);
                match (of_type.next(), of_type.next()) {
                    (Some(key), None) => Some(key),
                    _ => None,
                }
            }
        };
        match found {
            Some(key) if key.alg == alg => Ok(key),
            Some(key) => Err(JwtError::AlgorithmNotAllowed {
                alg: alg_name(alg).into(),
                allowed: vec![alg_name(key.alg)],
            }),
            None => match (&self.error, self.keys.is_empty()) {
                (Some(error), true) => Err(JwtError::Jwks(error.clone())),
                _ => Err(JwtError::UnknownKey { kid: kid.map(shown), known: self.known() }),
            },
        }
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.known())
            .field("keys", &self.keys.len())
            .field("error", &self.error)
            .finish()
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => HS256,
        Algorithm::RS256 => RS256,
        Algorithm::ES256 => ES256,
        // Only the three above are ever stored or checked.
        _ => "other",
    }
}

/// Where the JWKS comes from and what the refresh loop needs.
struct Jwks {
    url: http::Uri,
    client: HttpClient,
    /// Set by `verify` on an unknown kid; the refresh loop waits on it.
    wanted: Notify,
    /// Skipped keys already logged, so each is logged once.
    warned: Mutex<HashSet<String>>,
}

pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    keys: RwLock<Arc<KeySet>>,
    hs256_validation: Validation,
    rs256_validation: Validation,
    es256_validation: Validation,
    allowed: Vec<&'static str>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway_secs: u64,
    user_claim: String,
    tier_claim: Option<String>,
    refresh: Duration,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("allowed", &self.allowed)
            .field("jwks_url", &self.jwks.as_ref().map(|j| j.url.to_string()))
            .field("keys", &self.snapshot())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl JwtVerifier {
    /// Checks `config` and, with a `jwks_url`, fetches the JWKS once. A
    /// failed fetch is logged and left to [`run_refresh`](Self::run_refresh)
    /// to retry, so an identity provider that is down does not stop startup.
    pub async fn new(
        config: JwtConfig,
        client: HttpClient,
    ) -> Result<Arc<JwtVerifier>, JwtConfigError> {
        if config.hs256_secret.is_none() && config.jwks_url.is_none() {
            return Err(JwtConfigError::NoKeySource);
        }
        if config.user_claim.is_empty() {
            return Err(JwtConfigError::EmptyUserClaim);
        }
        if config.leeway > MAX_LEEWAY {
            return Err(JwtConfigError::LeewayTooLarge(config.leeway));
        }
        if config.jwks_refresh.is_zero() {
            return Err(JwtConfigError::ZeroRefresh);
        }
        let hs256 = match &config.hs256_secret {
            Some(secret) => {
                let secret = secret.expose_secret().as_bytes();
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(JwtConfigError::ShortSecret { len: secret.len() });
                }
                Some(DecodingKey::from_secret(secret))
            }
            None => None,
        };
        let jwks = match &config.jwks_url {
            Some(url) => Some(Jwks {
                url: parse_url(url)?,
                client,
                wanted: Notify::new(),
                warned: Mutex::new(HashSet::new()),
            }),
            None => None,
        };
        let mut allowed = Vec::new();
        if hs256.is_some() {
            allowed.push(HS256);
        }
        if jwks.is_some() {
            allowed.extend([RS256, ES256]);
        }
        let leeway_secs = config.leeway.as_secs();
        let validation = |alg| validation(alg, &config, leeway_secs);
        let verifier = Arc::new(JwtVerifier {
            hs256,
            jwks,
            keys: RwLock::new(Arc::new(KeySet::default())),
            hs256_validation: validation(Algorithm::HS256),
            rs256_validation: validation(Algorithm::RS256),
            es256_validation: validation(Algorithm::ES256),
            allowed,
            issuer: config.issuer,
            audience: config.audience,
            leeway_secs,
            user_claim: config.user_claim,
            tier_claim: config.tier_claim,
            refresh: config.jwks_refresh,
        });
        if verifier.jwks.is_some() {
            verifier.refresh_once().await;
        }
        Ok(verifier)
    }

    /// Whether `token` has the shape of a JWT (as opposed to an API key):
    /// three dot-separated base64url segments, the header starting `eyJ`
    /// (the encoding of `{"`). The signature may be empty, so an unsigned
    /// token still reaches [`verify`](Self::verify) and is refused there by name.
    pub fn looks_like_jwt(token: &str) -> bool {
        let base64url =
            |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(header), Some(payload), Some(signature), None) => {
                header.starts_with("eyJ")
                    && base64url(header)
                    && !payload.is_empty()
                    && base64url(payload)
                    && base64url(signature)
            }
            _ => false,
        }
    }

    /// Checks `token` and returns the end user it names. No I/O: the JWKS
    /// keys are the last snapshot the refresh loop loaded. A token whose key
    /// is not in the snapshot asks the loop for an early refresh.
    pub fn verify(&self, token: &str) -> Result<EndUser, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed { reason: "longer than 16 KiB" });
        }
        let header = parse_header(token)?;
        let snapshot;
        let (key, validation, alg) = match (header.alg.as_str(), &self.hs256, &self.jwks) {
            (HS256, Some(secret), _) => (secret, &self.hs256_validation, HS256),
            (name @ (RS256 | ES256), _, Some(jwks)) => {
                let (alg, validation) = if name == RS256 {
                    (Algorithm::RS256, &self.rs256_validation)
                } else {
                    (Algorithm::ES256, &self.es256_validation)
                };
                snapshot = self.snapshot();
                match snapshot.find(header.kid.as_deref(), alg) {
                    Ok(key) => (&key.key, validation, alg_name(key.alg)),
                    Err(error) => {
                        if matches!(error, JwtError::UnknownKey { .. } | JwtError::Jwks(_)) {
                            jwks.wanted.notify_one();
                        }
                        return Err(error);
                    }
                }
            }
            (alg, _, _) => {
                return Err(JwtError::AlgorithmNotAllowed {
                    alg: shown(alg),
                    allowed: self.allowed.clone(),
                });
            }
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|error| self.map_error(error.into_kind(), alg))?
            .claims;
        let id = match claims.get(&self.user_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::Number(id)) if id.is_u64() || id.is_i64() => id.to_string(),
            _ => {
                return Err(JwtError::MissingClaim {
                    name: self.user_claim.clone(),
                    expected: "a non-empty string (or integer) naming the end user",
                });
            }
        };
        let tier = self
            .tier_claim
            .as_ref()
            .and_then(|name| claims.get(name))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(EndUser { id, tier })
    }

    /// Fetches the JWKS every `jwks_refresh`, sooner when `verify` met an
    /// unknown kid (at most once per 30 s), and after a failed fetch again
    /// with backoff. Returns when `shutdown` is cancelled; without a
    /// `jwks_url` it only waits for that.
    pub async fn run_refresh(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(jwks) = &self.jwks else {
            shutdown.cancelled().await;
            return;
        };
        let mut backoff = Backoff::new(RETRY_BASE, self.refresh);
        let loaded = self.snapshot().error.is_none();
        let mut next = Instant::now() + self.next_wait(loaded, &mut backoff);
        let mut last_on_demand: Option<Instant> = None;
        // An early refresh was asked for during the cooldown.
        let mut deferred = false;
        loop {
            let cooldown_end = last_on_demand.map_or_else(Instant::now, |t| t + ON_DEMAND_COOLDOWN);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
                () = jwks.wanted.notified(), if !deferred => {
                    if Instant::now() < cooldown_end {
                        deferred = true;
                        continue;
                    }
                    last_on_demand = Some(Instant::now());
                }
                () = tokio::time::sleep_until(cooldown_end), if deferred => {
                    last_on_demand = Some(Instant::now());
                }
            }
            deferred = false;
            let ok = self.refresh_once().await;
            // Tokens checked during the fetch asked against the old keys;
            // those the new keys still lack will ask again.
            let _ = jwks.wanted.notified().now_or_never();
            next = Instant::now() + self.next_wait(ok, &mut backoff);
        }
    }

    /// Until the next periodic fetch: `jwks_refresh` after a good fetch, a
    /// growing backoff after failed ones.
    fn next_wait(&self, last_ok: bool, backoff: &mut Backoff) -> Duration {
        if last_ok {
            *backoff = Backoff::new(RETRY_BASE, self.refresh);
            self.refresh
        } else {
            backoff.next_delay().max(RETRY_BASE / 2).min(self.refresh)
        }
    }

    fn snapshot(&self) -> Arc<KeySet> {
        // Writers only swap the Arc, so a poisoned lock still holds a whole snapshot.
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Fetches and installs the JWKS once; false when that failed (the old
    /// keys stay).
    async fn refresh_once(&self) -> bool {
        let Some(jwks) = &self.jwks else { return false };
        let outcome = match fetch(jwks).await {
            Ok(body) => self.parse_key_set(jwks, &body),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(set) => {
                let kids = set.known();
                let previous = self.snapshot();
                if previous.known() != kids || previous.keys.len() != set.keys.len() {
                    tracing::info!(url = %jwks.url, ?kids, "JWKS loaded");
                }
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
                true
            }
            Err(error) => {
                tracing::warn!(url = %jwks.url, %error, "JWKS fetch failed; keeping the previous keys and retrying");
                let previous = self.snapshot();
                if previous.keys.is_empty() {
                    let failed = KeySet { error: Some(error), ..KeySet::default() };
                    *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(failed);
                }
                false
            }
        }
    }

    /// The usable keys of a JWKS document (at least one). Each key is parsed
    /// on its own so one key of a type `jsonwebtoken` does not know spoils
    /// only itself rather than the whole set.
    fn parse_key_set(&self, jwks: &Jwks, body: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let raw: RawSet = serde_json::from_slice(body)
            .map_err(|e| format!("GET {}: the body is not a JWK set: {e}", jwks.url))?;
        let mut set = KeySet::default();
        for value in raw.keys {
            let kid = value.get("kid").and_then(Value::as_str).map(str::to_string);
            match serde_json::from_value::<Jwk>(value).map_err(|e| e.to_string()).and_then(usable) {
                Ok((alg, key)) => {
                    if let Some(kid) = &kid {
                        if set.by_kid.contains_key(kid) {
                            self.warn_once(jwks, Some(kid), "a second key with the same kid");
                            continue;
                        }
                        set.by_kid.insert(kid.clone(), set.keys.len());
                    }
                    set.keys.push(JwksKey { kid, alg, key });
                }
                Err(reason) => self.warn_once(jwks, kid.as_deref(), &reason),
            }
        }
        // An empty answer is more likely a glitch at the identity provider
        // than a real rotation to nothing: keep the keys we have.
        if set.keys.is_empty() {
            return Err(format!("GET {}: the JWK set has no RS256 or ES256 signing key", jwks.url));
        }
        Ok(set)
    }

    fn warn_once(&self, jwks: &Jwks, kid: Option<&str>, reason: &str) {
        let kid = kid.unwrap_or("(none)");
        let seen = format!("{kid}\u{0}{reason}");
        let mut warned = jwks.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.insert(seen) {
            tracing::warn!(url = %jwks.url, kid, reason, "JWKS key skipped");
        }
    }

    fn map_error(&self, kind: ErrorKind, alg: &'static str) -> JwtError {
        let wrong_issuer =
            || JwtError::WrongIssuer { expected: self.issuer.clone().unwrap_or_default() };
        let wrong_audience = || JwtError::WrongAudience { expected: self.audience.clone() };
        match kind {
            ErrorKind::ExpiredSignature => JwtError::Expired { leeway_secs: self.leeway_secs },
            ErrorKind::ImmatureSignature => JwtError::NotYetValid { leeway_secs: self.leeway_secs },
            ErrorKind::InvalidIssuer => wrong_issuer(),
            ErrorKind::InvalidAudience => wrong_audience(),
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "iss" => wrong_issuer(),
                "aud" => wrong_audience(),
                _ => JwtError::MissingClaim {
                    name: claim,
                    expected: "a NumericDate (seconds since the Unix epoch)",
                },
            },
            ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => JwtError::BadSignature { alg },
            ErrorKind::InvalidAlgorithm => {
                JwtError::AlgorithmNotAllowed { alg: alg.into(), allowed: self.allowed.clone() }
            }
            ErrorKind::Base64(_) => JwtError::Malformed { reason: "a segment is not base64url" },
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => JwtError::Malformed {
                reason: "the header or payload is not a JSON object of the expected shape",
            },
            // The library's enum is non-exhaustive; whatever else it reports
            // (bad token shape, key format) means the token is not accepted.
            _ => JwtError::Malformed { reason: "refused by the JWT decoder" },
        }
    }
}

fn validation(alg: Algorithm, config: &JwtConfig, leeway_secs: u64) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = leeway_secs;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    if config.audience.is_empty() {
        // Otherwise the library refuses any token that carries an `aud`.
        validation.validate_aud = false;
    } else {
        validation.set_audience(&config.audience);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn parse_url(url: &str) -> Result<http::Uri, JwtConfigError> {
    let bad = |reason: String| JwtConfigError::BadJwksUrl { url: url.to_string(), reason };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(bad("it needs a scheme (http or https) and a host".into())),
    }
}

fn parse_header(token: &str) -> Result<RawHeader, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed { reason: "not three dot-separated segments" });
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed { reason: "the header is not base64url" })?;
    serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed { reason: "the header is not JSON with a string \"alg\"" })
}

/// The algorithm and decoding key of a JWK this verifier can use, or why not.
fn usable(jwk: Jwk) -> Result<(Algorithm, DecodingKey), String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("its \"use\" is not \"sig\"".into()),
    }
    let alg = jwk.common.key_algorithm;
    let key = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            if !matches!(alg, None | Some(KeyAlgorithm::RS256)) {
                return Err(format!("RSA key for {alg:?}; only RS256 is supported"));
            }
            let key = DecodingKey::from_rsa_components(&rsa.n, &rsa.e)
                .map_err(|e| format!("bad RSA components: {e}"))?;
            (Algorithm::RS256, key)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            if ec.curve != EllipticCurve::P256 || !matches!(alg, None | Some(KeyAlgorithm::ES256)) {
                return Err(format!(
                    "EC key on {:?} for {alg:?}; only P-256 with ES256 is supported",
                    ec.curve
                ));
            }
            let coordinate = |c: &str| URL_SAFE_NO_PAD.decode(c).ok().filter(|b| b.len() == 32);
            if coordinate(&ec.x).is_none() || coordinate(&ec.y).is_none() {
                return Err("bad P-256 coordinates: x and y must be 32 bytes of base64url".into());
            }
            let key = DecodingKey::from_ec_components(&ec.x, &ec.y)
                .map_err(|e| format!("bad EC components: {e}"))?;
            (Algorithm::ES256, key)
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err("OKP (EdDSA) keys are not supported; only RS256 and ES256".into());
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are not taken from a JWKS; configure hs256_secret".into());
        }
    };
    Ok(key)
}

/// One GET of the JWKS document: 200 and a body of at most 1 MiB, within
/// [`FETCH_TIMEOUT`].
async fn fetch(jwks: &Jwks) -> Result<Bytes, String> {
    let url = &jwks.url;
    let request = http::Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("GET {url}: {e}"))?;
    let get = async {
        let response = jwks
            .client
            .request(request)
            .await
            .map_err(|e| format!("GET {url}: {}", crate::providers::innermost(&e)))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(format!("GET {url}: status {status}; expected 200"));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(FETCH_TIMEOUT, get)
        .await
        .map_err(|_| format!("GET {url}: no answer within {}s", FETCH_TIMEOUT.as_secs()))?
}

#[cfg(test)]
mod tests;
