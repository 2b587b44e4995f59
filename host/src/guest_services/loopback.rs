//! host.docker.internal: a container's connection to 192.168.65.254:PORT
//! arrives here as a stream naming PORT, and goes to that port of the
//! host's loopback, over vsock, so it works whatever the VM's uplink is
//! (and under VPNs that hijack the host's routes).
//!
//! Only the loopback, only the port asked: the guest cannot name an
//! address, so this is no proxy to anywhere else.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use berth_agent_proto::host_services::ConnectStatus;
use tokio::io::AsyncWriteExt;

use crate::agent_client::Io;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per direction: vsock streams move much more per call at 64 KiB than at
/// tokio's default 8 KiB (see the research brief's vsock figures).
const COPY_BUFFER: usize = 64 * 1024;

pub async fn serve(mut guest: Box<dyn Io>, port: u16) -> std::io::Result<()> {
    let (mut host, status) = match connect_loopback(port).await {
        Ok(stream) => (Some(stream), ConnectStatus::Connected),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => (None, ConnectStatus::Refused),
        Err(err) => {
            tracing::debug!(port, %err, "connecting to the host's loopback failed");
            (None, ConnectStatus::Failed)
        }
    };
    guest.write_all(&[status as u8]).await?;
    let Some(host) = host.as_mut() else { return Ok(()) };
    tokio::io::copy_bidirectional_with_sizes(&mut guest, host, COPY_BUFFER, COPY_BUFFER).await?;
    Ok(())
}

/// 127.0.0.1, then ::1: a server on the host may listen on either
/// (`localhost` means ::1 first to many runtimes).
async fn connect_loopback(port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let v4 = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
    let connect = |address| async move {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    };
    match connect(v4).await {
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => connect(v6).await.map_err(|_| err),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_stream_reaches_the_port_on_the_hosts_loopback() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, peer) = server.accept().await.unwrap();
            assert!(peer.ip().is_loopback());
            let mut request = [0u8; 4];
            conn.read_exact(&mut request).await.unwrap();
            conn.write_all(b"pong:").await.unwrap();
            conn.write_all(&request).await.unwrap();
        });
        let (agent, guest) = tokio::io::duplex(1024);
        let served = tokio::spawn(serve(Box::new(guest), port));
        let mut agent = agent;
        let mut status = [0u8; 1];
        agent.read_exact(&mut status).await.unwrap();
        assert_eq!(ConnectStatus::from_byte(status[0]), Some(ConnectStatus::Connected));
        agent.write_all(b"ping").await.unwrap();
        let mut reply = Vec::new();
        agent.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"pong:ping");
        drop(agent);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        // Bound and dropped: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (mut agent, guest) = tokio::io::duplex(64);
        serve(Box::new(guest), port).await.unwrap();
        let mut reply = Vec::new();
        agent.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, [ConnectStatus::Refused as u8]);
    }
}
