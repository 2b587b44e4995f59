//! `/containers/*`: forwarded to the agent's container engine.
//!
//! Docker's JSON (create body, inspect and list entries) passes through as
//! the engine produced it; this layer handles HTTP: query parameters, status
//! codes, streamed bodies, the 8-byte stream framing and hijacked
//! connections for attach.

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{
    attach_input, AttachInput, AttachStart, ContainerLogsRequest, ContainerRef, CreateContainerRequest,
    KillContainerRequest, ListContainersRequest, LogEntry, RemoveContainerRequest, ResizeContainerRequest,
    StopContainerRequest, WaitContainerRequest, WindowSize,
};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use super::{agent_error, channel_body, error, full, json_response, query_param, ApiContext, Body};

/// Create bodies larger than this are refused (Docker's configs are a few KiB).
const MAX_CREATE_BODY: usize = super::MAX_JSON_BODY;

pub fn flag(query: Option<&str>, name: &str) -> bool {
    query_param(query, name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Routes `/containers/...`; `None` for paths this module does not serve.
pub async fn route(req: Request<Incoming>, path: &str, ctx: &ApiContext) -> Option<Response<Body>> {
    let agent = ctx.agent.clone();
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    let rest = &path["/containers/".len()..];
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    let id = super::percent_decode(id);
    Some(match (&method, id.as_str(), action) {
        (&Method::POST, "create", "") => create(req, query, &ctx.facts.bind_sources, agent).await,
        (&Method::GET, "json", "") => list(query, agent).await,
        (&Method::GET, _, "json") => inspect(&id, agent).await,
        (&Method::POST, _, "start") => start(&id, agent).await,
        (&Method::POST, _, "stop") => stop(&id, query, agent).await,
        (&Method::POST, _, "restart") => restart(&id, query, agent).await,
        (&Method::POST, _, "kill") => kill(&id, query, agent).await,
        (&Method::POST, _, "wait") => wait(&id, query, agent).await,
        (&Method::DELETE, _, "") => remove(&id, query, agent).await,
        (&Method::GET, _, "logs") => logs(&id, query, agent).await,
        (&Method::POST, _, "attach") => attach(req, &id, query, agent).await,
        (&Method::GET, _, "attach/ws") => attach_websocket(req, &id, query, agent).await,
        (&Method::POST, _, "resize") => resize(&id, query, agent).await,
        (&Method::POST, _, "exec") => super::exec::create(req, &id, ctx).await,
        (&Method::POST, "prune", "") => prune(query, agent).await,
        (&Method::POST, _, "pause") => unit(agent.clone().pause_container(ContainerRef { id: id.clone() }).await),
        (&Method::POST, _, "unpause") => unit(agent.clone().unpause_container(ContainerRef { id: id.clone() }).await),
        (&Method::POST, _, "rename") => rename(&id, query, agent).await,
        (&Method::POST, _, "update") => update(req, &id, agent).await,
        (&Method::GET, _, "top") => match agent.clone().top_container(ContainerRef { id: id.clone() }).await {
            Ok(reply) => raw_json(reply.into_inner().json),
            Err(status) => agent_error(status),
        },
        (&Method::GET, _, "stats") => stats(&id, query, agent).await,
        (&Method::HEAD | &Method::GET, _, "archive") => get_archive(&id, query, method == Method::HEAD, agent).await,
        (&Method::PUT, _, "archive") => put_archive(req, &id, query, agent).await,
        (&Method::GET, _, "export") => export(&id, agent).await,
        (&Method::GET, _, "changes") => match agent.clone().container_changes(ContainerRef { id: id.clone() }).await {
            Ok(reply) => raw_json(reply.into_inner().json),
            Err(status) => agent_error(status),
        },
        _ => return None,
    })
}

/// Docker's path-stat header: base64 of the stat JSON.
fn path_stat_header(json: &[u8]) -> HeaderValue {
    use base64::Engine;
    HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(json))
        .unwrap_or(HeaderValue::from_static(""))
}

/// `docker cp CONTAINER:PATH ...`: HEAD for the stat, GET for the tar.
async fn get_archive(
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
            Ok(reply) => Response::new(super::tar_body(reply.into_inner())),
            Err(status) => return agent_error(status),
        }
    };
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    response.headers_mut().insert("X-Docker-Container-Path-Stat", path_stat_header(&stat));
    response
}

