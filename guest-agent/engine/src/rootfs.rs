//! A container's root filesystem: overlayfs with the image's layers as lower
//! dirs and a per-container upper and work dir; and `--user` resolved the
//! way Docker resolves it, through the image's /etc/passwd and /etc/group.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::archive::TreeWriter;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

/// The directories of one container's writable layer.
#[derive(Debug, Clone)]
pub struct ContainerLayer {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl ContainerLayer {
    /// `upper/`, `work/` and `rootfs/` under a container's directory.
    pub fn under(dir: &Path) -> ContainerLayer {
        use crate::container_dir::{ROOTFS_DIR, UPPER_DIR, WORK_DIR};
        ContainerLayer { upper: dir.join(UPPER_DIR), work: dir.join(WORK_DIR), merged: dir.join(ROOTFS_DIR) }
    }
}

/// Mounts the overlay. `lowers` are the image's layer directories, bottom
/// first (as in the image config); overlayfs wants the top one first.
pub fn mount_overlay(lowers: &[PathBuf], layer: &ContainerLayer) -> Result<(), RootfsError> {
    if lowers.is_empty() {
        // An image without layers (FROM scratch + nothing): an empty lower.
        return Err(RootfsError::Invalid("an image with no layers has no root filesystem".into()));
    }
    for dir in [&layer.upper, &layer.work, &layer.merged] {
        std::fs::create_dir_all(dir)
            .map_err(|source| RootfsError::Io { context: format!("creating {}", dir.display()), source })?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={},index=off,xino=off",
        lowerdir(lowers)?,
        layer.upper.display(),
        layer.work.display()
    );
    mount(Some("overlay"), &layer.merged, Some("overlay"), MsFlags::empty(), Some(options.as_str())).map_err(|e| {
        RootfsError::Io { context: format!("mounting the overlay on {}", layer.merged.display()), source: e.into() }
    })
}

/// overlayfs's `lowerdir` for `lowers` (bottom first): the top one first.
fn lowerdir(lowers: &[PathBuf]) -> Result<String, RootfsError> {
    for lower in lowers {
        let text = lower.to_string_lossy();
        // overlayfs splits its options on ',' and lowerdir on ':'.
        if text.contains(',') || text.contains(':') {
            return Err(RootfsError::Invalid(format!("layer path {text:?} cannot be passed to overlayfs")));
        }
    }
    Ok(lowers.iter().rev().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":"))
}

