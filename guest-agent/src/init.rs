//! PID 1 duties: what a minimal init does before the agent can serve.
//!
//! The VM has no other init: the kernel starts `berth-agent` as /init from
//! the initramfs. Everything here runs synchronously, before the async
//! runtime starts, and each step either succeeds or is recorded (mounts are
//! reported in `Info`, so the host can tell a missing share from a slow one).

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_agent_proto::boot::{
    BootParams, NetConfig, Plan9Channel, ShareAccess, ShareMount, ShareTransport, StaticIpv4, GUEST_DATA_DIR,
};
use berth_agent_proto::MountStatus;
use berth_engine::service_addr;

use crate::reaper::Reaper;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

fn mount_fs(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> io::Result<()> {
    fs::create_dir_all(target)?;
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| io::Error::other(format!("mount {fstype} on {target}: {e}")))
}

/// The pseudo filesystems, and stdio on the console. Runs first: nothing,
/// logging included, works without /dev and /proc.
/// Moves the root filesystem from the kernel's initial rootfs into a tmpfs
/// and empties the rootfs, as switch_root does for a real root.
///
/// Why: pivot_root(2) refuses to pivot away from the initial rootfs, and
/// every container start pivots. And the rootfs stays the bottom of every
/// mount namespace: emptied, a process that climbs out of its container's
/// root (chroot tricks with CAP_SYS_CHROOT) finds nothing there. Costs one
/// copy of the initramfs (~13 MB) at boot.
pub fn switch_to_tmpfs_root() -> io::Result<()> {
    let new_root = Path::new("/.root");
    fs::create_dir_all(new_root)?;
    mount_fs("rootfs", "/.root", "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    use std::os::unix::fs::MetadataExt;
    let rootfs_dev = fs::symlink_metadata("/")?.dev();
    for entry in fs::read_dir("/")?.flatten() {
        let path = entry.path();
        if path == new_root {
            continue;
        }
        copy_tree(&path, &new_root.join(entry.file_name()), rootfs_dev)?;
        remove_tree(&path, rootfs_dev)?;
    }
    std::env::set_current_dir(new_root)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(io::Error::from)?;
    nix::unistd::chroot(".").map_err(io::Error::from)?;
    std::env::set_current_dir("/")
}

/// Copies a tree within the rootfs (device `dev`), keeping modes and links.
fn copy_tree(from: &Path, to: &Path, dev: u64) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::symlink_metadata(from)?;
    if meta.dev() != dev {
        return Ok(()); // a mount point: not part of the initramfs
    }
    let kind = meta.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
        return Ok(());
    }
    if kind.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)?.flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()), dev)?;
        }
    } else if kind.is_file() {
        fs::copy(from, to)?;
    } else {
        return Ok(()); // device nodes come from devtmpfs
    }
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

fn remove_tree(path: &Path, dev: u64) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path)?;
    if meta.dev() != dev {
        return Ok(());
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)?.flatten() {
            remove_tree(&entry.path(), dev)?;
        }
        // A directory holding a mount point stays; it is empty otherwise.
        let _ = fs::remove_dir(path);
        Ok(())
    } else {
        fs::remove_file(path)
    }
}

pub fn mount_basics() -> io::Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nodev, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nodev, None)?;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    // The kernel found no /dev/console in the initramfs before /dev existed:
    // give PID 1 its stdio now.
    if let Ok(console) = fs::OpenOptions::new().read(true).write(true).open("/dev/console") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `console` stays open for the call.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let _ = fs::remove_file("/dev/ptmx");
    std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx")?;
    mount_fs("shm", "/dev/shm", "tmpfs", nodev, Some("mode=1777"))?;
    mount_fs("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))?;
    mount_fs("tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777"))?;
    mount_fs("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, Some("nsdelegate"))?;
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    Ok(())
}

/// How long boot waits for a DHCP lease before the agent announces itself
/// without a network (the client goes on trying).
const FIRST_LEASE_WITHIN: Duration = Duration::from_secs(15);

