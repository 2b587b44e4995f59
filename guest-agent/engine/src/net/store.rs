//! The networks of one engine: records on the data disk (one JSON file per
//! network, replaced durably), the VM-side objects made from them (bridges,
//! the firewall table), and the network API's verbs. Container endpoints
//! are `attach.rs`'s.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::ipam::{self, Pool};
use super::network::{filter_matches, label_matches, Network, DEFAULT_BRIDGE, PREDEFINED};
use super::{link, netns, nft};

/// Why a network call failed, in Docker's terms (the agent maps each to
/// its HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409
    #[error("{0}")]
    Conflict(String),
    /// 403
    #[error("{0}")]
    Forbidden(String),
    /// 400
    #[error("{0}")]
    Invalid(String),
    /// 500
    #[error("{0}")]
    Internal(String),
}

impl From<io::Error> for NetError {
    fn from(e: io::Error) -> NetError {
        NetError::Internal(e.to_string())
    }
}

pub fn not_found(key: &str) -> NetError {
    NetError::NotFound(format!("network {key} not found"))
}

/// Runs an `nft -f -` script in the root namespace. The agent's applier
/// spawns through its reaper (it is PID 1 in the VM).
pub type FirewallApplier = Box<dyn Fn(Option<&Path>, &str) -> io::Result<()> + Send + Sync>;

/// Where networking happens.
pub struct NetConfig {
    /// The networks' records (on the data disk).
    pub records: PathBuf,
    /// Containers' namespace files (`SandboxKey`).
    pub sandboxes: PathBuf,
    /// The namespace that holds the bridges and the firewall: `None` in
    /// the VM (the VM's own); on the local backend a private namespace, so
    /// the host's interfaces, routes and ruleset are never touched.
    pub root: Option<PathBuf>,
    /// Subnets new networks must not overlap: the VM's routes and
    /// nameservers, and the service subnet.
    pub reserved: Vec<Ipv4Net>,
    pub firewall: FirewallApplier,
}

pub struct Networks {
    pub(super) config: NetConfig,
    pub(super) state: Mutex<Vec<Network>>,
}

/// The service subnet (crate::service_addr), kept off by IPAM as Docker
/// Desktop keeps its own.
pub fn service_subnet() -> Ipv4Net {
    Ipv4Net::new(crate::service_addr::SUBNET, crate::service_addr::SUBNET_PREFIX).expect("a valid prefix")
}

/// Subnets of the nameservers in a resolv.conf (each a /32).
pub fn nameserver_nets(resolv_conf: &str) -> Vec<Ipv4Net> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse().ok())
        .map(|ip| Ipv4Net::new(ip, 32).expect("a /32"))
        .collect()
}

pub(super) fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes)).is_err() {
        let nanos = berth_agent_proto::time::now_ns() as u64;
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i % 8) * 8)) as u8 ^ i as u8;
        }
    }
    let mut text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.truncate(len);
    text
}

