//! Where the passphrase or age keys come from: a file, `RACKBOOT_BACKUP_PASSPHRASE`, or a
//! prompt on the terminal. Never the command line (it is visible in `ps` to every user).

use std::io::{BufRead, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::SecretString;
use anyhow::{Context, bail};

use super::archive::{Seal, Unseal};

/// The environment variable holding the passphrase.
pub const PASSPHRASE_ENV: &str = "RACKBOOT_BACKUP_PASSPHRASE";

/// The first line of `path`, without its line ending.
pub fn passphrase_from_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        bail!("the passphrase file {} is empty", path.display());
    }
    Ok(SecretString::from(line.to_owned()))
}

/// From `--passphrase-file`, else the environment, else the terminal (asked twice when
/// `confirm`, so a typo does not make a backup nobody can open).
pub fn passphrase(file: Option<&Path>, confirm: bool) -> anyhow::Result<SecretString> {
    if let Some(f) = file {
        return passphrase_from_file(f);
    }
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        if p.is_empty() {
            bail!("{PASSPHRASE_ENV} is set but empty");
        }
        return Ok(SecretString::from(p));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!(
            "no passphrase: pass --passphrase-file FILE, set {PASSPHRASE_ENV}, run on a terminal, \
             or use age keys (--recipient to create, --identity to read)"
        );
    }
    let first = prompt("Backup passphrase: ")?;
    if first.is_empty() {
        bail!("an empty passphrase protects nothing");
    }
    if confirm && prompt("Again: ")? != first {
        bail!("the passphrases differ");
    }
    Ok(SecretString::from(first))
}

/// Reads a line from the controlling terminal with echo off.
fn prompt(msg: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("cannot open the terminal to ask for the passphrase")?;
    let old = tcgetattr(&tty).context("the terminal")?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("the terminal")?;
    let read = (|| -> std::io::Result<String> {
        (&tty).write_all(msg.as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    })();
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &old);
    Ok(read?)
}

/// How to encrypt: to `recipients` (age X25519 public keys, `age1…`) if any, else a passphrase.
pub fn seal(recipients: &[String], passphrase_file: Option<&Path>) -> anyhow::Result<Seal> {
    if !recipients.is_empty() {
        if passphrase_file.is_some() {
            bail!("give either --recipient or a passphrase, not both");
        }
        let parsed = recipients
            .iter()
            .map(|r| {
                age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                    anyhow::anyhow!("{r:?} is not an age X25519 recipient (age1…): {e}")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(Seal::Recipients(parsed));
    }
    Ok(Seal::Passphrase(passphrase(passphrase_file, true)?))
}

/// How to decrypt: with the identities in `identity_file` (`AGE-SECRET-KEY-1…` lines, as
/// `age-keygen` writes them), else a passphrase.
pub fn unseal(
    identity_file: Option<&Path>,
    passphrase_file: Option<&Path>,
) -> anyhow::Result<Unseal> {
    if let Some(path) = identity_file {
        if passphrase_file.is_some() {
            bail!("give either --identity or a passphrase, not both");
        }
        return Ok(Unseal::Identities(identities_from_file(path)?));
    }
    Ok(Unseal::Passphrase(passphrase(passphrase_file, false)?))
}

/// Parses an age identity file: `AGE-SECRET-KEY-1…` lines, `#` comments, blank lines.
pub fn identities_from_file(path: &Path) -> anyhow::Result<Vec<age::x25519::Identity>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the identity file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = age::x25519::Identity::from_str(line).map_err(|_| {
            anyhow::anyhow!(
                "{} line {}: not an age X25519 identity (AGE-SECRET-KEY-1…)",
                path.display(),
                i + 1
            )
        })?;
        out.push(id);
    }
    if out.is_empty() {
        bail!("{} holds no age identity", path.display());
    }
    Ok(out)
}
