//! Images in and out as archives: `docker load` (received while it is
//! unpacked), `docker save` (streamed) and `docker import`.

use std::io::Write;
use std::sync::Arc;

use berth_agent_proto::{ImageSummary, ImportImageStart};
use berth_engine::image_config::{self, NewLayer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{now_ns, summary, ImagesSlot};
use crate::containers::Containers;
use crate::error::AgentError;

/// A blocking `Read` over chunks arriving on a channel (the tar parser is
/// synchronous; the gRPC stream is not). `docker load` and `docker build`'s context.
pub(crate) struct ChunkReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub(crate) fn new(chunks: mpsc::Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader { chunks, current: Vec::new(), pos: 0 }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.chunks.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Starts a `docker load`: the archive's bytes go to the returned sender,
/// and the returned task answers with the loaded images once the sender is
/// dropped (or earlier, when the archive is bad: the sender then fails).
/// The store's lock only for the index commit: receiving and unpacking
/// hold up no other request (store/load.rs).
pub async fn start_load(
    images: Arc<ImagesSlot>,
) -> Result<(mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<Result<Vec<ImageSummary>, AgentError>>), AgentError> {
    // Up to 8 MiB of the host's 64 KiB chunks in flight: the receiving side
    // keeps going while unpacking waits on the disk for a moment.
    let (tx, rx) = mpsc::channel::<Vec<u8>>(128);
    let files = images.blocking(|store| Ok(store.files())).await?;
    let loading = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader::new(rx);
        let started = std::time::Instant::now();
        let staged = files.stage_load(reader)?;
        let received_ms = started.elapsed().as_millis() as u64;
        images.with(|store| {
            let loaded = store.commit_load(staged)?;
            let committed_ms = started.elapsed().as_millis() as u64 - received_ms;
            tracing::info!(received_ms, committed_ms, "image archive loaded");
            // The names the archive gave, not every tag the image has here
            // (what `docker load` reports).
            Ok(loaded
                .iter()
                .map(|(record, tags)| ImageSummary { tags: tags.clone(), ..summary(store, record) })
                .collect::<Vec<_>>())
        })
    });
    Ok((tx, loading))
}

/// Chunks of the `docker save` tar, as the agent streams them.
const CHUNK: usize = 256 * 1024;

/// A blocking `Write` that sends what is written in chunks on a
/// channel (the tar writer is synchronous; the gRPC stream is not). A
/// receiver that went away (the client disconnected) fails the write, so
/// the writer stops.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Vec<u8>, AgentError>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(data))
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
) -> Result<mpsc::Receiver<Result<Vec<u8>, AgentError>>, AgentError> {
    let planning = images.clone();
    let plan = tokio::task::spawn_blocking(move || planning.with(|store| store.save_plan(&names)))
        .await
        .map_err(|e| AgentError::internal(format!("image store task failed: {e}")))??;
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        match plan.write_to(&mut writer) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(err) => {
                tracing::warn!(error = %err, "docker save failed mid-stream");
                let _ = tx.blocking_send(Err(AgentError::internal(format!("saving the images: {err}"))));
            }
        }
    });
    Ok(rx)
}

/// `docker import`: the tarball (plain or gzip) from `data` becomes a
/// one-layer image.
pub async fn import(
    images: Arc<ImagesSlot>,
    containers: &Containers,
    start: ImportImageStart,
    mut data: mpsc::Receiver<Vec<u8>>,
) -> Result<Value, AgentError> {
    let mut config = json!({});
    image_config::apply_changes(&mut config, &start.changes).map_err(AgentError::invalid)?;
    let tmp = {
        let images = images.clone();
        tokio::task::spawn_blocking(move || images.with(|store| Ok(store.tmp_dir())))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))??
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
        return Err(AgentError::internal(format!("receiving the import: {err}")));
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
    let image = image.map_err(|e| AgentError::internal(format!("image store task failed: {e}")))??;
    tracing::info!(image = %image.id, "image imported");
    containers.events.emit("image", "import", &image.id, json!({}));
    Ok(json!({ "Id": image.id }))
}