/// Runs `nft -f -` in `root` with std's process handling (tests and tools;
/// the agent, as PID 1, brings its own).
pub fn nft_with_std(root: Option<&Path>, script: &str) -> io::Result<()> {
    let script = script.to_string();
    netns::run_in(root, move || {
        let mut child =
            super::nft::nft_command(None).spawn().map_err(|e| io::Error::new(e.kind(), format!("running nft: {e}")))?;
        io::Write::write_all(child.stdin.as_mut().expect("piped"), script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    })
}

impl Networks {
    /// Reads the records back (making the predefined networks on first
    /// use), recreates the bridges, forgets endpoints whose namespace is
    /// gone (a VM restart) and applies the firewall.
    pub fn load(config: NetConfig) -> Result<Networks, NetError> {
        std::fs::create_dir_all(&config.records)?;
        std::fs::create_dir_all(&config.sandboxes)?;
        if let Some(root) = &config.root {
            netns::create(root)?;
        }
        let mut networks = Vec::new();
        for entry in std::fs::read_dir(&config.records)?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path).map(|d| serde_json::from_slice::<Network>(&d)) {
                Ok(Ok(net)) => networks.push(net),
                _ => tracing::warn!(path = %path.display(), "unreadable network record; skipped"),
            }
        }
        let this = Networks { config, state: Mutex::new(networks) };
        {
            let mut state = this.lock();
            for (name, driver) in PREDEFINED {
                if !state.iter().any(|n| n.name == name) {
                    let mut net = new_network(name, driver);
                    if driver == "bridge" {
                        let in_use: Vec<Ipv4Net> =
                            state.iter().flat_map(|n| n.pools.iter().map(|p| p.subnet)).collect();
                        let pool = ipam::next_pool(&in_use, &this.config.reserved)
                            .ok_or_else(|| NetError::Internal("no address pool left for the default bridge".into()))?;
                        net.pools = vec![Pool::with_default_gateway(pool)];
                        net.bridge = DEFAULT_BRIDGE.into();
                        net.options = default_bridge_options();
                    }
                    this.save(&net)?;
                    state.push(net);
                }
            }
            // Endpoints whose namespace is gone (the VM restarted) are
            // forgotten; their addresses are remembered for the next run.
            for net in state.iter_mut() {
                let mut changed = false;
                for (container, attachment) in net.attachments.iter_mut() {
                    if attachment.endpoint.is_some() && !netns::is_netns(&this.config.sandboxes.join(container)) {
                        attachment.last_ip = attachment.endpoint.take().map(|e| e.ip);
                        changed = true;
                    }
                }
                if changed {
                    this.save(net)?;
                }
            }
            for net in state.iter() {
                this.ensure_bridge(net)?;
            }
            this.apply_firewall(&state)?;
            link::ensure_local_delivery(this.root(), nft::TRANSPARENT_MARK, nft::LOCAL_DELIVERY_TABLE)?;
        }
        Ok(this)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Network>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn root(&self) -> Option<&Path> {
        self.config.root.as_deref()
    }

    pub(super) fn save(&self, net: &Network) -> io::Result<()> {
        let data = serde_json::to_vec_pretty(net).map_err(io::Error::other)?;
        crate::durable::replace_durably(&self.config.records.join(format!("{}.json", net.id)), &data)
    }

    pub(super) fn ensure_bridge(&self, net: &Network) -> io::Result<()> {
        if net.driver != "bridge" || net.bridge.is_empty() {
            return Ok(());
        }
        let pool = net.pools.first().ok_or_else(|| io::Error::other(format!("network {} has no subnet", net.name)))?;
        link::ensure_bridge(self.root(), &net.bridge, pool.gateway, pool.subnet.prefix_len())
    }

    pub(super) fn apply_firewall(&self, state: &[Network]) -> io::Result<()> {
        (self.config.firewall)(self.root(), &nft::render(state))
    }

    /// `POST /networks/create`: Docker's body; answers `{Id, Warning}`.
    pub fn create(&self, body: &Value) -> Result<Value, NetError> {
        let name = body["Name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            return Err(NetError::Invalid("network name must not be empty".into()));
        }
        let driver = match body["Driver"].as_str().unwrap_or("") {
            "" => "bridge",
            other => other,
        };
        let mut state = self.lock();
        if PREDEFINED.iter().any(|(n, _)| *n == name) {
            return Err(NetError::Forbidden(format!("{name} is a pre-defined network and cannot be created")));
        }
        if state.iter().any(|n| n.name == name) {
            return Err(NetError::Conflict(format!("network with name {name} already exists")));
        }
        match driver {
            "bridge" => {}
            "host" | "null" => {
                return Err(NetError::Forbidden(format!("only one instance of \"{driver}\" network is allowed")))
            }
            other => {
                return Err(NetError::NotFound(format!(
                    "could not find plugin {other} in v1 plugin registry: plugin not found"
                )))
            }
        }
        match body["Scope"].as_str().unwrap_or("") {
            "" | "local" => {}
            other => return Err(NetError::Invalid(format!("invalid scope {other:?}: Berth has local networks only"))),
        }
        if body["Ingress"].as_bool() == Some(true) {
            return Err(NetError::Forbidden("Ingress networks are only supported in swarm mode".into()));
        }
        if body["ConfigOnly"].as_bool() == Some(true)
            || !body["ConfigFrom"]["Network"].as_str().unwrap_or("").is_empty()
        {
            return Err(NetError::Invalid("config-only networks are not supported by Berth yet".into()));
        }
        match body["IPAM"]["Driver"].as_str().unwrap_or("") {
            "" | "default" => {}
            other => return Err(NetError::NotFound(format!("plugin {other:?} not found"))),
        }
        let ipam_config: Vec<Value> =
            body["IPAM"]["Config"].as_array().into_iter().flatten().map(echoed_ipam_entry).collect();
        let enable_ipv6 = body["EnableIPv6"].as_bool().unwrap_or(false);
        let parsed = ipam::parse_config(&ipam_config, enable_ipv6).map_err(NetError::Invalid)?;
        let in_use: BTreeMap<String, Vec<Ipv4Net>> =
            state.iter().map(|n| (n.name.clone(), n.pools.iter().map(|p| p.subnet).collect())).collect();
        let mut pools = parsed.pools;
        for pool in &pools {
            if ipam::overlapping(&pool.subnet, &in_use).is_some() {
                return Err(NetError::Forbidden(
                    "invalid pool request: Pool overlaps with other one on this address space".into(),
                ));
            }
        }
        if pools.is_empty() {
            let used: Vec<Ipv4Net> = in_use.values().flatten().copied().collect();
            let subnet = ipam::next_pool(&used, &self.config.reserved).ok_or_else(|| {
                NetError::Forbidden(
                    "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
                )
            })?;
            pools.push(Pool::with_default_gateway(subnet));
        }
        let mut net = new_network(&name, "bridge");
        net.pools = pools;
        net.ipam_config = ipam_config;
        net.ipam_options = body["IPAM"]["Options"].clone();
        net.internal = body["Internal"].as_bool().unwrap_or(false);
        net.attachable = body["Attachable"].as_bool().unwrap_or(false);
        net.enable_ipv6 = enable_ipv6;
        net.options = string_map(&body["Options"]);
        net.labels = string_map(&body["Labels"]);
        net.bridge = match net.options.get("com.docker.network.bridge.name") {
            Some(given) if given.len() > 15 || given.is_empty() => {
                return Err(NetError::Invalid(format!("invalid bridge name {given:?}")))
            }
            Some(given) => given.clone(),
            None => format!("br-{}", &net.id[..12]),
        };
        if state.iter().any(|n| n.bridge == net.bridge) {
            return Err(NetError::Forbidden(format!("bridge name {} is in use by another network", net.bridge)));
        }
        self.ensure_bridge(&net).inspect_err(|_| {
            let _ = link::delete(self.root(), &net.bridge);
        })?;
        self.save(&net)?;
        state.push(net.clone());
        self.apply_firewall(&state)?;
        Ok(json!({ "Id": net.id, "Warning": "" }))
    }

    /// Finds a network as dockerd does: exact ID, exact name, then a
    /// unique ID prefix.
    pub(super) fn find<'a>(state: &'a [Network], key: &str) -> Result<&'a Network, NetError> {
        if let Some(net) = state.iter().find(|n| n.id == key).or_else(|| state.iter().find(|n| n.name == key)) {
            return Ok(net);
        }
        let mut prefixed = state.iter().filter(|n| n.id.starts_with(key) && !key.is_empty());
        match (prefixed.next(), prefixed.next()) {
            (Some(net), None) => Ok(net),
            (Some(_), Some(_)) => Err(NetError::Invalid(format!("network {key} is ambiguous"))),
            _ => Err(not_found(key)),
        }
    }

    pub fn inspect(&self, key: &str) -> Result<Value, NetError> {
        Ok(Self::find(&self.lock(), key)?.docker_json())
    }

    /// The network's ID and name, for callers that must name it back.
    pub fn resolve(&self, key: &str) -> Result<(String, String), NetError> {
        let state = self.lock();
        let net = Self::find(&state, key)?;
        Ok((net.id.clone(), net.name.clone()))
    }

    /// `GET /networks`, filtered; networks with any attachment count as in
    /// use for `dangling`.
    pub fn list(&self, filters_json: &str) -> Result<Value, NetError> {
        let filters: Value = if filters_json.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(filters_json).map_err(|e| NetError::Invalid(format!("invalid filter: {e}")))?
        };
        let state = self.lock();
        let mut listed = Vec::new();
        let mut sorted: Vec<&Network> = state.iter().collect();
        sorted.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        for net in sorted {
            if filter_matches(&filters, net, !net.attachments.is_empty()).map_err(NetError::Invalid)? {
                listed.push(net.docker_json());
            }
        }
        Ok(Value::Array(listed))
    }

    /// `DELETE /networks/{id}`.
    pub fn remove(&self, key: &str) -> Result<(), NetError> {
        let mut state = self.lock();
        let net = Self::find(&state, key)?.clone();
        if net.is_predefined() {
            return Err(NetError::Forbidden(format!("{} is a pre-defined network and cannot be removed", net.name)));
        }
        if net.active_endpoints().next().is_some() {
            return Err(NetError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                net.name, net.id
            )));
        }
        self.drop_network(&mut state, &net)
    }

    fn drop_network(&self, state: &mut Vec<Network>, net: &Network) -> Result<(), NetError> {
        link::delete(self.root(), &net.bridge)?;
        let path = self.config.records.join(format!("{}.json", net.id));
        std::fs::remove_file(&path).or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) })?;
        crate::durable::sync_dir(&self.config.records)?;
        state.retain(|n| n.id != net.id);
        self.apply_firewall(state)?;
        Ok(())
    }

    /// `POST /networks/prune`: user networks without active endpoints, by
    /// `until` and `label` filters; answers `{NetworksDeleted}`.
    pub fn prune(&self, filters_json: &str, now_ns: i64) -> Result<Value, NetError> {
        let filters: Value = if filters_json.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(filters_json).map_err(|e| NetError::Invalid(format!("invalid filter: {e}")))?
        };
        let values = |key: &str| -> Vec<String> {
            match &filters[key] {
                Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                Value::Object(o) => o.keys().cloned().collect(),
                _ => Vec::new(),
            }
        };
        let until = match values("until").as_slice() {
            [] => None,
            [one] => Some(berth_agent_proto::time::filter_time_ns(one, now_ns).map_err(NetError::Invalid)?),
            _ => return Err(NetError::Invalid("more than one until filter specified".into())),
        };
        let (labels, not_labels) = (values("label"), values("label!"));
        let mut state = self.lock();
        let doomed: Vec<Network> = state
            .iter()
            .filter(|n| !n.is_predefined() && n.active_endpoints().next().is_none())
            .filter(|n| until.is_none_or(|u| created_ns(&n.created) < u))
            .filter(|n| labels.iter().all(|l| label_matches(&n.labels, l)))
            .filter(|n| !not_labels.iter().any(|l| label_matches(&n.labels, l)))
            .cloned()
            .collect();
        let mut deleted = Vec::new();
        for net in doomed {
            self.drop_network(&mut state, &net)?;
            deleted.push(net.name);
        }
        Ok(json!({ "NetworksDeleted": deleted }))
    }
}

