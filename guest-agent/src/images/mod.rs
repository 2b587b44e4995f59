//! The image side of the agent: the image store (opened on first use) and
//! the operations on it that the RPCs name: list, inspect, tag, remove,
//! the image a new container is made from, history and prune; archives
//! (load, save, import) in `transfer`, `commit` and registry `pull`.

mod commit;
mod pull;
mod push;
mod transfer;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_agent_proto::{ImageSummary, InspectImageResponse, RemoveImageResponse};
use berth_engine::store::{ImageRecord, ImageStore, StoreError};
use serde_json::{json, Value};

pub use self::commit::commit;
pub use self::pull::{inspect_distribution, pull};
pub use self::push::push;
pub(crate) use self::transfer::ChunkReader;
pub use self::transfer::{import, save, start_load};
use crate::containers::{Containers, ImageInfo};
use crate::error::AgentError;
use crate::filters;

/// The image store, opened on first use (a store that cannot be opened
/// now may be later; in the VM it lives on the data disk).
pub struct ImagesSlot {
    dir: PathBuf,
    store: Mutex<Option<ImageStore>>,
}

impl ImagesSlot {
    pub fn new(dir: PathBuf) -> ImagesSlot {
        ImagesSlot { dir, store: Mutex::new(None) }
    }

    /// The store, opened if it is not yet.
    fn opened(&self) -> Result<MutexGuard<'_, Option<ImageStore>>, StoreError> {
        let mut slot = self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(ImageStore::open(&self.dir)?);
        }
        Ok(slot)
    }

    /// Runs `f` on the open store (blocking: call from a blocking thread).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError>) -> Result<T, AgentError> {
        let mut slot = self.opened().map_err(|e| {
            AgentError::unavailable(format!("the image store at {} is unavailable: {e}", self.dir.display()))
        })?;
        Ok(f(slot.as_mut().expect("opened above"))?)
    }

    /// Runs a store operation on a blocking thread (the store does file I/O).
    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, AgentError> {
        let images = self.clone();
        tokio::task::spawn_blocking(move || images.with(f))
            .await
            .map_err(|e| AgentError::internal(format!("image store task failed: {e}")))?
    }
}

impl berth_engine::registry::StoreAccess for ImagesSlot {
    fn with_store<T>(&self, f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(self.opened()?.as_mut().expect("opened above"))
    }
}

fn summary(store: &ImageStore, record: &ImageRecord) -> ImageSummary {
    ImageSummary {
        id: record.id.clone(),
        tags: store.tags_of(&record.id).into_iter().map(String::from).collect(),
        size: record.size,
        created: record.created,
        repo_digests: record.repo_digests.clone(),
    }
}

pub async fn list(images: &Arc<ImagesSlot>) -> Result<Vec<ImageSummary>, AgentError> {
    images.blocking(|store| Ok(store.images().map(|record| summary(store, record)).collect())).await
}

pub async fn inspect(images: &Arc<ImagesSlot>, name: String) -> Result<InspectImageResponse, AgentError> {
    images
        .blocking(move |store| {
            let record = store.resolve(&name).ok_or_else(|| StoreError::NotFound(name.clone()))?.clone();
            Ok(InspectImageResponse {
                image: Some(summary(store, &record)),
                config_json: store.config_json(&record.id)?,
                diff_ids: record.diff_ids,
                parent: record.parent.unwrap_or_default(),
            })
        })
        .await
}

/// `docker tag`; answers the normalised target.
pub async fn tag(
    images: &Arc<ImagesSlot>,
    containers: &Containers,
    source: String,
    target: String,
) -> Result<String, AgentError> {
    let target = images.blocking(move |store| store.tag(&source, &target)).await?;
    let familiar = berth_engine::reference::familiar(&target).to_string();
    containers.events.emit("image", "tag", &familiar, json!({ "name": familiar }));
    Ok(target)
}

