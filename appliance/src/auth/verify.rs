//! Bearer-token verification: the local issuer and external issuers (OIDC, tokensmith) by JWKS.
//!
//! Algorithm confusion is closed by construction: the algorithms a token may use come from the
//! *key* (its JWK `kty`/`crv`/`alg`), never from the token header, and symmetric (HS*) keys are
//! never accepted. `alg: none` does not parse at all.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, LOCAL_AUDIENCE, LOCAL_ISSUER, LocalIssuer};

/// An external token issuer whose JWTs are accepted next to the local issuer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIssuer {
    /// Where its public keys are published (e.g. `https://…/.well-known/jwks.json`).
    pub jwks_url: String,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry for rackboot.
    pub audience: String,
}

impl From<&crate::config::Issuer> for ExternalIssuer {
    fn from(c: &crate::config::Issuer) -> Self {
        Self {
            jwks_url: c.jwks_url.clone(),
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
        }
    }
}

/// Who a verified token speaks for. Put into request extensions by [`super::require`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub issuer: String,
    pub scopes: BTreeSet<String>,
}

/// Why a token was refused. The messages are safe to return to the client (no token content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not a single `Bearer <token>`")]
    BadHeader,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted for its key")]
    Algorithm,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not trusted")]
    Issuer,
    #[error("the token's audience is not rackboot")]
    Audience,
    #[error("the token lacks a required claim ({0})")]
    MissingClaim(String),
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the issuer's keys cannot be fetched")]
    KeysUnavailable,
}

/// Verifies bearer tokens. Cheap to clone (shared state behind `Arc`).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    local: Option<LocalIssuer>,
    external: Vec<External>,
    leeway: u64,
    min_refresh: Duration,
    /// Only with external issuers: building it loads the system's CA certificates, which an
    /// empty root or a `FROM scratch` image does not have, and the local issuer needs none.
    http: Option<reqwest::Client>,
}

