//! Descriptors handed to a child at fixed numbers: the shim's READY_FD and
//! DEVICE_FILTER_FD, `enter`'s TERMINAL_FD, PID_FD and PLAN_FD (3 to 5).
//! They are put in place between fork and exec with dup2, which is only
//! right when no source sits at a target's number: a dup2 onto a source
//! closes it, and a dup2 of a descriptor onto itself leaves its
//! close-on-exec flag set, so the child never gets it. Any descriptor of
//! ours may have such a number (the lowest free one is what `open` gives),
//! so every source is first moved above them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Above every fixed number a child of ours expects.
const FIRST_FREE: RawFd = 10;

/// `fd` itself, or a copy of it above the fixed numbers (closing `fd`).
pub fn above_fixed(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= FIRST_FREE {
        return Ok(fd);
    }
    copy_above_fixed(fd.as_fd())
}

/// A copy above the fixed numbers, for a descriptor that stays ours (a
/// loaded device filter that other containers share).
pub fn copy_above_fixed(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_FREE)).map_err(io::Error::from)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Puts each source at its target, in the child between fork and exec
/// (async-signal-safe: dup2 only). Sources must come from [`above_fixed`]
/// or [`copy_above_fixed`]; dup2 clears close-on-exec on the copies.
pub fn place(fds: &[(RawFd, RawFd)]) -> io::Result<()> {
    for &(source, target) in fds {
        debug_assert!(source >= FIRST_FREE);
        // SAFETY: dup2 on descriptor numbers that are open in this process.
        if unsafe { libc::dup2(source, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_end_up_above_the_fixed_numbers() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let moved = above_fixed(read).unwrap();
        assert!(moved.as_raw_fd() >= FIRST_FREE, "{}", moved.as_raw_fd());
        let copy = copy_above_fixed(write.as_fd()).unwrap();
        assert!(copy.as_raw_fd() >= FIRST_FREE && copy.as_raw_fd() != write.as_raw_fd());
        // One already above them is kept as it is.
        let number = copy.as_raw_fd();
        assert_eq!(above_fixed(copy).unwrap().as_raw_fd(), number);
    }
}
