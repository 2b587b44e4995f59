//! Published ports (`-p`, `-P`) with the real docker CLI on the local
//! backend: the daemon binds the host's sockets and forwards to the
//! container's own network namespace.

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;

use super::harness::net::{
    build_netprobe, eventually, free_port, http_get, run_udp_echo, tcp_port_free, udp_echo, udp_port_free,
};
use super::{docker, local_berth, ok, stderr};
use crate::harness::describe;

const SECOND: Duration = Duration::from_secs(1);

/// busybox's httpd serving "hello from NAME" on port 80.
fn web(name: &str) -> String {
    format!("mkdir -p /www && echo hello from {name} > /www/index.html && exec busybox httpd -f -p 80 -h /www")
}

#[test]
fn tcp_and_udp_reach_the_container_and_are_released() {
    let berth = local_berth();
    let netprobe = build_netprobe(berth.share.path());
    let (tcp, udp) = (free_port(), free_port());
    ok(&berth, &["run", "-d", "--name", "web", "-p", &format!("{tcp}:80"), "busybox", "sh", "-c", &web("web")]);
    let answer = http_get(tcp, 10 * SECOND).expect("the published port answers");
    assert!(answer.contains("hello from web"), "{answer}");

    // One source of truth: docker port, ps and inspect show the real bindings.
    assert_eq!(ok(&berth, &["port", "web"]), format!("80/tcp -> 0.0.0.0:{tcp}\n80/tcp -> [::]:{tcp}\n"));
    assert_eq!(ok(&berth, &["ps", "--format", "{{.Ports}}"]), format!("0.0.0.0:{tcp}->80/tcp, [::]:{tcp}->80/tcp\n"));
    let inspect: Value = serde_json::from_str(&ok(&berth, &["inspect", "web"])).unwrap();
    assert_eq!(
        inspect[0]["HostConfig"]["PortBindings"],
        serde_json::json!({"80/tcp": [{"HostIp": "", "HostPort": tcp.to_string()}]})
    );

    // UDP both ways, each client its own flow, and still after a restart.
    run_udp_echo(&berth, &netprobe, "echo", udp);
    let (alice, bob) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    assert_eq!(udp_echo(&alice, udp, b"from alice", 10 * SECOND).as_deref(), Some(&b"from alice"[..]));
    assert_eq!(udp_echo(&bob, udp, b"from bob", 5 * SECOND).as_deref(), Some(&b"from bob"[..]));
    let big = vec![7u8; 60_000];
    assert_eq!(udp_echo(&alice, udp, &big, 5 * SECOND).map(|b| b.len()), Some(big.len()), "a large datagram whole");
    ok(&berth, &["restart", "-t", "1", "echo"]);
    assert_eq!(udp_echo(&alice, udp, b"again", 10 * SECOND).as_deref(), Some(&b"again"[..]), "after a restart");

    // Released when the container goes: rm -f (TCP) and stop (UDP), at once.
    ok(&berth, &["rm", "-f", "web"]);
    assert!(tcp_port_free(tcp), "port {tcp} still bound after rm -f");
    ok(&berth, &["stop", "-t", "1", "echo"]);
    assert!(udp_port_free(udp), "port {udp} still bound after stop");
    assert_eq!(ok(&berth, &["port", "echo"]), "", "a stopped container publishes nothing");
    // And bound again by the next start.
    ok(&berth, &["start", "echo"]);
    assert_eq!(udp_echo(&bob, udp, b"restarted", 10 * SECOND).as_deref(), Some(&b"restarted"[..]));
    ok(&berth, &["rm", "-f", "echo"]);
    assert!(udp_port_free(udp));
    berth.stop_and_check_clean();
}

#[test]
fn a_port_taken_fails_the_start_and_binds_nothing() {
    let berth = local_berth();
    let (held, spare, shared) = (free_port(), free_port(), free_port());
    let _holder = std::net::TcpListener::bind(("0.0.0.0", held)).unwrap();

    // Held by another program: dockerd's bind failure; the port bound
    // before it (spare) is closed again.
    let out = docker(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "late",
            "-p",
            &format!("{spare}:81"),
            "-p",
            &format!("{held}:80"),
            "busybox",
            "sleep",
            "60",
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let id = ok(&berth, &["inspect", "--format", "{{.Id}}", "late"]);
    let expected = format!(
        "driver failed programming external connectivity on endpoint late ({}): failed to bind host port 0.0.0.0:{held}/tcp: address already in use",
        id.trim()
    );
    assert!(stderr(&out).contains(&expected), "{}", describe(&out));
    assert!(tcp_port_free(spare), "a failed start left port {spare} bound");
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Running}}", "late"]), "false\n");

    // Held by another container: the port allocator's words.
    ok(&berth, &["run", "-d", "--name", "first", "-p", &format!("{shared}:80"), "busybox", "sleep", "60"]);
    let out =
        docker(&berth, &["run", "-d", "--name", "second", "-p", &format!("{shared}:80"), "busybox", "sleep", "60"]);
    assert!(
        stderr(&out).contains(&format!("Bind for 0.0.0.0:{shared} failed: port is already allocated")),
        "{}",
        describe(&out)
    );
    // Once the first is stopped the second starts on that port.
    ok(&berth, &["stop", "-t", "0", "first"]);
    assert!(tcp_port_free(shared), "port {shared} still bound after stop\n{}", berth.logs());
    ok(&berth, &["start", "second"]);
    assert_eq!(ok(&berth, &["port", "second", "80"]), format!("0.0.0.0:{shared}\n[::]:{shared}\n"));

    // container:X shares X's network: nothing of its own to publish.
    let out = docker(&berth, &["create", "--network", "container:second", "-p", "80", "busybox"]);
    assert!(
        stderr(&out).contains("conflicting options: port publishing and the container type network mode"),
        "{}",
        describe(&out)
    );
    ok(&berth, &["rm", "-f", "late", "first", "second"]);
    assert!(tcp_port_free(shared));
    berth.stop_and_check_clean();
}

fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u16>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn publish_all_and_ephemeral_ports() {
    let berth = local_berth();
    // -P publishes the exposed ports (80, 81/udp), -p 90 an ephemeral one; 7000 is only exposed.
    ok(
        &berth,
        &[
            "run", "-d", "--name", "all", "-P", "--expose", "80", "--expose", "81/udp", "-p", "90", "busybox", "sleep",
            "60",
        ],
    );
    ok(
        &berth,
        &["run", "-d", "--name", "exposed", "--expose", "7000", "-p", "127.0.0.1::7001", "busybox", "sleep", "60"],
    );
    let ports: Value =
        serde_json::from_str(&ok(&berth, &["inspect", "--format", "{{json .NetworkSettings.Ports}}", "all"])).unwrap();
    let (first, last) = ephemeral_range();
    let mut seen = Vec::new();
    for key in ["80/tcp", "81/udp", "90/tcp"] {
        let bindings = ports[key].as_array().unwrap_or_else(|| panic!("{key} in {ports}"));
        let port: u16 = bindings[0]["HostPort"].as_str().unwrap().parse().unwrap();
        assert!((first..=last).contains(&port), "{key} -> {port}, not in {first}-{last}");
        assert_eq!(bindings[0]["HostIp"], "0.0.0.0");
        if key.ends_with("tcp") {
            assert!(!tcp_port_free(port), "{key} -> {port} is not bound");
        }
        seen.push((key.ends_with("udp"), port));
    }
    // Each protocol has its own allocator, which goes on after the last port it gave.
    assert!(seen[2].1 > seen[0].1, "{seen:?}");
    let exposed: Value =
        serde_json::from_str(&ok(&berth, &["inspect", "--format", "{{json .NetworkSettings.Ports}}", "exposed"]))
            .unwrap();
    assert_eq!(exposed["7000/tcp"], Value::Null, "{exposed}");
    assert_eq!(exposed["7001/tcp"][0]["HostIp"], "127.0.0.1", "{exposed}");
    let ps = ok(&berth, &["ps", "--filter", "name=exposed", "--format", "{{.Ports}}"]);
    let port = exposed["7001/tcp"][0]["HostPort"].as_str().unwrap();
    assert_eq!(ps, format!("7000/tcp, 127.0.0.1:{port}->7001/tcp\n"));

    // A range takes its first free port.
    let start = free_port();
    let range = format!("{start}-{}:80", start + 5);
    ok(&berth, &["run", "-d", "--name", "ranged", "-p", &range, "busybox", "sleep", "60"]);
    let bound: u16 = ok(
        &berth,
        &["inspect", "--format", "{{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}", "ranged"],
    )
    .trim()
    .parse()
    .unwrap();
    assert!((start..=start + 5).contains(&bound), "{bound}");
    ok(&berth, &["rm", "-f", "all", "exposed", "ranged"]);
    for (udp, port) in seen {
        assert!(if udp { udp_port_free(port) } else { tcp_port_free(port) }, "{port} still bound");
    }
    berth.stop_and_check_clean();
}

/// A daemon killed with SIGKILL leaves no listener (the sockets were its
/// own), and the next daemon binds the ports of the containers still running.
#[test]
fn a_killed_daemon_leaks_no_port_and_the_next_binds_them_again() {
    let berth = local_berth();
    let port = free_port();
    ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--restart",
            "always",
            "-p",
            &format!("{port}:80"),
            "busybox",
            "sh",
            "-c",
            &web("web"),
        ],
    );
    assert!(http_get(port, 10 * SECOND).is_some());
    let pid = berth.status()["daemon_pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the pid the daemon's status reports.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(5 * SECOND, || tcp_port_free(port)), "port {port} outlived its daemon");
    berth.start();
    let answer = http_get(port, 20 * SECOND).expect("the next daemon binds the port again");
    assert!(answer.contains("hello from web"), "{answer}");
    assert_eq!(ok(&berth, &["port", "web", "80/tcp"]), format!("0.0.0.0:{port}\n[::]:{port}\n"));
    ok(&berth, &["rm", "-f", "web"]);
    assert!(tcp_port_free(port));
    berth.stop_and_check_clean();
}
