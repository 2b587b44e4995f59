//! The gRPC service: the agent protocol's server side.

use std::sync::Arc;

use std::time::Instant;

use berth_agent_proto::agent_server::Agent;
use berth_agent_proto::{
    attach_input, AttachInput, ContainerArchiveInput, ContainerLogsRequest, ContainerPathRequest, ContainerRef,
    ContainerStatsRequest, CreateContainerRequest, CreateContainerResponse, Empty, EventsRequest, JsonRequest,
    JsonResponse, KillContainerRequest, KillContainerResponse, ListContainersRequest, ListVolumesRequest, LogEntry,
    PruneContainersRequest, PruneVolumesRequest, PullImageRequest, RemoveContainerRequest, RemoveContainerResponse,
    RemoveVolumeRequest, RenameContainerRequest, ResizeContainerRequest, ResizeContainerResponse,
    StartContainerRequest, StartContainerResponse, StopContainerRequest, StopContainerResponse, VolumeRef,
    WaitContainerRequest, WaitContainerResponse,
};
use berth_agent_proto::{
    exec_input, ArchiveChunk, ExecInput, ExecOutput, InfoRequest, InfoResponse, ListImagesRequest, ListImagesResponse,
    LoadImagesResponse, MountStatus, PingRequest, PingResponse, ShareChanges, ShutdownRequest, ShutdownResponse,
    SyncClockRequest, SyncClockResponse, PROTOCOL_VERSION,
};
use berth_agent_proto::{
    CommitContainerRequest, ImportImageInput, InspectImageRequest, InspectImageResponse, PruneImagesRequest,
    RemoveImageRequest, RemoveImageResponse, SaveImagesRequest, TagImageRequest, TagImageResponse,
};
use berth_engine::docker_json;
use tokio::sync::{mpsc, Notify};

use crate::error::AgentError;
use crate::images;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::reaper::Reaper;
use crate::sysinfo;

/// A streamed answer whose items the domain produces as they come.
type Answers<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The answer stream of the items `rx` receives, each made an answer by `encode`.
fn answers<I: Send + 'static, T>(
    rx: mpsc::Receiver<I>,
    encode: impl FnMut(I) -> Result<T, Status> + Send + 'static,
) -> Answers<T> {
    Box::pin(tokio_stream::StreamExt::map(ReceiverStream::new(rx), encode))
}

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct AgentService {
    pub reaper: Reaper,
    /// What init mounted at boot (empty for a local agent).
    pub mounts: crate::Mounts,
    pub started: Instant,
    /// Notified once a Shutdown has been answered.
    pub shutdown: Arc<Notify>,
    pub images: Arc<images::ImagesSlot>,
    pub containers: Arc<crate::containers::Containers>,
    /// Whether the VM's clock is ours to keep in step with the host's (the
    /// agent is the VM's init) or the host's own (a local agent).
    pub owns_clock: bool,
    /// Whether host edits of the shares are raised here as fsnotify events
    /// (the VM's init; a local agent sees the host's own).
    pub raises_share_changes: bool,
}

