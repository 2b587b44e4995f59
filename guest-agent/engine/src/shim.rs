//! The per-container supervisor ("shim", as containerd calls it).
//!
//! `berth-agent shim DIR` is started by the agent for each container start.
//! It is the parent of the container's first process and owns its stdio:
//! output goes to the container log (`logfile`), input comes from a FIFO the
//! agent writes, terminal resizes from another FIFO. When the process exits
//! the shim records how (exit.json, atomically) and exits itself. The agent
//! holds no state a container depends on: a restarted agent re-adopts running
//! containers from the files in DIR (it watches the shim with a pidfd).
//!
//! Single-threaded and blocking (poll(2)) on purpose: `runtime::launch`
//! forks, and a shim costs ~1 MiB per container.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::logfile::{LogWriter, Stream, LOG_FILE};
use crate::runtime::{self, LaunchConfig, PipeStdio, Stdio};

use crate::container_dir::{EXIT_FILE, RESIZE_FIFO, SHIM_CONFIG, SPEC_FILE, STDIN_FIFO};
/// The file descriptor on which the shim reports its `Ready` line.
pub const READY_FD: RawFd = 3;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShimConfig {
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// The container reads stdin from STDIN_FIFO (else /dev/null).
    pub open_stdin: bool,
    /// The first writer closing the FIFO closes the container's stdin.
    pub stdin_once: bool,
    /// The unified cgroup hierarchy's root and the container's cgroup.
    pub cgroup_root: Option<PathBuf>,
    pub cgroup: Option<PathBuf>,
    /// Docker's default seccomp profile (off for `seccomp=unconfined` and
    /// privileged containers).
    pub seccomp: bool,
    #[serde(default)]
    pub log_limits: crate::logfile::LogLimits,
    /// The agent passed the loaded device filter for the spec's rules on
    /// DEVICE_FILTER_FD (else the shim loads it).
    #[serde(default)]
    pub device_filter_passed: bool,
}

/// Where the agent passes a loaded device filter (see devices.rs).
pub const DEVICE_FILTER_FD: std::os::fd::RawFd = 4;

/// The shim's first (and only) line on READY_FD.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub pid: Option<i32>,
    pub error: Option<String>,
}

/// How the container's process ended, as the shim saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub signal: i32,
    pub oom_killed: bool,
    pub finished_at_ns: i64,
}

pub fn read_exit(dir: &Path) -> Option<ExitRecord> {
    serde_json::from_slice(&std::fs::read(dir.join(EXIT_FILE)).ok()?).ok()
}

/// The shim's main. Returns the process exit code.
pub fn main(dir: &Path) -> i32 {
    // SAFETY: READY_FD was opened for us by the agent and nothing else in
    // this process owns it.
    let ready = unsafe { std::fs::File::from_raw_fd(READY_FD) };
    // Not to be inherited by the container.
    let _ = nix::fcntl::fcntl(&ready, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    match start(dir) {
        Ok(running) => {
            report(&ready, &Ready { pid: Some(running.pid), error: None });
            let exit = running.supervise();
            let exit_json = serde_json::to_vec(&exit).unwrap_or_default();
            // The agent takes the exit from the pipe it started us with: that
            // needs no disk, so a full data disk still reports the real code.
            // The file is for an agent that restarted since (local backend)
            // and re-adopted us. Not synced: the agent records the exit in
            // the container's (durable) record at once; a power loss before
            // that leaves the container "exited (255)", as Docker shows
            // after a crash.
            report(&ready, &exit);
            if let Err(err) = crate::durable::replace(&dir.join(EXIT_FILE), &exit_json, false) {
                eprintln!("berth shim: recording the exit in {}: {err}", dir.display());
            }
            0
        }
        Err(message) => {
            report(&ready, &Ready { pid: None, error: Some(message) });
            1
        }
    }
}

/// One JSON line to the agent on the ready pipe.
fn report(mut ready: &std::fs::File, message: &impl Serialize) {
    let mut line = serde_json::to_vec(message).unwrap_or_default();
    line.push(b'\n');
    let _ = ready.write_all(&line);
}

struct Running {
    pid: i32,
    pidfd: OwnedFd,
    config: ShimConfig,
    dir: PathBuf,
    log: LogWriter,
    /// stdout and stderr (pipes), or the terminal's master alone.
    outputs: Vec<(OwnedFd, Stream)>,
    /// Where stdin goes: the stdin pipe or the terminal's master.
    input: Option<OwnedFd>,
    stdin_fifo: Option<OwnedFd>,
    resize_fifo: Option<OwnedFd>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

fn set_nonblocking(fd: &impl AsFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK));
    }
}

