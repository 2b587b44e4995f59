//! Creating a container, and the changes to its record: update, rename.

use std::sync::{Arc, Mutex};

use berth_engine::bundle;
use berth_engine::container::{self, Container, State, Status};
use berth_engine::container_dir::ContainerDir;
use berth_engine::logfile;
use berth_engine::spec::NamespaceMode;
use tokio::sync::watch;

use crate::error::AgentError;

use super::{random_hex, Containers, Entry, ImageInfo};

impl Containers {
    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        request: serde_json::Value,
        image: ImageInfo,
        image_name: String,
    ) -> Result<String, AgentError> {
        self.ensure_loaded().await?;
        let id = random_hex();
        let mut resolved =
            container::resolve(&request, &image.config, &id).map_err(|e| AgentError::invalid(e.to_string()))?;
        if resolved.init {
            bundle::init_binary().map_err(|e| AgentError::invalid(e.to_string()))?;
        }
        if let NamespaceMode::Container(other) = &resolved.options.pid {
            self.lookup(other).await?;
        }
        let volumes_from =
            container::parse_volumes_from(&resolved.host_config).map_err(|e| AgentError::invalid(e.to_string()))?;
        for from in volumes_from {
            let source = self.lookup(&from.container).await?.snapshot();
            resolved.inherit(&source, from.readonly);
        }
        let name = name.strip_prefix('/').unwrap_or(name).to_string();
        // A generated name stays reserved until the container is in the table.
        let (name, _reserved) = if name.is_empty() {
            let reserved = self.reserve_generated_name();
            (reserved.name.clone(), Some(reserved))
        } else {
            if !container::valid_name(&name) {
                return Err(AgentError::invalid(format!(
                    "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )));
            }
            (name, None)
        };
        let host_config = serde_json::to_value(&resolved.host_config).unwrap_or_default();
        self.configure_networks(&id, &name, &request, &host_config).await?;
        let dir = ContainerDir::new(self.root.join(&id));
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
            published_ports: Vec::new(),
        };
        let mut record = record;
        let own_volumes = resolved.volumes.into_iter().chain(resolved.image_volumes).collect();
        record.volumes = match self.volumes.create_for_container(own_volumes) {
            Ok(volumes) => volumes,
            Err(err) => {
                self.forget_networks(&id).await;
                return Err(err);
            }
        };
        record.volumes.extend(resolved.inherited_volumes);
        // The name check and the insertion happen under one lock, so two
        // creates with one name cannot both win.
        let taken_by = {
            let mut entries = self.entries.lock().unwrap();
            match entries.values().find(|e| e.record.lock().unwrap().name == name) {
                Some(other) => Some(other.record.lock().unwrap().id.clone()),
                None => {
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
                    None
                }
            }
        };
        if let Some(other_id) = taken_by {
            self.forget_networks(&id).await;
            return Err(AgentError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{other_id}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        let (record2, dir2, volumes_root) = (record.clone(), dir.clone(), self.volumes.root().to_path_buf());
        let written = tokio::task::spawn_blocking(move || bundle::populate(&record2, &dir2, &volumes_root))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?;
        if let Err(err) = written {
            self.entries.lock().unwrap().remove(&id);
            self.forget_networks(&id).await;
            let _ = std::fs::remove_dir_all(dir.path());
            self.remove_anonymous_volumes(&record.volumes);
            return Err(AgentError::internal(format!("creating the container: {err}")));
        }
        tracing::info!(%id, %name, "container created");
        self.emit("create", &record, &[]);
        Ok(id)
    }

    /// `docker update`: new resource limits (written to the running
    /// container's cgroup first, so a refused limit changes nothing) and
    /// restart policy, kept in the record for inspect and later starts.
    pub async fn update(self: &Arc<Self>, name: &str, update: &serde_json::Value) -> Result<(), AgentError> {
        let entry = self.lookup(name).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        let invalid = |e: container::CreateError| AgentError::invalid(e.to_string());
        let host_config = container::apply_update(&record.host_config, update).map_err(invalid)?;
        let request = container::CreateRequest::of(&record.config, &host_config);
        let image_config = serde_json::json!({ "config": record.config });
        let resolved = container::resolve_request(request, &image_config, &record.id).map_err(invalid)?;
        // All of the container's limits are written, not only the new ones:
        // the same values again change nothing, and a container without
        // limits has none to write.
        if matches!(record.state.status, Status::Running | Status::Paused) {
            let cgroup = self.cgroup_of(&record.id)?;
            let limits = berth_engine::spec::resource_limits(&resolved.options.resources)
                .map_err(|e| AgentError::invalid(e.to_string()))?;
            tokio::task::spawn_blocking(move || berth_engine::cgroup::update(&cgroup, &limits))
                .await
                .map_err(|e| AgentError::internal(e.to_string()))?
                .map_err(|e| AgentError::unavailable(format!("Cannot update container {}: {e}", record.id)))?;
        }
        entry.update(|c| c.host_config = host_config)?;
        self.emit("update", &entry.snapshot(), &[]);
        Ok(())
    }

    pub async fn rename(self: &Arc<Self>, name: &str, new_name: &str) -> Result<(), AgentError> {
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name).to_string();
        if !container::valid_name(&new_name) {
            return Err(AgentError::invalid(format!(
                "Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        if record.name == new_name {
            return Err(AgentError::conflict("Renaming a container with the same name as its current name"));
        }
        // Checked and changed under the entries lock, as create does.
        {
            let entries = self.entries.lock().unwrap();
            if let Some(other) = entries.values().find(|e| e.record.lock().unwrap().name == new_name) {
                let other_id = other.record.lock().unwrap().id.clone();
                return Err(AgentError::conflict(format!(
                    "Conflict. The container name \"/{new_name}\" is already in use by container \"{other_id}\". You have to remove (or rename) that container to be able to reuse that name."
                )));
            }
            entry.update(|c| c.name = new_name.clone())?;
        }
        if let Ok(networks) = self.networks().await {
            networks.rename(&record.id, &new_name)?;
        }
        self.emit("rename", &entry.snapshot(), &[("oldName", format!("/{}", record.name))]);
        Ok(())
    }
}

/// A generated name held for one create until its container is in the
/// table (or the create failed).
struct GeneratedName<'a> {
    containers: &'a Containers,
    name: String,
}

impl Drop for GeneratedName<'_> {
    fn drop(&mut self) {
        self.containers.generated_names.lock().unwrap().remove(&self.name);
    }
}

impl Containers {
    /// A random name no container has and no concurrent create holds.
    fn reserve_generated_name(&self) -> GeneratedName<'_> {
        loop {
            let candidate = container::random_name(u64::from_str_radix(&random_hex()[..15], 16).unwrap_or(0));
            let mut held = self.generated_names.lock().unwrap();
            if self.find_by_name(&candidate).is_none() && held.insert(candidate.clone()) {
                return GeneratedName { containers: self, name: candidate };
            }
        }
    }
}