/// How long an upload (`docker load`) may pause before it is abandoned.
const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn check_version(client: u32) -> Result<(), Status> {
    if client == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(AgentError::unavailable(format!(
            "protocol version mismatch: client speaks v{client}, berth-agent {AGENT_VERSION} speaks v{PROTOCOL_VERSION}"
        ))
        .into())
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
        let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<u8>>(16);
        let containers = self.containers.clone();
        let errors = tx.clone();
        tokio::spawn(async move {
            if let Err(status) = crate::archive::run(&containers, &id, op, &path, None, Some(raw_tx)).await {
                let _ = errors.send(Err(status.into())).await;
            }
        });
        tokio::spawn(async move {
            while let Some(data) = raw_rx.recv().await {
                if tx.send(Ok(ArchiveChunk { data })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
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
            _ => return Err(AgentError::invalid("the first Exec message must be `start`").into()),
        };
        if start.argv.is_empty() {
            return Err(AgentError::invalid("Exec needs a command (argv is empty)").into());
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
        let (tx, loading) = images::start_load(self.images.clone()).await?;
        // Feed the loader until the stream ends or the loader stops reading
        // (it failed early: its error is the one to report). A client that
        // stops sending without ending the upload is given up on.
        loop {
            let chunk = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, input.message()).await {
                Ok(chunk) => chunk?,
                Err(_) => {
                    return Err(AgentError::timeout(format!(
                        "the image upload sent nothing for {} s",
                        UPLOAD_IDLE_TIMEOUT.as_secs()
                    ))
                    .into())
                }
            };
            let Some(chunk) = chunk else { break };
            if tx.send(chunk.data).await.is_err() {
                break;
            }
        }
        drop(tx);
        let images = loading.await.map_err(|e| AgentError::internal(format!("image load task failed: {e}")))??;
        tracing::info!(images = images.len(), "images loaded");
        for image in &images {
            let name = image.tags.first().map(|t| berth_engine::reference::familiar(t).to_string()).unwrap_or_default();
            self.containers.events.emit("image", "load", &image.id, serde_json::json!({ "name": name }));
        }
        Ok(Response::new(LoadImagesResponse { images }))
    }

    async fn list_images(&self, _: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        Ok(Response::new(ListImagesResponse { images: images::list(&self.images).await? }))
    }

    async fn inspect_image(&self, req: Request<InspectImageRequest>) -> Result<Response<InspectImageResponse>, Status> {
        Ok(Response::new(images::inspect(&self.images, req.into_inner().name).await?))
    }

    async fn tag_image(&self, req: Request<TagImageRequest>) -> Result<Response<TagImageResponse>, Status> {
        let TagImageRequest { source, target } = req.into_inner();
        let target = images::tag(&self.images, &self.containers, source, target).await?;
        Ok(Response::new(TagImageResponse { target }))
    }

    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        let RemoveImageRequest { name, force } = req.into_inner();
        Ok(Response::new(images::remove(&self.images, &self.containers, name, force).await?))
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let CreateContainerRequest { name, config_json } = req.into_inner();
        let request = docker_json::parse(&docker_json::CONTAINER_CREATE, &config_json).map_err(AgentError::invalid)?;
        let image_name = request["Image"].as_str().unwrap_or("").to_string();
        if image_name.is_empty() {
            return Err(AgentError::invalid("config cannot be empty in order to create a container").into());
        }
        berth_engine::reference::normalize(&image_name).map_err(AgentError::invalid)?;
        let image = images::for_container(&self.images, image_name.clone()).await?;
        let id = self.containers.create(&name, request, image, image_name).await?;
        Ok(Response::new(CreateContainerResponse { id, warnings: Vec::new() }))
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let StartContainerRequest { id, published_ports, stale_share_trees } = req.into_inner();
        let ports = published_ports
            .iter()
            .map(berth_agent_proto::ports::PortBinding::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("published port: {e}")))?;
        if self.raises_share_changes {
            crate::share_changes::refresh_before_start(stale_share_trees).await;
        }
        let started = self.containers.start(&id, ports).await?;
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
            images::add_size_root_fs(&self.images, &mut value).await?;
        }
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    type ContainerLogsStream = Answers<LogEntry>;

    async fn container_logs(
        &self,
        req: Request<ContainerLogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        let entries = self.containers.logs(req.into_inner()).await?;
        Ok(Response::new(answers(entries, Ok)))
    }

    type AttachContainerStream = Answers<LogEntry>;

    async fn attach_container(
        &self,
        req: Request<Streaming<AttachInput>>,
    ) -> Result<Response<Self::AttachContainerStream>, Status> {
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(AttachInput { input: Some(attach_input::Input::Start(start)) }) => start,
            _ => return Err(AgentError::invalid("the first AttachContainer message must be `start`").into()),
        };
        let (stdin_tx, stdin_rx) = mpsc::channel(16);
        let wants_stdin = start.stdin;
        let entries = self.containers.attach(start, wants_stdin.then_some(stdin_rx)).await?;
        if wants_stdin {
            // The rest of the call is stdin: until it ends or fails, or
            // the container no longer reads it.
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        message = input.message() => match message {
                            Ok(Some(message)) => {
                                if stdin_tx.send(message).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) | Err(_) => return,
                        },
                        () = stdin_tx.closed() => return,
                    }
                }
            });
        }
        Ok(Response::new(answers(entries, Ok)))
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
        let update = docker_json::parse(&docker_json::CONTAINER_UPDATE, &update_json).map_err(AgentError::invalid)?;
        self.containers.update(&id, &update).await?;
        Ok(Response::new(JsonResponse { json: serde_json::json!({ "Warnings": [] }).to_string().into_bytes() }))
    }

    async fn top_container(&self, req: Request<ContainerRef>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.top(&req.into_inner().id).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    type ContainerStatsStream = Answers<JsonResponse>;

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<Self::ContainerStatsStream>, Status> {
        let ContainerStatsRequest { id, stream } = req.into_inner();
        let samples = self.containers.stats_samples(id, stream).await?;
        Ok(Response::new(answers(samples, |sample| Ok(JsonResponse { json: sample.to_string().into_bytes() }))))
    }

    async fn prune_containers(&self, req: Request<PruneContainersRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.prune(&req.into_inner().filters_json).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn create_volume(&self, req: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        let body =
            docker_json::parse(&docker_json::VOLUME_CREATE, &req.into_inner().json).map_err(AgentError::invalid)?;
        let value = self.containers.volumes.create(&body)?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn list_volumes(&self, req: Request<ListVolumesRequest>) -> Result<Response<JsonResponse>, Status> {
        let ListVolumesRequest { filters_json, usage } = req.into_inner();
        let value = self.containers.volumes.list(&filters_json, usage, &self.containers.records())?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn inspect_volume(&self, req: Request<VolumeRef>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.volumes.inspect(&req.into_inner().name)?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn remove_volume(&self, req: Request<RemoveVolumeRequest>) -> Result<Response<Empty>, Status> {
        let RemoveVolumeRequest { name, force } = req.into_inner();
        self.containers.volumes.remove(&name, force, &self.containers.records())?;
        Ok(Response::new(Empty {}))
    }

    async fn prune_volumes(&self, req: Request<PruneVolumesRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.volumes.prune(&req.into_inner().filters_json, &self.containers.records())?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn stat_container_path(&self, req: Request<ContainerPathRequest>) -> Result<Response<JsonResponse>, Status> {
        let ContainerPathRequest { id, path } = req.into_inner();
        let (tx, mut rx) = mpsc::channel(4);
        crate::archive::run(&self.containers, &id, "stat", &path, None, Some(tx)).await?;
        let mut json = Vec::new();
        while let Some(chunk) = rx.recv().await {
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
        crate::archive::run(&self.containers, &id, "stat", &path, None, Some(stat_tx)).await?;
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
            _ => return Err(AgentError::invalid("the first PutContainerArchive message must be `start`").into()),
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(ContainerArchiveInput { input: Some(Input::Data(data)) })) = input.message().await {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        });
        crate::archive::run(&self.containers, &start.id, "put", &start.path, Some(rx), None).await?;
        Ok(Response::new(Empty {}))
    }

    async fn container_changes(&self, req: Request<ContainerRef>) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.changes(&req.into_inner().id).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
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
        let progress = images::pull(self.images.clone(), self.containers.events.clone(), req.into_inner()).await?;
        Ok(Response::new(json_messages(progress)))
    }

    type PushImageStream = ReceiverStream<Result<JsonResponse, Status>>;

    async fn push_image(
        &self,
        req: Request<berth_agent_proto::PushImageRequest>,
    ) -> Result<Response<Self::PushImageStream>, Status> {
        let progress = images::push(self.images.clone(), self.containers.events.clone(), req.into_inner()).await?;
        Ok(Response::new(json_messages(progress)))
    }

    type SaveImagesStream = Answers<ArchiveChunk>;

    async fn save_images(&self, req: Request<SaveImagesRequest>) -> Result<Response<Self::SaveImagesStream>, Status> {
        let chunks = images::save(self.images.clone(), req.into_inner().names).await?;
        Ok(Response::new(answers(chunks, |chunk| chunk.map(|data| ArchiveChunk { data }).map_err(Status::from))))
    }

    async fn image_history(&self, req: Request<InspectImageRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = images::history(&self.images, req.into_inner().name).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn prune_images(&self, req: Request<PruneImagesRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = images::prune(self.images.clone(), &self.containers, &req.into_inner().filters_json).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn commit_container(&self, req: Request<CommitContainerRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = images::commit(self.images.clone(), &self.containers, req.into_inner()).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn import_image(&self, req: Request<Streaming<ImportImageInput>>) -> Result<Response<JsonResponse>, Status> {
        use berth_agent_proto::import_image_input::Input;
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(ImportImageInput { input: Some(Input::Start(start)) }) => start,
            _ => return Err(AgentError::invalid("the first ImportImage message must be `start`").into()),
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
        let result = images::import(self.images.clone(), &self.containers, start, rx).await;
        // A broken upload is the error to report, not what the importer made of it.
        if let Ok(Err(status)) = feeding.await {
            return Err(status);
        }
        Ok(Response::new(JsonResponse { json: result?.to_string().into_bytes() }))
    }

    async fn inspect_distribution(&self, req: Request<PullImageRequest>) -> Result<Response<JsonResponse>, Status> {
        let value = images::inspect_distribution(req.into_inner()).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    type EventsStream = ReceiverStream<Result<JsonResponse, Status>>;

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let EventsRequest { since_ns, until_ns, filters_json } = req.into_inner();
        let filters = crate::events::EventFilters::parse(&filters_json).map_err(AgentError::invalid)?;
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

    async fn sync_clock(&self, req: Request<SyncClockRequest>) -> Result<Response<SyncClockResponse>, Status> {
        if !self.owns_clock {
            return Err(AgentError::unavailable("a local agent runs on the host's clock; it does not set it").into());
        }
        let guest_unix_nanos = crate::clock::now_ns();
        let offset = req.get_ref().correct_by_nanos;
        let correction = tokio::task::spawn_blocking(move || crate::clock::correct(offset))
            .await
            .map_err(|err| AgentError::internal(format!("clock task: {err}")))?
            .map_err(|err| AgentError::internal(format!("setting the clock: {err}")))?;
        if correction != crate::clock::Correction::None {
            tracing::info!(offset_ms = offset / 1_000_000, correction = correction.name(), "clock follows the host");
        }
        Ok(Response::new(SyncClockResponse { guest_unix_nanos, correction: correction.name().into() }))
    }

    // Host file changes (share_changes.rs).

    async fn share_changed(&self, req: Request<Streaming<ShareChanges>>) -> Result<Response<Empty>, Status> {
        if !self.raises_share_changes {
            return Err(Status::unimplemented("a local agent sees the host's own file events"));
        }
        crate::share_changes::serve(req.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    // Container networks (containers/networks.rs, engine net/).

    async fn create_network(&self, req: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        let body =
            docker_json::parse(&docker_json::NETWORK_CREATE, &req.into_inner().json).map_err(AgentError::invalid)?;
        let networks = self.containers.networks().await?;
        let value = tokio::task::spawn_blocking(move || networks.create(&body)).await.map_err(AgentError::from)?;
        let value = value.map_err(AgentError::from)?;
        let id = value["Id"].as_str().unwrap_or("").to_string();
        self.containers.events.emit("network", "create", &id, serde_json::json!({"type": "bridge"}));
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn list_networks(
        &self,
        req: Request<berth_agent_proto::ListNetworksRequest>,
    ) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.networks().await?.list(&req.into_inner().filters_json).map_err(AgentError::from)?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn inspect_network(
        &self,
        req: Request<berth_agent_proto::NetworkRef>,
    ) -> Result<Response<JsonResponse>, Status> {
        let value = self.containers.networks().await?.inspect(&req.into_inner().network).map_err(AgentError::from)?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn remove_network(&self, req: Request<berth_agent_proto::NetworkRef>) -> Result<Response<Empty>, Status> {
        let networks = self.containers.networks().await?;
        let key = req.into_inner().network;
        let (id, name) = networks.resolve(&key).map_err(AgentError::from)?;
        tokio::task::spawn_blocking(move || networks.remove(&key))
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?;
        self.containers.events.emit("network", "destroy", &id, serde_json::json!({"name": name, "type": "bridge"}));
        Ok(Response::new(Empty {}))
    }

    async fn connect_network(
        &self,
        req: Request<berth_agent_proto::ConnectNetworkRequest>,
    ) -> Result<Response<Empty>, Status> {
        let berth_agent_proto::ConnectNetworkRequest { network, container, endpoint_config_json } = req.into_inner();
        let settings = if endpoint_config_json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&endpoint_config_json).map_err(|e| AgentError::invalid(e.to_string()))?
        };
        self.containers.connect_network(&network, &container, settings).await?;
        Ok(Response::new(Empty {}))
    }

    async fn disconnect_network(
        &self,
        req: Request<berth_agent_proto::DisconnectNetworkRequest>,
    ) -> Result<Response<Empty>, Status> {
        let berth_agent_proto::DisconnectNetworkRequest { network, container, force } = req.into_inner();
        self.containers.disconnect_network(&network, &container, force).await?;
        Ok(Response::new(Empty {}))
    }

    async fn prune_networks(
        &self,
        req: Request<berth_agent_proto::PruneNetworksRequest>,
    ) -> Result<Response<JsonResponse>, Status> {
        let networks = self.containers.networks().await?;
        let filters = req.into_inner().filters_json;
        let now = berth_agent_proto::time::now_ns();
        let value = tokio::task::spawn_blocking(move || networks.prune(&filters, now))
            .await
            .map_err(AgentError::from)?
            .map_err(AgentError::from)?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    async fn remove_link(&self, req: Request<berth_agent_proto::RemoveLinkRequest>) -> Result<Response<Empty>, Status> {
        let berth_agent_proto::RemoveLinkRequest { parent, alias } = req.into_inner();
        self.containers.remove_link(&parent, &alias).await?;
        Ok(Response::new(Empty {}))
    }

    // ---- build ----

    async fn prune_build_cache(
        &self,
        req: Request<berth_agent_proto::PruneBuildCacheRequest>,
    ) -> Result<Response<JsonResponse>, Status> {
        let builder = crate::build::Builder { images: self.images.clone(), containers: self.containers.clone() };
        let value = crate::build::prune(&builder, req.into_inner().until).await?;
        Ok(Response::new(JsonResponse { json: value.to_string().into_bytes() }))
    }

    type BuildImageStream = Answers<JsonResponse>;

    async fn build_image(
        &self,
        req: Request<Streaming<berth_agent_proto::BuildInput>>,
    ) -> Result<Response<Self::BuildImageStream>, Status> {
        use berth_agent_proto::build_input::Kind;
        let mut input = req.into_inner();
        let options = match input.message().await?.and_then(|m| m.kind) {
            Some(Kind::OptionsJson(json)) => serde_json::from_str::<berth_agent_proto::build::BuildOptions>(&json)
                .map_err(|e| AgentError::invalid(format!("invalid build options: {e}")))?,
            _ => return Err(AgentError::invalid("a build starts with its options").into()),
        };
        let (tx, rx) = mpsc::channel(16);
        // The context arrives while the build reads it; a client that
        // pauses for two minutes is given up on (the reader sees an end).
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, input.message()).await {
                    Ok(Ok(Some(berth_agent_proto::BuildInput { kind: Some(Kind::Context(data)) }))) => {
                        if tx.send(data).await.is_err() {
                            return;
                        }
                    }
                    Ok(Ok(Some(_))) => continue,
                    _ => return,
                }
            }
        });
        let builder = crate::build::Builder { images: self.images.clone(), containers: self.containers.clone() };
        let messages = crate::build::build(builder, options, rx).await?;
        Ok(Response::new(answers(messages, |message| Ok(JsonResponse { json: message.to_string().into_bytes() }))))
    }

    async fn shutdown(&self, _: Request<ShutdownRequest>) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!(uptime_ms = self.started.elapsed().as_millis() as u64, "shutdown requested");
        // Detached: a host that stops waiting (or a dropped connection)
        // cancels this handler, and must not leave the VM half shut down.
        let (containers, shutdown) = (self.containers.clone(), self.shutdown.clone());
        let stopping = tokio::spawn(async move {
            containers.stop_all(5).await;
            containers.release_network_root().await;
            shutdown.notify_one();
        });
        let _ = stopping.await;
        Ok(Response::new(ShutdownResponse {}))
    }
}

/// A pull's or push's progress messages as the RPC's stream; ends early
/// when the client goes away.
fn json_messages(
    mut progress: mpsc::UnboundedReceiver<serde_json::Value>,
) -> ReceiverStream<Result<JsonResponse, Status>> {
    let (out_tx, out_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(message) = progress.recv().await {
            if out_tx.send(Ok(JsonResponse { json: message.to_string().into_bytes() })).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(out_rx)
}
