//! Address management as dockerd's default IPAM does it: the pools new
//! networks are carved from, the user's IPAM config checked and echoed as
//! given, and addresses handed to endpoints.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// dockerd's default local address pools (`libnetwork/ipamutils`):
/// 172.17-172.31 as /16s, then 192.168.0.0/16 as /20s.
pub fn default_pools() -> Vec<Ipv4Net> {
    let mut pools: Vec<Ipv4Net> =
        (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid prefix")).collect();
    let big = Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("valid prefix");
    pools.extend(big.subnets(20).expect("a /20 fits a /16"));
    pools
}

/// One IPv4 subnet of a network, with what the allocator must keep clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Where dynamic addresses come from (`--ip-range`), else the subnet.
    #[serde(default)]
    pub ip_range: Option<Ipv4Net>,
    /// `--aux-address`: never handed out.
    #[serde(default)]
    pub aux: Vec<Ipv4Addr>,
}

impl Pool {
    /// The subnet with its first host as the gateway (dockerd's default).
    pub fn with_default_gateway(subnet: Ipv4Net) -> Pool {
        let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        Pool { subnet, gateway, ip_range: None, aux: Vec::new() }
    }

    /// `Subnet`/`Gateway` as inspect shows an automatically chosen pool.
    pub fn auto_config(&self) -> Value {
        serde_json::json!({ "Subnet": self.subnet.to_string(), "Gateway": self.gateway.to_string() })
    }

    fn reserved(&self, ip: Ipv4Addr) -> bool {
        ip == self.subnet.network()
            || (self.subnet.prefix_len() < 31 && ip == self.subnet.broadcast())
            || ip == self.gateway
            || self.aux.contains(&ip)
    }

    /// The first address of the range that is not reserved and that `taken`
    /// refuses; `avoid` is tried last (addresses other, stopped, containers
    /// had, so a restart can get its address back).
    pub fn allocate(&self, taken: impl Fn(Ipv4Addr) -> bool, avoid: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let range = self.ip_range.unwrap_or(self.subnet);
        let (first, last) = (u32::from(range.network()), u32::from(range.broadcast()));
        let free = |ip: Ipv4Addr| !self.reserved(ip) && !taken(ip);
        let mut fallback = None;
        for n in first..=last {
            let ip = Ipv4Addr::from(n);
            if free(ip) {
                if !avoid(ip) {
                    return Some(ip);
                }
                fallback.get_or_insert(ip);
            }
        }
        fallback
    }

    /// Whether a user-chosen address (`--ip`) may be given to an endpoint.
    pub fn accepts(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip) && !self.reserved(ip)
    }
}

/// Why an IPAM config was refused (dockerd answers 400 to each).
pub type IpamError = String;

/// A network's parsed IPAM config: the IPv4 pools the allocator uses and
/// the IPv6 subnets it only records (Berth gives containers IPv4 only).
#[derive(Debug, Default)]
pub struct ParsedIpam {
    pub pools: Vec<Pool>,
    pub ipv6: Vec<String>,
}

fn parse_net(text: &str) -> Result<IpNet, IpamError> {
    let net: IpNet = text.parse().map_err(|_| format!("invalid CIDR address: {text}"))?;
    if net.trunc() != net {
        // dockerd >= 25 refuses host bits (docker-py's 2001:389::1/64).
        return Err(format!("invalid subnet {text} : it should be {}", net.trunc()));
    }
    Ok(net)
}

fn parse_ip(text: &str, what: &str) -> Result<IpAddr, IpamError> {
    text.parse().map_err(|_| format!("invalid {what} address: {text}"))
}

