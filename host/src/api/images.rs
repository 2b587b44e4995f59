//! `/images/*`: forwarded to the agent's image store.

use berth_agent_proto::reference::familiar;
use berth_agent_proto::{
    ArchiveChunk, ImageSummary, InspectImageRequest, ListImagesRequest, RemoveImageRequest, TagImageRequest,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;

use super::body::{drain, forward_body, json_lines, json_messages, tar_body, MAX_JSON_BODY};
use super::http::{
    agent_error, agent_json, error, flag, full, json_response, query_param, query_params, raw_json, Body,
};
use super::ApiContext;
use berth_agent_proto::agent_client::AgentClient;
use tonic::transport::Channel;

/// `docker load`: the request body is the archive; streamed to the agent.
pub async fn load(req: Request<Incoming>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<ArchiveChunk>(16);
    // A truncated upload: the agent sees a short archive and refuses it.
    let pump = forward_body(req.into_body(), tx, |data| ArchiveChunk { data });
    let result = agent.load_images(ReceiverStream::new(rx)).await;
    let upload = pump.await;
    let loaded = match result {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            if let Ok(Err(err)) = upload {
                return error(StatusCode::BAD_REQUEST, format!("reading the uploaded archive: {err}"));
            }
            if status.code() == tonic::Code::Unavailable {
                return agent_error(status);
            }
            // dockerd answers 200 and reports a refused archive in the
            // stream (docker-py raises ImageLoadError from it).
            let message = status.message().to_string();
            return json_messages(vec![json!({ "errorDetail": { "message": message }, "error": message })]);
        }
    };
    // Docker's progress stream: one message per name the archive gave.
    let mut messages = Vec::new();
    for image in &loaded.images {
        if image.tags.is_empty() {
            messages.push(json!({ "stream": format!("Loaded image ID: {}\n", image.id) }));
        }
        for tag in &image.tags {
            messages.push(json!({ "stream": format!("Loaded image: {}\n", familiar(tag)) }));
        }
    }
    json_messages(messages)
}

/// `docker pull` (`POST /images/create?fromImage=NAME&tag=TAG`, progress
/// streamed as Docker's JSON messages: the CLI draws its bars from them) and
/// `docker import` (`?fromSrc=-` with the tarball as the body).
pub async fn create(req: Request<Incoming>, ctx: &ApiContext) -> Response<Body> {
    let query = req.uri().query();
    if let Some(source) = query_param(query, "fromSrc") {
        return import(req, &source, ctx.agent.clone()).await;
    }
    let Some(image) = query_param(query, "fromImage").filter(|i| !i.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "fromImage is required");
    };
    let tag = query_param(query, "tag").filter(|t| !t.is_empty());
    let reference = match tag {
        Some(tag) if tag.starts_with("sha256:") => format!("{image}@{tag}"),
        Some(tag) => format!("{image}:{tag}"),
        None => image,
    };
    match ctx.agent.clone().pull_image(registry_request(&req, reference, ctx)).await {
        Ok(reply) => json_lines(reply.into_inner(), b"\r\n"),
        Err(status) => agent_error(status),
    }
}

/// A registry call's request: the reference, the client's credentials
/// (X-Registry-Auth: base64url of Docker's AuthConfig JSON) and the
/// configured mirrors.
fn registry_request<B>(req: &Request<B>, reference: String, ctx: &ApiContext) -> berth_agent_proto::PullImageRequest {
    berth_agent_proto::PullImageRequest {
        reference,
        auth_json: registry_auth_json(req),
        registry_mirrors: ctx.facts.registry.mirrors.clone(),
        insecure_registries: ctx.facts.registry.insecure.clone(),
    }
}

/// `docker push NAME` (`POST /images/NAME/push?tag=TAG`): Docker's progress
/// messages; a missing image or a registry's refusal is the stream's error,
/// after the repository line, as dockerd sends it.
pub async fn push<B>(req: &Request<B>, name: &str, query: Option<&str>, ctx: &ApiContext) -> Response<Body> {
    let request = berth_agent_proto::PushImageRequest {
        name: name.to_string(),
        tag: query_param(query, "tag").unwrap_or_default(),
        auth_json: registry_auth_json(req),
        insecure_registries: ctx.facts.registry.insecure.clone(),
    };
    match ctx.agent.clone().push_image(request).await {
        Ok(reply) => json_lines(reply.into_inner(), b"\r\n"),
        Err(status) => agent_error(status),
    }
}

