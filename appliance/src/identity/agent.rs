//! `rackboot agent …`: the node side of machine identity, in the same static binary.
//!
//! Trust bootstrap: the node learns rackboot's URL, the rack CA's fingerprint and its join
//! token from its kernel command line (`rackboot.url=`, `rackboot.ca=sha256:…`,
//! `rackboot.join=`). It fetches the CA chain, checks that the chain is signed link by link up
//! to a root with that fingerprint, and from then on talks only to servers that chain to it.
//! The key is made here and never leaves the node: rackboot signs a CSR.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use super::Enrolled;
use super::ca::{fingerprint, pem_certs, verify_ca_chain};

#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// Where the boot parameters are read from.
    #[arg(long, default_value = "/proc/cmdline")]
    pub cmdline: PathBuf,
    /// Where key.pem (0600), cert.pem and ca.pem are kept.
    #[arg(
        long,
        env = "RACKBOOT_IDENTITY_DIR",
        default_value = "/run/rackboot/identity"
    )]
    pub dir: PathBuf,
    /// rackboot's HTTPS URL (default: rackboot.url= from the command line).
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Enroll: make a key and CSR, send them with the join token, store the certificate.
    Enroll {
        #[command(flatten)]
        args: AgentArgs,
        /// How long to wait for an administrator when the policy is `approval`.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Renew the certificate over mTLS with a new key. With --daemon, keep renewing when
    /// two thirds of each certificate's lifetime have passed.
    Renew {
        #[command(flatten)]
        args: AgentArgs,
        #[arg(long)]
        daemon: bool,
    },
    /// Print a secret fetched over mTLS.
    Secret {
        name: String,
        #[command(flatten)]
        args: AgentArgs,
    },
    /// Print this node's cloud-init user-data fetched over mTLS.
    UserData {
        #[command(flatten)]
        args: AgentArgs,
    },
    /// Enroll under policy `tpm`: prove this node's TPM (EK certificate, AK, credential
    /// activation, a quote over the CSR); no join token or CA fingerprint needed. Needs a
    /// rackboot built with the `tpm` feature.
    TpmEnroll {
        #[command(flatten)]
        args: AgentArgs,
        /// The TPM's TCTI (default: device:/dev/tpmrm0, else device:/dev/tpm0), e.g.
        /// `swtpm:host=127.0.0.1,port=2321`.
        #[arg(long, env = "RACKBOOT_TCTI")]
        tcti: Option<String>,
    },
}

/// The `rackboot.*` parameters of a kernel command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootParams {
    pub join: Option<String>,
    pub url: Option<String>,
    pub ca: Option<String>,
    pub xname: Option<String>,
}

pub fn parse_cmdline(text: &str) -> BootParams {
    let mut p = BootParams::default();
    for word in text.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            continue;
        };
        let v = Some(v.to_owned());
        match k {
            "rackboot.join" => p.join = v,
            "rackboot.url" => p.url = v,
            "rackboot.ca" => p.ca = v,
            "xname" => p.xname = v,
            _ => {}
        }
    }
    p
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Fetches the CA chain from `url` and checks it against `fp` (`sha256:<hex>` of the root).
async fn fetch_ca(url: &str, fp: &str) -> anyhow::Result<String> {
    // Not verified yet on purpose: what is fetched is checked against the fingerprint below.
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let pem = http
        .get(format!("{url}/identity/v1/ca.pem"))
        .send()
        .await
        .with_context(|| format!("cannot reach rackboot at {url}"))?
        .error_for_status()?;
    let pem = text(pem).await?;
    let chain = pem_certs(&pem)?;
    verify_ca_chain(&chain).context("the CA chain rackboot served")?;
    let root = chain.last().context("empty CA chain")?;
    let got = fingerprint(root);
    if !got.eq_ignore_ascii_case(fp.trim()) {
        bail!(
            "the CA rackboot served has fingerprint {got}, not {fp} from the kernel command line: \
             refusing to trust it (someone may be impersonating rackboot)"
        );
    }
    Ok(pem)
}

/// A client that trusts only the rack CA (and presents `identity` when given).
fn client(ca_pem: &str, identity: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let first = pem_certs(ca_pem)?
        .into_iter()
        .next()
        .context("empty CA chain")?;
    let ca = reqwest::Certificate::from_der(&first)?;
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .timeout(Duration::from_secs(30));
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id)?);
    }
    Ok(b.build()?)
}

pub(super) fn new_csr(xname: &str) -> anyhow::Result<(KeyPair, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![xname.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, xname);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

async fn answer(resp: reqwest::Response, what: &str) -> anyhow::Result<Enrolled> {
    let status = resp.status();
    let body = body(resp).await?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{what} refused ({status}): {detail}");
    }
    serde_json::from_slice(&body).with_context(|| format!("{what}: unexpected answer"))
}

