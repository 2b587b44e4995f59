//! Pulling images from registries into the image store (`docker pull`).
//!
//! The wire protocol is `oci-client`'s (crates.io, oras-project): it speaks
//! the distribution API, Docker's bearer-token flow (anonymous or with
//! credentials) and HTTP basic auth, checks manifest digests, and accepts
//! Docker schema 2 and OCI manifests and indexes. We use its lower-level calls
//! rather than its `pull()`, which holds every layer in memory, cannot report
//! progress and does not know which layers the store already has:
//! - `pull_manifest` returns an index as is, so the platform is chosen here
//!   (linux + this machine's architecture, variant v8 preferred on arm64;
//!   its own resolver ignores variants);
//! - `pull_blob` streams a blob into an `AsyncWrite` and verifies its digest;
//!   the writer here is a temporary file in the store's `tmp/`, counting bytes
//!   for progress and refusing more than the manifest announced.
//!
//! Layers are unpacked outside the store's lock into a work directory under
//! `tmp/`, then moved into `layers/` and recorded under the lock, config blob
//! first and the index last: nothing half-pulled becomes visible, and a crash
//! leaves only `tmp/` entries, which `ImageStore::open` removes.
//!
//! TLS is rustls with the ring provider (no OpenSSL, no aws-lc: the agent is
//! a static musl binary); server certificates are checked against the system's
//! CA store (`/etc/ssl/certs`).
//!
//! `endpoint` is where a pull goes and how it talks there (mirrors, TLS,
//! credentials, errors in Docker's words, the platform of an index); this
//! file is the pull itself: manifest, blobs, unpacking, commit; `push` is
//! `docker push`.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde::Deserialize;
use tokio::io::AsyncWrite;

use crate::layer;
use crate::reference;
use crate::store::{ImageStore, LayerBlob, StoreError};

mod endpoint;
mod push;

pub use endpoint::install_crypto_provider;
pub use push::{push, PushError, PushProgress};

use endpoint::{
    client_for, endpoints, is_sha256_digest, pull_error, registry_auth, select_platform, short_id, Endpoint, Stage,
    Target,
};

/// Where the origin of Docker Hub images is served from.
const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";
/// A config larger than this is not an image config.
const MAX_CONFIG_SIZE: u64 = 64 << 20;
/// Report download progress at most every this many bytes.
const PROGRESS_STEP: u64 = 512 << 10;

/// Credentials from the client's `X-Registry-Auth` header (Docker's
/// `AuthConfig`; the JSON field names are Docker's).
#[derive(Clone, Default, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// `base64(username:password)`, used when username is empty.
    #[serde(default)]
    pub auth: String,
    /// An OAuth2 refresh token (from `docker login` against an identity
    /// provider). Not supported yet: see [`PullError::Unsupported`].
    #[serde(default, rename = "identitytoken")]
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    #[serde(default, rename = "registrytoken")]
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// `host:port` entries spoken to over plain HTTP (`localhost` and
    /// `127.0.0.0/8` always are, as in Docker).
    pub insecure_registries: Vec<String>,
    /// Mirrors of Docker Hub (`https://mirror.example` or `http://host:port`),
    /// tried in order before the origin.
    pub mirrors: Vec<String>,
    /// Credentials for the image's registry (never sent to mirrors).
    pub auth: Option<Credentials>,
}

/// What a pull reports as it goes; `id` is the layer's short ID (the first
/// 12 hex digits of its compressed digest), as Docker shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The manifest (or index) the reference points at.
    Resolved {
        reference: String,
        digest: String,
    },
    /// A layer download starts (`size`: compressed bytes).
    LayerStart {
        id: String,
        size: u64,
    },
    LayerProgress {
        id: String,
        current: u64,
        total: u64,
    },
    /// Downloaded and verified; unpacking.
    LayerExtracting {
        id: String,
    },
    /// The store already has this layer: not downloaded.
    LayerExists {
        id: String,
    },
    LayerDone {
        id: String,
    },
    /// The image is in the store (and tagged). `changed` is false when the
    /// reference already pointed at this image ("Image is up to date").
    Done {
        image_id: String,
        changed: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    InvalidReference(String),
    /// Docker's wording, which clients match on.
    #[error("manifest for {reference} not found: manifest unknown: manifest unknown")]
    ManifestUnknown { reference: String },
    /// Docker's wording, which clients match on.
    #[error("pull access denied for {repository}, repository does not exist or may require 'docker login'{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    AccessDenied { repository: String, detail: Option<String> },
    #[error("no matching manifest for {platform} in the manifest list entries")]
    NoMatchingManifest { platform: String },
    /// The registry could not be reached.
    #[error("Get \"{url}\": {message}")]
    Connection { registry: String, url: String, message: String },
    /// The registry answered with an error or something we cannot use.
    #[error("error pulling from {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How `pull` reaches the store. It takes short turns with it (checking
/// layers, committing the image) on blocking threads and never holds it
/// while downloading. The agent keeps its store behind a mutex; anything
/// like it can implement this.
pub trait StoreAccess: Send + Sync + 'static {
    fn with_store<T>(&self, f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError>) -> Result<T, StoreError>;
}

