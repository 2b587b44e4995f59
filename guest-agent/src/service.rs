//! The gRPC service: the agent protocol's server side.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_engine::layer::LayerError;
use berth_engine::store::{ImageRecord, ImageStore, StoreError};
use std::time::Instant;

use berth_agent_proto::agent_server::Agent;
use berth_agent_proto::{
    attach_input, AttachInput, ContainerArchiveInput, ContainerLogsRequest, ContainerPathRequest, ContainerRef,
    ContainerStatsRequest, CreateContainerRequest, CreateContainerResponse, Empty, EventsRequest, JsonRequest,
    JsonResponse, KillContainerRequest, KillContainerResponse, ListContainersRequest, ListVolumesRequest, LogEntry,
    PruneContainersRequest, PruneVolumesRequest, PullImageRequest, RemoveContainerRequest, RemoveContainerResponse,
    RemoveVolumeRequest, RenameContainerRequest, ResizeContainerRequest, ResizeContainerResponse,
    StartContainerResponse, StopContainerRequest, StopContainerResponse, VolumeRef, WaitContainerRequest,
    WaitContainerResponse,
};
use berth_agent_proto::{
    exec_input, ArchiveChunk, ExecInput, ExecOutput, ImageSummary, InfoRequest, InfoResponse, ListImagesRequest,
    ListImagesResponse, LoadImagesResponse, MountStatus, PingRequest, PingResponse, ShutdownRequest, ShutdownResponse,
    PROTOCOL_VERSION,
};
use berth_agent_proto::{
    CommitContainerRequest, ImportImageInput, InspectImageRequest, InspectImageResponse, PruneImagesRequest,
    RemoveImageRequest, RemoveImageResponse, SaveImagesRequest, TagImageRequest, TagImageResponse,
};
use berth_engine::docker_json;
use tokio::sync::{mpsc, Notify};

use crate::containers::ImageInfo;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::reaper::Reaper;
use crate::sysinfo;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct AgentService {
    pub reaper: Reaper,
    /// What init mounted at boot (empty for a local agent).
    pub mounts: crate::Mounts,
    pub started: Instant,
    /// Notified once a Shutdown has been answered.
    pub shutdown: Arc<Notify>,
    pub images: Arc<ImagesSlot>,
    pub containers: Arc<crate::containers::Containers>,
}

/// The image store, opened on first use: in the VM it lives on the data
/// disk, which init mounts after the server has started.
pub struct ImagesSlot {
    dir: PathBuf,
    store: Mutex<Option<ImageStore>>,
}

impl ImagesSlot {
    pub fn new(dir: PathBuf) -> ImagesSlot {
        ImagesSlot { dir, store: Mutex::new(None) }
    }

    /// Runs `f` on the open store (blocking: call from a blocking thread).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError>) -> Result<T, Status> {
        let mut slot = self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            let opened = ImageStore::open(&self.dir).map_err(|e| {
                Status::failed_precondition(format!("the image store at {} is unavailable: {e}", self.dir.display()))
            })?;
            *slot = Some(opened);
        }
        f(slot.as_mut().expect("opened above")).map_err(store_status)
    }
}

impl berth_engine::registry::StoreAccess for ImagesSlot {
    fn with_store<T>(&self, f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(ImageStore::open(&self.dir)?);
        }
        f(slot.as_mut().expect("opened above"))
    }
}

