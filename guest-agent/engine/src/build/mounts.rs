//! `RUN --mount=...` as BuildKit's Dockerfile frontend reads it
//! (dockerfile/instructions/runmount.go): what the legacy API can carry
//! without a BuildKit session. `cache` keeps a directory across builds,
//! `tmpfs` gives an empty one, `bind` shows part of the context or of an
//! earlier stage or image, read-only unless `rw` (writes then go to a
//! copy and are dropped). `secret` and `ssh` need the session and are
//! refused where the instruction is parsed.

/// How concurrent builds share one cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    /// One RUN at a time. `private` is served this way too: BuildKit
    /// hands a second user a fresh directory, here it waits its turn,
    /// which keeps the exclusivity both promise.
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    Bind { from: Option<String>, source: String, writable: bool },
    Cache { id: String, sharing: Sharing, read_only: bool, mode: u32, uid: u32, gid: u32 },
    Tmpfs { size: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    /// Absolute, as the container sees it.
    pub target: String,
    pub kind: MountKind,
}

fn boolean(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(format!("invalid value for {key}: {other}")),
    }
}

fn number(key: &str, value: Option<&str>, radix: u32) -> Result<u32, String> {
    let value = value.ok_or_else(|| format!("{key} requires a value"))?;
    u32::from_str_radix(value, radix).map_err(|_| format!("invalid value for {key}: {value}"))
}

/// Docker's RAMInBytes: a number with an optional b/k/m/g suffix (1024s).
fn size(value: &str) -> Result<u64, String> {
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').filter(|s| !s.is_empty()).unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1u64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower, 1),
    };
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(unit)).ok_or_else(|| format!("invalid size: {value}"))
}

/// One `--mount` value, e.g. `type=cache,target=/root/.cache,sharing=locked`.
pub fn parse(value: &str) -> Result<RunMount, String> {
    let mut fields = Vec::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (part.trim().to_ascii_lowercase(), None),
        };
        fields.push((key, val));
    }
    let kind = fields.iter().find(|(k, _)| k == "type").and_then(|(_, v)| *v).unwrap_or("bind").to_ascii_lowercase();
    let (mut target, mut source, mut from, mut id) = (None, None, None, None);
    let (mut writable, mut read_only, mut sharing) = (false, false, Sharing::Shared);
    let (mut mode, mut uid, mut gid, mut tmpfs_size) = (0o755, 0, 0, None);
    for (key, val) in &fields {
        let val = *val;
        let text = || val.map(str::to_string).ok_or_else(|| format!("{key} requires a value"));
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => target = Some(text()?),
            "source" | "src" => source = Some(text()?),
            "from" => from = Some(text()?),
            "id" => id = Some(text()?),
            "rw" | "readwrite" => writable = boolean(key, val)?,
            "ro" | "readonly" => read_only = boolean(key, val)?,
            "sharing" => {
                sharing = match text()?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" | "locked" => Sharing::Locked,
                    other => return Err(format!("unsupported sharing value \"{other}\"")),
                }
            }
            "mode" => mode = number(key, val, 8)?,
            "uid" => uid = number(key, val, 10)?,
            "gid" => gid = number(key, val, 10)?,
            "size" if kind == "tmpfs" => tmpfs_size = Some(size(&text()?)?),
            _ => return Err(format!("unexpected key '{key}' in '{value}'")),
        }
    }
    let target = target.ok_or_else(|| "mount destination (target) is required".to_string())?;
    let target = format!("/{}", super::ignore::clean(&target));
    if target == "/" {
        return Err("a mount cannot cover the container's root".into());
    }
    let kind = match kind.as_str() {
        "bind" => MountKind::Bind { from, source: source.unwrap_or_default(), writable: writable && !read_only },
        "cache" => {
            if from.is_some() || source.is_some() {
                return Err("cache mounts from a stage or image are not supported by Berth".into());
            }
            MountKind::Cache { id: id.unwrap_or_else(|| target.clone()), sharing, read_only, mode, uid, gid }
        }
        "tmpfs" => MountKind::Tmpfs { size: tmpfs_size },
        other => return Err(format!("unsupported mount type \"{other}\"")),
    };
    Ok(RunMount { target, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_cache_and_tmpfs_mounts_parse_as_buildkit_reads_them() {
        assert_eq!(
            parse("target=/src").unwrap(),
            RunMount {
                target: "/src".into(),
                kind: MountKind::Bind { from: None, source: String::new(), writable: false }
            }
        );
        assert_eq!(
            parse("type=bind,from=builder,source=/out,target=/in,rw").unwrap().kind,
            MountKind::Bind { from: Some("builder".into()), source: "/out".into(), writable: true }
        );
        assert_eq!(
            parse("type=cache,target=/root/.cache/,sharing=locked,mode=0700,uid=1000").unwrap(),
            RunMount {
                target: "/root/.cache".into(),
                kind: MountKind::Cache {
                    id: "/root/.cache".into(),
                    sharing: Sharing::Locked,
                    read_only: false,
                    mode: 0o700,
                    uid: 1000,
                    gid: 0
                }
            }
        );
        assert_eq!(parse("type=tmpfs,dst=/t,size=64m").unwrap().kind, MountKind::Tmpfs { size: Some(64 << 20) });
    }

    #[test]
    fn bad_mounts_are_refused_with_buildkit_wording() {
        assert_eq!(parse("type=bind").unwrap_err(), "mount destination (target) is required");
        assert_eq!(
            parse("type=cache,target=/x,color=red").unwrap_err(),
            "unexpected key 'color' in 'type=cache,target=/x,color=red'"
        );
        assert_eq!(parse("type=volume,target=/x").unwrap_err(), "unsupported mount type \"volume\"");
        assert!(parse("type=cache,target=/x,sharing=sometimes").is_err());
        assert!(parse("type=tmpfs,target=/x,size=lots").is_err());
        assert!(parse("target=/").is_err());
        assert!(parse("target=/../..").is_err());
    }
}
