//! Docker's event stream: what happened to containers and images, as
//! `docker events` shows it. Recent events are kept (bounded) so `--since`
//! can replay them; live ones go to every subscriber.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How many past events `since` can reach.
const HISTORY: usize = 1024;

pub struct Events {
    live: broadcast::Sender<Value>,
    history: Mutex<VecDeque<Value>>,
}

impl Default for Events {
    fn default() -> Self {
        Events { live: broadcast::channel(256).0, history: Mutex::new(VecDeque::with_capacity(HISTORY)) }
    }
}

impl Events {
    /// Records one event. `kind` is Docker's Type ("container", "image"),
    /// `attributes` its Actor attributes (name, image, exitCode...).
    pub fn emit(&self, kind: &str, action: &str, id: &str, attributes: Value) {
        let now = berth_engine::logfile::now_ns();
        let from = attributes["image"].clone();
        let mut event = json!({
            "Type": kind,
            "Action": action,
            "Actor": { "ID": id, "Attributes": attributes },
            "scope": "local",
            "time": now / 1_000_000_000,
            "timeNano": now,
        });
        // The pre-1.22 fields, which the CLI still prints from.
        if kind == "container" {
            event["status"] = action.into();
            event["id"] = id.into();
            event["from"] = from;
        }
        {
            let mut history = self.history.lock().unwrap();
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(event.clone());
        }
        let _ = self.live.send(event);
    }

    /// Past events from `since_ns` (none when 0) and a receiver for new ones.
    pub fn subscribe(&self, since_ns: i64) -> (Vec<Value>, broadcast::Receiver<Value>) {
        let history = self.history.lock().unwrap();
        let past = if since_ns > 0 {
            history.iter().filter(|e| e["timeNano"].as_i64().unwrap_or(0) >= since_ns).cloned().collect()
        } else {
            Vec::new()
        };
        (past, self.live.subscribe())
    }
}

/// Docker's event filters: type, event (action), container, image, label.
pub struct EventFilters(Vec<(String, Vec<String>)>);

impl EventFilters {
    pub fn parse(text: &str) -> Result<EventFilters, String> {
        if text.trim().is_empty() {
            return Ok(EventFilters(Vec::new()));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid filter: {e}"))?;
        let mut filters = Vec::new();
        for (key, values) in value.as_object().into_iter().flatten() {
            if !["type", "event", "container", "image", "label"].contains(&key.as_str()) {
                return Err(format!("invalid filter '{key}'"));
            }
            let list = match values {
                Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                Value::Object(o) => o.keys().cloned().collect(),
                _ => Vec::new(),
            };
            filters.push((key.clone(), list));
        }
        Ok(EventFilters(filters))
    }

    pub fn matches(&self, event: &Value) -> bool {
        let attributes = &event["Actor"]["Attributes"];
        let id = event["Actor"]["ID"].as_str().unwrap_or("");
        self.0.iter().all(|(key, wanted)| {
            wanted.iter().any(|w| match key.as_str() {
                "type" => event["Type"] == w.as_str(),
                "event" => event["Action"].as_str().is_some_and(|a| a == w || a.starts_with(&format!("{w}:"))),
                "container" => {
                    event["Type"] == "container" && (id.starts_with(w.as_str()) || attributes["name"] == w.as_str())
                }
                "image" => {
                    attributes["image"] == w.as_str() || (event["Type"] == "image" && id.starts_with(w.as_str()))
                }
                "label" => match w.split_once('=') {
                    Some((k, v)) => attributes[k] == v,
                    None => attributes.get(w).is_some(),
                },
                _ => false,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_filters() {
        let events = Events::default();
        events.emit("container", "start", "abc", json!({"name": "web", "image": "busybox"}));
        events.emit("image", "tag", "sha256:1", json!({"name": "x:1"}));
        let (past, _) = events.subscribe(1);
        assert_eq!(past.len(), 2);
        assert_eq!(past[0]["status"], "start");
        let only_containers = EventFilters::parse(r#"{"type":["container"]}"#).unwrap();
        assert!(only_containers.matches(&past[0]) && !only_containers.matches(&past[1]));
        assert!(EventFilters::parse(r#"{"container":{"web":true}}"#).unwrap().matches(&past[0]));
        assert!(EventFilters::parse(r#"{"bogus":["x"]}"#).is_err());
        assert!(events.subscribe(0).0.is_empty(), "no since: live events only");
    }
}
