//! The OCI runtime spec of one container, with Docker's default isolation.
//!
//! Defaults follow moby's `oci.DefaultSpec` and `daemon/oci_linux.go`: the
//! 14-capability default set (no inheritable or ambient capabilities),
//! masked and read-only /proc and /sys paths, the standard /dev, /dev/pts,
//! /dev/shm, /dev/mqueue, /sys and read-only /sys/fs/cgroup mounts, new
//! pid/ipc/uts/mount/cgroup (and, unless host networking, net) namespaces,
//! and a device cgroup that allows only the usual character devices.
//! `privileged` lifts capabilities, masks and device rules, as Docker does.
//! The seccomp profile is attached by the caller (it is data, not logic).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid container option: {0}")]
    Invalid(String),
    #[error("building the runtime spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability of Linux 6.1, for `--privileged` and `--cap-add ALL`.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Docker's default /dev/shm size (64 MiB).
pub const DEFAULT_SHM_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A network namespace of its own, loopback only (`--network none`).
    #[default]
    Private,
    /// The VM's network namespace.
    Host,
    /// A namespace made beforehand, endpoints already up (bridge and user
    /// networks, engine net/attach.rs), or another container's.
    Join(PathBuf),
}

/// Whether a container gets a PID, IPC or UTS namespace of its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NamespaceMode {
    #[default]
    Private,
    /// The VM's own namespace (`--pid host`, ...).
    Host,
    /// Another container's, as the user named it (`--pid container:web`);
    /// the agent turns it into `Join` at start, when that container's
    /// process is known.
    Container(String),
    /// The namespace file to join (`/proc/<pid>/ns/<kind>`).
    Join(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// memory.max in bytes.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (-1 unlimited), as Docker's MemorySwap.
    pub memory_swap: Option<i64>,
    /// memory.low in bytes (Docker's MemoryReservation, a soft limit).
    pub memory_reservation: Option<i64>,
    /// `--cpus` in billionths of a CPU (Docker's NanoCpus).
    pub nano_cpus: Option<i64>,
    /// `--cpu-shares` (cgroup v1 scale, 2..262144).
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

/// What the engine resolved from the image config and the create request.
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub tty: bool,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    /// `ALL` or names with or without the `CAP_` prefix, any case.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub network: NetworkMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    pub uts: NamespaceMode,
    pub shm_size: Option<u64>,
    /// (target, mount options such as `size=64m,mode=1777`)
    pub tmpfs: Vec<(String, String)>,
    pub binds: Vec<Bind>,
    pub resources: Resources,
    /// Docker's `--device-cgroup-rule`s, after the default device rules.
    pub device_rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>,
    /// The container's cgroup, relative to the cgroup root.
    pub cgroups_path: PathBuf,
}

fn capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    // oci-spec's FromStr wants names without the prefix; its serde form has it.
    serde_json::from_value(serde_json::Value::String(full))
        .map_err(|_| SpecError::Invalid(format!("unknown capability {name:?}")))
}

/// The effective capability set: the default (or all, when privileged),
/// plus `cap_add`, minus `cap_drop`, with `ALL` understood on either side.
pub fn capabilities(opts: &ContainerOptions) -> Result<HashSet<Capability>, SpecError> {
    let all = || ALL_CAPABILITIES.iter().map(|c| capability(c)).collect::<Result<HashSet<_>, _>>();
    let is_all = |list: &[String]| list.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut caps: HashSet<Capability> = if opts.privileged || is_all(&opts.cap_add) {
        all()?
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| capability(c)).collect::<Result<_, _>>()?
    };
    for name in opts.cap_add.iter().filter(|c| !c.eq_ignore_ascii_case("ALL")) {
        caps.insert(capability(name)?);
    }
    if is_all(&opts.cap_drop) {
        caps.clear();
    }
    for name in opts.cap_drop.iter().filter(|c| !c.eq_ignore_ascii_case("ALL")) {
        caps.remove(&capability(name)?);
    }
    Ok(caps)
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn default_mounts(opts: &ContainerOptions) -> Result<Vec<Mount>, SpecError> {
    let shm = format!("size={}", opts.shm_size.unwrap_or(DEFAULT_SHM_BYTES));
    let sys_mode = if opts.privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", sys_mode])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", sys_mode])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        // Shared memory belongs with the IPC namespace: the VM's own for
        // `--ipc host`, as Docker binds the host's.
        if opts.ipc == NamespaceMode::Host {
            mount("/dev/shm", "bind", "/dev/shm", &["rbind", "rw"])?
        } else {
            mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &shm])?
        },
    ])
}

