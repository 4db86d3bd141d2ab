//! `rackboot appliance verify-bundle | update | status | boot-check`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::bundle;
use super::install::{self, Slot, Target};
pub use super::schedule::Reboot;
use super::state::{self, Failure, Pending, SlotInfo, State};
use super::{efi, system};
use crate::client::OutputFormat;
use crate::output::{print_json, print_table};

#[derive(Debug, Subcommand)]
#[command(after_help = "\
An update bundle (`rackboot-update.rbu`, written by `cargo xtask image appliance`) holds the \
root slot image and one signed UKI per slot, listed with their sizes and SHA-256s in a \
manifest signed with the release's Ed25519 update key. The appliance trusts the keys in \
/etc/rackboot/update-keys/*.pub of its running image. `update` writes the slot that is not \
running and boots it once at the next reset (EFI BootNext); the slot becomes the default only \
after rackboot came up healthy on it, otherwise the next reset boots the old slot again. \
See docs/appliance.md.")]
pub enum ApplianceCommand {
    /// Check an update bundle and print what it holds. Writes nothing: verifies the manifest's
    /// signature against the trusted update keys, the board, and every payload's size and
    /// SHA-256.
    VerifyBundle(VerifyArgs),
    /// Verify a bundle, write it into the slot that is not running, and make the next boot try
    /// it once. Must run as root on the appliance (it writes the disk and EFI variables).
    Update(UpdateArgs),
    /// The booted slot, what each slot holds, and the pending or failed update.
    Status(StatusArgs),
    /// Run once per boot by the appliance's bootstrap after rackboot's health check: marks a
    /// trial slot good (first in BootOrder), or records why it failed and reboots into the
    /// previous slot.
    #[command(hide = true)]
    BootCheck(BootCheckArgs),
    /// Run by the appliance's init as root: installs bundles that `rackboot serve` received
    /// through `PUT /rackboot/v1/appliance/update` (it verifies them itself).
    #[command(hide = true)]
    Updater(UpdaterArgs),
}

#[derive(Debug, Args)]
pub struct UpdaterArgs {
    /// The Unix socket `rackboot serve` asks on.
    #[arg(long, default_value = super::daemon::SOCKET)]
    pub socket: PathBuf,
    /// The group allowed to use the socket (the one `rackboot serve` runs as).
    #[arg(long, default_value = "rackboot")]
    pub group: String,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub system: SystemArgs,
}

#[derive(Clone, Debug, Args)]
pub struct TrustArgs {
    /// Directory of trusted Ed25519 update keys (PEM `*.pub`) [default: /etc/rackboot/update-keys].
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// The board to accept [default: the contents of /etc/rackboot/board].
    #[arg(long)]
    pub board: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// When to reboot into the new slot: `now`; `never` (the next reboot, whenever it comes,
    /// tries it); or `at HH:MM` (the next such time, UTC) or `at <RFC 3339 time>`, when the
    /// appliance's updater reboots it (the time is kept with the pending update).
    #[arg(long, default_value = "never", value_name = "now|never|at TIME")]
    pub reboot: Reboot,
    /// Install a bundle older than the running version. Refused without it: an older signed
    /// bundle may carry what a later release fixed, and anyone holding one could otherwise
    /// roll the appliance back to it.
    #[arg(long)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub system: SystemArgs,
}

/// Where the appliance's pieces are; the defaults are the appliance's, the flags let the same
/// code run against a disk image and plain directories (tests).
#[derive(Debug, Args)]
pub struct SystemArgs {
    /// rackboot's data dir (the updater's state lives in its `update/`).
    #[arg(long, default_value = "/data/rackboot")]
    pub data_dir: PathBuf,
    /// The kernel command line naming the booted slot.
    #[arg(long, default_value = "/proc/cmdline", hide = true)]
    pub cmdline: PathBuf,
    /// The whole disk holding the slots [default: the disk of the booted root slot].
    #[arg(long, hide = true)]
    pub disk: Option<PathBuf>,
    /// The new slot's partition [default: the partition named root-<slot> on the disk].
    #[arg(long, hide = true)]
    pub slot_device: Option<PathBuf>,
    /// The ESP's mount point (remounted read-write while the UKI is written).
    #[arg(long, default_value = "/boot", hide = true)]
    pub esp: PathBuf,
    /// efivarfs.
    #[arg(long, default_value = "/sys/firmware/efi/efivars", hide = true)]
    pub efivars: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, default_value = "/data/rackboot")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "/proc/cmdline", hide = true)]
    pub cmdline: PathBuf,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct BootCheckArgs {
    /// rackboot failed its health check on this boot, for this reason.
    #[arg(long)]
    pub failed: Option<String>,
    /// Do not reboot after recording a failed trial (tests).
    #[arg(long, hide = true)]
    pub no_reboot: bool,
    #[command(flatten)]
    pub system: SystemArgs,
}

