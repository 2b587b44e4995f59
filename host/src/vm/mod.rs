//! Virtual machine backends.
//!
//! Callers (the daemon) see only [`VmBackend`] and [`RunningVm`]: describe a
//! VM with a [`VmSpec`], start it, learn where its agent listens, wait for it
//! to exit or stop it. Each platform brings its own backend; today that is
//! QEMU on Linux (KVM or TCG). macOS (Virtualization.framework) and Windows
//! (Hyper-V) slot in here without changes to callers.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::agent_client::AgentEndpoint;

#[cfg(unix)]
pub mod boot_key;
#[cfg(target_os = "linux")]
pub mod local;
#[cfg(target_os = "linux")]
mod owned;
#[cfg(target_os = "linux")]
pub mod qemu;
#[cfg(target_os = "linux")]
mod share_policy;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Hardware acceleration for the guest CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Hvf,
    Whpx,
    /// QEMU's software emulation: always available, much slower.
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Hvf => "hvf",
            Accel::Whpx => "whpx",
            Accel::Tcg => "tcg",
        }
    }

    /// `BERTH_ACCEL=auto|kvm|hvf|whpx|tcg`; `auto` (or unset) probes the host.
    pub fn from_env() -> Result<Accel> {
        match std::env::var("BERTH_ACCEL").ok().as_deref() {
            None | Some("") | Some("auto") => Ok(Accel::detect()),
            Some("kvm") => Ok(Accel::Kvm),
            Some("hvf") => Ok(Accel::Hvf),
            Some("whpx") => Ok(Accel::Whpx),
            Some("tcg") => Ok(Accel::Tcg),
            Some(other) => {
                anyhow::bail!("BERTH_ACCEL={other} is not one of auto, kvm, hvf, whpx, tcg")
            }
        }
    }

    /// The best accelerator that can really run a guest here.
    pub fn detect() -> Accel {
        if cfg!(target_os = "macos") {
            Accel::Hvf
        } else if cfg!(windows) {
            Accel::Whpx
        } else if cfg!(target_os = "linux")
            && kvm_usable(
                std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
                &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
            )
        {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// Whether KVM can run a stock guest kernel. An openable /dev/kvm is not
/// enough: some hosts expose a paravirtual KVM (kvm_pvm) without hardware
/// virtualisation, under which a normal kernel crawls and then dies. Real KVM
/// needs the CPU's vmx (Intel) or svm (AMD) flag.
pub fn kvm_usable(dev_kvm_openable: bool, cpuinfo: &str) -> bool {
    dev_kvm_openable
        && cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// A directory shared from the host into the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// virtio-fs tag; unique per VM.
    pub tag: String,
    pub host_path: PathBuf,
    pub guest_path: PathBuf,
}

/// Everything a backend needs to boot a Berth VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub cpus: u32,
    pub memory_mib: u64,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Raw data disk image (the guest formats it on first boot).
    pub disk: PathBuf,
    pub shares: Vec<Share>,
    /// Private directory for the VM's sockets.
    pub run_dir: PathBuf,
    /// Kernel console output.
    pub console_log: PathBuf,
    /// The agent's own log.
    pub agent_log: PathBuf,
    /// What the virtual machine monitor itself prints (QEMU's stderr).
    pub vmm_log: PathBuf,
    /// What helper programs (virtiofsd, vhost-device-vsock) print.
    pub helpers_log: PathBuf,
    /// Agent log filter, passed on the kernel command line.
    pub agent_log_level: String,
    /// Where a backend without a data disk (local) keeps the engine's state.
    pub engine_dir: PathBuf,
    /// The key this boot's agent admits connections with.
    pub agent_key: berth_agent_proto::AgentKey,
}

/// Fixed guest network facts for user-mode networking.
pub const GUEST_NET: &str = "10.0.2.15/24,10.0.2.2,10.0.2.3";
/// Where user-mode networking exposes the host's loopback to the guest.
pub const HOST_ALIAS_IP: &str = "10.0.2.2";

/// A process that belongs to a running VM (for status and crash recovery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmProcess {
    pub name: String,
    pub pid: u32,
}

pub trait VmBackend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts the VM and its helpers; returns once the VM process runs (the
    /// agent may not answer yet).
    fn start<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn RunningVm>>>;
}

pub trait RunningVm: Send {
    /// How to reach the guest agent.
    fn agent_endpoint(&self) -> AgentEndpoint;
    fn processes(&self) -> Vec<VmProcess>;
    /// The listener on which the agent announces that it serves, if this
    /// VM's transport has one (taken once; see agent_client::ReadyListener).
    fn take_ready_listener(&mut self) -> Option<crate::agent_client::ReadyListener>;
    /// Resolves when the VM has exited on its own; describes how.
    fn wait(&mut self) -> BoxFuture<'_, String>;
    /// Waits up to `grace` for the VM to exit (after the agent was asked to
    /// power off), then kills it; stops the helpers and removes their sockets.
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<()>>;
}

/// Which kind of machine runs the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A Berth VM (the default everywhere).
    #[default]
    Vm,
    /// No VM: the agent runs on this (Linux) host.
    Local,
}

/// The backend of that kind for this host.
pub fn host_backend(kind: BackendKind) -> Result<Box<dyn VmBackend>> {
    #[cfg(target_os = "linux")]
    {
        match kind {
            BackendKind::Vm => Ok(Box::new(qemu::QemuBackend::locate()?)),
            BackendKind::Local => Ok(Box::new(local::LocalBackend::locate()?)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        match kind {
            BackendKind::Vm => anyhow::bail!(
                "Berth has no VM backend for {} yet (planned: Virtualization.framework on macOS, Hyper-V on Windows)",
                std::env::consts::OS
            ),
            BackendKind::Local => anyhow::bail!("the local backend needs a Linux host"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_needs_hardware_virtualisation() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let pvm = "processor\t: 0\nflags\t\t: fpu vme sse hypervisor\n";
        assert!(kvm_usable(true, vmx));
        assert!(!kvm_usable(true, pvm), "a /dev/kvm without vmx/svm is not usable");
        assert!(!kvm_usable(false, vmx));
        assert!(kvm_usable(true, "flags : svm\n"));
    }
}
