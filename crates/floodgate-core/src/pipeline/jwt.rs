//! PLACEHOLDER replaced by the wt-jwt branch at merge.
use std::time::Duration;
use secrecy::SecretString;
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub hs256_secret: Option<SecretString>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: Duration,
    pub user_claim: String,
    pub tier_claim: Option<String>,
    pub jwks_refresh: Duration,
}
