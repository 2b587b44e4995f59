//! Ending and removing: signals, stop, pause, wait, remove and prune.

use std::sync::Arc;
use std::time::Duration;

use berth_engine::container::{self, Status};
use berth_engine::rootfs;
use tokio::sync::watch;

use crate::error::AgentError;

use super::{internal, Containers, Entry};
use crate::filters::ContainerFilters;

impl Containers {
    pub(super) fn signal(entry: &Entry, signal: i32) -> Result<(), AgentError> {
        let state = entry.state();
        if !state.status.is_running() || state.pid <= 0 {
            let id = entry.snapshot().id;
            return Err(AgentError::conflict(format!("Container {id} is not running")));
        }
        // SAFETY: kill takes a pid and a signal number (real-time signals
        // included, which nix's Signal enum cannot name).
        if unsafe { libc::kill(state.pid, signal) } < 0 {
            let err = std::io::Error::last_os_error();
            return Err(AgentError::internal(format!("sending signal {signal}: {err}")));
        }
        Ok(())
    }

    pub async fn kill(self: &Arc<Self>, name: &str, signal: &str) -> Result<(), AgentError> {
        let entry = self.lookup(name).await?;
        let signal = if signal.is_empty() {
            libc::SIGKILL
        } else {
            container::parse_signal(signal).map_err(AgentError::invalid)?
        };
        if entry.state().status == Status::Paused && signal == libc::SIGKILL {
            let _ = self.thaw(&entry);
        }
        entry.update(|c| c.state.stopped_by_user = true)?;
        Self::signal(&entry, signal)?;
        self.emit("kill", &entry.snapshot(), &[("signal", signal.to_string())]);
        // As dockerd: a SIGKILL answers once the container is gone, so the
        // exit code is there for the next inspect.
        if signal == libc::SIGKILL {
            Self::wait_stopped(&entry, Duration::from_secs(10)).await;
        }
        Ok(())
    }

    pub(super) fn thaw(&self, entry: &Entry) -> Result<(), AgentError> {
        let id = entry.snapshot().id;
        if let Some(root) = &self.cgroup_root {
            berth_engine::cgroup::set_frozen(&berth_engine::cgroup::container_cgroup(root, &id), false)
                .map_err(|e| AgentError::internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Waits until the container is not running; false on timeout.
    pub(super) async fn wait_stopped(entry: &Entry, timeout: Duration) -> bool {
        let mut changed = entry.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !entry.state().status.is_running() || changed.borrow().is_none() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }

    /// `Ok(false)`: it was not running.
    pub async fn stop(self: &Arc<Self>, name: &str, timeout: Option<i32>, signal: &str) -> Result<bool, AgentError> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let stopped = self.stop_entry(&entry, timeout, signal).await?;
        if stopped {
            self.emit("stop", &entry.snapshot(), &[]);
        }
        Ok(stopped)
    }

    pub(super) async fn stop_entry(
        &self,
        entry: &Arc<Entry>,
        timeout: Option<i32>,
        signal: &str,
    ) -> Result<bool, AgentError> {
        let record = entry.snapshot();
        if record.state.status == Status::Restarting {
            entry.update(|c| {
                c.state.stopped_by_user = true;
                c.state.status = Status::Exited;
            })?;
            return Ok(true);
        }
        if !record.state.status.is_running() {
            return Ok(false);
        }
        entry.update(|c| c.state.stopped_by_user = true)?;
        let signal = match (signal, record.config.stop_signal.get()) {
            ("", Some(s)) if !s.is_empty() => s.to_string(),
            ("", _) => "SIGTERM".into(),
            (s, _) => s.to_string(),
        };
        let signal = container::parse_signal(&signal).map_err(AgentError::invalid)?;
        let timeout = timeout.or(record.config.stop_timeout.get().map(|t| *t as i32)).unwrap_or(10);
        if record.state.status == Status::Paused {
            self.thaw(entry)?;
        }
        let _ = Self::signal(entry, signal);
        if timeout < 0 {
            Self::wait_stopped(entry, Duration::from_secs(u64::MAX / 4)).await;
            return Ok(true);
        }
        if !Self::wait_stopped(entry, Duration::from_secs(timeout as u64)).await {
            let _ = Self::signal(entry, libc::SIGKILL);
            Self::wait_stopped(entry, Duration::from_secs(30)).await;
        }
        Ok(true)
    }

    /// Stops every running container (in parallel), as a daemon does when
    /// it shuts down; restart policies apply again at the next start.
    pub async fn stop_all(self: &Arc<Self>, timeout_secs: i32) {
        if self.loaded.get().is_none() {
            return;
        }
        let entries: Vec<Arc<Entry>> = self.entries.lock().unwrap().values().cloned().collect();
        let stops: Vec<_> = entries
            .into_iter()
            .filter(|e| e.state().status.is_running())
            .map(|entry| {
                let this = self.clone();
                tokio::spawn(async move {
                    let _op = entry.op.lock().await;
                    let stopped_by_user = entry.state().stopped_by_user;
                    let _ = this.stop_entry(&entry, Some(timeout_secs), "").await;
                    // A shutdown is not the user's stop: `unless-stopped` and
                    // `always` containers come back at the next boot.
                    let _ = entry.update(|c| c.state.stopped_by_user = stopped_by_user);
                })
            })
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }

    /// Registers a waiter now (the caller tells its client it is waiting
    /// only after this returns, so a start that follows cannot be missed)
    /// and returns the future that resolves when the condition is met.
    pub async fn wait(
        self: &Arc<Self>,
        name: &str,
        condition: &str,
    ) -> Result<impl std::future::Future<Output = (i32, String)> + Send + 'static, AgentError> {
        let entry = self.lookup(name).await?;
        let mut changed = entry.changed.subscribe();
        let start_generation = *changed.borrow_and_update();
        let initially_running = entry.state().status.is_running();
        if !["", "not-running", "next-exit", "removed"].contains(&condition) {
            return Err(AgentError::invalid(format!("invalid condition: \"{condition}\"")));
        }
        let condition = condition.to_string();
        Ok(async move { wait_for(&entry, &mut changed, start_generation, initially_running, &condition).await })
    }

    pub async fn remove(self: &Arc<Self>, name: &str, force: bool, remove_volumes: bool) -> Result<(), AgentError> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        if record.state.status.is_running() {
            if !force {
                // dockerd 20.10's words, which clients (docker-py) match.
                let verb = if record.state.status == Status::Paused { "paused" } else { "running" };
                return Err(AgentError::conflict(format!(
                    "You cannot remove a {verb} container {}. Stop the container before attempting removal or force remove",
                    record.id
                )));
            }
            entry.update(|c| c.state.stopped_by_user = true)?;
            if record.state.status == Status::Paused {
                let _ = self.thaw(&entry);
            }
            let _ = Self::signal(&entry, libc::SIGKILL);
            Self::wait_stopped(&entry, Duration::from_secs(30)).await;
        }
        self.remove_entry(&entry).await?;
        if remove_volumes {
            self.remove_anonymous_volumes(&record.volumes);
        }
        Ok(())
    }

