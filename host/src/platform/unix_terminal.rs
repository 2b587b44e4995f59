//! The local terminal of `berth shell` on Linux and macOS: raw mode, its
//! size, and the signals that are forwarded to the remote command.

use std::io;

use anyhow::{Context, Result};

/// What happened locally that the remote command should hear about.
pub enum ShellEvent {
    /// The terminal changed size.
    Resized,
    /// A signal to forward, by its Linux number (the guest's).
    Signal(i32),
}

/// SIGWINCH, SIGINT, SIGTERM and SIGHUP, caught for as long as this lives.
pub struct ShellSignals {
    winch: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl ShellSignals {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> io::Result<ShellSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShellSignals {
            winch: signal(SignalKind::window_change())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub async fn next(&mut self) -> ShellEvent {
        // The Linux numbers: these three are the same on macOS.
        tokio::select! {
            _ = self.winch.recv() => ShellEvent::Resized,
            _ = self.int.recv() => ShellEvent::Signal(libc::SIGINT),
            _ = self.term.recv() => ShellEvent::Signal(libc::SIGTERM),
            _ = self.hup.recv() => ShellEvent::Signal(libc::SIGHUP),
        }
    }
}

/// The terminal's (rows, columns), if stdout is one.
pub fn terminal_size() -> Option<(u32, u32)> {
    // SAFETY: winsize is plain old data; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row as u32, ws.ws_col as u32))
}

/// Puts the local terminal in raw mode; restores it when dropped.
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enter() -> Result<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading terminal settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("entering raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}
