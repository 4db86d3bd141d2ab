//! Image store and `/images/{name}` over a real TCP listener: byte-exact GET, HEAD, Range,
//! ETag, corruption detection, hostile names, persistence, the admin API, and curl as a peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use rackboot::auth::{self, Authenticator, LocalIssuer};
use rackboot::http::problem::not_found_fallback;
use rackboot::http::server::{HttpLimits, serve};
use rackboot::images::{self, ImageError, ImageStore};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;

/// Deterministic, non-repeating-ish data that spans several read chunks.
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn open(dir: &Path) -> ImageStore {
    let store = rackboot::store::Store::open(dir).unwrap();
    ImageStore::open(store, dir).await.unwrap()
}

fn sha256_hex(d: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, d).as_ref())
}

struct Env {
    dir: tempfile::TempDir,
    store: ImageStore,
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(app: Router) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        app.fallback(not_found_fallback),
        // As `rackboot serve` does: uploads under the admin image prefix stream.
        HttpLimits {
            streaming_prefixes: vec![rackboot::images::ADMIN_PREFIX.to_owned()],
            ..HttpLimits::default()
        },
        async move {
            let _ = rx.await;
        },
    ));
    (format!("http://{addr}"), tx)
}

async fn env_with(dir: tempfile::TempDir, store: ImageStore) -> Env {
    let app = images::public_router(store.clone(), None).merge(images::admin_router(store.clone()));
    let (base, stop) = start(app).await;
    Env {
        dir,
        store,
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        _stop: stop,
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    env_with(dir, store).await
}

async fn import(store: &ImageStore, dir: &Path, name: &str, content: &[u8]) {
    let file = dir.join(format!("src-{name}"));
    std::fs::write(&file, content).unwrap();
    store.import_file(name, &file, None).await.unwrap();
}

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "not a problem"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], status);
    v
}

