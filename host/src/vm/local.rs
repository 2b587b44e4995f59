//! The local backend (Linux hosts): no VM. The daemon runs `berth-agent`
//! itself, as root, serving on a unix socket, with the engine's state under
//! `$BERTH_HOME/local`. For Linux users who want containers without a VM,
//! and for fast tests of everything above the agent.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use super::owned::{spawn_owned, wait_for_socket};
use super::{BoxFuture, GuestFacts, RunningVm, VmBackend, VmProcess, VmSpec};
use crate::agent_client::{AgentEndpoint, GuestTransport, ReadyListener};

pub struct LocalBackend {
    agent: PathBuf,
}

impl LocalBackend {
    pub fn locate() -> Result<LocalBackend> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the local backend runs the container engine on this host and needs root; use backend = \"vm\" otherwise");
        }
        let assets = crate::paths::Assets::locate()?;
        Ok(LocalBackend { agent: assets.helper("berth-agent", &crate::paths::install_hint())? })
    }
}

impl VmBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn accel(&self) -> &'static str {
        "none"
    }

    /// The engine is a process on this host: the host's filesystem,
    /// network and memory, its state under `$BERTH_HOME/local`.
    fn facts(&self, spec: &VmSpec) -> GuestFacts {
        GuestFacts {
            engine_data_dir: spec.engine_dir.clone(),
            share_transport: None,
            share_access: berth_agent_proto::boot::ShareAccess::Guest,
            data_disk: None,
            network: None,
            dedicated_memory: false,
            own_clock: false,
            agent_log_device: crate::vm::LogDevice::default(),
        }
    }

    fn start<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn RunningVm>>> {
        Box::pin(async move {
            let socket = spec.run_dir.join("agent.sock");
            let _ = std::fs::remove_file(&socket);
            std::fs::create_dir_all(&spec.engine_dir)
                .with_context(|| format!("creating {}", spec.engine_dir.display()))?;
            let mut cmd = Command::new(&self.agent);
            cmd.arg("--unix").arg(&socket).arg("--data-dir").arg(&spec.engine_dir);
            cmd.env("BERTH_AGENT_LOG", &spec.agent_log_level);
            cmd.env(berth_agent_proto::agent_key::AGENT_KEY_ENV, spec.agent_key.to_hex());
            let mut child = spawn_owned(&mut cmd, &spec.agent_log, "berth-agent")?;
            wait_for_socket(&socket, &mut child, "berth-agent").await?;
            Ok(Box::new(LocalAgent { child: Some(child), socket }) as Box<dyn RunningVm>)
        })
    }
}

struct LocalAgent {
    child: Option<Child>,
    socket: PathBuf,
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl RunningVm for LocalAgent {
    fn agent_endpoint(&self) -> AgentEndpoint {
        AgentEndpoint::agent(GuestTransport::Unix { path: self.socket.clone() })
    }

    fn processes(&self) -> Vec<VmProcess> {
        self.child.iter().filter_map(|c| c.id()).map(|pid| VmProcess { name: "berth-agent".into(), pid }).collect()
    }

    fn take_ready_listener(&mut self) -> Option<ReadyListener> {
        None
    }

    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            match self.child.as_mut() {
                Some(child) => match child.wait().await {
                    Ok(status) => format!("the local agent exited ({status}); see `berth logs`"),
                    Err(err) => format!("waiting for the local agent failed: {err}"),
                },
                None => "the local agent was never started".into(),
            }
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(mut child) = self.child.take() {
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    tracing::warn!("the local agent did not exit in time; killing it");
                    let _ = child.kill().await;
                }
            }
            let _ = std::fs::remove_file(&self.socket);
            Ok(())
        })
    }
}
