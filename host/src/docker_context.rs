//! The docker context of a Berth home, written as the docker CLI writes it
//! ($DOCKER_CONFIG or ~/.docker: `contexts/meta/<sha256 of the name>/meta.json`
//! and `currentContext` in config.json), so it works without running the
//! CLI. Other keys of config.json (credentials, plugins) are kept as they are.
//!
//! One context per BERTH_HOME, as Colima has one per profile (`colima-<profile>`):
//! the default home's is `berth` and `berth start` makes it current, as
//! Colima, OrbStack and Docker Desktop do for their machine, so a plain
//! `docker run` uses Berth. Any other home (a test or CI home, a second VM)
//! gets `berth-<8 hex digits of the home path's sha256>` and leaves the
//! current context alone: unlike a Colima profile, which a user starts on
//! purpose to work in it, a second home is mostly driven by scripts with
//! `--context` or DOCKER_HOST, and must not repoint the everyday `docker` to
//! a VM that is gone when the script ends.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const DEFAULT_CONTEXT: &str = "berth";

/// The docker context of one Berth home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeContext {
    pub name: String,
    /// Whether `berth start` makes it the current context.
    pub make_current: bool,
}

impl HomeContext {
    pub fn for_home(home: &Path, is_default_home: bool) -> HomeContext {
        if is_default_home {
            return HomeContext { name: DEFAULT_CONTEXT.into(), make_current: true };
        }
        // The suffix the home's API pipe has on Windows (api_address.rs).
        let suffix = crate::platform::api_address::short_digest(home);
        HomeContext { name: format!("{DEFAULT_CONTEXT}-{suffix}"), make_current: false }
    }
}

impl HomeContext {
    /// A profile of the everyday home is `berth-NAME` and made current when
    /// started, as Colima's `colima-NAME`: a user starts a profile to work in
    /// it. A profile under another BERTH_HOME is named and left as that home is.
    pub fn for_profile(home: &Path, profile: Option<&str>, root_is_default: bool) -> HomeContext {
        match profile {
            None => HomeContext::for_home(home, root_is_default),
            Some(name) if root_is_default => {
                HomeContext { name: format!("{DEFAULT_CONTEXT}-{name}"), make_current: true }
            }
            Some(_) => HomeContext::for_home(home, false),
        }
    }
}

/// The docker CLI's context selection as it would resolve it now: DOCKER_HOST
/// wins over any context, then DOCKER_CONTEXT, then config.json's currentContext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerTarget {
    Host(String),
    Context(String),
}

pub fn current_target(config_dir: Option<&Path>) -> DockerTarget {
    if let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        return DockerTarget::Host(host);
    }
    if let Some(context) = std::env::var("DOCKER_CONTEXT").ok().filter(|c| !c.is_empty()) {
        return DockerTarget::Context(context);
    }
    let current = config_dir
        .and_then(|dir| std::fs::read(dir.join("config.json")).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|config| config.get("currentContext")?.as_str().map(str::to_string));
    DockerTarget::Context(current.unwrap_or_else(|| "default".into()))
}

