//! `/networks`: forwarded to the engine's networks in the agent (the
//! predefined `bridge`, `host` and `none`, and user-defined bridges). The
//! bodies are checked here as dockerd's decoder checks them.

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{
    docker_json, ConnectNetworkRequest, DisconnectNetworkRequest, JsonRequest, ListNetworksRequest, NetworkRef,
    PruneNetworksRequest, RemoveLinkRequest,
};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use tonic::transport::Channel;

use super::body::read_json_body;
use super::http::{agent_error, agent_json, empty, error, query_param, Body};

/// `network prune`'s filters, refused as dockerd refuses them: `until` is a
/// time or a Go duration before now (`5m`), once at most.
fn check_prune_filters(query: Option<&str>) -> Result<(), String> {
    let Some(text) = query_param(query, "filters").filter(|f| !f.is_empty()) else { return Ok(()) };
    let filters: Value = serde_json::from_str(&text).map_err(|e| format!("invalid filter: {e}"))?;
    for (key, values) in filters.as_object().into_iter().flatten() {
        let values: Vec<&str> = match values {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::Object(o) => o.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        match (key.as_str(), values.as_slice()) {
            ("label" | "label!", _) | ("until", []) => {}
            ("until", [one]) => {
                berth_agent_proto::time::filter_time_ns(one, berth_agent_proto::time::now_ns())?;
            }
            ("until", _) => return Err("more than one until filter specified".into()),
            (other, _) => return Err(format!("invalid filter '{other}'")),
        }
    }
    Ok(())
}

/// `POST /networks/create`: 201 `{Id, Warning}`.
pub async fn create(mut req: Request<Incoming>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let body = match read_json_body(&mut req, 1 << 20, true).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(message) = docker_json::parse(&docker_json::NETWORK_CREATE, &body) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let mut response = agent_json(agent.create_network(JsonRequest { json: body.to_vec() }).await);
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
    }
    response
}

pub async fn list(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let request = ListNetworksRequest { filters_json: query_param(query, "filters").unwrap_or_default() };
    agent_json(agent.list_networks(request).await)
}

pub async fn prune(query: Option<&str>, mut agent: AgentClient<Channel>) -> Response<Body> {
    if let Err(message) = check_prune_filters(query) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let request = PruneNetworksRequest { filters_json: query_param(query, "filters").unwrap_or_default() };
    agent_json(agent.prune_networks(request).await)
}

pub async fn inspect(name: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    agent_json(agent.inspect_network(NetworkRef { network: name.to_string() }).await)
}

pub async fn remove(name: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    match agent.remove_network(NetworkRef { network: name.to_string() }).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

/// `DELETE /containers/{name}?link=1`: `name` is a legacy link's name,
/// `parent/alias` (dockerd's rmLink; a name without a parent is the
/// container's own, which dockerd refuses to unlink).
pub async fn remove_link(name: &str, mut agent: AgentClient<Channel>) -> Response<Body> {
    let name = name.trim_start_matches('/');
    let (parent, alias) = name.rsplit_once('/').unwrap_or((name, ""));
    let request = RemoveLinkRequest { parent: parent.to_string(), alias: alias.to_string() };
    match agent.remove_link(request).await {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(status) => agent_error(status),
    }
}

/// The `{"Container": ..., ...}` body of connect and disconnect.
async fn container_body(req: &mut Request<Incoming>) -> Result<(String, Value), Response<Body>> {
    let body = read_json_body(req, 1 << 20, true).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !value.is_object() {
        return Err(error(StatusCode::BAD_REQUEST, "the request body must be a JSON object"));
    }
    let container = match &value["Container"] {
        Value::String(name) if !name.is_empty() => name.clone(),
        Value::String(_) | Value::Null => {
            return Err(error(StatusCode::BAD_REQUEST, "container is required"));
        }
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "json: cannot unmarshal into Go struct field NetworkConnect.Container of type string",
            ))
        }
    };
    Ok((container, value))
}

/// `POST /networks/{id}/connect`: 200 with an empty body, as dockerd.
pub async fn connect(network: &str, mut req: Request<Incoming>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let (container, body) = match container_body(&mut req).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let endpoint = &body["EndpointConfig"];
    if !endpoint.is_null() && !endpoint.is_object() {
        return error(StatusCode::BAD_REQUEST, "EndpointConfig must be an object");
    }
    let endpoint_config_json = if endpoint.is_null() { Vec::new() } else { endpoint.to_string().into_bytes() };
    let request = ConnectNetworkRequest { network: network.to_string(), container, endpoint_config_json };
    match agent.connect_network(request).await {
        Ok(_) => empty(StatusCode::OK),
        Err(status) => agent_error(status),
    }
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(network: &str, mut req: Request<Incoming>, mut agent: AgentClient<Channel>) -> Response<Body> {
    let (container, body) = match container_body(&mut req).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let force = body["Force"].as_bool().unwrap_or(false);
    let request = DisconnectNetworkRequest { network: network.to_string(), container, force };
    match agent.disconnect_network(request).await {
        Ok(_) => empty(StatusCode::OK),
        Err(status) => agent_error(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_filters_take_go_durations() {
        let query = |filters: &str| format!("filters={filters}");
        assert_eq!(check_prune_filters(Some(&query(r#"{"until":["5m"]}"#))), Ok(()));
        assert_eq!(check_prune_filters(Some(&query(r#"{"until":["1h30m"],"label":["a"]}"#))), Ok(()));
        assert_eq!(
            check_prune_filters(Some(&query(r#"{"until":["xyz"]}"#))),
            Err("failed to parse value as time or duration: \"xyz\"".into())
        );
        assert_eq!(
            check_prune_filters(Some(&query(r#"{"until":["5m","6m"]}"#))),
            Err("more than one until filter specified".into())
        );
        assert!(check_prune_filters(Some(&query(r#"{"name":["x"]}"#))).is_err());
    }
}
