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
//!
//! The host may let the guest cache a share for a day (virtiofsd
//! `--cache=always`, the host's share_cache.rs) because these changes
//! invalidate what they touch. A tree the host was not watching may have
//! changed unseen, so before it is used again (StartContainer) or when
//! events were lost, the host names it stale and [`refresh_stale`] makes
//! the guest forget what it cached there.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use std::sync::Arc;

use berth_agent_proto::share_change::Kind;
use berth_agent_proto::{ShareChange, ShareChanges};
use tonic::{Status, Streaming};

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

/// Raises what the host's watcher reports, batch by batch, until the host
/// ends the stream.
pub async fn serve(mut batches: Streaming<ShareChanges>) -> Result<(), Status> {
    let raiser = Raiser::open().map_err(|err| {
        Status::failed_precondition(format!("this guest kernel cannot raise host file changes ({FSNOTIFY}: {err})"))
    })?;
    let raiser = Arc::new(raiser);
    while let Some(batch) = batches.message().await? {
        let raiser = raiser.clone();
        // Each write resolves paths and may ask virtiofsd: not on the runtime.
        tokio::task::spawn_blocking(move || {
            refresh_stale(Some(&raiser), &batch.stale_trees);
            raiser.raise_all(&batch.changes)
        })
        .await
        .map_err(|err| Status::internal(format!("share change task: {err}")))?;
    }
    Ok(())
}

/// [`refresh_stale`] for the bind sources of a container about to start.
pub async fn refresh_before_start(trees: Vec<String>) {
    if trees.is_empty() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || refresh_stale(Raiser::open().ok().as_ref(), &trees)).await;
}

/// Where the kernel drops unused dentries and inodes ("2") on request.
const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// Makes the guest forget what it cached of `trees` (guest paths): every
/// unused name and inode of every filesystem goes (there is no way to ask
/// one filesystem, let alone one tree, from user space), and with it their
/// attributes and pages; a tree's root, which a container may still hold
/// (its mount root, someone's working directory), has its attributes and
/// pages invalidated through the kernel patch's `modify`. Names and inodes
/// that running containers hold below a root keep what they cached: the
/// trees of running containers are watched, so only a file one held open
/// across a lapse of the host's watch can show its old size.
pub fn refresh_stale(raiser: Option<&Raiser>, trees: &[String]) {
    if trees.is_empty() {
        return;
    }
    if let Err(err) = std::fs::write(DROP_CACHES, "2") {
        tracing::warn!(%err, "could not drop the guest's cached names of shares");
    }
    let Some(raiser) = raiser else { return };
    for tree in trees {
        let change = ShareChange { kind: Kind::Modify as i32, path: tree.clone(), ..Default::default() };
        raiser.raise_all(std::slice::from_ref(&change));
    }
    tracing::debug!(?trees, "share trees refreshed");
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