/// One of Docker's pull progress messages for a pull event.
fn pull_message(event: &berth_engine::registry::Progress, reference: &str) -> serde_json::Value {
    use berth_engine::registry::Progress;
    use serde_json::json;
    // Docker's own bar: 50 columns, `=` done, `>` the head.
    let bar = |current: u64, total: u64| {
        let filled = if total > 0 { (current.min(total) * 50 / total) as usize } else { 0 };
        let head = if filled < 50 { ">" } else { "=" };
        format!(
            "[{}{head}{}] {:.3}MB/{:.3}MB",
            "=".repeat(filled.saturating_sub(1)),
            " ".repeat(50usize.saturating_sub(filled.max(1))),
            current as f64 / 1e6,
            total as f64 / 1e6
        )
    };
    match event {
        Progress::Resolved { .. } => {
            // docker.io/library/busybox:latest -> "library/busybox", "latest"
            let (name, tag) = match reference.split_once('@') {
                Some((name, digest)) => (name, digest),
                None => match reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                    Some((name, tag)) => (name, tag),
                    None => (reference, "latest"),
                },
            };
            let path = name.split_once('/').map(|(_, path)| path).unwrap_or(name);
            json!({ "status": format!("Pulling from {path}"), "id": tag })
        }
        Progress::LayerStart { id, .. } => json!({ "status": "Pulling fs layer", "progressDetail": {}, "id": id }),
        Progress::LayerProgress { id, current, total } => json!({
            "status": "Downloading", "progressDetail": { "current": current, "total": total },
            "progress": bar(*current, *total), "id": id,
        }),
        Progress::LayerExtracting { id } => json!({ "status": "Extracting", "progressDetail": {}, "id": id }),
        Progress::LayerExists { id } => json!({ "status": "Already exists", "progressDetail": {}, "id": id }),
        Progress::LayerDone { id } => json!({ "status": "Pull complete", "progressDetail": {}, "id": id }),
        Progress::Done { changed, .. } => {
            let familiar = berth_engine::reference::familiar(reference);
            let status = if *changed {
                format!("Status: Downloaded newer image for {familiar}")
            } else {
                format!("Status: Image is up to date for {familiar}")
            };
            json!({ "status": status })
        }
    }
}

/// Bad archives are the client's fault; anything else is ours.
fn store_status(err: StoreError) -> Status {
    match &err {
        StoreError::Invalid(_) | StoreError::DigestMismatch { .. } => Status::invalid_argument(err.to_string()),
        StoreError::NotFound(_) => Status::not_found(err.to_string()),
        StoreError::Conflict(_) => Status::aborted(err.to_string()),
        StoreError::Layer(
            LayerError::Unsafe { .. } | LayerError::DigestMismatch { .. } | LayerError::UnsupportedCompression(_),
        ) => Status::invalid_argument(err.to_string()),
        _ => Status::internal(err.to_string()),
    }
}

fn summary(store: &ImageStore, record: &ImageRecord) -> ImageSummary {
    ImageSummary {
        id: record.id.clone(),
        tags: store.tags_of(&record.id).into_iter().map(String::from).collect(),
        size: record.size,
        created: record.created,
    }
}

/// How long an upload (`docker load`) may pause before it is abandoned.
const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A blocking `Read` over chunks arriving on a channel (the tar parser is
/// synchronous; the gRPC stream is not).
struct ChunkReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
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

fn check_version(client: u32) -> Result<(), Status> {
    if client == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "protocol version mismatch: client speaks v{client}, berth-agent {AGENT_VERSION} speaks v{PROTOCOL_VERSION}"
        )))
    }
}

impl AgentService {
    /// Runs a store operation on a blocking thread (the store does file I/O).
    async fn images_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let images = self.images.clone();
        tokio::task::spawn_blocking(move || images.with(f))
            .await
            .map_err(|e| Status::internal(format!("image store task failed: {e}")))?
    }
}

