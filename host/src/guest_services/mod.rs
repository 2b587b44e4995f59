//! What the host daemon does for the guest on the guest's initiative: DNS
//! questions resolved with the host's own resolver (dns.rs) and connections
//! to host.docker.internal delivered to the host's loopback (loopback.rs).
//! The wire format is `berth_agent_proto::host_services`.
//!
//! The listener exists only while the VM runs ([`GuestServices`] removes
//! its socket when dropped). Its peer is the VM, and in the VM run
//! containers: every stream is hostile until its header parses, a stream
//! that sends nothing is dropped after [`HEADER_TIMEOUT`], and at most
//! [`MAX_STREAMS`] are served at once (the rest are closed unanswered, which
//! the agent treats as a failed upstream and falls back).

mod dns;
mod loopback;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::host_services::{Header, HeaderError, Service, HEADER_LEN, HOST_SERVICES_VSOCK_PORT};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::agent_client::{GuestTransport, Io};

/// How long a new stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Streams served at once (DNS and loopback connections together).
const MAX_STREAMS: usize = 256;

/// The running listener; dropping it stops serving and removes its socket.
pub struct GuestServices {
    task: tokio::task::JoinHandle<()>,
    socket: Option<PathBuf>,
}

impl Drop for GuestServices {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

impl GuestServices {
    /// Listens where the guest behind `transport` reaches the host on
    /// [`HOST_SERVICES_VSOCK_PORT`]: for hybrid vsock the device turns a
    /// guest connection to CID 2 port P into one to the unix socket
    /// `<uds>_P` (vhost-device-vsock's documented naming); a local agent
    /// dials `host_services::local_socket`; kernel vsock listens on the
    /// port itself, Hyper-V sockets on the port's service for the VM's id.
    pub fn start(transport: &GuestTransport) -> std::io::Result<GuestServices> {
        let limit = Arc::new(Semaphore::new(MAX_STREAMS));
        match transport {
            #[cfg(unix)]
            GuestTransport::HybridVsock { uds } => {
                Self::serve_unix(PathBuf::from(format!("{}_{HOST_SERVICES_VSOCK_PORT}", uds.display())), limit)
            }
            #[cfg(unix)]
            GuestTransport::Unix { path } => {
                Self::serve_unix(berth_agent_proto::host_services::local_socket(path), limit)
            }
            #[cfg(target_os = "linux")]
            GuestTransport::Vsock { cid } => {
                let address = tokio_vsock::VsockAddr::new(libc::VMADDR_CID_ANY, HOST_SERVICES_VSOCK_PORT);
                let listener = tokio_vsock::VsockListener::bind(address)?;
                let cid = *cid;
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            // The port is host-wide: only our VM's streams are ours to serve.
                            Ok((stream, peer)) if peer.cid() == cid => admit(Box::new(stream), &limit),
                            Ok((_, peer)) => tracing::debug!(cid = peer.cid(), "refused a stream from another VM"),
                            Err(err) => accept_failed(err).await,
                        }
                    }
                });
                Ok(GuestServices { task, socket: None })
            }
            // Hyper-V sockets, bound to the one VM: its document admits the
            // user to this port's service (HCS, vm/hcs/doc.rs). WSL's VM has
            // no such entry; binding there fails and its guest uses its own resolver.
            #[cfg(windows)]
            GuestTransport::HvSocket { vm_id } => {
                let listener = crate::platform::hvsock_windows::HvListener::bind(vm_id, HOST_SERVICES_VSOCK_PORT)?;
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok(stream) => admit(Box::new(stream), &limit),
                            Err(err) => accept_failed(err).await,
                        }
                    }
                });
                Ok(GuestServices { task, socket: None })
            }
            #[allow(unreachable_patterns)]
            other => {
                drop(limit);
                Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!(
                        "guest services (vsock port {HOST_SERVICES_VSOCK_PORT}) over {other:?} are not supported on this platform"
                    ),
                ))
            }
        }
    }

    #[cfg(unix)]
    fn serve_unix(socket: PathBuf, limit: Arc<Semaphore>) -> std::io::Result<GuestServices> {
        let listener = crate::platform::bind_private_socket(&socket)?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => admit(Box::new(stream), &limit),
                    Err(err) => accept_failed(err).await,
                }
            }
        });
        Ok(GuestServices { task, socket: Some(socket) })
    }
}

/// Out of descriptors (EMFILE) and the like: wait instead of spinning.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!(%err, "accepting a guest stream failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one stream if there is room for it; closes it unanswered if not.
fn admit(stream: Box<dyn Io>, limit: &Arc<Semaphore>) {
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        tracing::warn!(max = MAX_STREAMS, "too many guest streams at once; closing one");
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(err) = serve_stream(stream).await {
            tracing::debug!(%err, "guest stream ended with an error");
        }
    });
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("no header within {HEADER_TIMEOUT:?}")]
    HeaderTimeout,
    #[error("bad header: {0}")]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn serve_stream(mut stream: Box<dyn Io>) -> Result<(), StreamError> {
    let mut header = [0u8; HEADER_LEN];
    tokio::time::timeout(HEADER_TIMEOUT, stream.read_exact(&mut header))
        .await
        .map_err(|_| StreamError::HeaderTimeout)??;
    match Header::parse(&header)?.service {
        Service::Dns => dns::serve(stream).await?,
        Service::HostLoopback { port } => loopback::serve(stream, port).await?,
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn hybrid(dir: &std::path::Path) -> GuestTransport {
        GuestTransport::HybridVsock { uds: dir.join("agent.vsock") }
    }

    #[tokio::test]
    async fn the_socket_is_private_and_lives_as_long_as_the_service() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let services = GuestServices::start(&hybrid(dir.path())).unwrap();
        let socket = dir.path().join(format!("agent.vsock_{HOST_SERVICES_VSOCK_PORT}"));
        assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
        drop(services);
        assert!(!socket.exists(), "the guest services socket outlived the service");
    }

    /// Garbage, silence and a flood of streams neither crash the service
    /// nor stop it from answering the next good stream.
    #[tokio::test]
    async fn hostile_streams_do_not_wedge_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let _services = GuestServices::start(&hybrid(dir.path())).unwrap();
        let socket = dir.path().join(format!("agent.vsock_{HOST_SERVICES_VSOCK_PORT}"));
        for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"BH", &[b'B', b'H', 1, 2, 0, 0], &[0xff; 4096]] {
            let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            let _ = stream.write_all(garbage).await;
            let mut rest = Vec::new();
            // The service hangs up without answering a bad header.
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{garbage:?}: {read:?} {rest:?}");
        }
        // More silent streams than the service admits at once.
        let mut silent = Vec::new();
        for _ in 0..MAX_STREAMS + 10 {
            silent.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
        }
        drop(silent);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream.write_all(&Header::dns().encode()).await.unwrap();
        let query = dns::tests::query("localhost.", hickory_proto::rr::RecordType::A);
        stream.write_all(&(query.len() as u16).to_be_bytes()).await.unwrap();
        stream.write_all(&query).await.unwrap();
        let answer = dns::tests::read_framed(&mut stream).await;
        assert!(!answer.answers().is_empty(), "{answer:?}");
    }
}
