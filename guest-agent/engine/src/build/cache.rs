//! The build cache. A step's key is its parent image's ID and the classic
//! builder's probe config (the runConfig with `Cmd` replaced by the
//! step's `#(nop)` comment or its RUN command with the build args), plus
//! the content hashes of COPY/ADD sources, never mtimes. The index maps a
//! key to the config of the image the step made, one file per key under
//! the image store's directory, so it survives restarts of the VM; a hit
//! whose layers were removed since is a miss (the agent checks).

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The image ID of a config: Docker's `sha256:` of its bytes.
pub fn image_id(config: &Value) -> String {
    format!("sha256:{}", sha256_hex(&serde_json::to_vec(config).unwrap_or_default()))
}

/// The key of a step. `probe` is the runConfig as the step sees it
/// (serde_json sorts object keys, so equal configs serialise equally;
/// Env keeps its order, which the classic builder compares too).
pub fn key(parent_id: &str, probe: &Value, sources: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(probe).unwrap_or_default());
    hasher.update(b"\n");
    hasher.update(sources.as_bytes());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub struct CacheIndex {
    dir: PathBuf,
}

impl CacheIndex {
    pub fn new(dir: &Path) -> CacheIndex {
        CacheIndex { dir: dir.to_path_buf() }
    }

    /// The config of the image a step with `key` made, if one did.
    pub fn get(&self, key: &str) -> Option<Value> {
        let bytes = std::fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records what a step made (written beside and renamed: a reader never
    /// sees half an entry).
    pub fn put(&self, key: &str, config: &Value) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{key}.{}", fastrand::u64(..)));
        std::fs::write(&tmp, serde_json::to_vec(config).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, self.dir.join(format!("{key}.json")))
    }

    /// Every entry: its key, when it was written (Unix seconds) and the
    /// config it names. An unreadable entry is listed with a null config
    /// (pruning removes it; a lookup already treats it as a miss).
    pub fn entries(&self) -> Vec<(String, i64, Value)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        dir.flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let key = name.strip_suffix(".json")?.to_string();
                let written = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                let config = std::fs::read(entry.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null);
                Some((key, written, config))
            })
            .collect()
    }

    pub fn remove(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{key}.json"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The diff IDs a cached step's config names.
pub fn diff_ids(config: &Value) -> impl Iterator<Item = &str> {
    config["rootfs"]["diff_ids"].as_array().into_iter().flatten().filter_map(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_change_with_parent_config_and_sources() {
        let probe = json!({ "Cmd": ["/bin/sh", "-c", "#(nop) ", "ENV A=1"], "Env": ["PATH=/bin"] });
        let base = key("sha256:p", &probe, "");
        assert_eq!(base, key("sha256:p", &probe.clone(), ""));
        assert_ne!(base, key("sha256:q", &probe, ""));
        assert_ne!(base, key("sha256:p", &json!({ "Cmd": ["x"], "Env": ["PATH=/bin"] }), ""));
        assert_ne!(base, key("sha256:p", &probe, "file:abc"));
        // Labels are a map: their order in the source does not matter.
        let a: Value = serde_json::from_str(r#"{"Labels":{"a":"1","b":"2"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"Labels":{"b":"2","a":"1"}}"#).unwrap();
        assert_eq!(key("p", &a, ""), key("p", &b, ""));
    }

    #[test]
    fn entries_are_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let index = CacheIndex::new(dir.path());
        index.put("k1", &json!({ "rootfs": { "diff_ids": ["sha256:a", "sha256:b"] } })).unwrap();
        std::fs::write(dir.path().join("k2.json"), b"not json").unwrap();
        let mut entries = index.entries();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(entries.len(), 2);
        assert_eq!(diff_ids(&entries[0].2).collect::<Vec<_>>(), ["sha256:a", "sha256:b"]);
        assert!(entries[1].2.is_null() && entries[1].1 > 0);
        index.remove("k1").unwrap();
        index.remove("k1").unwrap();
        assert_eq!(index.get("k1"), None);
    }

    #[test]
    fn the_index_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({ "config": { "Env": ["A=1"] } });
        CacheIndex::new(dir.path()).put("k1", &config).unwrap();
        assert_eq!(CacheIndex::new(dir.path()).get("k1"), Some(config));
        assert_eq!(CacheIndex::new(dir.path()).get("k2"), None);
    }
}
