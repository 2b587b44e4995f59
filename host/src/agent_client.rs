//! Reaching the guest: a [`GuestTransport`] opens a byte stream to any of the
//! guest's vsock ports, whichever way the platform offers them:
//!
//! - `Vsock`: AF_VSOCK from the host (Linux with /dev/vhost-vsock).
//! - `HybridVsock`: vhost-user-vsock's "hybrid vsock", a unix socket on which
//!   the host writes `CONNECT <port>\n`, reads `OK <n>\n`, and then has the raw
//!   stream (Firecracker and Cloud Hypervisor use the same scheme).
//! - `Unix`: a local agent listening on plain unix sockets.
//! - `HvSocket`: Hyper-V sockets (AF_HYPERV) to a VM by its id, on Windows
//!   (HCS VMs and WSL 2's utility VM); the guest's vsock port P is the
//!   service `<P as 8 hex>-FACB-11E6-BD58-64006A7986D3`.
//!
//! The agent is one port of it ([`AgentEndpoint`]): connections there start
//! with the per-boot key, then carry gRPC. Other ports (published ports,
//! host.docker.internal) get the plain stream from [`GuestTransport::connect`].
//! Every agent connection becomes the same `AgentClient`; tonic reconnects
//! through the same connector when a connection breaks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::InfoResponse;
use berth_agent_proto::{prost::Message, ReadyAnnouncement};
use berth_agent_proto::{AgentKey, PingRequest, PingResponse, AGENT_VSOCK_PORT, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};

/// How the host reaches the guest's vsock ports. Serialised into the state
/// file: other processes (`berth shell`) connect with it too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestTransport {
    Vsock {
        cid: u32,
    },
    HybridVsock {
        uds: PathBuf,
    },
    /// A local agent: its own port is served at `path`, any other port P at
    /// `<path>_<P>` (the name hybrid vsock gives a port's socket).
    Unix {
        path: PathBuf,
    },
    /// A Hyper-V VM, by the id its sockets are addressed with (HCS's
    /// RuntimeId; WSL's utility VM id).
    HvSocket {
        vm_id: String,
    },
}

/// The guest agent: a transport and the port the agent serves on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEndpoint {
    #[serde(flatten)]
    pub transport: GuestTransport,
    /// A local agent's endpoint has always been written without one.
    #[serde(default = "agent_port")]
    pub port: u32,
}

fn agent_port() -> u32 {
    AGENT_VSOCK_PORT
}

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How long one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A fresh key for one boot of the agent (see agent_key.rs in the proto crate).
pub fn generate_agent_key() -> std::io::Result<AgentKey> {
    let mut bytes = [0u8; berth_agent_proto::agent_key::AGENT_KEY_BYTES];
    getrandom::getrandom(&mut bytes).map_err(|err| std::io::Error::other(err.to_string()))?;
    Ok(AgentKey::from_bytes(bytes))
}

/// Writes the key for `berth shell`: 0600 from its first moment, and never
/// through a link someone planted in its place.
pub fn write_key_file(path: &std::path::Path, key: &AgentKey) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    crate::private_fs::open_for_writing(path, false)?.write_all(key.to_hex().as_bytes())?;
    Ok(())
}

/// The running agent's key, as the daemon wrote it (refused if it is a
/// link or another user's file).
pub fn read_key_file(path: &std::path::Path) -> Result<AgentKey> {
    use anyhow::Context;
    use std::io::Read;
    let mut text = String::new();
    crate::private_fs::open_for_reading(path, "the agent key")?
        .with_context(|| format!("{} is missing: is the daemon running?", path.display()))?
        .read_to_string(&mut text)?;
    AgentKey::from_hex(&text).with_context(|| format!("{} does not hold an agent key", path.display()))
}

impl GuestTransport {
    /// Opens a plain byte stream to the guest's vsock `port`: nothing is
    /// sent on it (the agent's key belongs to the agent's port only, see
    /// [`AgentEndpoint::open`]).
    pub async fn connect(&self, port: u32) -> std::io::Result<Box<dyn Io>> {
        match self {
            #[cfg(unix)]
            GuestTransport::Unix { path } => {
                let socket = if port == AGENT_VSOCK_PORT { path.clone() } else { port_socket(path, port) };
                Ok(Box::new(tokio::net::UnixStream::connect(socket).await?))
            }
            #[cfg(unix)]
            GuestTransport::HybridVsock { uds } => {
                let mut stream = tokio::net::UnixStream::connect(uds).await?;
                hybrid_handshake(&mut stream, port).await?;
                Ok(Box::new(stream))
            }
            #[cfg(target_os = "linux")]
            GuestTransport::Vsock { cid } => {
                Ok(Box::new(tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, port)).await?))
            }
            #[cfg(windows)]
            GuestTransport::HvSocket { vm_id } => {
                Ok(Box::new(crate::platform::hvsock_windows::connect(vm_id, port).await?))
            }
            #[allow(unreachable_patterns)]
            other => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("the guest transport {other:?} is not supported on this platform (port {port})"),
            )),
        }
    }
}