/// The client's credentials: X-Registry-Auth, base64url of Docker's
/// AuthConfig JSON; empty for none.
fn registry_auth_json<B>(req: &Request<B>) -> String {
    req.headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .and_then(|v| {
            use base64::Engine;
            let v = v.trim_end_matches('=');
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(v))
                .ok()
        })
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .filter(|json| json.trim() != "{}" && json.trim() != "null")
        .unwrap_or_default()
}

/// `docker import`: `fromSrc=-` takes the tarball from the body.
async fn import(req: Request<Incoming>, source: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    use berth_agent_proto::{import_image_input::Input, ImportImageInput, ImportImageStart};
    if source != "-" {
        drain(req).await;
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "Berth does not import from a URL yet: download the file and run `docker import FILE`",
        );
    }
    let query = req.uri().query();
    let reference = match query_param(query, "repo").filter(|r| !r.is_empty()) {
        Some(repo) => match query_param(query, "tag").filter(|t| !t.is_empty()) {
            Some(tag) => format!("{repo}:{tag}"),
            None => repo,
        },
        None => String::new(),
    };
    let start = ImportImageStart {
        reference,
        message: query_param(query, "message").unwrap_or_default(),
        changes: query_params(query, "changes"),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportImageInput>(16);
    let _ = tx.send(ImportImageInput { input: Some(Input::Start(start)) }).await;
    let upload = forward_body(req.into_body(), tx, |data| ImportImageInput { input: Some(Input::Data(data)) });
    let result = agent.import_image(ReceiverStream::new(rx)).await;
    if let Ok(Err(err)) = upload.await {
        return error(StatusCode::BAD_REQUEST, format!("reading the uploaded tarball: {err}"));
    }
    match result {
        Ok(reply) => {
            let reply: serde_json::Value = serde_json::from_slice(&reply.into_inner().json).unwrap_or_default();
            // Docker's answer: a progress stream whose last message carries the ID.
            let mut response = Response::new(full(format!("{}\r\n", json!({ "status": reply["Id"] }))));
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
            response
        }
        Err(status) => agent_error(status),
    }
}

/// `docker save`: `GET /images/NAME/get` or `GET /images/get?names=A&names=B`.
pub async fn save(names: Vec<String>, mut agent: AgentClient<Channel>) -> Response<Body> {
    if names.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no image names given (names=...)");
    }
    match agent.save_images(berth_agent_proto::SaveImagesRequest { names }).await {
        Ok(reply) => {
            let mut response = Response::new(tar_body(reply.into_inner()));
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-tar"));
            response
        }
        Err(status) => agent_error(status),
    }
}

/// `docker history`.
pub async fn history(name: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    agent_json(agent.image_history(InspectImageRequest { name: name.to_string() }).await)
}

/// `docker image prune`.
pub async fn prune(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request =
        berth_agent_proto::PruneImagesRequest { filters_json: query_param(query, "filters").unwrap_or_default() };
    agent_json(agent.prune_images(request).await)
}

