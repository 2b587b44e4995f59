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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{digest, docker_archive, tar};

    fn blob(digest: &str, repository: &str) -> LayerBlob {
        LayerBlob {
            digest: digest.into(),
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
            size: 3,
            repository: repository.into(),
        }
    }

    fn manifest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    /// A store with two loaded images, each of one layer.
    fn two_images(dir: &std::path::Path) -> (ImageStore, (String, String), (String, String)) {
        let mut store = ImageStore::open(dir).unwrap();
        let (first_layer, second_layer) = (tar(&[("a", b"1")]), tar(&[("b", b"2")]));
        let (first, first_id) = docker_archive(std::slice::from_ref(&first_layer), &["one:1"]);
        let (second, second_id) = docker_archive(std::slice::from_ref(&second_layer), &["two:1"]);
        store.load(first.as_slice()).unwrap();
        store.load(second.as_slice()).unwrap();
        (store, (first_id, digest(&first_layer)), (second_id, digest(&second_layer)))
    }

    #[test]
    fn a_digest_reference_names_one_image_and_one_digest_is_kept_per_repository() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, (one, layer), (two, _)) = two_images(dir.path());
        let at = |n: u8| format!("localhost:5000/app@{}", manifest(n));
        store.record_push(&one, &at(1), &[(layer.clone(), blob("sha256:b1", "localhost:5000/app"))]).unwrap();
        assert_eq!(store.resolve(&at(1)).map(|i| i.id.clone()), Some(one.clone()));
        // The same reference now names the other image, and only that one.
        store.record_push(&two, &at(1), &[]).unwrap();
        assert_eq!(store.resolve(&at(1)).map(|i| i.id.clone()), Some(two.clone()));
        assert!(store.resolve(&one).unwrap().repo_digests.is_empty());
        // A newer digest of the same repository replaces the older one.
        store.record_push(&two, &at(2), &[]).unwrap();
        assert_eq!(store.resolve(&two).unwrap().repo_digests, [at(2)]);
        assert!(store.resolve(&at(1)).is_none());
        // Kept across a reopen.
        let store = ImageStore::open(dir.path()).unwrap();
        assert_eq!(store.resolve(&at(2)).map(|i| i.id.clone()), Some(two));
        assert_eq!(store.layer_blobs(&layer), [blob("sha256:b1", "localhost:5000/app")]);
    }

    #[test]
    fn layer_blobs_are_deduplicated_newest_first_and_go_with_their_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, (one, layer), _) = two_images(dir.path());
        let pulled = [(layer.clone(), blob("sha256:b1", "docker.io/library/one"))];
        let repo_digest = format!("docker.io/library/one@{}", manifest(1));
        store.add_pulled_image(&one, 10, &["docker.io/library/one:1".into()], &repo_digest, &pulled).unwrap();
        store.record_push(&one, &format!("localhost:5000/one@{}", manifest(2)), &pulled).unwrap();
        store
            .record_push(
                &one,
                &format!("localhost:5000/one@{}", manifest(2)),
                &[(layer.clone(), blob("sha256:b2", "localhost:5000/one"))],
            )
            .unwrap();
        let known: Vec<String> = store.layer_blobs(&layer).into_iter().map(|b| b.digest).collect();
        assert_eq!(known, ["sha256:b2", "sha256:b1"]);
        // `rmi` of the image: its references are listed, its layer's blobs forgotten.
        let removed = store.remove("one:1", false).unwrap();
        assert_eq!(removed.untagged.len(), 3, "{removed:?}");
        assert!(removed.untagged.contains(&repo_digest));
        assert!(store.layer_blobs(&layer).is_empty());
    }

    #[test]
    fn rmi_of_a_digest_reference_keeps_an_image_other_references_name() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, (one, _), _) = two_images(dir.path());
        let at = format!("localhost:5000/one@{}", manifest(3));
        store.record_push(&one, &at, &[]).unwrap();
        let removed = store.remove(&at, false).unwrap();
        assert_eq!((removed.untagged, removed.deleted.len()), (vec![at.clone()], 0));
        assert!(store.resolve("one:1").is_some());
        // Its last reference: the image goes.
        store.record_push(&one, &at, &[]).unwrap();
        store.remove("one:1", false).unwrap();
        assert!(store.resolve(&at).is_none() && store.resolve(&one).is_none());
    }

    #[test]
    fn indexes_written_before_digests_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let (_, (one, _), _) = two_images(dir.path());
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        // What older versions wrote: no layer_blobs, no repo_digests.
        index.as_object_mut().unwrap().remove("layer_blobs");
        for image in index["images"].as_object_mut().unwrap().values_mut() {
            image.as_object_mut().unwrap().remove("repo_digests");
        }
        std::fs::write(dir.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        assert!(store.resolve(&one).unwrap().repo_digests.is_empty());
    }
}
