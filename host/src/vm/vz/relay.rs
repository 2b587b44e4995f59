//! The VM helper's vsock relay: it makes Virtualization.framework's vsock
//! look like vhost-device-vsock's hybrid vsock, so the daemon's transport
//! (agent_client.rs) works unchanged:
//!
//! - host to guest: a client connects to the unix socket, writes
//!   `CONNECT <port>\n`, gets `OK <port>\n` and then the guest's stream; when
//!   nothing listens on the port, the socket is closed (the client reports
//!   "nothing listens ... (yet)").
//! - guest to host: a connection the guest opens to host port P is spliced
//!   to the unix socket `<uds>_P` (where the daemon's ReadyListener and host
//!   services listen).
//!
//! Only "open a connection to guest port N" and "accept the guest's
//! connections" are the framework's (framework.rs); the rest is here.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// How long the framework may take to reach a guest port: VZ "does nothing"
/// when the guest does not listen, so without a limit the client would hang.
pub const GUEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest request line accepted (`CONNECT 4294967295` is 18 bytes).
const MAX_REQUEST_BYTES: usize = 64;

/// Opens connections to the guest's vsock ports.
pub trait GuestVsock: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn connect(&self, port: u32) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The port of a `CONNECT <port>` request line (without its newline).
pub fn parse_connect(line: &[u8]) -> io::Result<u32> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad hybrid vsock request {:?}", String::from_utf8_lossy(line)),
        )
    };
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    text.strip_prefix("CONNECT ").and_then(|port| port.parse().ok()).ok_or_else(bad)
}

/// Reads the request line byte by byte, so nothing the client sends after
/// it (the start of its stream) is consumed here.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<u32> {
    let mut line = Vec::with_capacity(20);
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            return parse_connect(&line);
        }
        line.push(byte);
        if line.len() > MAX_REQUEST_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "hybrid vsock request too long"));
        }
    }
}

/// Serves one client of the unix socket: the handshake, then bytes both ways
/// until either side closes.
pub async fn serve_client<G: GuestVsock, S: AsyncRead + AsyncWrite + Unpin>(guest: &G, client: S) -> io::Result<()> {
    serve_client_within(guest, client, GUEST_CONNECT_TIMEOUT).await
}

async fn serve_client_within<G: GuestVsock, S: AsyncRead + AsyncWrite + Unpin>(
    guest: &G,
    mut client: S,
    connect_timeout: Duration,
) -> io::Result<()> {
    let port = read_request(&mut client).await?;
    let connected = tokio::time::timeout(connect_timeout, guest.connect(port)).await;
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        // Closing the client's socket is the refusal hybrid vsock clients know.
        Ok(Err(err)) => return Err(err),
        Err(_) => {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("guest vsock port {port} did not answer")))
        }
    };
    client.write_all(format!("OK {port}\n").as_bytes()).await?;
    pump(&mut client, &mut stream).await
}

/// Copies both ways; each direction's end is passed on as a shutdown, so a
/// half-closed stream (a client done writing) still gets its answer.
pub async fn pump<A, B>(a: &mut A, b: &mut B) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match tokio::io::copy_bidirectional(a, b).await {
        Ok(_) => Ok(()),
        // A peer that goes away mid-stream is how connections end here.
        Err(err) if matches!(err.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Accepts clients on `listener` for as long as the helper runs.
pub async fn serve<G: GuestVsock>(listener: UnixListener, guest: Arc<G>) -> io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        let guest = guest.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_client(&*guest, client).await {
                tracing::debug!(%err, "hybrid vsock client");
            }
        });
    }
}

/// The unix socket a guest connection to host `port` is spliced to.
pub fn port_socket(uds: &Path, port: u32) -> PathBuf {
    PathBuf::from(format!("{}_{port}", uds.display()))
}

