//! The image store: content-addressed blobs, unpacked layers, and an index
//! of images and tags, all under one directory on the data disk.
//!
//! ```text
//! blobs/sha256/<hex>     image configs (and later manifests), verified on write
//! layers/sha256/<hex>/   one unpacked layer per diff ID (overlayfs lower dir)
//! index.json             images and tags; replaced atomically, written last
//! tmp/                   work in progress; emptied at open
//! ```
//!
//! Nothing half-written is ever visible: blobs and layers are written to
//! temporaries and renamed into place after their digests check out, and an
//! image appears only when the index that names it is renamed into place. A
//! crash leaves at most unreferenced blobs or layers (invisible, reclaimable)
//! and temporaries that the next `open` removes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layer::{self, LayerError};
use crate::reference;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    /// Docker's wording, which clients match on.
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

/// An image as the index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the image config: Docker's image ID.
    pub id: String,
    /// The layers' diff IDs, bottom first.
    pub diff_ids: Vec<String>,
    /// Uncompressed size of all layers.
    pub size: u64,
    /// Unix seconds when the image entered the store.
    pub added_at: u64,
    /// Unix seconds from the config's `created` (0 when absent).
    #[serde(default)]
    pub created: i64,
    /// The image a commit started from, as Docker records it (its config
    /// does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Docker's RepoDigests, normalised (`docker.io/library/busybox@sha256:
    /// <manifest digest>`): what a pull fetched or a push wrote
    /// (`store/digests.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
}

/// What `remove` did, in Docker's terms.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
    /// Bytes of the layers deleted (as tar streams).
    pub reclaimed: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
    /// Normalised reference -> image ID.
    tags: BTreeMap<String, String>,
    /// Diff ID -> the compressed blobs registries know the layer as
    /// (`store/digests.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    layer_blobs: BTreeMap<String, Vec<digests::LayerBlob>>,
}

pub struct ImageStore {
    root: PathBuf,
    index: Index,
}

/// The store's files without its index: all that work done outside the
/// store's lock (receiving and unpacking a `docker load`) may touch.
/// Everything it writes is content-addressed and invisible until an index
/// commit names it, so it needs no lock; the commit checks again that what
/// it names is there.
#[derive(Debug, Clone)]
pub struct StoreFiles {
    root: PathBuf,
}

