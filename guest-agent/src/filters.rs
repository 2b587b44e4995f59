//! Docker's `filters` query parameter, as the list and prune calls take it:
//! JSON mapping a key to values, in the current `{"k": ["v"]}` form or the
//! older `{"k": {"v": true}}` one.

use std::collections::HashMap;

use berth_engine::container::{Container, Status as ContainerStatus};
use serde_json::Value;

use crate::error::AgentError;

pub type Filters = Vec<(String, Vec<String>)>;

/// Parses `text`, refusing keys outside `allowed` as Docker does.
pub fn parse(text: &str, allowed: &[&str]) -> Result<Filters, AgentError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| AgentError::invalid(format!("invalid filter: {e}")))?;
    let mut filters = Vec::new();
    for (key, values) in value.as_object().into_iter().flatten() {
        if !allowed.contains(&key.as_str()) {
            return Err(AgentError::invalid(format!("invalid filter '{key}'")));
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
pub fn until_ns(values: Option<&[String]>) -> Result<Option<i64>, AgentError> {
    match values.unwrap_or_default() {
        [] => Ok(None),
        [one] => berth_agent_proto::time::filter_time_ns(one, berth_engine::logfile::now_ns())
            .map(Some)
            .map_err(AgentError::invalid),
        _ => Err(AgentError::invalid("more than one until filter specified")),
    }
}

/// Whether `labels` (a JSON object) has every `key` or `key=value` given.
pub fn labels_match(labels: &Value, wanted: &[String]) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => labels.get(w.as_str()).is_some(),
    })
}

/// Docker's container list filters.
pub struct ContainerFilters(HashMap<String, Vec<String>>);

impl ContainerFilters {
    /// Prune takes `label` (and `label!`) and `until` only.
    pub fn parse_prune(text: &str) -> Result<ContainerFilters, AgentError> {
        Ok(ContainerFilters(parse(text, &["label", "label!", "until"])?.into_iter().collect()))
    }

    pub fn parse(text: &str) -> Result<ContainerFilters, AgentError> {
        if text.trim().is_empty() {
            return Ok(ContainerFilters(HashMap::new()));
        }
        // Both {"k": ["v"]} and the older {"k": {"v": true}} forms.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| AgentError::invalid(format!("invalid filter: {e}")))?;
        let mut map = HashMap::new();
        for (key, values) in value.as_object().into_iter().flatten() {
            let list: Vec<String> = match values {
                serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                serde_json::Value::Object(items) => items.keys().cloned().collect(),
                _ => return Err(AgentError::invalid(format!("invalid filter '{key}'"))),
            };
            match key.as_str() {
                "id" | "name" | "label" | "status" | "ancestor" | "before" | "since" | "exited" | "health" => {}
                other => return Err(AgentError::invalid(format!("invalid filter '{other}'"))),
            }
            if key == "status" {
                for status in &list {
                    if !["created", "restarting", "running", "removing", "paused", "exited", "dead"]
                        .contains(&status.as_str())
                    {
                        return Err(AgentError::invalid(format!("invalid filter 'status={status}'")));
                    }
                }
            }
            if key == "health" {
                use berth_engine::health::{HEALTHY, NONE, STARTING, UNHEALTHY};
                if let Some(bad) = list.iter().find(|h| ![STARTING, HEALTHY, UNHEALTHY, NONE].contains(&h.as_str())) {
                    // dockerd's words (and spelling).
                    return Err(AgentError::invalid(format!("Unrecognised filter value for health: {bad}")));
                }
            }
            map.insert(key.clone(), list);
        }
        Ok(ContainerFilters(map))
    }

