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

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::seccomp::Filter;

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

enum ChildStdio {
    Pipes(PipeStdio),
    Terminal { rows: u16, cols: u16, socket: OwnedFd },
}

type DeviceEntry = (PathBuf, i64, i64, u32, Option<u32>, Option<u32>);

struct ChildPlan<'a> {
    /// Namespaces to join (descriptor, CLONE_NEW* type) before anything else.
    joins: Vec<(OwnedFd, libc::c_int)>,
    rootfs: PathBuf,
    readonly_rootfs: bool,
    mounts: Vec<Mount>,
    devices: Vec<DeviceEntry>,
    masked: Vec<String>,
    readonly: Vec<String>,
    hostname: Option<String>,
    cgroup: Option<PathBuf>,
    /// cgroup v1 companions of `cgroup` on a hybrid host (cgroup.rs).
    v1_cgroups: Vec<PathBuf>,
    /// The child was created inside `cgroup` (no move needed).
    born_in_cgroup: bool,
    new_cgroup_ns: bool,
    /// Bring `lo` up: Docker's containers reach 127.0.0.1 in their own namespace.
    new_net_ns: bool,
    cwd: PathBuf,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    bounding: Vec<u8>,
    no_new_privileges: bool,
    seccomp: Option<&'a Filter>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    candidates: Vec<CString>,
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

fn sys_mount(source: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> std::io::Result<()> {
    let (source, fstype, data) = (CString::new(source)?, CString::new(fstype)?, CString::new(data)?);
    let target = path_c(target);
    let data_ptr = if data.as_bytes().is_empty() { std::ptr::null() } else { data.as_ptr() as *const libc::c_void };
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    check(unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data_ptr) })
}

/// Splits OCI mount options into mount(2) flags, propagation flags and the
/// filesystem's own data string.
fn parse_mount_options(options: &[String]) -> (libc::c_ulong, libc::c_ulong, String) {
    let (mut flags, mut propagation, mut data) = (0, 0, Vec::new());
    for option in options {
        match option.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            "private" => propagation |= libc::MS_PRIVATE,
            "rprivate" => propagation |= libc::MS_PRIVATE | libc::MS_REC,
            "slave" => propagation |= libc::MS_SLAVE,
            "rslave" => propagation |= libc::MS_SLAVE | libc::MS_REC,
            "shared" => propagation |= libc::MS_SHARED,
            "rshared" => propagation |= libc::MS_SHARED | libc::MS_REC,
            "suid" | "dev" | "exec" | "atime" | "diratime" | "async" => {}
            other => data.push(other),
        }
    }
    (flags, propagation, data.join(","))
}

/// `root` joined with `path` as the container would see it: symlinks in the
/// image are followed relative to `root`, never out of it (the image is
/// untrusted; a link like /proc -> /etc/.. must not redirect a mount onto
/// the VM's own directories).
pub fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<std::ffi::OsString> = path.components().rev().filter_map(component_name).collect();
    let mut links_followed = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let on_disk = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match std::fs::symlink_metadata(&on_disk) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links_followed += 1;
                if links_followed > 40 {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&on_disk)?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                pending.extend(target.components().rev().filter_map(component_name));
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved.strip_prefix("/").unwrap_or(&resolved)))
}

fn component_name(c: Component<'_>) -> Option<std::ffi::OsString> {
    match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some("..".into()),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    }
}

/// Creates what a mount needs at `target`: a directory, or an empty file
/// when a file is bind-mounted.
fn ensure_mount_point(target: &Path, source_is_file: bool) -> std::io::Result<()> {
    if source_is_file {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(target).is_err() {
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(target)?;
        }
        Ok(())
    } else {
        std::fs::create_dir_all(target)
    }
}

