//! Hijacked connections: attach and exec streams carried over a connection
//! upgraded from HTTP (Docker's `Upgrade: tcp`), or over a websocket
//! (`attach/ws`), with Docker's 8-byte stream framing and detach keys.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::body::channel_body;
use super::http::{empty, Body};

pub use crate::platform::ConnectionSocket;

/// A sender for `Hijack::stdin` that feeds the agent's request stream,
/// each chunk (or the end, `None`) wrapped into the call's input message.
pub fn stdin_into<T: Send + 'static>(
    agent_input: tokio::sync::mpsc::Sender<T>,
    wrap: impl Fn(Option<Vec<u8>>) -> T + Send + 'static,
) -> tokio::sync::mpsc::Sender<Option<Vec<u8>>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(32);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if agent_input.send(wrap(chunk)).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// The two directions of an attach or exec stream.
pub struct Hijack {
    /// The process has a terminal: its one stream goes out raw. Without
    /// one, stdout and stderr are framed by stream number.
    pub tty: bool,
    /// (stream number, bytes) until the process is done.
    pub output: tokio::sync::mpsc::Receiver<(u8, Bytes)>,
    /// Where the client's input goes; `None` marks its end.
    pub stdin: Option<tokio::sync::mpsc::Sender<Option<Vec<u8>>>>,
    /// Typed on stdin, these bytes end the connection and leave the process
    /// running (Docker's detach keys; ctrl-p ctrl-q unless configured).
    pub detach_keys: Vec<u8>,
    /// Told once the response headers are out and the stream begins.
    pub started: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Docker's detach key syntax: comma-separated `ctrl-X` or single characters.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    if spec.is_empty() {
        return Ok(vec![0x10, 0x11]);
    }
    spec.split(',')
        .map(|key| {
            let key = key.trim();
            match key.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let c = c.as_bytes()[0].to_ascii_lowercase();
                    match c {
                        b'a'..=b'z' => Ok(c - b'a' + 1),
                        b'@' => Ok(0),
                        b'[' => Ok(27),
                        b'\\' => Ok(28),
                        b']' => Ok(29),
                        b'^' => Ok(30),
                        b'_' => Ok(31),
                        _ => Err(format!("Invalid detach keys ({spec}) provided")),
                    }
                }
                None if key.len() == 1 => Ok(key.as_bytes()[0]),
                _ => Err(format!("Invalid detach keys ({spec}) provided")),
            }
        })
        .collect()
}

/// Watches input for the detach sequence: bytes that might start it are held
/// back until they turn out not to be it.
struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    /// The bytes to forward, and whether the sequence was typed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if self.keys.is_empty() {
                out.push(byte);
            } else if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if byte == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(byte);
                }
            }
        }
        (out, false)
    }
}

/// Answers 101 and carries the streams over the hijacked connection
/// (Docker's `Upgrade: tcp`); without an upgrade request, the output is
/// the response body and there is no input.
pub fn hijack<B>(req: &mut Request<B>, mut streams: Hijack) -> Response<Body> {
    let tty = streams.tty;
    let encode = move |(stream, data): (u8, Bytes)| if tty { data } else { frame(stream, &data) };
    if req.headers().get(UPGRADE).is_none() {
        if let Some(started) = streams.started.take() {
            let _ = started.send(());
        }
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = streams.output.recv() => item,
                    () = tx.closed() => return,
                };
                let Some(item) = item else { return };
                if tx.send(encode(item)).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(body);
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.docker.raw-stream"));
        return response;
    }
    let socket = req.extensions().get::<ConnectionSocket>().copied();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%err, "connection upgrade failed");
                return;
            }
        };
        let (mut reader, mut writer) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        if let Some(started) = streams.started.take() {
            let _ = started.send(());
        }
        let mut stdin = streams.stdin.take();
        let mut scanner = DetachScanner { keys: std::mem::take(&mut streams.detach_keys), matched: 0 };
        // Returns (ends the connection) when the detach keys are typed or
        // the client is gone.
        let input_pump = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) => {
                        if let Some(stdin) = &stdin {
                            let _ = stdin.send(None).await;
                        }
                        // A client that only half-closed still reads the
                        // output; one that closed for good does not.
                        return peer_closed(socket).await;
                    }
                    Err(_) => return,
                    // Without stdin attached (or once the process no
                    // longer takes it), input is dropped, as dockerd does.
                    Ok(n) => {
                        let Some(sender) = &stdin else { continue };
                        let (forward, detached) = scanner.feed(&buf[..n]);
                        if !forward.is_empty() && sender.send(Some(forward)).await.is_err() {
                            stdin = None;
                        }
                        if detached {
                            return;
                        }
                    }
                }
            }
        };
        let output_pump = async move {
            while let Some(item) = streams.output.recv().await {
                if writer.write_all(&encode(item)).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        };
        // The output ending (the process is done) ends the connection, even
        // if the client still holds its input open.
        tokio::select! {
            () = output_pump => {}
            () = input_pump => {}
        }
    });
    let mut response = switching_protocols("tcp");
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.docker.raw-stream"));
    response
}

