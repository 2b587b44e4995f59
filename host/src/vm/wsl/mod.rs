//! The WSL 2 backend, Berth's default on Windows: no administrator rights,
//! Microsoft's kernel and VM, Berth's agent as the engine in a distro of
//! its own. plan.rs decides every command line and reads every answer
//! (tested on every host); this file runs them on Windows.

pub mod plan;

#[cfg(windows)]
pub use backend::WslBackend;

#[cfg(windows)]
mod backend {
    use std::path::PathBuf;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context, Result};
    use tokio::process::{Child, Command};

    use super::plan::{self, CommandPlan, WslPlan};
    use crate::agent_client::{AgentEndpoint, GuestTransport, ReadyListener};
    use crate::vm::{BoxFuture, GuestFacts, RunningVm, VmBackend, VmProcess, VmSpec};

    /// How long WSL may take to bring its VM up and start the distro (a
    /// cold start of the utility VM takes seconds).
    const VM_ID_TIMEOUT: Duration = Duration::from_secs(60);

    pub struct WslBackend {
        assets_dir: PathBuf,
    }

    impl WslBackend {
        pub fn locate() -> Result<WslBackend> {
            let assets = crate::paths::Assets::locate()?;
            let rootfs = assets.dir.join(plan::ROOTFS_TARBALL);
            if !rootfs.is_file() {
                bail!(
                    "the WSL guest image {} is missing; reinstall Berth (it ships beside the VM's initramfs)",
                    rootfs.display()
                );
            }
            Ok(WslBackend { assets_dir: assets.dir })
        }
    }

    fn command(plan: &CommandPlan) -> Command {
        let mut cmd = Command::new(&plan.program);
        cmd.args(&plan.args).envs(plan.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null());
        // No console window flashes up from the daemon.
        cmd.creation_flags(windows_sys::Win32::System::Threading::CREATE_NO_WINDOW);
        cmd
    }

    /// Runs a command to its end; its stdout, or an error with its output.
    async fn run(plan: &CommandPlan, what: &str) -> Result<Vec<u8>> {
        let output = command(plan)
            .output()
            .await
            .with_context(|| format!("{what}: running {} (is WSL installed? `wsl --install`)", plan.program))?;
        if !output.status.success() {
            let said = plan::decode_wsl_output(&[output.stdout, output.stderr].concat());
            bail!("{what}: `{} {}` failed ({}): {}", plan.program, plan.args.join(" "), output.status, said.trim());
        }
        Ok(output.stdout)
    }

    impl VmBackend for WslBackend {
        fn name(&self) -> &'static str {
            "wsl"
        }

        fn accel(&self) -> &'static str {
            "wsl2"
        }

        fn facts(&self, _spec: &VmSpec) -> GuestFacts {
            plan::guest_facts()
        }

        fn start<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn RunningVm>>> {
            Box::pin(async move {
                if !spec.shares.is_empty() {
                    tracing::info!("[vm] shares are not needed with WSL: every drive is reachable at /mnt/<letter>");
                }
                let home = spec.run_dir.parent().context("the run directory has no parent")?;
                let is_default = crate::paths::Paths::default_home().is_some_and(|h| h == home);
                let plan = WslPlan::new(home, is_default, &self.assets_dir);
                let listed = plan::decode_wsl_output(&run(&plan.list(), "listing WSL distros").await?);
                if !plan::is_registered(&listed, &plan.distro) {
                    tracing::info!(distro = %plan.distro, "registering Berth's WSL distro");
                    std::fs::create_dir_all(&plan.install_dir)
                        .with_context(|| format!("creating {}", plan.install_dir.display()))?;
                    run(&plan.import(), "registering Berth's WSL distro").await?;
                } else {
                    // An agent a dead daemon left behind holds the vsock port.
                    let _ = run(&plan.terminate(), "stopping a leftover agent").await;
                }
                let agent_log = crate::private_fs::open_for_writing(&spec.agent_log, true)?;
                let wslenv = std::env::var("WSLENV").ok();
                let mut cmd = command(&plan.agent(&spec.agent_key.to_hex(), wslenv.as_deref()));
                cmd.stdout(agent_log.try_clone()?).stderr(agent_log).kill_on_drop(true);
                let child = crate::platform::spawn_owned(&mut cmd).context("starting the agent in WSL")?;
                let mut vm = WslVm { plan, child, transport: None };
                match vm.find_vm_id().await {
                    Ok(id) => vm.transport = Some(GuestTransport::HvSocket { vm_id: id.to_string() }),
                    Err(err) => {
                        vm.stop(Duration::ZERO).await?;
                        return Err(err);
                    }
                }
                Ok(Box::new(vm) as Box<dyn RunningVm>)
            })
        }
    }

    struct WslVm {
        plan: WslPlan,
        /// `wsl.exe` running the agent: its life is the agent's.
        child: Child,
        transport: Option<GuestTransport>,
    }

    impl WslVm {
        /// Polls for the id until WSL's VM serves the distro.
        async fn find_vm_id(&mut self) -> Result<uuid::Uuid> {
            let deadline = Instant::now() + VM_ID_TIMEOUT;
            loop {
                if let Some(status) = self.child.try_wait()? {
                    bail!("the agent in WSL exited at once ({status}); see `berth logs --source agent`");
                }
                let output = run(&self.plan.find_vm_id(), "finding WSL's VM").await?;
                match plan::read_vm_id(&String::from_utf8_lossy(&output), &self.plan.distro) {
                    Ok(id) => return Ok(id),
                    Err(err @ plan::VmIdError::NotRunning(_)) if Instant::now() < deadline => {
                        tracing::debug!(%err, "waiting for WSL's VM");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(err) => {
                        // An elevated daemon can ask HCS instead (a WSL without wslhost.exe).
                        let enumerated =
                            tokio::task::spawn_blocking(|| crate::vm::hcs::computecore::enumerate(plan::HCS_WSL_QUERY))
                                .await?;
                        if let Some(id) = enumerated.ok().as_deref().and_then(plan::vm_id_from_hcs) {
                            return Ok(id);
                        }
                        return Err(err.into());
                    }
                }
            }
        }
    }

    impl RunningVm for WslVm {
        fn agent_endpoint(&self) -> AgentEndpoint {
            AgentEndpoint::agent(self.transport.clone().expect("set before the VM is handed out"))
        }

        fn processes(&self) -> Vec<VmProcess> {
            self.child.id().map(|pid| VmProcess { name: "wsl".into(), pid }).into_iter().collect()
        }

        fn take_ready_listener(&mut self) -> Option<ReadyListener> {
            None
        }

        fn wait(&mut self) -> BoxFuture<'_, String> {
            Box::pin(async move {
                match self.child.wait().await {
                    Ok(status) => format!("the agent in WSL exited ({status})"),
                    Err(err) => format!("waiting for the agent in WSL failed: {err}"),
                }
            })
        }

        fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<()>> {
            Box::pin(async move {
                if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
                    tracing::warn!("the agent in WSL did not exit in time; terminating the distro");
                }
                // The distro's other processes (the containers' shims) end with it.
                let terminated = run(&self.plan.terminate(), "stopping Berth's WSL distro").await;
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                terminated.map(drop)
            })
        }
    }
}
