//! Published ports on the host (`-p`, `-P`): the daemon owns the host's
//! sockets.
//!
//! - At `docker start` the API binds every port the container publishes
//!   before asking the agent to start it ([`Publisher::publish`]), so a taken
//!   port fails the start with dockerd's message and nothing stays bound;
//!   the bindings as bound (real host ports) go to the agent with the start
//!   and are kept in the container's record: inspect, `docker ps` and
//!   `docker port` show them from there.
//! - The sockets are released when the container stops (a wait on the
//!   agent ends), and at once by the API's stop and remove.
//! - Starts the API did not make (restart policies, a VM boot) and a
//!   restarted daemon are caught by [`Publisher::watch`]: the agent's start
//!   events and, after (re)connecting, its list of running containers; the
//!   bindings of the record are bound again. A daemon that dies takes its
//!   sockets with it (they are its descriptors), so no listener outlives it.
//!
//! `bind` binds (dockerd's rules and messages), `forward` moves the bytes.

mod bind;
mod forward;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::ports::{self, PortBinding, Proto};
use berth_agent_proto::{AgentKey, ContainerRef, EventsRequest, ListContainersRequest, WaitContainerRequest};
use serde_json::Value;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::agent_client::GuestTransport;
use bind::{Allocator, HostSocket};
use forward::Route;

/// Aborts its task when dropped (the task's sockets close with it).
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sockets of one run of a container.
struct Published {
    /// Which run: a release for an earlier one leaves a later one alone.
    generation: u64,
    bindings: Vec<PortBinding>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Publisher {
    guest: GuestTransport,
    key: AgentKey,
    /// Whether `--network host` containers publish: in a VM they are the
    /// VM's ports and need forwarding; a local agent's host network is this
    /// host's, where dockerd discards them.
    publish_host_network: bool,
    allocator: Mutex<Allocator>,
    active: Mutex<HashMap<String, Published>>,
    /// Held through a release until its sockets are closed: a second
    /// release of the same run (the API's stop racing the exit's wait)
    /// returns only once the first is done.
    releasing: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

/// What a start bound: given to the agent with the start.
pub struct Claim {
    pub id: String,
    generation: Option<u64>,
    pub bindings: Vec<PortBinding>,
}

impl Publisher {
    pub fn new(guest: GuestTransport, key: AgentKey, publish_host_network: bool) -> Arc<Publisher> {
        Arc::new(Publisher {
            guest,
            key,
            publish_host_network,
            allocator: Mutex::new(Allocator::from_system()),
            active: Mutex::new(HashMap::new()),
            releasing: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(1),
        })
    }

    fn publishes_for(&self, container: &Value) -> bool {
        self.publish_host_network || container["HostConfig"]["NetworkMode"].as_str() != Some("host")
    }

    /// Binds what `container` (its inspect JSON) publishes, for the start
    /// about to be made. Err: the start must fail with this message.
    pub async fn publish(self: &Arc<Self>, container: &Value) -> Result<Claim, String> {
        let id = container["Id"].as_str().unwrap_or_default().to_string();
        let none = Claim { id: id.clone(), generation: None, bindings: Vec::new() };
        if !self.publishes_for(container) {
            return Ok(none);
        }
        let requested = ports::requested(&container["HostConfig"], &container["Config"])?;
        // A previous run's sockets whose release has not come through yet.
        self.release(&id, None).await;
        if requested.is_empty() {
            return Ok(none);
        }
        let mut sockets = Vec::new();
        {
            let mut allocator = self.allocator.lock().unwrap();
            for request in &requested {
                match bind::bind_request(request, &mut allocator, |proto, address| self.holds(proto, address)) {
                    Ok(bound) => sockets.extend(bound),
                    Err(message) => {
                        let name = container["Name"].as_str().unwrap_or_default().trim_start_matches('/');
                        // dockerd's wrapping (libnetwork/endpoint.go); the sockets bound so far close here.
                        return Err(format!(
                            "driver failed programming external connectivity on endpoint {name} ({id}): {message}"
                        ));
                    }
                }
            }
        }
        let generation = self.install(&id, sockets);
        let bindings = self.active.lock().unwrap().get(&id).map(|p| p.bindings.clone()).unwrap_or_default();
        Ok(Claim { id, generation: Some(generation), bindings })
    }

    /// Whether one of our containers holds `proto` on `address` (or on the
    /// wildcard of its family).
    fn holds(&self, proto: Proto, address: SocketAddr) -> bool {
        self.active.lock().unwrap().values().flat_map(|p| &p.bindings).any(|b| {
            b.proto == proto
                && b.host_port == address.port()
                && (b.host_ip == address.ip() || b.host_ip.is_unspecified() || address.ip().is_unspecified())
                && b.host_ip.is_ipv4() == address.is_ipv4()
        })
    }

    /// Starts serving `sockets` for container `id`; the run's generation.
    fn install(&self, id: &str, sockets: Vec<(PortBinding, HostSocket)>) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let mut bindings = Vec::new();
        let mut tasks = Vec::new();
        for (binding, socket) in sockets {
            let route = Arc::new(Route {
                guest: self.guest.clone(),
                key: self.key.clone(),
                container_id: id.to_string(),
                container_port: binding.container_port,
            });
            let task = match socket {
                HostSocket::Tcp(listener) => match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => tokio::spawn(forward::accept_tcp(listener, route)),
                    Err(err) => {
                        tracing::warn!(%err, ?binding, "serving a published port failed");
                        continue;
                    }
                },
                HostSocket::Udp(socket) => match tokio::net::UdpSocket::from_std(socket) {
                    Ok(socket) => tokio::spawn(forward::relay_udp(socket, route)),
                    Err(err) => {
                        tracing::warn!(%err, ?binding, "serving a published port failed");
                        continue;
                    }
                },
            };
            bindings.push(binding);
            tasks.push(task);
        }
        tracing::info!(%id, ?bindings, "published ports bound");
        self.active.lock().unwrap().insert(id.to_string(), Published { generation, bindings, tasks });
        generation
    }

