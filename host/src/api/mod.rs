//! The Docker Engine API on `$BERTH_HOME/run/docker.sock`, served by the
//! daemon (hyper, HTTP/1.1 on a unix socket, mode 0600).
//!
//! Served so far: version negotiation, `/_ping`, `/version` and `/info` with
//! the VM's real figures, and images: `POST /images/load` (`docker load`)
//! and `GET /images/json` (`docker images`), forwarded to the agent's image
//! store. Every other Docker endpoint answers 501 with a message naming it,
//! so clients fail clearly instead of misbehaving on fake data.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use berth_agent_proto::agent_client::AgentClient;
use tonic::transport::Channel;

mod binds;
mod containers;
mod exec;
mod images;
mod networks;
mod panics;
mod server;
mod volumes;

pub use server::{bind, serve, serve_tcp, ConnectionSocket, Connections, Limits};

/// The newest and oldest API versions served.
pub const API_VERSION: &str = "1.47";
pub const MIN_API_VERSION: &str = "1.41";

pub use binds::BindSources;

/// What the API reports about the machine, gathered at boot.
#[derive(Debug, Clone)]
pub struct ApiFacts {
    pub berth_version: String,
    pub kernel_release: String,
    pub hostname: String,
    pub cpus: u32,
    pub memory_total_bytes: u64,
    pub data_dir: String,
    pub registry: RegistrySettings,
    pub bind_sources: binds::BindSources,
}

/// config.toml's [engine] registry settings, passed with every pull.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    pub mirrors: Vec<String>,
    pub insecure: Vec<String>,
}

/// Response bodies: whole (most answers) or streamed (logs, waits, events).
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    Full::new(bytes.into()).boxed()
}

/// A body fed from a channel; it ends when the sender is dropped. A client
/// that goes away drops the receiver, which stops the producer's sends.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    use http_body_util::BodyExt;
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let frames =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b)));
    (tx, http_body_util::StreamBody::new(frames).boxed())
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Splits `/v1.45/foo` into (Some("1.45"), "/foo").
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        if parse_version(&rest[..end]).is_some() {
            let tail = &rest[end..];
            return (Some(&rest[..end]), if tail.is_empty() { "/" } else { tail });
        }
    }
    (None, path)
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Docker's error shape: `{"message": ...}` with the status that says why.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, json!({ "message": message.into() }))
}

fn with_common_headers(mut response: Response<Body>, facts: &ApiFacts) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("API-Version", HeaderValue::from_static(API_VERSION));
    headers.insert("OSType", HeaderValue::from_static("linux"));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    if let Ok(server) = HeaderValue::from_str(&format!("Berth/{}", facts.berth_version)) {
        headers.insert("Server", server);
    }
    response
}

/// Docker's answer to a client outside the supported version range, if it is.
fn version_error(version: Option<&str>) -> Option<Response<Body>> {
    let v = version?;
    let (asked, min, max) = (parse_version(v), parse_version(MIN_API_VERSION), parse_version(API_VERSION));
    if asked < min {
        return Some(error(
            StatusCode::BAD_REQUEST,
            format!("client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"),
        ));
    }
    if asked > max {
        return Some(error(
            StatusCode::BAD_REQUEST,
            format!("client version {v} is too new. Maximum supported API version is {API_VERSION}"),
        ));
    }
    None
}

fn route_local(method: &Method, path: &str, facts: &ApiFacts) -> Response<Body> {
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/_ping") => {
            let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(b"OK") };
            let mut response = Response::new(full(body));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            headers.insert("Cache-Control", HeaderValue::from_static("no-cache, no-store, must-revalidate"));
            headers.insert("Pragma", HeaderValue::from_static("no-cache"));
            headers.insert("Builder-Version", HeaderValue::from_static("1"));
            response
        }
        (&Method::GET, "/version") => json_response(StatusCode::OK, version_json(facts)),
        _ => error(StatusCode::NOT_IMPLEMENTED, format!("Berth does not implement {method} {path} yet")),
    }
}

/// Decodes `%XX` escapes and `+` (a space in query strings, as Go's
/// url.Values encodes them); invalid escapes are kept as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match text.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded value of `name` in a query string.
/// Every value of a repeated parameter (`changes=A&changes=B`).
pub fn query_params(query: Option<&str>, name: &str) -> Vec<String> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode(value))
        })
        .collect()
}