impl StoreAccess for Mutex<ImageStore> {
    fn with_store<T>(&self, f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&mut self.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// Runs `f` on the store on a blocking thread.
async fn store_call<S: StoreAccess, T: Send + 'static>(
    store: &Arc<S>,
    f: impl FnOnce(&mut ImageStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, PullError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.with_store(f))
        .await
        .map_err(|e| PullError::Store(StoreError::Invalid(format!("image store task failed: {e}"))))?
        .map_err(PullError::Store)
}

/// `docker pull REFERENCE`: fetches the image for linux/this architecture
/// into the store, tags it (tag references only; a digest reference leaves
/// the image untagged) and returns its ID (`sha256:` of its config).
pub async fn pull<S: StoreAccess>(
    store: Arc<S>,
    reference: &str,
    opts: &PullOptions,
    mut progress: impl FnMut(Progress),
) -> Result<String, PullError> {
    let normalized = reference::normalize(reference).map_err(PullError::InvalidReference)?;
    let target = Target::parse(&normalized)?;
    let endpoints = endpoints(&target.registry, opts);
    let mut last_error = None;
    for (i, endpoint) in endpoints.iter().enumerate() {
        match pull_from(&store, &target, endpoint, opts, &mut progress).await {
            Ok(id) => return Ok(id),
            // A mirror that fails (missing the image, unreachable, serving
            // bad content) is skipped, as in Docker.
            Err(err)
                if endpoint.mirror
                    && i + 1 < endpoints.len()
                    && !matches!(err, PullError::Store(StoreError::Io { .. })) =>
            {
                tracing::warn!(mirror = %endpoint.host, error = %err, "registry mirror failed, trying the next endpoint");
                last_error = Some(err);
            }
            Err(err) => return Err(err),
        }
    }
    Err(last_error.unwrap_or_else(|| PullError::InvalidReference(format!("no registry endpoint for {normalized}"))))
}

/// `GET /distribution/{name}/json` (`docker manifest inspect`-like, used by
/// `docker service create` and SDKs): the descriptor of what the reference
/// points at in its registry and the platforms it offers, in Docker's JSON.
/// Endpoints (mirrors first) are tried as for a pull.
pub async fn inspect_distribution(reference: &str, opts: &PullOptions) -> Result<serde_json::Value, PullError> {
    let normalized = reference::normalize(reference).map_err(PullError::InvalidReference)?;
    let target = Target::parse(&normalized)?;
    let endpoints = endpoints(&target.registry, opts);
    let mut last_error = None;
    for (i, endpoint) in endpoints.iter().enumerate() {
        match distribution_from(&target, endpoint, opts).await {
            Ok(value) => return Ok(value),
            Err(err) if endpoint.mirror && i + 1 < endpoints.len() => {
                tracing::warn!(mirror = %endpoint.host, error = %err, "registry mirror failed, trying the next endpoint");
                last_error = Some(err);
            }
            Err(err) => return Err(err),
        }
    }
    Err(last_error.unwrap_or_else(|| PullError::InvalidReference(format!("no registry endpoint for {normalized}"))))
}

async fn distribution_from(
    target: &Target,
    endpoint: &Endpoint,
    opts: &PullOptions,
) -> Result<serde_json::Value, PullError> {
    let client = client_for(endpoint)?;
    let auth = if endpoint.mirror { RegistryAuth::Anonymous } else { registry_auth(opts.auth.as_ref())? };
    let image = target.oci_reference(&endpoint.host);
    let accepted = [
        oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
        oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
        oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
        oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    ];
    let (raw, digest) = client
        .pull_manifest_raw(&image, &auth, &accepted)
        .await
        .map_err(|e| pull_error(e, target, endpoint, Stage::Manifest))?;
    let manifest: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| PullError::Registry {
        registry: endpoint.host.clone(),
        message: format!("manifest {digest}: {e}"),
    })?;
    let media_type = manifest["mediaType"].as_str().unwrap_or(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE).to_string();
    let platform_of = |p: &serde_json::Value| {
        let mut platform = serde_json::json!({
            "architecture": p["architecture"].as_str().unwrap_or_default(),
            "os": p["os"].as_str().unwrap_or_default(),
        });
        for key in ["variant", "os.version"] {
            if let Some(value) = p[key].as_str().filter(|v| !v.is_empty()) {
                platform[key] = value.into();
            }
        }
        platform
    };
    let platforms: Vec<serde_json::Value> = if let Some(entries) = manifest["manifests"].as_array() {
        entries.iter().filter(|e| e["platform"].is_object()).map(|e| platform_of(&e["platform"])).collect()
    } else {
        // A single-platform image: its platform is in the config.
        let config: OciDescriptor = serde_json::from_value(manifest["config"].clone()).map_err(|e| {
            PullError::Registry { registry: endpoint.host.clone(), message: format!("manifest {digest}: {e}") }
        })?;
        let mut bytes = Vec::new();
        {
            let limit = u64::try_from(config.size).unwrap_or(0).min(MAX_CONFIG_SIZE);
            let mut writer = Counting { inner: &mut bytes, written: 0, limit, on_write: |_| {} };
            client
                .pull_blob(&image, &config, &mut writer)
                .await
                .map_err(|e| pull_error(e, target, endpoint, Stage::Blob))?;
        }
        let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        vec![platform_of(&config)]
    };
    Ok(serde_json::json!({
        "Descriptor": { "mediaType": media_type, "digest": digest, "size": raw.len() },
        "Platforms": platforms,
    }))
}

