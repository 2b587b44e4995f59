//! The file server of a 9P share sees only that share.
//!
//! diod resolves every request by path on the host (`path/name`, then
//! lstat/open), so a client that walks `..` from the share's root, or
//! through a symlink in the share that points out of it, reaches whatever
//! the server's user may reach. The Linux 9P client never sends such walks
//! (it resolves symlinks and `..` itself), but any root process in the VM can
//! open the vsock port and speak 9P, so the server must not be able to leave
//! the share whatever it is asked. Landlock would not do: it leaves chmod,
//! chown and stat unchecked. So each server runs in a mount namespace whose
//! root is an empty tmpfs holding the system's program directories read-only
//! (diod and its libraries) and the share at its host path: outside the
//! share there is nothing of the user's to reach. A daemon that is not root
//! gets the mount namespace inside a user namespace in which it is root
//! (mapped to the user, so what the server creates is the user's).
//!
//! Everything the child does between fork and exec is a plain syscall on
//! strings prepared before the fork (no allocation there: another thread
//! of the daemon may hold the allocator's lock).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The system directories a dynamically linked server needs to start.
const SYSTEM_DIRS: [&str; 5] = ["/usr", "/lib", "/lib64", "/bin", "/sbin"];

enum Step {
    Mkdir(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    /// Bind `source` at `target`, read-only unless `writable`.
    Bind {
        source: CString,
        target: CString,
        writable: bool,
    },
}

/// The namespace a share's server is started in, prepared in the daemon.
pub struct Sandbox {
    root: CString,
    steps: Vec<Step>,
    /// `/proc/self/uid_map` and `gid_map` contents when the daemon is not root.
    id_maps: Option<(CString, CString)>,
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other(format!("{} has a NUL", path.display())))
}

impl Sandbox {
    /// A sandbox for serving `share` with the program at `server`, whose
    /// root is mounted on the (empty, private) directory `root`.
    pub fn prepare(share: &Path, server: &Path, root: &Path) -> io::Result<Sandbox> {
        std::fs::create_dir_all(root)?;
        let server = server.canonicalize()?;
        if !SYSTEM_DIRS.iter().any(|dir| server.starts_with(dir)) {
            return Err(io::Error::other(format!(
                "the 9p file server {} must be installed under /usr (Debian's diod package)",
                server.display()
            )));
        }
        let inside = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
        let mut steps = Vec::new();
        for dir in SYSTEM_DIRS.map(Path::new) {
            match std::fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => steps
                    .push(Step::Symlink { target: cstring(&std::fs::read_link(dir)?)?, link: cstring(&inside(dir))? }),
                Ok(meta) if meta.is_dir() => {
                    steps.push(Step::Mkdir(cstring(&inside(dir))?));
                    steps.push(Step::Bind { source: cstring(dir)?, target: cstring(&inside(dir))?, writable: false });
                }
                _ => {}
            }
        }
        let share = share.canonicalize()?;
        let mut parent = PathBuf::from("/");
        for part in share.components().skip(1) {
            parent.push(part);
            steps.push(Step::Mkdir(cstring(&inside(&parent))?));
        }
        steps.push(Step::Bind { source: cstring(&share)?, target: cstring(&inside(&share))?, writable: true });
        let uid = nix::unistd::geteuid();
        let id_maps = (!uid.is_root()).then(|| {
            let gid = nix::unistd::getegid();
            (CString::new(format!("0 {uid} 1")).unwrap(), CString::new(format!("0 {gid} 1")).unwrap())
        });
        Ok(Sandbox { root: cstring(root)?, steps, id_maps })
    }

    /// Enters the sandbox: called in the child between fork and exec.
    ///
    /// # Safety
    /// Only from a `pre_exec` hook: it changes the calling process's
    /// namespaces and root.
    pub unsafe fn enter(&self) -> io::Result<()> {
        let check = |result: libc::c_int| if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY (for the calls below): every pointer is a NUL-terminated
        // string owned by `self`, alive across the call, or null where the
        // syscall allows it.
        match &self.id_maps {
            None => check(libc::unshare(libc::CLONE_NEWNS))?,
            Some((uid_map, gid_map)) => {
                check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                write_file(c"/proc/self/setgroups", c"deny")?;
                write_file(c"/proc/self/uid_map", uid_map)?;
                write_file(c"/proc/self/gid_map", gid_map)?;
            }
        }
        // Nothing mounted here may propagate back to the host.
        check(libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        check(libc::mount(c"tmpfs".as_ptr(), self.root.as_ptr(), c"tmpfs".as_ptr(), flags, std::ptr::null()))?;
        for step in &self.steps {
            match step {
                Step::Mkdir(path) => check(libc::mkdir(path.as_ptr(), 0o755))?,
                Step::Symlink { target, link } => check(libc::symlink(target.as_ptr(), link.as_ptr()))?,
                Step::Bind { source, target, writable } => {
                    let bind = libc::MS_BIND | libc::MS_REC;
                    check(libc::mount(source.as_ptr(), target.as_ptr(), null, bind, std::ptr::null()))?;
                    let ro = if *writable { 0 } else { libc::MS_RDONLY };
                    let remount = libc::MS_REMOUNT | libc::MS_BIND | flags | ro;
                    check(libc::mount(null, target.as_ptr(), null, remount, std::ptr::null()))?;
                }
            }
        }
        // The tmpfs becomes / and the host's root is let go of.
        check(libc::chdir(self.root.as_ptr()))?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(c"/".as_ptr()))
    }
}

/// open + write + close, without allocating.
unsafe fn write_file(path: &std::ffi::CStr, contents: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: both are NUL-terminated strings alive across the calls.
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes = contents.to_bytes();
    let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    libc::close(fd);
    if written != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
