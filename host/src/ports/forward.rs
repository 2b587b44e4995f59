//! Moving a published port's traffic: each accepted TCP connection gets a
//! stream of its own to the agent's forwarding port; a UDP binding sends
//! all its clients' datagrams on one stream, framed with their addresses
//! (the agent keeps the per-client flows). See
//! `berth_agent_proto::ports::wire` for the bytes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::ports::wire::{self, ForwardHeader, ForwardStatus, MAX_DATAGRAM};
use berth_agent_proto::ports::{Proto, PORTS_VSOCK_PORT};
use berth_agent_proto::AgentKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::AbortOnDrop;
use crate::agent_client::{GuestTransport, Io};

/// How long opening a forwarding stream may take (the agent answers once
/// the container accepted or refused).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one binding's traffic goes: which container port, through which guest.
pub struct Route {
    pub guest: GuestTransport,
    pub key: AgentKey,
    pub container_id: String,
    pub container_port: u16,
}

impl Route {
    /// A forwarding stream for `client` with its header sent, the agent's
    /// answer not yet read.
    async fn request(&self, proto: Proto, client: SocketAddr) -> io::Result<Box<dyn Io>> {
        let mut stream = self.guest.connect(PORTS_VSOCK_PORT).await?;
        let header = ForwardHeader {
            proto,
            container_id: self.container_id.clone(),
            container_port: self.container_port,
            client,
        };
        // Key and header in one write: one packet on the way in.
        let mut preamble = self.key.as_bytes().to_vec();
        preamble.extend_from_slice(&header.encode());
        stream.write_all(&preamble).await?;
        Ok(stream)
    }

    /// A forwarding stream the agent has accepted for `client`.
    async fn open(&self, proto: Proto, client: SocketAddr) -> io::Result<Box<dyn Io>> {
        let opened = async {
            let mut stream = self.request(proto, client).await?;
            let mut status = [0u8; 1];
            stream.read_exact(&mut status).await?;
            accepted(status[0])?;
            Ok(stream)
        };
        tokio::time::timeout(OPEN_TIMEOUT, opened)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "the agent did not answer in time")))
    }
}

/// The agent's answer to a forwarding stream's header, as a result.
fn accepted(status: u8) -> io::Result<()> {
    match ForwardStatus::from_byte(status) {
        ForwardStatus::Connected => Ok(()),
        ForwardStatus::Refused => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused in the container")),
        other => Err(io::Error::other(format!("the agent answered {other:?}"))),
    }
}

/// Accepts on a published TCP socket until aborted; the connections'
/// tasks end with it (they are in its JoinSet).
pub async fn accept_tcp(listener: TcpListener, route: Arc<Route>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                connections.spawn(forward_tcp(client, peer, route.clone()));
            }
            Err(err) => {
                // Out of descriptors, most likely: pause rather than spin.
                tracing::warn!(%err, "accepting on a published port failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

async fn forward_tcp(mut client: TcpStream, peer: SocketAddr, route: Arc<Route>) {
    // As docker-proxy (Go) does: nothing the peer sent is held back.
    let _ = client.set_nodelay(true);
    // The client's first bytes follow the header without waiting for the
    // agent's answer (a round trip through the VM saved per connection);
    // the agent reads them only once it has dialled the container, and
    // drops them with the stream if it could not.
    let relayed = match tokio::time::timeout(OPEN_TIMEOUT, route.request(Proto::Tcp, peer)).await {
        Ok(Ok(mut guest)) => {
            berth_agent_proto::ports::relay::relay_after_answer(&mut client, &mut guest, OPEN_TIMEOUT, accepted)
                .await
                .map(|_| ())
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the agent did not answer in time")),
    };
    if let Err(err) = relayed {
        tracing::debug!(%err, %peer, port = route.container_port, "a published connection was refused or cut off");
        // A reset, as a refused connection (or one cut off: the container
        // went, the VM stopped) would have been.
        let _ = client.set_zero_linger();
    }
}

/// Relays a published UDP socket until aborted. The stream to the agent
/// is opened by the first datagram (the container may not run yet when the
/// socket is bound) and again after it breaks.
pub async fn relay_udp(socket: UdpSocket, route: Arc<Route>) {
    let socket = Arc::new(socket);
    let local = socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut frame = Vec::with_capacity(MAX_DATAGRAM + 32);
    let mut guest: Option<(tokio::io::WriteHalf<Box<dyn Io>>, AbortOnDrop)> = None;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                tracing::debug!(%err, "receiving on a published UDP port failed");
                continue;
            }
        };
        if guest.as_ref().is_some_and(|(_, replies)| replies.0.is_finished()) {
            guest = None;
        }
        if guest.is_none() {
            match route.open(Proto::Udp, local).await {
                Ok(stream) => {
                    let (from_guest, to_guest) = tokio::io::split(stream);
                    let replies = tokio::spawn(send_replies(from_guest, socket.clone()));
                    guest = Some((to_guest, AbortOnDrop(replies)));
                }
                Err(err) => {
                    tracing::debug!(%err, port = route.container_port, "a published datagram was dropped");
                    continue;
                }
            }
        }
        frame.clear();
        wire::encode_datagram(&mut frame, peer, &buf[..n]);
        if let Some((to_guest, _)) = guest.as_mut() {
            if to_guest.write_all(&frame).await.is_err() {
                guest = None;
            }
        }
    }
}

/// The container's replies, framed by the agent, sent to their clients.
async fn send_replies(mut from_guest: tokio::io::ReadHalf<Box<dyn Io>>, socket: Arc<UdpSocket>) {
    let mut frame = vec![0u8; MAX_DATAGRAM + 32];
    loop {
        let mut len = [0u8; 2];
        if from_guest.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u16::from_be_bytes(len) as usize;
        if from_guest.read_exact(&mut frame[..len]).await.is_err() {
            return;
        }
        let Some((peer, payload)) = wire::decode_datagram(&frame[..len]) else { return };
        let _ = socket.send_to(payload, peer).await;
    }
}
