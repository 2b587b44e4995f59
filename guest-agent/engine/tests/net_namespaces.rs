//! Container networks for real, in network namespaces on this host (needs
//! root): a private "VM" namespace holds the bridges and the firewall, as
//! the local backend's does, and each container is a namespace file. Two
//! endpoints on one bridge reach each other; a container on a normal
//! network reaches an "outside" host through the masquerade, one on an
//! internal network does not. Everything is made inside namespaces this
//! test owns, removed even when it fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_engine::net::netns;
use berth_engine::net::store::{nft_with_std, NetConfig, Networks};
use serde_json::json;

struct Cleanup {
    files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for file in self.files.iter().rev() {
            let _ = netns::remove(file);
        }
    }
}

fn sh(netns_path: Option<&Path>, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let ok = netns::run_in(netns_path, move || {
        std::process::Command::new(&args[0]).args(&args[1..]).status().map(|s| s.success())
    })
    .unwrap();
    assert!(ok, "command failed");
}

/// A listener inside `ns` that answers one connection with "pong".
fn serve(ns: &Path, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let listener = netns::run_in(Some(ns), move || TcpListener::bind(addr)).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(b"pong");
        }
    })
}

/// Connects from inside `ns`; the answer or the error.
fn dial(ns: &Path, addr: SocketAddr) -> Result<String, String> {
    netns::run_in(Some(ns), move || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        Ok(text)
    })
    .map_err(|e| e.to_string())
}

#[test]
fn endpoints_on_a_bridge_talk_and_internal_networks_have_no_egress() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (network namespaces)");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    let sandboxes = dir.path().join("sandboxes");
    let mut cleanup = Cleanup { files: vec![root.clone(), outside.clone()] };
    for id in ["a", "b", "c"] {
        cleanup.files.push(sandboxes.join(id));
    }
    let networks = Networks::load(NetConfig {
        records: dir.path().join("networks"),
        sandboxes: sandboxes.clone(),
        root: Some(root.clone()),
        reserved: vec!["10.250.0.0/24".parse().unwrap()],
        firewall: Box::new(nft_with_std),
    })
    .unwrap();

    // The "uplink": a veth from the root namespace to an outside one.
    netns::create(&outside).unwrap();
    let outside_s = outside.display().to_string();
    sh(Some(&root), &["ip", "link", "add", "up0", "type", "veth", "peer", "name", "out0"]);
    sh(Some(&root), &["ip", "link", "set", "out0", "netns", &outside_s]);
    sh(Some(&root), &["ip", "addr", "add", "10.250.0.1/24", "dev", "up0"]);
    sh(Some(&root), &["ip", "link", "set", "up0", "up"]);
    sh(Some(&outside), &["ip", "addr", "add", "10.250.0.2/24", "dev", "out0"]);
    sh(Some(&outside), &["ip", "link", "set", "out0", "up"]);

    networks.create(&json!({"Name": "front"})).unwrap();
    networks.create(&json!({"Name": "back", "Internal": true})).unwrap();
    networks.configure("a", "alpha", "front", &json!({}), "").unwrap();
    networks.configure("b", "beta", "front", &json!({}), "").unwrap();
    networks.configure("c", "gamma", "back", &json!({}), "").unwrap();
    let sandbox_a = networks.setup("a", "alpha").unwrap();
    let sandbox_b = networks.setup("b", "beta").unwrap();
    let sandbox_c = networks.setup("c", "gamma").unwrap();
    let ip_b = networks.addresses("b")[0];
    assert_eq!(networks.addresses("a"), [Ipv4Addr::new(172, 18, 0, 2)], "the first user network is 172.18/16");
    assert_eq!(ip_b, Ipv4Addr::new(172, 18, 0, 3));

    let to_b = SocketAddr::from((ip_b, 7001));
    let server = serve(&sandbox_b, to_b);
    assert_eq!(dial(&sandbox_a, to_b), Ok("pong".into()), "a reaches b on their bridge");
    server.join().unwrap();

    let out = SocketAddr::from((Ipv4Addr::new(10, 250, 0, 2), 7002));
    let server = serve(&outside, out);
    assert_eq!(dial(&sandbox_a, out), Ok("pong".into()), "a reaches outside through the masquerade");
    server.join().unwrap();
    let _server = serve(&outside, out);
    let internal = dial(&sandbox_c, out);
    assert!(internal.is_err(), "an internal network has no egress: {internal:?}");
    // Not even with a route of its own: the firewall drops it.
    sh(Some(&sandbox_c), &["ip", "route", "add", "default", "via", "172.19.0.1"]);
    assert!(dial(&sandbox_c, out).is_err(), "the firewall keeps an internal network in");
    assert!(dial(&sandbox_c, to_b).is_err(), "networks are isolated from each other");

    let names: Vec<String> = networks.visible_names("a").into_iter().map(|n| n.name).collect();
    assert!(names.contains(&"beta".to_string()) && !names.contains(&"gamma".to_string()), "{names:?}");

    // Stopping removes the endpoints; the addresses come back on restart.
    networks.teardown("b").unwrap();
    assert!(!sandbox_b.exists());
    let veths = netns::run_in(Some(&root), || {
        std::process::Command::new("ip").args(["-o", "link", "show", "type", "veth"]).output()
    })
    .unwrap();
    let listing = String::from_utf8_lossy(&veths.stdout).to_string();
    assert_eq!(listing.lines().filter(|l| l.contains("veth")).count(), 2, "b's veth is gone: {listing}");
    networks.setup("b", "beta").unwrap();
    assert_eq!(networks.addresses("b"), [ip_b], "b got its address back");
    let err = networks.remove("front").unwrap_err().to_string();
    assert!(err.contains("has active endpoints"), "{err}");
    for id in ["a", "b", "c"] {
        networks.forget(id).unwrap();
    }
    networks.remove("front").unwrap();
    drop(networks);
    drop(cleanup);
}

