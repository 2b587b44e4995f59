//! The Virtualization.framework backend (macOS, Apple silicon and Intel).
//!
//! The daemon writes a [`plan::VzPlan`] and starts a VM helper process
//! (`berth vz-vmm <plan>`, helper.rs) that owns the VM, as QEMU's process
//! does for the QEMU backend; the helper serves hybrid vsock on the run
//! directory's `agent.vsock`, so the agent is reached, and announces
//! itself, exactly as with vhost-device-vsock. Only framework.rs and
//! helper.rs are macOS-only; the plan, the relay and the error messages are
//! plain code tested on every host.

pub mod errors;
pub mod plan;
#[cfg(unix)]
pub mod relay;

#[cfg(target_os = "macos")]
mod framework;
#[cfg(target_os = "macos")]
pub mod helper;

#[cfg(target_os = "macos")]
pub use backend::VzBackend;

/// The hidden subcommand that runs the VM helper.
#[cfg(target_os = "macos")]
pub const HELPER_SUBCOMMAND: &str = "vz-vmm";

#[cfg(target_os = "macos")]
mod backend {
    use std::path::PathBuf;
    use std::time::Duration;

    use anyhow::{Context, Result};
    use tokio::process::{Child, Command};

    use super::plan::{self, VzPlan};
    use crate::agent_client::{AgentEndpoint, GuestTransport, ReadyListener};
    use crate::vm::owned::{spawn_owned, wait_for_socket};
    use crate::vm::{BoxFuture, GuestFacts, RunningVm, VmBackend, VmProcess, VmSpec};

    /// The helper's own stop sequence (requestStop, its grace, stop) after a SIGTERM.
    const HELPER_STOP_TIME: Duration = Duration::from_secs(8);

    pub struct VzBackend {
        kernel: PathBuf,
        initramfs: PathBuf,
        /// This binary: the helper is its hidden subcommand (and shares its signature).
        helper: PathBuf,
    }

    impl VzBackend {
        pub fn locate() -> Result<VzBackend> {
            let assets = crate::paths::Assets::locate()?;
            Ok(VzBackend {
                kernel: kernel(&assets)?,
                initramfs: assets.initramfs(),
                helper: std::env::current_exe().context("finding the berth binary")?,
            })
        }
    }

    /// VZ boots an uncompressed arm64 `Image` on Apple silicon, the x86_64 kernel on Intel.
    #[cfg(target_arch = "aarch64")]
    fn kernel(assets: &crate::paths::Assets) -> Result<PathBuf> {
        use std::io::Read;
        let path = assets.dir().join("Image");
        let mut header = Vec::with_capacity(64);
        std::fs::File::open(&path)
            .with_context(|| format!("no arm64 guest kernel at {}", path.display()))?
            .take(64)
            .read_to_end(&mut header)?;
        plan::check_arm64_image(&header).with_context(|| path.display().to_string())?;
        Ok(path)
    }

    #[cfg(not(target_arch = "aarch64"))]
    fn kernel(assets: &crate::paths::Assets) -> Result<PathBuf> {
        assets.kernel()
    }

    impl VmBackend for VzBackend {
        fn name(&self) -> &'static str {
            "vz"
        }

