//! The build context: the client's tar (plain or gzip) received into a
//! directory of the build's own, with a manifest of every entry and its
//! content hash (header fields and content, never the mtime, as tarsum v1
//! hashes them), so COPY/ADD cache keys need no second read.
//!
//! The tar is hostile input. Names are cleaned into the context (`..`
//! cannot climb out), symlinks are recorded in the manifest only and
//! never created on disk, nothing is written below a symlink, and device
//! nodes and FIFOs are dropped: every path this module opens is a file or
//! directory it created itself.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ignore::{clean, translate};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Kept for the copy, but no part of the hash.
    pub mtime: u64,
    /// sha256 of the header fields that matter and the content.
    pub hash: String,
}

pub struct Context {
    root: PathBuf,
    /// Cleaned relative path ("" is the root) -> entry.
    entries: BTreeMap<String, Entry>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header_hash(name: &str, kind: &Kind, mode: u32, uid: u64, gid: u64, size: u64) -> Sha256 {
    let mut hasher = Sha256::new();
    let (flag, link) = match kind {
        Kind::File => ("0", ""),
        Kind::Dir => ("5", ""),
        Kind::Symlink(target) => ("2", target.as_str()),
    };
    hasher.update(format!("name{name}mode{mode}uid{uid}gid{gid}size{size}typeflag{flag}linkname{link}").as_bytes());
    hasher
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

/// A reader over the tar, decompressed when it starts with gzip's magic.
fn decompressed(mut input: impl Read + 'static) -> io::Result<Box<dyn Read>> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = input.read(&mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let chained = io::Cursor::new(magic[..got].to_vec()).chain(input);
    Ok(if magic[..got] == [0x1f, 0x8b] { Box::new(flate2::read::GzDecoder::new(chained)) } else { Box::new(chained) })
}

/// The docker CLI's tar for a Dockerfile outside the context ends right
/// after the last file's bytes: no padding, no end-of-archive blocks (Go's
/// reader accepts that, tar-rs does not). At the end of the input this
/// reader supplies the zeros a whole archive would end with.
struct ZeroTail<R> {
    inner: R,
    total: u64,
    tail: Option<u64>,
}

impl<R: Read> Read for ZeroTail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tail.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.total += n as u64;
                return Ok(n);
            }
            self.tail = Some((512 - self.total % 512) % 512 + 1024);
        }
        let left = self.tail.as_mut().expect("set above");
        let n = (*left).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *left -= n as u64;
        Ok(n)
    }
}

