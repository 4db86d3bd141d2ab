//! `rackboot ca …`, `rackboot cert …`, `rackboot secret …` (admin side).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::ca::RackCa;
use super::routes::RevokeBody;
use crate::client::{ApiClient, ClientArgs};
use crate::output::{print_json, print_table};
use crate::store::{AuditRow, CertRow, EnrollRequest};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Subject, validity and fingerprint of the rack CA (read from the data dir).
    Show {
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
        /// Print the CA chain (PEM) instead.
        #[arg(long)]
        pem: bool,
    },
    /// Start an intermediate CA: make its key (kept in the data dir) and print the CSR to sign
    /// with your upstream CA (path length 0, keyCertSign and cRLSign).
    Csr {
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
        /// The SPIFFE trust domain named in the CA's subject.
        #[arg(long, default_value = "rack")]
        cluster: String,
    },
    /// Install the signed intermediate: FILE holds it, then its issuers up to the root (PEM).
    /// The chain is checked (signatures, CA flags, validity, the pending key) before anything
    /// changes. Restart `rackboot serve` to use it; certificates issued before stay valid only
    /// if the old root is still trusted.
    Import {
        file: PathBuf,
        #[arg(long, env = "RACKBOOT_DATA_DIR", default_value = "/var/lib/rackboot")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issued certificates (all, or one node's).
    List {
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a certificate (by serial) or every certificate of a node. Takes effect on the
    /// next mTLS request and is published in the CRL (/identity/v1/crl).
    Revoke {
        serial: Option<String>,
        #[arg(long, conflicts_with = "serial")]
        node: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enrollment requests waiting under the `approval` policy.
    Requests {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a pending enrollment request: its certificate is issued.
    Approve {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The identity audit (issuance, renewal, refusals, revocation, secret reads).
    Audit {
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A node's TPM endorsement key (policy `tpm`): pre-register, show or clear its hash.
    #[command(subcommand)]
    Ek(EkCommand),
}

#[derive(Debug, Subcommand)]
pub enum EkCommand {
    /// Pre-register the node's EK: only a TPM with this EK enrolls as the node.
    Set {
        xname: String,
        /// `sha256:<hex>` of the EK's public key (DER SubjectPublicKeyInfo).
        #[arg(long, conflicts_with = "ek", required_unless_present = "ek")]
        hash: Option<String>,
        /// The EK certificate or public key (PEM or DER): the hash is computed from it.
        #[arg(long)]
        ek: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The node's bound EK (operator-registered or bound on first use).
    Show {
        xname: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Forget the node's EK (a replaced TPM): its next enrollment needs a new one.
    Clear {
        xname: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `sha256:<hex>` of the public key in `bytes` (a certificate or a public key, PEM or DER).
pub fn ek_hash_of(bytes: &[u8]) -> anyhow::Result<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let text = String::from_utf8_lossy(bytes);
    let der = if text.contains("-----BEGIN") {
        let (label, der) = pem_block(&text).context("no PEM block")?;
        if label == "CERTIFICATE" {
            let (_, c) = X509Certificate::from_der(&der)
                .map_err(|e| anyhow::anyhow!("the certificate does not parse: {e}"))?;
            return Ok(super::tpm_wire::ek_hash(c.tbs_certificate.subject_pki.raw));
        }
        der
    } else {
        bytes.to_vec()
    };
    if let Ok((_, c)) = X509Certificate::from_der(&der) {
        return Ok(super::tpm_wire::ek_hash(c.tbs_certificate.subject_pki.raw));
    }
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
        .map_err(|e| anyhow::anyhow!("neither a certificate nor a public key: {e}"))?;
    Ok(super::tpm_wire::ek_hash(spki.raw))
}

fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end = rest.find("-----END ")?;
    let b64: String = rest
        .get(body_start..end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((label, der))
}

async fn ek(cmd: EkCommand) -> anyhow::Result<()> {
    let (client, ek) = match cmd {
        EkCommand::Set {
            xname,
            hash,
            ek,
            client,
        } => {
            let hash = match (hash, ek) {
                (Some(h), _) => h,
                (None, Some(f)) => ek_hash_of(
                    &std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
                )?,
                (None, None) => anyhow::bail!("give --hash or --ek FILE"),
            };
            let api = ApiClient::new(&client)?;
            let r = api
                .put(
                    &format!("/identity/v1/tpm/eks/{xname}"),
                    &super::tpm::EkBody { ek_hash: hash },
                )
                .await?
                .context("rackboot sent no answer")?;
            (client, serde_json::from_value::<crate::store::TpmEk>(r)?)
        }
        EkCommand::Show { xname, client } => {
            let api = ApiClient::new(&client)?;
            let r = api.get(&format!("/identity/v1/tpm/eks/{xname}")).await?;
            (client, r)
        }
        EkCommand::Clear { xname, client } => {
            let api = ApiClient::new(&client)?;
            api.delete(&format!("/identity/v1/tpm/eks/{xname}"), None::<&()>)
                .await?;
            crate::outln!("cleared the EK of {xname}");
            return Ok(());
        }
    };
    if client.json() {
        print_json(&ek);
    } else {
        print_table(
            &["NODE", "EK", "SOURCE", "SINCE"],
            &[vec![
                ek.xname.clone(),
                ek.ek_hash.clone(),
                ek.source.clone(),
                when(Some(ek.updated_ms)),
            ]],
        );
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret for one node or a group. The value is read from stdin or --file, never
    /// from the command line; it is stored encrypted and served only over mTLS.
    Set {
        name: String,
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        node: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Secret names and who they are for (never the values).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a secret.
    Rm {
        name: String,
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        node: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn ca_files(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let d = super::ca::dir(data_dir);
    if !d.join("ca.pem").exists() {
        anyhow::bail!(
            "no rack CA in {} (it is made on the first `rackboot serve`; check --data-dir)",
            d.display()
        );
    }
    Ok(())
}

pub async fn ca(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Show { data_dir, pem } => {
            ca_files(&data_dir)?;
            let ca = RackCa::open_or_create(&data_dir, "rack")?;
            if pem {
                crate::out!("{}", ca.chain_pem());
                return Ok(());
            }
            let i = ca.info()?;
            crate::outln!("subject:     {}", i.subject);
            crate::outln!("issuer:      {}", i.issuer);
            crate::outln!("kind:        {} (chain of {})", i.kind, i.chain_length);
            crate::outln!("not before:  {}", i.not_before);
            crate::outln!("not after:   {}", i.not_after);
            crate::outln!("fingerprint: {}", i.fingerprint);
            Ok(())
        }
        CaCommand::Csr { data_dir, cluster } => {
            crate::out!("{}", RackCa::csr(&data_dir, &cluster)?);
            eprintln!(
                "sign this request with your CA (as a CA certificate, path length 0), then run \
                 `rackboot ca import SIGNED.pem` with the signed certificate followed by its issuers"
            );
            Ok(())
        }
        CaCommand::Import { file, data_dir } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let i = RackCa::import(&data_dir, &text)?;
            crate::outln!(
                "imported intermediate {} (issued by {}); fingerprint {}",
                i.subject,
                i.issuer,
                i.fingerprint
            );
            eprintln!("restart `rackboot serve` to issue from it");
            Ok(())
        }
    }
}

fn when(ms: Option<i64>) -> String {
    ms.map(crate::timeline::routes::rfc3339)
        .unwrap_or_else(|| "-".into())
}

pub async fn cert(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Ek(cmd) => ek(cmd).await,
        CertCommand::List { node, client } => {
            let api = ApiClient::new(&client)?;
            let path = match &node {
                Some(n) => format!("/identity/v1/certs?node={n}"),
                None => "/identity/v1/certs".into(),
            };
            let rows: Vec<CertRow> = api.get(&path).await?;
            if client.json() {
                print_json(&rows);
            } else {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|c| {
                        vec![
                            c.serial.clone(),
                            c.xname.clone(),
                            when(Some(c.issued_ms)),
                            when(Some(c.not_after_ms)),
                            c.revoked_ms.map_or_else(
                                || "valid".into(),
                                |r| format!("revoked {}", when(Some(r))),
                            ),
                        ]
                    })
                    .collect();
                print_table(&["SERIAL", "NODE", "ISSUED", "EXPIRES", "STATE"], &t);
            }
            Ok(())
        }
        CertCommand::Revoke {
            serial,
            node,
            reason,
            client,
        } => {
            if serial.is_none() && node.is_none() {
                anyhow::bail!("give a SERIAL or --node XNAME");
            }
            let api = ApiClient::new(&client)?;
            let r = api
                .post(
                    "/identity/v1/certs/revoke",
                    &RevokeBody {
                        serial,
                        node,
                        reason,
                    },
                )
                .await?
                .context("rackboot sent no answer")?;
            if client.json() {
                print_json(&r);
            } else {
                for s in r
                    .get("revoked")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    crate::outln!("revoked {}", s.as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
        CertCommand::Requests { client } => {
            let api = ApiClient::new(&client)?;
            let rows: Vec<EnrollRequest> = api.get("/identity/v1/requests").await?;
            if client.json() {
                print_json(&rows);
            } else {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            r.xname.clone(),
                            r.ip.clone(),
                            when(Some(r.created_ms)),
                            r.state.clone(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "NODE", "FROM", "ASKED", "STATE"], &t);
            }
            Ok(())
        }
        CertCommand::Approve { id, client } => {
            let api = ApiClient::new(&client)?;
            let r = api
                .post(&format!("/identity/v1/requests/{id}/approve"), &())
                .await?
                .context("rackboot sent no answer")?;
            crate::outln!(
                "approved {id}: certificate {}",
                r.get("serial").and_then(|v| v.as_str()).unwrap_or("?")
            );
            Ok(())
        }
        CertCommand::Audit { node, client } => {
            let api = ApiClient::new(&client)?;
            let path = match &node {
                Some(n) => format!("/identity/v1/audit?node={n}"),
                None => "/identity/v1/audit".into(),
            };
            let rows: Vec<AuditRow> = api.get(&path).await?;
            if client.json() {
                print_json(&rows);
            } else {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|a| {
                        vec![
                            when(Some(a.ts_ms)),
                            a.xname.clone().unwrap_or_else(|| "-".into()),
                            a.action.clone(),
                            if a.ok { "ok" } else { "refused" }.into(),
                            a.serial.clone().unwrap_or_else(|| "-".into()),
                            a.detail.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &["WHEN", "NODE", "ACTION", "RESULT", "SERIAL", "DETAIL"],
                    &t,
                );
            }
            Ok(())
        }
    }
}

fn scope_query(node: &Option<String>, group: &Option<String>) -> anyhow::Result<String> {
    match (node, group) {
        (Some(n), None) => Ok(format!("node={n}")),
        (None, Some(g)) => Ok(format!("group={g}")),
        _ => anyhow::bail!("give --node XNAME or --group LABEL"),
    }
}

pub async fn secret(cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set {
            name,
            node,
            group,
            file,
            client,
        } => {
            let q = scope_query(&node, &group)?;
            let value = match file {
                Some(f) => std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        eprintln!("secret value (end with Ctrl-D):");
                    }
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let api = ApiClient::new(&client)?;
            let len = value.len() as u64;
            api.put_stream(
                &format!("/identity/v1/secrets/{name}?{q}"),
                reqwest::Body::from(value),
                Some(len),
            )
            .await?;
            eprintln!("secret {name} stored for {}", q.replace('=', " "));
            Ok(())
        }
        SecretCommand::List { client } => {
            let api = ApiClient::new(&client)?;
            let rows: serde_json::Value = api.get("/identity/v1/secrets").await?;
            if client.json() {
                print_json(&rows);
            } else {
                let t: Vec<Vec<String>> = rows
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let field = |k: &str| r.get(k).and_then(|v| v.as_str());
                        let (kind, who) = match field("node") {
                            Some(n) => ("node", n),
                            None => ("group", field("group").unwrap_or("")),
                        };
                        vec![
                            field("name").unwrap_or("").to_owned(),
                            kind.into(),
                            who.to_owned(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "FOR", "WHO"], &t);
            }
            Ok(())
        }
        SecretCommand::Rm {
            name,
            node,
            group,
            client,
        } => {
            let q = scope_query(&node, &group)?;
            let api = ApiClient::new(&client)?;
            api.delete(&format!("/identity/v1/secrets/{name}?{q}"), None::<&()>)
                .await?;
            eprintln!("secret {name} deleted");
            Ok(())
        }
    }
}
