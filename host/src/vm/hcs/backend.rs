//! The HCS backend on Windows: walks plan.rs's start steps with the calls
//! (computecore.rs, hcn.rs, vhdx.rs, com_pipes.rs) and releases what it
//! holds in plan.rs's order. The decisions are plan.rs's and doc.rs's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

use super::computecore::{self, ComputeSystem};
use super::doc::{self, HcnEndpoint, HcsDocument, HcsHost, Properties};
use super::errors::HcsError;
use super::hcn::windows_calls::Endpoint;
use super::plan::{self, Held, StartStep, StopStep, START_STEPS};
use super::{com_pipes, vhdx};
use crate::agent_client::{AgentEndpoint, GuestTransport, ReadyListener};
use crate::vm::{BoxFuture, GuestFacts, RunningVm, VmBackend, VmProcess, VmSpec};

/// How long one wait for the VM's exit blocks a thread: a dropped wait
/// gives its thread (and its handle on the VM) back within this.
const EXIT_POLL: Duration = Duration::from_secs(2);

/// How long the pipe servers may take to copy the last of the logs once
/// the VM has closed its ends.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

pub struct HcsBackend {
    kernel: PathBuf,
    initramfs: PathBuf,
}

impl HcsBackend {
    pub fn locate() -> Result<HcsBackend> {
        let assets = crate::paths::Assets::locate()?;
        Ok(HcsBackend { kernel: assets.kernel()?, initramfs: assets.initramfs() })
    }
}

/// Runs a blocking HCS or HCN call on a blocking thread.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> Result<T, HcsError> + Send + 'static) -> Result<T> {
    Ok(tokio::task::spawn_blocking(call).await.context("an HCS call's thread failed")??)
}

impl VmBackend for HcsBackend {
    fn name(&self) -> &'static str {
        "hcs"
    }

    fn accel(&self) -> &'static str {
        "hyperv"
    }

    fn facts(&self, _spec: &VmSpec) -> GuestFacts {
        doc::guest_facts(None)
    }

    fn start<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn RunningVm>>> {
        Box::pin(async move {
            let mut vm = HcsVm::new(spec);
            for step in START_STEPS {
                tracing::debug!(?step, "HCS start");
                if let Err(err) = vm.run(step, self, spec).await {
                    vm.release(Duration::ZERO).await;
                    return Err(err.context(format!("starting the Hyper-V VM ({step:?})")));
                }
                vm.held.extend(step.holds());
            }
            Ok(Box::new(vm) as Box<dyn RunningVm>)
        })
    }
}

struct HcsVm {
    id: String,
    vhdx: PathBuf,
    boot_initramfs: PathBuf,
    /// What the steps done so far hold, in the order they made it.
    held: Vec<Held>,
    endpoint: Option<(Endpoint, HcnEndpoint)>,
    pipes: Vec<JoinHandle<()>>,
    system: Option<Arc<ComputeSystem>>,
    runtime_id: Option<String>,
    ready: Option<ReadyListener>,
}

impl HcsVm {
    fn new(spec: &VmSpec) -> HcsVm {
        HcsVm {
            id: plan::compute_system_id(&spec.run_dir),
            vhdx: vhdx::path_for(&spec.disk),
            boot_initramfs: plan::boot_initramfs(spec),
            held: Vec::new(),
            endpoint: None,
            pipes: Vec::new(),
            system: None,
            runtime_id: None,
            ready: None,
        }
    }

    fn system(&self) -> Result<Arc<ComputeSystem>> {
        self.system.clone().context("the compute system was not created")
    }

