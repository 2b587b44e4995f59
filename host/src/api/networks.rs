//! `/networks`: Docker's three predefined networks, as they really are
//! today. `bridge` (the default) gives a container its own network
//! namespace with loopback only: no subnet, gateway or addresses, so IPAM
//! reports none. `host` shares the VM's network; `none` is loopback only.
//! Creating, connecting and removing networks arrives with container
//! networking; until then those calls fail clearly.

use berth_agent_proto::docker_json;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::body::read_json_body;
use super::http::{error, json_response, query_param, Body};

const PREDEFINED: [(&str, &str); 3] = [("bridge", "bridge"), ("host", "host"), ("none", "null")];

/// A stable 64-hex ID per predefined network (sha256 of its name).
fn network_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("berth-network-{name}").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn network_json(name: &str, driver: &str) -> Value {
    json!({
        "Name": name,
        "Id": network_id(name),
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": null, "Config": [] },
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

fn find(key: &str) -> Option<(&'static str, &'static str)> {
    PREDEFINED.iter().copied().find(|(name, _)| *name == key || (key.len() >= 3 && network_id(name).starts_with(key)))
}

/// Docker's name/id/driver/type filters on the predefined networks.
fn matches(filters: &Value, name: &str, driver: &str) -> Result<bool, String> {
    let Some(map) = filters.as_object() else { return Ok(true) };
    for (key, values) in map {
        let wanted: Vec<String> = match values {
            Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let ok = match key.as_str() {
            "name" => wanted.iter().any(|w| name.contains(w.as_str())),
            "id" => wanted.iter().any(|w| network_id(name).starts_with(w.as_str())),
            "driver" => wanted.iter().any(|w| w == driver),
            "type" => wanted.iter().any(|w| w == "builtin"),
            "scope" => wanted.iter().any(|w| w == "local"),
            "label" | "dangling" => wanted.is_empty(),
            other => return Err(format!("invalid filter '{other}'")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

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

/// `POST /networks/create`: a malformed request is refused as dockerd
/// refuses it, before the "not yet" that a well-formed one gets.
pub async fn create(mut req: Request<Incoming>) -> Response<Body> {
    let body = match read_json_body(&mut req, 1 << 20, true).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(message) = docker_json::parse(&docker_json::NETWORK_CREATE, &body) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    error(
        StatusCode::NOT_IMPLEMENTED,
        "Berth cannot create networks yet: user-defined networks arrive with container networking",
    )
}

pub fn list(query: Option<&str>) -> Response<Body> {
    let filters: Value = match query_param(query, "filters").filter(|f| !f.is_empty()) {
        Some(text) => match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid filter: {e}")),
        },
        None => Value::Null,
    };
    let mut listed = Vec::new();
    for (name, driver) in PREDEFINED {
        match matches(&filters, name, driver) {
            Ok(true) => listed.push(network_json(name, driver)),
            Ok(false) => {}
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        }
    }
    json_response(StatusCode::OK, Value::Array(listed))
}

pub fn prune(query: Option<&str>) -> Response<Body> {
    match check_prune_filters(query) {
        // The predefined networks are never pruned, and there are no others.
        Ok(()) => json_response(StatusCode::OK, json!({ "NetworksDeleted": [] })),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

fn not_found(name: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, format!("network {name} not found"))
}

pub fn inspect(name: &str) -> Response<Body> {
    match find(name) {
        Some((name, driver)) => json_response(StatusCode::OK, network_json(name, driver)),
        None => not_found(name),
    }
}

pub fn remove(name: &str) -> Response<Body> {
    match find(name) {
        Some((name, _)) => {
            error(StatusCode::FORBIDDEN, format!("{name} is a pre-defined network and cannot be removed"))
        }
        None => not_found(name),
    }
}

/// `connect` and `disconnect`.
pub fn connect(name: &str) -> Response<Body> {
    match find(name) {
        Some(_) => error(
            StatusCode::NOT_IMPLEMENTED,
            "Berth cannot connect containers to networks yet: that arrives with container networking",
        ),
        None => not_found(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_networks_by_name_and_id() {
        assert_eq!(find("bridge").unwrap().0, "bridge");
        assert_eq!(find(&network_id("host")[..12]).unwrap().0, "host");
        assert!(find("mynet").is_none());
        assert!(matches(&json!({"name": ["bri"]}), "bridge", "bridge").unwrap());
        assert!(!matches(&json!({"driver": ["host"]}), "bridge", "bridge").unwrap());
        assert!(matches(&json!({"bogus": ["x"]}), "bridge", "bridge").is_err());
    }

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