/// The device nodes every container gets, and the device cgroup rules.
fn default_devices(
) -> Result<(Vec<oci_spec::runtime::LinuxDevice>, Vec<oci_spec::runtime::LinuxDeviceCgroup>), SpecError> {
    let nodes = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ];
    let devices = nodes
        .iter()
        .map(|(path, major, minor)| {
            LinuxDeviceBuilder::default()
                .path(*path)
                .typ(LinuxDeviceType::C)
                .major(*major)
                .minor(*minor)
                .file_mode(0o666u32)
                .uid(0u32)
                .gid(0u32)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rule = |allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
        if let Some(major) = major {
            b = b.major(major);
        }
        if let Some(minor) = minor {
            b = b.minor(minor);
        }
        b.build()
    };
    let mut rules = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")?];
    // mknod of any device, as Docker allows; opening them is what is limited.
    rules.push(rule(true, LinuxDeviceType::C, None, None, "m")?);
    rules.push(rule(true, LinuxDeviceType::B, None, None, "m")?);
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (10, 200)] {
        rules.push(rule(true, LinuxDeviceType::C, Some(major), Some(minor), "rwm")?);
    }
    rules.push(rule(true, LinuxDeviceType::C, Some(136), None, "rwm")?); // /dev/pts/*
    Ok((devices, rules))
}

fn resources(
    opts: &ContainerOptions,
    device_rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut resources = resource_limits(&opts.resources)?;
    if !opts.privileged {
        resources.set_devices(Some(device_rules.into_iter().chain(opts.device_rules.iter().cloned()).collect()));
    } else {
        resources.set_devices(Some(vec![LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build()?]));
    }
    Ok(resources)
}

/// The limits alone (no device rules), as the spec carries them: what
/// `cgroup::create` writes at start and `cgroup::update` at `docker update`.
pub fn resource_limits(r: &Resources) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(limit) = r.memory {
        memory = memory.limit(limit);
    }
    if let Some(swap) = r.memory_swap {
        memory = memory.swap(swap);
    }
    if let Some(reservation) = r.memory_reservation {
        memory = memory.reservation(reservation);
    }
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(nano) = r.nano_cpus {
        if nano < 0 {
            return Err(SpecError::Invalid(format!("negative NanoCpus {nano}")));
        }
        let period: u64 = 100_000;
        cpu = cpu.period(period).quota((nano as i128 * period as i128 / 1_000_000_000) as i64);
    }
    if let Some(shares) = r.cpu_shares {
        // oci-spec carries v1 shares; libcgroups converts to cpu.weight on v2.
        cpu = cpu.shares(shares);
    }
    if let Some(cpus) = &r.cpuset_cpus {
        cpu = cpu.cpus(cpus.clone());
    }
    if let Some(mems) = &r.cpuset_mems {
        cpu = cpu.mems(mems.clone());
    }
    let mut builder = LinuxResourcesBuilder::default().memory(memory.build()?).cpu(cpu.build()?);
    if let Some(limit) = r.pids_limit {
        builder = builder.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    Ok(builder.build()?)
}

