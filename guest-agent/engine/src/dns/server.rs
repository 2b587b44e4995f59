//! Serving a [`Resolver`] on a UDP socket and a TCP listener (DNS over TCP
//! frames each message with its u16 length, RFC 1035 4.2.2).

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use super::{Resolver, Transport};

/// Questions in flight at once per server; beyond, REFUSED (as dockerd: 1024).
pub const MAX_IN_FLIGHT: usize = 1024;
/// A TCP client that sends nothing for this long is hung up on.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Answers every datagram on `socket`, each in its own task.
pub async fn serve_udp(socket: UdpSocket, resolver: Resolver) {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                // ICMP errors of earlier replies surface here (ECONNREFUSED): not fatal.
                tracing::debug!(%err, "dns: receiving failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            if let Some(refused) = refused(&query) {
                let _ = socket.send_to(&refused, client).await;
            }
            continue;
        };
        let (socket, resolver) = (socket.clone(), resolver.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = resolver.handle(&query, Transport::Udp).await {
                let _ = socket.send_to(&reply, client).await;
            }
        });
    }
}

/// Serves each TCP connection on `listener` until it goes quiet.
pub async fn serve_tcp(listener: TcpListener, resolver: Resolver) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::debug!(%err, "dns: accepting failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else { continue };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = serve_connection(stream, &resolver).await;
        });
    }
}

async fn serve_connection(mut stream: tokio::net::TcpStream, resolver: &Resolver) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(reply) = resolver.handle(&query, Transport::Tcp).await else { return Ok(()) };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

fn refused(query: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    Message::error_msg(id, OpCode::Query, ResponseCode::Refused).to_vec().ok()
}
