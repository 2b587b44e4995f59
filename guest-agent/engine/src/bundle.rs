//! Preparing a container's directory for a run: what happens between
//! Docker's create request and the shim. At create, the etc files and the
//! volumes filled from the image (`populate`); at each start, the overlay,
//! the user, the working directory, the OCI spec, the shim's config and
//! its FIFOs (`prepare`); for `docker exec`, the process to enter the
//! container with (`enter_plan`). Blocking; the agent calls these from
//! blocking threads. Named after the OCI runtime's bundle, which the
//! prepared directory is (spec.json plus its rootfs).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::container::config::strings;
use crate::container::{self, Container, CreateError, CreateRequest, NetworkMode};
use crate::container_dir::{ContainerDir, ETC_FILES, RESIZE_FIFO, SHIM_CONFIG, SPEC_FILE, STDIN_FIFO};
use crate::rootfs::{self, ContainerLayer, RootfsError};
use crate::runtime::EnterPlan;
use crate::shim::ShimConfig;
use crate::spec::{Bind, ContainerOptions, NamespaceMode, SpecError};
use crate::volume::{VolumeError, VolumeStore};

/// Why a container could not be prepared. The texts are what the client
/// sees (`docker start`'s error), so they keep dockerd's words where it
/// has them.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{context}: {source}")]
    IoAt { context: String, source: std::io::Error },
    #[error("creating {name}: {source}")]
    Fifo { name: &'static str, source: nix::Error },
    /// Loading the cgroup device filter (devices.rs).
    #[error("{0}")]
    DeviceFilter(std::io::Error),
    #[error("Unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("--init needs an init binary (tini), and there is none at {}", INIT_CANDIDATES.join(" or "))]
    NoInit,
    /// A file of the running container's directory is gone or unreadable.
    #[error("the container's {0} is missing")]
    Missing(&'static str),
}

fn io_at(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
    let context = context.into();
    move |source| BundleError::IoAt { context, source }
}

/// Loaded device filters (devices.rs) by their rules, handed to the shims:
/// nearly every container has Docker's default rules, and loading
/// (verifying) a program is most of a filter's cost.
#[derive(Default)]
pub struct DeviceFilters(Mutex<HashMap<String, Arc<OwnedFd>>>);

impl DeviceFilters {
    pub fn get(&self, rules: &[crate::devices::Rule]) -> Result<Arc<OwnedFd>, BundleError> {
        let key = serde_json::to_string(rules)?;
        let mut loaded = self.0.lock().unwrap();
        if let Some(prog) = loaded.get(&key) {
            return Ok(prog.clone());
        }
        let prog = Arc::new(crate::devices::load(rules).map_err(BundleError::DeviceFilter)?);
        loaded.insert(key, prog.clone());
        Ok(prog)
    }
}

/// Where `--init` finds its init (tini, as Docker's docker-init is): the
/// initramfs puts it in the VM; a local agent may use Debian's tini.
pub const INIT_CANDIDATES: &[&str] = &["/usr/libexec/berth/docker-init", "/usr/bin/tini-static"];

/// Where `--init`'s binary is mounted in the container, as in Docker.
pub const INIT_IN_CONTAINER: &str = "/sbin/docker-init";

/// The init binary for `--init`; never silently none.
pub fn init_binary() -> Result<PathBuf, BundleError> {
    INIT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or(BundleError::NoInit)
}

/// Runs `init` as the container's first process, the command after tini's
/// `--` (everything after it is the command, flags included).
fn add_init(options: &mut ContainerOptions, init: PathBuf) {
    options.binds.push(Bind { source: init, target: PathBuf::from(INIT_IN_CONTAINER), readonly: true });
    options.args.splice(0..0, [INIT_IN_CONTAINER.to_string(), "--".to_string()]);
}

/// The contents of the container's /etc/hostname, /etc/hosts and
/// /etc/resolv.conf, by their names in ETC_FILES. `host_hosts` and
/// `host_resolv` are the VM's own files (for `--network host`, and the
/// resolver every container uses).
pub fn etc_files(
    record: &Container,
    host_hosts: Option<&str>,
    host_resolv: Option<&str>,
) -> [(&'static str, String); 3] {
    let hostname = record.config.hostname.get().map_or("localhost", String::as_str);
    let host_network = record.host_config.network_mode.get() == Some(&NetworkMode::Host);
    let hosts = if host_network {
        host_hosts.unwrap_or_default().to_string()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.0.1\t{hostname}\n"
        )
    };
    // QEMU's user-network resolver when the VM has no resolv.conf.
    let resolv = host_resolv.map(String::from).unwrap_or_else(|| "nameserver 10.0.2.3\n".into());
    let [hostname_file, hosts_file, resolv_file] = ETC_FILES;
    [(hostname_file, format!("{hostname}\n")), (hosts_file, hosts), (resolv_file, resolv)]
}

/// Writes the etc files, bound over the image's at start (as Docker does).
pub fn write_etc_files(dir: &ContainerDir, record: &Container) -> std::io::Result<()> {
    let host_hosts = std::fs::read_to_string("/etc/hosts").ok();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    for (name, content) in etc_files(record, host_hosts.as_deref(), host_resolv.as_deref()) {
        std::fs::write(dir.path().join(name), content)?;
    }
    Ok(())
}

/// The binds of the etc files over the image's.
fn etc_binds(dir: &ContainerDir) -> impl Iterator<Item = Bind> + '_ {
    ETC_FILES.iter().map(|file| Bind {
        source: dir.path().join(file),
        target: PathBuf::from("/etc").join(file),
        readonly: false,
    })
}

