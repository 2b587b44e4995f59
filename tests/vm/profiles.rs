//! `berth --profile`: two VMs of one BERTH_HOME running at once, each with
//! its own home, socket and docker context, listed by `berth list`.

use std::process::Command;

use serde_json::Value;

use crate::harness::{describe, Berth};

fn docker_in_context(berth: &Berth, context: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("--context")
        .arg(context)
        .args(args)
        .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .output()
        .expect("the docker CLI");
    assert!(out.status.success(), "docker --context {context} {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_profiles_run_at_once_with_their_own_sockets_and_contexts() {
    let berth = Berth::new();
    berth.start();
    // The second profile gets the same share and its resources from start's flags.
    let share = format!("[{:?}]", berth.share.path().display().to_string());
    berth.ok(&["--profile", "second", "config", "set", "vm.shares", &share]);
    let started = berth.ok(&["-p", "second", "start", "--cpus", "1", "--memory", "512M", "--disk", "2G"]);
    assert!(started.contains("Berth VM (profile second) is running"), "{started}");
    let config = std::fs::read_to_string(berth.home.path().join("profiles/second/config.toml")).unwrap();
    assert!(
        config.contains("cpus = 1") && config.contains("memory-mib = 512") && config.contains("disk-gib = 2"),
        "{config}"
    );

    let list: Value = serde_json::from_str(&berth.ok(&["list", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    for (row, name) in rows.iter().zip(["default", "second"]) {
        assert_eq!(row["profile"], name, "{list}");
        assert_eq!(row["state"], "running", "{list}");
        assert_eq!(
            (row["cpus"].as_u64(), row["memory_mib"].as_u64(), row["disk_gib"].as_u64()),
            (Some(1), Some(512), Some(2))
        );
        assert!(["tcg", "kvm"].contains(&row["accel"].as_str().unwrap()), "{list}");
    }

    let first: Value = serde_json::from_str(&berth.ok(&["status", "--json"])).unwrap();
    let second: Value = serde_json::from_str(&berth.ok(&["-p", "second", "status", "--json"])).unwrap();
    let second_home = berth.home.path().join("profiles/second");
    assert_eq!(second["docker_host"], format!("unix://{}/run/docker.sock", second_home.display()).as_str());
    assert_ne!(first["docker_host"], second["docker_host"]);
    let (first_context, second_context) =
        (first["docker_context"].as_str().unwrap(), second["docker_context"].as_str().unwrap());
    assert_ne!(first_context, second_context);

    // Each context reaches its own engine: a volume made in one is not in the other.
    docker_in_context(&berth, first_context, &["volume", "create", "only-in-the-first"]);
    assert!(docker_in_context(&berth, first_context, &["volume", "ls", "-q"]).contains("only-in-the-first"));
    assert!(!docker_in_context(&berth, second_context, &["volume", "ls", "-q"]).contains("only-in-the-first"));

    // `berth doctor` of a running profile: the live checks answer.
    let doctor = berth.run(&["-p", "second", "doctor", "--json"]);
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap_or_else(|_| panic!("{}", describe(&doctor)));
    let level = |check: &str| {
        let found = report["checks"].as_array().unwrap().iter().find(|c| c["check"] == check);
        found.unwrap_or_else(|| panic!("no {check} check: {report}"))["level"].as_str().unwrap().to_string()
    };
    assert_eq!((level("daemon"), level("socket"), level("clock")), ("ok".into(), "ok".into(), "ok".into()), "{report}");
    assert_eq!(report["profile"], "second");

    // A running VM is not resized under its user; the config stays as it was.
    let resize = berth.run(&["-p", "second", "start", "--cpus", "2"]);
    assert!(String::from_utf8_lossy(&resize.stderr).contains("`berth stop` it first"), "{}", describe(&resize));
    assert_eq!(std::fs::read_to_string(second_home.join("config.toml")).unwrap(), config);

    // Stopping one leaves the other running, and leaves nothing behind of it.
    assert!(berth.ok(&["-p", "second", "stop"]).contains("berth (profile second) stopped"));
    let leftovers: Vec<_> = std::fs::read_dir(second_home.join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "daemon.lock" && n != "state.json")
        .collect();
    assert!(leftovers.is_empty(), "left in the second profile's run/: {leftovers:?}");
    assert_eq!(berth.status()["state"], "running");
    let list: Value = serde_json::from_str(&berth.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[1]["state"], "stopped", "{list}");
    // The data disk grows but does not shrink: refused before anything boots.
    let shrink = berth.run(&["-p", "second", "start", "--disk", "1G"]);
    assert!(String::from_utf8_lossy(&shrink.stderr).contains("it can grow, not shrink"), "{}", describe(&shrink));
    assert_eq!(std::fs::read_to_string(second_home.join("config.toml")).unwrap(), config);
    berth.stop_and_check_clean();
}
