//! `docker cp` and `docker export`: tar archives of paths inside a
//! container, and tar archives extracted into it.
//!
//! Run by `berth-agent archive OP PLAN`, a separate single-threaded process
//! that first enters the container's root (its mount namespace when it
//! runs, so volumes and binds are seen as the container sees them; a chroot
//! into the mounted root filesystem otherwise). Symlinks in the image then
//! resolve inside the container, never onto the VM's own files.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

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
    /// When set, `rootfs` is not used as mounted: the helper mounts a view
    /// of these layers (bottom first, the container's writable layer last)
    /// there in a mount namespace of its own (`rootfs::mount_view`), so the
    /// read needs nothing of the container's own mounts and holds up none
    /// of its operations.
    #[serde(default)]
    pub view_layers: Vec<PathBuf>,
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
            if !plan.mounts.is_empty() || !plan.view_layers.is_empty() {
                private_mount_namespace()?;
            }
            let root = if plan.view_layers.is_empty() {
                rootfs.clone()
            } else {
                crate::rootfs::mount_view(&plan.view_layers, rootfs).map_err(io::Error::other)?
            };
            mount_binds(&root, &plan.mounts)?;
            nix::unistd::chroot(root.as_path()).map_err(io::Error::from)?
        }
        (None, None) => return Err(io::Error::new(io::ErrorKind::InvalidInput, "no container root to enter")),
    }
    std::env::set_current_dir("/")
}

/// A new mount namespace for this process, which nothing propagates out
/// of: what the helper mounts ends with it.
fn private_mount_namespace() -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    Ok(())
}

/// Binds `mounts` over `rootfs` (in the helper's own mount namespace).
fn mount_binds(rootfs: &Path, mounts: &[crate::spec::Bind]) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
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
    let meta = std::fs::symlink_metadata(path)?;
    let name =
        if path == Path::new("/") { PathBuf::from(".") } else { PathBuf::from(path.file_name().unwrap_or_default()) };
    let mut writer = TreeWriter::new(out);
    if meta.is_dir() {
        writer.append_tree(path, &meta, &name)?;
    } else {
        writer.append(path, &meta, &name)?;
    }
    writer.finish()?.flush()
}

/// Writes file system entries into a tar as Docker's archive package does,
/// for cp, export and commit: symlink targets byte for byte (tar-rs's
/// `append_link` rewrites `/` as `//`), FIFOs and device nodes as such
/// (its `append_path_with_name` names them by their path on disk, so it
/// fails on them), and a file with several names once, its later names as
/// hardlink entries to the first.
pub struct TreeWriter<W: Write> {
    builder: tar::Builder<W>,
    /// (device, inode) of each file with more than one name, and the name
    /// it was written under first.
    first_names: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TreeWriter<W> {
    pub fn new(out: W) -> TreeWriter<W> {
        TreeWriter { builder: tar::Builder::new(out), first_names: HashMap::new() }
    }

    /// Appends `dir` (whose metadata is `meta`) as `name`, then everything
    /// under it, sorted by name, symlinks never followed.
    pub fn append_tree(&mut self, dir: &Path, meta: &std::fs::Metadata, name: &Path) -> io::Result<()> {
        self.append(dir, meta, name)?;
        let mut children: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let meta = child.metadata()?;
            let child_name = name.join(child.file_name());
            if meta.is_dir() {
                self.append_tree(&child.path(), &meta, &child_name)?;
            } else {
                self.append(&child.path(), &meta, &child_name)?;
            }
        }
        Ok(())
    }