    pub(super) async fn remove_entry(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<(), AgentError> {
        let id = entry.snapshot().id;
        self.forget_networks(&id).await;
        {
            // In memory only: once Removing, updates stop touching the files.
            let mut record = entry.record.lock().unwrap();
            record.state.status = Status::Removing;
        }
        let dir = entry.dir.clone();
        let cgroup = self.cgroup_root.as_ref().map(|root| berth_engine::cgroup::container_cgroup(root, &id));
        tokio::task::spawn_blocking(move || {
            let _ = rootfs::unmount_overlay(&dir.layer());
            // Normally gone with the shim; not if the shim was killed.
            if let Some(cgroup) = cgroup.filter(|c| c.exists()) {
                berth_engine::cgroup::remove(&cgroup);
            }
            // First a rename, so a crash part-way leaves no half container
            // to load at the next start (leftovers are swept then); made
            // durable before the removal is acknowledged (`docker run --rm`
            // returns on it).
            let doomed = dir.removing();
            std::fs::rename(dir.path(), &doomed)
                .and_then(|()| berth_engine::durable::sync_dir(doomed.parent().unwrap_or(&doomed)))
                .and_then(|()| std::fs::remove_dir_all(&doomed))
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map_err(internal("removing the container's files"))?;
        self.entries.lock().unwrap().remove(&id);
        entry.changed.send_replace(None);
        tracing::info!(%id, "container removed");
        self.emit("destroy", &entry.snapshot(), &[]);
        Ok(())
    }

    pub async fn pause(self: &Arc<Self>, name: &str, pause: bool) -> Result<(), AgentError> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        match (pause, record.state.status) {
            (true, Status::Running) | (false, Status::Paused) => {}
            (true, Status::Paused) => {
                return Err(AgentError::conflict(format!("Container {} is already paused", record.id)))
            }
            (false, _) => return Err(AgentError::conflict(format!("Container {} is not paused", record.id))),
            (true, _) => return Err(AgentError::conflict(format!("Container {} is not running", record.id))),
        }
        let cgroup = self.cgroup_of(&record.id)?;
        tokio::task::spawn_blocking(move || berth_engine::cgroup::set_frozen(&cgroup, pause))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?
            .map_err(|e| AgentError::internal(e.to_string()))?;
        entry.update(|c| c.state.status = if pause { Status::Paused } else { Status::Running })?;
        self.emit(if pause { "pause" } else { "unpause" }, &entry.snapshot(), &[]);
        Ok(())
    }

    /// Removes every stopped container (Docker's `container prune`).
    pub async fn prune(self: &Arc<Self>, filters: &str) -> Result<serde_json::Value, AgentError> {
        self.ensure_loaded().await?;
        let filters = ContainerFilters::parse_prune(filters)?;
        let until = crate::filters::until_ns(filters.values("until"))?;
        let entries: Vec<Arc<Entry>> = self.entries.lock().unwrap().values().cloned().collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for entry in entries {
            let record = entry.snapshot();
            if record.state.status.is_running() || !filters.matches(&record) {
                continue;
            }
            if until.is_some_and(|until| record.created_ns >= until) {
                continue;
            }
            let _op = entry.op.lock().await;
            reclaimed += berth_engine::volume::tree_size(&entry.dir.upper());
            if self.remove_entry(&entry).await.is_ok() {
                deleted.push(record.id);
            }
        }
        Ok(
            serde_json::json!({ "ContainersDeleted": if deleted.is_empty() { serde_json::Value::Null } else { deleted.into() }, "SpaceReclaimed": reclaimed }),
        )
    }
}

async fn wait_for(
    entry: &Entry,
    changed: &mut watch::Receiver<Option<u64>>,
    start_generation: Option<u64>,
    initially_running: bool,
    condition: &str,
) -> (i32, String) {
    loop {
        let removed = changed.borrow().is_none();
        let state = entry.state();
        let done = match condition {
            // The next exit after the request (or the last one, if the
            // container is not running when asked).
            "next-exit" => {
                removed
                    || (*changed.borrow() != start_generation || !initially_running)
                        && !state.status.is_running()
                        && state.status != Status::Created
            }
            "removed" => removed,
            _ => removed || !state.status.is_running(),
        };
        if done {
            return (state.exit_code, state.error);
        }
        if changed.changed().await.is_err() {
            let state = entry.state();
            return (state.exit_code, state.error);
        }
    }
}
