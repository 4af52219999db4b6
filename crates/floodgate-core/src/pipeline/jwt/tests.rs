//! Tokens signed with the committed fixtures (`testdata/`, made by
//! `generate.sh`) against a JWKS served from an in-process HTTP server.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::IntoResponse;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const RSA: &[u8] = include_bytes!("testdata/rsa.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa.pub.pem");
const RSA_NEXT: &[u8] = include_bytes!("testdata/rsa-next.pem");
const ATTACKER: &[u8] = include_bytes!("testdata/attacker.pem");
const EC: &[u8] = include_bytes!("testdata/ec.pem");
const JWKS: &str = include_str!("testdata/jwks.json");
const JWKS_NEXT: &str = include_str!("testdata/jwks-next.json");

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Claims for user `u-1`, valid for five minutes.
fn claims() -> Value {
    json!({ "sub": "u-1", "exp": now() + 300, "iat": now() })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let header = Header { alg, kid: kid.map(str::to_string), ..Header::default() };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, None, claims, &EncodingKey::from_secret(SECRET.as_bytes()))
}

fn rs256(pem: &[u8], kid: Option<&str>, claims: &Value) -> String {
    sign(Algorithm::RS256, kid, claims, &EncodingKey::from_rsa_pem(pem).unwrap())
}

fn es256(kid: Option<&str>, claims: &Value) -> String {
    sign(Algorithm::ES256, kid, claims, &EncodingKey::from_ec_pem(EC).unwrap())
}

fn client() -> HttpClient {
    crate::providers::client::plain(Duration::from_secs(1)).unwrap()
}

fn hs256_config() -> JwtConfig {
    JwtConfig { hs256_secret: Some(SECRET.into()), ..JwtConfig::default() }
}

async fn verifier(config: JwtConfig) -> Arc<JwtVerifier> {
    JwtVerifier::new(config, client()).await.unwrap()
}

/// `verify` refuses `token`; the message never contains the token or secret.
fn refused(verifier: &JwtVerifier, token: &str) -> JwtError {
    match verifier.verify(token) {
        Ok(user) => panic!("accepted as {user:?}"),
        Err(error) => {
            let message = error.to_string();
            // (Short strings like "" or "a.b" occur in any message.)
            assert!(token.len() < 16 || !message.contains(token), "{message}");
            assert!(!message.contains(SECRET), "{message}");
            error
        }
    }
}

/// A JWKS endpoint whose key set can be swapped and which counts its fetches.
struct JwksServer {
    url: String,
    state: Arc<ServerState>,
}

struct ServerState {
    jwks: Mutex<Value>,
    /// Answers 503 while false.
    up: AtomicBool,
    fetches: AtomicUsize,
}

