//! A container's output and input: logs, attach (with stdin) and resize.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::LogEntry;
use berth_engine::container::Status;
use berth_engine::logfile::{self, LogCursor, Record};
use berth_engine::shim;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use crate::error::AgentError;

use super::sys::register;
use super::{internal, Containers, Entry};

impl Containers {
    /// The recorded output, filtered as `docker logs` asks; with `follow`,
    /// keeps sending until the container stops.
    pub async fn logs(
        self: &Arc<Self>,
        req: berth_agent_proto::ContainerLogsRequest,
    ) -> Result<mpsc::Receiver<LogEntry>, AgentError> {
        let entry = self.lookup(&req.id).await?;
        let wanted = move |r: &Record| {
            let stream_ok = match r.stream {
                logfile::Stream::Stdout => req.stdout,
                logfile::Stream::Stderr => req.stderr,
            };
            stream_ok
                && (req.since_ns <= 0 || r.time_ns >= req.since_ns)
                && (req.until_ns <= 0 || r.time_ns <= req.until_ns)
        };
        let dir = entry.dir.clone();
        let mut cursor = LogCursor::at_end(dir.path());
        let records = tokio::task::spawn_blocking(move || logfile::read_all(dir.path()))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?
            .map_err(internal("reading the log"))?;
        let mut records: Vec<Record> = records.into_iter().filter(|r| wanted(r)).collect();
        if req.tail >= 0 {
            records = tail_lines(records, req.tail as usize);
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for record in records {
                if tx.send(log_entry(record)).await.is_err() {
                    return;
                }
            }
            if req.follow && entry.state().status.is_running() {
                follow(&entry, &mut cursor, &tx, wanted, false).await;
            }
        });
        Ok(rx)
    }

    /// Streams the container's output from now on (from the log's start
    /// with `logs`), and forwards `stdin` (the rest of the call's input,
    /// ended by closing the channel), until the container stops.
    pub async fn attach(
        self: &Arc<Self>,
        start: berth_agent_proto::AttachStart,
        stdin: Option<mpsc::Receiver<berth_agent_proto::AttachInput>>,
    ) -> Result<mpsc::Receiver<LogEntry>, AgentError> {
        let entry = self.lookup(&start.id).await?;
        let mut cursor = LogCursor::at_end(entry.dir.path());
        let replay = if start.logs {
            let dir = entry.dir.clone();
            tokio::task::spawn_blocking(move || logfile::read_all(dir.path()))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let (want_out, want_err) = (start.stdout, start.stderr);
        let wanted = move |r: &Record| match r.stream {
            logfile::Stream::Stdout => want_out,
            logfile::Stream::Stderr => want_err,
        };
        if let Some(mut input) = stdin {
            let entry = entry.clone();
            tokio::spawn(async move { forward_stdin(&entry, &mut input).await });
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for record in replay.into_iter().filter(|r| wanted(r)) {
                if tx.send(log_entry(record)).await.is_err() {
                    return;
                }
            }
            follow(&entry, &mut cursor, &tx, wanted, true).await;
        });
        Ok(rx)
    }

    pub async fn resize(self: &Arc<Self>, name: &str, rows: u16, cols: u16) -> Result<(), AgentError> {
        let entry = self.lookup(name).await?;
        if !entry.state().status.is_running() {
            let id = entry.snapshot().id;
            return Err(AgentError::conflict(format!("Container {id} is not running")));
        }
        // Containers without a terminal have no resize FIFO; Docker ignores
        // their resizes too.
        let _ = shim::request_resize(entry.dir.path(), rows, cols);
        Ok(())
    }
}

/// The last `n` lines of output, as `docker logs --tail` counts them.
fn tail_lines(records: Vec<Record>, n: usize) -> Vec<Record> {
    let mut lines: Vec<Record> = Vec::new();
    for record in records {
        for piece in record.data.split_inclusive(|b| *b == b'\n') {
            match lines.last_mut() {
                Some(last) if !last.data.ends_with(b"\n") && last.stream == record.stream => {
                    last.data.extend_from_slice(piece)
                }
                _ => lines.push(Record { stream: record.stream, time_ns: record.time_ns, data: piece.to_vec() }),
            }
        }
    }
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect()
}

fn log_entry(record: Record) -> LogEntry {
    LogEntry { stream: record.stream as u32, time_ns: record.time_ns, data: record.data }
}

/// Sends new log records until the container has stopped and its output is
/// drained. `wait_for_start`: a container that has not started yet will
/// (attach before start, as `docker run` does).
async fn follow(
    entry: &Arc<Entry>,
    cursor: &mut LogCursor,
    tx: &mpsc::Sender<LogEntry>,
    wanted: impl Fn(&Record) -> bool,
    wait_for_start: bool,
) {
    let mut changed = entry.changed.subscribe();
    let watcher = DirWatcher::new(entry.dir.path());
    let mut started = entry.state().status.is_running();
    loop {
        let status = entry.state().status;
        let removed = changed.borrow_and_update().is_none();
        started |= status.is_running();
        let records = cursor.read_new().unwrap_or_default();
        for record in records.into_iter().filter(|r| wanted(r)) {
            if tx.send(log_entry(record)).await.is_err() {
                return;
            }
        }
        let waiting_for_start = wait_for_start && !started && status == Status::Created;
        if removed || (!status.is_running() && !waiting_for_start) {
            return;
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = wait_for_change(&watcher) => {}
            () = tx.closed() => return,
        }
    }
}

