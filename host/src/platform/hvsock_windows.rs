//! Hyper-V sockets (AF_HYPERV) from the host to a VM's vsock port: how the
//! daemon reaches the agent in an HCS VM or in WSL 2's utility VM.
//!
//! No maintained Rust crate wraps AF_HYPERV (go-winio does it for Go): the
//! socket comes from socket2 with the Hyper-V family and address, and tokio
//! drives it as the stream socket it is, through `TcpStream::from_std`
//! (tokio's Windows reactor polls any stream socket the same way; OpenVMM
//! and wsld do the same). The connect itself blocks, on a blocking thread.

use std::io;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use windows_sys::core::GUID;
use windows_sys::Win32::Networking::WinSock::AF_HYPERV;
use windows_sys::Win32::System::Hypervisor::{HVSOCKET_CONNECT_TIMEOUT, HV_PROTOCOL_RAW, SOCKADDR_HV};

use super::hvsock_ids::{parse_vm_id, vsock_service_id};

/// How long a connect waits for the guest to accept (Windows' default is 2 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn guid(id: &uuid::Uuid) -> GUID {
    let (data1, data2, data3, data4) = id.as_fields();
    GUID { data1, data2, data3, data4: *data4 }
}

/// A stream to vsock `port` of the VM `vm_id`.
pub async fn connect(vm_id: &str, port: u32) -> io::Result<tokio::net::TcpStream> {
    let vm = parse_vm_id(vm_id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{vm_id:?} is not a Hyper-V VM id")))?;
    let stream = tokio::task::spawn_blocking(move || connect_blocking(&vm, port)).await.map_err(io::Error::other)??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

fn connect_blocking(vm: &uuid::Uuid, port: u32) -> io::Result<std::net::TcpStream> {
    let socket =
        Socket::new(Domain::from(i32::from(AF_HYPERV)), Type::STREAM, Some(Protocol::from(HV_PROTOCOL_RAW as i32)))?;
    set_connect_timeout(&socket, CONNECT_TIMEOUT)?;
    let address = hv_address(vm, port)?;
    socket.connect(&address).map_err(|err| {
        io::Error::new(err.kind(), format!("connecting to vsock port {port} of Hyper-V VM {vm}: {err}"))
    })?;
    Ok(socket.into())
}

fn set_connect_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::setsockopt;
    let millis = timeout.as_millis() as u32;
    // SAFETY: the socket is open; the option value is a u32 that lives
    // through the call, which only reads it.
    let result = unsafe {
        setsockopt(
            socket.as_raw_socket() as usize,
            HV_PROTOCOL_RAW as i32,
            HVSOCKET_CONNECT_TIMEOUT as i32,
            (&millis as *const u32).cast(),
            std::mem::size_of::<u32>() as i32,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A listener for a VM's connections to the host's vsock `port` (the
/// guest dials CID 2, which hv_sock sends to the service of that port on
/// the host): what the HCS backend hears the agent's readiness on. The VM's
/// document names the service and who may bind it (doc.rs `HvSocketConfig`).
///
/// tokio cannot take the listener: its accept turns the peer's address
/// into an IP address and refuses AF_HYPERV's. So the socket is
/// non-blocking and [`HvListener::accept`] polls it; the accepted stream is
/// driven by tokio as in [`connect`].
pub struct HvListener {
    socket: Socket,
}

/// How often a pending accept looks again (the readiness announcement
/// comes once a boot; a few milliseconds late costs nothing).
const ACCEPT_POLL: Duration = Duration::from_millis(20);

impl HvListener {
    pub fn bind(vm_id: &str, port: u32) -> io::Result<HvListener> {
        let vm = parse_vm_id(vm_id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{vm_id:?} is not a Hyper-V VM id")))?;
        let socket = Socket::new(
            Domain::from(i32::from(AF_HYPERV)),
            Type::STREAM,
            Some(Protocol::from(HV_PROTOCOL_RAW as i32)),
        )?;
        socket.bind(&hv_address(&vm, port)?).map_err(|err| {
            io::Error::new(err.kind(), format!("listening on vsock port {port} for Hyper-V VM {vm}: {err}"))
        })?;
        socket.listen(4)?;
        socket.set_nonblocking(true)?;
        Ok(HvListener { socket })
    }

    /// The next connection from the VM.
    pub async fn accept(&self) -> io::Result<tokio::net::TcpStream> {
        loop {
            match self.socket.accept() {
                Ok((stream, _peer)) => {
                    stream.set_nonblocking(true)?;
                    return tokio::net::TcpStream::from_std(stream.into());
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => tokio::time::sleep(ACCEPT_POLL).await,
                Err(err) => return Err(err),
            }
        }
    }
}

/// A SOCKADDR_HV for `port` of the VM `vm`.
fn hv_address(vm: &uuid::Uuid, port: u32) -> io::Result<SockAddr> {
    let address =
        SOCKADDR_HV { Family: AF_HYPERV, Reserved: 0, VmId: guid(vm), ServiceId: guid(&vsock_service_id(port)) };
    // SAFETY: the closure writes one SOCKADDR_HV, which fits in the
    // sockaddr_storage socket2 hands it, and sets the length to its size.
    let ((), address) = unsafe {
        SockAddr::try_init(|storage, len| {
            std::ptr::write(storage.cast::<SOCKADDR_HV>(), address);
            *len = std::mem::size_of::<SOCKADDR_HV>() as _;
            Ok(())
        })
    }?;
    Ok(address)
}