/// `docker commit`: `POST /commit?container=ID&repo=R&tag=T&comment=&author=&pause=&changes=`,
/// the body an optional container Config overriding the container's.
pub async fn commit(req: Request<Incoming>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    let Some(container) = query_param(query, "container").filter(|c| !c.is_empty()) else {
        drain(req).await;
        return error(StatusCode::BAD_REQUEST, "container is required");
    };
    let config_json = match http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY).collect().await {
        Ok(body) => body.to_bytes().to_vec(),
        Err(err) => return error(StatusCode::BAD_REQUEST, format!("reading the request body: {err}")),
    };
    if !config_json.iter().all(u8::is_ascii_whitespace) {
        if let Err(err) = serde_json::from_slice::<serde_json::Value>(&config_json) {
            return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {err}"));
        }
    }
    let reference = match query_param(query, "repo").filter(|r| !r.is_empty()) {
        Some(repo) => {
            format!("{repo}:{}", query_param(query, "tag").filter(|t| !t.is_empty()).as_deref().unwrap_or("latest"))
        }
        None => String::new(),
    };
    let request = berth_agent_proto::CommitContainerRequest {
        container,
        reference,
        comment: query_param(query, "comment").unwrap_or_default(),
        author: query_param(query, "author").unwrap_or_default(),
        changes: query_params(query, "changes"),
        config_json: if config_json.iter().all(u8::is_ascii_whitespace) { Vec::new() } else { config_json },
        pause: query_param(query, "pause").is_none_or(|v| v == "1" || v.eq_ignore_ascii_case("true")),
    };
    match agent.commit_container(request).await {
        Ok(reply) => {
            let mut response = raw_json(reply.into_inner().json);
            *response.status_mut() = StatusCode::CREATED;
            response
        }
        Err(status) => agent_error(status),
    }
}

/// `GET /distribution/NAME/json`: what the registry serves for a reference.
pub async fn distribution<B>(req: &Request<B>, name: &str, ctx: &ApiContext) -> Response<Body> {
    agent_json(ctx.agent.clone().inspect_distribution(registry_request(req, name.to_string(), ctx)).await)
}