    async fn run(&mut self, step: StartStep, backend: &HcsBackend, spec: &VmSpec) -> Result<()> {
        match step {
            StartStep::EndLeftoverVm => {
                let id = self.id.clone();
                blocking(move || {
                    let Ok(leftover) = ComputeSystem::open(&id) else { return Ok(()) };
                    let state = leftover
                        .properties()
                        .ok()
                        .and_then(|p| serde_json::from_str::<Properties>(&p).ok())
                        .and_then(|p| p.state);
                    if plan::leftover_needs_terminate(state.as_deref()) {
                        tracing::warn!(%id, ?state, "ending a Berth VM an earlier daemon left running");
                        leftover.terminate()?;
                    }
                    Ok(())
                })
                .await
            }
            StartStep::PrepareDataDisk => {
                let (path, gib) = (self.vhdx.clone(), spec.disk_gib);
                tokio::task::spawn_blocking(move || vhdx::windows_calls::prepare(&path, gib)).await?
            }
            StartStep::WriteBootInitramfs => {
                let _ = std::fs::remove_file(&self.boot_initramfs);
                crate::vm::boot_key::write_initramfs_with_key(&backend.initramfs, &spec.agent_key, &self.boot_initramfs)
                    .context("writing this boot's initramfs")
            }
            StartStep::CreateEndpoint => {
                let endpoint = blocking(Endpoint::create).await?;
                // Held from here on: dropping it deletes it from HCN.
                let endpoint = tokio::task::spawn_blocking(move || endpoint.properties().map(|p| (endpoint, p)))
                    .await
                    .context("an HCN call's thread failed")??;
                tracing::info!(address = %endpoint.1.ipv4.address, "the VM's HCN endpoint");
                self.endpoint = Some(endpoint);
                Ok(())
            }
            StartStep::ServeComPorts => {
                let (console, agent_log) = doc::com_pipes(spec);
                for (pipe, log) in [(console, &spec.console_log), (agent_log, &spec.agent_log)] {
                    let file = crate::private_fs::open_for_writing(log, true)?;
                    self.pipes.push(com_pipes::serve(&pipe, file).with_context(|| format!("serving {}", pipe.path()))?);
                }
                Ok(())
            }
            StartStep::CreateComputeSystem => {
                let endpoint = self.endpoint.as_ref().context("no HCN endpoint")?.1.clone();
                let host = HcsHost {
                    kernel: backend.kernel.display().to_string(),
                    initramfs: self.boot_initramfs.display().to_string(),
                    data_disk_vhdx: self.vhdx.display().to_string(),
                    user: crate::platform::current_user_sid().context("reading this user's SID")?,
                    endpoint,
                };
                let document = serde_json::to_string(&HcsDocument::from_spec(spec, &host)?)?;
                let id = self.id.clone();
                self.system = Some(Arc::new(blocking(move || ComputeSystem::create(&id, &document)).await?));
                Ok(())
            }
            StartStep::GrantVmAccess => {
                let id = self.id.clone();
                let files = plan::files_to_grant(&backend.kernel, &self.boot_initramfs, &self.vhdx);
                blocking(move || {
                    files.iter().try_for_each(|file| computecore::grant_vm_access(&id, &file.display().to_string()))
                })
                .await
            }
            StartStep::ReadRuntimeId => {
                let system = self.system()?;
                let properties = blocking(move || system.properties()).await?;
                let properties: Properties =
                    serde_json::from_str(&properties).with_context(|| format!("HCS's properties: {properties}"))?;
                self.runtime_id = Some(properties.runtime_id);
                Ok(())
            }
            StartStep::ListenForReady => {
                let runtime_id = self.runtime_id.as_deref().context("no RuntimeId")?;
                self.ready = Some(ReadyListener::hvsocket(runtime_id).context("listening for the agent's readiness")?);
                Ok(())
            }
            StartStep::StartComputeSystem => {
                let system = self.system()?;
                blocking(move || system.start()).await
            }
        }
    }

