//! The engine-wide endpoints: `/version`, `/info`, `/events` and
//! `/system/df`.

use hyper::{Response, StatusCode};
use serde_json::json;

use super::body::json_lines;
use super::http::{agent_error, error, json_response, query_param, time_param, Body};
use super::http::{API_VERSION, MIN_API_VERSION};
use super::{images, ApiContext, ApiFacts};

pub fn version_json(facts: &ApiFacts) -> serde_json::Value {
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
pub async fn info(ctx: &ApiContext) -> Response<Body> {
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

/// `docker events`: JSON objects, one per line, as they happen.
pub async fn events(query: Option<&str>, ctx: &ApiContext) -> Response<Body> {
    let (since_ns, until_ns) = match (time_param(query, "since"), time_param(query, "until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(message), _) | (_, Err(message)) => return error(StatusCode::BAD_REQUEST, message),
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
pub async fn df(ctx: &ApiContext) -> Response<Body> {
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

pub(super) fn info_json(facts: &ApiFacts) -> serde_json::Value {
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
