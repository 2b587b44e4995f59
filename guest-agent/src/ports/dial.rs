//! Reaching a container's port from the agent.
//!
//! As docker-proxy does, the agent connects to the container's address on
//! its network (bridge or user network), from the VM's own namespace (or,
//! on the local backend, from the private namespace its bridges live in).
//! A container with no address (`--network none`, `container:X` of such a
//! one) is reached on 127.0.0.1 inside its own namespace: the socket is
//! made on a thread that joins it (a socket keeps the namespace it was made
//! in). [`Target::of`] is the one place that decides.
//!
//! Unlike docker-proxy, a client that is not on the host's loopback is
//! seen by the container with its own address: the socket is
//! `IP_TRANSPARENT` and bound to the client's address before it connects
//! ([`Target::source_for`] decides when), and the container's replies to
//! that address come back to it through the firewall's socket mark and the
//! local-delivery table (`berth_engine::net::{nft, link}`). Loopback
//! clients keep the gateway's address, as with docker-proxy.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use berth_engine::container::{Container, NetworkMode};
use berth_engine::net::attach::DialTarget;
use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

/// How long a container may take to accept (a full backlog, a paused one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a container's ports are reached from the agent.
#[derive(Debug, Clone)]
pub struct Target {
    /// The network namespace to make the socket in; None: the agent's own
    /// (`--network host`: the VM's).
    netns: Option<PathBuf>,
    ip: IpAddr,
    /// The container's subnet when it is dialled on a network: only then
    /// can a connection carry the client's address.
    subnet: Option<ipnet::Ipv4Net>,
}

impl Target {
    /// `on_network`: the container's address on its first network, if any.
    pub fn of(record: &Container, on_network: Option<DialTarget>) -> Target {
        if matches!(record.host_config.network_mode.get(), Some(NetworkMode::Host)) {
            return Target { netns: None, ip: IpAddr::V4(Ipv4Addr::LOCALHOST), subnet: None };
        }
        match on_network {
            Some(DialTarget { netns, ip, subnet }) => Target { netns, ip: IpAddr::V4(ip), subnet },
            None => Target {
                netns: Some(PathBuf::from(format!("/proc/{}/ns/net", record.state.pid))),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                subnet: None,
            },
        }
    }

    /// The source address a connection for `client` is made from: the
    /// client's own, when the container can answer it through the agent.
    /// None (the gateway's address, as docker-proxy gives): a client on the
    /// host's loopback or otherwise not routable (unspecified, multicast),
    /// an IPv6 client of an IPv4-only container, a client inside the
    /// container's own subnet (the container would look for it on the
    /// bridge), or a container reached on its loopback or the VM's.
    pub fn source_for(&self, client: SocketAddr) -> Option<SocketAddrV4> {
        let subnet = self.subnet?;
        let ip = match client.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => ip.to_ipv4_mapped()?,
        };
        let routable = !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast());
        (routable && !subnet.contains(&ip)).then(|| SocketAddrV4::new(ip, client.port()))
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

/// Makes `socket` transparent and binds it to `source`: the client's port
/// when it is free in the agent's namespace, else any port of the address.
fn bind_transparent(socket: &OwnedFd, source: SocketAddrV4) -> io::Result<()> {
    setsockopt(socket, sockopt::IpTransparent, &true)?;
    match bind(std::os::fd::AsRawFd::as_raw_fd(socket), &SockaddrIn::from(source)) {
        Err(nix::errno::Errno::EADDRINUSE) => {
            let any_port = SocketAddrV4::new(*source.ip(), 0);
            Ok(bind(std::os::fd::AsRawFd::as_raw_fd(socket), &SockaddrIn::from(any_port))?)
        }
        other => Ok(other?),
    }
}

/// A TCP connection to `port` of the container, from `source` when given
/// ([`Target::source_for`]).
pub async fn connect_to_container(
    target: &Target,
    port: u16,
    source: Option<SocketAddrV4>,
) -> io::Result<tokio::net::TcpStream> {
    let socket = socket_for(target, SockType::Stream).await?;
    if let Some(source) = source {
        bind_transparent(&socket, source)?;
    }
    let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(SocketAddr::new(target.ip, port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the container did not accept in time"))??;
    // docker-proxy (Go) sets no-delay on every connection; the proxy must
    // not hold back what the client already sent.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A UDP socket connected to `port` of the container (one per client
/// flow), from `source` when given ([`Target::source_for`]).
pub async fn udp_to_container(
    target: &Target,
    port: u16,
    source: Option<SocketAddrV4>,
) -> io::Result<tokio::net::UdpSocket> {
    let socket = socket_for(target, SockType::Datagram).await?;
    if let Some(source) = source {
        bind_transparent(&socket, source)?;
    }
    let socket = std::net::UdpSocket::from(socket);
    socket.connect(SocketAddr::new(target.ip, port))?;
    tokio::net::UdpSocket::from_std(socket)
}