    /// Waits up to `timeout` for the VM to exit; its exit document, or None.
    async fn exited_within(&self, timeout: Duration) -> Result<Option<String>> {
        let Some(system) = self.system.clone() else { return Ok(Some(String::new())) };
        let deadline = Instant::now() + timeout;
        loop {
            let slice = deadline.saturating_duration_since(Instant::now()).min(EXIT_POLL);
            let system = system.clone();
            match tokio::task::spawn_blocking(move || system.wait_for_exit(slice)).await? {
                Ok(document) => return Ok(Some(document)),
                Err(err) if err.is_timeout() && Instant::now() < deadline => continue,
                Err(err) if err.is_timeout() => return Ok(None),
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Ends the VM (as plan::stop_steps says) and releases everything this
    /// boot holds, in plan::release_order.
    async fn release(&mut self, grace: Duration) {
        for held in plan::release_order(&self.held) {
            match held {
                Held::ComputeSystem => self.end_vm(grace).await,
                Held::ReadyListener => self.ready = None,
                Held::ComPipes => {
                    for pipe in self.pipes.drain(..) {
                        let abort = pipe.abort_handle();
                        if tokio::time::timeout(PIPE_DRAIN, pipe).await.is_err() {
                            abort.abort();
                        }
                    }
                }
                Held::Endpoint => {
                    if let Some((endpoint, _)) = self.endpoint.take() {
                        // Its Drop deletes it from HCN (a blocking call).
                        let _ = tokio::task::spawn_blocking(move || drop(endpoint)).await;
                    }
                }
                Held::BootInitramfs => {
                    let _ = std::fs::remove_file(&self.boot_initramfs);
                }
            }
        }
        self.held.clear();
    }

    async fn end_vm(&mut self, grace: Duration) {
        let Some(system) = self.system.clone() else { return };
        for step in plan::stop_steps(grace.is_zero()) {
            let ended = match step {
                StopStep::AwaitExit => self.exited_within(grace).await.map(|d| d.is_some()),
                StopStep::ShutDown => {
                    let asked = system.clone();
                    let shut_down = tokio::time::timeout(
                        plan::SHUTDOWN_WAIT,
                        tokio::task::spawn_blocking(move || asked.shut_down()),
                    )
                    .await;
                    match shut_down {
                        Ok(Ok(Ok(()))) => self.exited_within(plan::SHUTDOWN_WAIT).await.map(|d| d.is_some()),
                        Ok(Ok(Err(err))) => Err(err.into()),
                        Ok(Err(err)) => Err(err.into()),
                        Err(_) => Ok(false),
                    }
                }
                StopStep::Terminate => {
                    let terminated = system.clone();
                    tokio::task::spawn_blocking(move || terminated.terminate())
                        .await
                        .map_err(anyhow::Error::from)
                        .and_then(|r| r.map_err(anyhow::Error::from))
                        .map(|()| true)
                }
            };
            match ended {
                Ok(true) => break,
                Ok(false) => tracing::warn!(?step, "the Hyper-V VM is still running"),
                Err(err) => tracing::warn!(?step, %err, "ending the Hyper-V VM"),
            }
        }
        // The last handle: closing it ends a VM that is somehow still there.
        self.system = None;
    }
}

impl Drop for HcsVm {
    fn drop(&mut self) {
        // A VM dropped without stop(): the handle's close ends it
        // (ShouldTerminateOnLastHandleClosed), the endpoint's Drop deletes it.
        for pipe in &self.pipes {
            pipe.abort();
        }
        if self.held.contains(&Held::BootInitramfs) {
            let _ = std::fs::remove_file(&self.boot_initramfs);
        }
    }
}

impl RunningVm for HcsVm {
    fn agent_endpoint(&self) -> AgentEndpoint {
        AgentEndpoint::agent(GuestTransport::HvSocket {
            vm_id: self.runtime_id.clone().expect("read before the VM is handed out"),
        })
    }

    fn processes(&self) -> Vec<VmProcess> {
        // The VM's worker process is HCS's (vmwp.exe), not the daemon's
        // child; it ends with the daemon's handle.
        Vec::new()
    }

    fn take_ready_listener(&mut self) -> Option<ReadyListener> {
        self.ready.take()
    }

    fn started_facts(&self) -> Option<GuestFacts> {
        self.endpoint.as_ref().map(|(_, endpoint)| doc::guest_facts(Some(endpoint)))
    }

    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            loop {
                match self.exited_within(Duration::from_secs(3600)).await {
                    Ok(Some(document)) => return plan::describe_exit(&document),
                    Ok(None) => continue,
                    Err(err) => return format!("waiting for the Hyper-V VM failed: {err:#}"),
                }
            }
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.release(grace).await;
            Ok(())
        })
    }
}
