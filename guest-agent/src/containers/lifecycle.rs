//! A container's runs: start (through its shim), exit, restart policy,
//! and `docker exec` into a running one.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::bundle;
use berth_engine::container::{RestartPolicy, State, Status};
use berth_engine::logfile;
use berth_engine::rootfs;
use berth_engine::shim;

use crate::error::AgentError;

use super::{internal, Containers, Entry, ShimPipe};

impl Containers {
    /// Starts the container with the host sockets the host bound for it
    /// (`published`, kept in the record). `Ok(false)`: it was already running.
    pub async fn start(
        self: &Arc<Self>,
        name: &str,
        published: Vec<berth_agent_proto::ports::PortBinding>,
    ) -> Result<bool, AgentError> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let state = entry.state();
        if state.status == Status::Paused {
            return Err(AgentError::conflict("cannot start a paused container, try unpause instead"));
        }
        if state.status.is_running() {
            return Ok(false);
        }
        entry.update(|c| {
            c.state.stopped_by_user = false;
            c.published_ports = published;
        })?;
        self.clone().launch(&entry).await?;
        Ok(true)
    }

    /// Mounts the root filesystem, writes the spec, starts the shim and
    /// waits for the container's process to be running.
    pub(super) async fn launch(self: Arc<Self>, entry: &Arc<Entry>) -> Result<(), AgentError> {
        let record = entry.snapshot();
        let dir = entry.dir.clone();
        let cgroup_root = self.cgroup_root.clone();
        let volumes_root = self.volumes.root().to_path_buf();
        let pid_namespace = match record.host_config.pid_mode.as_str().strip_prefix("container:") {
            Some(other) => Some(self.pid_namespace_of(other).await?),
            None => None,
        };
        // The network namespace exists, endpoints up, before the process.
        let network = match self.join_network(&record).await {
            Ok(network) => network,
            Err(err) => {
                // Recorded as a failed start (and `--rm` removes it, which
                // the CLI waits for), answered with the network's own error
                // when it is the client's (dockerd's 409 for container:X).
                let failed = self.failed_to_start(entry, err.message().to_string()).await;
                let theirs =
                    matches!(err.kind(), crate::error::ErrorKind::Conflict | crate::error::ErrorKind::NotFound);
                return Err(if theirs { err } else { failed });
            }
        };
        let (netns, link_env) = (network.netns.clone(), network.env.clone());
        let filters = self.device_filters.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let host = bundle::Host {
                cgroup_root: cgroup_root.as_deref(),
                volumes_root: &volumes_root,
                device_filters: &filters,
                network_namespace: netns.as_deref(),
                extra_env: &link_env,
            };
            bundle::prepare(&record, &dir, &host, pid_namespace)
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?;
        let prepared = match prepared {
            Ok(filter) => self.write_network_files(entry).await.map(|()| filter).map_err(|e| e.message().to_string()),
            Err(err) => Err(err.to_string()),
        };
        let device_filter = match prepared {
            Ok(filter) => filter,
            Err(message) => {
                if network.owns_endpoints {
                    self.leave_networks(&entry.snapshot().id).await;
                }
                return Err(self.failed_to_start(entry, message).await);
            }
        };
        let (ready_read, ready_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| AgentError::internal(e.to_string()))?;
        // Both above the shim's fixed numbers: a loaded filter the first
        // start after a boot got as fd 3 was overwritten by the ready pipe,
        // and the shim's attach then failed with EINVAL.
        let ready_write = crate::child_fds::above_fixed(ready_write).map_err(internal("placing the shim's pipe"))?;
        let filter = device_filter
            .as_deref()
            .map(|filter| crate::child_fds::copy_above_fixed(filter.as_fd()))
            .transpose()
            .map_err(internal("placing the device filter"))?;
        // /proc/self/exe, not a path: in the VM the agent's original file
        // was moved at boot (init::switch_to_tmpfs_root).
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("shim").arg(entry.dir.path()).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        let mut fds = vec![(ready_write.as_raw_fd(), shim::READY_FD)];
        fds.extend(filter.as_ref().map(|f| (f.as_raw_fd(), shim::DEVICE_FILTER_FD)));
        // SAFETY: the closure only dup2s descriptor numbers, open until the
        // spawn is done (child_fds::place); `fds` is moved in, not allocated.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || crate::child_fds::place(&fds));
        }
        // The reaper's word on the shim's exit, not a pidfd opened later: a
        // container that exits at once takes its shim with it, and the
        // reaper may have collected the shim before we look.
        let (child, shim_exit) = self.reaper.spawn(&mut cmd).map_err(internal("starting the container's shim"))?;
        drop((ready_write, filter));
        let shim_pid = child.id() as i32;
        // One line; not to EOF, which a leaked descriptor could delay. The
        // shim writes its second line, the exit, on the same pipe.
        let (line, shim_pipe) = tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            let mut pipe = std::io::BufReader::new(std::fs::File::from(ready_read));
            let _ = std::io::BufRead::read_line(&mut pipe, &mut text);
            (text, pipe)
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?;
        let ready: shim::Ready = serde_json::from_str(line.trim())
            .unwrap_or(shim::Ready { pid: None, error: Some("the container's shim exited before reporting".into()) });
        let pid = match (ready.pid, ready.error) {
            (Some(pid), _) => pid,
            (None, error) => {
                let message = error.unwrap_or_default();
                if network.owns_endpoints {
                    self.leave_networks(&entry.snapshot().id).await;
                }
                return Err(self.failed_to_start(entry, message).await);
            }
        };
        entry.update(|c| {
            c.state = State {
                status: Status::Running,
                pid,
                shim_pid,
                started_at_ns: logfile::now_ns(),
                stopped_by_user: c.state.stopped_by_user,
                health: super::health::health_at_start(c),
                ..Default::default()
            }
        })?;
        tracing::info!(id = %entry.snapshot().id, pid, "container started");
        self.emit("start", &entry.snapshot(), &[]);
        self.monitor_health(entry);
        tokio::spawn(self.watch_exit(
            entry.clone(),
            async move {
                let _ = shim_exit.await;
            },
            Some(shim_pipe),
        ));
        Ok(())
    }

    /// The PID namespace of another container (`--pid container:NAME`),
    /// which must be running.
    pub(super) async fn pid_namespace_of(self: &Arc<Self>, name: &str) -> Result<PathBuf, AgentError> {
        let other = self.lookup(name).await?.snapshot();
        if other.state.status != Status::Running || other.state.pid <= 0 {
            // dockerd's words.
            return Err(AgentError::conflict(format!("cannot join PID of a non running container: {}", other.id)));
        }
        Ok(PathBuf::from(format!("/proc/{}/ns/pid", other.state.pid)))
    }

    /// Records a start that failed (as Docker does: exit code 127 for a
    /// missing executable, 128 otherwise) and returns the client's error.
    pub(super) async fn failed_to_start(self: &Arc<Self>, entry: &Arc<Entry>, message: String) -> AgentError {
        let dir = entry.dir.clone();
        let _ = tokio::task::spawn_blocking(move || rootfs::unmount_overlay(&dir.layer())).await;
        let code = if message.contains("not found") || message.contains("no such file") { 127 } else { 128 };
        let _ = entry.update(|c| {
            c.state.status = Status::Exited;
            c.state.exit_code = code;
            c.state.error = message.clone();
            c.state.finished_at_ns = logfile::now_ns();
        });
        tracing::warn!(id = %entry.snapshot().id, %message, "container failed to start");
        // `--rm` applies to a container that never ran, too (the docker CLI
        // waits for its removal).
        if entry.snapshot().host_config.auto_remove.or_zero() {
            let _ = self.remove_entry(entry).await;
            self.remove_anonymous_volumes(&entry.snapshot().volumes);
        }
        if code == 127 {
            AgentError::invalid(format!("failed to create task for container: {message}: unknown"))
        } else {
            AgentError::internal(format!("failed to create task for container: {message}: unknown"))
        }
    }

    /// Waits for the shim to exit, then records the container's exit and
    /// applies the restart policy or auto-remove.
    /// Records the container's end once `shim_exited` resolves.
    pub(super) async fn watch_exit(
        self: Arc<Self>,
        entry: Arc<Entry>,
        shim_exited: impl std::future::Future<Output = ()>,
        shim_pipe: Option<ShimPipe>,
    ) {
        shim_exited.await;
        self.finish(&entry, shim_pipe).await;
    }

    /// Records the exit: from the shim's pipe when we started the shim (it
    /// needs no disk), else from the file a shim we re-adopted wrote.
    pub(super) async fn finish(self: &Arc<Self>, entry: &Arc<Entry>, shim_pipe: Option<ShimPipe>) {
        let dir = entry.dir.clone();
        let data_root = self.root.clone();
        let exit = tokio::task::spawn_blocking(move || {
            let from_pipe = shim_pipe.and_then(|mut pipe| {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut pipe, &mut line).ok()?;
                serde_json::from_str::<shim::ExitRecord>(line.trim()).ok()
            });
            let exit = from_pipe.or_else(|| shim::read_exit(dir.path()));
            let _ = rootfs::unmount_overlay(&dir.layer());
            // What the container wrote (its layer, its volumes) is on disk
            // before anyone is told it exited.
            if let Err(err) = berth_engine::durable::sync_filesystem(&data_root) {
                tracing::warn!(%err, "syncing the data disk after a container exit failed");
            }
            exit
        })
        .await
        .ok()
        .flatten();
        // Its endpoints go with the run (a restart makes new ones, with the
        // same addresses where it can).
        self.leave_networks(&entry.snapshot().id).await;
        let _ = entry.update(|c| {
            c.state.status = Status::Exited;
            c.state.pid = 0;
            if let Some(health) = c.state.health.as_mut() {
                health.stop();
            }
            match exit {
                Some(exit) => {
                    c.state.exit_code = exit.exit_code;
                    c.state.oom_killed = exit.oom_killed;
                    c.state.finished_at_ns = exit.finished_at_ns;
                }
                None => {
                    c.state.exit_code = 255;
                    c.state.error = "the container's supervisor died".into();
                    c.state.finished_at_ns = logfile::now_ns();
                }
            }
        });
        let record = entry.snapshot();
        tracing::info!(id = %record.id, code = record.state.exit_code, "container exited");
        if record.state.oom_killed {
            self.emit("oom", &record, &[]);
        }
        self.emit("die", &record, &[("exitCode", record.state.exit_code.to_string())]);
        if record.host_config.auto_remove.or_zero() {
            let _ = self.remove_entry(entry).await;
            self.remove_anonymous_volumes(&record.volumes);
            return;
        }
        let policy = RestartPolicy::parse(&record.host_config.restart_policy).unwrap_or(RestartPolicy::No);
        let restart = match policy {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => !record.state.stopped_by_user,
            RestartPolicy::OnFailure { max_retries } => {
                !record.state.stopped_by_user
                    && record.state.exit_code != 0
                    && (max_retries == 0 || record.restart_count < max_retries)
            }
        };
        if restart {
            tokio::spawn(self.clone().restart_later(entry.clone()));
        }
    }

    /// Docker's back-off: 100 ms doubling per consecutive restart, capped
    /// at a minute, reset after the container ran for 10 s.
    ///
    /// Boxed: it starts the container again, whose exit comes back here, and
    /// a recursive `async fn` has no nameable type.
    pub(super) fn restart_later(
        self: Arc<Self>,
        entry: Arc<Entry>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.restart_later_inner(entry))
    }

    pub(super) async fn restart_later_inner(self: Arc<Self>, entry: Arc<Entry>) {
        let record = entry.snapshot();
        let ran_ns = record.state.finished_at_ns - record.state.started_at_ns;
        let attempt = if ran_ns > 10_000_000_000 { 0 } else { record.restart_count.min(10) };
        let delay = Duration::from_millis((100u64 << attempt).min(60_000));
        let _ = entry.update(|c| c.state.status = Status::Restarting);
        tokio::time::sleep(delay).await;
        let _op = entry.op.lock().await;
        let state = entry.state();
        if state.status != Status::Restarting || state.stopped_by_user || entry.changed.borrow().is_none() {
            return;
        }
        let _ = entry.update(|c| c.restart_count += 1);
        if let Err(err) = self.clone().launch(&entry).await {
            tracing::warn!(id = %record.id, err = %err.message(), "restart failed");
        }
    }

    /// Starts containers whose restart policy says so after a boot.
    pub async fn restart_after_boot(self: &Arc<Self>) -> Result<(), AgentError> {
        self.ensure_loaded().await?;
        let entries: Vec<Arc<Entry>> = self.entries.lock().unwrap().values().cloned().collect();
        for entry in entries {
            let record = entry.snapshot();
            let policy = RestartPolicy::parse(&record.host_config.restart_policy).unwrap_or(RestartPolicy::No);
            let wanted = match policy {
                RestartPolicy::Always => true,
                RestartPolicy::UnlessStopped => !record.state.stopped_by_user,
                _ => false,
            };
            if wanted && !record.state.status.is_running() && record.state.started_at_ns > 0 {
                let _op = entry.op.lock().await;
                if let Err(err) = self.clone().launch(&entry).await {
                    tracing::warn!(id = %record.id, err = %err.message(), "restart after boot failed");
                }
            }
        }
        Ok(())
    }

    /// Rewrites an Exec into the container as the command that enters it
    /// (`berth-agent enter PLAN`), with the container's environment, user
    /// and isolation resolved here.
    pub async fn exec_in(
        self: &Arc<Self>,
        start: berth_agent_proto::ExecStart,
    ) -> Result<berth_agent_proto::ExecStart, AgentError> {
        let entry = self.lookup(&start.container_id).await?;
        let record = entry.snapshot();
        if record.state.status != Status::Running {
            let why = if record.state.status == Status::Paused { "paused" } else { "not running" };
            return Err(AgentError::conflict(format!("Container {} is {why}", record.id)));
        }
        let dir = entry.dir.clone();
        let cgroup = self.cgroup_root.as_ref().map(|root| berth_engine::cgroup::container_cgroup(root, &record.id));
        let plan = tokio::task::spawn_blocking(move || {
            bundle::enter_plan(&record, &dir, cgroup, &start).map(|plan| (plan, start))
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map_err(|e| AgentError::invalid(e.to_string()))?;
        let (plan, start) = plan;
        let plan = serde_json::to_string(&plan).map_err(|e| AgentError::internal(e.to_string()))?;
        Ok(berth_agent_proto::ExecStart {
            // exec.rs moves the plan from argv onto runtime::PLAN_FD.
            argv: vec!["/proc/self/exe".into(), "enter".into(), plan],
            env: Vec::new(),
            cwd: "/".into(),
            container_id: String::new(),
            user: String::new(),
            ..start
        })
    }
}
