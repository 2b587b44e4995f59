//! `docker builder prune` (POST /build/prune): the build cache is the
//! cache index, the layers only its entries name, and the `RUN
//! --mount=type=cache` directories. Entries go first, then those layers,
//! unless an image or a container still stands on them; the cache mounts
//! go with a prune of everything (no `until`).

use std::collections::HashSet;

use berth_engine::build::cache;
use serde_json::{json, Value};

use super::Builder;
use crate::error::AgentError;

/// Builds hold this shared for their whole run and a prune holds it
/// alone: a build's newest layers are named by nothing but its cache
/// entries until its image is stored, so a prune must not run beside one.
/// One per agent, as the store and the cache index are.
pub(super) static BUILDS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Removes the entries written before `until` (Unix seconds; 0: all) and
/// the layers they alone named. Returns Docker's BuildCachePruneReport.
pub async fn prune(builder: &Builder, until: i64) -> Result<Value, AgentError> {
    let _alone = BUILDS.write().await;
    let tmp = builder.images.blocking(|store| Ok(store.tmp_dir())).await?;
    let dir = tmp.parent().map(|p| p.join("build-cache")).unwrap_or_default();
    let index = cache::CacheIndex::new(&dir);
    let (deleted, candidates) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let (gone, kept): (Vec<_>, Vec<_>) =
            index.entries().into_iter().partition(|(_, written, _)| until == 0 || *written < until);
        let still_named: HashSet<String> =
            kept.iter().flat_map(|(_, _, config)| cache::diff_ids(config).map(String::from)).collect();
        let mut candidates: Vec<String> = Vec::new();
        let mut deleted = Vec::new();
        for (key, _, config) in &gone {
            index.remove(key)?;
            deleted.push(key.clone());
            candidates.extend(cache::diff_ids(config).filter(|d| !still_named.contains(*d)).map(String::from));
        }
        candidates.sort();
        candidates.dedup();
        Ok((deleted, candidates))
    })
    .await
    .map_err(|e| AgentError::internal(e.to_string()))?
    .map_err(|e| AgentError::internal(format!("pruning the build cache: {e}")))?;
    let in_use = builder.containers.layers_in_use();
    let mut reclaimed = builder
        .images
        .blocking(move |store| store.remove_unused_layers(&candidates, |dir| in_use.contains(dir)))
        .await?;
    if until == 0 {
        let mounts = super::steps::cache_mounts_dir(&tmp);
        reclaimed += tokio::task::spawn_blocking(move || remove_tree(&mounts))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?
            .map_err(|e| AgentError::internal(format!("removing the cache mounts: {e}")))?;
    }
    tracing::info!(entries = deleted.len(), reclaimed, "build cache pruned");
    Ok(json!({ "CachesDeleted": deleted, "SpaceReclaimed": reclaimed }))
}

/// Removes a directory tree (never following links), returning the bytes
/// of the files it held; a missing one is empty.
fn remove_tree(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let meta = entry.path().symlink_metadata()?;
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(bytes),
    }
}
