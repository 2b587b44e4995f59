//! Unpacking one image layer (a tar stream, optionally gzip-compressed) into
//! its own snapshot directory, in the form overlayfs reads as a lower dir.
//!
//! - Whiteouts: `.wh.NAME` becomes a 0:0 character device NAME (overlayfs'
//!   whiteout), `.wh..wh..opq` marks its directory opaque
//!   (`trusted.overlay.opaque=y`).
//! - Kept: modes (setuid included), numeric ownership, mtimes, xattrs,
//!   symlinks (targets verbatim: they are resolved later, inside the
//!   container), hardlinks, device nodes and FIFOs, sparse files.
//! - Refused, failing the whole layer: any path with `..`, any entry whose
//!   parent inside the layer is a symlink or not a directory (so no symlink,
//!   absolute or relative, can carry a write outside the layer), hardlinks
//!   whose source is not a file already inside the layer, whiteouts of an
//!   empty, `.` or `..` name, and whiteout names used as directories.
//!   [`LayerRoot::resolve`] is the one place an entry's path becomes a path
//!   on disk, and asserts all of this.
//! - Skipped, as Docker skips them: AUFS metadata at the layer's top
//!   (`.wh..wh.plnk/`, `.wh..wh.aufs`, ...).
//! - Exportable: unpacking records the stream's tar-split (`tarsplit.rs`),
//!   from which the exact original tar (and so the diff ID) can be rebuilt.
//! - Atomic: [`unpack_layer`] writes into a temporary sibling directory and
//!   renames it into place only when the whole stream unpacked and its digest
//!   (the layer's diff ID) matched. A failure or crash leaves no directory at
//!   the final path; stale temporaries are recognisable by their prefix.
//!
//! tar-rs parses the stream and writes regular files and symlinks (sparse
//! files, xattrs, ownership and modes included); the dispatch on entry types
//! is ours because tar-rs would turn device nodes into regular files and, for
//! hardlinks outside `unpack_in`, resolve the source against the process's
//! working directory.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::tarsplit;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// AUFS' own bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`), not whiteouts.
const AUFS_META_PREFIX: &str = ".wh..wh.";
/// Temporary unpack directories start with this, so start-up can remove leftovers.
pub const TEMP_PREFIX: &str = ".unpacking-";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {path:?} is unsafe: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("layer digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("unsupported layer compression: {0}")]
    UnsupportedCompression(&'static str),
    /// The cause is spelled out: tar-rs's own errors hide theirs behind
    /// `source()` ("failed to unpack `x`" without "No space left on device").
    #[error("{context}: {}", causes(source))]
    Io { context: String, source: io::Error },
    /// The stream ended inside an entry (or inside its compression).
    #[error("{context}: unexpected EOF")]
    Truncated { context: String },
}

/// An error and its chain of causes, each once, as `a: b: c`.
pub fn causes(err: &io::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = cause.source();
    }
    text
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LayerError {
    let context = context.into();
    move |source| match source.kind() {
        // A compressed stream cut short (flate2 says "incomplete deflate stream").
        io::ErrorKind::UnexpectedEof => LayerError::Truncated { context: format!("{context}: {}", causes(&source)) },
        _ => LayerError::Io { context, source },
    }
}

fn unsafe_entry(path: &Path, reason: &'static str) -> LayerError {
    LayerError::Unsafe { path: path.display().to_string(), reason }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: String,
}

/// Unpacks a layer into `dest`, which must not exist yet, atomically. When
/// `expected_diff_id` (`sha256:<hex>`) is given, the uncompressed stream must
/// match it or nothing is kept.
pub fn unpack_layer(reader: impl Read, dest: &Path, expected_diff_id: Option<&str>) -> Result<UnpackStats, LayerError> {
    let parent = dest.parent().ok_or_else(|| unsafe_entry(dest, "destination has no parent directory"))?;
    let name = dest.file_name().ok_or_else(|| unsafe_entry(dest, "destination has no name"))?;
    let temp = parent.join(format!("{TEMP_PREFIX}{}-{}", name.to_string_lossy(), std::process::id()));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(io_err(format!("removing stale {}", temp.display())))?;
    }
    std::fs::DirBuilder::new().mode(0o755).create(&temp).map_err(io_err(format!("creating {}", temp.display())))?;
    let result = tarsplit::Recorder::create(&tarsplit::split_path(&temp))
        .map_err(io_err("creating the layer's tar-split"))
        .and_then(|recorder| unpack_into(reader, &temp, recorder));
    let result = result.and_then(|stats| match expected_diff_id {
        Some(expected) if expected != stats.diff_id => {
            Err(LayerError::DigestMismatch { expected: expected.to_string(), actual: stats.diff_id })
        }
        _ => Ok(stats),
    });
    let result = result.and_then(|stats| {
        // The split first: a layer directory never exists without it.
        tarsplit::rename(&temp, dest).map_err(io_err(format!("moving the tar-split of {}", dest.display())))?;
        std::fs::rename(&temp, dest).map_err(io_err(format!("moving the layer into {}", dest.display())))?;
        Ok(stats)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
        tarsplit::remove(&temp);
    }
    result
}

/// The diff ID (`sha256:<hex>` of the uncompressed stream) of a layer and
/// the stream's length, without unpacking it.
pub fn diff_id_of(reader: impl Read) -> Result<(String, u64), LayerError> {
    let mut hashing = HashingReader::new(decompressed(reader)?);
    io::copy(&mut hashing, &mut io::sink()).map_err(io_err("reading the layer"))?;
    Ok((format!("sha256:{}", hex(&hashing.hasher.finalize())), hashing.bytes))
}

/// Removes unpack directories left behind by a crash.
pub fn remove_stale_temporaries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// Counts and hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    /// The stream has ended: a parse error now means it was cut short.
    ended: bool,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0, ended: false }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.ended |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

