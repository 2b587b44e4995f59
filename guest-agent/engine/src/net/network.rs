//! A network as the engine keeps it (one JSON record per network on the
//! data disk) and as Docker's API shows it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ipam::Pool;

/// The three networks every dockerd has.
pub const PREDEFINED: [(&str, &str); 3] = [("bridge", "bridge"), ("host", "host"), ("none", "null")];

/// The default bridge's device, as dockerd names it.
pub const DEFAULT_BRIDGE: &str = "docker0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    pub created: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default)]
    pub enable_ipv6: bool,
    #[serde(default)]
    pub ipam_driver: String,
    /// `IPAM.Options` as given (null when not).
    #[serde(default)]
    pub ipam_options: Value,
    /// `IPAM.Config` as the user gave it, echoed verbatim; empty when the
    /// pool was chosen automatically (then inspect shows `pools`).
    #[serde(default)]
    pub ipam_config: Vec<Value>,
    /// The IPv4 subnets addresses come from.
    #[serde(default)]
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The bridge device in the VM; empty for `host` and `none`.
    #[serde(default)]
    pub bridge: String,
    /// Containers attached (configured), by container ID.
    #[serde(default)]
    pub attachments: BTreeMap<String, Attachment>,
}

/// A container's membership of a network: what was asked for, and the
/// endpoint while the container runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Legacy links on this network, `name:alias`.
    #[serde(default)]
    pub links: Vec<String>,
    /// `EndpointSettings.IPAMConfig` as given (null when not).
    #[serde(default)]
    pub ipam_config: Value,
    #[serde(default)]
    pub driver_opts: Value,
    /// `--mac-address` or `EndpointSettings.MacAddress`.
    #[serde(default)]
    pub mac_address: String,
    /// The address of the last run: given back when free.
    #[serde(default)]
    pub last_ip: Option<Ipv4Addr>,
    /// When it was attached: endpoints are made in this order (the first
    /// non-internal network gives the default route).
    #[serde(default)]
    pub seq: i64,
    /// The container's hostname as of its last start (a DNS name).
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
}

/// A live endpoint: a veth pair with the container's end in its netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// The VM's end of the pair (on the bridge).
    pub host_veth: String,
    /// The container's interface name (`eth0`, `eth1`, ...).
    pub ifname: String,
}

impl Attachment {
    pub fn requested_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipam_config["IPv4Address"].as_str().filter(|s| !s.is_empty()).and_then(|s| s.parse().ok())
    }
}

impl Network {
    pub fn is_predefined(&self) -> bool {
        PREDEFINED.iter().any(|(name, _)| *name == self.name)
    }

    pub fn is_default_bridge(&self) -> bool {
        self.name == "bridge"
    }

    /// A user-defined network: names resolve, `--ip` may be given, it can
    /// be connected to on the fly (dockerd's distinction).
    pub fn is_user_defined(&self) -> bool {
        !self.is_predefined()
    }

    /// Whether `key` names this network: its name, full ID or an ID prefix.
    pub fn matches(&self, key: &str) -> bool {
        self.name == key || self.id == key || (!key.is_empty() && self.id.starts_with(key))
    }

    /// `com.docker.network.bridge.enable_ip_masquerade` (default true).
    pub fn masquerade(&self) -> bool {
        self.options.get("com.docker.network.bridge.enable_ip_masquerade").is_none_or(|v| v != "false")
    }

    /// `com.docker.network.bridge.enable_icc` (default true).
    pub fn icc(&self) -> bool {
        self.options.get("com.docker.network.bridge.enable_icc").is_none_or(|v| v != "false")
    }

    pub fn active_endpoints(&self) -> impl Iterator<Item = (&String, &Attachment, &Endpoint)> {
        self.attachments.iter().filter_map(|(id, a)| a.endpoint.as_ref().map(|e| (id, a, e)))
    }

    fn ipam_json(&self) -> Value {
        let config: Vec<Value> = if self.ipam_config.is_empty() {
            self.pools.iter().map(Pool::auto_config).collect()
        } else {
            self.ipam_config.clone()
        };
        json!({ "Driver": self.ipam_driver, "Options": self.ipam_options, "Config": config })
    }

