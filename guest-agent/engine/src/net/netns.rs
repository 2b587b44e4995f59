//! Network namespaces kept as bind-mounted files (what `ip netns add`
//! does), so a container's namespace exists, with its interfaces set up,
//! before its process does: the runtime joins the file instead of making
//! a namespace of its own, and the first command already has eth0.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `statfs` type of nsfs, what a live namespace file is a mount of.
const NSFS_MAGIC: i64 = 0x6e73_6673;

fn io_context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Whether `path` is a mounted network namespace.
pub fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| {
        // f_type is i64 with glibc, u64 with musl: one cast for both.
        #[allow(clippy::unnecessary_cast)]
        let kind = s.filesystem_type().0 as i64;
        kind == NSFS_MAGIC
    })
}

/// A new network namespace with its loopback up, kept at `path`.
pub fn create(path: &Path) -> io::Result<()> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(path).map_err(io_context(format!("creating {}", path.display())))?;
    let target = path.to_path_buf();
    // A thread of its own: unshare(CLONE_NEWNET) moves only the calling
    // thread, which ends right after the bind mount keeps the namespace.
    let result = std::thread::spawn(move || -> io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        crate::netif::set_up("lo")?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(Some(own.as_str()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
            .map_err(io::Error::from)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?;
    if let Err(err) = result {
        let _ = std::fs::remove_file(path);
        return Err(io::Error::new(err.kind(), format!("creating the network namespace {}: {err}", path.display())));
    }
    Ok(())
}

/// Unmounts and removes a namespace file; the namespace itself goes when
/// its last process does (and takes its interfaces with it).
pub fn remove(path: &Path) -> io::Result<()> {
    if is_netns(path) {
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a thread of its own inside the namespace at `netns` (the
/// caller's when `None`): sockets `f` opens, processes it starts and the
/// /proc/sys/net files it writes are that namespace's.
pub fn run_in<T: Send + 'static>(
    netns: Option<&Path>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    std::thread::spawn(move || {
        if let Some(path) = &netns {
            let file = std::fs::File::open(path).map_err(io_context(format!("opening {}", path.display())))?;
            // SAFETY: setns on a namespace descriptor we hold open; it moves
            // only this thread, which ends with `f`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io_context(format!("joining {}", path.display()))(io::Error::last_os_error()));
            }
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("the network thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_lives_in_its_file_until_removed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns");
        create(&path).unwrap();
        assert!(is_netns(&path));
        create(&path).unwrap();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let inside = run_in(Some(&path), || std::fs::read_link("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(ours, inside, "the thread ran in the new namespace");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