/// inotify on a container directory: the log growing, exit.json appearing.
struct DirWatcher {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl DirWatcher {
    fn new(dir: &Path) -> DirWatcher {
        // SAFETY: inotify_init1 takes flags only.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return DirWatcher { fd: None };
        }
        // SAFETY: the kernel just returned this descriptor; we own it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
        let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO;
        // SAFETY: path is NUL-terminated and outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return DirWatcher { fd: None };
        }
        DirWatcher { fd: register(fd) }
    }
}

async fn wait_for_change(watcher: &DirWatcher) {
    match &watcher.fd {
        Some(fd) => {
            if let Ok(mut guard) = fd.readable().await {
                let mut buf = [0u8; 4096];
                // Drain the events: which file changed does not matter.
                // SAFETY: buf is valid for its length.
                while unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
                guard.clear_ready();
            }
        }
        // No inotify: poll.
        None => tokio::time::sleep(Duration::from_millis(50)).await,
    }
}

/// Copies attach input to the container's stdin FIFO once it runs.
async fn forward_stdin(entry: &Arc<Entry>, input: &mut mpsc::Receiver<berth_agent_proto::AttachInput>) {
    use berth_agent_proto::attach_input::Input;
    use tokio::io::AsyncWriteExt;
    let mut pending: Vec<u8> = Vec::new();
    let mut fifo: Option<tokio::net::unix::pipe::Sender> = None;
    let mut changed = entry.changed.subscribe();
    let path = entry.dir.stdin_fifo();
    loop {
        if fifo.is_none() && entry.state().status.is_running() {
            // Opening for writing fails (ENXIO) until the shim has it open.
            if let Ok(sender) = tokio::net::unix::pipe::OpenOptions::new().open_sender(&path) {
                fifo = Some(sender);
            }
        }
        if let (Some(sender), false) = (fifo.as_mut(), pending.is_empty()) {
            if sender.write_all(&pending).await.is_err() {
                return;
            }
            pending.clear();
        }
        tokio::select! {
            message = input.recv() => match message {
                Some(berth_agent_proto::AttachInput { input: Some(Input::Stdin(data)) }) => pending.extend(data),
                Some(berth_agent_proto::AttachInput { input: Some(Input::CloseStdin(true)) }) | None => {
                    // Deliver what is buffered, then close (EOF for StdinOnce).
                    if !pending.is_empty() {
                        wait_running(entry, &mut changed).await;
                        if let Ok(mut sender) = tokio::net::unix::pipe::OpenOptions::new().open_sender(&path) {
                            let _ = sender.write_all(&pending).await;
                        }
                    }
                    return;
                }
                Some(_) => {}
            },
            _ = changed.changed(), if fifo.is_none() => {
                if changed.borrow().is_none() || !entry.state().status.is_running() && entry.state().status != Status::Created {
                    return;
                }
            }
        }
    }
}

async fn wait_running(entry: &Entry, changed: &mut watch::Receiver<Option<u64>>) {
    for _ in 0..100 {
        if entry.state().status.is_running() {
            // Give the shim a moment to open the FIFO.
            tokio::time::sleep(Duration::from_millis(5)).await;
            return;
        }
        if tokio::time::timeout(Duration::from_millis(100), changed.changed()).await.is_ok_and(|r| r.is_err()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: logfile::Stream, time_ns: i64, data: &str) -> Record {
        Record { stream, time_ns, data: data.as_bytes().to_vec() }
    }

    fn texts(records: &[Record]) -> Vec<&str> {
        records.iter().map(|r| std::str::from_utf8(&r.data).unwrap()).collect()
    }

    #[test]
    fn tail_counts_lines_not_writes() {
        use logfile::Stream::{Stderr, Stdout};
        let records = vec![
            record(Stdout, 1, "one\ntwo\nthr"),
            record(Stdout, 2, "ee\n"),
            record(Stderr, 3, "err\n"),
            record(Stdout, 4, "four"),
        ];
        let last = tail_lines(records.clone(), 3);
        assert_eq!(texts(&last), ["three\n", "err\n", "four"], "a line split over writes is one line");
        assert_eq!(last[0].time_ns, 1, "a joined line keeps its first write's time");
        assert!(tail_lines(records.clone(), 0).is_empty());
        assert_eq!(tail_lines(records, 100).len(), 5);
    }

    #[test]
    fn tail_does_not_join_lines_of_different_streams() {
        use logfile::Stream::{Stderr, Stdout};
        let records = vec![record(Stdout, 1, "out"), record(Stderr, 2, "err\n")];
        assert_eq!(texts(&tail_lines(records, 2)), ["out", "err\n"]);
    }
}