/// `docker cp ... CONTAINER:DIR`: the body is a tar extracted into DIR.
async fn put_archive(
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
        super::forward_body(req.into_body(), tx, |data| ContainerArchiveInput { input: Some(Input::Data(data)) });
    let result = agent.put_container_archive(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let _ = upload.await;
    match result {
        Ok(_) => empty(StatusCode::OK),
        Err(status) => agent_error(status),
    }
}

async fn export(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    match agent.export_container(ContainerRef { id: id.to_string() }).await {
        Ok(reply) => {
            let mut response = Response::new(super::tar_body(reply.into_inner()));
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

async fn rename(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let Some(name) = query_param(query, "name").filter(|n| !n.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "Neither old nor new names may be empty");
    };
    unit(agent.rename_container(berth_agent_proto::RenameContainerRequest { id: id.to_string(), name }).await)
}

async fn prune(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request =
        berth_agent_proto::PruneContainersRequest { filters_json: query_param(query, "filters").unwrap_or_default() };
    match agent.prune_containers(request).await {
        Ok(reply) => raw_json(reply.into_inner().json),
        Err(status) => agent_error(status),
    }
}

/// One JSON document per line, streamed (`stream=1`, the default) or one.
async fn stats(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let stream = query_param(query, "stream").is_none_or(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let request = berth_agent_proto::ContainerStatsRequest { id: id.to_string(), stream };
    match agent.container_stats(request).await {
        Ok(reply) => super::json_lines(reply.into_inner(), b"\n"),
        Err(status) => agent_error(status),
    }
}

/// `docker update`: the agent answers Docker's `{"Warnings": [...]}`.
async fn update(mut req: Request<Incoming>, id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    let body = match super::read_json_body(&mut req, MAX_CREATE_BODY, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = berth_agent_proto::UpdateContainerRequest { id: id.to_string(), update_json: body.to_vec() };
    match agent.update_container(request).await {
        Ok(reply) => raw_json(reply.into_inner().json),
        Err(status) => agent_error(status),
    }
}

async fn create(
    mut req: Request<Incoming>,
    query: Option<&str>,
    bind_sources: &super::binds::BindSources,
    mut agent: AgentClient<Channel>,
) -> Response<Body> {
    let name = query_param(query, "name").unwrap_or_default();
    let body = match super::read_json_body(&mut req, MAX_CREATE_BODY, false).await {
        Ok(body) => body,
        Err(response) => return response,
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

async fn list(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let limit = query_param(query, "limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(0).max(0) as u32;
    let request = ListContainersRequest {
        all: flag(query, "all"),
        filters_json: query_param(query, "filters").unwrap_or_default(),
        limit,
        size: flag(query, "size"),
    };
    match agent.list_containers(request).await {
        Ok(reply) => raw_json(reply.into_inner().json),
        Err(status) => agent_error(status),
    }
}

pub fn raw_json(bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn inspect(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    match agent.inspect_container(ContainerRef { id: id.to_string() }).await {
        Ok(reply) => raw_json(reply.into_inner().json),
        Err(status) => agent_error(status),
    }
}

async fn start(id: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    match agent.start_container(ContainerRef { id: id.to_string() }).await {
        Ok(reply) if reply.get_ref().already_started => empty(StatusCode::NOT_MODIFIED),
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

fn stop_request(id: &str, query: Option<&str>) -> Result<StopContainerRequest, Response<Body>> {
    let timeout = match query_param(query, "t").or_else(|| query_param(query, "timeout")) {
        Some(t) => {
            Some(t.parse::<i32>().map_err(|_| error(StatusCode::BAD_REQUEST, format!("invalid timeout {t:?}")))?)
        }
        None => None,
    };
    Ok(StopContainerRequest {
        id: id.to_string(),
        timeout_secs: timeout,
        signal: query_param(query, "signal").unwrap_or_default(),
    })
}

async fn stop(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = match stop_request(id, query) {
        Ok(r) => r,
        Err(response) => return response,
    };
    match agent.stop_container(request).await {
        Ok(reply) if reply.get_ref().already_stopped => empty(StatusCode::NOT_MODIFIED),
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

async fn restart(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = match stop_request(id, query) {
        Ok(r) => r,
        Err(response) => return response,
    };
    if let Err(status) = agent.stop_container(request).await {
        return agent_error(status);
    }
    match agent.start_container(ContainerRef { id: id.to_string() }).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

async fn kill(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = KillContainerRequest { id: id.to_string(), signal: query_param(query, "signal").unwrap_or_default() };
    match agent.kill_container(request).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

/// Headers go out as soon as the waiter is registered (the docker CLI
/// starts the container only after that); the body when the wait ends.
async fn wait(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
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

async fn remove(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request =
        RemoveContainerRequest { id: id.to_string(), force: flag(query, "force"), remove_volumes: flag(query, "v") };
    match agent.remove_container(request).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

async fn resize(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
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

/// Docker's stream framing: [stream, 0, 0, 0, big-endian length] + data.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

/// Docker's log timestamp prefix (RFC 3339 with nanoseconds).
fn with_timestamp(entry: &LogEntry) -> Vec<u8> {
    let mut out = berth_agent_proto::time::rfc3339(entry.time_ns).into_bytes();
    out.push(b' ');
    out.extend_from_slice(&entry.data);
    out
}

/// "since"/"until": Unix seconds with optional fraction, as the CLI sends.
pub fn unix_ns(text: &str) -> Option<i64> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let frac = format!("{frac:0<9}");
    let nanos: i64 = frac.get(..9)?.parse().ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

async fn logs(id: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let (stdout, stderr) = (flag(query, "stdout"), flag(query, "stderr"));
    if !stdout && !stderr {
        return error(StatusCode::BAD_REQUEST, "Bad parameters: you must choose at least one stream");
    }
    let tty = match has_tty(id, &mut agent).await {
        Ok(tty) => tty,
        Err(response) => return response,
    };
    let time = |name: &str| match query_param(query, name).filter(|v| !v.is_empty()) {
        Some(v) => unix_ns(&v).ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("invalid {name} value {v:?}"))),
        None => Ok(0),
    };
    let (since_ns, until_ns) = match (time("since"), time("until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(r), _) | (_, Err(r)) => return r,
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
    let body = super::stream_body(stream, move |entry| {
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
async fn attach(
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
async fn attach_websocket(
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

/// A sender for `Hijack::stdin` that feeds the agent's request stream,
/// each chunk (or the end, `None`) wrapped into the call's input message.
pub fn stdin_into<T: Send + 'static>(
    agent_input: tokio::sync::mpsc::Sender<T>,
    wrap: impl Fn(Option<Vec<u8>>) -> T + Send + 'static,
) -> tokio::sync::mpsc::Sender<Option<Vec<u8>>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(32);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if agent_input.send(wrap(chunk)).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// The two directions of an attach or exec stream.
pub struct Hijack {
    /// The container never allocated a terminal: frame the output.
    pub tty: bool,
    /// (stream number, bytes) until the process is done.
    pub output: tokio::sync::mpsc::Receiver<(u8, Bytes)>,
    /// Where the client's input goes; `None` marks its end.
    pub stdin: Option<tokio::sync::mpsc::Sender<Option<Vec<u8>>>>,
    /// Typed on stdin, these bytes end the connection and leave the process
    /// running (Docker's detach keys; ctrl-p ctrl-q unless configured).
    pub detach_keys: Vec<u8>,
    /// Told once the response headers are out and the stream begins.
    pub started: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Docker's detach key syntax: comma-separated `ctrl-X` or single characters.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    if spec.is_empty() {
        return Ok(vec![0x10, 0x11]);
    }
    spec.split(',')
        .map(|key| {
            let key = key.trim();
            match key.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let c = c.as_bytes()[0].to_ascii_lowercase();
                    match c {
                        b'a'..=b'z' => Ok(c - b'a' + 1),
                        b'@' => Ok(0),
                        b'[' => Ok(27),
                        b'\\' => Ok(28),
                        b']' => Ok(29),
                        b'^' => Ok(30),
                        b'_' => Ok(31),
                        _ => Err(format!("Invalid detach keys ({spec}) provided")),
                    }
                }
                None if key.len() == 1 => Ok(key.as_bytes()[0]),
                _ => Err(format!("Invalid detach keys ({spec}) provided")),
            }
        })
        .collect()
}

/// Watches input for the detach sequence: bytes that might start it are held
/// back until they turn out not to be it.
struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    /// The bytes to forward, and whether the sequence was typed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if self.keys.is_empty() {
                out.push(byte);
            } else if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if byte == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(byte);
                }
            }
        }
        (out, false)
    }
}

/// Answers 101 and carries the streams over the hijacked connection
/// (Docker's `Upgrade: tcp`); without an upgrade request, the output is
/// the response body and there is no input.
pub fn hijack<B>(req: &mut Request<B>, mut streams: Hijack) -> Response<Body> {
    let tty = streams.tty;
    let encode = move |(stream, data): (u8, Bytes)| if tty { data } else { frame(stream, &data) };
    if req.headers().get(UPGRADE).is_none() {
        if let Some(started) = streams.started.take() {
            let _ = started.send(());
        }
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = streams.output.recv() => item,
                    () = tx.closed() => return,
                };
                let Some(item) = item else { return };
                if tx.send(encode(item)).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(body);
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.docker.raw-stream"));
        return response;
    }
    let socket = req.extensions().get::<super::ConnectionSocket>().copied();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%err, "connection upgrade failed");
                return;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        if let Some(started) = streams.started.take() {
            let _ = started.send(());
        }
        let mut stdin = streams.stdin.take();
        let mut scanner = DetachScanner { keys: std::mem::take(&mut streams.detach_keys), matched: 0 };
        // Returns (ends the connection) when the detach keys are typed or
        // the client is gone.
        let input_pump = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => {
                        if let Some(stdin) = &stdin {
                            let _ = stdin.send(None).await;
                        }
                        // A client that only half-closed still reads the
                        // output; one that closed for good does not.
                        return peer_closed(socket).await;
                    }
                    Err(_) => return,
                    // Without stdin attached (or once the process no
                    // longer takes it), input is dropped, as dockerd does.
                    Ok(n) => {
                        let Some(sender) = &stdin else { continue };
                        let (forward, detached) = scanner.feed(&buf[..n]);
                        if !forward.is_empty() && sender.send(Some(forward)).await.is_err() {
                            stdin = None;
                        }
                        if detached {
                            return;
                        }
                    }
                }
            }
        };
        let output_pump = async move {
            while let Some(item) = streams.output.recv().await {
                if writer.write_all(&encode(item)).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        };
        // The output ending (the process is done) ends the connection, even
        // if the client still holds its input open.
        tokio::select! {
            () = output_pump => {}
            () = input_pump => {}
        }
    });
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.docker.raw-stream"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("tcp"));
    response
}

/// Resolves once the client has closed its connection in both directions.
///
/// After the client's input ended, reading says nothing more, and an idle
/// container writes nothing that could fail: without this, a client gone
/// from an idle attach would hold the agent's attach until the container
/// next writes. A unix socket reports the peer's close as a hang-up
/// (EPOLLHUP), distinct from a half-close. Over TCP a close looks like a
/// half-close until a write fails, so there this never resolves and the
/// output's next write ends the connection (as with dockerd).
async fn peer_closed(socket: Option<super::ConnectionSocket>) {
    use std::os::fd::BorrowedFd;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    let Some(super::ConnectionSocket(fd)) = socket else { return std::future::pending().await };
    // SAFETY: `fd` is the connection's socket, open while the caller holds
    // the upgraded connection (it does, for as long as this future lives);
    // borrowing it only to duplicate it.
    let duplicate = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
    // A duplicate of our own for the reactor: the connection's descriptor
    // is registered already, by its stream.
    let registered = duplicate.map_err(|err| err.to_string()).and_then(|fd| {
        // SAFETY: the AsyncFd owns this OwnedFd, which stays open and the
        // same descriptor until the AsyncFd is dropped.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|err| err.to_string())
    });
    let watched = match registered {
        Ok(watched) => watched,
        Err(err) => {
            tracing::debug!(%err, "cannot watch the client connection");
            return std::future::pending().await;
        }
    };
    loop {
        let Ok(mut guard) = watched.ready(Interest::WRITABLE).await else { return std::future::pending().await };
        if guard.ready().is_write_closed() {
            return;
        }
        // Wait for the socket's next change of state.
        guard.clear_ready();
    }
}

/// The `Sec-WebSocket-Accept` answer to a websocket upgrade request, or
/// `None` when the request is not one.
fn websocket_accept_key<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    let has_token = |name: hyper::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return None;
    }
    let key = headers.get(hyper::header::SEC_WEBSOCKET_KEY)?;
    Some(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Serves attach streams over a websocket, as dockerd's `attach/ws` does:
/// output as binary messages of raw bytes (no stream framing: a websocket
/// has no room for it, and dockerd never multiplexes there), every message
/// received (binary or text) as stdin.
fn websocket<B>(req: &mut Request<B>, accept_key: String, mut streams: Hijack) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::Message;
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%err, "websocket upgrade failed");
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (mut sink, mut messages) = socket.split();
        let stdin = streams.stdin.take();
        let mut scanner = DetachScanner { keys: std::mem::take(&mut streams.detach_keys), matched: 0 };
        // Returns when the client closes, fails, or types the detach keys.
        let input_pump = async move {
            while let Some(Ok(message)) = messages.next().await {
                let data = match message {
                    Message::Binary(data) => data.to_vec(),
                    Message::Text(text) => text.as_bytes().to_vec(),
                    // tungstenite answers pings and close frames itself.
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Some(stdin) = &stdin else { continue };
                let (forward, detached) = scanner.feed(&data);
                if !forward.is_empty() && stdin.send(Some(forward)).await.is_err() {
                    break;
                }
                if detached {
                    return;
                }
            }
            if let Some(stdin) = &stdin {
                let _ = stdin.send(None).await;
            }
        };
        let output_pump = async {
            while let Some((_, data)) = streams.output.recv().await {
                if sink.send(Message::Binary(data)).await.is_err() {
                    return;
                }
            }
            let close = CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
        };
        tokio::select! {
            () = output_pump => {}
            () = input_pump => {}
        }
    });
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_keys("").unwrap(), [0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), [1, b'x']);
        assert!(parse_detach_keys("ctrl-ab").is_err());
        let mut scanner = DetachScanner { keys: vec![0x10, 0x11], matched: 0 };
        assert_eq!(scanner.feed(b"ab\x10"), (b"ab".to_vec(), false), "a possible start is held back");
        assert_eq!(scanner.feed(b"c"), (b"\x10c".to_vec(), false), "and released when it is not one");
        assert_eq!(scanner.feed(b"x\x10\x11y"), (b"x".to_vec(), true));
    }

    #[test]
    fn frames_and_times() {
        assert_eq!(&frame(2, b"hi")[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(unix_ns("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(unix_ns("12"), Some(12_000_000_000));
        assert_eq!(unix_ns("x"), None);
    }
}