/// Checks `IPAM.Config` as dockerd does and turns it into pools. As
/// moby's `ValidateIPAM`, an IPv6 entry of a network without IPv6 is not
/// checked (docker-py sends `2001:389::1/64` that way): it is only recorded.
pub fn parse_config(config: &[Value], enable_ipv6: bool) -> Result<ParsedIpam, IpamError> {
    let mut parsed = ParsedIpam::default();
    let mut seen: Vec<IpNet> = Vec::new();
    for entry in config {
        let field = |key: &str| entry[key].as_str().unwrap_or("").to_string();
        let subnet_text = field("Subnet");
        if subnet_text.is_empty() {
            if !field("IPRange").is_empty() || !field("Gateway").is_empty() {
                return Err("ipam config has IPRange or Gateway but no Subnet".into());
            }
            continue;
        }
        if let (false, Ok(IpNet::V6(unchecked))) = (enable_ipv6, subnet_text.parse::<IpNet>()) {
            parsed.ipv6.push(unchecked.trunc().to_string());
            continue;
        }
        let subnet = parse_net(&subnet_text)?;
        if seen.iter().any(|s| s.contains(&subnet) || subnet.contains(s)) {
            return Err(format!("invalid pool request: Pool overlaps with other one on this address space: {subnet}"));
        }
        seen.push(subnet);
        let range = match field("IPRange").as_str() {
            "" => None,
            text => {
                let range = parse_net(text)?;
                if !subnet.contains(&range) {
                    return Err(format!("no matching subnet for range {text}"));
                }
                Some(range)
            }
        };
        let gateway = match field("Gateway").as_str() {
            "" => None,
            text => {
                let ip = parse_ip(text, "gateway")?;
                if !subnet.contains(&ip) {
                    return Err(format!("no matching subnet for gateway {text}"));
                }
                Some(ip)
            }
        };
        let mut aux = Vec::new();
        for (name, value) in entry["AuxiliaryAddresses"].as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or("");
            let ip = parse_ip(text, &format!("aux-address {name}"))?;
            if !subnet.contains(&ip) {
                return Err(format!("no matching subnet for aux-address {text}"));
            }
            aux.push(ip);
        }
        match subnet {
            IpNet::V4(subnet) => {
                let mut pool = Pool::with_default_gateway(subnet);
                if let Some(IpAddr::V4(gw)) = gateway {
                    pool.gateway = gw;
                }
                pool.ip_range = range.and_then(|r| match r {
                    IpNet::V4(r) => Some(r),
                    IpNet::V6(_) => None,
                });
                pool.aux = aux.into_iter().filter_map(|a| if let IpAddr::V4(a) = a { Some(a) } else { None }).collect();
                parsed.pools.push(pool);
            }
            IpNet::V6(subnet) => parsed.ipv6.push(subnet.to_string()),
        }
    }
    Ok(parsed)
}

/// The first default pool that overlaps none of `in_use` (other networks'
/// subnets) nor `reserved` (the VM's own routes and nameservers).
pub fn next_pool(in_use: &[Ipv4Net], reserved: &[Ipv4Net]) -> Option<Ipv4Net> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    default_pools().into_iter().find(|pool| !in_use.iter().chain(reserved).any(|other| overlaps(pool, other)))
}

/// Whether a user-chosen subnet collides with another network's.
pub fn overlapping<'a>(subnet: &Ipv4Net, in_use: &'a BTreeMap<String, Vec<Ipv4Net>>) -> Option<&'a str> {
    in_use.iter().find_map(|(name, nets)| {
        nets.iter().any(|n| n.contains(&subnet.network()) || subnet.contains(&n.network())).then_some(name.as_str())
    })
}