fn created_ns(rfc3339: &str) -> i64 {
    berth_agent_proto::time::filter_time_ns(rfc3339, i64::MAX).unwrap_or(0)
}

/// An `IPAM.Config` entry as dockerd echoes it: its fields are `omitempty`,
/// so what a client sent as null or "" (docker-py sends every key) is gone.
fn echoed_ipam_entry(entry: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    for (key, value) in entry.as_object().into_iter().flatten() {
        let empty = match value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            kept.insert(key.clone(), value.clone());
        }
    }
    Value::Object(kept)
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
        .collect()
}

pub(super) fn new_network(name: &str, driver: &str) -> Network {
    Network {
        id: random_hex(64),
        name: name.into(),
        driver: driver.into(),
        created: berth_agent_proto::time::rfc3339(berth_agent_proto::time::now_ns()),
        internal: false,
        attachable: false,
        ingress: false,
        enable_ipv6: false,
        ipam_driver: "default".into(),
        ipam_options: Value::Null,
        ipam_config: Vec::new(),
        pools: Vec::new(),
        options: BTreeMap::new(),
        labels: BTreeMap::new(),
        bridge: String::new(),
        attachments: BTreeMap::new(),
    }
}

/// The default bridge's options as dockerd reports them.
fn default_bridge_options() -> BTreeMap<String, String> {
    [
        ("com.docker.network.bridge.default_bridge", "true"),
        ("com.docker.network.bridge.enable_icc", "true"),
        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
        ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
        ("com.docker.network.bridge.name", DEFAULT_BRIDGE),
        ("com.docker.network.driver.mtu", "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_entries_are_echoed_without_their_empty_fields() {
        let sent = json!({"Subnet": "172.28.0.0/16", "IPRange": null, "Gateway": "", "AuxiliaryAddresses": {}});
        assert_eq!(echoed_ipam_entry(&sent), json!({"Subnet": "172.28.0.0/16"}));
        let full = json!({"Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24", "Gateway": "172.28.5.254",
            "AuxiliaryAddresses": {"a": "172.28.1.5"}});
        assert_eq!(echoed_ipam_entry(&full), full);
        assert_eq!(
            nameserver_nets("nameserver 10.0.2.3\nnameserver ::1\n"),
            ["10.0.2.3/32".parse::<Ipv4Net>().unwrap()]
        );
    }
}
