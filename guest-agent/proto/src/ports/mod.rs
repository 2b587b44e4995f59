//! Published ports (`-p`, `-P`): what the host and the agent must agree on.
//!
//! The host daemon owns the host sockets (it binds them when a container
//! starts, see host/src/ports); the agent dials the container for each
//! forwarded connection (guest-agent/src/ports). Between them:
//! - [`PortBinding`]: one host socket bound for a container port, as the
//!   host bound it. The list travels with StartContainer and is kept in the
//!   container's record, so inspect, `docker ps` and a restarted daemon all
//!   read the same bindings.
//! - [`requested`]: what a container's HostConfig asks for (dockerd's
//!   `PortBindings` and `PublishAllPorts` over `ExposedPorts`), checked at
//!   create by the engine and bound at start by the host.
//! - [`wire`]: the header and frames on the forwarding vsock port;
//!   [`relay`]: a TCP connection's bytes on it.

pub mod relay;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The agent's vsock port for forwarded connections (one stream per TCP
/// connection, one per UDP binding; see [`wire`]).
pub const PORTS_VSOCK_PORT: u32 = 1026;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One host socket bound for a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    pub proto: Proto,
    pub container_port: u16,
    pub host_ip: IpAddr,
    pub host_port: u16,
}

impl From<PortBinding> for crate::PublishedPort {
    fn from(b: PortBinding) -> Self {
        crate::PublishedPort {
            proto: b.proto.as_str().into(),
            container_port: b.container_port.into(),
            host_ip: b.host_ip.to_string(),
            host_port: b.host_port.into(),
        }
    }
}

impl TryFrom<&crate::PublishedPort> for PortBinding {
    type Error = String;
    fn try_from(p: &crate::PublishedPort) -> Result<Self, String> {
        let proto = match p.proto.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(format!("unknown protocol {other:?}")),
        };
        let port = |n: u32| u16::try_from(n).ok().filter(|n| *n != 0);
        Ok(PortBinding {
            proto,
            container_port: port(p.container_port).ok_or_else(|| format!("bad container port {}", p.container_port))?,
            host_ip: p.host_ip.parse().map_err(|_| format!("bad host IP {:?}", p.host_ip))?,
            host_port: port(p.host_port).ok_or_else(|| format!("bad host port {}", p.host_port))?,
        })
    }
}

/// One published port as HostConfig asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub proto: Proto,
    pub container_port: u16,
    /// None: every address (0.0.0.0 and ::, as dockerd binds `-p 8080:80`).
    pub host_ip: Option<IpAddr>,
    /// None: an ephemeral port; else the first that binds of this range
    /// (`-p 8000-8010:80`; a single port is a range of one).
    pub host_ports: Option<(u16, u16)>,
}

fn bad_spec(spec: &str) -> String {
    // dockerd's words (nat.ParsePortSpec).
    format!("invalid port specification: {spec:?}")
}

/// `80/tcp` (a bare `80` is TCP), as PortBindings and ExposedPorts key them.
pub fn parse_port_key(key: &str) -> Result<(u16, Proto), String> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" | "" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => return Err("publishing SCTP ports is not supported by Berth yet".into()),
        _ => return Err(format!("invalid proto: {proto}")),
    };
    let port = port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad_spec(key))?;
    Ok((port, proto))
}

/// `""` (ephemeral), `"8080"` or `"8000-8010"`.
fn parse_host_ports(text: &str) -> Result<Option<(u16, u16)>, String> {
    let text = text.trim();
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let number = |s: &str| s.parse::<u16>().ok().filter(|p| *p != 0);
    match (number(first), number(last)) {
        (Some(first), Some(last)) if first <= last => Ok(Some((first, last))),
        _ => Err(format!("invalid hostPort: {text}")),
    }
}

