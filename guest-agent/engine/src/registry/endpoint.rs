//! Where a pull goes and how it talks there: the reference split for the
//! registry, mirrors and insecure registries, the client with its TLS and
//! credentials, the registry's errors in Docker's words, and the platform
//! picked from an index.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::ImageIndexEntry;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{Credentials, PullError, PullOptions, DOCKER_HUB_REGISTRY};
use crate::reference;
use crate::store::StoreError;

/// A normalised reference split for the registry.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// Normalised (`docker.io/library/busybox:latest`).
    pub(super) normalized: String,
    pub(super) registry: String,
    pub(super) repository: String,
    pub(super) tag: Option<String>,
    pub(super) digest: Option<String>,
}

impl Target {
    pub(super) fn parse(normalized: &str) -> Result<Target, PullError> {
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
    pub(super) fn familiar(&self) -> &str {
        reference::familiar(&self.normalized)
    }

    /// `busybox`, `localhost:5000/x`: the repository as Docker names it.
    pub(super) fn familiar_repository(&self) -> String {
        let familiar = self.familiar();
        let end = match (&self.tag, &self.digest) {
            (_, Some(digest)) => familiar.len() - digest.len() - 1,
            (Some(tag), None) => familiar.len() - tag.len() - 1,
            (None, None) => familiar.len(),
        };
        familiar[..end].to_string()
    }

    pub(super) fn oci_reference(&self, host: &str) -> Reference {
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
pub(super) struct Endpoint {
    /// `host[:port]` as the URL has it.
    pub(super) host: String,
    /// Plain HTTP.
    pub(super) insecure: bool,
    pub(super) mirror: bool,
}

/// Mirrors first for Docker Hub, then the origin.
pub(super) fn endpoints(registry: &str, opts: &PullOptions) -> Vec<Endpoint> {
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
pub(super) fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host })
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn registry_auth(credentials: Option<&Credentials>) -> Result<RegistryAuth, PullError> {
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

/// rustls' ring provider, once per process: the TLS this engine does
/// (registries, ADD of a URL) needs one installed.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Fails only when some provider is already installed, which is fine.
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub(super) fn client_for(endpoint: &Endpoint) -> Result<Client, PullError> {
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
pub(super) enum Stage {
    Manifest,
    Blob,
}

pub(super) fn pull_error(err: OciDistributionError, target: &Target, endpoint: &Endpoint, stage: Stage) -> PullError {
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
pub(super) fn code_text(code: &OciErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s.to_lowercase().replace('_', " "),
        _ => format!("{code:?}").to_lowercase(),
    }
}

pub(super) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `sha256:<64 lower-case hex>`.
pub(super) fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Docker's short layer ID.
pub(super) fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// The platform entry of an index for linux/this architecture: an exact
/// variant match (v8 on arm64) first, then an entry without a variant.
pub(super) fn select_platform<'a>(entries: &'a [ImageIndexEntry], arch: &str) -> Option<&'a ImageIndexEntry> {
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
