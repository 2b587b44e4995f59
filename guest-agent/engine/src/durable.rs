//! "Acknowledged means durable": what the engine reports done is on disk.
//!
//! Two tools, for two shapes of work:
//! - `sync_filesystem` (syncfs(2)) before an acknowledgement that follows
//!   many writes: an unpacked layer of thousands of files, a container's
//!   exit (its layer and volumes), a new container's directory. One journal
//!   commit covers them all; an fsync per file and directory would pay one
//!   commit each (measured in tests/bench/durability.sh).
//! - `replace_durably` for one small record (container.json, volume.json,
//!   the image index): written beside, fsync'd, renamed over, and the
//!   directory fsync'd, so a crash leaves the old record or the new one.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Flushes everything written to the filesystem that holds `path`.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a rename or a new entry in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `data` so that readers, and a crash, see the old
/// content or the new, never a part; `durable` also survives a power loss
/// (file and directory fsync'd), which files that only live as long as one
/// run of a container (its spec) need not pay for.
pub fn replace(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(data)?;
    if durable {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        sync_dir(path.parent().unwrap_or(Path::new("/")))?;
    }
    Ok(())
}

/// `replace(path, data, true)`.
pub fn replace_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    replace(path, data, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_leaves_only_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        replace_durably(&path, b"old").unwrap();
        replace(&path, b"new", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["record.json"], "no temporary left behind");
        sync_filesystem(dir.path()).unwrap();
        assert_eq!(sync_filesystem(&dir.path().join("missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
