//! The Docker API on a named pipe (`\\.\pipe\berth_engine`), what the docker
//! CLI on Windows dials for an `npipe://` host, and the user's SID that the
//! pipe's and the VM's security descriptors name.
//!
//! The pipe admits SYSTEM and the user only (sddl.rs says why), is created
//! with FILE_FLAG_FIRST_PIPE_INSTANCE so that a process that created the
//! name first (to impersonate the engine) makes the bind fail instead of
//! being served beside, and refuses remote clients.

use std::io;

use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
};

use super::api_address::ApiAddress;
use super::sddl::{self, Sid};

/// A connection's stream, as the API server serves it.
pub type ApiStream = NamedPipeServer;

/// Nothing to watch for a hang-up on a pipe (see [`peer_hung_up`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket;

impl ConnectionSocket {
    /// A TCP connection is watched by its next write failing, as on Unix.
    pub fn of_tcp(_stream: &tokio::net::TcpStream) -> Option<ConnectionSocket> {
        None
    }
}

/// Never resolves: a pipe has no half-close to tell a hang-up from, so a
/// client that is gone is noticed at the output's next write (as over TCP).
pub async fn peer_hung_up(_socket: Option<ConnectionSocket>) {
    std::future::pending().await
}

/// A security descriptor that LocalFree releases.
struct LocalSecurityDescriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is memory from LocalAlloc that only this value
// owns; Windows ties it to no thread.
unsafe impl Send for LocalSecurityDescriptor {}
// SAFETY: as above; it is only read once built.
unsafe impl Sync for LocalSecurityDescriptor {}

impl LocalSecurityDescriptor {
    fn from_sddl(text: &str) -> io::Result<LocalSecurityDescriptor> {
        use windows_sys::Win32::Security::Authorization::{
            ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
        };
        let wide: Vec<u16> = text.encode_utf16().chain([0]).collect();
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `wide` is NUL-terminated and outlives the call, which
        // writes one pointer to memory it allocated (freed in Drop).
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LocalSecurityDescriptor(descriptor))
    }
}

impl Drop for LocalSecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from ConvertStringSecurityDescriptor…W,
        // whose memory is LocalFree's, and is freed once.
        unsafe { LocalFree(self.0) };
    }
}

/// The SID of the user this process runs as.
pub fn current_user_sid() -> io::Result<Sid> {
    use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of our own process; the call writes one handle.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut needed = 0u32;
    // SAFETY: a size query: no buffer, the call writes the size it needs.
    unsafe { GetTokenInformation(token, TokenUser, std::ptr::null_mut(), 0, &mut needed) };
    // u64s keep the buffer aligned for TOKEN_USER's pointer.
    let mut buffer = vec![0u64; (needed as usize).div_ceil(8).max(1)];
    // SAFETY: the buffer has at least `needed` bytes, as the query said.
    let ok = unsafe { GetTokenInformation(token, TokenUser, buffer.as_mut_ptr().cast(), needed, &mut needed) };
    let err = io::Error::last_os_error();
    // SAFETY: the token handle opened above, used nowhere else.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err(err);
    }
    // SAFETY: GetTokenInformation(TokenUser) filled the buffer with a
    // TOKEN_USER whose SID points into the same buffer, alive below.
    let sid = unsafe { (*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `sid` is valid (above); the call allocates the string.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `text` is a NUL-terminated UTF-16 string from the call above.
    let string = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(text, len))
    };
    // SAFETY: ConvertSidToStringSidW's string is LocalFree's, freed once.
    unsafe { LocalFree(text.cast()) };
    Sid::parse(&string).map_err(|err| io::Error::other(err.to_string()))
}

/// Whether this process runs with an elevated (administrator) token:
/// what HCS requires of the one who creates a VM.
pub fn is_elevated() -> io::Result<bool> {
    use windows_sys::Win32::Security::{TokenElevation, TOKEN_ELEVATION};
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of our own process; the call writes one handle.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
    let mut written = 0u32;
    // SAFETY: the buffer is one TOKEN_ELEVATION, of the size passed.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenElevation,
            (&mut elevation as *mut TOKEN_ELEVATION).cast(),
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &mut written,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: the token handle opened above, used nowhere else.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err(err);
    }
    Ok(elevation.TokenIsElevated != 0)
}

/// The API's named pipe: one instance waits for the next client at a time.
pub struct ApiListener {
    path: String,
    security: LocalSecurityDescriptor,
    waiting: NamedPipeServer,
}

impl ApiListener {
    pub fn bind(address: &ApiAddress) -> io::Result<ApiListener> {
        let ApiAddress::NamedPipe(pipe) = address else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{address}: Windows serves the API on a named pipe"),
            ));
        };
        let security = LocalSecurityDescriptor::from_sddl(&sddl::api_pipe_descriptor(&current_user_sid()?))?;
        let path = pipe.path();
        let waiting = create_instance(&path, &security, true).map_err(|err| {
            if err.kind() == io::ErrorKind::PermissionDenied {
                io::Error::new(
                    err.kind(),
                    format!("{path} exists already: another Berth daemon, or a process that took its name"),
                )
            } else {
                err
            }
        })?;
        Ok(ApiListener { path, security, waiting })
    }

    /// The next connected client.
    pub async fn accept(&mut self) -> io::Result<(ApiStream, Option<ConnectionSocket>)> {
        self.waiting.connect().await?;
        // The next instance exists before this one is handed out, so a
        // client never finds the pipe missing between two.
        let next = create_instance(&self.path, &self.security, false)?;
        Ok((std::mem::replace(&mut self.waiting, next), None))
    }
}

fn create_instance(path: &str, security: &LocalSecurityDescriptor, first: bool) -> io::Result<NamedPipeServer> {
    let mut attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: security.0,
        bInheritHandle: 0,
    };
    let mut options = ServerOptions::new();
    options.first_pipe_instance(first).reject_remote_clients(true);
    // SAFETY: `attributes` is a SECURITY_ATTRIBUTES whose descriptor lives in
    // `security`, both alive through the call, which only reads them.
    unsafe { options.create_with_security_attributes_raw(path, (&mut attributes as *mut SECURITY_ATTRIBUTES).cast()) }
}