    /// Docker's `Network` object (list and inspect).
    pub fn docker_json(&self) -> Value {
        let mut containers = serde_json::Map::new();
        for (id, attachment, endpoint) in self.active_endpoints() {
            containers.insert(
                id.clone(),
                json!({
                    "Name": attachment.container_name,
                    "EndpointID": endpoint.id,
                    "MacAddress": endpoint.mac,
                    "IPv4Address": format!("{}/{}", endpoint.ip, endpoint.prefix),
                    "IPv6Address": "",
                }),
            );
        }
        json!({
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Scope": "local",
            "Driver": self.driver,
            "EnableIPv6": self.enable_ipv6,
            "IPAM": self.ipam_json(),
            "Internal": self.internal,
            "Attachable": self.attachable,
            "Ingress": self.ingress,
            "ConfigFrom": { "Network": "" },
            "ConfigOnly": false,
            "Containers": containers,
            "Options": self.options,
            "Labels": self.labels,
        })
    }

    /// Docker's `EndpointSettings` of one container on this network (its
    /// `NetworkSettings.Networks[name]` in container inspect).
    pub fn endpoint_settings(&self, container_id: &str, hostname: &str) -> Value {
        let Some(attachment) = self.attachments.get(container_id) else { return Value::Null };
        let endpoint = attachment.endpoint.as_ref();
        let dns_names = if self.is_user_defined() {
            let mut names = vec![attachment.container_name.clone()];
            names.extend(attachment.aliases.iter().cloned());
            names.push(container_id[..12.min(container_id.len())].to_string());
            if !hostname.is_empty() && !names.iter().any(|n| n == hostname) {
                names.push(hostname.to_string());
            }
            json!(names)
        } else {
            Value::Null
        };
        json!({
            "IPAMConfig": attachment.ipam_config,
            "Links": if attachment.links.is_empty() { Value::Null } else { json!(attachment.links) },
            "Aliases": if attachment.aliases.is_empty() { Value::Null } else { json!(attachment.aliases) },
            "MacAddress": endpoint.map(|e| e.mac.clone()).unwrap_or_else(|| attachment.mac_address.clone()),
            "DriverOpts": attachment.driver_opts,
            "NetworkID": self.id,
            "EndpointID": endpoint.map(|e| e.id.clone()).unwrap_or_default(),
            "Gateway": endpoint.map(|e| e.gateway.to_string()).unwrap_or_default(),
            "IPAddress": endpoint.map(|e| e.ip.to_string()).unwrap_or_default(),
            "IPPrefixLen": endpoint.map(|e| e.prefix).unwrap_or(0),
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "DNSNames": dns_names,
        })
    }
}

/// Docker's `filters` on `GET /networks` (name, id, driver, type, scope,
/// label, dangling); `dangling` needs to know which networks containers use.
pub fn filter_matches(filters: &Value, network: &Network, in_use: bool) -> Result<bool, String> {
    let Some(map) = filters.as_object() else { return Ok(true) };
    for (key, values) in map {
        let wanted: Vec<String> = match values {
            Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Value::Object(o) => o.iter().filter(|(_, v)| v.as_bool() != Some(false)).map(|(k, _)| k.clone()).collect(),
            _ => Vec::new(),
        };
        if wanted.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "name" => wanted.iter().any(|w| network.name.contains(w.as_str())),
            "id" => wanted.iter().any(|w| network.id.starts_with(w.as_str())),
            "driver" => wanted.contains(&network.driver),
            "type" => {
                for w in &wanted {
                    if w != "builtin" && w != "custom" {
                        return Err(format!("invalid filter: 'type'='{w}'"));
                    }
                }
                wanted.iter().any(|w| (w == "builtin") == network.is_predefined())
            }
            "scope" => wanted.iter().any(|w| w == "local"),
            "label" => wanted.iter().all(|w| label_matches(&network.labels, w)),
            "dangling" => {
                let mut ok = false;
                for w in &wanted {
                    let dangling = match w.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("invalid filter 'dangling={w}'")),
                    };
                    // Predefined networks are never dangling.
                    ok |= dangling == (!in_use && !network.is_predefined());
                }
                ok
            }
            other => return Err(format!("invalid filter '{other}'")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `label=key` or `label=key=value`.
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(filter),
    }
}