/// The largest JSON request body taken (a container create, a commit's config).
pub const MAX_JSON_BODY: usize = 4 << 20;

/// The largest message `forward_body` sends: below musl's mmap threshold
/// (128 KiB), so the static agent's allocator reuses the buffers instead
/// of mapping and unmapping one per message (which cost `docker load` a
/// third of its speed).
const FORWARD_CHUNK: usize = 64 << 10;

/// Forwards a request body to the agent as messages made by `wrap`, until
/// it ends. Resolves to the body's own error, if any (a truncated upload),
/// for the caller to report. When the agent stops reading (it refused the
/// upload), the rest is read and dropped (bounded, see `discard`), so the
/// client gets the refusal instead of a broken pipe.
pub fn forward_body<T: Send + 'static>(
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<T>,
    wrap: fn(Vec<u8>) -> T,
) -> tokio::task::JoinHandle<Result<(), hyper::Error>> {
    use http_body_util::BodyExt;
    tokio::spawn(async move {
        'frames: while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            for piece in data.chunks(FORWARD_CHUNK) {
                if tx.send(wrap(piece.to_vec())).await.is_err() {
                    discard(&mut body).await;
                    break 'frames;
                }
            }
        }
        Ok(())
    })
}

/// A tar streamed by the agent as the response body (cp, export, save). A
/// failure mid-stream ends the body early: the client sees a truncated
/// archive, as with dockerd.
pub fn tar_body(chunks: tonic::Streaming<berth_agent_proto::ArchiveChunk>) -> Body {
    stream_body(chunks, |chunk| Bytes::from(chunk.data))
}

pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// Everything the server needs: facts for the local routes, the agent for the rest.
pub struct ApiContext {
    pub facts: ApiFacts,
    /// One channel for every request: it multiplexes calls on one agent
    /// connection and reconnects by itself if that breaks.
    pub agent: AgentClient<Channel>,
    /// `docker exec` instances (Docker keeps them in memory too).
    pub execs: Arc<exec::Registry>,
}

impl ApiContext {
    pub fn new(facts: ApiFacts, agent: AgentClient<Channel>) -> ApiContext {
        ApiContext { facts, agent, execs: Arc::default() }
    }
}

async fn handle(req: Request<Incoming>, ctx: &ApiContext) -> Response<Body> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    let (version, path) = split_version(&raw_path);
    let response = match version_error(version) {
        Some(response) => response,
        None => match (&method, path) {
            (&Method::POST, "/images/load") => images::load(req, ctx.agent.clone()).await,
            (&Method::GET, "/images/json") => images::list(req.uri().query(), ctx.agent.clone()).await,
            (&Method::POST, "/images/create") => images::create(req, ctx).await,
            (&Method::GET, "/images/get") => {
                images::save(query_params(req.uri().query(), "names"), ctx.agent.clone()).await
            }
            (&Method::POST, "/images/prune") => images::prune(req.uri().query(), ctx.agent.clone()).await,
            (&Method::POST, "/commit") => images::commit(req, ctx.agent.clone()).await,
            (&Method::GET, path) if path.starts_with("/distribution/") && path.ends_with("/json") => {
                let name = percent_decode(&path["/distribution/".len()..path.len() - "/json".len()]);
                images::distribution(&req, &name, ctx).await
            }
            (_, path) if path == "/networks" || path.starts_with("/networks/") => {
                match networks::route(req, path).await {
                    Some(response) => response,
                    None => route_local(&method, path, &ctx.facts),
                }
            }
            (_, path) if path == "/volumes" || path.starts_with("/volumes/") => {
                match volumes::route(req, path, ctx.agent.clone()).await {
                    Some(response) => response,
                    None => route_local(&method, path, &ctx.facts),
                }
            }
            (&Method::GET, "/info") => info(ctx).await,
            (&Method::GET, "/events") => events(req.uri().query(), ctx).await,
            (&Method::GET, "/system/df") => system_df(ctx).await,
            (_, path) if path.starts_with("/exec/") => match exec::route(req, path, ctx).await {
                Some(response) => response,
                None => route_local(&method, path, &ctx.facts),
            },
            (_, path) if path.starts_with("/containers/") => match containers::route(req, path, ctx).await {
                Some(response) => response,
                // `docker inspect NAME` asks for a container first and, on
                // 404, for an image; image names have slashes and colons.
                None if method == Method::GET && path.ends_with("/json") => {
                    let name = percent_decode(&path["/containers/".len()..path.len() - "/json".len()]);
                    error(StatusCode::NOT_FOUND, format!("No such container: {name}"))
                }
                None => route_local(&method, path, &ctx.facts),
            },
            (_, path) if path.starts_with("/images/") => {
                // Image names contain '/' (me/app, localhost:5000/x): the
                // action is the last segment, the name everything before it.
                let rest = percent_decode(&path["/images/".len()..]);
                let query = req.uri().query();
                match (&method, rest.rsplit_once('/')) {
                    (&Method::GET, Some((name, "json"))) => images::inspect(name, ctx.agent.clone()).await,
                    (&Method::POST, Some((name, "tag"))) => images::tag(name, query, ctx.agent.clone()).await,
                    (&Method::GET, Some((name, "get"))) => {
                        images::save(vec![name.to_string()], ctx.agent.clone()).await
                    }
                    (&Method::GET, Some((name, "history"))) => images::history(name, ctx.agent.clone()).await,
                    (&Method::DELETE, _) => images::remove(&rest, query, ctx.agent.clone()).await,
                    _ => route_local(&method, path, &ctx.facts),
                }
            }
            _ => {
                drain(req).await;
                route_local(&method, path, &ctx.facts)
            }
        },
    };
    with_common_headers(response, &ctx.facts)
}

