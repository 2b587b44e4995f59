//! The client against a real server: dnsmasq on one end of a veth pair in a
//! network namespace of its own, the client (in a thread that joined the
//! other end's namespace) leasing, configuring and renewing an address.

use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};

use super::*;

const SERVER_ADDR: &str = "10.231.0.1";

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("running ip");
    assert!(status.success(), "ip {args:?}: {status}");
}

/// The namespaces and the server; dropped, both go (and the veth pair with them).
struct TestLink {
    namespaces: Vec<String>,
    dnsmasq: Option<Child>,
}

impl Drop for TestLink {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// dnsmasq's lease file: `expiry mac address name client-id` per lease.
fn lease_expiry(file: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.split_whitespace().next()?.parse().ok()
}

#[test]
#[ignore = "needs root, ip(8) and dnsmasq: cargo test -p berth-agent --bin berth-agent dhcp -- --ignored"]
fn leases_and_renews_from_dnsmasq_across_network_namespaces() {
    let id = std::process::id() % 100_000;
    let (server_ns, client_ns) = (format!("berth-dhcps-{id}"), format!("berth-dhcpc-{id}"));
    let (server_if, client_if) = (format!("bds{id}"), format!("bdc{id}"));
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("leases");
    let mut link = TestLink { namespaces: Vec::new(), dnsmasq: None };
    for ns in [&server_ns, &client_ns] {
        ip(&["netns", "add", ns]);
        link.namespaces.push(ns.clone());
    }
    ip(&["link", "add", &server_if, "type", "veth", "peer", "name", &client_if]);
    ip(&["link", "set", &server_if, "netns", &server_ns]);
    ip(&["link", "set", &client_if, "netns", &client_ns]);
    ip(&["-n", &server_ns, "addr", "add", &format!("{SERVER_ADDR}/24"), "dev", &server_if]);
    ip(&["-n", &server_ns, "link", "set", &server_if, "up"]);
    link.dnsmasq = Some(
        Command::new("ip")
            .args(["netns", "exec", &server_ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--port=0", "--bind-interfaces", &format!("--interface={server_if}"), "--pid-file="])
            .arg("--dhcp-range=10.231.0.50,10.231.0.60,255.255.255.0,5m")
            .args([
                &format!("--dhcp-option=option:router,{SERVER_ADDR}"),
                &format!("--dhcp-option=option:dns-server,{SERVER_ADDR}"),
            ])
            // Renew after 3 s, so the test sees a renewal.
            .args(["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,200"])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian dnsmasq-base)"),
    );

    let ns_file = std::fs::File::open(format!("/run/netns/{client_ns}")).unwrap();
    let client = std::thread::spawn(move || {
        // Only this thread (and the client's thread it starts) joins the namespace.
        nix::sched::setns(ns_file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let iface = client_if.clone();
        let lease = start(&client_if, Duration::from_secs(20), move |lease| {
            berth_engine::netif::configure_ipv4(&iface, lease.address, lease.prefix_len, lease.gateway).unwrap()
        })
        .unwrap();
        let configured: Vec<Ipv4Addr> = nix::ifaddrs::getifaddrs()
            .unwrap()
            .filter(|ifa| ifa.interface_name == client_if)
            .filter_map(|ifa| Some(ifa.address?.as_sockaddr_in()?.ip()))
            .collect();
        (lease, configured)
    });
    let (lease, configured) = client.join().unwrap();
    let lease = lease.expect("no lease from dnsmasq within 20 s");
    let octets = lease.address.octets();
    assert_eq!(octets[..3], [10, 231, 0], "{lease:?}");
    assert!((50..=60).contains(&octets[3]), "{lease:?}");
    let server: Ipv4Addr = SERVER_ADDR.parse().unwrap();
    assert_eq!((lease.prefix_len, lease.gateway, lease.server, &lease.dns[..]), (24, server, server, &[server][..]));
    assert_eq!(lease.lease_time, Duration::from_secs(300));
    assert_eq!(lease.renew_after, Duration::from_secs(3));
    assert_eq!(configured, [lease.address], "eth0's address is the lease's");

    // dnsmasq moves the lease's expiry on when the client renews it at T1.
    let first = lease_expiry(&leases).expect("dnsmasq recorded the lease");
    let deadline = Instant::now() + Duration::from_secs(15);
    // (None: read while dnsmasq rewrites the file.)
    while lease_expiry(&leases).is_none_or(|expiry| expiry <= first) {
        assert!(Instant::now() < deadline, "the lease was not renewed after T1 (3 s)");
        std::thread::sleep(Duration::from_millis(200));
    }
}
