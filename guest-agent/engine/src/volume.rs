//! Named volumes: directories on the data disk, `<root>/<name>/_data` (the
//! layout Docker's `local` driver uses), with `<root>/<name>/volume.json`
//! holding the name's labels and creation time.
//!
//! A new volume is filled from the image's content at its mount point the
//! first time a container mounts it (`copy_up`), as Docker does.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    Invalid(String),
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub name: String,
    pub created_ns: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Created for a container's anonymous mount (`-v /path`, image VOLUME).
    #[serde(default)]
    pub anonymous: bool,
}

pub struct VolumeStore {
    root: PathBuf,
}

/// Docker's rule for volume names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl VolumeStore {
    pub fn open(root: &Path) -> Result<VolumeStore, VolumeError> {
        std::fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        Ok(VolumeStore { root: root.to_path_buf() })
    }

    /// Where the volume's files are (what containers mount).
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        let data = std::fs::read(self.root.join(name).join("volume.json"))
            .map_err(|_| VolumeError::NotFound(name.to_string()))?;
        serde_json::from_slice(&data).map_err(|e| VolumeError::Invalid(format!("volume {name}: {e}")))
    }

    /// Creates the volume, or returns it if it exists (Docker's create is
    /// idempotent for the same name).
    pub fn create(&self, name: &str, labels: BTreeMap<String, String>, anonymous: bool) -> Result<Volume, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::Invalid(format!(
                "\"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        }
        if let Ok(existing) = self.get(name) {
            return Ok(existing);
        }
        let dir = self.root.join(name);
        let data = dir.join("_data");
        std::fs::create_dir_all(&data).map_err(io_err(format!("creating {}", data.display())))?;
        let volume = Volume { name: name.to_string(), created_ns: crate::logfile::now_ns(), labels, anonymous };
        let json = serde_json::to_vec_pretty(&volume).map_err(|e| VolumeError::Invalid(e.to_string()))?;
        // The record is written last: a volume without one is a crashed
        // create, not a volume (and `list` skips it).
        crate::durable::replace_durably(&dir.join("volume.json"), &json)
            .and_then(|()| crate::durable::sync_dir(&self.root))
            .map_err(io_err(format!("writing {}", dir.display())))?;
        Ok(volume)
    }

    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let mut volumes = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_err("listing volumes"))?.flatten() {
            if let Ok(volume) = self.get(&entry.file_name().to_string_lossy()) {
                volumes.push(volume);
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Removes the volume and its files (the caller checks it is unused).
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let dir = self.root.join(name);
        // Renamed first, so a crash mid-delete leaves no half volume.
        let doomed = self.root.join(format!(".removing-{name}"));
        std::fs::rename(&dir, &doomed)
            .and_then(|()| crate::durable::sync_dir(&self.root))
            .map_err(io_err(format!("removing volume {name}")))?;
        std::fs::remove_dir_all(&doomed).map_err(io_err(format!("removing volume {name}")))
    }

    /// Bytes used by the volume's files.
    pub fn size(&self, name: &str) -> u64 {
        tree_size(&self.data_dir(name))
    }
}

/// Bytes used by the files under `path` (a volume, a writable layer).
pub fn tree_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| tree_size(&e.path())).sum::<u64>()
}

/// Fills an empty volume with what the image has at the mount point:
/// files, links, modes and ownership. Does nothing when the volume already
/// has content or the image has nothing there.
pub fn copy_up(image_path: &Path, volume_data: &Path) -> io::Result<bool> {
    if std::fs::read_dir(volume_data)?.next().is_some() {
        return Ok(false);
    }
    match std::fs::symlink_metadata(image_path) {
        Ok(meta) if meta.is_dir() => {}
        _ => return Ok(false),
    }
    copy_dir_contents(image_path, volume_data)?;
    copy_owner_and_mode(image_path, volume_data)?;
    Ok(true)
}

fn copy_owner_and_mode(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(from)?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

fn copy_dir_contents(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
            copy_dir_contents(&source, &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
        } else {
            continue; // device nodes, sockets and FIFOs are not copied
        }
        copy_owner_and_mode(&source, &target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path()).unwrap();
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let v = store.create("data", labels.clone(), false).unwrap();
        assert_eq!(store.create("data", BTreeMap::new(), false).unwrap(), v, "create is idempotent");
        assert!(store.data_dir("data").is_dir());
        std::fs::write(store.data_dir("data").join("f"), b"x").unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.create("../x", BTreeMap::new(), false).unwrap_err().to_string().contains("invalid characters"));
        store.remove("data").unwrap();
        assert!(matches!(store.get("data"), Err(VolumeError::NotFound(_))));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn new_volumes_are_filled_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image/var/lib/app");
        std::fs::create_dir_all(image.join("sub")).unwrap();
        std::fs::write(image.join("sub/conf"), b"default").unwrap();
        std::os::unix::fs::symlink("sub/conf", image.join("link")).unwrap();
        let volume = dir.path().join("vol");
        std::fs::create_dir(&volume).unwrap();
        assert!(copy_up(&image, &volume).unwrap());
        assert_eq!(std::fs::read(volume.join("sub/conf")).unwrap(), b"default");
        assert_eq!(std::fs::read_link(volume.join("link")).unwrap(), Path::new("sub/conf"));
        std::fs::write(image.join("sub/conf"), b"changed").unwrap();
        assert!(!copy_up(&image, &volume).unwrap(), "a volume with content is left alone");
        assert_eq!(std::fs::read(volume.join("sub/conf")).unwrap(), b"default");
    }
}