/// `sha256:<64 hex>` or an error.
fn hex_of(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            Ok(hex)
        }
        _ => Err(invalid(format!("invalid digest {digest:?}"))),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl StoreFiles {
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers/sha256").join(hex_of(diff_id)?))
    }

    /// Stores a blob, verifying it against `expected` when given; returns its digest.
    pub fn write_blob(&self, mut reader: impl Read, expected: Option<&str>) -> Result<String, StoreError> {
        let tmp = self.root.join("tmp").join(format!("blob-{}-{}", std::process::id(), now()));
        let mut file = std::fs::File::create(&tmp).map_err(io_err("creating a blob"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(io_err("reading a blob"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io_err("writing a blob"))?;
        }
        let digest = format!("sha256:{}", hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>());
        if let Some(expected) = expected {
            if expected != digest {
                let _ = std::fs::remove_file(&tmp);
                return Err(StoreError::DigestMismatch {
                    what: "blob".into(),
                    expected: expected.into(),
                    actual: digest,
                });
            }
        }
        file.sync_all().map_err(io_err("syncing a blob"))?;
        std::fs::rename(&tmp, self.blob_path(&digest)?).map_err(io_err("storing a blob"))?;
        Ok(digest)
    }

    /// Unpacks a layer unless the store already has it. Either way the
    /// stream must match its diff ID: an archive cannot pass off other
    /// content under the name of a layer we trust.
    /// Returns the layer's uncompressed size.
    pub(crate) fn ensure_layer(&self, reader: impl Read, diff_id: &str) -> Result<u64, StoreError> {
        let dest = self.layer_dir(diff_id)?;
        if !dest.is_dir() {
            return Ok(layer::unpack_layer(reader, &dest, Some(diff_id))?.tar_bytes);
        }
        let (actual, bytes) = layer::diff_id_of(reader)?;
        if actual != diff_id {
            return Err(StoreError::DigestMismatch { what: "layer".into(), expected: diff_id.into(), actual });
        }
        Ok(bytes)
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

impl ImageStore {
    /// The store's files, for work outside its lock (see `StoreFiles`).
    pub fn files(&self) -> StoreFiles {
        StoreFiles { root: self.root.clone() }
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        self.files().blob_path(digest)
    }

    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, StoreError> {
        self.files().layer_dir(diff_id)
    }

    pub fn write_blob(&self, reader: impl Read, expected: Option<&str>) -> Result<String, StoreError> {
        self.files().write_blob(reader, expected)
    }

    fn ensure_layer(&self, reader: impl Read, diff_id: &str) -> Result<u64, StoreError> {
        self.files().ensure_layer(reader, diff_id)
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.files().tmp_dir()
    }
}

impl ImageStore {
    /// Opens (creating) the store at `root`, removing what a crash left behind.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        for dir in ["blobs/sha256", "layers/sha256", "tmp"] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(io_err(format!("creating {}", root.join(dir).display())))?;
        }
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io_err("listing tmp"))?.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(io_err(format!("removing leftover {}", path.display())))?;
        }
        let stale = layer::remove_stale_temporaries(&root.join("layers/sha256")).map_err(io_err("cleaning layers"))?;
        if stale > 0 {
            tracing::warn!(stale, "removed half-unpacked layers left by a crash");
        }
        let index = match std::fs::read(root.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                invalid(format!("the image index {} is corrupt: {e}", root.join("index.json").display()))
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Index::default(),
            Err(err) => return Err(io_err("reading the image index")(err)),
        };
        Ok(ImageStore { root: root.to_path_buf(), index })
    }

    pub fn images(&self) -> impl Iterator<Item = &ImageRecord> {
        self.index.images.values()
    }

    /// The references that point at an image.
    pub fn tags_of(&self, id: &str) -> Vec<&str> {
        self.index.tags.iter().filter(|(_, v)| v.as_str() == id).map(|(k, _)| k.as_str()).collect()
    }

    /// Finds an image by reference, full ID, or unambiguous ID prefix (at least 4 hex digits).
    pub fn resolve(&self, name: &str) -> Option<&ImageRecord> {
        if let Ok(normalized) = reference::normalize(name) {
            if let Some(id) = self.index.tags.get(&normalized) {
                return self.index.images.get(id);
            }
            if let Some(image) = self.by_repo_digest(&normalized) {
                return Some(image);
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut matches = self.index.images.values().filter(|img| img.id["sha256:".len()..].starts_with(hex));
        match (matches.next(), matches.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// Points `target` (a reference) at the image `source` names.
    pub fn tag(&mut self, source: &str, target: &str) -> Result<String, StoreError> {
        let id = self.resolve(source).ok_or_else(|| StoreError::NotFound(source.to_string()))?.id.clone();
        let target = reference::normalize(target).map_err(invalid)?;
        if target.contains('@') {
            return Err(invalid(format!("refusing to create a tag with a digest reference: {target}")));
        }
        let mut next = self.index.clone();
        next.tags.insert(target.clone(), id);
        self.commit_index(next)?;
        Ok(target)
    }

    /// `docker rmi`: a tag that is not the image's last one is only removed
    /// from it; otherwise the image goes, with the blobs and layers no other
    /// image uses. Naming an image by ID while several references point at it
    /// needs `force`, as in Docker.
    pub fn remove(&mut self, name: &str, force: bool) -> Result<Removed, StoreError> {
        let id = self.resolve(name).ok_or_else(|| StoreError::NotFound(name.to_string()))?.id.clone();
        let tags: Vec<String> = self.tags_of(&id).into_iter().map(String::from).collect();
        let by_reference = reference::normalize(name).ok().filter(|r| tags.contains(r));
        if let Some(removed) = self.remove_repo_digest(&id, name, tags.len())? {
            return Ok(removed);
        }
        let mut next = self.index.clone();
        let mut removed = Removed::default();
        match by_reference {
            Some(tag) if tags.len() > 1 => {
                next.tags.remove(&tag);
                removed.untagged.push(tag);
                self.commit_index(next)?;
                return Ok(removed);
            }
            None if tags.len() > 1 && !force => {
                return Err(StoreError::Conflict(format!(
                    "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    &id["sha256:".len().."sha256:".len() + 12]
                )))
            }
            _ => {}
        }
        for tag in tags {
            next.tags.remove(&tag);
            removed.untagged.push(tag);
        }
        let record = next.images.remove(&id).expect("resolved above");
        removed.untagged.extend(record.repo_digests.iter().cloned());
        next.layer_blobs.retain(|diff_id, _| next.images.values().any(|other| other.diff_ids.contains(diff_id)));
        // The index goes first: once it no longer names the image, deleting
        // its files cannot expose a half-removed image.
        self.commit_index(next)?;
        removed.deleted.push(id.clone());
        let _ = std::fs::remove_file(self.blob_path(&id)?);
        for diff_id in &record.diff_ids {
            if !self.index.images.values().any(|other| other.diff_ids.contains(diff_id)) {
                let dir = self.layer_dir(diff_id)?;
                removed.reclaimed += layer_size_of(&dir);
                std::fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
                crate::tarsplit::remove(&dir);
            }
        }
        Ok(removed)
    }

    /// Removes those of `candidates` (diff IDs) that no image names and
    /// `keep` does not hold on to; returns the bytes reclaimed. Under the
    /// store's lock, as `remove` deletes an image's last layers.
    pub fn remove_unused_layers(
        &mut self,
        candidates: &[String],
        keep: impl Fn(&Path) -> bool,
    ) -> Result<u64, StoreError> {
        let mut reclaimed = 0;
        for diff_id in candidates {
            if self.index.images.values().any(|image| image.diff_ids.contains(diff_id)) {
                continue;
            }
            let dir = self.layer_dir(diff_id)?;
            if keep(&dir) || !dir.is_dir() {
                continue;
            }
            reclaimed += layer_size_of(&dir);
            std::fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
            crate::tarsplit::remove(&dir);
        }
        Ok(reclaimed)
    }

    /// The length of a stored layer's tar stream (0 for an unknown layer).
    pub fn layer_size(&self, diff_id: &str) -> u64 {
        self.layer_dir(diff_id).map(|dir| layer_size_of(&dir)).unwrap_or(0)
    }

    /// Removes every reference to the image `id`, keeping the image (a
    /// stopped container still stands on it).
    pub fn untag_all(&mut self, id: &str) -> Result<Removed, StoreError> {
        let mut next = self.index.clone();
        next.tags.retain(|_, target| target != id);
        let untagged = self.tags_of(id).into_iter().map(String::from).collect();
        self.commit_index(next)?;
        Ok(Removed { untagged, ..Removed::default() })
    }

    /// Where in-flight downloads and unpacks go (emptied at open, so nothing
    /// a crash leaves there is ever seen as part of the store).
    /// Records an image whose config blob and unpacked layers are already in
    /// the store (a pull puts them there) and points `tags` (normalised
    /// references) at it, in one index commit: before it, nothing of the
    /// image is visible.
    pub fn add_image(&mut self, id: &str, size: u64, tags: &[String]) -> Result<ImageRecord, StoreError> {
        self.add_image_with(id, size, tags, |_| {})
    }

    /// `add_image`, with `also` changing the same index commit.
    fn add_image_with(
        &mut self,
        id: &str,
        size: u64,
        tags: &[String],
        also: impl FnOnce(&mut Index),
    ) -> Result<ImageRecord, StoreError> {
        #[derive(Deserialize)]
        struct Rootfs {
            diff_ids: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            created: Option<String>,
            rootfs: Rootfs,
        }
        let config: Config =
            serde_json::from_slice(&self.config_json(id)?).map_err(|e| invalid(format!("image config {id}: {e}")))?;
        for diff_id in &config.rootfs.diff_ids {
            if !self.layer_dir(diff_id)?.is_dir() {
                return Err(invalid(format!("image {id}: layer {diff_id} is not in the store")));
            }
        }
        self.sync_contents()?;
        let mut next = self.index.clone();
        let record = next
            .images
            .entry(id.to_string())
            .or_insert_with(|| ImageRecord {
                id: id.to_string(),
                diff_ids: config.rootfs.diff_ids.clone(),
                size,
                added_at: now(),
                created: config.created.as_deref().and_then(parse_rfc3339_utc).unwrap_or(0),
                parent: None,
                repo_digests: Vec::new(),
            })
            .clone();
        for tag in tags {
            next.tags.insert(tag.clone(), id.to_string());
        }
        also(&mut next);
        let record = next.images.get(id).cloned().unwrap_or(record);
        self.commit_index(next)?;
        Ok(record)
    }

    /// The image config as stored (the JSON `docker image inspect` is built from).
    pub fn config_json(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        std::fs::read(self.blob_path(id)?).map_err(io_err(format!("reading the config of {id}")))
    }

    /// Everything written into the store so far (blobs, unpacked layers,
    /// their directories) is on disk: one syncfs instead of an fsync per
    /// file of every layer.
    fn sync_contents(&self) -> Result<(), StoreError> {
        crate::durable::sync_filesystem(&self.root).map_err(io_err("syncing the image store"))
    }

    fn commit_index(&mut self, next: Index) -> Result<(), StoreError> {
        let previous = std::mem::replace(&mut self.index, next);
        if let Err(err) = self.save_index() {
            self.index = previous;
            return Err(err);
        }
        Ok(())
    }

    fn save_index(&self) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(&self.index).map_err(|e| invalid(e.to_string()))?;
        let path = self.root.join("index.json");
        crate::durable::replace_durably(&path, &bytes).map_err(io_err(format!("replacing {}", path.display())))
    }
}

impl ImageStore {
    /// Adds a layer from an (optionally compressed) tar file in the store's
    /// tmp dir, unless present. Returns its diff ID and tar length.
    pub fn add_layer_file(&self, tar: &Path) -> Result<(String, u64), StoreError> {
        let open = || std::fs::File::open(tar).map_err(io_err(format!("opening {}", tar.display())));
        let (diff_id, _) = layer::diff_id_of(io::BufReader::new(open()?))?;
        let size = self.ensure_layer(io::BufReader::new(open()?), &diff_id)?;
        Ok((diff_id, size))
    }

    /// Records an image from a config this engine wrote (commit, import),
    /// whose layers are in the store, and points `tags` at it.
    pub fn create_image(
        &mut self,
        config: &serde_json::Value,
        tags: &[String],
        parent: Option<&str>,
    ) -> Result<ImageRecord, StoreError> {
        let bytes = serde_json::to_vec(config).map_err(|e| invalid(e.to_string()))?;
        let parsed: ConfigRootfs =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the new image's config: {e}")))?;
        let mut size = 0;
        for diff_id in &parsed.rootfs.diff_ids {
            let dir = self.layer_dir(diff_id)?;
            size += layer_size_of(&dir);
        }
        let id = self.write_blob(bytes.as_slice(), None)?;
        let tags = tags.iter().map(|t| reference::normalize(t).map_err(invalid)).collect::<Result<Vec<_>, _>>()?;
        let record = self.add_image(&id, size, &tags)?;
        if record.parent.is_some() || parent.is_none() {
            return Ok(record);
        }
        let mut next = self.index.clone();
        let stored = next.images.get_mut(&id).expect("added above");
        stored.parent = parent.map(String::from);
        let record = stored.clone();
        self.commit_index(next)?;
        Ok(record)
    }

    /// `docker history`: Docker's JSON, newest first. Entries that made a
    /// layer carry its size; only the newest names the image (older ones
    /// are `<missing>`, as with any pulled image in Docker).
    pub fn history(&self, name: &str) -> Result<serde_json::Value, StoreError> {
        #[derive(Deserialize, Default)]
        struct Entry {
            #[serde(default)]
            created: Option<String>,
            #[serde(default)]
            created_by: String,
            #[serde(default)]
            comment: String,
            #[serde(default)]
            empty_layer: bool,
        }
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            history: Vec<Entry>,
        }
        let record = self.resolve(name).ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let config: Config = serde_json::from_slice(&self.config_json(&record.id)?)
            .map_err(|e| invalid(format!("image config {}: {e}", record.id)))?;
        let mut history = config.history;
        if history.is_empty() {
            // Images without history (some importers): one entry per layer.
            history = record.diff_ids.iter().map(|_| Entry::default()).collect();
        }
        let mut layers = record.diff_ids.iter();
        let mut out: Vec<serde_json::Value> = history
            .iter()
            .map(|entry| {
                let size = if entry.empty_layer { 0 } else { layers.next().map(|d| self.layer_size(d)).unwrap_or(0) };
                serde_json::json!({
                    "Id": "<missing>",
                    "Created": entry.created.as_deref().and_then(parse_rfc3339_utc).unwrap_or(0),
                    "CreatedBy": entry.created_by,
                    "Tags": serde_json::Value::Null,
                    "Size": size,
                    "Comment": entry.comment,
                })
            })
            .collect();
        out.reverse();
        if let Some(newest) = out.first_mut() {
            newest["Id"] = record.id.clone().into();
            let tags: Vec<&str> = self.tags_of(&record.id).into_iter().map(reference::familiar).collect();
            newest["Tags"] = if tags.is_empty() { serde_json::Value::Null } else { tags.into() };
        }
        Ok(serde_json::Value::Array(out))
    }

    /// `docker image prune`: removes dangling (untagged) images, or with
    /// `all` every image, that `keep` does not name (images containers
    /// use) and that `matches` accepts (the request's filters). Returns
    /// Docker's `ImagesDeleted` entries and the bytes reclaimed.
    pub fn prune(
        &mut self,
        all: bool,
        keep: &std::collections::HashSet<String>,
        matches: impl Fn(&ImageRecord, &[u8]) -> bool,
    ) -> Result<(Vec<serde_json::Value>, u64), StoreError> {
        let candidates: Vec<ImageRecord> = self
            .index
            .images
            .values()
            .filter(|r| !keep.contains(&r.id) && (all || self.tags_of(&r.id).is_empty()))
            .filter(|r| self.config_json(&r.id).is_ok_and(|config| matches(r, &config)))
            .cloned()
            .collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for record in candidates {
            let removed = self.remove(&record.id, true)?;
            reclaimed += removed.reclaimed;
            deleted.extend(removed.untagged.iter().map(|t| serde_json::json!({ "Untagged": reference::familiar(t) })));
            deleted.extend(removed.deleted.iter().map(|d| serde_json::json!({ "Deleted": d })));
        }
        Ok((deleted, reclaimed))
    }
}

/// A layer's tar length from its tar-split, or an estimate from its files
/// for a layer stored without one.
fn layer_size_of(dir: &Path) -> u64 {
    crate::tarsplit::tar_size(dir).unwrap_or_else(|_| estimate_tar_size(dir))
}

/// Roughly (a 512 byte header per entry, contents padded to 512).
fn estimate_tar_size(dir: &Path) -> u64 {
    let mut size = 1024;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            size += 512;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                size += meta.len().div_ceil(512) * 512;
            }
        }
    }
    size
}

#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
    #[serde(default)]
    created: Option<String>,
}

/// Unix seconds of an RFC 3339 UTC time (`2024-01-02T03:04:05.678Z`), the
/// form image configs use; None for anything else.
pub fn parse_rfc3339_utc(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.strip_suffix('Z')?;
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>());
    let (hour, minute, second) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from the civil calendar (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[derive(Deserialize)]
struct Rootfs {
    diff_ids: Vec<String>,
}

mod digests;
mod load;
mod received;
mod save;
#[cfg(test)]
mod tests;

pub use digests::{repository_of, LayerBlob};

pub use load::StagedLoad;
pub use save::SavePlan;
