//! `run/state.json`: what the daemon last said about the VM.
//!
//! Written atomically (temp file + rename) by the daemon only; read by every
//! CLI command. Whether the daemon is really alive is a separate question,
//! answered by its lock (see `lifecycle::daemon_alive`): a state file that
//! says "running" without a live daemon is a crash to report and recover.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::agent_client::AgentEndpoint;
use crate::vm::VmProcess;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Running,
    Stopped,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub state: Phase,
    pub daemon_pid: u32,
    pub accel: Option<String>,
    /// Only while running: the VM's outbound network, where the backend chose one.
    #[serde(default)]
    pub uplink: Option<crate::vm::Uplink>,
    pub boot_ms: Option<u64>,
    pub agent_version: Option<String>,
    pub kernel_release: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Host directories shared into the VM at the same path.
    #[serde(default)]
    pub shares: Vec<std::path::PathBuf>,
    pub agent: Option<AgentEndpoint>,
    /// The VM's processes, so a dead daemon's leftovers can be found.
    #[serde(default)]
    pub processes: Vec<VmProcess>,
    pub error: Option<String>,
    /// `tcp://IP:port` while the Docker API is also served on TCP.
    #[serde(default)]
    pub docker_tcp: Option<String>,
}

impl State {
    pub fn new(phase: Phase) -> State {
        State {
            state: phase,
            daemon_pid: std::process::id(),
            accel: None,
            uplink: None,
            boot_ms: None,
            agent_version: None,
            kernel_release: None,
            cpus: None,
            memory_mib: None,
            shares: Vec::new(),
            agent: None,
            processes: Vec::new(),
            error: None,
            docker_tcp: None,
        }
    }

    pub fn read(path: &Path) -> Result<Option<State>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is corrupt; remove it and run `berth start`", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomically(path, &serde_json::to_vec_pretty(self)?)
    }
}

/// Readers see the old file or the new one, never a torn one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::read(&path).unwrap(), None);
        let mut state = State::new(Phase::Running);
        state.boot_ms = Some(1800);
        state.agent = Some(AgentEndpoint::agent(crate::agent_client::GuestTransport::Unix { path: "/x".into() }));
        state.write(&path).unwrap();
        assert_eq!(State::read(&path).unwrap(), Some(state));
        std::fs::write(&path, b"{\"state\":").unwrap();
        assert!(State::read(&path).unwrap_err().to_string().contains("corrupt"));
    }

    /// `berth shell` on Windows reads the Hyper-V endpoint the daemon wrote.
    #[test]
    fn a_hyper_v_endpoint_is_recorded_by_vm_id_and_port() {
        let vm_id = "8e1c5f6a-1b2c-4d3e-9f40-0123456789ab".to_string();
        let endpoint = AgentEndpoint::agent(crate::agent_client::GuestTransport::HvSocket { vm_id });
        let json = serde_json::to_value(&endpoint).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "hv_socket", "vm_id": "8e1c5f6a-1b2c-4d3e-9f40-0123456789ab", "port": 1024})
        );
        assert_eq!(serde_json::from_value::<AgentEndpoint>(json).unwrap(), endpoint);
    }
}
