//! DNS for the VM with the host's own resolver: what makes `/etc/hosts` on
//! the host, VPN split DNS and (on macOS) scoped resolvers work inside
//! containers, which the anchors' VM resolvers miss.
//!
//! - A and AAAA questions go to the OS resolver (getaddrinfo), which is
//!   what every host program uses; it answers with addresses only, so the
//!   answer is addresses with [`OS_ANSWER_TTL`].
//! - Any other question is forwarded as it is to the nameservers of the
//!   host's resolv.conf, from the host (so 127.0.0.53 works).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent_client::Io;

/// getaddrinfo says nothing about lifetimes; short, since nothing in the
/// VM should keep a host answer long after the host's network changed.
const OS_ANSWER_TTL: u32 = 30;
/// A stream with no question for this long is closed (the agent reopens).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// One question's whole resolution: under the agent's 5 s, so the agent
/// gets a SERVFAIL (and tries the uplink's resolver) rather than silence.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(4);
/// Per nameserver, for forwarded questions.
const NAMESERVER_TIMEOUT: Duration = Duration::from_secs(2);
/// resolv.conf's own limit (MAXNS).
const MAX_NAMESERVERS: usize = 3;

/// Answers framed questions until the agent hangs up or goes idle.
pub async fn serve(mut stream: Box<dyn Io>) -> std::io::Result<()> {
    loop {
        let query = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream)).await {
            Err(_) | Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(query))) => query,
            Ok(Err(err)) => return Err(err),
        };
        let Some(reply) = answer(&query).await else {
            // Not even a DNS header: nothing to answer to.
            return Ok(());
        };
        stream.write_all(&frame(&reply)).await?;
    }
}

/// One RFC 1035 TCP frame; None at a clean end of stream.
async fn read_frame(stream: &mut Box<dyn Io>) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The reply to one question (None: the bytes are no DNS message at all).
async fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let Ok(message) = Message::from_vec(query) else {
        // Answer FORMERR when at least the ID is there, as servers do.
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok();
    };
    let reply = match message.queries() {
        [question]
            if message.message_type() == MessageType::Query
                && message.op_code() == OpCode::Query
                && matches!(question.query_type(), RecordType::A | RecordType::AAAA) =>
        {
            let name = question.name().to_ascii();
            let name = name.trim_end_matches('.').to_string();
            let looked_up = tokio::time::timeout(RESOLVE_TIMEOUT, os_lookup(name)).await.unwrap_or(Err(Lookup::Failed));
            Some(addresses_reply(&message, looked_up))
        }
        [_] if message.message_type() == MessageType::Query => {
            let servers = host_nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
            tokio::time::timeout(RESOLVE_TIMEOUT, forward(query, message.id(), &servers)).await.ok().flatten()
        }
        _ => None,
    };
    reply.or_else(|| Message::error_msg(message.id(), message.op_code(), ResponseCode::ServFail).to_vec().ok())
}

/// How an OS lookup failed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lookup {
    /// No such name (NXDOMAIN).
    NoName,
    /// The name exists without addresses.
    NoData,
    Failed,
}

/// Every address of `name` (both families: which family was asked for is
/// the reply's business, and a name with only the other family exists).
async fn os_lookup(name: String) -> Result<Vec<IpAddr>, Lookup> {
    tokio::task::spawn_blocking(move || {
        let hints = dns_lookup::AddrInfoHints {
            // One entry per address rather than one per socket type.
            socktype: dns_lookup::SockType::Stream.into(),
            ..Default::default()
        };
        let found = dns_lookup::getaddrinfo(Some(&name), None, Some(hints)).map_err(|err| match err.kind() {
            dns_lookup::LookupErrorKind::NoName => Lookup::NoName,
            dns_lookup::LookupErrorKind::NoData => Lookup::NoData,
            _ => Lookup::Failed,
        })?;
        let mut addresses: Vec<IpAddr> = found.filter_map(Result::ok).map(|info| info.sockaddr.ip()).collect();
        addresses.dedup();
        Ok(addresses)
    })
    .await
    .unwrap_or(Err(Lookup::Failed))
}

/// The reply to an A or AAAA question from what the OS resolver found.
fn addresses_reply(query: &Message, looked_up: Result<Vec<IpAddr>, Lookup>) -> Vec<u8> {
    let mut reply = response_to(query);
    let question = &query.queries()[0];
    match looked_up {
        Ok(addresses) => {
            for address in addresses {
                let rdata = match (question.query_type(), address) {
                    (RecordType::A, IpAddr::V4(v4)) => RData::A(A(v4)),
                    (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
                    _ => continue,
                };
                reply.add_answer(Record::from_rdata(question.name().clone(), OS_ANSWER_TTL, rdata));
            }
        }
        Err(Lookup::NoData) => {}
        Err(Lookup::NoName) => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        Err(Lookup::Failed) => {
            reply.set_response_code(ResponseCode::ServFail);
        }
    }
    reply.to_vec().unwrap_or_default()
}

fn response_to(query: &Message) -> Message {
    let mut header = hickory_proto::op::Header::response_from_request(query.header());
    header.set_recursion_available(true);
    let mut reply = Message::new();
    reply.set_header(header).add_queries(query.queries().iter().cloned());
    reply
}

/// The nameservers of a resolv.conf, in its order.
fn host_nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_NAMESERVERS)
        .collect()
}

