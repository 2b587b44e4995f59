//! Container lifecycle in the agent: create, start (through a shim per
//! container), stop, kill, wait, remove, logs and attach.
//!
//! Each container is a directory under `<data>/containers/<id>` holding
//! everything about it (container.json, the runtime spec, the log, the
//! shim's exit record), so the agent can be restarted at any time: on
//! start-up it reads the directories back and re-adopts running containers
//! by watching their shims with a pidfd (a shim is not necessarily our
//! child). In-memory state is a cache of those files plus a watch channel
//! per container that wakes waiters and followers on every change.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_engine::container::{self, Container, RestartPolicy, State, Status};
use berth_engine::logfile::{self, LogCursor, Record};
use berth_engine::rootfs::{self, ContainerLayer};
use berth_engine::shim::{self, ShimConfig};
use berth_engine::spec::NamespaceMode;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tonic::Status as RpcStatus;

use crate::reaper::Reaper;

const CONTAINER_FILE: &str = "container.json";

/// The agent's end of a shim's ready pipe, which later carries its exit.
type ShimPipe = std::io::BufReader<std::fs::File>;

pub struct Entry {
    pub record: Mutex<Container>,
    /// Bumped on every state change; `None` once removed.
    changed: watch::Sender<Option<u64>>,
    /// Serialises start/stop/remove of one container.
    pub(crate) op: tokio::sync::Mutex<()>,
    pub(crate) dir: PathBuf,
}

impl Entry {
    pub(crate) fn snapshot(&self) -> Container {
        self.record.lock().unwrap().clone()
    }

    pub(crate) fn state(&self) -> State {
        self.record.lock().unwrap().state.clone()
    }

    /// Applies `f` to the record, persists it and wakes watchers.
    fn update(&self, f: impl FnOnce(&mut Container)) -> Result<(), RpcStatus> {
        let data = {
            let mut record = self.record.lock().unwrap();
            f(&mut record);
            // Being removed: its directory is going away, and a write now
            // (a racing kill, an exit) would leave files that stop it.
            if record.state.status == Status::Removing {
                drop(record);
                self.changed.send_modify(|v| *v = v.map(|n| n + 1));
                return Ok(());
            }
            serde_json::to_vec_pretty(&*record).map_err(|e| RpcStatus::internal(e.to_string()))?
        };
        let saved = shim::write_atomically(&self.dir.join(CONTAINER_FILE), &data);
        // The record in memory changed either way: watchers (`docker wait`)
        // learn of it even when the disk could not (it is full).
        self.changed.send_modify(|v| *v = v.map(|n| n + 1));
        saved.map_err(|e| {
            tracing::warn!(err = %e, dir = %self.dir.display(), "saving the container's state failed");
            RpcStatus::internal(format!("saving container state: {e}"))
        })
    }
}

pub struct Containers {
    root: PathBuf,
    /// Named volumes (see volumes.rs), beside the containers on the data disk.
    pub(crate) volumes_root: PathBuf,
    cgroup_root: Option<PathBuf>,
    pub(crate) reaper: Reaper,
    pub events: Arc<crate::events::Events>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    loaded: tokio::sync::OnceCell<()>,
    device_filters: Arc<DeviceFilters>,
}

/// Loaded device filters (engine devices.rs) by their rules, handed to the
/// shims: nearly every container has Docker's default rules, and loading
/// (verifying) a program is most of a filter's cost.
#[derive(Default)]
struct DeviceFilters(Mutex<HashMap<String, Arc<OwnedFd>>>);

impl DeviceFilters {
    fn get(&self, rules: &[berth_engine::devices::Rule]) -> Result<Arc<OwnedFd>, String> {
        let key = serde_json::to_string(rules).map_err(|e| e.to_string())?;
        let mut loaded = self.0.lock().unwrap();
        if let Some(prog) = loaded.get(&key) {
            return Ok(prog.clone());
        }
        let prog = Arc::new(berth_engine::devices::load(rules).map_err(|e| e.to_string())?);
        loaded.insert(key, prog.clone());
        Ok(prog)
    }
}

pub fn no_such_container(id: &str) -> RpcStatus {
    RpcStatus::not_found(format!("No such container: {id}"))
}

fn internal(context: &str) -> impl FnOnce(std::io::Error) -> RpcStatus + '_ {
    move |e| RpcStatus::internal(format!("{context}: {e}"))
}

