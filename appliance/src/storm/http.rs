//! The HTTP side of a simulated node: the iPXE boot script (`kernel`, `initrd`, `chain`
//! lines), kernel and initrd downloads checked against a published sha256, and the NoCloud
//! fetches and phone-home of the booted OS.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_lc_rs::digest;
use reqwest::{Client, Url};

/// A node's HTTP client: from its leased address when given (servers that identify nodes by
/// source address need it), with iPXE's user agent.
pub fn client(local: Option<Ipv4Addr>, timeout: Duration) -> reqwest::Result<Client> {
    let mut b = Client::builder()
        .user_agent("iPXE/1.21.1+ (rackboot storm)")
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(1);
    if let Some(ip) = local {
        b = b.local_address(std::net::IpAddr::V4(ip));
    }
    b.build()
}

/// What a boot script asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    /// The kernel's URL and its command line.
    pub kernel: Option<(Url, Vec<String>)>,
    pub initrds: Vec<Url>,
    /// A `chain` to another script (followed when there is no kernel line).
    pub chain: Option<Url>,
}

impl Script {
    /// A kernel argument `key=value`'s value.
    pub fn kernel_arg(&self, key: &str) -> Option<&str> {
        let (_, args) = self.kernel.as_ref()?;
        args.iter()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
    }

    /// The NoCloud seed URL from `ds=nocloud;s=URL` (or `nocloud-net`, `seedfrom=`).
    pub fn seed(&self) -> Option<Url> {
        let ds = self.kernel_arg("ds")?;
        let mut parts = ds.split(';');
        if !parts.next()?.starts_with("nocloud") {
            return None;
        }
        parts
            .find_map(|p| p.strip_prefix("s=").or_else(|| p.strip_prefix("seedfrom=")))
            .and_then(|u| Url::parse(u).ok())
    }
}

/// Reads an iPXE script: the first `kernel` (or `chain`) line's image, the `initrd` lines, with
/// relative URLs resolved against `base`. Options (`--name x`, `-n x`) are skipped; a
/// `|| goto …` tail is ignored.
pub fn parse_script(text: &str, base: &Url) -> Script {
    let mut s = Script::default();
    for line in text.lines() {
        let line = line.split("||").next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else { continue };
        let mut rest: Vec<&str> = Vec::new();
        let mut skip_value = false;
        for w in words {
            if skip_value {
                skip_value = false;
            } else if rest.is_empty() && (w == "-n" || w == "--name") {
                skip_value = true;
            } else if rest.is_empty() && w.starts_with('-') {
            } else {
                rest.push(w);
            }
        }
        let Some((url, args)) = rest.split_first() else {
            continue;
        };
        let Ok(url) = base.join(url) else { continue };
        match cmd {
            "kernel" | "linux" | "imgexec" if s.kernel.is_none() => {
                s.kernel = Some((url, args.iter().map(|a| (*a).to_owned()).collect()));
            }
            "initrd" | "imgfetch" | "module" => s.initrds.push(url),
            "chain" if s.chain.is_none() => s.chain = Some(url),
            _ => {}
        }
    }
    s
}

/// How a downloaded image is checked.
#[derive(Debug, Clone, Default)]
pub struct Verify {
    /// `--expect-sha256 NAME=HEX`: by the URL's last path segment.
    pub expect: HashMap<String, String>,
    /// `--no-verify`: download only, reported as unchecked.
    pub skip: bool,
}

/// A downloaded image: its size and whether its sha256 was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    pub bytes: u64,
    pub verified: bool,
}

/// GET with iPXE's persistence on connection failures: `retries` more tries, `pause` apart.
/// Returns the response (any status) and how many retries it took.
pub async fn get(
    c: &Client,
    url: &Url,
    retries: u32,
    pause: Duration,
) -> Result<(reqwest::Response, u32), String> {
    let mut tried = 0;
    loop {
        match c.get(url.clone()).send().await {
            Ok(r) => return Ok((r, tried)),
            Err(e) if e.is_connect() && tried < retries => {
                tried += 1;
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(describe(&e)),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        s
    }
}

/// The most read of a boot script or cloud-init document: the server under test is a
/// network peer like any other, and an endless answer must fail its node, not fill memory.
const MAX_TEXT: u64 = 1 << 20;

/// The response body as text, for a 200, capped at [`MAX_TEXT`].
pub async fn text(resp: reqwest::Response) -> Result<String, String> {
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let body = crate::http::capped::read_capped(resp, MAX_TEXT)
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8 text".to_owned())
}

/// Downloads an image and checks its sha256 against `--expect-sha256`, else against the
/// `ETag: "sha256:HEX"` the server publishes (rackboot's image store does).
pub async fn image(resp: reqwest::Response, verify: &Verify) -> Result<Image, String> {
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let name = resp
        .url()
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("")
        .to_owned();
    let published = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.trim_start_matches("W/")
                .trim_matches('"')
                .strip_prefix("sha256:")
        })
        .map(str::to_ascii_lowercase);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut bytes = 0u64;
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        bytes += chunk.len() as u64;
        ctx.update(&chunk);
    }
    let got = hex::encode(ctx.finish().as_ref());
    let verified = check(verify, &name, &got, published)?;
    Ok(Image { bytes, verified })
}

