//! What the store remembers of registries.
//!
//! - An image's repository digests (Docker's RepoDigests:
//!   `docker.io/library/busybox@sha256:<manifest>`), from the pull that
//!   fetched it or the push that wrote it. A digest reference names one
//!   image, so recording it for one image takes it from any other.
//! - Per layer, the compressed blobs registries know it by, and in which
//!   repository (Docker's "v2 metadata"). The store keeps layers unpacked
//!   only; a push of a layer a registry already has (pulled from there, or
//!   pushed before) checks for or mounts that blob instead of compressing
//!   and uploading the layer again, which would give it a new digest.

use serde::{Deserialize, Serialize};

use super::{ImageRecord, ImageStore, Removed, StoreError};
use crate::reference;

/// A compressed blob a layer is known by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerBlob {
    /// `sha256:` of the compressed bytes, as a manifest names them.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// `registry/repository` (normalised, e.g. `docker.io/library/busybox`)
    /// where the blob was seen.
    pub repository: String,
}

/// The repository part of a normalised digest or tag reference.
pub fn repository_of(normalized: &str) -> &str {
    if let Some((name, _)) = normalized.split_once('@') {
        return name;
    }
    match normalized.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => normalized,
    }
}

impl ImageStore {
    /// The image a normalised digest reference (`repo@sha256:...`) names.
    pub(super) fn by_repo_digest(&self, normalized: &str) -> Option<&ImageRecord> {
        if !normalized.contains('@') {
            return None;
        }
        self.index.images.values().find(|image| image.repo_digests.iter().any(|d| d == normalized))
    }

    /// The blobs a layer is known by in registries, newest first.
    pub fn layer_blobs(&self, diff_id: &str) -> Vec<LayerBlob> {
        self.index.layer_blobs.get(diff_id).map(|blobs| blobs.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// A pull's image (see `add_image`) with the repository digest it was
    /// pulled by and its layers' blobs, in one index commit.
    pub fn add_pulled_image(
        &mut self,
        id: &str,
        size: u64,
        tags: &[String],
        repo_digest: &str,
        blobs: &[(String, LayerBlob)],
    ) -> Result<ImageRecord, StoreError> {
        self.add_image_with(id, size, tags, |next| {
            set_repo_digest(next, id, repo_digest);
            add_blobs(next, blobs);
        })
    }

    /// After a push: the digest the registry now has the image under, and
    /// the blobs its layers were pushed (or found) as.
    pub fn record_push(
        &mut self,
        id: &str,
        repo_digest: &str,
        blobs: &[(String, LayerBlob)],
    ) -> Result<(), StoreError> {
        if !self.index.images.contains_key(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let mut next = self.index.clone();
        set_repo_digest(&mut next, id, repo_digest);
        add_blobs(&mut next, blobs);
        self.commit_index(next)
    }

    /// `docker rmi repo@sha256:...` of an image that other references
    /// keep: only that reference goes (Docker's "Untagged: repo@sha256:...").
    /// None when `name` is no digest reference of the image, or its last
    /// reference (the image itself goes then).
    pub(super) fn remove_repo_digest(
        &mut self,
        id: &str,
        name: &str,
        tags: usize,
    ) -> Result<Option<Removed>, StoreError> {
        let Ok(normalized) = reference::normalize(name) else { return Ok(None) };
        let Some(image) = self.index.images.get(id) else { return Ok(None) };
        if !image.repo_digests.contains(&normalized) || tags + image.repo_digests.len() <= 1 {
            return Ok(None);
        }
        let mut next = self.index.clone();
        if let Some(image) = next.images.get_mut(id) {
            image.repo_digests.retain(|d| *d != normalized);
        }
        self.commit_index(next)?;
        Ok(Some(Removed { untagged: vec![normalized], ..Removed::default() }))
    }
}

/// Points `repo_digest` at `id` (and at no other image); one digest per
/// image and repository, the newest, as Docker's reference store keeps it
/// for a repository's tag.
fn set_repo_digest(next: &mut super::Index, id: &str, repo_digest: &str) {
    let repository = repository_of(repo_digest).to_string();
    for image in next.images.values_mut() {
        image.repo_digests.retain(|d| d != repo_digest);
        if image.id == id {
            image.repo_digests.retain(|d| repository_of(d) != repository);
            image.repo_digests.push(repo_digest.to_string());
            image.repo_digests.sort();
        }
    }
}

fn add_blobs(next: &mut super::Index, blobs: &[(String, LayerBlob)]) {
    for (diff_id, blob) in blobs {
        let known = next.layer_blobs.entry(diff_id.clone()).or_default();
        known.retain(|b| !(b.digest == blob.digest && b.repository == blob.repository));
        known.push(blob.clone());
    }
}
