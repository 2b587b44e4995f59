//! Push, digests and healthchecks through the VM: the registry is the
//! host's (reached as host.docker.internal, an insecure registry in
//! config.toml), the probes run in the VM's containers.

use std::time::{Duration, Instant};

use crate::harness::{self, describe, docker, docker_ok, Berth};

/// `docker push` from the VM to a registry on the host, then `rmi` and
/// `pull` back by the pushed digest.
#[test]
fn push_from_the_vm_and_pull_back_by_digest() {
    let registry = harness::LocalRegistry::start();
    let host = format!("host.docker.internal:{}", registry.port);
    let share = tempfile::tempdir().unwrap();
    let berth = Berth::with_config(share, &format!("\n[engine]\ninsecure-registries = [\"{host}\"]\n"));
    berth.start();
    harness::load_busybox(&berth);
    let image = format!("{host}/vm-app:1");
    docker_ok(&berth, &["run", "--name", "maker", "busybox", "sh", "-c", "echo made in the VM > /made"]);
    docker_ok(&berth, &["commit", "maker", &image]);
    docker_ok(&berth, &["rm", "maker"]);
    let pushed = docker_ok(&berth, &["push", &image]);
    assert!(pushed.contains(&format!("The push refers to repository [{host}/vm-app]")), "{pushed}");
    assert_eq!(pushed.matches(": Pushed").count(), 2, "{pushed}");
    let line = pushed.lines().find(|l| l.starts_with("1: digest: sha256:")).expect(&pushed);
    let digest = line.split_whitespace().nth(2).unwrap();
    let listed = docker_ok(&berth, &["images", "--digests", "--format", "{{.Digest}}", &format!("{host}/vm-app")]);
    assert_eq!(listed.trim(), digest);

    docker_ok(&berth, &["rmi", &image]);
    let by_digest = format!("{host}/vm-app@{digest}");
    let out = docker(&berth, &["run", "--rm", &by_digest, "cat", "/made"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "made in the VM\n", "{}\n{}", describe(&out), berth.logs());
    berth.stop_and_check_clean();
}

/// A failing healthcheck turns a container in the VM unhealthy.
#[test]
fn a_failing_healthcheck_in_the_vm_turns_unhealthy() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    for (name, cmd) in [("sick", "exit 3"), ("fine", "true")] {
        docker_ok(
            &berth,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--health-cmd",
                cmd,
                "--health-interval",
                "1s",
                "--health-retries",
                "2",
                "busybox",
                "sleep",
                "120",
            ],
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = |name: &str| docker_ok(&berth, &["inspect", "--format", "{{.State.Health.Status}}", name]);
    while status("sick").trim() != "unhealthy" || status("fine").trim() != "healthy" {
        assert!(Instant::now() < deadline, "sick: {}, fine: {}\n{}", status("sick"), status("fine"), berth.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    let health = docker_ok(&berth, &["inspect", "--format", "{{json .State.Health}}", "sick"]);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert!(health["FailingStreak"].as_i64() >= Some(2), "{health}");
    assert_eq!(health["Log"][0]["ExitCode"], 3, "{health}");
    let ps = docker_ok(&berth, &["ps", "--filter", "health=unhealthy", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("sick Up") && ps.trim_end().ends_with("(unhealthy)"), "{ps}");
    docker_ok(&berth, &["rm", "-f", "sick", "fine"]);
    berth.stop_and_check_clean();
}
