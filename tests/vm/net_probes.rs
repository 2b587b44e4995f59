//! Reaching published ports from the host, for the `cli` and `vm` tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
