//! A forwarded TCP connection's bytes over its stream to or from the agent.
//!
//! Each direction is a sequence of frames: a `u32` length (big-endian),
//! then that many bytes; a zero length ends the direction (the peer's
//! half-close). The stream cannot carry a half-close itself: hybrid vsock
//! (vhost-device-vsock) turns the host's `shutdown(SHUT_WR)` into the end of
//! the whole connection and does not pass the guest's on at all, so an HTTP
//! client that half-closes, or a server that answers and closes, would
//! hang or lose the answer. Four bytes per read of up to 256 KiB cost
//! nothing measurable. A stream that ends without its end frame was cut
//! off: the caller resets its TCP peer, as a reset it would have seen.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// What one read may take (vsock moves 64 KiB and more per operation
/// several times faster than 4 KiB, networking notes 5.4).
pub const COPY_BUFFER: usize = 256 * 1024;

/// The plain side's bytes, framed, until its EOF (sent as the end frame).
async fn frame_into<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(mut plain: R, mut framed: W) -> io::Result<u64> {
    let mut buf = vec![0u8; 4 + COPY_BUFFER];
    let mut total = 0;
    loop {
        let n = plain.read(&mut buf[4..]).await?;
        buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
        framed.write_all(&buf[..4 + n]).await?;
        if n == 0 {
            framed.flush().await?;
            return Ok(total);
        }
        total += n as u64;
    }
}

/// The framed side's bytes, unframed, until its end frame (passed on as a
/// shutdown of the plain side's write half).
async fn unframe_into<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(framed: R, mut plain: W) -> io::Result<u64> {
    let mut framed = BufReader::with_capacity(COPY_BUFFER, framed);
    let mut total = 0;
    loop {
        let mut len = [0u8; 4];
        framed.read_exact(&mut len).await?;
        let mut left = u32::from_be_bytes(len) as usize;
        if left == 0 {
            plain.shutdown().await?;
            return Ok(total);
        }
        while left > 0 {
            let chunk = framed.fill_buf().await?;
            if chunk.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = chunk.len().min(left);
            plain.write_all(&chunk[..n]).await?;
            framed.consume(n);
            left -= n;
            total += n as u64;
        }
    }
}

/// Copies both ways between a plain connection and its framed stream until
/// both directions have ended; an error in either ends both (bytes moved
/// each way on success).
pub async fn relay<P, F>(plain: &mut P, framed: &mut F) -> io::Result<(u64, u64)>
where
    P: AsyncRead + AsyncWrite + Unpin,
    F: AsyncRead + AsyncWrite + Unpin,
{
    let (plain_read, plain_write) = tokio::io::split(plain);
    let (framed_read, framed_write) = tokio::io::split(framed);
    tokio::try_join!(frame_into(plain_read, framed_write), unframe_into(framed_read, plain_write))
}

/// As [`relay`], for a stream whose first byte from the framed side is an
/// answer still to come (the agent's status of a forwarding stream): the
/// plain side's bytes go out at once, so they travel with the request
/// instead of a round trip after it, and nothing comes back to the plain
/// side until `answer` has accepted that byte, within `wait`.
pub async fn relay_after_answer<P, F, A>(
    plain: &mut P,
    framed: &mut F,
    wait: std::time::Duration,
    answer: A,
) -> io::Result<(u64, u64)>
where
    P: AsyncRead + AsyncWrite + Unpin,
    F: AsyncRead + AsyncWrite + Unpin,
    A: FnOnce(u8) -> io::Result<()>,
{
    let (plain_read, plain_write) = tokio::io::split(plain);
    let (mut framed_read, framed_write) = tokio::io::split(framed);
    let inbound = async move {
        let mut first = [0u8; 1];
        match tokio::time::timeout(wait, framed_read.read_exact(&mut first)).await {
            Ok(read) => read?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
        };
        answer(first[0])?;
        unframe_into(framed_read, plain_write).await
    };
    tokio::try_join!(frame_into(plain_read, framed_write), inbound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// client ⇄ relay ⇄ framed stream ⇄ relay ⇄ server, as host and agent run it.
    fn chain() -> (tokio::io::DuplexStream, tokio::io::DuplexStream, tokio::task::JoinHandle<io::Result<()>>) {
        let (client, mut host_plain) = duplex(1 << 16);
        let (mut host_framed, mut agent_framed) = duplex(1 << 16);
        let (mut agent_plain, server) = duplex(1 << 16);
        let relays = tokio::spawn(async move {
            let (host, agent) =
                tokio::join!(relay(&mut host_plain, &mut host_framed), relay(&mut agent_plain, &mut agent_framed));
            host?;
            agent?;
            Ok(())
        });
        (client, server, relays)
    }

    #[tokio::test]
    async fn half_closes_pass_both_ways() {
        let (mut client, mut server, relays) = chain();
        let big = vec![5u8; 3 * COPY_BUFFER + 17];
        // More than every buffer on the way holds: written while the server reads.
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut request = Vec::new();
        server.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, big, "the client's bytes, then its half-close");
        let mut client = writer.await.unwrap();
        // The server answers after the client's half-close, and closes.
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        relays.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_stream_cut_off_is_an_error_not_an_end() {
        let (mut framed_near, framed_far) = duplex(1 << 16);
        let (mut plain, mut peer) = duplex(1 << 16);
        // Half a frame, then the stream is gone.
        let task = tokio::spawn(async move { relay(&mut plain, &mut framed_near).await });
        let mut far = framed_far;
        far.write_all(&[0, 0, 0, 9, b'x']).await.unwrap();
        drop(far);
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut got = Vec::new();
        let _ = peer.read_to_end(&mut got).await;
        assert_eq!(got, b"x", "what arrived before the cut is delivered");
    }

    fn zero_is_yes(status: u8) -> io::Result<()> {
        match status {
            0 => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused")),
        }
    }

    #[tokio::test]
    async fn bytes_go_out_before_the_answer_and_come_back_only_after_it() {
        let (mut framed_near, mut far) = duplex(1 << 16);
        let (mut plain, mut client) = duplex(1 << 16);
        let task = tokio::spawn(async move {
            relay_after_answer(&mut plain, &mut framed_near, std::time::Duration::from_secs(10), zero_is_yes).await
        });
        client.write_all(b"hi").await.unwrap();
        // The client's bytes are framed out while the answer is still to come.
        let mut frame = [0u8; 6];
        far.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, [0, 0, 0, 2, b'h', b'i']);
        far.write_all(&[0, 0, 0, 0, 3, b'y', b'o', b'u']).await.unwrap();
        let mut reply = [0u8; 3];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"you");
        client.shutdown().await.unwrap();
        far.write_all(&[0, 0, 0, 0]).await.unwrap();
        let mut end = [0u8; 4];
        far.read_exact(&mut end).await.unwrap();
        assert_eq!(end, [0, 0, 0, 0], "the client's half-close");
        assert_eq!(task.await.unwrap().unwrap(), (2, 3));

        // A refusal: the answer's error, and nothing reaches the client.
        let (mut framed_near, mut far) = duplex(1 << 16);
        let (mut plain, mut client) = duplex(1 << 16);
        let task = tokio::spawn(async move {
            relay_after_answer(&mut plain, &mut framed_near, std::time::Duration::from_secs(10), zero_is_yes).await
        });
        far.write_all(&[1, 0, 0, 0, 1, b'z']).await.unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        assert!(got.is_empty(), "{got:?}");
    }
}
