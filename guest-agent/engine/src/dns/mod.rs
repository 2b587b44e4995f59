//! The engine's DNS servers: the embedded resolver at 127.0.0.11 in every
//! container on a user network (embedded.rs), and the VM's own resolver at
//! the service address 192.168.65.7. Both are a [`Resolver`]: it answers
//! what the engine knows itself as dockerd's embedded server does
//! (container names, aliases, short IDs, hostnames, link aliases, PTR, MX
//! empty, TTL 600, several addresses in random order, host.docker.internal)
//! and forwards everything else to an [`Upstream`] (the host's resolver
//! over vsock; none on internal networks).
//!
//! hickory-proto for the wire format; the handler is ours (hickory-server's
//! authority/catalog model is for zones, not for per-client answers).

pub mod embedded;
pub mod names;
pub mod resolvers;
pub mod server;
#[cfg(test)]
mod test_netns;
pub mod upstream;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub use names::{Directory, Endpoint, Link, NameTable, NoNames, Visible, VisibleName};

/// dockerd's embedded server answers with this TTL.
pub const LOCAL_TTL: u32 = 600;
/// The classic UDP limit, when a question carries no EDNS size.
const UDP_PAYLOAD: usize = 512;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where questions the engine cannot answer go. The query is passed as
/// received (its ID included), the reply comes back whole; None: no upstream
/// answered.
pub trait Upstream: Send + Sync {
    fn forward<'a>(&'a self, query: &'a [u8]) -> BoxFuture<'a, Option<Vec<u8>>>;
}

/// How the question arrived: a UDP reply must fit the client's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One container's (or the VM's) resolver.
#[derive(Clone)]
pub struct Resolver {
    names: Arc<dyn NameTable>,
    /// The container asking ("" for the VM's own resolver).
    client: String,
    /// None: nothing is forwarded (internal networks), unknown names fail.
    upstream: Option<Arc<dyn Upstream>>,
}

impl Resolver {
    pub fn new(names: Arc<dyn NameTable>, client: impl Into<String>, upstream: Option<Arc<dyn Upstream>>) -> Resolver {
        Resolver { names, client: client.into(), upstream }
    }

    /// The reply to one message; None when it is not worth one (not even a
    /// DNS header, or a response rather than a question).
    pub async fn handle(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let Ok(message) = Message::from_vec(query) else {
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            return error(id, OpCode::Query, ResponseCode::FormErr);
        };
        if message.message_type() != MessageType::Query {
            return None;
        }
        if message.op_code() != OpCode::Query {
            return error(message.id(), message.op_code(), ResponseCode::NotImp);
        }
        if message.queries().len() != 1 {
            return error(message.id(), OpCode::Query, ResponseCode::FormErr);
        }
        let limit = match transport {
            Transport::Udp => (message.max_payload() as usize).max(UDP_PAYLOAD),
            Transport::Tcp => u16::MAX as usize,
        };
        let reply = match self.local_answer(&message) {
            Some(reply) => reply.to_vec().ok()?,
            None => match &self.upstream {
                Some(upstream) => match upstream.forward(query).await {
                    Some(reply) => reply,
                    None => error(message.id(), OpCode::Query, ResponseCode::ServFail)?,
                },
                // dockerd: internal networks resolve only their own names.
                None => error(message.id(), OpCode::Query, ResponseCode::ServFail)?,
            },
        };
        if reply.len() > limit {
            // Too big for the client's UDP buffer: it retries over TCP.
            return Message::from_vec(&reply).ok()?.truncate().to_vec().ok();
        }
        Some(reply)
    }

    /// The answer when the engine knows the name (or address) asked.
    fn local_answer(&self, message: &Message) -> Option<Message> {
        let question = &message.queries()[0];
        let qname = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let mut reply = response_to(message);
        match question.query_type() {
            RecordType::PTR => {
                let address = reverse_address(&qname)?;
                let name = self.reverse(address)?;
                let target = Name::from_str(&format!("{name}.")).ok()?;
                reply.add_answer(Record::from_rdata(question.name().clone(), LOCAL_TTL, RData::PTR(PTR(target))));
            }
            kind => {
                let mut addresses = self.lookup(&qname)?;
                fastrand::shuffle(&mut addresses);
                for address in addresses {
                    let rdata = match (kind, address) {
                        (RecordType::A, IpAddr::V4(v4)) => RData::A(A(v4)),
                        (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
                        // MX and the rest: the name exists, with nothing of that
                        // type (dockerd answers MX so, and nothing leaks upstream).
                        _ => continue,
                    };
                    reply.add_answer(Record::from_rdata(question.name().clone(), LOCAL_TTL, rdata));
                }
            }
        }
        Some(reply)
    }

    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        if crate::service_addr::HOST_NAMES.contains(&name) {
            return Some(vec![IpAddr::V4(crate::service_addr::HOST_GATEWAY)]);
        }
        self.names.lookup(&self.client, name)
    }

    fn reverse(&self, address: IpAddr) -> Option<String> {
        if address == IpAddr::V4(crate::service_addr::HOST_GATEWAY) {
            return Some(crate::service_addr::HOST_NAMES[0].to_string());
        }
        self.names.reverse(&self.client, address)
    }
}

/// An authoritative answer to `query`, its question included (the
/// engine's own names are its to answer).
fn response_to(query: &Message) -> Message {
    let mut header = hickory_proto::op::Header::response_from_request(query.header());
    header.set_authoritative(true).set_recursion_available(true).set_op_code(OpCode::Query);
    let mut reply = Message::new();
    reply.set_header(header);
    reply.add_queries(query.queries().iter().cloned());
    reply
}

fn error(id: u16, op_code: OpCode, code: ResponseCode) -> Option<Vec<u8>> {
    Message::error_msg(id, op_code, code).to_vec().ok()
}

/// The address a PTR name stands for (`4.3.2.1.in-addr.arpa`, or
/// `ip6.arpa`'s 32 nibbles); None for any other name.
fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest.split('.').map(|o| o.parse().ok()).collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> =
        rest.split('.').map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)).collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // Reversed order: the last label is the highest nibble.
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::from(bytes))
}

#[cfg(test)]
mod tests;