/// Mounts a view of a container's root under `at` and returns where: its
/// layers and its writable layer (`layers`, bottom first, the writable one
/// last) as lower dirs, under a throwaway writable layer on a tmpfs mounted
/// on `at` (mount points for volumes and binds are made there). It shares
/// nothing writable with the container's own overlay, so it can exist
/// beside it (`docker cp` out of, and `docker export` of, a container that
/// starts, stops or is removed meanwhile). For a private mount namespace:
/// it stays mounted until that ends.
pub fn mount_view(layers: &[PathBuf], at: &Path) -> Result<PathBuf, RootfsError> {
    if layers.is_empty() {
        return Err(RootfsError::Invalid("a container without layers has no root filesystem".into()));
    }
    let io = |context: String| move |e: nix::Error| RootfsError::Io { context, source: e.into() };
    std::fs::create_dir_all(at)
        .map_err(|source| RootfsError::Io { context: format!("creating {}", at.display()), source })?;
    mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0700"))
        .map_err(io(format!("mounting a tmpfs on {}", at.display())))?;
    let (upper, work, root) = (at.join("upper"), at.join("work"), at.join("root"));
    for dir in [&upper, &work, &root] {
        std::fs::create_dir(dir)
            .map_err(|source| RootfsError::Io { context: format!("creating {}", dir.display()), source })?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={},index=off,xino=off",
        lowerdir(layers)?,
        upper.display(),
        work.display()
    );
    mount(Some("overlay"), &root, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(io(format!("mounting a view of the container on {}", root.display())))?;
    Ok(root)
}

pub fn unmount_overlay(layer: &ContainerLayer) -> Result<(), RootfsError> {
    umount2(&layer.merged, MntFlags::MNT_DETACH)
        .map_err(|e| RootfsError::Io { context: format!("unmounting {}", layer.merged.display()), source: e.into() })
}

/// What `docker diff` reports: each path in the writable layer `upper`,
/// as 0 (changed: it exists in a lower layer), 1 (added) or 2 (deleted: an
/// overlayfs whiteout), sorted by path.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Vec<(String, u8)> {
    fn walk(dir: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<(String, u8)>) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = rel.join(entry.file_name());
            let Ok(meta) = entry.metadata() else { continue };
            let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
            let in_lower = lowers.iter().any(|l| std::fs::symlink_metadata(l.join(&path)).is_ok());
            let kind = if whiteout {
                2
            } else if in_lower {
                0
            } else {
                1
            };
            out.push((format!("/{}", path.display()), kind));
            if meta.is_dir() {
                walk(&entry.path(), &path, lowers, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(upper, Path::new(""), lowers, &mut out);
    out.sort();
    out
}

/// Paths the engine itself puts in a container's writable layer: mount
/// points for /proc, /dev and /sys and the bound /etc files. They are
/// Docker's "init layer": `docker diff` does not show them and `docker
/// commit` does not keep them.
pub fn is_engine_path(path: &str) -> bool {
    ["/proc", "/dev", "/sys"].iter().any(|m| path == *m || path.starts_with(&format!("{m}/")))
        || ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].contains(&path)
}

/// Writes a container's writable layer `upper` as an image layer tar
/// (`docker commit`): overlayfs whiteouts become `.wh.NAME` entries and
/// opaque directories get `.wh..wh..opq`, the engine's own paths are left
/// out. Everything else is written as cp and export write it
/// ([`crate::archive::TreeWriter`]: symlinks as links, never followed;
/// FIFOs and devices as such; hardlinks once).
pub fn write_layer_diff(upper: &Path, out: impl std::io::Write) -> std::io::Result<()> {
    fn walk<W: std::io::Write>(tar: &mut TreeWriter<W>, dir: &Path, rel: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = rel.join(entry.file_name());
            if is_engine_path(&format!("/{}", path.display())) {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                let mut name = std::ffi::OsString::from(".wh.");
                name.push(entry.file_name());
                tar.append_marker(&rel.join(name), meta.mtime().max(0) as u64)?;
                continue;
            }
            tar.append(&entry.path(), &meta, &path)?;
            if meta.is_dir() {
                if xattr_is(&entry.path(), "trusted.overlay.opaque", b"y") {
                    tar.append_marker(&path.join(".wh..wh..opq"), 0)?;
                }
                walk(tar, &entry.path(), &path)?;
            }
        }
        Ok(())
    }
    let mut tar = TreeWriter::new(out);
    walk(&mut tar, upper, Path::new(""))?;
    tar.finish()?.flush()
}

fn xattr_is(path: &Path, name: &str, expected: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(c_path), Ok(c_name)) = (std::ffi::CString::new(path.as_os_str().as_bytes()), std::ffi::CString::new(name))
    else {
        return false;
    };
    let mut value = [0u8; 8];
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // buffer pointer and length describe a live, writable array.
    let n = unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    n >= 0 && &value[..n as usize] == expected
}

/// A process identity inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From /etc/passwd, or "/" for unknown users (as Docker does).
    pub home: String,
}

impl Identity {
    /// The supplementary groups a process runs with: the primary group
    /// first, as Docker and containerd set it since CVE-2023-25173 (else a
    /// process that drops its gid could still hold the primary group's
    /// access), then the user's other groups.
    pub fn process_groups(&self) -> Vec<u32> {
        std::iter::once(self.gid).chain(self.additional_gids.iter().copied()).collect()
    }
}

/// Resolves Docker's `User` (`""`, `name`, `uid`, `name:group`, `uid:gid`)
/// against the container's root filesystem, as Docker does: names must
/// exist, numbers need not; supplementary groups come from /etc/group.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<Identity, RootfsError> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    resolve_user_in(&passwd, &group, user)
}

