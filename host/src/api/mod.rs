//! The Docker Engine API on `$BERTH_HOME/run/docker.sock` (on Windows the
//! named pipe `\\.\pipe\berth_engine`), served by the daemon (hyper,
//! HTTP/1.1 on a socket or pipe private to the user, and optionally TCP).
//! Most calls are forwarded to the agent; `/_ping` and `/version` are
//! answered here, and the endpoints Berth lacks answer 501 naming them.
//!
//! The layers, each depending only on those below it:
//! - `server`: listeners, the connection cap and timeouts; `panics`: a
//!   panicking request is a 500.
//! - `router`: the route table and API version negotiation.
//! - `images`, `system`: handlers that need the boot facts too.
//! - `context`: what the router hands out (the facts, the agent, the exec
//!   registry).
//! - `containers`, `exec`, `volumes`, `networks`: one module per Docker
//!   resource (`binds`: which bind sources a create may name;
//!   `host_paths`: Windows bind sources as the engine sees them).
//! - `hijack`: attach and exec streams over an upgraded connection.
//! - `body`: bounded request bodies, uploads and streamed responses.
//! - `http`: response shapes, Docker's errors, query and path decoding.

mod binds;
mod body;
mod build;
mod containers;
mod context;
mod exec;
mod hijack;
pub(crate) mod host_paths;
mod http;
mod images;
mod networks;
mod panics;
mod router;
mod server;
mod system;
mod volumes;

pub use server::{bind, serve, serve_tcp, Connections, Limits};

pub use binds::BindSources;
pub use context::{ApiContext, ApiFacts, RegistrySettings};

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
