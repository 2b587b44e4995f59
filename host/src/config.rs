//! `$BERTH_HOME/config.toml`.
//!
//! ```toml
//! backend = "vm"                # or "local": no VM, the agent runs on this Linux host (root)
//!
//! [vm]
//! cpus = 2
//! memory-mib = 2048
//! disk-gib = 64
//! shares = ["~", "/srv/data"]   # host directories, mounted at the same path in the VM
//!                               # (default: the home directory and the temp dirs)
//! arch = "aarch64"              # the guest's CPU (default: the host's); another one is emulated
//! share-transport = "9p"        # shares over 9P on vsock (as on Hyper-V) instead of virtio-fs
//! uplink = "slirp"              # QEMU's outbound network: "slirp" (default) or "passt"
//! hypervisor = "hcs"            # Windows: "wsl" (default, no admin) or "hcs" (Hyper-V, own kernel, elevated)
//!
//! [api]
//! tcp = "127.0.0.1:2375"        # also serve the Docker API here: no authentication, no TLS
//! ```
//!
//! Unknown keys and bad values are errors that name the key: a typo must not
//! silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::vm::arch::GuestArch;
use crate::vm::{BackendKind, Hypervisor, ShareProtocol, Uplink};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    backend: Option<BackendKind>,
    #[serde(default)]
    vm: VmSection,
    #[serde(default)]
    engine: EngineSection,
    #[serde(default)]
    api: ApiSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ApiSection {
    tcp: Option<String>,
}

/// Named as in Docker's daemon.json.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EngineSection {
    registry_mirrors: Option<Vec<String>>,
    insecure_registries: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct VmSection {
    cpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_gib: Option<u64>,
    shares: Option<Vec<String>>,
    arch: Option<GuestArch>,
    share_transport: Option<ShareProtocol>,
    uplink: Option<Uplink>,
    hypervisor: Option<Hypervisor>,
}

/// The effective settings, defaults applied and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `backend` in the file; BERTH_BACKEND overrides it.
    pub backend: BackendKind,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Host directories shared into the VM at the same absolute path.
    pub shares: Vec<PathBuf>,
    /// The guest's CPU architecture.
    pub arch: GuestArch,
    /// The protocol the shares reach the VM with.
    pub share_protocol: ShareProtocol,
    /// The VM's outbound network, where the backend can choose (QEMU);
    /// None: the backend's default (QEMU: slirp).
    pub uplink: Option<Uplink>,
    /// What runs the VM on this host (None: a host Berth has no VM for);
    /// a hypervisor of another OS is refused when the file is read.
    pub hypervisor: Option<Hypervisor>,
    /// Docker Hub mirrors (URLs), tried before Docker Hub itself.
    pub registry_mirrors: Vec<String>,
    /// `host:port` registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// A TCP address that serves the Docker API too (none by default: the
    /// unix socket is private to its owner, a TCP port is open to every
    /// local user, and to the network on a non-loopback address).
    pub api_tcp: Option<SocketAddr>,
}

