//! Linux and macOS.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// An exclusive lock on a file, held until dropped (or the process dies:
/// the kernel releases it, so a stale lock cannot outlive a crash).
pub struct ExclusiveLock {
    _held: Flock<File>,
}

/// Locks `file` without blocking; None when another process holds it.
pub fn try_lock_exclusive(file: File) -> io::Result<Option<ExclusiveLock>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(ExclusiveLock { _held: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, err)) => Err(err.into()),
    }
}

/// Starts `cmd` in a session of its own: out of the terminal's job control,
/// so no SIGHUP or SIGINT from it reaches the daemon.
pub fn detach_from_terminal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
}

/// Spawns a process that dies with the daemon, so a killed daemon leaves no
/// VM or helper behind. Linux: PR_SET_PDEATHSIG. macOS has no equivalent;
/// there `kill_on_drop` covers every exit of the daemon but SIGKILL, after
/// which `berth start` finds the leftovers in the state file and kills them.
pub fn spawn_owned(cmd: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and only takes integers. The daemon
    // spawns from its single runtime thread, which lives as long as the
    // process, so "parent death" means the daemon's death.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "no such pid"))?;
    kill(Pid::from_raw(pid), signal).map_err(io::Error::from)
}

/// Asks a process to stop (SIGTERM): the daemon shuts its VM down cleanly.
pub fn request_stop(pid: u32) -> io::Result<()> {
    signal(pid, Signal::SIGTERM)
}

/// Ends a process at once.
pub fn kill_now(pid: u32) -> io::Result<()> {
    signal(pid, Signal::SIGKILL)
}

/// The command line of a running process, arguments joined by spaces; None
/// when it is gone or cannot be read.
pub fn command_line(pid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(String::from_utf8_lossy(&bytes).replace('\0', " "))
    }
    #[cfg(not(target_os = "linux"))]
    {
        // No /proc: ps(1) reads the arguments with sysctl(KERN_PROCARGS2).
        let out = std::process::Command::new("ps").args(["-ww", "-o", "command=", "-p", &pid.to_string()]).output();
        out.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }
}

/// Whether a directory entry is a socket (what a dead daemon leaves in run/).
pub fn is_socket(file_type: &std::fs::FileType) -> bool {
    std::os::unix::fs::FileTypeExt::is_socket(file_type)
}

/// The signals that stop the daemon: SIGTERM (`berth stop`) and SIGINT (a
/// foreground `berth daemon`). SIGHUP is caught and ignored: the daemon
/// outlives the terminal that started it.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    _hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            _hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves at the next stop request.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Points stdout at /dev/null, so that nothing more reaches whoever reads it
/// (`berth start` reads exactly one line). Call with stdout's lock held.
pub fn detach_stdout() {
    if let Ok(devnull) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 while `devnull` is open; the caller holds
        // stdout's lock, so no Rust writer races it.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 1) };
    }
}

/// Default SIGPIPE: a closed pipe ends the CLI quietly, as it does every
/// Unix tool (see main.rs for why).
pub fn restore_default_sigpipe() {
    // SAFETY: called at the start of main, before any thread exists; SIG_DFL
    // installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Binds a unix socket that only its owner may connect to (the Docker API
/// drives the engine). A unix socket file takes the mode of the socket's
/// inode less the umask at bind(2), so on Linux the mode is set on the
/// unbound socket: a chmod after bind would leave a moment in which the file
/// has the umask's mode, and changing the umask would change it for every
/// thread of the daemon.
pub fn bind_private_socket(path: &Path) -> io::Result<tokio::net::UnixListener> {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockType, UnixAddr};
    let _ = std::fs::remove_file(path);
    #[cfg(target_os = "linux")]
    let fd = {
        use nix::sys::socket::SockFlag;
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
        fd
    };
    // macOS has neither SOCK_CLOEXEC nor a mode on an unbound socket: set
    // the flags with fcntl and the mode right after bind. That moment is
    // harmless because the socket lives in the run directory, which is
    // 0700 and checked to be ours (private_fs.rs).
    #[cfg(not(target_os = "linux"))]
    let fd = {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
        let fd = socket::socket(AddressFamily::Unix, SockType::Stream, socket::SockFlag::empty(), None)?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        fd
    };
    socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

/// Whether a bind failed because the host has no such address family (no
/// IPv6): EAFNOSUPPORT or EADDRNOTAVAIL.
pub fn is_missing_address_family(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL))
}