#[tokio::test]
async fn import_then_get_is_byte_exact_with_headers() {
    let e = env().await;
    let content = data(3 * images::CHUNK + 17);
    import(&e.store, e.dir.path(), "vmlinuz", &content).await;
    let resp = e
        .http
        .get(format!("{}/images/vmlinuz", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["content-length"], content.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(
        h["etag"],
        format!("\"sha256:{}\"", sha256_hex(&content)).as_str()
    );
    let body = resp.bytes().await.unwrap();
    assert!(body[..] == content[..], "body differs");

    // An empty image works too.
    import(&e.store, e.dir.path(), "empty", b"").await;
    let resp = e
        .http
        .get(format!("{}/images/empty", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn head_has_length_and_no_body() {
    let e = env().await;
    let content = data(100_000);
    import(&e.store, e.dir.path(), "initrd", &content).await;
    let resp = e
        .http
        .head(format!("{}/images/initrd", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "100000");
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn single_ranges_are_206_and_unsatisfiable_is_416() {
    let e = env().await;
    let content = data(500_000);
    import(&e.store, e.dir.path(), "k", &content).await;
    let url = format!("{}/images/k", e.base);
    for (range, start, end) in [
        ("bytes=0-99", 0usize, 99usize),
        ("bytes=499990-", 499_990, 499_999),
        ("bytes=-10", 499_990, 499_999),
        ("bytes=262140-262150", 262_140, 262_150),
        ("bytes=100-9999999", 100, 499_999),
    ] {
        let resp = e
            .http
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {start}-{end}/500000").as_str()
        );
        assert_eq!(
            resp.headers()["content-length"],
            (end - start + 1).to_string().as_str()
        );
        let body = resp.bytes().await.unwrap();
        assert!(body[..] == content[start..=end], "{range}: wrong bytes");
    }
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=500000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-range"], "bytes */500000");
    problem(resp, 416).await;
    // Multiple ranges: ignored, whole image.
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().len(), 500_000);
}

#[tokio::test]
async fn etag_gives_304_and_stale_if_range_gives_200() {
    let e = env().await;
    let content = data(1000);
    import(&e.store, e.dir.path(), "k", &content).await;
    let url = format!("{}/images/k", e.base);
    let etag = format!("\"sha256:{}\"", sha256_hex(&content));
    let resp = e
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    let resp = e
        .http
        .get(&url)
        .header("if-none-match", "\"sha256:00\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // If-Range with the current ETag honours Range; a stale one gets the full image.
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"sha256:old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
}

#[tokio::test]
async fn corrupt_blob_is_never_served_and_500_until_reimport() {
    let e = env().await;
    let content = data(2 * images::CHUNK + 5);
    import(&e.store, e.dir.path(), "k", &content).await;
    let blob = e.store.blob_path(&sha256_hex(&content));
    // Bit rot in the middle of the blob, same size.
    let mut bad = std::fs::read(&blob).unwrap();
    bad[images::CHUNK + 3] ^= 0x40;
    std::fs::write(&blob, &bad).unwrap();

    let url = format!("{}/images/k", e.base);
    // Verified before the first byte leaves: a ranged read of the intact part is refused too.
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    problem(resp, 500).await;
    // Later requests, full or ranged, are refused with a problem naming the fix.
    let v = problem(e.http.get(&url).send().await.unwrap(), 500).await;
    assert!(
        v["detail"].as_str().unwrap().contains("import it again"),
        "{v}"
    );
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    problem(resp, 500).await;
    let list: Value = e
        .http
        .get(format!("{}/rackboot/v1/images", e.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["corrupt"], true);
    // Re-import repairs it.
    import(&e.store, e.dir.path(), "k", &content).await;
    let resp = e.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap()[..] == content[..]);
}

#[tokio::test]
async fn truncated_blob_is_corrupt() {
    let e = env().await;
    let content = data(10_000);
    import(&e.store, e.dir.path(), "k", &content).await;
    let blob = e.store.blob_path(&sha256_hex(&content));
    std::fs::write(&blob, &content[..5000]).unwrap();
    let resp = e
        .http
        .get(format!("{}/images/k", e.base))
        .send()
        .await
        .unwrap();
    problem(resp, 500).await;
}

#[tokio::test]
async fn hostile_names_are_refused() {
    let e = env().await;
    let src = e.dir.path().join("src");
    std::fs::write(&src, b"x").unwrap();
    for bad in ["../etc", "..", "a/b", "", "a..b", ".", "x\0y", "sp ace"] {
        let err = e.store.import_file(bad, &src, None).await.unwrap_err();
        assert!(matches!(err, ImageError::BadName(_)), "{bad:?}: {err}");
    }
    // Nothing escaped the data dir.
    assert!(!e.dir.path().join("etc").exists());
    for path in [
        "/images/..",
        "/images/..%2F..%2Fetc%2Fpasswd",
        "/images/%2e%2e",
        "/images/a..b",
        "/images/%00",
    ] {
        let resp = e
            .http
            .get(format!("{}{path}", e.base))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status() == StatusCode::BAD_REQUEST || resp.status() == StatusCode::NOT_FOUND,
            "{path}: {}",
            resp.status()
        );
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(ct, "application/problem+json", "{path}");
    }
    let resp = e
        .http
        .put(format!("{}/rackboot/v1/images/a..b", e.base))
        .body("x")
        .send()
        .await
        .unwrap();
    problem(resp, 400).await;
}

#[tokio::test]
async fn unknown_image_is_404_problem() {
    let e = env().await;
    let resp = e
        .http
        .get(format!("{}/images/nothing", e.base))
        .send()
        .await
        .unwrap();
    problem(resp, 404).await;
}

#[tokio::test]
async fn images_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(70_000);
    {
        let store = open(dir.path()).await;
        import(&store, dir.path(), "kernel", &content).await;
    }
    let store = open(dir.path()).await;
    let rec = store.get("kernel").await.unwrap().unwrap();
    assert_eq!(rec.size, 70_000);
    assert_eq!(rec.sha256, sha256_hex(&content));
    let e = env_with(dir, store).await;
    let body = e
        .http
        .get(format!("{}/images/kernel", e.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body[..] == content[..]);
}

/// Names recorded by the JSON-file index of earlier versions move into the store on open.
#[tokio::test]
async fn legacy_file_index_moves_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(5000);
    {
        let store = open(dir.path()).await;
        import(&store, dir.path(), "kernel", &content).await;
        // Rewind to the old layout: the name only in images/names/kernel.json.
        let rec = store.get("kernel").await.unwrap().unwrap();
        let names = dir.path().join("images/names");
        std::fs::create_dir_all(&names).unwrap();
        std::fs::write(names.join("kernel.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
        std::fs::write(names.join("broken.json"), b"{not json").unwrap();
        assert!(store.remove("kernel").await.unwrap());
        // remove() deleted the blob: put it back as the old version would have it.
        let blob = store.blob_path(&rec.sha256);
        std::fs::write(&blob, &content).unwrap();
    }
    let store = open(dir.path()).await;
    let rec = store.get("kernel").await.unwrap().unwrap();
    assert_eq!(rec.sha256, sha256_hex(&content));
    assert!(!dir.path().join("images/names/kernel.json").exists());
    let e = env_with(dir, store).await;
    let body = e
        .http
        .get(format!("{}/images/kernel", e.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body[..] == content[..]);
}

#[tokio::test]
async fn import_verifies_expected_digest_and_dedups() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let src = dir.path().join("src");
    std::fs::write(&src, b"hello").unwrap();
    let err = store
        .import_file("a", &src, Some(&"0".repeat(64)))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(store.get("a").await.unwrap().is_none());
    let good = sha256_hex(b"hello");
    store.import_file("a", &src, Some(&good)).await.unwrap();
    store.import_file("b", &src, None).await.unwrap();
    // Two names, one blob, no temp files left behind.
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("images/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(blobs, vec![good.clone()]);
    // Removing one name keeps the shared blob; removing the last deletes it.
    assert!(store.remove("a").await.unwrap());
    assert!(store.blob_path(&good).exists());
    assert!(store.remove("b").await.unwrap());
    assert!(!store.blob_path(&good).exists());
    assert!(!store.remove("b").await.unwrap());
}

#[tokio::test]
async fn admin_api_upload_list_show_delete() {
    let e = env().await;
    let base = format!("{}/rackboot/v1/images", e.base);
    let content = data(600_000);
    let sha = sha256_hex(&content);
    // Wrong digest: 422, nothing stored.
    let resp = e
        .http
        .put(format!("{base}/up?sha256={}", "0".repeat(64)))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    problem(resp, 422).await;
    let resp = e
        .http
        .put(format!("{base}/up?sha256={sha}"))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["size"], 600_000);
    // Replacing is 200.
    let resp = e
        .http
        .put(format!("{base}/up"))
        .body(b"new".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value = e
        .http
        .get(&base)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "up");
    assert_eq!(list[0]["size"], 3);
    let one: Value = e
        .http
        .get(format!("{base}/up"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["url"], "/images/up");
    let resp = e.http.delete(format!("{base}/up")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    problem(
        e.http.delete(format!("{base}/up")).send().await.unwrap(),
        404,
    )
    .await;
    problem(e.http.get(format!("{base}/up")).send().await.unwrap(), 404).await;
}

#[tokio::test]
async fn upload_over_the_limit_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open_with_limit(
        rackboot::store::Store::open(dir.path()).unwrap(),
        dir.path(),
        1000,
    )
    .await
    .unwrap();
    let e = env_with(dir, store).await;
    let resp = e
        .http
        .put(format!("{}/rackboot/v1/images/big", e.base))
        .body(vec![0u8; 5000])
        .send()
        .await
        .unwrap();
    problem(resp, 413).await;
    // Chunked (no Content-Length): cut off while streaming.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 500]))),
    );
    let resp = e
        .http
        .put(format!("{}/rackboot/v1/images/big", e.base))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // The server may answer before reading everything; either a 413 or a reset is fine.
    if let Ok(resp) = resp {
        problem(resp, 413).await;
    }
    assert!(e.store.get("big").await.unwrap().is_none());
    let tmp_left = std::fs::read_dir(e.dir.path().join("images/sha256"))
        .unwrap()
        .count();
    assert_eq!(tmp_left, 0, "temp file left behind");
}

#[tokio::test]
async fn admin_api_requires_images_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
    let authn = Authenticator::new(Some(issuer.clone()), vec![]).unwrap();
    let app = images::public_router(store.clone(), None)
        .merge(images::admin_router(store.clone()).layer(auth::require(authn, "images")));
    let (base, _stop) = start(app).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{base}/rackboot/v1/images/x");
    let resp = http.put(&url).body("abc").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let read = issuer
        .mint("t", &["images:read".into()], Duration::from_secs(60))
        .unwrap();
    let resp = http
        .put(&url)
        .bearer_auth(&read)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let write = issuer
        .mint("t", &["images:write".into()], Duration::from_secs(60))
        .unwrap();
    let resp = http
        .put(&url)
        .bearer_auth(&write)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The public route stays open.
    let resp = http.get(format!("{base}/images/x")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "abc");
}

/// curl as an independent HTTP client: `-r` ranges and `--etag-compare`.
#[tokio::test]
async fn curl_range_and_etag_compare() {
    let e = env().await;
    let content = data(300_000);
    import(&e.store, e.dir.path(), "k", &content).await;
    let url = format!("{}/images/k", e.base);
    let out = e.dir.path().join("out");
    let curl = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--noproxy", "*"])
                .args(args)
                .output()
                .expect("curl is needed for this test (apt-get install curl)")
        })
        .await
        .unwrap()
    };
    let o = curl(vec![
        "-r".into(),
        "0-99".into(),
        "-o".into(),
        out.display().to_string(),
        "-w".into(),
        "%{http_code}".into(),
        url.clone(),
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "206");
    assert!(std::fs::read(&out).unwrap() == content[..100]);

    // Full download, saving the ETag; then a conditional fetch answers 304.
    let etag_file = e.dir.path().join("etag");
    let o = curl(vec![
        "--etag-save".into(),
        etag_file.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        url.clone(),
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&out).unwrap() == content);
    let saved = std::fs::read_to_string(&etag_file).unwrap();
    assert!(saved.contains(&sha256_hex(&content)), "{saved}");
    let o = curl(vec![
        "--etag-compare".into(),
        etag_file.display().to_string(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&o.stdout), "304");
    // Resume a partial download (-C -), the way a retrying client would.
    std::fs::write(&out, &content[..123_456]).unwrap();
    let o = curl(vec![
        "-C".into(),
        "-".into(),
        "-o".into(),
        out.display().to_string(),
        url.clone(),
    ])
    .await;
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&out).unwrap() == content);
}
