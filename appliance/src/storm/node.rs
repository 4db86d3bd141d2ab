//! One simulated node walking the firmware's sequence, recording each stage.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe_core::dhcp::wire::MessageType;
use reqwest::Url;

use super::dhcp::{self, Client, Firmware, Reply, Transport};
use super::http::{self, Verify};
use super::stats::{Failure, NodeRecord, Stage};
use super::tftp::{self, TftpParams};

/// What every node shares.
pub struct Plan {
    /// DHCP (`None` with `--tftp-only`, which sends no DHCP).
    pub transport: Option<Arc<Transport>>,
    pub start: Instant,
    pub time_scale: f64,
    /// DHCP transmissions of each message before the stage fails.
    pub dhcp_tries: u32,
    pub tftp: TftpParams,
    pub http_timeout: Duration,
    pub http_retries: u32,
    /// `--bind-leases`: the interface the leased /32s are added to.
    pub bind_interface: Option<String>,
    pub verify: Verify,
    /// `--phone-home-url`, with `{xname}`, `{mac}`, `{ip}`.
    pub phone_home: Option<String>,
    /// The last stage a node walks (`--until`; `phone_home` is the whole sequence).
    pub until: Stage,
    /// `--tftp-only FILE`: each node only downloads FILE from the server, over TFTP.
    pub tftp_only: Option<(Ipv4Addr, String)>,
}

impl Plan {
    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale)
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// A small xorshift for xids and jitter (no crypto quality needed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((seed ^ nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [-1, 1].
    pub fn jitter(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

struct Walk {
    plan: Arc<Plan>,
    rec: NodeRecord,
    rng: Rng,
    mac: [u8; 6],
}

type StageResult<T> = Result<T, String>;

impl Walk {
    /// Runs one stage and records it. `Err(())` ends the walk: the stage failed (its failure
    /// is recorded), or it was the last one asked for (`--until`: the node is complete).
    async fn stage<T, F>(&mut self, stage: Stage, f: F) -> Result<T, ()>
    where
        F: AsyncFnOnce(&mut Self) -> StageResult<T>,
    {
        let start = self.plan.now();
        self.rec.stages.push((stage, start, None));
        let out = f(self).await;
        match out {
            Ok(v) => {
                let end = self.plan.now();
                if let Some(s) = self.rec.stages.last_mut() {
                    s.2 = Some(end);
                }
                if stage >= self.plan.until {
                    self.rec.completed = true;
                    return Err(());
                }
                Ok(v)
            }
            Err(reason) => {
                tracing::debug!(mac = %self.rec.mac, stage = stage.as_str(), %reason, "storm: node failed");
                self.rec.failure = Some(Failure {
                    stage,
                    reason,
                    at: self.plan.now(),
                });
                Err(())
            }
        }
    }

    /// DISCOVER → OFFER → REQUEST → ACK with RFC 2131 retransmissions; a NAK starts over.
    async fn dora(&mut self, client: Client) -> StageResult<Reply> {
        let t = self
            .plan
            .transport
            .clone()
            .ok_or("no DHCP transport (--tftp-only)")?;
        let xid = self.rng.next() as u32;
        let mut rx = t.listen(xid);
        let began = Instant::now();
        let result = async {
            for _restart in 0..3 {
                let offer = self
                    .exchange(&t, &mut rx, client, xid, began, None, MessageType::Offer)
                    .await?;
                let server = offer.server_id.unwrap_or(offer.siaddr);
                let ack = self
                    .exchange(
                        &t,
                        &mut rx,
                        client,
                        xid,
                        began,
                        Some((server, offer.yiaddr)),
                        MessageType::Ack,
                    )
                    .await?;
                if ack.kind == MessageType::Ack {
                    return Ok(ack);
                }
            }
            Err("NAK three times".to_owned())
        }
        .await;
        t.done(xid);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        t: &Transport,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Reply>,
        client: Client,
        xid: u32,
        began: Instant,
        request: Option<(Ipv4Addr, Ipv4Addr)>,
        want: MessageType,
    ) -> StageResult<Reply> {
        let kind = if request.is_some() {
            MessageType::Request
        } else {
            MessageType::Discover
        };
        for attempt in 0..self.plan.dhcp_tries {
            if attempt > 0 {
                self.rec.dhcp_retransmits += 1;
            }
            let secs = began.elapsed().as_secs().min(u64::from(u16::MAX)) as u16;
            let msg = dhcp::encode(kind, client, self.mac, xid, secs, t.giaddr, request);
            t.send(&msg).await.map_err(|e| format!("send: {e}"))?;
            let wait = self.plan.scaled(dhcp::backoff(attempt, self.rng.jitter()));
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) if r.mac != self.mac => {}
                    Ok(Some(r)) if r.kind == want => return Ok(r),
                    Ok(Some(r)) if r.kind == MessageType::Nak && request.is_some() => {
                        return Ok(r);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("transport closed".into()),
                    Err(_) => break,
                }
            }
        }
        Err(format!(
            "no {} after {} {}s",
            want.as_str(),
            self.plan.dhcp_tries,
            kind.as_str()
        ))
    }

    /// `--bind-leases`: makes the leased address the node's own, so its TFTP, HTTP and
    /// cloud-init traffic comes from it (servers identify nodes by source address).
    async fn adopt(&self, ip: Ipv4Addr) -> StageResult<Option<Ipv4Addr>> {
        let Some(iface) = self.plan.bind_interface.clone() else {
            return Ok(None);
        };
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("ip")
                .args(["addr", "add", &format!("{ip}/32"), "dev", &iface])
                .output()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run ip: {e}"))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !err.contains("File exists") {
            return Err(format!("cannot add {ip}/32: {}", err.trim()));
        }
        Ok(Some(ip))
    }
}

