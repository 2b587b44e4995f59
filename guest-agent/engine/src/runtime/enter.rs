//! `docker exec`'s process: `berth-agent enter -` joins a running
//! container's namespaces and cgroup and starts the process there with the
//! container's isolation.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use super::child::ChildPlan;
use super::{cstring, executable_candidates, io_err, last_error, strip_os_error, RuntimeError};

/// A process to start inside a running container (`docker exec`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EnterPlan {
    /// The container's first process, whose namespaces are joined.
    pub pid: i32,
    pub cgroup: Option<PathBuf>,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Capability names (CAP_...), the bounding set.
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    /// A terminal (rows, cols) allocated inside the container, as for the
    /// container's own process; its master is sent over [`TERMINAL_FD`].
    #[serde(default)]
    pub terminal: Option<(u16, u16)>,
}

/// Where `enter` finds the socket to send an exec's terminal master over.
pub const TERMINAL_FD: RawFd = 3;

/// Where `enter` tells its caller the pid of the process it started (as
/// four bytes, native order): the process Docker reports as the exec's
/// `Pid`. The agent puts a pipe there; without one nothing is written.
pub const PID_FD: RawFd = 4;

/// Where `berth-agent enter -` reads its plan (JSON), a sealed memfd the
/// agent puts there: not in its argv, which every process that shares the
/// VM's PID namespace (`--pid host`) can read in /proc/*/cmdline, and the
/// plan holds `docker exec -e` values.
pub const PLAN_FD: RawFd = 5;

