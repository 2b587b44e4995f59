//! `/containers/*`: forwarded to the agent's container engine.
//!
//! Docker's JSON (create body, inspect and list entries) passes through as
//! the engine produced it; this layer turns queries into agent requests and
//! agent replies into Docker's statuses and bodies. Attach streams are served
//! by `hijack`; the routes are in `router`.

use std::sync::Arc;

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{
    attach_input, AttachInput, AttachStart, ContainerLogsRequest, ContainerRef, CreateContainerRequest,
    KillContainerRequest, ListContainersRequest, LogEntry, RemoveContainerRequest, ResizeContainerRequest,
    StartContainerRequest, StopContainerRequest, WaitContainerRequest, WindowSize,
};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tonic::transport::Channel;

use super::binds::BindSources;
use super::body::{channel_body, json_lines, read_json_body, stream_body, tar_body, MAX_JSON_BODY};
use super::hijack::{frame, hijack, parse_detach_keys, stdin_into, websocket, websocket_accept_key, Hijack};
use super::http::{agent_error, agent_json, empty, error, flag, json_response, query_param, time_param, Body};
use crate::ports::Publisher;
use crate::share_watch::ShareWatch;

/// Create bodies larger than this are refused (Docker's configs are a few KiB).
const MAX_CREATE_BODY: usize = MAX_JSON_BODY;

/// Docker's path-stat header: base64 of the stat JSON.
fn path_stat_header(json: &[u8]) -> HeaderValue {
    use base64::Engine;
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json))
        .unwrap_or(HeaderValue::from_static(""))
}

/// `docker cp CONTAINER:PATH ...`: HEAD for the stat, GET for the tar.
pub(super) async fn get_archive(
    id: &str,
    query: Option<&str>,
    head_only: bool,
    mut agent: AgentClient<Channel>,
) -> Response<Body> {
    let Some(path) = query_param(query, "path").filter(|p| !p.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "path is required");
    };
    let request = berth_agent_proto::ContainerPathRequest { id: id.to_string(), path: path.clone() };
    let stat = match agent.stat_container_path(request.clone()).await {
        Ok(reply) => reply.into_inner().json,
        Err(status) => return agent_error(status),
    };
    let mut response = if head_only {
        empty(StatusCode::OK)
    } else {
        match agent.get_container_archive(request).await {
            Ok(reply) => Response::new(tar_body(reply.into_inner())),
            Err(status) => return agent_error(status),
        }
    };
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    response.headers_mut().insert("X-Docker-Container-Path-Stat", path_stat_header(&stat));
    response
}

