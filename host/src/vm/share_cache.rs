//! How long the guest may trust what it cached of a share (virtiofsd's
//! `--cache`), decided per share.
//!
//! With `always` the guest keeps names, attributes and file pages for a
//! day instead of a second: metadata-heavy work on a bind mount (a build's
//! stat storm, a `git status`) stops asking the host for what it asked a
//! moment ago. It is only right while something tells the guest what the
//! host changed: the daemon's watcher (share_watch/) covers every bind
//! source of a starting or running container, and a tree it begins to
//! watch is refreshed in the guest first (StartContainerRequest /
//! ShareChanges `stale_trees`). What the host's inotify cannot see keeps
//! the short cache: a share on (or containing) a network or FUSE
//! filesystem, whose other clients change files without local events, and
//! a host where inotify does not work at all.

use std::path::Path;

/// virtiofsd's `--cache` for a share at `host_path`.
pub fn policy(host_path: &Path) -> &'static str {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if host_watcher_works() && events_cover(host_path, &mountinfo) {
        "always"
    } else {
        "auto"
    }
}

fn host_watcher_works() -> bool {
    use notify::Watcher;
    match notify::recommended_watcher(|_| {}) {
        Ok(mut watcher) => watcher.watch(Path::new("/"), notify::RecursiveMode::NonRecursive).is_ok(),
        Err(err) => {
            tracing::warn!(%err, "no host file watcher: shares keep virtiofsd's short cache");
            false
        }
    }
}

/// Filesystems whose files change without the local kernel's inotify
/// hearing of it (other clients, another machine, a FUSE server's own).
const WITHOUT_LOCAL_EVENTS: &[&str] =
    &["nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "9p", "afs", "glusterfs", "lustre", "gfs2", "ocfs2", "virtiofs"];

/// Whether inotify on the host sees every change under `host_path`: the
/// filesystem it is on and each one mounted below it is local.
fn events_cover(host_path: &Path, mountinfo: &str) -> bool {
    let mut containing: Option<(usize, &str)> = None;
    for (mount_point, fstype) in mountinfo.lines().filter_map(parse_mount) {
        let mount_point = Path::new(&mount_point);
        if mount_point.starts_with(host_path) && mount_point != host_path {
            if !has_local_events(fstype) {
                tracing::info!(share = %host_path.display(), mount = %mount_point.display(), fstype,
                    "a mount in the share changes without host events: short cache");
                return false;
            }
        } else if host_path.starts_with(mount_point) {
            let depth = mount_point.components().count();
            // Later lines of the same mount point are mounted over the earlier.
            if containing.is_none_or(|(d, _)| depth >= d) {
                containing = Some((depth, fstype));
            }
        }
    }
    match containing {
        Some((_, fstype)) if !has_local_events(fstype) => {
            tracing::info!(share = %host_path.display(), fstype, "the share changes without host events: short cache");
            false
        }
        Some(_) => true,
        None => false,
    }
}

fn has_local_events(fstype: &str) -> bool {
    !(fstype.starts_with("fuse") || WITHOUT_LOCAL_EVENTS.contains(&fstype))
}

/// A mountinfo line's mount point (unescaped) and filesystem type.
fn parse_mount(line: &str) -> Option<(String, &str)> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let fstype = after.split(' ').next()?;
    Some((unescape(mount_point), fstype))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw - proc proc rw
30 22 0:30 / /tmp rw shared:5 - tmpfs tmpfs rw
31 22 0:31 / /home rw - nfs4 srv:/home rw
32 22 8:2 / /srv rw - xfs /dev/sda2 rw
33 32 0:33 / /srv/data/remote rw - cifs //nas/x rw
34 32 0:34 / /srv/my\\040mnt rw - fuse.sshfs me@h: rw
35 22 8:3 / /work rw - ext4 /dev/sda3 rw
";

    #[test]
    fn local_filesystems_get_the_long_cache() {
        assert!(events_cover(Path::new("/tmp"), MOUNTINFO));
        assert!(events_cover(Path::new("/tmp/x"), MOUNTINFO));
        assert!(events_cover(Path::new("/work/project"), MOUNTINFO));
        assert!(events_cover(Path::new("/srv/code"), MOUNTINFO));
    }

    #[test]
    fn what_changes_without_host_events_keeps_the_short_cache() {
        assert!(!events_cover(Path::new("/home/me"), MOUNTINFO), "on NFS");
        assert!(!events_cover(Path::new("/srv"), MOUNTINFO), "a CIFS mount below it");
        assert!(!events_cover(Path::new("/srv/data"), MOUNTINFO));
        assert!(!events_cover(Path::new("/srv/my mnt/x"), MOUNTINFO), "sshfs, escaped mount point");
        assert!(!events_cover(Path::new("/anywhere"), ""), "no mount table: unknown");
    }

    #[test]
    fn the_last_mount_on_a_point_is_the_one_seen() {
        let over = format!("{MOUNTINFO}36 30 0:36 / /tmp rw - nfs srv:/t rw\n");
        assert!(!events_cover(Path::new("/tmp/x"), &over));
    }
}
