//! The agent's way to the host daemon's services (proto `host_services`):
//! vsock streams to the host (CID 2) in the VM, a unix socket beside the
//! agent's for a local agent. Two users: [`HostResolver`], the upstream of
//! every resolver the agent runs, and [`serve_host_gateway`], which carries
//! connections to host.docker.internal to the host's loopback.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agent_proto::host_services::{ConnectStatus, Header, HOST_SERVICES_VSOCK_PORT};
use berth_engine::dns::{BoxFuture, Upstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// How long opening a stream to the host may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the host may take over one DNS question (it answers SERVFAIL at 4 s).
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle DNS streams kept for the next questions.
const IDLE_DNS_STREAMS: usize = 4;
/// host.docker.internal connections at once (the host allows 256 streams).
const MAX_GATEWAY_CONNECTIONS: usize = 200;

/// Where the host's services are.
#[derive(Debug, Clone)]
pub enum HostLink {
    Vsock,
    /// A local agent's: `host_services::local_socket` of its own socket.
    Unix(PathBuf),
}

impl HostLink {
    /// A stream to the host for `header`'s service, its header sent.
    pub async fn open(&self, header: Header) -> std::io::Result<Box<dyn Stream>> {
        let opened = async {
            let mut stream: Box<dyn Stream> = match self {
                HostLink::Vsock => Box::new(
                    tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(
                        libc::VMADDR_CID_HOST,
                        HOST_SERVICES_VSOCK_PORT,
                    ))
                    .await?,
                ),
                HostLink::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            };
            stream.write_all(&header.encode()).await?;
            Ok(stream)
        };
        tokio::time::timeout(OPEN_TIMEOUT, opened)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the host did not answer")))
    }
}

/// DNS through the host's resolver; keeps a few streams open between
/// questions (each question takes one for itself).
pub struct HostResolver {
    link: HostLink,
    idle: Mutex<Vec<Box<dyn Stream>>>,
}

impl HostResolver {
    pub fn new(link: HostLink) -> HostResolver {
        HostResolver { link, idle: Mutex::new(Vec::new()) }
    }

    async fn ask(stream: &mut Box<dyn Stream>, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let exchange = async {
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream.write_all(&framed).await?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut reply).await?;
            Ok(reply)
        };
        tokio::time::timeout(DNS_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the host's resolver timed out")))
    }
}

impl Upstream for HostResolver {
    fn forward<'a>(&'a self, query: &'a [u8]) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            if query.len() > u16::MAX as usize {
                return None;
            }
            let started = std::time::Instant::now();
            // An idle stream may have been closed by the host meanwhile:
            // one retry on a fresh stream.
            let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut attempts = pooled.into_iter().map(Ok).collect::<Vec<_>>();
            attempts.push(Err(()));
            for attempt in attempts {
                let mut stream = match attempt {
                    Ok(stream) => stream,
                    Err(()) => match self.link.open(Header::dns()).await {
                        Ok(stream) => stream,
                        Err(err) => {
                            tracing::debug!(%err, "the host's resolver is out of reach");
                            return None;
                        }
                    },
                };
                match Self::ask(&mut stream, query).await {
                    Ok(reply) => {
                        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                        if idle.len() < IDLE_DNS_STREAMS {
                            idle.push(stream);
                        }
                        tracing::debug!(us = started.elapsed().as_micros() as u64, "the host's resolver answered");
                        return Some(reply);
                    }
                    Err(err) => tracing::debug!(%err, "asking the host's resolver failed"),
                }
            }
            None
        })
    }
}

/// Serves the host.docker.internal forwarder: every connection DNATed to
/// `listener` goes to the port it was meant for on the host's loopback.
pub async fn serve_host_gateway(listener: tokio::net::TcpListener, link: HostLink) {
    let limit = Arc::new(Semaphore::new(MAX_GATEWAY_CONNECTIONS));
    let link = Arc::new(link);
    loop {
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "host.docker.internal: accepting failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            reset(client);
            continue;
        };
        let link = link.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(err) = forward_to_host(client, &link).await {
                tracing::debug!(%err, "host.docker.internal connection ended with an error");
            }
        });
    }
}

