//! Containers on networks: the attachments a create or connect records,
//! the endpoints made when the container runs (its namespace file first,
//! then a veth pair per network, so the process starts with its network
//! ready), and what others ask about them: inspect's `NetworkSettings`,
//! the address to dial for a published port, the names the embedded DNS
//! server answers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::ipam;
use super::link::{self, EndpointPlan};
use super::netns;
use super::network::{Attachment, Endpoint, Network};
use super::store::{not_found, random_hex, NetError, Networks};

/// What a create or connect asks of one network (Docker's
/// `EndpointSettings`, the parts a client sets).
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    pub aliases: Vec<String>,
    pub links: Vec<String>,
    pub ipam_config: Value,
    pub driver_opts: Value,
    pub mac_address: String,
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
}

impl EndpointRequest {
    pub fn from_settings(settings: &Value) -> EndpointRequest {
        EndpointRequest {
            aliases: strings(&settings["Aliases"]),
            links: strings(&settings["Links"]),
            ipam_config: settings["IPAMConfig"].clone(),
            driver_opts: settings["DriverOpts"].clone(),
            mac_address: settings["MacAddress"].as_str().unwrap_or("").to_string(),
        }
    }
}

/// Where to reach a container's port: its address on its first network,
/// from inside `netns` (the root namespace; `None`: the caller's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    pub netns: Option<PathBuf>,
    pub ip: Ipv4Addr,
    /// The subnet `ip` is on: a client inside it cannot be the source of
    /// a dialled connection (the container would answer it on the bridge).
    pub subnet: Option<ipnet::Ipv4Net>,
}

/// One name the embedded DNS server answers for a container: `name`
/// resolves to `ip` on network `network_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    pub name: String,
    pub ip: Ipv4Addr,
    pub network_id: String,
    pub network_name: String,
    /// The container that owns the address (its full ID).
    pub container_id: String,
}

/// The network a `HostConfig.NetworkMode` names; `None` for the modes that
/// attach to no network (`host`, `none`, `container:X`).
pub fn mode_network(mode: &str) -> Option<&str> {
    match mode {
        "" | "default" | "bridge" => Some("bridge"),
        "host" | "none" => None,
        other if other.starts_with("container:") => None,
        other => Some(other),
    }
}

