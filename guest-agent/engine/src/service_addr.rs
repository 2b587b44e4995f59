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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_addresses_are_in_the_subnet() {
        assert!(in_subnet(DNS) && in_subnet(HOST_GATEWAY));
        assert!(!in_subnet(Ipv4Addr::new(192, 168, 64, 254)) && !in_subnet(Ipv4Addr::new(172, 17, 0, 1)));
    }
}