pub(super) fn store(dir: &Path, key: &KeyPair, chain: &str, ca: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_file(&dir.join("key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&dir.join("cert.pem"), chain.as_bytes(), 0o644)?;
    write_file(&dir.join("ca.pem"), ca.as_bytes(), 0o644)?;
    Ok(())
}

struct Node {
    url: String,
    ca: String,
    dir: PathBuf,
}

fn load(args: &AgentArgs) -> anyhow::Result<Node> {
    let ca = std::fs::read_to_string(args.dir.join("ca.pem")).with_context(|| {
        format!(
            "no identity in {} yet: run `rackboot agent enroll` first",
            args.dir.display()
        )
    })?;
    let url = match &args.url {
        Some(u) => u.clone(),
        None => parse_cmdline(&std::fs::read_to_string(&args.cmdline).unwrap_or_default())
            .url
            .context("no --url and no rackboot.url= on the kernel command line")?,
    };
    Ok(Node {
        url: url.trim_end_matches('/').to_owned(),
        ca,
        dir: args.dir.clone(),
    })
}

fn identity_pem(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut pem = std::fs::read(dir.join("key.pem"))?;
    pem.extend(std::fs::read(dir.join("cert.pem"))?);
    Ok(pem)
}

/// When the certificate in `dir` should be renewed: two thirds of the way from when it was
/// stored (cert.pem's mtime; `not_before` is backdated for clock skew) to `not_after`; and
/// `not_after` itself.
fn renew_at(dir: &Path) -> anyhow::Result<(SystemTime, SystemTime)> {
    use x509_parser::prelude::FromDer;
    let path = dir.join("cert.pem");
    let pem = std::fs::read_to_string(&path)?;
    let first = pem_certs(&pem)?
        .into_iter()
        .next()
        .context("no certificate")?;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(&first)
        .map_err(|e| anyhow::anyhow!("cert.pem does not parse: {e}"))?;
    let na = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(c.validity().not_after.timestamp()).unwrap_or(0));
    let got = std::fs::metadata(&path)?.modified()?;
    let life = na.duration_since(got).unwrap_or_default();
    Ok((got + life * 2 / 3, na))
}

/// One renewal: a new key and CSR, sent over mTLS with the current certificate.
async fn renew_once(n: &Node) -> anyhow::Result<()> {
    let http = client(&n.ca, Some(&identity_pem(&n.dir)?))?;
    let who = http
        .get(format!("{}/identity/v1/node/whoami", n.url))
        .send()
        .await?
        .error_for_status()
        .context("rackboot refused this node's certificate")?;
    let who: serde_json::Value = serde_json::from_slice(&body(who).await?)
        .context("rackboot's whoami answer is not JSON")?;
    let xname = who
        .get("xname")
        .and_then(|x| x.as_str())
        .context("whoami: no xname")?
        .to_owned();
    let (key, csr) = new_csr(&xname)?;
    let e = answer(
        http.post(format!("{}/identity/v1/node/renew", n.url))
            .json(&serde_json::json!({"csr": csr}))
            .send()
            .await?,
        "renewal",
    )
    .await?;
    store(&n.dir, &key, &e.chain.context("no certificate")?, &n.ca)?;
    eprintln!(
        "renewed {xname}: certificate {} until {}",
        e.serial.unwrap_or_default(),
        e.not_after.unwrap_or_default()
    );
    Ok(())
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Enroll { args, wait } => {
            let text = std::fs::read_to_string(&args.cmdline)
                .with_context(|| format!("cannot read {}", args.cmdline.display()))?;
            let p = parse_cmdline(&text);
            let token = p.join.context(
                "no rackboot.join= on the kernel command line: this boot carries no join token",
            )?;
            let fp = p.ca.context("no rackboot.ca= on the kernel command line")?;
            let xname = p.xname.context("no xname= on the kernel command line")?;
            let url = args
                .url
                .clone()
                .or(p.url)
                .context("no rackboot.url= on the kernel command line")?;
            let url = url.trim_end_matches('/').to_owned();
            let ca = fetch_ca(&url, &fp).await?;
            let http = client(&ca, None)?;
            let (key, csr) = new_csr(&xname)?;
            let body = serde_json::json!({"token": token, "csr": csr});
            let mut e = answer(
                http.post(format!("{url}/identity/v1/enroll"))
                    .json(&body)
                    .send()
                    .await?,
                "enrollment",
            )
            .await?;
            let deadline = std::time::Instant::now() + wait;
            let mut told = false;
            while e.state == "pending" {
                let id = e.request.clone().context("pending without a request id")?;
                if !told {
                    eprintln!("enrollment {id} waits for `rackboot cert approve {id}`");
                    told = true;
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "enrollment {id} was not approved within {}",
                        humantime::format_duration(wait)
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                e = answer(
                    http.get(format!("{url}/identity/v1/enroll/{id}"))
                        .send()
                        .await?,
                    "enrollment status",
                )
                .await?;
            }
            let chain = e.chain.context("rackboot issued no certificate")?;
            store(&args.dir, &key, &chain, &ca)?;
            crate::outln!(
                "enrolled {xname}: certificate {} until {} in {}",
                e.serial.unwrap_or_default(),
                e.not_after.unwrap_or_default(),
                args.dir.display()
            );
            Ok(())
        }
        AgentCommand::Renew { args, daemon } => {
            let n = load(&args)?;
            if !daemon {
                return renew_once(&n).await;
            }
            loop {
                let (at, expires) = renew_at(&n.dir)?;
                if let Ok(left) = at.duration_since(SystemTime::now()) {
                    tokio::time::sleep(left).await;
                }
                // Retry until the certificate expires; after that only a new boot (a new join
                // token) or an administrator can help.
                while let Err(e) = renew_once(&n).await {
                    let left = expires
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    if left.is_zero() {
                        bail!("the certificate expired before it could be renewed: {e:#}");
                    }
                    eprintln!("renewal failed ({e:#}); retrying");
                    tokio::time::sleep(
                        (left / 10).clamp(Duration::from_millis(500), Duration::from_secs(60)),
                    )
                    .await;
                }
            }
        }
        AgentCommand::Secret { name, args } => {
            let n = load(&args)?;
            let http = client(&n.ca, Some(&identity_pem(&n.dir)?))?;
            let resp = http
                .get(format!("{}/identity/v1/node/secrets/{name}", n.url))
                .send()
                .await?;
            let status = resp.status();
            let body = body(resp).await?;
            if !status.is_success() {
                bail!(
                    "secret {name}: {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            std::io::stdout().write_all(&body)?;
            Ok(())
        }
        AgentCommand::TpmEnroll { args, tcti } => {
            #[cfg(feature = "tpm")]
            return super::agent_tpm::enroll(args, tcti).await;
            #[cfg(not(feature = "tpm"))]
            {
                let _ = (args, tcti);
                bail!(
                    "this rackboot was built without the `tpm` feature (cargo build --features tpm)"
                )
            }
        }
        AgentCommand::UserData { args } => {
            let n = load(&args)?;
            let http = client(&n.ca, Some(&identity_pem(&n.dir)?))?;
            let resp = http
                .get(format!("{}/identity/v1/node/cloud-init/user-data", n.url))
                .send()
                .await?
                .error_for_status()?;
            let text = text(resp).await?;
            crate::out!("{text}");
            Ok(())
        }
    }
}

/// The most the agent reads of any answer: the appliance is reached over the rack network,
/// where something else may answer in its place, so an endless body must be an error on the
/// node, not its memory filling up. Certificates, secrets and user-data are far below it.
const MAX_ANSWER: u64 = 1 << 20;

/// The whole answer, capped at [`MAX_ANSWER`].
pub(super) async fn body(resp: reqwest::Response) -> anyhow::Result<bytes::Bytes> {
    Ok(crate::http::capped::read_capped(resp, MAX_ANSWER).await?)
}

/// The whole answer as UTF-8 text, capped at [`MAX_ANSWER`].
async fn text(resp: reqwest::Response) -> anyhow::Result<String> {
    String::from_utf8(body(resp).await?.to_vec()).context("the answer is not UTF-8 text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_parameters() {
        let p = parse_cmdline(
            "initrd=initrd console=ttyS0 xname=x1000c0s0b0n0 rackboot.join=abc-_1 rackboot.ca=sha256:00ff rackboot.url=https://192.0.2.1 ds=nocloud;s=http://x/",
        );
        assert_eq!(p.join.as_deref(), Some("abc-_1"));
        assert_eq!(p.ca.as_deref(), Some("sha256:00ff"));
        assert_eq!(p.url.as_deref(), Some("https://192.0.2.1"));
        assert_eq!(p.xname.as_deref(), Some("x1000c0s0b0n0"));
        assert_eq!(parse_cmdline("quiet"), BootParams::default());
    }

    /// A peer answering in the appliance's place with an endless body, or a declared length
    /// over the cap: the agent stops with an error instead of reading on.
    #[tokio::test]
    async fn an_endless_or_oversized_answer_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for endless in [true, false] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let _ = conn.read(&mut req).await;
                if endless {
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .await;
                    let chunk = format!("{:x}\r\n{}\r\n", 65536, "a".repeat(65536));
                    while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                } else {
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
                        .await;
                }
            }
        });
        let http = reqwest::Client::new();
        for _ in 0..2 {
            let resp = http
                .get(format!("http://{addr}/identity/v1/ca.pem"))
                .send()
                .await
                .unwrap();
            let err = text(resp).await.unwrap_err().to_string();
            assert!(err.contains("larger than the 1048576-byte cap"), "{err}");
        }
    }
}
