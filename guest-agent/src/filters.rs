//! Docker's `filters` query parameter, as the list and prune calls take it:
//! JSON mapping a key to values, in the current `{"k": ["v"]}` form or the
//! older `{"k": {"v": true}}` one.

use serde_json::Value;
use tonic::Status;

pub type Filters = Vec<(String, Vec<String>)>;

/// Parses `text`, refusing keys outside `allowed` as Docker does.
pub fn parse(text: &str, allowed: &[&str]) -> Result<Filters, Status> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
    let mut filters = Vec::new();
    for (key, values) in value.as_object().into_iter().flatten() {
        if !allowed.contains(&key.as_str()) {
            return Err(Status::invalid_argument(format!("invalid filter '{key}'")));
        }
        let list = match values {
            Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => Vec::new(),
        };
        filters.push((key.clone(), list));
    }
    Ok(filters)
}

/// The values given for `key`.
pub fn values<'a>(filters: &'a Filters, key: &str) -> Option<&'a [String]> {
    filters.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
}

/// The `until` filter as dockerd reads it (container, image and network
/// prune): at most one value, a time or a Go duration before now (`5m`).
/// A value that is neither is refused, never taken as "no filter".
pub fn until_ns(values: Option<&[String]>) -> Result<Option<i64>, Status> {
    match values.unwrap_or_default() {
        [] => Ok(None),
        [one] => berth_agent_proto::time::filter_time_ns(one, berth_engine::logfile::now_ns())
            .map(Some)
            .map_err(Status::invalid_argument),
        _ => Err(Status::invalid_argument("more than one until filter specified")),
    }
}

/// Whether `labels` (a JSON object) has every `key` or `key=value` given.
pub fn labels_match(labels: &Value, wanted: &[String]) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => labels.get(w.as_str()).is_some(),
    })
}
