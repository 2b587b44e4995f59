//! The image operations that involve more than one store call or the
//! containers: save (streamed), commit, import, prune, history and the
//! registry's view of a reference. service.rs answers the RPCs with these.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use berth_agent_proto::{ArchiveChunk, CommitContainerRequest, ImportImageStart};
use berth_engine::image_config::{self, NewLayer};
use berth_engine::store::StoreError;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tonic::Status;

use crate::containers::Containers;
use crate::filters;
use crate::service::ImagesSlot;

/// Chunks of the `docker save` tar, as the agent streams them.
const CHUNK: usize = 256 * 1024;

/// A blocking `Write` that sends what is written as ArchiveChunks on a
/// channel (the tar writer is synchronous; the gRPC stream is not). A
/// receiver that went away (the client disconnected) fails the write, so
/// the writer stops.
struct ChunkWriter {
    tx: mpsc::Sender<Result<ArchiveChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(ArchiveChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `docker save`: the archive is planned under the store's lock (so an
/// unknown name fails before any data) and written without it.
pub async fn save(
    images: Arc<ImagesSlot>,
    names: Vec<String>,
) -> Result<mpsc::Receiver<Result<ArchiveChunk, Status>>, Status> {
    let planning = images.clone();
    let plan = tokio::task::spawn_blocking(move || planning.with(|store| store.save_plan(&names)))
        .await
        .map_err(|e| Status::internal(format!("image store task failed: {e}")))??;
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        match plan.write_to(&mut writer) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(err) => {
                tracing::warn!(error = %err, "docker save failed mid-stream");
                let _ = tx.blocking_send(Err(Status::internal(format!("saving the images: {err}"))));
            }
        }
    });
    Ok(rx)
}

/// The image IDs containers use: never pruned.
fn images_in_use(containers: &Containers) -> HashSet<String> {
    containers.records().into_iter().map(|c| c.image_id).collect()
}

/// `docker image prune`. Filters: `dangling` (`false` = all unused images),
/// `until` (a time, or a Go duration before now), `label`/`label!` (`key` or `key=value`).
pub async fn prune(images: Arc<ImagesSlot>, containers: &Containers, filters_json: &str) -> Result<Value, Status> {
    let filters = filters::parse(filters_json, &["dangling", "until", "label", "label!"])?;
    let all = match filters::values(&filters, "dangling") {
        None => false,
        Some([one]) if ["true", "1"].contains(&one.as_str()) => false,
        Some([one]) if ["false", "0"].contains(&one.as_str()) => true,
        Some(other) => return Err(Status::invalid_argument(format!("invalid filter 'dangling={}'", other.join(",")))),
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
    .map_err(|e| Status::internal(format!("image store task failed: {e}")))??;
    Ok(
        json!({ "ImagesDeleted": if deleted.is_empty() { Value::Null } else { deleted.into() }, "SpaceReclaimed": reclaimed }),
    )
}

/// `docker commit`: the container's writable layer becomes a layer on top
/// of its image.
pub async fn commit(
    images: Arc<ImagesSlot>,
    containers: &Arc<Containers>,
    req: CommitContainerRequest,
) -> Result<Value, Status> {
    let entry = containers.lookup(&req.container).await?;
    let record = entry.snapshot();
    let mut config = record.config.clone();
    if !req.config_json.is_empty() {
        // dockerd decodes it as a create request's body.
        let overrides =
            berth_engine::docker_json::parse(&berth_engine::docker_json::CONTAINER_CREATE, &req.config_json)
                .map_err(Status::invalid_argument)?;
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
    image_config::apply_changes(&mut config, &req.changes).map_err(Status::invalid_argument)?;
    let created_by = ["Entrypoint", "Cmd"]
        .iter()
        .flat_map(|k| record.config[k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect::<Vec<_>>()
        .join(" ");

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
    let (diff_id, _) = written.map_err(|e| Status::internal(format!("image store task failed: {e}")))??;

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
    .map_err(|e| Status::internal(format!("image store task failed: {e}")))??;
    tracing::info!(container = %record.id, image = %new_image.id, "container committed");
    containers.events.emit("container", "commit", &record.id, json!({ "comment": req.comment }));
    Ok(json!({ "Id": new_image.id }))
}

/// `docker import`: the tarball (plain or gzip) from `data` becomes a
/// one-layer image.
pub async fn import(
    images: Arc<ImagesSlot>,
    containers: &Containers,
    start: ImportImageStart,
    mut data: mpsc::Receiver<Vec<u8>>,
) -> Result<Value, Status> {
    let mut config = json!({});
    image_config::apply_changes(&mut config, &start.changes).map_err(Status::invalid_argument)?;
    let tmp = {
        let images = images.clone();
        tokio::task::spawn_blocking(move || images.with(|store| Ok(store.tmp_dir())))
            .await
            .map_err(|e| Status::internal(e.to_string()))??
    };
    let tar = tmp.join(format!("import-{}.tar", &crate::containers::random_hex()[..16]));
    let received = async {
        let mut file = tokio::fs::File::create(&tar).await?;
        while let Some(chunk) = data.recv().await {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await
    }
    .await;
    if let Err(err) = received {
        let _ = std::fs::remove_file(&tar);
        return Err(Status::internal(format!("receiving the import: {err}")));
    }
    let comment = if start.message.is_empty() { "Imported from -".to_string() } else { start.message.clone() };
    let reference = start.reference.clone();
    let created = berth_agent_proto::time::rfc3339(now_ns());
    let tar_path = tar.clone();
    let image = tokio::task::spawn_blocking(move || {
        images.with(|store| {
            let (diff_id, _) = store.add_layer_file(&tar_path)?;
            let layer = NewLayer { diff_id, created, created_by: String::new(), comment, author: String::new() };
            let tags: Vec<String> = (!reference.is_empty()).then_some(reference).into_iter().collect();
            store.create_image(&image_config::imported(&config, &layer), &tags, None)
        })
    })
    .await;
    let _ = std::fs::remove_file(&tar);
    let image = image.map_err(|e| Status::internal(format!("image store task failed: {e}")))??;
    tracing::info!(image = %image.id, "image imported");
    containers.events.emit("image", "import", &image.id, json!({}));
    Ok(json!({ "Id": image.id }))
}

pub async fn history(images: Arc<ImagesSlot>, name: String) -> Result<Value, Status> {
    tokio::task::spawn_blocking(move || images.with(|store| store.history(&name)))
        .await
        .map_err(|e| Status::internal(format!("image store task failed: {e}")))?
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