/// Networks and endpoints for the tests of this module and its siblings.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A bridge network `name` on device `bridge` with `subnet`.
    pub fn bridge_network(name: &str, bridge: &str, subnet: &str) -> Network {
        let mut net = crate::net::store::new_network(name, "bridge");
        net.id = format!("{name:0<64}");
        net.pools = vec![Pool::with_default_gateway(subnet.parse().unwrap())];
        net.bridge = bridge.into();
        net
    }

    /// A running container's attachment with its endpoint at `ip/16`.
    pub fn live_attachment(container: &str, ip: Ipv4Addr) -> Attachment {
        let mut attachment =
            crate::net::attach::new_attachment(container, crate::net::attach::EndpointRequest::default(), 0);
        let [a, b, _, _] = ip.octets();
        attachment.endpoint = Some(Endpoint {
            id: "e".repeat(64),
            ip,
            prefix: 16,
            gateway: Ipv4Addr::new(a, b, 0, 1),
            mac: crate::net::ipam::mac_for(ip),
            host_veth: "veth0000000".into(),
            ifname: "eth0".into(),
        });
        attachment
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{bridge_network, live_attachment};
    use super::*;

    fn sample() -> Network {
        let mut net = bridge_network("web", "br-aaaaaaaaaaaa", "172.18.0.0/16");
        net.id = "a".repeat(64);
        net.labels = BTreeMap::from([("env".to_string(), "test".to_string())]);
        net
    }

    #[test]
    fn inspect_shows_active_endpoints_and_the_chosen_pool() {
        let mut net = sample();
        let id = "c".repeat(64);
        let mut attachment = live_attachment("box", Ipv4Addr::new(172, 18, 0, 2));
        attachment.aliases = vec!["db".into()];
        net.attachments.insert(id.clone(), attachment);
        let value = net.docker_json();
        assert_eq!(
            value["IPAM"],
            json!({"Driver": "default", "Options": null, "Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]})
        );
        assert_eq!(value["Containers"][&id]["IPv4Address"], "172.18.0.2/16");
        assert_eq!(value["Containers"][&id]["MacAddress"], "02:42:ac:12:00:02");
        let settings = net.endpoint_settings(&id, "cccccccccccc");
        assert_eq!(settings["DNSNames"], json!(["box", "db", "cccccccccccc"]));
        assert_eq!(settings["IPAddress"], "172.18.0.2");
        assert_eq!(settings["IPPrefixLen"], 16);
        assert_eq!(settings["Aliases"], json!(["db"]));
        // A user's IPAM config is echoed exactly, nothing added.
        net.ipam_config = vec![json!({"Subnet": "172.18.0.0/16", "IPRange": "172.18.5.0/24"})];
        assert_eq!(
            net.docker_json()["IPAM"]["Config"],
            json!([{"Subnet": "172.18.0.0/16", "IPRange": "172.18.5.0/24"}])
        );
    }

    #[test]
    fn filters_as_dockerd_reads_them() {
        let net = sample();
        let ok = |f: Value, in_use: bool| filter_matches(&f, &net, in_use).unwrap();
        assert!(ok(json!({"name": ["we"]}), false));
        assert!(!ok(json!({"name": ["db"]}), false));
        assert!(ok(json!({"id": ["aaa"]}), false));
        assert!(ok(json!({"type": ["custom"]}), false));
        assert!(!ok(json!({"type": ["builtin"]}), false));
        assert!(ok(json!({"label": ["env"]}), false));
        assert!(ok(json!({"label": {"env=test": true}}), false));
        assert!(!ok(json!({"label": ["env=prod"]}), false));
        assert!(ok(json!({"dangling": ["true"]}), false));
        assert!(!ok(json!({"dangling": ["true"]}), true));
        assert!(ok(json!({"driver": ["bridge"], "scope": ["local"]}), false));
        assert!(filter_matches(&json!({"bogus": ["x"]}), &net, false).is_err());
        assert!(filter_matches(&json!({"type": ["x"]}), &net, false).is_err());
    }
}
