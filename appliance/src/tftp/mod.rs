//! The TFTP service: the tokio driver around `pxe_core::tftp`. It serves only the iPXE
//! directory (TFTP exists to hand out iPXE; everything else goes over HTTP).
//!
//! Requests arrive on :69; every transfer gets its own socket (its TID, RFC 1350 §4) and task.
//! Unknown files are answered with ERROR 1 at once: iPXE asks for `autoexec.ipxe` on every boot.
//!
//! What an RRQ does is `pxe_core::tftp::frontend::accept`'s decision, shared with the embassy
//! loop: it parses and normalises the request and asks `pxe_core::tftp::Transfers` whether it
//! starts a transfer (the rules, and why a retransmitted RRQ is ignored rather than answered,
//! are documented there). The listener keeps
//! one table of the active transfers, keyed by the client's address and port and bounded by
//! `listen.tftp_max_transfers` (at most [`MAX_TRANSFERS`]). A read request past the limit is
//! left unanswered and counted (`rackboot_tftp_transfers_total{outcome="busy"}`): the firmware
//! sends it again after its timeout (EDK2 and iPXE retry an unanswered RRQ several times), where
//! an ERROR "server busy" would end its download and the boot. Each transfer task owns a [`Registered`] guard that takes its entry out of
//! the table however the task ends. An ERROR from the client on a transfer's socket (ERROR 5 from
//! a client that does not know that TID, or a cancel) ends the transfer at once.
//!
//! Owns: the TFTP service (:69) and its transfer tasks. May call: `ipxe`, `netif`, `timeline`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant as StdInstant;

use pxe_core::tftp::frontend::{self, Decision, Refusal, Unopened};
use pxe_core::tftp::{self, ErrorCode, Session, SessionConfig, State, TransferId, Transfers};
use pxe_core::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ipxe::IpxeDir;
use crate::netif;
use crate::timeline::{Observers, Subject, stage};

/// The most concurrent transfers `listen.tftp_max_transfers` may allow.
pub const MAX_TRANSFERS: usize = 4096;

/// The active transfers; each holds the token that stops it when its client moves on.
/// Boxed: at [`MAX_TRANSFERS`] slots the table is a few hundred KiB.
type Table = Box<Transfers<CancellationToken, MAX_TRANSFERS>>;