/// Picks the decompressor from the stream's first bytes.
fn decompressed<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf().map_err(io_err("reading the layer"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(LayerError::UnsupportedCompression("zstd"))
    } else if head.starts_with(b"BZh") {
        Err(LayerError::UnsupportedCompression("bzip2"))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(LayerError::UnsupportedCompression("xz"))
    } else {
        Ok(Box::new(reader))
    }
}

fn unpack_into(reader: impl Read, root: &Path, recorder: tarsplit::Recorder) -> Result<UnpackStats, LayerError> {
    let root = LayerRoot::open(root)?;
    let mut hashing = HashingReader::new(decompressed(reader)?);
    let mut recording = recorder.reader(&mut hashing);
    let mut stats = UnpackStats::default();
    let mut dir_mtimes = Vec::new();
    let walked = (|| {
        let mut archive = tar::Archive::new(&mut recording);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_unpack_xattrs(true);
        archive.set_overwrite(true);
        for entry in archive.entries().map_err(io_err("reading the layer"))? {
            let mut entry = entry.map_err(io_err("reading a layer entry"))?;
            unpack_entry(&mut entry, &root, &recorder, &mut dir_mtimes)?;
            stats.entries += 1;
        }
        // Read to the end: the digest covers the whole stream, padding
        // included (and the tar-split records it, for an exact replay).
        io::copy(&mut recording, &mut io::sink()).map_err(io_err("reading the layer"))?;
        Ok(())
    })();
    let cut_short = recording.get_ref().ended;
    drop(recording);
    match walked {
        // tar-rs reports a stream that ends inside an entry as "failed to
        // read entire block" or "failed to write entire file": name the cause.
        Err(LayerError::Io { context, .. }) if cut_short => return Err(LayerError::Truncated { context }),
        other => other?,
    }
    recorder.finish().map_err(io_err("recording the layer's tar-split"))?;
    // Children bumped their directories' mtimes: restore them, deepest first.
    for (path, mtime) in dir_mtimes.iter().rev() {
        let _ = filetime::set_symlink_file_times(path, *mtime, *mtime);
    }
    stats.tar_bytes = hashing.bytes;
    stats.diff_id = format!("sha256:{}", hex(&hashing.hasher.finalize()));
    Ok(stats)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry's path inside the layer, with `/` and `./` prefixes removed;
/// None for the root itself. Refuses `..` anywhere.
fn layer_relative(raw: &Path) -> Result<Option<PathBuf>, LayerError> {
    let mut rel = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(raw, "`..` in a layer path")),
            Component::Prefix(_) => return Err(unsafe_entry(raw, "path prefix in a layer path")),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// What a whiteout entry `rel` (named `.wh.HIDDEN`) hides: HIDDEN in the
/// same directory. An empty, `.` or `..` name would hide the directory
/// itself or its parent (the `.wh...` entry that once removed the store).
fn whiteout_target(rel: &Path, hidden: &[u8]) -> Result<PathBuf, LayerError> {
    if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
        return Err(unsafe_entry(rel, "a whiteout of an empty, `.` or `..` name"));
    }
    Ok(rel.with_file_name(OsStr::from_bytes(hidden)))
}

/// The layer directory being unpacked, held open so that entries are
/// resolved beneath it.
struct LayerRoot {
    path: PathBuf,
    dir: std::os::fd::OwnedFd,
}

impl LayerRoot {
    fn open(path: &Path) -> Result<LayerRoot, LayerError> {
        let dir = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
        Ok(LayerRoot { path: path.to_path_buf(), dir: dir.into() })
    }

