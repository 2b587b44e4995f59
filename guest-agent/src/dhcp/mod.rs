//! The VM's DHCP client (`berth.net=dhcp`, which the VZ plan sets: only the
//! Mac knows VZ NAT's subnet and which addresses its bootpd has leased).
//!
//! Why not busybox's udhcpc, which the initramfs carries: it configures the
//! interface through a shell script and runs as a daemon of its own, while
//! the agent already configures eth0 with ioctls (engine netif.rs) and must
//! know when the first lease is there (init waits for it before the agent
//! announces itself). In the agent, the conversation is data (message.rs,
//! dhcproto) tested without a network, and the lease keeping is one thread.
//!
//! Before it has an address the client talks through a packet socket on
//! eth0 (sent to the broadcast MAC, every IPv4 packet received and sorted
//! out): the kernel's UDP stack drops a reply unicast to an address it does
//! not yet have. Renewals go over an ordinary UDP socket from the leased
//! address, as udhcpc and dhclient do.

mod message;
mod socket;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use message::Lease;
use message::{Client, Reply, CLIENT_PORT, SERVER_PORT};
use socket::{Interface, PacketSocket};

/// Retransmission: RFC 2131 4.1's 4 s, doubled up to 64 s; the first tries
/// come sooner (a VM's link is up at once, and boot time counts).
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(64);
/// A renewal's retries: half the time left, at least this (RFC 2131 4.4.5).
const MIN_RETRY: Duration = Duration::from_secs(60);

/// Starts the client on `interface` in a thread of its own, which keeps the
/// lease for the VM's life; `apply` configures each new lease. Returns once
/// the first lease is applied, or after `first_lease_within` (then the thread
/// goes on trying, and the VM boots without a network meanwhile).
pub fn start(
    interface: &str,
    first_lease_within: Duration,
    apply: impl Fn(&Lease) + Send + 'static,
) -> std::io::Result<Option<Lease>> {
    let iface = Interface::lookup(interface)?;
    berth_engine::netif::set_up(interface)?;
    let (first_tx, first_rx) = mpsc::channel();
    std::thread::Builder::new().name("dhcp".into()).spawn(move || {
        let mut first = Some(first_tx);
        loop {
            let lease = acquire(&iface);
            apply(&lease);
            if let Some(tx) = first.take() {
                let _ = tx.send(lease.clone());
            }
            keep(&iface, lease, &apply);
        }
    })?;
    Ok(first_rx.recv_timeout(first_lease_within).ok())
}

/// DISCOVER, OFFER, REQUEST, ACK; retried until a server answers.
fn acquire(iface: &Interface) -> Lease {
    let mut wait = FIRST_WAIT;
    loop {
        match try_acquire(iface, wait) {
            Ok(Some(lease)) => return lease,
            Ok(None) => tracing::debug!(interface = %iface.name, ?wait, "no DHCP answer yet"),
            Err(err) => {
                tracing::warn!(interface = %iface.name, %err, "DHCP failed");
                std::thread::sleep(wait);
            }
        }
        wait = (wait * 2).min(MAX_WAIT);
    }
}

fn try_acquire(iface: &Interface, wait: Duration) -> std::io::Result<Option<Lease>> {
    let socket = PacketSocket::open(iface)?;
    let client = Client { xid: random_xid(), mac: iface.mac };
    socket.broadcast(&message::udp_datagram(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &client.discover()))?;
    let Some(Reply::Offer(offer)) = socket.reply(&client, wait)? else {
        return Ok(None);
    };
    socket.broadcast(&message::udp_datagram(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &client.request(&offer)))?;
    match socket.reply(&client, wait)? {
        Some(Reply::Ack(mut lease)) => {
            if lease.server.is_unspecified() {
                lease.server = offer.server;
            }
            tracing::info!(address = %lease.address, server = %lease.server, lease_s = lease.lease_time.as_secs(), "DHCP lease");
            Ok(Some(lease))
        }
        Some(Reply::Nak) => {
            tracing::warn!(server = %offer.server, address = %offer.address, "DHCP server refused its own offer");
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Renews `lease` at T1 (its server), rebinds at T2 (any server), and
/// returns when it ran out (the caller starts over). A changed lease is applied.
fn keep(iface: &Interface, mut lease: Lease, apply: &impl Fn(&Lease)) {
    let mut granted = Instant::now();
    loop {
        let renew_at = granted + lease.renew_after;
        let rebind_at = granted + lease.rebind_after;
        let expires_at = granted + lease.lease_time;
        sleep_until(renew_at);
        let extended = loop {
            let now = Instant::now();
            if now >= expires_at {
                break None;
            }
            let (to, until) =
                if now < rebind_at { (lease.server, rebind_at) } else { (Ipv4Addr::BROADCAST, expires_at) };
            let wait = ((until - now) / 2).max(MIN_RETRY).min(expires_at - now);
            match extend(iface, &lease, to, wait) {
                Ok(Some(Reply::Ack(new))) => break Some(new),
                Ok(Some(Reply::Nak)) => break None,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(%err, "DHCP renewal failed");
                    std::thread::sleep(wait.min(MIN_RETRY));
                }
            }
        };
        let Some(mut new) = extended else {
            tracing::error!(address = %lease.address, "DHCP lease lost; asking for a new one");
            return;
        };
        if new.server.is_unspecified() {
            new.server = lease.server;
        }
        granted = Instant::now();
        if (new.address, new.prefix_len, new.gateway) != (lease.address, lease.prefix_len, lease.gateway) {
            apply(&new);
        }
        lease = new;
    }
}

/// One DHCPREQUEST from the leased address to `to`, and its answer.
fn extend(iface: &Interface, lease: &Lease, to: Ipv4Addr, wait: Duration) -> std::io::Result<Option<Reply>> {
    let socket = UdpSocket::bind(SocketAddr::from((lease.address, CLIENT_PORT)))?;
    socket.set_broadcast(true)?;
    let client = Client { xid: random_xid(), mac: iface.mac };
    socket.send_to(&client.extend(lease), SocketAddr::from((to, SERVER_PORT)))?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                if let Some(reply) = client.reply(&buf[..n]) {
                    return Ok(Some(reply));
                }
            }
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(err) => return Err(err),
        }
    }
}

fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

fn random_xid() -> u32 {
    let mut bytes = [0u8; 4];
    // getrandom(2) from the kernel's pool, never blocking for a transaction id.
    if nix::errno::Errno::result(
        // SAFETY: writes at most 4 bytes into `bytes`, which is 4 bytes long.
        unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) },
    )
    .is_err()
    {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        bytes = (std::process::id() ^ nanos).to_ne_bytes();
    }
    u32::from_ne_bytes(bytes)
}

#[cfg(test)]
#[path = "netns_tests.rs"]
mod netns_tests;
