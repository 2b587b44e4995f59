//! `Exec`: run one process in the VM with streamed stdio, optionally on a pty.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth_agent_proto::{exec_input, exec_output, ExecInput, ExecOutput, ExecStart, ExitStatus, WindowSize};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::child_fds;
use crate::reaper::{Exit, Reaper};

/// The environment every process starts from; the client's entries override it.
const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("USER", "root"),
    ("LOGNAME", "root"),
];

/// After the process has exited, how long we keep forwarding output that is
/// still buffered, or written by background children holding the same stdio.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

const CHUNK: usize = 32 * 1024;

pub type OutputSender = mpsc::Sender<Result<ExecOutput, Status>>;

/// Starts the process described by `start` and pumps its stdio between
/// `input` and `output` until it has exited and its output is drained.
/// Where an exec's terminal (`tty`) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// A pty of the agent's own (a command in the VM).
    Agent,
    /// The process allocates it and sends the master over
    /// runtime::TERMINAL_FD (`berth-agent enter`, inside a container).
    FromProcess,
}

/// `input` is the client's stream, or an empty one for the agent's own
/// execs (health probes).
pub async fn run<I>(reaper: &Reaper, start: ExecStart, terminal: Terminal, input: I, output: OutputSender)
where
    I: Stream<Item = Result<ExecInput, Status>> + Send + Unpin + 'static,
{
    let spawned = match spawn(reaper, &start, terminal) {
        Ok(spawned) => spawned,
        Err(err) => {
            // Shell conventions, so `berth shell -- nosuchcmd` behaves like a shell.
            let code = if err.kind() == io::ErrorKind::PermissionDenied { 126 } else { 127 };
            let argv0 = start.argv.first().map(String::as_str).unwrap_or("");
            let msg = format!("berth-agent: {argv0}: {err}\n");
            let _ = output.send(Ok(out(exec_output::Output::Stderr(msg.into_bytes())))).await;
            let _ = output.send(Ok(out(exec_output::Output::Exit(ExitStatus { code, signal: 0 })))).await;
            return;
        }
    };
    let Spawned { pid, exited, stdin, outputs, pty, pid_report } = spawned;
    tracing::debug!(pid, argv = ?start.argv, tty = start.tty, "exec started");
    match pid_report {
        Some(report) => {
            tokio::spawn(forward_reported_pid(report, output.clone()));
        }
        None => {
            let _ = output.send(Ok(out(exec_output::Output::Pid(pid)))).await;
        }
    }

    let mut readers = tokio::task::JoinSet::new();
    for (is_stderr, source) in outputs {
        readers.spawn(forward_output(source, is_stderr, output.clone()));
    }
    let input_task = tokio::spawn(forward_input(input, stdin, pty, pid));

    let exit = tokio::select! {
        exit = exited => exit.unwrap_or(Exit { code: 255, signal: 0 }),
        _ = output.closed() => {
            // The client went away: nobody can see this process any more.
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            input_task.abort();
            return;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async { while readers.join_next().await.is_some() {} }).await;
    readers.abort_all();
    input_task.abort();
    tracing::debug!(pid, ?exit, "exec finished");
    let _ = output.send(Ok(out(exec_output::Output::Exit(ExitStatus { code: exit.code, signal: exit.signal })))).await;
}

fn out(output: exec_output::Output) -> ExecOutput {
    ExecOutput { output: Some(output) }
}

struct Spawned {
    pid: i32,
    exited: tokio::sync::oneshot::Receiver<Exit>,
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// (is_stderr, source)
    outputs: Vec<(bool, Box<dyn AsyncRead + Send + Unpin>)>,
    pty: Option<Arc<Pty>>,
    /// Where `enter` reports the pid of the command it starts in a
    /// container (`pid` is then the helper's own).
    pid_report: Option<OwnedFd>,
}

/// Passes on the pid `enter` reports, if it gets as far as starting the
/// command (a failure before that closes the pipe unwritten).
async fn forward_reported_pid(report: OwnedFd, output: OutputSender) {
    let Ok(mut report) = tokio::net::unix::pipe::Receiver::from_owned_fd(report) else { return };
    let mut pid = [0u8; 4];
    if report.read_exact(&mut pid).await.is_ok() {
        let _ = output.send(Ok(out(exec_output::Output::Pid(i32::from_ne_bytes(pid))))).await;
    }
}

/// Starts the process; in a container (`enter`), with the pipe on which the
/// helper reports the command's pid at runtime::PID_FD.
fn spawn(reaper: &Reaper, start: &ExecStart, terminal: Terminal) -> io::Result<Spawned> {
    if terminal == Terminal::Agent {
        return spawn_command(reaper, start, terminal, |_| {});
    }
    // `enter PLAN`: the plan goes on a descriptor, argv says `-`.
    let mut argv = start.argv.clone();
    let plan = match argv.get_mut(2) {
        Some(plan) => plan_memfd(&std::mem::replace(plan, "-".into()))?,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "an exec in a container without a plan")),
    };
    let start = ExecStart { argv, ..start.clone() };
    let (ours, theirs) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (theirs, plan) = (child_fds::above_fixed(theirs)?, child_fds::above_fixed(plan)?);
    let (theirs_fd, plan_fd) = (theirs.as_raw_fd(), plan.as_raw_fd());
    let with_report = move |cmd: &mut Command| {
        // SAFETY: the closure only dup2s descriptor numbers captured by
        // value, open until after the spawn (child_fds::place).
        unsafe {
            cmd.pre_exec(move || {
                child_fds::place(&[
                    (theirs_fd, berth_engine::runtime::PID_FD),
                    (plan_fd, berth_engine::runtime::PLAN_FD),
                ])
            });
        }
    };
    let spawned = spawn_command(reaper, &start, terminal, with_report);
    // Our copies close: a helper that fails before writing its pid reads
    // as the end of the pipe.
    drop((theirs, plan));
    Ok(Spawned { pid_report: Some(ours), ..spawned? })
}