impl JwksServer {
    async fn start(jwks: Value) -> JwksServer {
        let state = Arc::new(ServerState {
            jwks: Mutex::new(jwks),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(serve_jwks))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { url, state }
    }

    fn set_keys(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    fn config(&self) -> JwtConfig {
        JwtConfig { jwks_url: Some(self.url.clone()), ..JwtConfig::default() }
    }
}

async fn serve_jwks(State(state): State<Arc<ServerState>>) -> axum::response::Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if !state.up.load(Ordering::SeqCst) {
        return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(state.jwks.lock().unwrap().clone()).into_response()
}

fn jwks() -> Value {
    serde_json::from_str(JWKS).unwrap()
}

/// The published keys plus the rotated-in `rsa-2`.
fn jwks_rotated() -> Value {
    let mut set = jwks();
    let next: Value = serde_json::from_str(JWKS_NEXT).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.extend(next["keys"].as_array().unwrap().iter().cloned());
    set
}

/// Calls `verify` until it accepts `token`, for at most five seconds.
async fn eventually_verifies(verifier: &JwtVerifier, token: &str) -> EndUser {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(user) = verifier.verify(token) {
                return user;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap()
}

fn user(id: &str) -> EndUser {
    EndUser { id: id.into(), tier: None }
}

#[tokio::test]
async fn hs256_token_with_the_secret_verifies() {
    let verifier = verifier(hs256_config()).await;
    assert_eq!(verifier.verify(&hs256(&claims())).unwrap(), user("u-1"));
}

#[tokio::test]
async fn hs256_token_with_another_secret_has_a_bad_signature() {
    let verifier = verifier(hs256_config()).await;
    let other = EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long");
    let token = sign(Algorithm::HS256, None, &claims(), &other);
    assert_eq!(refused(&verifier, &token), JwtError::BadSignature { alg: "HS256" });
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_jwks_keys() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    assert_eq!(verifier.verify(&rs256(RSA, Some("rsa-1"), &claims())).unwrap(), user("u-1"));
    assert_eq!(verifier.verify(&es256(Some("ec-1"), &claims())).unwrap(), user("u-1"));
    // Without a kid, the one key of the token's type is used.
    assert_eq!(verifier.verify(&rs256(RSA, None, &claims())).unwrap(), user("u-1"));
    assert_eq!(verifier.verify(&es256(None, &claims())).unwrap(), user("u-1"));
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn unusable_jwks_keys_are_skipped() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    // jwks.json also holds an EdDSA key, an encryption key and an unknown type.
    assert_eq!(verifier.snapshot().known(), ["rsa-1", "ec-1"]);
}

#[tokio::test]
async fn both_key_sources_work_side_by_side() {
    let server = JwksServer::start(jwks()).await;
    let config = JwtConfig { hs256_secret: Some(SECRET.into()), ..server.config() };
    let verifier = verifier(config).await;
    assert!(verifier.verify(&hs256(&claims())).is_ok());
    assert!(verifier.verify(&rs256(RSA, Some("rsa-1"), &claims())).is_ok());
}

#[tokio::test]
async fn expiry_is_checked_with_leeway() {
    let verifier = verifier(hs256_config()).await;
    let expired = hs256(&with(claims(), "exp", json!(now() - 120)));
    assert_eq!(refused(&verifier, &expired), JwtError::Expired { leeway_secs: 30 });
    let within_leeway = hs256(&with(claims(), "exp", json!(now() - 10)));
    assert_eq!(verifier.verify(&within_leeway).unwrap(), user("u-1"));
}

#[tokio::test]
async fn nbf_is_checked_when_present() {
    let verifier = verifier(hs256_config()).await;
    let early = hs256(&with(claims(), "nbf", json!(now() + 120)));
    assert_eq!(refused(&verifier, &early), JwtError::NotYetValid { leeway_secs: 30 });
    let within_leeway = hs256(&with(claims(), "nbf", json!(now() + 10)));
    assert!(verifier.verify(&within_leeway).is_ok());
}

#[tokio::test]
async fn exp_is_required() {
    let verifier = verifier(hs256_config()).await;
    let token = hs256(&json!({ "sub": "u-1" }));
    let error = refused(&verifier, &token);
    assert!(matches!(&error, JwtError::MissingClaim { name, .. } if name == "exp"), "{error:?}");
}

#[tokio::test]
async fn audience_must_match_when_configured() {
    let config = JwtConfig { audience: vec!["floodgate".into()], ..hs256_config() };
    let verifier = verifier(config).await;
    let other = hs256(&with(claims(), "aud", json!("someone-else")));
    let error = refused(&verifier, &other);
    assert_eq!(error, JwtError::WrongAudience { expected: vec!["floodgate".into()] });
    assert_eq!(error.to_string(), "token audience does not match; expected one of [\"floodgate\"]");
    assert_eq!(refused(&verifier, &hs256(&claims())).kind(), "wrong_audience");
    assert!(verifier.verify(&hs256(&with(claims(), "aud", json!(["x", "floodgate"])))).is_ok());
}

#[tokio::test]
async fn audience_is_not_checked_when_not_configured() {
    let verifier = verifier(hs256_config()).await;
    assert!(verifier.verify(&hs256(&with(claims(), "aud", json!("anyone")))).is_ok());
}

#[tokio::test]
async fn issuer_must_match_when_configured() {
    let config = JwtConfig { issuer: Some("https://id.example".into()), ..hs256_config() };
    let verifier = verifier(config).await;
    let expected = JwtError::WrongIssuer { expected: "https://id.example".into() };
    let other = hs256(&with(claims(), "iss", json!("https://evil.example")));
    assert_eq!(refused(&verifier, &other), expected);
    assert_eq!(refused(&verifier, &hs256(&claims())), expected);
    assert!(verifier.verify(&hs256(&with(claims(), "iss", json!("https://id.example")))).is_ok());
}

#[tokio::test]
async fn token_signed_by_another_key_under_the_good_kid_has_a_bad_signature() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    let forged = rs256(ATTACKER, Some("rsa-1"), &claims());
    assert_eq!(refused(&verifier, &forged), JwtError::BadSignature { alg: "RS256" });
}

#[tokio::test]
async fn unsigned_tokens_are_refused() {
    let server = JwksServer::start(jwks()).await;
    let config = JwtConfig { hs256_secret: Some(SECRET.into()), ..server.config() };
    let verifier = verifier(config).await;
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    for alg in ["none", "None", "NONE"] {
        let token =
            format!("{}.{}.", encode(&json!({ "alg": alg, "typ": "JWT" })), encode(&claims()));
        assert!(JwtVerifier::looks_like_jwt(&token));
        let error = refused(&verifier, &token);
        assert_eq!(
            error,
            JwtError::AlgorithmNotAllowed {
                alg: alg.into(),
                allowed: vec!["HS256", "RS256", "ES256"]
            }
        );
        assert_eq!(
            error.to_string(),
            format!(
                "token algorithm \"{alg}\" is not allowed here; allowed: [\"HS256\", \"RS256\", \"ES256\"]"
            )
        );
    }
}

#[tokio::test]
async fn hs256_token_keyed_with_the_rsa_public_key_is_refused() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    let confused =
        sign(Algorithm::HS256, Some("rsa-1"), &claims(), &EncodingKey::from_secret(RSA_PUBLIC));
    let error = refused(&verifier, &confused);
    assert_eq!(
        error,
        JwtError::AlgorithmNotAllowed { alg: "HS256".into(), allowed: vec!["RS256", "ES256"] }
    );
}

#[tokio::test]
async fn token_whose_alg_does_not_fit_its_key_is_refused() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    let token = es256(Some("rsa-1"), &claims());
    assert_eq!(
        refused(&verifier, &token),
        JwtError::AlgorithmNotAllowed { alg: "ES256".into(), allowed: vec!["RS256"] }
    );
    let rs384 =
        sign(Algorithm::RS384, Some("rsa-1"), &claims(), &EncodingKey::from_rsa_pem(RSA).unwrap());
    assert!(matches!(refused(&verifier, &rs384), JwtError::AlgorithmNotAllowed { .. }));
}