/// The endpoint a context's meta.json names, if it exists.
pub fn context_host(config_dir: &Path, name: &str) -> Option<String> {
    let meta = config_dir.join("contexts/meta").join(hex(&Sha256::digest(name.as_bytes()))).join("meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
    meta["Endpoints"]["docker"]["Host"].as_str().map(str::to_string)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The docker CLI's configuration directory.
pub fn docker_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    directories::BaseDirs::new().map(|d| d.home_dir().join(".docker"))
}

/// Points the context at `docker_host`, and makes it current if it is to be.
pub fn install(config_dir: &Path, context: &HomeContext, docker_host: &str) -> Result<()> {
    let meta_dir = config_dir.join("contexts/meta").join(hex(&Sha256::digest(context.name.as_bytes())));
    std::fs::create_dir_all(&meta_dir).with_context(|| format!("creating {}", meta_dir.display()))?;
    let meta = serde_json::json!({
        "Name": context.name,
        "Metadata": { "Description": "Berth" },
        "Endpoints": { "docker": { "Host": docker_host, "SkipTLSVerify": false } },
    });
    write_atomically(&meta_dir.join("meta.json"), &serde_json::to_vec(&meta)?)?;
    if !context.make_current {
        return Ok(());
    }

    let config_path = config_dir.join("config.json");
    let mut config: serde_json::Value = match std::fs::read(&config_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON; not changing the docker context", config_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_path.display())),
    };
    let Some(settings) = config.as_object_mut() else {
        bail!(
            "{} is not a JSON object (the docker CLI would not read it either); not changing the docker context",
            config_path.display()
        );
    };
    if settings.get("currentContext").and_then(|c| c.as_str()) != Some(context.name.as_str()) {
        settings.insert("currentContext".into(), context.name.clone().into());
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

    fn read_json(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn meta(dir: &Path, name: &str) -> serde_json::Value {
        read_json(&dir.join("contexts/meta").join(hex(&Sha256::digest(name.as_bytes()))).join("meta.json"))
    }

    #[test]
    fn the_default_home_context_is_written_as_the_cli_reads_it_and_made_current() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"auths": {"r.io": {}}, "currentContext": "default"}"#)
            .unwrap();
        let context = HomeContext::for_home(Path::new("/h"), true);
        assert_eq!(context, HomeContext { name: "berth".into(), make_current: true });
        install(dir.path(), &context, "unix:///h/run/docker.sock").unwrap();
        let config = read_json(&dir.path().join("config.json"));
        assert_eq!(config["currentContext"], "berth");
        assert!(config["auths"]["r.io"].is_object(), "other settings are kept");
        // The directory is named by the name's sha256, as the docker CLI looks it up.
        assert_eq!(meta(dir.path(), "berth")["Endpoints"]["docker"]["Host"], "unix:///h/run/docker.sock");
    }

    #[test]
    fn another_home_gets_its_own_context_and_leaves_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let config_json = r#"{"currentContext": "berth"}"#;
        std::fs::write(dir.path().join("config.json"), config_json).unwrap();
        install(dir.path(), &HomeContext::for_home(Path::new("/default"), true), "unix:///default/docker.sock")
            .unwrap();
        let first = HomeContext::for_home(Path::new("/tmp/ci-home"), false);
        let second = HomeContext::for_home(Path::new("/tmp/other-home"), false);
        assert!(first.name.starts_with("berth-") && first.name.len() == "berth-".len() + 8, "{}", first.name);
        assert_ne!(first.name, second.name);
        assert_eq!(first, HomeContext::for_home(Path::new("/tmp/ci-home"), false), "stable across starts");
        assert!(!first.make_current);
        install(dir.path(), &first, "unix:///tmp/ci-home/run/docker.sock").unwrap();
        assert_eq!(meta(dir.path(), &first.name)["Endpoints"]["docker"]["Host"], "unix:///tmp/ci-home/run/docker.sock");
        assert_eq!(meta(dir.path(), &first.name)["Name"], first.name.as_str());
        assert_eq!(
            meta(dir.path(), "berth")["Endpoints"]["docker"]["Host"],
            "unix:///default/docker.sock",
            "the default home's context is not repointed"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("config.json")).unwrap(),
            config_json,
            "the current context stays the default home's"
        );
    }

    #[test]
    fn profiles_of_the_everyday_home_are_named_after_the_profile() {
        let work = HomeContext::for_profile(Path::new("/h/profiles/work"), Some("work"), true);
        assert_eq!(work, HomeContext { name: "berth-work".into(), make_current: true });
        let default = HomeContext::for_profile(Path::new("/h"), None, true);
        assert_eq!(default, HomeContext::for_home(Path::new("/h"), true));
        let scripted = HomeContext::for_profile(Path::new("/ci/profiles/work"), Some("work"), false);
        assert_eq!(scripted, HomeContext::for_home(Path::new("/ci/profiles/work"), false), "a test home's profile");
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), &work, "unix:///h/profiles/work/run/docker.sock").unwrap();
        assert_eq!(context_host(dir.path(), "berth-work").as_deref(), Some("unix:///h/profiles/work/run/docker.sock"));
        assert_eq!(context_host(dir.path(), "berth"), None);
    }

    #[test]
    fn an_unexpected_config_json_is_left_alone_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let context = HomeContext::for_home(Path::new("/h"), true);
        for text in ["not json", "[]", "5", "\"berth\"", "null"] {
            std::fs::write(dir.path().join("config.json"), text).unwrap();
            let err = format!("{:#}", install(dir.path(), &context, "unix:///x").unwrap_err());
            assert!(err.contains("not changing the docker context"), "{text}: {err}");
            assert_eq!(std::fs::read_to_string(dir.path().join("config.json")).unwrap(), text);
        }
    }
}
