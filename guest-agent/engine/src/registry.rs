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

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use tokio::io::AsyncWrite;

use crate::layer;
use crate::reference;
use crate::store::{ImageStore, StoreError};

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

/// A normalised reference split for the registry.
#[derive(Debug, Clone)]
struct Target {
    /// Normalised (`docker.io/library/busybox:latest`).
    normalized: String,
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Target {
    fn parse(normalized: &str) -> Result<Target, PullError> {
        let invalid = || PullError::InvalidReference(format!("invalid reference format: {normalized:?}"));
        let (name, tag, digest) = match normalized.split_once('@') {
            Some((name, digest)) => (name, None, Some(digest.to_string())),
            None => {
                let slash = normalized.rfind('/').ok_or_else(invalid)?;
                let colon = normalized[slash..].rfind(':').ok_or_else(invalid)? + slash;
                (&normalized[..colon], Some(normalized[colon + 1..].to_string()), None)
            }
        };
        let (registry, repository) = name.split_once('/').ok_or_else(invalid)?;
        if repository.is_empty() {
            return Err(invalid());
        }
        Ok(Target {
            normalized: normalized.to_string(),
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `busybox:latest`, `localhost:5000/x:y` (Docker's familiar form).
    fn familiar(&self) -> &str {
        reference::familiar(&self.normalized)
    }

    /// `busybox`, `localhost:5000/x`: the repository as Docker names it.
    fn familiar_repository(&self) -> String {
        let familiar = self.familiar();
        let end = match (&self.tag, &self.digest) {
            (_, Some(digest)) => familiar.len() - digest.len() - 1,
            (Some(tag), None) => familiar.len() - tag.len() - 1,
            (None, None) => familiar.len(),
        };
        familiar[..end].to_string()
    }

    fn oci_reference(&self, host: &str) -> Reference {
        match &self.digest {
            Some(digest) => Reference::with_digest(host.to_string(), self.repository.clone(), digest.clone()),
            None => Reference::with_tag(
                host.to_string(),
                self.repository.clone(),
                self.tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

/// One place to pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `host[:port]` as the URL has it.
    host: String,
    /// Plain HTTP.
    insecure: bool,
    mirror: bool,
}

/// Mirrors first for Docker Hub, then the origin.
fn endpoints(registry: &str, opts: &PullOptions) -> Vec<Endpoint> {
    let insecure =
        |host: &str| is_loopback(host) || opts.insecure_registries.iter().any(|r| r.trim_end_matches('/') == host);
    let mut endpoints = Vec::new();
    if registry == "docker.io" {
        for mirror in &opts.mirrors {
            let (scheme_http, rest) = match mirror.split_once("://") {
                Some((scheme, rest)) => (scheme.eq_ignore_ascii_case("http"), rest),
                None => (false, mirror.as_str()),
            };
            let host = rest.split('/').next().unwrap_or_default().to_string();
            if host.is_empty() {
                continue;
            }
            endpoints.push(Endpoint { insecure: scheme_http || insecure(&host), host, mirror: true });
        }
        endpoints.push(Endpoint { host: DOCKER_HUB_REGISTRY.into(), insecure: false, mirror: false });
    } else {
        endpoints.push(Endpoint { host: registry.into(), insecure: insecure(registry), mirror: false });
    }
    endpoints
}

/// `localhost`, `127.0.0.0/8` or `::1`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host })
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn registry_auth(credentials: Option<&Credentials>) -> Result<RegistryAuth, PullError> {
    let Some(c) = credentials else { return Ok(RegistryAuth::Anonymous) };
    if !c.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(c.registry_token.clone()));
    }
    if !c.identity_token.is_empty() {
        return Err(PullError::Unsupported(
            "identity tokens (OAuth2 refresh tokens) are not supported yet: log in with a username and password".into(),
        ));
    }
    if !c.username.is_empty() {
        return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
    }
    if !c.auth.is_empty() {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(c.auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
        return match decoded {
            Some((user, password)) => Ok(RegistryAuth::Basic(user, password)),
            None => Err(PullError::InvalidReference("invalid X-Registry-Auth: bad \"auth\" field".into())),
        };
    }
    Ok(RegistryAuth::Anonymous)
}

fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Fails only when some provider is already installed, which is fine.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client_for(endpoint: &Endpoint) -> Result<Client, PullError> {
    install_crypto_provider();
    let config = ClientConfig {
        protocol: if endpoint.insecure {
            ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(Duration::from_secs(30)),
        // Between two reads, not for a whole download.
        read_timeout: Some(Duration::from_secs(120)),
        user_agent: concat!("berth-agent/", env!("CARGO_PKG_VERSION")),
        platform_resolver: None,
        ..ClientConfig::default()
    };
    Client::try_from(config)
        .map_err(|e| PullError::Registry { registry: endpoint.host.clone(), message: e.to_string() })
}

/// Which request failed, for Docker's error wording.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Manifest,
    Blob,
}

fn pull_error(err: OciDistributionError, target: &Target, endpoint: &Endpoint, stage: Stage) -> PullError {
    let registry = endpoint.host.clone();
    let denied = |detail: Option<String>| PullError::AccessDenied { repository: target.familiar_repository(), detail };
    match err {
        OciDistributionError::RegistryError { envelope, .. } => {
            let Some(first) = envelope.errors.first() else {
                return PullError::Registry { registry, message: "empty error response".into() };
            };
            let detail = format!("{}: {}", code_text(&first.code), first.message);
            match first.code {
                OciErrorCode::ManifestUnknown if stage == Stage::Manifest => {
                    PullError::ManifestUnknown { reference: target.familiar().to_string() }
                }
                OciErrorCode::NameUnknown | OciErrorCode::Unauthorized | OciErrorCode::Denied => denied(Some(detail)),
                _ => PullError::Registry { registry, message: detail },
            }
        }
        OciDistributionError::UnauthorizedError { .. } => denied(None),
        OciDistributionError::AuthenticationFailure(reason) => denied(Some(format!("unauthorized: {}", reason.trim()))),
        OciDistributionError::ServerError { code: 404, .. } if stage == Stage::Manifest => {
            PullError::ManifestUnknown { reference: target.familiar().to_string() }
        }
        OciDistributionError::ServerError { code: 401 | 403, .. } => denied(None),
        OciDistributionError::ServerError { code, message, .. } => PullError::Registry {
            registry,
            message: format!("received unexpected HTTP status {code}: {}", message.trim()),
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
            let url = e
                .url()
                .map(|u| u.to_string())
                .unwrap_or_else(|| format!("{}://{registry}/v2/", if endpoint.insecure { "http" } else { "https" }));
            PullError::Connection { registry, url, message: root_cause(&e) }
        }
        OciDistributionError::IoError(e) => {
            PullError::Store(StoreError::Io { context: "downloading".into(), source: e })
        }
        other => PullError::Registry { registry, message: other.to_string() },
    }
}

/// Docker prints the codes in lower case with spaces (`manifest unknown`).
fn code_text(code: &OciErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s.to_lowercase().replace('_', " "),
        _ => format!("{code:?}").to_lowercase(),
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `sha256:<64 lower-case hex>`.
fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Docker's short layer ID.
fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// The platform entry of an index for linux/this architecture: an exact
/// variant match (v8 on arm64) first, then an entry without a variant.
fn select_platform<'a>(entries: &'a [ImageIndexEntry], arch: &str) -> Option<&'a ImageIndexEntry> {
    let wanted_variant = match arch {
        "arm64" => Some("v8"),
        _ => None,
    };
    let candidates: Vec<&ImageIndexEntry> = entries
        .iter()
        .filter(|e| {
            e.platform.as_ref().is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == arch)
        })
        .collect();
    fn variant<'e>(e: &&'e ImageIndexEntry) -> Option<&'e str> {
        e.platform.as_ref().and_then(|p| p.variant.as_deref()).filter(|v| !v.is_empty())
    }
    candidates
        .iter()
        .find(|e| wanted_variant.is_some() && variant(e) == wanted_variant)
        .or_else(|| candidates.iter().find(|e| variant(e).is_none()))
        .or_else(|| candidates.first())
        .copied()
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
    let changed =
        store_call(store, move |store| commit(store, &work_dir, &config, &id, &layers, tag.as_deref())).await?;
    drop(work);
    progress(Progress::Done { image_id: image_id.clone(), changed });
    Ok(image_id)
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
    store.add_image(id, size, &tags)?;
    Ok(!unchanged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support;
    use std::process::{Child, Command, Stdio};

    const REGISTRY: &str = "/usr/bin/docker-registry";
    const SKOPEO: &str = "/usr/bin/skopeo";

    /// docker-registry and skopeo (Debian's; packaging/setup.sh installs
    /// them: a test installs nothing itself).
    fn tools_available() -> bool {
        let present = Path::new(REGISTRY).exists() && Path::new(SKOPEO).exists();
        assert!(present, "{REGISTRY} and {SKOPEO} are missing: packaging/setup.sh installs them");
        present
    }

    macro_rules! registry_or_skip {
        () => {
            registry_or_skip!(false)
        };
        ($auth:expr) => {
            match TestRegistry::start($auth) {
                Some(registry) => registry,
                None => {
                    eprintln!("SKIPPED: docker-registry/skopeo are not installed and could not be installed");
                    return;
                }
            }
        };
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A distribution registry on a free loopback port, killed on drop.
    struct TestRegistry {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
        /// `user:password` when the registry requires basic auth.
        creds: Option<&'static str>,
    }

    /// bcrypt of TEST_PASSWORD (the only htpasswd format distribution reads).
    const TEST_HTPASSWD: &str = "tester:$2b$04$dAZhn4uLw/GYmBuDrbjpfOnCHgyrfKj210P.upybjYHPbU4.SvTkC\n";
    const TEST_PASSWORD: &str = "berth-secret";

    impl TestRegistry {
        fn start(auth: bool) -> Option<TestRegistry> {
            if !tools_available() {
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            );
            if auth {
                std::fs::write(dir.path().join("htpasswd"), TEST_HTPASSWD).unwrap();
                config += &format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                );
            }
            std::fs::write(dir.path().join("config.yml"), config).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(REGISTRY)
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting docker-registry");
            let creds = auth.then_some("tester:berth-secret");
            let registry = TestRegistry { child, port, dir, creds };
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "the registry did not listen: {}", registry.log());
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(registry)
        }

        fn host(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        }

        /// GET requests for a blob, from the registry's access log.
        fn blob_gets(&self, repository: &str, short_digest: &str) -> usize {
            let needle = format!("\"GET /v2/{repository}/blobs/sha256:{short_digest}");
            self.log().lines().filter(|l| l.contains(&needle)).count()
        }

        /// `skopeo copy` of a docker-archive into the registry.
        fn push_archive(&self, archive: &[u8], name: &str) {
            let file = self.dir.path().join(format!("archive-{}.tar", name.replace(['/', ':'], "_")));
            std::fs::write(&file, archive).unwrap();
            let out = Command::new(SKOPEO)
                .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
                .args(self.creds.map(|c| format!("--dest-creds={c}")))
                .arg(format!("docker-archive:{}", file.display()))
                .arg(format!("docker://{}/{name}", self.host()))
                .output()
                .unwrap();
            assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
        }

        /// The file the registry serves a blob from.
        fn blob_data(&self, digest: &str) -> PathBuf {
            let hex = digest.trim_start_matches("sha256:");
            self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
        }

        fn client(&self) -> Client {
            client_for(&Endpoint { host: self.host(), insecure: true, mirror: false }).unwrap()
        }

        fn reference(&self, repository: &str, tag: &str) -> Reference {
            Reference::with_tag(self.host(), repository.into(), tag.into())
        }

        /// Pushes blobs and a manifest with oci-client; returns the manifest's descriptor JSON.
        async fn push_image(
            &self,
            repository: &str,
            tag: &str,
            config: &[u8],
            layers: &[(&[u8], &str)],
        ) -> serde_json::Value {
            let client = self.client();
            let reference = self.reference(repository, tag);
            let auth = RegistryAuth::Anonymous;
            client.auth(&reference, &auth, oci_client::RegistryOperation::Push).await.unwrap();
            let config_digest = test_support::digest(config);
            client.push_blob(&reference, config.to_vec(), &config_digest).await.unwrap();
            let mut layer_descriptors = Vec::new();
            for (data, media_type) in layers {
                let digest = test_support::digest(data);
                client.push_blob(&reference, data.to_vec(), &digest).await.unwrap();
                layer_descriptors
                    .push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": data.len()}));
            }
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
                "layers": layer_descriptors,
            }))
            .unwrap();
            self.push_manifest(repository, tag, &manifest, "application/vnd.oci.image.manifest.v1+json").await;
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": test_support::digest(&manifest),
                "size": manifest.len(),
            })
        }

        async fn push_manifest(&self, repository: &str, tag: &str, body: &[u8], media_type: &str) {
            let client = self.client();
            let reference = self.reference(repository, tag);
            client.auth(&reference, &RegistryAuth::Anonymous, oci_client::RegistryOperation::Push).await.unwrap();
            client.push_manifest_raw(&reference, body.to_vec(), media_type.parse().unwrap()).await.unwrap();
        }
    }

    impl Drop for TestRegistry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn open_store(dir: &Path) -> Arc<Mutex<ImageStore>> {
        Arc::new(Mutex::new(ImageStore::open(dir).unwrap()))
    }

    async fn pull_recorded(
        store: &Arc<Mutex<ImageStore>>,
        reference: &str,
        opts: &PullOptions,
    ) -> (Result<String, PullError>, Vec<Progress>) {
        let mut events = Vec::new();
        let result = pull(store.clone(), reference, opts, |p| events.push(p)).await;
        (result, events)
    }

    fn tmp_entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn started(events: &[Progress]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| if let Progress::LayerStart { id, .. } = e { Some(id.clone()) } else { None })
            .collect()
    }

    fn existing(events: &[Progress]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| if let Progress::LayerExists { id } = e { Some(id.clone()) } else { None })
            .collect()
    }

    fn config_json(arch: &str, variant: Option<&str>, layers: &[&[u8]]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| test_support::digest(l)).collect();
        let mut config = serde_json::json!({
            "architecture": arch, "os": "linux", "created": "2024-01-02T03:04:05Z",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(variant) = variant {
            config["variant"] = variant.into();
        }
        serde_json::to_vec(&config).unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn pulls_into_the_store_and_reuses_layers() {
        let registry = registry_or_skip!();
        let (archive, expected_id) = test_support::busybox_archive(&["test/busybox:1"]);
        registry.push_archive(&archive, "test/busybox:1");
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let opts = PullOptions::default();
        let reference = format!("{}/test/busybox:1", registry.host());

        let (result, events) = pull_recorded(&store, &reference, &opts).await;
        assert_eq!(result.unwrap(), expected_id);
        assert!(
            matches!(&events[0], Progress::Resolved { reference: r, digest } if *r == reference && digest.starts_with("sha256:"))
        );
        let layer_ids = started(&events);
        assert_eq!(layer_ids.len(), 1, "{events:?}");
        assert!(events.contains(&Progress::LayerDone { id: layer_ids[0].clone() }));
        assert!(events
            .iter()
            .any(|e| matches!(e, Progress::LayerProgress { current, total, .. } if current == total && *total > 0)));
        assert_eq!(events.last(), Some(&Progress::Done { image_id: expected_id.clone(), changed: true }));
        assert_eq!(registry.blob_gets("test/busybox", &layer_ids[0]), 1, "{}", registry.log());
        let busybox_diff_id = test_support::digest(&test_support::busybox_layer());
        {
            let store = store.lock().unwrap();
            let record = store.resolve(&reference).expect("tagged");
            assert_eq!(record.id, expected_id);
            assert_eq!(record.diff_ids, vec![busybox_diff_id.clone()]);
            assert!(record.size > 0);
            assert_eq!(store.tags_of(&expected_id), vec![reference.as_str()]);
            assert!(store.layer_dir(&busybox_diff_id).unwrap().join("bin/busybox").is_file());
        }
        assert!(tmp_entries(dir.path()).is_empty(), "{:?}", tmp_entries(dir.path()));

        // Again: the layer is there, nothing is downloaded.
        let (result, events) = pull_recorded(&store, &reference, &opts).await;
        assert_eq!(result.unwrap(), expected_id);
        assert!(started(&events).is_empty(), "{events:?}");
        assert_eq!(existing(&events), layer_ids);
        assert_eq!(events.last(), Some(&Progress::Done { image_id: expected_id.clone(), changed: false }));
        assert_eq!(registry.blob_gets("test/busybox", &layer_ids[0]), 1);

        // A new image sharing the busybox layer downloads only its own layer.
        let extra = test_support::tar(&[("etc/motd", "hello\n")]);
        let (archive2, expected_id2) = test_support::docker_archive(&[test_support::busybox_layer(), extra], &["x:1"]);
        registry.push_archive(&archive2, "test/busybox:2");
        let reference2 = format!("{}/test/busybox:2", registry.host());
        let (result, events) = pull_recorded(&store, &reference2, &opts).await;
        assert_eq!(result.unwrap(), expected_id2);
        assert_eq!(existing(&events), layer_ids);
        assert_eq!(started(&events).len(), 1);
        assert_eq!(registry.blob_gets("test/busybox", &layer_ids[0]), 1);

        // Durable: a reopened store has both images and tags.
        let reopened = ImageStore::open(dir.path()).unwrap();
        assert_eq!(reopened.resolve(&reference).unwrap().id, expected_id);
        let second = reopened.resolve(&reference2).unwrap();
        assert_eq!(second.id, expected_id2);
        assert_eq!(second.diff_ids.len(), 2);
        assert_eq!(second.diff_ids[0], busybox_diff_id);
        assert!(second.size > reopened.resolve(&reference).unwrap().size / 2, "size estimated for the shared layer");
    }

    #[tokio::test]
    async fn errors_in_dockers_words() {
        let registry = registry_or_skip!();
        let (archive, _) = test_support::busybox_archive(&["test/busybox:1"]);
        registry.push_archive(&archive, "test/busybox:1");
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let opts = PullOptions::default();
        let host = registry.host();

        let (result, _) = pull_recorded(&store, &format!("{host}/test/busybox:nosuch"), &opts).await;
        let err = result.unwrap_err();
        assert!(matches!(err, PullError::ManifestUnknown { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("manifest for {host}/test/busybox:nosuch not found: manifest unknown: manifest unknown")
        );

        // distribution answers MANIFEST_UNKNOWN for a missing repository too
        // (Docker then says the same); Docker Hub answers 401, tested below.
        let (result, _) = pull_recorded(&store, &format!("{host}/no/such-repo:1"), &opts).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            format!("manifest for {host}/no/such-repo:1 not found: manifest unknown: manifest unknown")
        );

        let closed = format!("127.0.0.1:{}", free_port());
        let (result, _) = pull_recorded(&store, &format!("{closed}/test/busybox:1"), &opts).await;
        let err = result.unwrap_err();
        assert!(matches!(err, PullError::Connection { .. }), "{err:?}");
        assert!(err.to_string().contains(&closed), "{err}");

        let (result, _) = pull_recorded(&store, "Not/Valid", &opts).await;
        assert!(matches!(result.unwrap_err(), PullError::InvalidReference(_)));

        assert_eq!(store.lock().unwrap().images().count(), 0);
        assert!(tmp_entries(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn multi_arch_index_picks_this_platform() {
        let registry = registry_or_skip!();
        let this = reference::oci_architecture();
        let other = if this == "arm64" { "amd64" } else { "arm64" };
        let layer_this = test_support::tar(&[("arch", this)]);
        let layer_other = test_support::tar(&[("arch", other)]);
        let layer_s390x = test_support::tar(&[("arch", "s390x")]);
        let config_this = config_json(this, (this == "arm64").then_some("v8"), &[&layer_this]);
        let config_other = config_json(other, (other == "arm64").then_some("v8"), &[&layer_other]);
        let config_s390x = config_json("s390x", None, &[&layer_s390x]);
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let gz_other = gzip(&layer_other);
        let gz_this = gzip(&layer_this);
        let m_other = registry.push_image("test/multi", "other", &config_other, &[(&gz_other, gz)]).await;
        let m_s390x = registry.push_image("test/multi", "s390x", &config_s390x, &[(&layer_s390x, tar)]).await;
        let m_this = registry.push_image("test/multi", "this", &config_this, &[(&gz_this, gz)]).await;
        let entry = |m: &serde_json::Value, arch: &str| {
            let mut e = m.clone();
            e["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
            if arch == "arm64" {
                e["platform"]["variant"] = "v8".into();
            }
            e
        };
        let mut attestation = m_this.clone();
        attestation["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
        let entries = vec![entry(&m_other, other), entry(&m_s390x, "s390x"), attestation, entry(&m_this, this)];
        let oci_index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries,
        }))
        .unwrap();
        registry.push_manifest("test/multi", "oci", &oci_index, "application/vnd.oci.image.index.v1+json").await;
        let docker_list = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [entry(&m_other, other), entry(&m_this, this)],
        }))
        .unwrap();
        registry
            .push_manifest(
                "test/multi",
                "docker",
                &docker_list,
                "application/vnd.docker.distribution.manifest.list.v2+json",
            )
            .await;

        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let opts = PullOptions::default();
        let expected_id = test_support::digest(&config_this);
        for (tag, index) in [("oci", &oci_index), ("docker", &docker_list)] {
            let reference = format!("{}/test/multi:{tag}", registry.host());
            let (result, events) = pull_recorded(&store, &reference, &opts).await;
            assert_eq!(result.unwrap(), expected_id, "{tag}");
            assert_eq!(
                events[0],
                Progress::Resolved { reference: reference.clone(), digest: test_support::digest(index) },
                "the index digest"
            );
            let store = store.lock().unwrap();
            let record = store.resolve(&reference).unwrap();
            assert_eq!(record.diff_ids, vec![test_support::digest(&layer_this)]);
            let unpacked = store.layer_dir(&record.diff_ids[0]).unwrap().join("arch");
            assert_eq!(std::fs::read_to_string(unpacked).unwrap(), this);
        }
        assert_eq!(store.lock().unwrap().images().count(), 1);

        // An index without this platform.
        let foreign = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry(&m_s390x, "s390x")],
        }))
        .unwrap();
        registry.push_manifest("test/multi", "foreign", &foreign, "application/vnd.oci.image.index.v1+json").await;
        let (result, _) = pull_recorded(&store, &format!("{}/test/multi:foreign", registry.host()), &opts).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            format!("no matching manifest for linux/{this} in the manifest list entries")
        );
    }

    #[tokio::test]
    async fn a_corrupt_blob_leaves_nothing_visible() {
        let registry = registry_or_skip!();
        let good = gzip(&test_support::tar(&[("good", "1")]));
        let bad_layer = test_support::tar(&[("bad", "2")]);
        let bad = gzip(&bad_layer);
        let config =
            config_json(reference::oci_architecture(), None, &[&test_support::tar(&[("good", "1")]), &bad_layer]);
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        registry.push_image("test/broken", "1", &config, &[(&good, gz), (&bad, gz)]).await;
        // Same length, other bytes: the registry serves it, the digest check must not pass it.
        let data = registry.blob_data(&test_support::digest(&bad));
        let mut bytes = std::fs::read(&data).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&data, bytes).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let reference = format!("{}/test/broken:1", registry.host());
        let (result, events) = pull_recorded(&store, &reference, &PullOptions::default()).await;
        let err = result.unwrap_err();
        assert!(err.to_string().to_lowercase().contains("digest"), "{err}");
        assert_eq!(started(&events).len(), 2);
        let store = store.lock().unwrap();
        assert!(store.resolve(&reference).is_none());
        assert_eq!(store.images().count(), 0);
        assert!(tmp_entries(dir.path()).is_empty(), "{:?}", tmp_entries(dir.path()));
        assert_eq!(std::fs::read_dir(dir.path().join("layers/sha256")).unwrap().count(), 0, "no layer became visible");
        assert!(
            !dir.path().join("index.json").exists()
                || !std::fs::read_to_string(dir.path().join("index.json")).unwrap().contains("sha256")
        );
    }

    #[tokio::test]
    async fn docker_hub_mirrors_are_tried_in_order() {
        let registry = registry_or_skip!();
        let (archive, expected_id) = test_support::busybox_archive(&["test/busybox:1"]);
        registry.push_archive(&archive, "library/busybox:1");
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let opts = PullOptions {
            mirrors: vec![format!("http://127.0.0.1:{}", free_port()), format!("http://{}/", registry.host())],
            ..PullOptions::default()
        };
        let (result, _) = pull_recorded(&store, "busybox:1", &opts).await;
        assert_eq!(result.unwrap(), expected_id);
        assert_eq!(store.lock().unwrap().resolve("docker.io/library/busybox:1").unwrap().id, expected_id);
        assert_eq!(store.lock().unwrap().tags_of(&expected_id), vec!["docker.io/library/busybox:1"]);
    }

    #[tokio::test]
    async fn credentials_and_access_denied() {
        let registry = registry_or_skip!(true);
        assert_eq!(registry.creds, Some("tester:berth-secret"));
        let (archive, expected_id) = test_support::busybox_archive(&["test/busybox:1"]);
        registry.push_archive(&archive, "test/private:1");
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let host = registry.host();
        let reference = format!("{host}/test/private:1");
        let denied = format!(
            "pull access denied for {host}/test/private, repository does not exist or may require 'docker login'"
        );

        let (result, _) = pull_recorded(&store, &reference, &PullOptions::default()).await;
        let err = result.unwrap_err();
        assert!(matches!(err, PullError::AccessDenied { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&denied), "{err}");

        let with = |password: &str| PullOptions {
            auth: Some(Credentials { username: "tester".into(), password: password.into(), ..Credentials::default() }),
            ..PullOptions::default()
        };
        let (result, _) = pull_recorded(&store, &reference, &with("wrong")).await;
        assert!(result.unwrap_err().to_string().starts_with(&denied));
        assert_eq!(store.lock().unwrap().images().count(), 0);

        let (result, _) = pull_recorded(&store, &reference, &with(TEST_PASSWORD)).await;
        assert_eq!(result.unwrap(), expected_id);
        assert_eq!(store.lock().unwrap().resolve(&reference).unwrap().id, expected_id);
    }

    #[test]
    fn endpoints_and_insecure_registries() {
        let opts = PullOptions {
            mirrors: vec!["https://mirror.example/".into(), "http://10.0.0.1:5000".into()],
            insecure_registries: vec!["registry.lan:5000".into()],
            ..PullOptions::default()
        };
        let hosts: Vec<(String, bool, bool)> =
            endpoints("docker.io", &opts).into_iter().map(|e| (e.host, e.insecure, e.mirror)).collect();
        assert_eq!(
            hosts,
            vec![
                ("mirror.example".into(), false, true),
                ("10.0.0.1:5000".into(), true, true),
                ("registry-1.docker.io".into(), false, false),
            ]
        );
        assert_eq!(
            endpoints("ghcr.io", &opts),
            vec![Endpoint { host: "ghcr.io".into(), insecure: false, mirror: false }]
        );
        assert!(endpoints("registry.lan:5000", &opts)[0].insecure);
        assert!(!endpoints("registry.lan:5001", &opts)[0].insecure);
        for host in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1:5000", "localhost.example:5000"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn references_for_the_registry() {
        let t = Target::parse(&reference::normalize("busybox").unwrap()).unwrap();
        assert_eq!(
            (t.registry.as_str(), t.repository.as_str(), t.tag.as_deref()),
            ("docker.io", "library/busybox", Some("latest"))
        );
        assert_eq!((t.familiar(), t.familiar_repository().as_str()), ("busybox:latest", "busybox"));
        let t = Target::parse("localhost:5000/a/b:1").unwrap();
        assert_eq!((t.registry.as_str(), t.repository.as_str()), ("localhost:5000", "a/b"));
        assert_eq!(t.familiar_repository(), "localhost:5000/a/b");
        let digest = format!("sha256:{}", "a".repeat(64));
        let t = Target::parse(&reference::normalize(&format!("me/app@{digest}")).unwrap()).unwrap();
        assert_eq!((t.tag.as_deref(), t.digest.as_deref()), (None, Some(digest.as_str())));
        assert_eq!(t.familiar_repository(), "me/app");
        assert_eq!(t.oci_reference(DOCKER_HUB_REGISTRY).resolve_registry(), DOCKER_HUB_REGISTRY);
    }

    #[test]
    fn only_sha256_digests_name_files() {
        assert!(is_sha256_digest(&format!("sha256:{}", "0a".repeat(32))));
        for bad in [
            format!("sha256:{}", "0A".repeat(32)),
            format!("sha256:{}", "0".repeat(63)),
            format!("sha512:{}", "0".repeat(64)),
            format!("sha256:../../{}", "0".repeat(58)),
            String::new(),
        ] {
            assert!(!is_sha256_digest(&bad), "{bad}");
        }
    }

    #[test]
    fn platform_selection_prefers_the_exact_variant() {
        let entries: Vec<ImageIndexEntry> = serde_json::from_value(serde_json::json!([
            {"mediaType": "m", "digest": "sha256:1", "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"mediaType": "m", "digest": "sha256:2", "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "m", "digest": "sha256:3", "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "m", "digest": "sha256:4", "size": 1, "platform": {"os": "windows", "architecture": "amd64"}},
            {"mediaType": "m", "digest": "sha256:5", "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        ]))
        .unwrap();
        assert_eq!(select_platform(&entries, "arm64").unwrap().digest, "sha256:3");
        assert_eq!(select_platform(&entries, "amd64").unwrap().digest, "sha256:5");
        assert_eq!(select_platform(&entries[..2], "arm64").unwrap().digest, "sha256:2");
        assert!(select_platform(&entries, "s390x").is_none());
    }

    #[test]
    fn credentials_from_x_registry_auth() {
        let c: Credentials = serde_json::from_str(r#"{"username":"u","password":"p"}"#).unwrap();
        assert_eq!(registry_auth(Some(&c)).unwrap(), RegistryAuth::Basic("u".into(), "p".into()));
        let c: Credentials = serde_json::from_str(r#"{"auth":"dTpwOng="}"#).unwrap();
        assert_eq!(registry_auth(Some(&c)).unwrap(), RegistryAuth::Basic("u".into(), "p:x".into()));
        let c: Credentials = serde_json::from_str(r#"{"registrytoken":"t"}"#).unwrap();
        assert_eq!(registry_auth(Some(&c)).unwrap(), RegistryAuth::Bearer("t".into()));
        let c: Credentials = serde_json::from_str(r#"{"identitytoken":"t"}"#).unwrap();
        assert!(matches!(registry_auth(Some(&c)), Err(PullError::Unsupported(_))));
        assert_eq!(registry_auth(None).unwrap(), RegistryAuth::Anonymous);
        let secret = Credentials { username: "u".into(), password: "hunter2".into(), ..Credentials::default() };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn the_pull_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let opts = PullOptions::default();
        let future = pull(open_store(dir.path()), "busybox", &opts, |_| {});
        assert_send(&future);
    }
}
