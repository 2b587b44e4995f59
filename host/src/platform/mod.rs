//! What the host's operating system does differently, in one place: the
//! daemon's lock, detaching the daemon from the terminal, processes that
//! die with the daemon, stopping and killing by pid, the signals that stop
//! the daemon, the API's private socket or pipe, private state files, and
//! the terminal of `berth shell`.
//!
//! Each platform module offers the same functions; callers (lifecycle.rs,
//! daemon.rs, vm/owned.rs, api/server.rs, shell.rs) use them without `cfg`.
//! On Windows a stop request is a named event rather than a signal.
//! The modules without `cfg` are plain code that Windows needs, tested on
//! every host.

pub mod api_address;
#[cfg(any(windows, test))]
pub mod hvsock_ids;
#[cfg(any(windows, test))]
pub mod sddl;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(unix)]
mod unix_terminal;
#[cfg(unix)]
pub use unix_terminal::*;
#[cfg(unix)]
#[path = "private_files_unix.rs"]
pub mod private_files;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
#[cfg(windows)]
mod windows_pipe;
#[cfg(windows)]
pub use windows_pipe::*;
#[cfg(windows)]
mod windows_terminal;
#[cfg(windows)]
pub use windows_terminal::*;
#[cfg(windows)]
pub mod hvsock_windows;
#[cfg(windows)]
#[path = "private_files_windows.rs"]
pub mod private_files;
#[cfg(windows)]
pub mod windows_dll;
