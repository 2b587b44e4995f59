//! Descriptor plumbing: pidfds for shims we did not start, and tokio
//! registration of raw descriptors.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use tokio::io::unix::AsyncFd;

/// Registers a descriptor with tokio's reactor.
pub(super) fn register(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its descriptor open and unchanged until it is
    // dropped, which happens only with the AsyncFd that owns it.
    unsafe { AsyncFd::register(fd) }.ok()
}

/// Resolves when the process behind `pidfd` has ended (a re-adopted shim,
/// which is not our child).
pub(super) async fn pidfd_closed(pidfd: OwnedFd) {
    if let Some(fd) = register(pidfd) {
        let _ = fd.readable().await;
    }
}

pub(super) fn pidfd(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: the kernel just returned this descriptor; we own it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Guards re-adoption against pid reuse: the pid must still be a shim for
/// this very container directory.
pub(super) fn shim_is_ours(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.get(1) == Some(&&b"shim"[..]) && args.get(2) == Some(&dir.as_os_str().as_encoded_bytes())
}
