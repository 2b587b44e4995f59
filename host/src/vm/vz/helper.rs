//! The VM helper process (`berth vz-vmm <plan>`, macOS): it owns the
//! Virtualization.framework VM, as QEMU's process owns a QEMU VM, so the
//! daemon's process model (a pid, wait = exit, stop = grace then signal)
//! holds. It serves hybrid vsock on the plan's socket and exits when the VM
//! stops: 0 when the guest powered off, 1 with a message on stderr (the
//! daemon's vmm log) otherwise.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::net::UnixStream;

use super::errors::{self, Step};
use super::framework::{self, Machine, State};
use super::plan::VzPlan;
use super::relay::{self, GuestVsock};

/// How long the guest has to power off after requestStop before the VM is stopped hard.
const REQUEST_STOP_GRACE: Duration = Duration::from_secs(5);
const STATE_POLL: Duration = Duration::from_millis(200);

struct VzVsock(Arc<Machine>);

impl GuestVsock for VzVsock {
    type Stream = UnixStream;
    async fn connect(&self, port: u32) -> std::io::Result<UnixStream> {
        into_stream(self.0.connect(port).await?)
    }
}

/// VZ's vsock connections are sockets of this process (stream sockets, as Code-Hex/vz relies on).
fn into_stream(fd: std::os::fd::OwnedFd) -> std::io::Result<UnixStream> {
    let stream = StdUnixStream::from(fd);
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

/// Runs the VM of the plan at `plan_path` until it stops.
pub fn run(plan_path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(plan_path).with_context(|| format!("reading {}", plan_path.display()))?;
    let plan: VzPlan = serde_json::from_str(&text).with_context(|| format!("parsing {}", plan_path.display()))?;
    errors::check_host(framework::macos_major(), framework::virtualization_supported()).map_err(|e| anyhow!(e))?;
    let plan = plan.clamped(&framework::host_limits());
    let rosetta = plan.rosetta && framework::rosetta_installed();
    if plan.rosetta && !rosetta {
        eprintln!(
            "berth: Rosetta for Linux is not installed; amd64 images run under emulation only if the guest has it"
        );
    }
    let config =
        framework::build_configuration(&plan, rosetta).map_err(|e| anyhow!(errors::describe(Step::Validate, &e)))?;
    let machine = Arc::new(Machine::create(&config));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(supervise(plan, machine))
}

async fn supervise(plan: VzPlan, machine: Arc<Machine>) -> Result<i32> {
    let mut stop_signals = crate::platform::StopSignals::install()?;
    let _ = std::fs::remove_file(&plan.vsock.uds);
    let listener = tokio::net::UnixListener::bind(&plan.vsock.uds)
        .with_context(|| format!("listening on {}", plan.vsock.uds.display()))?;
    let (accepted, mut guest_connections) = tokio::sync::mpsc::unbounded_channel();
    // Listening before the start leaves the guest no window to dial an
    // unheard port; whether a VM that has not started has its socket device
    // yet is unverified on a Mac, so a failure is retried after the start.
    let listening = machine.listen(&plan.vsock.guest_dials, accepted.clone()).await.is_ok();
    machine.start().await.map_err(|e| anyhow!(errors::describe(Step::Start, &e)))?;
    if !listening {
        machine
            .listen(&plan.vsock.guest_dials, accepted)
            .await
            .map_err(|e| anyhow!(errors::describe(Step::Start, &e)))?;
    }
    tokio::spawn(relay::serve(listener, Arc::new(VzVsock(machine.clone()))));
    let uds = plan.vsock.uds.clone();
    tokio::spawn(async move {
        while let Some((port, fd)) = guest_connections.recv().await {
            let uds = uds.clone();
            tokio::spawn(async move {
                let result = match into_stream(fd) {
                    Ok(stream) => relay::forward_guest_connection(stream, &uds, port).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = result {
                    tracing::debug!(%err, port, "guest vsock connection");
                }
            });
        }
    });

    let code = tokio::select! {
        code = watch(&machine) => code,
        () = stop_signals.recv() => shut_down(&machine).await,
    };
    let _ = std::fs::remove_file(&plan.vsock.uds);
    Ok(code)
}

/// Resolves when the VM has stopped on its own, with the helper's exit code.
async fn watch(machine: &Machine) -> i32 {
    loop {
        match machine.state().await {
            State::Stopped => return 0,
            State::Error => {
                eprintln!("berth: Virtualization.framework stopped the VM on an error");
                return 1;
            }
            State::Running | State::Changing => tokio::time::sleep(STATE_POLL).await,
        }
    }
}

/// The daemon's stop (after the agent was asked to power off and did not in
/// time): ask the guest, then stop the VM hard.
async fn shut_down(machine: &Machine) -> i32 {
    match machine.request_stop().await {
        Ok(true) => {
            if let Ok(code) = tokio::time::timeout(REQUEST_STOP_GRACE, watch(machine)).await {
                return code;
            }
        }
        Ok(false) => {}
        Err(err) => eprintln!("berth: {}", errors::describe(Step::Stop, &err)),
    }
    match machine.stop().await {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("berth: {}", errors::describe(Step::Stop, &err));
            1
        }
    }
}
