//! Virtual machine backends.
//!
//! Callers (the daemon) see only [`VmBackend`] and [`RunningVm`]: describe a
//! VM with a [`VmSpec`], start it, learn where its agent listens, wait for it
//! to exit or stop it. Each platform brings its own backend: QEMU on Linux
//! (KVM or TCG), Virtualization.framework on macOS (vz/), WSL 2 on Windows
//! (wsl/; Hyper-V through HCS, hcs/, is the document and the calls so far).

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::agent_client::AgentEndpoint;
pub use berth_agent_proto::boot::{
    BootParams, LogDevice, NetConfig, Plan9Channel, ShareAccess, ShareMount, ShareTransport,
};

pub mod arch;
pub mod boot_key;
pub mod disk;
#[cfg(target_os = "linux")]
pub mod local;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod owned;
// Plain code tested on Linux; only their Windows calls are Windows'.
#[cfg(any(windows, test))]
pub mod hcs;
#[cfg(target_os = "linux")]
mod passt;
#[cfg(target_os = "linux")]
pub mod plan9;
#[cfg(target_os = "linux")]
mod plan9_sandbox;
#[cfg(target_os = "linux")]
pub mod qemu;
#[cfg(target_os = "linux")]
pub mod qemu_machine;
#[cfg(target_os = "linux")]
mod share_cache;
#[cfg(target_os = "linux")]
mod share_policy;
#[cfg(any(windows, test))]
pub mod wsl;
// Plain code tested on Linux; only its framework calls are macOS's.
#[cfg(any(target_os = "macos", all(test, unix)))]
pub mod vz;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A directory shared from the host into the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// virtio-fs tag; unique per VM.
    pub tag: String,
    pub host_path: PathBuf,
    pub guest_path: PathBuf,
}

/// The VM's shares of the host directories `dirs` (`[vm] shares`), each
/// mounted where the engine knows it: at the same path on Linux and macOS,
/// at `/mnt/<drive>/…` for a Windows directory (where WSL has the drives,
/// and what api/host_paths.rs turns a Windows bind source into).
pub fn shares_of(dirs: &[PathBuf], host: crate::api::host_paths::HostPaths) -> Vec<Share> {
    dirs.iter()
        .enumerate()
        .map(|(i, dir)| Share {
            tag: format!("share{i}"),
            host_path: dir.clone(),
            guest_path: host.engine_path(&dir.display().to_string()).map(PathBuf::from).unwrap_or_else(|| dir.clone()),
        })
        .collect()
}

/// Which protocol carries the shares, where the backend can choose
/// (`[vm] share-transport` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ShareProtocol {
    #[default]
    #[serde(rename = "virtiofs")]
    Virtiofs,
    /// 9P2000.L on a vsock stream, as Hyper-V's Plan 9 shares; on QEMU,
    /// a file server per share on the host end of the hybrid vsock.
    #[serde(rename = "9p")]
    Plan9,
}

/// The VM's outbound network on QEMU (`[vm] uplink` in config.toml); the
/// other backends have their platform's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Uplink {
    /// passt on a socket pair (`-netdev stream`): host sockets per flow,
    /// TCP window scaling, IPv6 (passt.rs).
    Passt,
    /// QEMU's built-in user networking (libslirp).
    Slirp,
}

impl Uplink {
    pub fn name(self) -> &'static str {
        match self {
            Uplink::Passt => "passt",
            Uplink::Slirp => "slirp",
        }
    }
}

/// How a backend's shares reach its guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharesVia {
    /// One virtio-fs device per share.
    Virtiofs,
    /// 9P on vsock: share `i` on the host's port `first_port + i`, with a
    /// file server of its own that knows it by its host path (plan9.rs).
    Plan9PortPerShare { first_port: u32 },
    /// 9P on vsock: every share on the host's `port`, attached by its tag
    /// (HCS's Plan 9 server, whose shares' AccessName is the tag).
    // Constructed by the HCS backend, which is built for Windows only.
    #[cfg_attr(not(windows), allow(dead_code))]
    Plan9AttachByTag { port: u32 },
}