/// A new container's directory, made durable: its etc files, its volumes
/// filled from the image, then its record. The create's 201 promises the
/// container exists: its directory, etc files and filled volumes too, not
/// only the record.
pub fn populate(record: &Container, dir: &ContainerDir, volumes_root: &Path) -> Result<(), BundleError> {
    std::fs::create_dir_all(dir.path())?;
    write_etc_files(dir, record)?;
    fill_volumes(record, dir, volumes_root)?;
    let json = serde_json::to_vec_pretty(record)?;
    // Atomic only: the one syncfs after it makes it durable with the rest.
    crate::durable::replace(&dir.record(), &json, false)?;
    crate::durable::sync_filesystem(dir.path())?;
    Ok(())
}

/// Fills the container's new volumes from the image, at create as Docker
/// does (so `docker cp` into a created container sees the content). Volumes
/// with content, `nocopy` ones and those from `--volumes-from` are left.
pub fn fill_volumes(record: &Container, dir: &ContainerDir, volumes_root: &Path) -> Result<(), BundleError> {
    if record.volumes.iter().all(|v| v.nocopy) {
        return Ok(());
    }
    let layer = dir.layer();
    rootfs::mount_overlay(&record.layers, &layer)?;
    let filled = VolumeStore::open(volumes_root).map_err(BundleError::from).and_then(|volumes| {
        for volume in record.volumes.iter().filter(|v| !v.nocopy) {
            let in_image = crate::runtime::resolve_in_root(&layer.merged, Path::new(&volume.target))
                .map_err(io_at(format!("resolving {}", volume.target)))?;
            crate::volume::copy_up(&in_image, &volumes.data_dir(&volume.name))
                .map_err(io_at(format!("filling volume {} from the image", volume.name)))?;
        }
        Ok(())
    });
    let _ = rootfs::unmount_overlay(&layer);
    filled
}

/// The container's volumes, as the bind mounts of their data directories.
pub fn volume_binds(record: &Container, volumes_root: &Path) -> Result<Vec<Bind>, BundleError> {
    let store = VolumeStore::open(volumes_root)?;
    Ok(record
        .volumes
        .iter()
        .map(|volume| Bind {
            source: store.data_dir(&volume.name),
            target: PathBuf::from(&volume.target),
            readonly: volume.readonly,
        })
        .collect())
}

/// `--group-add` on top of the user's groups: numbers as they are, names
/// through the image's /etc/group (`group_file`).
fn add_groups(gids: &mut Vec<u32>, groups: &[&str], group_file: &str) -> Result<(), BundleError> {
    for group in groups {
        let gid = group.parse::<u32>().ok().or_else(|| {
            group_file.lines().find_map(|l| {
                let fields: Vec<&str> = l.split(':').collect();
                (fields.len() >= 3 && fields[0] == *group).then(|| fields[2].parse().ok()).flatten()
            })
        });
        match gid {
            Some(gid) if !gids.contains(&gid) => gids.push(gid),
            Some(_) => {}
            None => return Err(BundleError::UnknownGroup(group.to_string())),
        }
    }
    Ok(())
}

