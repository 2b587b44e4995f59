//! `docker cp` and `docker export`: tar archives of paths inside a
//! container, and tar archives extracted into it.
//!
//! Run by `berth-agent archive OP PLAN`, a separate single-threaded process
//! that first enters the container's root (its mount namespace when it
//! runs, so volumes and binds are seen as the container sees them; a chroot
//! into the mounted root filesystem otherwise). Symlinks in the image then
//! resolve inside the container, never onto the VM's own files.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivePlan {
    /// A running container's first process: its mount namespace is used.
    pub pid: Option<i32>,
    /// Otherwise the container's mounted root filesystem.
    pub rootfs: Option<PathBuf>,
    /// The path inside the container.
    pub path: String,
    /// For a container that is not running: its volumes and binds, mounted
    /// over `rootfs` (in a mount namespace of the helper's own) so paths
    /// under them reach their data, as they would in the running container.
    #[serde(default)]
    pub mounts: Vec<crate::spec::Bind>,
}

/// What Docker's `X-Docker-Container-Path-Stat` header carries. `mode`
/// uses Go's os.FileMode bits, which the docker CLI decodes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_DEVICE: u32 = 1 << 26;
const GO_MODE_NAMED_PIPE: u32 = 1 << 25;
const GO_MODE_SOCKET: u32 = 1 << 24;
const GO_MODE_SETUID: u32 = 1 << 23;
const GO_MODE_SETGID: u32 = 1 << 22;
const GO_MODE_CHAR_DEVICE: u32 = 1 << 21;
const GO_MODE_STICKY: u32 = 1 << 20;

fn go_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mode = meta.mode();
    let kind = meta.file_type();
    let mut go = mode & 0o777;
    if kind.is_dir() {
        go |= GO_MODE_DIR;
    }
    if kind.is_symlink() {
        go |= GO_MODE_SYMLINK;
    }
    if kind.is_block_device() {
        go |= GO_MODE_DEVICE;
    }
    if kind.is_char_device() {
        go |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE;
    }
    if kind.is_fifo() {
        go |= GO_MODE_NAMED_PIPE;
    }
    if kind.is_socket() {
        go |= GO_MODE_SOCKET;
    }
    if mode & 0o4000 != 0 {
        go |= GO_MODE_SETUID;
    }
    if mode & 0o2000 != 0 {
        go |= GO_MODE_SETGID;
    }
    if mode & 0o1000 != 0 {
        go |= GO_MODE_STICKY;
    }
    go
}

/// Moves this process into the container's root. Single-threaded callers
/// only (setns of a mount namespace refuses multithreaded processes).
pub fn enter_root(plan: &ArchivePlan) -> io::Result<()> {
    match (plan.pid, &plan.rootfs) {
        (Some(pid), _) => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
            // SAFETY: setns on a namespace descriptor we hold open.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        (None, Some(rootfs)) => {
            if !plan.mounts.is_empty() {
                mount_binds(rootfs, &plan.mounts)?;
            }
            nix::unistd::chroot(rootfs.as_path()).map_err(io::Error::from)?
        }
        (None, None) => return Err(io::Error::new(io::ErrorKind::InvalidInput, "no container root to enter")),
    }
    std::env::set_current_dir("/")
}

/// Binds `mounts` over `rootfs` in a new mount namespace of this process,
/// which nothing propagates out of: the mounts end with the helper.
fn mount_binds(rootfs: &Path, mounts: &[crate::spec::Bind]) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    for bind in mounts {
        // Resolved inside the root: the image's symlinks must not send the
        // mount onto the VM's own files.
        let target = crate::runtime::resolve_in_root(rootfs, &bind.target)?;
        if std::fs::metadata(&bind.source)?.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if std::fs::symlink_metadata(&target).is_err() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(&target)?;
        }
        mount(Some(&bind.source), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
        if bind.readonly {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)?;
        }
    }
    Ok(())
}

pub fn stat(path: &Path) -> io::Result<PathStat> {
    let meta = std::fs::symlink_metadata(path)?;
    let link_target = if meta.file_type().is_symlink() {
        std::fs::read_link(path)?.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    use std::os::unix::fs::MetadataExt;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into());
    Ok(PathStat {
        name,
        size: meta.size() as i64,
        mode: go_mode(&meta),
        mtime: crate::container::rfc3339(meta.mtime() * 1_000_000_000 + meta.mtime_nsec()),
        link_target,
    })
}

/// A tar of `path` as `docker cp` wants it: the path's own name at the top
/// (`.` for the root filesystem, as `docker export` does), symlinks kept.
pub fn write_tar(path: &Path, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(path)?;
    let name =
        if path == Path::new("/") { PathBuf::from(".") } else { PathBuf::from(path.file_name().unwrap_or_default()) };
    if meta.is_dir() {
        builder.append_dir_all(&name, path)?;
    } else {
        builder.append_path_with_name(path, &name)?;
    }
    builder.into_inner()?.flush()
}

/// Extracts a tar into the directory `dir` (which must exist), keeping
/// ownership and modes as `docker cp` does.
pub fn extract(input: impl Read, dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a directory", dir.display())));
    }
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    archive.unpack(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_uses_go_file_mode_bits() {
        let dir = tempfile::tempdir().unwrap();
        let s = stat(dir.path()).unwrap();
        assert_eq!(s.mode & GO_MODE_DIR, GO_MODE_DIR);
        std::fs::write(dir.path().join("f"), b"12345").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let f = stat(&dir.path().join("f")).unwrap();
        assert_eq!((f.name.as_str(), f.size, f.mode & GO_MODE_DIR), ("f", 5, 0));
        let l = stat(&dir.path().join("l")).unwrap();
        assert_eq!((l.mode & GO_MODE_SYMLINK, l.link_target.as_str()), (GO_MODE_SYMLINK, "f"));
    }

    #[test]
    fn tars_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/a"), b"a").unwrap();
        let mut tar = Vec::new();
        write_tar(&src, &mut tar).unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        extract(tar.as_slice(), &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("src/sub/a")).unwrap(), b"a");
        assert!(extract(tar.as_slice(), &dest.join("src/sub/a")).is_err(), "extracting into a file is refused");
    }
}