/// dockerd v27's MAC for an address on a bridge network
/// (`netutils.GenerateMACFromIP`): 02:42 and the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A MAC in `aa:bb:cc:dd:ee:ff` form, as six bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn pools_follow_dockerds_order_and_skip_reserved_ranges() {
        let pools = default_pools();
        assert_eq!(pools[0], net("172.17.0.0/16"));
        assert_eq!(pools[14], net("172.31.0.0/16"));
        assert_eq!(pools[15], net("192.168.0.0/20"));
        assert_eq!(pools.len(), 15 + 16);
        assert_eq!(next_pool(&[], &[]), Some(net("172.17.0.0/16")));
        assert_eq!(next_pool(&[net("172.17.0.0/16")], &[]), Some(net("172.18.0.0/16")));
        // A VM route inside 172.18/16 pushes the next network past it.
        assert_eq!(next_pool(&[net("172.17.0.0/16")], &[net("172.18.5.0/24")]), Some(net("172.19.0.0/16")));
        let all_172: Vec<Ipv4Net> = pools[..15].to_vec();
        // The service subnet 192.168.65.0/24 sits in 192.168.64.0/20.
        let reserved = [net("10.0.2.0/24"), net("192.168.65.0/24"), net("192.168.0.0/20")];
        assert_eq!(next_pool(&all_172, &reserved), Some(net("192.168.16.0/20")));
        let mut used = all_172;
        used.extend(pools[16..].iter().filter(|p| **p != net("192.168.64.0/20")));
        assert_eq!(next_pool(&used, &reserved), None);
    }

    #[test]
    fn allocation_skips_gateway_aux_and_taken_and_prefers_unremembered() {
        let mut pool = Pool::with_default_gateway(net("172.18.0.0/16"));
        assert_eq!(pool.gateway, Ipv4Addr::new(172, 18, 0, 1));
        assert_eq!(pool.allocate(|_| false, |_| false), Some(Ipv4Addr::new(172, 18, 0, 2)));
        pool.aux.push(Ipv4Addr::new(172, 18, 0, 2));
        let taken = |ip: Ipv4Addr| ip == Ipv4Addr::new(172, 18, 0, 3);
        assert_eq!(pool.allocate(taken, |_| false), Some(Ipv4Addr::new(172, 18, 0, 4)));
        let remembered = |ip: Ipv4Addr| ip == Ipv4Addr::new(172, 18, 0, 4);
        assert_eq!(pool.allocate(taken, remembered), Some(Ipv4Addr::new(172, 18, 0, 5)));
        pool.ip_range = Some(net("172.18.5.0/30"));
        assert_eq!(pool.allocate(|_| false, |_| false), Some(Ipv4Addr::new(172, 18, 5, 0)));
        let tiny = Pool::with_default_gateway(net("10.9.0.0/30"));
        assert_eq!(tiny.allocate(|_| false, |_| false), Some(Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(tiny.allocate(|ip| ip == Ipv4Addr::new(10, 9, 0, 2), |_| false), None);
        assert!(tiny.accepts(Ipv4Addr::new(10, 9, 0, 2)));
        assert!(!tiny.accepts(Ipv4Addr::new(10, 9, 0, 1)));
        assert!(!tiny.accepts(Ipv4Addr::new(10, 9, 1, 2)));
    }

    #[test]
    fn user_config_is_checked_as_dockerd_checks_it() {
        let parsed = parse_config(
            &[json!({
                "Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24", "Gateway": "172.28.5.254",
                "AuxiliaryAddresses": {"a": "172.28.1.5", "b": "172.28.1.6"}
            })],
            false,
        )
        .unwrap();
        let pool = &parsed.pools[0];
        assert_eq!(pool.gateway, Ipv4Addr::new(172, 28, 5, 254));
        assert_eq!(pool.ip_range, Some(net("172.28.5.0/24")));
        assert_eq!(pool.aux.len(), 2);
        let err = |cfg: Value| parse_config(&[cfg], true).unwrap_err();
        assert_eq!(err(json!({"Subnet": "bogus"})), "invalid CIDR address: bogus");
        assert_eq!(
            err(json!({"Subnet": "2001:389::1/64"})),
            "invalid subnet 2001:389::1/64 : it should be 2001:389::/64"
        );
        assert_eq!(
            err(json!({"Subnet": "10.1.0.0/16", "Gateway": "10.2.0.1"})),
            "no matching subnet for gateway 10.2.0.1"
        );
        assert_eq!(
            err(json!({"Subnet": "10.1.0.0/16", "IPRange": "10.2.0.0/24"})),
            "no matching subnet for range 10.2.0.0/24"
        );
        let v6 = parse_config(&[json!({"Subnet": "2001:389::/64"})], true).unwrap();
        assert_eq!(v6.ipv6, ["2001:389::/64"]);
        // Without IPv6 on the network, moby leaves its IPv6 entries unchecked.
        let unchecked =
            parse_config(&[json!({"Subnet": "2001:389::1/64", "Gateway": "2001:389::ffff"})], false).unwrap();
        assert_eq!(unchecked.ipv6, ["2001:389::/64"]);
        assert!(parse_config(&[json!({"Subnet": "10.1.0.0/16"}), json!({"Subnet": "10.1.2.0/24"})], false).is_err());
    }

    #[test]
    fn macs_come_from_addresses() {
        assert_eq!(mac_for(Ipv4Addr::new(172, 17, 0, 2)), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some([2, 0x42, 0xac, 0x11, 0, 2]));
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("zz:42:ac:11:00:02"), None);
    }
}
