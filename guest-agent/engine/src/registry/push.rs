//! `docker push`: an image of the store to its repository's registry, as
//! a Docker schema 2 manifest over gzip layers.
//!
//! The store keeps layers unpacked (store.rs), so a layer's compressed blob
//! is gone after its pull. A layer the registry already has is never
//! recompressed (which would give it another digest): the blobs the store
//! knows it by (`store/digests.rs`: what a pull fetched, what a push wrote)
//! are checked in the target repository (HEAD) and mounted from another
//! repository of the same registry. Only a layer none of them finds is
//! rebuilt from its tar-split (the exact bytes of its diff ID), gzipped and
//! uploaded in chunks while its digest is computed, so the manifest names
//! exactly the bytes sent; that blob is recorded for the next push.

use std::io::{self, Write};
use std::sync::Arc;

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio::sync::mpsc;

use super::endpoint::{client_for, code_text, endpoints, registry_auth, root_cause, short_id, Endpoint, Target};
use super::{store_call, PullError, PullOptions, StoreAccess};
use crate::reference;
use crate::store::{repository_of, LayerBlob, StoreError};

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const GZIP_LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Report upload progress at most every this many (uncompressed) bytes.
const PROGRESS_STEP: u64 = 512 << 10;
/// Compressed bytes handed to the uploader at a time.
const CHUNK: usize = 1 << 20;