/// Runs node `index` (MAC `mac`, firmware `fw`), powered on `power_on` after the start.
pub async fn run(plan: Arc<Plan>, mac: [u8; 6], fw: Firmware, power_on: Duration) -> NodeRecord {
    tokio::time::sleep_until((plan.start + power_on).into()).await;
    let mut w = Walk {
        plan: plan.clone(),
        rec: NodeRecord {
            mac: pxe_core::MacAddr(mac).to_string(),
            power_on: plan.now(),
            ..Default::default()
        },
        rng: Rng::new(u64::from_be_bytes([
            0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
        ])),
        mac,
    };
    let _ = walk(&mut w, fw).await;
    w.rec
}

async fn walk(w: &mut Walk, fw: Firmware) -> Result<(), ()> {
    if let Some((server, file)) = w.plan.tftp_only.clone() {
        return w
            .stage(Stage::Tftp, async |w| {
                boot_file(w, server, &file, None).await
            })
            .await;
    }
    let (first, local) = w
        .stage(Stage::Dhcp, async |w| {
            let ack = w.dora(Client::Firmware(fw)).await?;
            let local = w.adopt(ack.yiaddr).await?;
            Ok((ack, local))
        })
        .await?;
    w.rec.ip = Some(first.yiaddr.to_string());
    let ipxe = match fw {
        Firmware::SeabiosIpxe => first,
        Firmware::Ovmf => {
            w.stage(Stage::Tftp, async |w| {
                let file = first.boot_file.clone().ok_or("no boot file offered")?;
                let server = tftp_server(&first).ok_or("no TFTP server offered")?;
                boot_file(w, server, &file, local).await
            })
            .await?;
            w.stage(Stage::IpxeDhcp, async |w| w.dora(Client::Ipxe(fw)).await)
                .await?
        }
    };
    let client = http::client(local, w.plan.http_timeout).map_err(|_| ())?;
    let script = w
        .stage(Stage::Bootscript, async |w| {
            let mut url = ipxe
                .boot_file
                .as_deref()
                .filter(|f| f.starts_with("http://") || f.starts_with("https://"))
                .and_then(|f| Url::parse(f).ok())
                .ok_or_else(|| format!("iPXE was offered {:?}, not an HTTP URL", ipxe.boot_file))?;
            for _ in 0..4 {
                let (resp, tries) = http::get(&client, &url, w.plan.http_retries, pause(w)).await?;
                w.rec.http_retries += tries;
                let body = http::text(resp).await?;
                w.rec.http_bytes += body.len() as u64;
                let s = http::parse_script(&body, &url);
                match (&s.kernel, &s.chain) {
                    (Some(_), _) => return Ok(s),
                    (None, Some(next)) => url = next.clone(),
                    (None, None) => break,
                }
            }
            Err("the script has no kernel line (is the node in the server's inventory?)".into())
        })
        .await?;
    w.rec.xname = script.kernel_arg("xname").map(str::to_owned);
    let (kernel, _) = script.kernel.clone().ok_or(())?;
    w.stage(Stage::Kernel, async |w| {
        fetch_image(w, &client, &kernel).await
    })
    .await?;
    w.stage(Stage::Initrd, async |w| {
        for url in &script.initrds {
            fetch_image(w, &client, url).await?;
        }
        Ok(())
    })
    .await?;
    w.stage(Stage::OsDhcp, async |w| w.dora(Client::Os).await)
        .await?;
    let seed = script.seed();
    w.stage(Stage::CloudInit, async |w| {
        let seed = seed
            .clone()
            .ok_or("no ds=nocloud;s=URL on the kernel line")?;
        for doc in ["meta-data", "user-data", "vendor-data"] {
            let url = seed.join(doc).map_err(|e| e.to_string())?;
            let (resp, tries) = http::get(&client, &url, w.plan.http_retries, pause(w)).await?;
            w.rec.http_retries += tries;
            // cloud-init treats a missing vendor-data as empty.
            if doc == "vendor-data" && resp.status() == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            let body = http::text(resp).await.map_err(|e| format!("{doc}: {e}"))?;
            w.rec.http_bytes += body.len() as u64;
        }
        Ok(())
    })
    .await?;
    w.stage(Stage::PhoneHome, async |w| {
        let xname = w.rec.xname.clone().unwrap_or_default();
        let url = match &w.plan.phone_home {
            Some(t) => t
                .replace("{xname}", &xname)
                .replace("{mac}", &w.rec.mac)
                .replace("{ip}", w.rec.ip.as_deref().unwrap_or("")),
            None => {
                let seed = seed
                    .clone()
                    .ok_or("no seed URL to derive phone-home from")?;
                if xname.is_empty() {
                    return Err("no xname= on the kernel line (give --phone-home-url)".into());
                }
                format!(
                    "{}cloud-init/phone-home/{xname}",
                    seed.join("/").map_err(|e| e.to_string())?
                )
            }
        };
        let form = format!("instance_id={xname}&hostname={xname}");
        let resp = client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status().as_u16()));
        }
        Ok(())
    })
    .await
}

