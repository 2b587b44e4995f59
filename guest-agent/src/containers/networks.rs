//! Containers and their networks in the agent: the engine's network store
//! (`berth_engine::net`) loaded with the data disk, the namespace each run
//! joins, the etc files and link environment made from it, and the
//! network API's verbs that need to know containers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_engine::container::{Container, Status};
use berth_engine::net::attach::mode_network;
use berth_engine::net::etc::{self, EtcInput};
use berth_engine::net::store::{self, NetConfig, NetError, Networks};
use serde_json::Value;

use crate::error::{AgentError, ErrorKind};

use super::{Containers, Entry};

impl From<NetError> for AgentError {
    fn from(err: NetError) -> AgentError {
        let kind = match &err {
            NetError::NotFound(_) => ErrorKind::NotFound,
            NetError::Conflict(_) => ErrorKind::Conflict,
            NetError::Forbidden(_) => ErrorKind::Forbidden,
            NetError::Invalid(_) => ErrorKind::Invalid,
            NetError::Internal(_) => ErrorKind::Internal,
        };
        AgentError::new(kind, err.to_string())
    }
}

/// Where a run's network namespace comes from.
pub(super) struct NetworkJoin {
    /// The namespace file to join; `None`: the spec's own choice (a new
    /// namespace for `none`, the VM's for `host`).
    pub netns: Option<PathBuf>,
    /// Legacy link variables (`DB_PORT=tcp://...`).
    pub env: Vec<String>,
    /// Whether `setup` made endpoints that a failed start must undo.
    pub owns_endpoints: bool,
}

/// The record's typed Config and HostConfig as Docker's JSON, which the
/// network code reads a few keys of.
fn config_json(record: &Container) -> Value {
    serde_json::to_value(&record.config).unwrap_or_default()
}

fn host_json(record: &Container) -> Value {
    serde_json::to_value(&record.host_config).unwrap_or_default()
}

/// The alias of a `HostConfig.Links` entry: `name:alias`, `/name:/parent/alias`,
/// or a bare `name` (its own alias).
fn link_alias(link: &str) -> &str {
    let alias = link.split_once(':').map_or(link, |(_, alias)| alias);
    alias.rsplit('/').next().unwrap_or(alias)
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
}