fn open_fifo(path: &Path, flags: nix::fcntl::OFlag) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(path, flags | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

fn start(dir: &Path) -> Result<Running, String> {
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("reading {name}: {e}"));
    let config: ShimConfig = serde_json::from_slice(&read(SHIM_CONFIG)?).map_err(|e| format!("{SHIM_CONFIG}: {e}"))?;
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&read(SPEC_FILE)?).map_err(|e| format!("{SPEC_FILE}: {e}"))?;
    // SAFETY: setsid takes no arguments: the shim leaves the agent's session
    // so terminal signals aimed at the agent never reach it.
    unsafe { libc::setsid() };
    // A half-read attach must not kill the shim.
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };

    let made_cgroup = RemovedUnlessStarted(config.cgroup.clone());
    if let (Some(root), Some(cgroup)) = (&config.cgroup_root, &config.cgroup) {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        crate::cgroup::create(root, cgroup, resources).map_err(|e| e.to_string())?;
        if let Some(rules) = resources.and_then(|r| r.devices().as_ref()) {
            let attached = if config.device_filter_passed {
                // SAFETY: the agent put the program at DEVICE_FILTER_FD for
                // us; nothing else in this process owns that descriptor.
                let prog = unsafe { std::os::fd::OwnedFd::from_raw_fd(DEVICE_FILTER_FD) };
                crate::devices::attach(cgroup, &prog)
            } else {
                crate::devices::apply(cgroup, rules)
            };
            attached.map_err(|e| e.to_string())?;
        }
    }
    let seccomp = if config.seccomp {
        let caps = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().clone())
            .unwrap_or_default();
        Some(crate::seccomp::docker_default(&caps).map_err(|e| format!("seccomp: {e}"))?)
    } else {
        None
    };
    let log = LogWriter::open(&dir.join(LOG_FILE), config.log_limits)
        .map_err(|e| format!("opening the container log: {e}"))?;

    let (stdio, outputs, input) = if config.tty {
        (Stdio::Terminal { rows: config.rows.max(1), cols: config.cols.max(1) }, Vec::new(), None)
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin, input) = if config.open_stdin {
            let (in_r, in_w) = pipe()?;
            (in_r, Some(in_w))
        } else {
            let null = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("opening /dev/null: {e}"))?;
            (null, None)
        };
        (
            Stdio::Pipes(PipeStdio { stdin, stdout: out_w, stderr: err_w }),
            vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
            input,
        )
    };
    let stdin_fifo =
        if config.open_stdin { Some(open_fifo(&dir.join(STDIN_FIFO), nix::fcntl::OFlag::O_RDONLY)?) } else { None };
    let resize_fifo =
        if config.tty { Some(open_fifo(&dir.join(RESIZE_FIFO), nix::fcntl::OFlag::O_RDWR)?) } else { None };

    let launched = runtime::launch(LaunchConfig {
        spec: &spec,
        cgroup: config.cgroup.as_deref(),
        seccomp: seccomp.as_ref(),
        stdio,
    })
    .map_err(|e| e.to_string())?;
    let (outputs, input) = match launched.terminal {
        Some(master) => {
            let input = master.try_clone().map_err(|e| format!("duplicating the terminal: {e}"))?;
            (vec![(master, Stream::Stdout)], if config.open_stdin { Some(input) } else { None })
        }
        None => (outputs, input),
    };
    for (fd, _) in &outputs {
        set_nonblocking(fd);
    }
    if let Some(fd) = &input {
        set_nonblocking(fd);
    }
    // SAFETY: pidfd_open takes a pid and flags; the child is ours and not
    // yet reaped, so the pid cannot have been reused.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, launched.pid, 0) };
    if pidfd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor; we own it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    made_cgroup.keep();
    Ok(Running {
        pid: launched.pid,
        pidfd,
        config,
        dir: dir.to_path_buf(),
        log,
        outputs,
        input,
        stdin_fifo,
        resize_fifo,
    })
}

/// The container's cgroup while its start may still fail: a step that fails
/// after the cgroup was made removes it (with the device filter attached to
/// it), so a failed start leaves no empty cgroup behind.
struct RemovedUnlessStarted(Option<PathBuf>);