/// `docker images`.
pub async fn list(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let filters = match ImageFilters::parse(query_param(query, "filters").as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut images = match agent.list_images(ListImagesRequest {}).await {
        Ok(reply) => reply.into_inner().images,
        Err(status) => return agent_error(status),
    };
    let created_of = |name: &str, images: &[ImageSummary]| {
        images
            .iter()
            .find(|i| {
                i.id == name
                    || i.id.trim_start_matches("sha256:").starts_with(name)
                    || i.tags.iter().any(|t| familiar(t) == name || t == name)
            })
            .map(|i| i.created)
    };
    let before = filters.first("before").map(|n| created_of(&n, &images));
    let since = filters.first("since").map(|n| created_of(&n, &images));
    for (bound, key) in [(&before, "before"), (&since, "since")] {
        if let Some(None) = bound {
            return error(StatusCode::NOT_FOUND, format!("No such image: {}", filters.first(key).unwrap_or_default()));
        }
    }
    images.retain(|image| {
        filters.matches(image)
            && before.flatten().is_none_or(|t| image.created < t)
            && since.flatten().is_none_or(|t| image.created > t)
    });
    for image in &mut images {
        filters.keep_matching_references(image);
    }
    // Labels live in the image configs: read them only when asked.
    if let Some(wanted) = filters.0.get("label") {
        let mut kept = Vec::new();
        for image in images {
            let config = match agent.inspect_image(InspectImageRequest { name: image.id.clone() }).await {
                Ok(reply) => {
                    serde_json::from_slice::<serde_json::Value>(&reply.into_inner().config_json).unwrap_or_default()
                }
                Err(status) => return agent_error(status),
            };
            let labels = &config["config"]["Labels"];
            let ok = wanted.iter().all(|w| match w.split_once('=') {
                Some((k, v)) => labels[k] == v,
                None => labels.get(w.as_str()).is_some(),
            });
            if ok {
                kept.push(image);
            }
        }
        images = kept;
    }
    json_response(StatusCode::OK, images_json(images))
}

/// Docker's image list filters: dangling, reference (globs), label, before, since.
struct ImageFilters(std::collections::HashMap<String, Vec<String>>);

impl ImageFilters {
    fn parse(text: &str) -> Result<ImageFilters, String> {
        let mut map = std::collections::HashMap::new();
        if text.trim().is_empty() || text.trim() == "{}" {
            return Ok(ImageFilters(map));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid filter: {e}"))?;
        for (key, values) in value.as_object().into_iter().flatten() {
            if !["dangling", "reference", "label", "before", "since"].contains(&key.as_str()) {
                return Err(format!("invalid filter '{key}'"));
            }
            let list: Vec<String> = match values {
                serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                serde_json::Value::Object(o) => o.keys().cloned().collect(),
                _ => Vec::new(),
            };
            map.insert(key.clone(), list);
        }
        Ok(ImageFilters(map))
    }

    fn first(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(|v| v.first().cloned())
    }

    fn matches(&self, image: &ImageSummary) -> bool {
        // Digest references count as Docker counts them: a pull by digest is
        // no dangling image.
        let dangling = image.tags.is_empty() && image.repo_digests.is_empty();
        let dangling_ok =
            self.0.get("dangling").is_none_or(|v| v.iter().any(|d| (d == "true" || d == "1") == dangling));
        let reference_ok = image.tags.iter().chain(&image.repo_digests).any(|r| self.reference_matches(r));
        dangling_ok && (reference_ok || !self.0.contains_key("reference"))
    }

    /// Whether a normalised reference (tag or digest) passes the
    /// `reference` filter: its familiar form or its repository matches a
    /// pattern (Docker's FamiliarMatch).
    fn reference_matches(&self, normalized: &str) -> bool {
        let Some(patterns) = self.0.get("reference") else { return true };
        let familiar = familiar(normalized);
        let repo = match familiar.split_once('@') {
            Some((repo, _)) => repo,
            None => familiar.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(familiar, |(r, _)| r),
        };
        patterns.iter().any(|p| glob(p, familiar) || glob(p, repo))
    }

    /// Docker lists only the references that match the filter.
    fn keep_matching_references(&self, image: &mut ImageSummary) {
        image.tags.retain(|t| self.reference_matches(t));
        image.repo_digests.retain(|d| self.reference_matches(d));
    }
}

/// `*` and `?` as Go's path.Match treats them (`*` stops at `/`).
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

pub fn images_json(mut images: Vec<ImageSummary>) -> serde_json::Value {
    images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    images
        .iter()
        .map(|image| {
            json!({
                "Id": image.id,
                "ParentId": "",
                "RepoTags": image.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
                "RepoDigests": image.repo_digests.iter().map(|d| familiar(d)).collect::<Vec<_>>(),
                "Created": image.created,
                "Size": image.size,
                "SharedSize": -1,
                "Labels": {},
                "Containers": -1,
            })
        })
        .collect()
}

/// `docker image inspect`.
pub async fn inspect(name: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    let reply = match agent.inspect_image(InspectImageRequest { name: name.to_string() }).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return agent_error(status),
    };
    let config: serde_json::Value = serde_json::from_slice(&reply.config_json).unwrap_or(serde_json::Value::Null);
    let image = reply.image.unwrap_or_default();
    let field = |key: &str| config.get(key).cloned().unwrap_or_else(|| json!(""));
    json_response(
        StatusCode::OK,
        json!({
            "Id": image.id,
            "RepoTags": image.tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
            "RepoDigests": image.repo_digests.iter().map(|d| familiar(d)).collect::<Vec<_>>(),
            "Parent": reply.parent,
            "Comment": field("comment"),
            "Container": field("container"),
            "ContainerConfig": with_go_fields(config.get("container_config")),
            "DockerVersion": field("docker_version"),
            "Created": field("created"),
            "Author": field("author"),
            "Config": with_go_fields(config.get("config")),
            "Architecture": field("architecture"),
            "Variant": config.get("variant").cloned().unwrap_or(serde_json::Value::Null),
            "Os": field("os"),
            "Size": image.size,
            "RootFS": {"Type": "layers", "Layers": reply.diff_ids},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        }),
    )
}

/// An image's container config as dockerd shows it: Go's
/// `container.Config`, whose fields without `omitempty` are always there
/// (clients read `Config.OnBuild` of an image that never had one).
fn with_go_fields(config: Option<&serde_json::Value>) -> serde_json::Value {
    let Some(serde_json::Value::Object(map)) = config else { return serde_json::Value::Null };
    let mut out = map.clone();
    for (key, zero) in [
        ("Hostname", json!("")),
        ("Domainname", json!("")),
        ("User", json!("")),
        ("AttachStdin", json!(false)),
        ("AttachStdout", json!(false)),
        ("AttachStderr", json!(false)),
        ("Tty", json!(false)),
        ("OpenStdin", json!(false)),
        ("StdinOnce", json!(false)),
        ("Env", serde_json::Value::Null),
        ("Cmd", serde_json::Value::Null),
        ("Image", json!("")),
        ("Volumes", serde_json::Value::Null),
        ("WorkingDir", json!("")),
        ("Entrypoint", serde_json::Value::Null),
        ("OnBuild", serde_json::Value::Null),
        ("Labels", serde_json::Value::Null),
    ] {
        out.entry(key).or_insert(zero);
    }
    serde_json::Value::Object(out)
}

/// `docker tag SOURCE REPO[:TAG]`: `?repo=REPO&tag=TAG`.
pub async fn tag(name: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let Some(repo) = query_param(query, "repo").filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "repository name (repo) is required");
    };
    let tag = query_param(query, "tag").filter(|t| !t.is_empty()).unwrap_or_else(|| "latest".into());
    let request = TagImageRequest { source: name.to_string(), target: format!("{repo}:{tag}") };
    match agent.tag_image(request).await {
        Ok(_) => {
            let mut response = Response::new(full(Bytes::new()));
            *response.status_mut() = StatusCode::CREATED;
            response
        }
        Err(status) => agent_error(status),
    }
}