/// Reads and drops a request body (bounded), so an answer that ignores it
/// still reaches the client.
pub async fn drain(mut req: Request<Incoming>) {
    discard(req.body_mut()).await;
}

/// At most this much of a refused body is read (and dropped) before the
/// answer; past it the connection is closed on a client still sending.
const MAX_DISCARD: usize = 64 << 20;

/// Reads what is left of a body and drops it, chunk by chunk: a client
/// still writing a body we refuse would otherwise see a broken pipe (or a
/// reset over TCP) instead of our answer, and dropping keeps memory flat.
pub async fn discard(body: &mut Incoming) {
    use http_body_util::BodyExt;
    let mut left = MAX_DISCARD;
    while let Some(Ok(frame)) = body.frame().await {
        let len = frame.data_ref().map_or(0, Bytes::len);
        left = left.saturating_sub(len);
        if left == 0 {
            return;
        }
    }
}

/// A whole request body of at most `limit` bytes; a larger one is refused
/// with 413 before more than `limit` bytes of it are held (at once when
/// its Content-Length says so).
pub async fn read_body(req: &mut Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    use http_body_util::BodyExt;
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body too large: the limit is {} KiB", limit >> 10));
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        discard(req.body_mut()).await;
        return Err(too_large());
    }
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = req.body_mut().frame().await {
        let frame = frame.map_err(|err| error(StatusCode::BAD_REQUEST, format!("reading the request body: {err}")))?;
        if let Some(data) = frame.data_ref() {
            if collected.len() + data.len() > limit {
                discard(req.body_mut()).await;
                return Err(too_large());
            }
            collected.extend_from_slice(data);
        }
    }
    Ok(collected.freeze())
}

/// A request body that must be JSON (an empty one is `{}` when
/// `empty_is_object`), as raw bytes for the agent.
pub async fn read_json_body(
    req: &mut Request<Incoming>,
    limit: usize,
    empty_is_object: bool,
) -> Result<Bytes, Response<Body>> {
    let body = read_body(req, limit).await?;
    let body = if body.is_empty() && empty_is_object { Bytes::from_static(b"{}") } else { body };
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => Ok(body),
        Err(err) => Err(error(StatusCode::BAD_REQUEST, format!("invalid JSON: {err}"))),
    }
}

/// An agent error as Docker reports it: the client's fault is a 400.
pub fn agent_error(status: tonic::Status) -> Response<Body> {
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::Aborted | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, status.message())
}

fn version_json(facts: &ApiFacts) -> serde_json::Value {
    json!({
        "Platform": {"Name": "Berth"},
        "Components": [{
            "Name": "Engine",
            "Version": facts.berth_version,
            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": berth_agent_proto::reference::oci_architecture(), "KernelVersion": facts.kernel_release}
        }],
        "Version": facts.berth_version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": berth_agent_proto::reference::oci_architecture(),
        "KernelVersion": facts.kernel_release,
        "GitCommit": "",
        "GoVersion": "",
        "BuildTime": "",
    })
}