    pub fn values(&self, key: &str) -> Option<&[String]> {
        self.0.get(key).map(Vec::as_slice)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn one(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(|v| v.first().cloned())
    }

    pub fn matches(&self, c: &Container) -> bool {
        let any = |key: &str, test: &dyn Fn(&str) -> bool| self.0.get(key).is_none_or(|vs| vs.iter().any(|v| test(v)));
        let labels = &serde_json::to_value(&c.config.labels).unwrap_or_default();
        any("id", &|v| c.id.starts_with(v))
            && any("name", &|v| c.name.contains(v.trim_start_matches('/')))
            && any("status", &|v| c.state.status.as_str() == v)
            && any("health", &|v| c.state.health.as_ref().map_or(berth_engine::health::NONE, |h| &h.status) == v)
            && any("exited", &|v| c.state.status == ContainerStatus::Exited && v.parse() == Ok(c.state.exit_code))
            && any("ancestor", &|v| {
                c.image == v
                    || c.image_id.starts_with(v)
                    || c.image_id.trim_start_matches("sha256:").starts_with(v)
                    || berth_engine::reference::normalize(v).ok().as_deref()
                        == berth_engine::reference::normalize(&c.image).ok().as_deref()
            })
            && self.0.get("label").is_none_or(|vs| labels_match(labels, vs))
            // dockerd (prune's matchLabels): kept when it has every label
            // given with `label!`.
            && self.0.get("label!").is_none_or(|vs| !labels_match(labels, vs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, labels: serde_json::Value, status: ContainerStatus) -> Container {
        let state = berth_engine::container::State { status, ..Default::default() };
        Container {
            id: "abcdef".into(),
            name: name.into(),
            created_ns: 1,
            image: "busybox".into(),
            image_id: "sha256:0123".into(),
            config: serde_json::from_value(serde_json::json!({ "Labels": labels })).unwrap(),
            host_config: Default::default(),
            layers: Vec::new(),
            state,
            restart_count: 0,
            volumes: Vec::new(),
            binds_from: Vec::new(),
            published_ports: Vec::new(),
        }
    }

    #[test]
    fn container_prune_takes_label_and_until_only() {
        let filters = ContainerFilters::parse_prune(r#"{"label": ["a=1"], "until": {"5m": true}}"#).unwrap();
        assert_eq!(filters.values("label"), Some(&["a=1".to_string()][..]));
        assert_eq!(filters.values("until"), Some(&["5m".to_string()][..]));
        let err = ContainerFilters::parse_prune(r#"{"status": ["exited"]}"#).err().unwrap();
        assert_eq!(err.to_string(), "invalid filter 'status'");
        assert!(ContainerFilters::parse_prune("  ").unwrap().values("label").is_none());
    }

    #[test]
    fn container_list_filters_refuse_what_docker_refuses() {
        for (text, message) in [
            (r#"{"status": ["sleeping"]}"#, "invalid filter 'status=sleeping'"),
            (r#"{"colour": ["red"]}"#, "invalid filter 'colour'"),
            (r#"{"name": "x"}"#, "invalid filter 'name'"),
        ] {
            assert_eq!(ContainerFilters::parse(text).err().unwrap().to_string(), message, "{text}");
        }
    }

    #[test]
    fn container_list_filters_match_labels_names_and_status() {
        let web = container("web-1", serde_json::json!({"tier": "front"}), ContainerStatus::Running);
        let filters = ContainerFilters::parse(r#"{"label": ["tier=front"], "name": ["/web"]}"#).unwrap();
        assert!(filters.matches(&web));
        assert!(!ContainerFilters::parse(r#"{"label": ["tier=back"]}"#).unwrap().matches(&web));
        assert!(!ContainerFilters::parse(r#"{"status": ["exited"]}"#).unwrap().matches(&web));
        assert!(ContainerFilters::parse(r#"{"ancestor": ["busybox:latest"]}"#).unwrap().matches(&web));
        assert!(ContainerFilters::parse(r#"{"id": ["abc"]}"#).unwrap().matches(&web));
    }

    #[test]
    fn the_health_filter_reads_the_health_status_and_none_without_a_check() {
        let mut web = container("web", serde_json::json!({}), ContainerStatus::Running);
        let none = ContainerFilters::parse(r#"{"health": ["none"]}"#).unwrap();
        let healthy = ContainerFilters::parse(r#"{"health": ["healthy"]}"#).unwrap();
        assert!(none.matches(&web) && !healthy.matches(&web));
        let mut health = berth_engine::health::Health::start(None);
        health.status = "healthy".into();
        web.state.health = Some(health);
        assert!(!none.matches(&web) && healthy.matches(&web));
        let err = ContainerFilters::parse(r#"{"health": ["fine"]}"#).err().unwrap();
        assert_eq!(err.to_string(), "Unrecognised filter value for health: fine");
    }
}
