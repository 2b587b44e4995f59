//! The Docker Engine API on `$BERTH_HOME/run/docker.sock`, served by the
//! daemon (hyper, HTTP/1.1 on a unix socket, mode 0600, and optionally TCP).
//! Most calls are forwarded to the agent; networks, `/_ping` and `/version`
//! are answered here, and the endpoints Berth lacks answer 501 naming them.
//!
//! The layers, each depending only on those below it:
//! - `server`: listeners, the connection cap and timeouts; `panics`: a
//!   panicking request is a 500.
//! - `router`: the route table and API version negotiation.
//! - `containers`, `exec`, `images`, `volumes`, `networks`, `system`: one
//!   module per Docker resource (`binds`: which bind sources a create may
//!   name).
//! - `hijack`: attach and exec streams over an upgraded connection.
//! - `body`: bounded request bodies, uploads and streamed responses.
//! - `http`: response shapes, Docker's errors, query and path decoding.

use std::sync::Arc;

use berth_agent_proto::agent_client::AgentClient;
use tonic::transport::Channel;

mod binds;
mod body;
mod containers;
mod exec;
mod hijack;
mod http;
mod images;
mod networks;
mod panics;
mod router;
mod server;
mod system;
mod volumes;

pub use server::{bind, serve, serve_tcp, Connections, Limits};

/// The newest and oldest API versions served.
pub const API_VERSION: &str = "1.47";
pub const MIN_API_VERSION: &str = "1.41";

pub use binds::BindSources;

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
}

impl ApiContext {
    pub fn new(facts: ApiFacts, agent: AgentClient<Channel>) -> ApiContext {
        ApiContext { facts, agent, execs: Arc::default() }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn facts() -> ApiFacts {
        ApiFacts {
            berth_version: "0.1.0".into(),
            kernel_release: "6.1.192".into(),
            hostname: "berth".into(),
            cpus: 2,
            memory_total_bytes: 2 << 30,
            data_dir: "/var/lib/berth".into(),
            registry: RegistrySettings::default(),
            bind_sources: binds::BindSources::Any,
        }
    }
}
