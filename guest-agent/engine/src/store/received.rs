//! Receiving a `docker load` archive in one pass, so that receiving, hashing
//! and unpacking overlap: each member that is a layer (a tar, or a gzip of
//! one) is unpacked and hashed while it streams in, into a numbered
//! directory of the load's work dir; every other member (configs,
//! manifests: small) is written to the work dir as a file. Which member is
//! which image's layer is only known at the end (`docker save` writes
//! `manifest.json` last), so layers are matched to their images afterwards,
//! by member name, and verified against the configs' diff IDs then.
//!
//! The archive is hostile input. Member paths are checked lexically (no
//! `..`, nothing absolute); symlink members (`docker save` links duplicate
//! layers) are never created on disk but kept in a map and resolved
//! lexically inside the archive, so no write or read can follow one out;
//! layers are unpacked by `layer::unpack_layer`, with its own guarantees.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::{invalid, io_err, StoreError};
use crate::layer::{self, UnpackStats};

/// How many symlink members a lookup follows before giving up (a loop).
const MAX_LINK_HOPS: usize = 16;

/// Enough of a member to tell a layer from a JSON document: a tar header
/// carries `ustar` at offset 257.
const HEAD: usize = 512;

/// A layer member, unpacked into the work dir.
#[derive(Debug)]
pub(super) struct UnpackedLayer {
    pub dir: PathBuf,
    pub stats: UnpackStats,
}

/// What one pass over the archive left in the work dir.
pub(super) struct Received {
    files: PathBuf,
    layers: HashMap<PathBuf, UnpackedLayer>,
    links: HashMap<PathBuf, PathBuf>,
}

/// Reads the whole archive: layers unpacked under `work/layers/N`, other
/// regular members under `work/files/`.
pub(super) fn receive(archive: impl Read, work: &Path) -> Result<Received, StoreError> {
    let files = work.join("files");
    let layers_dir = work.join("layers");
    for dir in [&files, &layers_dir] {
        std::fs::create_dir(dir).map_err(io_err("creating a load directory"))?;
    }
    let mut received = Received { files, layers: HashMap::new(), links: HashMap::new() };
    // Numbers the unpack directories (not `layers.len()`: a replaced member
    // leaves its directory behind).
    let mut unpacked = 0usize;
    let mut outer = tar::Archive::new(archive);
    for entry in outer.entries().map_err(io_err("reading the image archive"))? {
        let mut entry = entry.map_err(io_err("reading the image archive"))?;
        let raw = entry.path().map_err(io_err("reading an archive member's name"))?.into_owned();
        let Some(path) = member_path(&raw)? else { continue };
        received.forget(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(received.files.join(&path)).map_err(io_err("unpacking the image archive"))?
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_err("reading an archive member's link"))?
                    .ok_or_else(|| invalid(format!("archive member {} is a symlink without a target", raw.display())))?
                    .into_owned();
                received.links.insert(path, target);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut head = Vec::with_capacity(HEAD);
                (&mut entry).take(HEAD as u64).read_to_end(&mut head).map_err(io_err("reading the image archive"))?;
                let is_layer = looks_like_layer(&head);
                let rest = io::Cursor::new(head).chain(&mut entry);
                if is_layer {
                    let dir = layers_dir.join(unpacked.to_string());
                    unpacked += 1;
                    let stats = layer::unpack_layer(rest, &dir, None)
                        .map_err(|e| invalid(format!("archive member {}: {e}", raw.display())))?;
                    received.layers.insert(path, UnpackedLayer { dir, stats });
                } else {
                    received.write_file(&path, rest)?;
                }
            }
            other => {
                return Err(invalid(format!("archive member {} has an unsupported type ({other:?})", raw.display())))
            }
        }
    }
    Ok(received)
}

impl Received {
    /// The unpacked layer a member name leads to, if it was one.
    pub fn layer(&self, name: &str) -> Result<Option<&UnpackedLayer>, StoreError> {
        Ok(self.layers.get(&self.resolve(name)?))
    }