struct External {
    cfg: ExternalIssuer,
    cache: RwLock<KeyCache>,
    /// Serialises refreshes so a burst of unknown-kid tokens causes one fetch.
    refreshing: Mutex<()>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, CachedKey>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

#[derive(Clone)]
struct CachedKey {
    key: DecodingKey,
    algs: Vec<Algorithm>,
}

/// Clock skew tolerated on `exp`/`nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Unknown `kid`s trigger at most one JWKS fetch per issuer in this interval.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Cached keys are refreshed after this age (kept if the refresh fails)…
const SOFT_MAX_AGE: Duration = Duration::from_secs(3600);
/// …and dropped after this one (fail closed, as tokensmith does after 24 h).
const HARD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Longest token accepted; longer ones are refused before any parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest JWKS document read.
const MAX_JWKS_LEN: usize = 256 * 1024;

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("local", &self.inner.local)
            .field(
                "external",
                &self
                    .inner
                    .external
                    .iter()
                    .map(|e| &e.cfg)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Authenticator {
    /// Trusts `local` (if any) and every `external` issuer.
    pub fn new(
        local: Option<LocalIssuer>,
        external: Vec<ExternalIssuer>,
    ) -> Result<Self, AuthError> {
        Self::with_options(local, external, DEFAULT_LEEWAY_SECS, DEFAULT_MIN_REFRESH)
    }

    /// Like [`Authenticator::new`] with explicit clock-skew leeway and JWKS refresh interval.
    pub fn with_options(
        local: Option<LocalIssuer>,
        external: Vec<ExternalIssuer>,
        leeway_secs: u64,
        min_refresh: Duration,
    ) -> Result<Self, AuthError> {
        let http = if external.is_empty() {
            None
        } else {
            Some(
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|_| {
                        AuthError::Crypto(
                            "cannot build the JWKS HTTP client (are the system's CA certificates installed?)",
                        )
                    })?,
            )
        };
        let external = external
            .into_iter()
            .map(|cfg| External {
                cfg,
                cache: RwLock::new(KeyCache::default()),
                refreshing: Mutex::new(()),
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                local,
                external,
                leeway: leeway_secs,
                min_refresh,
                http,
            }),
        })
    }

    /// The local issuer under `data_dir` (created if missing) plus the configured external issuers.
    pub fn from_config(
        data_dir: &std::path::Path,
        auth: &crate::config::Auth,
    ) -> Result<Self, AuthError> {
        let local = LocalIssuer::load_or_create(data_dir)?;
        Self::new(
            Some(local),
            auth.issuers.iter().map(ExternalIssuer::from).collect(),
        )
    }

    /// The local issuer, for the JWKS route.
    pub fn local(&self) -> Option<&LocalIssuer> {
        self.inner.local.as_ref()
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn verify_header(&self, value: Option<&[u8]>) -> Result<Principal, Rejection> {
        let value = value.ok_or(Rejection::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| Rejection::BadHeader)?;
        // RFC 6750 §2.1: `Bearer` b64token; the scheme is case-insensitive (RFC 7235 §2.1).
        let (scheme, token) = value.trim().split_once(' ').ok_or(Rejection::BadHeader)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Rejection::BadHeader);
        }
        self.verify(token.trim()).await
    }

    /// Verifies a compact JWS token and returns whom it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(Rejection::Malformed);
        }
        // The header must parse (this is where `alg: none` and unknown algorithms die).
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        // Only to pick which issuer's keys to try; the chosen issuer is then enforced by
        // `Validation::set_issuer`, so a lie here fails verification.
        let peek: PeekIss = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| Rejection::Malformed)?;
        let iss = peek
            .iss
            .ok_or_else(|| Rejection::MissingClaim("iss".into()))?;

        let (key, audience) = if iss == LOCAL_ISSUER {
            let local = self.inner.local.as_ref().ok_or(Rejection::Issuer)?;
            if header.kid.as_deref().is_some_and(|k| k != local.kid()) {
                return Err(Rejection::UnknownKey);
            }
            let key = CachedKey {
                key: local.decoding_key().clone(),
                algs: vec![Algorithm::ES256],
            };
            (key, LOCAL_AUDIENCE.to_owned())
        } else {
            let ext = self
                .inner
                .external
                .iter()
                .find(|e| e.cfg.issuer == iss)
                .ok_or(Rejection::Issuer)?;
            let key = self.external_key(ext, header.kid.as_deref()).await?;
            (key, ext.cfg.audience.clone())
        };
        if !key.algs.contains(&header.alg) {
            return Err(Rejection::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algs.clone();
        validation.leeway = self.inner.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&iss]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<TokenClaims>(token, &key.key, &validation)
            .map_err(|e| rejection_of(&e))?;
        let claims = data.claims;
        let scopes = claims.scopes();
        Ok(Principal {
            subject: claims.sub.unwrap_or_default(),
            issuer: iss,
            scopes,
        })
    }

    async fn external_key(
        &self,
        ext: &External,
        kid: Option<&str>,
    ) -> Result<CachedKey, Rejection> {
        let (hit, stale) = self.cached(ext, kid).await;
        if let (Some(key), false) = (&hit, stale) {
            return Ok(key.clone());
        }
        // Unknown kid (rotation) or keys past their soft age: refetch, rate-limited.
        self.refresh(ext).await;
        match self.cached(ext, kid).await.0 {
            Some(key) => Ok(key),
            None if ext.cache.read().await.keys.is_empty() => Err(Rejection::KeysUnavailable),
            None => Err(Rejection::UnknownKey),
        }
    }

    /// The cached key for `kid` (a token without `kid` is accepted only when the issuer
    /// publishes exactly one key), and whether the cache is due for a refresh.
    async fn cached(&self, ext: &External, kid: Option<&str>) -> (Option<CachedKey>, bool) {
        let cache = ext.cache.read().await;
        let Some(age) = cache.fetched.map(|t| t.elapsed()) else {
            return (None, true);
        };
        if age > HARD_MAX_AGE {
            return (None, true);
        }
        let key = match kid {
            Some(kid) => cache.keys.get(kid).cloned(),
            None if cache.keys.len() == 1 => cache.keys.values().next().cloned(),
            None => None,
        };
        (key, age > SOFT_MAX_AGE)
    }

    /// Fetches the issuer's JWKS unless another fetch happened within `min_refresh`. On failure
    /// the last good keys stay until `HARD_MAX_AGE`, then are dropped (fail closed).
    async fn refresh(&self, ext: &External) {
        let _guard = ext.refreshing.lock().await;
        if ext
            .cache
            .read()
            .await
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.inner.min_refresh)
        {
            return;
        }
        ext.cache.write().await.last_attempt = Some(Instant::now());
        match self.fetch(&ext.cfg.jwks_url).await {
            Ok(keys) => {
                tracing::info!(issuer = %ext.cfg.issuer, keys = keys.len(), "fetched issuer keys");
                let mut cache = ext.cache.write().await;
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
            }
            Err(err) => {
                tracing::warn!(issuer = %ext.cfg.issuer, url = %ext.cfg.jwks_url, error = %err, "cannot fetch issuer keys; keeping the last good ones");
                let mut cache = ext.cache.write().await;
                if cache.fetched.is_some_and(|t| t.elapsed() > HARD_MAX_AGE) {
                    cache.keys.clear();
                    cache.fetched = None;
                }
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<HashMap<String, CachedKey>, String> {
        let Some(http) = &self.inner.http else {
            return Err("no JWKS HTTP client (no external issuer configured)".into());
        };
        let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        // Capped while reading: a chunked answer has no Content-Length to check first.
        let body = crate::http::capped::read_capped(resp, MAX_JWKS_LEN as u64)
            .await
            .map_err(|e| format!("JWKS {url}: {e}"))?;
        parse_jwks(&body)
    }
}

/// [`parse_jwks`] for the fuzz targets: how many usable keys the document holds.
#[cfg(feature = "fuzzing")]
pub fn parse_jwks_for_fuzzing(body: &[u8]) -> usize {
    parse_jwks(body).map_or(0, |keys| keys.len())
}

/// Parses a JWKS document, keeping only signature keys rackboot can use, by `kid`.
/// Keys it cannot use (HMAC, unknown curves, encryption keys) are skipped, not fatal.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, CachedKey>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let algs = algorithms_for(&jwk);
        if algs.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.insert(kid, CachedKey { key, algs });
    }
    Ok(out)
}