/// Where a unix-socket transport serves `port` (hybrid vsock's naming).
fn port_socket(base: &std::path::Path, port: u32) -> PathBuf {
    PathBuf::from(format!("{}_{port}", base.display()))
}

impl AgentEndpoint {
    /// The agent on its usual port of `transport`.
    pub fn agent(transport: GuestTransport) -> AgentEndpoint {
        AgentEndpoint { transport, port: AGENT_VSOCK_PORT }
    }

    /// Opens one raw byte stream to the agent, admitted with `key`.
    pub async fn open(&self, key: &AgentKey) -> std::io::Result<Box<dyn Io>> {
        use tokio::io::AsyncWriteExt;
        let admitted = async {
            let mut stream = self.transport.connect(self.port).await?;
            stream.write_all(key.as_bytes()).await?;
            Ok(stream)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, admitted).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the agent timed out"))
        })
    }

    /// A gRPC client whose connections go through [`AgentEndpoint::open`].
    pub fn client(&self, key: &AgentKey) -> AgentClient<Channel> {
        let endpoint = self.clone();
        let key = key.clone();
        // The URI is required by tonic but unused: the connector decides where bytes go.
        let channel = Endpoint::from_static("http://berth-agent")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                let (endpoint, key) = (endpoint.clone(), key.clone());
                async move { endpoint.open(&key).await.map(hyper_util::rt::TokioIo::new) }
            }));
        AgentClient::new(channel).max_decoding_message_size(64 << 20)
    }
}

/// Where the agent announces that it serves (see `AGENT_READY_VSOCK_PORT` in
/// agent.proto). Created before the VM starts; the socket file (if any) is
/// removed on drop.
pub struct ReadyListener {
    #[cfg(unix)]
    listener: tokio::net::UnixListener,
    /// The HCS backend's: a Hyper-V socket listener on the VM's RuntimeId,
    /// known between create and start. WSL has none (a host service there
    /// needs a registry entry); it finds the agent by polling.
    #[cfg(windows)]
    listener: crate::platform::hvsock_windows::HvListener,
    /// The socket file, removed on drop (a Hyper-V listener has none).
    path: Option<PathBuf>,
}

impl AgentEndpoint {
    /// Listens for the agent's readiness announcement, for endpoints that
    /// have one (hybrid vsock: the device forwards guest connections to host
    /// port P to `<uds>_P`). None means: find the agent by polling.
    #[cfg(unix)]
    pub fn listen_for_ready(&self) -> std::io::Result<Option<ReadyListener>> {
        match &self.transport {
            GuestTransport::HybridVsock { uds } => {
                let path = port_socket(uds, berth_agent_proto::AGENT_READY_VSOCK_PORT);
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path)?;
                Ok(Some(ReadyListener { listener, path: Some(path) }))
            }
            // Kernel vsock and local agents have no device to wedge: polling is fine.
            _ => Ok(None),
        }
    }
}

impl ReadyListener {
    /// Listens for the announcement of the agent in the Hyper-V VM `vm_id`.
    #[cfg(windows)]
    pub fn hvsocket(vm_id: &str) -> std::io::Result<ReadyListener> {
        let port = berth_agent_proto::AGENT_READY_VSOCK_PORT;
        Ok(ReadyListener { listener: crate::platform::hvsock_windows::HvListener::bind(vm_id, port)?, path: None })
    }

    #[cfg(unix)]
    async fn accept(&self) -> std::io::Result<tokio::net::UnixStream> {
        Ok(self.listener.accept().await?.0)
    }

    #[cfg(windows)]
    async fn accept(&self) -> std::io::Result<tokio::net::TcpStream> {
        self.listener.accept().await
    }

