//! Image references and platform names as Docker and OCI spell them:
//! `busybox` means `docker.io/library/busybox:latest`. Part of the contract:
//! the agent reports tags in the normalised form, the host shows them in the
//! familiar one.

/// The fully qualified form of a reference (`registry/path:tag` or
/// `registry/path@digest`), or an error for a malformed one.
pub fn normalize(reference: &str) -> Result<String, String> {
    let reference = reference.trim();
    if reference.is_empty()
        || reference.chars().any(|c| c.is_whitespace() || c.is_ascii_uppercase() && !reference.contains('@'))
    {
        return Err(format!("invalid reference format: {reference:?}"));
    }
    let (name, suffix) = match reference.split_once('@') {
        Some((name, digest)) => (name, format!("@{digest}")),
        None => {
            // A ':' after the last '/' separates the tag (a port has a '/' after it).
            let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[last_slash..].rfind(':') {
                Some(i) => (&reference[..last_slash + i], format!(":{}", &reference[last_slash + i + 1..])),
                None => (reference, ":latest".to_string()),
            }
        }
    };
    if name.is_empty() || suffix.len() < 2 {
        return Err(format!("invalid reference format: {reference:?}"));
    }
    let first = name.split('/').next().unwrap_or_default();
    let has_registry = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    Ok(format!("{full}{suffix}"))
}

/// The short form Docker shows (`busybox:latest`, `me/app:1`,
/// `localhost:5000/x:y`).
pub fn familiar(normalized: &str) -> &str {
    normalized
        .strip_prefix("docker.io/library/")
        .or_else(|| normalized.strip_prefix("docker.io/"))
        .unwrap_or(normalized)
}

/// The OCI name of this machine's architecture (`amd64`, `arm64`, ...).
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(normalize("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36").unwrap(), "docker.io/library/busybox:1.36");
        assert_eq!(normalize("me/app").unwrap(), "docker.io/me/app:latest");
        assert_eq!(normalize("localhost:5000/x").unwrap(), "localhost:5000/x:latest");
        assert_eq!(normalize("localhost:5000/x:y").unwrap(), "localhost:5000/x:y");
        assert_eq!(normalize("ghcr.io/o/r:t").unwrap(), "ghcr.io/o/r:t");
        assert_eq!(normalize("docker.io/library/alpine:3.10").unwrap(), "docker.io/library/alpine:3.10");
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(normalize(&format!("alpine@{digest}")).unwrap(), format!("docker.io/library/alpine@{digest}"));
        assert!(normalize("").is_err());
        assert!(normalize("Upper").is_err());
        assert!(normalize("a b").is_err());
        assert!(normalize("x:").is_err());
    }

    #[test]
    fn familiar_names() {
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(familiar("localhost:5000/x:y"), "localhost:5000/x:y");
    }
}