/// Reads the plan `enter` was given at PLAN_FD, and closes it.
pub fn read_plan_fd() -> std::io::Result<EnterPlan> {
    // SAFETY: F_GETFD only reads the flags of a descriptor number and fails
    // (EBADF) when it is not open.
    if unsafe { libc::fcntl(PLAN_FD, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no plan at descriptor 5"));
    }
    // SAFETY: it is open: the agent put the plan there for us, and nothing
    // else in this process owns it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(PLAN_FD) });
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The pid of the process started by `enter`, for signal forwarding.
static ENTERED_CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(signal: libc::c_int) {
    let child = ENTERED_CHILD.load(std::sync::atomic::Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// `berth-agent enter PLAN`: joins the container's namespaces and cgroup,
/// starts the process there with the container's isolation, waits for it
/// and exits as it did (signals sent to us are passed on). Must run in a
/// single-threaded process. Returns the exit code (128 + signal).
pub fn enter(plan: &EnterPlan) -> Result<i32, RuntimeError> {
    // Taken before anything here opens a file, which could land on PID_FD,
    // and closed on exec: the command must not inherit the agent's pipe.
    // SAFETY: F_SETFD on a descriptor number only sets its flag, and fails
    // (EBADF) when it is not open.
    let pid_report = (unsafe { libc::fcntl(PID_FD, libc::F_SETFD, libc::FD_CLOEXEC) } == 0).then(|| {
        // SAFETY: it is open, so the agent put the pipe there for us, and
        // nothing else in this process owns it.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(PID_FD) })
    });
    let namespaces = ["ipc", "uts", "net", "pid", "cgroup", "mnt"];
    // All opened before any setns: after joining the mount namespace,
    // /proc is the container's and the host pid means nothing there.
    let mut fds = Vec::new();
    for ns in namespaces {
        let path = format!("/proc/{}/ns/{ns}", plan.pid);
        let file = std::fs::File::open(&path).map_err(io_err(format!("opening {path} (is the container running?)")))?;
        fds.push((ns, file));
    }
    if let Some(cgroup) = &plan.cgroup {
        for cgroup in crate::cgroup::v1_companions(cgroup).iter().chain([cgroup.clone()].iter()) {
            std::fs::write(cgroup.join("cgroup.procs"), b"0").map_err(io_err("joining the container's cgroup"))?;
        }
    }
    for (ns, file) in &fds {
        // SAFETY: setns on a namespace descriptor we hold open.
        if unsafe { libc::setns(file.as_raw_fd(), 0) } < 0 {
            return Err(io_err(format!("joining the container's {ns} namespace"))(last_error()));
        }
    }
    drop(fds);
    let bounding: Vec<u8> =
        plan.capabilities.iter().filter_map(|c| c.parse::<caps::Capability>().ok()).map(|c| c.index()).collect();
    let seccomp = if plan.seccomp {
        let set = plan
            .capabilities
            .iter()
            .filter_map(|c| serde_json::from_value(serde_json::Value::String(c.clone())).ok())
            .collect();
        Some(crate::seccomp::docker_default(&set).map_err(|e| RuntimeError::Setup(format!("seccomp: {e}")))?)
    } else {
        None
    };
    let program = plan.argv.first().ok_or_else(|| RuntimeError::Setup("exec needs a command".into()))?;
    let child_plan = ChildPlan {
        joins: Vec::new(),
        rootfs: PathBuf::from("/"),
        readonly_rootfs: false,
        mounts: Vec::new(),
        devices: Vec::new(),
        masked: Vec::new(),
        readonly: Vec::new(),
        hostname: None,
        cgroup: None,
        v1_cgroups: Vec::new(),
        born_in_cgroup: false,
        new_cgroup_ns: false,
        new_net_ns: false,
        cwd: PathBuf::from(if plan.cwd.is_empty() { "/" } else { &plan.cwd }),
        uid: plan.uid,
        gid: plan.gid,
        groups: plan.groups.clone(),
        bounding,
        no_new_privileges: plan.no_new_privileges,
        seccomp: seccomp.as_ref(),
        argv: plan.argv.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?,
        envp: plan.env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        candidates: executable_candidates(program, &plan.env)?,
    };
    // SAFETY: the agent put the socket at TERMINAL_FD for a terminal exec,
    // and nothing else in this process owns that descriptor.
    let terminal_socket = plan.terminal.map(|_| unsafe { OwnedFd::from_raw_fd(TERMINAL_FD) });
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))?;
    // SAFETY: fork in a single-threaded process (the caller's contract).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io_err("fork")(last_error()));
    }
    if pid == 0 {
        drop(err_read);
        // The terminal comes from the container's own devpts (its
        // /dev/ptmx, now that we are in its mount namespace), so `tty` and
        // /dev/pts inside agree, as with runc.
        let terminal = match (plan.terminal, &terminal_socket) {
            (Some((rows, cols)), Some(socket)) => {
                // SAFETY: setsid takes no arguments; the forked child is not a group leader.
                unsafe { libc::setsid() };
                child_plan.attach_terminal(rows, cols, socket)
            }
            _ => Ok(()),
        };
        let failure = match terminal.and_then(|()| {
            std::env::set_current_dir(&child_plan.cwd)
                .map_err(|e| format!("chdir to {:?}: {}", child_plan.cwd, strip_os_error(&e)))
        }) {
            Ok(()) => match child_plan.drop_privileges_and_exec() {
                Ok(never) => match never {},
                Err(message) => message,
            },
            Err(message) => message,
        };
        let _ = std::fs::File::from(err_write).write_all(failure.as_bytes());
        // SAFETY: _exit skips the parent's atexit handlers and destructors.
        unsafe { libc::_exit(127) };
    }
    drop(err_write);
    drop(terminal_socket);
    if let Some(mut report) = pid_report {
        let _ = report.write_all(&pid.to_ne_bytes());
    }
    ENTERED_CHILD.store(pid, std::sync::atomic::Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: the handler only calls kill, which is async-signal-safe.
        unsafe { libc::signal(signal, forward_signal as *const () as libc::sighandler_t) };
    }
    let mut failure = String::new();
    let _ = std::fs::File::from(err_read).read_to_string(&mut failure);
    let status = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    if !failure.is_empty() {
        return Err(RuntimeError::Setup(failure));
    }
    Ok(match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
        Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
        _ => 255,
    })
}
