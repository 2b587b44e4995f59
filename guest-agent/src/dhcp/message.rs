//! The DHCPv4 conversation as data (RFC 2131): the requests the client
//! sends and what it takes from the server's replies, with no socket in
//! sight, so every step is tested as bytes. The messages themselves are
//! dhcproto's; the IPv4/UDP framing around them (the client has no address
//! yet, so it speaks through a packet socket) is etherparse's.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// A lease without a lease time is taken for this long (the server must
/// send one; RFC 2131 4.3.1).
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

/// What the server offered, to be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
}

/// An acknowledged lease: eth0's configuration and when to renew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_time: Duration,
    /// T1: when to ask the leasing server to extend it.
    pub renew_after: Duration,
    /// T2: when to ask any server.
    pub rebind_after: Duration,
}

/// A reply to one of our requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Offer),
    Ack(Lease),
    Nak,
}

/// Who the client is: its transaction and hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub xid: u32,
    pub mac: [u8; 6],
}

impl Client {
    fn message(&self, kind: MessageType, ciaddr: Ipv4Addr, broadcast: bool) -> Message {
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let mut msg = Message::new_with_id(self.xid, ciaddr, unspecified, unspecified, unspecified, &self.mac);
        if broadcast {
            // Without an address the kernel drops a reply unicast to the
            // offered one; the packet socket would see it, but some servers
            // (and every relay) only answer this way.
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        // Hardware type 1 (Ethernet) and the MAC: how bootpd and dnsmasq key leases.
        opts.insert(DhcpOption::ClientIdentifier([&[1u8][..], &self.mac].concat()));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        msg
    }

    /// DHCPDISCOVER, broadcast.
    pub fn discover(&self) -> Vec<u8> {
        encode(&self.message(MessageType::Discover, Ipv4Addr::UNSPECIFIED, true))
    }

    /// DHCPREQUEST for an offer (SELECTING: the server and address named, no ciaddr).
    pub fn request(&self, offer: &Offer) -> Vec<u8> {
        let mut msg = self.message(MessageType::Request, Ipv4Addr::UNSPECIFIED, true);
        msg.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.address));
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(offer.server));
        encode(&msg)
    }

    /// DHCPREQUEST extending a lease (RENEWING, unicast to its server, or
    /// REBINDING, broadcast): the address in ciaddr, no server named.
    pub fn extend(&self, lease: &Lease) -> Vec<u8> {
        encode(&self.message(MessageType::Request, lease.address, false))
    }

    /// The server's answer to this transaction, if `payload` is one (any
    /// other DHCP traffic on the link is None, as is an offer or ack
    /// Berth cannot use: no address, no router).
    pub fn reply(&self, payload: &[u8]) -> Option<Reply> {
        let msg = Message::decode(&mut Decoder::new(payload)).ok()?;
        if msg.opcode() != dhcproto::v4::Opcode::BootReply || msg.xid() != self.xid || msg.chaddr() != self.mac {
            return None;
        }
        let opts = msg.opts();
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(server)) => Some(*server),
            _ => None,
        };
        match opts.msg_type()? {
            MessageType::Nak => Some(Reply::Nak),
            MessageType::Offer => {
                let address = usable(msg.yiaddr())?;
                Some(Reply::Offer(Offer { address, server: server? }))
            }
            MessageType::Ack => {
                let address = usable(msg.yiaddr())?;
                let gateway = match opts.get(OptionCode::Router) {
                    Some(DhcpOption::Router(routers)) => *routers.first()?,
                    _ => return None,
                };
                let prefix_len = match opts.get(OptionCode::SubnetMask) {
                    Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask)?,
                    _ => class_prefix(address),
                };
                let dns = match opts.get(OptionCode::DomainNameServer) {
                    Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
                    _ => Vec::new(),
                };
                let seconds = |code| match opts.get(code) {
                    Some(DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s)) => {
                        Some(Duration::from_secs(u64::from(*s)))
                    }
                    _ => None,
                };
                let lease_time = seconds(OptionCode::AddressLeaseTime).unwrap_or(DEFAULT_LEASE);
                // RFC 2131 4.4.5's defaults: 0.5 and 0.875 of the lease.
                let renew_after = seconds(OptionCode::Renewal).unwrap_or(lease_time / 2).min(lease_time);
                let rebind_after =
                    seconds(OptionCode::Rebinding).unwrap_or(lease_time * 7 / 8).clamp(renew_after, lease_time);
                // An ACK to a renewal may leave the server out: it is the one asked.
                let server = server.unwrap_or(Ipv4Addr::UNSPECIFIED);
                Some(Reply::Ack(Lease {
                    address,
                    prefix_len,
                    gateway,
                    dns,
                    server,
                    lease_time,
                    renew_after,
                    rebind_after,
                }))
            }
            _ => None,
        }
    }
}

fn usable(address: Ipv4Addr) -> Option<Ipv4Addr> {
    (!address.is_unspecified() && !address.is_broadcast() && !address.is_multicast()).then_some(address)
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(300);
    // Encoding a message we built cannot fail: every option fits its field.
    msg.encode(&mut Encoder::new(&mut out)).expect("encoding a DHCP message");
    out
}

/// A netmask's prefix length; None for a mask with holes.
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = mask.to_bits();
    (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(bits.leading_ones() as u8)
}

/// The classful default a client assumes when the server sends no mask (RFC 2132 3.3).
fn class_prefix(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// An IPv4/UDP datagram from the client's port to the server's, as a packet
/// socket sends it (the kernel adds the Ethernet header).
pub fn udp_datagram(source: Ipv4Addr, destination: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ipv4(source.octets(), destination.octets(), 64).udp(CLIENT_PORT, SERVER_PORT);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec fails only on a payload larger than a datagram.
    builder.write(&mut out, payload).expect("a DHCP message fits a datagram");
    out
}

/// The UDP payload of an IPv4 packet to the client's port, or None.
pub fn client_payload(packet: &[u8]) -> Option<&[u8]> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    match (sliced.net?, sliced.transport?) {
        (NetSlice::Ipv4(_), TransportSlice::Udp(udp)) if udp.destination_port() == CLIENT_PORT => Some(udp.payload()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