    /// Appends what is at `path` (never followed; `meta` is its lstat) as
    /// `name`. Sockets are left out, as Docker leaves them out.
    pub fn append(&mut self, path: &Path, meta: &std::fs::Metadata, name: &Path) -> io::Result<()> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let name = archive_name(name);
        let kind = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        header.set_size(0);
        if !kind.is_dir() && meta.nlink() > 1 {
            match self.first_names.entry((meta.dev(), meta.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    header.set_entry_type(tar::EntryType::Link);
                    let first = first.get().as_os_str().as_bytes().to_vec();
                    return self.append_with_link_name(header, &name, &first);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(name.clone());
                }
            }
        }
        if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = std::fs::File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
            self.builder.append_data(&mut header, &name, file.take(meta.len()))
        } else if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = std::fs::read_link(path)?;
            self.append_with_link_name(header, &name, target.as_os_str().as_bytes())
        } else if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            // `dir/`, as Docker (and tar) name directories.
            let mut dir_name = name.into_os_string();
            dir_name.push("/");
            self.builder.append_data(&mut header, dir_name, io::empty())
        } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
            header.set_entry_type(if kind.is_fifo() {
                tar::EntryType::Fifo
            } else if kind.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            header.set_device_major(libc::major(meta.rdev()))?;
            header.set_device_minor(libc::minor(meta.rdev()))?;
            self.builder.append_data(&mut header, &name, io::empty())
        } else {
            tracing::debug!(path = %path.display(), "a socket cannot be archived: left out");
            Ok(())
        }
    }

    /// Appends an empty regular file `name` (a whiteout marker).
    pub fn append_marker(&mut self, name: &Path, mtime: u64) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        self.builder.append_data(&mut header, archive_name(name), io::empty())
    }

    /// A symlink or hardlink entry whose link name is exactly `target`;
    /// targets longer than the header's field go in a GNU long-link
    /// record first, as GNU tar writes them (Go's reader and tar-rs read it).
    fn append_with_link_name(&mut self, mut header: tar::Header, name: &Path, target: &[u8]) -> io::Result<()> {
        let field = header.as_old().linkname.len();
        if target.len() > field {
            let mut long = tar::Header::new_gnu();
            long.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
            long.set_mode(0o644);
            long.set_entry_type(tar::EntryType::GNULongLink);
            long.set_size(target.len() as u64 + 1);
            long.set_cksum();
            self.builder.append(&long, target.chain(&[0u8][..]))?;
        }
        header.set_link_name_literal(&target[..target.len().min(field)])?;
        self.builder.append_data(&mut header, name, io::empty())
    }

    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

/// `name` as entries are named: no `./` components (the root alone is `.`).
fn archive_name(name: &Path) -> PathBuf {
    let cleaned: PathBuf = name.components().filter(|c| !matches!(c, Component::CurDir)).collect();
    if cleaned.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        cleaned
    }
}

/// Go's `filepath.Clean` of a slash-separated path, which Docker applies to
/// entry names before it checks them: the cleaned text and, if it stays
/// within the directory it is joined to, its components.
fn go_clean(raw: &[u8]) -> (String, Option<PathBuf>) {
    let rooted = raw.starts_with(b"/");
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if parts.last().is_some_and(|last| *last != b"..") => {
                parts.pop();
            }
            b".." if rooted => {}
            _ => parts.push(part),
        }
    }
    let joined = parts.join(&b'/');
    let text = match (rooted, joined.is_empty()) {
        (true, _) => format!("/{}", String::from_utf8_lossy(&joined)),
        (false, true) => ".".to_string(),
        (false, false) => String::from_utf8_lossy(&joined).into_owned(),
    };
    let inside = parts.first() != Some(&&b".."[..]);
    (text, inside.then(|| parts.iter().map(|p| std::ffi::OsStr::from_bytes(p)).collect()))
}