/// `docker rmi`, with Docker's rules about the containers using the image.
pub async fn remove(
    images: &Arc<ImagesSlot>,
    containers: &Containers,
    name: String,
    force: bool,
) -> Result<RemoveImageResponse, AgentError> {
    let wanted = name.clone();
    let (image_id, untag_only) = images
        .blocking(move |store| {
            let record = store.resolve(&wanted).ok_or_else(|| StoreError::NotFound(wanted.clone()))?;
            let tags = store.tags_of(&record.id);
            let reference = berth_engine::reference::normalize(&wanted).ok();
            let named = reference.is_some_and(|r| tags.contains(&r.as_str()) || record.repo_digests.contains(&r));
            Ok((record.id.clone(), named && tags.len() + record.repo_digests.len() > 1))
        })
        .await?;
    // Docker's rules: a reference the image has others besides is only
    // removed, whatever uses the image. Otherwise never under a running
    // container; under a stopped one only when forced, and then the image
    // stays (untagged) for the container, whose layers it is.
    let users = if untag_only { Vec::new() } else { containers.using_image(&image_id) };
    for (container, status) in &users {
        let short = &image_id.trim_start_matches("sha256:")[..12];
        if status.is_running() {
            return Err(AgentError::conflict(format!(
                "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {}",
                &container[..12]
            )));
        }
        if !force {
            return Err(AgentError::conflict(format!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {short}",
                &container[..12]
            )));
        }
    }
    let removed = if users.is_empty() {
        images.blocking(move |store| store.remove(&name, force)).await?
    } else {
        let id = image_id.clone();
        images.blocking(move |store| store.untag_all(&id)).await?
    };
    for tag in &removed.untagged {
        let name = berth_engine::reference::familiar(tag).to_string();
        containers.events.emit("image", "untag", &image_id, json!({ "name": name }));
    }
    for id in &removed.deleted {
        containers.events.emit("image", "delete", id, json!({ "name": id }));
    }
    Ok(RemoveImageResponse { untagged: removed.untagged, deleted: removed.deleted })
}

/// What a new container needs of its image: ID, config and layers.
pub async fn for_container(images: &Arc<ImagesSlot>, name: String) -> Result<ImageInfo, AgentError> {
    images
        .blocking(move |store| {
            let record = store.resolve(&name).ok_or_else(|| StoreError::NotFound(name.clone()))?.clone();
            let config = serde_json::from_slice(&store.config_json(&record.id)?)
                .map_err(|e| StoreError::Invalid(format!("the image's config is unreadable: {e}")))?;
            let layers = record.diff_ids.iter().map(|d| store.layer_dir(d)).collect::<Result<Vec<_>, _>>()?;
            Ok(ImageInfo { id: record.id, config, layers })
        })
        .await
}

/// Adds Docker's SizeRootFs to a container list: the container's own
/// changes (SizeRw) plus its image's layers, which the image store knows.
pub async fn add_size_root_fs(images: &Arc<ImagesSlot>, containers: &mut Value) -> Result<(), AgentError> {
    let sizes: std::collections::HashMap<String, u64> =
        images.blocking(|store| Ok(store.images().map(|r| (r.id.clone(), r.size)).collect())).await?;
    for c in containers.as_array_mut().into_iter().flatten() {
        let image = sizes.get(c["ImageID"].as_str().unwrap_or("")).copied().unwrap_or(0);
        c["SizeRootFs"] = (c["SizeRw"].as_u64().unwrap_or(0) + image).into();
    }
    Ok(())
}

/// The image IDs containers use: never pruned.
fn images_in_use(containers: &Containers) -> HashSet<String> {
    containers.records().into_iter().map(|c| c.image_id).collect()
}

/// `docker image prune`. Filters: `dangling` (`false` = all unused images),
/// `until` (a time, or a Go duration before now), `label`/`label!` (`key` or `key=value`).
pub async fn prune(images: Arc<ImagesSlot>, containers: &Containers, filters_json: &str) -> Result<Value, AgentError> {
    let filters = filters::parse(filters_json, &["dangling", "until", "label", "label!"])?;
    let all = match filters::values(&filters, "dangling") {
        None => false,
        Some([one]) if ["true", "1"].contains(&one.as_str()) => false,
        Some([one]) if ["false", "0"].contains(&one.as_str()) => true,
        Some(other) => return Err(AgentError::invalid(format!("invalid filter 'dangling={}'", other.join(",")))),
    };
    let until = filters::until_ns(filters::values(&filters, "until"))?.map(|ns| ns.div_euclid(1_000_000_000));
    let labels = filters::values(&filters, "label").unwrap_or_default().to_vec();
    let not_labels = filters::values(&filters, "label!").unwrap_or_default().to_vec();
    let keep = images_in_use(containers);
    let (deleted, reclaimed) = tokio::task::spawn_blocking(move || {
        images.with(|store| {
            store.prune(all, &keep, |record, config| {
                let config: Value = serde_json::from_slice(config).unwrap_or(Value::Null);
                let image_labels = &config["config"]["Labels"];
                until.is_none_or(|t| record.created < t)
                    && filters::labels_match(image_labels, &labels)
                    && !not_labels.iter().any(|l| filters::labels_match(image_labels, std::slice::from_ref(l)))
            })
        })
    })
    .await
    .map_err(|e| AgentError::internal(format!("image store task failed: {e}")))??;
    Ok(
        json!({ "ImagesDeleted": if deleted.is_empty() { Value::Null } else { deleted.into() }, "SpaceReclaimed": reclaimed }),
    )
}

pub async fn history(images: &Arc<ImagesSlot>, name: String) -> Result<Value, AgentError> {
    images.blocking(move |store| store.history(&name)).await
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
