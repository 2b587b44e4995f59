//! The VM's container firewall: one nftables table rendered from the
//! desired state (networks and their live endpoints) and applied as one
//! `nft -f -` transaction, so no packet ever meets half a ruleset.
//!
//! Rule shapes follow dockerd 28's nftables backend (moby's
//! `integration/network/bridge/nftablesdoc`): established traffic back in,
//! inter-container traffic on one bridge, nothing from elsewhere into a
//! bridge (other networks, the uplink: unpublished ports), egress only
//! from non-internal networks, masquerade of a subnet leaving its bridge,
//! and a raw-prerouting drop of packets addressed to a container that
//! arrive from anywhere but its bridge ("direct access"). Published ports
//! are not DNAT rules here: the host forwards them over vsock and the agent
//! dials the container from the VM itself (locally originated traffic).
//! The table is `inet` so one ruleset covers IPv4 and IPv6.

use std::fmt::Write;

use super::network::Network;

/// The table every rule lives in.
pub const TABLE: &str = "berth";

/// The mark of packets that belong to one of the agent's transparent
/// sockets (published-port connections made from the client's own address),
/// and the routing table such packets are looked up in
/// (`link::ensure_local_delivery`): a container's reply to a remote
/// client's address is delivered to the agent, not routed out of the VM.
pub const TRANSPARENT_MARK: u32 = 0x1be;
pub const LOCAL_DELIVERY_TABLE: u32 = 0x1be;

/// The whole `nft -f -` script: the table is created if missing, deleted
/// and defined anew in one transaction.
pub fn render(networks: &[Network]) -> String {
    let bridges: Vec<&Network> = networks.iter().filter(|n| n.driver == "bridge" && !n.bridge.is_empty()).collect();
    let mut out = String::new();
    let _ = writeln!(out, "table inet {TABLE}");
    let _ = writeln!(out, "delete table inet {TABLE}");
    let _ = writeln!(out, "table inet {TABLE} {{");

    let _ = writeln!(out, "\tchain forward {{");
    let _ = writeln!(out, "\t\ttype filter hook forward priority filter; policy accept;");
    let _ = writeln!(out, "\t\tct state established,related accept");
    for net in &bridges {
        let br = &net.bridge;
        let verdict = if net.icc() { "accept" } else { "drop" };
        let _ = writeln!(out, "\t\tiifname \"{br}\" oifname \"{br}\" {verdict}");
        let _ = writeln!(out, "\t\toifname \"{br}\" drop");
    }
    for net in &bridges {
        let verdict = if net.internal { "drop" } else { "accept" };
        let _ = writeln!(out, "\t\tiifname \"{}\" {verdict}", net.bridge);
    }
    let _ = writeln!(out, "\t}}");

    let _ = writeln!(out, "\tchain postrouting {{");
    let _ = writeln!(out, "\t\ttype nat hook postrouting priority srcnat; policy accept;");
    for net in bridges.iter().filter(|n| !n.internal && n.masquerade()) {
        for pool in &net.pools {
            let _ = writeln!(out, "\t\tip saddr {} oifname != \"{}\" masquerade", pool.subnet, net.bridge);
        }
    }
    let _ = writeln!(out, "\t}}");

    let _ = writeln!(out, "\tchain mangle-prerouting {{");
    let _ = writeln!(out, "\t\ttype filter hook prerouting priority mangle; policy accept;");
    let _ = writeln!(out, "\t\tsocket transparent 1 meta mark set {TRANSPARENT_MARK:#x}");
    let _ = writeln!(out, "\t}}");

    let _ = writeln!(out, "\tchain raw-prerouting {{");
    let _ = writeln!(out, "\t\ttype filter hook prerouting priority raw; policy accept;");
    for net in &bridges {
        for (_, _, endpoint) in net.active_endpoints() {
            let _ = writeln!(out, "\t\tip daddr {} iifname != \"{}\" drop", endpoint.ip, net.bridge);
        }
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// The nft program: the VM's initramfs has it at /usr/sbin/nft; a local
/// agent finds the host's.
pub(crate) fn nft_program() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft")
}

/// `nft -f -` (the script on its stdin, one transaction), run inside
/// `netns` when given: the container firewall's table and the DNS
/// servers' per-namespace tables alike. Who spawns and waits for it is the
/// caller's business: in the agent, its reaper (PID 1 reaps every child).
pub fn nft_command(netns: Option<std::os::fd::BorrowedFd<'_>>) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut command = std::process::Command::new(nft_program());
    command.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(fd) = netns.map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd)) {
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setns(2), which is async-signal-safe; `fd` is open in the
        // child (the caller holds it until the spawn has returned).
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::net::network::fixtures::{bridge_network, live_attachment};

    fn network(name: &str, bridge: &str, subnet: &str) -> Network {
        bridge_network(name, bridge, subnet)
    }

    fn with_endpoint(mut net: Network, container: &str, ip: Ipv4Addr) -> Network {
        net.attachments.insert(container.into(), live_attachment(container, ip));
        net
    }

    /// Compares with the golden file; `BERTH_BLESS=1` rewrites it.
    fn golden(name: &str, rendered: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/net/testdata").join(name);
        if std::env::var_os("BERTH_BLESS").is_some() {
            std::fs::write(&path, rendered).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(rendered, expected, "{} differs (BERTH_BLESS=1 to accept)", path.display());
    }

    #[test]
    fn empty_state_is_an_empty_table() {
        golden("empty.nft", &render(&[]));
    }

    #[test]
    fn default_bridge_and_user_networks() {
        let bridge = with_endpoint(network("bridge", "docker0", "172.17.0.0/16"), "a", Ipv4Addr::new(172, 17, 0, 2));
        let mut internal = network("backend", "br-backend0000", "172.19.0.0/16");
        internal.internal = true;
        let internal = with_endpoint(internal, "b", Ipv4Addr::new(172, 19, 0, 2));
        let mut quiet = network("quiet", "br-quiet000000", "172.20.0.0/16");
        quiet.options.insert("com.docker.network.bridge.enable_icc".into(), "false".into());
        quiet.options.insert("com.docker.network.bridge.enable_ip_masquerade".into(), "false".into());
        let mut host = network("host", "", "172.21.0.0/16");
        host.driver = "host".into();
        golden("networks.nft", &render(&[bridge, internal, quiet, host]));
    }

    /// The rendered script is valid nftables, checked by `nft -c` when the
    /// machine has nft (it parses and resolves without touching the kernel
    /// ruleset's state).
    #[test]
    fn nft_accepts_the_script() {
        let Ok(nft) = which_nft() else { return };
        let bridge = with_endpoint(network("bridge", "docker0", "172.17.0.0/16"), "a", Ipv4Addr::new(172, 17, 0, 2));
        let script = render(&[bridge]);
        let mut child = std::process::Command::new(nft)
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `nft -c` needs CAP_NET_ADMIN; without it there is nothing to learn.
        if stderr.contains("Operation not permitted") {
            return;
        }
        assert!(out.status.success(), "nft -c refused the script: {stderr}\n{script}");
    }

    fn which_nft() -> Result<&'static str, ()> {
        ["/usr/sbin/nft", "/sbin/nft"].into_iter().find(|p| std::path::Path::new(p).exists()).ok_or(())
    }
}