fn check_request(net: &Network, request: &EndpointRequest) -> Result<(), NetError> {
    if net.driver != "bridge" {
        return Ok(());
    }
    if !request.aliases.is_empty() && !net.is_user_defined() {
        return Err(NetError::Invalid(
            "network-scoped alias is supported only for containers in user defined networks".into(),
        ));
    }
    let ip = request.ipam_config["IPv4Address"].as_str().unwrap_or("");
    if !ip.is_empty() {
        if !net.is_user_defined() {
            return Err(NetError::Invalid(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        if net.ipam_config.is_empty() {
            return Err(NetError::Invalid(
                "user specified IP address is supported only when connecting to networks with user configured subnets"
                    .into(),
            ));
        }
        let parsed: Ipv4Addr = ip.parse().map_err(|_| NetError::Invalid(format!("invalid IPv4 address: {ip}")))?;
        if !net.pools.iter().any(|p| p.subnet.contains(&parsed)) {
            return Err(NetError::Invalid(format!("no configured subnet or ip-range contain the IP address {ip}")));
        }
    }
    if !request.mac_address.is_empty() && ipam::parse_mac(&request.mac_address).is_none() {
        return Err(NetError::Invalid(format!("invalid MAC address: {}", request.mac_address)));
    }
    Ok(())
}

impl Networks {
    /// The namespace file of a container's sandbox (`SandboxKey`).
    pub fn sandbox_path(&self, container_id: &str) -> PathBuf {
        self.config.sandboxes.join(container_id)
    }

    /// Records what a create asks for: the network of its NetworkMode and
    /// those of `NetworkingConfig.EndpointsConfig`, checked as dockerd
    /// checks them.
    pub fn configure(
        &self,
        container_id: &str,
        name: &str,
        network_mode: &str,
        endpoints: &Value,
        container_mac: &str,
    ) -> Result<(), NetError> {
        let mut wanted: Vec<(String, EndpointRequest)> = Vec::new();
        let configs = endpoints.as_object().cloned().unwrap_or_default();
        if let Some(primary) = mode_network(network_mode) {
            let settings = configs
                .iter()
                .find(|(k, _)| k.as_str() == primary || (primary == "bridge" && k.as_str() == "default"))
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null);
            let mut request = EndpointRequest::from_settings(&settings);
            if request.mac_address.is_empty() {
                request.mac_address = container_mac.to_string();
            }
            wanted.push((primary.to_string(), request));
        } else if !configs.is_empty() && network_mode.starts_with("container:") {
            return Err(NetError::Invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        for (key, settings) in &configs {
            if mode_network(network_mode).is_some_and(|p| p == key || (p == "bridge" && key == "default")) {
                continue;
            }
            if mode_network(network_mode).is_none() {
                continue;
            }
            wanted.push((key.clone(), EndpointRequest::from_settings(settings)));
        }
        let mut state = self.lock();
        let mut targets = Vec::new();
        for (key, request) in wanted {
            // As dockerd: a network that does not exist fails the start
            // (404), not the create.
            let net = match Self::find(&state, &key) {
                Ok(net) => net,
                Err(NetError::NotFound(_)) => continue,
                Err(err) => return Err(err),
            };
            check_request(net, &request)?;
            if net.driver == "bridge" {
                targets.push((net.id.clone(), request));
            }
        }
        let now = berth_agent_proto::time::now_ns();
        for (i, (id, request)) in targets.into_iter().enumerate() {
            let net = state.iter_mut().find(|n| n.id == id).expect("found above");
            net.attachments.insert(container_id.to_string(), new_attachment(name, request, now + i as i64));
            self.save(net)?;
        }
        Ok(())
    }

    /// Drops every attachment of a removed container.
    pub fn forget(&self, container_id: &str) -> Result<(), NetError> {
        self.teardown(container_id)?;
        let mut state = self.lock();
        for net in state.iter_mut() {
            if net.attachments.remove(container_id).is_some() {
                self.save(net)?;
            }
        }
        Ok(())
    }

    /// Keeps the attachments' container name in step with a rename.
    pub fn rename(&self, container_id: &str, new_name: &str) -> Result<(), NetError> {
        let mut state = self.lock();
        for net in state.iter_mut() {
            if let Some(a) = net.attachments.get_mut(container_id) {
                a.container_name = new_name.to_string();
                self.save(net)?;
            }
        }
        Ok(())
    }

    /// Makes the container's namespace and an endpoint on each network it
    /// is attached to; returns the namespace file for the runtime to join.
    /// On failure nothing is left behind.
    pub fn setup(&self, container_id: &str, hostname: &str) -> Result<PathBuf, NetError> {
        let sandbox = self.sandbox_path(container_id);
        netns::create(&sandbox)?;
        let mut state = self.lock();
        let mut order: Vec<(i64, String)> =
            state.iter().filter_map(|n| n.attachments.get(container_id).map(|a| (a.seq, n.id.clone()))).collect();
        order.sort();
        let mut result = Ok(());
        for (_, net_id) in order {
            if let Err(err) = self.plug(&mut state, &net_id, container_id, hostname, &sandbox) {
                result = Err(err);
                break;
            }
        }
        if let Err(err) = result {
            drop(state);
            let _ = self.teardown(container_id);
            return Err(err);
        }
        self.apply_firewall(&state)?;
        Ok(sandbox)
    }

    /// Makes one endpoint (the caller holds the state and applies the
    /// firewall after).
    fn plug(
        &self,
        state: &mut [Network],
        net_id: &str,
        container_id: &str,
        hostname: &str,
        sandbox: &Path,
    ) -> Result<(), NetError> {
        let taken: Vec<Ipv4Addr> = state
            .iter()
            .filter(|n| n.id == net_id)
            .flat_map(|n| n.active_endpoints().map(|(_, _, e)| e.ip).collect::<Vec<_>>())
            .collect();
        let others_remembered: Vec<Ipv4Addr> = state
            .iter()
            .filter(|n| n.id == net_id)
            .flat_map(|n| {
                n.attachments.iter().filter(|(c, _)| c.as_str() != container_id).filter_map(|(_, a)| a.last_ip)
            })
            .collect();
        let interfaces =
            state.iter().filter(|n| n.attachments.get(container_id).is_some_and(|a| a.endpoint.is_some())).count();
        let has_route =
            state.iter().any(|n| !n.internal && n.attachments.get(container_id).is_some_and(|a| a.endpoint.is_some()));
        let net = state.iter_mut().find(|n| n.id == net_id).ok_or_else(|| not_found(net_id))?;
        let (net_name, bridge, internal) = (net.name.clone(), net.bridge.clone(), net.internal);
        let pools = net.pools.clone();
        let attachment = net.attachments.get_mut(container_id).ok_or_else(|| not_found(net_id))?;
        if attachment.endpoint.is_some() {
            return Ok(());
        }
        let (pool, ip) = match attachment.requested_ipv4() {
            Some(ip) => {
                let pool = pools.iter().find(|p| p.subnet.contains(&ip)).ok_or_else(|| {
                    NetError::Invalid(format!("no configured subnet or ip-range contain the IP address {ip}"))
                })?;
                if taken.contains(&ip) || !pool.accepts(ip) {
                    return Err(NetError::Forbidden("Address already in use".into()));
                }
                (pool.clone(), ip)
            }
            None => {
                let remembered = attachment.last_ip.filter(|ip| {
                    !taken.contains(ip)
                        && pools.iter().any(|p| p.accepts(*ip) && p.ip_range.is_none_or(|r| r.contains(ip)))
                });
                let found = match remembered {
                    Some(ip) => pools.iter().find(|p| p.subnet.contains(&ip)).map(|p| (p.clone(), ip)),
                    None => pools.iter().find_map(|p| {
                        p.allocate(|ip| taken.contains(&ip), |ip| others_remembered.contains(&ip))
                            .map(|ip| (p.clone(), ip))
                    }),
                };
                found.ok_or_else(|| {
                    NetError::Forbidden(format!(
                        "no available IPv4 addresses on this network's address pools: {net_name}"
                    ))
                })?
            }
        };
        let mac_text =
            if attachment.mac_address.is_empty() { ipam::mac_for(ip) } else { attachment.mac_address.to_lowercase() };
        let mac =
            ipam::parse_mac(&mac_text).ok_or_else(|| NetError::Invalid(format!("invalid MAC address: {mac_text}")))?;
        let host_veth = format!("veth{}", random_hex(7));
        let plan = EndpointPlan {
            bridge,
            host_veth: host_veth.clone(),
            container_netns: sandbox.to_path_buf(),
            ifname: format!("eth{interfaces}"),
            mac,
            ip,
            prefix: pool.subnet.prefix_len(),
            default_route: (!internal && !has_route).then_some(pool.gateway),
        };
        link::add_endpoint(self.root(), &plan)?;
        attachment.hostname = hostname.to_string();
        attachment.last_ip = Some(ip);
        attachment.endpoint = Some(Endpoint {
            id: random_hex(64),
            ip,
            prefix: plan.prefix,
            gateway: pool.gateway,
            mac: mac_text,
            host_veth,
            ifname: plan.ifname,
        });
        self.save(net)?;
        Ok(())
    }

    /// Removes the container's endpoints and namespace (it stopped). The
    /// attachments stay, with the address each had.
    pub fn teardown(&self, container_id: &str) -> Result<(), NetError> {
        let mut state = self.lock();
        let mut first_err = None;
        for net in state.iter_mut() {
            let Some(attachment) = net.attachments.get_mut(container_id) else { continue };
            let Some(endpoint) = attachment.endpoint.take() else { continue };
            attachment.last_ip = Some(endpoint.ip);
            if let Err(e) = link::delete(self.config.root.as_deref(), &endpoint.host_veth) {
                first_err.get_or_insert(NetError::from(e));
            }
            self.save(net)?;
        }
        netns::remove(&self.sandbox_path(container_id))?;
        self.apply_firewall(&state)?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `POST /networks/{id}/connect`. `running`: the container's sandbox
    /// exists and gets the endpoint now.
    pub fn connect(
        &self,
        key: &str,
        container_id: &str,
        name: &str,
        network_mode: &str,
        settings: &Value,
        running: Option<&str>,
    ) -> Result<(), NetError> {
        if mode_network(network_mode).is_none() && network_mode != "none" {
            return Err(NetError::Invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        let request = EndpointRequest::from_settings(settings);
        let mut state = self.lock();
        let net = Self::find(&state, key)?.clone();
        if net.driver != "bridge" {
            return Err(NetError::Forbidden(
                "container cannot be disconnected from host network or connected to host network".into(),
            ));
        }
        if net.attachments.contains_key(container_id) {
            // dockerd's words (daemon/container_operations.go).
            return Err(NetError::Conflict(format!("{name} is already attached to network {}", net.name)));
        }
        check_request(&net, &request)?;
        let entry = state.iter_mut().find(|n| n.id == net.id).expect("found above");
        entry
            .attachments
            .insert(container_id.to_string(), new_attachment(name, request, berth_agent_proto::time::now_ns()));
        self.save(entry)?;
        if let Some(hostname) = running {
            let sandbox = self.sandbox_path(container_id);
            if let Err(err) = self.plug(&mut state, &net.id, container_id, hostname, &sandbox) {
                let entry = state.iter_mut().find(|n| n.id == net.id).expect("found above");
                entry.attachments.remove(container_id);
                self.save(entry)?;
                return Err(err);
            }
            self.apply_firewall(&state)?;
        }
        Ok(())
    }

    /// `POST /networks/{id}/disconnect`.
    pub fn disconnect(&self, key: &str, container_id: &str, container_name: &str) -> Result<(), NetError> {
        let mut state = self.lock();
        let net = Self::find(&state, key)?.clone();
        let Some(attachment) = net.attachments.get(container_id) else {
            return Err(NetError::Forbidden(format!(
                "container {container_name} is not connected to network {}",
                net.name
            )));
        };
        if let Some(endpoint) = &attachment.endpoint {
            link::delete(self.root(), &endpoint.host_veth)?;
        }
        let entry = state.iter_mut().find(|n| n.id == net.id).expect("found above");
        entry.attachments.remove(container_id);
        self.save(entry)?;
        self.apply_firewall(&state)?;
        Ok(())
    }

    /// The names of the networks a container is attached to.
    pub fn attached(&self, container_id: &str) -> Vec<String> {
        self.lock().iter().filter(|n| n.attachments.contains_key(container_id)).map(|n| n.name.clone()).collect()
    }

    /// Whether the container is on a user-defined network (its resolver
    /// is then the embedded DNS server).
    pub fn on_user_network(&self, container_id: &str) -> bool {
        self.lock().iter().any(|n| n.is_user_defined() && n.attachments.contains_key(container_id))
    }

    /// Whether every network the container is on is internal (its DNS
    /// server then forwards nothing).
    pub fn only_internal(&self, container_id: &str) -> bool {
        let state = self.lock();
        let mut attached = state.iter().filter(|n| n.attachments.contains_key(container_id)).peekable();
        attached.peek().is_some() && attached.all(|n| n.internal)
    }

    /// The container's live addresses, first network first.
    pub fn addresses(&self, container_id: &str) -> Vec<Ipv4Addr> {
        let state = self.lock();
        let mut found: Vec<(i64, Ipv4Addr)> = state
            .iter()
            .filter_map(|n| n.attachments.get(container_id))
            .filter_map(|a| a.endpoint.as_ref().map(|e| (a.seq, e.ip)))
            .collect();
        found.sort();
        found.into_iter().map(|(_, ip)| ip).collect()
    }

    /// The container's address on the default bridge (legacy links).
    pub fn default_bridge_ip(&self, container_id: &str) -> Option<Ipv4Addr> {
        let state = self.lock();
        let net = state.iter().find(|n| n.is_default_bridge())?;
        net.attachments.get(container_id)?.endpoint.as_ref().map(|e| e.ip)
    }

    /// Where a published port of the container is dialled (for the ports
    /// forwarder): its first live address, from the root namespace.
    pub fn dial_target(&self, container_id: &str) -> Option<DialTarget> {
        let ip = *self.addresses(container_id).first()?;
        let subnet = self.lock().iter().flat_map(|n| &n.pools).map(|p| p.subnet).find(|s| s.contains(&ip));
        Some(DialTarget { netns: self.config.root.clone(), ip, subnet })
    }

    /// Every name container `container_id` can resolve on its user-defined
    /// networks, as dockerd's embedded DNS answers them: each running
    /// container on a shared network by name, network aliases, short ID
    /// and hostname, plus this container's own links on that network
    /// (`target:alias`, visible to it alone).
    pub fn visible_names(&self, container_id: &str) -> Vec<DnsName> {
        let state = self.lock();
        let mut names = Vec::new();
        for net in state.iter().filter(|n| n.is_user_defined() && n.attachments.contains_key(container_id)) {
            let mut push = |name: &str, ip: Ipv4Addr, owner: &str| {
                if !name.is_empty() {
                    names.push(DnsName {
                        name: name.to_string(),
                        ip,
                        network_id: net.id.clone(),
                        network_name: net.name.clone(),
                        container_id: owner.to_string(),
                    });
                }
            };
            for (owner, attachment, endpoint) in net.active_endpoints() {
                push(&attachment.container_name, endpoint.ip, owner);
                for alias in &attachment.aliases {
                    push(alias, endpoint.ip, owner);
                }
                push(&owner[..12.min(owner.len())], endpoint.ip, owner);
                push(&attachment.hostname, endpoint.ip, owner);
            }
            let links = net.attachments.get(container_id).map(|a| a.links.clone()).unwrap_or_default();
            for link in links {
                let (target, alias) = link.split_once(':').unwrap_or((&link, &link));
                let found =
                    net.active_endpoints().find(|(id, a, _)| a.container_name == target || id.starts_with(target));
                if let Some((owner, _, endpoint)) = found {
                    push(alias, endpoint.ip, owner);
                }
            }
        }
        names
    }

    /// Docker's `NetworkSettings` of a container inspect. `network_mode`
    /// is its HostConfig.NetworkMode; `running` whether it has a sandbox.
    pub fn network_settings(&self, container_id: &str, hostname: &str, network_mode: &str, running: bool) -> Value {
        let state = self.lock();
        let mut networks = serde_json::Map::new();
        for net in state.iter() {
            if net.attachments.contains_key(container_id) {
                networks.insert(net.name.clone(), net.endpoint_settings(container_id, hostname));
            }
        }
        if let Some(net) = state.iter().find(|n| n.name == network_mode && n.driver != "bridge") {
            // host and none: an endpoint without addresses, as dockerd shows.
            networks.insert(
                net.name.clone(),
                json!({
                    "IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "", "DriverOpts": null,
                    "NetworkID": net.id, "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                    "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": null,
                }),
            );
        }
        let bridge = networks.get("bridge").cloned().unwrap_or(Value::Null);
        let field = |key: &str, zero: Value| bridge.get(key).cloned().unwrap_or(zero);
        let sandbox = if running && netns::is_netns(&self.sandbox_path(container_id)) {
            self.sandbox_path(container_id).display().to_string()
        } else {
            String::new()
        };
        json!({
            "Bridge": "",
            "SandboxID": if sandbox.is_empty() { String::new() } else { container_id.to_string() },
            "SandboxKey": sandbox,
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": {},
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": field("EndpointID", json!("")),
            "Gateway": field("Gateway", json!("")),
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": field("IPAddress", json!("")),
            "IPPrefixLen": field("IPPrefixLen", json!(0)),
            "IPv6Gateway": "",
            "MacAddress": field("MacAddress", json!("")),
            "Networks": networks,
        })
    }
}

pub(super) fn new_attachment(name: &str, request: EndpointRequest, seq: i64) -> Attachment {
    Attachment {
        container_name: name.to_string(),
        aliases: request.aliases,
        links: request.links,
        ipam_config: request.ipam_config,
        driver_opts: request.driver_opts,
        mac_address: request.mac_address,
        last_ip: None,
        seq,
        hostname: String::new(),
        endpoint: None,
    }
}
