//! What an HCS start and stop do, in which order, and what each step
//! leaves behind to undo: plain data, tested on every host. backend.rs walks
//! these steps on Windows with the calls of computecore.rs, hcn.rs, vhdx.rs
//! and com_pipes.rs, and releases what it holds in [`release_order`].

use std::path::{Path, PathBuf};

use crate::vm::VmSpec;

/// A start's steps, in the order they run. The order is forced by what
/// each needs: the endpoint's address goes into the document, the pipes
/// must be served before HCS opens them (at create), files are granted to
/// the VM's account once the system exists, the readiness listener needs
/// the RuntimeId (known at create) and must listen before the guest can dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartStep {
    /// A VM of this home a killed daemon left registered (its id is the
    /// home's): terminated, or HcsCreateComputeSystem fails with "already exists".
    EndLeftoverVm,
    /// Create or grow the VHDX (vhdx.rs).
    PrepareDataDisk,
    /// The initramfs with this boot's agent key (boot_key.rs).
    WriteBootInitramfs,
    /// One HCN endpoint on Berth's NAT network; its address is the guest's.
    CreateEndpoint,
    /// The COM ports' named-pipe servers, copying into console.log and agent.log.
    ServeComPorts,
    /// HcsCreateComputeSystem with the document (doc.rs).
    CreateComputeSystem,
    /// HcsGrantVmAccess for the kernel, the boot initramfs and the VHDX:
    /// the VM's worker process runs as the VM's own account.
    GrantVmAccess,
    /// HcsGetComputeSystemProperties: the RuntimeId the hvsocks address.
    ReadRuntimeId,
    /// A Hyper-V socket listener on (RuntimeId, AGENT_READY_VSOCK_PORT).
    ListenForReady,
    StartComputeSystem,
}

pub const START_STEPS: [StartStep; 10] = [
    StartStep::EndLeftoverVm,
    StartStep::PrepareDataDisk,
    StartStep::WriteBootInitramfs,
    StartStep::CreateEndpoint,
    StartStep::ServeComPorts,
    StartStep::CreateComputeSystem,
    StartStep::GrantVmAccess,
    StartStep::ReadRuntimeId,
    StartStep::ListenForReady,
    StartStep::StartComputeSystem,
];

/// What a step leaves that a stop (or a failed start) must undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// This boot's initramfs in the run directory (it holds the agent's key).
    BootInitramfs,
    /// Deleted from HCN: HCN keeps an endpoint until it is deleted.
    Endpoint,
    /// The pipe servers' tasks (they end when the VM closes its ends).
    ComPipes,
    /// Terminated, then its handle closed.
    ComputeSystem,
    ReadyListener,
}

impl StartStep {
    /// What this step, once done, holds. The data disk is kept (it is the
    /// engine's state); the grants stay on files that are kept or removed.
    pub fn holds(self) -> Option<Held> {
        match self {
            StartStep::WriteBootInitramfs => Some(Held::BootInitramfs),
            StartStep::CreateEndpoint => Some(Held::Endpoint),
            StartStep::ServeComPorts => Some(Held::ComPipes),
            StartStep::CreateComputeSystem => Some(Held::ComputeSystem),
            StartStep::ListenForReady => Some(Held::ReadyListener),
            StartStep::EndLeftoverVm
            | StartStep::PrepareDataDisk
            | StartStep::GrantVmAccess
            | StartStep::ReadRuntimeId
            | StartStep::StartComputeSystem => None,
        }
    }
}

/// What a start that failed at `failed` holds: what the steps before it made.
pub fn held_after_failure_at(failed: StartStep) -> Vec<Held> {
    START_STEPS.iter().take_while(|&&s| s != failed).filter_map(|s| s.holds()).collect()
}

/// The order to release `held` in: the compute system first (it has the
/// endpoint attached and the pipes open; ending it closes them, so the pipe
/// tasks end on their own and have written the last of the logs), then the
/// rest in the reverse of the order they were made.
pub fn release_order(held: &[Held]) -> Vec<Held> {
    let mut order: Vec<Held> = held.iter().rev().copied().collect();
    if let Some(i) = order.iter().position(|&h| h == Held::ComputeSystem) {
        let system = order.remove(i);
        order.insert(0, system);
    }
    order
}

/// How a stop ends the VM, after the daemon asked the agent to power off
/// (the guest's power-off ends a StopOnReset VM by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    /// Wait up to the grace for the VM to exit on its own.
    AwaitExit,
    /// HcsShutDownComputeSystem: the guest's hv_utils shutdown service,
    /// for a guest whose agent did not power it off.
    ShutDown,
    /// HcsTerminateComputeSystem: the VM ends now.
    Terminate,
}

/// How long a ShutDown may take, and then the exit after it.
#[cfg_attr(not(windows), allow(dead_code))]
pub const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The stop's steps for a VM still running after `AwaitExit`: a zero grace
/// (a failed start, a crash) skips straight to Terminate.
pub fn stop_steps(grace_is_zero: bool) -> &'static [StopStep] {
    if grace_is_zero {
        &[StopStep::Terminate]
    } else {
        &[StopStep::AwaitExit, StopStep::ShutDown, StopStep::Terminate]
    }
}

/// The compute system's id: one per home, so that the next start finds
/// (and ends) a VM a killed daemon left, and `hcsdiag list` tells homes apart.
pub fn compute_system_id(run_dir: &Path) -> String {
    format!("berth-{}", crate::platform::api_address::short_digest(run_dir))
}

/// This boot's initramfs, with the agent's key, in the private run directory.
pub fn boot_initramfs(spec: &VmSpec) -> PathBuf {
    spec.run_dir.join("initramfs-boot.cpio")
}

