//! A published UDP binding: the host sends every client's datagrams on one
//! stream, framed with the client's address; each client gets its own
//! socket towards the container (so the container's replies can be told
//! apart and framed back to that client), kept in a [`FlowTable`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_agent_proto::ports::wire::{decode_datagram, encode_datagram, ForwardStatus, MAX_DATAGRAM};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::dial::{self, Target};
use super::flows::{FlowTable, FLOW_IDLE, MAX_FLOWS};

/// A client's flow: its socket, and the task that frames what the
/// container answers on it (ended with the flow).
struct Flow {
    socket: Arc<UdpSocket>,
    _replies: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Datagram = (SocketAddr, Vec<u8>);

/// Reads the host's frames into `inbound` until the stream ends (a task of
/// its own: a read cut off half-way would lose the frame's start).
async fn read_frames<R: AsyncRead + Unpin>(mut from_host: R, inbound: mpsc::Sender<Datagram>) -> io::Result<()> {
    let mut frame = vec![0u8; MAX_DATAGRAM + 32];
    loop {
        let mut len = [0u8; 2];
        from_host.read_exact(&mut len).await?;
        let len = u16::from_be_bytes(len) as usize;
        from_host.read_exact(&mut frame[..len]).await?;
        let (peer, payload) = decode_datagram(&frame[..len])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed datagram frame"))?;
        if inbound.send((peer, payload.to_vec())).await.is_err() {
            return Ok(());
        }
    }
}

/// What the container sends on `socket`, addressed to `peer`.
async fn container_replies(socket: Arc<UdpSocket>, peer: SocketAddr, replies: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if replies.send((peer, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            // An earlier datagram found no server (ICMP port unreachable):
            // the flow stays, for a server that starts later.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(err) => {
                tracing::debug!(%err, %peer, "a UDP flow ended");
                return;
            }
        }
    }
}

pub async fn relay<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, target: Target, port: u16) {
    let (from_host, mut to_host) = tokio::io::split(stream);
    if to_host.write_all(&[ForwardStatus::Connected as u8]).await.is_err() {
        return;
    }
    let (inbound_tx, mut inbound) = mpsc::channel::<Datagram>(256);
    let _reader = AbortOnDrop(tokio::spawn(async move {
        if let Err(err) = read_frames(from_host, inbound_tx).await {
            if err.kind() != io::ErrorKind::UnexpectedEof {
                tracing::debug!(%err, "a UDP binding's stream ended");
            }
        }
    }));
    let (replies_tx, mut replies) = mpsc::channel::<Datagram>(256);
    let mut flows: FlowTable<Flow> = FlowTable::new(FLOW_IDLE, MAX_FLOWS);
    let mut sweep = tokio::time::interval(Duration::from_secs(10));
    let mut frame = Vec::with_capacity(MAX_DATAGRAM + 32);
    loop {
        tokio::select! {
            datagram = inbound.recv() => {
                let Some((peer, payload)) = datagram else { break };
                let now = Instant::now();
                let socket = match flows.touch(peer, now) {
                    Some(flow) => flow.socket.clone(),
                    None => match open_flow(&target, port, peer).await {
                        Ok(socket) => {
                            let socket = Arc::new(socket);
                            let task = tokio::spawn(container_replies(socket.clone(), peer, replies_tx.clone()));
                            flows.insert(peer, Flow { socket: socket.clone(), _replies: AbortOnDrop(task) }, now);
                            socket
                        }
                        Err(err) => {
                            tracing::debug!(%err, port, "no UDP socket towards the container");
                            continue;
                        }
                    },
                };
                // Lost datagrams are UDP's to lose; refusals are seen by the flow's reader.
                let _ = socket.send(&payload).await;
            }
            Some((peer, payload)) = replies.recv() => {
                flows.touch(peer, Instant::now());
                frame.clear();
                encode_datagram(&mut frame, peer, &payload);
                if to_host.write_all(&frame).await.is_err() {
                    break;
                }
            }
            _ = sweep.tick() => {
                drop(flows.expire(Instant::now()));
            }
        }
    }
}

/// A new flow's socket: from the client's own address where it can be
/// ([`Target::source_for`]), else from the gateway's.
async fn open_flow(target: &Target, port: u16, peer: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    if let Some(source) = target.source_for(peer) {
        match dial::udp_to_container(target, port, Some(source)).await {
            Ok(socket) => return Ok(socket),
            Err(err) => tracing::debug!(%err, %source, "a UDP flow from the client's address failed"),
        }
    }
    dial::udp_to_container(target, port, None).await
}
