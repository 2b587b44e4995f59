//! Who may talk to the agent (see `agent_key.rs` in the proto crate).
//!
//! Every accepted connection is checked before tonic sees a byte of it: in
//! the VM the peer must be the host (a container that gets a vsock socket
//! connects from the guest's own CID or from loopback, CID 1), and every
//! connection must open with the per-boot key. A connection that fails is
//! closed without an answer, so a prober learns nothing about the service.
//! The checks run in their own tasks: a client that connects and says
//! nothing holds up no other connection.

use std::io;
use std::path::Path;
use std::time::Duration;

use berth_agent_proto::agent_key::{AGENT_KEY_BYTES, AGENT_KEY_ENV, AGENT_KEY_GUEST_PATH};
use berth_agent_proto::AgentKey;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long a new connection may take to present the key.
const KEY_TIMEOUT: Duration = Duration::from_secs(5);

/// The key of this boot: read once from the initial root filesystem (and
/// removed, so nothing started later can read it), or for a local agent
/// from its environment (removed likewise: shims and execs inherit it).
/// None: the agent admits nobody (it was started without one).
pub fn take_key(is_init: bool) -> Option<AgentKey> {
    let key = if is_init {
        let path = Path::new(AGENT_KEY_GUEST_PATH);
        let text = std::fs::read_to_string(path).ok();
        let _ = std::fs::remove_file(path);
        text
    } else {
        let text = std::env::var(AGENT_KEY_ENV).ok();
        // Called from main before any other thread exists, so no thread can
        // be reading the environment while it changes.
        std::env::remove_var(AGENT_KEY_ENV);
        text
    };
    key.as_deref().and_then(AgentKey::from_hex)
}

/// Reads the key preamble; hands the stream back if it matches.
async fn presents_key<S: AsyncRead + Unpin>(mut stream: S, key: &AgentKey) -> io::Result<S> {
    let mut presented = [0u8; AGENT_KEY_BYTES];
    match tokio::time::timeout(KEY_TIMEOUT, stream.read_exact(&mut presented)).await {
        Ok(Ok(_)) if key.admits(&presented) => Ok(stream),
        Ok(Ok(_)) => Err(io::Error::new(io::ErrorKind::PermissionDenied, "wrong agent key")),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no agent key in time")),
    }
}

/// The connections that passed, as tonic's `serve_with_incoming` takes them.
pub type Admitted<S> = ReceiverStream<io::Result<S>>;

/// Checks each stream from `accept` in a task of its own: `peer_ok` first
/// (`Err` names why the peer is refused), then the key.
fn admit<S, A, F>(key: Option<AgentKey>, mut accept: A) -> Admitted<S>
where
    S: AsyncRead + Unpin + Send + 'static,
    A: FnMut() -> F + Send + 'static,
    F: std::future::Future<Output = io::Result<(S, Result<(), String>)>> + Send,
{
    let (admitted, incoming) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(peer) = peer {
                tracing::warn!(%peer, "refused a connection from inside the VM");
                continue;
            }
            let Some(key) = key.clone() else {
                tracing::error!("refused a connection: this agent was started without a key");
                continue;
            };
            let admitted = admitted.clone();
            tokio::spawn(async move {
                match presents_key(stream, &key).await {
                    Ok(stream) => {
                        let _ = admitted.send(Ok(stream)).await;
                    }
                    Err(err) => tracing::warn!(%err, "refused a connection without the agent key"),
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// Vsock: only the host's CID, then the key.
pub fn admit_vsock(listener: tokio_vsock::VsockListener, key: Option<AgentKey>) -> Admitted<tokio_vsock::VsockStream> {
    let listener = std::sync::Arc::new(listener);
    admit(key, move || {
        let listener = listener.clone();
        async move {
            let (stream, peer) = listener.accept().await?;
            Ok((stream, host_only(peer.cid())))
        }
    })
}

/// A unix socket (local agent): the socket file's mode keeps other users
/// out; the key keeps out whoever else runs as root.
pub fn admit_unix(listener: tokio::net::UnixListener, key: Option<AgentKey>) -> Admitted<tokio::net::UnixStream> {
    let listener = std::sync::Arc::new(listener);
    admit(key, move || {
        let listener = listener.clone();
        async move { Ok((listener.accept().await?.0, Ok(()))) }
    })
}

fn host_only(cid: u32) -> Result<(), String> {
    if cid == libc::VMADDR_CID_HOST {
        Ok(())
    } else {
        Err(format!("vsock CID {cid} (only the host, CID {}, may connect)", libc::VMADDR_CID_HOST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn only_the_host_cid_is_admitted() {
        assert!(host_only(libc::VMADDR_CID_HOST).is_ok());
        // Loopback, the guest's own CID (3 in a Berth VM), any other.
        for cid in [1, 3, 4, libc::VMADDR_CID_ANY] {
            assert!(host_only(cid).is_err(), "{cid}");
        }
    }

    /// The agent hung up without a byte: EOF, or a reset when it closed
    /// with our bytes unread.
    async fn assert_closed_unanswered(mut client: tokio::net::UnixStream) {
        let mut rest = Vec::new();
        match client.read_to_end(&mut rest).await {
            Ok(0) => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("the agent answered: {other:?} {rest:?}"),
        }
    }

    #[tokio::test]
    async fn connections_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let key = AgentKey::from_bytes([7; AGENT_KEY_BYTES]);
        let mut admitted = admit_unix(tokio::net::UnixListener::bind(&path).unwrap(), Some(key.clone()));
        use tokio_stream::StreamExt;

        // A wrong key and a short one are dropped: the client reads EOF.
        for preamble in [vec![8u8; AGENT_KEY_BYTES], vec![7u8; 5]] {
            let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
            client.write_all(&preamble).await.unwrap();
            client.shutdown().await.unwrap();
            assert_closed_unanswered(client).await;
        }
        // The right key passes, and the bytes after it are the stream's.
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        client.write_all(key.as_bytes()).await.unwrap();
        client.write_all(b"PRI *").await.unwrap();
        let mut stream = admitted.next().await.unwrap().unwrap();
        let mut start = [0u8; 5];
        stream.read_exact(&mut start).await.unwrap();
        assert_eq!(&start, b"PRI *");

        // An agent without a key admits nobody.
        let path = dir.path().join("keyless.sock");
        let mut keyless = admit_unix(tokio::net::UnixListener::bind(&path).unwrap(), None);
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        client.write_all(key.as_bytes()).await.unwrap();
        assert_closed_unanswered(client).await;
        assert!(tokio::time::timeout(Duration::from_millis(100), keyless.next()).await.is_err());
    }
}
