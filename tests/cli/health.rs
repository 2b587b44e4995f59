//! Healthchecks through the real CLI: `--health-*`, State.Health, ps, the
//! health filter and events.

use std::time::{Duration, Instant};

use super::{docker, local_berth, ok, stdout};
use crate::harness::describe;

/// Polls `docker inspect` until the container's health status is `want`.
fn wait_for_health(berth: &crate::harness::Berth, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = stdout(&docker(berth, &["inspect", "--format", "{{.State.Health.Status}}", name]));
        if status.trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} stayed {status:?}, not {want}\n{}", berth.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn healthchecks_turn_containers_healthy_and_unhealthy() {
    let berth = local_berth();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--health-interval", "1s", "--health-retries", "1"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "sleep", "60"]);
        ok(&berth, &args);
    };
    run("fine", &["--health-cmd", "echo fine"]);
    run("sick", &["--health-cmd", "echo sick; exit 1"]);
    run("slow", &["--health-cmd", "sleep 5", "--health-timeout", "300ms"]);
    run("late", &["--health-cmd", "exit 1", "--health-start-period", "30s"]);
    ok(&berth, &["run", "-d", "--name", "none", "busybox", "sleep", "60"]);

    wait_for_health(&berth, "fine", "healthy");
    wait_for_health(&berth, "sick", "unhealthy");
    wait_for_health(&berth, "slow", "unhealthy");

    let log = |name: &str| -> serde_json::Value {
        let out = ok(&berth, &["inspect", "--format", "{{json .State.Health}}", name]);
        serde_json::from_str(&out).unwrap()
    };
    let fine = log("fine");
    assert_eq!((fine["FailingStreak"].as_i64(), fine["Log"][0]["ExitCode"].as_i64()), (Some(0), Some(0)), "{fine}");
    assert_eq!(fine["Log"][0]["Output"], "fine\n", "{fine}");
    let sick = log("sick");
    assert!(sick["FailingStreak"].as_i64() >= Some(1), "{sick}");
    assert_eq!((sick["Log"][0]["ExitCode"].as_i64(), sick["Log"][0]["Output"].as_str()), (Some(1), Some("sick\n")));
    // The probe was killed at its timeout, in dockerd's words.
    let slow = log("slow");
    assert_eq!(slow["Log"][0]["ExitCode"], -1, "{slow}");
    assert_eq!(slow["Log"][0]["Output"], "Health check exceeded timeout (300ms)", "{slow}");
    let top = ok(&berth, &["top", "slow"]);
    assert!(top.matches("sleep 5").count() <= 1, "timed-out probes were left running:\n{top}");
    // Failures within the start period do not count.
    std::thread::sleep(Duration::from_secs(2));
    let late = log("late");
    assert_eq!((late["Status"].as_str(), late["FailingStreak"].as_i64()), (Some("starting"), Some(0)), "{late}");
    assert!(!late["Log"].as_array().unwrap().is_empty(), "{late}");
    assert_eq!(ok(&berth, &["inspect", "--format", "{{json .State.Health}}", "none"]).trim(), "null");

    // The CLI's views: ps status, the health filter, the Config as sent.
    let ps = ok(&berth, &["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.lines().any(|l| l.starts_with("fine Up") && l.ends_with("(healthy)")), "{ps}");
    assert!(ps.lines().any(|l| l.starts_with("sick Up") && l.ends_with("(unhealthy)")), "{ps}");
    assert!(ps.lines().any(|l| l.starts_with("late Up") && l.ends_with("(health: starting)")), "{ps}");
    let names = |filter: &str| ok(&berth, &["ps", "--filter", filter, "--format", "{{.Names}}"]);
    assert_eq!(names("health=healthy"), "fine\n");
    assert_eq!(names("health=none"), "none\n");
    let mut unhealthy: Vec<String> = names("health=unhealthy").lines().map(String::from).collect();
    unhealthy.sort();
    assert_eq!(unhealthy, ["sick", "slow"]);
    let out = docker(&berth, &["ps", "--filter", "health=great"]);
    assert!(super::stderr(&out).contains("Unrecognised filter value for health: great"), "{}", describe(&out));
    let config = ok(&berth, &["inspect", "--format", "{{json .Config.Healthcheck}}", "sick"]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["Test"], serde_json::json!(["CMD-SHELL", "echo sick; exit 1"]));
    assert_eq!((config["Interval"].as_i64(), config["Retries"].as_i64()), (Some(1_000_000_000), Some(1)));

    // health_status events, once per change.
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1;
    let events = ok(
        &berth,
        &[
            "events",
            "--since",
            &started.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "event=health_status",
            "--format",
            "{{.Actor.Attributes.name}} {{.Action}}",
        ],
    );
    assert!(events.lines().any(|l| l == "fine health_status: healthy"), "{events}");
    assert_eq!(
        events.lines().filter(|l| l.starts_with("sick ")).collect::<Vec<_>>(),
        ["sick health_status: unhealthy"]
    );

    // Bad durations are refused at create, in dockerd's words.
    let out = docker(&berth, &["create", "--health-cmd", "true", "--health-interval", "10us", "busybox"]);
    assert!(super::stderr(&out).contains("Interval in Healthcheck cannot be less than 1ms"), "{}", describe(&out));

    // A stopped container's monitor stops: unhealthy, as dockerd leaves it.
    ok(&berth, &["stop", "-t", "0", "fine"]);
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Health.Status}}", "fine"]), "unhealthy\n");
    ok(&berth, &["rm", "-f", "fine", "sick", "slow", "late", "none"]);
    berth.stop_and_check_clean();
}

