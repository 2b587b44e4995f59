//! Published ports, the agent's half: the host accepts on the host's
//! sockets and opens a stream to [`PORTS_VSOCK_PORT`] per TCP connection
//! (per UDP binding); here each stream is admitted as the agent's own port
//! admits (the host's CID only, then the per-boot key), its header names
//! the container and port, and the container is dialled (`dial.rs`). The
//! wire format is `berth_agent_proto::ports::wire`.

mod dial;
mod flows;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::ports::wire::{ForwardHeader, ForwardStatus, MAX_HEADER};
use berth_agent_proto::ports::Proto;
pub use berth_agent_proto::ports::PORTS_VSOCK_PORT;
use berth_engine::container::Status;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_stream::StreamExt;

use crate::admission::Admitted;
use crate::containers::Containers;
use dial::Target;

/// A forwarding stream of either backend.
pub trait ForwardStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// A wider window for the stream while the permit is held, if it has
    /// one to take (vsock_window.rs).
    fn widen(&self) -> Option<tokio::sync::OwnedSemaphorePermit>;
}

impl ForwardStream for tokio_vsock::VsockStream {
    fn widen(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        crate::vsock_window::widen_forward(self)
    }
}

/// The local backend's: the kernel sizes a unix socket's buffers.
impl ForwardStream for tokio::net::UnixStream {
    fn widen(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        None
    }
}

/// How long the host may take to send the header after the key.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admitted forwarding streams, each in a task of its own.
pub fn serve<S: ForwardStream>(mut admitted: Admitted<S>, containers: Arc<Containers>) {
    tokio::spawn(async move {
        while let Some(stream) = admitted.next().await {
            let Ok(stream) = stream else { continue };
            tokio::spawn(forward(stream, containers.clone()));
        }
    });
}

async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Result<ForwardHeader, String>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Ok(Err(format!("forwarding header of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(ForwardHeader::decode(&body))
}

async fn forward<S: ForwardStream>(mut stream: S, containers: Arc<Containers>) {
    let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await {
        Ok(Ok(Ok(header))) => header,
        Ok(Ok(Err(why))) => {
            tracing::warn!(%why, "refused a forwarding stream");
            let _ = stream.write_all(&[ForwardStatus::BadRequest as u8]).await;
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    let target = match target_of(&containers, &header).await {
        Ok(target) => target,
        Err(status) => {
            tracing::debug!(id = %header.container_id, port = header.container_port, ?status, "forwarding refused");
            let _ = stream.write_all(&[status as u8]).await;
            return;
        }
    };
    match header.proto {
        Proto::Tcp => forward_tcp(stream, &target, header.container_port, header.client).await,
        Proto::Udp => udp::relay(stream, target, header.container_port).await,
    }
}

/// Where the header's container is reached, if it runs and publishes the port.
async fn target_of(containers: &Arc<Containers>, header: &ForwardHeader) -> Result<Target, ForwardStatus> {
    let record = containers.lookup(&header.container_id).await.map_err(|_| ForwardStatus::Unreachable)?.snapshot();
    if record.id != header.container_id {
        // A prefix or a name: the host always sends the full ID.
        return Err(ForwardStatus::BadRequest);
    }
    let published =
        record.published_ports.iter().any(|b| b.proto == header.proto && b.container_port == header.container_port);
    if !published {
        return Err(ForwardStatus::BadRequest);
    }
    if !matches!(record.state.status, Status::Running | Status::Paused) || record.state.pid <= 0 {
        return Err(ForwardStatus::Unreachable);
    }
    let on_network = containers.networks().await.ok().and_then(|networks| networks.dial_target(&record.id));
    Ok(Target::of(&record, on_network))
}

async fn forward_tcp<S: ForwardStream>(mut stream: S, target: &Target, port: u16, client: SocketAddr) {
    let connected = match target.source_for(client) {
        Some(source) => match dial::connect_to_container(target, port, Some(source)).await {
            // Without the transparent return path (a local backend on a
            // kernel without nft's socket match, no CAP_NET_ADMIN): the
            // connection still goes through, from the gateway's address.
            Err(err) if err.kind() != io::ErrorKind::ConnectionRefused => {
                tracing::debug!(%err, %source, "dialling from the client's address failed");
                dial::connect_to_container(target, port, None).await
            }
            other => other,
        },
        None => dial::connect_to_container(target, port, None).await,
    };
    let mut container = match connected {
        Ok(container) => container,
        Err(err) => {
            let status = if err.kind() == io::ErrorKind::ConnectionRefused {
                ForwardStatus::Refused
            } else {
                tracing::debug!(%err, port, "dialling the container failed");
                ForwardStatus::Unreachable
            };
            let _ = stream.write_all(&[status as u8]).await;
            return;
        }
    };
    // The kernel tells the host of the wider window at once (a credit
    // update), so it is there for the bulk of the client's bytes.
    let _window = stream.widen();
    if stream.write_all(&[ForwardStatus::Connected as u8]).await.is_err() {
        return;
    }
    // Each side's EOF becomes a shutdown of the other's write half
    // (half-close), and the copy ends when both are done; a stream cut off
    // resets the container's connection, as the client's reset would.
    if berth_agent_proto::ports::relay::relay(&mut container, &mut stream).await.is_err() {
        let _ = container.set_zero_linger();
    }
}
