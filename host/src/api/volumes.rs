//! `/volumes`: forwarded to the engine's named volumes.

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{JsonRequest, ListVolumesRequest, PruneVolumesRequest, RemoveVolumeRequest, VolumeRef};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tonic::transport::Channel;

use super::body::read_json_body;
use super::http::{agent_error, agent_json, empty, flag, query_param, Body};

pub async fn list(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = ListVolumesRequest { filters_json: query_param(query, "filters").unwrap_or_default(), usage: false };
    agent_json(agent.list_volumes(request).await)
}

pub async fn create(mut req: Request<Incoming>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let body = match read_json_body(&mut req, 1 << 20, true).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut response = agent_json(agent.create_volume(JsonRequest { json: body.to_vec() }).await);
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
    }
    response
}

pub async fn prune(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = PruneVolumesRequest { filters_json: query_param(query, "filters").unwrap_or_default() };
    agent_json(agent.prune_volumes(request).await)
}

pub async fn inspect(name: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    agent_json(agent.inspect_volume(VolumeRef { name: name.to_string() }).await)
}

pub async fn remove(name: &str, query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = RemoveVolumeRequest { name: name.to_string(), force: flag(query, "force") };
    match agent.remove_volume(request).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}
