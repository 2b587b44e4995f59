//! Bind sources as a Windows docker CLI sends them, turned into the paths
//! the engine sees (Docker Desktop's conventions): the CLI on Windows sends
//! `-v C:\x:/x` and `--mount source=C:\x` as typed, and a Windows drive is
//! `/mnt/<drive letter>` in the engine's Linux (WSL 2 mounts drives there;
//! the HCS backend mounts its Plan 9 shares at the same paths). Git Bash's
//! `/c/x`, forward slashes (`C:/x`) and Docker Desktop's own
//! `/run/desktop/mnt/host/c/x` name the same place.
//!
//! A pure function of the host's kind, so Linux tests it; only a Windows
//! daemon applies it (a Linux path such as `/c/x` is a real path there).

use serde_json::Value;

/// How the daemon's host names files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPaths {
    /// Linux, macOS: a bind source is the path as given.
    Posix,
    /// Windows: drive paths become `/mnt/<drive>/…`.
    Windows,
}

/// Where Docker Desktop's VM sees the Windows drives.
const DESKTOP_HOST_MOUNT: &str = "/run/desktop/mnt/host/";

impl HostPaths {
    pub fn of_this_host() -> HostPaths {
        if cfg!(windows) {
            HostPaths::Windows
        } else {
            HostPaths::Posix
        }
    }

    /// The engine's path for a bind source; None: it stays as it is (a
    /// named volume, a Linux path, or a Posix host).
    pub fn engine_path(self, source: &str) -> Option<String> {
        if self == HostPaths::Posix {
            return None;
        }
        if let Some((drive, rest)) = drive_path(source) {
            return Some(mnt_path(drive, rest));
        }
        // Git Bash (MSYS) paths: /c or /c/x.
        let git_bash = source.strip_prefix('/').filter(|rest| {
            let bytes = rest.as_bytes();
            bytes.first().is_some_and(u8::is_ascii_alphabetic) && (bytes.len() == 1 || bytes[1] == b'/')
        });
        if let Some(rest) = git_bash {
            return Some(mnt_path(rest.as_bytes()[0] as char, &rest[1..]));
        }
        let desktop = source.strip_prefix(DESKTOP_HOST_MOUNT)?;
        let drive = desktop.chars().next().filter(char::is_ascii_alphabetic)?;
        let rest = &desktop[1..];
        (rest.is_empty() || rest.starts_with('/')).then(|| mnt_path(drive, rest))
    }

    /// A `-v SOURCE:TARGET[:MODE]` spec with its source translated; None
    /// when nothing changes. A drive letter's colon is not the separator.
    pub fn bind_spec(self, spec: &str) -> Option<String> {
        let split_at = if drive_path(spec).is_some() { spec[2..].find(':').map(|i| i + 2)? } else { spec.find(':')? };
        let (source, rest) = spec.split_at(split_at);
        self.engine_path(source).map(|source| format!("{source}{rest}"))
    }

    /// Translates the bind sources of a container create request (Docker's
    /// JSON): `HostConfig.Binds` and the `Source` of `HostConfig.Mounts` of
    /// type bind. Returns the rewritten body, or None when nothing changed
    /// (and for what does not parse, which the agent refuses).
    pub fn create_body(self, body: &[u8]) -> Option<Vec<u8>> {
        if self == HostPaths::Posix {
            return None;
        }
        let mut request: Value = serde_json::from_slice(body).ok()?;
        let host_config = request.get_mut("HostConfig")?.as_object_mut()?;
        let mut changed = false;
        if let Some(binds) = host_config.get_mut("Binds").and_then(Value::as_array_mut) {
            for bind in binds.iter_mut() {
                if let Some(spec) = bind.as_str().and_then(|s| self.bind_spec(s)) {
                    *bind = Value::String(spec);
                    changed = true;
                }
            }
        }
        if let Some(mounts) = host_config.get_mut("Mounts").and_then(Value::as_array_mut) {
            for mount in mounts.iter_mut().filter(|m| m.get("Type").and_then(Value::as_str) == Some("bind")) {
                if let Some(source) = mount.get("Source").and_then(Value::as_str).and_then(|s| self.engine_path(s)) {
                    mount["Source"] = Value::String(source);
                    changed = true;
                }
            }
        }
        changed.then(|| serde_json::to_vec(&request).ok()).flatten()
    }
}

