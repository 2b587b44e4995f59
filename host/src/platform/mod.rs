//! What the host's operating system does differently, in one place: the
//! daemon's lock, detaching the daemon from the terminal, processes that
//! die with the daemon, stopping and killing by pid, the signals that stop
//! the daemon, and the API's private unix socket.
//!
//! Each platform module offers the same functions; callers (lifecycle.rs,
//! daemon.rs, vm/owned.rs) use them without `cfg`. Windows has what it can
//! honestly offer today; what needs the daemon's control pipe (a graceful
//! stop without signals) says so in its error.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