pub async fn run(cmd: ApplianceCommand) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || match cmd {
        ApplianceCommand::VerifyBundle(args) => verify(args),
        ApplianceCommand::Update(args) => update(args),
        ApplianceCommand::Status(args) => status(args),
        ApplianceCommand::BootCheck(args) => boot_check(args),
        ApplianceCommand::Updater(args) => {
            super::daemon::run(&args.socket, &args.group, &args.trust, &args.system)
        }
    })
    .await?
}

fn open_verified(path: &Path, trust: TrustArgs) -> anyhow::Result<bundle::Bundle> {
    let board = super::board(trust.board)?;
    let dir = super::key_dir(trust.keys);
    let keys = bundle::trusted_keys(&dir)?;
    let refused =
        |e: bundle::Refused| anyhow::anyhow!("{}: refused, nothing written: {e}", path.display());
    let b = bundle::open(path, &keys, &dir, &board).map_err(refused)?;
    b.check_payloads(|_, _| {}).map_err(refused)?;
    Ok(b)
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let b = open_verified(&args.bundle, args.trust)?;
    let m = &b.manifest;
    match args.output {
        OutputFormat::Json => print_json(&json!({
            "ok": true,
            "signed_by": b.signed_by,
            "manifest": m,
        })),
        OutputFormat::Table => {
            crate::outln!(
                "bundle {}: signature ok (key {}), board {}, every payload matches",
                args.bundle.display(),
                b.signed_by,
                m.board
            );
            crate::outln!("version   {}", m.version);
            crate::outln!("roothash  {}", m.roothash);
            let rows: Vec<Vec<String>> = m
                .files
                .iter()
                .map(|f| vec![f.name.clone(), f.size.to_string(), f.sha256.clone()])
                .collect();
            print_table(&["FILE", "BYTES", "SHA256"], &rows);
        }
    }
    Ok(())
}

fn update(args: UpdateArgs) -> anyhow::Result<()> {
    apply(
        &args.bundle,
        args.trust,
        &args.system,
        args.reboot,
        args.allow_downgrade,
        &mut |line: &str| eprintln!("{line}"),
    )?;
    match args.reboot {
        Reboot::Now => {
            eprintln!("rebooting now");
            system::reboot()?;
        }
        Reboot::At(_) => eprintln!(
            "the appliance's updater reboots into it {} (`rackboot appliance status` shows it)",
            args.reboot
        ),
        Reboot::Never => eprintln!("it is tried at the next reboot"),
    }
    Ok(())
}

/// What [`apply`] installed.
#[derive(Debug, serde::Serialize)]
pub struct Applied {
    pub slot: Slot,
    pub version: String,
    pub signed_by: String,
}