#[tokio::test]
async fn rs256_token_without_jwks_is_refused() {
    let verifier = verifier(hs256_config()).await;
    let token = rs256(RSA, Some("rsa-1"), &claims());
    assert_eq!(
        refused(&verifier, &token),
        JwtError::AlgorithmNotAllowed { alg: "RS256".into(), allowed: vec!["HS256"] }
    );
}

#[tokio::test]
async fn unknown_kid_triggers_a_refresh_that_loads_the_rotated_key() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    let shutdown = CancellationToken::new();
    let refresh = tokio::spawn(Arc::clone(&verifier).run_refresh(shutdown.clone()));
    assert_eq!(server.fetches(), 1);

    let token = rs256(RSA_NEXT, Some("rsa-2"), &claims());
    server.set_keys(jwks_rotated());
    let error = refused(&verifier, &token);
    assert_eq!(
        error,
        JwtError::UnknownKey {
            kid: Some("rsa-2".into()),
            known: vec!["rsa-1".into(), "ec-1".into()]
        }
    );
    assert_eq!(
        error.to_string(),
        "token key id \"rsa-2\" is not in the JWKS; known key ids: [\"rsa-1\", \"ec-1\"]"
    );

    // The periodic refresh is five minutes away: only the early one can load it.
    assert_eq!(eventually_verifies(&verifier, &token).await, user("u-1"));
    assert_eq!(server.fetches(), 2);
    // Old keys still work after the swap.
    assert!(verifier.verify(&rs256(RSA, Some("rsa-1"), &claims())).is_ok());

    shutdown.cancel();
    refresh.await.unwrap();
}

