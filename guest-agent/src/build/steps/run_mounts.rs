//! `RUN --mount` (engine `build/mounts.rs`) made into the RUN container's
//! mounts: a tmpfs, a cache directory on the data disk that outlives the
//! build (`docker builder prune` empties it), or a copy of part of the
//! context. What a mount contributes to the step's cache key is its spec
//! and, for the context, the content hash of what it shows; a cache
//! mount's contents never count, as in BuildKit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_engine::build::mounts::{MountKind, RunMount, Sharing};
use tokio::sync::OwnedMutexGuard;

use super::*;

/// One RUN at a time per `sharing=locked` cache (by id), in this agent.
static LOCKED_CACHES: Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);

/// What a RUN's mounts need while it runs: the mounts for its HostConfig,
/// and the locks of its locked caches (released when dropped).
pub(super) struct PreparedMounts {
    pub mounts: Vec<Value>,
    /// HostConfig.Tmpfs: target to mount options.
    pub tmpfs: Map<String, Value>,
    _locks: Vec<OwnedMutexGuard<()>>,
}

/// Where the cache mounts live: beside the build cache's index.
pub(in crate::build) fn cache_mounts_dir(store_tmp: &std::path::Path) -> std::path::PathBuf {
    store_tmp.parent().unwrap_or(store_tmp).join("build-cache-mounts")
}

impl Run<'_> {
    /// The part of the step's cache key its mounts make.
    pub(super) fn mount_key(&self, mounts: &[RunMount], network: Option<&str>) -> String {
        let mut parts: Vec<String> = network.map(|n| format!("network {n}")).into_iter().collect();
        for mount in mounts {
            parts.push(match &mount.kind {
                MountKind::Tmpfs { size } => format!("tmpfs {} {size:?}", mount.target),
                MountKind::Cache { id, read_only, mode, uid, gid, .. } => {
                    format!("cache {} {id} {read_only} {mode:o} {uid} {gid}", mount.target)
                }
                MountKind::Bind { from, source, writable } => {
                    let source = ignore::clean(source);
                    let hash = if from.is_none() { self.context.source_hash(&source) } else { String::new() };
                    format!("bind {} {from:?} {source} {writable} {hash}", mount.target)
                }
            });
        }
        parts.join("\n")
    }

    pub(super) async fn prepare_mounts(&self, mounts: &[RunMount]) -> Result<PreparedMounts, BuildError> {
        let mut prepared = PreparedMounts { mounts: Vec::new(), tmpfs: Map::new(), _locks: Vec::new() };
        for (n, mount) in mounts.iter().enumerate() {
            let target = &mount.target;
            match &mount.kind {
                MountKind::Tmpfs { size } => {
                    let options = size.map(|s| format!("size={s}")).unwrap_or_default();
                    prepared.tmpfs.insert(target.clone(), options.into());
                }
                MountKind::Cache { id, sharing, read_only, mode, uid, gid } => {
                    let tmp = self.builder.images.blocking(|store| Ok(store.tmp_dir())).await?;
                    let dir = cache_mounts_dir(&tmp).join(cache::sha256_hex(id.as_bytes()));
                    create_cache_dir(&dir, *mode, *uid, *gid)
                        .map_err(|e| BuildError::new(format!("creating the cache mount for {target}: {e}")))?;
                    if *sharing == Sharing::Locked {
                        let lock = {
                            let mut locks = LOCKED_CACHES.lock().unwrap();
                            locks.get_or_insert_with(HashMap::new).entry(id.clone()).or_default().clone()
                        };
                        prepared._locks.push(lock.lock_owned().await);
                    }
                    prepared.mounts.push(json!({ "Type": "bind", "Source": dir, "Target": target, "ReadOnly": read_only }));
                }
                MountKind::Bind { from: Some(from), .. } => {
                    return Err(BuildError::new(format!(
                        "RUN --mount=type=bind,from={from} is not supported by Berth yet: COPY --from={from} what the step needs"
                    )))
                }
                MountKind::Bind { from: None, source, writable } => {
                    let dest = self.work.join(format!("mount-{}-{n}", &crate::containers::random_hex()[..12]));
                    let at = self
                        .context
                        .materialise(source, &dest, !writable)
                        .map_err(|e| BuildError::new(format!("failed to compute cache key: {e}")))?;
                    prepared.mounts.push(json!({ "Type": "bind", "Source": at, "Target": target, "ReadOnly": !writable }));
                }
            }
        }
        Ok(prepared)
    }
}

/// A cache mount's directory, made with its mode and owner the first time.
fn create_cache_dir(dir: &std::path::Path, mode: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().expect("under the cache mounts directory");
    std::fs::create_dir_all(parent)?;
    let fresh = parent.join(format!(".new-{}", fastrand_suffix()));
    std::fs::create_dir(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode & 0o7777))?;
    std::os::unix::fs::chown(&fresh, Some(uid), Some(gid))?;
    // Renamed into place: two builds making it at once both end with one.
    if std::fs::rename(&fresh, dir).is_err() {
        let _ = std::fs::remove_dir(&fresh);
    }
    Ok(())
}

fn fastrand_suffix() -> String {
    crate::containers::random_hex()[..12].to_string()
}