fn resolve_user_in(passwd: &str, group: &str, user: &str) -> Result<Identity, RootfsError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // name:password:uid:gid:gecos:home:shell
    let entries: Vec<Vec<&str>> =
        passwd.lines().map(|l| l.split(':').collect()).filter(|f: &Vec<&str>| f.len() >= 7).collect();
    let by_name = entries.iter().find(|f| f[0] == user_part);
    let (uid, mut gid, home, name) = match (by_name, user_part.parse::<u32>()) {
        (Some(f), _) => (parse_id(f[2], user)?, parse_id(f[3], user)?, f[5].to_string(), Some(f[0])),
        (None, Ok(uid)) => match entries.iter().find(|f| f[2].parse::<u32>() == Ok(uid)) {
            Some(f) => (uid, parse_id(f[3], user)?, f[5].to_string(), Some(f[0])),
            None => (uid, 0, "/".to_string(), None),
        },
        (None, Err(_)) => {
            return Err(RootfsError::Invalid(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            )))
        }
    };
    // name:password:gid:member,member
    let groups: Vec<Vec<&str>> =
        group.lines().map(|l| l.split(':').collect()).filter(|f: &Vec<&str>| f.len() >= 4).collect();
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match (groups.iter().find(|f| f[0] == g), g.parse::<u32>()) {
            (Some(f), _) => parse_id(f[2], user)?,
            (None, Ok(gid)) => gid,
            (None, Err(_)) => {
                return Err(RootfsError::Invalid(format!(
                    "unable to find group {g}: no matching entries in group file"
                )))
            }
        };
    }
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (name, group_part) {
        for f in &groups {
            if f[3].split(',').any(|m| m == name) {
                let g = parse_id(f[2], user)?;
                if g != gid && !additional_gids.contains(&g) {
                    additional_gids.push(g);
                }
            }
        }
    }
    Ok(Identity { uid, gid, additional_gids, home })
}

