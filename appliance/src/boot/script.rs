//! iPXE boot scripts in BSS's shape.
//!
//! UEFI kernels find the initrd only by name, so the kernel line carries `initrd=initrd` and the
//! initrd is loaded `--name initrd`. Identity (`xname`, `nid`, `BOOTIF`) and the cloud-init seed
//! (`ds=nocloud;s=…`) are injected unless `params` already sets them. The retry chain is bounded:
//! BSS's is not, and a node that can never boot should stop hammering the server and reboot.

use std::fmt::Write;

/// What a node's script is built from.
pub struct NodeScript<'a> {
    pub base: &'a str,
    pub mac: Option<&'a str>,
    pub xname: Option<&'a str>,
    pub nid: Option<i64>,
    pub kernel: &'a str,
    pub initrd: &'a str,
    pub params: &'a str,
    /// Appended after everything else (machine identity: `rackboot.join=…`).
    pub extra: &'a str,
    pub retry: u32,
    pub max_retries: u32,
}

/// The script for a known node.
pub fn node(s: &NodeScript<'_>) -> String {
    let mut params = String::new();
    let has = |key: &str| {
        s.params
            .split_whitespace()
            .any(|p| p == key || p.starts_with(&format!("{key}=")))
    };
    if !s.initrd.is_empty() && !has("initrd") {
        params.push_str("initrd=initrd ");
    }
    params.push_str(s.params.trim());
    let mut add = |key: &str, value: &str| {
        if !has(key) {
            let _ = write!(params, " {key}={value}");
        }
    };
    if let Some(x) = s.xname {
        add("xname", x);
    }
    if let Some(n) = s.nid {
        add("nid", &n.to_string());
    }
    if let Some(mac) = s.mac {
        add("BOOTIF", &format!("01-{}", mac.replace(':', "-")));
    }
    if let Some(x) = s.xname {
        add("ds", &format!("nocloud;s={}/cloud-init/{x}/", s.base));
    }
    if !s.extra.trim().is_empty() {
        params.push(' ');
        params.push_str(s.extra.trim());
    }
    let mut out = String::from("#!ipxe\n");
    let _ = writeln!(
        out,
        "kernel --name kernel {} {} || goto boot_retry",
        s.kernel,
        params.trim()
    );
    if !s.initrd.is_empty() {
        let _ = writeln!(out, "initrd --name initrd {} || goto boot_retry", s.initrd);
    }
    out.push_str("boot || goto boot_retry\n:boot_retry\n");
    retry_tail(
        &mut out,
        s.base,
        s.mac,
        s.xname,
        s.retry,
        s.max_retries,
        30,
        "",
    );
    out
}

/// The script for a node rackboot has no boot parameters for: wait and ask again (with
/// `${buildarch}` the first time, so per-architecture `Unknown-<arch>` parameters can apply),
/// never a dead end, never an endless loop.
pub fn unknown(
    base: &str,
    mac: Option<&str>,
    name: Option<&str>,
    retry: u32,
    max_retries: u32,
    ts: u64,
) -> String {
    let who = mac.or(name).unwrap_or("this node");
    let mut out = String::from("#!ipxe\n");
    let _ = writeln!(
        out,
        "echo rackboot: no boot parameters for {who} yet; waiting for it to be registered"
    );
    retry_tail(
        &mut out,
        base,
        mac,
        name,
        retry,
        max_retries,
        10,
        &format!("&arch=${{buildarch}}&ts={ts}"),
    );
    out
}

#[allow(clippy::too_many_arguments)]
fn retry_tail(
    out: &mut String,
    base: &str,
    mac: Option<&str>,
    name: Option<&str>,
    retry: u32,
    max: u32,
    sleep: u32,
    extra: &str,
) {
    if retry >= max {
        let _ = writeln!(
            out,
            "echo rackboot: boot failed after {retry} retries; rebooting to start over"
        );
        let _ = writeln!(out, "sleep {sleep}");
        out.push_str("reboot\n");
        return;
    }
    let selector = match (mac, name) {
        (Some(m), _) => format!("mac={m}"),
        (None, Some(n)) => format!("name={n}"),
        (None, None) => String::new(),
    };
    let _ = writeln!(out, "sleep {sleep}");
    let _ = writeln!(
        out,
        "chain {base}/boot/v1/bootscript?{selector}&retry={}{extra}",
        retry + 1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(retry: u32, params: &'static str) -> NodeScript<'static> {
        NodeScript {
            base: "http://192.0.2.1",
            mac: Some("52:54:00:aa:00:01"),
            xname: Some("x1000c0s0b0n0"),
            nid: Some(1),
            kernel: "http://192.0.2.1/images/vmlinuz",
            initrd: "http://192.0.2.1/images/initrd.img",
            params,
            extra: "",
            retry,
            max_retries: 3,
        }
    }

    #[test]
    fn bss_shape() {
        assert_eq!(
            node(&base(0, "console=ttyS0 quiet")),
            "#!ipxe\n\
             kernel --name kernel http://192.0.2.1/images/vmlinuz initrd=initrd console=ttyS0 quiet xname=x1000c0s0b0n0 nid=1 BOOTIF=01-52-54-00-aa-00-01 ds=nocloud;s=http://192.0.2.1/cloud-init/x1000c0s0b0n0/ || goto boot_retry\n\
             initrd --name initrd http://192.0.2.1/images/initrd.img || goto boot_retry\n\
             boot || goto boot_retry\n\
             :boot_retry\n\
             sleep 30\n\
             chain http://192.0.2.1/boot/v1/bootscript?mac=52:54:00:aa:00:01&retry=1\n"
        );
    }

    #[test]
    fn keys_already_set_are_not_injected_and_retries_end() {
        let s = node(&base(1, "xname=custom nid=9 ds=none"));
        assert!(
            s.contains("xname=custom nid=9 ds=none BOOTIF=01-52-54-00-aa-00-01 ||"),
            "{s}"
        );
        assert!(s.contains("retry=2"));
        let last = node(&base(3, ""));
        assert!(
            last.ends_with("reboot\n") && !last.contains("chain"),
            "{last}"
        );
    }

    #[test]
    fn unknown_node_chains_with_buildarch() {
        let s = unknown(
            "http://192.0.2.1",
            Some("52:54:00:aa:00:09"),
            None,
            0,
            3,
            42,
        );
        assert!(s.contains("chain http://192.0.2.1/boot/v1/bootscript?mac=52:54:00:aa:00:09&retry=1&arch=${buildarch}&ts=42"), "{s}");
        assert!(unknown("http://b", None, Some("x1"), 3, 3, 1).ends_with("reboot\n"));
    }
}
