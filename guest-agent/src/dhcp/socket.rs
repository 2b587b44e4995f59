//! The interface the client leases for and the packet socket it speaks
//! through before it has an address.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::message::{client_payload, Client, Reply};

/// An Ethernet interface: its name, index and MAC, as this thread's
/// network namespace has them (netlink, not sysfs, which shows the
/// namespace it was mounted in).
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: i32,
    pub mac: [u8; 6],
}

impl Interface {
    pub fn lookup(name: &str) -> io::Result<Interface> {
        let index = nix::net::if_::if_nametoindex(name).map_err(|e| io::Error::other(format!("{name}: {e}")))?;
        let mac = nix::ifaddrs::getifaddrs()?
            .filter(|ifa| ifa.interface_name == name)
            .find_map(|ifa| ifa.address?.as_link_addr()?.addr())
            .ok_or_else(|| io::Error::other(format!("{name}: no Ethernet MAC")))?;
        let index = i32::try_from(index).map_err(|_| io::Error::other(format!("{name}: bad index {index}")))?;
        Ok(Interface { name: name.to_string(), index, mac })
    }
}

/// An AF_PACKET datagram socket for IPv4 on one interface: the kernel adds
/// and strips the Ethernet header, the client writes the IP and UDP ones.
pub struct PacketSocket {
    fd: OwnedFd,
    index: i32,
}

const ETH_P_IP: u16 = libc::ETH_P_IP as u16;

impl PacketSocket {
    pub fn open(iface: &Interface) -> io::Result<PacketSocket> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, ETH_P_IP.to_be().into()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a socket we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = link_addr(iface.index, [0; 6]);
        // SAFETY: addr is a valid sockaddr_ll and its size is passed with it.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, index: iface.index })
    }

    /// Sends an IPv4 packet to the link's broadcast address.
    pub fn broadcast(&self, packet: &[u8]) -> io::Result<()> {
        let addr = link_addr(self.index, [0xff; 6]);
        // SAFETY: packet is a live buffer of the given length; addr a valid
        // sockaddr_ll of the given size.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The first reply to `client`'s transaction within `wait`; every
    /// other packet on the link is skipped.
    pub fn reply(&self, client: &Client, wait: Duration) -> io::Result<Option<Reply>> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut poll = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let timeout = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: one pollfd, valid for the call.
            let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if ready == 0 {
                continue;
            }
            // SAFETY: buf is a live, writable buffer of buf.len() bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                    continue;
                }
                return Err(err);
            }
            if let Some(reply) = client_payload(&buf[..n as usize]).and_then(|payload| client.reply(payload)) {
                return Ok(Some(reply));
            }
        }
    }
}

fn link_addr(index: i32, mac: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr_bytes = [0u8; 8];
    addr_bytes[..6].copy_from_slice(&mac);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_IP.to_be(),
        sll_ifindex: index,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr_bytes,
    }
}
