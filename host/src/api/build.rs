//! `POST /build`: the classic builder's query and headers decoded
//! (research/build.md 1.1, 1.2, 1.6) into the agent's BuildOptions, the
//! context body streamed to the agent's BuildImage, and its JSON messages
//! streamed back. Errors before the build starts (a bad parameter, no
//! Dockerfile, a parse error) are HTTP errors, as dockerd's are.

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::build::BuildOptions;
use berth_agent_proto::{build_input::Kind, BuildInput};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::body::{drain, forward_body, json_lines};
use super::http::{agent_error, error, query_param, query_params, Body};
use super::ApiContext;

/// `httputils.BoolValue`: "", 0, no, false and none are false.
fn bool_value(value: &str) -> bool {
    !["", "0", "no", "false", "none"].contains(&value.trim().to_ascii_lowercase().as_str())
}

fn int_param(query: Option<&str>, name: &str) -> Result<i64, String> {
    match query_param(query, name).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| format!("strconv.ParseInt: parsing \"{v}\": invalid syntax")),
    }
}

fn json_param<T: serde::de::DeserializeOwned + Default>(query: Option<&str>, name: &str) -> Result<T, String> {
    match query_param(query, name).filter(|v| !v.is_empty()) {
        None => Ok(T::default()),
        Some(v) => serde_json::from_str(&v).map_err(|e| format!("unable to parse {name}: {e}")),
    }
}