/// What a push reports as it goes; `id` is the layer's short diff ID, as
/// Docker shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushProgress {
    /// `The push refers to repository [localhost:5000/app]`.
    Repository {
        name: String,
    },
    Preparing {
        id: String,
    },
    Pushing {
        id: String,
        current: u64,
        total: u64,
    },
    Pushed {
        id: String,
    },
    Exists {
        id: String,
    },
    /// Mounted from another repository (`library/busybox`).
    Mounted {
        id: String,
        from: String,
    },
    /// One tag is in the registry: its manifest's digest and size.
    Tagged {
        tag: String,
        digest: String,
        size: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// dockerd's words, for a repository with no local tag.
    #[error("An image does not exist locally with the tag: {0}")]
    NoSuchImage(String),
    #[error("tag does not exist: {0}")]
    NoSuchTag(String),
    #[error("{0}")]
    InvalidReference(String),
    /// The registry's own error (`denied: requested access to the resource is denied`).
    #[error("{0}")]
    Registry(String),
    #[error("Get \"{url}\": {message}")]
    Connection { url: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PullError> for PushError {
    fn from(err: PullError) -> PushError {
        match err {
            PullError::Store(err) => PushError::Store(err),
            PullError::InvalidReference(message) => PushError::InvalidReference(message),
            PullError::Connection { url, message, .. } => PushError::Connection { url, message },
            other => PushError::Registry(other.to_string()),
        }
    }
}

/// `docker push NAME[:TAG]`: with no tag (in `tag` or the name) every tag
/// of the repository is pushed (`docker push -a`). Mirrors are never
/// pushed to.
pub async fn push<S: StoreAccess>(
    store: Arc<S>,
    name: &str,
    tag: &str,
    opts: &PullOptions,
    mut progress: impl FnMut(PushProgress),
) -> Result<(), PushError> {
    let with_tag = if tag.is_empty() { name.to_string() } else { format!("{name}:{tag}") };
    let normalized = reference::normalize(&with_tag).map_err(PushError::InvalidReference)?;
    if normalized.contains('@') {
        return Err(PushError::InvalidReference("cannot push a digest reference".into()));
    }
    let repository = repository_of(&normalized).to_string();
    progress(PushProgress::Repository { name: repository.clone() });
    let prefix = format!("{repository}:");
    // A tag in the name counts as one given (docker-py sends `repo:tag`).
    let named_tag = name.rsplit('/').next().is_some_and(|last| last.contains(':'));
    let want = (!tag.is_empty() || named_tag).then(|| normalized.clone());
    let tags = store_call(&store, move |store| {
        let mut tags: Vec<(String, String)> = store
            .images()
            .flat_map(|image| store.tags_of(&image.id).into_iter().map(|t| (t.to_string(), image.id.clone())))
            .filter(|(t, _)| t.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/')))
            .collect();
        tags.sort();
        Ok(tags)
    })
    .await?;
    if tags.is_empty() {
        return Err(PushError::NoSuchImage(reference::familiar(&repository).to_string()));
    }
    let tags: Vec<(String, String)> = match &want {
        Some(want) => tags.into_iter().filter(|(t, _)| t == want).collect(),
        None => tags,
    };
    if tags.is_empty() {
        return Err(PushError::NoSuchTag(reference::familiar(&normalized).to_string()));
    }
    let target = Target::parse(&tags[0].0)?;
    let no_mirrors = PullOptions { mirrors: Vec::new(), ..opts.clone() };
    let endpoint = endpoints(&target.registry, &no_mirrors).remove(0);
    let client = client_for(&endpoint)?;
    let auth = registry_auth(opts.auth.as_ref())?;
    for (tag, id) in tags {
        let target = Target::parse(&tag)?;
        let session = Session { client: &client, auth: &auth, endpoint: &endpoint, target: &target };
        session.push_image(&store, &id, &mut progress).await?;
    }
    Ok(())
}

struct Session<'a> {
    client: &'a Client,
    auth: &'a RegistryAuth,
    endpoint: &'a Endpoint,
    target: &'a Target,
}

/// A layer as the manifest will name it.
struct PushedLayer {
    diff_id: String,
    blob: LayerBlob,
}

impl Session<'_> {
    fn image(&self) -> Reference {
        self.target.oci_reference(&self.endpoint.host)
    }

    /// `registry/repository`, as the store records blobs' whereabouts.
    fn repository(&self) -> String {
        format!("{}/{}", self.target.registry, self.target.repository)
    }

    fn error(&self, err: OciDistributionError) -> PushError {
        push_error(err, self.endpoint)
    }

    async fn push_image<S: StoreAccess>(
        &self,
        store: &Arc<S>,
        id: &str,
        progress: &mut impl FnMut(PushProgress),
    ) -> Result<(), PushError> {
        let image = self.image();
        self.client.store_auth_if_needed(image.resolve_registry(), self.auth).await;
        // Credentials are checked now, before anything is read or sent.
        self.client.auth(&image, self.auth, RegistryOperation::Push).await.map_err(|e| self.error(e))?;
        let image_id = id.to_string();
        let (config, layers) = store_call(store, move |store| {
            let record = store.resolve(&image_id).ok_or_else(|| StoreError::NotFound(image_id.clone()))?.clone();
            let mut layers = Vec::new();
            for diff_id in &record.diff_ids {
                layers.push((diff_id.clone(), store.layer_dir(diff_id)?, store.layer_blobs(diff_id)));
            }
            Ok((store.config_json(&record.id)?, layers))
        })
        .await?;
        for (diff_id, _, _) in &layers {
            progress(PushProgress::Preparing { id: short_id(diff_id) });
        }
        let mut pushed: Vec<PushedLayer> = Vec::new();
        for (diff_id, dir, known) in layers {
            let id = short_id(&diff_id);
            if let Some(done) = pushed.iter().find(|p| p.diff_id == diff_id) {
                let blob = done.blob.clone();
                pushed.push(PushedLayer { diff_id, blob });
                continue;
            }
            let blob = match self.find_remote(&known).await? {
                Some((blob, None)) => {
                    progress(PushProgress::Exists { id });
                    blob
                }
                Some((blob, Some(from))) => {
                    progress(PushProgress::Mounted { id, from });
                    blob
                }
                None => self.upload_layer(&diff_id, dir, progress).await?,
            };
            pushed.push(PushedLayer { diff_id, blob: LayerBlob { repository: self.repository(), ..blob } });
        }
        let config_digest = id.to_string();
        if !self.client.blob_exists(&image, &config_digest).await.map_err(|e| self.error(e))? {
            self.client.push_blob(&image, config.clone(), &config_digest).await.map_err(|e| self.error(e))?;
        }
        let manifest = manifest_json(&config_digest, config.len(), &pushed);
        let content_type = MANIFEST_MEDIA_TYPE.parse().expect("a valid header value");
        self.client.push_manifest_raw(&image, manifest.clone(), content_type).await.map_err(|e| self.error(e))?;
        let digest = sha256_digest(&manifest);
        let repo_digest = format!("{}@{digest}", self.repository());
        let blobs: Vec<(String, LayerBlob)> = pushed.into_iter().map(|p| (p.diff_id, p.blob)).collect();
        let image_id = id.to_string();
        store_call(store, move |store| store.record_push(&image_id, &repo_digest, &blobs)).await?;
        let tag = self.target.tag.clone().unwrap_or_else(|| "latest".into());
        progress(PushProgress::Tagged { tag, digest, size: manifest.len() as u64 });
        Ok(())
    }

    /// A blob the layer is known by that the target repository has (None
    /// as the second field) or that could be mounted from another
    /// repository of this registry (its path there).
    async fn find_remote(&self, known: &[LayerBlob]) -> Result<Option<(LayerBlob, Option<String>)>, PushError> {
        let image = self.image();
        let mut checked = Vec::new();
        for blob in known {
            if checked.contains(&blob.digest) {
                continue;
            }
            checked.push(blob.digest.clone());
            match self.client.blob_exists(&image, &blob.digest).await {
                Ok(true) => return Ok(Some((blob.clone(), None))),
                Ok(false) => {}
                // A blob the registry will not tell us about is pushed.
                Err(err) => tracing::debug!(digest = %blob.digest, error = %err, "blob check failed"),
            }
        }
        let registry_prefix = format!("{}/", self.target.registry);
        for blob in known {
            let Some(from) = blob.repository.strip_prefix(&registry_prefix) else { continue };
            if from == self.target.repository {
                continue;
            }
            let source = Reference::with_digest(self.endpoint.host.clone(), from.to_string(), blob.digest.clone());
            match self.client.mount_blob(&image, &source, &blob.digest).await {
                Ok(()) => return Ok(Some((blob.clone(), Some(from.to_string())))),
                // The registry may refuse to mount (no pull right on the
                // source, or it opened an upload instead): pushed then.
                Err(err) => tracing::debug!(digest = %blob.digest, from, error = %err, "blob mount failed"),
            }
        }
        Ok(None)
    }

    /// Rebuilds the layer's tar, gzips it and uploads it in chunks.
    async fn upload_layer(
        &self,
        diff_id: &str,
        dir: std::path::PathBuf,
        progress: &mut impl FnMut(PushProgress),
    ) -> Result<LayerBlob, PushError> {
        let id = short_id(diff_id);
        let total = crate::tarsplit::tar_size(&dir).map_err(|e| {
            PushError::Store(StoreError::Invalid(format!(
                "layer {diff_id} was stored without the data to rebuild its archive ({e}); pull or load the image again"
            )))
        })?;
        progress(PushProgress::Pushing { id: id.clone(), current: 0, total });
        let (chunks_tx, chunks) = mpsc::channel::<io::Result<bytes::Bytes>>(4);
        let (read_tx, mut read) = mpsc::unbounded_channel::<u64>();
        let compress = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let sink = ChunkSink { tx: chunks_tx.clone(), buf: Vec::with_capacity(CHUNK) };
            let mut gzip = flate2::write::GzEncoder::new(sink, flate2::Compression::default());
            let mut counting = CountingWriter { inner: &mut gzip, written: 0, reported: 0, report: read_tx };
            let result = crate::tarsplit::write_tar(&dir, &mut counting);
            let written = match result {
                Ok(written) => written,
                Err(err) => {
                    let _ = chunks_tx.blocking_send(Err(io::Error::new(err.kind(), err.to_string())));
                    return Err(err);
                }
            };
            let mut sink = gzip.finish()?;
            sink.flush()?;
            Ok(written)
        });
        let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
            let item = chunks.recv().await?;
            Some((item.map_err(OciDistributionError::IoError), chunks))
        });
        let image = self.image();
        let upload = self.client.push_blob_stream_chunked(&image, stream);
        tokio::pin!(upload);
        let response = loop {
            tokio::select! {
                response = &mut upload => break response,
                Some(current) = read.recv() => progress(PushProgress::Pushing { id: id.clone(), current, total }),
            }
        };
        let written = compress.await.map_err(|e| PushError::Store(StoreError::Invalid(e.to_string())))?;
        let response = response.map_err(|e| self.error(e))?;
        let written = written.map_err(|e| StoreError::Io { context: format!("reading layer {diff_id}"), source: e })?;
        if written != total {
            return Err(PushError::Store(StoreError::Invalid(format!("layer {diff_id} changed while it was pushed"))));
        }
        progress(PushProgress::Pushing { id: id.clone(), current: total, total });
        progress(PushProgress::Pushed { id });
        Ok(LayerBlob {
            digest: response.blob_digest,
            media_type: GZIP_LAYER_MEDIA_TYPE.into(),
            size: response.size,
            repository: self.repository(),
        })
    }
}

