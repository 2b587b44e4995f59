//! Host edits of a shared directory, raised in the VM as the inotify events a
//! local edit would raise (issue 12).
//!
//! virtio-fs in our guest kernel has no notification queue, so the host
//! daemon watches the shares itself and streams what changed (ShareChanged).
//! Our kernel patch (kernel-config/berth-virtiofs.patch) takes one change per
//! write to [`FSNOTIFY`]: it drops the guest's stale dentry or attributes and
//! calls fsnotify on the guest's inodes, so watchers in every container see
//! the change. The echo of a change a container made itself (virtiofsd makes
//! it on the host, the host's watcher reports it) is dropped by the kernel,
//! which remembers what went through its own FUSE requests.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use berth_agent_proto::share_change::Kind;
use berth_agent_proto::ShareChange;

/// The kernel patch's interface: `op NUL path [NUL path]` per write.
pub const FSNOTIFY: &str = "/sys/kernel/berth/fsnotify";

/// A sysfs attribute takes at most a page per write; longer ones are cut.
const MAX_RECORD: usize = 4096;

/// What one change is written to [`FSNOTIFY`] as (None: nothing to raise).
pub fn record(change: &ShareChange) -> Option<Vec<u8>> {
    let op: &[u8] = match change.kind() {
        Kind::Create => b"create",
        Kind::Modify => b"modify",
        Kind::CloseWrite => b"close_write",
        Kind::Delete if change.is_dir => b"delete_dir",
        Kind::Delete => b"delete",
        Kind::Rename => b"rename",
        Kind::Unspecified => return None,
    };
    let mut paths = vec![change.path.as_str()];
    if change.kind() == Kind::Rename {
        paths.push(change.to_path.as_str());
    }
    // The kernel resolves them from /; a NUL would split a field.
    if paths.iter().any(|p| !p.starts_with('/') || p.contains('\0')) {
        return None;
    }
    let mut out = op.to_vec();
    for path in paths {
        out.push(0);
        out.extend_from_slice(path.as_bytes());
    }
    (out.len() < MAX_RECORD).then_some(out)
}

/// The open [`FSNOTIFY`] file.
pub struct Raiser(File);

impl Raiser {
    pub fn open() -> io::Result<Raiser> {
        Self::open_at(Path::new(FSNOTIFY))
    }

    fn open_at(path: &Path) -> io::Result<Raiser> {
        std::fs::OpenOptions::new().write(true).open(path).map(Raiser)
    }

    /// Raises each change in order; one that cannot be raised (a path
    /// outside the shares, a vanished parent) is logged and skipped.
    pub fn raise_all(&self, changes: &[ShareChange]) {
        for change in changes {
            let Some(record) = record(change) else {
                tracing::debug!(?change, "share change not raised: bad or too long a path");
                continue;
            };
            // sysfs reads each write whole from its start.
            if let Err(err) = self.0.write_at(&record, 0) {
                tracing::debug!(?change, %err, "share change not raised");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: Kind, path: &str, to_path: &str) -> ShareChange {
        ShareChange { kind: kind as i32, path: path.into(), to_path: to_path.into(), is_dir: false }
    }

    #[test]
    fn each_kind_is_written_as_the_kernel_reads_it() {
        assert_eq!(record(&change(Kind::Create, "/h/a b", "")).unwrap(), b"create\0/h/a b");
        assert_eq!(record(&change(Kind::Modify, "/h/f", "")).unwrap(), b"modify\0/h/f");
        assert_eq!(record(&change(Kind::CloseWrite, "/h/f", "")).unwrap(), b"close_write\0/h/f");
        assert_eq!(record(&change(Kind::Delete, "/h/d", "")).unwrap(), b"delete\0/h/d");
        let dir = ShareChange { is_dir: true, ..change(Kind::Delete, "/h/d", "") };
        assert_eq!(record(&dir).unwrap(), b"delete_dir\0/h/d");
        assert_eq!(record(&change(Kind::Rename, "/h/a", "/h/b")).unwrap(), b"rename\0/h/a\0/h/b");
    }

    #[test]
    fn what_the_kernel_would_misread_is_not_written() {
        assert!(record(&change(Kind::Unspecified, "/h/f", "")).is_none());
        assert!(record(&change(Kind::Create, "relative", "")).is_none());
        assert!(record(&change(Kind::Create, "/h/a\0b", "")).is_none());
        assert!(record(&change(Kind::Rename, "/h/a", "")).is_none(), "a rename needs its new path");
        let long = format!("/{}", "x".repeat(MAX_RECORD));
        assert!(record(&change(Kind::Modify, &long, "")).is_none());
    }

    #[test]
    fn each_change_is_one_write_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fsnotify");
        std::fs::write(&file, "").unwrap();
        let raiser = Raiser::open_at(&file).unwrap();
        raiser.raise_all(&[change(Kind::Modify, "/h/long-name", ""), change(Kind::Delete, "/h/d", "")]);
        // Not appended: the second record overwrote the first from offset 0.
        let written = std::fs::read(&file).unwrap();
        assert_eq!(written.len(), b"modify\0/h/long-name".len());
        assert!(written.starts_with(b"delete\0/h/d"), "{written:?}");
    }
}
