//! Image references and platform names as Docker and OCI spell them:
//! `busybox` means `docker.io/library/busybox:latest`. Part of the contract:
//! the agent reports tags in the normalised form, the host shows them in the
//! familiar one.

/// dockerd's answer to a reference outside the grammar.
const INVALID: &str = "invalid reference format";

/// The fully qualified form of a reference (`registry/path:tag` or
/// `registry/path@digest`), or dockerd's error for one outside the
/// distribution reference grammar (distribution/reference's regexp.go):
/// `../../etc` or `a//b` never name an image.
pub fn normalize(reference: &str) -> Result<String, String> {
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) if valid_digest(digest) => (rest, Some(digest)),
        Some(_) => return Err(INVALID.to_string()),
        None => (reference, None),
    };
    // A ':' after the last '/' separates the tag (a port has a '/' after it).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !valid_tag(t)) {
        return Err(INVALID.to_string());
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), path)
        }
        _ => (None, name),
    };
    if domain.is_some_and(|d| !valid_domain(d)) {
        return Err(INVALID.to_string());
    }
    if !path.split('/').all(valid_path_component) {
        let lowered = path.to_ascii_lowercase();
        return Err(if lowered != path && lowered.split('/').all(valid_path_component) {
            format!("{INVALID}: repository name must be lowercase")
        } else {
            INVALID.to_string()
        });
    }
    if name.len() > 255 {
        return Err(format!("{INVALID}: repository name must not be more than 255 characters"));
    }
    let full = match domain {
        Some(_) => name.to_string(),
        None if path.contains('/') => format!("docker.io/{path}"),
        None => format!("docker.io/library/{path}"),
    };
    Ok(match (digest, tag) {
        (Some(digest), _) => format!("{full}@{digest}"),
        (None, Some(tag)) => format!("{full}:{tag}"),
        (None, None) => format!("{full}:latest"),
    })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `domain-component(.domain-component)*(:port)?`, a component being
/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    host.split('.').all(component) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm:hex`, algorithm `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*`, hex at least 32 digits.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else { return false };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
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
        assert_eq!(normalize("a_b-c__d---e/f.g").unwrap(), "docker.io/a_b-c__d---e/f.g:latest");
        assert_eq!(normalize("Registry.Example.com:5000/x:V1").unwrap(), "Registry.Example.com:5000/x:V1");
    }

    /// dockerd 20.10's answers to `docker tag`, `commit`, `create` and `load`.
    #[test]
    fn refuses_what_the_distribution_grammar_refuses() {
        for bad in [
            "../../etc",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a._b",
            "-a",
            "a-",
            ".",
            "a:b:c",
            "a@sha256:abc",
            "x:-tag",
            "localhost:x/a",
            "a b",
        ] {
            assert_eq!(normalize(bad), Err("invalid reference format".to_string()), "{bad}");
        }
        assert_eq!(normalize("Upper"), Err("invalid reference format: repository name must be lowercase".to_string()));
        assert!(normalize(&"a".repeat(256)).unwrap_err().contains("255 characters"));
        assert!(normalize(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn familiar_names() {
        assert_eq!(familiar("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(familiar("docker.io/me/app:1"), "me/app:1");
        assert_eq!(familiar("localhost:5000/x:y"), "localhost:5000/x:y");
    }
}