impl SharesVia {
    /// What the guest is told about share number `index`.
    pub fn transport(self, index: usize, share: &Share) -> ShareTransport {
        match self {
            SharesVia::Virtiofs => ShareTransport::Virtiofs,
            SharesVia::Plan9PortPerShare { first_port } => ShareTransport::Plan9(Plan9Channel {
                port: first_port + index as u32,
                aname: share.host_path.display().to_string(),
            }),
            SharesVia::Plan9AttachByTag { port } => {
                ShareTransport::Plan9(Plan9Channel { port, aname: share.tag.clone() })
            }
        }
    }
}

/// Everything a backend needs to boot a Berth VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub cpus: u32,
    pub memory_mib: u64,
    /// Raw data disk image (the guest formats it on first boot), for
    /// backends whose guest has a data disk (see [`GuestFacts::data_disk`]).
    pub disk: PathBuf,
    /// The size the data disk image is grown to.
    pub disk_gib: u64,
    pub shares: Vec<Share>,
    /// The protocol asked for the shares (a backend that has one only ignores it).
    pub share_protocol: ShareProtocol,
    /// The uplink asked for; None: the backend's preference.
    pub uplink: Option<Uplink>,
    /// Private directory for the VM's sockets.
    pub run_dir: PathBuf,
    /// Kernel console output.
    pub console_log: PathBuf,
    /// The agent's own log.
    pub agent_log: PathBuf,
    /// What the virtual machine monitor itself prints (QEMU's stderr).
    pub vmm_log: PathBuf,
    /// What helper programs (virtiofsd, vhost-device-vsock) print.
    pub helpers_log: PathBuf,
    /// Agent log filter, passed on the kernel command line.
    pub agent_log_level: String,
    /// Where a backend without a data disk (local) keeps the engine's state.
    pub engine_dir: PathBuf,
    /// The key this boot's agent admits connections with.
    pub agent_key: berth_agent_proto::AgentKey,
}

/// What differs between backends' guests, declared by each backend: the
/// daemon and the boot contract ask for these instead of asking which
/// backend runs (podman's `VMProvider` has the same questions).
#[derive(Debug, Clone, PartialEq)]
pub struct GuestFacts {
    /// Where the engine keeps its state, as the agent sees it (Docker's `DockerRootDir`).
    pub engine_data_dir: PathBuf,
    /// How [`VmSpec::shares`] reach the guest. None: the engine runs on this
    /// host and sees its whole filesystem, so any bind source works.
    pub share_transport: Option<SharesVia>,
    /// Who decides access to the shares' files: the file server runs as the
    /// daemon's user, so a non-root daemon's kernel decides as for that user.
    pub share_access: ShareAccess,
    /// The data disk's device in the guest; None: the guest has no data disk.
    pub data_disk: Option<String>,
    /// The guest's network configuration; None: the guest uses the host's.
    pub network: Option<GuestNetwork>,
    /// Whether the guest has exactly [`VmSpec::memory_mib`] (a VM) rather
    /// than the host's memory.
    pub dedicated_memory: bool,
    /// Whether the guest keeps a clock of its own, which the daemon keeps in
    /// step with the host's (a VM), rather than running on the host's.
    pub own_clock: bool,
    /// The console the agent (as PID 1) logs to, which the backend copies
    /// into [`VmSpec::agent_log`]: a virtio console where there is one, a
    /// COM port under HCS.
    pub agent_log_device: LogDevice,
}

/// The guest's network: its IPv4 configuration (given by the host, or DHCP
/// where only the network knows the addresses) and the host's alias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuestNetwork {
    pub ipv4: NetConfig,
    /// Where the guest reaches the host's loopback services (host.docker.internal).
    pub host_alias: Ipv4Addr,
}

