//! Accepting and serving API connections: the unix socket (mode 0600 from
//! the moment it exists) or, on Windows, the named pipe (SYSTEM and the
//! user only), and the optional TCP listener.
//!
//! Every connection is bounded in the two ways a client that never sends a
//! request could otherwise hold one forever: it must deliver a complete
//! request head within [`Limits::header_read_timeout`], counted from when the
//! server waits for one (just connected, or after the previous response on a
//! keep-alive connection, which is hyper's idle timeout too), and at most
//! [`Limits::max_connections`] are open at once; beyond that a client gets
//! an immediate 503 instead of waiting in a queue. Neither limits a request
//! that is being answered: logs -f, events and stats stream for as long as
//! the client reads, and attach and exec, once hijacked, are raw streams
//! that keep their place in the count until they close.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::hijack::ConnectionSocket;
use super::ApiContext;
use crate::platform::api_address::ApiAddress;
use crate::platform::ApiListener;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    /// 30 s is hyper's own default (and Go's common choice); 512 leaves
    /// room under the usual 1024 open files for the VM's own descriptors.
    fn default() -> Limits {
        Limits { header_read_timeout: Duration::from_secs(30), max_connections: 512 }
    }
}

/// The connection budget, shared by the unix and the TCP listener.
#[derive(Clone)]
pub struct Connections {
    limits: Limits,
    permits: Arc<Semaphore>,
}

impl Connections {
    pub fn new(limits: Limits) -> Connections {
        Connections { limits, permits: Arc::new(Semaphore::new(limits.max_connections)) }
    }

    fn admit<S>(&self, stream: S, socket: Option<ConnectionSocket>, ctx: &Arc<ApiContext>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => serve_connection(Counted { stream, _permit: permit }, socket, ctx.clone(), self.limits),
            Err(_) => {
                tracing::warn!(max = self.limits.max_connections, "API connection refused: too many open");
                tokio::spawn(refuse(stream, self.limits.max_connections));
            }
        }
    }
}

/// Binds the API's socket or pipe, private to the user from the start
/// (only its owner may drive the engine); how depends on the OS
/// (platform::ApiListener).
pub fn bind(address: &ApiAddress) -> std::io::Result<ApiListener> {
    ApiListener::bind(address)
}

/// Serves until the future is dropped; the socket file (if any) is removed
/// with the listener.
pub async fn serve(mut listener: ApiListener, ctx: Arc<ApiContext>, conns: Connections) {
    loop {
        match listener.accept().await {
            Ok((stream, socket)) => conns.admit(stream, socket, &ctx),
            Err(err) => accept_failed(err).await,
        }
    }
}

/// The same API on TCP (`[api] tcp` in config.toml), until dropped.
pub async fn serve_tcp(listener: tokio::net::TcpListener, ctx: Arc<ApiContext>, conns: Connections) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "API connection over TCP");
                let _ = stream.set_nodelay(true);
                let socket = ConnectionSocket::of_tcp(&stream);
                conns.admit(stream, socket, &ctx);
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

