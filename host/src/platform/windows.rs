//! Windows: what the daemon's life needs (its lock, processes that die
//! with it, stop requests). The API's pipe is windows_pipe.rs, the shell's
//! console windows_terminal.rs.

use std::fs::File;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{CloseHandle, ERROR_LOCK_VIOLATION, HANDLE};
use windows_sys::Win32::Storage::FileSystem::{LockFileEx, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY};
use windows_sys::Win32::System::IO::OVERLAPPED;

/// An exclusive lock on a file, held until dropped: closing the handle
/// releases it, and so does the death of the process.
pub struct ExclusiveLock {
    _held: File,
}

/// Locks `file` without blocking; None when another process holds it.
pub fn try_lock_exclusive(file: File) -> io::Result<Option<ExclusiveLock>> {
    // SAFETY: OVERLAPPED is plain data; all zeroes means "from offset 0".
    let mut overlapped: OVERLAPPED = unsafe { std::mem::zeroed() };
    // SAFETY: the handle belongs to `file`, which outlives the call, and
    // `overlapped` is a live OVERLAPPED; the lock covers the whole range.
    let locked = unsafe {
        LockFileEx(
            file.as_raw_handle() as HANDLE,
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            u32::MAX,
            u32::MAX,
            &mut overlapped,
        )
    };
    if locked != 0 {
        return Ok(Some(ExclusiveLock { _held: file }));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Starts `cmd` without a console and in a process group of its own, so the
/// terminal's Ctrl+C does not reach the daemon.
pub fn detach_from_terminal(cmd: &mut std::process::Command) {
    use std::os::windows::process::CommandExt;
    use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS};
    cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
}

/// The job object every owned process joins. It is closed only when the
/// daemon's process ends, and KILL_ON_JOB_CLOSE then ends them all: the
/// Windows form of PR_SET_PDEATHSIG.
fn owned_processes_job() -> io::Result<HANDLE> {
    use windows_sys::Win32::System::JobObjects::{
        CreateJobObjectW, JobObjectExtendedLimitInformation, SetInformationJobObject,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    };
    static JOB: OnceLock<usize> = OnceLock::new();
    if let Some(&job) = JOB.get() {
        return Ok(job as HANDLE);
    }
    // SAFETY: no security attributes and no name: a new anonymous job.
    let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if job.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the struct is plain data; zeroes are "no limit" but for the flag set below.
    let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: `job` is the handle just created; the pointer and size
    // describe `limits`, which lives through the call.
    let set = unsafe {
        SetInformationJobObject(
            job,
            JobObjectExtendedLimitInformation,
            (&limits as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if set == 0 {
        let err = io::Error::last_os_error();
        // SAFETY: closing the handle created above, used nowhere else.
        unsafe { CloseHandle(job) };
        return Err(err);
    }
    // Another thread may have won the race: keep one job, close ours.
    let kept = *JOB.get_or_init(|| job as usize);
    if kept != job as usize {
        // SAFETY: as above; the kept handle is another one.
        unsafe { CloseHandle(job) };
    }
    Ok(kept as HANDLE)
}

/// Spawns a process that dies with the daemon (see [`owned_processes_job`]).
pub fn spawn_owned(cmd: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    use windows_sys::Win32::System::JobObjects::AssignProcessToJobObject;
    let job = owned_processes_job()?;
    let mut child = cmd.spawn()?;
    let Some(process) = child.raw_handle() else {
        return Ok(child); // it has exited already
    };
    // SAFETY: both handles are open: the job for the process's lifetime,
    // the child's while `child` is not reaped.
    if unsafe { AssignProcessToJobObject(job, process as HANDLE) } == 0 {
        let err = io::Error::last_os_error();
        let _ = child.start_kill();
        return Err(err);
    }
    Ok(child)
}

/// The event a daemon waits on for a stop request, named by its pid in
/// the session's namespace. Created with the process's default DACL (the
/// user, SYSTEM, Administrators), so another user cannot stop this daemon.
fn stop_event_name(pid: u32) -> Vec<u16> {
    format!("Local\\berth-daemon-stop-{pid}").encode_utf16().chain([0]).collect()
}

/// Asks the daemon `pid` to stop cleanly: sets the event it waits on
/// (Windows has no SIGTERM for a process without a console).
pub fn request_stop(pid: u32) -> io::Result<()> {
    use windows_sys::Win32::System::Threading::{OpenEventW, SetEvent, EVENT_MODIFY_STATE};
    let name = stop_event_name(pid);
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let event = unsafe { OpenEventW(EVENT_MODIFY_STATE, 0, name.as_ptr()) };
    if event.is_null() {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("process {pid} is not a Berth daemon that takes stop requests: {err}"),
        ));
    }
    // SAFETY: `event` was just opened with EVENT_MODIFY_STATE.
    let set = unsafe { SetEvent(event) };
    let result = if set == 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
    // SAFETY: closing the handle opened above, used nowhere else.
    unsafe { CloseHandle(event) };
    result
}

/// Ends a process at once.
pub fn kill_now(pid: u32) -> io::Result<()> {
    use windows_sys::Win32::System::Threading::{OpenProcess, TerminateProcess, PROCESS_TERMINATE};
    // SAFETY: plain integer arguments; a null handle is checked below.
    let process = unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `process` is the handle just opened with PROCESS_TERMINATE.
    let terminated = unsafe { TerminateProcess(process, 1) };
    let result = if terminated == 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
    // SAFETY: closing the handle opened above, used nowhere else.
    unsafe { CloseHandle(process) };
    result
}

/// None: another process's command line is not public on Windows. Nothing
/// needs it there: the processes a dead daemon owned died with its job
/// object (see [`spawn_owned`]).
pub fn command_line(_pid: u32) -> Option<String> {
    None
}

/// No sockets are left in run/ on Windows.
pub fn is_socket(_file_type: &std::fs::FileType) -> bool {
    false
}

/// What stops the daemon: `berth stop` (its stop event, see
/// [`request_stop`]), Ctrl+C or Ctrl+Break in a foreground `berth daemon`,
/// its console closing, or the user logging off or shutting down.
pub struct StopSignals {
    requested: std::sync::Arc<tokio::sync::Notify>,
    ctrl_c: tokio::signal::windows::CtrlC,
    ctrl_break: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
    shutdown: tokio::signal::windows::CtrlShutdown,
}

impl StopSignals {
    /// Installs the handlers and creates this process's stop event; needs
    /// a tokio runtime. A thread waits on the event for the process's life.
    pub fn install() -> io::Result<StopSignals> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
        use windows_sys::Win32::System::Threading::{CreateEventW, ResetEvent, WaitForSingleObject, INFINITE};
        let name = stop_event_name(std::process::id());
        // SAFETY: default security; manual reset (reset by the waiting
        // thread after each request), initially unset; `name` is NUL-terminated.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, name.as_ptr()) };
        if event.is_null() {
            return Err(io::Error::last_os_error());
        }
        let requested = std::sync::Arc::new(tokio::sync::Notify::new());
        let notify = requested.clone();
        let event = event as usize;
        std::thread::Builder::new().name("stop-event".into()).spawn(move || loop {
            // SAFETY: the event handle stays open for the process's life
            // (never closed), and only this thread waits on it.
            let woke = unsafe { WaitForSingleObject(event as HANDLE, INFINITE) };
            if woke != 0 {
                return; // WAIT_FAILED: nothing more to wait for
            }
            // SAFETY: as above.
            unsafe { ResetEvent(event as HANDLE) };
            notify.notify_one();
        })?;
        Ok(StopSignals {
            requested,
            ctrl_c: ctrl_c()?,
            ctrl_break: ctrl_break()?,
            close: ctrl_close()?,
            shutdown: ctrl_shutdown()?,
        })
    }

    /// Resolves at the next stop request.
    pub async fn recv(&mut self) {
        tokio::select! {
            () = self.requested.notified() => {}
            _ = self.ctrl_c.recv() => {}
            _ = self.ctrl_break.recv() => {}
            _ = self.close.recv() => {}
            _ = self.shutdown.recv() => {}
        }
    }
}

/// Points stdout at NUL, so that nothing more reaches whoever reads it
/// (`berth start` reads exactly one line). Call with stdout's lock held.
pub fn detach_stdout() {
    use std::os::windows::io::IntoRawHandle;
    use windows_sys::Win32::System::Console::{GetStdHandle, SetStdHandle, STD_OUTPUT_HANDLE};
    let Ok(nul) = std::fs::OpenOptions::new().write(true).open("NUL") else { return };
    // SAFETY: std looks the handle up at every write, so replacing it is
    // what dup2 is on Unix; the caller holds stdout's lock, so no Rust
    // writer races it. The NUL handle stays open for the process's life.
    unsafe {
        let pipe = GetStdHandle(STD_OUTPUT_HANDLE);
        if SetStdHandle(STD_OUTPUT_HANDLE, nul.into_raw_handle() as HANDLE) != 0 && !pipe.is_null() {
            CloseHandle(pipe);
        }
    }
}

/// Windows has no SIGPIPE: a closed pipe is an error at the write.
pub fn restore_default_sigpipe() {}

/// Whether a bind failed because the host has no such address family (no
/// IPv6): WSAEAFNOSUPPORT or WSAEADDRNOTAVAIL.
pub fn is_missing_address_family(err: &io::Error) -> bool {
    use windows_sys::Win32::Networking::WinSock::{WSAEADDRNOTAVAIL, WSAEAFNOSUPPORT};
    matches!(err.raw_os_error(), Some(WSAEAFNOSUPPORT) | Some(WSAEADDRNOTAVAIL))
}