        fn accel(&self) -> &'static str {
            // Virtualization.framework runs the guest on Hypervisor.framework.
            "hvf"
        }

        fn facts(&self, _spec: &VmSpec) -> GuestFacts {
            plan::guest_facts()
        }

        fn start<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn RunningVm>>> {
            Box::pin(async move {
                crate::vm::disk::prepare_raw(&spec.disk, spec.disk_gib)?;
                let initramfs = spec.run_dir.join("initramfs-boot.cpio");
                let plan_file = plan::plan_file(spec);
                let uds = plan::agent_socket(spec);
                let mut vm = VzVm {
                    helper: None,
                    files: vec![initramfs.clone(), plan_file.clone(), uds.clone()],
                    uds: uds.clone(),
                    vmm_log: spec.vmm_log.clone(),
                    ready: None,
                };
                for file in &vm.files {
                    let _ = std::fs::remove_file(file);
                }
                crate::vm::boot_key::write_initramfs_with_key(&self.initramfs, &spec.agent_key, &initramfs)
                    .context("writing this boot's initramfs")?;
                let plan = VzPlan::from_spec(spec, &self.kernel, &initramfs, cfg!(target_arch = "aarch64"))?;
                std::io::Write::write_all(
                    &mut crate::private_fs::open_for_writing(&plan_file, false)?,
                    serde_json::to_string_pretty(&plan)?.as_bytes(),
                )?;
                // Before the guest can possibly announce itself.
                vm.ready = vm.agent_endpoint().listen_for_ready().context("listening for the agent's readiness")?;
                let _ = std::fs::remove_file(&spec.vmm_log);
                let mut cmd = Command::new(&self.helper);
                cmd.arg(super::HELPER_SUBCOMMAND).arg(&plan_file);
                let mut child = spawn_owned(&mut cmd, &spec.vmm_log, "the VM helper")?;
                // The helper's own words (no entitlement, old macOS...) say more than its exit status.
                if let Err(err) = wait_for_socket(&uds, &mut child, "the VM helper").await {
                    anyhow::bail!("{err}: {}", log_tail(&spec.vmm_log));
                }
                vm.helper = Some(child);
                Ok(Box::new(vm) as Box<dyn RunningVm>)
            })
        }
    }

    /// The last lines the helper wrote (its stderr is the vmm log).
    fn log_tail(log: &std::path::Path) -> String {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    struct VzVm {
        helper: Option<Child>,
        /// What this boot put in the run directory (the initramfs holds the key).
        files: Vec<PathBuf>,
        uds: PathBuf,
        vmm_log: PathBuf,
        ready: Option<ReadyListener>,
    }

    impl Drop for VzVm {
        fn drop(&mut self) {
            // kill_on_drop ends the helper; its files are ours to remove.
            for file in &self.files {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    impl RunningVm for VzVm {
        fn agent_endpoint(&self) -> AgentEndpoint {
            AgentEndpoint::agent(GuestTransport::HybridVsock { uds: self.uds.clone() })
        }

        fn processes(&self) -> Vec<VmProcess> {
            self.helper.iter().filter_map(|c| c.id()).map(|pid| VmProcess { name: "vz-vmm".into(), pid }).collect()
        }

        fn take_ready_listener(&mut self) -> Option<ReadyListener> {
            self.ready.take()
        }

        fn wait(&mut self) -> BoxFuture<'_, String> {
            Box::pin(async move {
                let Some(helper) = self.helper.as_mut() else {
                    return "the VM was never started".into();
                };
                let msg = match helper.wait().await {
                    Ok(status) => format!("the VM helper exited ({status})"),
                    Err(err) => format!("waiting for the VM helper failed: {err}"),
                };
                match log_tail(&self.vmm_log) {
                    tail if tail.is_empty() => msg,
                    tail => format!("{msg}: {tail}"),
                }
            })
        }

        fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<()>> {
            Box::pin(async move {
                let Some(mut helper) = self.helper.take() else { return Ok(()) };
                if tokio::time::timeout(grace, helper.wait()).await.is_err() {
                    // The helper asks the guest (requestStop), then stops the VM hard.
                    tracing::warn!(
                        grace_ms = grace.as_millis() as u64,
                        "the VM did not power off in time; stopping it"
                    );
                    if let Some(pid) = helper.id() {
                        let _ = crate::platform::request_stop(pid);
                    }
                    if tokio::time::timeout(HELPER_STOP_TIME, helper.wait()).await.is_err() {
                        tracing::warn!("the VM helper did not stop; killing it");
                        let _ = helper.kill().await;
                    }
                }
                for file in &self.files {
                    let _ = std::fs::remove_file(file);
                }
                Ok(())
            })
        }
    }
}