/// The boot contract a backend that boots the agent as PID 1 passes on the
/// kernel command line; the backend adds its own kernel arguments around it.
pub fn boot_params(spec: &VmSpec, facts: &GuestFacts) -> BootParams {
    BootParams {
        hostname: Some("berth".into()),
        net: facts.network.map(|n| n.ipv4),
        host_alias: facts.network.map(|n| n.host_alias),
        disk: facts.data_disk.clone(),
        shares: match facts.share_transport {
            Some(via) => spec
                .shares
                .iter()
                .enumerate()
                .map(|(i, s)| ShareMount {
                    tag: s.tag.clone(),
                    guest_path: s.guest_path.display().to_string(),
                    transport: via.transport(i, s),
                })
                .collect(),
            None => Vec::new(),
        },
        share_access: facts.share_access,
        log: Some(spec.agent_log_level.clone()),
        rosetta: None,
        log_device: facts.agent_log_device,
    }
}

/// A process that belongs to a running VM (for status and crash recovery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmProcess {
    pub name: String,
    pub pid: u32,
}

pub trait VmBackend: Send + Sync {
    fn name(&self) -> &'static str;
    /// How the guest CPU runs, as `berth status` shows it (`kvm`, `tcg`, `none`).
    fn accel(&self) -> &'static str;
    /// What the guest booted from `spec` looks like (see [`GuestFacts`]).
    fn facts(&self, spec: &VmSpec) -> GuestFacts;
    /// Starts the VM and its helpers; returns once the VM process runs (the
    /// agent may not answer yet).
    fn start<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn RunningVm>>>;
}

pub trait RunningVm: Send {
    /// How to reach the guest agent.
    fn agent_endpoint(&self) -> AgentEndpoint;
    fn processes(&self) -> Vec<VmProcess>;
    /// The listener on which the agent announces that it serves, if this
    /// VM's transport has one (taken once; see agent_client::ReadyListener).
    fn take_ready_listener(&mut self) -> Option<crate::agent_client::ReadyListener>;
    /// Resolves when the VM has exited on its own; describes how.
    fn wait(&mut self) -> BoxFuture<'_, String>;
    /// Waits up to `grace` for the VM to exit (after the agent was asked to
    /// power off), then kills it; stops the helpers and removes their sockets.
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<()>>;
    /// The outbound network this VM got, where the backend chooses one.
    fn uplink(&self) -> Option<Uplink> {
        None
    }
    /// The guest's facts as this start made them, where they differ from
    /// [`VmBackend::facts`]'s (HCS: the address HCN gave the endpoint).
    fn started_facts(&self) -> Option<GuestFacts> {
        None
    }
}

/// Which kind of machine runs the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A Berth VM (the default everywhere).
    #[default]
    Vm,
    /// No VM: the agent runs on this (Linux) host.
    Local,
}

/// What runs a Berth VM (`[vm] hypervisor` in config.toml): one per host
/// OS, but two on Windows, where WSL 2 (the default: no administrator
/// rights, Microsoft's kernel) and Hyper-V through HCS (Berth's own kernel,
/// an elevated daemon) both run Linux. A VM setting rather than a third
/// `backend`: `backend` says whether there is a VM at all, this says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    Qemu,
    Vz,
    Wsl,
    Hcs,
}