impl RemovedUnlessStarted {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemovedUnlessStarted {
    fn drop(&mut self) {
        if let Some(cgroup) = self.0.take() {
            crate::cgroup::remove(&cgroup);
        }
    }
}

impl Running {
    /// Copies output to the log and input to the container until it exits.
    fn supervise(mut self) -> ExitRecord {
        let mut pending_input: Vec<u8> = Vec::new();
        let mut exited = false;
        let mut drain_deadline: Option<Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if exited {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
                if self.outputs.is_empty() || Instant::now() > deadline {
                    break;
                }
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let poll = |fd: RawFd, events: libc::c_short| libc::pollfd { fd, events, revents: 0 };
            for (fd, _) in &self.outputs {
                fds.push(poll(fd.as_raw_fd(), libc::POLLIN));
            }
            let n_out = fds.len();
            let stdin_at = self.stdin_fifo.as_ref().filter(|_| pending_input.is_empty()).map(|fd| {
                fds.push(poll(fd.as_raw_fd(), libc::POLLIN));
                fds.len() - 1
            });
            let input_at = self.input.as_ref().filter(|_| !pending_input.is_empty()).map(|fd| {
                fds.push(poll(fd.as_raw_fd(), libc::POLLOUT));
                fds.len() - 1
            });
            let resize_at = self.resize_fifo.as_ref().map(|fd| {
                fds.push(poll(fd.as_raw_fd(), libc::POLLIN));
                fds.len() - 1
            });
            let pid_at = (!exited).then(|| {
                fds.push(poll(self.pidfd.as_raw_fd(), libc::POLLIN));
                fds.len() - 1
            });
            let timeout = if exited { 100 } else { -1 };
            // SAFETY: fds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            // Output first: it must be in the log before the exit is recorded.
            let mut closed = Vec::new();
            for (i, (fd, stream)) in self.outputs.iter().enumerate().take(n_out) {
                if fds[i].revents == 0 {
                    continue;
                }
                match nix::unistd::read(fd, &mut buf) {
                    Ok(0) => closed.push(i),
                    Ok(n) => {
                        if let Err(err) = self.log.append(*stream, &buf[..n]) {
                            eprintln!("berth shim: writing the log: {err}");
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    // EIO: the terminal's last holder is gone.
                    Err(_) => closed.push(i),
                }
            }
            for i in closed.into_iter().rev() {
                self.outputs.remove(i);
            }
            if stdin_at.is_some_and(|i| fds[i].revents != 0) {
                self.read_stdin(&mut buf, &mut pending_input);
            }
            if input_at.is_some_and(|i| fds[i].revents != 0) {
                self.write_input(&mut pending_input);
            }
            if resize_at.is_some_and(|i| fds[i].revents != 0) {
                self.apply_resizes(&mut buf);
            }
            if pid_at.is_some_and(|i| fds[i].revents != 0) {
                exited = true;
                // Nothing more will be read from stdin.
                self.input = None;
                self.stdin_fifo = None;
            }
        }
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
        let (mut exit_code, signal) = match status {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => (code, 0),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, sig as i32),
            _ => (255, 0),
        };
        let oom_killed = self.config.cgroup.as_deref().is_some_and(crate::cgroup::oom_killed);
        if oom_killed && signal == libc::SIGKILL {
            exit_code = 137;
        }
        if let Some(cgroup) = &self.config.cgroup {
            crate::cgroup::remove(cgroup);
        }
        ExitRecord { exit_code, signal, oom_killed, finished_at_ns: crate::logfile::now_ns() }
    }

    fn read_stdin(&mut self, buf: &mut [u8], pending: &mut Vec<u8>) {
        let Some(fifo) = &self.stdin_fifo else { return };
        match nix::unistd::read(fifo, buf) {
            Ok(0) => {
                // Every writer has closed the FIFO.
                if self.config.stdin_once {
                    self.input = None; // the container sees EOF
                    self.stdin_fifo = None;
                } else if let Ok(reopened) = open_fifo(&self.dir.join(STDIN_FIFO), nix::fcntl::OFlag::O_RDONLY) {
                    // Reopened, so poll waits for the next writer instead of
                    // reporting the hang-up forever.
                    self.stdin_fifo = Some(reopened);
                }
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                self.write_input(pending);
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => self.stdin_fifo = None,
        }
    }

    fn write_input(&mut self, pending: &mut Vec<u8>) {
        let Some(input) = &self.input else {
            pending.clear();
            return;
        };
        match nix::unistd::write(input, pending) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                pending.clear();
                self.input = None;
            }
        }
    }

    /// Lines of "ROWS COLS" from the agent.
    fn apply_resizes(&mut self, buf: &mut [u8]) {
        let Some(fifo) = &self.resize_fifo else { return };
        let Ok(n) = nix::unistd::read(fifo, buf) else { return };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let Some((master, _)) = self.outputs.first() else { return };
        for line in text.lines() {
            let mut parts = line.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
            if let (Some(rows), Some(cols)) = (parts.next(), parts.next()) {
                let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            }
        }
    }
}

/// Sends a resize to a running container's shim.
pub fn request_resize(dir: &Path, rows: u16, cols: u16) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a shim that is gone must not hang the caller.
    let mut fifo =
        std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(dir.join(RESIZE_FIFO))?;
    fifo.write_all(format!("{rows} {cols}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_made_for_a_start_goes_with_its_failure_and_stays_with_its_success() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        let failed = root.path().join("berth").join("failed");
        let started = root.path().join("berth").join("started");
        for leaf in [&failed, &started] {
            crate::cgroup::create(root.path(), leaf, None).unwrap();
        }
        drop(RemovedUnlessStarted(Some(failed.clone())));
        RemovedUnlessStarted(Some(started.clone())).keep();
        assert!(!failed.exists());
        assert!(started.is_dir());
    }
}