    /// Closes container `id`'s sockets (only those of run `generation`, if
    /// given); returns once they are closed.
    pub async fn release(&self, id: &str, generation: Option<u64>) {
        let _releasing = self.releasing.lock().await;
        let published = {
            let mut active = self.active.lock().unwrap();
            match active.get(id) {
                Some(p) if generation.is_none_or(|g| g == p.generation) => active.remove(id),
                _ => None,
            }
        };
        let Some(published) = published else { return };
        for task in &published.tasks {
            task.abort();
        }
        // A task's sockets are dropped with it, by the time its handle answers.
        for task in published.tasks {
            let _ = task.await;
        }
        tracing::info!(%id, "published ports released");
    }

    /// Whether any container has sockets (the API skips lookups otherwise).
    pub fn is_empty(&self) -> bool {
        self.active.lock().unwrap().is_empty()
    }

    /// After a start the API made: the claim's sockets close when this run
    /// of the container ends. `started: false` (it failed, or the container
    /// ran already): they close now.
    pub async fn started(self: &Arc<Self>, claim: Claim, agent: AgentClient<Channel>, started: bool) {
        let Some(generation) = claim.generation else { return };
        if !started {
            self.release(&claim.id, Some(generation)).await;
            return;
        }
        match self.exit_watch(agent, &claim.id).await {
            Ok(watch) => self.release_after(claim.id, generation, watch),
            Err(()) => self.release(&claim.id, Some(generation)).await,
        }
    }

    /// A wait registered with the agent for the container's end ("not
    /// running": done at once if it is not running any more).
    async fn exit_watch(
        &self,
        mut agent: AgentClient<Channel>,
        id: &str,
    ) -> Result<tonic::Streaming<berth_agent_proto::WaitContainerResponse>, ()> {
        let request = WaitContainerRequest { id: id.to_string(), condition: "not-running".into() };
        let mut stream = agent.wait_container(request).await.map_err(|_| ())?.into_inner();
        match stream.message().await {
            Ok(Some(first)) if first.registered => Ok(stream),
            _ => Err(()),
        }
    }

    fn release_after(
        self: &Arc<Self>,
        id: String,
        generation: u64,
        mut watch: tonic::Streaming<berth_agent_proto::WaitContainerResponse>,
    ) {
        let publisher = self.clone();
        tokio::spawn(async move {
            // Ended, removed, or the agent is gone: either way this run is over.
            let _ = watch.message().await;
            publisher.release(&id, Some(generation)).await;
        });
    }