pub const MAX_CPUS: u32 = 64;

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = read_config_text(path)?;
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
        Config::parse(&text, home.as_deref()).with_context(|| format!("invalid config {}", path.display()))
    }

    pub fn parse(text: &str, home: Option<&Path>) -> Result<Config> {
        let file: ConfigFile = toml::from_str(text)?;
        let backend = match std::env::var("BERTH_BACKEND").ok().filter(|b| !b.is_empty()) {
            Some(name) => toml::Value::String(name.clone())
                .try_into()
                .map_err(|_| anyhow::anyhow!("BERTH_BACKEND={name} is not one of vm, local"))?,
            None => file.backend.unwrap_or_default(),
        };
        let vm = file.vm;
        let host_cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let cpus = vm.cpus.unwrap_or(host_cpus.min(8));
        if !(1..=MAX_CPUS).contains(&cpus) {
            bail!("vm.cpus = {cpus} is out of range: use 1 to {MAX_CPUS}");
        }
        let memory_mib = vm.memory_mib.unwrap_or(2048);
        if !(256..=1024 * 1024).contains(&memory_mib) {
            bail!("vm.memory-mib = {memory_mib} is out of range: use 256 to 1048576");
        }
        let disk_gib = vm.disk_gib.unwrap_or(64);
        if !(1..=16 * 1024).contains(&disk_gib) {
            bail!("vm.disk-gib = {disk_gib} is out of range: use 1 to 16384");
        }
        let mut shares = Vec::new();
        for entry in vm.shares.unwrap_or_else(|| default_shares(home)) {
            let path = expand_home(&entry, home)?;
            if !path.is_absolute() {
                bail!("vm.shares: {entry:?} is not an absolute path");
            }
            if !path.is_dir() {
                bail!("vm.shares: {entry:?} is not an existing directory");
            }
            if shares.contains(&path) {
                bail!("vm.shares: {entry:?} is listed twice");
            }
            shares.push(path);
        }
        let registry_mirrors = file.engine.registry_mirrors.unwrap_or_default();
        for mirror in &registry_mirrors {
            if !(mirror.starts_with("http://") || mirror.starts_with("https://")) {
                bail!("engine.registry-mirrors: {mirror:?} must be a URL (http:// or https://)");
            }
        }
        let insecure_registries = file.engine.insecure_registries.unwrap_or_default();
        for registry in &insecure_registries {
            if registry.contains('/') || registry.is_empty() {
                bail!("engine.insecure-registries: {registry:?} must be host[:port]");
            }
        }
        let api_tcp = match file.api.tcp {
            Some(text) => Some(parse_tcp_address(&text)?),
            None => None,
        };
        let arch = vm.arch.unwrap_or_else(GuestArch::default_for_host);
        let hypervisor = Hypervisor::choose(vm.hypervisor, std::env::consts::OS)?;
        Ok(Config {
            backend,
            cpus,
            memory_mib,
            disk_gib,
            shares,
            arch,
            share_protocol: vm.share_transport.unwrap_or_default(),
            uplink: vm.uplink,
            hypervisor,
            registry_mirrors,
            insecure_registries,
            api_tcp,
        })
    }
}

/// The file's text, "" when there is none. It decides what is shared into
/// the VM and where the API listens, so a link or another user's file is
/// refused (see private_fs.rs).
pub(crate) fn read_config_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let Some(mut file) = crate::private_fs::open_for_reading(path, "the config file")? else {
        return Ok(String::new());
    };
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(|| format!("reading {}", path.display()))?;
    Ok(text)
}

/// `IP:port` with a real port: the address must say where to listen, and a
/// port chosen by the kernel could not be written into a docker context.
fn parse_tcp_address(text: &str) -> Result<SocketAddr> {
    let address: SocketAddr = text
        .strip_prefix("tcp://")
        .unwrap_or(text)
        .parse()
        .map_err(|_| anyhow::anyhow!("api.tcp: {text:?} is not an IP:port address (e.g. \"127.0.0.1:2375\")"))?;
    if address.port() == 0 {
        bail!("api.tcp: {text:?} needs a port other than 0 (e.g. \"127.0.0.1:2375\")");
    }
    Ok(address)
}

/// What the anchors share without being asked: the home directory and the
/// temp directories (where `docker run -v "$(mktemp -d)":/x` and test
/// suites put their files), those that exist, a directory inside another
/// left out (the outer share already holds it).
fn default_shares(home: Option<&Path>) -> Vec<String> {
    let mut candidates: Vec<PathBuf> = home.map(Path::to_path_buf).into_iter().collect();
    // macOS: /tmp and /var/folders are under /private, external disks under /Volumes.
    let temp_dirs: &[&str] = if cfg!(target_os = "macos") { &["/private", "/Volumes"] } else { &["/tmp"] };
    candidates.extend(temp_dirs.iter().map(PathBuf::from));
    let existing: Vec<PathBuf> = candidates.into_iter().filter(|p| p.is_dir()).collect();
    let mut shares: Vec<String> = Vec::new();
    for path in &existing {
        let inside_another = existing.iter().any(|other| other != path && path.starts_with(other));
        if !inside_another && !shares.contains(&path.display().to_string()) {
            shares.push(path.display().to_string());
        }
    }
    shares
}

