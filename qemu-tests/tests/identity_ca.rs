//! Machine identity under a site CA: an intermediate signed elsewhere is imported and issues.
//! Helpers: `identity_support`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use qemu_tests::{Netns, P256, Rackboot, openssl_p256, preflight_with, rackboot_bin};

mod identity_support;

use identity_support::*;

/// An intermediate signed by a site CA: `ca csr` → openssl signs → `ca import` (bad chains are
/// refused first) → restart; nodes then enroll under the site root.
#[test]
fn an_intermediate_signed_elsewhere_is_imported_and_issues() {
    if !preflight_with(false, &["udhcpc", "openssl"]) {
        return;
    }
    let ns = Netns::new("idi").unwrap();
    let rb = Rackboot::start(&ns).unwrap();
    rb.register_node(A.0, 1, A.1, A.2).unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // The site CA, and a CSR for the rack intermediate.
    openssl_p256(
        w,
        P256::SelfSigned { days: 30 },
        "site.key",
        "site.pem",
        "/CN=site root",
        &[],
    )
    .unwrap();
    let (ok, csr) = rb_cli(&ns, &rb, &["ca", "csr", "--cluster", "rack"], None);
    assert!(ok, "{csr}");
    let csr_pem: String = csr
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("sign this request"))
        .collect();
    std::fs::write(w.join("rack.csr"), csr_pem).unwrap();
    std::fs::write(
        w.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    std::fs::write(w.join("leaf.ext"), "basicConstraints=CA:FALSE\n").unwrap();
    let sign = |ext: &str, out: &str| {
        openssl(
            w,
            &[
                "x509",
                "-req",
                "-in",
                "rack.csr",
                "-CA",
                "site.pem",
                "-CAkey",
                "site.key",
                "-CAcreateserial",
                "-days",
                "10",
                "-extfile",
                ext,
                "-out",
                out,
            ],
        )
    };
    sign("ca.ext", "rack.pem");
    sign("leaf.ext", "not-a-ca.pem");
    let cat = |parts: &[&str], out: &str| {
        let text: String = parts
            .iter()
            .map(|p| std::fs::read_to_string(w.join(p)).unwrap())
            .collect();
        std::fs::write(w.join(out), text).unwrap();
        w.join(out).to_str().unwrap().to_owned()
    };
    // Refused: not a CA; no root at the end; a certificate for another key.
    let bad = cat(&["not-a-ca.pem", "site.pem"], "bad1.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &bad], None);
    assert!(!ok && out.contains("not a CA"), "{out}");
    let bad = cat(&["rack.pem"], "bad2.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &bad], None);
    assert!(!ok && out.contains("self-signed root"), "{out}");
    let bad = cat(&["site.pem"], "bad3.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &bad], None);
    assert!(!ok && out.contains("pending key"), "{out}");
    // Accepted.
    let good = cat(&["rack.pem", "site.pem"], "chain.pem");
    let (ok, out) = rb_cli(&ns, &rb, &["ca", "import", &good], None);
    assert!(ok, "{out}");
    let site_fp = openssl(
        w,
        &[
            "x509",
            "-in",
            "site.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let site_fp = site_fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    let rb = rb.kill9_and_restart(&ns).unwrap();
    let (ok, show) = rb_cli(&ns, &rb, &["ca", "show"], None);
    assert!(
        ok && show.contains("intermediate") && show.contains(&site_fp),
        "{show}"
    );
    // A node enrolls and its certificate chains to the site root.
    let node = ns.add_client_ns().unwrap();
    node.ip(&["addr", "add", &format!("{}/24", A.2), "dev", "vc"])
        .unwrap();
    let line = boot_as(&node, A.1, A.2);
    assert_eq!(param(&line, "rackboot.ca"), format!("sha256:{site_fp}"));
    std::fs::write(w.join("cmdline"), &line).unwrap();
    let bin = rackboot_bin().unwrap();
    let id = w.join("id");
    let cmdline_path = w.join("cmdline");
    let (ok, out) = run(
        &node,
        bin.to_str().unwrap(),
        &[
            "agent",
            "enroll",
            "--cmdline",
            cmdline_path.to_str().unwrap(),
            "--dir",
            id.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}\n{}", rb.log_text());
    let chain = std::fs::read_to_string(id.join("cert.pem")).unwrap();
    let mut parts = chain.split_inclusive("-----END CERTIFICATE-----\n");
    std::fs::write(w.join("leaf.pem"), parts.next().unwrap()).unwrap();
    std::fs::write(w.join("inter.pem"), parts.next().unwrap()).unwrap();
    let v = openssl(
        w,
        &[
            "verify",
            "-CAfile",
            "site.pem",
            "-untrusted",
            "inter.pem",
            "leaf.pem",
        ],
    );
    assert!(v.contains("leaf.pem: OK"), "{v}");
}
