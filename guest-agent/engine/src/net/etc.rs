//! A container's /etc/hosts and /etc/resolv.conf as dockerd writes them.

use std::net::Ipv4Addr;

use crate::service_addr::HOST_GATEWAY;

/// What the two files are made from.
#[derive(Debug, Default)]
pub struct EtcInput<'a> {
    pub hostname: &'a str,
    pub domainname: &'a str,
    /// The container's own addresses (its first network first).
    pub addresses: Vec<Ipv4Addr>,
    /// `--add-host` entries, `name:ip` (`host-gateway` allowed).
    pub extra_hosts: Vec<String>,
    /// Legacy links: address, then the names it answers to.
    pub links: Vec<(Ipv4Addr, Vec<String>)>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// On a user-defined network the resolver is the embedded DNS server.
    pub embedded_dns: bool,
}

/// Checks `--add-host` entries as dockerd does.
pub fn check_extra_hosts(entries: &[String]) -> Result<(), String> {
    for entry in entries {
        let (name, ip) = split_host(entry).ok_or_else(|| format!("bad format for add-host: {entry:?}"))?;
        if name.is_empty() || (ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err()) {
            return Err(format!("invalid IP address in add-host: {ip:?}"));
        }
    }
    Ok(())
}

fn split_host(entry: &str) -> Option<(&str, &str)> {
    // `name:ip` (ip may be IPv6, so the first colon) or `name=ip`.
    entry.split_once('=').or_else(|| entry.split_once(':'))
}

pub fn hosts(input: &EtcInput<'_>) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let host_gateway = HOST_GATEWAY.to_string();
    for entry in &input.extra_hosts {
        if let Some((name, ip)) = split_host(entry) {
            let ip =
                if ip == "host-gateway" { &host_gateway } else { ip.trim_start_matches('[').trim_end_matches(']') };
            out.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    for (ip, names) in &input.links {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    let name = if input.domainname.is_empty() {
        input.hostname.to_string()
    } else {
        format!("{}.{} {}", input.hostname, input.domainname, input.hostname)
    };
    match input.addresses.first() {
        Some(ip) => out.push_str(&format!("{ip}\t{name}\n")),
        // No network (`none`): the name still resolves, to loopback.
        None => out.push_str(&format!("127.0.0.1\t{name}\n")),
    }
    out
}

fn is_loopback(server: &str) -> bool {
    server.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `vm_resolv` is the VM's own resolv.conf.
pub fn resolv_conf(input: &EtcInput<'_>, vm_resolv: &str) -> String {
    let mut servers = Vec::new();
    let mut search = Vec::new();
    let mut options = Vec::new();
    for line in vm_resolv.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(String::from)),
            Some("search" | "domain") => search = words.map(String::from).collect(),
            Some("options") => options.extend(words.map(String::from)),
            _ => {}
        }
    }
    if !input.dns_search.is_empty() {
        // `--dns-search .` means none.
        search = input.dns_search.iter().filter(|s| *s != ".").cloned().collect();
    }
    if !input.dns_options.is_empty() {
        options = input.dns_options.clone();
    }
    let mut out = String::new();
    if input.embedded_dns {
        out.push_str("nameserver 127.0.0.11\n");
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        let mut opts = vec!["ndots:0".to_string()];
        opts.extend(options.into_iter().filter(|o| !o.starts_with("ndots:")));
        if let Some(ndots) = input.dns_options.iter().find(|o| o.starts_with("ndots:")) {
            opts[0] = ndots.clone();
        }
        out.push_str(&format!("options {}\n", opts.join(" ")));
        let upstream = if input.dns.is_empty() { servers } else { input.dns.clone() };
        out.push_str(&format!("\n# ExtServers: [{}]\n", upstream.join(" ")));
        return out;
    }
    let mut servers: Vec<String> = if input.dns.is_empty() {
        servers.into_iter().filter(|s| !is_loopback(s)).collect()
    } else {
        input.dns.clone()
    };
    if servers.is_empty() {
        // dockerd's fallback when only loopback resolvers were left.
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    for server in servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lists_extra_hosts_links_and_the_container() {
        let input = EtcInput {
            hostname: "web",
            addresses: vec![Ipv4Addr::new(172, 17, 0, 3)],
            extra_hosts: vec!["db:10.1.2.3".into(), "gw:host-gateway".into(), "v6:::1".into()],
            links: vec![(Ipv4Addr::new(172, 17, 0, 2), vec!["cache".into(), "0123456789ab".into(), "redis".into()])],
            ..Default::default()
        };
        let text = hosts(&input);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"), "{text}");
        assert!(text.contains("10.1.2.3\tdb\n192.168.65.254\tgw\n::1\tv6\n"), "{text}");
        assert!(text.contains("172.17.0.2\tcache 0123456789ab redis\n"), "{text}");
        assert!(text.ends_with("172.17.0.3\tweb\n"), "{text}");
        assert!(hosts(&EtcInput { hostname: "x", ..Default::default() }).ends_with("127.0.0.1\tx\n"));
        assert!(check_extra_hosts(&["a:1.2.3.4".into(), "b:host-gateway".into()]).is_ok());
        assert!(check_extra_hosts(&["nohost".into()]).is_err());
        assert!(check_extra_hosts(&["a:notanip".into()]).is_err());
    }

    #[test]
    fn resolv_conf_on_the_default_bridge_drops_loopback_servers() {
        let vm = "nameserver 127.0.0.53\nnameserver 10.0.2.3\nsearch corp.example\n";
        let input = EtcInput::default();
        assert_eq!(resolv_conf(&input, vm), "nameserver 10.0.2.3\nsearch corp.example\n");
        assert_eq!(resolv_conf(&input, "nameserver 127.0.0.1\n"), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        let custom = EtcInput {
            dns: vec!["1.1.1.1".into()],
            dns_search: vec!["a.test".into()],
            dns_options: vec!["timeout:2".into()],
            ..Default::default()
        };
        assert_eq!(resolv_conf(&custom, vm), "nameserver 1.1.1.1\nsearch a.test\noptions timeout:2\n");
    }

    #[test]
    fn resolv_conf_on_a_user_network_points_at_the_embedded_server() {
        let input = EtcInput { embedded_dns: true, ..Default::default() };
        assert_eq!(
            resolv_conf(&input, "nameserver 10.0.2.3\nsearch corp.example\n"),
            "nameserver 127.0.0.11\nsearch corp.example\noptions ndots:0\n\n# ExtServers: [10.0.2.3]\n"
        );
    }
}