/// The network API's answers as dockerd gives them (shapes and errors),
/// on a store whose bridges live in a private namespace.
#[test]
fn network_api_answers_as_dockerd() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (network namespaces)");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let _cleanup = Cleanup { files: vec![root.clone()] };
    let config = || NetConfig {
        records: dir.path().join("networks"),
        sandboxes: dir.path().join("sandboxes"),
        root: Some(root.clone()),
        reserved: vec!["172.18.0.0/16".parse().unwrap()],
        firewall: Box::new(nft_with_std),
    };
    let networks = Networks::load(config()).unwrap();
    let created = networks
        .create(&json!({"Name": "ipam", "IPAM": {"Driver": "default", "Options": null, "Config": [
            {"Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24", "Gateway": "172.28.5.254",
             "AuxiliaryAddresses": {"a": "172.28.1.5", "b": "172.28.1.6"}}]}}))
        .unwrap();
    assert_eq!(created["Warning"], "");
    let id = created["Id"].as_str().unwrap().to_string();
    let inspect = networks.inspect(&id[..12]).unwrap();
    assert_eq!(
        inspect["IPAM"],
        json!({"Driver": "default", "Options": null, "Config": [{"Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24",
            "Gateway": "172.28.5.254", "AuxiliaryAddresses": {"a": "172.28.1.5", "b": "172.28.1.6"}}]})
    );
    assert_eq!((inspect["Scope"].as_str(), inspect["Driver"].as_str()), (Some("local"), Some("bridge")));
    // A reserved route pushes the automatic pool past 172.18/16.
    networks.create(&json!({"Name": "auto"})).unwrap();
    assert_eq!(networks.inspect("auto").unwrap()["IPAM"]["Config"][0]["Subnet"], "172.19.0.0/16");

    let err = |body: serde_json::Value| networks.create(&body).unwrap_err().to_string();
    assert_eq!(err(json!({"Name": "auto"})), "network with name auto already exists");
    assert_eq!(err(json!({"Name": "bridge"})), "bridge is a pre-defined network and cannot be created");
    assert_eq!(err(json!({"Name": "h", "Driver": "host"})), "only one instance of \"host\" network is allowed");
    assert_eq!(
        err(json!({"Name": "v6", "EnableIPv6": true, "IPAM": {"Config": [{"Subnet": "2001:389::1/64"}]}})),
        "invalid subnet 2001:389::1/64 : it should be 2001:389::/64"
    );
    assert!(err(json!({"Name": "o", "IPAM": {"Config": [{"Subnet": "172.28.3.0/24"}]}})).contains("overlaps"));

    let names = |filters: &str| -> Vec<String> {
        let listed = networks.list(filters).unwrap();
        listed.as_array().unwrap().iter().map(|n| n["Name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(r#"{"type":["custom"]}"#), ["ipam", "auto"]);
    assert_eq!(names(r#"{"name":["au"]}"#), ["auto"]);
    assert_eq!(names(&format!(r#"{{"id":["{}"]}}"#, &id[..5])), ["ipam"]);
    assert!(networks.list(r#"{"nope":["x"]}"#).is_err());

    // Records survive a restart of the engine.
    drop(networks);
    let networks = Networks::load(config()).unwrap();
    assert_eq!(networks.inspect("ipam").unwrap()["Id"], id.as_str());
    assert_eq!(
        networks.remove("bridge").unwrap_err().to_string(),
        "bridge is a pre-defined network and cannot be removed"
    );
    networks.remove("ipam").unwrap();
    assert_eq!(networks.prune("", 0).unwrap(), json!({"NetworksDeleted": ["auto"]}));
    assert_eq!(networks.inspect("auto").unwrap_err().to_string(), "network auto not found");
}