/// 64 random hex digits: Docker's form for container and volume IDs.
pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_err() {
        let nanos = logfile::now_ns() as u64;
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the image store tells the engine about an image at create time.
pub struct ImageInfo {
    pub id: String,
    pub config: serde_json::Value,
    pub layers: Vec<PathBuf>,
}

impl Containers {
    pub fn new(root: PathBuf, reaper: Reaper, events: Arc<crate::events::Events>) -> Arc<Containers> {
        Arc::new(Containers {
            volumes_root: root.parent().unwrap_or(&root).join("volumes"),
            root,
            cgroup_root: berth_engine::cgroup::hierarchy_root(),
            reaper,
            events,
            entries: Mutex::new(HashMap::new()),
            loaded: tokio::sync::OnceCell::new(),
            device_filters: Arc::default(),
        })
    }

    /// Reads containers back from disk (once; the data disk is mounted
    /// after the agent starts serving) and re-adopts running ones.
    async fn ensure_loaded(self: &Arc<Self>) -> Result<(), RpcStatus> {
        let this = self.clone();
        self.loaded
            .get_or_try_init(|| async move {
                std::fs::create_dir_all(&this.root).map_err(internal("creating the container directory"))?;
                let mut adopted = Vec::new();
                for dir in std::fs::read_dir(&this.root).map_err(internal("listing containers"))?.flatten() {
                    let path = dir.path();
                    if dir.file_name().to_string_lossy().starts_with(".removing-") {
                        let _ = std::fs::remove_dir_all(&path);
                        continue;
                    }
                    let Ok(data) = std::fs::read(path.join(CONTAINER_FILE)) else {
                        // A create that crashed before its record was written.
                        let _ = std::fs::remove_dir_all(&path);
                        continue;
                    };
                    let Ok(record) = serde_json::from_slice::<Container>(&data) else {
                        tracing::warn!(dir = %path.display(), "unreadable container record; skipped");
                        continue;
                    };
                    let entry = this.insert(record, path);
                    adopted.push(entry);
                }
                for entry in adopted {
                    this.clone().readopt(entry).await;
                }
                Ok::<(), RpcStatus>(())
            })
            .await?;
        Ok(())
    }

    /// A container event, with Docker's attributes (name, image, labels).
    fn emit(&self, action: &str, record: &Container, extra: &[(&str, String)]) {
        let mut attributes = serde_json::json!({ "name": record.name, "image": record.image });
        for (key, value) in record.config["Labels"].as_object().into_iter().flatten() {
            attributes[key] = value.clone();
        }
        for (key, value) in extra {
            attributes[*key] = value.clone().into();
        }
        self.events.emit("container", action, &record.id, attributes);
    }

    fn insert(&self, record: Container, dir: PathBuf) -> Arc<Entry> {
        let id = record.id.clone();
        let (changed, _) = watch::channel(Some(0));
        let entry = Arc::new(Entry { record: Mutex::new(record), changed, op: tokio::sync::Mutex::new(()), dir });
        self.entries.lock().unwrap().insert(id, entry.clone());
        entry
    }

    /// A container found on disk at start-up: still running (its shim is
    /// alive) or finished while nobody watched.
    async fn readopt(self: Arc<Self>, entry: Arc<Entry>) {
        let state = entry.state();
        if !state.status.is_running() {
            return;
        }
        match pidfd(state.shim_pid) {
            Some(fd) if shim_is_ours(state.shim_pid, &entry.dir) => {
                tracing::info!(id = %entry.snapshot().id, pid = state.pid, "re-adopted running container");
                tokio::spawn(self.clone().watch_exit(entry, pidfd_closed(fd), None));
            }
            _ => {
                // The shim is gone: take what it recorded, if anything.
                self.finish(&entry, None).await;
            }
        }
    }

    pub async fn lookup(self: &Arc<Self>, name: &str) -> Result<Arc<Entry>, RpcStatus> {
        self.ensure_loaded().await?;
        let name = name.strip_prefix('/').unwrap_or(name);
        let entries = self.entries.lock().unwrap();
        if let Some(entry) = entries.get(name) {
            return Ok(entry.clone());
        }
        if let Some(entry) = entries.values().find(|e| e.record.lock().unwrap().name == name) {
            return Ok(entry.clone());
        }
        let matches: Vec<&Arc<Entry>> = entries.iter().filter(|(id, _)| id.starts_with(name)).map(|(_, e)| e).collect();
        match matches.as_slice() {
            [one] if !name.is_empty() => Ok((*one).clone()),
            [] | [_] => Err(no_such_container(name)),
            _ => Err(RpcStatus::invalid_argument(format!("multiple IDs found with provided prefix: {name}"))),
        }
    }

    /// Every container record (for volume-in-use checks).
    pub(crate) fn records(&self) -> Vec<Container> {
        self.entries.lock().unwrap().values().map(|e| e.snapshot()).collect()
    }

    /// Every container whose image is `image_id` (for image removal checks).
    pub fn using_image(&self, image_id: &str) -> Vec<(String, Status)> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .map(|e| e.snapshot())
            .filter(|c| c.image_id == image_id)
            .map(|c| (c.id, c.state.status))
            .collect()
    }

    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        request: serde_json::Value,
        image: ImageInfo,
        image_name: String,
    ) -> Result<String, RpcStatus> {
        self.ensure_loaded().await?;
        let id = random_hex();
        let mut resolved =
            container::resolve(&request, &image.config, &id).map_err(|e| RpcStatus::invalid_argument(e.to_string()))?;
        if resolved.init {
            init_binary()?;
        }
        if let NamespaceMode::Container(other) = &resolved.options.pid {
            self.lookup(other).await?;
        }
        let volumes_from = container::parse_volumes_from(&resolved.host_config)
            .map_err(|e| RpcStatus::invalid_argument(e.to_string()))?;
        for from in volumes_from {
            let source = self.lookup(&from.container).await?.snapshot();
            resolved.inherit(&source, from.readonly);
        }
        let name = name.strip_prefix('/').unwrap_or(name).to_string();
        let name = if name.is_empty() {
            loop {
                let candidate = container::random_name(u64::from_str_radix(&random_hex()[..15], 16).unwrap_or(0));
                if self.find_by_name(&candidate).is_none() {
                    break candidate;
                }
            }
        } else {
            if !container::valid_name(&name) {
                return Err(RpcStatus::invalid_argument(format!(
                    "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )));
            }
            name
        };
        let dir = self.root.join(&id);
        let record = Container {
            id: id.clone(),
            name: name.clone(),
            created_ns: logfile::now_ns(),
            image: image_name,
            image_id: image.id,
            config: resolved.config,
            host_config: resolved.host_config,
            layers: image.layers,
            state: State::default(),
            restart_count: 0,
            volumes: Vec::new(),
            binds_from: resolved.inherited_binds,
        };
        let mut record = record;
        let own_volumes = resolved.volumes.into_iter().chain(resolved.image_volumes).collect();
        record.volumes = self.create_volumes(own_volumes).await?;
        record.volumes.extend(resolved.inherited_volumes);
        // The name check and the insertion happen under one lock, so two
        // creates with one name cannot both win.
        {
            let mut entries = self.entries.lock().unwrap();
            if let Some(other) = entries.values().find(|e| e.record.lock().unwrap().name == name) {
                let other_id = other.record.lock().unwrap().id.clone();
                return Err(RpcStatus::aborted(format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{other_id}\". You have to remove (or rename) that container to be able to reuse that name."
                )));
            }
            let (changed, _) = watch::channel(Some(0));
            entries.insert(
                id.clone(),
                Arc::new(Entry {
                    record: Mutex::new(record.clone()),
                    changed,
                    op: tokio::sync::Mutex::new(()),
                    dir: dir.clone(),
                }),
            );
        }
        let (record2, dir2, volumes_root) = (record.clone(), dir.clone(), self.volumes_root.clone());
        let written = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let (record, dir) = (record2, dir2);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            write_etc_files(&dir, &record).map_err(|e| e.to_string())?;
            fill_volumes(&record, &dir, &volumes_root)?;
            let json = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
            shim::write_atomically(&dir.join(CONTAINER_FILE), &json).map_err(|e| e.to_string())?;
            // The 201 promises the container exists: its directory, etc
            // files and filled volumes too, not only the record.
            berth_engine::durable::sync_filesystem(&dir).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| RpcStatus::internal(e.to_string()))?;
        if let Err(err) = written {
            self.entries.lock().unwrap().remove(&id);
            let _ = std::fs::remove_dir_all(&dir);
            self.remove_anonymous_volumes(&record.volumes).await;
            return Err(RpcStatus::internal(format!("creating the container: {err}")));
        }
        tracing::info!(%id, %name, "container created");
        self.emit("create", &record, &[]);
        Ok(id)
    }

    fn find_by_name(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries.lock().unwrap().values().find(|e| e.record.lock().unwrap().name == name).cloned()
    }

    /// Starts the container. `Ok(false)`: it was already running.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<bool, RpcStatus> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let state = entry.state();
        if state.status == Status::Paused {
            return Err(RpcStatus::aborted("cannot start a paused container, try unpause instead"));
        }
        if state.status.is_running() {
            return Ok(false);
        }
        entry.update(|c| c.state.stopped_by_user = false)?;
        self.clone().launch(&entry).await?;
        Ok(true)
    }

    /// Mounts the root filesystem, writes the spec, starts the shim and
    /// waits for the container's process to be running.
    async fn launch(self: Arc<Self>, entry: &Arc<Entry>) -> Result<(), RpcStatus> {
        let record = entry.snapshot();
        let dir = entry.dir.clone();
        let cgroup_root = self.cgroup_root.clone();
        let volumes_root = self.volumes_root.clone();
        let pid_namespace = match record.host_config["PidMode"].as_str().and_then(|m| m.strip_prefix("container:")) {
            Some(other) => Some(self.pid_namespace_of(other).await?),
            None => None,
        };
        let filters = self.device_filters.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            prepare(&record, &dir, cgroup_root.as_deref(), &volumes_root, pid_namespace, &filters)
        })
        .await
        .map_err(|e| RpcStatus::internal(e.to_string()))?;
        let device_filter = match prepared {
            Ok(filter) => filter,
            Err(message) => return Err(self.failed_to_start(entry, message).await),
        };
        let (ready_read, ready_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RpcStatus::internal(e.to_string()))?;
        // /proc/self/exe, not a path: in the VM the agent's original file
        // was moved at boot (init::switch_to_tmpfs_root).
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("shim").arg(&entry.dir).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        let ready_fd = ready_write.as_raw_fd();
        let filter_fd = device_filter.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: dup2 is async-signal-safe, and the closure touches nothing
        // but the descriptor numbers captured by value (`device_filter`
        // keeps its descriptor open until the spawn is done).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::dup2(ready_fd, shim::READY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = filter_fd {
                    if libc::dup2(fd, shim::DEVICE_FILTER_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // The reaper's word on the shim's exit, not a pidfd opened later: a
        // container that exits at once takes its shim with it, and the
        // reaper may have collected the shim before we look.
        let (child, shim_exit) = self.reaper.spawn(&mut cmd).map_err(internal("starting the container's shim"))?;
        drop(ready_write);
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
        .map_err(|e| RpcStatus::internal(e.to_string()))?;
        let ready: shim::Ready = serde_json::from_str(line.trim())
            .unwrap_or(shim::Ready { pid: None, error: Some("the container's shim exited before reporting".into()) });
        let pid = match (ready.pid, ready.error) {
            (Some(pid), _) => pid,
            (None, error) => {
                let message = error.unwrap_or_default();
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
                ..Default::default()
            }
        })?;
        tracing::info!(id = %entry.snapshot().id, pid, "container started");
        self.emit("start", &entry.snapshot(), &[]);
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
    async fn pid_namespace_of(self: &Arc<Self>, name: &str) -> Result<PathBuf, RpcStatus> {
        let other = self.lookup(name).await?.snapshot();
        if other.state.status != Status::Running || other.state.pid <= 0 {
            // dockerd's words.
            return Err(RpcStatus::aborted(format!("cannot join PID of a non running container: {}", other.id)));
        }
        Ok(PathBuf::from(format!("/proc/{}/ns/pid", other.state.pid)))
    }

    /// `docker update`: new resource limits (written to the running
    /// container's cgroup first, so a refused limit changes nothing) and
    /// restart policy, kept in the record for inspect and later starts.
    pub async fn update(self: &Arc<Self>, name: &str, update: &serde_json::Value) -> Result<(), RpcStatus> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        let invalid = |e: container::CreateError| RpcStatus::invalid_argument(e.to_string());
        let host_config = container::apply_update(&record.host_config, update).map_err(invalid)?;
        let mut request = record.config.clone();
        request["HostConfig"] = host_config.clone();
        let image_config = serde_json::json!({ "config": record.config });
        let resolved = container::resolve(&request, &image_config, &record.id).map_err(invalid)?;
        // All of the container's limits are written, not only the new ones:
        // the same values again change nothing, and a container without
        // limits has none to write.
        if matches!(record.state.status, Status::Running | Status::Paused) {
            let cgroup = self.cgroup_of(&record.id)?;
            let limits = berth_engine::spec::resource_limits(&resolved.options.resources)
                .map_err(|e| RpcStatus::invalid_argument(e.to_string()))?;
            tokio::task::spawn_blocking(move || berth_engine::cgroup::update(&cgroup, &limits))
                .await
                .map_err(|e| RpcStatus::internal(e.to_string()))?
                .map_err(|e| RpcStatus::failed_precondition(format!("Cannot update container {}: {e}", record.id)))?;
        }
        entry.update(|c| c.host_config = host_config)?;
        self.emit("update", &entry.snapshot(), &[]);
        Ok(())
    }

    /// Records a start that failed (as Docker does: exit code 127 for a
    /// missing executable, 128 otherwise) and returns the client's error.
    async fn failed_to_start(&self, entry: &Arc<Entry>, message: String) -> RpcStatus {
        let dir = entry.dir.clone();
        let _ = tokio::task::spawn_blocking(move || rootfs::unmount_overlay(&ContainerLayer::under(&dir))).await;
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
        if entry.snapshot().host_config["AutoRemove"].as_bool() == Some(true) {
            let _ = self.remove_entry(entry).await;
            self.remove_anonymous_volumes(&entry.snapshot().volumes).await;
        }
        if code == 127 {
            RpcStatus::invalid_argument(format!("failed to create task for container: {message}: unknown"))
        } else {
            RpcStatus::internal(format!("failed to create task for container: {message}: unknown"))
        }
    }

    /// Waits for the shim to exit, then records the container's exit and
    /// applies the restart policy or auto-remove.
    /// Records the container's end once `shim_exited` resolves.
    async fn watch_exit(
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
    async fn finish(self: &Arc<Self>, entry: &Arc<Entry>, shim_pipe: Option<ShimPipe>) {
        let dir = entry.dir.clone();
        let data_root = self.root.clone();
        let exit = tokio::task::spawn_blocking(move || {
            let from_pipe = shim_pipe.and_then(|mut pipe| {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut pipe, &mut line).ok()?;
                serde_json::from_str::<shim::ExitRecord>(line.trim()).ok()
            });
            let exit = from_pipe.or_else(|| shim::read_exit(&dir));
            let _ = rootfs::unmount_overlay(&ContainerLayer::under(&dir));
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
        let _ = entry.update(|c| {
            c.state.status = Status::Exited;
            c.state.pid = 0;
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
        if record.host_config["AutoRemove"].as_bool() == Some(true) {
            let _ = self.remove_entry(entry).await;
            self.remove_anonymous_volumes(&record.volumes).await;
            return;
        }
        let policy = RestartPolicy::parse(&record.host_config).unwrap_or(RestartPolicy::No);
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
    fn restart_later(
        self: Arc<Self>,
        entry: Arc<Entry>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.restart_later_inner(entry))
    }

    async fn restart_later_inner(self: Arc<Self>, entry: Arc<Entry>) {
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
    pub async fn restart_after_boot(self: &Arc<Self>) -> Result<(), RpcStatus> {
        self.ensure_loaded().await?;
        let entries: Vec<Arc<Entry>> = self.entries.lock().unwrap().values().cloned().collect();
        for entry in entries {
            let record = entry.snapshot();
            let policy = RestartPolicy::parse(&record.host_config).unwrap_or(RestartPolicy::No);
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

    fn signal(entry: &Entry, signal: i32) -> Result<(), RpcStatus> {
        let state = entry.state();
        if !state.status.is_running() || state.pid <= 0 {
            let id = entry.snapshot().id;
            return Err(RpcStatus::aborted(format!("Container {id} is not running")));
        }
        // SAFETY: kill takes a pid and a signal number (real-time signals
        // included, which nix's Signal enum cannot name).
        if unsafe { libc::kill(state.pid, signal) } < 0 {
            let err = std::io::Error::last_os_error();
            return Err(RpcStatus::internal(format!("sending signal {signal}: {err}")));
        }
        Ok(())
    }

    pub async fn kill(self: &Arc<Self>, name: &str, signal: &str) -> Result<(), RpcStatus> {
        let entry = self.lookup(name).await?;
        let signal = if signal.is_empty() {
            libc::SIGKILL
        } else {
            container::parse_signal(signal).map_err(RpcStatus::invalid_argument)?
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

    fn thaw(&self, entry: &Entry) -> Result<(), RpcStatus> {
        let id = entry.snapshot().id;
        if let Some(root) = &self.cgroup_root {
            berth_engine::cgroup::set_frozen(&berth_engine::cgroup::container_cgroup(root, &id), false)
                .map_err(|e| RpcStatus::internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Waits until the container is not running; false on timeout.
    async fn wait_stopped(entry: &Entry, timeout: Duration) -> bool {
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
    pub async fn stop(self: &Arc<Self>, name: &str, timeout: Option<i32>, signal: &str) -> Result<bool, RpcStatus> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let stopped = self.stop_entry(&entry, timeout, signal).await?;
        if stopped {
            self.emit("stop", &entry.snapshot(), &[]);
        }
        Ok(stopped)
    }

    async fn stop_entry(&self, entry: &Arc<Entry>, timeout: Option<i32>, signal: &str) -> Result<bool, RpcStatus> {
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
        let signal = match (signal, record.config["StopSignal"].as_str()) {
            ("", Some(s)) if !s.is_empty() => s.to_string(),
            ("", _) => "SIGTERM".into(),
            (s, _) => s.to_string(),
        };
        let signal = container::parse_signal(&signal).map_err(RpcStatus::invalid_argument)?;
        let timeout = timeout.or(record.config["StopTimeout"].as_i64().map(|t| t as i32)).unwrap_or(10);
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

    /// Registers a waiter now (the caller tells its client it is waiting
    /// only after this returns, so a start that follows cannot be missed)
    /// and returns the future that resolves when the condition is met.
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

    pub async fn wait(
        self: &Arc<Self>,
        name: &str,
        condition: &str,
    ) -> Result<impl std::future::Future<Output = (i32, String)> + Send + 'static, RpcStatus> {
        let entry = self.lookup(name).await?;
        let mut changed = entry.changed.subscribe();
        let start_generation = *changed.borrow_and_update();
        let initially_running = entry.state().status.is_running();
        if !["", "not-running", "next-exit", "removed"].contains(&condition) {
            return Err(RpcStatus::invalid_argument(format!("invalid condition: \"{condition}\"")));
        }
        let condition = condition.to_string();
        Ok(async move { wait_for(&entry, &mut changed, start_generation, initially_running, &condition).await })
    }

    pub async fn remove(self: &Arc<Self>, name: &str, force: bool, remove_volumes: bool) -> Result<(), RpcStatus> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        if record.state.status.is_running() {
            if !force {
                // dockerd 20.10's words, which clients (docker-py) match.
                let verb = if record.state.status == Status::Paused { "paused" } else { "running" };
                return Err(RpcStatus::aborted(format!(
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
            self.remove_anonymous_volumes(&record.volumes).await;
        }
        Ok(())
    }

    async fn remove_entry(&self, entry: &Arc<Entry>) -> Result<(), RpcStatus> {
        let id = entry.snapshot().id;
        {
            // In memory only: once Removing, updates stop touching the files.
            let mut record = entry.record.lock().unwrap();
            record.state.status = Status::Removing;
        }
        let dir = entry.dir.clone();
        let cgroup = self.cgroup_root.as_ref().map(|root| berth_engine::cgroup::container_cgroup(root, &id));
        tokio::task::spawn_blocking(move || {
            let _ = rootfs::unmount_overlay(&ContainerLayer::under(&dir));
            // Normally gone with the shim; not if the shim was killed.
            if let Some(cgroup) = cgroup.filter(|c| c.exists()) {
                berth_engine::cgroup::remove(&cgroup);
            }
            // First a rename, so a crash part-way leaves no half container
            // to load at the next start (leftovers are swept then); made
            // durable before the removal is acknowledged (`docker run --rm`
            // returns on it).
            let doomed =
                dir.with_file_name(format!(".removing-{}", dir.file_name().unwrap_or_default().to_string_lossy()));
            std::fs::rename(&dir, &doomed)
                .and_then(|()| berth_engine::durable::sync_dir(doomed.parent().unwrap_or(&doomed)))
                .and_then(|()| std::fs::remove_dir_all(&doomed))
        })
        .await
        .map_err(|e| RpcStatus::internal(e.to_string()))?
        .map_err(internal("removing the container's files"))?;
        self.entries.lock().unwrap().remove(&id);
        entry.changed.send_replace(None);
        tracing::info!(%id, "container removed");
        self.emit("destroy", &entry.snapshot(), &[]);
        Ok(())
    }

    pub async fn inspect(self: &Arc<Self>, name: &str) -> Result<serde_json::Value, RpcStatus> {
        let entry = self.lookup(name).await?;
        Ok(entry.snapshot().inspect(&entry.dir, &self.volumes_root))
    }

    pub async fn list(
        self: &Arc<Self>,
        all: bool,
        filters: &str,
        limit: u32,
        size: bool,
    ) -> Result<serde_json::Value, RpcStatus> {
        self.ensure_loaded().await?;
        let filters = ContainerFilters::parse(filters)?;
        let mut records: Vec<Container> = self.entries.lock().unwrap().values().map(|e| e.snapshot()).collect();
        records.sort_by(|a, b| b.created_ns.cmp(&a.created_ns));
        let now = logfile::now_ns();
        let by_id = |key: &str| records.iter().find(|c| c.id.starts_with(key) || c.name == key).map(|c| c.created_ns);
        let before = filters.one("before").map(|k| by_id(&k).ok_or_else(|| no_such_container(&k))).transpose()?;
        let since = filters.one("since").map(|k| by_id(&k).ok_or_else(|| no_such_container(&k))).transpose()?;
        let listed: Vec<serde_json::Value> = records
            .iter()
            .filter(|c| all || c.state.status.is_running() || filters.has("status") || limit > 0)
            .filter(|c| filters.matches(c))
            .filter(|c| before.is_none_or(|t| c.created_ns < t))
            .filter(|c| since.is_none_or(|t| c.created_ns > t))
            .take(if limit > 0 { limit as usize } else { usize::MAX })
            .map(|c| {
                let mut summary = c.summary(now, &self.volumes_root);
                if size {
                    summary["SizeRw"] = berth_engine::volume::tree_size(&self.root.join(&c.id).join("upper")).into();
                }
                summary
            })
            .collect();
        Ok(serde_json::Value::Array(listed))
    }

    /// The recorded output, filtered as `docker logs` asks; with `follow`,
    /// keeps sending until the container stops.
    pub async fn logs(
        self: &Arc<Self>,
        req: berth_agent_proto::ContainerLogsRequest,
        tx: tokio::sync::mpsc::Sender<Result<berth_agent_proto::LogEntry, RpcStatus>>,
    ) -> Result<(), RpcStatus> {
        let entry = self.lookup(&req.id).await?;
        let wanted = move |r: &Record| {
            let stream_ok = match r.stream {
                logfile::Stream::Stdout => req.stdout,
                logfile::Stream::Stderr => req.stderr,
            };
            stream_ok
                && (req.since_ns <= 0 || r.time_ns >= req.since_ns)
                && (req.until_ns <= 0 || r.time_ns <= req.until_ns)
        };
        let dir = entry.dir.clone();
        let mut cursor = LogCursor::at_end(&dir);
        let records = tokio::task::spawn_blocking(move || logfile::read_all(&dir))
            .await
            .map_err(|e| RpcStatus::internal(e.to_string()))?
            .map_err(internal("reading the log"))?;
        let mut records: Vec<Record> = records.into_iter().filter(|r| wanted(r)).collect();
        if req.tail >= 0 {
            records = tail_lines(records, req.tail as usize);
        }
        tokio::spawn(async move {
            for record in records {
                if tx.send(Ok(log_entry(record))).await.is_err() {
                    return;
                }
            }
            if req.follow && entry.state().status.is_running() {
                follow(&entry, &mut cursor, &tx, wanted, false).await;
            }
        });
        Ok(())
    }

    /// Streams the container's output from now on (from the log's start
    /// with `logs`), and forwards stdin, until the container stops.
    pub async fn attach(
        self: &Arc<Self>,
        start: berth_agent_proto::AttachStart,
        mut input: tonic::Streaming<berth_agent_proto::AttachInput>,
        tx: tokio::sync::mpsc::Sender<Result<berth_agent_proto::LogEntry, RpcStatus>>,
    ) -> Result<(), RpcStatus> {
        let entry = self.lookup(&start.id).await?;
        let mut cursor = LogCursor::at_end(&entry.dir);
        let replay = if start.logs {
            let dir = entry.dir.clone();
            tokio::task::spawn_blocking(move || logfile::read_all(&dir))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let (want_out, want_err) = (start.stdout, start.stderr);
        let wanted = move |r: &Record| match r.stream {
            logfile::Stream::Stdout => want_out,
            logfile::Stream::Stderr => want_err,
        };
        if start.stdin {
            let entry = entry.clone();
            tokio::spawn(async move { forward_stdin(&entry, &mut input).await });
        }
        tokio::spawn(async move {
            for record in replay.into_iter().filter(|r| wanted(r)) {
                if tx.send(Ok(log_entry(record))).await.is_err() {
                    return;
                }
            }
            follow(&entry, &mut cursor, &tx, wanted, true).await;
        });
        Ok(())
    }

    /// Rewrites an Exec into the container as the command that enters it
    /// (`berth-agent enter PLAN`), with the container's environment, user
    /// and isolation resolved here.
    pub async fn exec_in(
        self: &Arc<Self>,
        start: berth_agent_proto::ExecStart,
    ) -> Result<berth_agent_proto::ExecStart, RpcStatus> {
        let entry = self.lookup(&start.container_id).await?;
        let record = entry.snapshot();
        if record.state.status != Status::Running {
            let why = if record.state.status == Status::Paused { "paused" } else { "not running" };
            return Err(RpcStatus::aborted(format!("Container {} is {why}", record.id)));
        }
        let dir = entry.dir.clone();
        let cgroup = self.cgroup_root.as_ref().map(|root| berth_engine::cgroup::container_cgroup(root, &record.id));
        let plan =
            tokio::task::spawn_blocking(move || enter_plan(&record, &dir, cgroup, &start).map(|plan| (plan, start)))
                .await
                .map_err(|e| RpcStatus::internal(e.to_string()))?
                .map_err(RpcStatus::invalid_argument)?;
        let (plan, start) = plan;
        let plan = serde_json::to_string(&plan).map_err(|e| RpcStatus::internal(e.to_string()))?;
        Ok(berth_agent_proto::ExecStart {
            argv: vec!["/proc/self/exe".into(), "enter".into(), plan],
            env: Vec::new(),
            cwd: "/".into(),
            container_id: String::new(),
            user: String::new(),
            ..start
        })
    }

    fn cgroup_of(&self, id: &str) -> Result<PathBuf, RpcStatus> {
        self.cgroup_root
            .as_ref()
            .map(|root| berth_engine::cgroup::container_cgroup(root, id))
            .ok_or_else(|| RpcStatus::failed_precondition("this machine has no cgroup v2 hierarchy"))
    }

    pub async fn pause(self: &Arc<Self>, name: &str, pause: bool) -> Result<(), RpcStatus> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        match (pause, record.state.status) {
            (true, Status::Running) | (false, Status::Paused) => {}
            (true, Status::Paused) => {
                return Err(RpcStatus::aborted(format!("Container {} is already paused", record.id)))
            }
            (false, _) => return Err(RpcStatus::aborted(format!("Container {} is not paused", record.id))),
            (true, _) => return Err(RpcStatus::aborted(format!("Container {} is not running", record.id))),
        }
        let cgroup = self.cgroup_of(&record.id)?;
        tokio::task::spawn_blocking(move || berth_engine::cgroup::set_frozen(&cgroup, pause))
            .await
            .map_err(|e| RpcStatus::internal(e.to_string()))?
            .map_err(|e| RpcStatus::internal(e.to_string()))?;
        entry.update(|c| c.state.status = if pause { Status::Paused } else { Status::Running })?;
        self.emit(if pause { "pause" } else { "unpause" }, &entry.snapshot(), &[]);
        Ok(())
    }

    pub async fn rename(self: &Arc<Self>, name: &str, new_name: &str) -> Result<(), RpcStatus> {
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name).to_string();
        if !container::valid_name(&new_name) {
            return Err(RpcStatus::invalid_argument(format!(
                "Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        if record.name == new_name {
            return Err(RpcStatus::aborted("Renaming a container with the same name as its current name"));
        }
        // Checked and changed under the entries lock, as create does.
        let entries = self.entries.lock().unwrap();
        if let Some(other) = entries.values().find(|e| e.record.lock().unwrap().name == new_name) {
            let other_id = other.record.lock().unwrap().id.clone();
            return Err(RpcStatus::aborted(format!(
                "Conflict. The container name \"/{new_name}\" is already in use by container \"{other_id}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        entry.update(|c| c.name = new_name)?;
        self.emit("rename", &entry.snapshot(), &[("oldName", format!("/{}", record.name))]);
        Ok(())
    }

    /// Docker's `top`: the container's processes as `ps -ef` shows them.
    pub async fn top(self: &Arc<Self>, name: &str) -> Result<serde_json::Value, RpcStatus> {
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        if !record.state.status.is_running() {
            return Err(RpcStatus::aborted(format!("Container {} is not running", record.id)));
        }
        let pids = match &self.cgroup_root {
            Some(root) => berth_engine::cgroup::pids(&berth_engine::cgroup::container_cgroup(root, &record.id)),
            None => vec![record.state.pid],
        };
        let processes: Vec<Vec<String>> = pids.iter().filter_map(|pid| crate::sysinfo::ps_row(*pid)).collect();
        Ok(serde_json::json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": processes,
        }))
    }

    /// Docker's stats JSON from the container's cgroup; `previous` is the
    /// last sample (Docker's precpu_stats).
    pub async fn stats(
        self: &Arc<Self>,
        name: &str,
        previous: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, RpcStatus> {
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        let running = record.state.status.is_running();
        let stats = match (&self.cgroup_root, running) {
            (Some(root), true) => {
                berth_engine::cgroup::stats(&berth_engine::cgroup::container_cgroup(root, &record.id))
            }
            _ => Default::default(),
        };
        let cpus = crate::sysinfo::online_cpus();
        let memory_stat: serde_json::Map<String, serde_json::Value> =
            stats.memory_stat.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
        let limit = if stats.memory_limit > 0 { stats.memory_limit } else { crate::sysinfo::meminfo().total };
        let empty_cpu = serde_json::json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "system_cpu_usage": 0, "online_cpus": cpus, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}});
        let precpu = previous.map(|p| p["cpu_stats"].clone()).unwrap_or(empty_cpu);
        let preread = previous.map(|p| p["read"].clone()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
        Ok(serde_json::json!({
            "read": container::rfc3339(logfile::now_ns()),
            "preread": preread,
            "id": record.id,
            "name": format!("/{}", record.name),
            "num_procs": 0,
            "pids_stats": if running { serde_json::json!({"current": stats.pids_current, "limit": stats.pids_limit}) } else { serde_json::json!({}) },
            "cpu_stats": {
                "cpu_usage": {
                    "total_usage": stats.cpu_usage_ns,
                    "usage_in_kernelmode": stats.cpu_system_ns,
                    "usage_in_usermode": stats.cpu_user_ns,
                },
                "system_cpu_usage": crate::sysinfo::system_cpu_ns(),
                "online_cpus": cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            },
            "precpu_stats": precpu,
            "memory_stats": if running { serde_json::json!({"usage": stats.memory_usage, "limit": limit, "stats": memory_stat}) } else { serde_json::json!({}) },
            "blkio_stats": {
                "io_service_bytes_recursive": [
                    {"major": 0, "minor": 0, "op": "read", "value": stats.io_read_bytes},
                    {"major": 0, "minor": 0, "op": "write", "value": stats.io_write_bytes},
                ],
                "io_serviced_recursive": null, "io_queue_recursive": null, "io_service_time_recursive": null,
                "io_wait_time_recursive": null, "io_merged_recursive": null, "io_time_recursive": null, "sectors_recursive": null,
            },
            "storage_stats": {},
            "networks": {},
        }))
    }

    /// Whether the container is still there and running (for stat streams).
    pub fn is_running(&self, name: &str) -> bool {
        let entries = self.entries.lock().unwrap();
        let name = name.strip_prefix('/').unwrap_or(name);
        entries.values().any(|e| {
            let r = e.record.lock().unwrap();
            (r.id.starts_with(name) || r.name == name) && r.state.status.is_running()
        })
    }

    /// Removes every stopped container (Docker's `container prune`).
    pub async fn prune(self: &Arc<Self>, filters: &str) -> Result<serde_json::Value, RpcStatus> {
        self.ensure_loaded().await?;
        let filters = ContainerFilters::parse_prune(filters)?;
        let until = crate::filters::until_ns(filters.0.get("until").map(Vec::as_slice))?;
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
            reclaimed += berth_engine::volume::tree_size(&entry.dir.join("upper"));
            if self.remove_entry(&entry).await.is_ok() {
                deleted.push(record.id);
            }
        }
        Ok(
            serde_json::json!({ "ContainersDeleted": if deleted.is_empty() { serde_json::Value::Null } else { deleted.into() }, "SpaceReclaimed": reclaimed }),
        )
    }

    pub async fn resize(self: &Arc<Self>, name: &str, rows: u16, cols: u16) -> Result<(), RpcStatus> {
        let entry = self.lookup(name).await?;
        if !entry.state().status.is_running() {
            let id = entry.snapshot().id;
            return Err(RpcStatus::aborted(format!("Container {id} is not running")));
        }
        // Containers without a terminal have no resize FIFO; Docker ignores
        // their resizes too.
        let _ = shim::request_resize(&entry.dir, rows, cols);
        Ok(())
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

/// The last `n` lines of output, as `docker logs --tail` counts them.
fn tail_lines(records: Vec<Record>, n: usize) -> Vec<Record> {
    let mut lines: Vec<Record> = Vec::new();
    for record in records {
        for piece in record.data.split_inclusive(|b| *b == b'\n') {
            match lines.last_mut() {
                Some(last) if !last.data.ends_with(b"\n") && last.stream == record.stream => {
                    last.data.extend_from_slice(piece)
                }
                _ => lines.push(Record { stream: record.stream, time_ns: record.time_ns, data: piece.to_vec() }),
            }
        }
    }
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect()
}

fn log_entry(record: Record) -> berth_agent_proto::LogEntry {
    berth_agent_proto::LogEntry { stream: record.stream as u32, time_ns: record.time_ns, data: record.data }
}

/// Sends new log records until the container has stopped and its output is
/// drained. `wait_for_start`: a container that has not started yet will
/// (attach before start, as `docker run` does).
async fn follow(
    entry: &Arc<Entry>,
    cursor: &mut LogCursor,
    tx: &tokio::sync::mpsc::Sender<Result<berth_agent_proto::LogEntry, RpcStatus>>,
    wanted: impl Fn(&Record) -> bool,
    wait_for_start: bool,
) {
    let mut changed = entry.changed.subscribe();
    let watcher = DirWatcher::new(&entry.dir);
    let mut started = entry.state().status.is_running();
    loop {
        let status = entry.state().status;
        let removed = changed.borrow_and_update().is_none();
        started |= status.is_running();
        let records = cursor.read_new().unwrap_or_default();
        for record in records.into_iter().filter(|r| wanted(r)) {
            if tx.send(Ok(log_entry(record))).await.is_err() {
                return;
            }
        }
        let waiting_for_start = wait_for_start && !started && status == Status::Created;
        if removed || (!status.is_running() && !waiting_for_start) {
            return;
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = wait_for_change(&watcher) => {}
            () = tx.closed() => return,
        }
    }
}

/// inotify on a container directory: the log growing, exit.json appearing.
struct DirWatcher {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl DirWatcher {
    fn new(dir: &Path) -> DirWatcher {
        // SAFETY: inotify_init1 takes flags only.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return DirWatcher { fd: None };
        }
        // SAFETY: the kernel just returned this descriptor; we own it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
        let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO;
        // SAFETY: path is NUL-terminated and outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return DirWatcher { fd: None };
        }
        DirWatcher { fd: register(fd) }
    }
}

async fn wait_for_change(watcher: &DirWatcher) {
    match &watcher.fd {
        Some(fd) => {
            if let Ok(mut guard) = fd.readable().await {
                let mut buf = [0u8; 4096];
                // Drain the events: which file changed does not matter.
                // SAFETY: buf is valid for its length.
                while unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
                guard.clear_ready();
            }
        }
        // No inotify: poll.
        None => tokio::time::sleep(Duration::from_millis(50)).await,
    }
}

/// Copies attach input to the container's stdin FIFO once it runs.
async fn forward_stdin(entry: &Arc<Entry>, input: &mut tonic::Streaming<berth_agent_proto::AttachInput>) {
    use berth_agent_proto::attach_input::Input;
    use tokio::io::AsyncWriteExt;
    let mut pending: Vec<u8> = Vec::new();
    let mut fifo: Option<tokio::net::unix::pipe::Sender> = None;
    let mut changed = entry.changed.subscribe();
    let path = entry.dir.join(shim::STDIN_FIFO);
    loop {
        if fifo.is_none() && entry.state().status.is_running() {
            // Opening for writing fails (ENXIO) until the shim has it open.
            if let Ok(sender) = tokio::net::unix::pipe::OpenOptions::new().open_sender(&path) {
                fifo = Some(sender);
            }
        }
        if let (Some(sender), false) = (fifo.as_mut(), pending.is_empty()) {
            if sender.write_all(&pending).await.is_err() {
                return;
            }
            pending.clear();
        }
        tokio::select! {
            message = input.message() => match message {
                Ok(Some(berth_agent_proto::AttachInput { input: Some(Input::Stdin(data)) })) => pending.extend(data),
                Ok(Some(berth_agent_proto::AttachInput { input: Some(Input::CloseStdin(true)) })) | Ok(None) | Err(_) => {
                    // Deliver what is buffered, then close (EOF for StdinOnce).
                    if !pending.is_empty() {
                        wait_running(entry, &mut changed).await;
                        if let Ok(mut sender) = tokio::net::unix::pipe::OpenOptions::new().open_sender(&path) {
                            let _ = sender.write_all(&pending).await;
                        }
                    }
                    return;
                }
                Ok(Some(_)) => {}
            },
            _ = changed.changed(), if fifo.is_none() => {
                if changed.borrow().is_none() || !entry.state().status.is_running() && entry.state().status != Status::Created {
                    return;
                }
            }
        }
    }
}

async fn wait_running(entry: &Entry, changed: &mut watch::Receiver<Option<u64>>) {
    for _ in 0..100 {
        if entry.state().status.is_running() {
            // Give the shim a moment to open the FIFO.
            tokio::time::sleep(Duration::from_millis(5)).await;
            return;
        }
        if tokio::time::timeout(Duration::from_millis(100), changed.changed()).await.is_ok_and(|r| r.is_err()) {
            return;
        }
    }
}

/// Registers a descriptor with tokio's reactor.
fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is
    // dropped, which happens only with the AsyncFd that owns it.
    unsafe { AsyncFd::register(fd) }.ok()
}

/// Resolves when the process behind `pidfd` has ended (a re-adopted shim,
/// which is not our child).
async fn pidfd_closed(pidfd: OwnedFd) {
    if let Some(fd) = register(pidfd) {
        let _ = fd.readable().await;
    }
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: the kernel just returned this descriptor; we own it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Guards re-adoption against pid reuse: the pid must still be a shim for
/// this very container directory.
fn shim_is_ours(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.get(1) == Some(&&b"shim"[..]) && args.get(2) == Some(&dir.as_os_str().as_encoded_bytes())
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf for the container, bound
/// over the image's at start (as Docker does).
fn write_etc_files(dir: &Path, record: &Container) -> std::io::Result<()> {
    let hostname = record.config["Hostname"].as_str().unwrap_or("localhost");
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    let host_network = record.host_config["NetworkMode"].as_str() == Some("host");
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.0.1\t{hostname}\n"
        )
    };
    std::fs::write(dir.join("hosts"), hosts)?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_else(|_| "nameserver 10.0.2.3\n".into());
    std::fs::write(dir.join("resolv.conf"), resolv)
}

/// The process `docker exec` asks for, resolved against the container.
fn enter_plan(
    record: &Container,
    dir: &Path,
    cgroup: Option<PathBuf>,
    start: &berth_agent_proto::ExecStart,
) -> Result<berth_engine::runtime::EnterPlan, String> {
    let layer = ContainerLayer::under(dir);
    let user = if start.user.is_empty() { record.config["User"].as_str().unwrap_or("") } else { &start.user };
    let identity = rootfs::resolve_user(&layer.merged, user).map_err(|e| e.to_string())?;
    let base: Vec<String> = record.config["Env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let mut env = base;
    for entry in &start.env {
        let key = entry.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(entry.clone());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", identity.home));
    }
    if start.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = if !start.cwd.is_empty() {
        start.cwd.clone()
    } else {
        record.config["WorkingDir"].as_str().filter(|s| !s.is_empty()).unwrap_or("/").to_string()
    };
    // The container's own isolation, from the spec it was started with.
    let spec: serde_json::Value = std::fs::read(dir.join(shim::SPEC_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .ok_or("the container's runtime spec is missing")?;
    let shim_config: ShimConfig = std::fs::read(dir.join(shim::SHIM_CONFIG))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .ok_or("the container's shim config is missing")?;
    let capabilities: Vec<String> = if start.privileged {
        berth_engine::spec::ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        spec["process"]["capabilities"]["bounding"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    Ok(berth_engine::runtime::EnterPlan {
        pid: record.state.pid,
        cgroup,
        argv: start.argv.clone(),
        env,
        cwd,
        uid: identity.uid,
        gid: identity.gid,
        groups: identity.process_groups(),
        capabilities,
        no_new_privileges: spec["process"]["noNewPrivileges"].as_bool().unwrap_or(false),
        seccomp: shim_config.seccomp && !start.privileged,
        terminal: start.tty.then(|| {
            let size = start.size.unwrap_or(berth_agent_proto::WindowSize { rows: 24, cols: 80 });
            (size.rows as u16, size.cols as u16)
        }),
    })
}

/// Where `--init` finds its init (tini, as Docker's docker-init is): the
/// initramfs puts it in the VM; a local agent may use Debian's tini.
const INIT_CANDIDATES: &[&str] = &["/usr/libexec/berth/docker-init", "/usr/bin/tini-static"];

/// Where `--init`'s binary is mounted in the container, as in Docker.
const INIT_IN_CONTAINER: &str = "/sbin/docker-init";

/// The init binary for `--init`; never silently none.
fn init_binary() -> Result<PathBuf, RpcStatus> {
    INIT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
        RpcStatus::invalid_argument(format!(
            "--init needs an init binary (tini), and there is none at {}",
            INIT_CANDIDATES.join(" or ")
        ))
    })
}

/// Fills the container's new volumes from the image, at create as Docker
/// does (so `docker cp` into a created container sees the content). Volumes
/// with content, `nocopy` ones and those from `--volumes-from` are left.
fn fill_volumes(record: &Container, dir: &Path, volumes_root: &Path) -> Result<(), String> {
    if record.volumes.iter().all(|v| v.nocopy) {
        return Ok(());
    }
    let layer = ContainerLayer::under(dir);
    rootfs::mount_overlay(&record.layers, &layer).map_err(|e| e.to_string())?;
    let volumes = berth_engine::volume::VolumeStore::open(volumes_root).map_err(|e| e.to_string());
    let filled = volumes.and_then(|volumes| {
        for volume in record.volumes.iter().filter(|v| !v.nocopy) {
            let in_image = berth_engine::runtime::resolve_in_root(&layer.merged, Path::new(&volume.target))
                .map_err(|e| format!("resolving {}: {e}", volume.target))?;
            berth_engine::volume::copy_up(&in_image, &volumes.data_dir(&volume.name))
                .map_err(|e| format!("filling volume {} from the image: {e}", volume.name))?;
        }
        Ok(())
    });
    let _ = rootfs::unmount_overlay(&layer);
    filled
}

/// The container's volumes, as the bind mounts of their data directories.
pub(crate) fn volume_binds(record: &Container, volumes_root: &Path) -> Result<Vec<berth_engine::spec::Bind>, String> {
    let store = berth_engine::volume::VolumeStore::open(volumes_root).map_err(|e| e.to_string())?;
    Ok(record
        .volumes
        .iter()
        .map(|volume| berth_engine::spec::Bind {
            source: store.data_dir(&volume.name),
            target: PathBuf::from(&volume.target),
            readonly: volume.readonly,
        })
        .collect())
}

/// Everything before the shim: the overlay, the user, the working
/// directory, the spec and the shim's own config. Blocking.
fn prepare(
    record: &Container,
    dir: &Path,
    cgroup_root: Option<&Path>,
    volumes_root: &Path,
    pid_namespace: Option<PathBuf>,
    filters: &DeviceFilters,
) -> Result<Option<Arc<OwnedFd>>, String> {
    let layer = ContainerLayer::under(dir);
    let _ = rootfs::unmount_overlay(&layer);
    rootfs::mount_overlay(&record.layers, &layer).map_err(|e| e.to_string())?;
    let result = prepare_mounted(record, dir, &layer, cgroup_root, volumes_root, pid_namespace, filters);
    if result.is_err() {
        let _ = rootfs::unmount_overlay(&layer);
    }
    result
}

fn prepare_mounted(
    record: &Container,
    dir: &Path,
    layer: &ContainerLayer,
    cgroup_root: Option<&Path>,
    volumes_root: &Path,
    pid_namespace: Option<PathBuf>,
    filters: &DeviceFilters,
) -> Result<Option<Arc<OwnedFd>>, String> {
    let image_config = serde_json::json!({ "config": record.config });
    let resolved = container::resolve(
        &{
            let mut request = record.config.clone();
            request["HostConfig"] = record.host_config.clone();
            request
        },
        &image_config,
        &record.id,
    )
    .map_err(|e| e.to_string())?;
    let mut options = resolved.options;
    let user = record.config["User"].as_str().unwrap_or("");
    let identity = rootfs::resolve_user(&layer.merged, user).map_err(|e| e.to_string())?;
    options.uid = identity.uid;
    options.gid = identity.gid;
    options.additional_gids = identity.process_groups();
    // --group-add: numbers as they are, names through the image's /etc/group.
    let group_file = std::fs::read_to_string(layer.merged.join("etc/group")).unwrap_or_default();
    for group in record.host_config["GroupAdd"].as_array().into_iter().flatten().filter_map(|g| g.as_str()) {
        let gid = group.parse::<u32>().ok().or_else(|| {
            group_file.lines().find_map(|l| {
                let fields: Vec<&str> = l.split(':').collect();
                (fields.len() >= 3 && fields[0] == group).then(|| fields[2].parse().ok()).flatten()
            })
        });
        match gid {
            Some(gid) if !options.additional_gids.contains(&gid) => options.additional_gids.push(gid),
            Some(_) => {}
            None => return Err(format!("Unable to find group {group}: no matching entries in group file")),
        }
    }
    if !options.env.iter().any(|e| e.starts_with("HOME=")) {
        options.env.push(format!("HOME={}", identity.home));
    }
    if !options.cwd.is_empty() {
        let cwd = berth_engine::runtime::resolve_in_root(&layer.merged, Path::new(&options.cwd))
            .map_err(|e| format!("resolving the working directory: {e}"))?;
        std::fs::create_dir_all(&cwd).map_err(|e| format!("creating the working directory: {e}"))?;
    }
    // The container's own binds came back from `resolve`; the rest of its
    // mounts are in the record.
    options.binds.extend(record.binds_from.iter().cloned());
    options.binds.extend(volume_binds(record, volumes_root)?);
    if let Some(path) = pid_namespace {
        options.pid = berth_engine::spec::NamespaceMode::Join(path);
    }
    if resolved.init {
        let init = init_binary().map_err(|e| e.message().to_string())?;
        options.binds.push(berth_engine::spec::Bind {
            source: init,
            target: PathBuf::from(INIT_IN_CONTAINER),
            readonly: true,
        });
        // tini's `--`: everything after it is the command, flags included.
        options.args.splice(0..0, [INIT_IN_CONTAINER.to_string(), "--".to_string()]);
    }
    for file in ["hostname", "hosts", "resolv.conf"] {
        options.binds.push(berth_engine::spec::Bind {
            source: dir.join(file),
            target: PathBuf::from("/etc").join(file),
            readonly: false,
        });
    }
    let cgroup = cgroup_root.map(|root| berth_engine::cgroup::container_cgroup(root, &record.id));
    options.cgroups_path = cgroup.clone().unwrap_or_default();
    let spec = berth_engine::spec::build(&options, &layer.merged).map_err(|e| e.to_string())?;
    let device_rules = spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.devices().clone());
    let device_filter = match (&cgroup, device_rules) {
        (Some(_), Some(rules)) => Some(filters.get(&rules)?),
        _ => None,
    };
    let shim_config = ShimConfig {
        tty: options.tty,
        rows: record.host_config["ConsoleSize"][0].as_u64().unwrap_or(24) as u16,
        cols: record.host_config["ConsoleSize"][1].as_u64().unwrap_or(80) as u16,
        open_stdin: record.config["OpenStdin"].as_bool().unwrap_or(false),
        stdin_once: record.config["StdinOnce"].as_bool().unwrap_or(false),
        cgroup_root: cgroup_root.map(Path::to_path_buf),
        cgroup,
        seccomp: resolved.seccomp,
        // Checked at create; a record from before that check gets the default.
        log_limits: berth_engine::logfile::LogLimits::from_options(&record.host_config["LogConfig"]["Config"])
            .unwrap_or_default(),
        device_filter_passed: device_filter.is_some(),
    };
    let write = |name: &str, data: Vec<u8>| {
        // Per run: a power loss ends the run too, so no fsync (two fewer per start).
        shim::write_replacing(&dir.join(name), &data, false).map_err(|e| format!("writing {name}: {e}"))
    };
    write(shim::SPEC_FILE, serde_json::to_vec(&spec).map_err(|e| e.to_string())?)?;
    write(shim::SHIM_CONFIG, serde_json::to_vec(&shim_config).map_err(|e| e.to_string())?)?;
    let _ = std::fs::remove_file(dir.join(shim::EXIT_FILE));
    for (fifo, wanted) in [(shim::STDIN_FIFO, shim_config.open_stdin), (shim::RESIZE_FIFO, shim_config.tty)] {
        let path = dir.join(fifo);
        if wanted && !path.exists() {
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| format!("creating {fifo}: {e}"))?;
        }
    }
    Ok(device_filter)
}

/// Docker's container list filters.
struct ContainerFilters(HashMap<String, Vec<String>>);

impl ContainerFilters {
    /// Prune takes `label` (and `label!`) and `until` only.
    fn parse_prune(text: &str) -> Result<ContainerFilters, RpcStatus> {
        let value: serde_json::Value = if text.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(text).map_err(|e| RpcStatus::invalid_argument(format!("invalid filter: {e}")))?
        };
        let mut map = HashMap::new();
        for (key, values) in value.as_object().into_iter().flatten() {
            if !["label", "label!", "until"].contains(&key.as_str()) {
                return Err(RpcStatus::invalid_argument(format!("invalid filter '{key}'")));
            }
            let list: Vec<String> = match values {
                serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                serde_json::Value::Object(items) => items.keys().cloned().collect(),
                _ => Vec::new(),
            };
            map.insert(key.clone(), list);
        }
        Ok(ContainerFilters(map))
    }

    fn parse(text: &str) -> Result<ContainerFilters, RpcStatus> {
        if text.trim().is_empty() {
            return Ok(ContainerFilters(HashMap::new()));
        }
        // Both {"k": ["v"]} and the older {"k": {"v": true}} forms.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RpcStatus::invalid_argument(format!("invalid filter: {e}")))?;
        let mut map = HashMap::new();
        for (key, values) in value.as_object().into_iter().flatten() {
            let list: Vec<String> = match values {
                serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                serde_json::Value::Object(items) => items.keys().cloned().collect(),
                _ => return Err(RpcStatus::invalid_argument(format!("invalid filter '{key}'"))),
            };
            match key.as_str() {
                "id" | "name" | "label" | "status" | "ancestor" | "before" | "since" | "exited" => {}
                other => return Err(RpcStatus::invalid_argument(format!("invalid filter '{other}'"))),
            }
            if key == "status" {
                for status in &list {
                    if !["created", "restarting", "running", "removing", "paused", "exited", "dead"]
                        .contains(&status.as_str())
                    {
                        return Err(RpcStatus::invalid_argument(format!("invalid filter 'status={status}'")));
                    }
                }
            }
            map.insert(key.clone(), list);
        }
        Ok(ContainerFilters(map))
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn one(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(|v| v.first().cloned())
    }

    fn matches(&self, c: &Container) -> bool {
        let any = |key: &str, test: &dyn Fn(&str) -> bool| self.0.get(key).is_none_or(|vs| vs.iter().any(|v| test(v)));
        let labels = &c.config["Labels"];
        any("id", &|v| c.id.starts_with(v))
            && any("name", &|v| c.name.contains(v.trim_start_matches('/')))
            && any("status", &|v| c.state.status.as_str() == v)
            && any("exited", &|v| c.state.status == Status::Exited && v.parse() == Ok(c.state.exit_code))
            && any("ancestor", &|v| {
                c.image == v
                    || c.image_id.starts_with(v)
                    || c.image_id.trim_start_matches("sha256:").starts_with(v)
                    || berth_engine::reference::normalize(v).ok().as_deref()
                        == berth_engine::reference::normalize(&c.image).ok().as_deref()
            })
            && self.0.get("label").is_none_or(|vs| crate::filters::labels_match(labels, vs))
            // dockerd (prune's matchLabels): kept when it has every label
            // given with `label!`.
            && self.0.get("label!").is_none_or(|vs| !crate::filters::labels_match(labels, vs))
    }
}