/// Splices a connection the guest opened to host `port` to `<uds>_<port>`.
pub async fn forward_guest_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut guest: S,
    uds: &Path,
    port: u32,
) -> io::Result<()> {
    let mut host = UnixStream::connect(port_socket(uds, port)).await?;
    pump(&mut guest, &mut host).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_client::GuestTransport;

    /// A guest with listeners on some ports; each connection answers
    /// `port N: ` and then echoes what it reads.
    struct FakeGuest {
        listening: Vec<u32>,
        /// A port whose connection never completes (VZ's "does nothing").
        silent: Option<u32>,
    }

    impl GuestVsock for FakeGuest {
        type Stream = UnixStream;
        async fn connect(&self, port: u32) -> io::Result<UnixStream> {
            if self.silent == Some(port) {
                std::future::pending::<()>().await;
            }
            if !self.listening.contains(&port) {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "no listener"));
            }
            let (host_end, mut guest_end) = UnixStream::pair()?;
            tokio::spawn(async move {
                guest_end.write_all(format!("port {port}: ").as_bytes()).await.unwrap();
                let (mut r, mut w) = guest_end.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
            });
            Ok(host_end)
        }
    }

    fn relay(guest: FakeGuest) -> (tempfile::TempDir, GuestTransport) {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("agent.vsock");
        let listener = UnixListener::bind(&uds).unwrap();
        tokio::spawn(serve(listener, Arc::new(guest)));
        (dir, GuestTransport::HybridVsock { uds })
    }

    #[test]
    fn requests_are_parsed() {
        assert_eq!(parse_connect(b"CONNECT 1024").unwrap(), 1024);
        assert_eq!(parse_connect(b"CONNECT 4294967295").unwrap(), u32::MAX);
        for bad in [&b"CONNECT"[..], b"CONNECT -1", b"CONNECT 4294967296", b"connect 1", b"CONNECT 1 2", b"\xff"] {
            assert!(parse_connect(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_daemons_client_reaches_a_guest_port_and_bytes_flow_both_ways() {
        let (_dir, transport) = relay(FakeGuest { listening: vec![1024, 2375], silent: None });
        for port in [1024, 2375] {
            let mut stream = transport.connect(port).await.unwrap();
            let greeting = format!("port {port}: ");
            let mut read = vec![0; greeting.len()];
            stream.read_exact(&mut read).await.unwrap();
            assert_eq!(String::from_utf8(read).unwrap(), greeting);
            let payload = vec![7u8; 300_000];
            let (mut r, mut w) = tokio::io::split(stream);
            let writer = tokio::spawn(async move {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut echoed = Vec::new();
            r.read_to_end(&mut echoed).await.unwrap();
            writer.await.unwrap();
            assert_eq!(echoed.len(), 300_000, "the half-close reached the guest and its end came back");
        }
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_refused_as_vhost_device_vsock_does() {
        let (_dir, transport) = relay(FakeGuest { listening: vec![], silent: None });
        let err = transport.connect(1024).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(err.to_string().contains("nothing listens on vsock port 1024"), "{err}");
    }

    #[tokio::test]
    async fn a_guest_that_never_answers_times_out() {
        let guest = FakeGuest { listening: vec![], silent: Some(1024) };
        let (mut client, relay_end) = UnixStream::pair().unwrap();
        client.write_all(b"CONNECT 1024\n").await.unwrap();
        let err = serve_client_within(&guest, relay_end, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("port 1024 did not answer"), "{err}");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the client sees its socket closed, no reply");
    }

    #[tokio::test]
    async fn a_bad_request_closes_the_socket() {
        let guest = FakeGuest { listening: vec![1024], silent: None };
        let (mut client, relay_end) = UnixStream::pair().unwrap();
        client.write_all(b"HELLO\n").await.unwrap();
        assert_eq!(serve_client(&guest, relay_end).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (mut client, relay_end) = UnixStream::pair().unwrap();
        client.write_all(&[b'C'; 100]).await.unwrap();
        assert!(serve_client(&guest, relay_end).await.unwrap_err().to_string().contains("too long"));
    }

    #[tokio::test]
    async fn guest_connections_reach_the_hosts_port_socket() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("agent.vsock");
        let listener = UnixListener::bind(port_socket(&uds, 1025)).unwrap();
        let (mut guest, relay_end) = UnixStream::pair().unwrap();
        let forward = tokio::spawn(async move { forward_guest_connection(relay_end, &uds, 1025).await });
        let (mut host, _) = listener.accept().await.unwrap();
        guest.write_all(b"ready").await.unwrap();
        guest.shutdown().await.unwrap();
        let mut got = Vec::new();
        host.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ready");
        host.write_all(b"ack").await.unwrap();
        drop(host);
        let mut back = Vec::new();
        guest.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ack");
        forward.await.unwrap().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (_guest, relay_end) = UnixStream::pair().unwrap();
        let err = forward_guest_connection(relay_end, &dir.path().join("agent.vsock"), 9).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "no host service: the guest's connection is dropped");
    }
}
