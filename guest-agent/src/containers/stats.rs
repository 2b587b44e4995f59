//! What is inside a container: Docker's `stats` and `top` (from its
//! cgroup) and `diff` (its writable layer).

use std::sync::Arc;

use berth_engine::container;
use berth_engine::logfile;

use crate::error::AgentError;

use super::Containers;

impl Containers {
    /// Docker's `top`: the container's processes as `ps -ef` shows them.
    pub async fn top(self: &Arc<Self>, name: &str) -> Result<serde_json::Value, AgentError> {
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        if !record.state.status.is_running() {
            return Err(AgentError::conflict(format!("Container {} is not running", record.id)));
        }
        let pids = match &self.cgroup_root {
            Some(root) => berth_engine::cgroup::pids(&berth_engine::cgroup::container_cgroup(root, &record.id)),
            None => vec![record.state.pid],
        };
        let processes: Vec<Vec<String>> = pids.iter().filter_map(|pid| crate::sysinfo::ps_row(*pid)).collect();
        Ok(serde_json::json!({
            "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
            "Processes": processes,
        }))
    }

    /// Docker's stats JSON from the container's cgroup; `previous` is the
    /// last sample (Docker's precpu_stats).
    pub async fn stats(
        self: &Arc<Self>,
        name: &str,
        previous: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, AgentError> {
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        let running = record.state.status.is_running();
        let stats = match (&self.cgroup_root, running) {
            (Some(root), true) => {
                berth_engine::cgroup::stats(&berth_engine::cgroup::container_cgroup(root, &record.id))
            }
            _ => Default::default(),
        };
        let cpus = crate::sysinfo::online_cpus();
        let memory_stat: serde_json::Map<String, serde_json::Value> =
            stats.memory_stat.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
        let limit = if stats.memory_limit > 0 { stats.memory_limit } else { crate::sysinfo::meminfo().total };
        let empty_cpu = serde_json::json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "system_cpu_usage": 0, "online_cpus": cpus, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}});
        let precpu = previous.map(|p| p["cpu_stats"].clone()).unwrap_or(empty_cpu);
        let preread = previous.map(|p| p["read"].clone()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
        Ok(serde_json::json!({
            "read": container::rfc3339(logfile::now_ns()),
            "preread": preread,
            "id": record.id,
            "name": format!("/{}", record.name),
            "num_procs": 0,
            "pids_stats": if running { serde_json::json!({"current": stats.pids_current, "limit": stats.pids_limit}) } else { serde_json::json!({}) },
            "cpu_stats": {
                "cpu_usage": {
                    "total_usage": stats.cpu_usage_ns,
                    "usage_in_kernelmode": stats.cpu_system_ns,
                    "usage_in_usermode": stats.cpu_user_ns,
                },
                "system_cpu_usage": crate::sysinfo::system_cpu_ns(),
                "online_cpus": cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
            },
            "precpu_stats": precpu,
            "memory_stats": if running { serde_json::json!({"usage": stats.memory_usage, "limit": limit, "stats": memory_stat}) } else { serde_json::json!({}) },
            "blkio_stats": {
                "io_service_bytes_recursive": [
                    {"major": 0, "minor": 0, "op": "read", "value": stats.io_read_bytes},
                    {"major": 0, "minor": 0, "op": "write", "value": stats.io_write_bytes},
                ],
                "io_serviced_recursive": null, "io_queue_recursive": null, "io_service_time_recursive": null,
                "io_wait_time_recursive": null, "io_merged_recursive": null, "io_time_recursive": null, "sectors_recursive": null,
            },
            "storage_stats": {},
            "networks": {},
        }))
    }

    /// Docker's stats stream: a sample a second while `stream`, else one
    /// sample with a real precpu (a second reading a moment later).
    pub async fn stats_samples(
        self: &Arc<Self>,
        id: String,
        stream: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<serde_json::Value>, AgentError> {
        let first = self.stats(&id, None).await?;
        let containers = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut previous = first;
            if !stream {
                tokio::time::sleep(std::time::Duration::from_millis(if containers.is_running(&id) { 500 } else { 0 }))
                    .await;
                if let Ok(sample) = containers.stats(&id, Some(&previous)).await {
                    let _ = tx.send(sample).await;
                }
                return;
            }
            loop {
                if tx.send(previous.clone()).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                match containers.stats(&id, Some(&previous)).await {
                    Ok(sample) => previous = sample,
                    Err(_) => return,
                }
            }
        });
        Ok(rx)
    }

    /// `docker diff`: the changes in the container's writable layer.
    pub async fn changes(self: &Arc<Self>, name: &str) -> Result<serde_json::Value, AgentError> {
        let entry = self.lookup(name).await?;
        let record = entry.snapshot();
        let upper = entry.dir.upper();
        let found = tokio::task::spawn_blocking(move || berth_engine::rootfs::changes(&upper, &record.layers)).await?;
        // Not the engine's own paths (Docker's "init layer"), nor
        // directories left with nothing else to show.
        let kept: Vec<(String, u8)> =
            found.iter().filter(|(p, _)| !berth_engine::rootfs::is_engine_path(p)).cloned().collect();
        let value: Vec<serde_json::Value> = kept
            .iter()
            .filter(|(path, kind)| {
                let is_bare_parent = *kind == 0
                    && found.iter().any(|(p, _)| p.starts_with(&format!("{path}/")))
                    && !kept.iter().any(|(p, _)| p.starts_with(&format!("{path}/")));
                !is_bare_parent
            })
            .map(|(path, kind)| serde_json::json!({ "Path": path, "Kind": kind }))
            .collect();
        Ok(serde_json::Value::Array(value))
    }
}
