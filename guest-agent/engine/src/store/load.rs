//! `docker load`: what `docker save` writes, into the store, in two steps
//! so that the store's lock is held only for the second:
//!
//! 1. `StoreFiles::stage_load`, with no lock: receive the archive into tmp/
//!    in one pass, unpacking and hashing each layer as it streams in
//!    (`received.rs`), then verify and store each config blob and move each
//!    layer to its content-addressed place. Nothing of it is visible yet;
//!    concurrent `docker images`, `run` and `inspect` go on.
//! 2. `ImageStore::commit_load`, under the lock: check that every blob and
//!    layer is (still) there, flush them to disk, and commit the index that
//!    makes the images visible. All or nothing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::received::{self, Received};
use super::{
    hex_of, invalid, io_err, now, parse_rfc3339_utc, ConfigRootfs, ImageRecord, ImageStore, StoreError, StoreFiles,
};
use crate::reference;

/// A received, unpacked load waiting for its index commit.
#[derive(Debug)]
pub struct StagedLoad {
    images: Vec<(ImageRecord, Vec<String>)>,
}

impl StoreFiles {
    /// Step 1 (no lock): everything but the index commit.
    pub fn stage_load(&self, archive: impl Read) -> Result<StagedLoad, StoreError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let work = self.tmp_dir().join(format!("load-{}-{}-{n}", std::process::id(), now()));
        std::fs::create_dir(&work).map_err(io_err("creating a load directory"))?;
        let result = self.stage_in(archive, &work);
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    fn stage_in(&self, archive: impl Read, work: &Path) -> Result<StagedLoad, StoreError> {
        let received = received::receive(archive, work)?;
        let archived = if received.has("manifest.json") {
            docker_archive_images(&received)?
        } else if received.has("index.json") {
            oci_layout_images(&received)?
        } else {
            return Err(invalid("not an image archive: it has neither manifest.json nor index.json"));
        };
        if archived.is_empty() {
            return Err(invalid("the image archive lists no images"));
        }
        let mut images = Vec::new();
        for image in archived {
            let config = received.read(&image.config)?;
            let expected = digest_from_member_name(&image.config);
            let id = self.write_blob(config.as_slice(), expected.as_deref())?;
            let parsed: ConfigRootfs =
                serde_json::from_slice(&config).map_err(|e| invalid(format!("image config {}: {e}", image.config)))?;
            let diff_ids = parsed.rootfs.diff_ids;
            if diff_ids.len() != image.layers.len() {
                return Err(invalid(format!(
                    "image {id}: the config lists {} layers, the manifest {}",
                    diff_ids.len(),
                    image.layers.len()
                )));
            }
            let mut size = 0;
            for (layer_path, diff_id) in image.layers.iter().zip(&diff_ids) {
                size += match received.layer(layer_path)? {
                    Some(unpacked) => self.adopt_layer(unpacked, diff_id)?,
                    None => self.ensure_layer(received.open(layer_path)?, diff_id)?,
                };
            }
            let tags =
                image.tags.iter().map(|tag| reference::normalize(tag).map_err(invalid)).collect::<Result<_, _>>()?;
            let created = parsed.created.as_deref().and_then(parse_rfc3339_utc).unwrap_or(0);
            images.push((
                ImageRecord { id, diff_ids, size, added_at: now(), created, parent: None, repo_digests: Vec::new() },
                tags,
            ));
        }
        Ok(StagedLoad { images })
    }

    /// Moves a layer unpacked while it was received to its content-addressed
    /// place, once its diff ID is the one the image's config names. A layer
    /// already in the store (or put there by a concurrent load meanwhile)
    /// stays as it is; the copy goes with the work dir.
    fn adopt_layer(&self, unpacked: &received::UnpackedLayer, diff_id: &str) -> Result<u64, StoreError> {
        if unpacked.stats.diff_id != diff_id {
            return Err(StoreError::DigestMismatch {
                what: "layer".into(),
                expected: diff_id.into(),
                actual: unpacked.stats.diff_id.clone(),
            });
        }
        let dest = self.layer_dir(diff_id)?;
        if !dest.is_dir() && unpacked.dir.is_dir() {
            // The split first: a layer directory never exists without it.
            let moved =
                crate::tarsplit::rename(&unpacked.dir, &dest).and_then(|()| std::fs::rename(&unpacked.dir, &dest));
            if let Err(err) = moved {
                if !dest.is_dir() {
                    return Err(io_err(format!("moving a loaded layer into {}", dest.display()))(err));
                }
            }
        }
        Ok(unpacked.stats.tar_bytes)
    }
}

