//! Named volumes in the agent: the volume store (engine/volume.rs) plus
//! what only the container side knows, which containers use a volume (the
//! callers pass the container records to check against).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_engine::container::{Container, VolumeMount};
use berth_engine::volume::VolumeStore;
use serde_json::{json, Value};

use crate::error::AgentError;

use crate::events::Events;

/// The volume store beside the containers on the data disk, and where its
/// changes are announced.
pub struct Volumes {
    root: PathBuf,
    events: Arc<Events>,
}

fn users_of(name: &str, containers: &[Container]) -> Vec<String> {
    containers.iter().filter(|c| c.volumes.iter().any(|v| v.name == name)).map(|c| c.id.clone()).collect()
}

impl Volumes {
    pub fn new(root: PathBuf, events: Arc<Events>) -> Volumes {
        Volumes { root, events }
    }

    /// The store's directory (volume binds resolve under it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn volume_store(&self) -> Result<VolumeStore, AgentError> {
        VolumeStore::open(&self.root).map_err(AgentError::from)
    }

    /// Creates the volumes a new container asks for (naming anonymous ones).
    pub(crate) fn create_for_container(&self, wanted: Vec<VolumeMount>) -> Result<Vec<VolumeMount>, AgentError> {
        let store = self.volume_store()?;
        let mut named = Vec::new();
        for mut volume in wanted {
            if volume.name.is_empty() {
                volume.name = crate::containers::random_hex();
            }
            let created = store.create(&volume.name, BTreeMap::new(), volume.anonymous).map_err(AgentError::from)?;
            if created.created_ns > 0 && volume.anonymous {
                self.events.emit("volume", "create", &volume.name, json!({ "driver": "local" }));
            }
            named.push(volume);
        }
        Ok(named)
    }

    /// Removes a removed container's anonymous volumes that none of
    /// `containers` (the remaining ones) uses.
    pub(crate) fn remove_anonymous(&self, volumes: &[VolumeMount], containers: &[Container]) {
        let Ok(store) = self.volume_store() else { return };
        for volume in volumes.iter().filter(|v| v.anonymous) {
            if users_of(&volume.name, containers).is_empty() && store.remove(&volume.name).is_ok() {
                self.events.emit("volume", "destroy", &volume.name, json!({ "driver": "local" }));
            }
        }
    }

    fn volume_json(store: &VolumeStore, v: &berth_engine::volume::Volume, usage: Option<&[Container]>) -> Value {
        let mut value = json!({
            "Name": v.name,
            "Driver": "local",
            "Mountpoint": store.data_dir(&v.name),
            "CreatedAt": berth_engine::container::rfc3339(v.created_ns),
            "Labels": v.labels,
            "Scope": "local",
            "Options": {},
        });
        if let Some(containers) = usage {
            value["UsageData"] =
                json!({ "Size": store.size(&v.name), "RefCount": users_of(&v.name, containers).len() });
        }
        value
    }

    pub fn create(&self, request: &Value) -> Result<Value, AgentError> {
        let name = request["Name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(String::from)
            .unwrap_or_else(crate::containers::random_hex);
        let driver = request["Driver"].as_str().unwrap_or("");
        if !driver.is_empty() && driver != "local" {
            return Err(AgentError::invalid(format!(
                "volume driver {driver:?} is not supported by Berth (only local)"
            )));
        }
        if request["DriverOpts"].as_object().is_some_and(|o| !o.is_empty()) {
            return Err(AgentError::invalid("volume driver options are not supported by Berth yet"));
        }
        let labels: BTreeMap<String, String> = request["Labels"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default();
        let store = self.volume_store()?;
        let volume = store.create(&name, labels, false).map_err(AgentError::from)?;
        self.events.emit("volume", "create", &name, json!({ "driver": "local" }));
        Ok(Self::volume_json(&store, &volume, None))
    }

    pub fn inspect(&self, name: &str) -> Result<Value, AgentError> {
        let store = self.volume_store()?;
        let volume = store.get(name).map_err(AgentError::from)?;
        Ok(Self::volume_json(&store, &volume, None))
    }

    /// Docker's list answer; filters: name, label, dangling.
    pub fn list(&self, filters: &str, with_usage: bool, containers: &[Container]) -> Result<Value, AgentError> {
        let filters = filters::parse(filters, &["name", "label", "dangling", "driver"])?;
        let store = self.volume_store()?;
        let mut listed = Vec::new();
        for volume in store.list().map_err(AgentError::from)? {
            if matches(&filters, &volume, users_of(&volume.name, containers).is_empty()) {
                listed.push(Self::volume_json(&store, &volume, with_usage.then_some(containers)));
            }
        }
        Ok(json!({ "Volumes": listed, "Warnings": [] }))
    }

    pub fn remove(&self, name: &str, force: bool, containers: &[Container]) -> Result<(), AgentError> {
        let store = self.volume_store()?;
        store.get(name).map_err(AgentError::from)?;
        let users = users_of(name, containers);
        if !users.is_empty() && !force {
            return Err(AgentError::conflict(format!("remove {name}: volume is in use - [{}]", users.join(", "))));
        }
        if !users.is_empty() {
            return Err(AgentError::conflict(format!("remove {name}: volume is in use - [{}]", users.join(", "))));
        }
        store.remove(name).map_err(AgentError::from)?;
        self.events.emit("volume", "destroy", name, json!({ "driver": "local" }));
        Ok(())
    }

    /// Docker ≥ 23's prune: unused anonymous volumes, or all unused ones
    /// with the `all` filter.
    pub fn prune(&self, filters: &str, containers: &[Container]) -> Result<Value, AgentError> {
        let filters = filters::parse(filters, &["label", "all"])?;
        let all = filters.iter().any(|(k, v)| k == "all" && v.iter().any(|x| x == "true" || x == "1"));
        let store = self.volume_store()?;
        let (mut deleted, mut reclaimed) = (Vec::new(), 0u64);
        for volume in store.list().map_err(AgentError::from)? {
            let label_ok =
                matches(&filters.iter().filter(|(k, _)| k == "label").cloned().collect::<Vec<_>>(), &volume, true);
            if (volume.anonymous || all) && label_ok && users_of(&volume.name, containers).is_empty() {
                let size = store.size(&volume.name);
                if store.remove(&volume.name).is_ok() {
                    reclaimed += size;
                    deleted.push(volume.name);
                }
            }
        }
        Ok(json!({ "VolumesDeleted": deleted, "SpaceReclaimed": reclaimed }))
    }
}

use crate::filters::{self, Filters};

fn matches(filters: &Filters, volume: &berth_engine::volume::Volume, unused: bool) -> bool {
    filters.iter().all(|(key, wanted)| match key.as_str() {
        "name" => wanted.iter().any(|w| volume.name.contains(w.as_str())),
        "driver" => wanted.iter().any(|w| w == "local"),
        "dangling" => wanted.iter().any(|w| (w == "true" || w == "1") == unused),
        "label" => filters::labels_match(&json!(volume.labels), wanted),
        _ => true,
    })
}
