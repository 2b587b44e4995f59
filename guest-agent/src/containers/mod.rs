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
//!
//! This file is the record and its lookup; the verbs live beside it:
//! `create` (create, update, rename), `lifecycle` (start, exit, restart,
//! exec), `stop` (signals, stop, pause, wait, remove, prune), `streams`
//! (logs, attach, resize), `stats` (stats, top, diff) and `health` (the
//! healthcheck monitor of a run). Preparing a run
//! is the engine's (`berth_engine::bundle`), and so is the directory's
//! layout (`berth_engine::container_dir`). Errors are `AgentError`s; the
//! streams hand the RPC layer receivers of their items.

mod create;
mod health;
mod lifecycle;
mod networks;
mod stats;
mod stop;
mod streams;
mod sys;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_engine::bundle;
use berth_engine::container::{Container, State, Status};
use berth_engine::container_dir::{ContainerDir, REMOVING_PREFIX};
use berth_engine::logfile;
use tokio::sync::watch;

use crate::error::AgentError;

use self::sys::{pidfd, pidfd_closed, shim_is_ours};
use crate::filters::ContainerFilters;
use crate::reaper::Reaper;

/// The agent's end of a shim's ready pipe, which later carries its exit.
type ShimPipe = std::io::BufReader<std::fs::File>;

pub struct Entry {
    pub record: Mutex<Container>,
    /// Bumped on every state change; `None` once removed.
    changed: watch::Sender<Option<u64>>,
    /// Serialises start/stop/remove of one container.
    pub(crate) op: tokio::sync::Mutex<()>,
    pub(crate) dir: ContainerDir,
}

impl Entry {
    pub(crate) fn snapshot(&self) -> Container {
        self.record.lock().unwrap().clone()
    }

    pub(crate) fn state(&self) -> State {
        self.record.lock().unwrap().state.clone()
    }

    /// Whether `docker rm` has removed it (its entry may still be held).
    pub(crate) fn removed(&self) -> bool {
        self.changed.borrow().is_none()
    }

    /// Applies `f` to the record, persists it and wakes watchers.
    fn update(&self, f: impl FnOnce(&mut Container)) -> Result<(), AgentError> {
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
            serde_json::to_vec_pretty(&*record).map_err(|e| AgentError::internal(e.to_string()))?
        };
        let saved = berth_engine::durable::replace_durably(&self.dir.record(), &data);
        // The record in memory changed either way: watchers (`docker wait`)
        // learn of it even when the disk could not (it is full).
        self.changed.send_modify(|v| *v = v.map(|n| n + 1));
        saved.map_err(|e| {
            tracing::warn!(err = %e, dir = %self.dir.path().display(), "saving the container's state failed");
            AgentError::internal(format!("saving container state: {e}"))
        })
    }
}

pub struct Containers {
    root: PathBuf,
    /// Named volumes (see volumes.rs), beside the containers on the data disk.
    pub(crate) volumes: crate::volumes::Volumes,
    cgroup_root: Option<PathBuf>,
    pub(crate) reaper: Reaper,
    pub events: Arc<crate::events::Events>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Generated names of containers being created (not in `entries` yet),
    /// so that two concurrent creates never pick the same one.
    generated_names: Mutex<std::collections::HashSet<String>>,
    loaded: tokio::sync::OnceCell<()>,
    device_filters: Arc<bundle::DeviceFilters>,
    /// The engine's networks, loaded with the data disk (networks.rs).
    networks: tokio::sync::OnceCell<Arc<berth_engine::net::store::Networks>>,
    /// A local agent: networking stays in a private namespace.
    local_network: bool,
    /// The embedded DNS servers (127.0.0.11) of containers on user
    /// networks; set once at start-up (main.rs).
    dns: std::sync::OnceLock<Arc<berth_engine::dns::resolvers::EmbeddedResolvers>>,
}

pub fn no_such_container(id: &str) -> AgentError {
    AgentError::not_found(format!("No such container: {id}"))
}