/// What the host side of a start provides: the cgroup hierarchy (none
/// without cgroup v2), the volume store and the device-filter cache.
pub struct Host<'a> {
    pub cgroup_root: Option<&'a Path>,
    pub volumes_root: &'a Path,
    pub device_filters: &'a DeviceFilters,
    /// The network namespace the run joins (made with its endpoints by
    /// net/attach.rs, or another container's); `None`: as NetworkMode says.
    pub network_namespace: Option<&'a Path>,
    /// Variables the run gets beside its own (legacy `--link`s).
    pub extra_env: &'a [String],
}

/// Everything before the shim: the overlay, the user, the working
/// directory, the spec and the shim's own config. `pid_namespace`: the
/// namespace of another container to join (`--pid container:NAME`). Returns
/// the loaded device filter to pass to the shim, if any.
pub fn prepare(
    record: &Container,
    dir: &ContainerDir,
    host: &Host,
    pid_namespace: Option<PathBuf>,
) -> Result<Option<Arc<OwnedFd>>, BundleError> {
    let layer = dir.layer();
    let _ = rootfs::unmount_overlay(&layer);
    rootfs::mount_overlay(&record.layers, &layer)?;
    let result = prepare_mounted(record, dir, &layer, host, pid_namespace);
    if result.is_err() {
        let _ = rootfs::unmount_overlay(&layer);
    }
    result
}

fn prepare_mounted(
    record: &Container,
    dir: &ContainerDir,
    layer: &ContainerLayer,
    host: &Host,
    pid_namespace: Option<PathBuf>,
) -> Result<Option<Arc<OwnedFd>>, BundleError> {
    let image_config = serde_json::json!({ "config": record.config });
    let request = CreateRequest::of(&record.config, &record.host_config);
    let resolved = container::resolve_request(request, &image_config, &record.id)?;
    let mut options = resolved.options;
    let user = record.config.user.as_str();
    let identity = rootfs::resolve_user(&layer.merged, user)?;
    options.uid = identity.uid;
    options.gid = identity.gid;
    options.additional_gids = identity.process_groups();
    let group_file = std::fs::read_to_string(layer.merged.join("etc/group")).unwrap_or_default();
    let groups: Vec<&str> = record.host_config.group_add.get().into_iter().flat_map(|g| g.iter()).collect();
    add_groups(&mut options.additional_gids, &groups, &group_file)?;
    if !options.env.iter().any(|e| e.starts_with("HOME=")) {
        options.env.push(format!("HOME={}", identity.home));
    }
    if !options.cwd.is_empty() {
        let cwd = crate::runtime::resolve_in_root(&layer.merged, Path::new(&options.cwd))
            .map_err(io_at("resolving the working directory"))?;
        std::fs::create_dir_all(&cwd).map_err(io_at("creating the working directory"))?;
    }
    // The container's own binds came back from `resolve`; the rest of its
    // mounts are in the record.
    options.binds.extend(record.binds_from.iter().cloned());
    options.binds.extend(volume_binds(record, host.volumes_root)?);
    if let Some(path) = pid_namespace {
        options.pid = NamespaceMode::Join(path);
    }
    if let Some(path) = host.network_namespace {
        options.network = crate::spec::NetworkMode::Join(path.to_path_buf());
    }
    for var in host.extra_env {
        let key = var.split('=').next().unwrap_or("");
        if !options.env.iter().any(|e| e.split('=').next() == Some(key)) {
            options.env.push(var.clone());
        }
    }
    if resolved.init {
        add_init(&mut options, init_binary()?);
    }
    options.binds.extend(etc_binds(dir));
    let cgroup = host.cgroup_root.map(|root| crate::cgroup::container_cgroup(root, &record.id));
    options.cgroups_path = cgroup.clone().unwrap_or_default();
    let spec = crate::spec::build(&options, &layer.merged)?;
    let device_rules = spec.linux().as_ref().and_then(|l| l.resources().as_ref()).and_then(|r| r.devices().clone());
    let device_filter = match (&cgroup, device_rules) {
        (Some(_), Some(rules)) => Some(host.device_filters.get(&rules)?),
        _ => None,
    };
    let mut shim_config = shim_config(record, options.tty, resolved.seccomp);
    shim_config.cgroup_root = host.cgroup_root.map(Path::to_path_buf);
    shim_config.cgroup = cgroup;
    shim_config.device_filter_passed = device_filter.is_some();
    let write = |name: &str, data: Vec<u8>| {
        // Per run: a power loss ends the run too, so no fsync (two fewer per start).
        crate::durable::replace(&dir.path().join(name), &data, false).map_err(io_at(format!("writing {name}")))
    };
    write(SPEC_FILE, serde_json::to_vec(&spec)?)?;
    write(SHIM_CONFIG, serde_json::to_vec(&shim_config)?)?;
    let _ = std::fs::remove_file(dir.exit());
    for (fifo, wanted) in [(STDIN_FIFO, shim_config.open_stdin), (RESIZE_FIFO, shim_config.tty)] {
        let path = dir.path().join(fifo);
        if wanted && !path.exists() {
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|source| BundleError::Fifo { name: fifo, source })?;
        }
    }
    Ok(device_filter)
}

