//! Names and the host, through a real VM: the VM's resolver asks the
//! host's own resolver over vsock, and host.docker.internal reaches a
//! server on the host's loopback (whatever the VM's uplink is).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::harness::{self, describe, Berth};

/// An HTTP server on this host's loopback answering every request with
/// `body`, for as long as the test runs (its thread ends with the process).
fn host_http_server(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(64) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    port
}

/// What the host's own resolver says `name` is (IPv4), as the VM should.
fn host_resolves(name: &str) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let mut found: Vec<String> = (name, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.filter(|a| a.is_ipv4()).map(|a| a.ip().to_string()).collect())
        .unwrap_or_default();
    found.sort();
    found.dedup();
    found
}

/// The IPv4 addresses busybox nslookup printed for the name it was asked.
fn nslookup_addresses(output: &str) -> Vec<String> {
    let mut found: Vec<String> = output
        .split("Name:")
        .skip(1)
        .flat_map(|answer| answer.lines().filter_map(|l| l.trim().strip_prefix("Address:")))
        .map(|a| a.trim().to_string())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn names_resolve_through_the_host_and_host_docker_internal_reaches_its_loopback() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);

    // The VM's own resolver answers with the host's resolver: this host's
    // hostname (its /etc/hosts, or whatever the host uses) and localhost.
    // QEMU's uplink resolver has no network to ask here, so an answer can
    // only have come from the host.
    let hostname = String::from_utf8(std::process::Command::new("hostname").output().unwrap().stdout).unwrap();
    let hostname = hostname.trim();
    let expected = host_resolves(hostname);
    assert!(!expected.is_empty(), "this host cannot resolve its own hostname {hostname}");
    // `-type=a`: busybox asks A and AAAA at once otherwise, with IDs from a
    // clock that the VM's refined-jiffies clocksource makes coarse enough
    // for both to share one, and then waits 5 s for the "missing" answer.
    let out = berth.shell(&["nslookup", "-type=a", hostname]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("192.168.65.7"), "the VM's resolver is the service address: {}", describe(&out));
    assert_eq!(nslookup_addresses(&text), expected, "{}\n{}", describe(&out), berth.logs());
    let out = berth.shell(&["nslookup", "-type=a", "localhost", "192.168.65.7"]);
    assert!(
        nslookup_addresses(&String::from_utf8_lossy(&out.stdout)).contains(&"127.0.0.1".to_string()),
        "{}",
        describe(&out)
    );

    // A container resolves host.docker.internal and fetches from the host's loopback.
    let port = host_http_server(b"hello from the host\n".to_vec());
    let fetch = format!(
        "nslookup -type=a host.docker.internal && nslookup -type=a gateway.docker.internal && wget -qO- http://host.docker.internal:{port}/"
    );
    let out = harness::docker_ok(&berth, &["run", "--rm", "--network", "host", "busybox", "sh", "-c", &fetch]);
    assert!(out.ends_with("hello from the host\n"), "{out}");
    assert_eq!(nslookup_addresses(&out), ["192.168.65.254"], "{out}");

    // A port nothing listens on is refused at once, as on the host itself.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    // No `-T`: Debian 12's static busybox wget segfaults with it, which
    // would pass this check for the wrong reason; `timeout` bounds it.
    let refused = format!("timeout 20 wget -qO- http://host.docker.internal:{closed}/");
    let out = harness::docker(&berth, &["run", "--rm", "--network", "host", "busybox", "sh", "-c", &refused]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    // The forwarder has taken the connection by then: its end is a reset.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused") || said.contains("reset"), "{}", describe(&out));
    assert!(started.elapsed() < Duration::from_secs(15), "a refused port hung: {:?}", started.elapsed());

    // Figures (printed, not asserted). A lookup the host answers against
    // one the VM's resolver answers itself (the difference is the trip to
    // the host), and a bulk fetch from the host's loopback.
    let lookups = 20;
    let timed = |command: &str| {
        let started = Instant::now();
        let out = berth.shell(&["sh", "-c", command]);
        assert!(out.status.success(), "{}", describe(&out));
        started.elapsed()
    };
    let loop_of = |name: &str| format!("for i in $(seq {lookups}); do nslookup -type=a {name} >/dev/null; done");
    let through_host = timed(&loop_of(hostname));
    let local = timed(&loop_of("host.docker.internal"));
    println!(
        "DNS: {:.1} ms per lookup through the host, {:.1} ms answered in the VM (busybox nslookup's own start included)",
        through_host.as_secs_f64() * 1000.0 / lookups as f64,
        local.as_secs_f64() * 1000.0 / lookups as f64
    );
    let big = host_http_server(vec![b'x'; 32 << 20]);
    let elapsed = timed(&format!("wget -qO /dev/null http://host.docker.internal:{big}/"));
    println!("host.docker.internal: 32 MiB in {elapsed:?} ({:.0} MiB/s)", 32.0 / elapsed.as_secs_f64());

    berth.stop_and_check_clean();
}

/// On user networks the embedded resolver (127.0.0.11) answers container
/// names and aliases of the networks a container is on, and nothing
/// across networks; other names still go to the host.
#[test]
fn containers_on_a_user_network_resolve_each_other_and_nothing_across() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let ok = |args: &[&str]| harness::docker_ok(&berth, args);
    ok(&["network", "create", "front"]);
    ok(&["network", "create", "back"]);
    ok(&["run", "-d", "--name", "db", "--network", "front", "--network-alias", "database", "busybox", "sleep", "600"]);
    ok(&["run", "-d", "--name", "cache", "--network", "back", "busybox", "sleep", "600"]);
    let db_ip = ok(&["inspect", "--format", "{{.NetworkSettings.Networks.front.IPAddress}}", "db"]);
    let db_ip = db_ip.trim();
    let port = host_http_server(b"host via a user network\n".to_vec());
    let script = format!(
        "cat /etc/resolv.conf; nslookup -type=a db; nslookup -type=a database; nslookup -type=a cache || echo NO-CACHE; \
         wget -qO- http://host.docker.internal:{port}/"
    );
    let out = ok(&["run", "--rm", "--network", "front", "busybox", "sh", "-c", &script]);
    assert!(out.contains("nameserver 127.0.0.11"), "{out}");
    assert!(out.matches(&format!("Address: {db_ip}")).count() >= 2, "db and its alias: {out}");
    assert!(out.contains("NO-CACHE"), "cache is on another network: {out}");
    assert!(out.ends_with("host via a user network\n"), "{out}");
    ok(&["rm", "-f", "db", "cache"]);
    ok(&["network", "rm", "front", "back"]);
    berth.stop_and_check_clean();
}
