//! The WSL 2 backend as plain data: the `wsl.exe` command lines that
//! register Berth's distro and start the agent in it, and the reading of
//! what Windows answers (the distro list, the WSL VM's id). Tested on every
//! host; mod.rs runs them on Windows.
//!
//! The agent's root filesystem is `berth-wsl-rootfs.tar` in the assets
//! directory (built with the guest image), imported once per Berth home as
//! the distro `berth` (`berth-<8 hex>` for any other home, as its docker
//! context is named), into `<home>\wsl` where WSL keeps its ext4.vhdx.
//! The agent runs in it as root, not as PID 1 (WSL's init is), listening on
//! vsock port 1024 of WSL's utility VM; the host reaches it over Hyper-V
//! sockets by that VM's id. WSL publishes the id only on the command line
//! of the `wslhost.exe` that serves the distro (`--vm-id {GUID}`, what Lima
//! reads); HCS's enumeration would name it too but needs administrator
//! rights.

use std::path::{Path, PathBuf};

use berth_agent_proto::agent_key::AGENT_KEY_ENV;
use serde::Deserialize;

use crate::vm::GuestFacts;

/// The guest image for WSL, beside initramfs.cpio in the assets directory.
pub const ROOTFS_TARBALL: &str = "berth-wsl-rootfs.tar";

/// Where the rootfs tarball puts the agent.
pub const AGENT_IN_DISTRO: &str = "/usr/bin/berth-agent";

/// The distro of the default home.
pub const DEFAULT_DISTRO: &str = "berth";