/// `/info` with the engine's real counts.
async fn info(ctx: &ApiContext) -> Response<Body> {
    let mut agent = ctx.agent.clone();
    let request = berth_agent_proto::ListContainersRequest { all: true, ..Default::default() };
    let containers: serde_json::Value = match agent.list_containers(request).await {
        Ok(reply) => serde_json::from_slice(&reply.into_inner().json).unwrap_or_default(),
        Err(status) => return agent_error(status),
    };
    let images = match agent.list_images(berth_agent_proto::ListImagesRequest {}).await {
        Ok(reply) => reply.into_inner().images.len(),
        Err(status) => return agent_error(status),
    };
    let states: Vec<&str> = containers.as_array().into_iter().flatten().filter_map(|c| c["State"].as_str()).collect();
    let count = |state: &str| states.iter().filter(|s| **s == state).count();
    let mut value = info_json(&ctx.facts);
    value["Containers"] = states.len().into();
    value["ContainersRunning"] = count("running").into();
    value["ContainersPaused"] = count("paused").into();
    value["ContainersStopped"] = (states.len() - count("running") - count("paused")).into();
    value["Images"] = images.into();
    json_response(StatusCode::OK, value)
}

/// A response body fed from an agent stream, each message encoded by
/// `encode`. It ends with the stream, and also as soon as the client goes
/// away: an idle stream (`logs -f`, `events`) would otherwise hold its agent
/// call, and the agent's cursor or subscription, until its next message.
pub fn stream_body<T: Send + 'static>(
    mut messages: tonic::Streaming<T>,
    mut encode: impl FnMut(T) -> Bytes + Send + 'static,
) -> Body {
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = messages.message() => message,
                () = tx.closed() => return,
            };
            let Ok(Some(message)) = message else { return };
            if tx.send(encode(message)).await.is_err() {
                return;
            }
        }
    });
    body
}