/// Every port a container publishes, from its HostConfig and (for
/// `PublishAllPorts`, `-P`) its Config's ExposedPorts, in a stable order.
pub fn requested(host_config: &Value, config: &Value) -> Result<Vec<Requested>, String> {
    let mut wanted = Vec::new();
    let bindings = host_config["PortBindings"].as_object();
    for (key, list) in bindings.into_iter().flatten() {
        let (container_port, proto) = parse_port_key(key)?;
        let entries = list.as_array().map(Vec::as_slice).unwrap_or_default();
        // A key with no bindings publishes to an ephemeral port on every address.
        let defaults = [json!({})];
        for entry in if entries.is_empty() { &defaults[..] } else { entries } {
            let host_ip = match entry["HostIp"].as_str().unwrap_or("") {
                "" => None,
                ip => Some(ip.parse::<IpAddr>().map_err(|_| format!("invalid IP address: {ip}"))?),
            };
            let host_ports = parse_host_ports(entry["HostPort"].as_str().unwrap_or(""))?;
            wanted.push(Requested { proto, container_port, host_ip, host_ports });
        }
    }
    if host_config["PublishAllPorts"].as_bool() == Some(true) {
        for key in config["ExposedPorts"].as_object().into_iter().flatten().map(|(k, _)| k) {
            let (container_port, proto) = parse_port_key(key)?;
            if !wanted.iter().any(|w| w.container_port == container_port && w.proto == proto) {
                wanted.push(Requested { proto, container_port, host_ip: None, host_ports: None });
            }
        }
    }
    wanted.sort_by_key(|w| (w.container_port, w.proto, w.host_ip, w.host_ports));
    wanted.dedup();
    Ok(wanted)
}

/// Whether HostConfig publishes anything at all.
pub fn publishes(host_config: &Value) -> bool {
    let bindings = host_config["PortBindings"].as_object().is_some_and(|m| !m.is_empty());
    bindings || host_config["PublishAllPorts"].as_bool() == Some(true)
}

/// The address a binding shows in inspect (`0.0.0.0`, `::`, `127.0.0.1`).
fn shown_ip(ip: IpAddr) -> String {
    ip.to_string()
}

/// `NetworkSettings.Ports` of a running container: each published port with
/// its bindings, each exposed port that is not published as null (dockerd).
pub fn network_settings_ports(config: &Value, bound: &[PortBinding]) -> Value {
    let mut ports = serde_json::Map::new();
    for key in config["ExposedPorts"].as_object().into_iter().flatten().map(|(k, _)| k) {
        if let Ok((port, proto)) = parse_port_key(key) {
            ports.insert(format!("{port}/{}", proto.as_str()), Value::Null);
        }
    }
    let mut sorted = bound.to_vec();
    sorted.sort_by_key(|b| (b.container_port, b.proto, b.host_ip.is_ipv6(), b.host_ip, b.host_port));
    for b in sorted {
        let entry = ports.entry(format!("{}/{}", b.container_port, b.proto.as_str())).or_insert(Value::Null);
        if !entry.is_array() {
            *entry = json!([]);
        }
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({ "HostIp": shown_ip(b.host_ip), "HostPort": b.host_port.to_string() }));
        }
    }
    Value::Object(ports)
}

/// The bindings a running container's inspect shows: the inverse of
/// [`network_settings_ports`] (a restarted daemon binds these again).
pub fn bindings_from_network_settings(ports: &Value) -> Vec<PortBinding> {
    let mut bound = Vec::new();
    for (key, list) in ports.as_object().into_iter().flatten() {
        let Ok((container_port, proto)) = parse_port_key(key) else { continue };
        for entry in list.as_array().into_iter().flatten() {
            let ip = entry["HostIp"].as_str().and_then(|ip| ip.parse::<IpAddr>().ok());
            let port = entry["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0);
            if let (Some(host_ip), Some(host_port)) = (ip, port) {
                bound.push(PortBinding { proto, container_port, host_ip, host_port });
            }
        }
    }
    bound
}

/// `GET /containers/json`'s `Ports` of a running container (what `docker
/// ps` prints as `0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 443/tcp`).
pub fn summary_ports(config: &Value, bound: &[PortBinding]) -> Value {
    let mut ports: Vec<Value> = Vec::new();
    for b in bound {
        ports.push(json!({
            "IP": shown_ip(b.host_ip), "PrivatePort": b.container_port, "PublicPort": b.host_port, "Type": b.proto.as_str(),
        }));
    }
    for key in config["ExposedPorts"].as_object().into_iter().flatten().map(|(k, _)| k) {
        if let Ok((port, proto)) = parse_port_key(key) {
            if !bound.iter().any(|b| b.container_port == port && b.proto == proto) {
                ports.push(json!({ "PrivatePort": port, "Type": proto.as_str() }));
            }
        }
    }
    Value::Array(ports)
}

/// The wildcard addresses a binding without HostIp is made of.
pub const ANY_ADDRESSES: [IpAddr; 2] = [IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)];

#[cfg(test)]
mod tests {
    use super::*;

    fn req(proto: Proto, port: u16, ip: Option<&str>, ports: Option<(u16, u16)>) -> Requested {
        Requested { proto, container_port: port, host_ip: ip.map(|ip| ip.parse().unwrap()), host_ports: ports }
    }