/// The first good reply of `servers` to `query`, over UDP (over TCP when
/// the UDP reply is truncated). SERVFAIL and REFUSED move on to the next
/// server, as dockerd's forwarder does; NXDOMAIN is an answer.
async fn forward(query: &[u8], id: u16, servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let reply = tokio::time::timeout(NAMESERVER_TIMEOUT, forward_udp(query, id, *server)).await;
        let reply = match reply {
            Ok(Ok(reply)) if is_truncated(&reply) => {
                tokio::time::timeout(NAMESERVER_TIMEOUT, forward_tcp(query, *server)).await.ok().and_then(Result::ok)
            }
            Ok(Ok(reply)) => Some(reply),
            _ => None,
        };
        match reply.as_deref().map(Message::from_vec) {
            Some(Ok(message)) if !matches!(message.response_code(), ResponseCode::ServFail | ResponseCode::Refused) => {
                return reply
            }
            _ => tracing::debug!(%server, "nameserver gave no usable answer"),
        }
    }
    None
}

fn is_truncated(reply: &[u8]) -> bool {
    reply.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

async fn forward_udp(query: &[u8], id: u16, server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything else is a stray or spoofed datagram.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(query: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let stream = tokio::net::TcpStream::connect(server).await?;
    let mut stream: Box<dyn Io> = Box::new(stream);
    stream.write_all(&frame(query)).await?;
    read_frame(&mut stream).await?.ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    pub fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(0x4242)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        message.to_vec().unwrap()
    }

    pub async fn read_framed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Message {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut message).await.unwrap();
        Message::from_vec(&message).unwrap()
    }

    fn reply(bytes: &[u8]) -> Message {
        Message::from_vec(bytes).unwrap()
    }

    #[tokio::test]
    async fn addresses_come_from_the_os_resolver() {
        // localhost is in every host's /etc/hosts (or the resolver's own rules).
        let answer = reply(&answer(&query("localhost.", RecordType::A)).await.unwrap());
        assert_eq!(answer.id(), 0x4242);
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.recursion_available());
        let addresses: Vec<_> = answer.answers().iter().map(|r| r.data().clone()).collect();
        assert!(addresses.contains(&RData::A(A("127.0.0.1".parse().unwrap()))), "{addresses:?}");
    }

    #[test]
    fn os_results_become_dns_answers() {
        let question = Message::from_vec(&query("db.corp.", RecordType::AAAA)).unwrap();
        let found = vec!["10.1.2.3".parse().unwrap(), "fd00::3".parse().unwrap()];
        let answer = reply(&addresses_reply(&question, Ok(found)));
        assert_eq!(answer.answers().len(), 1, "only the asked family: {answer:?}");
        assert_eq!(answer.answers()[0].data(), &RData::AAAA(AAAA("fd00::3".parse().unwrap())));
        assert_eq!(answer.answers()[0].ttl(), OS_ANSWER_TTL);
        assert_eq!(answer.queries(), question.queries());

        let v4_only = reply(&addresses_reply(&question, Ok(vec!["10.1.2.3".parse().unwrap()])));
        assert_eq!((v4_only.response_code(), v4_only.answers().len()), (ResponseCode::NoError, 0));
        let missing = reply(&addresses_reply(&question, Err(Lookup::NoName)));
        assert_eq!(missing.response_code(), ResponseCode::NXDomain);
        let failed = reply(&addresses_reply(&question, Err(Lookup::Failed)));
        assert_eq!(failed.response_code(), ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn garbage_gets_formerr_or_nothing() {
        assert_eq!(answer(b"").await, None);
        assert_eq!(answer(b"\x01").await, None);
        let formerr = reply(&answer(b"\x12\x34\xff\xff\xff\xff\xff").await.unwrap());
        assert_eq!((formerr.id(), formerr.response_code()), (0x1234, ResponseCode::FormErr));
    }

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let conf = "# generated\nsearch corp\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bad\n\
                    nameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        let servers = host_nameservers(conf);
        let expected: Vec<SocketAddr> =
            ["127.0.0.53:53", "[fe80::1]:53", "10.0.0.1:53"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(servers, expected);
    }

    /// A nameserver on this host's loopback: SERVFAIL moves on to the next
    /// server, a spoofed ID is ignored, the good reply comes back whole.
    #[tokio::test]
    async fn other_questions_are_forwarded_to_the_nameservers() {
        let failing = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let good = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let servers = [failing.local_addr().unwrap(), good.local_addr().unwrap()];
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = failing.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..n]).unwrap();
            let servfail = Message::error_msg(query.id(), OpCode::Query, ResponseCode::ServFail);
            failing.send_to(&servfail.to_vec().unwrap(), from).await.unwrap();
        });
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = good.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..n]).unwrap();
            let mut spoofed = response_to(&query);
            spoofed.set_id(query.id().wrapping_add(1)).set_response_code(ResponseCode::NXDomain);
            good.send_to(&spoofed.to_vec().unwrap(), from).await.unwrap();
            let mut real = response_to(&query);
            let name = query.queries()[0].name().clone();
            let mx = hickory_proto::rr::rdata::MX::new(10, Name::from_ascii("mail.example.").unwrap());
            real.add_answer(Record::from_rdata(name, 300, RData::MX(mx)));
            good.send_to(&real.to_vec().unwrap(), from).await.unwrap();
        });
        let question = query("example.", RecordType::MX);
        let forwarded = reply(&forward(&question, 0x4242, &servers).await.expect("a reply"));
        assert_eq!(forwarded.response_code(), ResponseCode::NoError);
        assert_eq!(forwarded.answers().len(), 1);
        assert_eq!(forwarded.answers()[0].record_type(), RecordType::MX);
    }
}
