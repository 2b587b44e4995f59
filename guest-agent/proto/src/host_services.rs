//! Guest -> host services: what the agent asks of the host daemon on its own
//! initiative (DNS questions the VM cannot answer, connections to
//! host.docker.internal), as opposed to the gRPC agent protocol, where the
//! host asks and the agent answers.
//!
//! The agent opens a vsock stream to the host (CID 2) on
//! [`HOST_SERVICES_VSOCK_PORT`] (a local agent: a unix socket, see
//! [`local_socket`]) and writes one [`Header`] first:
//!
//! ```text
//! 'B' 'H' version(1) service(1) port(u16, big endian)
//! ```
//!
//! - [`Service::Dns`] (port 0): then DNS messages framed as on TCP (RFC 1035
//!   4.2.2: a u16 length, then the message), any number of them; the host
//!   answers each, in order, framed the same way.
//! - [`Service::HostLoopback`]: the host connects to 127.0.0.1:`port` on
//!   its own loopback (never anywhere else) and writes one [`ConnectStatus`]
//!   byte; on [`ConnectStatus::Connected`] the stream then carries the
//!   connection's bytes both ways.
//!
//! The bytes come from inside the VM, where containers run: the host treats
//! every header as hostile ([`Header::parse`] accepts exactly the forms
//! above and nothing else).

use std::path::{Path, PathBuf};

/// The host port the agent dials for these services.
pub const HOST_SERVICES_VSOCK_PORT: u32 = 1030;

/// Bytes of a header on the wire.
pub const HEADER_LEN: usize = 6;

const MAGIC: [u8; 2] = *b"BH";
const VERSION: u8 = 1;

/// What a guest -> host stream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Resolve DNS questions with the host's own resolver.
    Dns,
    /// A TCP connection to this port on the host's loopback.
    HostLoopback { port: u16 },
}

/// The first bytes of every guest -> host stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub service: Service,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    BadMagic,
    UnknownVersion(u8),
    UnknownService(u8),
    /// Port 0 names no service on the host.
    ZeroPort,
    /// A DNS stream carries no port.
    StrayPort(u16),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::BadMagic => write!(f, "not a Berth host-services header"),
            HeaderError::UnknownVersion(v) => write!(f, "unknown host-services version {v}"),
            HeaderError::UnknownService(s) => write!(f, "unknown host service {s}"),
            HeaderError::ZeroPort => write!(f, "port 0 on the host's loopback"),
            HeaderError::StrayPort(p) => write!(f, "a DNS stream with a port ({p})"),
        }
    }
}

impl std::error::Error for HeaderError {}

impl Header {
    pub fn dns() -> Header {
        Header { service: Service::Dns }
    }

    pub fn host_loopback(port: u16) -> Header {
        Header { service: Service::HostLoopback { port } }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let (kind, port) = match self.service {
            Service::Dns => (1, 0u16),
            Service::HostLoopback { port } => (2, port),
        };
        let [hi, lo] = port.to_be_bytes();
        [MAGIC[0], MAGIC[1], VERSION, kind, hi, lo]
    }

    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if bytes[..2] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if bytes[2] != VERSION {
            return Err(HeaderError::UnknownVersion(bytes[2]));
        }
        let port = u16::from_be_bytes([bytes[4], bytes[5]]);
        match (bytes[3], port) {
            (1, 0) => Ok(Header::dns()),
            (1, port) => Err(HeaderError::StrayPort(port)),
            (2, 0) => Err(HeaderError::ZeroPort),
            (2, port) => Ok(Header::host_loopback(port)),
            (other, _) => Err(HeaderError::UnknownService(other)),
        }
    }
}

/// The host's one-byte answer to a [`Service::HostLoopback`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectStatus {
    Connected = 0,
    /// Nothing listens on that port of the host's loopback.
    Refused = 1,
    /// Any other failure to connect (timeout, no route).
    Failed = 2,
}

impl ConnectStatus {
    pub fn from_byte(byte: u8) -> Option<ConnectStatus> {
        [ConnectStatus::Connected, ConnectStatus::Refused, ConnectStatus::Failed].into_iter().find(|s| *s as u8 == byte)
    }
}

/// Where a local agent (no VM; serving the agent protocol on the unix
/// socket `agent_socket`) reaches these services: the daemon listens there.
pub fn local_socket(agent_socket: &Path) -> PathBuf {
    PathBuf::from(format!("{}.host-services", agent_socket.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        for header in
            [Header::dns(), Header::host_loopback(1), Header::host_loopback(8000), Header::host_loopback(65535)]
        {
            assert_eq!(Header::parse(&header.encode()), Ok(header));
        }
        assert_eq!(Header::host_loopback(8000).encode(), [b'B', b'H', 1, 2, 0x1f, 0x40]);
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(Header::parse(b"GET / "), Err(HeaderError::BadMagic));
        assert_eq!(Header::parse(&[b'B', b'H', 2, 1, 0, 0]), Err(HeaderError::UnknownVersion(2)));
        assert_eq!(Header::parse(&[b'B', b'H', 1, 9, 0, 0]), Err(HeaderError::UnknownService(9)));
        assert_eq!(Header::parse(&[b'B', b'H', 1, 2, 0, 0]), Err(HeaderError::ZeroPort));
        assert_eq!(Header::parse(&[b'B', b'H', 1, 1, 0, 53]), Err(HeaderError::StrayPort(53)));
    }

    /// Every 6-byte input either parses to a header that encodes back to
    /// exactly those bytes, or is refused: no input panics, and nothing
    /// parses to a port-0 connection (the host's loopback port 0).
    #[test]
    fn fuzzed_headers_never_panic_and_accept_only_canonical_forms() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            // xorshift64*: deterministic, so a failure reproduces.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut accepted = 0;
        for round in 0..200_000 {
            let random = next().to_le_bytes();
            let mut bytes = [random[0], random[1], random[2], random[3], random[4], random[5]];
            // Half the inputs keep a valid prefix, so the later fields are exercised too.
            if round % 2 == 0 {
                bytes[..3].copy_from_slice(&[b'B', b'H', 1]);
                bytes[3] %= 4;
            }
            if let Ok(header) = Header::parse(&bytes) {
                accepted += 1;
                assert_eq!(header.encode(), bytes);
                assert_ne!(header.service, Service::HostLoopback { port: 0 });
            }
        }
        assert!(accepted > 1000, "the fuzzer never produced a valid header ({accepted})");
    }

    #[test]
    fn connect_statuses_decode() {
        for status in [ConnectStatus::Connected, ConnectStatus::Refused, ConnectStatus::Failed] {
            assert_eq!(ConnectStatus::from_byte(status as u8), Some(status));
        }
        assert_eq!(ConnectStatus::from_byte(200), None);
    }

    #[test]
    fn the_local_socket_sits_beside_the_agents() {
        assert_eq!(local_socket(Path::new("/h/run/agent.sock")), Path::new("/h/run/agent.sock.host-services"));
    }
}