    /// Resolves when an agent has announced itself, with what Info would
    /// say; checks that it speaks our protocol version (no Ping needed).
    pub async fn announced(&self) -> Result<InfoResponse, PingError> {
        use tokio::io::AsyncReadExt;
        loop {
            let stream = self.accept().await?;
            let mut bytes = Vec::new();
            let limit = berth_agent_proto::MAX_ANNOUNCEMENT_BYTES as u64;
            let read = tokio::time::timeout(CONNECT_TIMEOUT, stream.take(limit).read_to_end(&mut bytes)).await;
            let announcement = ReadyAnnouncement::decode_length_delimited(bytes.as_slice());
            match (read, announcement) {
                (Ok(Ok(_)), Ok(ReadyAnnouncement { protocol_version: PROTOCOL_VERSION, info: Some(info) })) => {
                    return Ok(info)
                }
                (Ok(Ok(_)), Ok(ReadyAnnouncement { protocol_version, .. })) if protocol_version != PROTOCOL_VERSION => {
                    return Err(PingError::VersionMismatch(format!(
                        "protocol version mismatch: berth speaks v{PROTOCOL_VERSION}, the VM's berth-agent speaks v{protocol_version}"
                    )))
                }
                (read, decoded) => tracing::warn!(?read, ?decoded, "ignoring a bad readiness announcement"),
            }
        }
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The host side of the hybrid-vsock handshake. Reads byte by byte so that
/// nothing after the `OK` line (the start of the agent's stream) is consumed.
pub async fn hybrid_handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, port: u32) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            // The device closes the socket when nothing listens on the port (yet).
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("nothing listens on vsock port {port} in the VM (yet)"),
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > 64 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "hybrid vsock handshake: reply too long"));
        }
    }
    let reply = String::from_utf8_lossy(&line);
    match reply.strip_prefix("OK ") {
        Some(n) if n.trim().parse::<u32>().is_ok() => Ok(()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("hybrid vsock handshake: unexpected reply {reply:?}"),
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// No retry can fix this: the guest image is from another Berth.
    #[error("{0}: rebuild the guest image with `packaging/setup.sh`")]
    VersionMismatch(String),
    #[error("agent ping failed: {0}")]
    Unavailable(#[from] tonic::Status),
    #[error("waiting for the agent: {0}")]
    Io(#[from] std::io::Error),
}

/// Pings the agent, checking that it speaks our protocol version.
pub async fn ping(client: &mut AgentClient<Channel>) -> Result<PingResponse, PingError> {
    let reply = match client.ping(PingRequest { protocol_version: PROTOCOL_VERSION }).await {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            return Err(PingError::VersionMismatch(status.message().to_string()))
        }
        Err(status) => return Err(status.into()),
    };
    if reply.protocol_version != PROTOCOL_VERSION {
        return Err(PingError::VersionMismatch(format!(
            "protocol version mismatch: berth speaks v{PROTOCOL_VERSION}, berth-agent {} speaks v{}",
            reply.agent_version, reply.protocol_version
        )));
    }
    Ok(reply)
}

/// Retries until the agent answers a ping, the deadline passes, or it answers
/// with an incompatible version.
pub async fn wait_until_ready(
    endpoint: &AgentEndpoint,
    key: &AgentKey,
    deadline: Instant,
) -> Result<AgentClient<Channel>> {
    let mut last_err = String::from("none");
    while Instant::now() < deadline {
        // A fresh client per attempt: a failed channel would otherwise wait
        // out tonic's reconnect back-off.
        let mut client = endpoint.client(key);
        match ping(&mut client).await {
            Ok(_) => return Ok(client),
            Err(err @ PingError::VersionMismatch(_)) => return Err(err.into()),
            Err(err) => {
                let err = err.to_string();
                if err != last_err {
                    tracing::debug!(%err, "agent not ready yet");
                }
                last_err = err;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the agent did not answer in time (last error: {last_err})")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn hybrid_handshake_keeps_the_bytes_after_ok() {
        let (mut host, mut device) = tokio::io::duplex(256);
        let device_side = tokio::spawn(async move {
            let mut request = [0u8; 13];
            device.read_exact(&mut request).await.unwrap();
            assert_eq!(&request, b"CONNECT 1024\n");
            // The reply and the first payload bytes arrive together.
            device.write_all(b"OK 1073741824\nhello").await.unwrap();
        });
        hybrid_handshake(&mut host, 1024).await.unwrap();
        let mut payload = [0u8; 5];
        host.read_exact(&mut payload).await.unwrap();
        assert_eq!(&payload, b"hello");
        device_side.await.unwrap();
    }

    #[tokio::test]
    async fn hybrid_handshake_reports_refusal_and_garbage() {
        // The device reads the request, finds no listener, and hangs up.
        let (mut host, mut device) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut buf = [0u8; 13];
            device.read_exact(&mut buf).await.unwrap();
        });
        let err = hybrid_handshake(&mut host, 1024).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

        let (mut host, mut device) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut buf = [0u8; 13];
            device.read_exact(&mut buf).await.unwrap();
            device.write_all(b"NOPE\n").await.unwrap();
        });
        let err = hybrid_handshake(&mut host, 1024).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn readiness_announcements_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = AgentEndpoint::agent(GuestTransport::HybridVsock { uds: dir.path().join("agent.vsock") });
        let listener = endpoint.listen_for_ready().unwrap().expect("hybrid vsock has a readiness listener");
        let socket = dir.path().join("agent.vsock_1025");
        let announce = |bytes: Vec<u8>| {
            let socket = socket.clone();
            async move {
                let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
                stream.write_all(&bytes).await.unwrap();
            }
        };
        let info = InfoResponse { agent_version: "9.9.9".into(), ..Default::default() };

        // Garbage is ignored; a good announcement is accepted, Info included.
        announce(b"hello".to_vec()).await;
        let good = ReadyAnnouncement { protocol_version: PROTOCOL_VERSION, info: Some(info.clone()) };
        announce(good.encode_length_delimited_to_vec()).await;
        assert_eq!(listener.announced().await.unwrap(), info);

        // Another protocol version is a clear, final error.
        let other = ReadyAnnouncement { protocol_version: PROTOCOL_VERSION + 1, info: Some(info) };
        announce(other.encode_length_delimited_to_vec()).await;
        let err = listener.announced().await.unwrap_err();
        assert!(matches!(err, PingError::VersionMismatch(_)), "{err}");
        assert!(err.to_string().contains("packaging/setup.sh"), "{err}");

        drop(listener);
        assert!(!socket.exists(), "the readiness socket outlived its listener");
    }

    #[test]
    fn endpoints_round_trip_through_json() {
        let endpoint = AgentEndpoint::agent(GuestTransport::HybridVsock { uds: "/run/vsock.sock".into() });
        let json = serde_json::to_string(&endpoint).unwrap();
        assert_eq!(json, r#"{"kind":"hybrid_vsock","uds":"/run/vsock.sock","port":1024}"#);
        assert_eq!(serde_json::from_str::<AgentEndpoint>(&json).unwrap(), endpoint);
    }

    #[test]
    fn endpoints_written_before_ports_were_explicit_still_read() {
        let local: AgentEndpoint = serde_json::from_str(r#"{"kind":"unix","path":"/run/agent.sock"}"#).unwrap();
        assert_eq!(local, AgentEndpoint::agent(GuestTransport::Unix { path: "/run/agent.sock".into() }));
        let vsock: AgentEndpoint = serde_json::from_str(r#"{"kind":"vsock","cid":42,"port":1024}"#).unwrap();
        assert_eq!(vsock, AgentEndpoint::agent(GuestTransport::Vsock { cid: 42 }));
    }

    /// The agent's port hears the key first; any other port hears only what its caller sends.
    #[tokio::test]
    async fn only_the_agents_port_is_sent_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let agent_socket = dir.path().join("agent.sock");
        let agent = tokio::net::UnixListener::bind(&agent_socket).unwrap();
        let forwarded = tokio::net::UnixListener::bind(dir.path().join("agent.sock_2000")).unwrap();
        let endpoint = AgentEndpoint::agent(GuestTransport::Unix { path: agent_socket });
        let key = AgentKey::from_bytes([7; 32]);
        let first_bytes = |listener: tokio::net::UnixListener| async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).await.unwrap();
            bytes
        };

        let mut stream = endpoint.open(&key).await.unwrap();
        stream.write_all(b"PRI").await.unwrap();
        drop(stream);
        assert_eq!(first_bytes(agent).await, [&[7u8; 32][..], b"PRI"].concat());

        let mut stream = endpoint.transport.connect(2000).await.unwrap();
        stream.write_all(b"GET /").await.unwrap();
        drop(stream);
        assert_eq!(first_bytes(forwarded).await, b"GET /");

        let err = endpoint.transport.connect(2001).await.err().expect("no socket for port 2001");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