/// The port the client asked for: the original destination before the DNAT
/// (a connection to the forwarder's own port was not NATed: that port).
fn requested_port(client: &tokio::net::TcpStream) -> std::io::Result<u16> {
    match nix::sys::socket::getsockopt(client, nix::sys::socket::sockopt::OriginalDst) {
        Ok(original) => Ok(u16::from_be(original.sin_port)),
        Err(_) => Ok(client.local_addr()?.port()),
    }
}

async fn forward_to_host(mut client: tokio::net::TcpStream, link: &HostLink) -> std::io::Result<()> {
    let port = requested_port(&client)?;
    let mut host = match link.open(Header::host_loopback(port)).await {
        Ok(stream) => stream,
        Err(err) => {
            reset(client);
            return Err(err);
        }
    };
    let mut status = [0u8; 1];
    let status = match tokio::time::timeout(Duration::from_secs(10), host.read_exact(&mut status)).await {
        Ok(Ok(_)) => ConnectStatus::from_byte(status[0]),
        _ => None,
    };
    if status != Some(ConnectStatus::Connected) {
        // The client sees what it would see on the host: a refused connection.
        tracing::debug!(port, ?status, "the host's loopback did not take the connection");
        reset(client);
        return Ok(());
    }
    client.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut host, 64 * 1024, 64 * 1024).await?;
    Ok(())
}

/// Closes with a RST rather than a FIN: "refused", not "empty reply".
/// (A zero linger never blocks the close, which tokio's deprecation of
/// set_linger is about.)
fn reset(client: tokio::net::TcpStream) {
    let abort = libc::linger { l_onoff: 1, l_linger: 0 };
    let _ = nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::Linger, &abort);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host side that answers DNS with the query echoed back as a
    /// response, and closes each stream after `answers` of them.
    async fn fake_host(dir: &std::path::Path, answers: usize) -> HostLink {
        let path = dir.join("agent.sock.host-services");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut header = [0u8; 6];
                    stream.read_exact(&mut header).await.unwrap();
                    assert_eq!(Header::parse(&header), Ok(Header::dns()));
                    for _ in 0..answers {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                        stream.read_exact(&mut query).await.unwrap();
                        query[2] |= 0x80;
                        stream.write_all(&len).await.unwrap();
                        stream.write_all(&query).await.unwrap();
                    }
                });
            }
        });
        HostLink::Unix(path)
    }

    fn query(id: u8) -> Vec<u8> {
        vec![0, id, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    #[tokio::test]
    async fn questions_reuse_streams_and_survive_the_host_closing_them() {
        let dir = tempfile::tempdir().unwrap();
        // Each stream answers once, then the host hangs up: the pooled
        // stream fails and the question is asked again on a new one.
        let resolver = HostResolver::new(fake_host(dir.path(), 1).await);
        for id in 1..=3 {
            let reply = resolver.forward(&query(id)).await.expect("an answer");
            assert_eq!(reply[..3], [0, id, 0x81]);
        }
    }

    /// A and AAAA come together from one client: each takes a stream.
    #[tokio::test]
    async fn concurrent_questions_each_get_their_answer() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = HostResolver::new(fake_host(dir.path(), 100).await);
        for round in 0..3u8 {
            let (first, second) = (query(2 * round), query(2 * round + 1));
            let (a, b) = tokio::join!(resolver.forward(&first), resolver.forward(&second));
            assert_eq!(a.unwrap()[1], 2 * round);
            assert_eq!(b.unwrap()[1], 2 * round + 1);
        }
    }

    #[tokio::test]
    async fn no_host_means_no_answer_quickly() {
        let resolver = HostResolver::new(HostLink::Unix("/nonexistent/host-services".into()));
        let started = std::time::Instant::now();
        assert_eq!(resolver.forward(&query(1)).await, None);
        assert!(started.elapsed() < OPEN_TIMEOUT);
    }
}
