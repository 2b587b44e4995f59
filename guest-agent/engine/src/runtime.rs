//! The low-level container runtime: starts a container's first process from
//! its OCI runtime spec (the subset `spec::build` writes).
//!
//! Why our own instead of youki's `libcontainer`: the agent is one static
//! musl binary (the VM's initramfs has no libc), and libcontainer needs
//! libseccomp (a C library Debian only ships for glibc) and, for the device
//! cgroup, libbpf-sys, which does not build for musl. What a Docker container
//! needs from a runtime is small and fixed (this file, plus `seccomp`), and
//! doing it in-process saves the fork/exec of a runtime binary and the state
//! files a separate runtime keeps: the per-container supervisor (`shim`) is
//! the parent of the container and keeps what it needs itself.
//!
//! `launch` must be called from a single-threaded process (the shim): it
//! forks, and the child runs Rust code (allocating) until `execve`.
//! What the child does is `child.rs`; `docker exec`'s way in is `enter.rs`.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::seccomp::Filter;

mod child;
mod enter;

pub use child::resolve_in_root;
use child::{clone_into_cgroup, ChildPlan, ChildStdio};
pub use enter::{enter, read_plan_fd, EnterPlan, PID_FD, PLAN_FD, TERMINAL_FD};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container's process could not be set up or executed; the text is
    /// what failed inside the new container (Docker shows it to the user).
    #[error("{0}")]
    Setup(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// The standard streams the container's process gets when it has no
/// terminal (each is the child's end of a pipe, or /dev/null).
pub struct PipeStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub enum Stdio {
    Pipes(PipeStdio),
    /// A terminal is allocated inside the container (on its own devpts, as
    /// runc does, so `tty` names a path that exists there); the master comes
    /// back in `Launched::terminal`.
    Terminal {
        rows: u16,
        cols: u16,
    },
}

pub struct Launched {
    pub pid: i32,
    pub terminal: Option<OwnedFd>,
}

/// Everything `launch` needs, resolved before forking so the child only
/// makes system calls and reports failures.
pub struct LaunchConfig<'a> {
    pub spec: &'a Spec,
    /// The container's cgroup v2 directory (created by the caller), if the
    /// machine has cgroup v2.
    pub cgroup: Option<&'a Path>,
    pub seccomp: Option<&'a Filter>,
    pub stdio: Stdio,
}