impl AgentService {
    /// Streams the archive helper's tar as ArchiveChunks; a failure after
    /// the first bytes ends the stream with the error.
    fn stream_archive(
        &self,
        id: String,
        op: &'static str,
        path: String,
    ) -> Result<Response<ReceiverStream<Result<ArchiveChunk, Status>>>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let (raw_tx, mut raw_rx) = mpsc::channel::<Result<Vec<u8>, Status>>(16);
        let containers = self.containers.clone();
        let errors = tx.clone();
        tokio::spawn(async move {
            if let Err(status) = containers.archive(&id, op, &path, None, Some(raw_tx)).await {
                let _ = errors.send(Err(status)).await;
            }
        });
        tokio::spawn(async move {
            while let Some(chunk) = raw_rx.recv().await {
                if tx.send(chunk.map(|data| ArchiveChunk { data })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The reference and registry options of a pull-like request.
fn pull_options(req: PullImageRequest) -> Result<(String, berth_engine::registry::PullOptions), Status> {
    use berth_engine::registry::{Credentials, PullOptions};
    let PullImageRequest { reference, auth_json, registry_mirrors, insecure_registries } = req;
    let auth = if auth_json.trim().is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<Credentials>(&auth_json)
                .map_err(|e| Status::invalid_argument(format!("invalid X-Registry-Auth: {e}")))?,
        )
    };
    Ok((reference, PullOptions { insecure_registries, mirrors: registry_mirrors, auth }))
}

fn pull_status(err: &berth_engine::registry::PullError) -> Status {
    use berth_engine::registry::PullError;
    match err {
        PullError::ManifestUnknown { .. } | PullError::AccessDenied { .. } => Status::not_found(err.to_string()),
        PullError::InvalidReference(_) => Status::invalid_argument(err.to_string()),
        _ => Status::internal(err.to_string()),
    }
}

/// What `Info` answers, also sent unasked in the readiness announcement.
pub fn info(mounts: &[MountStatus]) -> InfoResponse {
    let mem = sysinfo::meminfo();
    InfoResponse {
        agent_version: AGENT_VERSION.into(),
        protocol_version: PROTOCOL_VERSION,
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        cpus: sysinfo::online_cpus(),
        memory_total_bytes: mem.total,
        memory_available_bytes: mem.available,
        uptime_ms: sysinfo::uptime_ms(),
        mounts: mounts.to_vec(),
        agent_rss_bytes: sysinfo::self_rss_bytes(),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn ping(&self, req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        check_version(req.get_ref().protocol_version)?;
        Ok(Response::new(PingResponse { protocol_version: PROTOCOL_VERSION, agent_version: AGENT_VERSION.into() }))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(info(self.mounts.get().map(Vec::as_slice).unwrap_or_default())))
    }

    type ExecStream = ReceiverStream<Result<ExecOutput, Status>>;

    async fn exec(&self, req: Request<Streaming<ExecInput>>) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(ExecInput { input: Some(exec_input::Input::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("the first Exec message must be `start`")),
        };
        if start.argv.is_empty() {
            return Err(Status::invalid_argument("Exec needs a command (argv is empty)"));
        }
        let in_container = !start.container_id.is_empty();
        let start = if in_container { self.containers.exec_in(start).await? } else { start };
        // In a container, `enter` allocates the terminal there.
        let terminal = if in_container { crate::exec::Terminal::FromProcess } else { crate::exec::Terminal::Agent };
        let (tx, rx) = mpsc::channel(64);
        let reaper = self.reaper.clone();
        tokio::spawn(async move { crate::exec::run(&reaper, start, terminal, input, tx).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn load_images(&self, req: Request<Streaming<ArchiveChunk>>) -> Result<Response<LoadImagesResponse>, Status> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        let images = self.images.clone();
        // The store's lock only for the index commit: receiving and
        // unpacking hold up no other request (store/load.rs).
        let files = self.images_blocking(|store| Ok(store.files())).await?;
        let loading = tokio::task::spawn_blocking(move || {
            let reader = ChunkReader { chunks: rx, current: Vec::new(), pos: 0 };
            let staged = files.stage_load(reader).map_err(store_status)?;
            images.with(|store| {
                let loaded = store.commit_load(staged)?;
                Ok(loaded.iter().map(|(record, _)| summary(store, record)).collect::<Vec<_>>())
            })
        });
        // Feed the loader until the stream ends or the loader stops reading
        // (it failed early: its error is the one to report). A client that
        // stops sending without ending the upload is given up on.
        loop {
            let chunk = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, input.message()).await {
                Ok(chunk) => chunk?,
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "the image upload sent nothing for {} s",
                        UPLOAD_IDLE_TIMEOUT.as_secs()
                    )))
                }
            };
            let Some(chunk) = chunk else { break };
            if tx.send(chunk.data).await.is_err() {
                break;
            }
        }
        drop(tx);
        let images = loading.await.map_err(|e| Status::internal(format!("image load task failed: {e}")))??;
        tracing::info!(images = images.len(), "images loaded");
        for image in &images {
            let name = image.tags.first().map(|t| berth_engine::reference::familiar(t).to_string()).unwrap_or_default();
            self.containers.events.emit("image", "load", &image.id, serde_json::json!({ "name": name }));
        }
        Ok(Response::new(LoadImagesResponse { images }))
    }