/// The plan in a sealed memory file, read from its start by `enter`.
fn plan_memfd(plan: &str) -> io::Result<OwnedFd> {
    use std::io::{Seek, Write as _};
    let name = c"berth-exec-plan";
    // SAFETY: memfd_create with a NUL-terminated name and flags; the result
    // is checked before it is wrapped.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(plan.as_bytes())?;
    file.rewind()?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl with integer arguments on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

fn spawn_command(
    reaper: &Reaper,
    start: &ExecStart,
    terminal: Terminal,
    prepare: impl FnOnce(&mut Command),
) -> io::Result<Spawned> {
    let (program, args) =
        start.argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(BASE_ENV.iter().copied());
    if start.tty {
        cmd.env("TERM", "xterm");
    }
    for entry in &start.env {
        match entry.split_once('=') {
            Some((key, value)) => cmd.env(key, value),
            None => cmd.env_remove(entry),
        };
    }
    cmd.current_dir(if start.cwd.is_empty() { "/" } else { &start.cwd });
    prepare(&mut cmd);

    if start.tty && terminal == Terminal::FromProcess {
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // A process that fails before sending must not hang us.
        nix::sys::socket::setsockopt(
            &ours,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(30, 0),
        )
        .map_err(io::Error::from)?;
        let theirs = child_fds::above_fixed(theirs)?;
        let theirs_fd = theirs.as_raw_fd();
        // Its own failures (a missing command, say) come on stderr, before
        // or instead of the terminal: shown in the terminal's stream.
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: the closure only dup2s the descriptor number captured by
        // value, open until after the spawn (child_fds::place).
        unsafe {
            cmd.pre_exec(move || child_fds::place(&[(theirs_fd, berth_engine::runtime::TERMINAL_FD)]));
        }
        let (mut child, exited) = reaper.spawn(&mut cmd)?;
        let pid = child.id() as i32;
        drop(cmd);
        drop(theirs); // so a process that dies before sending reads as EOF
        let errors = tokio::process::ChildStderr::from_std(child.stderr.take().expect("piped"))?;
        let Ok(master) = berth_engine::runtime::receive_fd(&ours) else {
            // It failed before making one: its message is all there is.
            return Ok(Spawned {
                pid,
                exited,
                stdin: None,
                outputs: vec![(false, Box::new(errors))],
                pty: None,
                pid_report: None,
            });
        };
        let master = Arc::new(Pty::new(master)?);
        return Ok(Spawned {
            pid,
            exited,
            stdin: Some(Box::new(PtyIo(master.clone()))),
            outputs: vec![(false, Box::new(PtyIo(master.clone()))), (false, Box::new(errors))],
            pty: Some(master),
            pid_report: None,
        });
    }
    if start.tty {
        let size = start.size.unwrap_or(WindowSize { rows: 24, cols: 80 });
        let pty = nix::pty::openpty(Some(&winsize(size)), None).map_err(io::Error::from)?;
        let slave = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone()?)).stdout(Stdio::from(slave.try_clone()?)).stderr(Stdio::from(slave));
        // SAFETY: the closure runs in the forked child before exec and calls
        // only async-signal-safe functions (setsid, ioctl).
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (child, exited) = reaper.spawn(&mut cmd)?;
        let pid = child.id() as i32;
        drop(cmd); // closes our copies of the slave, so reads see EOF when the process is gone
        let master = Arc::new(Pty::new(pty.master)?);
        Ok(Spawned {
            pid,
            exited,
            stdin: Some(Box::new(PtyIo(master.clone()))),
            outputs: vec![(false, Box::new(PtyIo(master.clone())))],
            pty: Some(master),
            pid_report: None,
        })
    } else {
        cmd.stdin(if start.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setsid is async-signal-safe; its own session lets us signal
        // the whole process group when the client disconnects.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
        }
        let (mut child, exited) = reaper.spawn(&mut cmd)?;
        let pid = child.id() as i32;
        let stdin = match child.stdin.take() {
            Some(stdin) => {
                Some(Box::new(tokio::process::ChildStdin::from_std(stdin)?) as Box<dyn AsyncWrite + Send + Unpin>)
            }
            None => None,
        };
        let stdout = tokio::process::ChildStdout::from_std(child.stdout.take().expect("piped"))?;
        let stderr = tokio::process::ChildStderr::from_std(child.stderr.take().expect("piped"))?;
        Ok(Spawned {
            pid,
            exited,
            stdin,
            outputs: vec![(false, Box::new(stdout)), (true, Box::new(stderr))],
            pty: None,
            pid_report: None,
        })
    }
}