fn expand_home(entry: &str, home: Option<&Path>) -> Result<PathBuf> {
    match entry.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = home.context("vm.shares: `~` used but there is no home directory")?;
            Ok(home.join(rest.trim_start_matches('/')))
        }
        _ => Ok(PathBuf::from(entry)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn defaults_share_the_home_and_temp_directories() {
        // A home inside /tmp (this tempdir) is covered by the /tmp share.
        let h = home();
        let config = Config::parse("", Some(h.path())).unwrap();
        assert_eq!(config.shares, vec![PathBuf::from("/tmp")]);
        let config = Config::parse("", Some(Path::new("/"))).unwrap();
        assert_eq!(config.shares, vec![PathBuf::from("/")], "/ holds /tmp");
        let config = Config::parse("", None).unwrap();
        assert_eq!(config.shares, vec![PathBuf::from("/tmp")]);
        assert_eq!(config.memory_mib, 2048);
        assert_eq!(config.disk_gib, 64);
        assert!(config.cpus >= 1);
        assert!(config.arch.is_host(), "the guest is the host's architecture unless asked");
    }

    #[test]
    fn reads_every_key() {
        let h = home();
        std::fs::create_dir(h.path().join("src")).unwrap();
        let text =
            "backend = \"local\"\n[vm]\ncpus = 3\nmemory-mib = 1024\ndisk-gib = 8\nshares = [\"~/src\", \"/tmp\"]\narch = \"aarch64\"\n\
             share-transport = \"9p\"\nuplink = \"slirp\"\n\
             [engine]\nregistry-mirrors = [\"http://host.docker.internal:5000\"]\ninsecure-registries = [\"host.docker.internal:5000\"]\n\
             [api]\ntcp = \"127.0.0.1:2375\"\n";
        let config = Config::parse(text, Some(h.path())).unwrap();
        assert_eq!(
            config,
            Config {
                backend: BackendKind::Local,
                cpus: 3,
                memory_mib: 1024,
                disk_gib: 8,
                shares: vec![h.path().join("src"), PathBuf::from("/tmp")],
                arch: GuestArch::Aarch64,
                share_protocol: ShareProtocol::Plan9,
                uplink: Some(Uplink::Slirp),
                hypervisor: Some(Hypervisor::Qemu),
                registry_mirrors: vec!["http://host.docker.internal:5000".into()],
                insecure_registries: vec!["host.docker.internal:5000".into()],
                api_tcp: Some("127.0.0.1:2375".parse().unwrap()),
            }
        );
    }

    #[test]
    fn tcp_is_off_by_default_and_takes_ipv6_and_a_scheme() {
        let h = home();
        assert_eq!(Config::parse("", Some(h.path())).unwrap().api_tcp, None);
        let v6 = Config::parse("[api]\ntcp = \"[::1]:2375\"\n", Some(h.path())).unwrap();
        assert_eq!(v6.api_tcp, Some("[::1]:2375".parse().unwrap()));
        let scheme = Config::parse("[api]\ntcp = \"tcp://127.0.0.1:2376\"\n", Some(h.path())).unwrap();
        assert_eq!(scheme.api_tcp, Some("127.0.0.1:2376".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_key() {
        let h = home();
        let err = |text: &str| format!("{:#}", Config::parse(text, Some(h.path())).unwrap_err());
        assert!(err("[vm]\ncpu = 2\n").contains("unknown field `cpu`"));
        assert!(err("[vmm]\n").contains("unknown field `vmm`"));
        assert!(err("[engine]\nregistry-mirrors = [\"mirror.local\"]\n").contains("engine.registry-mirrors"));
        assert!(err("[engine]\ninsecure-registries = [\"http://x/\"]\n").contains("engine.insecure-registries"));
        assert!(err("backend = \"cloud\"\n").contains("backend"));
        assert!(err("[vm]\ncpus = 0\n").contains("vm.cpus"));
        assert!(err("[vm]\ncpus = \"two\"\n").contains("cpus"));
        assert!(err("[vm]\narch = \"arm64\"\n").contains("unknown variant `arm64`, expected `x86_64` or `aarch64`"));
        assert!(err("[vm]\nmemory-mib = 16\n").contains("vm.memory-mib"));
        assert!(err("[vm]\nshare-transport = \"smb\"\n").contains("unknown variant `smb`, expected `virtiofs` or `9p`"));
        assert!(err("[vm]\nuplink = \"tap\"\n").contains("unknown variant `tap`, expected `passt` or `slirp`"));
        assert!(err("[vm]\ndisk-gib = 0\n").contains("vm.disk-gib"));
        assert!(err("[vm]\nshares = [\"relative\"]\n").contains("vm.shares"));
        assert!(err("[vm]\nshares = [\"/no/such/dir\"]\n").contains("not an existing directory"));
        assert!(err("[vm]\nshares = [\"/tmp\", \"/tmp\"]\n").contains("twice"));
        assert!(err("[api]\ntcp = \"localhost\"\n").contains("api.tcp: \"localhost\" is not an IP:port address"));
        assert!(err("[api]\ntcp = \"127.0.0.1:99999\"\n").contains("api.tcp"));
        assert!(err("[api]\ntcp = \"127.0.0.1:0\"\n").contains("port other than 0"));
        assert!(err("[api]\nport = 2375\n").contains("unknown field `port`"));
        assert!(err("[vm]\nhypervisor = \"xen\"\n")
            .contains("unknown variant `xen`, expected one of `qemu`, `vz`, `wsl`, `hcs`"));
    }

    #[test]
    fn the_hypervisor_is_the_hosts_and_hcs_is_windows_only() {
        let h = home();
        let config = Config::parse("", Some(h.path())).unwrap();
        assert_eq!(config.hypervisor, Hypervisor::choose(None, std::env::consts::OS).unwrap());
        assert_eq!(Hypervisor::choose(None, "linux").unwrap(), Some(Hypervisor::Qemu));
        assert_eq!(Hypervisor::choose(None, "macos").unwrap(), Some(Hypervisor::Vz));
        assert_eq!(Hypervisor::choose(None, "windows").unwrap(), Some(Hypervisor::Wsl), "WSL 2 needs no admin");
        assert_eq!(Hypervisor::choose(Some(Hypervisor::Hcs), "windows").unwrap(), Some(Hypervisor::Hcs));
        assert_eq!(Hypervisor::choose(None, "freebsd").unwrap(), None);
        let refused = |asked, os| Hypervisor::choose(Some(asked), os).unwrap_err().to_string();
        assert_eq!(
            refused(Hypervisor::Hcs, "linux"),
            "vm.hypervisor = \"hcs\" is Hyper-V through the Host Compute Service, a Windows hypervisor; \
             on linux Berth's VMs run on qemu (leave vm.hypervisor unset)"
        );
        assert!(refused(Hypervisor::Qemu, "windows").ends_with("on windows use one of: wsl, hcs"));
        assert!(refused(Hypervisor::Wsl, "macos").contains("on macos Berth's VMs run on vz"));
        assert!(refused(Hypervisor::Vz, "freebsd").ends_with("Berth has no VM backend for freebsd"));
        #[cfg(target_os = "linux")]
        {
            let err = format!("{:#}", Config::parse("[vm]\nhypervisor = \"hcs\"\n", Some(h.path())).unwrap_err());
            assert!(err.contains("vm.hypervisor = \"hcs\"") && err.contains("a Windows hypervisor"), "{err}");
            assert_eq!(
                Config::parse("[vm]\nhypervisor = \"qemu\"\n", Some(h.path())).unwrap().hypervisor,
                Some(Hypervisor::Qemu)
            );
        }
    }
}