/// Starts the container's process and returns once it has executed its
/// program (or failed to: the error says which step failed and why).
pub fn launch(config: LaunchConfig<'_>) -> Result<Launched, RuntimeError> {
    let spec = config.spec;
    let process = spec.process().as_ref().ok_or_else(|| RuntimeError::Setup("the spec has no process".into()))?;
    let linux = spec.linux().as_ref().ok_or_else(|| RuntimeError::Setup("the spec has no linux section".into()))?;
    let root = spec.root().as_ref().ok_or_else(|| RuntimeError::Setup("the spec has no root".into()))?;

    let mut clone_flags = 0;
    // Namespaces to join instead of create (another container's): opened
    // here, joined by the child, except the PID namespace (below).
    let mut joins = Vec::new();
    let mut join_pid = None;
    for ns in linux.namespaces().iter().flatten() {
        if let Some(path) = ns.path() {
            let file = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
            let flag = match ns.typ() {
                LinuxNamespaceType::Pid => {
                    join_pid = Some(file);
                    continue;
                }
                LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
                LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
                LinuxNamespaceType::Network => libc::CLONE_NEWNET,
                other => return Err(RuntimeError::Setup(format!("joining a {other:?} namespace is not supported"))),
            };
            joins.push((OwnedFd::from(file), flag));
            continue;
        }
        clone_flags |= match ns.typ() {
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            // Unshared by the child once it is inside its cgroup, so the
            // namespace's root is the container's cgroup.
            LinuxNamespaceType::Cgroup => 0,
            other => return Err(RuntimeError::Setup(format!("namespace {other:?} is not supported"))),
        };
    }
    let new_cgroup_ns = linux.namespaces().iter().flatten().any(|ns| ns.typ() == LinuxNamespaceType::Cgroup);
    // A new network namespace comes with its loopback interface down.
    let new_net_ns = clone_flags & libc::CLONE_NEWNET != 0;

    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    let program = args.first().ok_or_else(|| RuntimeError::Setup("the process has no arguments".into()))?;
    if let Some(pid_ns) = &join_pid {
        // A process cannot change its own PID namespace; setns only decides
        // where this process's next child is born, which is the container's
        // process: the shim starts no other.
        // SAFETY: setns on a namespace descriptor we hold open.
        if unsafe { libc::setns(pid_ns.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
            return Err(io_err("joining the other container's PID namespace")(std::io::Error::last_os_error()));
        }
    }
    let mut plan = ChildPlan {
        joins,
        rootfs: root.path().clone(),
        readonly_rootfs: root.readonly().unwrap_or(false),
        mounts: spec.mounts().clone().unwrap_or_default(),
        devices: linux
            .devices()
            .iter()
            .flatten()
            .map(|d| (d.path().clone(), d.major(), d.minor(), d.file_mode().unwrap_or(0o666), d.uid(), d.gid()))
            .collect(),
        masked: linux.masked_paths().clone().unwrap_or_default(),
        readonly: linux.readonly_paths().clone().unwrap_or_default(),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        cgroup: config.cgroup.map(Path::to_path_buf),
        v1_cgroups: config.cgroup.map(crate::cgroup::v1_companions).unwrap_or_default(),
        born_in_cgroup: false,
        new_cgroup_ns,
        new_net_ns,
        cwd: process.cwd().clone(),
        uid: process.user().uid(),
        gid: process.user().gid(),
        groups: process.user().additional_gids().clone().unwrap_or_default(),
        bounding: process
            .capabilities()
            .as_ref()
            .and_then(|c| c.bounding().clone())
            .unwrap_or_default()
            .iter()
            .filter_map(cap_index)
            .collect(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        seccomp: config.seccomp,
        argv: args.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?,
        envp: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        candidates: executable_candidates(program, &env)?,
    };

    // Failures inside the child come back as text on this pipe; a successful
    // execve closes it (O_CLOEXEC) with nothing written.
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))?;
    let wants_terminal = matches!(config.stdio, Stdio::Terminal { .. });
    // The terminal's master travels back over this socket pair.
    let terminal_pair = match config.stdio {
        Stdio::Terminal { .. } => Some(
            nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| io_err("socketpair")(e.into()))?,
        ),
        Stdio::Pipes(_) => None,
    };

    // Born in its cgroup (clone3's CLONE_INTO_CGROUP, Linux 5.7+) rather than
    // moved there: a move is a cgroup migration, which costs the start of a
    // container about 10 ms (an RCU grace period). Older kernels get the move.
    let cgroup_dir = match &plan.cgroup {
        Some(dir) => Some(std::fs::File::open(dir).map_err(io_err(format!("opening {}", dir.display())))?),
        None => None,
    };
    let born_in_cgroup = cgroup_dir.as_ref().map(|dir| clone_into_cgroup(clone_flags, dir));
    let (pid, born_in_cgroup) = match born_in_cgroup {
        Some(Ok(pid)) => (pid as libc::c_long, true),
        // SAFETY: a raw clone without CLONE_VM and with a null stack behaves
        // like fork(2). The caller guarantees the process is single-threaded,
        // so the child's copy of the heap and of every lock is consistent.
        _ => (
            unsafe { libc::syscall(libc::SYS_clone, (clone_flags | libc::SIGCHLD) as libc::c_ulong, 0, 0, 0, 0) },
            false,
        ),
    };
    plan.born_in_cgroup = born_in_cgroup;
    if pid < 0 {
        return Err(io_err("creating the container's namespaces (clone)")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(err_read);
        let stdio = match config.stdio {
            Stdio::Pipes(pipes) => ChildStdio::Pipes(pipes),
            Stdio::Terminal { rows, cols } => {
                ChildStdio::Terminal { rows, cols, socket: terminal_pair.expect("made above").1 }
            }
        };
        let failure = plan.run(stdio);
        let mut pipe = std::fs::File::from(err_write);
        let _ = pipe.write_all(failure.as_bytes());
        // SAFETY: _exit skips atexit handlers and destructors that belong
        // to the parent's copy of the process.
        unsafe { libc::_exit(127) };
    }
    let pid = pid as i32;
    drop(err_write);
    if let Stdio::Pipes(pipes) = config.stdio {
        drop(pipes); // the parent must not hold the child's ends
    }
    let terminal = match terminal_pair {
        Some((ours, theirs)) => {
            drop(theirs);
            receive_fd(&ours).ok()
        }
        None => None,
    };
    let mut failure = String::new();
    let _ = std::fs::File::from(err_read).read_to_string(&mut failure);
    if !failure.is_empty() {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(RuntimeError::Setup(failure));
    }
    if wants_terminal && terminal.is_none() {
        return Err(RuntimeError::Setup("the container's terminal was not received".into()));
    }
    Ok(Launched { pid, terminal })
}

