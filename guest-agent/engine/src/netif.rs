//! Minimal IPv4 interface set-up with the classic ioctls.
//!
//! Written here rather than pulling in a netlink stack: PID 1 needs exactly
//! "address, link up, default route" once at boot, and each container's new
//! network namespace its loopback up; these ioctls do that with no
//! dependency and no extra binary in the initramfs.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name too long: {name}")));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux, and the
    // kernel reads this as sockaddr_in because sa_family is AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

// The SIOC* constants are c_ulong everywhere, but the request parameter of
// ioctl(2) is c_ulong on glibc and c_int on musl: convert in one place.
fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
    // SAFETY: every caller passes the struct type the request expects, and
    // `arg` is a live exclusive reference for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as libc::Ioctl, arg as *mut T) } < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(())
}

/// Brings an interface up.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS")
}

/// Address, netmask, link up, default route.
pub fn configure_ipv4(name: &str, addr: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req, "SIOCSIFADDR")?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req, "SIOCSIFNETMASK")?;
    set_up(name)?;

    // SAFETY: rtentry is plain old data; all-zero is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    ioctl(&sock, libc::SIOCADDRT, &mut route, "SIOCADDRT")
}