impl ImageStore {
    /// Imports what `docker save` writes: a docker-archive (`manifest.json`)
    /// and/or an OCI image layout (`index.json`). Returns the loaded images
    /// with their (normalised) tags. All or nothing: the index changes only
    /// when every image in the archive is in the store.
    pub fn load(&mut self, archive: impl Read) -> Result<Vec<(ImageRecord, Vec<String>)>, StoreError> {
        let staged = self.files().stage_load(archive)?;
        self.commit_load(staged)
    }

    /// Step 2 (under the lock): makes a staged load visible, durably.
    pub fn commit_load(&mut self, staged: StagedLoad) -> Result<Vec<(ImageRecord, Vec<String>)>, StoreError> {
        // Another request may have removed a layer this load found present.
        for (record, _) in &staged.images {
            let missing =
                std::iter::once(self.blob_path(&record.id)?.is_file())
                    .chain(record.diff_ids.iter().map(|d| self.layer_dir(d).map(|dir| dir.is_dir())).collect::<Result<
                        Vec<_>,
                        _,
                    >>(
                    )?)
                    .any(|present| !present);
            if missing {
                return Err(StoreError::Conflict(format!(
                    "image {} lost a layer to a concurrent removal while loading; load it again",
                    record.id
                )));
            }
        }
        let mut next = self.index.clone();
        let mut loaded = Vec::new();
        for (record, tags) in staged.images {
            let stored = next.images.entry(record.id.clone()).or_insert_with(|| record.clone()).clone();
            for tag in &tags {
                next.tags.insert(tag.clone(), record.id.clone());
            }
            loaded.push((stored, tags));
        }
        // Blobs and unpacked layers on disk first, then the index that makes
        // them visible.
        self.sync_contents()?;
        self.commit_index(next)?;
        Ok(loaded)
    }
}

/// One image found in an archive: member paths of its config and layers.
struct ArchivedImage {
    config: String,
    layers: Vec<String>,
    tags: Vec<String>,
}

fn docker_archive_images(received: &Received) -> Result<Vec<ArchivedImage>, StoreError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> =
        serde_json::from_slice(&received.read("manifest.json")?).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    Ok(entries
        .into_iter()
        .map(|e| ArchivedImage { config: e.config, layers: e.layers, tags: e.repo_tags.unwrap_or_default() })
        .collect())
}

fn oci_layout_images(received: &Received) -> Result<Vec<ArchivedImage>, StoreError> {
    #[derive(Deserialize)]
    struct Descriptor {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        digest: String,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
        #[serde(default)]
        platform: Option<Platform>,
    }
    #[derive(Deserialize)]
    struct Platform {
        architecture: String,
        os: String,
    }
    #[derive(Deserialize)]
    struct IndexJson {
        manifests: Vec<Descriptor>,
    }
    #[derive(Deserialize)]
    struct Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    }
    let blob = |digest: &str| -> Result<String, StoreError> { Ok(format!("blobs/sha256/{}", hex_of(digest)?)) };
    let index: IndexJson =
        serde_json::from_slice(&received.read("index.json")?).map_err(|e| invalid(format!("index.json: {e}")))?;
    let mut images = Vec::new();
    for top in index.manifests {
        let name = top
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                top.annotations.get("org.opencontainers.image.ref.name").filter(|n| n.contains(':') || n.contains('/'))
            })
            .cloned();
        let mut descriptor = top;
        // A multi-platform index: take the manifest for this machine.
        if descriptor.media_type.contains("image.index") || descriptor.media_type.contains("manifest.list") {
            let nested: IndexJson = serde_json::from_slice(&received.read(&blob(&descriptor.digest)?)?)
                .map_err(|e| invalid(format!("nested index: {e}")))?;
            descriptor = nested
                .manifests
                .into_iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == reference::oci_architecture())
                })
                .ok_or_else(|| invalid(format!("no linux/{} image in the archive", reference::oci_architecture())))?;
        }
        let manifest: Manifest = serde_json::from_slice(&received.read(&blob(&descriptor.digest)?)?)
            .map_err(|e| invalid(format!("manifest {}: {e}", descriptor.digest)))?;
        images.push(ArchivedImage {
            config: blob(&manifest.config.digest)?,
            layers: manifest.layers.iter().map(|l| blob(&l.digest)).collect::<Result<_, _>>()?,
            tags: name.into_iter().collect(),
        });
    }
    Ok(images)
}

/// `blobs/sha256/<hex>` or `<hex>.json` names carry the expected digest.
fn digest_from_member_name(name: &str) -> Option<String> {
    let stem = Path::new(name).file_name()?.to_str()?.trim_end_matches(".json");
    (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{stem}"))
}
