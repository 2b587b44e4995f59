//! Upstreams a [`super::Resolver`] forwards to: nameservers over UDP (the
//! VM's uplink resolver, or `--dns` servers asked from inside the
//! container's namespace), and [`Chain`], which tries one after another.

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::embedded::in_netns;
use super::{BoxFuture, Upstream};

/// dockerd asks each server for this long.
const SERVER_TIMEOUT: Duration = Duration::from_secs(4);
/// resolv.conf's limit, and dockerd's.
const MAX_SERVERS: usize = 3;

/// Whether a reply is worth returning: SERVFAIL (2) and REFUSED (5) move
/// on to the next upstream, as dockerd's forwarder does; NXDOMAIN is an answer.
pub fn is_answer(reply: &[u8]) -> bool {
    reply.len() >= 4 && !matches!(reply[3] & 0x0f, 2 | 5)
}

/// Nameservers asked over UDP, in order; from inside `netns` when given
/// (`--dns` servers, which dockerd queries from the container's namespace,
/// so a server only the container can reach works).
pub struct UdpServers {
    pub netns: Option<Arc<File>>,
    pub servers: Vec<SocketAddr>,
}

impl UdpServers {
    async fn socket(&self, server: &SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
        let local: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
        let bind = move || {
            let socket = std::net::UdpSocket::bind(local)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        let socket = match &self.netns {
            Some(netns) => in_netns(netns, bind).await?,
            None => bind()?,
        };
        tokio::net::UdpSocket::from_std(socket)
    }
}

impl Upstream for UdpServers {
    fn forward<'a>(&'a self, query: &'a [u8]) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            for server in self.servers.iter().take(MAX_SERVERS) {
                let Ok(socket) = self.socket(server).await else { continue };
                let exchange = async {
                    socket.send_to(query, server).await.ok()?;
                    let mut buf = vec![0u8; 65535];
                    loop {
                        let (n, from) = socket.recv_from(&mut buf).await.ok()?;
                        // Anything else is stray or spoofed.
                        if from == *server && n >= 4 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                            buf.truncate(n);
                            return Some(buf);
                        }
                    }
                };
                match tokio::time::timeout(SERVER_TIMEOUT, exchange).await {
                    Ok(Some(reply)) if is_answer(&reply) => return Some(reply),
                    _ => continue,
                }
            }
            None
        })
    }
}

/// Upstreams tried in order until one answers (the host's resolver, then
/// the VM's own when the host cannot be reached).
pub struct Chain(pub Vec<Arc<dyn Upstream>>);

impl Upstream for Chain {
    fn forward<'a>(&'a self, query: &'a [u8]) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut last = None;
            for upstream in &self.0 {
                match upstream.forward(query).await {
                    Some(reply) if is_answer(&reply) => return Some(reply),
                    Some(reply) => last = Some(reply),
                    None => {}
                }
            }
            last
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Option<Vec<u8>>);
    impl Upstream for Fixed {
        fn forward<'a>(&'a self, _: &'a [u8]) -> BoxFuture<'a, Option<Vec<u8>>> {
            Box::pin(async move { self.0.clone() })
        }
    }

    fn reply(rcode: u8) -> Vec<u8> {
        vec![0, 7, 0x81, 0x80 | rcode, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    #[tokio::test]
    async fn a_chain_moves_on_after_silence_and_servfail_but_not_nxdomain() {
        let chain = |upstreams: Vec<Option<Vec<u8>>>| {
            Chain(upstreams.into_iter().map(|u| Arc::new(Fixed(u)) as Arc<dyn Upstream>).collect())
        };
        let query = [0u8; 12];
        assert_eq!(chain(vec![None, Some(reply(0))]).forward(&query).await, Some(reply(0)));
        assert_eq!(chain(vec![Some(reply(2)), Some(reply(3))]).forward(&query).await, Some(reply(3)));
        assert_eq!(
            chain(vec![Some(reply(3)), Some(reply(0))]).forward(&query).await,
            Some(reply(3)),
            "NXDOMAIN is final"
        );
        assert_eq!(
            chain(vec![Some(reply(2)), None]).forward(&query).await,
            Some(reply(2)),
            "the last word if nothing better"
        );
        assert_eq!(chain(vec![None]).forward(&query).await, None);
    }

    #[tokio::test]
    async fn udp_servers_fail_over_and_ignore_spoofed_ids() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let good = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let servers = vec![good.local_addr().unwrap(), silent.local_addr().unwrap()];
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = good.recv_from(&mut buf).await.unwrap();
            let mut spoofed = buf[..n].to_vec();
            spoofed[1] ^= 1;
            good.send_to(&spoofed, from).await.unwrap();
            let mut real = buf[..n].to_vec();
            real[2] |= 0x80;
            good.send_to(&real, from).await.unwrap();
        });
        let query = [0x12, 0x34, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let reply = UdpServers { netns: None, servers }.forward(&query).await.unwrap();
        assert_eq!(reply[..3], [0x12, 0x34, 0x81]);
    }
}