    /// Opens a regular (non-layer) member.
    pub fn open(&self, name: &str) -> Result<std::fs::File, StoreError> {
        let path = self.files.join(self.resolve(name)?);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                std::fs::File::open(&path).map_err(io_err(format!("opening archive member {name}")))
            }
            _ => Err(invalid(format!("archive member {name:?} is not a file inside the archive"))),
        }
    }

    /// Reads a regular (non-layer) member.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        self.open(name)?.read_to_end(&mut bytes).map_err(io_err(format!("reading archive member {name}")))?;
        Ok(bytes)
    }

    /// Whether the archive has a member by this name, of any kind (reading a
    /// symlink member that leads outside fails later, saying so).
    pub fn has(&self, name: &str) -> bool {
        member_path(Path::new(name)).ok().flatten().is_some_and(|path| {
            self.links.contains_key(&path)
                || self.layers.contains_key(&path)
                || std::fs::symlink_metadata(self.files.join(path)).is_ok()
        })
    }

    /// The member a name leads to after following symlink members, lexically.
    fn resolve(&self, name: &str) -> Result<PathBuf, StoreError> {
        let outside = || invalid(format!("archive member {name:?} is not a file inside the archive"));
        let mut path = member_path(Path::new(name))?.ok_or_else(outside)?;
        for _ in 0..MAX_LINK_HOPS {
            let Some(target) = self.links.get(&path) else { return Ok(path) };
            let joined = path.parent().unwrap_or(Path::new("")).join(target);
            path = normalize_inside(&joined).ok_or_else(outside)?;
        }
        Err(invalid(format!("archive member {name:?}: too many levels of symlinks")))
    }

    /// A later member of the same name replaces an earlier one, as in tar.
    fn forget(&mut self, path: &Path) {
        self.links.remove(path);
        self.layers.remove(path);
    }

    fn write_file(&self, path: &Path, mut contents: impl Read) -> Result<(), StoreError> {
        let dest = self.files.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("unpacking the image archive"))?;
        }
        // Only directories and regular files are ever created under files/,
        // so no component of `dest` can be a symlink.
        let mut file = std::fs::File::create(&dest).map_err(io_err(format!("unpacking {}", path.display())))?;
        io::copy(&mut contents, &mut file).map_err(io_err(format!("unpacking {}", path.display())))?;
        Ok(())
    }
}

/// A member's path inside the archive: `.` and a leading `/` dropped, `..`
/// refused. `None` for the archive's root itself.
fn member_path(raw: &Path) -> Result<Option<PathBuf>, StoreError> {
    let mut path = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(format!("archive member {} points outside the archive", raw.display())))
            }
        }
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

/// Resolves `..` against the path so far; `None` if it climbs out.
fn normalize_inside(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            // An absolute link target names the host's root, not the archive's.
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// A tar (`ustar` magic) or a gzip stream: what layers are. The empty layer
/// (1,024 zero bytes) has no magic and is stored as a file, then unpacked
/// from there like any member this misses.
fn looks_like_layer(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b]) || head.get(257..262) == Some(b"ustar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_stay_inside_the_archive() {
        assert_eq!(member_path(Path::new("./a/layer.tar")).unwrap(), Some(PathBuf::from("a/layer.tar")));
        assert_eq!(member_path(Path::new("/manifest.json")).unwrap(), Some(PathBuf::from("manifest.json")));
        assert_eq!(member_path(Path::new("./")).unwrap(), None);
        assert!(member_path(Path::new("a/../../etc/passwd")).is_err());
    }

    #[test]
    fn link_targets_resolve_lexically_inside() {
        assert_eq!(normalize_inside(Path::new("a/../b/layer.tar")), Some(PathBuf::from("b/layer.tar")));
        assert_eq!(normalize_inside(Path::new("a/../../x")), None);
        assert_eq!(normalize_inside(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn layers_are_told_from_documents_by_their_first_bytes() {
        let tar = crate::test_support::tar(&[("f", b"x".as_slice())]);
        assert!(looks_like_layer(&tar[..HEAD]));
        assert!(looks_like_layer(&[0x1f, 0x8b, 8, 0]));
        assert!(!looks_like_layer(b"{\"architecture\":\"amd64\"}"));
        assert!(!looks_like_layer(&[0u8; 1024]));
    }
}