impl Hypervisor {
    pub fn name(self) -> &'static str {
        match self {
            Hypervisor::Qemu => "qemu",
            Hypervisor::Vz => "vz",
            Hypervisor::Wsl => "wsl",
            Hypervisor::Hcs => "hcs",
        }
    }

    /// The hypervisors Berth drives on `os` (`std::env::consts::OS`), the default first.
    pub fn on(os: &str) -> &'static [Hypervisor] {
        match os {
            "linux" => &[Hypervisor::Qemu],
            "macos" => &[Hypervisor::Vz],
            "windows" => &[Hypervisor::Wsl, Hypervisor::Hcs],
            _ => &[],
        }
    }

    /// The hypervisor `asked` for (None: the default) on `os`, refused with
    /// what that host has when it has no such one.
    pub fn choose(asked: Option<Hypervisor>, os: &str) -> Result<Option<Hypervisor>> {
        let available = Hypervisor::on(os);
        match asked {
            None => Ok(available.first().copied()),
            Some(h) if available.contains(&h) => Ok(Some(h)),
            Some(h) => {
                let what = match h {
                    Hypervisor::Hcs => "Hyper-V through the Host Compute Service, a Windows hypervisor",
                    Hypervisor::Wsl => "WSL 2, a Windows hypervisor",
                    Hypervisor::Vz => "Apple's Virtualization.framework, a macOS hypervisor",
                    Hypervisor::Qemu => "QEMU, which Berth drives on Linux only",
                };
                let names: Vec<&str> = available.iter().map(|h| h.name()).collect();
                match names.as_slice() {
                    [] => anyhow::bail!("vm.hypervisor = \"{}\" is {what}; Berth has no VM backend for {os}", h.name()),
                    [only] => anyhow::bail!(
                        "vm.hypervisor = \"{}\" is {what}; on {os} Berth's VMs run on {only} (leave vm.hypervisor unset)",
                        h.name()
                    ),
                    _ => anyhow::bail!("vm.hypervisor = \"{}\" is {what}; on {os} use one of: {}", h.name(), names.join(", ")),
                }
            }
        }
    }
}

