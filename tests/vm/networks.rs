//! Container networks through a real VM: a user network's containers reach
//! each other by address, the default bridge's reach the VM's uplink
//! gateway through the masquerade, an internal network's do not, and
//! networks with their containers' addresses survive a VM restart.

use crate::harness::{self, describe, Berth};

#[test]
fn containers_talk_on_networks_in_the_vm() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let ok = |args: &[&str]| harness::docker_ok(&berth, args);

    ok(&["network", "create", "app"]);
    ok(&[
        "run",
        "-d",
        "--name",
        "server",
        "--restart",
        "always",
        "--network",
        "app",
        "busybox",
        "sh",
        "-c",
        "while true; do echo hello | nc -l -p 7000; done",
    ]);
    let ip = ok(&["inspect", "-f", "{{.NetworkSettings.Networks.app.IPAddress}}", "server"]).trim().to_string();
    assert_eq!(ip, "172.18.0.2", "the first user network is 172.18.0.0/16");
    let got = ok(&["run", "--rm", "--network", "app", "busybox", "nc", "-w", "5", &ip, "7000"]);
    assert_eq!(got, "hello\n", "a container reaches another on its network as its first command");

    // Egress: the uplink's gateway 10.0.2.2 is the host's loopback (slirp
    // and passt alike); a greeting from a server there proves the masquerade.
    // Not a refused port: passt answers a refused connect with silence.
    let port = harness::net::loopback_server(b"from the host\n");
    let probe = format!("nc -w 5 10.0.2.2 {port} </dev/null; echo rc=$?");
    let out = harness::docker(&berth, &["run", "--rm", "busybox", "sh", "-c", &probe]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("from the host"), "default bridge egress: {text}");
    ok(&["network", "create", "--internal", "sealed"]);
    let out = harness::docker(&berth, &["run", "--rm", "--network", "sealed", "busybox", "sh", "-c", &probe]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("from the host") && text.contains("rc=1"), "an internal network has no egress: {text}");

    // After a VM restart the network and the address are back.
    berth.ok(&["stop"]);
    berth.start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let state = ok(&["inspect", "-f", "{{.State.Status}} {{.NetworkSettings.Networks.app.IPAddress}}", "server"]);
        if state.trim() == format!("running {ip}") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "server did not come back with its address: {state}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let out = harness::docker(&berth, &["run", "--rm", "--network", "app", "busybox", "nc", "-w", "5", &ip, "7000"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{}", describe(&out));
    ok(&["rm", "-f", "server"]);
    ok(&["network", "rm", "app", "sealed"]);
    berth.stop_and_check_clean();
}