/// The files the VM's worker process must be able to open.
pub fn files_to_grant(kernel: &Path, boot_initramfs: &Path, data_disk: &Path) -> [PathBuf; 3] {
    [kernel.to_path_buf(), boot_initramfs.to_path_buf(), data_disk.to_path_buf()]
}

/// What a state of the compute system, as HcsGetComputeSystemProperties
/// reports it, means for a leftover VM of this home.
pub fn leftover_needs_terminate(state: Option<&str>) -> bool {
    !matches!(state, Some("Stopped"))
}

/// How the exit document of HcsWaitForComputeSystemExit reads for
/// `berth logs` (HCS's `ExitType`, e.g. `GracefulExit`, `UnexpectedExit`).
pub fn describe_exit(document: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(document).ok();
    let field = |name: &str| parsed.as_ref().and_then(|d| d.get(name)).and_then(|v| v.as_str()).map(str::to_string);
    match (field("ExitType"), field("ErrorMessage")) {
        (Some(kind), Some(message)) if !message.is_empty() => format!("the Hyper-V VM exited ({kind}: {message})"),
        (Some(kind), _) => format!("the Hyper-V VM exited ({kind})"),
        _ => "the Hyper-V VM exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_inputs_come_before_create_and_the_listener_before_start() {
        let at = |step| START_STEPS.iter().position(|&s| s == step).unwrap();
        // The endpoint's address and the pipes' names are in the document; the pipes must be served first.
        assert!(at(StartStep::CreateEndpoint) < at(StartStep::CreateComputeSystem));
        assert!(at(StartStep::ServeComPorts) < at(StartStep::CreateComputeSystem));
        assert!(at(StartStep::PrepareDataDisk) < at(StartStep::CreateComputeSystem));
        assert!(at(StartStep::WriteBootInitramfs) < at(StartStep::GrantVmAccess));
        // Grants name an existing system; the listener needs its RuntimeId and must precede the guest.
        assert!(at(StartStep::CreateComputeSystem) < at(StartStep::GrantVmAccess));
        assert!(at(StartStep::ReadRuntimeId) < at(StartStep::ListenForReady));
        assert!(at(StartStep::ListenForReady) < at(StartStep::StartComputeSystem));
        assert_eq!(START_STEPS[0], StartStep::EndLeftoverVm, "a leftover VM would make create fail");
        assert_eq!(*START_STEPS.last().unwrap(), StartStep::StartComputeSystem);
    }

    #[test]
    fn a_failed_start_undoes_exactly_what_it_made() {
        assert_eq!(held_after_failure_at(StartStep::EndLeftoverVm), []);
        assert_eq!(held_after_failure_at(StartStep::CreateEndpoint), [Held::BootInitramfs]);
        assert_eq!(
            held_after_failure_at(StartStep::CreateComputeSystem),
            [Held::BootInitramfs, Held::Endpoint, Held::ComPipes]
        );
        assert_eq!(
            release_order(&held_after_failure_at(StartStep::CreateComputeSystem)),
            [Held::ComPipes, Held::Endpoint, Held::BootInitramfs]
        );
        let everything: Vec<Held> = START_STEPS.iter().filter_map(|s| s.holds()).collect();
        assert_eq!(held_after_failure_at(StartStep::StartComputeSystem), everything);
        // Nothing leaks: every kind of thing a start holds is on the list.
        for held in [Held::BootInitramfs, Held::Endpoint, Held::ComPipes, Held::ComputeSystem, Held::ReadyListener] {
            assert!(everything.contains(&held), "{held:?}");
        }
    }

    #[test]
    fn the_vm_ends_before_its_endpoint_and_pipes() {
        let everything: Vec<Held> = START_STEPS.iter().filter_map(|s| s.holds()).collect();
        assert_eq!(
            release_order(&everything),
            [Held::ComputeSystem, Held::ReadyListener, Held::ComPipes, Held::Endpoint, Held::BootInitramfs]
        );
    }

    #[test]
    fn a_stop_asks_before_it_terminates() {
        assert_eq!(stop_steps(false), [StopStep::AwaitExit, StopStep::ShutDown, StopStep::Terminate]);
        assert_eq!(stop_steps(true), [StopStep::Terminate]);
    }

    #[test]
    fn ids_and_files_are_per_home() {
        let spec = VmSpec { run_dir: r"C:\Users\me\AppData\Local\Berth\run".into(), ..crate::vm::test_spec() };
        let id = compute_system_id(&spec.run_dir);
        assert!(id.starts_with("berth-") && id.len() == "berth-".len() + 8, "{id}");
        assert_ne!(compute_system_id(Path::new(r"D:\other\run")), id);
        assert_eq!(boot_initramfs(&spec), spec.run_dir.join("initramfs-boot.cpio"));
        let files = files_to_grant(Path::new("k"), &boot_initramfs(&spec), Path::new("d.vhdx"));
        assert_eq!(files[1], boot_initramfs(&spec));
    }

    #[test]
    fn leftovers_and_exits_read_as_hcs_writes_them() {
        assert!(leftover_needs_terminate(Some("Running")));
        assert!(leftover_needs_terminate(None));
        assert!(!leftover_needs_terminate(Some("Stopped")));
        assert_eq!(describe_exit(r#"{"ExitType":"GracefulExit"}"#), "the Hyper-V VM exited (GracefulExit)");
        assert_eq!(
            describe_exit(r#"{"ExitType":"UnexpectedExit","ErrorMessage":"The virtual machine crashed."}"#),
            "the Hyper-V VM exited (UnexpectedExit: The virtual machine crashed.)"
        );
        assert_eq!(describe_exit("not json"), "the Hyper-V VM exited");
    }
}
