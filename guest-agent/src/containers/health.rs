//! A running container's healthcheck: one task per run that probes on the
//! schedule (`berth_engine::health`) through the exec path, records each
//! result in `State.Health` and emits `health_status` events. It ends with
//! the run: when the container stops, restarts or is removed, the task
//! returns, and a probe still running is dropped, which kills it (exec.rs
//! kills a process nobody reads any more).

use std::sync::Arc;

use berth_agent_proto::{exec_output, ExecStart};
use berth_engine::container::{Container, Status};
use berth_engine::health::{Health, Monitor, ProbeResult, MAX_OUTPUT_LEN};
use berth_engine::logfile::now_ns;
use tokio::sync::{mpsc, watch};

use super::{Containers, Entry};

/// The monitor a container's (merged) Config asks for.
pub(super) fn monitor_of(record: &Container) -> Option<Monitor> {
    let check = record.config.healthcheck.get()?;
    let shell =
        record.config.rest.get("Shell").and_then(|shell| serde_json::from_value::<Vec<String>>(shell.clone()).ok());
    Monitor::of(check, shell)
}

/// The health a new run starts with: `starting` with the old log, or none
/// without a healthcheck.
pub(super) fn health_at_start(record: &Container) -> Option<Health> {
    monitor_of(record).map(|_| Health::start(record.state.health.clone()))
}

impl Containers {
    /// Starts the monitor of the run that just began, if it has a check.
    pub(super) fn monitor_health(self: &Arc<Self>, entry: &Arc<Entry>) {
        let record = entry.snapshot();
        let Some(monitor) = monitor_of(&record) else { return };
        tokio::spawn(self.clone().watch_health(entry.clone(), monitor, record.state.started_at_ns));
    }

    async fn watch_health(self: Arc<Self>, entry: Arc<Entry>, monitor: Monitor, started_at_ns: i64) {
        let mut changed = entry.changed.subscribe();
        let same_run = |entry: &Entry| {
            let state = entry.state();
            !entry.removed()
                && state.started_at_ns == started_at_ns
                && matches!(state.status, Status::Running | Status::Paused)
        };
        loop {
            let delay = match entry.state().health {
                Some(health) => monitor.next_delay(&health, started_at_ns, now_ns()),
                None => return,
            };
            let sleep = tokio::time::sleep(delay);
            tokio::select! {
                () = sleep => {}
                () = run_ended(&entry, &mut changed, &same_run) => return,
            }
            let probe = self.probe(&entry, &monitor);
            let result = tokio::select! {
                result = probe => result,
                () = run_ended(&entry, &mut changed, &same_run) => return,
            };
            let mut new_status = None;
            let _ = entry.update(|c| {
                if c.state.started_at_ns == started_at_ns && c.state.status.is_running() {
                    if let Some(health) = c.state.health.as_mut() {
                        new_status = health.record(&monitor, result, started_at_ns);
                    }
                }
            });
            if let Some(status) = new_status {
                self.emit(&format!("health_status: {status}"), &entry.snapshot(), &[]);
            }
        }
    }

    /// Runs the probe once in the container, within its timeout.
    async fn probe(self: &Arc<Self>, entry: &Entry, monitor: &Monitor) -> ProbeResult {
        let start_ns = now_ns();
        let id = entry.snapshot().id;
        let start = ExecStart { argv: monitor.command.clone(), container_id: id, ..Default::default() };
        let start = match self.exec_in(start).await {
            Ok(start) => start,
            Err(err) => {
                return ProbeResult { start_ns, end_ns: now_ns(), exit_code: -1, output: err.message().to_string() }
            }
        };
        let (output_tx, mut output) = mpsc::channel(16);
        let reaper = self.reaper.clone();
        // Its own task: when `output` is dropped (a timeout, the run's end)
        // it still kills the probe and reaps it.
        tokio::spawn(async move {
            crate::exec::run(&reaper, start, crate::exec::Terminal::FromProcess, tokio_stream::empty(), output_tx).await
        });
        let collect = async {
            let mut text = Vec::new();
            while let Some(Ok(message)) = output.recv().await {
                match message.output {
                    Some(exec_output::Output::Stdout(bytes) | exec_output::Output::Stderr(bytes)) => {
                        let room = MAX_OUTPUT_LEN.saturating_sub(text.len());
                        text.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    }
                    Some(exec_output::Output::Exit(exit)) => return (i64::from(exit.code), text),
                    Some(exec_output::Output::Pid(_)) | None => {}
                }
            }
            (-1, text)
        };
        match tokio::time::timeout(monitor.timeout, collect).await {
            Ok((exit_code, text)) => ProbeResult {
                start_ns,
                end_ns: now_ns(),
                exit_code,
                output: String::from_utf8_lossy(&text).into_owned(),
            },
            Err(_) => monitor.timed_out(start_ns, now_ns()),
        }
    }
}

/// Resolves once the run the monitor watches is over.
async fn run_ended(entry: &Entry, changed: &mut watch::Receiver<Option<u64>>, same_run: &impl Fn(&Entry) -> bool) {
    while same_run(entry) {
        if changed.changed().await.is_err() {
            return;
        }
    }
}
