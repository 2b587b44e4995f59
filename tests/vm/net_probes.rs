//! Reaching published ports from the host, for the `cli` and `vm` tests,
//! from the host's loopback and from a client in a network namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_engine::net::netns;

/// tests/images/netprobe.c, built static (it runs in the busybox image
/// and in the VM): a UDP echo server and TCP sinks the image lacks.
pub fn build_netprobe(dir: &Path) -> PathBuf {
    let out = dir.join("netprobe");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/images/netprobe.c");
    let built = Command::new("musl-gcc").args(["-static", "-O2", "-o"]).arg(&out).arg(source).status();
    assert!(
        built.as_ref().is_ok_and(|s| s.success()),
        "building {source} needs musl-gcc (packaging/setup.sh installs musl-tools): {built:?}"
    );
    out
}

/// A server on this host's loopback that answers each of the next 16
/// connections with `body` as an HTTP/1.0 response (its thread ends with
/// the process). It writes first, so `nc` with nothing to send gets it
/// too, then drains the request so that closing does not reset it.
pub fn loopback_server(body: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(16) {
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(body);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
        }
    });
    port
}

/// A TCP port nothing on this host listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The UDP port of the same number must be free too.
    match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(_) => port,
        Err(_) => free_port(),
    }
}

/// Whether `port` can be bound on every address (nothing holds it).
pub fn tcp_port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("::", port)).is_ok()
}

pub fn udp_port_free(port: u16) -> bool {
    UdpSocket::bind(("0.0.0.0", port)).is_ok()
}

/// `GET /` on 127.0.0.1:port until a server answers (or `within` passes).
pub fn http_get(port: u16, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            if stream.read_to_string(&mut answer).is_ok() && !answer.is_empty() {
                return Some(answer);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Sends `payload` from `socket` to 127.0.0.1:port until it comes back.
pub fn udp_echo(socket: &UdpSocket, port: u16, payload: &[u8], within: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        socket.send_to(payload, ("127.0.0.1", port)).ok()?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Waits until `free()` holds (a released socket closes within a moment).
pub fn eventually(within: Duration, free: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if free() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs container `name`: netprobe's UDP echo on 5353, published on `host_port`.
pub fn run_udp_echo(berth: &super::Berth, netprobe: &Path, name: &str, host_port: u16) {
    let mount = format!("{}:/netprobe:ro", netprobe.display());
    let publish = format!("{host_port}:5353/udp");
    let args = ["run", "-d", "--name", name, "-v", &mount, "-p", &publish, "busybox", "/netprobe", "udp-echo", "5353"];
    super::docker_ok(berth, &args);
}

/// The "LAN": the host's end and the client's end of the veth pair.
pub const HOST_SIDE: Ipv4Addr = Ipv4Addr::new(10, 213, 77, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 213, 77, 2);

/// A client namespace wired to the host's: removed with its veth pair
/// (deleting either end takes the other) however the test ends.
pub struct ClientNetns {
    file: PathBuf,
    host_veth: String,
}

impl ClientNetns {
    pub fn new(dir: &std::path::Path) -> ClientNetns {
        let file = dir.join("client-netns");
        netns::create(&file).unwrap();
        let host_veth = format!("bcl{}", std::process::id() % 100_000);
        let this = ClientNetns { file, host_veth };
        let peer = format!("{}c", this.host_veth);
        let netns_file = this.file.to_str().unwrap();
        ip(&["link", "add", &this.host_veth, "type", "veth", "peer", "name", &peer, "netns", netns_file]);
        ip(&["addr", "add", &format!("{HOST_SIDE}/30"), "dev", &this.host_veth]);
        ip(&["link", "set", &this.host_veth, "up"]);
        this.run(&["ip", "addr", "add", &format!("{CLIENT}/30"), "dev", &peer]);
        this.run(&["ip", "link", "set", &peer, "up"]);
        this.run(&["ip", "link", "set", "lo", "up"]);
        this
    }

    fn run(&self, args: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let status = netns::run_in(Some(&self.file), move || Command::new(&args[0]).args(&args[1..]).status()).unwrap();
        assert!(status.success(), "command failed in the client namespace");
    }

    /// What the container answers a TCP connection from this namespace.
    pub fn tcp_answer(&self, port: u16) -> String {
        let addr = SocketAddr::from((HOST_SIDE, port));
        netns::run_in(Some(&self.file), move || tcp_answer(addr)).unwrap()
    }

    /// What the container answers a datagram from this namespace.
    pub fn udp_answer(&self, port: u16) -> String {
        let addr = SocketAddr::from((HOST_SIDE, port));
        netns::run_in(Some(&self.file), move || udp_answer(addr)).unwrap()
    }
}

impl Drop for ClientNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_veth]).status();
        let _ = netns::remove(&self.file);
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?} failed");
}

/// Connects until the container answers (its server may still be starting).
pub fn tcp_answer(addr: SocketAddr) -> std::io::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).and_then(|mut conn| {
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut text = String::new();
            conn.read_to_string(&mut text)?;
            Ok(text)
        });
        match attempt {
            Ok(text) if !text.is_empty() => return Ok(text.trim().to_string()),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(_) => return Err(std::io::Error::other("the container answered nothing")),
            Err(err) => return Err(err),
        }
    }
}

pub fn udp_answer(addr: SocketAddr) -> std::io::Result<String> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(300)))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 128];
    while Instant::now() < deadline {
        socket.send_to(b"who am i", addr)?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    Err(std::io::Error::other("no UDP answer"))
}

/// Runs a container that answers each client its own address (TCP and
/// UDP, published), and checks what it sees: a client in another network
/// namespace (a "LAN" host, wired to this one by a veth pair) with its
/// own address, one on the host's loopback with the gateway's, as behind
/// dockerd's userland proxy.
pub fn check_the_container_sees_its_clients(berth: &super::Berth) {
    let netprobe = build_netprobe(berth.share.path());
    let (tcp, udp) = (free_port(), free_port());
    let mount = format!("{}:/netprobe:ro", netprobe.display());
    let serve = "/netprobe udp-peer 7001 & exec /netprobe tcp-peer 7000";
    super::docker_ok(
        berth,
        &[
            "run",
            "-d",
            "--name",
            "peer",
            "-v",
            &mount,
            "-p",
            &format!("{tcp}:7000"),
            "-p",
            &format!("{udp}:7001/udp"),
            "busybox",
            "sh",
            "-c",
            serve,
        ],
    );
    let client = ClientNetns::new(berth.share.path());

    let seen = client.tcp_answer(tcp);
    assert!(seen.starts_with(&format!("{CLIENT}:")), "TCP from {CLIENT}, the container saw {seen}");
    let seen = client.udp_answer(udp);
    assert!(seen.starts_with(&format!("{CLIENT}:")), "UDP from {CLIENT}, the container saw {seen}");

    // The host's own loopback is not an address the container could answer:
    // it sees the gateway, as behind docker-proxy.
    let seen = tcp_answer(SocketAddr::from((Ipv4Addr::LOCALHOST, tcp))).unwrap();
    assert!(seen.starts_with("172.17.0.1:"), "TCP from loopback, the container saw {seen}");
    let seen = udp_answer(SocketAddr::from((Ipv4Addr::LOCALHOST, udp))).unwrap();
    assert!(seen.starts_with("172.17.0.1:"), "UDP from loopback, the container saw {seen}");

    super::docker_ok(berth, &["rm", "-f", "peer"]);
    drop(client);
}