/// The backend of that kind for this host, booting a guest of `arch` on
/// `hypervisor` (as [`Hypervisor::choose`] chose it for this host).
pub fn host_backend(
    kind: BackendKind,
    arch: arch::GuestArch,
    hypervisor: Option<Hypervisor>,
) -> Result<Box<dyn VmBackend>> {
    if kind == BackendKind::Local && !arch.is_host() {
        anyhow::bail!(
            "the local backend runs the engine on this {} host; vm.arch = \"{}\" needs backend = \"vm\"",
            std::env::consts::ARCH,
            arch.name()
        );
    }
    #[cfg(not(windows))]
    let _ = hypervisor; // One per host elsewhere, checked when the config was read.
    #[cfg(target_os = "linux")]
    {
        match kind {
            BackendKind::Vm => Ok(Box::new(qemu::QemuBackend::locate(arch)?)),
            BackendKind::Local => Ok(Box::new(local::LocalBackend::locate()?)),
        }
    }
    #[cfg(target_os = "macos")]
    {
        match kind {
            BackendKind::Vm => Ok(Box::new(vz::VzBackend::locate()?)),
            BackendKind::Local => anyhow::bail!("the local backend needs a Linux host"),
        }
    }
    #[cfg(windows)]
    {
        match (kind, hypervisor) {
            (BackendKind::Vm, Some(Hypervisor::Hcs)) => {
                // Refused here, in the user's terminal, before any HCS call.
                hcs::require_elevation(crate::platform::is_elevated())?;
                hcs::check_arch(arch)?;
                Ok(Box::new(hcs::HcsBackend::locate()?))
            }
            // WSL 2: no administrator rights needed.
            (BackendKind::Vm, _) => Ok(Box::new(wsl::WslBackend::locate()?)),
            (BackendKind::Local, _) => anyhow::bail!("the local backend needs a Linux host"),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
    {
        match kind {
            BackendKind::Vm => anyhow::bail!("Berth has no VM backend for {}", std::env::consts::OS),
            BackendKind::Local => anyhow::bail!("the local backend needs a Linux host"),
        }
    }
}

/// A spec for the backends' unit tests.
#[cfg(test)]
pub fn test_spec() -> VmSpec {
    VmSpec {
        cpus: 1,
        memory_mib: 512,
        disk: "/h/disk.raw".into(),
        disk_gib: 1,
        shares: vec![Share { tag: "share0".into(), host_path: "/home/me".into(), guest_path: "/home/me".into() }],
        share_protocol: ShareProtocol::Virtiofs,
        uplink: None,
        run_dir: "/h/run".into(),
        console_log: "/h/logs/console.log".into(),
        agent_log: "/h/logs/agent.log".into(),
        vmm_log: "/h/logs/qemu.log".into(),
        helpers_log: "/h/logs/helpers.log".into(),
        agent_log_level: "info".into(),
        engine_dir: "/h/local".into(),
        agent_key: berth_agent_proto::AgentKey::from_bytes([0xab; 32]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec { agent_log_level: "debug".into(), ..test_spec() }
    }

    #[test]
    fn shares_are_where_the_engine_knows_the_directories() {
        use crate::api::host_paths::HostPaths;
        let windows = shares_of(&[r"C:\Users\me".into(), r"D:\src".into()], HostPaths::Windows);
        assert_eq!(
            windows,
            vec![
                Share { tag: "share0".into(), host_path: r"C:\Users\me".into(), guest_path: "/mnt/c/Users/me".into() },
                Share { tag: "share1".into(), host_path: r"D:\src".into(), guest_path: "/mnt/d/src".into() },
            ]
        );
        let posix = shares_of(&["/home/me".into()], HostPaths::Posix);
        assert_eq!(posix[0].guest_path, PathBuf::from("/home/me"));
        assert_eq!(posix[0].tag, "share0");
    }

    #[test]
    fn the_boot_contract_follows_the_backends_facts() {
        let ipv4 = berth_agent_proto::boot::StaticIpv4 {
            address: "192.168.64.2".parse().unwrap(),
            prefix_len: 24,
            gateway: "192.168.64.1".parse().unwrap(),
            dns: "192.168.64.1".parse().unwrap(),
        };
        let facts = GuestFacts {
            engine_data_dir: berth_agent_proto::boot::GUEST_DATA_DIR.into(),
            share_transport: Some(SharesVia::Virtiofs),
            data_disk: Some("/dev/sda".into()),
            network: Some(GuestNetwork { ipv4: NetConfig::Static(ipv4), host_alias: "192.168.64.1".parse().unwrap() }),
            share_access: ShareAccess::Host,
            dedicated_memory: true,
            own_clock: true,
            agent_log_device: LogDevice::default(),
        };
        let params = boot_params(&spec(), &facts);
        assert_eq!(params.share_access, ShareAccess::Host);
        assert_eq!(params.disk.as_deref(), Some("/dev/sda"));
        assert_eq!(params.net, Some(NetConfig::Static(ipv4)));
        assert_eq!(params.host_alias, Some("192.168.64.1".parse().unwrap()));
        assert_eq!(params.log.as_deref(), Some("debug"));
        assert_eq!(
            params.shares,
            vec![ShareMount {
                tag: "share0".into(),
                guest_path: "/home/me".into(),
                transport: ShareTransport::Virtiofs
            }]
        );

        let over_9p =
            GuestFacts { share_transport: Some(SharesVia::Plan9PortPerShare { first_port: 5640 }), ..facts.clone() };
        assert_eq!(
            boot_params(&spec(), &over_9p).shares[0].transport,
            ShareTransport::Plan9(Plan9Channel { port: 5640, aname: "/home/me".into() })
        );
        let hcs = GuestFacts { share_transport: Some(SharesVia::Plan9AttachByTag { port: 564 }), ..facts.clone() };
        assert_eq!(
            boot_params(&spec(), &hcs).shares[0].transport,
            ShareTransport::Plan9(Plan9Channel { port: 564, aname: "share0".into() })
        );

        let bare = GuestFacts { share_transport: None, data_disk: None, network: None, ..facts };
        let params = boot_params(&spec(), &bare);
        assert_eq!((params.disk, params.net, params.host_alias), (None, None, None));
        assert!(params.shares.is_empty(), "no transport, no share mounts");
    }
}