/// Brings eth0 up with the host-given address, or the one leased by DHCP
/// (the slow part either way: the driver fills its receive ring when the
/// link comes up, and a lease is two round trips).
pub fn configure_network(net: Option<NetConfig>) {
    match net {
        Some(NetConfig::Static(StaticIpv4 { address, prefix_len, gateway, .. })) => {
            configure_eth0(address, prefix_len, gateway)
        }
        Some(NetConfig::Dhcp) => {
            let apply = |lease: &crate::dhcp::Lease| configure_eth0(lease.address, lease.prefix_len, lease.gateway);
            match crate::dhcp::start("eth0", FIRST_LEASE_WITHIN, apply) {
                Ok(Some(_)) => {}
                Ok(None) => tracing::error!(
                    within_s = FIRST_LEASE_WITHIN.as_secs(),
                    "no DHCP lease yet; booting without a network (the client keeps asking)"
                ),
                Err(err) => tracing::error!(%err, "the DHCP client could not start"),
            }
        }
        None => {}
    }
}

fn configure_eth0(addr: std::net::Ipv4Addr, prefix: u8, gateway: std::net::Ipv4Addr) {
    match berth_engine::netif::configure_ipv4("eth0", addr, prefix, gateway) {
        Ok(()) => tracing::info!(%addr, prefix, %gateway, "eth0 configured"),
        Err(err) => tracing::error!(%err, "eth0 configuration failed"),
    }
}

/// Hostname, loopback, /etc files, cgroup controllers.
pub fn configure_system(params: &BootParams) {
    let hostname = params.hostname.as_deref().unwrap_or("berth");
    if let Err(err) = nix::unistd::sethostname(hostname) {
        tracing::warn!(%err, "sethostname failed");
    }
    if let Err(err) = berth_engine::netif::set_up("lo") {
        tracing::warn!(%err, "loopback up failed");
    }
    // The agent's resolver on the service address (service_net.rs), which
    // asks the host's resolver; it puts the uplink's back if it cannot serve.
    let resolv = params.net.map(|_| format!("nameserver {}\n", service_addr::DNS)).unwrap_or_default();
    let mut hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n");
    if params.net.is_some() {
        // Over vsock to the host's loopback, whatever the uplink (not the
        // uplink's own alias for the host, berth.hostalias, which VPNs break).
        let names = service_addr::HOST_NAMES.join(" ");
        hosts.push_str(&format!("{}\t{names} host.berth.internal\n", service_addr::HOST_GATEWAY));
    }
    for (path, contents) in
        [("/etc/hosts", hosts), ("/etc/resolv.conf", resolv), ("/etc/hostname", format!("{hostname}\n"))]
    {
        if let Err(err) = fs::write(path, contents) {
            tracing::warn!(%err, path, "could not write");
        }
    }
    delegate_controllers(Path::new("/sys/fs/cgroup"));
}

/// Delegates every available controller of the cgroup at `root` to its
/// child cgroups, for the container engine.
pub fn delegate_controllers(root: &Path) {
    if let Ok(controllers) = fs::read_to_string(root.join("cgroup.controllers")) {
        let enable: Vec<String> = controllers.split_whitespace().map(|c| format!("+{c}")).collect();
        if enable.is_empty() {
            return;
        }
        if let Err(err) = fs::write(root.join("cgroup.subtree_control"), enable.join(" ")) {
            tracing::warn!(%err, "could not enable cgroup controllers");
        }
    }
}

/// The data disk and the shared directories. Failures are reported, not fatal:
/// the host decides whether it can live without a mount.
/// `reaper`: every child's status goes through it, mke2fs's too (the
/// reaping loop starts beside this thread and would take it otherwise).
pub fn mount_storage(
    disk: Option<&str>,
    shares: &[ShareMount],
    access: ShareAccess,
    reaper: &Reaper,
) -> Vec<MountStatus> {
    let mut mounts = Vec::new();
    if let Some(disk) = disk {
        let result = mount_data_disk(disk, reaper);
        mounts.push(status("data", GUEST_DATA_DIR, "ext4", result));
    }
    for ShareMount { tag, guest_path, transport } in shares {
        // Host files are data to the VM: a setuid binary in a share (a
        // container's root can make one, see virtiofsd_args in the host's
        // qemu.rs) or a device node the host has there grants nothing here.
        let fstype = transport.fstype();
        let result = match transport {
            ShareTransport::Virtiofs => mount_share(tag, guest_path, fstype, access),
            ShareTransport::Plan9(channel) => mount_plan9(tag, guest_path, channel),
        };
        mounts.push(status(tag, guest_path, fstype, result));
    }
    mounts
}