/// Checks a download's sha256 (`got`, hex) against `--expect-sha256 NAME=HEX`, else against
/// the hash the server `published`: whether it was checked (`false`: `--no-verify`), or why
/// it fails.
pub fn check(
    verify: &Verify,
    name: &str,
    got: &str,
    published: Option<String>,
) -> Result<bool, String> {
    if verify.skip {
        return Ok(false);
    }
    let want = verify
        .expect
        .get(name)
        .map(|h| h.to_ascii_lowercase())
        .or(published);
    match want {
        Some(w) if w == got => Ok(true),
        Some(w) => Err(format!("sha256 mismatch: got {got}, published {w}")),
        None => Err(format!(
            "no published sha256 for {name} (give --expect-sha256 {name}=HEX, or --no-verify)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const RACKBOOT: &str = "#!ipxe\n\
        kernel --name kernel http://192.0.2.1/images/vmlinuz initrd=initrd console=ttyS0 xname=x1000c0s0b0n0 nid=1 ds=nocloud;s=http://192.0.2.1/cloud-init/x1000c0s0b0n0/ || goto boot_retry\n\
        initrd --name initrd /images/initrd.img || goto boot_retry\n\
        boot || goto boot_retry\n\
        :boot_retry\n\
        sleep 30\n\
        chain http://192.0.2.1/boot/v1/bootscript?mac=52:54:00:aa:00:01&retry=1\n";

    #[test]
    fn a_rackboot_script_yields_kernel_initrd_and_seed() {
        let base = Url::parse("http://192.0.2.1/boot/v1/bootscript?mac=x").unwrap();
        let s = parse_script(RACKBOOT, &base);
        let (k, args) = s.kernel.clone().unwrap();
        assert_eq!(k.as_str(), "http://192.0.2.1/images/vmlinuz");
        assert_eq!(args.first().map(String::as_str), Some("initrd=initrd"));
        assert_eq!(s.initrds[0].as_str(), "http://192.0.2.1/images/initrd.img");
        assert_eq!(s.kernel_arg("xname"), Some("x1000c0s0b0n0"));
        assert_eq!(
            s.seed().unwrap().as_str(),
            "http://192.0.2.1/cloud-init/x1000c0s0b0n0/"
        );
        assert!(s.chain.is_some());
    }

    #[test]
    fn a_download_is_checked_against_the_expected_then_the_published_hash() {
        let v = Verify {
            expect: HashMap::from([("ipxe.efi".to_owned(), "AB12".to_owned())]),
            skip: false,
        };
        assert_eq!(check(&v, "ipxe.efi", "ab12", Some("ff".into())), Ok(true));
        assert!(
            check(&v, "ipxe.efi", "ab13", None)
                .unwrap_err()
                .contains("mismatch")
        );
        assert_eq!(check(&v, "vmlinuz", "ff", Some("ff".into())), Ok(true));
        assert!(
            check(&v, "vmlinuz", "ff", None)
                .unwrap_err()
                .contains("no published")
        );
        let skip = Verify { skip: true, ..v };
        assert_eq!(check(&skip, "ipxe.efi", "00", None), Ok(false));
    }

    #[test]
    fn scripts_without_a_kernel_or_with_garbage_are_empty() {
        let base = Url::parse("http://h/").unwrap();
        assert_eq!(parse_script("#!ipxe\necho hi\n", &base).kernel, None);
        assert_eq!(parse_script("kernel\n\0\u{fffd}", &base), Script::default());
        let s = parse_script("kernel -n k vmlinuz ds=none\n", &base);
        assert_eq!(s.kernel.unwrap().0.as_str(), "http://h/vmlinuz");
    }
}
