//! Healthchecks as dockerd runs them (`daemon/health.go`): which command a
//! HEALTHCHECK runs, when, and what each result does to `State.Health`.
//! Pure bookkeeping; the agent runs the probes (containers/health.rs).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::image_config::Healthcheck;

/// dockerd's defaults for a zero field.
const DEFAULT_INTERVAL_NS: i64 = 30_000_000_000;
const DEFAULT_TIMEOUT_NS: i64 = 30_000_000_000;
const DEFAULT_RETRIES: i64 = 3;
/// `State.Health.Log` keeps the last five results.
pub const MAX_LOG_ENTRIES: usize = 5;
/// A probe's output beyond this is cut (dockerd's `maxOutputLen`).
pub const MAX_OUTPUT_LEN: usize = 4096;

pub const STARTING: &str = "starting";
pub const HEALTHY: &str = "healthy";
pub const UNHEALTHY: &str = "unhealthy";
/// What the `health` filter calls a container without a healthcheck.
pub const NONE: &str = "none";

/// A container's healthcheck, ready to run: the command and its schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// The probe's argv in the container (`CMD-SHELL` through /bin/sh -c).
    pub command: Vec<String>,
    pub interval: Duration,
    /// The interval while the container is `starting` within its start period.
    pub start_interval: Duration,
    pub timeout: Duration,
    pub start_period_ns: i64,
    pub retries: i64,
}

impl Monitor {
    /// The monitor for a (merged) `Config.Healthcheck`; none when there is
    /// no check, `NONE`, or a kind dockerd does not know (it logs and runs
    /// nothing, too). `shell` is the container's `Config.Shell`, if any.
    pub fn of(check: &Healthcheck, shell: Option<Vec<String>>) -> Option<Monitor> {
        let (kind, args) = check.test.split_first()?;
        let command = match kind.as_str() {
            "CMD" => args.to_vec(),
            "CMD-SHELL" => {
                let mut command =
                    shell.filter(|s| !s.is_empty()).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                command.extend(args.iter().cloned());
                command
            }
            _ => return None,
        };
        if command.is_empty() {
            return None;
        }
        let or_default = |value: i64, default: i64| if value > 0 { value } else { default };
        let interval = or_default(check.interval, DEFAULT_INTERVAL_NS);
        // Unset: the interval, as dockerd 20.10 probes during the start
        // period (the field came with API 1.44).
        let start_interval = or_default(check.start_interval, interval);
        Some(Monitor {
            command,
            interval: nanos(interval),
            start_interval: nanos(start_interval),
            timeout: nanos(or_default(check.timeout, DEFAULT_TIMEOUT_NS)),
            start_period_ns: check.start_period.max(0),
            retries: or_default(check.retries, DEFAULT_RETRIES),
        })
    }

    /// How long to wait before the next probe.
    pub fn next_delay(&self, health: &Health, started_at_ns: i64, now_ns: i64) -> Duration {
        let in_start_period = now_ns - started_at_ns < self.start_period_ns;
        if in_start_period && health.status == STARTING {
            self.start_interval
        } else {
            self.interval
        }
    }

    /// What a probe that ran out of time reports (dockerd's words; Go
    /// prints the duration as `1s`, `500ms`).
    pub fn timed_out(&self, start_ns: i64, end_ns: i64) -> ProbeResult {
        ProbeResult {
            start_ns,
            end_ns,
            exit_code: -1,
            output: format!("Health check exceeded timeout ({})", go_duration(self.timeout)),
        }
    }
}

fn nanos(ns: i64) -> Duration {
    Duration::from_nanos(ns.max(0) as u64)
}

/// Go's `time.Duration.String` for the whole-unit durations healthchecks
/// use (`30s`, `1m30s`, `500ms`).
fn go_duration(duration: Duration) -> String {
    let ns = duration.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        return match ns {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = duration.as_secs();
    let frac = duration.subsec_nanos();
    let seconds = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        let text = format!("{}.{:09}", secs % 60, frac);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub start_ns: i64,
    pub end_ns: i64,
    /// The command's exit code; -1 when it could not run or timed out.
    pub exit_code: i64,
    pub output: String,
}

/// An entry of `State.Health.Log`, as Docker shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    #[serde(rename = "Start")]
    pub start: String,
    #[serde(rename = "End")]
    pub end: String,
    #[serde(rename = "ExitCode")]
    pub exit_code: i64,
    #[serde(rename = "Output")]
    pub output: String,
}

