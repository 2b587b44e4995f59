//! The route table: every Docker endpoint Berth serves, matched on the
//! method and the path's segments, after the version prefix (`/v1.45`).
//!
//! Why not axum's router (compiled in already, through tonic) or matchit
//! under it: an image name has slashes (`/images/me/app/json`,
//! `/distribution/localhost:5000/x/json`), and matchit's catch-all must be
//! the last segment, so those routes would stay hand-matched beside it; and
//! axum would take over the request and body types that uploads
//! (`forward_body`) and hijacked streams use from hyper directly, and answer
//! what it cannot route in its own words rather than Docker's. Rust's slice
//! patterns match a name of any length before its action, so the table is
//! one `match`, with no dependency.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use bytes::Bytes;

use super::body::drain;
use super::http::{error, flag, full, json_response, path_param, query_params, Body};
use super::http::{API_VERSION, MIN_API_VERSION};
use super::{build, containers, exec, images, networks, system, volumes};
use super::{ApiContext, ApiFacts};

/// Answers one request: refuses versions outside the supported range,
/// routes, and adds Docker's common headers.
pub async fn handle(req: Request<Incoming>, ctx: &ApiContext) -> Response<Body> {
    let raw_path = req.uri().path().to_string();
    let (version, path) = split_version(&raw_path);
    let response = match version_error(version) {
        Some(response) => response,
        None => route(req, path, ctx).await,
    };
    with_common_headers(response, &ctx.facts)
}