/// `C:\x`, `c:/x`, `C:` and `C:\`: the drive letter and what follows it.
fn drive_path(path: &str) -> Option<(char, &str)> {
    let bytes = path.as_bytes();
    let drive = *bytes.first()?;
    if !drive.is_ascii_alphabetic() || bytes.get(1) != Some(&b':') {
        return None;
    }
    match bytes.get(2) {
        None => Some((drive as char, "")),
        Some(b'\\' | b'/') => Some((drive as char, &path[2..])),
        // `C:x` is relative to C:'s current directory, which the daemon does not know.
        Some(_) => None,
    }
}

/// `/mnt/c` and the rest with forward slashes, without a trailing one.
fn mnt_path(drive: char, rest: &str) -> String {
    let rest = rest.replace('\\', "/");
    let rest = rest.trim_end_matches('/');
    format!("/mnt/{}{rest}", drive.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostPaths::{Posix, Windows};

    #[test]
    fn drive_paths_become_mnt_paths() {
        assert_eq!(Windows.engine_path(r"C:\a b\c").as_deref(), Some("/mnt/c/a b/c"));
        assert_eq!(Windows.engine_path(r"c:\Users\me\src\").as_deref(), Some("/mnt/c/Users/me/src"));
        assert_eq!(Windows.engine_path("D:/data/x").as_deref(), Some("/mnt/d/data/x"));
        assert_eq!(Windows.engine_path(r"C:\").as_deref(), Some("/mnt/c"));
        assert_eq!(Windows.engine_path("E:").as_deref(), Some("/mnt/e"));
        assert_eq!(Windows.engine_path("/c/Users/me").as_deref(), Some("/mnt/c/Users/me"), "Git Bash");
        assert_eq!(Windows.engine_path("/run/desktop/mnt/host/c/Users/me").as_deref(), Some("/mnt/c/Users/me"));
        assert_eq!(Windows.engine_path("/run/desktop/mnt/host/d").as_deref(), Some("/mnt/d"));
    }

    #[test]
    fn other_sources_are_left_alone() {
        for source in
            ["named-volume", "/var/lib/x", "/cd/x", "C:relative", r"\\server\share\x", "/run/desktop/mnt/host/cc"]
        {
            assert_eq!(Windows.engine_path(source), None, "{source}");
        }
        assert_eq!(Posix.engine_path(r"C:\x"), None, "only a Windows host translates");
        assert_eq!(Posix.engine_path("/c/x"), None, "on Linux /c/x is a real path");
    }

    #[test]
    fn bind_specs_keep_target_and_mode() {
        assert_eq!(Windows.bind_spec(r"C:\x:/x").as_deref(), Some("/mnt/c/x:/x"));
        assert_eq!(Windows.bind_spec(r"C:\a b\c:/data:ro").as_deref(), Some("/mnt/c/a b/c:/data:ro"));
        assert_eq!(Windows.bind_spec("c:/src:/src:rw,z").as_deref(), Some("/mnt/c/src:/src:rw,z"));
        assert_eq!(Windows.bind_spec("/c/src:/src").as_deref(), Some("/mnt/c/src:/src"));
        assert_eq!(Windows.bind_spec("vol:/data"), None);
        assert_eq!(Windows.bind_spec("/etc:/etc:ro"), None);
        assert_eq!(Windows.bind_spec(r"C:\only-a-source"), None, "no target: the agent says what is wrong");
    }

    #[test]
    fn a_create_request_has_its_bind_sources_translated() {
        let body = serde_json::json!({
            "Image": "busybox",
            "HostConfig": {
                "Binds": [r"C:\Users\me\src:/src", "vol:/v"],
                "Mounts": [
                    {"Type": "bind", "Source": r"D:\data", "Target": "/data"},
                    {"Type": "volume", "Source": "C:", "Target": "/v2"}
                ]
            }
        });
        let rewritten = Windows.create_body(body.to_string().as_bytes()).expect("changed");
        let rewritten: Value = serde_json::from_slice(&rewritten).unwrap();
        assert_eq!(rewritten["HostConfig"]["Binds"], serde_json::json!(["/mnt/c/Users/me/src:/src", "vol:/v"]));
        assert_eq!(rewritten["HostConfig"]["Mounts"][0]["Source"], "/mnt/d/data");
        assert_eq!(rewritten["HostConfig"]["Mounts"][1]["Source"], "C:", "a volume's name is not a path");
        assert_eq!(rewritten["Image"], "busybox");

        let untouched = serde_json::json!({"HostConfig": {"Binds": ["vol:/v"]}}).to_string();
        assert_eq!(Windows.create_body(untouched.as_bytes()), None);
        assert_eq!(Posix.create_body(body.to_string().as_bytes()), None);
        assert_eq!(Windows.create_body(b"not json"), None);
    }
}