/// A command line: the program and its arguments, and the environment
/// variables it gets besides the daemon's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPlan {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl CommandPlan {
    fn wsl(args: &[&str]) -> CommandPlan {
        CommandPlan {
            program: "wsl.exe".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            // wsl.exe's own output in UTF-8 rather than UTF-16 (WSL 0.64 and later).
            env: vec![("WSL_UTF8".into(), "1".into())],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WslPlan {
    pub distro: String,
    /// Where WSL keeps the distro's disk (`<home>\wsl`).
    pub install_dir: PathBuf,
    pub rootfs: PathBuf,
}

impl WslPlan {
    /// The plan for the Berth home `home`.
    pub fn new(home: &Path, is_default_home: bool, assets_dir: &Path) -> WslPlan {
        let distro = if is_default_home {
            DEFAULT_DISTRO.to_string()
        } else {
            format!("{DEFAULT_DISTRO}-{}", crate::platform::api_address::short_digest(home))
        };
        WslPlan { distro, install_dir: home.join("wsl"), rootfs: assets_dir.join(ROOTFS_TARBALL) }
    }

    /// `wsl --list --quiet`: the registered distros, one a line.
    pub fn list(&self) -> CommandPlan {
        CommandPlan::wsl(&["--list", "--quiet"])
    }

    /// Registers the distro from the rootfs tarball, as a WSL 2 distro.
    pub fn import(&self) -> CommandPlan {
        let (dir, rootfs) = (self.install_dir.display().to_string(), self.rootfs.display().to_string());
        CommandPlan::wsl(&["--import", &self.distro, &dir, &rootfs, "--version", "2"])
    }

    /// Ends everything running in the distro (a leftover agent of a daemon
    /// that died, or this one's after the grace).
    pub fn terminate(&self) -> CommandPlan {
        CommandPlan::wsl(&["--terminate", &self.distro])
    }

    /// Starts the agent in the distro, as root, in the foreground of the
    /// `wsl.exe` the daemon owns (its stderr is the agent's log). The key
    /// goes through the environment, never the command line: WSLENV tells
    /// WSL to hand `BERTH_AGENT_KEY` to the Linux process, and the agent
    /// removes it from its own environment at once (admission.rs).
    /// `wslenv` is the daemon's WSLENV, kept.
    pub fn agent(&self, key_hex: &str, wslenv: Option<&str>) -> CommandPlan {
        let mut plan = CommandPlan::wsl(&[
            "--distribution",
            &self.distro,
            "--user",
            "root",
            "--cd",
            "/",
            "--exec",
            AGENT_IN_DISTRO,
            "--vsock-port",
            &berth_agent_proto::AGENT_VSOCK_PORT.to_string(),
            // Under WSL's init: cgroup v2 and its state dir (guest-agent/src/service_mode.rs).
            "--service",
        ]);
        let wslenv = match wslenv.filter(|w| !w.is_empty()) {
            Some(existing) => format!("{existing}:{AGENT_KEY_ENV}"),
            None => AGENT_KEY_ENV.to_string(),
        };
        plan.env.push((AGENT_KEY_ENV.into(), key_hex.into()));
        plan.env.push(("WSLENV".into(), wslenv));
        plan
    }

    /// Finds the WSL VM's id and this distro's registry id (PowerShell:
    /// HKCU's Lxss key names each distro's id; the `wslhost.exe` serving a
    /// distro has both ids on its command line). Prints one JSON object,
    /// read by [`read_vm_id`].
    pub fn find_vm_id(&self) -> CommandPlan {
        let distro = self.distro.replace('\'', "''");
        let script = format!(
            "$ErrorActionPreference = 'Stop'; \
             $key = Get-ChildItem 'HKCU:\\Software\\Microsoft\\Windows\\CurrentVersion\\Lxss' | \
             Where-Object {{ $_.GetValue('DistributionName') -eq '{distro}' }} | Select-Object -First 1; \
             $lines = @(Get-CimInstance Win32_Process -Filter \"Name = 'wslhost.exe'\" | ForEach-Object {{ $_.CommandLine }}); \
             @{{ DistroId = $key.PSChildName; CommandLines = $lines }} | ConvertTo-Json -Compress"
        );
        CommandPlan {
            program: "powershell.exe".into(),
            args: ["-NoLogo", "-NoProfile", "-NonInteractive", "-Command", &script].map(String::from).into(),
            env: Vec::new(),
        }
    }
}

/// What `wsl --list --quiet` printed, in whichever encoding: UTF-16LE from
/// a WSL that ignores WSL_UTF8, UTF-8 otherwise.
pub fn decode_wsl_output(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(&[0xff, 0xfe]).unwrap_or(bytes);
    let utf16 = bytes.len() >= 2 && bytes.len().is_multiple_of(2) && bytes.iter().skip(1).step_by(2).all(|&b| b == 0);
    let text = if utf16 {
        let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    text.trim_start_matches('\u{feff}').to_string()
}

/// Whether `distro` is in `wsl --list --quiet`'s output (names are
/// case-insensitive to WSL).
pub fn is_registered(list_output: &str, distro: &str) -> bool {
    list_output.lines().map(str::trim).any(|name| name.eq_ignore_ascii_case(distro))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Probe {
    distro_id: Option<String>,
    #[serde(default)]
    command_lines: Vec<Option<String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmIdError {
    #[error("the WSL VM's id could not be read: {0}")]
    Unreadable(String),
    #[error("the distro {0} is not registered with WSL (HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Lxss)")]
    NoDistro(String),
    #[error("no wslhost.exe serves the distro {0} (yet): is it running?")]
    NotRunning(String),
}

/// The WSL VM's id from [`WslPlan::find_vm_id`]'s output.
pub fn read_vm_id(output: &str, distro: &str) -> Result<uuid::Uuid, VmIdError> {
    let probe: Probe = serde_json::from_str(output.trim()).map_err(|err| VmIdError::Unreadable(err.to_string()))?;
    let distro_id = probe.distro_id.filter(|id| !id.is_empty()).ok_or_else(|| VmIdError::NoDistro(distro.into()))?;
    let distro_id = distro_id.trim_matches(|c| c == '{' || c == '}').to_ascii_lowercase();
    probe
        .command_lines
        .iter()
        .flatten()
        .filter(|line| line.to_ascii_lowercase().contains(&distro_id))
        .find_map(|line| {
            let after = &line[line.find("--vm-id")? + "--vm-id".len()..];
            crate::platform::hvsock_ids::parse_vm_id(after.split_whitespace().next()?)
        })
        .ok_or_else(|| VmIdError::NotRunning(distro.into()))
}

/// The HCS enumeration query for WSL's utility VM (computecore::enumerate;
/// administrators only, the fallback when no `wslhost.exe` names the VM).
#[cfg(windows)]
pub const HCS_WSL_QUERY: &str = r#"{"Owners":["WSL"]}"#;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HcsSystem {
    id: String,
    #[serde(default)]
    runtime_id: Option<String>,
    #[serde(default)]
    system_type: Option<String>,
}

/// WSL's VM from HCS's enumeration (JSON array of compute systems): the
/// one virtual machine WSL owns; its sockets are addressed by its RuntimeId
/// (its Id where HCS gives none). None unless exactly one is found.
pub fn vm_id_from_hcs(enumeration: &str) -> Option<uuid::Uuid> {
    let systems: Vec<HcsSystem> = serde_json::from_str(enumeration).ok()?;
    let mut vms =
        systems.iter().filter(|s| s.system_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("VirtualMachine")));
    let vm = vms.next()?;
    if vms.next().is_some() {
        return None;
    }
    crate::platform::hvsock_ids::parse_vm_id(vm.runtime_id.as_deref().unwrap_or(&vm.id))
}

/// The guest WSL runs: Microsoft's kernel and init, the distro's own disk,
/// WSL's network, and every Windows drive at `/mnt/<letter>` (WSL's drvfs),
/// which is where api/host_paths.rs points bind sources; so the engine sees
/// the host's files without shares, as the local backend does.
pub fn guest_facts() -> GuestFacts {
    GuestFacts {
        engine_data_dir: berth_agent_proto::boot::GUEST_DATA_DIR.into(),
        share_transport: None,
        share_access: berth_agent_proto::boot::ShareAccess::Host,
        data_disk: None,
        network: None,
        // WSL's VM is sized by .wslconfig and shared with the user's other distros.
        dedicated_memory: false,
        // WSL keeps the VM's clock in step with Windows itself.
        own_clock: false,
        agent_log_device: crate::vm::LogDevice::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> WslPlan {
        WslPlan::new(Path::new(r"C:\Users\me\AppData\Local\Berth"), true, Path::new(r"C:\Berth\share\berth"))
    }

    fn args(plan: &CommandPlan) -> Vec<&str> {
        plan.args.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_distro_is_imported_from_the_assets_tarball() {
        let plan = plan();
        assert_eq!(plan.distro, "berth");
        let import = plan.import();
        assert_eq!(import.program, "wsl.exe");
        assert_eq!(
            args(&import),
            [
                "--import",
                "berth",
                r"C:\Users\me\AppData\Local\Berth/wsl",
                r"C:\Berth\share\berth/berth-wsl-rootfs.tar",
                "--version",
                "2"
            ]
            .map(|a| a.replace('/', std::path::MAIN_SEPARATOR_STR))
        );
        assert_eq!(args(&plan.terminate()), ["--terminate", "berth"]);
        assert_eq!(args(&plan.list()), ["--list", "--quiet"]);
        assert!(import.env.contains(&("WSL_UTF8".into(), "1".into())));

        let other = WslPlan::new(Path::new(r"D:\ci\home"), false, Path::new("x"));
        assert!(other.distro.starts_with("berth-") && other.distro.len() == "berth-".len() + 8, "{}", other.distro);
    }

    #[test]
    fn the_agent_gets_its_key_through_wslenv_only() {
        let key = "ab".repeat(32);
        let agent = plan().agent(&key, None);
        assert_eq!(
            args(&agent),
            [
                "--distribution",
                "berth",
                "--user",
                "root",
                "--cd",
                "/",
                "--exec",
                "/usr/bin/berth-agent",
                "--vsock-port",
                "1024",
                "--service"
            ]
        );
        assert!(!agent.args.iter().any(|a| a.contains(&key)), "the key is in no command line");
        assert!(agent.env.contains(&("BERTH_AGENT_KEY".into(), key.clone())));
        assert!(agent.env.contains(&("WSLENV".into(), "BERTH_AGENT_KEY".into())));
        let kept = plan().agent(&key, Some("USERPROFILE/p"));
        assert!(
            kept.env.contains(&("WSLENV".into(), "USERPROFILE/p:BERTH_AGENT_KEY".into())),
            "the user's WSLENV stays"
        );
    }

    #[test]
    fn reads_the_distro_list_in_either_encoding() {
        let utf16: Vec<u8> = "\u{feff}Ubuntu\r\nBerth\r\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let listed = decode_wsl_output(&utf16);
        assert!(is_registered(&listed, "berth"), "{listed:?}");
        assert!(is_registered(&decode_wsl_output(b"Ubuntu\nberth\n"), "berth"));
        assert!(!is_registered(&decode_wsl_output(b"Ubuntu\nberth-1234abcd\n"), "berth"));
        assert!(!is_registered("", "berth"));
    }

    #[test]
    fn finds_the_vm_id_on_the_wslhost_serving_the_distro() {
        let output = r#"{"DistroId":"{5C3A1F2E-8B4D-4E6F-9A0B-1C2D3E4F5A6B}","CommandLines":[
            null,
            "\"C:\\Program Files\\WSL\\wslhost.exe\" --distro-id {0AAAAAAA-8B4D-4E6F-9A0B-1C2D3E4F5A6B} --vm-id {11111111-2222-3333-4444-555555555555} --handle 1234",
            "\"C:\\Program Files\\WSL\\wslhost.exe\" --distro-id {5c3a1f2e-8b4d-4e6f-9a0b-1c2d3e4f5a6b} --vm-id {8E1C5F6A-1B2C-4D3E-9F40-0123456789AB} --handle 5678"
        ]}"#;
        assert_eq!(read_vm_id(output, "berth").unwrap().to_string(), "8e1c5f6a-1b2c-4d3e-9f40-0123456789ab");
        assert_eq!(
            read_vm_id(r#"{"DistroId":"{5C3A1F2E-8B4D-4E6F-9A0B-1C2D3E4F5A6B}","CommandLines":[]}"#, "berth"),
            Err(VmIdError::NotRunning("berth".into()))
        );
        assert_eq!(
            read_vm_id(r#"{"DistroId":null,"CommandLines":[]}"#, "berth"),
            Err(VmIdError::NoDistro("berth".into()))
        );
        assert!(matches!(read_vm_id("Get-ChildItem : Cannot find path", "berth"), Err(VmIdError::Unreadable(_))));
    }

    #[test]
    fn an_administrator_finds_the_vm_through_hcs() {
        let one = r#"[{"Id":"A1B2C3D4-0000-4000-8000-000000000001","SystemType":"VirtualMachine","Owner":"WSL",
            "RuntimeId":"8e1c5f6a-1b2c-4d3e-9f40-0123456789ab","State":"Running"}]"#;
        assert_eq!(vm_id_from_hcs(one).unwrap().to_string(), "8e1c5f6a-1b2c-4d3e-9f40-0123456789ab");
        let no_runtime_id = r#"[{"Id":"a1b2c3d4-0000-4000-8000-000000000001","SystemType":"VirtualMachine"}]"#;
        assert_eq!(vm_id_from_hcs(no_runtime_id).unwrap().to_string(), "a1b2c3d4-0000-4000-8000-000000000001");
        let two = r#"[{"Id":"a1b2c3d4-0000-4000-8000-000000000001"},{"Id":"a1b2c3d4-0000-4000-8000-000000000002"}]"#;
        assert_eq!(vm_id_from_hcs(two), None, "which one is Berth's is not known");
        assert_eq!(vm_id_from_hcs("[]"), None);
        assert_eq!(vm_id_from_hcs("Access is denied."), None);
    }

    #[test]
    fn the_powershell_probe_names_the_distro_quoted() {
        let probe = WslPlan { distro: "it's".into(), ..plan() }.find_vm_id();
        assert_eq!(probe.program, "powershell.exe");
        let script = probe.args.last().unwrap();
        assert!(script.contains("-eq 'it''s'"), "{script}");
        assert!(script.contains("wslhost.exe") && script.contains("ConvertTo-Json -Compress"), "{script}");
    }

    #[test]
    fn the_engine_sees_the_host_through_drvfs() {
        let facts = guest_facts();
        assert_eq!(facts.share_transport, None, "bind sources are checked by host_paths.rs, not against shares");
        assert_eq!((facts.data_disk, facts.network, facts.own_clock), (None, None, false));
    }
}
