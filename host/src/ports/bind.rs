//! Binding the host's sockets for published ports, with dockerd's rules:
//! no HostIp binds 0.0.0.0 and ::, an empty HostPort takes an ephemeral
//! port from the host's `ip_local_port_range` (the allocator continues after
//! the last port it handed out, and never hands out 0), a HostPort range
//! takes its first free port; a failure says what dockerd says.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use berth_agent_proto::ports::{PortBinding, Proto, Requested, ANY_ADDRESSES};
use socket2::{Domain, Socket, Type};

/// dockerd's fallback when the kernel's range cannot be read.
const FALLBACK_RANGE: (u16, u16) = (49153, 65535);

/// Ephemeral ports: the range, and where each protocol left off.
pub struct Allocator {
    range: (u16, u16),
    last: HashMap<Proto, u16>,
}

impl Allocator {
    /// The host's own ephemeral range, as dockerd reads it.
    pub fn from_system() -> Allocator {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        Allocator::with_range(parse_range(&text).unwrap_or(FALLBACK_RANGE))
    }

    pub fn with_range(range: (u16, u16)) -> Allocator {
        Allocator { range, last: HashMap::new() }
    }

    /// Every port of the range once, starting after the last one handed out.
    fn candidates(&self, proto: Proto) -> impl Iterator<Item = u16> {
        let (first, last) = self.range;
        let span = u32::from(last - first) + 1;
        let start = match self.last.get(&proto) {
            Some(&previous) if (first..last).contains(&previous) => u32::from(previous - first) + 1,
            _ => 0,
        };
        (0..span).map(move |i| first + ((start + i) % span) as u16)
    }

    fn handed_out(&mut self, proto: Proto, port: u16) {
        self.last.insert(proto, port);
    }
}

/// `ip_local_port_range`: two numbers; port 0 is never a candidate.
fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    match (numbers.next()??, numbers.next()??) {
        (first, last) if first > 0 && first <= last => Some((first, last)),
        _ => None,
    }
}

/// A bound host socket, listening (TCP) or ready to receive (UDP).
#[derive(Debug)]
pub enum HostSocket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Binds `proto` on `ip:port` (port 0 is never asked for).
pub fn bind_socket(proto: Proto, ip: IpAddr, port: u16) -> io::Result<HostSocket> {
    let address = SocketAddr::new(ip, port);
    let ty = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(address), ty, None)?;
    if ip.is_ipv6() {
        // `::` beside `0.0.0.0`, as dockerd binds them: each its own family.
        socket.set_only_v6(true)?;
    }
    if proto == Proto::Tcp {
        // As Go's listeners (docker-proxy): a port whose last connections
        // are in TIME_WAIT can be bound again at once.
        socket.set_reuse_address(true)?;
    }
    socket.bind(&address.into())?;
    socket.set_nonblocking(true)?;
    Ok(match proto {
        Proto::Tcp => {
            socket.listen(1024)?;
            HostSocket::Tcp(socket.into())
        }
        Proto::Udp => HostSocket::Udp(socket.into()),
    })
}

/// Why a requested port could not be bound, in dockerd's words (without
/// the "driver failed programming external connectivity" wrapping).
fn bind_failure(proto: Proto, address: SocketAddr, err: &io::Error, ours: bool) -> String {
    if ours {
        // dockerd's port allocator: another container holds it.
        return format!("Bind for {address} failed: port is already allocated");
    }
    let why = match err.kind() {
        io::ErrorKind::AddrInUse => "address already in use".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::AddrNotAvailable => "cannot assign requested address".to_string(),
        _ => err.to_string(),
    };
    format!("failed to bind host port {address}/{}: {why}", proto.as_str())
}

/// The addresses `-p` binds for a request: its HostIp, or both wildcards.
fn addresses(request: &Requested) -> Vec<IpAddr> {
    match request.host_ip {
        Some(ip) => vec![ip],
        None => ANY_ADDRESSES.to_vec(),
    }
}

/// Whether the host cannot have `ip` at all (no IPv6): `::` is then left
/// out of a wildcard binding, as dockerd leaves it out.
fn family_missing(err: &io::Error) -> bool {
    crate::platform::is_missing_address_family(err)
}

/// Binds every address of `request` on `port`, or none.
fn bind_port(request: &Requested, port: u16) -> Result<Vec<(PortBinding, HostSocket)>, (SocketAddr, io::Error)> {
    let mut bound = Vec::new();
    for ip in addresses(request) {
        match bind_socket(request.proto, ip, port) {
            Ok(socket) => bound.push((
                PortBinding {
                    proto: request.proto,
                    container_port: request.container_port,
                    host_ip: ip,
                    host_port: port,
                },
                socket,
            )),
            Err(err) if request.host_ip.is_none() && ip.is_ipv6() && family_missing(&err) => {}
            Err(err) => return Err((SocketAddr::new(ip, port), err)),
        }
    }
    Ok(bound)
}