fn mount_share(tag: &str, guest_path: &str, fstype: &str, access: ShareAccess) -> io::Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // Our kernel's option (kernel-config/berth-virtiofs.patch); another
    // kernel refuses it, and then the guest checks access itself.
    let host_decides = access == ShareAccess::Host
        && match mount_fs(tag, guest_path, fstype, flags, Some("host_permissions")) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(tag, %err, "the host cannot decide access to this share: the guest does");
                false
            }
        };
    if !host_decides {
        mount_fs(tag, guest_path, fstype, flags, None)?;
    }
    if let Err(err) = set_share_readahead(guest_path) {
        tracing::warn!(tag, %err, "share readahead left at the kernel's default");
    }
    Ok(())
}

/// Sequential reads of a share ask virtiofsd for this much at a time.
/// FUSE asks for the mount's readahead window (128 KiB by default) per
/// request, and each request is a round trip through the virtqueue, which
/// under emulation costs more than moving the data; virtiofsd takes up to
/// 1 MiB per request (its MAX_BUFFER_SIZE), so a window of that size makes
/// a stream of full requests.
const SHARE_READAHEAD_KIB: u32 = 1024;

/// FUSE mounts have a backing device of their own, `/sys/class/bdi/MAJ:MIN`
/// for the mount's anonymous device number.
fn set_share_readahead(guest_path: &str) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(guest_path)?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    fs::write(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"), SHARE_READAHEAD_KIB.to_string())
}

/// A 9P share: one vsock connection to the host per share, which the
/// kernel's fd transport takes over (it holds its own reference, so ours is
/// closed after the mount). One connection per share rather than one
/// attach name per share on a single connection: a hung or dead file server
/// then takes one share down, and on QEMU each share has a file server of
/// its own confined to that share (host/src/vm/plan9.rs). Each guest user
/// attaches as its own uid (`access=user`), which the server takes on for
/// its requests: with a root server the VM's ids are the host's, as with
/// virtiofsd run as root. The mount's own attach names no uid, so it names
/// `root` (the one name diod knows without a user database).
fn mount_plan9(tag: &str, guest_path: &str, channel: &Plan9Channel) -> io::Result<()> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
    if channel.aname.contains(',') {
        return Err(io::Error::other(format!("9p attach name {:?} has a comma", channel.aname)));
    }
    let fd = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let host = VsockAddr::new(libc::VMADDR_CID_HOST, channel.port);
    // The vsock driver may still be starting under emulation.
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Err(err) = connect(fd.as_raw_fd(), &host) {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("connecting to the host's 9p port {}: {err}", channel.port)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = fd.as_raw_fd();
    let data = format!(
        "trans=fd,rfdno={n},wfdno={n},version=9p2000.L,msize=262144,cache=mmap,access=user,uname=root,aname={}",
        channel.aname
    );
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs(tag, guest_path, "9p", flags, Some(&data))
}

fn status(name: &str, path: &str, fstype: &str, result: io::Result<()>) -> MountStatus {
    match &result {
        Ok(()) => tracing::info!(name, path, fstype, "mounted"),
        Err(err) => tracing::error!(name, path, fstype, %err, "mount failed"),
    }
    MountStatus {
        name: name.into(),
        path: path.into(),
        fstype: fstype.into(),
        mounted: result.is_ok(),
        error: result.err().map(|e| e.to_string()).unwrap_or_default(),
    }
}

fn mount_data_disk(device: &str, reaper: &Reaper) -> io::Result<()> {
    // Built-in virtio drivers probe before init runs, but devtmpfs may lag.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !Path::new(device).exists() {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("{device} did not appear")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !has_ext_superblock(device)? {
        tracing::info!(device, "data disk is blank: formatting ext4");
        let started = Instant::now();
        let mut mke2fs = Command::new("/sbin/mke2fs");
        mke2fs.args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", "berth-data"]);
        mke2fs.args(["-E", "lazy_itable_init=1,lazy_journal_init=1"]).arg(device);
        let (child, exited) = reaper.spawn(&mut mke2fs)?;
        let exit = reaper.wait_blocking(child.id() as i32, exited)?;
        if exit.code != 0 {
            return Err(io::Error::other(format!("mke2fs {device} failed: exit code {}", exit.code)));
        }
        tracing::info!(device, ms = started.elapsed().as_millis() as u64, "formatted");
    }
    // discard: blocks the engine frees (a removed image, a deleted volume)
    // become holes in the host's sparse image file, so the space goes back.
    mount_fs(device, GUEST_DATA_DIR, "ext4", MsFlags::MS_NOATIME, Some("discard"))?;
    match grow_to_device(device, GUEST_DATA_DIR) {
        Ok(Some((from, to))) => {
            tracing::info!(device, from_mib = from >> 20, to_mib = to >> 20, "data filesystem grown")
        }
        Ok(None) => {}
        // The old size still works: say so, do not fail the boot.
        Err(err) => tracing::warn!(device, %err, "could not grow the data filesystem to its disk"),
    }
    Ok(())
}