/// X-Registry-Config: base64url of `{registry: AuthConfig}`; bad input
/// counts as none, as dockerd's getAuthConfigs does.
fn registry_config(req: &Request<Incoming>) -> std::collections::BTreeMap<String, serde_json::Value> {
    use base64::Engine;
    let Some(value) = req.headers().get("X-Registry-Config").and_then(|v| v.to_str().ok()) else {
        return Default::default();
    };
    let value = value.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The options of a build request, or dockerd's 400 for a bad one.
pub fn options(req: &Request<Incoming>, ctx: &ApiContext) -> Result<BuildOptions, String> {
    let query = req.uri().query();
    let boolean = |name: &str| query_param(query, name).is_some_and(|v| bool_value(&v));
    if query_param(query, "version").is_some_and(|v| v == "2") {
        return Err("BuildKit (version=2) is not supported by Berth: build with DOCKER_BUILDKIT=0".into());
    }
    if boolean("squash") {
        return Err("squash is only supported with experimental mode".into());
    }
    if let Some(isolation) = query_param(query, "isolation").filter(|i| !i.is_empty() && i != "default") {
        return Err(format!("Unsupported isolation: \"{isolation}\""));
    }
    if query_params(query, "securityopt").iter().any(|s| !s.is_empty()) {
        return Err("The daemon on this platform does not support setting security options on build".into());
    }
    if query_param(query, "remote").is_some_and(|r| !r.is_empty()) {
        return Err("Berth does not build from a remote context (a Git or HTTP URL) yet: clone or download it, then build the directory".into());
    }
    let version = super::router::split_version(req.uri().path()).0;
    let at_least = |min: (u32, u32)| {
        version
            .and_then(|v| v.split_once('.'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .is_none_or(|v: (u32, u32)| v >= min)
    };
    Ok(BuildOptions {
        dockerfile: query_param(query, "dockerfile").unwrap_or_default(),
        tags: query_params(query, "t").into_iter().filter(|t| !t.is_empty()).collect(),
        build_args: json_param(query, "buildargs")?,
        target: query_param(query, "target").unwrap_or_default(),
        platform: if at_least((1, 32)) { query_param(query, "platform").unwrap_or_default() } else { String::new() },
        labels: json_param(query, "labels")?,
        no_cache: boolean("nocache"),
        pull: boolean("pull"),
        // `rm` is true when absent.
        remove: query_param(query, "rm").is_none_or(|v| bool_value(&v)),
        force_remove: boolean("forcerm"),
        quiet: boolean("q"),
        cache_from: json_param(query, "cachefrom")?,
        network_mode: query_param(query, "networkmode").unwrap_or_default(),
        extra_hosts: query_params(query, "extrahosts").into_iter().filter(|h| !h.is_empty()).collect(),
        shm_size: int_param(query, "shmsize")?,
        memory: int_param(query, "memory")?,
        memory_swap: int_param(query, "memswap")?,
        cpu_shares: int_param(query, "cpushares")?,
        cpuset_cpus: query_param(query, "cpusetcpus").unwrap_or_default(),
        cpuset_mems: query_param(query, "cpusetmems").unwrap_or_default(),
        cpu_period: int_param(query, "cpuperiod")?,
        cpu_quota: int_param(query, "cpuquota")?,
        registry_auth: registry_config(req),
        registry_mirrors: ctx.facts.registry.mirrors.clone(),
        insecure_registries: ctx.facts.registry.insecure.clone(),
        aux: at_least((1, 30)),
    })
}

pub async fn build(req: Request<Incoming>, ctx: &ApiContext) -> Response<Body> {
    let options = match options(&req, ctx) {
        Ok(options) => options,
        Err(message) => {
            drain(req).await;
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<BuildInput>(16);
    let first = BuildInput { kind: Some(Kind::OptionsJson(serde_json::to_string(&options).unwrap_or_default())) };
    if tx.send(first).await.is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the build could not start");
    }
    let mut agent: AgentClient<Channel> = ctx.agent.clone();
    let pump = forward_body(req.into_body(), tx, |data| BuildInput { kind: Some(Kind::Context(data)) });
    match agent.build_image(ReceiverStream::new(rx)).await {
        Ok(reply) => json_lines(reply.into_inner(), b"\r\n"),
        Err(status) => {
            if let Ok(Err(err)) = pump.await {
                return error(StatusCode::BAD_REQUEST, format!("reading the build context: {err}"));
            }
            agent_error(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_as_dockerd_reads_them() {
        for t in ["1", "true", "True", "yes", "x"] {
            assert!(bool_value(t), "{t}");
        }
        for f in ["", "0", "False", "no", "none", " false "] {
            assert!(!bool_value(f), "{f}");
        }
    }
}

/// `POST /build/prune` (`docker builder prune`, and `docker system prune`):
/// Docker's BuildCachePruneReport. `until` is the filter the classic
/// builder's cache can honour (each entry knows when it was written);
/// `all` changes nothing, as no entry is in use between builds.
pub async fn prune(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let until = match prune_until(query) {
        Ok(until) => until,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let request = berth_agent_proto::PruneBuildCacheRequest { until };
    super::http::agent_json(agent.prune_build_cache(request).await)
}

/// The `until` filter as Unix seconds (0: none); other filters and a
/// storage to keep are refused rather than ignored, so a prune never
/// removes more than was asked.
fn prune_until(query: Option<&str>) -> Result<i64, String> {
    if int_param(query, "keep-storage")? != 0 {
        return Err("keep-storage is not supported by Berth's build cache (its entries have no sizes)".into());
    }
    let filters: serde_json::Map<String, serde_json::Value> = json_param(query, "filters")?;
    let mut until = 0;
    for (key, values) in &filters {
        let values: Vec<&str> = match values {
            serde_json::Value::Array(a) => a.iter().filter_map(serde_json::Value::as_str).collect(),
            serde_json::Value::Object(o) => o.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        match (key.as_str(), values.as_slice()) {
            ("until", []) => {}
            ("until", [one]) => {
                let now = berth_agent_proto::time::now_ns();
                until = berth_agent_proto::time::filter_time_ns(one, now)? / 1_000_000_000;
            }
            ("until", _) => return Err("more than one until filter specified".into()),
            (other, _) => return Err(format!("invalid filter '{other}'")),
        }
    }
    Ok(until)
}

#[cfg(test)]
mod prune_tests {
    use super::prune_until;

    #[test]
    fn prune_takes_until_and_refuses_what_it_cannot_honour() {
        assert_eq!(prune_until(None), Ok(0));
        assert_eq!(prune_until(Some("all=1")), Ok(0));
        let hour_ago = prune_until(Some("filters=%7B%22until%22%3A%5B%221h%22%5D%7D")).unwrap();
        let now = berth_agent_proto::time::now_ns() / 1_000_000_000;
        assert!((now - 3600 - hour_ago).abs() <= 2, "{hour_ago} vs {now}");
        assert_eq!(prune_until(Some("filters=%7B%22id%22%3A%5B%22x%22%5D%7D")), Err("invalid filter 'id'".into()));
        assert!(prune_until(Some("keep-storage=1000")).unwrap_err().contains("keep-storage"));
    }
}
