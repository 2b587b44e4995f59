//! How much a host→guest vsock stream may have in flight.
//!
//! A virtio-vsock receiver's socket buffer is the credit its peer may send
//! ahead of it, and the kernel's default of 256 KiB keeps a stream waiting
//! for credit updates rather than moving data. One raw stream host → VM
//! (TCG, tests/bench/ports.sh's sink, 256 MiB, best of 2): 0.40 Gbit/s at
//! 256 KiB, 0.50 at 1 MiB, 0.57 at 2 MiB, 0.63 at 4 MiB, 0.59 at 8 MiB.
//!
//! The window is memory the guest kernel holds while the reader lags, with
//! no global limit as TCP has (tcp_mem). The agent's own streams (the
//! host's gRPC channel: image loads, build contexts, copies) are few and
//! always wide. Forwarded connections come from whoever reaches a published
//! port, and a container that stops reading would let them fill the VM's
//! memory: only [`WIDE_FORWARDS`] at a time get the wide window, the rest
//! keep the kernel's default, as they had before.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The wide window (see the figures above).
pub const WIDE: u64 = 4 << 20;
/// How many forwarded connections hold a wide window at once: at most
/// 128 MiB of the guest's memory queued for lagging containers.
pub const WIDE_FORWARDS: usize = 32;

// linux/vm_sockets.h (the libc crate does not have them).
const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;

fn set(fd: RawFd, option: libc::c_int, bytes: u64) -> io::Result<()> {
    // SAFETY: `fd` is a socket the caller owns for the call's duration, and
    // the value is a u64 of the length passed, as AF_VSOCK's options take.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::AF_VSOCK,
            option,
            (&bytes as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A vsock listener on `port` whose streams may be widened to [`WIDE`]
/// (`wide`: they are, from the start; the kernel copies a listener's
/// buffer sizes into every stream it accepts). A transport that refuses
/// the sizes (not virtio's) leaves the listener as it was: slower, not
/// broken.
pub fn listen(port: u32, wide: bool) -> io::Result<tokio_vsock::VsockListener> {
    let listener = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(libc::VMADDR_CID_ANY, port))?;
    let fd = listener.as_raw_fd();
    let widened = set(fd, SO_VM_SOCKETS_BUFFER_MAX_SIZE, WIDE).and_then(|()| {
        if wide {
            set(fd, SO_VM_SOCKETS_BUFFER_SIZE, WIDE)
        } else {
            Ok(())
        }
    });
    if let Err(err) = widened {
        tracing::warn!(port, %err, "vsock streams keep the kernel's default window");
    }
    Ok(listener)
}

/// Widens a forwarding stream's window if one of the [`WIDE_FORWARDS`] is
/// free, for as long as the permit this returns is held.
pub fn widen_forward(stream: &tokio_vsock::VsockStream) -> Option<OwnedSemaphorePermit> {
    static FREE: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let permit = FREE.get_or_init(|| Arc::new(Semaphore::new(WIDE_FORWARDS))).clone().try_acquire_owned().ok()?;
    match set(stream.as_raw_fd(), SO_VM_SOCKETS_BUFFER_SIZE, WIDE) {
        Ok(()) => Some(permit),
        Err(err) => {
            tracing::debug!(%err, "the forwarding stream keeps the default window");
            None
        }
    }
}