/// Grows the mounted ext4 on `device` to the device's size when the host
/// made the image larger (`disk-gib` raised), online, with the kernel's
/// resize ioctl (no resize2fs in the initramfs). Returns the old and new
/// size in bytes when it grew.
fn grow_to_device(device: &str, mountpoint: &str) -> io::Result<Option<(u64, u64)>> {
    let superblock = read_superblock(device)?;
    let block_size = 1024u64 << superblock.log_block_size.min(6);
    let file = fs::File::open(device)?;
    let mut device_bytes = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into the variable we pass.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut device_bytes) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let want = device_bytes / block_size;
    // Less than 1% more is not worth a resize (a partial last group).
    if want <= superblock.blocks + superblock.blocks / 100 {
        return Ok(None);
    }
    let dir = fs::File::open(mountpoint)?;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count).
    if unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &want) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((superblock.blocks * block_size, want * block_size)))
}

/// _IOR(0x12, 114, u64) and _IOW('f', 16, u64) (the request's C type
/// differs between musl and glibc, hence the casts at the calls).
const BLKGETSIZE64: u32 = 0x8008_1272;
const EXT4_IOC_RESIZE_FS: u32 = 0x4008_6610;

struct Superblock {
    blocks: u64,
    log_block_size: u32,
}

/// The fields of the ext4 superblock (at byte 1024) that sizing needs.
fn read_superblock(device: &str) -> io::Result<Superblock> {
    let mut file = fs::File::open(device)?;
    let mut sb = [0u8; 0x158];
    file.seek(SeekFrom::Start(1024))?;
    file.read_exact(&mut sb)?;
    Ok(parse_superblock(&sb))
}

fn parse_superblock(sb: &[u8; 0x158]) -> Superblock {
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().unwrap());
    // s_feature_incompat bit 0x80: 64bit, with the count's high half.
    let high = if u32_at(0x60) & 0x80 != 0 { u32_at(0x150) as u64 } else { 0 };
    Superblock { blocks: high << 32 | u32_at(0x04) as u64, log_block_size: u32_at(0x18) }
}

/// ext2/3/4 keep the magic 0xEF53 at byte 1080.
fn has_ext_superblock(device: &str) -> io::Result<bool> {
    let mut file = fs::File::open(device)?;
    let mut magic = [0u8; 2];
    file.seek(SeekFrom::Start(1080))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x53, 0xef]),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

/// Stops every process, flushes and unmounts storage, and turns the VM off.
/// The host runs QEMU with -no-reboot and the kernel with reboot=t, so a
/// reboot request ends the VM process.
pub fn power_off(mounts: &[MountStatus]) -> ! {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && has_other_processes() {
        std::thread::sleep(Duration::from_millis(20));
        while let Ok(status) = nix::sys::wait::waitpid(Pid::from_raw(-1), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    nix::unistd::sync();
    for m in mounts.iter().rev().filter(|m| m.mounted) {
        if let Err(err) = umount2(m.path.as_str(), MntFlags::empty()) {
            tracing::warn!(path = %m.path, %err, "unmount failed; detaching");
            let _ = umount2(m.path.as_str(), MntFlags::MNT_DETACH);
        }
    }
    nix::unistd::sync();
    tracing::info!("powering off");
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // Not reached unless reboot(2) failed; PID 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Whether any user-space process other than us is left.
fn has_other_processes() -> bool {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.bytes().all(|b| b.is_ascii_digit())
                    && name != me
                    // Kernel threads have an empty cmdline.
                    && fs::read(e.path().join("cmdline")).map(|c| !c.is_empty()).unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_sizes_match_what_mke2fs_made() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
        let mke2fs = ["/sbin/mke2fs", "/usr/sbin/mke2fs"].into_iter().find(|p| Path::new(p).exists()).expect("mke2fs");
        let made = Command::new(mke2fs).args(["-q", "-F", "-t", "ext4", "-b", "4096"]).arg(&image).status().unwrap();
        assert!(made.success());
        let sb = read_superblock(image.to_str().unwrap()).unwrap();
        assert_eq!(1024u64 << sb.log_block_size, 4096);
        assert_eq!(sb.blocks, (64 << 20) / 4096);
    }
}