fn cstring(text: &str) -> Result<CString, RuntimeError> {
    CString::new(text).map_err(|_| RuntimeError::Setup(format!("{text:?} contains a NUL byte")))
}

/// The paths `execve` should try, in order, as `execvp` would with the
/// container's PATH (resolved in the child, inside the new root).
fn executable_candidates(program: &str, env: &[String]) -> Result<Vec<CString>, RuntimeError> {
    if program.contains('/') {
        return Ok(vec![cstring(program)?]);
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| cstring(&format!("{dir}/{program}")))
        .collect()
}

fn cap_index(cap: &oci_spec::runtime::Capability) -> Option<u8> {
    let name = serde_json::to_value(cap).ok()?;
    name.as_str()?.parse::<caps::Capability>().ok().map(|c| c.index())
}

/// Turns a failed system call into the message the parent reports.
fn step<T, E: std::fmt::Display>(what: impl std::fmt::Display, result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn check(ret: libc::c_int) -> std::io::Result<()> {
    if ret < 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

fn path_c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// "No such file or directory" without Rust's " (os error 2)" suffix.
fn strip_os_error(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text,
    }
}

/// dup2 onto a standard stream number. The old descriptor there (the
/// shim's /dev/null) is replaced, which is the point.
fn dup_onto(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2 on descriptors we own; `target` is 0, 1 or 2, which no
    // Rust object in this process owns.
    check(unsafe { libc::dup2(fd, target) })
}

fn send_fd(socket: &OwnedFd, fd: RawFd) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let iov = [std::io::IoSlice::new(b"t")];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).map(drop)
}

pub fn receive_fd(socket: &OwnedFd) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us
                // and nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(nix::errno::Errno::EBADMSG)
}

#[cfg(test)]
mod tests {
    use super::child::parse_mount_options;
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/etc/..", root.join("proc")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("usr/lib/up")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in_root(root, Path::new("/proc")).unwrap(), root.to_path_buf());
        assert_eq!(resolve_in_root(root, Path::new("/usr/lib/up/x")).unwrap(), root.join("x"));
        assert_eq!(resolve_in_root(root, Path::new("/lib/a")).unwrap(), root.join("usr/lib/a"));
        assert_eq!(resolve_in_root(root, Path::new("/../../etc")).unwrap(), root.join("etc"));
        assert!(resolve_in_root(root, Path::new("/loop/x")).is_err());
    }

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let opts: Vec<String> =
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "ro", "rbind"].iter().map(|s| s.to_string()).collect();
        let (flags, propagation, data) = parse_mount_options(&opts);
        assert_eq!(flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_RDONLY | libc::MS_BIND | libc::MS_REC);
        assert_eq!(propagation, 0);
        assert_eq!(data, "newinstance,ptmxmode=0666");
    }

    #[test]
    fn executables_are_searched_in_the_container_path() {
        let env = vec!["PATH=/bin:/usr/bin".to_string()];
        let found = executable_candidates("sh", &env).unwrap();
        assert_eq!(found, vec![CString::new("/bin/sh").unwrap(), CString::new("/usr/bin/sh").unwrap()]);
        assert_eq!(executable_candidates("./run", &env).unwrap(), vec![CString::new("./run").unwrap()]);
    }
}
