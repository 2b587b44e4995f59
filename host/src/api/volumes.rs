//! `/volumes`: forwarded to the engine's named volumes.

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{JsonRequest, ListVolumesRequest, PruneVolumesRequest, RemoveVolumeRequest, VolumeRef};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tonic::transport::Channel;

use super::containers::{empty, flag, raw_json};
use super::{agent_error, query_param, Body};

pub async fn route(mut req: Request<Incoming>, path: &str, agent: AgentClient<Channel>) -> Option<Response<Body>> {
    let mut agent = agent;
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    let name = path.strip_prefix("/volumes").unwrap_or("").trim_start_matches('/').to_string();
    let name = super::percent_decode(&name);
    let method = req.method().clone();
    let json = |result: Result<tonic::Response<berth_agent_proto::JsonResponse>, tonic::Status>| match result {
        Ok(reply) => raw_json(reply.into_inner().json),
        Err(status) => agent_error(status),
    };
    Some(match (&method, name.as_str()) {
        (&Method::GET, "") => {
            let request =
                ListVolumesRequest { filters_json: query_param(query, "filters").unwrap_or_default(), usage: false };
            json(agent.list_volumes(request).await)
        }
        (&Method::POST, "create") => {
            let body = match super::read_json_body(&mut req, 1 << 20, true).await {
                Ok(body) => body,
                Err(response) => return Some(response),
            };
            match agent.create_volume(JsonRequest { json: body.to_vec() }).await {
                Ok(reply) => {
                    let mut response = raw_json(reply.into_inner().json);
                    *response.status_mut() = StatusCode::CREATED;
                    response
                }
                Err(status) => agent_error(status),
            }
        }
        (&Method::POST, "prune") => {
            let request = PruneVolumesRequest { filters_json: query_param(query, "filters").unwrap_or_default() };
            json(agent.prune_volumes(request).await)
        }
        (&Method::GET, name) => json(agent.inspect_volume(VolumeRef { name: name.to_string() }).await),
        (&Method::DELETE, name) => {
            let request = RemoveVolumeRequest { name: name.to_string(), force: flag(query, "force") };
            match agent.remove_volume(request).await {
                Ok(_) => empty(StatusCode::NO_CONTENT),
                Err(status) => agent_error(status),
            }
        }
        _ => return None,
    })
}
