//! Which host paths a container may bind. The VM sees the host only through
//! its `[vm] shares` (mounted at the same paths); any other absolute path
//! would name the VM's own files, the engine's data directory included. So
//! a bind source outside the shares is refused, as Docker Desktop refuses
//! an unshared path, before the request reaches the agent. With the local
//! backend the agent runs on the host itself: every path is the host's.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

#[derive(Debug, Clone)]
pub enum BindSources {
    /// The agent sees this host's filesystem (the local backend).
    Any,
    /// Only these directories are visible in the VM, as the engine names
    /// them (a Windows share's `/mnt/<drive>/…`, vm::shares_of).
    Shares { shares: Vec<PathBuf>, config_file: PathBuf },
}

impl BindSources {
    /// Refuses a create request (Docker's JSON) binding a path outside the
    /// shares. What does not parse is left for the agent to refuse.
    pub fn check_create(&self, body: &[u8]) -> Result<(), String> {
        let BindSources::Shares { shares, config_file } = self else { return Ok(()) };
        let Ok(request) = serde_json::from_slice::<Value>(body) else { return Ok(()) };
        for source in bind_sources(&request) {
            if !is_shared(Path::new(&source), shares) {
                return Err(format!(
                    "mounts denied: the path {source} is not shared from the host and is not known to Berth. \
                     You can configure shared paths in [vm] shares in {}",
                    config_file.display()
                ));
            }
        }
        Ok(())
    }
}

/// The host paths of `-v SRC:DST` binds and `--mount type=bind`.
fn bind_sources(request: &Value) -> Vec<String> {
    let host_config = request.get("HostConfig");
    let field = |name: &str| host_config.and_then(|hc| hc.get(name)).and_then(Value::as_array).into_iter().flatten();
    let binds = field("Binds")
        .filter_map(Value::as_str)
        .filter_map(|spec| spec.split_once(':').map(|(source, _)| source))
        .filter(|source| source.starts_with('/'));
    let mounts = field("Mounts")
        .filter(|m| m.get("Type").and_then(Value::as_str) == Some("bind"))
        .filter_map(|m| m.get("Source").and_then(Value::as_str));
    binds.chain(mounts).map(str::to_string).collect()
}

/// Whether `source` is (inside) a share, after `..` and symlinks: the host
/// resolves them as the share's files are, so `/home/me/../../etc` or a
/// link out of the share does not pass.
fn is_shared(source: &Path, shares: &[PathBuf]) -> bool {
    let resolved = std::fs::canonicalize(source).unwrap_or_else(|_| lexically_normal(source));
    shares.iter().any(|share| {
        let share = std::fs::canonicalize(share).unwrap_or_else(|_| lexically_normal(share));
        resolved.starts_with(&share)
    })
}

/// `path` with `.` and `..` resolved without the filesystem (for a path
/// that does not exist yet; the agent then says so).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(part) => normal.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn only_shared_paths_may_be_bound_into_the_vm() {
        let share = tempfile::tempdir().unwrap();
        std::fs::create_dir(share.path().join("src")).unwrap();
        std::os::unix::fs::symlink("/etc", share.path().join("out")).unwrap();
        let sources = BindSources::Shares {
            shares: vec![share.path().to_path_buf()],
            config_file: PathBuf::from("/home/me/.berth/config.toml"),
        };
        let create = |binds: Value| sources.check_create(binds.to_string().as_bytes());
        let s = share.path().display();
        assert_eq!(
            create(serde_json::json!({"HostConfig": {"Binds": [format!("{s}/src:/x"), "vol:/v", "/anon"]}})),
            Ok(())
        );
        assert_eq!(
            create(serde_json::json!({"HostConfig": {"Binds": ["/etc:/x"]}})),
            Err("mounts denied: the path /etc is not shared from the host and is not known to Berth. \
                 You can configure shared paths in [vm] shares in /home/me/.berth/config.toml"
                .into())
        );
        for outside in ["/", "/var/lib/berth", &format!("{s}/../.."), &format!("{s}/out")] {
            let refused = create(serde_json::json!({"HostConfig": {"Binds": [format!("{outside}:/x")]}}));
            assert!(refused.is_err(), "{outside}");
            let mount =
                serde_json::json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": outside, "Target": "/x"}]}});
            assert!(create(mount).is_err(), "{outside}");
        }
        // The local backend's agent sees this host: anything goes.
        assert_eq!(BindSources::Any.check_create(br#"{"HostConfig": {"Binds": ["/etc:/x"]}}"#), Ok(()));
    }

    #[test]
    fn windows_binds_are_checked_where_the_engine_sees_them() {
        use crate::api::host_paths::HostPaths;
        let shares = crate::vm::shares_of(&[PathBuf::from(r"C:\Users\me")], HostPaths::Windows);
        let sources = BindSources::Shares {
            shares: shares.into_iter().map(|share| share.guest_path).collect(),
            config_file: PathBuf::from(r"C:\Users\me\AppData\Local\Berth\config.toml"),
        };
        // As containers.rs does: the CLI's Windows path is translated, then checked.
        let create = |bind: &str| {
            let body = serde_json::json!({"HostConfig": {"Binds": [bind]}}).to_string();
            sources.check_create(&HostPaths::Windows.create_body(body.as_bytes()).expect("a Windows path"))
        };
        assert_eq!(create(r"C:\Users\me\src:/src"), Ok(()));
        assert_eq!(create(r"c:/Users/me:/home"), Ok(()));
        assert!(create(r"C:\Windows:/w").unwrap_err().contains("the path /mnt/c/Windows is not shared"));
        assert!(create(r"C:\Users\me\..\other:/x").is_err(), "no way out of the share");
        assert!(create(r"D:\Users\me:/x").is_err(), "another drive");
    }
}
