//! The forwarding port's wire format ([`super::PORTS_VSOCK_PORT`]).
//!
//! Each stream opens with the agent key (as on the agent's own port), then
//! one [`ForwardHeader`]: `u16` length (big-endian), then version, protocol,
//! the container's ID, the container port and the client's address. The
//! agent answers one [`ForwardStatus`] byte.
//! - TCP: after `Connected` the stream is the connection's bytes, both ways,
//!   in length-prefixed frames that carry half-closes (see `relay`); one
//!   stream per connection, so vsock's per-stream credit is the flow
//!   control and one slow client holds up nobody else.
//! - UDP: the stream carries the whole binding's datagrams, each framed as
//!   `u16` length, then the client's address, then the payload; the agent
//!   frames the container's replies the same way, addressed to the client.
//!
//! An address is a family byte (4 or 6), the IP's bytes, and a `u16` port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Proto;

/// Bumped when the header changes; the agent refuses another version.
pub const HEADER_VERSION: u8 = 1;

/// The largest UDP payload forwarded (docker-proxy's `UDPBufSize`).
pub const MAX_DATAGRAM: usize = 65507;

/// The largest header on the wire (a container ID is 64 hex digits).
pub const MAX_HEADER: usize = 512;

/// What the agent answers a header with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ForwardStatus {
    /// The container accepted the connection (TCP) or the binding is served (UDP).
    Connected = 0,
    /// Nothing listens on the port in the container: the host resets the client.
    Refused = 1,
    /// The container could not be reached (not running, no network).
    Unreachable = 2,
    /// The header was malformed, of another version, or names a port the
    /// container does not publish.
    BadRequest = 3,
}

impl ForwardStatus {
    pub fn from_byte(byte: u8) -> ForwardStatus {
        match byte {
            0 => ForwardStatus::Connected,
            1 => ForwardStatus::Refused,
            2 => ForwardStatus::Unreachable,
            _ => ForwardStatus::BadRequest,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardHeader {
    pub proto: Proto,
    pub container_id: String,
    pub container_port: u16,
    /// Who connected to the host's socket (for UDP: the binding's own address).
    pub client: SocketAddr,
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Reads an address from the front of `bytes`; the rest after it.
fn take_addr(bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (&family, rest) = bytes.split_first()?;
    let (ip, rest) = match family {
        4 if rest.len() >= 6 => (IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&rest[..4]).ok()?)), &rest[4..]),
        6 if rest.len() >= 18 => (IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&rest[..16]).ok()?)), &rest[16..]),
        _ => return None,
    };
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    Some((SocketAddr::new(ip, port), &rest[2..]))
}

impl ForwardHeader {
    /// The header with its length prefix, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = vec![HEADER_VERSION, self.proto as u8];
        let id = self.container_id.as_bytes();
        body.push(id.len().min(255) as u8);
        body.extend_from_slice(&id[..id.len().min(255)]);
        body.extend_from_slice(&self.container_port.to_be_bytes());
        put_addr(&mut body, self.client);
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Decodes the body that followed the length prefix.
    pub fn decode(body: &[u8]) -> Result<ForwardHeader, String> {
        let bad = || "malformed forwarding header".to_string();
        let [version, proto, id_len, rest @ ..] = body else { return Err(bad()) };
        if *version != HEADER_VERSION {
            return Err(format!("forwarding header version {version} (this agent speaks {HEADER_VERSION})"));
        }
        let proto = match proto {
            0 => Proto::Tcp,
            1 => Proto::Udp,
            _ => return Err(bad()),
        };
        let id_len = *id_len as usize;
        if rest.len() < id_len + 2 {
            return Err(bad());
        }
        let container_id = std::str::from_utf8(&rest[..id_len]).map_err(|_| bad())?.to_string();
        let container_port = u16::from_be_bytes([rest[id_len], rest[id_len + 1]]);
        let (client, rest) = take_addr(&rest[id_len + 2..]).ok_or_else(bad)?;
        if !rest.is_empty() || container_port == 0 {
            return Err(bad());
        }
        Ok(ForwardHeader { proto, container_id, container_port, client })
    }
}

/// Appends one datagram's frame to `out`. Payloads over [`MAX_DATAGRAM`]
/// are cut (no UDP socket delivers more).
pub fn encode_datagram(out: &mut Vec<u8>, peer: SocketAddr, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_DATAGRAM)];
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    put_addr(out, peer);
    out.extend_from_slice(payload);
    let len = (out.len() - start - 2) as u16;
    out[start..start + 2].copy_from_slice(&len.to_be_bytes());
}

/// The peer and payload of one frame's body (what followed its length).
pub fn decode_datagram(frame: &[u8]) -> Option<(SocketAddr, &[u8])> {
    take_addr(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn headers_round_trip_for_both_families() {
        for client in ["192.0.2.7:40000", "[2001:db8::1]:65535"] {
            let header = ForwardHeader {
                proto: Proto::Udp,
                container_id: ID.into(),
                container_port: 53,
                client: client.parse().unwrap(),
            };
            let wire = header.encode();
            let len = u16::from_be_bytes([wire[0], wire[1]]) as usize;
            assert_eq!(len, wire.len() - 2);
            assert!(wire.len() <= MAX_HEADER);
            assert_eq!(ForwardHeader::decode(&wire[2..]), Ok(header));
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let header = ForwardHeader {
            proto: Proto::Tcp,
            container_id: ID.into(),
            container_port: 80,
            client: "1.2.3.4:5".parse().unwrap(),
        };
        let wire = header.encode();
        let body = &wire[2..];
        // Every truncation, a trailing byte, another version, port 0.
        for cut in 0..body.len() {
            assert!(ForwardHeader::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert!(ForwardHeader::decode(&[body, &[0]].concat()).is_err());
        let mut other = body.to_vec();
        other[0] = 9;
        assert!(ForwardHeader::decode(&other).unwrap_err().contains("version 9"));
        let zero = ForwardHeader { container_port: 0, ..header };
        assert!(ForwardHeader::decode(&zero.encode()[2..]).is_err());
        assert_eq!(ForwardStatus::from_byte(1), ForwardStatus::Refused);
        assert_eq!(ForwardStatus::from_byte(200), ForwardStatus::BadRequest);
    }

    #[test]
    fn datagrams_are_framed_with_their_peer() {
        let mut out = Vec::new();
        let v4: SocketAddr = "10.0.0.1:9".parse().unwrap();
        let v6: SocketAddr = "[::1]:53".parse().unwrap();
        encode_datagram(&mut out, v4, b"ping");
        encode_datagram(&mut out, v6, b"");
        let mut frames = Vec::new();
        let mut rest = out.as_slice();
        while !rest.is_empty() {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let (peer, payload) = decode_datagram(&rest[2..2 + len]).unwrap();
            frames.push((peer, payload.to_vec()));
            rest = &rest[2 + len..];
        }
        assert_eq!(frames, vec![(v4, b"ping".to_vec()), (v6, Vec::new())]);
        // The largest payload still fits the length field.
        let mut big = Vec::new();
        encode_datagram(&mut big, v6, &vec![7u8; MAX_DATAGRAM + 10]);
        assert_eq!(big.len(), 2 + 19 + MAX_DATAGRAM);
        assert!(decode_datagram(&[5, 1, 2]).is_none());
    }
}