    #[test]
    fn port_keys_parse_as_dockerd_reads_them() {
        assert_eq!(parse_port_key("80/tcp"), Ok((80, Proto::Tcp)));
        assert_eq!(parse_port_key("53/udp"), Ok((53, Proto::Udp)));
        assert_eq!(parse_port_key("8080"), Ok((8080, Proto::Tcp)));
        assert_eq!(parse_port_key("0/tcp").unwrap_err(), r#"invalid port specification: "0/tcp""#);
        assert_eq!(parse_port_key("http/tcp").unwrap_err(), r#"invalid port specification: "http/tcp""#);
        assert_eq!(parse_port_key("80/icmp").unwrap_err(), "invalid proto: icmp");
        assert!(parse_port_key("80/sctp").unwrap_err().contains("SCTP"));
    }

    #[test]
    fn what_the_cli_sends_for_each_form_of_dash_p() {
        // -p 8080:80 -p 127.0.0.1:8081:81 -p 5353:53/udp -p 90 -p 8000-8010:100
        let hc = json!({"PortBindings": {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
            "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8081"}],
            "53/udp": [{"HostIp": "", "HostPort": "5353"}],
            "90/tcp": [{"HostIp": "", "HostPort": ""}],
            "100/tcp": [{"HostIp": "", "HostPort": "8000-8010"}],
        }});
        assert_eq!(
            requested(&hc, &json!({})).unwrap(),
            vec![
                req(Proto::Udp, 53, None, Some((5353, 5353))),
                req(Proto::Tcp, 80, None, Some((8080, 8080))),
                req(Proto::Tcp, 81, Some("127.0.0.1"), Some((8081, 8081))),
                req(Proto::Tcp, 90, None, None),
                req(Proto::Tcp, 100, None, Some((8000, 8010))),
            ]
        );
        for (port, message) in
            [("x", "invalid hostPort: x"), ("9-8", "invalid hostPort: 9-8"), ("70000", "invalid hostPort: 70000")]
        {
            let hc = json!({"PortBindings": {"80/tcp": [{"HostPort": port}]}});
            assert_eq!(requested(&hc, &json!({})).unwrap_err(), message);
        }
        let hc = json!({"PortBindings": {"80/tcp": [{"HostIp": "localhost"}]}});
        assert_eq!(requested(&hc, &json!({})).unwrap_err(), "invalid IP address: localhost");
    }

    #[test]
    fn publish_all_adds_every_exposed_port_not_already_bound() {
        let hc = json!({"PublishAllPorts": true, "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}});
        let config = json!({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}, "53/udp": {}}});
        assert_eq!(
            requested(&hc, &config).unwrap(),
            vec![
                req(Proto::Udp, 53, None, None),
                req(Proto::Tcp, 80, None, Some((8080, 8080))),
                req(Proto::Tcp, 443, None, None),
            ]
        );
        // Exposed alone publishes nothing.
        assert_eq!(requested(&json!({}), &config).unwrap(), vec![]);
        assert!(!publishes(&json!({"PortBindings": {}})));
        assert!(publishes(&json!({"PublishAllPorts": true})));
    }

    fn binding(proto: Proto, port: u16, ip: &str, host_port: u16) -> PortBinding {
        PortBinding { proto, container_port: port, host_ip: ip.parse().unwrap(), host_port }
    }

    #[test]
    fn inspect_and_ps_show_the_bound_ports_and_null_for_the_rest() {
        let config = json!({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}});
        let bound = [binding(Proto::Tcp, 80, "::", 8080), binding(Proto::Tcp, 80, "0.0.0.0", 8080)];
        let ports = network_settings_ports(&config, &bound);
        assert_eq!(
            ports,
            json!({
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                "443/tcp": null,
            })
        );
        let mut back = bindings_from_network_settings(&ports);
        back.sort();
        let mut expected = bound.to_vec();
        expected.sort();
        assert_eq!(back, expected);
        assert_eq!(
            summary_ports(&config, &bound),
            json!([
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"PrivatePort": 443, "Type": "tcp"},
            ])
        );
    }

    #[test]
    fn bindings_cross_the_contract_unchanged() {
        let b = binding(Proto::Udp, 53, "127.0.0.1", 5353);
        let message = crate::PublishedPort::from(b);
        assert_eq!(PortBinding::try_from(&message), Ok(b));
        let bad = crate::PublishedPort { host_port: 0, ..message };
        assert!(PortBinding::try_from(&bad).is_err());
    }
}