/// The schema 2 manifest, in Docker's layout (it indents with three spaces).
fn manifest_json(config_digest: &str, config_size: usize, layers: &[PushedLayer]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|layer| {
            serde_json::json!({
                "mediaType": docker_media_type(&layer.blob.media_type),
                "size": layer.blob.size,
                "digest": layer.blob.digest,
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "size": config_size, "digest": config_digest },
        "layers": layers,
    });
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&manifest, &mut serializer).expect("JSON values serialise");
    out
}

/// A Docker manifest names layers with Docker's media types; OCI's name
/// the same bytes.
fn docker_media_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip" => GZIP_LAYER_MEDIA_TYPE,
        "application/vnd.oci.image.layer.v1.tar" => "application/vnd.docker.image.rootfs.diff.tar",
        other => other,
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The registry's errors as dockerd prints them for a push.
fn push_error(err: OciDistributionError, endpoint: &Endpoint) -> PushError {
    match err {
        OciDistributionError::RegistryError { envelope, .. } => match envelope.errors.first() {
            Some(first) => PushError::Registry(format!("{}: {}", code_text(&first.code), first.message)),
            None => PushError::Registry("the registry answered with an empty error".into()),
        },
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::ServerError { code: 401, .. } => {
            PushError::Registry("unauthorized: authentication required".into())
        }
        OciDistributionError::AuthenticationFailure(reason) => {
            PushError::Registry(format!("unauthorized: {}", reason.trim()))
        }
        OciDistributionError::ServerError { code: 403, .. } => {
            PushError::Registry("denied: requested access to the resource is denied".into())
        }
        OciDistributionError::ServerError { code, message, .. } => {
            PushError::Registry(format!("received unexpected HTTP status {code}: {}", message.trim()))
        }
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
            let scheme = if endpoint.insecure { "http" } else { "https" };
            let url = e.url().map(|u| u.to_string()).unwrap_or_else(|| format!("{scheme}://{}/v2/", endpoint.host));
            PushError::Connection { url, message: root_cause(&e) }
        }
        other => PushError::Registry(other.to_string()),
    }
}