/// The shim's settings from the record (the cgroup and the device filter
/// are the caller's to fill in).
fn shim_config(record: &Container, tty: bool, seccomp: bool) -> ShimConfig {
    let (rows, cols) = record.host_config.console_size();
    let log_options = record.host_config.log_config.get().and_then(|log| log.config.get()).cloned().unwrap_or_default();
    ShimConfig {
        tty,
        rows: rows.unwrap_or(24) as u16,
        cols: cols.unwrap_or(80) as u16,
        open_stdin: record.config.open_stdin.or_zero(),
        stdin_once: record.config.stdin_once.or_zero(),
        cgroup_root: None,
        cgroup: None,
        seccomp,
        // Checked at create; a record from before that check gets the default.
        log_limits: crate::logfile::LogLimits::from_options(log_options.iter()).unwrap_or_default(),
        device_filter_passed: false,
    }
}

/// An exec's environment: the container's, overridden by the exec's own
/// (`-e`), with HOME and (for a terminal) TERM as Docker adds them.
fn exec_env(base: Vec<String>, requested: &[String], home: &str, tty: bool) -> Vec<String> {
    let mut env = base;
    for entry in requested {
        let key = entry.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(entry.clone());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    env
}

/// The process `docker exec` asks for, resolved against the running
/// container: its user, environment and the isolation it was started with.
pub fn enter_plan(
    record: &Container,
    dir: &ContainerDir,
    cgroup: Option<PathBuf>,
    start: &berth_agent_proto::ExecStart,
) -> Result<EnterPlan, BundleError> {
    let layer = dir.layer();
    let user = if start.user.is_empty() { record.config.user.as_str() } else { &start.user };
    let identity = rootfs::resolve_user(&layer.merged, user)?;
    let base = strings(&record.config.env);
    let env = exec_env(base, &start.env, &identity.home, start.tty);
    let cwd = if !start.cwd.is_empty() {
        start.cwd.clone()
    } else {
        Some(record.config.working_dir.as_str()).filter(|s| !s.is_empty()).unwrap_or("/").to_string()
    };
    // The container's own isolation, from the spec it was started with.
    let spec: serde_json::Value = std::fs::read(dir.spec())
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .ok_or(BundleError::Missing("runtime spec"))?;
    let shim_config: ShimConfig = std::fs::read(dir.shim_config())
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .ok_or(BundleError::Missing("shim config"))?;
    let capabilities: Vec<String> = if start.privileged {
        crate::spec::ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        spec["process"]["capabilities"]["bounding"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    Ok(EnterPlan {
        pid: record.state.pid,
        cgroup,
        argv: start.argv.clone(),
        env,
        cwd,
        uid: identity.uid,
        gid: identity.gid,
        groups: identity.process_groups(),
        capabilities,
        no_new_privileges: spec["process"]["noNewPrivileges"].as_bool().unwrap_or(false),
        seccomp: shim_config.seccomp && !start.privileged,
        terminal: start.tty.then(|| {
            let size = start.size.unwrap_or(berth_agent_proto::WindowSize { rows: 24, cols: 80 });
            (size.rows as u16, size.cols as u16)
        }),
    })
}

#[cfg(test)]
mod tests;