/// The algorithms a JWK may verify: fixed by its key type, narrowed by its `alg` if present.
/// Symmetric keys get none (a JWKS is public; an HMAC key in it is a forgery kit).
fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm::*;
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![EdDSA],
        _ => vec![],
    };
    match jwk.common.key_algorithm {
        None => by_type,
        Some(ka) => match Algorithm::from_str(&ka.to_string()) {
            Ok(alg) if by_type.contains(&alg) => vec![alg],
            _ => vec![],
        },
    }
}

fn rejection_of(err: &jsonwebtoken::errors::Error) -> Rejection {
    use jsonwebtoken::errors::ErrorKind as K;
    match err.kind() {
        K::InvalidSignature => Rejection::Signature,
        K::ExpiredSignature => Rejection::Expired,
        K::ImmatureSignature => Rejection::NotYetValid,
        K::InvalidIssuer => Rejection::Issuer,
        K::InvalidAudience => Rejection::Audience,
        K::MissingRequiredClaim(c) => Rejection::MissingClaim(c.clone()),
        K::InvalidAlgorithm
        | K::InvalidAlgorithmName
        | K::UnsupportedAlgorithm
        | K::InvalidKeyFormat => Rejection::Algorithm,
        _ => Rejection::Malformed,
    }
}

#[derive(Deserialize)]
struct PeekIss {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct TokenClaims {
    #[serde(default)]
    sub: Option<String>,
    /// OAuth 2.0 (RFC 8693 §4.2): space-separated string.
    #[serde(default)]
    scope: Option<ScopeClaim>,
    /// Azure/Okta/tokensmith style: an array.
    #[serde(default)]
    scp: Option<ScopeClaim>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

impl TokenClaims {
    fn scopes(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for claim in [&self.scope, &self.scp].into_iter().flatten() {
            match claim {
                ScopeClaim::Text(s) => out.extend(s.split_whitespace().map(str::to_owned)),
                ScopeClaim::List(v) => out.extend(
                    v.iter()
                        .flat_map(|s| s.split_whitespace())
                        .map(str::to_owned),
                ),
            }
        }
        out
    }
}