/// `docker rmi NAME`: `?force=1` removes an image that several references name.
pub async fn remove(name: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let force = flag(query, "force");
    match agent.remove_image(RemoveImageRequest { name: name.to_string(), force }).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let untagged = reply.untagged.iter().map(|t| json!({ "Untagged": familiar(t) }));
            let deleted = reply.deleted.iter().map(|id| json!({ "Deleted": id }));
            json_response(StatusCode::OK, untagged.chain(deleted).collect())
        }
        Err(status) => agent_error(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_configs_carry_the_fields_go_always_writes() {
        let config = with_go_fields(Some(&json!({ "Cmd": ["sh"], "User": "app" })));
        assert_eq!(config["Cmd"], json!(["sh"]));
        assert_eq!(config["User"], "app");
        assert!(config.as_object().unwrap().contains_key("OnBuild") && config["OnBuild"].is_null());
        assert_eq!(config["Tty"], false);
        assert!(with_go_fields(None).is_null());
    }

    #[test]
    fn filters() {
        let image = |tags: &[&str]| ImageSummary {
            id: "sha256:1".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            size: 0,
            created: 0,
            repo_digests: Vec::new(),
        };
        let f = ImageFilters::parse(r#"{"reference":["busy*"]}"#).unwrap();
        assert!(f.matches(&image(&["docker.io/library/busybox:latest"])));
        assert!(!f.matches(&image(&["docker.io/library/alpine:3"])));
        let f = ImageFilters::parse(r#"{"dangling":{"true":true}}"#).unwrap();
        assert!(f.matches(&image(&[])) && !f.matches(&image(&["x:1"])));
        assert!(ImageFilters::parse(r#"{"bogus":["x"]}"#).is_err());
        // Only the matching references are listed; a digest matches by its repository.
        let f = ImageFilters::parse(r#"{"reference":["localhost:5000/app"]}"#).unwrap();
        let mut both = image(&["localhost:5000/app:1", "localhost:5000/other:2"]);
        both.repo_digests = vec![format!("localhost:5000/app@sha256:{}", "a".repeat(64))];
        assert!(f.matches(&both));
        f.keep_matching_references(&mut both);
        assert_eq!(both.tags, ["localhost:5000/app:1"]);
        assert_eq!(both.repo_digests.len(), 1);
        assert!(glob("me/*:1", "me/app:1") && !glob("*", "me/app"));
    }

    #[test]
    fn newest_images_first_in_dockers_shape() {
        let image = |id: &str, created: i64| ImageSummary {
            id: id.into(),
            tags: vec![format!("docker.io/library/{id}:1")],
            size: 10,
            created,
            repo_digests: vec![format!("docker.io/library/{id}@sha256:{}", "a".repeat(64))],
        };
        let listed = images_json(vec![image("old", 1), image("new", 2)]);
        assert_eq!(listed[0]["RepoTags"], json!(["new:1"]));
        assert_eq!(listed[1]["Created"], 1);
        assert_eq!(listed[0]["Size"], 10);
        assert_eq!(listed[0]["RepoDigests"], json!([format!("new@sha256:{}", "a".repeat(64))]));
    }
}
