//! `docker commit`: a container's writable layer becomes an image.

use std::sync::Arc;

use berth_agent_proto::CommitContainerRequest;
use berth_engine::image_config::{self, NewLayer};
use berth_engine::store::StoreError;
use serde_json::{json, Value};

use super::{now_ns, ImagesSlot};
use crate::containers::Containers;
use crate::error::AgentError;

/// `docker commit`: the container's writable layer becomes a layer on top
/// of its image.
pub async fn commit(
    images: Arc<ImagesSlot>,
    containers: &Arc<Containers>,
    req: CommitContainerRequest,
) -> Result<Value, AgentError> {
    let entry = containers.lookup(&req.container).await?;
    let record = entry.snapshot();
    // The image config is built on Docker's JSON (the image's own is JSON).
    let mut config = serde_json::to_value(&record.config).map_err(|e| AgentError::internal(e.to_string()))?;
    if !req.config_json.is_empty() {
        // dockerd decodes it as a create request's body.
        let overrides =
            berth_engine::docker_json::parse(&berth_engine::docker_json::CONTAINER_CREATE, &req.config_json)
                .map_err(AgentError::invalid)?;
        // Docker's merge: what the request sets wins, the rest is the container's.
        for (key, value) in overrides.as_object().into_iter().flatten() {
            if !value.is_null()
                && value != &json!("")
                && value != &json!([])
                && value != &json!({})
                && value != &json!(false)
            {
                config[key] = value.clone();
            }
        }
    }
    image_config::apply_changes(&mut config, &req.changes).map_err(AgentError::invalid)?;
    let created_by = record.process_args().join(" ");

    let paused = req.pause && containers.is_running(&record.id) && containers.pause(&record.id, true).await.is_ok();
    let upper = entry.dir.upper();
    let store_images = images.clone();
    let written = tokio::task::spawn_blocking(move || {
        store_images.with(|store| {
            let tar = store.tmp_dir().join(format!("commit-{}.tar", &crate::containers::random_hex()[..16]));
            let result = std::fs::File::create(&tar)
                .and_then(|file| berth_engine::rootfs::write_layer_diff(&upper, std::io::BufWriter::new(file)))
                .map_err(|source| StoreError::Io { context: "writing the container's layer".into(), source })
                .and_then(|()| store.add_layer_file(&tar));
            let _ = std::fs::remove_file(&tar);
            result
        })
    })
    .await;
    if paused {
        let _ = containers.pause(&record.id, false).await;
    }
    let (diff_id, _) = written.map_err(|e| AgentError::internal(format!("image store task failed: {e}")))??;

    let created = berth_agent_proto::time::rfc3339(now_ns());
    let layer = NewLayer { diff_id, created, created_by, comment: req.comment.clone(), author: req.author };
    let image_id = record.image_id.clone();
    let reference = req.reference.clone();
    let container_id = record.id.clone();
    let new_image = tokio::task::spawn_blocking(move || {
        images.with(|store| {
            let base: Value = serde_json::from_slice(&store.config_json(&image_id)?)
                .map_err(|e| StoreError::Invalid(format!("image config {image_id}: {e}")))?;
            let image = image_config::committed(&base, &container_id, &config, &layer);
            let tags: Vec<String> = (!reference.is_empty()).then_some(reference).into_iter().collect();
            store.create_image(&image, &tags, Some(&image_id))
        })
    })
    .await
    .map_err(|e| AgentError::internal(format!("image store task failed: {e}")))??;
    tracing::info!(container = %record.id, image = %new_image.id, "container committed");
    containers.events.emit("container", "commit", &record.id, json!({ "comment": req.comment }));
    Ok(json!({ "Id": new_image.id }))
}
