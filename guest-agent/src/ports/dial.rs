//! Reaching a container's port from the agent.
//!
//! As docker-proxy does, the agent connects to the container's address on
//! its network (bridge or user network), from the VM's own namespace (or,
//! on the local backend, from the private namespace its bridges live in).
//! A container with no address (`--network none`, `container:X` of such a
//! one) is reached on 127.0.0.1 inside its own namespace: the socket is
//! made on a thread that joins it (a socket keeps the namespace it was made
//! in). [`Target::of`] is the one place that decides.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use berth_engine::container::{Container, NetworkMode};
use berth_engine::net::attach::DialTarget;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// How long a container may take to accept (a full backlog, a paused one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a container's ports are reached from the agent.
#[derive(Debug, Clone)]
pub struct Target {
    /// The network namespace to make the socket in; None: the agent's own
    /// (`--network host`: the VM's).
    netns: Option<PathBuf>,
    ip: IpAddr,
}

impl Target {
    /// `on_network`: the container's address on its first network, if any.
    pub fn of(record: &Container, on_network: Option<DialTarget>) -> Target {
        if matches!(record.host_config.network_mode.get(), Some(NetworkMode::Host)) {
            return Target { netns: None, ip: IpAddr::V4(Ipv4Addr::LOCALHOST) };
        }
        match on_network {
            Some(DialTarget { netns, ip }) => Target { netns, ip: IpAddr::V4(ip) },
            None => Target {
                netns: Some(PathBuf::from(format!("/proc/{}/ns/net", record.state.pid))),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            },
        }
    }
}

/// A socket of `ty` made in `target`'s network namespace, non-blocking.
async fn socket_for(target: &Target, ty: SockType) -> io::Result<OwnedFd> {
    let family = if target.ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let Some(netns) = target.netns.clone() else {
        return Ok(socket(family, ty, flags, None)?);
    };
    let (made, socket_made) = tokio::sync::oneshot::channel();
    // A thread of its own: it leaves the agent's namespace for good, and
    // ends right after (the socket stays in the namespace it was made in).
    std::thread::Builder::new().name("berth-dial".into()).spawn(move || {
        let result = std::fs::File::open(&netns).and_then(|ns| {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(socket(family, ty, flags, None)?)
        });
        let _ = made.send(result);
    })?;
    socket_made.await.map_err(|_| io::Error::other("the dialling thread died"))?
}

/// A TCP connection to `port` of the container.
pub async fn connect_to_container(target: &Target, port: u16) -> io::Result<tokio::net::TcpStream> {
    let socket =
        tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket_for(target, SockType::Stream).await?));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(SocketAddr::new(target.ip, port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the container did not accept in time"))??;
    // docker-proxy (Go) sets no-delay on every connection; the proxy must
    // not hold back what the client already sent.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A UDP socket connected to `port` of the container (one per client flow).
pub async fn udp_to_container(target: &Target, port: u16) -> io::Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::from(socket_for(target, SockType::Datagram).await?);
    socket.connect(SocketAddr::new(target.ip, port))?;
    tokio::net::UdpSocket::from_std(socket)
}