async fn forward_output(mut source: Box<dyn AsyncRead + Send + Unpin>, is_stderr: bool, output: OutputSender) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match source.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            // A pty master reads EIO once the last slave fd is closed: that is EOF.
            Err(err) if err.raw_os_error() == Some(libc::EIO) => return,
            Err(err) => {
                tracing::debug!(%err, "exec output read failed");
                return;
            }
        };
        let chunk = buf[..n].to_vec();
        let msg = if is_stderr { exec_output::Output::Stderr(chunk) } else { exec_output::Output::Stdout(chunk) };
        if output.send(Ok(out(msg))).await.is_err() {
            return;
        }
    }
}

async fn forward_input(
    mut input: impl Stream<Item = Result<ExecInput, Status>> + Unpin,
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pty: Option<Arc<Pty>>,
    pid: i32,
) {
    loop {
        let msg = match input.next().await {
            Some(Ok(msg)) => msg,
            // End of the client's stream (or a broken one): no more stdin.
            None | Some(Err(_)) => {
                close_stdin(&mut stdin, pty.is_some()).await;
                return;
            }
        };
        match msg.input {
            Some(exec_input::Input::Stdin(data)) => {
                if let Some(writer) = stdin.as_mut() {
                    if writer.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Some(exec_input::Input::CloseStdin(_)) => close_stdin(&mut stdin, pty.is_some()).await,
            Some(exec_input::Input::Resize(size)) => {
                if let Some(pty) = &pty {
                    pty.resize(size);
                }
            }
            Some(exec_input::Input::Signal(signo)) => match Signal::try_from(signo) {
                Ok(sig) => {
                    let _ = kill(Pid::from_raw(pid), sig);
                }
                Err(_) => tracing::warn!(signo, "ignoring unknown signal"),
            },
            Some(exec_input::Input::Start(_)) | None => {
                tracing::warn!("ignoring unexpected exec input")
            }
        }
    }
}

async fn close_stdin(stdin: &mut Option<Box<dyn AsyncWrite + Send + Unpin>>, is_pty: bool) {
    if let Some(mut writer) = stdin.take() {
        if is_pty {
            // A terminal cannot be half-closed; EOT is what a user's ^D sends.
            let _ = writer.write_all(&[4]).await;
        } else {
            let _ = writer.shutdown().await;
        }
    }
}

fn winsize(size: WindowSize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: size.rows.min(u16::MAX as u32) as u16,
        ws_col: size.cols.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// The master side of a pty, non-blocking and driven by the tokio reactor.
struct Pty(AsyncFd<OwnedFd>);

impl Pty {
    fn new(master: OwnedFd) -> io::Result<Pty> {
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        // SAFETY: `master` is an OwnedFd moved into the AsyncFd: it stays open
        // and keeps its number until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
        Ok(Pty(fd))
    }

    fn resize(&self, size: WindowSize) {
        let ws = winsize(size);
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which
        // points at a live, properly laid out struct for the whole call.
        unsafe { libc::ioctl(self.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// AsyncRead/AsyncWrite over a shared pty master (one reader, one writer).
struct PtyIo(Arc<Pty>);

impl AsyncRead for PtyIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0 .0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| nix::unistd::read(fd, unfilled).map_err(io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return std::task::Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        loop {
            let mut guard = std::task::ready!(self.0 .0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd, data).map_err(io::Error::from)) {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