/// Hands the compressed stream to the uploader in `CHUNK`-sized pieces.
struct ChunkSink {
    tx: mpsc::Sender<io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::other("the upload stopped"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Counts the uncompressed bytes (Docker's push progress counts those).
struct CountingWriter<W> {
    inner: W,
    written: u64,
    reported: u64,
    report: mpsc::UnboundedSender<u64>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.written += n as u64;
        if self.written - self.reported >= PROGRESS_STEP {
            self.reported = self.written;
            let _ = self.report.send(self.written);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_docker_schema_2_with_docker_media_types() {
        let layer = |media_type: &str| PushedLayer {
            diff_id: "sha256:d".into(),
            blob: LayerBlob {
                digest: "sha256:b".into(),
                media_type: media_type.into(),
                size: 7,
                repository: "r".into(),
            },
        };
        let manifest = manifest_json(
            "sha256:c",
            12,
            &[layer("application/vnd.oci.image.layer.v1.tar+gzip"), layer(GZIP_LAYER_MEDIA_TYPE)],
        );
        let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(parsed["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(
            parsed["config"],
            serde_json::json!({ "mediaType": CONFIG_MEDIA_TYPE, "size": 12, "digest": "sha256:c" })
        );
        assert_eq!(parsed["layers"][0]["mediaType"], GZIP_LAYER_MEDIA_TYPE);
        assert_eq!(
            parsed["layers"][1],
            serde_json::json!({ "mediaType": GZIP_LAYER_MEDIA_TYPE, "size": 7, "digest": "sha256:b" })
        );
        assert!(String::from_utf8(manifest).unwrap().contains("\n   \"schemaVersion\": 2"));
    }
}