/// The runtime spec for a container whose root filesystem is at `rootfs`.
pub fn build(opts: &ContainerOptions, rootfs: &Path) -> Result<Spec, SpecError> {
    if opts.args.is_empty() {
        return Err(SpecError::Invalid("no command: the image has no Cmd or Entrypoint and none was given".into()));
    }
    let caps = capabilities(opts)?;
    let process = ProcessBuilder::default()
        .terminal(opts.tty)
        .args(opts.args.clone())
        .env(opts.env.clone())
        .cwd(if opts.cwd.is_empty() { "/".to_string() } else { opts.cwd.clone() })
        .user(UserBuilder::default().uid(opts.uid).gid(opts.gid).additional_gids(opts.additional_gids.clone()).build()?)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()?,
        )
        .no_new_privileges(opts.no_new_privileges)
        .build()?;

    let mut mounts = default_mounts(opts)?;
    for (target, options) in &opts.tmpfs {
        let mut opt: Vec<&str> = vec!["nosuid", "nodev", "noexec"];
        opt.extend(options.split(',').filter(|o| !o.is_empty()));
        mounts.push(mount(target, "tmpfs", "tmpfs", &opt)?);
    }
    for bind in &opts.binds {
        let options: &[&str] = if bind.readonly { &["rbind", "ro"] } else { &["rbind", "rw"] };
        mounts.push(
            MountBuilder::default()
                .destination(&bind.target)
                .typ("bind")
                .source(&bind.source)
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()?,
        );
    }

    let mut namespaces = Vec::new();
    for (typ, mode) in [
        (LinuxNamespaceType::Pid, &opts.pid),
        (LinuxNamespaceType::Ipc, &opts.ipc),
        (LinuxNamespaceType::Uts, &opts.uts),
    ] {
        match mode {
            NamespaceMode::Private => namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?),
            NamespaceMode::Host => {}
            NamespaceMode::Join(path) => namespaces.push(LinuxNamespaceBuilder::default().typ(typ).path(path).build()?),
            NamespaceMode::Container(name) => {
                return Err(SpecError::Invalid(format!("the {typ:?} namespace of container {name} was not resolved")))
            }
        }
    }
    namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Mount).build()?);
    namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Cgroup).build()?);
    match &opts.network {
        NetworkMode::Private => {
            namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).build()?)
        }
        NetworkMode::Join(path) => {
            namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network).path(path).build()?)
        }
        NetworkMode::Host => {}
    }

    let (devices, device_rules) = default_devices()?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(devices)
        .resources(resources(opts, device_rules)?)
        .cgroups_path(opts.cgroups_path.clone());
    // Always set: oci-spec's defaults carry masks of their own, which a
    // privileged container must not get.
    let paths = |list: &[&str]| if opts.privileged { Vec::new() } else { list.iter().map(|p| p.to_string()).collect() };
    linux = linux.masked_paths(paths(MASKED_PATHS)).readonly_paths(paths(READONLY_PATHS));

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(rootfs).readonly(opts.readonly_rootfs).build()?)
        // Sharing a UTS namespace means leaving its name alone.
        .hostname(if opts.uts == NamespaceMode::Private { opts.hostname.clone() } else { String::new() })
        .process(process)
        .mounts(mounts)
        .linux(linux.build()?)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ContainerOptions {
        ContainerOptions {
            args: vec!["sh".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            hostname: "abc123".into(),
            cgroups_path: "/berth/abc123".into(),
            ..Default::default()
        }
    }

    fn json(spec: &Spec) -> serde_json::Value {
        serde_json::to_value(spec).unwrap()
    }

    fn names(caps: &serde_json::Value) -> Vec<String> {
        let mut v: Vec<String> = caps.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn defaults_match_docker() {
        let spec = json(&build(&opts(), Path::new("/var/lib/berth/c/rootfs")).unwrap());
        let mut expected: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        let caps = &spec["process"]["capabilities"];
        assert_eq!(names(&caps["bounding"]), expected);
        assert_eq!(names(&caps["effective"]), expected);
        assert!(caps["inheritable"].as_array().unwrap().is_empty());
        assert_eq!(spec["linux"]["maskedPaths"].as_array().unwrap().len(), MASKED_PATHS.len());
        assert_eq!(spec["linux"]["readonlyPaths"].as_array().unwrap().len(), READONLY_PATHS.len());
        let ns: Vec<&str> =
            spec["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup", "network"]);
        let mounts: Vec<&str> =
            spec["mounts"].as_array().unwrap().iter().map(|m| m["destination"].as_str().unwrap()).collect();
        assert_eq!(mounts, ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]);
        let cgroup = &spec["mounts"][4]["options"];
        assert!(cgroup.as_array().unwrap().contains(&"ro".into()), "/sys/fs/cgroup is read-only");
        assert!(spec["mounts"][6]["options"].as_array().unwrap().contains(&"size=67108864".into()));
        let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false, "the device cgroup starts from deny-all");
        assert_eq!(spec["root"]["path"], "/var/lib/berth/c/rootfs");
        assert_eq!(spec["hostname"], "abc123");
        assert_eq!(spec["process"]["cwd"], "/");
    }

    #[test]
    fn capability_options() {
        let mut o = opts();
        o.cap_add = vec!["sys_admin".into(), "CAP_NET_ADMIN".into()];
        o.cap_drop = vec!["chown".into(), "MKNOD".into()];
        let caps = capabilities(&o).unwrap();
        assert!(caps.contains(&Capability::SysAdmin) && caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Chown) && !caps.contains(&Capability::Mknod));
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());

        o.cap_add.clear();
        o.cap_drop = vec!["ALL".into()];
        assert!(capabilities(&o).unwrap().is_empty());
        o.cap_drop = vec![];
        o.cap_add = vec!["all".into()];
        assert_eq!(capabilities(&o).unwrap().len(), ALL_CAPABILITIES.len());
        o.cap_add = vec!["NOT_A_CAP".into()];
        assert!(capabilities(&o).unwrap_err().to_string().contains("NOT_A_CAP"));
    }

    #[test]
    fn privileged_and_host_network() {
        let mut o = opts();
        o.privileged = true;
        o.network = NetworkMode::Host;
        let spec = json(&build(&o, Path::new("/r")).unwrap());
        assert!(spec["linux"].get("maskedPaths").is_none_or(|v| v.as_array().unwrap().is_empty()));
        let ns: Vec<&str> =
            spec["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert!(!ns.contains(&"network"));
        assert!(names(&spec["process"]["capabilities"]["bounding"]).contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(spec["linux"]["resources"]["devices"][0]["allow"], true);
    }

    #[test]
    fn resources_binds_and_tmpfs() {
        let mut o = opts();
        o.resources = Resources {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            nano_cpus: Some(1_500_000_000),
            cpu_shares: Some(512),
            pids_limit: Some(100),
            cpuset_cpus: Some("0".into()),
            ..Default::default()
        };
        o.readonly_rootfs = true;
        o.no_new_privileges = true;
        o.binds = vec![Bind { source: "/home/me/src".into(), target: "/src".into(), readonly: true }];
        o.tmpfs = vec![("/run".into(), "size=1m".into())];
        let spec = json(&build(&o, Path::new("/r")).unwrap());
        let res = &spec["linux"]["resources"];
        assert_eq!(res["memory"]["limit"], 64 << 20);
        assert_eq!(res["memory"]["swap"], 128 << 20);
        assert_eq!((res["cpu"]["quota"].as_i64(), res["cpu"]["period"].as_u64()), (Some(150_000), Some(100_000)));
        assert_eq!(res["pids"]["limit"], 100);
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        let bind = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/src").unwrap();
        assert_eq!(bind["options"], serde_json::json!(["rbind", "ro"]));
        let tmpfs = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/run").unwrap();
        assert!(tmpfs["options"].as_array().unwrap().contains(&"size=1m".into()));
        assert_eq!(res["cpu"]["shares"], 512);
    }

    #[test]
    fn host_and_joined_namespaces() {
        let mut o = opts();
        o.pid = NamespaceMode::Host;
        o.ipc = NamespaceMode::Host;
        o.uts = NamespaceMode::Join("/proc/42/ns/uts".into());
        let spec = json(&build(&o, Path::new("/r")).unwrap());
        let ns: Vec<(&str, Option<&str>)> = spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["type"].as_str().unwrap(), n["path"].as_str()))
            .collect();
        assert_eq!(ns, [("uts", Some("/proc/42/ns/uts")), ("mount", None), ("cgroup", None), ("network", None)]);
        assert!(spec.get("hostname").is_none_or(|h| h == ""), "a shared UTS namespace keeps its name");
        let shm = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        assert_eq!((shm["source"].as_str(), shm["type"].as_str()), (Some("/dev/shm"), Some("bind")));
        o.pid = NamespaceMode::Container("web".into());
        assert!(build(&o, Path::new("/r")).unwrap_err().to_string().contains("not resolved"));
    }

    #[test]
    fn a_command_is_required() {
        let mut o = opts();
        o.args.clear();
        assert!(build(&o, Path::new("/r")).unwrap_err().to_string().contains("no command"));
    }
}
