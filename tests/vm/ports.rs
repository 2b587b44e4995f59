//! Published ports through the VM: the daemon's host sockets, a vsock
//! stream per connection (per UDP binding) to the agent, the container;
//! UDP through a container restart; both protocols bound again after a VM
//! restart and after kill -9 of the daemon.

use std::net::UdpSocket;
use std::time::Duration;

use crate::harness::net::{
    build_netprobe, check_the_container_sees_its_clients, eventually, free_port, http_get, run_udp_echo, tcp_port_free,
    udp_echo, udp_port_free,
};
use crate::harness::{docker_ok, load_busybox, Berth};

const SECOND: Duration = Duration::from_secs(1);

fn web() -> String {
    "mkdir -p /www && echo hello from the vm > /www/index.html && exec busybox httpd -f -p 80 -h /www".into()
}

#[test]
fn published_ports_through_the_vm() {
    let berth = Berth::new();
    berth.start();
    load_busybox(&berth);
    let netprobe = build_netprobe(berth.share.path());
    let (tcp, udp, kept, kept_udp) = (free_port(), free_port(), free_port(), free_port());

    docker_ok(&berth, &["run", "-d", "--name", "web", "-p", &format!("{tcp}:80"), "busybox", "sh", "-c", &web()]);
    let answer = http_get(tcp, 30 * SECOND).unwrap_or_else(|| panic!("the published port answers\n{}", berth.logs()));
    assert!(answer.contains("hello from the vm"), "{answer}");
    run_udp_echo(&berth, &netprobe, "echo", udp);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(udp_echo(&client, udp, b"ping", 30 * SECOND).as_deref(), Some(&b"ping"[..]));
    // The same client's flow keeps working when the container behind it
    // restarts (its socket towards the old process is replaced).
    docker_ok(&berth, &["restart", "-t", "1", "echo"]);
    assert_eq!(
        udp_echo(&client, udp, b"after restart", 30 * SECOND).as_deref(),
        Some(&b"after restart"[..]),
        "UDP after a container restart\n{}",
        berth.logs()
    );

    docker_ok(&berth, &["rm", "-f", "web"]);
    assert!(tcp_port_free(tcp), "port {tcp} still bound after rm -f");
    docker_ok(&berth, &["stop", "-t", "1", "echo"]);
    assert!(udp_port_free(udp), "port {udp} still bound after stop");

    // A container that comes back by itself after a VM restart gets its
    // ports back, TCP and UDP; while the VM is down nothing holds them.
    let mount = format!("{}:/netprobe:ro", netprobe.display());
    let serve = format!("/netprobe udp-echo 5353 & {}", web());
    docker_ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "kept",
            "--restart",
            "always",
            "-v",
            &mount,
            "-p",
            &format!("{kept}:80"),
            "-p",
            &format!("{kept_udp}:5353/udp"),
            "busybox",
            "sh",
            "-c",
            &serve,
        ],
    );
    assert!(http_get(kept, 30 * SECOND).is_some());
    let udp_answers = |what: &str| {
        let answer = udp_echo(&client, kept_udp, what.as_bytes(), 60 * SECOND);
        assert_eq!(answer.as_deref(), Some(what.as_bytes()), "UDP {what}\n{}", berth.logs());
    };
    udp_answers("before");
    berth.ok(&["stop"]);
    assert!(tcp_port_free(kept), "port {kept} outlived the VM");
    assert!(udp_port_free(kept_udp), "port {kept_udp}/udp outlived the VM");
    berth.start();
    assert!(http_get(kept, 60 * SECOND).is_some(), "bound again after a VM restart\n{}", berth.logs());
    udp_answers("after a VM restart");

    // kill -9 of the daemon takes its sockets (and the VM) with it; the
    // next daemon binds them again.
    let pid = berth.status()["daemon_pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the pid the daemon's status reports.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(5 * SECOND, || tcp_port_free(kept)), "port {kept} outlived its daemon");
    assert!(eventually(5 * SECOND, || udp_port_free(kept_udp)), "port {kept_udp}/udp outlived its daemon");
    let said = berth.ok(&["start"]);
    assert!(said.contains("is running ("), "`berth start` after kill -9 booted no VM: {said}\n{}", berth.logs());
    assert!(http_get(kept, 60 * SECOND).is_some(), "bound again after kill -9 of the daemon\n{}", berth.logs());
    udp_answers("after kill -9 of the daemon");
    docker_ok(&berth, &["rm", "-f", "kept", "echo"]);
    assert!(tcp_port_free(kept) && udp_port_free(kept_udp));
    berth.stop_and_check_clean();
}

/// A client on another host (a network namespace here) is seen by the
/// container in the VM with its own address; the host's loopback with the
/// gateway's.
#[test]
fn the_container_in_the_vm_sees_its_real_client() {
    let berth = Berth::new();
    berth.start();
    load_busybox(&berth);
    check_the_container_sees_its_clients(&berth);
    berth.stop_and_check_clean();
}
