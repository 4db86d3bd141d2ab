//! Bearer-token checks of `auth::require`, with tokens forged here: every way a token can be
//! wrong must give 401 (with `WWW-Authenticate`), a valid token without the scope 403.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rackboot::auth::{self, Authenticator, ExternalIssuer, LocalIssuer, Principal};
use serde_json::{Value, json};
use tower::ServiceExt;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64json(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

/// A compact JWS with the given header and claims, signed by `sign` over `header.claims`.
fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64json(header), b64json(claims));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

struct Local {
    _dir: tempfile::TempDir,
    issuer: LocalIssuer,
    pair: EcdsaKeyPair,
}

impl Local {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
        let pem = std::fs::read_to_string(LocalIssuer::key_path(dir.path())).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
        Self {
            _dir: dir,
            issuer,
            pair,
        }
    }

    fn claims(&self, scope: &str) -> Value {
        json!({"iss":"rackboot","aud":"rackboot","sub":"tester","iat":now(),"nbf":now(),"exp":now()+600,"scope":scope})
    }

    /// Signs arbitrary claims with the real local key (so only the claims are wrong).
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg":"ES256","typ":"JWT","kid":self.issuer.kid()});
        jws(&header, claims, |m| {
            self.pair
                .sign(&SystemRandom::new(), m)
                .unwrap()
                .as_ref()
                .to_vec()
        })
    }

    fn authn(&self) -> Authenticator {
        Authenticator::new(Some(self.issuer.clone()), vec![]).unwrap()
    }
}

async fn who(principal: axum::Extension<Principal>) -> String {
    principal.subject.clone()
}

fn app(authn: Authenticator) -> Router {
    Router::new()
        .route("/boot/v1/x", get(who).post(who))
        .layer(auth::require(authn, "boot"))
}

async fn call(app: &Router, method: Method, auth: Option<&str>) -> (StatusCode, Value, bool) {
    let mut req = Request::builder().method(method).uri("/boot/v1/x");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let has_www = resp.headers().contains_key(header::WWW_AUTHENTICATE);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v, has_www)
}

async fn expect_401(app: &Router, auth: Option<&str>) -> Value {
    let (status, body, www) = call(app, Method::GET, auth).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "body: {body}");
    assert!(www, "401 without WWW-Authenticate");
    assert_eq!(body["status"], 401, "not a problem body: {body}");
    body
}