#[tokio::test]
async fn early_refreshes_are_rate_limited() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    let shutdown = CancellationToken::new();
    let refresh = tokio::spawn(Arc::clone(&verifier).run_refresh(shutdown.clone()));
    let made_up = rs256(RSA, Some("made-up-1"), &claims());
    assert!(matches!(refused(&verifier, &made_up), JwtError::UnknownKey { .. }));
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.fetches() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    // A second unknown kid inside the 30 s cooldown does not fetch again.
    let made_up = rs256(RSA, Some("made-up-2"), &claims());
    for _ in 0..20 {
        assert!(matches!(refused(&verifier, &made_up), JwtError::UnknownKey { .. }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.fetches(), 2);
    shutdown.cancel();
    refresh.await.unwrap();
}

#[tokio::test]
async fn jwks_down_at_startup_is_retried_until_it_loads() {
    let server = JwksServer::start(jwks()).await;
    server.set_up(false);
    let config = JwtConfig { jwks_refresh: Duration::from_millis(100), ..server.config() };
    let verifier = verifier(config).await;
    let token = rs256(RSA, Some("rsa-1"), &claims());
    let error = refused(&verifier, &token);
    assert!(matches!(&error, JwtError::Jwks(message) if message.contains("503")), "{error:?}");

    let shutdown = CancellationToken::new();
    let refresh = tokio::spawn(Arc::clone(&verifier).run_refresh(shutdown.clone()));
    server.set_up(true);
    assert_eq!(eventually_verifies(&verifier, &token).await, user("u-1"));
    shutdown.cancel();
    refresh.await.unwrap();
}

#[tokio::test]
async fn jwks_unreachable_at_startup_does_not_fail_startup() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let config = JwtConfig { jwks_url: Some(url.clone()), ..JwtConfig::default() };
    let verifier = verifier(config).await;
    let error = refused(&verifier, &rs256(RSA, Some("rsa-1"), &claims()));
    assert!(matches!(&error, JwtError::Jwks(message) if message.contains(&url)), "{error:?}");
    assert_eq!(error.kind(), "jwks_unavailable");
}

#[tokio::test]
async fn jwks_fetch_failure_keeps_the_keys_already_loaded() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    server.set_up(false);
    assert!(!verifier.refresh_once().await);
    assert!(verifier.verify(&rs256(RSA, Some("rsa-1"), &claims())).is_ok());
}

#[tokio::test]
async fn jwks_without_usable_keys_does_not_replace_the_loaded_keys() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    server.set_keys(json!({ "keys": [] }));
    assert!(!verifier.refresh_once().await);
    server.set_keys(json!({ "not": "a jwk set" }));
    assert!(!verifier.refresh_once().await);
    assert!(verifier.verify(&rs256(RSA, Some("rsa-1"), &claims())).is_ok());
}

#[tokio::test]
async fn tier_claim_is_read_when_configured() {
    let config = JwtConfig { tier_claim: Some("plan".into()), ..hs256_config() };
    let verifier = verifier(config).await;
    let token = hs256(&with(claims(), "plan", json!("pro")));
    assert_eq!(
        verifier.verify(&token).unwrap(),
        EndUser { id: "u-1".into(), tier: Some("pro".into()) }
    );
    assert_eq!(verifier.verify(&hs256(&claims())).unwrap().tier, None);
}