const HEALTHY_STACK: &str = r#"version: "2.4"
services:
  db:
    image: busybox
    command: sh -c 'sleep 2; touch /ready; exec sleep 60'
    healthcheck:
      test: ["CMD", "test", "-e", "/ready"]
      interval: 500ms
      retries: 30
  app:
    image: busybox
    depends_on:
      db:
        condition: service_healthy
    command: echo app ran
  broken:
    image: busybox
    command: sleep 60
    healthcheck:
      test: ["CMD-SHELL", "exit 1"]
      interval: 500ms
      retries: 1
  waiter:
    image: busybox
    depends_on:
      broken:
        condition: service_healthy
    command: echo never
"#;

/// An RFC 3339 UTC time with its fraction padded to nanoseconds, so two
/// compare as strings.
fn comparable(time: &str) -> String {
    let time = time.trim_end_matches('Z');
    let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
    format!("{whole}.{fraction:0<9}")
}

/// docker-compose 1.29's `depends_on: condition: service_healthy` waits for
/// the dependency's healthcheck, and refuses an unhealthy one.
#[test]
fn compose_waits_for_healthy_dependencies() {
    let berth = local_berth();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("docker-compose.yml"), HEALTHY_STACK).unwrap();
    let compose = |args: &[&str]| {
        std::process::Command::new("docker-compose")
            .current_dir(dir.path())
            .args(["-p", "healthstack"])
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", berth.run_dir().join("docker.sock").display()))
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .output()
            .expect("docker-compose (packaging/setup.sh installs it)")
    };
    let up = compose(&["up", "-d", "app"]);
    assert!(up.status.success(), "{}\n{}", describe(&up), berth.logs());
    assert_eq!(ok(&berth, &["wait", "healthstack_app_1"]).trim(), "0");
    assert_eq!(ok(&berth, &["logs", "healthstack_app_1"]), "app ran\n");
    // The app started only once the db was healthy.
    let log = ok(&berth, &["inspect", "--format", "{{json .State.Health.Log}}", "healthstack_db_1"]);
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let first_healthy = log.as_array().unwrap().iter().find(|r| r["ExitCode"] == 0).expect("a passing probe");
    let app_started = ok(&berth, &["inspect", "--format", "{{.State.StartedAt}}", "healthstack_app_1"]);
    let healthy_at = first_healthy["End"].as_str().unwrap();
    assert!(comparable(app_started.trim()) > comparable(healthy_at), "{app_started} vs {log}");

    let up = compose(&["up", "-d", "waiter"]);
    assert!(!up.status.success(), "{}", describe(&up));
    assert!(super::stderr(&up).contains("is unhealthy"), "{}", describe(&up));
    let down = compose(&["down"]);
    assert!(down.status.success(), "{}", describe(&down));
    berth.stop_and_check_clean();
}