fn parse_id(field: &str, user: &str) -> Result<u32, RootfsError> {
    field
        .parse()
        .map_err(|_| RootfsError::Invalid(format!("bad id {field:?} in the image's user database (user {user:?})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\npostgres:x:70:70::/var/lib/postgresql:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n";
    const GROUP: &str = "root:x:0:\npostgres:x:70:\nweb:x:1000:\nwheel:x:10:web,root\naudio:x:29:web\n";

    fn id(user: &str) -> Result<Identity, RootfsError> {
        resolve_user_in(PASSWD, GROUP, user)
    }

    #[test]
    fn resolves_users_like_docker() {
        assert_eq!(id("").unwrap(), Identity { uid: 0, gid: 0, additional_gids: vec![10], home: "/root".into() });
        assert_eq!(
            id("postgres").unwrap(),
            Identity { uid: 70, gid: 70, additional_gids: vec![], home: "/var/lib/postgresql".into() }
        );
        assert_eq!(id("web").unwrap().additional_gids, vec![10, 29]);
        assert_eq!(id("1000").unwrap().home, "/home/web");
        let unknown = id("4242:4343").unwrap();
        assert_eq!((unknown.uid, unknown.gid, unknown.home.as_str()), (4242, 4343, "/"));
        assert_eq!(id("web:wheel").unwrap().gid, 10);
        assert!(
            id("web:wheel").unwrap().additional_gids.is_empty(),
            "an explicit group replaces the supplementary ones"
        );
        assert!(id("nobody").unwrap_err().to_string().contains("unable to find user nobody"));
        assert!(id("web:nogroup").unwrap_err().to_string().contains("unable to find group nogroup"));
    }

    #[test]
    fn changes_in_the_writable_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/passwd"), b"x").unwrap();
        std::fs::write(lower.join("gone"), b"x").unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/passwd"), b"y").unwrap();
        std::fs::write(upper.join("new"), b"z").unwrap();
        nix::sys::stat::mknod(&upper.join("gone"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
            .unwrap();
        let found = changes(&upper, &[lower]);
        let expected: Vec<(String, u8)> = [("/etc", 0), ("/etc/passwd", 0), ("/gone", 2), ("/new", 1)]
            .iter()
            .map(|(p, k)| (p.to_string(), *k))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn overlay_of_layers() {
        assert!(nix::unistd::geteuid().is_root(), "overlay tests need root, as the agent has");
        let dir = tempfile::tempdir().unwrap();
        let (base, top) = (dir.path().join("base"), dir.path().join("top"));
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(base.join("etc/a"), b"base").unwrap();
        std::fs::write(base.join("etc/b"), b"base").unwrap();
        std::fs::write(top.join("etc/b"), b"top").unwrap();
        let layer = ContainerLayer::under(&dir.path().join("c1"));
        mount_overlay(&[base.clone(), top], &layer).unwrap();
        let read = |p: &str| std::fs::read_to_string(layer.merged.join(p)).unwrap();
        assert_eq!((read("etc/a"), read("etc/b")), ("base".into(), "top".into()), "the top layer wins");
        std::fs::write(layer.merged.join("etc/a"), b"changed").unwrap();
        assert_eq!(std::fs::read(base.join("etc/a")).unwrap(), b"base", "writes go to the upper dir only");
        assert_eq!(std::fs::read(layer.upper.join("etc/a")).unwrap(), b"changed");
        unmount_overlay(&layer).unwrap();
        assert!(!layer.merged.join("etc").exists());
        assert!(mount_overlay(&[dir.path().join("a:b")], &layer).is_err());
    }

    /// docker commit keeps what cp and export keep, and the layer it
    /// writes unpacks to the same tree.
    #[test]
    fn committed_layers_keep_links_fifos_devices_and_whiteouts() {
        use crate::archive::tests::{entries, expected_special_entries, special_tree};
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        special_tree(&upper);
        nix::sys::stat::mknod(&upper.join("gone"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
            .unwrap();
        let mut tar = Vec::new();
        write_layer_diff(&upper, &mut tar).unwrap();
        let mut expected = expected_special_entries("");
        expected.insert(1, (".wh.gone".to_string(), ::tar::EntryType::Regular, None, None, None, 0));
        assert_eq!(entries(&tar), expected);

        let layer = dir.path().join("layer");
        crate::layer::unpack_layer(tar.as_slice(), &layer, None).unwrap();
        assert!(std::fs::symlink_metadata(layer.join("fifo")).unwrap().file_type().is_fifo());
        assert_eq!(std::fs::symlink_metadata(layer.join("null")).unwrap().rdev(), libc::makedev(1, 3));
        assert_eq!(std::fs::metadata(layer.join("hard-b")).unwrap().nlink(), 2);
        assert_eq!(std::fs::read_link(layer.join("to-root")).unwrap(), Path::new("/"));
    }

    /// Whiteouts and opaque dirs from the layer unpacker hide lower content
    /// once overlayfs mounts the layers.
    #[test]
    fn unpacked_whiteouts_hide_lower_files() {
        use crate::test_support::tar;
        let dir = tempfile::tempdir().unwrap();
        let base = tar(&[("etc/keep", "1"), ("etc/gone", "2"), ("cache/old", "3")]);
        let top = tar(&[("etc/.wh.gone", ""), ("cache/.wh..wh..opq", ""), ("cache/new", "4")]);
        let (l0, l1) = (dir.path().join("l0"), dir.path().join("l1"));
        crate::layer::unpack_layer(base.as_slice(), &l0, None).unwrap();
        crate::layer::unpack_layer(top.as_slice(), &l1, None).unwrap();
        let layer = ContainerLayer::under(&dir.path().join("c"));
        mount_overlay(&[l0, l1], &layer).unwrap();
        let exists = |p: &str| layer.merged.join(p).exists();
        let seen = (exists("etc/keep"), exists("etc/gone"), exists("cache/old"), exists("cache/new"));
        unmount_overlay(&layer).unwrap();
        assert_eq!(seen, (true, false, false, true));
    }
}