/// A connection's stream, as the API server serves it.
pub type ApiStream = tokio::net::UnixStream;

/// The socket a request arrived on, in its extensions: a hijacked stream
/// asks it whether the client is gone (see [`peer_hung_up`]). Only valid
/// while the connection lives, which the upgraded stream that uses it
/// guarantees.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(std::os::fd::RawFd);

impl ConnectionSocket {
    pub fn of_tcp(stream: &tokio::net::TcpStream) -> Option<ConnectionSocket> {
        Some(ConnectionSocket(std::os::fd::AsRawFd::as_raw_fd(stream)))
    }
}

/// The API's unix socket (mode 0600, see [`bind_private_socket`]); the
/// socket file is removed when this is dropped.
pub struct ApiListener {
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
}

impl ApiListener {
    pub fn bind(address: &super::api_address::ApiAddress) -> io::Result<ApiListener> {
        let super::api_address::ApiAddress::Unix(path) = address else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("{address}: named pipes are Windows'")));
        };
        Ok(ApiListener { listener: bind_private_socket(path)?, path: path.clone() })
    }

    /// The next connected client.
    pub async fn accept(&mut self) -> io::Result<(ApiStream, Option<ConnectionSocket>)> {
        let (stream, _) = self.listener.accept().await?;
        let socket = ConnectionSocket(std::os::fd::AsRawFd::as_raw_fd(&stream));
        Ok((stream, Some(socket)))
    }
}

impl Drop for ApiListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Resolves once the client has closed its connection in both directions.
///
/// After the client's input ended, reading says nothing more, and an idle
/// container writes nothing that could fail: without this, a client gone
/// from an idle attach would hold the agent's attach until the container
/// next writes. A unix socket reports the peer's close as a hang-up
/// (EPOLLHUP), distinct from a half-close. Over TCP a close looks like a
/// half-close until a write fails, so there this never resolves and the
/// output's next write ends the connection (as with dockerd).
pub async fn peer_hung_up(socket: Option<ConnectionSocket>) {
    use std::os::fd::BorrowedFd;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    let Some(ConnectionSocket(fd)) = socket else { return std::future::pending().await };
    // SAFETY: `fd` is the connection's socket, open while the caller holds
    // the upgraded connection (it does, for as long as this future lives);
    // borrowing it only to duplicate it.
    let duplicate = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
    // A duplicate of our own for the reactor: the connection's descriptor
    // is registered already, by its stream.
    let registered = duplicate.map_err(|err| err.to_string()).and_then(|fd| {
        // SAFETY: the AsyncFd owns this OwnedFd, which stays open and the
        // same descriptor until the AsyncFd is dropped.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|err| err.to_string())
    });
    let watched = match registered {
        Ok(watched) => watched,
        Err(err) => {
            tracing::debug!(%err, "cannot watch the client connection");
            return std::future::pending().await;
        }
    };
    loop {
        let Ok(mut guard) = watched.ready(Interest::WRITABLE).await else { return std::future::pending().await };
        if guard.ready().is_write_closed() {
            return;
        }
        // Wait for the socket's next change of state.
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.lock");
        let open = || std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).unwrap();
        let first = try_lock_exclusive(open()).unwrap().expect("a free lock");
        assert!(try_lock_exclusive(open()).unwrap().is_none(), "the lock is held");
        drop(first);
        assert!(try_lock_exclusive(open()).unwrap().is_some(), "the lock was released");
    }

    #[test]
    fn reads_a_processes_command_line() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // Right after the spawn the kernel may still be switching the child to its new program.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut line = String::new();
        while line.trim().is_empty() && std::time::Instant::now() < deadline {
            line = command_line(child.id()).expect("a running child's command line");
        }
        assert_eq!(line.trim(), "sleep 30");
        kill_now(child.id()).unwrap();
        child.wait().unwrap();
        assert_eq!(command_line(child.id()), None, "a reaped process has none");
    }
}