/// Verifies `bundle` in full, writes it into the slot that is not running and makes the next
/// boot try it once. `say` gets one line per step (and progress every 10 %).
pub fn apply(
    bundle_path: &Path,
    trust: TrustArgs,
    sys: &SystemArgs,
    reboot: Reboot,
    allow_downgrade: bool,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<Applied> {
    let booted = system::booted_slot(&sys.cmdline)?;
    let slot = booted.other();
    // Verified in full before anything is written or any state changes.
    let b = open_verified(bundle_path, trust)?;
    let version = b.manifest.version.clone();
    if !allow_downgrade {
        refuse_downgrade(&version, crate::version::VERSION).map_err(|e| {
            anyhow::anyhow!("{}: refused, nothing written: {e}", bundle_path.display())
        })?;
    }
    say(&format!(
        "bundle verified: {version} (key {}); writing slot {} (running: slot {})",
        b.signed_by,
        slot.name(),
        booted.name()
    ));
    let disk = system::disk(sys)?;
    let parts = efi::read_gpt(&mut std::fs::File::open(&disk)?)?;
    let find = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{}: no partition named {name}", disk.display()))
    };
    let esp_part = find("esp")?;
    let slot_part = find(&format!("root-{}", slot.name()))?;
    let root_device = match &sys.slot_device {
        Some(d) => d.clone(),
        None => system::partition_device(&disk, slot_part.number)?,
    };

    let mut st = State::load(&sys.data_dir)?;
    st.pending = Some(Pending {
        slot,
        version: version.clone(),
        stage: "writing".into(),
        at: state::now(),
        failed: None,
        reboot_at: None,
    });
    st.set_slot(
        slot,
        SlotInfo {
            version: version.clone(),
            state: "writing".into(),
            at: state::now(),
        },
    );
    st.save(&sys.data_dir)?;

    let target = Target {
        slot,
        root_device,
        esp: sys.esp.clone(),
    };
    let mut shown = 0;
    let written = system::with_esp_writable(&sys.esp, || {
        install::install(&b, &target, |done, total| {
            let pct = done * 100 / total.max(1);
            if pct >= shown + 10 || done == total {
                shown = pct;
                say(&format!("writing slot {}: {pct}%", slot.name()));
            }
        })
        .map_err(anyhow::Error::from)
    });
    if let Err(e) = written {
        st.pending = None;
        st.set_slot(
            slot,
            SlotInfo {
                version: version.clone(),
                state: "failed".into(),
                at: state::now(),
            },
        );
        st.last_failure = Some(Failure {
            slot,
            version,
            reason: format!("writing the slot: {e}"),
            at: state::now(),
        });
        st.save(&sys.data_dir)?;
        anyhow::bail!(
            "update failed while writing slot {}: {e}; slot {} keeps running",
            slot.name(),
            booted.name()
        );
    }

    // Boot it once: a load option for the slot's UKI, then BootNext.
    let vars = efi::Vars(sys.efivars.clone());
    let n = efi::entry_number(slot);
    let file = format!(r"\EFI\rackboot\{}", slot.uki());
    vars.set_boot_entry(
        n,
        &efi::load_option(&format!("rackboot slot {}", slot.name()), &esp_part, &file),
    )?;
    vars.set_boot_next(n)?;
    st.pending = Some(Pending {
        slot,
        version: version.clone(),
        stage: "trial".into(),
        at: state::now(),
        failed: None,
        reboot_at: reboot.at(),
    });
    st.set_slot(
        slot,
        SlotInfo {
            version: version.clone(),
            state: "installed".into(),
            at: state::now(),
        },
    );
    st.save(&sys.data_dir)?;
    say(&format!(
        "slot {} holds {version}; the next boot tries it once (Boot{n:04X}, BootNext), and it becomes the default after rackboot comes up healthy on it",
        slot.name()
    ));
    Ok(Applied {
        slot,
        version,
        signed_by: b.signed_by.clone(),
    })
}

/// `major.minor.patch` at the start of a version string (`0.2.0 (commit …)`, `0.2.0-rc1`).
fn release_of(version: &str) -> Option<(u64, u64, u64)> {
    let first = version.split_whitespace().next()?;
    let core = first.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let r = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(r)
}

/// The rollback floor: a bundle older than the running release is refused (the same release is
/// not: reinstalling, or a rebuild of it, is allowed).
pub fn refuse_downgrade(bundle: &str, running: &str) -> anyhow::Result<()> {
    let (Some(new), Some(old)) = (release_of(bundle), release_of(running)) else {
        anyhow::bail!(
            "cannot compare the bundle's version {bundle:?} with the running {running:?}; \
             --allow-downgrade (API: allow_downgrade=true) installs it anyway"
        );
    };
    anyhow::ensure!(
        new >= old,
        "the bundle holds {bundle}, older than the running {running}: an older release may carry \
         what a later one fixed; --allow-downgrade (API: allow_downgrade=true) installs it anyway"
    );
    Ok(())
}

