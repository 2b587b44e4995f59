//! Published ports through the VM: the daemon's host sockets, a vsock
//! stream per connection (per UDP binding) to the agent, the container.

use std::net::UdpSocket;
use std::time::Duration;

use crate::harness::net::{
    build_netprobe, eventually, free_port, http_get, run_udp_echo, tcp_port_free, udp_echo, udp_port_free,
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
    let (tcp, udp, kept) = (free_port(), free_port(), free_port());

    docker_ok(&berth, &["run", "-d", "--name", "web", "-p", &format!("{tcp}:80"), "busybox", "sh", "-c", &web()]);
    let answer = http_get(tcp, 30 * SECOND).unwrap_or_else(|| panic!("the published port answers\n{}", berth.logs()));
    assert!(answer.contains("hello from the vm"), "{answer}");
    run_udp_echo(&berth, &netprobe, "echo", udp);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(udp_echo(&client, udp, b"ping", 30 * SECOND).as_deref(), Some(&b"ping"[..]));

    docker_ok(&berth, &["rm", "-f", "web"]);
    assert!(tcp_port_free(tcp), "port {tcp} still bound after rm -f");
    docker_ok(&berth, &["stop", "-t", "1", "echo"]);
    assert!(udp_port_free(udp), "port {udp} still bound after stop");

    // A container that comes back by itself after a VM restart gets its
    // ports back; while the VM is down nothing holds them.
    docker_ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "kept",
            "--restart",
            "always",
            "-p",
            &format!("{kept}:80"),
            "busybox",
            "sh",
            "-c",
            &web(),
        ],
    );
    assert!(http_get(kept, 30 * SECOND).is_some());
    berth.ok(&["stop"]);
    assert!(tcp_port_free(kept), "port {kept} outlived the VM");
    berth.start();
    assert!(http_get(kept, 60 * SECOND).is_some(), "bound again after a VM restart\n{}", berth.logs());

    // kill -9 of the daemon takes its sockets (and the VM) with it; the
    // next daemon binds them again.
    let pid = berth.status()["daemon_pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the pid the daemon's status reports.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(5 * SECOND, || tcp_port_free(kept)), "port {kept} outlived its daemon");
    berth.start();
    assert!(http_get(kept, 60 * SECOND).is_some(), "bound again after kill -9 of the daemon\n{}", berth.logs());
    docker_ok(&berth, &["rm", "-f", "kept", "echo"]);
    assert!(tcp_port_free(kept));
    berth.stop_and_check_clean();
}