    /// The one place an entry's path inside the layer becomes a path on
    /// disk. `rel` must be made of plain names only (no `.`, `..`, root or
    /// empty path: whatever built it, it cannot name the layer itself or
    /// anything above it), and every ancestor inside the layer must be a
    /// real directory (missing ones are created), so that writing the
    /// returned path cannot leave the layer through a symlink.
    ///
    /// The kernel checks the ancestors where it can (openat2 with
    /// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, Linux 5.6+); the component
    /// walk with lstat is the fallback and creates what is missing. Paths
    /// that pass stay valid: the directory is a fresh temporary that only
    /// this (single-threaded) unpack writes to.
    fn resolve(&self, rel: &Path) -> Result<PathBuf, LayerError> {
        let plain = rel.components().all(|c| matches!(c, Component::Normal(n) if n != ".." && n != "."));
        if rel.as_os_str().is_empty() || !plain {
            return Err(unsafe_entry(rel, "a path outside the layer"));
        }
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(self.path.join(rel));
        };
        // ENOSYS: a kernel before 5.6; EPERM: a seccomp profile that predates openat2.
        let unavailable = |errno| matches!(errno, nix::errno::Errno::ENOSYS | nix::errno::Errno::EPERM);
        match self.open_beneath(parent) {
            Ok(()) => {}
            Err(errno) if unavailable(errno) => self.make_parents(rel)?,
            Err(_) => {
                self.make_parents(rel)?;
                match self.open_beneath(parent) {
                    Ok(()) => {}
                    Err(errno) if unavailable(errno) => {}
                    Err(errno) => {
                        return Err(io_err(format!("resolving {} in the layer", parent.display()))(errno.into()))
                    }
                }
            }
        }
        Ok(self.path.join(rel))
    }

    fn open_beneath(&self, dir: &Path) -> Result<(), nix::errno::Errno> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        nix::fcntl::openat2(&self.dir, dir, how).map(drop)
    }

    /// Walks `rel`'s ancestors component by component without following
    /// symlinks, creating missing directories.
    fn make_parents(&self, rel: &Path) -> Result<(), LayerError> {
        let mut current = self.path.clone();
        for part in rel.parent().into_iter().flat_map(Path::components) {
            current.push(part);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(unsafe_entry(rel, "a parent directory is a symlink"))
                }
                Ok(_) => return Err(unsafe_entry(rel, "a parent directory is not a directory")),
                Err(err) if err.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&current)
                    .map_err(io_err(format!("creating {}", current.display())))?,
                Err(err) => return Err(io_err(format!("inspecting {}", current.display()))(err)),
            }
        }
        Ok(())
    }
}

/// Removes what an earlier entry put at `path` (a later entry wins), except
/// a directory that is to stay a directory.
fn clear(path: &Path, keep_dir: bool) -> Result<(), LayerError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => {
            if !keep_dir {
                std::fs::remove_dir_all(path).map_err(io_err(format!("replacing {}", path.display())))?;
            }
        }
        Ok(_) => std::fs::remove_file(path).map_err(io_err(format!("replacing {}", path.display())))?,
        Err(_) => {}
    }
    Ok(())
}

/// Whether `rel` is AUFS metadata at the layer's top, which is skipped as
/// Docker skips it. A whiteout name anywhere else but the last component
/// is refused: it names something deleted, not a directory.
fn is_aufs_metadata(rel: &Path) -> Result<bool, LayerError> {
    let mut parents = rel.parent().into_iter().flat_map(Path::components).map(|c| c.as_os_str().as_bytes());
    let first = rel.components().next().map(|c| c.as_os_str().as_bytes()).unwrap_or_default();
    if first.starts_with(AUFS_META_PREFIX.as_bytes()) && first != OPAQUE_MARKER.as_bytes() {
        return Ok(true);
    }
    if parents.any(|part| part.starts_with(WHITEOUT_PREFIX.as_bytes())) {
        return Err(unsafe_entry(rel, "a whiteout name used as a directory"));
    }
    Ok(false)
}

fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    root: &LayerRoot,
    recorder: &tarsplit::Recorder,
    dir_mtimes: &mut Vec<(PathBuf, filetime::FileTime)>,
) -> Result<(), LayerError> {
    let raw = entry.path().map_err(io_err("reading an entry path"))?.into_owned();
    let Some(rel) = layer_relative(&raw)? else { return Ok(()) };
    if is_aufs_metadata(&rel)? {
        return Ok(());
    }
    let name = rel.file_name().unwrap_or_default();
    let header = entry.header().clone();
    let kind = header.entry_type();

    // Whiteouts first: they are names, not files.
    if name == OsStr::new(OPAQUE_MARKER) {
        let dir = root.resolve(&rel)?.parent().map(Path::to_path_buf).unwrap_or_else(|| root.path.clone());
        return set_xattr(&dir, "trusted.overlay.opaque", b"y");
    }
    if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        let hidden_rel = whiteout_target(&rel, hidden)?;
        let target = root.resolve(&hidden_rel)?;
        recorder.before_replacing(&root.path, &hidden_rel, false).map_err(io_err("saving a replaced file"))?;
        clear(&target, false)?;
        return make_node(&target, libc::S_IFCHR, 0o000, 0, 0);
    }

    let target = root.resolve(&rel)?;
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    recorder
        .before_replacing(&root.path, &rel, kind == tar::EntryType::Directory)
        .map_err(io_err("saving a replaced file"))?;
    match kind {
        tar::EntryType::Directory => {
            clear(&target, true)?;
            if !target.exists() {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&target)
                    .map_err(io_err(format!("creating {}", target.display())))?;
            }
            chown(&target, uid, gid)?;
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(io_err(format!("chmod {}", target.display())))?;
            if let Ok(mtime) = header.mtime() {
                dir_mtimes.push((target.clone(), filetime::FileTime::from_unix_time(mtime as i64, 0)));
            }
            // Directory xattrs arrive as PAX records on the entry.
            apply_xattrs(entry, &target)
        }
        tar::EntryType::Link => {
            let source = entry
                .link_name()
                .map_err(io_err("reading a hardlink target"))?
                .ok_or_else(|| unsafe_entry(&rel, "hardlink without a target"))?
                .into_owned();
            let source_rel =
                layer_relative(&source)?.ok_or_else(|| unsafe_entry(&rel, "hardlink to the layer root"))?;
            let source_path = root.resolve(&source_rel)?;
            match std::fs::symlink_metadata(&source_path) {
                Ok(meta) if !meta.file_type().is_dir() => {}
                _ => return Err(unsafe_entry(&rel, "hardlink source is not a file earlier in this layer")),
            }
            clear(&target, false)?;
            // link(2) does not follow a symlink source: a link to a symlink
            // is a second name for the symlink, inside the layer.
            std::fs::hard_link(&source_path, &target).map_err(io_err(format!("linking {}", target.display())))
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let file_type = match kind {
                tar::EntryType::Char => libc::S_IFCHR,
                tar::EntryType::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            clear(&target, false)?;
            make_node(&target, file_type, mode, major, minor)?;
            chown(&target, uid, gid)?;
            apply_xattrs(entry, &target)
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse | tar::EntryType::Symlink => {
            clear(&target, false)?;
            // A sparse entry's stream content is not the file's bytes: it
            // stays in the recorded bytes.
            let size = entry.size();
            if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) && size > 0 {
                recorder
                    .file(&rel, entry.raw_file_position(), size)
                    .map_err(io_err("recording the layer's tar-split"))?;
            }
            // The parent was checked above; tar-rs writes exactly `target`.
            entry.unpack(&target).map_err(io_err(format!("writing {}", target.display())))?;
            Ok(())
        }
        // PAX and GNU long-name records are consumed by the entries iterator.
        other => {
            tracing::debug!(?other, path = %rel.display(), "skipping an unsupported layer entry type");
            Ok(())
        }
    }
}

fn apply_xattrs<R: Read>(entry: &mut tar::Entry<R>, path: &Path) -> Result<(), LayerError> {
    let Some(extensions) = entry.pax_extensions().map_err(io_err("reading PAX records"))? else { return Ok(()) };
    for ext in extensions {
        let ext = ext.map_err(io_err("reading a PAX record"))?;
        if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            set_xattr(path, &String::from_utf8_lossy(name), ext.value_bytes())?;
        }
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<std::ffi::CString, LayerError> {
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| unsafe_entry(path, "NUL byte in a path"))
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), LayerError> {
    let c = c_path(path)?;
    let c_name = std::ffi::CString::new(name).map_err(|_| unsafe_entry(path, "NUL byte in an xattr name"))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the value
    // pointer and length describe a live slice. lsetxattr does not follow symlinks.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), c_name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        return Err(io_err(format!("setting xattr {name} on {}", path.display()))(io::Error::last_os_error()));
    }
    Ok(())
}

fn make_node(path: &Path, file_type: libc::mode_t, mode: u32, major: u32, minor: u32) -> Result<(), LayerError> {
    let c = c_path(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), file_type | mode as libc::mode_t, libc::makedev(major, minor)) };
    if rc != 0 {
        return Err(io_err(format!("creating device node {}", path.display()))(io::Error::last_os_error()));
    }
    // mknod applies the umask: set the mode the layer asked for.
    if file_type != libc::S_IFCHR || major != 0 || minor != 0 {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io_err(format!("chmod {}", path.display())))?;
    }
    Ok(())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), LayerError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(format!("chown {}", path.display())))
}

#[cfg(test)]
mod tests;