/// `rackboot appliance status -o json` and `GET /rackboot/v1/appliance`.
pub fn status_view(data_dir: &Path, cmdline: &Path) -> anyhow::Result<serde_json::Value> {
    let booted = system::booted_slot(cmdline).ok();
    let st = State::load(data_dir)?;
    let running = crate::version::LONG.to_owned();
    let describe = |s: Slot| -> serde_json::Value {
        let (version, state) = match (st.slot(s), booted) {
            (Some(i), _) => (i.version.clone(), i.state.clone()),
            (None, Some(b)) if b == s => (running.clone(), "flashed".into()),
            (None, _) if s == Slot::A => ("as flashed".into(), "flashed".into()),
            (None, _) => ("(empty)".into(), "empty".into()),
        };
        json!({ "version": version, "state": state })
    };
    Ok(json!({
        "booted_slot": booted,
        "running_version": running,
        "slots": { "a": describe(Slot::A), "b": describe(Slot::B) },
        "pending": st.pending,
        "last_failure": st.last_failure,
        "keys": crate::seal::keyfile::status(data_dir).summary(),
    }))
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let v = status_view(&args.data_dir, &args.cmdline)?;
    if args.output == OutputFormat::Json {
        print_json(&v);
        return Ok(());
    }
    let at = |v: &serde_json::Value, path: &[&str]| -> String {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let booted = v.get("booted_slot").and_then(serde_json::Value::as_str);
    crate::outln!(
        "booted slot: {}",
        booted.unwrap_or("unknown (not booted from a slot)")
    );
    crate::outln!("running:     rackboot {}", at(&v, &["running_version"]));
    let rows: Vec<Vec<String>> = ["a", "b"]
        .into_iter()
        .map(|s| {
            let mark = if Some(s) == booted { "*" } else { "" };
            vec![
                format!("{s}{mark}"),
                at(&v, &["slots", s, "state"]),
                at(&v, &["slots", s, "version"]),
            ]
        })
        .collect();
    print_table(&["SLOT", "STATE", "VERSION"], &rows);
    if v.get("pending").is_none_or(serde_json::Value::is_null) {
        crate::outln!("pending:     none");
    } else {
        crate::outln!(
            "pending:     slot {} {} ({}, since {})",
            at(&v, &["pending", "slot"]),
            at(&v, &["pending", "version"]),
            at(&v, &["pending", "stage"]),
            at(&v, &["pending", "at"])
        );
        let when = at(&v, &["pending", "reboot_at"]);
        if !when.is_empty() {
            crate::outln!("reboot:      scheduled at {when} (by the appliance's updater)");
        }
    }
    if v.get("last_failure").is_some_and(|f| !f.is_null()) {
        crate::outln!(
            "last failure: slot {} {} at {}: {}",
            at(&v, &["last_failure", "slot"]),
            at(&v, &["last_failure", "version"]),
            at(&v, &["last_failure", "at"]),
            at(&v, &["last_failure", "reason"])
        );
    }
    crate::outln!("keys:        {}", at(&v, &["keys"]));
    Ok(())
}

pub(super) fn boot_check(args: BootCheckArgs) -> anyhow::Result<()> {
    let sys = &args.system;
    let booted = system::booted_slot(&sys.cmdline)?;
    let mut st = State::load(&sys.data_dir)?;
    // Consumed by every boot check, so the boot scripts' one reset (bootstrap) is re-armed.
    let shell_note = State::take_shell_note(&sys.data_dir);
    let Some(p) = st.pending.clone().filter(|p| p.stage == "trial") else {
        return Ok(());
    };
    if p.slot != booted {
        // The trial slot was not the one that came up: its boot failed before this check
        // could run (firmware, kernel, verity, a rackboot that cannot run, or a reset during
        // the trial).
        st.pending = None;
        st.set_slot(
            p.slot,
            SlotInfo {
                version: p.version.clone(),
                state: "failed".into(),
                at: state::now(),
            },
        );
        st.last_failure = Some(Failure {
            slot: p.slot,
            version: p.version,
            reason: p.failed.clone().or(shell_note).unwrap_or_else(|| {
                    format!(
                        "the trial boot of slot {} never reached its health check; slot {} booted again",
                        p.slot.name(),
                        booted.name()
                    )
                }),
            at: state::now(),
        });
        st.save(&sys.data_dir)?;
        eprintln!(
            "update to slot {} failed; running slot {}",
            p.slot.name(),
            booted.name()
        );
        return Ok(());
    }
    if let Some(reason) = args.failed {
        // Unhealthy on trial: say why, and reset; BootNext is spent, so BootOrder brings the
        // previous slot back, whose boot-check turns this into the update's failure.
        let why = format!("health check failed on slot {}: {reason}", p.slot.name());
        st.pending = Some(Pending {
            failed: Some(why.clone()),
            ..p.clone()
        });
        st.last_failure = Some(Failure {
            slot: p.slot,
            version: p.version.clone(),
            reason: why,
            at: state::now(),
        });
        st.save(&sys.data_dir)?;
        eprintln!(
            "slot {} failed its health check ({reason}); rebooting into the previous slot",
            p.slot.name()
        );
        if !args.no_reboot {
            system::reboot()?;
        }
        return Ok(());
    }
    // Healthy: first in BootOrder.
    let vars = efi::Vars(sys.efivars.clone());
    let n = efi::entry_number(booted);
    let mut order = vars.boot_order()?;
    order.retain(|&e| e != n);
    order.insert(0, n);
    vars.set_boot_order(&order)?;
    // The trial's store migration (if it made one) stands: the copy taken before it goes.
    crate::store::trial::confirm(&sys.data_dir)?;
    st.pending = None;
    st.set_slot(
        booted,
        SlotInfo {
            version: p.version.clone(),
            state: "good".into(),
            at: state::now(),
        },
    );
    st.save(&sys.data_dir)?;
    eprintln!(
        "slot {} ({}) is healthy: it boots by default now",
        booted.name(),
        p.version
    );
    // The removable-media path follows the good slot (its old target may be the slot just
    // rewritten). Not fatal: the NVRAM entries boot the slot either way.
    if let Err(e) = system::with_esp_writable(&sys.esp, || {
        install::set_fallback(&sys.esp, booted).map_err(anyhow::Error::from)
    }) {
        eprintln!(
            "warning: \\{} still boots what it booted before: {e:#}",
            install::FALLBACK.replace('/', "\\")
        );
    }
    Ok(())
}