/// Docker's refusal of an entry that would land outside the directory the
/// archive is extracted into (its `breakoutError`s, in its wording).
fn breakout(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Extracts a tar into the directory `dir` (which must exist), keeping
/// ownership and modes as `docker cp` does, and as Docker's archive package
/// does it: an entry whose name, hardlink or relative symlink leads out of
/// `dir` fails the extraction (earlier entries stay, as with Docker); device
/// nodes and FIFOs are made as such (the helper is root in the container's
/// mount namespace, as dockerd is); an existing path is replaced unless it
/// and the entry are both directories.
pub fn extract(input: impl Read, dir: &Path) -> io::Result<()> {
    let mut input = EndTracking { inner: input, ended: false };
    extract_entries(&mut input, dir).map_err(|err| {
        // tar-rs keeps the cause behind `source()` ("failed to unpack `x`"
        // without "No space left on device") and calls a stream cut short
        // "failed to read entire block": say what happened.
        let text = crate::layer::causes(&err);
        if input.ended && err.kind() != io::ErrorKind::InvalidInput {
            io::Error::new(io::ErrorKind::UnexpectedEof, format!("{text}: unexpected EOF"))
        } else {
            io::Error::new(err.kind(), text)
        }
    })
}

/// A reader that remembers reaching its end.
struct EndTracking<R> {
    inner: R,
    ended: bool,
}

impl<R: Read> Read for EndTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ended |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

fn extract_entries(input: impl Read, dir: &Path) -> io::Result<()> {
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a directory", dir.display())));
    }
    // Compared lexically below, as Docker compares them.
    let dir = &PathBuf::from(go_clean(dir.as_os_str().as_bytes()).0);
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let mut dir_mtimes = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let (name, rel) = go_clean(&raw);
        let rel = rel.ok_or_else(|| breakout(format!("{name:?} is outside of {:?}", dir.display().to_string())))?;
        if rel.as_os_str().is_empty() {
            continue; // `.`: the directory itself, which exists.
        }
        let target = dir.join(&rel);
        if let Some(parent) = target.parent() {
            if std::fs::symlink_metadata(parent).is_err() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let kind = entry.header().entry_type();
        match std::fs::symlink_metadata(&target) {
            Ok(existing) if existing.is_dir() && kind.is_dir() => {}
            Ok(existing) if existing.is_dir() => std::fs::remove_dir_all(&target)?,
            Ok(_) => std::fs::remove_file(&target)?,
            Err(_) => {}
        }
        match kind {
            tar::EntryType::Link => {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                let mut joined = dir.as_os_str().as_bytes().to_vec();
                joined.push(b'/');
                joined.extend_from_slice(&link);
                let (source, _) = go_clean(&joined);
                if !Path::new(&source).starts_with(dir) {
                    let link = String::from_utf8_lossy(&link);
                    return Err(breakout(format!("invalid hardlink {source:?} -> {link:?}")));
                }
                // Not NotFound: the helper's caller reads that as "no such path in the container".
                std::fs::hard_link(&source, &target)
                    .map_err(|e| io::Error::other(format!("link {source} {}: {e}", target.display())))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                make_node(&target, entry.header())?;
            }
            _ => {
                if kind == tar::EntryType::Symlink {
                    check_symlink(&entry.link_name_bytes().unwrap_or_default(), dir, &target)?;
                }
                entry.unpack(&target)?;
            }
        }
        if kind.is_dir() {
            dir_mtimes.push((target, entry.header().mtime().unwrap_or(0)));
        }
    }
    // Later entries bumped their directories' mtimes: set them last.
    for (path, mtime) in dir_mtimes.iter().rev() {
        let mtime = filetime::FileTime::from_unix_time(*mtime as i64, 0);
        let _ = filetime::set_symlink_file_times(path, mtime, mtime);
    }
    Ok(())
}

/// Docker refuses a symlink whose target, taken relative to the link's own
/// directory, leaves the extraction directory (an absolute target is
/// resolved in the container's root later, and passes).
fn check_symlink(link: &[u8], dir: &Path, target: &Path) -> io::Result<()> {
    let mut joined = target.parent().unwrap_or(dir).as_os_str().as_bytes().to_vec();
    joined.push(b'/');
    joined.extend_from_slice(link);
    let (resolved, _) = go_clean(&joined);
    if Path::new(&resolved).starts_with(dir) {
        return Ok(());
    }
    let link = String::from_utf8_lossy(link);
    Err(breakout(format!("invalid symlink {:?} -> {link:?}", target.display().to_string())))
}