    /// Binds again what the record of running container `id` says was
    /// bound, unless its sockets are open already (a start we did not make,
    /// or one from before this daemon).
    async fn adopt(self: &Arc<Self>, mut agent: AgentClient<Channel>, id: &str) {
        if self.active.lock().unwrap().contains_key(id) {
            return;
        }
        // The wait first: an exit after the inspect is not missed.
        let Ok(watch) = self.exit_watch(agent.clone(), id).await else { return };
        let Ok(reply) = agent.inspect_container(ContainerRef { id: id.to_string() }).await else { return };
        let container: Value = serde_json::from_slice(&reply.into_inner().json).unwrap_or_default();
        if container["State"]["Running"] != true || !self.publishes_for(&container) {
            return;
        }
        let bindings = ports::bindings_from_network_settings(&container["NetworkSettings"]["Ports"]);
        if bindings.is_empty() || self.active.lock().unwrap().contains_key(id) {
            return;
        }
        let mut sockets = Vec::new();
        for binding in bindings {
            match bind::bind_socket(binding.proto, binding.host_ip, binding.host_port) {
                Ok(socket) => sockets.push((binding, socket)),
                Err(err) => tracing::warn!(%id, ?binding, %err, "a published port could not be bound again"),
            }
        }
        let generation = self.install(id, sockets);
        self.release_after(id.to_string(), generation, watch);
    }

    /// Keeps the sockets in step with the agent: on each (re)connection
    /// binds the ports of every running container, then those of each
    /// container that starts. Runs as long as the daemon.
    pub fn watch(self: &Arc<Self>, agent: AgentClient<Channel>) -> AbortOnDrop {
        let publisher = self.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                publisher.follow(agent.clone()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }

    async fn follow(self: &Arc<Self>, mut agent: AgentClient<Channel>) {
        let request = EventsRequest {
            since_ns: 0,
            until_ns: 0,
            filters_json: r#"{"type":["container"],"event":["start"]}"#.into(),
        };
        // Subscribed before the list is read: a start in between is not missed.
        let Ok(events) = agent.events(request).await else { return };
        let mut events = events.into_inner();
        let list = ListContainersRequest { all: false, ..Default::default() };
        if let Ok(reply) = agent.list_containers(list).await {
            let running: Value = serde_json::from_slice(&reply.into_inner().json).unwrap_or_default();
            for container in running.as_array().into_iter().flatten() {
                if let Some(id) = container["Id"].as_str() {
                    self.adopt(agent.clone(), id).await;
                }
            }
        }
        while let Ok(Some(event)) = events.message().await {
            let event: Value = serde_json::from_slice(&event.json).unwrap_or_default();
            if let Some(id) = event["Actor"]["ID"].as_str() {
                self.adopt(agent.clone(), id).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher() -> Arc<Publisher> {
        let guest = GuestTransport::Unix { path: "/nonexistent/agent.sock".into() };
        Publisher::new(guest, AgentKey::from_bytes([1; 32]), false)
    }

    fn loopback_socket() -> (PortBinding, HostSocket) {
        let ip = "127.0.0.1".parse().unwrap();
        let port = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        let binding = PortBinding { proto: Proto::Tcp, container_port: 80, host_ip: ip, host_port: port };
        (binding, bind::bind_socket(Proto::Tcp, ip, port).unwrap())
    }

    /// The API's stop released while the exit's wait was releasing: it
    /// answered before the sockets were closed (the cli tests saw it when
    /// run side by side; the scheduling here need not reproduce that order).
    #[tokio::test]
    async fn a_second_release_returns_only_once_the_sockets_are_closed() {
        let publisher = publisher();
        let (binding, socket) = loopback_socket();
        let generation = publisher.install("c1", vec![(binding, socket)]);
        assert!(publisher.holds(Proto::Tcp, SocketAddr::new(binding.host_ip, binding.host_port)));
        let first = {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.release("c1", Some(generation)).await })
        };
        // The first release has taken the entry and waits for its task.
        tokio::task::yield_now().await;
        publisher.release("c1", None).await;
        assert!(std::net::TcpListener::bind((binding.host_ip, binding.host_port)).is_ok(), "still bound");
        first.await.unwrap();
        assert!(publisher.is_empty());
    }

    #[tokio::test]
    async fn a_release_of_an_earlier_run_leaves_the_current_one_alone() {
        let publisher = publisher();
        let (binding, socket) = loopback_socket();
        let old = publisher.install("c1", Vec::new());
        let current = publisher.install("c1", vec![(binding, socket)]);
        assert_ne!(old, current);
        publisher.release("c1", Some(old)).await;
        assert!(!publisher.is_empty(), "the current run's sockets were closed");
        publisher.release("c1", Some(current)).await;
        assert!(publisher.is_empty());
    }
}