/// A streamed body of the agent's JSON messages, each followed by
/// `separator` (Docker ends pull progress lines with CRLF, others with LF).
pub fn json_lines(
    messages: tonic::Streaming<berth_agent_proto::JsonResponse>,
    separator: &'static [u8],
) -> Response<Body> {
    let body = stream_body(messages, move |message| {
        let mut line = message.json;
        line.extend_from_slice(separator);
        Bytes::from(line)
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `docker events`: JSON objects, one per line, as they happen.
async fn events(query: Option<&str>, ctx: &ApiContext) -> Response<Body> {
    let time = |name: &str| match query_param(query, name).filter(|v| !v.is_empty()) {
        Some(v) => {
            containers::unix_ns(&v).ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("invalid {name} value {v:?}")))
        }
        None => Ok(0),
    };
    let (since_ns, until_ns) = match (time("since"), time("until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let request = berth_agent_proto::EventsRequest {
        since_ns,
        until_ns,
        filters_json: query_param(query, "filters").unwrap_or_default(),
    };
    match ctx.agent.clone().events(request).await {
        Ok(reply) => json_lines(reply.into_inner(), b"\n"),
        Err(status) => agent_error(status),
    }
}

/// `docker system df`: images and containers with their sizes.
async fn system_df(ctx: &ApiContext) -> Response<Body> {
    let mut agent = ctx.agent.clone();
    let request = berth_agent_proto::ListContainersRequest { all: true, size: true, ..Default::default() };
    let containers: serde_json::Value = match agent.list_containers(request).await {
        Ok(reply) => serde_json::from_slice(&reply.into_inner().json).unwrap_or_default(),
        Err(status) => return agent_error(status),
    };
    let images = match agent.list_images(berth_agent_proto::ListImagesRequest {}).await {
        Ok(reply) => reply.into_inner().images,
        Err(status) => return agent_error(status),
    };
    let request = berth_agent_proto::ListVolumesRequest { filters_json: String::new(), usage: true };
    let volumes: serde_json::Value = match agent.list_volumes(request).await {
        Ok(reply) => serde_json::from_slice(&reply.into_inner().json).unwrap_or_default(),
        Err(status) => return agent_error(status),
    };
    let list = containers.as_array().cloned().unwrap_or_default();
    let mut images_json = images::images_json(images);
    let mut layers_size = 0u64;
    for image in images_json.as_array_mut().into_iter().flatten() {
        let id = image["Id"].as_str().unwrap_or("").to_string();
        let users = list.iter().filter(|c| c["ImageID"].as_str() == Some(id.as_str())).count();
        image["Containers"] = users.into();
        image["SharedSize"] = 0.into();
        layers_size += image["Size"].as_u64().unwrap_or(0);
    }
    json_response(
        StatusCode::OK,
        json!({ "LayersSize": layers_size, "Images": images_json, "Containers": list, "Volumes": volumes["Volumes"], "BuildCache": [] }),
    )
}

fn info_json(facts: &ApiFacts) -> serde_json::Value {
    json!({
        "ID": "",
        "Name": facts.hostname,
        "ServerVersion": facts.berth_version,
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
        "Images": 0,
        "NCPU": facts.cpus,
        "MemTotal": facts.memory_total_bytes,
        "KernelVersion": facts.kernel_release,
        "OperatingSystem": "Berth VM",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "DockerRootDir": facts.data_dir,
        "CgroupVersion": "2",
        "ExperimentalBuild": false,
        "Driver": "",
        "Plugins": {"Volume": [], "Network": [], "Log": []},
        "Warnings": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server answers for routes that need no agent.
    fn route(method: &Method, raw_path: &str, facts: &ApiFacts) -> Response<Body> {
        let (version, path) = split_version(raw_path);
        let response = version_error(version).unwrap_or_else(|| route_local(method, path, facts));
        with_common_headers(response, facts)
    }

    fn facts() -> ApiFacts {
        ApiFacts {
            berth_version: "0.1.0".into(),
            kernel_release: "6.1.192".into(),
            hostname: "berth".into(),
            cpus: 2,
            memory_total_bytes: 2 << 30,
            data_dir: "/var/lib/berth".into(),
            registry: RegistrySettings::default(),
            bind_sources: binds::BindSources::Any,
        }
    }

    fn body(response: Response<Body>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = futures_executor(response.into_body().collect()).unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn query_strings() {
        assert_eq!(query_param(Some("repo=me%2Fapp&tag=v1"), "repo").as_deref(), Some("me/app"));
        assert_eq!(query_param(Some("force=1&noprune=0"), "force").as_deref(), Some("1"));
        assert_eq!(query_param(Some("force"), "force").as_deref(), Some(""));
        assert_eq!(query_param(None, "repo"), None);
        assert_eq!(percent_decode("a+b%zz%41"), "a b%zzA");
    }

    #[test]
    fn versioned_and_unversioned_paths() {
        assert_eq!(split_version("/v1.45/containers/json"), (Some("1.45"), "/containers/json"));
        assert_eq!(split_version("/_ping"), (None, "/_ping"));
        assert_eq!(split_version("/v1.47"), (Some("1.47"), "/"));
        assert_eq!(split_version("/volumes"), (None, "/volumes"));
    }

    #[test]
    fn ping_version_info() {
        let ping = route(&Method::HEAD, "/_ping", &facts());
        assert_eq!(ping.status(), StatusCode::OK);
        assert_eq!(ping.headers()["API-Version"], API_VERSION);
        assert_eq!(ping.headers()["OSType"], "linux");
        let version = body(route(&Method::GET, "/v1.41/version", &facts()));
        assert_eq!(version["ApiVersion"], API_VERSION);
        assert_eq!(version["MinAPIVersion"], MIN_API_VERSION);
        let info = info_json(&facts());
        assert_eq!(info["NCPU"], 2);
        assert_eq!(info["KernelVersion"], "6.1.192");
    }

    #[test]
    fn errors_follow_docker() {
        let old = route(&Method::GET, "/v1.40/version", &facts());
        assert_eq!(old.status(), StatusCode::BAD_REQUEST);
        assert!(body(old)["message"].as_str().unwrap().contains("too old"));
        let new = route(&Method::GET, "/v1.99/version", &facts());
        assert_eq!(new.status(), StatusCode::BAD_REQUEST);
        let missing = route(&Method::GET, "/v1.47/images/get", &facts());
        assert_eq!(missing.status(), StatusCode::NOT_IMPLEMENTED);
        assert!(body(missing)["message"].as_str().unwrap().contains("GET /images/get"));
    }
}
