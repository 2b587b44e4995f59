//! A container's mounts: `-v` binds and volumes as Docker parses them,
//! `--volumes-from`, and the Mounts list inspect shows.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::config::{strings, HostConfig};
use super::{invalid, Container, CreateError, Resolved, VolumeMount};
use crate::spec::Bind;

pub(super) enum BindSpec {
    Host(Bind),
    Volume(VolumeMount),
}

/// `-v SRC:DST[:MODE]`, `-v NAME:DST[:MODE]` and `-v DST` as Docker parses
/// them on Linux: an absolute source is a bind mount, anything else names a
/// volume, and a lone path is an anonymous volume.
pub(super) fn parse_bind(spec: &str) -> Result<BindSpec, CreateError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, mode] => (*src, *dst, *mode),
        _ => return Err(invalid(format!("invalid volume specification: '{spec}'"))),
    };
    let (mut readonly, mut nocopy) = (false, false);
    for flag in mode.split(',').filter(|f| !f.is_empty()) {
        match flag {
            "ro" => readonly = true,
            "nocopy" => nocopy = true,
            "rw" | "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "shared" | "rshared" | "consistent"
            | "cached" | "delegated" => {}
            other => return Err(invalid(format!("invalid mode: {other}"))),
        }
    }
    if !target.starts_with('/') {
        return Err(invalid(format!("invalid volume specification: '{spec}': invalid mount config for type \"bind\": invalid mount path: '{target}' mount path must be absolute")));
    }
    let kind = if source.starts_with('/') { "bind" } else { "volume" };
    if Path::new(target) == Path::new("/") {
        return Err(invalid(format!("invalid volume specification: '{spec}': {}", root_destination(kind))));
    }
    if source.starts_with('/') {
        return Ok(BindSpec::Host(Bind { source: PathBuf::from(source), target: PathBuf::from(target), readonly }));
    }
    Ok(BindSpec::Volume(VolumeMount {
        name: source.to_string(),
        target: target.to_string(),
        readonly,
        nocopy,
        anonymous: source.is_empty(),
    }))
}

/// dockerd's refusal of a mount over the container's root.
pub(super) fn root_destination(kind: &str) -> String {
    format!("invalid mount config for type \"{kind}\": invalid specification: destination can't be '/'")
}

/// One `--volumes-from` entry: another container, and whether its mounts
/// are forced read-only (`ctr:ro`); `ctr` and `ctr:rw` keep each mount's mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumesFrom {
    pub container: String,
    pub readonly: bool,
}

/// HostConfig.VolumesFrom, checked as dockerd's `parseVolumesFrom` does.
pub fn parse_volumes_from(host_config: &HostConfig) -> Result<Vec<VolumesFrom>, CreateError> {
    let mut parsed = Vec::new();
    for spec in strings(&host_config.volumes_from) {
        let (container, mode) = spec.split_once(':').unwrap_or((&spec, ""));
        if container.is_empty() {
            return Err(invalid("volumes-from specification cannot be an empty string"));
        }
        let readonly = match mode {
            "" | "rw" => false,
            "ro" => true,
            other => return Err(invalid(format!("invalid mode: {other}"))),
        };
        parsed.push(VolumesFrom { container: container.to_string(), readonly });
    }
    Ok(parsed)
}

impl Resolved {
    fn mounted_at(&self, target: &str) -> bool {
        let own = self.volumes.iter().chain(&self.inherited_volumes).any(|v| v.target == target);
        own || self.options.binds.iter().chain(&self.inherited_binds).any(|b| b.target == Path::new(target))
    }

    /// Adds the mounts of a `--volumes-from` container (its volumes, named
    /// and anonymous, and its binds) at the same paths. Docker's order: the
    /// container's own mounts win, then earlier `--volumes-from` entries,
    /// and the image's VOLUMEs only fill what is left.
    pub fn inherit(&mut self, source: &Container, readonly: bool) {
        for volume in &source.volumes {
            if !self.mounted_at(&volume.target) {
                // Already filled (or deliberately not) for its first container.
                let inherited = VolumeMount { readonly: volume.readonly || readonly, nocopy: true, ..volume.clone() };
                self.inherited_volumes.push(inherited);
            }
        }
        for bind in source.host_binds() {
            if !self.mounted_at(&bind.target.to_string_lossy()) {
                self.inherited_binds.push(Bind { readonly: bind.readonly || readonly, ..bind });
            }
        }
        let inherited = (&self.inherited_volumes, &self.inherited_binds);
        self.image_volumes.retain(|v| {
            !inherited.0.iter().any(|i| i.target == v.target)
                && !inherited.1.iter().any(|b| b.target == Path::new(&v.target))
        });
    }
}

impl Container {
    /// Every host path bound into the container: its `-v`/`--mount` binds
    /// and those it has through `--volumes-from`.
    pub fn host_binds(&self) -> Vec<Bind> {
        let mut binds: Vec<Bind> = strings(&self.host_config.binds)
            .iter()
            .filter_map(|spec| match parse_bind(spec) {
                Ok(BindSpec::Host(b)) => Some(b),
                _ => None,
            })
            .collect();
        for m in self.host_config.mounts().filter(|m| m.kind.as_str() == "bind") {
            binds.push(Bind {
                source: PathBuf::from(m.source.as_str()),
                target: PathBuf::from(m.target.as_str()),
                readonly: m.read_only.or_zero(),
            });
        }
        binds.extend(self.binds_from.iter().cloned());
        binds
    }

    pub(super) fn mounts_json(&self, volumes_root: &Path) -> Value {
        let mut mounts = Vec::new();
        for volume in &self.volumes {
            mounts.push(json!({
                "Type": "volume", "Name": volume.name, "Source": volumes_root.join(&volume.name).join("_data"),
                "Destination": volume.target, "Driver": "local", "Mode": if volume.readonly { "ro" } else { "z" },
                "RW": !volume.readonly, "Propagation": "",
            }));
        }
        for b in self.host_binds() {
            mounts.push(json!({
                "Type": "bind", "Source": b.source, "Destination": b.target, "Mode": if b.readonly { "ro" } else { "" },
                "RW": !b.readonly, "Propagation": "rprivate",
            }));
        }
        Value::Array(mounts)
    }
}