/// A transfer's place in the table, released when the transfer task ends, whichever way.
struct Registered {
    table: Arc<Mutex<Table>>,
    id: TransferId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        // A transfer that was replaced is no longer ours to remove: `finish` checks the id.
        lock(&self.table).finish(self.id);
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // The table is consistent after every call (no panics inside), so a poisoned lock is usable.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where TFTP listens and how many transfers it serves at once.
pub struct Listen {
    /// UDP port (69).
    pub port: u16,
    /// `listen.tftp_max_transfers` (1 to [`MAX_TRANSFERS`]).
    pub max_transfers: usize,
}

/// Starts TFTP on `iface`:`listen.port`, serving `root`. The listener and every transfer run
/// on `packets`, the boot path's UDP runtime (see `services`), so HTTP traffic cannot hold up a
/// boot file's packets.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    tasks: &mut JoinSet<()>,
    packets: &tokio::runtime::Handle,
    iface: &str,
    local_ip: Ipv4Addr,
    Listen {
        port,
        max_transfers,
    }: Listen,
    root: IpxeDir,
    obs: Observers,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _packets = packets.enter();
    let sock = netif::udp_socket(
        Some(iface),
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port),
        false,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot bind TFTP on {iface} UDP port {port}: {e} (set listen.tftp_port = 0 to disable)"
        )
    })?;
    let iface = iface.to_owned();
    let clock = StdInstant::now();
    tasks.spawn_on(async move {
        let mut table = Box::new(Transfers::new());
        table.set_limit(max_transfers);
        let table: Arc<Mutex<Table>> = Arc::new(Mutex::new(table));
        let mut busy_warning = None::<StdInstant>;
        let mut busy_since_warning = 0u64;
        let mut buf = vec![0u8; 2048];
        let mut out = [0u8; 600];
        loop {
            let (n, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = sock.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(err) => { tracing::warn!(error = %err, "TFTP: receive failed"); continue; }
                },
            };
            let SocketAddr::V4(peer) = peer else { continue };
            let Some(datagram) = buf.get(..n) else {
                continue;
            };
            let stop = shutdown.child_token();
            let mut name_buf = [0u8; frontend::MAX_NAME];
            let decision = frontend::accept(
                &mut lock(&table),
                peer,
                datagram,
                &mut name_buf,
                stop.clone(),
                |name| {
                    let path = root.resolve(name).ok_or(Unopened::NotFound)?;
                    std::fs::File::open(&path)
                        .and_then(|f| f.metadata().map(|m| (f, m.len())))
                        .map_err(|err| {
                            tracing::error!(file = %path.display(), error = %err, "TFTP: cannot open");
                            Unopened::Unreadable
                        })
                },
            );
            let start = match decision {
                Decision::Start(start) => start,
                Decision::Duplicate { file } => {
                    tracing::debug!(%peer, file, "TFTP: retransmitted read request ignored; its transfer is running");
                    obs.metrics.tftp_done("duplicate", 0, 0);
                    continue;
                }
                Decision::Refuse {
                    why,
                    file,
                    replaced,
                } => {
                    if let Some(old) = replaced {
                        tracing::debug!(%peer, "TFTP: client asked for another file; its running transfer is abandoned");
                        old.cancel();
                    }
                    match why {
                        Refusal::Request(e) => {
                            tracing::info!(%peer, reason = e.code().1, "TFTP: request refused");
                        }
                        Refusal::Path(e) => {
                            tracing::warn!(%peer, reason = ?e, "TFTP: refused file name");
                        }
                        Refusal::Busy => {
                            // No answer: the client sends the RRQ again. Warned once a minute.
                            obs.metrics.tftp_done("busy", 0, 0);
                            busy_since_warning += 1;
                            if busy_warning.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                                tracing::warn!(%peer, max_transfers, unanswered = busy_since_warning, "TFTP: at listen.tftp_max_transfers; read requests left unanswered for the firmware to retry");
                                busy_warning = Some(StdInstant::now());
                                busy_since_warning = 0;
                            }
                            continue;
                        }
                        _ => tracing::debug!(%peer, file, reason = ?why, "TFTP: file not served"),
                    }
                    let (code, msg) = why.code();
                    reply_error(&sock, peer, code, msg, &mut out, &obs, file.unwrap_or("")).await;
                    continue;
                }
                // Not a request; and any decision added later.
                _ => continue,
            };
            if let Some(old) = start.replaced {
                tracing::debug!(%peer, file = start.file, "TFTP: client asked for another file; its running transfer is abandoned");
                old.cancel();
            }
            let entry = Registered {
                table: table.clone(),
                id: start.id,
            };
            let name = start.file.to_owned();
            let file = start.opened;
            let options = start.options;
            let iface = iface.clone();
            let shutdown = shutdown.clone();
            let obs = obs.clone();
            tokio::spawn(async move {
                let _entry = entry;
                let req = tftp::Request {
                    filename: name.as_bytes(),
                    options,
                };
                let end = transfer(&iface, local_ip, peer, &name, &req, file, clock, &obs, &stop).await;
                if end == End::Stopped && !shutdown.is_cancelled() {
                    tracing::debug!(%peer, file = %name, "TFTP transfer abandoned: the client asked for another file");
                    obs.metrics.tftp_done("abandoned", 0, 0);
                }
            });
        }
    }, packets);
    Ok(())
}

async fn reply_error(
    sock: &UdpSocket,
    peer: SocketAddrV4,
    code: ErrorCode,
    msg: &str,
    out: &mut [u8],
    obs: &Observers,
    file: &str,
) {
    let n = tftp::error_packet(code, msg, out);
    let _ = sock.send_to(out.get(..n).unwrap_or(&[]), peer).await;
    obs.metrics.tftp_done("refused", 0, 0);
    // iPXE probes for autoexec.ipxe on every boot; its absence is not a boot problem.
    if file != "autoexec.ipxe" {
        obs.timeline.record(
            Subject::Ip(*peer.ip()),
            stage::TFTP_ERROR,
            false,
            serde_json::json!({ "file": file, "error": msg }),
        );
    }
}

struct File(std::fs::File);

impl tftp::FileSource for File {
    type Error = std::io::Error;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        FileExt::read_at(&self.0, buf, offset)
    }
}

/// A transfer's own socket (its TID, RFC 1350 §4): an ephemeral port on the rack interface.
///
/// Unlike `netif::udp_socket`, without SO_REUSEADDR: Linux lets an ephemeral bind of a
/// reuse-address UDP socket return a port that another live reuse-address socket holds (two such
/// sockets never conflict). Two transfers then share a port, the kernel hands one client's ACKs
/// to the other transfer, which answers ERROR 5 — curl's "unknown transfer ID" (rc 72) in the
/// storms of issue 20.
fn transfer_socket(iface: &str, local_ip: Ipv4Addr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.bind_device(Some(iface.as_bytes()))?;
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(local_ip, 0)).into())?;
    UdpSocket::from_std(sock.into())
}