/// Downloads the boot file over TFTP, checking its sha256 when `--expect-sha256` names it.
async fn boot_file(
    w: &mut Walk,
    server: Ipv4Addr,
    file: &str,
    local: Option<Ipv4Addr>,
) -> StageResult<()> {
    let tp = TftpParams {
        timeout: w.plan.scaled(w.plan.tftp.timeout),
        ..w.plan.tftp
    };
    let local = local.unwrap_or(Ipv4Addr::UNSPECIFIED);
    match tftp::fetch(local, server, file, &tp).await {
        Ok(f) => {
            w.rec.tftp_bytes += f.bytes;
            w.rec.tftp_retransmits += f.retransmits;
            let name = file.rsplit('/').next().unwrap_or(file);
            if w.plan.verify.expect.contains_key(name) {
                let verified = http::check(&w.plan.verify, name, &f.sha256, None)
                    .map_err(|e| format!("{file}: {e}"))?;
                if verified {
                    w.rec.sha256_verified += 1;
                } else {
                    w.rec.sha256_unchecked += 1;
                }
            }
            Ok(())
        }
        Err(e) => {
            if let tftp::TftpError::Timeout(n) = e {
                w.rec.tftp_retransmits += n;
            }
            Err(format!("{file}: {e}"))
        }
    }
}

fn pause(w: &Walk) -> Duration {
    w.plan.scaled(Duration::from_secs(1))
}

async fn fetch_image(w: &mut Walk, client: &reqwest::Client, url: &Url) -> StageResult<()> {
    let (resp, tries) = http::get(client, url, w.plan.http_retries, pause(w)).await?;
    w.rec.http_retries += tries;
    let img = http::image(resp, &w.plan.verify)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    w.rec.http_bytes += img.bytes;
    if img.verified {
        w.rec.sha256_verified += 1;
    } else {
        w.rec.sha256_unchecked += 1;
    }
    Ok(())
}

/// siaddr, else option 66 (an address), else the DHCP server.
fn tftp_server(r: &Reply) -> Option<Ipv4Addr> {
    if !r.siaddr.is_unspecified() {
        return Some(r.siaddr);
    }
    r.tftp_server
        .as_deref()
        .and_then(|s| s.parse().ok())
        .or(r.server_id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn walk_until(until: Stage) -> Walk {
        let plan = Plan {
            transport: None,
            start: Instant::now(),
            time_scale: 1.0,
            dhcp_tries: 1,
            tftp: TftpParams {
                blksize: 1468,
                windowsize: None,
                timeout: Duration::from_secs(1),
                retries: 1,
            },
            http_timeout: Duration::from_secs(1),
            http_retries: 0,
            bind_interface: None,
            verify: Verify::default(),
            phone_home: None,
            until,
            tftp_only: None,
        };
        Walk {
            plan: Arc::new(plan),
            rec: NodeRecord::default(),
            rng: Rng::new(1),
            mac: [0; 6],
        }
    }

    #[tokio::test]
    async fn a_walk_stops_complete_after_the_until_stage() {
        let mut w = walk_until(Stage::Initrd);
        assert_eq!(w.stage(Stage::Kernel, async |_| Ok(7)).await, Ok(7));
        assert!(!w.rec.completed);
        assert_eq!(w.stage(Stage::Initrd, async |_| Ok(())).await, Err(()));
        assert!(w.rec.completed && w.rec.booted());
        assert_eq!(w.rec.stages.len(), 2);
    }

    #[tokio::test]
    async fn a_failed_stage_is_not_complete_and_dhcp_needs_a_transport() {
        let mut w = walk_until(Stage::PhoneHome);
        let r = w
            .stage(Stage::Dhcp, async |w| w.dora(Client::Os).await)
            .await;
        assert_eq!(r.map(|_| ()), Err(()));
        assert!(!w.rec.booted());
        assert!(w.rec.failure.unwrap().reason.contains("--tftp-only"));
    }
}
