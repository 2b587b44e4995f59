//! The forked child's side of `launch`: joining namespaces and the cgroup,
//! the mounts, devices, pivot_root, masked and read-only paths, hostname,
//! credentials, capabilities, seccomp, and execve. Runs between fork and
//! exec, so everything it needs is prepared by the parent in a `ChildPlan`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use super::{check, dup_onto, last_error, path_c, send_fd, step, strip_os_error, PipeStdio};
use crate::seccomp::Filter;

pub(super) enum ChildStdio {
    Pipes(PipeStdio),
    Terminal { rows: u16, cols: u16, socket: OwnedFd },
}

pub(super) type DeviceEntry = (PathBuf, i64, i64, u32, Option<u32>, Option<u32>);

pub(super) struct ChildPlan<'a> {
    /// Namespaces to join (descriptor, CLONE_NEW* type) before anything else.
    pub(super) joins: Vec<(OwnedFd, libc::c_int)>,
    pub(super) rootfs: PathBuf,
    pub(super) readonly_rootfs: bool,
    pub(super) mounts: Vec<Mount>,
    pub(super) devices: Vec<DeviceEntry>,
    pub(super) masked: Vec<String>,
    pub(super) readonly: Vec<String>,
    pub(super) hostname: Option<String>,
    pub(super) cgroup: Option<PathBuf>,
    /// cgroup v1 companions of `cgroup` on a hybrid host (cgroup.rs).
    pub(super) v1_cgroups: Vec<PathBuf>,
    /// The child was created inside `cgroup` (no move needed).
    pub(super) born_in_cgroup: bool,
    pub(super) new_cgroup_ns: bool,
    /// Bring `lo` up: Docker's containers reach 127.0.0.1 in their own namespace.
    pub(super) new_net_ns: bool,
    pub(super) cwd: PathBuf,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) groups: Vec<u32>,
    pub(super) bounding: Vec<u8>,
    pub(super) no_new_privileges: bool,
    pub(super) seccomp: Option<&'a Filter>,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
    pub(super) candidates: Vec<CString>,
}

pub(super) fn sys_mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    let (source, fstype, data) = (CString::new(source)?, CString::new(fstype)?, CString::new(data)?);
    let target = path_c(target);
    let data_ptr = if data.as_bytes().is_empty() { std::ptr::null() } else { data.as_ptr() as *const libc::c_void };
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    check(unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data_ptr) })
}

/// Splits OCI mount options into mount(2) flags, propagation flags and the
/// filesystem's own data string.
pub(super) fn parse_mount_options(options: &[String]) -> (libc::c_ulong, libc::c_ulong, String) {
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

pub(super) fn component_name(c: Component<'_>) -> Option<std::ffi::OsString> {
    match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some("..".into()),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    }
}

/// Creates what a mount needs at `target`: a directory, or an empty file
/// when a file is bind-mounted.
pub(super) fn ensure_mount_point(target: &Path, source_is_file: bool) -> std::io::Result<()> {
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
pub(super) fn clone_into_cgroup(flags: libc::c_int, dir: &std::fs::File) -> std::io::Result<libc::pid_t> {
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
    pub(super) fn run(&self, stdio: ChildStdio) -> String {
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

    pub(super) fn attach_terminal(&self, rows: u16, cols: u16, socket: &OwnedFd) -> Result<(), String> {
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

    pub(super) fn drop_privileges_and_exec(&self) -> Result<std::convert::Infallible, String> {
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

pub(super) fn mask_path(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let what = format!("masking {}", path.display());
    if meta.is_dir() {
        step(what, sys_mount("tmpfs", path, "tmpfs", libc::MS_RDONLY, ""))
    } else {
        step(what, sys_mount("/dev/null", path, "", libc::MS_BIND, ""))
    }
}
