//! The VM's service addresses, Docker Desktop's: a /24 no container network
//! may take (IPAM skips it), on a dummy interface in the VM. The agent
//! answers DNS on [`DNS`]; [`HOST_GATEWAY`] is host.docker.internal,
//! whose every TCP port leads to the same port on the host's loopback (over
//! vsock, whatever the VM's uplink is). `--add-host NAME:host-gateway`
//! means [`HOST_GATEWAY`].

use std::net::Ipv4Addr;

/// The service subnet (192.168.65.0/24): keep container networks off it.
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(192, 168, 65, 0);
pub const SUBNET_PREFIX: u8 = 24;

/// The VM's resolver: the VM's own /etc/resolv.conf and default-bridge
/// containers point here; it forwards to the host's resolver.
pub const DNS: Ipv4Addr = Ipv4Addr::new(192, 168, 65, 7);

/// host.docker.internal and gateway.docker.internal (and `host-gateway`).
pub const HOST_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 65, 254);

/// The names that mean the host, answered by every resolver the engine runs.
pub const HOST_NAMES: [&str; 2] = ["host.docker.internal", "gateway.docker.internal"];

/// The dummy interface that holds the service addresses in the VM.
pub const INTERFACE: &str = "berth-svc";

/// Whether `address` is in the service subnet.
pub fn in_subnet(address: Ipv4Addr) -> bool {
    u32::from(address) >> (32 - SUBNET_PREFIX) == u32::from(SUBNET) >> (32 - SUBNET_PREFIX)
}

/// Where the agent's host.docker.internal listener sits: every other TCP
/// port of [`HOST_GATEWAY`] is DNATed to it ([`forwarding_rules`]), and the
/// listener reads the port asked from the connection's original
/// destination. A connection to this port itself is not NATed and means
/// this port, so no port of the host is out of reach.
pub const FORWARDER_PORT: u16 = 1;

/// The nft table of the service addresses in the VM's own namespace.
pub const TABLE: &str = "berth-services";

/// TCP to any port of [`HOST_GATEWAY`], from containers (prerouting: they
/// come through a bridge) and from the VM itself and `--network host`
/// containers (output), goes to the forwarder. The script replaces the
/// table whole.
pub fn forwarding_rules() -> String {
    let (gateway, port) = (HOST_GATEWAY, FORWARDER_PORT);
    let rule = format!("ip daddr {gateway} tcp dport != {port} dnat to {gateway}:{port}");
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\t{rule}\n\t}}\n\
         \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n\t\t{rule}\n\t}}\n}}\n"
    )
}

/// Puts the service addresses on a dummy interface of the current network
/// namespace (the VM's; never run on a host). Idempotent.
pub async fn configure_interface() -> std::io::Result<()> {
    use futures_util::TryStreamExt;
    let netlink = |err: rtnetlink::Error| std::io::Error::other(format!("netlink: {err}"));
    let exists =
        |err: &rtnetlink::Error| matches!(err, rtnetlink::Error::NetlinkError(e) if e.raw_code() == -libc::EEXIST);
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let connection = tokio::spawn(connection);
    let result = async {
        match handle.link().add(rtnetlink::LinkDummy::new(INTERFACE).up().build()).execute().await {
            Err(err) if !exists(&err) => return Err(netlink(err)),
            _ => {}
        }
        let link = handle
            .link()
            .get()
            .match_name(INTERFACE.to_string())
            .execute()
            .try_next()
            .await
            .map_err(netlink)?
            .ok_or_else(|| std::io::Error::other(format!("{INTERFACE} vanished")))?;
        for address in [DNS, HOST_GATEWAY] {
            match handle.address().add(link.header.index, address.into(), 32).execute().await {
                Err(err) if !exists(&err) => return Err(netlink(err)),
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_addresses_are_in_the_subnet() {
        assert!(in_subnet(DNS) && in_subnet(HOST_GATEWAY));
        assert!(!in_subnet(Ipv4Addr::new(192, 168, 64, 254)) && !in_subnet(Ipv4Addr::new(172, 17, 0, 1)));
    }

    #[test]
    fn every_port_of_the_host_gateway_goes_to_the_forwarder() {
        let rules = forwarding_rules();
        let rule = "ip daddr 192.168.65.254 tcp dport != 1 dnat to 192.168.65.254:1";
        assert_eq!(rules.matches(rule).count(), 2, "{rules}");
        assert!(rules.contains("hook prerouting") && rules.contains("hook output"), "{rules}");
    }
}
