//! The record as Docker shows it: `docker inspect`, `docker ps`.

use std::path::Path;

use serde_json::{json, Value};

use super::config::{str_slice, NetworkMode};
use super::{rfc3339, Container, Status};

impl Container {
    /// Docker's `GET /containers/{id}/json`.
    pub fn inspect(&self, dir: &Path, volumes_root: &Path) -> Value {
        let paths = crate::container_dir::ContainerDir::new(dir);
        let s = &self.state;
        let args: Vec<Value> = self.process_args().into_iter().skip(1).map(Value::String).collect();
        let mut inspect = json!({
            "Id": self.id,
            "Created": rfc3339(self.created_ns),
            "Path": self.process_args().first().cloned().unwrap_or_default(),
            "Args": args,
            "State": {
                "Status": s.status.as_str(),
                "Running": s.status.is_running(),
                "Paused": s.status == Status::Paused,
                "Restarting": s.status == Status::Restarting,
                "OOMKilled": s.oom_killed,
                "Dead": s.status == Status::Dead,
                "Pid": if s.status.is_running() { s.pid } else { 0 },
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": rfc3339(s.started_at_ns),
                "FinishedAt": rfc3339(s.finished_at_ns),
            },
            "Image": self.image_id,
            "ResolvConfPath": paths.resolv_conf(),
            "HostnamePath": paths.hostname(),
            "HostsPath": paths.hosts(),
            "LogPath": paths.log(),
            "Name": format!("/{}", self.name),
            "RestartCount": self.restart_count,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": Value::Null,
            "HostConfig": self.host_config,
            "GraphDriver": {
                "Name": "overlay2",
                "Data": {
                    "LowerDir": self.layers.iter().rev().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
                    "UpperDir": paths.upper(),
                    "WorkDir": paths.layer().work,
                    "MergedDir": dir.join("rootfs"),
                },
            },
            "Mounts": self.mounts_json(volumes_root),
            "Config": self.config,
            "NetworkSettings": self.network_settings(),
        });
        if let Some(health) = &s.health {
            inspect["State"]["Health"] = json!(health);
        }
        inspect
    }

    pub fn process_args(&self) -> Vec<String> {
        let mut args = str_slice(&self.config.entrypoint).unwrap_or_default();
        args.extend(str_slice(&self.config.cmd).unwrap_or_default());
        args
    }

    /// The network `docker ps` names: the default one is `bridge`.
    fn network_mode(&self) -> String {
        match self.host_config.network_mode.get() {
            None | Some(NetworkMode::Default) => "bridge".into(),
            Some(mode) => mode.name(),
        }
    }

    /// Config's ExposedPorts, as the shared port views read it.
    fn exposed_ports(&self) -> Value {
        json!({ "ExposedPorts": self.config.exposed_ports })
    }

    fn network_settings(&self) -> Value {
        // dockerd shows ports only while the container's sandbox exists.
        let ports = if self.state.status.is_running() {
            berth_agent_proto::ports::network_settings_ports(&self.exposed_ports(), &self.published_ports)
        } else {
            json!({})
        };
        // Until container networking lands, a non-host container has only
        // loopback: no addresses to report, which is the truth.
        json!({
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": false,
            "Ports": ports,
            "SandboxKey": "",
            "IPAddress": "",
            "IPPrefixLen": 0,
            "Gateway": "",
            "MacAddress": "",
            "Networks": {},
        })
    }

    /// Docker's `docker ps` status text ("Up 5 seconds", "Exited (0) 2 minutes ago").
    pub fn status_text(&self, now_ns: i64) -> String {
        let s = &self.state;
        match s.status {
            Status::Created => "Created".into(),
            Status::Running => match &s.health {
                Some(health) => format!("Up {} ({})", human_duration(now_ns - s.started_at_ns), health.summary()),
                None => format!("Up {}", human_duration(now_ns - s.started_at_ns)),
            },
            Status::Paused => format!("Up {} (Paused)", human_duration(now_ns - s.started_at_ns)),
            Status::Restarting => {
                format!("Restarting ({}) {} ago", s.exit_code, human_duration(now_ns - s.finished_at_ns))
            }
            Status::Removing => "Removal In Progress".into(),
            Status::Exited => format!("Exited ({}) {} ago", s.exit_code, human_duration(now_ns - s.finished_at_ns)),
            Status::Dead => "Dead".into(),
        }
    }

    /// Docker's `GET /containers/json` entry.
    pub fn summary(&self, now_ns: i64, volumes_root: &Path) -> Value {
        let command = self
            .process_args()
            .iter()
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { a.clone() })
            .collect::<Vec<_>>()
            .join(" ");
        json!({
            "Id": self.id,
            "Names": [format!("/{}", self.name)],
            "Image": self.image,
            "ImageID": self.image_id,
            "Command": command,
            "Created": self.created_ns / 1_000_000_000,
            "Ports": if self.state.status.is_running() {
                berth_agent_proto::ports::summary_ports(&self.exposed_ports(), &self.published_ports)
            } else {
                json!([])
            },
            "Labels": self.config.labels,
            "State": self.state.status.as_str(),
            "Status": self.status_text(now_ns),
            "HostConfig": { "NetworkMode": self.network_mode() },
            "NetworkSettings": { "Networks": {} },
            "Mounts": self.mounts_json(volumes_root),
        })
    }
}

/// Go's `units.HumanDuration`, which `docker ps` shows.
pub fn human_duration(ns: i64) -> String {
    let secs = (ns.max(0) / 1_000_000_000) as u64;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if (s as f64 / 3600.0).round() as u64 == 1 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", (s as f64 / 3600.0).round() as u64),
        s if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86_400),
        s if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 86_400)),
        s if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86_400)),
        s => format!("{} years", s / (365 * 86_400)),
    }
}