impl Containers {
    /// The network store, loaded once the data disk is there.
    pub async fn networks(self: &Arc<Self>) -> Result<Arc<Networks>, AgentError> {
        let data = self.root.parent().unwrap_or(&self.root).to_path_buf();
        let reaper = self.reaper.clone();
        let local = self.local_network;
        let loaded = self
            .networks
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || load_networks(&data, local, reaper))
                    .await
                    .map_err(AgentError::from)?
            })
            .await?;
        Ok(loaded.clone())
    }

    /// Checks and records the networks a create asks for (before the
    /// container exists, so a refused network creates nothing).
    pub(super) async fn configure_networks(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        request: &Value,
        host_config: &Value,
    ) -> Result<(), AgentError> {
        let mode = host_config["NetworkMode"].as_str().unwrap_or("").to_string();
        if let Some(other) = mode.strip_prefix("container:") {
            self.lookup(other).await?;
        }
        for entry in strings(&host_config["ExtraHosts"]) {
            etc::check_extra_hosts(std::slice::from_ref(&entry)).map_err(AgentError::invalid)?;
        }
        let networks = self.networks().await?;
        let endpoints = request["NetworkingConfig"]["EndpointsConfig"].clone();
        let mac = request["MacAddress"].as_str().unwrap_or("").to_string();
        let (id, name) = (id.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || networks.configure(&id, &name, &mode, &endpoints, &mac)).await??;
        Ok(())
    }

    /// The namespace a run joins, made ready (endpoints up) before the
    /// container's process exists.
    pub(super) async fn join_network(self: &Arc<Self>, record: &Container) -> Result<NetworkJoin, AgentError> {
        let mode = host_json(record)["NetworkMode"].as_str().unwrap_or("").to_string();
        if let Some(other) = mode.strip_prefix("container:") {
            let other = self.lookup(other).await?.snapshot();
            if other.state.status != Status::Running || other.state.pid <= 0 {
                // dockerd's words.
                return Err(AgentError::conflict(format!(
                    "cannot join network of a non running container: {}",
                    other.id
                )));
            }
            let networks = self.networks().await?;
            let sandbox = networks.sandbox_path(&other.id);
            let netns = if berth_engine::net::netns::is_netns(&sandbox) {
                sandbox
            } else {
                PathBuf::from(format!("/proc/{}/ns/net", other.state.pid))
            };
            return Ok(NetworkJoin { netns: Some(netns), env: Vec::new(), owns_endpoints: false });
        }
        if mode_network(&mode).is_none() {
            return Ok(NetworkJoin { netns: None, env: Vec::new(), owns_endpoints: false });
        }
        let networks = self.networks().await?;
        if let Some(name) = mode_network(&mode) {
            // dockerd's 404 at start for a network that is not (or no
            // longer) there.
            networks.resolve(name)?;
            let attached = networks.attached(&record.id);
            if !attached.iter().any(|n| n == name) && name != "bridge" {
                let (_, net_name) = networks.resolve(name)?;
                if !attached.contains(&net_name) {
                    return Err(AgentError::not_found(format!("network {name} not found")));
                }
            }
        }
        let (id, hostname) = (record.id.clone(), config_json(record)["Hostname"].as_str().unwrap_or("").to_string());
        let netns = {
            let networks = networks.clone();
            tokio::task::spawn_blocking(move || networks.setup(&id, &hostname)).await??
        };
        if networks.on_user_network(&record.id) {
            self.start_dns(&networks, record, &netns).await;
        }
        let env = self.link_env(record).await;
        Ok(NetworkJoin { netns: Some(netns), env, owns_endpoints: true })
    }

    /// Serves the embedded DNS server in a container's namespace, before
    /// its process runs (a first-command `nslookup web` must be answered).
    async fn start_dns(self: &Arc<Self>, networks: &Networks, record: &Container, netns: &Path) {
        use berth_engine::dns::resolvers::Forwarding;
        let Some(dns) = self.dns.get() else { return };
        let servers: Vec<std::net::IpAddr> =
            strings(&host_json(record)["Dns"]).iter().filter_map(|s| s.parse().ok()).collect();
        // dockerd's choice: --dns servers if given; nothing out of a
        // container whose networks are all internal; else the host.
        let forwarding = if networks.only_internal(&record.id) {
            Forwarding::Nowhere
        } else if !servers.is_empty() {
            Forwarding::Servers(servers)
        } else {
            Forwarding::Host
        };
        if let Err(err) = dns.start(&record.id, netns, forwarding).await {
            // The container runs; only its names do not resolve. Said loudly.
            tracing::error!(id = %record.id, %err, "the embedded DNS server did not start");
        }
    }

    /// The names container `id` resolves (its user networks), for DNS.
    pub fn visible_names(&self, id: &str) -> Vec<berth_engine::dns::VisibleName> {
        let Some(networks) = self.networks.get() else { return Vec::new() };
        networks
            .visible_names(id)
            .into_iter()
            .map(|n| berth_engine::dns::VisibleName {
                name: n.name,
                address: std::net::IpAddr::V4(n.ip),
                network: n.network_name,
            })
            .collect()
    }

    /// Hands the containers their DNS servers (once, at start-up).
    pub fn serve_dns(&self, resolvers: berth_engine::dns::resolvers::EmbeddedResolvers) {
        let _ = self.dns.set(Arc::new(resolvers));
    }

    /// Removes a stopped container's endpoints and namespace.
    pub(super) async fn leave_networks(self: &Arc<Self>, id: &str) {
        if let Some(dns) = self.dns.get() {
            dns.stop(id);
        }
        let Ok(networks) = self.networks().await else { return };
        let id = id.to_string();
        let result = tokio::task::spawn_blocking(move || networks.teardown(&id)).await;
        if let Ok(Err(err)) = result {
            tracing::warn!(%err, "removing a container's endpoints failed");
        }
    }

    /// Forgets a removed container's attachments.
    pub(super) async fn forget_networks(self: &Arc<Self>, id: &str) {
        let Ok(networks) = self.networks().await else { return };
        let id = id.to_string();
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || networks.forget(&id)).await {
            tracing::warn!(%err, "forgetting a container's networks failed");
        }
    }

    /// Legacy `--link name:alias` targets: (alias, the linked container).
    async fn links_of(self: &Arc<Self>, record: &Container) -> Vec<(String, Container)> {
        let mut found = Vec::new();
        for link in strings(&host_json(record)["Links"]) {
            let target = link.split_once(':').map_or(link.as_str(), |(target, _)| target);
            let target = target.trim_start_matches('/');
            let alias = link_alias(&link).to_string();
            if let Ok(entry) = self.lookup(target).await {
                found.push((alias, entry.snapshot()));
            }
        }
        found
    }

    /// Docker's link environment: `ALIAS_NAME`, `ALIAS_PORT*`, `ALIAS_ENV_*`.
    async fn link_env(self: &Arc<Self>, record: &Container) -> Vec<String> {
        let Ok(networks) = self.networks().await else { return Vec::new() };
        let mut env = Vec::new();
        for (alias, target) in self.links_of(record).await {
            let Some(ip) = networks.default_bridge_ip(&target.id) else { continue };
            env.extend(berth_engine::net::links::link_env(&alias, &record.name, &target, ip));
        }
        env
    }

    /// Writes the run's /etc/hosts and /etc/resolv.conf from its networks
    /// (in place: they are bound into a running container).
    pub(super) async fn write_network_files(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<(), AgentError> {
        let record = entry.snapshot();
        let (config, hc) = (config_json(&record), host_json(&record));
        let mode = hc["NetworkMode"].as_str().unwrap_or("");
        if mode == "host" || mode.starts_with("container:") {
            // bundle.rs already wrote the VM's (host) or the files stay
            // the image's defaults; the other container's own are not ours.
            return Ok(());
        }
        let networks = self.networks().await?;
        let mut links = Vec::new();
        for (alias, target) in self.links_of(&record).await {
            if let Some(ip) = networks.default_bridge_ip(&target.id) {
                links.push((ip, vec![alias, target.id[..12].to_string(), target.name.clone()]));
            }
        }
        let input = EtcInput {
            hostname: config["Hostname"].as_str().unwrap_or(""),
            domainname: config["Domainname"].as_str().unwrap_or(""),
            addresses: networks.addresses(&record.id),
            extra_hosts: strings(&hc["ExtraHosts"]),
            links,
            dns: strings(&hc["Dns"]),
            dns_search: strings(&hc["DnsSearch"]),
            dns_options: strings(&hc["DnsOptions"]),
            embedded_dns: networks.on_user_network(&record.id),
        };
        let vm_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let hosts = etc::hosts(&input);
        let resolv = etc::resolv_conf(&input, &vm_resolv);
        let dir = entry.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            write_in_place(&dir.join("hosts"), &hosts)?;
            write_in_place(&dir.join("resolv.conf"), &resolv)
        })
        .await?
        .map_err(|e| AgentError::internal(format!("writing the container's network files: {e}")))
    }

    /// `POST /networks/{id}/connect`.
    pub async fn connect_network(
        self: &Arc<Self>,
        network: &str,
        container: &str,
        settings: Value,
    ) -> Result<(), AgentError> {
        let networks = self.networks().await?;
        networks.resolve(network)?;
        let entry = self.lookup(container).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        let running = record.state.status.is_running();
        let mode = host_json(&record)["NetworkMode"].as_str().unwrap_or("").to_string();
        let hostname = config_json(&record)["Hostname"].as_str().unwrap_or("").to_string();
        let (net, id, name) = (network.to_string(), record.id.clone(), record.name.clone());
        let n = networks.clone();
        tokio::task::spawn_blocking(move || {
            n.connect(&net, &id, &name, &mode, &settings, running.then_some(hostname.as_str()))
        })
        .await??;
        if running {
            self.write_network_files(&entry).await?;
        }
        let (net_id, _) = networks.resolve(network)?;
        self.events.emit("network", "connect", &net_id, serde_json::json!({"container": record.id}));
        Ok(())
    }

    /// `POST /networks/{id}/disconnect`. A container that is gone can
    /// still be disconnected with `force`, by name, as dockerd allows.
    pub async fn disconnect_network(
        self: &Arc<Self>,
        network: &str,
        container: &str,
        force: bool,
    ) -> Result<(), AgentError> {
        let networks = self.networks().await?;
        let (net_id, _) = networks.resolve(network)?;
        let entry = match self.lookup(container).await {
            Ok(entry) => entry,
            Err(err) if force => {
                let _ = err;
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        let (net, id, name) = (network.to_string(), record.id.clone(), record.name.clone());
        let n = networks.clone();
        tokio::task::spawn_blocking(move || n.disconnect(&net, &id, &name)).await??;
        if record.state.status.is_running() {
            self.write_network_files(&entry).await?;
        }
        self.events.emit("network", "disconnect", &net_id, serde_json::json!({"container": record.id}));
        Ok(())
    }

    /// `DELETE /containers/{parent}/{alias}?link=1`: the legacy link
    /// `parent` made under `alias` goes, as dockerd's rmLink drops it from
    /// its link graph: the parent's /etc/hosts loses the alias (if it runs),
    /// its environment keeps the variables it started with, and the linked
    /// container is untouched. Unlike dockerd, the record forgets the link
    /// too, so it does not come back after a restart.
    pub async fn remove_link(self: &Arc<Self>, parent: &str, alias: &str) -> Result<(), AgentError> {
        let parent = parent.trim_start_matches('/');
        if alias.is_empty() {
            // dockerd resolves the name first, then refuses its own name.
            self.lookup(parent).await?;
            return Err(AgentError::internal("Conflict, cannot remove the default link name of the container"));
        }
        let missing = || super::no_such_container(&format!("{parent}/{alias}"));
        let entry = self.lookup(parent).await.map_err(|_| missing())?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        let made_here = |link: &str| link_alias(link) == alias;
        if !record.host_config.links.get().is_some_and(|links| links.iter().any(made_here)) {
            return Err(missing());
        }
        entry.update(|c| {
            if let Some(links) = c.host_config.links.get_mut() {
                links.0.retain(|link| !link.as_deref().is_some_and(made_here));
            }
        })?;
        if record.state.status.is_running() {
            self.write_network_files(&entry).await?;
        }
        Ok(())
    }

    /// At shutdown (containers stopped): a local agent's private root
    /// namespace goes, taking its bridges, so nothing stays mounted in the
    /// host's BERTH_HOME. The VM's own namespace ends with the VM.
    pub async fn release_network_root(self: &Arc<Self>) {
        let Some(networks) = self.networks.get() else { return };
        if let Some(root) = networks.root() {
            if let Err(err) = berth_engine::net::netns::remove(root) {
                tracing::warn!(%err, "removing the network namespace failed");
            }
        }
    }

    /// The container's inspect with its `NetworkSettings` from the store.
    pub async fn with_network_settings(self: &Arc<Self>, record: &Container, mut inspect: Value) -> Value {
        if let Ok(networks) = self.networks().await {
            let (config, hc) = (config_json(record), host_json(record));
            let mode = hc["NetworkMode"].as_str().unwrap_or("");
            let mode = match mode {
                "" | "default" => "bridge",
                other => other,
            };
            let hostname = config["Hostname"].as_str().unwrap_or("");
            let settings = networks.network_settings(&record.id, hostname, mode, record.state.status.is_running());
            let ports = inspect["NetworkSettings"]["Ports"].clone();
            inspect["NetworkSettings"] = settings;
            if !ports.is_null() {
                inspect["NetworkSettings"]["Ports"] = ports;
            }
        }
        inspect
    }
}

/// Rewrites a file without replacing it: a bind mount holds the inode.
fn write_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    std::fs::write(path, text)
}

