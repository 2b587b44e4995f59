//! Request and response bodies: bounded reads of whole bodies, uploads
//! forwarded to the agent as a stream, and response bodies fed from agent
//! streams that stop as soon as the client goes away.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::http::{error, Body};

/// The largest JSON request body taken (a container create, a commit's config).
pub const MAX_JSON_BODY: usize = 4 << 20;

/// The largest message `forward_body` sends: below musl's mmap threshold
/// (128 KiB), so the static agent's allocator reuses the buffers instead
/// of mapping and unmapping one per message (which cost `docker load` a
/// third of its speed).
const FORWARD_CHUNK: usize = 64 << 10;

/// At most this much of a refused body is read (and dropped) before the
/// answer; past it the connection is closed on a client still sending.
const MAX_DISCARD: usize = 64 << 20;

/// A body fed from a channel; it ends when the sender is dropped. A client
/// that goes away drops the receiver, which stops the producer's sends.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    use http_body_util::BodyExt;
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let frames =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(hyper::body::Frame::data(b)));
    (tx, http_body_util::StreamBody::new(frames).boxed())
}

/// Forwards a request body to the agent as messages made by `wrap`, until
/// it ends. Resolves to the body's own error, if any (a truncated upload),
/// for the caller to report. When the agent stops reading (it refused the
/// upload), the rest is read and dropped (bounded, see `discard`), so the
/// client gets the refusal instead of a broken pipe.
pub fn forward_body<T: Send + 'static>(
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<T>,
    wrap: fn(Vec<u8>) -> T,
) -> tokio::task::JoinHandle<Result<(), hyper::Error>> {
    use http_body_util::BodyExt;
    tokio::spawn(async move {
        'frames: while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            for piece in data.chunks(FORWARD_CHUNK) {
                if tx.send(wrap(piece.to_vec())).await.is_err() {
                    discard(&mut body).await;
                    break 'frames;
                }
            }
        }
        Ok(())
    })
}

/// A tar streamed by the agent as the response body (cp, export, save). A
/// failure mid-stream ends the body early: the client sees a truncated
/// archive, as with dockerd.
/// A tar (`docker export`, `docker cp` out, `docker save`) from the agent.
/// An agent error after the first bytes aborts the response: ending it
/// cleanly would hand the client a cut tar as if it were whole.
pub fn tar_body(mut chunks: tonic::Streaming<berth_agent_proto::ArchiveChunk>) -> Body {
    use http_body_util::BodyExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(32);
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = chunks.message() => message,
                () = tx.closed() => return,
            };
            let frame = match message {
                Ok(Some(chunk)) => Ok(hyper::body::Frame::data(Bytes::from(chunk.data))),
                Ok(None) => return,
                Err(status) => Err(std::io::Error::other(status.message().to_string())),
            };
            let failed = frame.is_err();
            if tx.send(frame).await.is_err() || failed {
                return;
            }
        }
    });
    http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
}

/// Reads and drops a request body (bounded), so an answer that ignores it
/// still reaches the client.
pub async fn drain(mut req: Request<Incoming>) {
    discard(req.body_mut()).await;
}

/// Reads what is left of a body and drops it, chunk by chunk: a client
/// still writing a body we refuse would otherwise see a broken pipe (or a
/// reset over TCP) instead of our answer, and dropping keeps memory flat.
pub async fn discard(body: &mut Incoming) {
    use http_body_util::BodyExt;
    let mut left = MAX_DISCARD;
    while let Some(Ok(frame)) = body.frame().await {
        let len = frame.data_ref().map_or(0, Bytes::len);
        left = left.saturating_sub(len);
        if left == 0 {
            return;
        }
    }
}

/// A whole request body of at most `limit` bytes; a larger one is refused
/// with 413 before more than `limit` bytes of it are held (at once when
/// its Content-Length says so).
pub async fn read_body(req: &mut Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    use http_body_util::BodyExt;
    let too_large =
        || error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body too large: the limit is {} KiB", limit >> 10));
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        discard(req.body_mut()).await;
        return Err(too_large());
    }
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = req.body_mut().frame().await {
        let frame = frame.map_err(|err| error(StatusCode::BAD_REQUEST, format!("reading the request body: {err}")))?;
        if let Some(data) = frame.data_ref() {
            if collected.len() + data.len() > limit {
                discard(req.body_mut()).await;
                return Err(too_large());
            }
            collected.extend_from_slice(data);
        }
    }
    Ok(collected.freeze())
}

/// A request body that must be JSON (an empty one is `{}` when
/// `empty_is_object`), as raw bytes for the agent.
pub async fn read_json_body(
    req: &mut Request<Incoming>,
    limit: usize,
    empty_is_object: bool,
) -> Result<Bytes, Response<Body>> {
    let body = read_body(req, limit).await?;
    let body = if body.is_empty() && empty_is_object { Bytes::from_static(b"{}") } else { body };
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => Ok(body),
        Err(err) => Err(error(StatusCode::BAD_REQUEST, format!("invalid JSON: {err}"))),
    }
}

/// A response body fed from an agent stream, each message encoded by
/// `encode`. It ends with the stream, and also as soon as the client goes
/// away: an idle stream (`logs -f`, `events`) would otherwise hold its agent
/// call, and the agent's cursor or subscription, until its next message.
pub fn stream_body<T: Send + 'static>(
    mut messages: tonic::Streaming<T>,
    mut encode: impl FnMut(T) -> Bytes + Send + 'static,
) -> Body {
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = messages.message() => message,
                () = tx.closed() => return,
            };
            let Ok(Some(message)) = message else { return };
            if tx.send(encode(message)).await.is_err() {
                return;
            }
        }
    });
    body
}

/// Docker's progress messages known all at once, answered as its stream:
/// chunked, one message a chunk, each ended by CRLF (docker-py parses a
/// body with a length as one JSON document).
pub fn json_messages(messages: Vec<serde_json::Value>) -> Response<Body> {
    use http_body_util::BodyExt;
    let frames = messages.into_iter().map(|message| {
        let mut line = message.to_string().into_bytes();
        line.extend_from_slice(b"\r\n");
        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(line)))
    });
    let mut response = Response::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A streamed body of the agent's JSON messages, each followed by
/// `separator` (Docker ends pull progress lines with CRLF, others with LF).
pub fn json_lines(
    messages: tonic::Streaming<berth_agent_proto::JsonResponse>,
    separator: &'static [u8],
) -> Response<Body> {
    let body = stream_body(messages, move |message| {
        let mut line = message.json;
        line.extend_from_slice(separator);
        Bytes::from(line)
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