    async fn list_images(&self, _: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let images =
            self.images_blocking(|store| Ok(store.images().map(|record| summary(store, record)).collect())).await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn inspect_image(&self, req: Request<InspectImageRequest>) -> Result<Response<InspectImageResponse>, Status> {
        let name = req.into_inner().name;
        let reply = self
            .images_blocking(move |store| {
                let record = store.resolve(&name).ok_or_else(|| StoreError::NotFound(name.clone()))?.clone();
                Ok(InspectImageResponse {
                    image: Some(summary(store, &record)),
                    config_json: store.config_json(&record.id)?,
                    diff_ids: record.diff_ids,
                    parent: record.parent.unwrap_or_default(),
                })
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn tag_image(&self, req: Request<TagImageRequest>) -> Result<Response<TagImageResponse>, Status> {
        let TagImageRequest { source, target } = req.into_inner();
        let target = self.images_blocking(move |store| store.tag(&source, &target)).await?;
        let familiar = berth_engine::reference::familiar(&target).to_string();
        self.containers.events.emit("image", "tag", &familiar, serde_json::json!({ "name": familiar }));
        Ok(Response::new(TagImageResponse { target }))
    }

    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        let RemoveImageRequest { name, force } = req.into_inner();
        let wanted = name.clone();
        let image_id = self
            .images_blocking(move |store| {
                Ok(store.resolve(&wanted).ok_or_else(|| StoreError::NotFound(wanted.clone()))?.id.clone())
            })
            .await?;
        // Docker's rules: never under a running container; under a stopped
        // one only when forced, and then the image stays (untagged) for
        // the container, whose layers it is.
        let users = self.containers.using_image(&image_id);
        for (container, status) in &users {
            let short = &image_id.trim_start_matches("sha256:")[..12];
            if status.is_running() {
                return Err(Status::aborted(format!(
                    "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {}",
                    &container[..12]
                )));
            }
            if !force {
                return Err(Status::aborted(format!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {short}",
                    &container[..12]
                )));
            }
        }
        let removed = if users.is_empty() {
            self.images_blocking(move |store| store.remove(&name, force)).await?
        } else {
            let id = image_id.clone();
            self.images_blocking(move |store| store.untag_all(&id)).await?
        };
        for tag in &removed.untagged {
            let name = berth_engine::reference::familiar(tag).to_string();
            self.containers.events.emit("image", "untag", &image_id, serde_json::json!({ "name": name }));
        }
        for id in &removed.deleted {
            self.containers.events.emit("image", "delete", id, serde_json::json!({ "name": id }));
        }
        Ok(Response::new(RemoveImageResponse { untagged: removed.untagged, deleted: removed.deleted }))
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let CreateContainerRequest { name, config_json } = req.into_inner();
        let request =
            docker_json::parse(&docker_json::CONTAINER_CREATE, &config_json).map_err(Status::invalid_argument)?;
        let image_name = request["Image"].as_str().unwrap_or("").to_string();
        if image_name.is_empty() {
            return Err(Status::invalid_argument("config cannot be empty in order to create a container"));
        }
        berth_engine::reference::normalize(&image_name).map_err(Status::invalid_argument)?;
        let wanted = image_name.clone();
        let image = self
            .images_blocking(move |store| {
                let record = store.resolve(&wanted).ok_or_else(|| StoreError::NotFound(wanted.clone()))?.clone();
                let config = serde_json::from_slice(&store.config_json(&record.id)?)
                    .map_err(|e| StoreError::Invalid(format!("the image's config is unreadable: {e}")))?;
                let layers = record.diff_ids.iter().map(|d| store.layer_dir(d)).collect::<Result<Vec<_>, _>>()?;
                Ok(ImageInfo { id: record.id, config, layers })
            })
            .await?;
        let id = self.containers.create(&name, request, image, image_name).await?;
        Ok(Response::new(CreateContainerResponse { id, warnings: Vec::new() }))
    }

    async fn start_container(&self, req: Request<ContainerRef>) -> Result<Response<StartContainerResponse>, Status> {
        let started = self.containers.start(&req.into_inner().id).await?;
        Ok(Response::new(StartContainerResponse { already_started: !started }))
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let StopContainerRequest { id, timeout_secs, signal } = req.into_inner();
        let stopped = self.containers.stop(&id, timeout_secs, &signal).await?;
        Ok(Response::new(StopContainerResponse { already_stopped: !stopped }))
    }

    async fn kill_container(
        &self,
        req: Request<KillContainerRequest>,
    ) -> Result<Response<KillContainerResponse>, Status> {
        let KillContainerRequest { id, signal } = req.into_inner();
        self.containers.kill(&id, &signal).await?;
        Ok(Response::new(KillContainerResponse {}))
    }

    type WaitContainerStream = ReceiverStream<Result<WaitContainerResponse, Status>>;

    async fn wait_container(
        &self,
        req: Request<WaitContainerRequest>,
    ) -> Result<Response<Self::WaitContainerStream>, Status> {
        let WaitContainerRequest { id, condition } = req.into_inner();
        let done = self.containers.wait(&id, &condition).await?;
        let (tx, rx) = mpsc::channel(2);
        let _ = tx.send(Ok(WaitContainerResponse { registered: true, ..Default::default() })).await;
        tokio::spawn(async move {
            let (status_code, error) = done.await;
            let _ = tx.send(Ok(WaitContainerResponse { registered: false, status_code, error })).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let RemoveContainerRequest { id, force, remove_volumes } = req.into_inner();
        self.containers.remove(&id, force, remove_volumes).await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn inspect_container(&self, req: Request<ContainerRef>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.inspect(&req.into_inner().id).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn list_containers(&self, req: Request<ListContainersRequest>) -> Result<Response<JsonResponse>, Status> {
        let ListContainersRequest { all, filters_json, limit, size } = req.into_inner();
        let mut value = self.containers.list(all, &filters_json, limit, size).await?;
        if size {
            // SizeRootFs adds the image's layers, which the image store knows.
            let sizes: std::collections::HashMap<String, u64> =
                self.images_blocking(|store| Ok(store.images().map(|r| (r.id.clone(), r.size)).collect())).await?;
            for c in value.as_array_mut().into_iter().flatten() {
                let image = sizes.get(c["ImageID"].as_str().unwrap_or("")).copied().unwrap_or(0);
                c["SizeRootFs"] = (c["SizeRw"].as_u64().unwrap_or(0) + image).into();
            }
        }
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    type ContainerLogsStream = ReceiverStream<Result<LogEntry, Status>>;

    async fn container_logs(
        &self,
        req: Request<ContainerLogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        self.containers.logs(req.into_inner(), tx).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type AttachContainerStream = ReceiverStream<Result<LogEntry, Status>>;

    async fn attach_container(
        &self,
        req: Request<Streaming<AttachInput>>,
    ) -> Result<Response<Self::AttachContainerStream>, Status> {
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(AttachInput { input: Some(attach_input::Input::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("the first AttachContainer message must be `start`")),
        };
        let (tx, rx) = mpsc::channel(64);
        self.containers.attach(start, input, tx).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resize_container(
        &self,
        req: Request<ResizeContainerRequest>,
    ) -> Result<Response<ResizeContainerResponse>, Status> {
        let ResizeContainerRequest { id, size } = req.into_inner();
        let size = size.unwrap_or_default();
        self.containers
            .resize(&id, size.rows.min(u16::MAX as u32) as u16, size.cols.min(u16::MAX as u32) as u16)
            .await?;
        Ok(Response::new(ResizeContainerResponse {}))
    }

    async fn pause_container(&self, req: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        self.containers.pause(&req.into_inner().id, true).await?;
        Ok(Response::new(Empty {}))
    }

    async fn unpause_container(&self, req: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        self.containers.pause(&req.into_inner().id, false).await?;
        Ok(Response::new(Empty {}))
    }

    async fn rename_container(&self, req: Request<RenameContainerRequest>) -> Result<Response<Empty>, Status> {
        let RenameContainerRequest { id, name } = req.into_inner();
        self.containers.rename(&id, &name).await?;
        Ok(Response::new(Empty {}))
    }

    async fn update_container(
        &self,
        req: Request<berth_agent_proto::UpdateContainerRequest>,
    ) -> Result<Response<JsonResponse>, Status> {
        let berth_agent_proto::UpdateContainerRequest { id, update_json } = req.into_inner();
        let update =
            docker_json::parse(&docker_json::CONTAINER_UPDATE, &update_json).map_err(Status::invalid_argument)?;
        self.containers.update(&id, &update).await?;
        Ok(Response::new(JsonResponse { json: serde_json::json!({ "Warnings": [] }).to_string().into_bytes() }))
    }

    async fn top_container(&self, req: Request<ContainerRef>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.top(&req.into_inner().id).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    type ContainerStatsStream = ReceiverStream<Result<JsonResponse, Status>>;

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<Self::ContainerStatsStream>, Status> {
        let ContainerStatsRequest { id, stream } = req.into_inner();
        let containers = self.containers.clone();
        let first = containers.stats(&id, None).await?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut previous = first;
            if !stream {
                // One sample, with a real precpu: wait a moment for a second reading.
                tokio::time::sleep(std::time::Duration::from_millis(if containers.is_running(&id) { 500 } else { 0 }))
                    .await;
                if let Ok(sample) = containers.stats(&id, Some(&previous)).await {
                    let _ = tx.send(Ok(JsonResponse { json: sample.to_string().into_bytes() })).await;
                }
                return;
            }
            loop {
                if tx.send(Ok(JsonResponse { json: previous.to_string().into_bytes() })).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                match containers.stats(&id, Some(&previous)).await {
                    Ok(sample) => previous = sample,
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn prune_containers(&self, req: Request<PruneContainersRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.prune(&req.into_inner().filters_json).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn create_volume(&self, req: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        let body = docker_json::parse(&docker_json::VOLUME_CREATE, &req.into_inner().json)
            .map_err(Status::invalid_argument)?;
        let value = self.containers.create_volume(&body).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn list_volumes(&self, req: Request<ListVolumesRequest>) -> Result<Response<JsonResponse>, Status> {
        let ListVolumesRequest { filters_json, usage } = req.into_inner();
        let value = self.containers.list_volumes(&filters_json, usage).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn inspect_volume(&self, req: Request<VolumeRef>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.inspect_volume(&req.into_inner().name).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn remove_volume(&self, req: Request<RemoveVolumeRequest>) -> Result<Response<Empty>, Status> {
        let RemoveVolumeRequest { name, force } = req.into_inner();
        self.containers.remove_volume(&name, force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn prune_volumes(&self, req: Request<PruneVolumesRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.prune_volumes(&req.into_inner().filters_json).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn stat_container_path(&self, req: Request<ContainerPathRequest>) -> Result<Response<JsonResponse>, Status> {
        let ContainerPathRequest { id, path } = req.into_inner();
        let (tx, mut rx) = mpsc::channel(4);
        self.containers.archive(&id, "stat", &path, None, Some(tx)).await?;
        let mut json = Vec::new();
        while let Some(Ok(chunk)) = rx.recv().await {
            json.extend(chunk);
        }
        Ok(Response::new(JsonResponse { json }))
    }

    type GetContainerArchiveStream = ReceiverStream<Result<ArchiveChunk, Status>>;

    async fn get_container_archive(
        &self,
        req: Request<ContainerPathRequest>,
    ) -> Result<Response<Self::GetContainerArchiveStream>, Status> {
        let ContainerPathRequest { id, path } = req.into_inner();
        // Missing paths are an error before any data: stat first.
        let (stat_tx, _stat_rx) = mpsc::channel(4);
        self.containers.archive(&id, "stat", &path, None, Some(stat_tx)).await?;
        self.stream_archive(id, "get", path)
    }

    async fn put_container_archive(
        &self,
        req: Request<Streaming<ContainerArchiveInput>>,
    ) -> Result<Response<Empty>, Status> {
        use berth_agent_proto::container_archive_input::Input;
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(ContainerArchiveInput { input: Some(Input::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("the first PutContainerArchive message must be `start`")),
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(ContainerArchiveInput { input: Some(Input::Data(data)) })) = input.message().await {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        });
        self.containers.archive(&start.id, "put", &start.path, Some(rx), None).await?;
        Ok(Response::new(Empty {}))
    }

    async fn container_changes(&self, req: Request<ContainerRef>) -> Result<Response<JsonResponse>, Status> {
        let entry = self.containers.lookup(&req.into_inner().id).await?;
        let record = entry.snapshot();
        let upper = berth_engine::rootfs::ContainerLayer::under(&entry.dir).upper;
        let found = tokio::task::spawn_blocking(move || berth_engine::rootfs::changes(&upper, &record.layers))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // Not the engine's own paths (Docker's "init layer"), nor
        // directories left with nothing else to show.
        let kept: Vec<(String, u8)> =
            found.iter().filter(|(p, _)| !berth_engine::rootfs::is_engine_path(p)).cloned().collect();
        let value: Vec<serde_json::Value> = kept
            .iter()
            .filter(|(path, kind)| {
                let is_bare_parent = *kind == 0
                    && found.iter().any(|(p, _)| p.starts_with(&format!("{path}/")))
                    && !kept.iter().any(|(p, _)| p.starts_with(&format!("{path}/")));
                !is_bare_parent
            })
            .map(|(path, kind)| serde_json::json!({ "Path": path, "Kind": kind }))
            .collect();
        Ok(Response::new(JsonResponse { json: serde_json::Value::Array(value).to_string().into_bytes() }))
    }

    type ExportContainerStream = ReceiverStream<Result<ArchiveChunk, Status>>;

    async fn export_container(
        &self,
        req: Request<ContainerRef>,
    ) -> Result<Response<Self::ExportContainerStream>, Status> {
        let id = req.into_inner().id;
        self.containers.lookup(&id).await?;
        self.stream_archive(id, "export", "/".into())
    }

    type PullImageStream = ReceiverStream<Result<JsonResponse, Status>>;

    async fn pull_image(&self, req: Request<PullImageRequest>) -> Result<Response<Self::PullImageStream>, Status> {
        use berth_engine::registry::pull;
        let (reference, options) = pull_options(req.into_inner())?;
        let normalized = berth_engine::reference::normalize(&reference).map_err(Status::invalid_argument)?;
        // Unbounded: progress comes from a synchronous callback; a pull has
        // a few hundred messages at most (one per 512 KiB and layer event).
        let (tx, mut rx) = mpsc::unbounded_channel::<Result<JsonResponse, Status>>();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), Status>>();
        let images = self.images.clone();
        let events = self.containers.events.clone();
        tokio::spawn(async move {
            let mut first = Some(first_tx);
            let progress_tx = tx.clone();
            let mut announce = |event: berth_engine::registry::Progress| {
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                let message = pull_message(&event, &normalized);
                let _ = progress_tx.send(Ok(JsonResponse { json: message.to_string().into_bytes() }));
            };
            let result = pull(images, &reference, &options, &mut announce).await;
            drop(announce);
            match result {
                Ok(id) => {
                    let name = berth_engine::reference::familiar(&normalized).to_string();
                    events.emit("image", "pull", &name, serde_json::json!({ "name": name }));
                    tracing::info!(%reference, %id, "image pulled");
                }
                Err(err) => {
                    let status = pull_status(&err);
                    match first.take() {
                        Some(first) => {
                            let _ = first.send(Err(status));
                        }
                        None => {
                            let message = serde_json::json!({ "errorDetail": { "message": err.to_string() }, "error": err.to_string() });
                            let _ = tx.send(Ok(JsonResponse { json: message.to_string().into_bytes() }));
                        }
                    }
                }
            }
        });
        // An error before any progress is the call's own status.
        if let Ok(Err(status)) = first_rx.await {
            return Err(status);
        }
        let (out_tx, out_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if out_tx.send(message).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    type SaveImagesStream = ReceiverStream<Result<ArchiveChunk, Status>>;

    async fn save_images(&self, req: Request<SaveImagesRequest>) -> Result<Response<Self::SaveImagesStream>, Status> {
        let rx = crate::images::save(self.images.clone(), req.into_inner().names).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn image_history(&self, req: Request<InspectImageRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = crate::images::history(self.images.clone(), req.into_inner().name).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn prune_images(&self, req: Request<PruneImagesRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = crate::images::prune(self.images.clone(), &self.containers, &req.into_inner().filters_json).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn commit_container(&self, req: Request<CommitContainerRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = crate::images::commit(self.images.clone(), &self.containers, req.into_inner()).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn import_image(&self, req: Request<Streaming<ImportImageInput>>) -> Result<Response<JsonResponse>, Status> {
        use berth_agent_proto::import_image_input::Input;
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(ImportImageInput { input: Some(Input::Start(start)) }) => start,
            _ => return Err(Status::invalid_argument("the first ImportImage message must be `start`")),
        };
        let (tx, rx) = mpsc::channel(16);
        let feeding = tokio::spawn(async move {
            while let Some(message) = input.message().await? {
                if let ImportImageInput { input: Some(Input::Data(data)) } = message {
                    if tx.send(data).await.is_err() {
                        break;
                    }
                }
            }
            Ok::<(), Status>(())
        });
        let result = crate::images::import(self.images.clone(), &self.containers, start, rx).await;
        // A broken upload is the error to report, not what the importer made of it.
        if let Ok(Err(status)) = feeding.await {
            return Err(status);
        }
        Ok(Response::new(JsonResponse { json: result?.to_string().into_bytes() }))
    }

    async fn inspect_distribution(&self, req: Request<PullImageRequest>) -> Result<Response<JsonResponse>, Status> {
        let (reference, options) = pull_options(req.into_inner())?;
        let value = berth_engine::registry::inspect_distribution(&reference, &options)
            .await
            .map_err(|err| pull_status(&err))?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    type EventsStream = ReceiverStream<Result<JsonResponse, Status>>;

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let EventsRequest { since_ns, until_ns, filters_json } = req.into_inner();
        let filters = crate::events::EventFilters::parse(&filters_json).map_err(Status::invalid_argument)?;
        let (past, mut live) = self.containers.events.subscribe(since_ns);
        let (tx, rx) = mpsc::channel(64);
        let in_range = move |e: &serde_json::Value| until_ns <= 0 || e["timeNano"].as_i64().unwrap_or(0) <= until_ns;
        tokio::spawn(async move {
            let send = |e: &serde_json::Value| Ok(JsonResponse { json: e.to_string().into_bytes() });
            for event in past.iter().filter(|e| filters.matches(e) && in_range(e)) {
                if tx.send(send(event)).await.is_err() {
                    return;
                }
            }
            let until = (until_ns > 0).then(|| {
                let wait = (until_ns - berth_engine::logfile::now_ns()).max(0) as u64;
                tokio::time::Instant::now() + std::time::Duration::from_nanos(wait)
            });
            loop {
                let next = match until {
                    Some(deadline) => match tokio::time::timeout_at(deadline, live.recv()).await {
                        Ok(event) => event,
                        Err(_) => return,
                    },
                    None => tokio::select! {
                        event = live.recv() => event,
                        () = tx.closed() => return,
                    },
                };
                match next {
                    Ok(event) if filters.matches(&event) && in_range(&event) => {
                        if tx.send(send(&event)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn shutdown(&self, _: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!(uptime_ms = self.started.elapsed().as_millis() as u64, "shutdown requested");
        self.containers.stop_all(5).await;
        self.shutdown.notify_one();
        Ok(Response::new(ShutdownResponse {}))
    }
}