#[tokio::test]
async fn user_claim_is_required_and_configurable() {
    let verifier = verifier(hs256_config()).await;
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let error = refused(&verifier, &hs256(&no_sub));
    assert!(matches!(&error, JwtError::MissingClaim { name, .. } if name == "sub"), "{error:?}");
    assert!(matches!(
        refused(&verifier, &hs256(&with(claims(), "sub", json!("")))),
        JwtError::MissingClaim { .. }
    ));

    let config = JwtConfig { user_claim: "uid".into(), ..hs256_config() };
    let verifier = self::verifier(config).await;
    assert_eq!(verifier.verify(&hs256(&with(claims(), "uid", json!(42)))).unwrap(), user("42"));
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let verifier = verifier(hs256_config()).await;
    for token in ["", "fg-abc", "a.b", "a.b.c.d", "!!!.e30.x", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        assert!(matches!(refused(&verifier, token), JwtError::Malformed { .. }), "{token}");
    }
    // The signature is checked before the payload is read.
    let unsigned_garbage = "eyJhbGciOiJIUzI1NiJ9.%%%.x";
    assert!(matches!(refused(&verifier, unsigned_garbage), JwtError::BadSignature { .. }));
    // A signed payload that is not a JSON object.
    let message = format!("eyJhbGciOiJIUzI1NiJ9.{}", URL_SAFE_NO_PAD.encode("[1, 2]"));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, message.as_bytes()));
    let error = refused(&verifier, &format!("{message}.{signature}"));
    assert_eq!(
        error,
        JwtError::Malformed {
            reason: "the header or payload is not a JSON object of the expected shape"
        }
    );
    let token = hs256(&claims());
    let (rest, _) = token.rsplit_once('.').unwrap();
    let bad_signature = format!("{rest}.$$$");
    assert!(matches!(refused(&verifier, &bad_signature), JwtError::BadSignature { .. }));
    let long = format!("{}.{}.x", "eyJ", "a".repeat(MAX_TOKEN_BYTES));
    assert!(matches!(refused(&verifier, &long), JwtError::Malformed { .. }));
}

#[tokio::test]
async fn token_fields_in_errors_are_shown_only_when_short_and_printable() {
    let server = JwksServer::start(jwks()).await;
    let verifier = verifier(server.config()).await;
    let kid = "k\u{1b}[31m".to_string();
    let error = refused(&verifier, &rs256(RSA, Some(&kid), &claims()));
    assert!(
        matches!(&error, JwtError::UnknownKey { kid: Some(k), .. } if k == "<6 bytes, not shown>"),
        "{error:?}"
    );
}

#[test]
fn looks_like_jwt_tells_tokens_from_api_keys() {
    assert!(JwtVerifier::looks_like_jwt(&hs256(&claims())));
    assert!(!JwtVerifier::looks_like_jwt("fg-0123456789abcdef"));
    assert!(!JwtVerifier::looks_like_jwt("sk-proj-abc.def.ghi"));
    assert!(!JwtVerifier::looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.e30"));
    assert!(!JwtVerifier::looks_like_jwt("eyJhbGciOiJIUzI1NiJ9..sig"));
    assert!(!JwtVerifier::looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.e30.sig.extra"));
    assert!(!JwtVerifier::looks_like_jwt("eyJhbGci+iJIUzI1NiJ9.e30.sig"));
}

#[tokio::test]
async fn config_without_a_key_source_is_refused() {
    let error = JwtVerifier::new(JwtConfig::default(), client()).await.unwrap_err();
    assert!(matches!(error, JwtConfigError::NoKeySource));
    let short = JwtConfig { hs256_secret: Some("short".into()), ..JwtConfig::default() };
    let error = JwtVerifier::new(short, client()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "jwt: hs256_secret is 5 bytes; HS256 needs at least 32 (RFC 7518 §3.2)"
    );
    let bad_url = JwtConfig { jwks_url: Some("id.example/jwks".into()), ..JwtConfig::default() };
    assert!(matches!(
        JwtVerifier::new(bad_url, client()).await.unwrap_err(),
        JwtConfigError::BadJwksUrl { .. }
    ));
}

#[tokio::test]
async fn run_refresh_without_jwks_waits_for_shutdown() {
    let verifier = verifier(hs256_config()).await;
    let shutdown = CancellationToken::new();
    let refresh = tokio::spawn(Arc::clone(&verifier).run_refresh(shutdown.clone()));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), refresh).await.unwrap().unwrap();
}
