//! Network namespaces: the per-test namespace with its bridge, TAPs for VMs, client
//! namespaces on a veth pair, and commands run inside them.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{SERVER, sh};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a bridge at 192.0.2.1/24.
pub struct Netns {
    pub name: String,
    /// rackboot's address on the bridge.
    pub addr: String,
    taps: u32,
}

impl Netns {
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        Self::with_address(tag, &format!("{SERVER}/24"))
    }

    /// Like [`Netns::new`] with another bridge address, e.g. `198.18.0.1/16` for benchmarks
    /// that need a large pool.
    pub fn with_address(tag: &str, cidr: &str) -> anyhow::Result<Netns> {
        let name = format!(
            "rbt-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let addr = cidr.split('/').next().unwrap_or(SERVER).to_owned();
        let ns = Netns {
            name,
            addr,
            taps: 0,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["addr", "add", cidr, "dev", "br0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(ns)
    }

    /// Runs `ip …` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        sh(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Adds a TAP device on the bridge; returns its name.
    pub fn add_tap(&mut self) -> anyhow::Result<String> {
        let tap = format!("tap{}", self.taps);
        self.taps += 1;
        self.ip(&["tuntap", "add", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Adds a veth pair: one end on the bridge, the other (returned) left unconfigured in a
    /// second namespace `<name>-c` for client tools (udhcpc, perfdhcp).
    pub fn add_client_ns(&self) -> anyhow::Result<Netns> {
        let client = Netns {
            name: format!("{}-c", self.name),
            addr: self.addr.clone(),
            taps: 0,
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &client.name])
            .stderr(Stdio::null())
            .status();
        sh(Command::new("ip").args(["netns", "add", &client.name]))?;
        self.ip(&[
            "link",
            "add",
            "vb",
            "type",
            "veth",
            "peer",
            "name",
            "vc",
            "netns",
            &client.name,
        ])?;
        self.ip(&["link", "set", "vb", "master", "br0"])?;
        self.ip(&["link", "set", "vb", "up"])?;
        client.ip(&["link", "set", "lo", "up"])?;
        client.ip(&["link", "set", "vc", "up"])?;
        Ok(client)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `prog args` in `ns` with `env`, feeding `stdin`: (success, stdout then stderr).
pub fn run_in(
    ns: &Netns,
    prog: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    use std::io::Write;
    let mut child = ns
        .cmd(prog)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(s), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(s.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}