/// How a transfer task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Done, failed or timed out (already logged and counted).
    Ended,
    /// Its token was cancelled: shutdown, or the client asked for another file.
    Stopped,
}

fn now(clock: StdInstant) -> Instant {
    Instant::from_millis(u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX))
}

#[allow(clippy::too_many_arguments)]
async fn transfer(
    iface: &str,
    local_ip: Ipv4Addr,
    peer: SocketAddrV4,
    name: &str,
    req: &tftp::Request<'_>,
    (file, size): (std::fs::File, u64),
    clock: StdInstant,
    obs: &Observers,
    stop: &CancellationToken,
) -> End {
    let sock = match transfer_socket(iface, local_ip) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "TFTP: cannot open a transfer socket");
            obs.metrics.tftp_done("failed", 0, 0);
            return End::Ended;
        }
    };
    let started = StdInstant::now();
    let mut session = Session::new(now(clock), req, size, &SessionConfig::default());
    tracing::debug!(%peer, file = name, size, blksize = session.blksize(), window = session.window(), stage = "tftp_start", "TFTP transfer started");
    let who = Subject::Ip(*peer.ip());
    obs.timeline.record(
        who.clone(),
        stage::TFTP_START,
        true,
        serde_json::json!({ "file": name, "size": size, "blksize": session.blksize(), "window": session.window() }),
    );
    let mut src = File(file);
    let mut out = vec![0u8; session.max_datagram()];
    let mut inbuf = vec![0u8; 1024];
    loop {
        while let Some(n) = session.poll_transmit(now(clock), &mut src, &mut out) {
            if let Err(err) = sock.send_to(out.get(..n).unwrap_or(&[]), peer).await {
                tracing::warn!(%peer, error = %err, "TFTP: send failed");
            }
        }
        match session.state() {
            State::Running => {}
            State::Done { bytes, retransmits } => {
                let duration_ms = started.elapsed().as_millis() as u64;
                tracing::debug!(%peer, file = name, bytes, retransmits, duration_ms, stage = "tftp_end", "TFTP transfer complete");
                obs.metrics.tftp_done("complete", bytes, retransmits);
                obs.timeline.record(
                    who,
                    stage::TFTP_END,
                    true,
                    serde_json::json!({ "file": name, "bytes": bytes, "duration_ms": duration_ms, "retransmits": retransmits }),
                );
                return End::Ended;
            }
            State::Failed(why) => {
                tracing::warn!(%peer, file = name, reason = ?why, stage = "tftp_error", "TFTP transfer failed");
                obs.metrics.tftp_done("failed", 0, 0);
                obs.timeline.record(
                    who,
                    stage::TFTP_ERROR,
                    false,
                    serde_json::json!({ "file": name, "error": format!("{why:?}") }),
                );
                return End::Ended;
            }
            _ => return End::Ended,
        }
        let wait = session
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now(clock)))
            .unwrap_or(Duration::from_secs(30));
        tokio::select! {
            () = stop.cancelled() => return End::Stopped,
            () = tokio::time::sleep(wait.into()) => session.handle_timeout(now(clock)),
            r = sock.recv_from(&mut inbuf) => match r {
                Ok((n, SocketAddr::V4(from))) if from == peer => session.handle(now(clock), inbuf.get(..n).unwrap_or(&[])),
                Ok((_, from)) => {
                    // RFC 1350 §4: a packet from another TID gets ERROR 5, the transfer goes on.
                    let mut e = [0u8; 64];
                    let n = tftp::error_packet(ErrorCode::UnknownTid, "unknown transfer ID", &mut e);
                    let _ = sock.send_to(e.get(..n).unwrap_or(&[]), from).await;
                }
                Err(err) => tracing::debug!(error = %err, "TFTP: receive failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every live transfer socket has a port of its own (with SO_REUSEADDR, a few hundred
    /// ephemeral binds reliably hand out some port twice).
    #[tokio::test]
    async fn live_transfer_sockets_never_share_a_port() {
        let socks: Vec<UdpSocket> = (0..900)
            .map(|_| transfer_socket("lo", Ipv4Addr::LOCALHOST).unwrap())
            .collect();
        let mut ports: Vec<u16> = socks
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        ports.sort_unstable();
        let before = ports.len();
        ports.dedup();
        assert_eq!(ports.len(), before, "two live transfers share a port");
    }
}