/// Out of file descriptors (EMFILE) an accept fails at once and again: a
/// pause keeps the loop from spinning until connections close.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!(%err, "API accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Tells a client over the limit why, in Docker's error shape, without
/// reading its request; a client that does not read gets a second.
async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, max: usize) {
    let body = serde_json::json!({
        "message": format!("too many connections to the Berth API (at most {max} at once); close some and retry")
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A connection's stream holding its place in the count: the permit goes
/// with the stream into a hijacked (attach, exec) connection, so those
/// count for as long as they are open too.
struct Counted<S> {
    stream: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

fn serve_connection<S>(stream: S, socket: Option<ConnectionSocket>, ctx: Arc<ApiContext>, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let ctx = ctx.clone();
            if let Some(socket) = socket {
                req.extensions_mut().insert(socket);
            }
            async move {
                let (method, path) = (req.method().clone(), req.uri().path().to_string());
                let response = super::panics::answer_or_500(super::router::handle(req, &ctx)).await;
                tracing::debug!(%method, path, status = response.status().as_u16(), "api");
                Ok::<_, Infallible>(response)
            }
        });
        let io = hyper_util::rt::TokioIo::new(stream);
        // Upgrades: attach and exec hijack the connection (Docker's
        // `Upgrade: tcp`, or a websocket).
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(io, service)
            .with_upgrades();
        if let Err(err) = conn.await {
            tracing::debug!(%err, "API connection ended with an error");
        }
    });
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use tokio::io::AsyncReadExt;
    use tokio::net::UnixStream;

    use super::*;

    fn context() -> Arc<ApiContext> {
        // Never connected: these tests only use routes that need no agent.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let facts = super::super::ApiFacts {
            berth_version: "0.1.0".into(),
            kernel_release: "6.1".into(),
            hostname: "berth".into(),
            cpus: 1,
            memory_total_bytes: 1 << 30,
            data_dir: "/var/lib/berth".into(),
            registry: Default::default(),
            bind_sources: super::super::BindSources::Any,
        };
        let guest = crate::agent_client::GuestTransport::Unix { path: "/nonexistent/agent.sock".into() };
        let ports = crate::ports::Publisher::new(guest, berth_agent_proto::AgentKey::from_bytes([1; 32]), false);
        Arc::new(ApiContext::new(facts, berth_agent_proto::agent_client::AgentClient::new(channel), ports))
    }

    fn start(limits: Limits) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = bind(&ApiAddress::Unix(socket.clone())).unwrap();
        tokio::spawn(serve(listener, context(), Connections::new(limits)));
        (dir, socket)
    }

    /// Reads until the server closes; what it sent.
    async fn read_to_close(stream: &mut UnixStream, within: Duration) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut out)).await.expect("the server closes").unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    const PING: &[u8] = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";

    #[tokio::test]
    async fn a_stalled_header_and_an_idle_keep_alive_are_dropped() {
        let timeout = Duration::from_millis(300);
        let (_dir, socket) = start(Limits { header_read_timeout: timeout, max_connections: 8 });

        let mut half = UnixStream::connect(&socket).await.unwrap();
        half.write_all(b"GET /_ping HTTP/1.1\r\nHost: doc").await.unwrap();
        let started = Instant::now();
        read_to_close(&mut half, Duration::from_secs(5)).await;
        assert!(started.elapsed() >= timeout, "dropped after the timeout, not before");

        // A keep-alive connection is answered, then dropped once idle.
        let mut idle = UnixStream::connect(&socket).await.unwrap();
        idle.write_all(PING).await.unwrap();
        let answered = read_to_close(&mut idle, Duration::from_secs(5)).await;
        assert!(answered.starts_with("HTTP/1.1 200") && answered.ends_with("OK"), "{answered}");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_refused_at_once() {
        let (_dir, socket) = start(Limits { header_read_timeout: Duration::from_secs(60), max_connections: 3 });
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(UnixStream::connect(&socket).await.unwrap());
        }
        // The server may not have accepted the last one yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = UnixStream::connect(&socket).await.unwrap();
        let refused = read_to_close(&mut extra, Duration::from_secs(2)).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains(r#""message":"too many connections to the Berth API (at most 3"#), "{refused}");

        // A closed connection frees its place.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = UnixStream::connect(&socket).await.unwrap();
        next.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n").await.unwrap();
        let answered = read_to_close(&mut next, Duration::from_secs(2)).await;
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    }

    /// The route table through a real connection, on routes that need no
    /// agent: names with slashes, trailing slashes, and what is not served.
    #[tokio::test]
    async fn routes_answer_by_method_and_segments() {
        let (_dir, socket) = start(Limits::default());
        let ask = |request: &'static str| {
            let socket = socket.clone();
            async move {
                let mut stream = UnixStream::connect(&socket).await.unwrap();
                let head = format!("{request} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n");
                stream.write_all(head.as_bytes()).await.unwrap();
                read_to_close(&mut stream, Duration::from_secs(5)).await
            }
        };
        let answer = ask("GET /v1.47/containers/me/app/json").await;
        assert!(answer.starts_with("HTTP/1.1 404") && answer.ends_with(r#"{"message":"No such container: me/app"}"#));
        let answer = ask("POST /v1.41/swarm/leave?force=True").await;
        assert!(
            answer.starts_with("HTTP/1.1 503") && answer.ends_with(r#"{"message":"This node is not part of a swarm"}"#)
        );
        let answer = ask("GET /exec/nope/json/").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "a trailing slash names the same route: {answer}");
        let answer = ask("POST /containers/abc/frobnicate").await;
        assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
        assert!(answer.ends_with(r#"{"message":"Berth does not implement POST /containers/abc/frobnicate yet"}"#));
        let answer = ask("HEAD /_ping").await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.to_ascii_lowercase().contains("api-version: 1.47"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn the_socket_is_created_private() {
        // SAFETY: umask only swaps the process mask; the previous one is put back.
        let previous = unsafe { libc::umask(0o022) };
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = bind(&ApiAddress::Unix(socket.clone()));
        let plain = dir.path().join("plain.sock");
        let plain_listener = std::os::unix::net::UnixListener::bind(&plain);
        // SAFETY: as above.
        unsafe { libc::umask(previous) };
        let (_listener, _plain) = (listener.unwrap(), plain_listener.unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&plain), 0o755, "a socket bound as usual takes the umask's mode");
        assert_eq!(mode(&socket), 0o600);
    }
}