/// The part of an image config a pull needs.
#[derive(Deserialize)]
struct PulledConfig {
    #[serde(default)]
    os: String,
    rootfs: PulledRootfs,
}

#[derive(Deserialize)]
struct PulledRootfs {
    diff_ids: Vec<String>,
}

/// A work directory under the store's `tmp/`, removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An `AsyncWrite` that counts what passes, reports it, and refuses more
/// than `limit` bytes (a registry must not stream more than it announced).
struct Counting<W, F> {
    inner: W,
    written: u64,
    limit: u64,
    on_write: F,
}

impl<W: AsyncWrite + Unpin, F: FnMut(u64) + Unpin> AsyncWrite for Counting<W, F> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.written + buf.len() as u64 > this.limit {
            return Poll::Ready(Err(io::Error::other(format!(
                "the registry sent more than the {} bytes the manifest announced",
                this.limit
            ))));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.written += n as u64;
            (this.on_write)(this.written);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A layer of the image being pulled.
struct PulledLayer {
    descriptor: OciDescriptor,
    diff_id: String,
    /// Uncompressed size, when unpacked by this pull.
    unpacked: Option<u64>,
    /// Position in the manifest (names its files in the work directory).
    index: usize,
}

async fn pull_from<S: StoreAccess>(
    store: &Arc<S>,
    target: &Target,
    endpoint: &Endpoint,
    opts: &PullOptions,
    progress: &mut impl FnMut(Progress),
) -> Result<String, PullError> {
    let client = client_for(endpoint)?;
    let auth = if endpoint.mirror { RegistryAuth::Anonymous } else { registry_auth(opts.auth.as_ref())? };
    let image = target.oci_reference(&endpoint.host);
    let err = |stage| move |e: OciDistributionError| pull_error(e, target, endpoint, stage);

    // The manifest, through an index if the reference names one.
    let (manifest, digest) = client.pull_manifest(&image, &auth).await.map_err(err(Stage::Manifest))?;
    let (manifest, image): (OciImageManifest, Reference) = match manifest {
        OciManifest::Image(manifest) => (manifest, image),
        OciManifest::ImageIndex(index) => {
            let arch = reference::oci_architecture();
            let entry = select_platform(&index.manifests, arch)
                .ok_or_else(|| PullError::NoMatchingManifest { platform: format!("linux/{arch}") })?;
            let platform_image = image.clone_with_digest(entry.digest.clone());
            match client.pull_manifest(&platform_image, &auth).await.map_err(err(Stage::Manifest))? {
                (OciManifest::Image(manifest), _) => (manifest, platform_image),
                (OciManifest::ImageIndex(_), _) => {
                    return Err(PullError::Registry {
                        registry: endpoint.host.clone(),
                        message: format!("index entry {} is another index", entry.digest),
                    })
                }
            }
        }
    };
    // Docker's RepoDigest: what the reference resolved to (an index, when
    // the tag names one), under the image's own registry, not a mirror's.
    let repo_digest = format!("{}/{}@{digest}", target.registry, target.repository);
    progress(Progress::Resolved { reference: target.normalized.clone(), digest });

    // The config: the image ID and the layers' diff IDs.
    let image_id = manifest.config.digest.clone();
    if !is_sha256_digest(&image_id) {
        return Err(PullError::Unsupported(format!("image config digest {image_id:?}: only sha256 is supported")));
    }
    let mut config = Vec::new();
    {
        let limit = u64::try_from(manifest.config.size).unwrap_or(0).min(MAX_CONFIG_SIZE);
        let mut writer = Counting { inner: &mut config, written: 0, limit, on_write: |_| {} };
        client.pull_blob(&image, &manifest.config, &mut writer).await.map_err(err(Stage::Blob))?;
    }
    let parsed: PulledConfig = serde_json::from_slice(&config).map_err(|e| PullError::Registry {
        registry: endpoint.host.clone(),
        message: format!("image config {image_id}: {e}"),
    })?;
    if !parsed.os.is_empty() && parsed.os != "linux" {
        return Err(PullError::Unsupported(format!(
            "image operating system {:?} cannot be used on this platform",
            parsed.os
        )));
    }
    // Diff IDs name directories in the store: nothing but sha256 digests.
    if let Some(bad) = parsed.rootfs.diff_ids.iter().find(|d| !is_sha256_digest(d)) {
        return Err(PullError::Registry {
            registry: endpoint.host.clone(),
            message: format!("image config {image_id}: invalid diff ID {bad:?}"),
        });
    }
    if parsed.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(PullError::Registry {
            registry: endpoint.host.clone(),
            message: format!(
                "image {image_id}: the config lists {} layers, the manifest {}",
                parsed.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    for layer in &manifest.layers {
        if layer.media_type.contains("zstd") || layer.media_type.contains("windows") {
            return Err(PullError::Unsupported(format!("unsupported layer media type {}", layer.media_type)));
        }
    }

    // What the store already has, and where to work.
    let diff_ids = parsed.rootfs.diff_ids.clone();
    let (present, tmp_dir) = store_call(store, move |store| {
        let present =
            diff_ids.iter().map(|d| Ok(store.layer_dir(d)?.is_dir())).collect::<Result<Vec<bool>, StoreError>>()?;
        Ok((present, store.tmp_dir()))
    })
    .await?;
    static WORK_COUNTER: AtomicU64 = AtomicU64::new(0);
    let work = WorkDir(tmp_dir.join(format!(
        "pull-{}-{}-{}",
        std::process::id(),
        WORK_COUNTER.fetch_add(1, Ordering::Relaxed),
        short_id(&image_id)
    )));
    tokio::fs::create_dir(&work.0).await.map_err(|e| {
        PullError::Store(StoreError::Io { context: format!("creating {}", work.0.display()), source: e })
    })?;

    let mut layers = Vec::new();
    let mut seen = HashSet::new();
    for (index, ((descriptor, diff_id), present)) in
        manifest.layers.iter().zip(&parsed.rootfs.diff_ids).zip(present).enumerate()
    {
        let id = short_id(&descriptor.digest);
        let mut pulled =
            PulledLayer { descriptor: descriptor.clone(), diff_id: diff_id.clone(), unpacked: None, index };
        if present || !seen.insert(diff_id.clone()) {
            progress(Progress::LayerExists { id });
            layers.push(pulled);
            continue;
        }
        let total = u64::try_from(descriptor.size).unwrap_or(0);
        progress(Progress::LayerStart { id: id.clone(), size: total });
        // Named by position: digests come from the registry.
        let blob_path = work.0.join(format!("layer-{index}.blob"));
        let file = tokio::fs::File::create(&blob_path).await.map_err(|e| {
            PullError::Store(StoreError::Io { context: format!("creating {}", blob_path.display()), source: e })
        })?;
        {
            let mut reported = 0u64;
            let progress = &mut *progress;
            let on_write = |current: u64| {
                if current - reported >= PROGRESS_STEP {
                    reported = current;
                    progress(Progress::LayerProgress { id: id.clone(), current, total });
                }
            };
            let mut writer = Counting { inner: file, written: 0, limit: total, on_write };
            client.pull_blob(&image, descriptor, &mut writer).await.map_err(err(Stage::Blob))?;
            tokio::io::AsyncWriteExt::shutdown(&mut writer.inner).await.map_err(|e| {
                PullError::Store(StoreError::Io { context: format!("writing {}", blob_path.display()), source: e })
            })?;
        }
        progress(Progress::LayerProgress { id: id.clone(), current: total, total });
        progress(Progress::LayerExtracting { id: id.clone() });
        let dest = work.0.join(format!("layer-{index}"));
        let expected = diff_id.clone();
        let stats = tokio::task::spawn_blocking(move || -> Result<layer::UnpackStats, StoreError> {
            let file = std::fs::File::open(&blob_path)
                .map_err(|e| StoreError::Io { context: format!("opening {}", blob_path.display()), source: e })?;
            let stats = layer::unpack_layer(io::BufReader::new(file), &dest, Some(&expected))?;
            let _ = std::fs::remove_file(&blob_path);
            Ok(stats)
        })
        .await
        .map_err(|e| PullError::Store(StoreError::Invalid(format!("unpacking task failed: {e}"))))??;
        pulled.unpacked = Some(stats.tar_bytes);
        progress(Progress::LayerDone { id });
        layers.push(pulled);
    }

    // Into the store: config, layers, then the index that makes it visible.
    let tag = target.tag.as_ref().map(|_| target.normalized.clone());
    let work_dir = work.0.clone();
    let id = image_id.clone();
    let pulled = Pulled { repo_digest, repository: format!("{}/{}", target.registry, target.repository) };
    let changed =
        store_call(store, move |store| commit(store, &work_dir, &config, &id, &layers, tag.as_deref(), &pulled))
            .await?;
    drop(work);
    progress(Progress::Done { image_id: image_id.clone(), changed });
    Ok(image_id)
}

/// Where a pulled image came from, for the store's digest bookkeeping.
struct Pulled {
    repo_digest: String,
    /// `registry/repository`.
    repository: String,
}

/// Moves the unpacked layers into place, stores the config and records the
/// image (under the store's lock). Returns whether the tag changed.
fn commit(
    store: &mut ImageStore,
    work: &Path,
    config: &[u8],
    id: &str,
    layers: &[PulledLayer],
    tag: Option<&str>,
    pulled: &Pulled,
) -> Result<bool, StoreError> {
    let unchanged = tag.is_some_and(|t| store.resolve(t).is_some_and(|r| r.id == id));
    store.write_blob(config, Some(id))?;
    let mut size = 0;
    for layer in layers {
        let dest = store.layer_dir(&layer.diff_id)?;
        match layer.unpacked {
            Some(bytes) => {
                // Another pull may have put the same layer in place meanwhile: keep that one.
                if !dest.is_dir() {
                    let ours = work.join(format!("layer-{}", layer.index));
                    let moved = crate::tarsplit::rename(&ours, &dest).and_then(|()| std::fs::rename(&ours, &dest));
                    moved.map_err(|e| StoreError::Io {
                        context: format!("moving a layer into {}", dest.display()),
                        source: e,
                    })?;
                }
                size += bytes;
            }
            None if dest.is_dir() => size += store.layer_size(&layer.diff_id),
            None => {
                return Err(StoreError::Conflict(format!(
                    "layer {} ({}) was removed while pulling: pull again",
                    layer.diff_id, layer.descriptor.digest
                )))
            }
        }
    }
    // The renames must be durable before the index names them.
    for path in [store.layer_dir(id)?, store.blob_path(id)?] {
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::Io { context: format!("syncing {}", dir.display()), source: e })?;
    }
    let tags: Vec<String> = tag.into_iter().map(String::from).collect();
    let blobs: Vec<(String, LayerBlob)> = layers
        .iter()
        .map(|layer| {
            let blob = LayerBlob {
                digest: layer.descriptor.digest.clone(),
                media_type: layer.descriptor.media_type.clone(),
                size: u64::try_from(layer.descriptor.size).unwrap_or(0),
                repository: pulled.repository.clone(),
            };
            (layer.diff_id.clone(), blob)
        })
        .collect();
    store.add_pulled_image(id, size, &tags, &pulled.repo_digest, &blobs)?;
    Ok(!unchanged)
}

#[cfg(test)]
mod tests;