/// fork(2) with new namespaces, the child born in the cgroup `dir`
/// (clone3 with CLONE_INTO_CGROUP). Returns the pid (0 in the child).
fn clone_into_cgroup(flags: libc::c_int, dir: &std::fs::File) -> std::io::Result<libc::pid_t> {
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    // struct clone_args, CLONE_ARGS_SIZE_VER2: flags, pidfd, child_tid,
    // parent_tid, exit_signal, stack, stack_size, tls, set_tid,
    // set_tid_size, cgroup.
    let mut args = [0u64; 11];
    args[0] = flags as u32 as u64 | CLONE_INTO_CGROUP;
    args[4] = libc::SIGCHLD as u64;
    args[10] = dir.as_raw_fd() as u64;
    // SAFETY: `args` is a live clone_args of the size passed; without
    // CLONE_VM and with no stack, clone3 behaves like fork(2), and the
    // caller guarantees the process is single-threaded (see `launch`).
    let pid = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), std::mem::size_of_val(&args)) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

impl ChildPlan<'_> {
    /// Runs in the forked child. Returns only on failure, with the message.
    fn run(&self, stdio: ChildStdio) -> String {
        match self.setup_and_exec(stdio) {
            Ok(never) => match never {},
            Err(message) => message,
        }
    }

    fn setup_and_exec(&self, stdio: ChildStdio) -> Result<std::convert::Infallible, String> {
        for (fd, kind) in &self.joins {
            // SAFETY: setns on a namespace descriptor the plan holds open.
            step("joining another container's namespace", check(unsafe { libc::setns(fd.as_raw_fd(), *kind) }))?;
        }
        for cgroup in &self.v1_cgroups {
            step("joining the container's v1 cgroup", std::fs::write(cgroup.join("cgroup.procs"), b"0"))?;
        }
        if let Some(cgroup) = &self.cgroup {
            if !self.born_in_cgroup {
                step("joining the container's cgroup", std::fs::write(cgroup.join("cgroup.procs"), b"0"))?;
            }
            if self.new_cgroup_ns {
                // SAFETY: unshare takes only flags.
                step("creating the cgroup namespace", check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) }))?;
            }
        }
        if self.new_net_ns {
            step("bringing up the loopback interface", crate::netif::set_up("lo"))?;
        }
        // SAFETY: setsid takes no arguments; the child is not a group leader.
        unsafe { libc::setsid() };
        if let ChildStdio::Pipes(pipes) = &stdio {
            for (fd, target) in [(&pipes.stdin, 0), (&pipes.stdout, 1), (&pipes.stderr, 2)] {
                step("setting up stdio", dup_onto(fd.as_raw_fd(), target))?;
            }
        }
        self.set_up_filesystem()?;
        if let Some(hostname) = &self.hostname {
            step("setting the hostname", nix::unistd::sethostname(hostname))?;
        }
        if let ChildStdio::Terminal { rows, cols, socket } = &stdio {
            self.attach_terminal(*rows, *cols, socket)?;
        }
        step(format!("changing to the working directory {:?}", self.cwd), std::env::set_current_dir(&self.cwd))?;
        self.drop_privileges_and_exec()
    }

    fn set_up_filesystem(&self) -> Result<(), String> {
        // Nothing we mount may propagate back to the VM's namespace.
        step("making / a slave mount", sys_mount("", Path::new("/"), "", libc::MS_REC | libc::MS_SLAVE, ""))?;
        let root = &self.rootfs;
        let root_text = root.to_string_lossy();
        step("binding the root filesystem", sys_mount(&root_text, root, "", libc::MS_BIND | libc::MS_REC, ""))?;
        for mount in &self.mounts {
            self.mount_one(mount)?;
            if mount.destination() == Path::new("/dev") {
                self.create_devices()?;
            }
        }
        // /dev/ptmx must be the container's own devpts instance.
        let dev = root.join("dev");
        let _ = std::fs::remove_file(dev.join("ptmx"));
        for (link, target) in [
            ("ptmx", "pts/ptmx"),
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("core", "/proc/kcore"),
        ] {
            if std::fs::symlink_metadata(dev.join(link)).is_err() {
                let _ = std::os::unix::fs::symlink(target, dev.join(link));
            }
        }
        self.pivot_root()?;
        for path in &self.masked {
            mask_path(Path::new(path))?;
        }
        for path in &self.readonly {
            let path = Path::new(path);
            if path.exists() {
                let source = path.to_string_lossy();
                step(
                    format!("binding {}", path.display()),
                    sys_mount(&source, path, "", libc::MS_BIND | libc::MS_REC, ""),
                )?;
                let flags = libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC;
                step(format!("making {} read-only", path.display()), sys_mount("", path, "", flags, ""))?;
            }
        }
        if self.readonly_rootfs {
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
            step("making the root filesystem read-only", sys_mount("", Path::new("/"), "", flags, ""))?;
        }
        Ok(())
    }

    fn mount_one(&self, mount: &Mount) -> Result<(), String> {
        let destination = mount.destination();
        let target = step(
            format!("resolving the mount point {}", destination.display()),
            resolve_in_root(&self.rootfs, destination),
        )?;
        let kind = mount.typ().clone().unwrap_or_default();
        let options = mount.options().clone().unwrap_or_default();
        let (flags, propagation, data) = parse_mount_options(&options);
        let source = mount.source().clone().unwrap_or_default();
        let what = format!("mounting {} on {}", kind, destination.display());
        if flags & libc::MS_BIND != 0 {
            let source_is_file = step(&what, std::fs::metadata(&source))?.is_file();
            step(&what, ensure_mount_point(&target, source_is_file))?;
            let source = source.to_string_lossy();
            step(&what, sys_mount(&source, &target, "", flags & (libc::MS_BIND | libc::MS_REC), ""))?;
            // Bind mounts take their flags only on a remount.
            let extra = flags & !(libc::MS_BIND | libc::MS_REC);
            if extra != 0 {
                step(&what, sys_mount("", &target, "", libc::MS_BIND | libc::MS_REMOUNT | extra, ""))?;
            }
        } else {
            step(&what, ensure_mount_point(&target, false))?;
            let (fstype, source) = match kind.as_str() {
                // cgroup v2 only: the spec's "cgroup" means the unified
                // hierarchy, seen from the container's cgroup namespace.
                "cgroup" => {
                    if self.cgroup.is_none() {
                        return Ok(());
                    }
                    ("cgroup2", "cgroup".to_string())
                }
                _ => (kind.as_str(), source.to_string_lossy().into_owned()),
            };
            step(&what, sys_mount(&source, &target, fstype, flags, &data))?;
        }
        if propagation != 0 {
            step(&what, sys_mount("", &target, "", propagation, ""))?;
        }
        Ok(())
    }

    fn create_devices(&self) -> Result<(), String> {
        for (path, major, minor, mode, uid, gid) in &self.devices {
            let target = self.rootfs.join(path.strip_prefix("/").unwrap_or(path));
            let dev = libc::makedev(*major as u32, *minor as u32);
            let c_path = path_c(&target);
            // SAFETY: c_path is a NUL-terminated path that outlives the call.
            let made = check(unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | (*mode & 0o7777), dev) });
            step(format!("creating {}", path.display()), made)?;
            // mknod honours the umask; the spec's mode is meant exactly.
            // SAFETY: as above.
            unsafe { libc::chmod(c_path.as_ptr(), *mode & 0o7777) };
            if uid.is_some() || gid.is_some() {
                let _ = std::os::unix::fs::chown(&target, *uid, *gid);
            }
        }
        Ok(())
    }

    fn pivot_root(&self) -> Result<(), String> {
        step("entering the root filesystem", std::env::set_current_dir(&self.rootfs))?;
        // pivot_root(".", ".") stacks the old root under the new one; the
        // detach below then removes it without needing a directory for it.
        let dot = CString::new(".").expect("no NUL");
        // SAFETY: both arguments are the same NUL-terminated string.
        step("pivot_root", check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as i32 }))?;
        step("detaching the old root", nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH))?;
        step("entering /", std::env::set_current_dir("/"))
    }

    fn attach_terminal(&self, rows: u16, cols: u16, socket: &OwnedFd) -> Result<(), String> {
        use nix::fcntl::OFlag;
        let master =
            step("opening /dev/ptmx", nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC))?;
        step("unlocking the terminal", nix::pty::grantpt(&master).and_then(|_| nix::pty::unlockpt(&master)))?;
        let name = step("naming the terminal", nix::pty::ptsname_r(&master))?;
        let slave = step(
            format!("opening {name}"),
            nix::fcntl::open(name.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY, nix::sys::stat::Mode::empty()),
        )?;
        let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        step("sending the terminal to the supervisor", send_fd(socket, master.as_raw_fd()))?;
        for target in 0..3 {
            step("setting up the terminal as stdio", dup_onto(slave.as_raw_fd(), target))?;
        }
        // SAFETY: TIOCSCTTY takes an integer; we are a session leader.
        step("making the terminal controlling", check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) }))?;
        Ok(())
    }

    fn drop_privileges_and_exec(&self) -> Result<std::convert::Infallible, String> {
        if self.no_new_privileges {
            // SAFETY: prctl with integer arguments only.
            step("setting no_new_privs", check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }))?;
        }
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok())
            .unwrap_or(40);
        for cap in 0..=last_cap {
            if !self.bounding.contains(&cap) {
                // SAFETY: prctl with integer arguments only.
                let dropped = check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) });
                step(format!("dropping capability {cap}"), dropped)?;
            }
        }
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
        // Nothing but stdio may reach the container's program: descriptors
        // inherited by the shim (the agent's, the shim's ready pipe) would
        // leak into the container and keep pipes open.
        // SAFETY: close_range only flags descriptors; the error pipe is
        // already close-on-exec.
        let marked = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
        step("marking inherited descriptors close-on-exec", check(marked as i32))?;
        // Installed while we still hold CAP_SYS_ADMIN (so it works without
        // no_new_privs); the calls that follow are all allowed by the profile.
        if let Some(filter) = self.seccomp {
            step("installing the seccomp profile", filter.apply())?;
        }
        let groups: Vec<libc::gid_t> = self.groups.clone();
        // SAFETY: the pointer and length describe `groups`.
        step("setgroups", check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }))?;
        // SAFETY: plain id arguments.
        step("setgid", check(unsafe { libc::setresgid(self.gid, self.gid, self.gid) }))?;
        // SAFETY: plain id arguments. Leaving uid 0 clears the permitted and
        // effective capabilities, as Docker's non-root processes have none.
        step("setuid", check(unsafe { libc::setresuid(self.uid, self.uid, self.uid) }))?;

        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let program = self.argv[0].to_string_lossy().into_owned();
        let mut first_error = None;
        for candidate in &self.candidates {
            // SAFETY: argv and envp are NULL-terminated arrays of pointers
            // into CStrings that live until execve replaces the process.
            unsafe { libc::execve(candidate.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            let err = last_error();
            // execvp semantics: keep looking only past missing entries.
            let keep_looking = matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR));
            if first_error.is_none() || !keep_looking {
                first_error = Some(err);
            }
            if !keep_looking {
                break;
            }
        }
        let err = first_error.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT));
        if !program.contains('/') && err.raw_os_error() == Some(libc::ENOENT) {
            // Docker's wording, which users and scripts recognise.
            return Err(format!("exec: \"{program}\": executable file not found in $PATH"));
        }
        Err(format!("exec: \"{program}\": {}", strip_os_error(&err)))
    }
}

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

fn mask_path(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let what = format!("masking {}", path.display());
    if meta.is_dir() {
        step(what, sys_mount("tmpfs", path, "tmpfs", libc::MS_RDONLY, ""))
    } else {
        step(what, sys_mount("/dev/null", path, "", libc::MS_BIND, ""))
    }
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