/// The 101 that hands the connection over to `protocol`.
fn switching_protocols(protocol: &'static str) -> Response<Body> {
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(protocol));
    response
}

/// Resolves once the client has closed its connection in both directions
/// (where the platform can tell, see platform::peer_hung_up).
async fn peer_closed(socket: Option<ConnectionSocket>) {
    crate::platform::peer_hung_up(socket).await
}

/// The `Sec-WebSocket-Accept` answer to a websocket upgrade request, or
/// `None` when the request is not one.
pub fn websocket_accept_key<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    let has_token = |name: hyper::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return None;
    }
    let key = headers.get(hyper::header::SEC_WEBSOCKET_KEY)?;
    Some(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Serves attach streams over a websocket, as dockerd's `attach/ws` does:
/// output as binary messages of raw bytes (no stream framing: a websocket
/// has no room for it, and dockerd never multiplexes there), every message
/// received (binary or text) as stdin.
pub fn websocket<B>(req: &mut Request<B>, accept_key: String, mut streams: Hijack) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::Message;
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%err, "websocket upgrade failed");
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (mut sink, mut messages) = socket.split();
        let stdin = streams.stdin.take();
        let mut scanner = DetachScanner { keys: std::mem::take(&mut streams.detach_keys), matched: 0 };
        // Returns when the client closes, fails, or types the detach keys.
        let input_pump = async move {
            while let Some(Ok(message)) = messages.next().await {
                let data = match message {
                    Message::Binary(data) => data.to_vec(),
                    Message::Text(text) => text.as_bytes().to_vec(),
                    // tungstenite answers pings and close frames itself.
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Some(stdin) = &stdin else { continue };
                let (forward, detached) = scanner.feed(&data);
                if !forward.is_empty() && stdin.send(Some(forward)).await.is_err() {
                    break;
                }
                if detached {
                    return;
                }
            }
            if let Some(stdin) = &stdin {
                let _ = stdin.send(None).await;
            }
        };
        let output_pump = async {
            while let Some((_, data)) = streams.output.recv().await {
                if sink.send(Message::Binary(data)).await.is_err() {
                    return;
                }
            }
            let close = CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
        };
        tokio::select! {
            () = output_pump => {}
            () = input_pump => {}
        }
    });
    let mut response = switching_protocols("websocket");
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        response.headers_mut().insert(hyper::header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// Docker's stream framing: [stream, 0, 0, 0, big-endian length] + data.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + data.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_keys("").unwrap(), [0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), [1, b'x']);
        assert!(parse_detach_keys("ctrl-ab").is_err());
        let mut scanner = DetachScanner { keys: vec![0x10, 0x11], matched: 0 };
        assert_eq!(scanner.feed(b"ab\x10"), (b"ab".to_vec(), false), "a possible start is held back");
        assert_eq!(scanner.feed(b"c"), (b"\x10c".to_vec(), false), "and released when it is not one");
        assert_eq!(scanner.feed(b"x\x10\x11y"), (b"x".to_vec(), true));
    }

    #[test]
    fn frames() {
        assert_eq!(&frame(2, b"hi")[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }
}
