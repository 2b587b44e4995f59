//! What every request handler is given: the facts gathered at boot, the
//! agent, and the daemon's own state (the exec registry).

use std::sync::Arc;

use berth_agent_proto::agent_client::AgentClient;
use tonic::transport::Channel;

use super::{binds, exec};
use crate::ports::Publisher;
use crate::share_watch::ShareWatch;

/// What the API reports about the machine, gathered at boot.
#[derive(Debug, Clone)]
pub struct ApiFacts {
    pub berth_version: String,
    pub kernel_release: String,
    pub hostname: String,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub data_dir: String,
    pub registry: RegistrySettings,
    pub bind_sources: binds::BindSources,
}

/// config.toml's [engine] registry settings, passed with every pull.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    pub mirrors: Vec<String>,
    pub insecure: Vec<String>,
}

/// Everything the server needs: facts for the local routes, the agent for the rest.
pub struct ApiContext {
    pub facts: ApiFacts,
    /// One channel for every request: it multiplexes calls on one agent
    /// connection and reconnects by itself if that breaks.
    pub agent: AgentClient<Channel>,
    /// `docker exec` instances (Docker keeps them in memory too).
    pub execs: Arc<exec::Registry>,
    /// Published ports: the host sockets of running containers.
    pub ports: Arc<Publisher>,
    /// The host watcher of bind sources (VMs with shares): a container's
    /// are watched before it starts.
    pub shares: Option<ShareWatch>,
}

impl ApiContext {
    pub fn new(facts: ApiFacts, agent: AgentClient<Channel>, ports: Arc<Publisher>) -> ApiContext {
        ApiContext { facts, agent, execs: Arc::default(), ports, shares: None }
    }
}