/// A FIFO or device node as the entry describes it, with its owner, mode
/// and mtime.
fn make_node(target: &Path, header: &tar::Header) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag};
    let kind = match header.entry_type() {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    let mode = header.mode()? & 0o7777;
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    nix::sys::stat::mknod(
        target,
        kind,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major.into(), minor.into()),
    )?;
    let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
    std::os::unix::fs::lchown(target, Some(uid), Some(gid))?;
    // mknod applies the umask; chown may clear setuid bits: the mode last.
    std::fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    let mtime = filetime::FileTime::from_unix_time(header.mtime()? as i64, 0);
    filetime::set_symlink_file_times(target, mtime, mtime)
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// What a reader sees of each entry: name, type, link name, device
    /// numbers and size.
    pub(crate) type EntrySummary = (String, tar::EntryType, Option<Vec<u8>>, Option<u32>, Option<u32>, u64);

    pub(crate) fn entries(tar: &[u8]) -> Vec<EntrySummary> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            let major = header.device_major().ok().flatten();
            let minor = header.device_minor().ok().flatten();
            let kind = header.entry_type();
            let devices = matches!(kind, tar::EntryType::Char | tar::EntryType::Block);
            out.push((
                entry.path().unwrap().display().to_string(),
                kind,
                entry.link_name_bytes().map(|l| l.into_owned()),
                major.filter(|_| devices),
                minor.filter(|_| devices),
                entry.size(),
            ));
        }
        out
    }

    /// A tree holding everything cp, export and commit must keep: symlinks
    /// to `/` and to a long path, a FIFO, a device node and a hardlink pair.
    pub(crate) fn special_tree(root: &Path) {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        std::fs::create_dir_all(root).unwrap();
        std::os::unix::fs::symlink("/", root.join("to-root")).unwrap();
        std::os::unix::fs::symlink(format!("/{}", "long/".repeat(30)), root.join("to-long")).unwrap();
        mknod(&root.join("fifo"), SFlag::S_IFIFO, Mode::from_bits_truncate(0o640), 0).unwrap();
        mknod(&root.join("null"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(1, 3)).unwrap();
        let umasked = std::os::unix::fs::PermissionsExt::from_mode(0o666);
        std::fs::set_permissions(root.join("null"), umasked).unwrap();
        std::fs::write(root.join("hard-a"), b"shared").unwrap();
        std::fs::hard_link(root.join("hard-a"), root.join("hard-b")).unwrap();
    }

    pub(crate) fn expected_special_entries(prefix: &str) -> Vec<EntrySummary> {
        use tar::EntryType as T;
        let p = |n: &str| format!("{prefix}{n}");
        vec![
            (p("fifo"), T::Fifo, None, None, None, 0),
            (p("hard-a"), T::Regular, None, None, None, 6),
            (p("hard-b"), T::Link, Some(p("hard-a").into_bytes()), None, None, 0),
            (p("null"), T::Char, None, Some(1), Some(3), 0),
            (p("to-long"), T::Symlink, Some(format!("/{}", "long/".repeat(30)).into_bytes()), None, None, 0),
            (p("to-root"), T::Symlink, Some(b"/".to_vec()), None, None, 0),
        ]
    }

    /// [`special_tree`] at `src` in a temporary directory, and its tar.
    fn special_tar() -> (tempfile::TempDir, Vec<u8>) {
        assert!(nix::unistd::geteuid().is_root(), "device nodes need root, as the agent has");
        let dir = tempfile::tempdir().unwrap();
        special_tree(&dir.path().join("src"));
        let mut tar = Vec::new();
        write_tar(&dir.path().join("src"), &mut tar).unwrap();
        (dir, tar)
    }

    #[test]
    fn cp_out_keeps_links_fifos_and_devices_byte_for_byte() {
        let (dir, tar) = special_tar();
        let mut expected = vec![("src/".to_string(), tar::EntryType::Directory, None, None, None, 0)];
        expected.extend(expected_special_entries("src/"));
        assert_eq!(entries(&tar), expected);
        // A single special file too (tar-rs named it by its path on disk).
        let mut tar = Vec::new();
        write_tar(&dir.path().join("src/fifo"), &mut tar).unwrap();
        assert_eq!(entries(&tar), vec![("fifo".to_string(), tar::EntryType::Fifo, None, None, None, 0)]);
    }

    /// A raw entry named `name`, which no well-behaved writer would produce.
    fn raw_entry(builder: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_size(data.len() as u64);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    #[test]
    fn extracting_refuses_what_leads_outside_in_dockers_words() {
        let cases = [
            (tar::EntryType::Regular, "../escaped", "", r#""../escaped" is outside of "DEST""#),
            (tar::EntryType::Regular, "a/../../escaped", "", r#""../escaped" is outside of "DEST""#),
            (tar::EntryType::Link, "stolen", "../outside", r#"invalid hardlink "BASE/outside" -> "../outside""#),
            (tar::EntryType::Symlink, "up", "../../x", r#"invalid symlink "DEST/up" -> "../../x""#),
        ];
        for (kind, name, link, message) in cases {
            let base = tempfile::tempdir().unwrap();
            let dest = base.path().join("dest");
            std::fs::create_dir(&dest).unwrap();
            std::fs::write(base.path().join("outside"), b"precious").unwrap();
            let mut builder = tar::Builder::new(Vec::new());
            raw_entry(&mut builder, kind, name, link, b"x");
            let err = extract(builder.into_inner().unwrap().as_slice(), &dest).unwrap_err();
            let message = message.replace("DEST", &dest.display().to_string());
            let message = message.replace("BASE", &base.path().display().to_string());
            assert_eq!(err.to_string(), message);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let mut left: Vec<_> = std::fs::read_dir(base.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            left.sort();
            assert_eq!(left, ["dest", "outside"], "{name}: nothing written outside");
            assert_eq!(std::fs::read(base.path().join("outside")).unwrap(), b"precious");
        }
    }

    #[test]
    fn extracting_a_cut_tar_says_so() {
        let mut builder = tar::Builder::new(Vec::new());
        raw_entry(&mut builder, tar::EntryType::Regular, "file", "", &[1u8; 4096]);
        let tar = builder.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();
        for cut in [300, 512 + 1000] {
            let err = extract(&tar[..cut], dest.path()).unwrap_err();
            assert!(err.to_string().ends_with("unexpected EOF"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn extracting_keeps_devices_fifos_links_and_odd_names() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let (dir, tar) = special_tar();
        let mut builder = tar::Builder::new(tar[..tar.len() - 1024].to_vec());
        raw_entry(&mut builder, tar::EntryType::Regular, "/abs/file", "", b"abs");
        raw_entry(&mut builder, tar::EntryType::Regular, "x/../inside", "", b"in");
        let tar = builder.into_inner().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        extract(tar.as_slice(), &dest).unwrap();
        let root = dest.join("src");
        assert!(std::fs::symlink_metadata(root.join("fifo")).unwrap().file_type().is_fifo());
        let null = std::fs::symlink_metadata(root.join("null")).unwrap();
        assert!(null.file_type().is_char_device() && null.rdev() == libc::makedev(1, 3), "a device, not a file");
        assert_eq!(null.mode() & 0o7777, 0o666);
        let (a, b) = (std::fs::metadata(root.join("hard-a")).unwrap(), std::fs::metadata(root.join("hard-b")).unwrap());
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(std::fs::read_link(root.join("to-root")).unwrap(), Path::new("/"));
        assert_eq!(std::fs::read(dest.join("abs/file")).unwrap(), b"abs");
        assert_eq!(std::fs::read(dest.join("inside")).unwrap(), b"in");
        // And what comes back out is what went in.
        let mut again = Vec::new();
        write_tar(&root, &mut again).unwrap();
        assert_eq!(entries(&again)[1..], expected_special_entries("src/")[..]);
    }
}
