//! The VM's uplink (`[vm] uplink`, host/src/vm/passt.rs): QEMU's slirp by
//! default, passt when asked. Either way a container's egress
//! leaves the VM through it; the gateway 10.0.2.2 is the host's loopback
//! for both, which is what these tests reach (nothing off the machine).

use crate::harness::{self, pid_alive, Berth};

/// The pid the daemon recorded (run/state.json) for the VM process named `name`, if any.
fn vm_process(berth: &Berth, name: &str) -> Option<i64> {
    let text = std::fs::read_to_string(berth.run_dir().join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["processes"].as_array()?.iter().find(|p| p["name"] == name).and_then(|p| p["pid"].as_i64())
}

/// A container on the default bridge fetches from the host's loopback
/// through the uplink's gateway: out of the VM's NAT, through the uplink.
fn container_fetches_from_the_host(berth: &Berth) {
    let port = harness::net::loopback_server(b"through the uplink\n");
    // No `-T`: Debian 12's static busybox wget segfaults with it.
    let fetch = format!("timeout 20 wget -qO- http://10.0.2.2:{port}/");
    let out = harness::docker_ok(berth, &["run", "--rm", "busybox", "sh", "-c", &fetch]);
    assert_eq!(out, "through the uplink\n");
}

#[test]
fn passt_is_the_uplink_when_asked_carries_egress_and_ends_with_the_vm() {
    let installed = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("passt").is_file()));
    assert!(installed, "this test needs Debian's passt (packaging/setup.sh installs it)");
    let share = tempfile::Builder::new().prefix("berth share ").tempdir().unwrap();
    let berth = Berth::with_config(share, "uplink = \"passt\"\n");
    berth.start();
    let status = berth.status();
    assert_eq!(status["uplink"], "passt", "{status}");
    let passt = vm_process(&berth, "passt").expect("passt among the VM's processes (run/state.json)");
    assert!(pid_alive(passt));
    harness::load_busybox(&berth);

    container_fetches_from_the_host(&berth);
    // Names still resolve (the VM's resolver asks the host's over vsock,
    // whatever the uplink), in a container as in the VM.
    let out = harness::docker_ok(&berth, &["run", "--rm", "busybox", "sh", "-c", "nslookup -type=a localhost"]);
    assert!(out.contains("127.0.0.1"), "{out}");

    berth.stop_and_check_clean();
    assert!(!pid_alive(passt), "passt outlived the VM");
}

#[test]
fn slirp_is_the_default_uplink() {
    let berth = Berth::new();
    berth.start();
    let status = berth.status();
    assert_eq!(status["uplink"], "slirp", "{status}");
    assert_eq!(vm_process(&berth, "passt"), None);
    let procs = berth.live_processes();
    assert!(!procs.iter().any(|p| p.contains("passt")), "{procs:#?}");
    harness::load_busybox(&berth);
    container_fetches_from_the_host(&berth);
    berth.stop_and_check_clean();
}
