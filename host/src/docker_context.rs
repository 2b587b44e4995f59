//! The `berth` docker context: created (or updated) and made current on
//! `berth start`, as Colima and OrbStack do, so a plain `docker run` uses
//! Berth. Written as the docker CLI writes it ($DOCKER_CONFIG or ~/.docker:
//! `contexts/meta/<sha256 of the name>/meta.json` and `currentContext` in
//! config.json), so it works without running the CLI. Other keys of
//! config.json (credentials, plugins) are kept as they are.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub const CONTEXT_NAME: &str = "berth";

/// The docker CLI's configuration directory.
pub fn docker_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    directories::BaseDirs::new().map(|d| d.home_dir().join(".docker"))
}

/// Points the `berth` context at `docker_host` and makes it current.
pub fn install(config_dir: &Path, docker_host: &str) -> Result<()> {
    let hash: String = Sha256::digest(CONTEXT_NAME.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let meta_dir = config_dir.join("contexts/meta").join(hash);
    std::fs::create_dir_all(&meta_dir).with_context(|| format!("creating {}", meta_dir.display()))?;
    let meta = serde_json::json!({
        "Name": CONTEXT_NAME,
        "Metadata": { "Description": "Berth" },
        "Endpoints": { "docker": { "Host": docker_host, "SkipTLSVerify": false } },
    });
    write_atomically(&meta_dir.join("meta.json"), &serde_json::to_vec(&meta)?)?;

    let config_path = config_dir.join("config.json");
    let mut config: serde_json::Value = match std::fs::read(&config_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON; not changing the docker context", config_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
    };
    if config["currentContext"] != CONTEXT_NAME {
        config["currentContext"] = CONTEXT_NAME.into();
        write_atomically(&config_path, &serde_json::to_vec_pretty(&config)?)?;
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_written_as_the_cli_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"auths": {"r.io": {}}, "currentContext": "default"}"#)
            .unwrap();
        install(dir.path(), "unix:///h/run/docker.sock").unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(config["currentContext"], "berth");
        assert!(config["auths"]["r.io"].is_object(), "other settings are kept");
        // The directory is named by the name's sha256, as the docker CLI looks it up.
        let hash: String = Sha256::digest(b"berth").iter().map(|b| format!("{b:02x}")).collect();
        let found = dir.path().join("contexts/meta").join(hash);
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(found.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["Endpoints"]["docker"]["Host"], "unix:///h/run/docker.sock");
        std::fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert!(install(dir.path(), "unix:///x").is_err(), "a broken config.json is left alone");
    }
}