#[tokio::test]
async fn minted_token_with_scope_is_accepted_and_principal_is_set() {
    let l = Local::new();
    let app = app(l.authn());
    let token = l
        .issuer
        .mint("alice", &["boot:read".into()], Duration::from_secs(60))
        .unwrap();
    let (status, body, _) = call(&app, Method::GET, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::String("alice".into()));
    // The scheme is case-insensitive (RFC 7235 §2.1).
    let (status, _, _) = call(&app, Method::GET, Some(&format!("bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn missing_header_is_401_with_www_authenticate() {
    let l = Local::new();
    let body = expect_401(&app(l.authn()), None).await;
    assert!(body["detail"].as_str().unwrap().contains("Bearer"));
}

#[tokio::test]
async fn malformed_headers_and_tokens_are_401() {
    let l = Local::new();
    let app = app(l.authn());
    for bad in [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer abc",
        "Bearer a.b.c",
        "Bearer ....",
        "Bearer eyJhbGciOiJFUzI1NiJ9.e30",
    ] {
        expect_401(&app, Some(bad)).await;
    }
    let huge = format!("Bearer {}", "a".repeat(20_000));
    expect_401(&app, Some(&huge)).await;
}

#[tokio::test]
async fn token_is_never_echoed_in_the_refusal() {
    let l = Local::new();
    let mut claims = l.claims("boot:read");
    claims["exp"] = json!(now() - 3600);
    let token = l.sign(&claims);
    let body = expect_401(&app(l.authn()), Some(&format!("Bearer {token}"))).await;
    assert!(!body.to_string().contains(&token));
}

#[tokio::test]
async fn alg_none_is_401() {
    let l = Local::new();
    let claims = l.claims("admin");
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64json(&json!({"alg":alg,"typ":"JWT"})),
            b64json(&claims)
        );
        expect_401(&app(l.authn()), Some(&format!("Bearer {token}"))).await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_401() {
    use aws_lc_rs::hmac;
    let l = Local::new();
    let app = app(l.authn());
    let claims = l.claims("admin");
    let jwk = l.issuer.jwk();
    let point = {
        let mut p = vec![4u8];
        p.extend(B64.decode(&jwk.x).unwrap());
        p.extend(B64.decode(&jwk.y).unwrap());
        p
    };
    // Every public form an attacker could use as the HMAC secret.
    let secrets: Vec<Vec<u8>> = vec![
        point,
        l.issuer.jwks().to_string().into_bytes(),
        serde_json::to_vec(jwk).unwrap(),
    ];
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let header = json!({"alg":"HS256","typ":"JWT","kid":l.issuer.kid()});
        let token = jws(&header, &claims, |m| hmac::sign(&key, m).as_ref().to_vec());
        expect_401(&app, Some(&format!("Bearer {token}"))).await;
    }
}

#[tokio::test]
async fn es256_key_with_rs256_header_is_401() {
    let l = Local::new();
    let claims = l.claims("admin");
    // A valid ES256 signature, but the header claims RS256 (and ES384).
    for alg in ["RS256", "ES384", "PS256", "EdDSA"] {
        let header = json!({"alg":alg,"typ":"JWT","kid":l.issuer.kid()});
        let token = jws(&header, &claims, |m| {
            l.pair
                .sign(&SystemRandom::new(), m)
                .unwrap()
                .as_ref()
                .to_vec()
        });
        expect_401(&app(l.authn()), Some(&format!("Bearer {token}"))).await;
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_are_401_within_leeway_is_ok() {
    let l = Local::new();
    let app = app(l.authn());
    let mut c = l.claims("boot:read");
    c["exp"] = json!(now() - 3600);
    let body = expect_401(&app, Some(&format!("Bearer {}", l.sign(&c)))).await;
    assert!(body["detail"].as_str().unwrap().contains("expired"));

    let mut c = l.claims("boot:read");
    c["nbf"] = json!(now() + 3600);
    let body = expect_401(&app, Some(&format!("Bearer {}", l.sign(&c)))).await;
    assert!(body["detail"].as_str().unwrap().contains("not valid yet"));

    // A few seconds of clock skew are tolerated (the leeway is 30 s).
    let mut c = l.claims("boot:read");
    c["exp"] = json!(now() - 5);
    c["nbf"] = json!(now() + 5);
    let (status, _, _) = call(&app, Method::GET, Some(&format!("Bearer {}", l.sign(&c)))).await;
    assert_eq!(status, StatusCode::OK);

    // No exp at all is refused.
    let mut c = l.claims("boot:read");
    c.as_object_mut().unwrap().remove("exp");
    expect_401(&app, Some(&format!("Bearer {}", l.sign(&c)))).await;
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_401() {
    let l = Local::new();
    let app = app(l.authn());
    for (k, v) in [
        ("iss", json!("evil")),
        ("iss", json!("rackboot2")),
        ("aud", json!("other")),
        ("aud", json!(["other", "another"])),
    ] {
        let mut c = l.claims("admin");
        c[k] = v;
        expect_401(&app, Some(&format!("Bearer {}", l.sign(&c)))).await;
    }
    for k in ["iss", "aud"] {
        let mut c = l.claims("admin");
        c.as_object_mut().unwrap().remove(k);
        expect_401(&app, Some(&format!("Bearer {}", l.sign(&c)))).await;
    }
    // aud as an array containing rackboot is fine (RFC 7519 §4.1.3).
    let mut c = l.claims("boot:read");
    c["aud"] = json!(["other", "rackboot"]);
    let (status, _, _) = call(&app, Method::GET, Some(&format!("Bearer {}", l.sign(&c)))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn signature_from_another_key_is_401() {
    let l = Local::new();
    let other = Local::new();
    // Same kid as l, signed by other's key.
    let header = json!({"alg":"ES256","typ":"JWT","kid":l.issuer.kid()});
    let token = jws(&header, &l.claims("admin"), |m| {
        other
            .pair
            .sign(&SystemRandom::new(), m)
            .unwrap()
            .as_ref()
            .to_vec()
    });
    expect_401(&app(l.authn()), Some(&format!("Bearer {token}"))).await;
    // And another rackboot's genuine token (different kid) too.
    let token = other
        .issuer
        .mint("x", &["admin".into()], Duration::from_secs(60))
        .unwrap();
    expect_401(&app(l.authn()), Some(&format!("Bearer {token}"))).await;
}

#[tokio::test]
async fn valid_token_without_scope_is_403() {
    let l = Local::new();
    let app = app(l.authn());
    let t = |s: &str| format!("Bearer {}", l.sign(&l.claims(s)));
    for (scope, method, want) in [
        ("inventory:write", Method::GET, StatusCode::FORBIDDEN),
        ("", Method::GET, StatusCode::FORBIDDEN),
        ("boot:read", Method::POST, StatusCode::FORBIDDEN),
        ("boot:readx", Method::GET, StatusCode::FORBIDDEN),
        ("boot:read", Method::GET, StatusCode::OK),
        ("boot:write", Method::POST, StatusCode::OK),
        ("images:read admin", Method::POST, StatusCode::OK),
    ] {
        let (status, body, _) = call(&app, method.clone(), Some(&t(scope))).await;
        assert_eq!(status, want, "scope {scope:?} {method}: {body}");
        if want == StatusCode::FORBIDDEN {
            assert_eq!(body["status"], 403);
        }
    }
    // `scp` as an array works too.
    let mut c = l.claims("");
    c["scp"] = json!(["boot:write"]);
    let (status, _, _) = call(&app, Method::POST, Some(&format!("Bearer {}", l.sign(&c)))).await;
    assert_eq!(status, StatusCode::OK);
}

// ---- external issuer (JWKS over HTTP) ----

struct Jwks {
    url: String,
    fetches: Arc<AtomicUsize>,
    doc: Arc<std::sync::Mutex<Value>>,
}

async fn jwks_server(doc: Value) -> Jwks {
    let fetches = Arc::new(AtomicUsize::new(0));
    let doc = Arc::new(std::sync::Mutex::new(doc));
    let (f, d) = (fetches.clone(), doc.clone());
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            f.fetch_add(1, Ordering::SeqCst);
            let body = d.lock().unwrap().to_string();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks {
        url: format!("http://{addr}/jwks.json"),
        fetches,
        doc,
    }
}

fn ec_jwk(pair: &EcdsaKeyPair, kid: &str) -> Value {
    let p = pair.public_key().as_ref();
    json!({"kty":"EC","crv":"P-256","x":B64.encode(&p[1..33]),"y":B64.encode(&p[33..65]),"kid":kid,"use":"sig"})
}

fn ec_pair() -> EcdsaKeyPair {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
}

fn ext_claims(scope: Value) -> Value {
    json!({"iss":"https://idp.example","aud":"rackboot-rack1","sub":"svc","exp":now()+600,"iat":now(),"scp":scope})
}

fn es256(pair: &EcdsaKeyPair, kid: &str, claims: &Value) -> String {
    jws(&json!({"alg":"ES256","typ":"JWT","kid":kid}), claims, |m| {
        pair.sign(&SystemRandom::new(), m)
            .unwrap()
            .as_ref()
            .to_vec()
    })
}

fn external(url: &str, refresh: Duration) -> Authenticator {
    Authenticator::with_options(
        None,
        vec![ExternalIssuer {
            jwks_url: url.to_owned(),
            issuer: "https://idp.example".into(),
            audience: "rackboot-rack1".into(),
        }],
        30,
        refresh,
    )
    .unwrap()
}

#[tokio::test]
async fn external_ec_and_rsa_issuer_tokens_verify_by_jwks() {
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    let ec = ec_pair();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let rsa_pub = rsa.public_key();
    let rsa_jwk = json!({"kty":"RSA","kid":"r1","alg":"RS256",
        "n":B64.encode(rsa_pub.modulus().big_endian_without_leading_zero()),
        "e":B64.encode(rsa_pub.exponent().big_endian_without_leading_zero())});
    let server = jwks_server(json!({"keys":[ec_jwk(&ec, "e1"), rsa_jwk,
        {"kty":"oct","kid":"h1","k":B64.encode(b"shared-secret")}]}))
    .await;
    let app = app(external(&server.url, Duration::from_secs(60)));

    let token = es256(&ec, "e1", &ext_claims(json!(["boot:read"])));
    let (status, body, _) = call(&app, Method::GET, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let rs = |claims: &Value, kid: &str| {
        jws(&json!({"alg":"RS256","kid":kid}), claims, |m| {
            let mut sig = vec![0u8; rsa.public_modulus_len()];
            rsa.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
                .unwrap();
            sig
        })
    };
    let (status, _, _) = call(
        &app,
        Method::GET,
        Some(&format!(
            "Bearer {}",
            rs(&ext_claims(json!("boot:read")), "r1")
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // RS256 signature presented under the EC key's kid: algorithm mismatch.
    expect_401(
        &app,
        Some(&format!("Bearer {}", rs(&ext_claims(json!("admin")), "e1"))),
    )
    .await;
    // The JWKS's symmetric key is never usable (anyone can read a JWKS).
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"shared-secret");
    let token = jws(
        &json!({"alg":"HS256","kid":"h1"}),
        &ext_claims(json!("admin")),
        |m| aws_lc_rs::hmac::sign(&key, m).as_ref().to_vec(),
    );
    expect_401(&app, Some(&format!("Bearer {token}"))).await;
    // Wrong audience for this issuer.
    let mut c = ext_claims(json!("admin"));
    c["aud"] = json!("rackboot");
    expect_401(&app, Some(&format!("Bearer {}", es256(&ec, "e1", &c)))).await;
    // The local issuer's name with the external key: rackboot has no local issuer here.
    let mut c = ext_claims(json!("admin"));
    c["iss"] = json!("rackboot");
    expect_401(&app, Some(&format!("Bearer {}", es256(&ec, "e1", &c)))).await;
}

#[tokio::test]
async fn unknown_kid_refetches_jwks_rate_limited() {
    let old = ec_pair();
    let server = jwks_server(json!({"keys":[ec_jwk(&old, "k1")]})).await;
    // Rate limit long enough that the test cannot outrun it.
    let app = app(external(&server.url, Duration::from_secs(3600)));
    let ok = es256(&old, "k1", &ext_claims(json!("boot:read")));
    let (status, _, _) = call(&app, Method::GET, Some(&format!("Bearer {ok}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    // Cached: no second fetch.
    call(&app, Method::GET, Some(&format!("Bearer {ok}"))).await;
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    // A flood of unknown kids: at most one more fetch (the first allowed is already used).
    for i in 0..20 {
        let t = es256(&old, &format!("nope{i}"), &ext_claims(json!("boot:read")));
        expect_401(&app, Some(&format!("Bearer {t}"))).await;
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn key_rotation_is_picked_up_on_unknown_kid() {
    let old = ec_pair();
    let new = ec_pair();
    let server = jwks_server(json!({"keys":[ec_jwk(&old, "k1")]})).await;
    let app = app(external(&server.url, Duration::ZERO));
    let t1 = es256(&old, "k1", &ext_claims(json!("boot:read")));
    assert_eq!(
        call(&app, Method::GET, Some(&format!("Bearer {t1}")))
            .await
            .0,
        StatusCode::OK
    );
    *server.doc.lock().unwrap() = json!({"keys":[ec_jwk(&new, "k2")]});
    let t2 = es256(&new, "k2", &ext_claims(json!("boot:read")));
    assert_eq!(
        call(&app, Method::GET, Some(&format!("Bearer {t2}")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_jwks_is_401_not_a_hang_or_500() {
    let pair = ec_pair();
    // A port nothing listens on.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let app = app(external(
        &format!("http://{addr}/jwks.json"),
        Duration::ZERO,
    ));
    let t = es256(&pair, "k1", &ext_claims(json!("admin")));
    expect_401(&app, Some(&format!("Bearer {t}"))).await;
}

#[tokio::test]
async fn jwks_route_serves_the_local_public_key() {
    let l = Local::new();
    let app = auth::jwks_router(&l.issuer);
    let resp = app
        .oneshot(
            Request::get("/.well-known/jwks.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["keys"][0]["kid"], l.issuer.kid());
    assert_eq!(v["keys"][0]["kty"], "EC");
    assert!(v["keys"][0].get("d").is_none(), "private key leaked");
}

/// A JWKS endpoint that never stops talking (chunked, no Content-Length): the fetch stops at the
/// cap, the token is refused with a 401, nothing hangs or grows.
#[tokio::test]
async fn an_endless_jwks_answer_is_capped_and_the_token_refused() {
    let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
    let app_jwks = Router::new().route(
        "/jwks.json",
        get(move || {
            let chunk = chunk.clone();
            async move {
                axum::body::Body::from_stream(futures_util::stream::repeat_with(move || {
                    Ok::<_, std::convert::Infallible>(chunk.clone())
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app_jwks).await });
    let app = app(external(
        &format!("http://{addr}/jwks.json"),
        Duration::from_secs(60),
    ));
    let ec = ec_pair();
    let token = es256(&ec, "e1", &ext_claims(json!(["boot:read"])));
    expect_401(&app, Some(&format!("Bearer {token}"))).await;
}