impl Context {
    /// Receives the tar into `root` (which must exist and be empty).
    pub fn ingest(input: impl Read + 'static, root: &Path) -> io::Result<Context> {
        let mut context = Context { root: root.to_path_buf(), entries: BTreeMap::new() };
        context.entries.insert(String::new(), dir_entry(""));
        let mut archive = tar::Archive::new(ZeroTail { inner: decompressed(input)?, total: 0, tail: None });
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = clean(&raw);
            if name.is_empty() {
                continue;
            }
            let header = entry.header();
            let (mode, uid, gid) =
                (header.mode().unwrap_or(0o644) & 0o7777, header.uid().unwrap_or(0), header.gid().unwrap_or(0));
            let mtime = header.mtime().unwrap_or(0);
            let kind = header.entry_type();
            context.make_parents(&name)?;
            match kind {
                tar::EntryType::Directory => {
                    match context.entries.get(&name).map(|e| &e.kind) {
                        Some(Kind::Dir) => {}
                        Some(_) => return Err(invalid(format!("invalid build context: {name} changes type"))),
                        None => std::fs::create_dir(root.join(&name))?,
                    }
                    let hash = hex(&header_hash(&name, &Kind::Dir, mode, uid, gid, 0).finalize());
                    context.entries.insert(name, Entry { kind: Kind::Dir, mode, uid, gid, size: 0, mtime, hash });
                }
                tar::EntryType::Symlink => {
                    let target = String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()).into_owned();
                    context.replace_leaf(&name)?;
                    let kind = Kind::Symlink(target);
                    let hash = hex(&header_hash(&name, &kind, mode, uid, gid, 0).finalize());
                    context.entries.insert(name, Entry { kind, mode, uid, gid, size: 0, mtime, hash });
                }
                tar::EntryType::Link => {
                    let target = clean(&String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()));
                    let source = match context.entries.get(&target) {
                        Some(e) if e.kind == Kind::File => e.clone(),
                        _ => return Err(invalid(format!("invalid build context: hardlink {name} to {target}"))),
                    };
                    context.replace_leaf(&name)?;
                    std::fs::copy(root.join(&target), root.join(&name))?;
                    let mut hasher = header_hash(&name, &Kind::File, source.mode, source.uid, source.gid, source.size);
                    hasher.update(source.hash.as_bytes());
                    context.entries.insert(name, Entry { hash: hex(&hasher.finalize()), mtime, ..source });
                }
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    context.replace_leaf(&name)?;
                    let size = header.size().unwrap_or(0);
                    let mut hasher = header_hash(&name, &Kind::File, mode, uid, gid, size);
                    let mut file = std::fs::File::create_new(root.join(&name))?;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = entry.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        file.write_all(&buf[..n])?;
                    }
                    let hash = hex(&hasher.finalize());
                    context.entries.insert(name, Entry { kind: Kind::File, mode, uid, gid, size, mtime, hash });
                }
                // Devices, FIFOs, pax headers: nothing a build may copy.
                _ => {}
            }
        }
        Ok(context)
    }

    /// Every ancestor of `name` is a directory (made when absent).
    fn make_parents(&mut self, name: &str) -> io::Result<()> {
        let mut path = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            match self.entries.get(&path).map(|e| &e.kind) {
                Some(Kind::Dir) => {}
                Some(_) => {
                    return Err(invalid(format!("invalid build context: {name} is below the non-directory {path}")))
                }
                None => {
                    std::fs::create_dir(self.root.join(&path))?;
                    self.entries.insert(path.clone(), dir_entry(&path));
                }
            }
        }
        Ok(())
    }

    /// Makes room for a non-directory at `name` (a later entry wins).
    fn replace_leaf(&mut self, name: &str) -> io::Result<()> {
        match self.entries.get(name).map(|e| e.kind.clone()) {
            Some(Kind::Dir) => Err(invalid(format!("invalid build context: {name} changes type"))),
            Some(Kind::File) => std::fs::remove_file(self.root.join(name)),
            _ => Ok(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&clean(path))
    }

    /// A regular file's content (the Dockerfile, `.dockerignore`).
    pub fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        let path = clean(path);
        match self.entries.get(&path) {
            Some(e) if e.kind == Kind::File => std::fs::read(self.root.join(&path)),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("{path}: no such file"))),
        }
    }

    /// Drops a path (and what is below it) from the context.
    pub fn remove(&mut self, path: &str) {
        let path = clean(path);
        let below = format!("{path}/");
        self.entries.retain(|name, _| name != &path && !name.starts_with(&below));
    }

    /// COPY's source `pattern` (expanded): the paths it names, sorted.
    /// Wildcards are Go's `filepath.Match`: `*` and `?` stay in one segment.
    pub fn matching(&self, pattern: &str) -> Result<Vec<String>, String> {
        let pattern = clean(pattern);
        if !pattern.contains(['*', '?', '[']) {
            return Ok(self.entries.contains_key(&pattern).then_some(pattern).into_iter().collect());
        }
        let regex = translate(&pattern, false)?;
        Ok(self.entries.keys().filter(|name| !name.is_empty() && regex.is_match(name)).cloned().collect())
    }

    /// `path` and, for a directory, everything below it, in tar order.
    pub fn walk(&self, path: &str) -> Vec<(&str, &Entry)> {
        let below = if path.is_empty() { String::new() } else { format!("{path}/") };
        self.entries
            .iter()
            .filter(|(name, _)| name.as_str() == path || name.starts_with(&below))
            .map(|(name, entry)| (name.as_str(), entry))
            .collect()
    }

    /// The cache key of a source: its own hash for a file, of all below
    /// it for a directory (names relative to it, so the key says what the
    /// destination will hold).
    pub fn source_hash(&self, path: &str) -> String {
        let mut hasher = Sha256::new();
        for (name, entry) in self.walk(path) {
            hasher.update(name.as_bytes());
            hasher.update(entry.hash.as_bytes());
        }
        hex(&hasher.finalize())
    }

    /// The entries at and below `path` made anew under `dest`: what `RUN
    /// --mount=type=bind` shows of the context (exactly the context's
    /// entries, with their modes and owners). Files are hard links when
    /// `shared` (the mount is read-only), copies otherwise. Returns where
    /// `path` is; a symlink there is refused, since a bind mount of it
    /// would follow it outside the copy.
    pub fn materialise(&self, path: &str, dest: &Path, shared: bool) -> io::Result<PathBuf> {
        use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
        let path = clean(path);
        match self.entries.get(&path).map(|e| &e.kind) {
            None if !path.is_empty() => {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("\"/{path}\" not found")));
            }
            Some(Kind::Symlink(_)) => return Err(invalid(format!("\"/{path}\" is a symbolic link"))),
            _ => {}
        }
        std::fs::create_dir_all(dest)?;
        let mut links = Vec::new();
        let mut dirs = Vec::new();
        for (name, entry) in self.walk(&path) {
            let at = dest.join(name);
            let owner = (Some(entry.uid as u32), Some(entry.gid as u32));
            match &entry.kind {
                Kind::Dir => {
                    std::fs::create_dir_all(&at)?;
                    dirs.push((at, entry.mode, owner));
                }
                Kind::File => {
                    if shared {
                        std::fs::hard_link(self.root.join(name), &at)?;
                    } else {
                        std::fs::copy(self.root.join(name), &at)?;
                        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(entry.mode & 0o7777))?;
                        chown(&at, owner.0, owner.1)?;
                    }
                }
                Kind::Symlink(to) => links.push((at, to.clone(), owner)),
            }
        }
        for (at, to, owner) in links {
            symlink(to, &at)?;
            lchown(&at, owner.0, owner.1)?;
        }
        // Directories last: a read-only one is still filled above.
        for (at, mode, owner) in dirs {
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode & 0o7777))?;
            chown(&at, owner.0, owner.1)?;
        }
        Ok(dest.join(&path))
    }

    /// Where a file's content is on disk.
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn dir_entry(name: &str) -> Entry {
    Entry {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        hash: hex(&header_hash(name, &Kind::Dir, 0o755, 0, 0, 0).finalize()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(fastrand::u64(..1 << 30));
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            // Raw names: tar-rs would refuse to write the hostile ones.
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn ingest(bytes: Vec<u8>) -> io::Result<(tempfile::TempDir, Context)> {
        let dir = tempfile::tempdir().unwrap();
        let context = Context::ingest(io::Cursor::new(bytes), dir.path())?;
        Ok((dir, context))
    }

    use tar::EntryType::{Directory, Regular, Symlink};

    #[test]
    fn a_bind_mount_shows_exactly_the_contexts_entries() {
        let (_dir, mut context) = ingest(tar_of(&[
            ("src/", Directory, b"", ""),
            ("src/a.txt", Regular, b"A", ""),
            ("src/link", Symlink, b"", "/etc/passwd"),
            ("src/ignored", Regular, b"secret", ""),
            ("top", Symlink, b"", "src"),
        ]))
        .unwrap();
        context.remove("src/ignored");
        let out = tempfile::tempdir().unwrap();
        let at = context.materialise("src", &out.path().join("m"), true).unwrap();
        assert_eq!(std::fs::read(at.join("a.txt")).unwrap(), b"A");
        assert_eq!(std::fs::read_link(at.join("link")).unwrap(), Path::new("/etc/passwd"));
        assert!(!at.join("ignored").exists(), "a removed entry stays out");
        assert!(context.materialise("top", &out.path().join("n"), true).is_err(), "a link at the source is refused");
        assert!(context
            .materialise("nope", &out.path().join("o"), true)
            .unwrap_err()
            .to_string()
            .contains("not found"));
        let whole = context.materialise("", &out.path().join("p"), false).unwrap();
        assert!(whole.join("src/a.txt").is_file());
    }

    #[test]
    fn hashes_ignore_mtimes_and_see_content() {
        let one = tar_of(&[("a/x.txt", Regular, b"one", "")]);
        let (_d1, c1) = ingest(one.clone()).unwrap();
        let (_d2, c2) = ingest(tar_of(&[("a/x.txt", Regular, b"one", "")])).unwrap();
        let (_d3, c3) = ingest(tar_of(&[("a/x.txt", Regular, b"two", "")])).unwrap();
        assert_eq!(c1.source_hash("a"), c2.source_hash("a"));
        assert_ne!(c1.source_hash("a"), c3.source_hash("a"));
        assert_eq!(c1.read_file("a/x.txt").unwrap(), b"one");
    }

    #[test]
    fn an_archive_cut_after_its_last_file_is_whole() {
        // What the docker CLI sends with `-f` outside the context.
        let mut bytes = tar_of(&[("a", Regular, b"12345", "")]);
        bytes.truncate(512 + 5);
        let (_d, c) = ingest(bytes).unwrap();
        assert_eq!(c.read_file("a").unwrap(), b"12345");
    }

    #[test]
    fn gzip_is_detected() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_of(&[("Dockerfile", Regular, b"FROM x", "")])).unwrap();
        let (_d, c) = ingest(gz.finish().unwrap()).unwrap();
        assert_eq!(c.read_file("Dockerfile").unwrap(), b"FROM x");
    }

    #[test]
    fn hostile_names_stay_inside() {
        let (dir, c) = ingest(tar_of(&[("../../escape", Regular, b"x", "")])).unwrap();
        assert!(dir.path().join("escape").is_file());
        assert!(c.entry("escape").is_some());
        // Nothing is ever written below a symlink.
        let err = ingest(tar_of(&[("link", Symlink, b"", "/etc"), ("link/passwd", Regular, b"x", "")])).err().unwrap();
        assert!(err.to_string().contains("below the non-directory link"), "{err}");
        let (dir, c) = ingest(tar_of(&[("l", Symlink, b"", "/etc/shadow")])).unwrap();
        assert!(std::fs::symlink_metadata(dir.path().join("l")).is_err());
        assert!(c.read_file("l").is_err());
        assert!(ingest(tar_of(&[("d", Directory, b"", ""), ("d", Regular, b"x", "")])).is_err());
    }

    #[test]
    fn sources_match_as_go_filepath_match() {
        let (_d, c) = ingest(tar_of(&[
            ("src/a.rs", Regular, b"", ""),
            ("src/sub/b.rs", Regular, b"", ""),
            ("top.rs", Regular, b"", ""),
        ]))
        .unwrap();
        assert_eq!(c.matching("src/*.rs").unwrap(), vec!["src/a.rs"]);
        assert_eq!(c.matching("*.rs").unwrap(), vec!["top.rs"]);
        assert_eq!(c.matching("./src").unwrap(), vec!["src"]);
        assert!(c.matching("missing").unwrap().is_empty());
        assert_eq!(c.walk("src").len(), 4);
    }
}
