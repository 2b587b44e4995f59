//! passt as the QEMU guest's uplink when asked (`[vm] uplink = "passt"`;
//! slirp is the default, see QemuBackend::wanted_uplink for why): it turns the guest's frames into
//! ordinary sockets of the host, with the host's TCP (window scaling, no
//! per-packet emulation of a TCP stack as libslirp does) and IPv6.
//!
//! QEMU and passt share a socket pair (`-netdev stream,addr.type=fd` and
//! `passt --fd`) rather than a socket file: nobody else can connect, there
//! is no path to remove, and passt exits as soon as QEMU's end is closed
//! (QEMU exited or was killed with the daemon). That matters because passt
//! drops to `nobody` when started as root, which clears the parent-death
//! signal spawn_owned sets; the closed socket is what ends it then.
//!
//! What the guest sees is pinned to the static config it already has for
//! slirp (guest_facts): 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3. As
//! with slirp, passt maps the gateway address to the host's loopback, so
//! the VM reaches nothing through it that slirp's 10.0.2.2 did not give
//! (and host.docker.internal already leads to the host's loopback, over
//! vsock). No port of the host is forwarded into the guest (`-t none -u
//! none`): published ports go over vsock (ports/).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_agent_proto::boot::StaticIpv4;
use tokio::process::{Child, Command};

/// A started passt and QEMU's end of the socket pair.
pub struct PasstUplink {
    pub child: Child,
    /// Given to QEMU (`-netdev stream,addr.type=fd`), closed here once QEMU runs.
    pub qemu_end: OwnedFd,
}

/// passt's command line for a guest configured as `guest`, on `fd`.
pub fn passt_args(guest: &StaticIpv4, fd: RawFd, log_file: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--foreground",
        "--quiet",
        // Only to the file (passt's default is syslog, which it reports
        // failing to reach on every line when there is none).
        "--log-file",
        &log_file.display().to_string(),
        "--fd",
        &fd.to_string(),
        "--tcp-ports",
        "none",
        "--udp-ports",
        "none",
        "--address",
        &guest.address.to_string(),
        "--netmask",
        &guest.prefix_len.to_string(),
        "--gateway",
        &guest.gateway.to_string(),
        // Queries to the guest's uplink resolver go to the host's first
        // nameserver, as slirp's 10.0.2.3 does.
        "--dns-forward",
        &guest.dns.to_string(),
        // The guest's address is static (boot parameters), so nothing asks.
        "--no-dhcp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // For measuring other settings (tests/bench/uplink.sh), e.g. BERTH_PASST_ARGS=--trace.
    if let Ok(extra) = std::env::var("BERTH_PASST_ARGS") {
        args.extend(extra.split_whitespace().map(str::to_string));
    }
    args
}

/// Lets `fd` survive the exec of the command being built; the descriptor
/// must stay open until the command is spawned.
pub fn inherit_fd(cmd: &mut Command, fd: RawFd) {
    // SAFETY: fcntl is async-signal-safe and only takes integers; the
    // descriptor is open in the parent until spawn returns, so in the child
    // it is that same descriptor.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts passt for `guest`; its log goes to `log_file` (truncated), its
/// early complaints to `helpers_log`.
pub fn start(program: &Path, guest: &StaticIpv4, log_file: &Path, helpers_log: &Path) -> Result<PasstUplink> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (qemu_end, passt_end) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .context("making passt's socket pair")?;
    let mut cmd = Command::new(program);
    cmd.args(passt_args(guest, passt_end.as_raw_fd(), log_file));
    inherit_fd(&mut cmd, passt_end.as_raw_fd());
    let child = super::owned::spawn_owned(&mut cmd, helpers_log, "passt")?;
    // passt has its own copy now; ours would keep its socket open past QEMU.
    drop(passt_end);
    Ok(PasstUplink { child, qemu_end })
}

/// Waits until passt serves: the last step of its set-up is its seccomp
/// filter (after the user and mount namespaces and dropping to `nobody`),
/// which /proc shows to anyone. A pid file would not do: passt opens it
/// after dropping privileges, so as root it cannot write one in the
/// private run directory. Fails if passt exits first.
pub async fn wait_ready(uplink: &mut PasstUplink) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let Some(pid) = uplink.child.id() else { bail!("passt exited during start-up") };
    let status_file = PathBuf::from(format!("/proc/{pid}/status"));
    loop {
        if let Some(status) = uplink.child.try_wait()? {
            bail!("passt exited during start-up ({status}); see its log");
        }
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        if status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "2"])) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("passt did not finish its set-up in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passt_is_pinned_to_the_guests_static_config_and_forwards_no_port() {
        let guest = StaticIpv4 {
            address: "10.0.2.15".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.2.2".parse().unwrap(),
            dns: "10.0.2.3".parse().unwrap(),
        };
        let args = passt_args(&guest, 7, Path::new("/h/logs/passt.log")).join(" ");
        for expected in [
            "--foreground",
            "--fd 7",
            "--tcp-ports none --udp-ports none",
            "--address 10.0.2.15 --netmask 24 --gateway 10.0.2.2",
            "--dns-forward 10.0.2.3",
            "--log-file /h/logs/passt.log",
        ] {
            assert!(args.contains(expected), "{expected:?} in {args}");
        }
        // Its gateway must stay mapped to the host's loopback, as slirp's
        // 10.0.2.2 is (see the module's comment): no --no-map-gw.
        assert!(!args.contains("--no-map-gw"), "{args}");
    }
}