fn internal(context: &str) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::internal(format!("{context}: {e}"))
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
    pub fn new(
        root: PathBuf,
        reaper: Reaper,
        events: Arc<crate::events::Events>,
        local_network: bool,
    ) -> Arc<Containers> {
        Arc::new(Containers {
            volumes: crate::volumes::Volumes::new(root.parent().unwrap_or(&root).join("volumes"), events.clone()),
            root,
            cgroup_root: berth_engine::cgroup::hierarchy_root(),
            reaper,
            events,
            entries: Mutex::new(HashMap::new()),
            generated_names: Mutex::default(),
            loaded: tokio::sync::OnceCell::new(),
            device_filters: Arc::default(),
            networks: tokio::sync::OnceCell::new(),
            local_network,
            dns: std::sync::OnceLock::new(),
        })
    }

    /// Reads containers back from disk, once (main serves no request
    /// before init has mounted the data disk), and re-adopts running ones.
    async fn ensure_loaded(self: &Arc<Self>) -> Result<(), AgentError> {
        let this = self.clone();
        self.loaded
            .get_or_try_init(|| async move {
                std::fs::create_dir_all(&this.root).map_err(internal("creating the container directory"))?;
                let mut adopted = Vec::new();
                for dir in std::fs::read_dir(&this.root).map_err(internal("listing containers"))?.flatten() {
                    let path = dir.path();
                    if dir.file_name().to_string_lossy().starts_with(REMOVING_PREFIX) {
                        let _ = std::fs::remove_dir_all(&path);
                        continue;
                    }
                    let path = ContainerDir::new(path);
                    let Ok(data) = std::fs::read(path.record()) else {
                        // A create that crashed before its record was written.
                        let _ = std::fs::remove_dir_all(path.path());
                        continue;
                    };
                    let Ok(record) = serde_json::from_slice::<Container>(&data) else {
                        tracing::warn!(dir = %path.path().display(), "unreadable container record; skipped");
                        continue;
                    };
                    let entry = this.insert(record, path);
                    adopted.push(entry);
                }
                for entry in adopted {
                    this.clone().readopt(entry).await;
                }
                Ok::<(), AgentError>(())
            })
            .await?;
        Ok(())
    }

    /// A container event, with Docker's attributes (name, image, labels).
    fn emit(&self, action: &str, record: &Container, extra: &[(&str, String)]) {
        let mut attributes = serde_json::json!({ "name": record.name, "image": record.image });
        for (key, value) in record.config.labels.get().into_iter().flat_map(|labels| &labels.0) {
            attributes[key] = value.clone().into();
        }
        for (key, value) in extra {
            attributes[*key] = value.clone().into();
        }
        self.events.emit("container", action, &record.id, attributes);
    }

    fn insert(&self, record: Container, dir: ContainerDir) -> Arc<Entry> {
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
            Some(fd) if shim_is_ours(state.shim_pid, entry.dir.path()) => {
                tracing::info!(id = %entry.snapshot().id, pid = state.pid, "re-adopted running container");
                self.monitor_health(&entry);
                tokio::spawn(self.clone().watch_exit(entry, pidfd_closed(fd), None));
            }
            _ => {
                // The shim is gone: take what it recorded, if anything.
                self.finish(&entry, None).await;
            }
        }
    }

    pub async fn lookup(self: &Arc<Self>, name: &str) -> Result<Arc<Entry>, AgentError> {
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
            _ => Err(AgentError::invalid(format!("multiple IDs found with provided prefix: {name}"))),
        }
    }

    /// Every container record (for volume-in-use checks).
    pub(crate) fn records(&self) -> Vec<Container> {
        self.entries.lock().unwrap().values().map(|e| e.snapshot()).collect()
    }

    /// Removes a removed container's anonymous volumes no other container uses.
    fn remove_anonymous_volumes(&self, volumes: &[berth_engine::container::VolumeMount]) {
        self.volumes.remove_anonymous(volumes, &self.records());
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

    /// The layer directories every container stands on (a build prune
    /// leaves them: a kept build container's image may be in no index).
    pub fn layers_in_use(&self) -> std::collections::HashSet<PathBuf> {
        self.entries.lock().unwrap().values().flat_map(|e| e.record.lock().unwrap().layers.clone()).collect()
    }

    fn find_by_name(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries.lock().unwrap().values().find(|e| e.record.lock().unwrap().name == name).cloned()
    }

    pub async fn inspect(self: &Arc<Self>, name: &str) -> Result<serde_json::Value, AgentError> {
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        let inspect = record.inspect(entry.dir.path(), self.volumes.root());
        Ok(self.with_network_settings(&record, inspect).await)
    }

    pub async fn list(
        self: &Arc<Self>,
        all: bool,
        filters: &str,
        limit: u32,
        size: bool,
    ) -> Result<serde_json::Value, AgentError> {
        self.ensure_loaded().await?;
        let filters = ContainerFilters::parse(filters)?;
        let mut records: Vec<Container> = self.entries.lock().unwrap().values().map(|e| e.snapshot()).collect();
        records.sort_by_key(|c| std::cmp::Reverse(c.created_ns));
        let now = logfile::now_ns();
        let networks = self.networks().await.ok();
        let by_id = |key: &str| records.iter().find(|c| c.id.starts_with(key) || c.name == key).map(|c| c.created_ns);
        let before = filters.one("before").map(|k| by_id(&k).ok_or_else(|| no_such_container(&k))).transpose()?;
        let since = filters.one("since").map(|k| by_id(&k).ok_or_else(|| no_such_container(&k))).transpose()?;
        let names = berth_engine::net::links::all_names(&records);
        let listed: Vec<serde_json::Value> = records
            .iter()
            .filter(|c| all || c.state.status.is_running() || filters.has("status") || limit > 0)
            .filter(|c| filters.matches(c))
            .filter(|c| before.is_none_or(|t| c.created_ns < t))
            .filter(|c| since.is_none_or(|t| c.created_ns > t))
            .take(if limit > 0 { limit as usize } else { usize::MAX })
            .map(|c| {
                let mut summary = c.summary(now, self.volumes.root());
                if let Some(names) = names.get(c.id.as_str()) {
                    summary["Names"] = serde_json::json!(names);
                }
                if let Some(networks) = &networks {
                    let settings = networks.network_settings(&c.id, "", "", c.state.status.is_running());
                    summary["NetworkSettings"]["Networks"] = settings["Networks"].clone();
                }
                if size {
                    summary["SizeRw"] =
                        berth_engine::volume::tree_size(&ContainerDir::new(self.root.join(&c.id)).upper()).into();
                }
                summary
            })
            .collect();
        Ok(serde_json::Value::Array(listed))
    }

    fn cgroup_of(&self, id: &str) -> Result<PathBuf, AgentError> {
        self.cgroup_root
            .as_ref()
            .map(|root| berth_engine::cgroup::container_cgroup(root, id))
            .ok_or_else(|| AgentError::unavailable("this machine has no cgroup v2 hierarchy"))
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
}