/// Docker's `State.Health`, kept in the container's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "FailingStreak")]
    pub failing_streak: i64,
    #[serde(rename = "Log")]
    pub log: Vec<LogEntry>,
}

impl Health {
    /// A run begins `starting`; what earlier runs logged stays (dockerd
    /// keeps it across restarts), the streak does not.
    pub fn start(previous: Option<Health>) -> Health {
        let mut health = previous.unwrap_or(Health { status: String::new(), failing_streak: 0, log: Vec::new() });
        health.status = STARTING.into();
        health.failing_streak = 0;
        health
    }

    /// Applies one result (dockerd's `handleProbeResult`); the new status
    /// when it changed, for the `health_status` event.
    pub fn record(&mut self, monitor: &Monitor, result: ProbeResult, started_at_ns: i64) -> Option<String> {
        let before = self.status.clone();
        if self.log.len() >= MAX_LOG_ENTRIES {
            self.log.drain(..=self.log.len() - MAX_LOG_ENTRIES);
        }
        let mut output = result.output;
        if output.len() > MAX_OUTPUT_LEN {
            let mut end = MAX_OUTPUT_LEN;
            while !output.is_char_boundary(end) {
                end -= 1;
            }
            output.truncate(end);
        }
        self.log.push(LogEntry {
            start: crate::container::rfc3339(result.start_ns),
            end: crate::container::rfc3339(result.end_ns),
            exit_code: result.exit_code,
            output,
        });
        if result.exit_code == 0 {
            self.failing_streak = 0;
            self.status = HEALTHY.into();
        } else {
            // Failures while starting within the start period do not count.
            let grace = self.status == STARTING && result.start_ns - started_at_ns < monitor.start_period_ns;
            if !grace {
                self.failing_streak += 1;
                if self.failing_streak >= monitor.retries {
                    self.status = UNHEALTHY.into();
                }
            }
        }
        (self.status != before).then(|| self.status.clone())
    }

    /// The run ended: dockerd marks a stopped monitor unhealthy.
    pub fn stop(&mut self) {
        self.status = UNHEALTHY.into();
    }

