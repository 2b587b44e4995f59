//! The local console of `berth shell` on Windows: raw mode with virtual
//! terminal sequences (what a Linux program in the VM speaks), its size,
//! and Ctrl+C / Ctrl+Break forwarded to the remote command.

use std::io;
use std::os::windows::io::AsRawHandle;
use std::time::Duration;

use anyhow::{bail, Result};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Console::{
    GetConsoleMode, GetConsoleScreenBufferInfo, SetConsoleMode, CONSOLE_MODE, CONSOLE_SCREEN_BUFFER_INFO,
    DISABLE_NEWLINE_AUTO_RETURN, ENABLE_ECHO_INPUT, ENABLE_LINE_INPUT, ENABLE_PROCESSED_INPUT,
    ENABLE_VIRTUAL_TERMINAL_INPUT, ENABLE_VIRTUAL_TERMINAL_PROCESSING,
};

/// Linux's numbers, as the guest takes them.
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// How often the console's size is looked at: a console program gets no
/// SIGWINCH, and the resize event arrives only through ReadConsoleInput,
/// which would compete with the thread that reads stdin.
const RESIZE_POLL: Duration = Duration::from_millis(250);

/// What happened locally that the remote command should hear about.
pub enum ShellEvent {
    Resized,
    /// A signal to forward, by its Linux number.
    Signal(i32),
}

/// Ctrl+C (SIGINT) and Ctrl+Break (SIGTERM), and size changes.
pub struct ShellSignals {
    ctrl_c: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
    size: Option<(u32, u32)>,
}

impl ShellSignals {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> io::Result<ShellSignals> {
        Ok(ShellSignals {
            ctrl_c: tokio::signal::windows::ctrl_c()?,
            ctrl_break: tokio::signal::windows::ctrl_break()?,
            size: terminal_size(),
        })
    }

    pub async fn next(&mut self) -> ShellEvent {
        loop {
            tokio::select! {
                _ = self.ctrl_c.recv() => return ShellEvent::Signal(SIGINT),
                _ = self.ctrl_break.recv() => return ShellEvent::Signal(SIGTERM),
                () = tokio::time::sleep(RESIZE_POLL) => {
                    let now = terminal_size();
                    if now != self.size {
                        self.size = now;
                        return ShellEvent::Resized;
                    }
                }
            }
        }
    }
}

/// The console window's (rows, columns), if stdout is a console.
pub fn terminal_size() -> Option<(u32, u32)> {
    // SAFETY: the struct is plain data; zeroes are overwritten on success.
    let mut info: CONSOLE_SCREEN_BUFFER_INFO = unsafe { std::mem::zeroed() };
    let stdout = std::io::stdout().as_raw_handle() as HANDLE;
    // SAFETY: stdout's handle is open for the process's life; the call
    // writes one CONSOLE_SCREEN_BUFFER_INFO into `info`.
    if unsafe { GetConsoleScreenBufferInfo(stdout, &mut info) } == 0 {
        return None;
    }
    let window = info.srWindow;
    let rows = i32::from(window.Bottom) - i32::from(window.Top) + 1;
    let cols = i32::from(window.Right) - i32::from(window.Left) + 1;
    (rows > 0 && cols > 0).then_some((rows as u32, cols as u32))
}

fn console_mode(handle: HANDLE) -> Option<CONSOLE_MODE> {
    let mut mode: CONSOLE_MODE = 0;
    // SAFETY: `handle` is one of the process's standard handles; the call
    // writes one u32.
    (unsafe { GetConsoleMode(handle, &mut mode) } != 0).then_some(mode)
}

/// Raw console input as VT sequences, VT output; restored when dropped.
pub struct RawMode {
    stdin: (HANDLE, CONSOLE_MODE),
    stdout: (HANDLE, CONSOLE_MODE),
}

impl RawMode {
    pub fn enter() -> Result<RawMode> {
        let stdin = std::io::stdin().as_raw_handle() as HANDLE;
        let stdout = std::io::stdout().as_raw_handle() as HANDLE;
        let (Some(in_mode), Some(out_mode)) = (console_mode(stdin), console_mode(stdout)) else {
            bail!("reading the console mode: {}", io::Error::last_os_error());
        };
        let raw_in = (in_mode & !(ENABLE_ECHO_INPUT | ENABLE_LINE_INPUT | ENABLE_PROCESSED_INPUT))
            | ENABLE_VIRTUAL_TERMINAL_INPUT;
        let vt_out = out_mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING | DISABLE_NEWLINE_AUTO_RETURN;
        // SAFETY: both handles are the process's consoles (GetConsoleMode
        // succeeded on them); the modes are flag words.
        let set = unsafe { SetConsoleMode(stdin, raw_in) != 0 && SetConsoleMode(stdout, vt_out) != 0 };
        let saved = RawMode { stdin: (stdin, in_mode), stdout: (stdout, out_mode) };
        if !set {
            let err = io::Error::last_os_error();
            drop(saved);
            bail!("entering raw console mode (needs Windows 10 1809 or later): {err}");
        }
        Ok(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the handles and modes read in enter(); the standard
        // handles stay open for the process's life.
        unsafe {
            SetConsoleMode(self.stdin.0, self.stdin.1);
            SetConsoleMode(self.stdout.0, self.stdout.1);
        }
    }
}
