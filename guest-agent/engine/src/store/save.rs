//! `docker save`: which images, layers and blobs an archive holds,
//! resolved under the store's lock, and the archive written without it.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{hex_of, invalid, ImageStore, StoreError};
use crate::reference;

/// What `docker save` of some images writes, resolved under the store's
/// lock so the (long) writing can happen without it.
pub struct SavePlan {
    /// Small JSON blobs: image configs and OCI manifests.
    blobs: Vec<(String, Vec<u8>)>,
    /// Layers as uncompressed tars: (diff ID, layer directory, tar length).
    layers: Vec<(String, PathBuf, u64)>,
    manifest_json: Vec<u8>,
    index_json: Vec<u8>,
}

impl ImageStore {
    /// Plans `docker save NAME...`: images by reference or ID; a repository
    /// name without a tag means all of its tags, as in Docker. The archive
    /// is what current Docker writes, a docker-archive (`manifest.json`) and
    /// an OCI image layout (`index.json`) over the same blobs, so both
    /// older and newer loaders read it.
    pub fn save_plan(&self, names: &[String]) -> Result<SavePlan, StoreError> {
        // Image ID -> the tags to record for it, in request order.
        let mut selected: Vec<(String, Vec<String>)> = Vec::new();
        for name in names {
            let (id, tags) = match self.resolve(name) {
                Some(record) => {
                    let by_reference = reference::normalize(name).ok().filter(|n| self.index.tags.contains_key(n));
                    (record.id.clone(), by_reference.into_iter().collect::<Vec<_>>())
                }
                None => {
                    // `busybox` (no tag) when busybox:latest is absent: every tag of the repository.
                    let repo = reference::normalize(name).ok().and_then(|n| {
                        (!name.contains(':') && !name.contains('@'))
                            .then(|| n.rsplit_once(':').map(|(r, _)| format!("{r}:")))
                    });
                    let Some(Some(prefix)) = repo else { return Err(StoreError::NotFound(name.clone())) };
                    let tags: Vec<(String, String)> = self
                        .index
                        .tags
                        .iter()
                        .filter(|(tag, _)| tag.starts_with(&prefix) && !tag[prefix.len()..].contains('/'))
                        .map(|(tag, id)| (id.clone(), tag.clone()))
                        .collect();
                    if tags.is_empty() {
                        return Err(StoreError::NotFound(name.clone()));
                    }
                    for (id, tag) in tags {
                        push_selected(&mut selected, &id, Some(tag));
                    }
                    continue;
                }
            };
            let mut tags = tags.into_iter();
            push_selected(&mut selected, &id, tags.next());
        }

        let mut plan =
            SavePlan { blobs: Vec::new(), layers: Vec::new(), manifest_json: Vec::new(), index_json: Vec::new() };
        let mut docker_manifest = Vec::new();
        let mut oci_manifests = Vec::new();
        for (id, tags) in &selected {
            let record = self.index.images.get(id).expect("selected from the index");
            let config = self.config_json(id)?;
            let mut layer_descriptors = Vec::new();
            for diff_id in &record.diff_ids {
                let dir = self.layer_dir(diff_id)?;
                let size = crate::tarsplit::tar_size(&dir).map_err(|e| {
                    invalid(format!(
                        "image {id} cannot be exported: layer {diff_id} was stored without the data to rebuild its \
                         archive ({e}); pull or load the image again"
                    ))
                })?;
                if !plan.layers.iter().any(|(d, _, _)| d == diff_id) {
                    plan.layers.push((diff_id.clone(), dir, size));
                }
                layer_descriptors.push(serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff_id,
                    "size": size,
                }));
            }
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": id,
                    "size": config.len(),
                },
                "layers": layer_descriptors,
            }))
            .map_err(|e| invalid(e.to_string()))?;
            let manifest_digest = format!("sha256:{}", hex_digest(&manifest));
            let descriptor = |annotations: serde_json::Value| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest.len(),
                    "annotations": annotations,
                })
            };
            if tags.is_empty() {
                oci_manifests.push(descriptor(serde_json::json!({})));
            }
            for tag in tags {
                let short_tag = tag.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                oci_manifests.push(descriptor(serde_json::json!({
                    "io.containerd.image.name": tag,
                    "org.opencontainers.image.ref.name": short_tag,
                })));
            }
            docker_manifest.push(serde_json::json!({
                "Config": format!("blobs/sha256/{}", hex_of(id)?),
                "RepoTags": tags.iter().map(|t| reference::familiar(t)).collect::<Vec<_>>(),
                "Layers": record.diff_ids.iter().map(|d| Ok(format!("blobs/sha256/{}", hex_of(d)?))).collect::<Result<Vec<_>, StoreError>>()?,
            }));
            for (digest, bytes) in [(id.clone(), config), (manifest_digest.clone(), manifest)] {
                if !plan.blobs.iter().any(|(d, _)| *d == digest) {
                    plan.blobs.push((digest, bytes));
                }
            }
        }
        plan.manifest_json = serde_json::to_vec(&docker_manifest).map_err(|e| invalid(e.to_string()))?;
        plan.index_json = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": oci_manifests,
        }))
        .map_err(|e| invalid(e.to_string()))?;
        Ok(plan)
    }
}

fn push_selected(selected: &mut Vec<(String, Vec<String>)>, id: &str, tag: Option<String>) {
    let index = match selected.iter().position(|(i, _)| i == id) {
        Some(index) => index,
        None => {
            selected.push((id.to_string(), Vec::new()));
            selected.len() - 1
        }
    };
    if let Some(tag) = tag {
        if !selected[index].1.contains(&tag) {
            selected[index].1.push(tag);
        }
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl SavePlan {
    /// Writes the archive. Layers are rebuilt from their directories, so a
    /// layer removed meanwhile (`docker rmi` during a save) fails the write.
    pub fn write_to(&self, out: impl Write) -> io::Result<()> {
        let mut tar = tar::Builder::new(out);
        let header = |size: u64, mode: u32, kind: tar::EntryType| {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(mode);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header
        };
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = header(0, 0o755, tar::EntryType::Directory);
            tar.append_data(&mut h, dir, io::empty())?;
        }
        for (digest, dir, size) in &self.layers {
            let mut h = header(*size, 0o644, tar::EntryType::Regular);
            let name = format!("blobs/sha256/{}", &digest["sha256:".len()..]);
            // The tar is streamed straight from the layer: a pipe between
            // the rebuilding thread and the archive writer keeps memory flat.
            let (reader, writer) = io::pipe()?;
            let dir = dir.clone();
            let rebuild = std::thread::spawn(move || {
                let mut writer = writer;
                crate::tarsplit::write_tar(&dir, &mut writer)
            });
            let appended = tar.append_data(&mut h, &name, reader.take(*size));
            let rebuilt = rebuild.join().map_err(|_| io::Error::other("the layer rebuild thread panicked"))?;
            appended?;
            if rebuilt? != *size {
                return Err(io::Error::other(format!("layer {digest} changed size while it was saved")));
            }
        }
        for (digest, bytes) in &self.blobs {
            let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
            tar.append_data(&mut h, format!("blobs/sha256/{}", &digest["sha256:".len()..]), bytes.as_slice())?;
        }
        for (name, bytes) in [
            ("index.json", self.index_json.as_slice()),
            ("manifest.json", self.manifest_json.as_slice()),
            ("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#[..]),
        ] {
            let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
            tar.append_data(&mut h, name, bytes)?;
        }
        tar.into_inner()?.flush()
    }
}