/// `docker cp ... CONTAINER:DIR`: the body is a tar extracted into DIR.
pub(super) async fn put_archive(
    req: Request<Incoming>,
    id: &str,
    query: Option<&str>,
    mut agent: AgentClient<Channel>,
) -> Response<Body> {
    use berth_agent_proto::{container_archive_input::Input, ContainerArchiveInput, ContainerPathRequest};
    let Some(path) = query_param(query, "path").filter(|p| !p.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "path is required");
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<ContainerArchiveInput>(16);
    let start = ContainerPathRequest { id: id.to_string(), path };
    let _ = tx.send(ContainerArchiveInput { input: Some(Input::Start(start)) }).await;
    let upload =
        super::body::forward_body(req.into_body(), tx, |data| ContainerArchiveInput { input: Some(Input::Data(data)) });
    let result = agent.put_container_archive(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let _ = upload.await;
    match result {
        Ok(_) => empty(StatusCode::OK),
        Err(status) => agent_error(status),
    }
}

pub(super) async fn export(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    match agent.export_container(ContainerRef { id: id.to_string() }).await {
        Ok(reply) => {
            let mut response = Response::new(tar_body(reply.into_inner()));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
            response
        }
        Err(status) => agent_error(status),
    }
}

/// 204 for a call that answers nothing.
fn unit<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Response<Body> {
    match result {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

pub(super) async fn pause(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    unit(agent.pause_container(ContainerRef { id: id.to_string() }).await)
}

pub(super) async fn unpause(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    unit(agent.unpause_container(ContainerRef { id: id.to_string() }).await)
}

/// `docker top`: the agent answers Docker's `{"Titles", "Processes"}`.
pub(super) async fn top(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    agent_json(agent.top_container(ContainerRef { id: id.to_string() }).await)
}

/// `docker diff`.
pub(super) async fn changes(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    agent_json(agent.container_changes(ContainerRef { id: id.to_string() }).await)
}

pub(super) async fn rename(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let Some(name) = query_param(query, "name").filter(|n| !n.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "Neither old nor new names may be empty");
    };
    unit(agent.rename_container(berth_agent_proto::RenameContainerRequest { id: id.to_string(), name }).await)
}

pub(super) async fn prune(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request =
        berth_agent_proto::PruneContainersRequest { filters_json: query_param(query, "filters").unwrap_or_default() };
    agent_json(agent.prune_containers(request).await)
}

/// One JSON document per line, streamed (`stream=1`, the default) or one.
pub(super) async fn stats(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let stream = query_param(query, "stream").is_none_or(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let request = berth_agent_proto::ContainerStatsRequest { id: id.to_string(), stream };
    match agent.container_stats(request).await {
        Ok(reply) => json_lines(reply.into_inner(), b"\n"),
        Err(status) => agent_error(status),
    }
}

/// `docker update`: the agent answers Docker's `{"Warnings": [...]}`.
pub(super) async fn update(mut req: Request<Incoming>, id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    let body = match read_json_body(&mut req, MAX_CREATE_BODY, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = berth_agent_proto::UpdateContainerRequest { id: id.to_string(), update_json: body.to_vec() };
    agent_json(agent.update_container(request).await)
}

pub(super) async fn create(
    mut req: Request<Incoming>,
    query: Option<&str>,
    bind_sources: &BindSources,
    mut agent: AgentClient<Channel>,
) -> Response<Body> {
    let name = query_param(query, "name").unwrap_or_default();
    let body = match read_json_body(&mut req, MAX_CREATE_BODY, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    // `-v C:\x:/x` from a Windows CLI names /mnt/c/x in the engine.
    let body = match super::host_paths::HostPaths::of_this_host().create_body(&body) {
        Some(translated) => translated.into(),
        None => body,
    };
    if let Err(message) = bind_sources.check_create(&body) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    match agent.create_container(CreateContainerRequest { name, config_json: body.to_vec() }).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            json_response(StatusCode::CREATED, json!({ "Id": reply.id, "Warnings": reply.warnings }))
        }
        Err(status) => agent_error(status),
    }
}

pub(super) async fn list(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let limit = query_param(query, "limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(0).max(0) as u32;
    let request = ListContainersRequest {
        all: flag(query, "all"),
        filters_json: query_param(query, "filters").unwrap_or_default(),
        limit,
        size: flag(query, "size"),
    };
    agent_json(agent.list_containers(request).await)
}

pub(super) async fn inspect(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    agent_json(agent.inspect_container(ContainerRef { id: id.to_string() }).await)
}

/// Binds the container's published ports (a taken one fails the start, as
/// in dockerd) and watches its bind sources on the host (share_watch/),
/// then starts it with them.
pub(super) async fn start(
    id: &str,
    mut agent: AgentClient<Channel>,
    ports: &Arc<Publisher>,
    shares: Option<&ShareWatch>,
) -> Response<Body> {
    let container = match agent.inspect_container(ContainerRef { id: id.to_string() }).await {
        Ok(reply) => serde_json::from_slice::<serde_json::Value>(&reply.into_inner().json).unwrap_or_default(),
        Err(status) => return agent_error(status),
    };
    // Running (or paused): the agent answers 304 (or 409); nothing to bind.
    let claim = if container["State"]["Running"] == true {
        None
    } else {
        match ports.publish(&container).await {
            Ok(claim) => Some(claim),
            Err(message) => return error(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    };
    let stale_share_trees = match (shares, &claim) {
        (Some(shares), Some(_)) => shares.cover(&container).await,
        _ => Vec::new(),
    };
    let request = StartContainerRequest {
        id: claim.as_ref().map_or_else(|| id.to_string(), |c| c.id.clone()),
        published_ports: claim.iter().flat_map(|c| &c.bindings).map(|b| (*b).into()).collect(),
        stale_share_trees,
    };
    let result = agent.start_container(request).await;
    if let Some(claim) = claim {
        let started = matches!(&result, Ok(reply) if !reply.get_ref().already_started);
        ports.started(claim, agent.clone(), started).await;
    }
    match result {
        Ok(reply) if reply.get_ref().already_started => empty(StatusCode::NOT_MODIFIED),
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

/// The full ID of container `id` while it has published sockets (stop and
/// remove close them before answering).
async fn with_ports(id: &str, agent: &mut AgentClient<Channel>, ports: &Publisher) -> Option<String> {
    if ports.is_empty() {
        return None;
    }
    let reply = agent.inspect_container(ContainerRef { id: id.to_string() }).await.ok()?;
    let container: serde_json::Value = serde_json::from_slice(&reply.into_inner().json).ok()?;
    container["Id"].as_str().map(str::to_string)
}

fn stop_request(id: &str, query: Option<&str>) -> Result<StopContainerRequest, String> {
    let timeout = match query_param(query, "t").or_else(|| query_param(query, "timeout")) {
        Some(t) => Some(t.parse::<i32>().map_err(|_| format!("invalid timeout {t:?}"))?),
        None => None,
    };
    Ok(StopContainerRequest {
        id: id.to_string(),
        timeout_secs: timeout,
        signal: query_param(query, "signal").unwrap_or_default(),
    })
}

pub(super) async fn stop(
    id: &str,
    query: Option<&str>,
    mut agent: AgentClient<Channel>,
    ports: &Publisher,
) -> Response<Body> {
    let request = match stop_request(id, query) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let published = with_ports(id, &mut agent, ports).await;
    let stopped = agent.stop_container(request).await;
    if let (Some(full_id), Ok(_)) = (published, &stopped) {
        ports.release(&full_id, None).await;
    }
    match stopped {
        Ok(reply) if reply.get_ref().already_stopped => empty(StatusCode::NOT_MODIFIED),
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

pub(super) async fn restart(
    id: &str,
    query: Option<&str>,
    mut agent: AgentClient<Channel>,
    ports: &Arc<Publisher>,
    shares: Option<&ShareWatch>,
) -> Response<Body> {
    let request = match stop_request(id, query) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let published = with_ports(id, &mut agent, ports).await;
    if let Err(status) = agent.stop_container(request).await {
        return agent_error(status);
    }
    if let Some(full_id) = published {
        ports.release(&full_id, None).await;
    }
    match start(id, agent, ports, shares).await {
        response if response.status() == StatusCode::NOT_MODIFIED => empty(StatusCode::NO_CONTENT),
        response => response,
    }
}

pub(super) async fn kill(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = KillContainerRequest { id: id.to_string(), signal: query_param(query, "signal").unwrap_or_default() };
    match agent.kill_container(request).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

/// Headers go out as soon as the waiter is registered (the docker CLI
/// starts the container only after that); the body when the wait ends.
pub(super) async fn wait(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request =
        WaitContainerRequest { id: id.to_string(), condition: query_param(query, "condition").unwrap_or_default() };
    let mut stream = match agent.wait_container(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return agent_error(status),
    };
    match stream.message().await {
        Ok(Some(first)) if first.registered => {}
        Ok(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the engine ended the wait early"),
        Err(status) => return agent_error(status),
    }
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        // A client that gives up waiting ends the agent's wait too.
        let message = tokio::select! {
            message = stream.message() => message,
            () = tx.closed() => return,
        };
        let result = match message {
            Ok(Some(done)) => {
                let error =
                    if done.error.is_empty() { serde_json::Value::Null } else { json!({ "Message": done.error }) };
                json!({ "StatusCode": done.status_code, "Error": error })
            }
            Ok(None) => json!({ "StatusCode": -1, "Error": { "Message": "the wait was interrupted" } }),
            Err(status) => json!({ "StatusCode": -1, "Error": { "Message": status.message() } }),
        };
        let _ = tx.send(Bytes::from(format!("{result}\n"))).await;
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) async fn remove(
    id: &str,
    query: Option<&str>,
    mut agent: AgentClient<Channel>,
    ports: &Publisher,
) -> Response<Body> {
    let request =
        RemoveContainerRequest { id: id.to_string(), force: flag(query, "force"), remove_volumes: flag(query, "v") };
    let published = with_ports(id, &mut agent, ports).await;
    let removed = agent.remove_container(request).await;
    if let (Some(full_id), Ok(_)) = (published, &removed) {
        ports.release(&full_id, None).await;
    }
    match removed {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

pub(super) async fn resize(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let dim = |name: &str| query_param(query, name).and_then(|v| v.parse::<u32>().ok());
    let (Some(rows), Some(cols)) = (dim("h"), dim("w")) else {
        return error(StatusCode::BAD_REQUEST, "resize needs numeric h and w");
    };
    let request = ResizeContainerRequest { id: id.to_string(), size: Some(WindowSize { rows, cols }) };
    match agent.resize_container(request).await {
        Ok(_) => empty(StatusCode::OK),
        Err(status) => agent_error(status),
    }
}

/// Whether the container has a terminal (its streams are then raw, not framed).
async fn has_tty(id: &str, agent: &mut AgentClient<Channel>) -> Result<bool, Response<Body>> {
    let reply = agent.inspect_container(ContainerRef { id: id.to_string() }).await.map_err(agent_error)?;
    let value: serde_json::Value = serde_json::from_slice(&reply.into_inner().json).unwrap_or_default();
    Ok(value["Config"]["Tty"].as_bool().unwrap_or(false))
}

/// Docker's log timestamp prefix (RFC 3339 with nanoseconds).
fn with_timestamp(entry: &LogEntry) -> Vec<u8> {
    let mut out = berth_agent_proto::time::rfc3339(entry.time_ns).into_bytes();
    out.push(b' ');
    out.extend_from_slice(&entry.data);
    out
}

pub(super) async fn logs(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let (stdout, stderr) = (flag(query, "stdout"), flag(query, "stderr"));
    if !stdout && !stderr {
        return error(StatusCode::BAD_REQUEST, "Bad parameters: you must choose at least one stream");
    }
    let tty = match has_tty(id, &mut agent).await {
        Ok(tty) => tty,
        Err(response) => return response,
    };
    let (since_ns, until_ns) = match (time_param(query, "since"), time_param(query, "until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(message), _) | (_, Err(message)) => return error(StatusCode::BAD_REQUEST, message),
    };
    let tail = match query_param(query, "tail").as_deref() {
        None | Some("") | Some("all") => -1,
        Some(n) => match n.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return error(StatusCode::BAD_REQUEST, format!("invalid tail value {n:?}")),
        },
    };
    let request = ContainerLogsRequest {
        id: id.to_string(),
        stdout,
        stderr,
        follow: flag(query, "follow"),
        since_ns,
        until_ns,
        tail,
    };
    let timestamps = flag(query, "timestamps");
    let stream = match agent.container_logs(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return agent_error(status),
    };
    let body = stream_body(stream, move |entry| {
        let data = if timestamps { with_timestamp(&entry) } else { entry.data.clone() };
        if tty {
            Bytes::from(data)
        } else {
            frame(entry.stream as u8, &data)
        }
    });
    let mut response = Response::new(body);
    let kind = if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// `docker attach` and the attach half of `docker run`.
pub(super) async fn attach(
    mut req: Request<Incoming>,
    id: &str,
    query: Option<&str>,
    agent: AgentClient<Channel>,
) -> Response<Body> {
    match open_attach(id, query, agent).await {
        Ok(streams) => hijack(&mut req, streams),
        Err(response) => response,
    }
}

/// `GET /containers/{id}/attach/ws`: the same streams over a websocket.
pub(super) async fn attach_websocket(
    mut req: Request<Incoming>,
    id: &str,
    query: Option<&str>,
    agent: AgentClient<Channel>,
) -> Response<Body> {
    let Some(accept_key) = websocket_accept_key(&req) else {
        return error(StatusCode::BAD_REQUEST, "attach/ws needs a websocket upgrade request");
    };
    match open_attach(id, query, agent).await {
        Ok(streams) => websocket(&mut req, accept_key, streams),
        Err(response) => response,
    }
}

/// The agent's attach call for a client's query, as the streams to serve.
async fn open_attach(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Result<Hijack, Response<Body>> {
    let detach_keys = parse_detach_keys(&query_param(query, "detachKeys").unwrap_or_default())
        .map_err(|message| error(StatusCode::BAD_REQUEST, message))?;
    let tty = has_tty(id, &mut agent).await?;
    let wants_stdin = flag(query, "stdin");
    let start = AttachStart {
        id: id.to_string(),
        stdin: wants_stdin,
        stdout: flag(query, "stdout"),
        stderr: flag(query, "stderr"),
        logs: flag(query, "logs"),
    };
    let (input_tx, input_rx) = tokio::sync::mpsc::channel::<AttachInput>(32);
    let _ = input_tx.send(AttachInput { input: Some(attach_input::Input::Start(start)) }).await;
    // The engine has placed its cursor once this answers: output from a
    // start that follows is not missed.
    let mut output = agent
        .attach_container(tokio_stream::wrappers::ReceiverStream::new(input_rx))
        .await
        .map_err(agent_error)?
        .into_inner();
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(32);
    tokio::spawn(async move {
        loop {
            // The connection ending drops the receiver: end the agent's
            // attach then, not at the container's next output.
            let entry = tokio::select! {
                entry = output.message() => entry,
                () = out_tx.closed() => return,
            };
            let Ok(Some(entry)) = entry else { return };
            if out_tx.send((entry.stream as u8, Bytes::from(entry.data))).await.is_err() {
                return;
            }
        }
    });
    let stdin = wants_stdin.then(|| {
        stdin_into(input_tx, |chunk| AttachInput {
            input: Some(match chunk {
                Some(data) => attach_input::Input::Stdin(data),
                None => attach_input::Input::CloseStdin(true),
            }),
        })
    });
    Ok(Hijack { tty, output: out_rx, stdin, detach_keys, started: None })
}
