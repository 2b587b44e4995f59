//! A container as the engine keeps it: Docker's create request merged with
//! the image's defaults, validated, and the state it is in. Persisted as
//! `container.json` in the container's directory on the data disk.
//!
//! The create request travels from the host as Docker's own JSON
//! (`ContainerConfig` with `HostConfig`): its schema is Docker's API, which
//! the engine implements, so the contract does not repeat it field by field.
//!
//! - `config`: Docker's Config and HostConfig as typed, lossless structs;
//! - `resolve`: a create request merged with the image and checked;
//! - `mounts`: binds, volumes and `--volumes-from`;
//! - `update`: `docker update`'s merge;
//! - `inspect`: the record as `docker inspect` and `docker ps` show it;
//! - `names`: container names and signals.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::Bind;

pub mod config;
mod inspect;
mod mounts;
mod names;
mod resolve;
mod update;

pub use berth_agent_proto::time::rfc3339;
pub use config::{Config, CreateRequest, HostConfig, NetworkMode, NetworkingConfig};
pub use inspect::human_duration;
pub use mounts::{parse_volumes_from, VolumesFrom};
pub use names::{parse_signal, random_name, valid_name};
pub use resolve::{resolve, resolve_request, Resolved, RestartPolicy, RUNTIME_NAME};
pub use update::apply_update;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request asks for something invalid or unsupported (HTTP 400).
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> CreateError {
    CreateError::Invalid(message.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Running in Docker's sense: a process exists (paused ones too).
    pub fn is_running(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    pub shim_pid: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    /// Set by `docker stop`/`kill`: a restart policy must not undo it.
    pub stopped_by_user: bool,
    /// `State.Health`, once a run with a healthcheck began (records
    /// written before healthchecks have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
}

/// A volume mounted into a container: named (`-v name:/path`,
/// `--mount type=volume`) or anonymous (`-v /path`, the image's VOLUME),
/// whose name the engine picks at create.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeMount {
    /// Empty until the engine names an anonymous volume.
    pub name: String,
    pub target: String,
    pub readonly: bool,
    /// Do not fill a new volume from the image (`nocopy`).
    pub nocopy: bool,
    pub anonymous: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Container {
    pub id: String,
    /// Without Docker's leading slash.
    pub name: String,
    pub created_ns: i64,
    /// The image as the user named it, and what it resolved to.
    pub image: String,
    pub image_id: String,
    /// Docker's Config, merged with the image's defaults (what inspect shows).
    pub config: Config,
    /// Docker's HostConfig as given (normalised where Docker does).
    pub host_config: HostConfig,
    /// The image's layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    pub state: State,
    pub restart_count: u32,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Host paths bound through `--volumes-from` (the container's own binds
    /// stay in its HostConfig), resolved once at create as Docker does.
    #[serde(default)]
    pub binds_from: Vec<Bind>,
    /// The host sockets bound for the current (or last) run, as the host
    /// reported them at start; shown while the container runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_ports: Vec<berth_agent_proto::ports::PortBinding>,
}

impl Container {
    pub fn dir_in(&self, root: &Path) -> PathBuf {
        root.join(&self.id)
    }
}

#[cfg(test)]
mod tests;