/// Binds one request's sockets. `ours` tells whether another container of
/// ours holds a (protocol, address, port), for dockerd's two messages.
pub fn bind_request(
    request: &Requested,
    allocator: &mut Allocator,
    ours: impl Fn(Proto, SocketAddr) -> bool,
) -> Result<Vec<(PortBinding, HostSocket)>, String> {
    match request.host_ports {
        Some((first, last)) => {
            let mut failure = None;
            for port in first..=last {
                match bind_port(request, port) {
                    Ok(bound) => return Ok(bound),
                    Err(failed) => failure = Some(failed),
                }
            }
            let (address, err) = failure.expect("a range has a port");
            if first != last && err.kind() == io::ErrorKind::AddrInUse {
                let host = SocketAddr::new(address.ip(), 0).to_string();
                let host = host.trim_end_matches(":0");
                return Err(format!("Bind for {host}:{first}-{last} failed: port is already allocated"));
            }
            Err(bind_failure(request.proto, address, &err, ours(request.proto, address)))
        }
        None => {
            let candidates: Vec<u16> = allocator.candidates(request.proto).collect();
            for port in candidates {
                match bind_port(request, port) {
                    Ok(bound) => {
                        allocator.handed_out(request.proto, port);
                        return Ok(bound);
                    }
                    Err((_, err)) if err.kind() == io::ErrorKind::AddrInUse => continue,
                    Err((address, err)) => return Err(bind_failure(request.proto, address, &err, false)),
                }
            }
            // dockerd's ErrAllPortsAllocated.
            Err("all ports are allocated".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(proto: Proto, host_ip: Option<&str>, host_ports: Option<(u16, u16)>) -> Requested {
        Requested { proto, container_port: 80, host_ip: host_ip.map(|ip| ip.parse().unwrap()), host_ports }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn the_range_is_read_as_the_kernel_writes_it() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("0 100"), None, "0 is never a port");
        assert_eq!(parse_range("9 8"), None);
        assert_eq!(parse_range(""), None);
    }

    #[test]
    fn the_allocator_continues_after_the_last_port_and_wraps() {
        let mut allocator = Allocator::with_range((100, 103));
        assert_eq!(allocator.candidates(Proto::Tcp).collect::<Vec<_>>(), [100, 101, 102, 103]);
        allocator.handed_out(Proto::Tcp, 101);
        assert_eq!(allocator.candidates(Proto::Tcp).collect::<Vec<_>>(), [102, 103, 100, 101]);
        allocator.handed_out(Proto::Tcp, 103);
        assert_eq!(allocator.candidates(Proto::Tcp).collect::<Vec<_>>(), [100, 101, 102, 103]);
        assert_eq!(allocator.candidates(Proto::Udp).next(), Some(100), "each protocol has its own place");
    }

    #[test]
    fn ephemeral_ports_skip_taken_ones_and_are_never_zero() {
        // A range of three loopback ports whose middle one is held.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let middle = held.local_addr().unwrap().port();
        let mut allocator = Allocator::with_range((middle - 1, middle + 1));
        allocator.handed_out(Proto::Tcp, middle - 1);
        let loopback = request(Proto::Tcp, Some("127.0.0.1"), None);
        let first = bind_request(&loopback, &mut allocator, |_, _| false).unwrap();
        assert_eq!(first[0].0.host_port, middle + 1);
        let second = bind_request(&loopback, &mut allocator, |_, _| false).unwrap();
        assert_eq!(second[0].0.host_port, middle - 1, "wrapped past the held port");
        assert_eq!(
            bind_request(&loopback, &mut allocator, |_, _| false).unwrap_err(),
            "all ports are allocated",
            "every port of the range is taken now"
        );
    }

    #[test]
    fn a_taken_port_fails_with_dockerds_words() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut allocator = Allocator::with_range((40000, 40001));
        let wanted = request(Proto::Tcp, Some("127.0.0.1"), Some((port, port)));
        assert_eq!(
            bind_request(&wanted, &mut allocator, |_, _| false).unwrap_err(),
            format!("failed to bind host port 127.0.0.1:{port}/tcp: address already in use")
        );
        assert_eq!(
            bind_request(&wanted, &mut allocator, |_, _| true).unwrap_err(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
    }

    #[test]
    fn a_range_takes_its_first_free_port() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut allocator = Allocator::with_range((40000, 40001));
        let wanted = request(Proto::Tcp, Some("127.0.0.1"), Some((port, port + 1)));
        match bind_request(&wanted, &mut allocator, |_, _| false) {
            Ok(bound) => assert_eq!(bound[0].0.host_port, port + 1),
            // The port after it happened to be taken too.
            Err(err) => assert!(err.contains("port is already allocated"), "{err}"),
        }
    }

    #[test]
    fn a_wildcard_binding_is_both_families_on_one_port() {
        let port = free_port();
        let mut allocator = Allocator::with_range((40000, 40001));
        let bound = bind_request(&request(Proto::Udp, None, Some((port, port))), &mut allocator, |_, _| false).unwrap();
        let addresses: Vec<String> = bound.iter().map(|(b, _)| b.host_ip.to_string()).collect();
        assert_eq!(addresses[0], "0.0.0.0");
        assert!(addresses.len() == 1 || addresses[1] == "::", "{addresses:?}");
        // While bound, the same port on the same address is refused.
        let again =
            bind_request(&request(Proto::Udp, Some("0.0.0.0"), Some((port, port))), &mut allocator, |_, _| false);
        assert!(again.unwrap_err().contains("address already in use"));
        drop(bound);
        assert!(bind_socket(Proto::Udp, "0.0.0.0".parse().unwrap(), port).is_ok(), "closed with its sockets");
    }
}