/// The namespaces and firewall networking uses. In the VM: the VM's own
/// namespace. On the local backend the agent shares the host's namespace,
/// so bridges, veths and the nft table go into a private namespace of
/// their own (`<data>/netns-root`) instead: the host's interfaces, routes,
/// forwarding sysctl and ruleset are never touched, at the price of no
/// egress for local containers (their traffic stays among themselves).
fn load_networks(data: &Path, local: bool, reaper: crate::reaper::Reaper) -> Result<Arc<Networks>, AgentError> {
    let (sandboxes, root) = if local {
        (data.join("netns"), Some(data.join("netns-root")))
    } else {
        (PathBuf::from("/run/berth/netns"), None)
    };
    // In the VM, pools keep off its routes (the uplink) and nameservers, as
    // dockerd's InferReservedNetworks does. The local backend's private
    // namespace has no routes of its own to collide with: its pools are
    // dockerd's defaults as they are, whatever the host uses.
    let mut reserved = vec![store::service_subnet()];
    if !local {
        reserved.extend(
            berth_engine::net::link::routes(None).map_err(|e| AgentError::internal(format!("reading routes: {e}")))?,
        );
        reserved.extend(store::nameserver_nets(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()));
    }
    let config = NetConfig {
        records: data.join("networks"),
        sandboxes,
        root,
        reserved,
        firewall: Box::new(move |root, script| run_nft(&reaper, root, script)),
    };
    Ok(Arc::new(Networks::load(config)?))
}

/// `nft -f -` through the reaper (the agent is PID 1 in the VM: nobody
/// else may wait for its children), in `root`'s namespace.
fn run_nft(reaper: &crate::reaper::Reaper, root: Option<&Path>, script: &str) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    // Held open until the spawn has returned (the child joins it before exec).
    let netns = root.map(std::fs::File::open).transpose()?;
    let mut cmd = berth_engine::net::nft::nft_command(netns.as_ref().map(AsFd::as_fd));
    let (mut child, exit) = reaper.spawn(&mut cmd).map_err(|e| std::io::Error::new(e.kind(), format!("nft: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    std::io::Write::write_all(&mut stdin, script.as_bytes())?;
    drop(stdin);
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    let exit = reaper.wait_blocking(child.id() as i32, exit)?;
    if exit.code != 0 {
        return Err(std::io::Error::other(format!("nft: {}", stderr.trim())));
    }
    Ok(())
}