async fn route(req: Request<Incoming>, path: &str, ctx: &ApiContext) -> Response<Body> {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    let segments = segments(path);
    let agent = || ctx.agent.clone();
    let decoded = |segment: &str| path_param(&[segment]);
    let name = path_param;

    // Routes that read the request: its body, its headers, or its
    // connection (hijacked streams).
    match (&method, segments.as_slice()) {
        (&Method::POST, ["images", "load"]) => return images::load(req, agent()).await,
        (&Method::POST, ["build"]) => return build::build(req, ctx).await,
        (&Method::POST, ["images", "create"]) => return images::create(req, ctx).await,
        (&Method::POST, ["commit"]) => return images::commit(req, agent()).await,
        (&Method::POST, ["images", image @ .., "push"]) if !image.is_empty() => {
            return images::push(&req, &name(image), query, ctx).await
        }
        (&Method::GET, ["distribution", image @ .., "json"]) if !image.is_empty() => {
            return images::distribution(&req, &name(image), ctx).await
        }
        (&Method::POST, ["containers", "create"]) => {
            return containers::create(req, query, &ctx.facts.bind_sources, agent()).await
        }
        (&Method::POST, ["containers", id, "attach"]) => {
            return containers::attach(req, &decoded(id), query, agent()).await
        }
        (&Method::GET, ["containers", id, "attach", "ws"]) => {
            return containers::attach_websocket(req, &decoded(id), query, agent()).await
        }
        (&Method::POST, ["containers", id, "update"]) => return containers::update(req, &decoded(id), agent()).await,
        (&Method::PUT, ["containers", id, "archive"]) => {
            return containers::put_archive(req, &decoded(id), query, agent()).await
        }
        (&Method::POST, ["containers", id, "exec"]) => {
            return exec::create(req, &decoded(id), &ctx.agent, &ctx.execs).await
        }
        (&Method::POST, ["exec", id, "start"]) => return exec::start(req, &decoded(id), &ctx.agent, &ctx.execs).await,
        (&Method::POST, ["volumes", "create"]) => return volumes::create(req, agent()).await,
        (&Method::POST, ["networks", "create"]) => return networks::create(req, agent()).await,
        (&Method::POST, ["networks", network, "connect"]) => {
            return networks::connect(&decoded(network), req, agent()).await
        }
        (&Method::POST, ["networks", network, "disconnect"]) => {
            return networks::disconnect(&decoded(network), req, agent()).await
        }
        _ => {}
    }
    // The rest answer from the path and query alone. The body is read
    // first all the same: a client still writing one would otherwise see a
    // broken pipe instead of the answer.
    drain(req).await;
    match (&method, segments.as_slice()) {
        (&Method::GET, ["info"]) => system::info(ctx).await,
        // Berth is never part of a swarm: dockerd's answer outside one,
        // which clients (docker-py's `leave_swarm(force=True)` in every
        // network test's teardown) take as "nothing to leave".
        (&Method::POST, ["swarm", "leave"]) | (&Method::GET, ["swarm"]) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "This node is not part of a swarm")
        }
        (&Method::GET, ["events"]) => system::events(query, ctx).await,
        (&Method::GET, ["system", "df"]) => system::df(ctx).await,

        (&Method::POST, ["build", "prune"]) => build::prune(query, agent()).await,
        (&Method::GET, ["images", "json"]) => images::list(query, agent()).await,
        (&Method::GET, ["images", "get"]) => images::save(query_params(query, "names"), agent()).await,
        (&Method::POST, ["images", "prune"]) => images::prune(query, agent()).await,
        (&Method::GET, ["images", image @ .., "json"]) if !image.is_empty() => {
            images::inspect(&name(image), agent()).await
        }
        (&Method::POST, ["images", image @ .., "tag"]) if !image.is_empty() => {
            images::tag(&name(image), query, agent()).await
        }
        (&Method::GET, ["images", image @ .., "get"]) if !image.is_empty() => {
            images::save(vec![name(image)], agent()).await
        }
        (&Method::GET, ["images", image @ .., "history"]) if !image.is_empty() => {
            images::history(&name(image), agent()).await
        }
        (&Method::DELETE, ["images", image @ ..]) if !image.is_empty() => {
            images::remove(&name(image), query, agent()).await
        }

        (&Method::GET, ["containers", "json"]) => containers::list(query, agent()).await,
        (&Method::POST, ["containers", "prune"]) => containers::prune(query, agent()).await,
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(&decoded(id), agent()).await,
        (&Method::POST, ["containers", id, "start"]) => {
            containers::start(&decoded(id), agent(), &ctx.ports, ctx.shares.as_ref()).await
        }
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(&decoded(id), query, agent(), &ctx.ports).await,
        (&Method::POST, ["containers", id, "restart"]) => {
            containers::restart(&decoded(id), query, agent(), &ctx.ports, ctx.shares.as_ref()).await
        }
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(&decoded(id), query, agent()).await,
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(&decoded(id), query, agent()).await,
        (&Method::DELETE, ["containers", link @ ..]) if !link.is_empty() && flag(query, "link") => {
            networks::remove_link(&name(link), agent()).await
        }
        (&Method::DELETE, ["containers", id]) => containers::remove(&decoded(id), query, agent(), &ctx.ports).await,
        (&Method::GET, ["containers", id, "logs"]) => containers::logs(&decoded(id), query, agent()).await,
        (&Method::POST, ["containers", id, "resize"]) => containers::resize(&decoded(id), query, agent()).await,
        (&Method::POST, ["containers", id, "pause"]) => containers::pause(&decoded(id), agent()).await,
        (&Method::POST, ["containers", id, "unpause"]) => containers::unpause(&decoded(id), agent()).await,
        (&Method::POST, ["containers", id, "rename"]) => containers::rename(&decoded(id), query, agent()).await,
        (&Method::GET, ["containers", id, "top"]) => containers::top(&decoded(id), agent()).await,
        (&Method::GET, ["containers", id, "stats"]) => containers::stats(&decoded(id), query, agent()).await,
        (&Method::GET | &Method::HEAD, ["containers", id, "archive"]) => {
            containers::get_archive(&decoded(id), query, method == Method::HEAD, agent()).await
        }
        (&Method::GET, ["containers", id, "export"]) => containers::export(&decoded(id), agent()).await,
        (&Method::GET, ["containers", id, "changes"]) => containers::changes(&decoded(id), agent()).await,
        // `docker inspect NAME` asks for a container first and, on 404,
        // for an image; image names have slashes and colons.
        (&Method::GET, ["containers", container @ .., "json"]) if container.len() > 1 => {
            error(StatusCode::NOT_FOUND, format!("No such container: {}", name(container)))
        }

        (&Method::GET, ["exec", id, "json"]) => exec::inspect(&decoded(id), &ctx.execs),
        (&Method::POST, ["exec", id, "resize"]) => exec::resize(&decoded(id), query, &ctx.execs).await,

        (&Method::GET, ["volumes"]) => volumes::list(query, agent()).await,
        (&Method::POST, ["volumes", "prune"]) => volumes::prune(query, agent()).await,
        (&Method::GET, ["volumes", volume @ ..]) => volumes::inspect(&name(volume), agent()).await,
        (&Method::DELETE, ["volumes", volume @ ..]) => volumes::remove(&name(volume), query, agent()).await,

        (&Method::GET, ["networks"]) => networks::list(query, agent()).await,
        (&Method::POST, ["networks", "prune"]) => networks::prune(query, agent()).await,
        (&Method::GET, ["networks", network]) => networks::inspect(&decoded(network), agent()).await,
        (&Method::DELETE, ["networks", network]) => networks::remove(&decoded(network), agent()).await,

        _ => local(&method, &segments, path, &ctx.facts),
    }
}

/// A path's segments, without the slashes at either end.
fn segments(path: &str) -> Vec<&str> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

/// What is answered from the facts alone: `/_ping`, `/version`, and for
/// every other Docker endpoint a clear refusal naming it, so clients fail
/// plainly instead of misbehaving on fake data.
fn local(method: &Method, segments: &[&str], path: &str, facts: &ApiFacts) -> Response<Body> {
    match (method, segments) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => ping(method),
        (&Method::GET, ["version"]) => json_response(StatusCode::OK, system::version_json(facts)),
        _ => error(StatusCode::NOT_IMPLEMENTED, format!("Berth does not implement {method} {path} yet")),
    }
}

fn ping(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(b"OK") };
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert("Cache-Control", HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    headers.insert("Pragma", HeaderValue::from_static("no-cache"));
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    response
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

#[cfg(test)]
mod tests {
    use super::super::tests::facts;
    use super::*;

    /// What the server answers for routes that need no agent.
    fn route(method: &Method, raw_path: &str, facts: &ApiFacts) -> Response<Body> {
        let (version, path) = split_version(raw_path);
        let response = version_error(version).unwrap_or_else(|| local(method, &segments(path), path, facts));
        with_common_headers(response, facts)
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
        let info = system::info_json(&facts());
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
