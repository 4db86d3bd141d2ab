//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not an API). Each takes
//! arbitrary bytes, drives one network-facing parser the way its route does, and must return
//! without panicking whatever the bytes are.
//!
//! Owns: nothing (fuzz entry points, feature `fuzzing`). May call: `auth`, `boot`, `cloudinit`,
//! `identity`, `inventory`, `store`.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The query string of an SMD or BSS request (`a=b&c=d…`, percent-encoded), parsed as the
/// routes parse it: SMD's component filter (with and without the field filters), the group
/// filters, xnames and MACs in every value, BSS's selector.
pub fn http_query(data: &[u8]) {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    let _ = crate::inventory::query::ComponentFilter::from_query(&pairs, "GET /fuzz", true);
    let _ = crate::inventory::query::ComponentFilter::from_query(&pairs, "GET /fuzz", false);
    let _ = crate::inventory::query::boolean(&pairs, "enabled");
    let _ = crate::inventory::groups::no_partition(&pairs, "GET /fuzz");
    let _ = crate::boot::selector(&pairs);
    for (k, v) in &pairs {
        let _ = crate::inventory::xname::parse(k);
        let _ = crate::inventory::xname::parse(v);
        let _ = crate::inventory::xname::parse_node(v);
        let _ = crate::inventory::normalize_mac(v);
        let _ = crate::inventory::groups::check_field(k, v);
    }
    // A path segment as the routes take it (`/State/Components/{xname}`).
    if let Ok(path) = std::str::from_utf8(data) {
        for seg in path.split('/') {
            let _ = crate::inventory::xname::parse(seg);
            let _ = crate::inventory::normalize_mac(seg);
        }
    }
}

/// A JSON request body, into the API type the first byte picks, then through the checks its
/// route makes before storing it.
pub fn api_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 10 {
        0 => {
            if let Ok(c) = serde_json::from_slice::<crate::store::Component>(body) {
                let _ = serde_json::to_vec(&c);
            }
        }
        1 => {
            if let Ok(e) = serde_json::from_slice::<crate::store::EthernetInterface>(body) {
                let _ = crate::inventory::normalize_mac(&e.mac_address);
                let _ = serde_json::to_vec(&e);
            }
        }
        2 => {
            if let Ok(g) = serde_json::from_slice::<crate::store::Group>(body) {
                let _ = crate::inventory::groups::check_group(g);
            }
        }
        3 => {
            if let Ok(ep) = serde_json::from_slice::<crate::store::RedfishEndpoint>(body)
                && let Ok(ep) = crate::inventory::endpoints::check_endpoint(ep)
            {
                let _ = crate::inventory::endpoints::component_endpoints(&ep);
                let _ = crate::inventory::hardware::locations(&ep);
            }
        }
        4 => {
            if let Ok(bp) = serde_json::from_slice::<crate::store::BootParameters>(body) {
                let _ = crate::boot::check(bp.clone(), true);
                let _ = crate::boot::check(bp, false);
            }
        }
        5 => {
            if let Ok(d) = serde_json::from_slice::<crate::cloudinit::ClusterDefaults>(body) {
                cloud_init_file(d.file.as_ref());
            }
        }
        6 => {
            if let Ok(g) = serde_json::from_slice::<crate::cloudinit::CiGroup>(body) {
                cloud_init_file(g.file.as_ref());
            }
        }
        7 => {
            if let Ok(n) = serde_json::from_slice::<crate::cloudinit::NodeData>(body) {
                cloud_init_file(n.file.as_ref());
            }
        }
        8 => {
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
                let _ = crate::inventory::query::ComponentFilter::from_body(&m, "POST /fuzz", &[]);
            }
        }
        _ => {
            let _ = serde_json::from_slice::<crate::inventory::groups::Member>(body);
            let _ = serde_json::from_slice::<crate::inventory::groups::MembersPut>(body);
            let _ = serde_json::from_slice::<Vec<crate::store::Component>>(body);
        }
    }
}

fn cloud_init_file(file: Option<&crate::cloudinit::CiFile>) {
    if crate::cloudinit::check(file, "fuzz").is_ok()
        && let Some(f) = file
    {
        let vars = crate::cloudinit::NodeVars::sample();
        let _ = crate::cloudinit::fragment(f, &vars, "fuzz");
    }
}

struct Verifier {
    auth: crate::auth::Authenticator,
    issuer: crate::auth::LocalIssuer,
    rt: tokio::runtime::Runtime,
    _dir: std::path::PathBuf,
}

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rackboot-fuzz-jwt-{}", std::process::id()));
        #[allow(clippy::expect_used)] // setup, not input handling
        let issuer = crate::auth::LocalIssuer::load_or_create(&dir).expect("fuzz issuer key");
        #[allow(clippy::expect_used)]
        let auth = crate::auth::Authenticator::new(Some(issuer.clone()), Vec::new())
            .expect("fuzz verifier");
        #[allow(clippy::expect_used)]
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fuzz runtime");
        Verifier {
            auth,
            issuer,
            rt,
            _dir: dir,
        }
    })
}

/// JWT verification against a real verifier (the local issuer's key): the first byte picks an
/// arbitrary `Authorization` header, an arbitrary compact token, arbitrary claims signed with
/// the real key (so claim checks are reached), or an arbitrary JWKS document.
pub fn jwt(data: &[u8]) {
    let v = verifier();
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let _ = v.rt.block_on(v.auth.verify_header(Some(rest)));
        }
        1 => {
            let token = String::from_utf8_lossy(rest);
            let _ = v.rt.block_on(v.auth.verify(&token));
        }
        2 => {
            if let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(rest)
                && let Ok(token) = v.issuer.sign_claims(&Value::Object(claims))
            {
                let _ = v.rt.block_on(v.auth.verify(&token));
            }
        }
        _ => {
            let _ = crate::auth::parse_jwks_for_fuzzing(rest);
        }
    }
}

/// A CSR as `/identity/v1/enroll` and renewal take it (PEM text), then the name checks.
///
/// The first byte picks the shape: odd, the rest is the PEM text as sent; even, the rest is DER,
/// armoured here as a PEM `CERTIFICATE REQUEST`, so the fuzzer reaches the DER and X.509
/// parsers instead of spending its time on the PEM framing (which random text rarely gets
/// right).
pub fn csr(data: &[u8]) {
    use base64::Engine as _;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pem = if mode % 2 == 1 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
        let mut pem = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE REQUEST-----\n");
        pem
    };
    if let Ok(csr) = crate::identity::parse_csr(&pem) {
        let _ = crate::identity::ca::requested_names(&csr);
        let _ =
            crate::identity::ca::check_csr_names(&csr, "x1000c0s0b0n0", "rack.example", "nid001");
        let _ = crate::identity::ca::csr_key_is(&csr, b"");
    }
}