    /// What `docker ps` adds to "Up 5 seconds".
    pub fn summary(&self) -> String {
        if self.status == STARTING {
            "health: starting".into()
        } else {
            self.status.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn monitor(check: serde_json::Value) -> Monitor {
        Monitor::of(&serde_json::from_value(check).unwrap(), None).unwrap()
    }

    fn result(start_s: i64, exit_code: i64) -> ProbeResult {
        ProbeResult { start_ns: start_s * S, end_ns: start_s * S + 1, exit_code, output: format!("run {start_s}") }
    }

    #[test]
    fn commands_and_defaults_follow_dockerd() {
        let shell = monitor(serde_json::json!({ "Test": ["CMD-SHELL", "echo hi"] }));
        assert_eq!(shell.command, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!((shell.interval, shell.timeout, shell.retries), (nanos(30 * S), nanos(30 * S), 3));
        let exec = monitor(serde_json::json!({ "Test": ["CMD", "true", "x"], "Interval": S, "Retries": 1 }));
        assert_eq!(exec.command, ["true", "x"]);
        assert_eq!((exec.interval, exec.start_interval, exec.retries), (nanos(S), nanos(S), 1));
        let with_shell = Monitor::of(
            &serde_json::from_value(serde_json::json!({ "Test": ["CMD-SHELL", "x"] })).unwrap(),
            Some(vec!["/bin/bash".into(), "-ec".into()]),
        );
        assert_eq!(with_shell.unwrap().command, ["/bin/bash", "-ec", "x"]);
        for test in [serde_json::json!(["NONE"]), serde_json::json!([]), serde_json::json!(["WHAT", "x"])] {
            let check = serde_json::from_value(serde_json::json!({ "Test": test })).unwrap();
            assert_eq!(Monitor::of(&check, None), None, "{test}");
        }
    }

    #[test]
    fn retries_in_a_row_make_unhealthy_and_one_success_heals() {
        let m = monitor(serde_json::json!({ "Test": ["CMD", "x"], "Retries": 2 }));
        let mut health = Health::start(None);
        assert_eq!(health.summary(), "health: starting");
        assert_eq!(health.record(&m, result(1, 1), 0), None);
        assert_eq!(health.failing_streak, 1);
        assert_eq!(health.record(&m, result(2, 1), 0).as_deref(), Some(UNHEALTHY));
        assert_eq!(health.record(&m, result(3, 0), 0).as_deref(), Some(HEALTHY));
        assert_eq!((health.failing_streak, health.summary().as_str()), (0, "healthy"));
        // A failure of a healthy container counts at once.
        assert_eq!(health.record(&m, result(4, 1), 0), None);
        assert_eq!(health.record(&m, result(5, 2), 0).as_deref(), Some(UNHEALTHY));
    }

    #[test]
    fn the_start_period_forgives_failures_while_starting() {
        let m = monitor(serde_json::json!({ "Test": ["CMD", "x"], "Retries": 1, "StartPeriod": 3 * S, "Interval": S }));
        let mut health = Health::start(None);
        let started = 100 * S;
        assert_eq!(health.record(&m, result(101, 1), started), None);
        assert_eq!(health.record(&m, result(102, 1), started), None);
        assert_eq!((health.status.as_str(), health.failing_streak), (STARTING, 0));
        assert_eq!(health.record(&m, result(103, 1), started).as_deref(), Some(UNHEALTHY));
    }

    #[test]
    fn the_start_interval_applies_only_while_starting_in_the_start_period() {
        let m = monitor(
            serde_json::json!({ "Test": ["CMD", "x"], "Interval": 10 * S, "StartInterval": S, "StartPeriod": 5 * S }),
        );
        let mut health = Health::start(None);
        assert_eq!(m.next_delay(&health, 0, 2 * S), nanos(S));
        assert_eq!(m.next_delay(&health, 0, 6 * S), nanos(10 * S));
        health.record(&m, result(1, 0), 0);
        assert_eq!(m.next_delay(&health, 0, 2 * S), nanos(10 * S));
    }

    #[test]
    fn the_log_keeps_the_last_five_and_cuts_long_output() {
        let m = monitor(serde_json::json!({ "Test": ["CMD", "x"] }));
        let mut health = Health::start(None);
        for n in 0..7 {
            health.record(&m, result(n, 0), 0);
        }
        let outputs: Vec<&str> = health.log.iter().map(|e| e.output.as_str()).collect();
        assert_eq!(outputs, ["run 2", "run 3", "run 4", "run 5", "run 6"]);
        let long = ProbeResult { output: "é".repeat(3000), ..result(8, 0) };
        health.record(&m, long, 0);
        assert!(health.log.last().unwrap().output.len() <= MAX_OUTPUT_LEN);
        assert_eq!(health.log.len(), MAX_LOG_ENTRIES);
        // A new run starts again, keeping the log.
        health.failing_streak = 2;
        let again = Health::start(Some(health));
        assert_eq!((again.status.as_str(), again.failing_streak, again.log.len()), (STARTING, 0, 5));
    }

    #[test]
    fn timeouts_are_reported_in_dockerds_words() {
        let m = monitor(serde_json::json!({ "Test": ["CMD", "x"], "Timeout": S }));
        assert_eq!(m.timed_out(0, S).output, "Health check exceeded timeout (1s)");
        assert_eq!(go_duration(nanos(500_000_000)), "500ms");
        assert_eq!(go_duration(nanos(90 * S)), "1m30s");
        assert_eq!(go_duration(nanos(1_500_000_000)), "1.5s");
    }
}
