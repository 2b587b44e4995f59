//! The gRPC service: the agent protocol's server side.

use std::sync::Arc;
use std::time::Instant;

use berth_agent_proto::agent_server::Agent;
use berth_agent_proto::{
    exec_input, ExecInput, ExecOutput, InfoRequest, InfoResponse, MountStatus, PingRequest, PingResponse,
    ShutdownRequest, ShutdownResponse, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::reaper::Reaper;
use crate::sysinfo;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct AgentService {
    pub reaper: Reaper,
    /// What init mounted at boot (empty for a local agent).
    pub mounts: crate::Mounts,
    pub started: Instant,
    /// Notified once a Shutdown has been answered.
    pub shutdown: Arc<Notify>,
}

fn check_version(client: u32) -> Result<(), Status> {
    if client == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "protocol version mismatch: client speaks v{client}, berth-agent {AGENT_VERSION} speaks v{PROTOCOL_VERSION}"
        )))
    }
}

/// What `Info` answers, also sent unasked in the readiness announcement.
pub fn info(mounts: &[MountStatus]) -> InfoResponse {
    let mem = sysinfo::meminfo();
    InfoResponse {
        agent_version: AGENT_VERSION.into(),
        protocol_version: PROTOCOL_VERSION,
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        cpus: sysinfo::online_cpus(),
        memory_total_bytes: mem.total,
        memory_available_bytes: mem.available,
        uptime_ms: sysinfo::uptime_ms(),
        mounts: mounts.to_vec(),
        agent_rss_bytes: sysinfo::self_rss_bytes(),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        check_version(req.get_ref().protocol_version)?;
        Ok(Response::new(PingResponse { protocol_version: PROTOCOL_VERSION, agent_version: AGENT_VERSION.into() }))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(info(self.mounts.get().map(Vec::as_slice).unwrap_or_default())))
    }

    type ExecStream = ReceiverStream<Result<ExecOutput, Status>>;

    async fn exec(&self, req: Request<Streaming<ExecInput>>) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(ExecInput { input: Some(exec_input::Input::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("the first Exec message must be `start`")),
        };
        if start.argv.is_empty() {
            return Err(Status::invalid_argument("Exec needs a command (argv is empty)"));
        }
        let (tx, rx) = mpsc::channel(64);
        let reaper = self.reaper.clone();
        tokio::spawn(async move { crate::exec::run(&reaper, start, input, tx).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn shutdown(&self, _: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!(uptime_ms = self.started.elapsed().as_millis() as u64, "shutdown requested");
        self.shutdown.notify_one();
        Ok(Response::new(ShutdownResponse {}))
    }
}
