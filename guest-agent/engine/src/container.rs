//! A container as the engine keeps it: Docker's create request merged with
//! the image's defaults, validated, and the state it is in. Persisted as
//! `container.json` in the container's directory on the data disk.
//!
//! The create request travels from the host as Docker's own JSON
//! (`ContainerConfig` with `HostConfig`): its schema is Docker's API, which
//! the engine implements, so the contract does not repeat it field by field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::docker_json;
use crate::spec::{Bind, ContainerOptions, NamespaceMode, NetworkMode};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request asks for something invalid or unsupported (HTTP 400).
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> CreateError {
    CreateError::Invalid(message.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Running in Docker's sense: a process exists (paused ones too).
    pub fn is_running(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    pub shim_pid: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    /// Set by `docker stop`/`kill`: a restart policy must not undo it.
    pub stopped_by_user: bool,
}

/// A volume mounted into a container: named (`-v name:/path`,
/// `--mount type=volume`) or anonymous (`-v /path`, the image's VOLUME),
/// whose name the engine picks at create.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeMount {
    /// Empty until the engine names an anonymous volume.
    pub name: String,
    pub target: String,
    pub readonly: bool,
    /// Do not fill a new volume from the image (`nocopy`).
    pub nocopy: bool,
    pub anonymous: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// Without Docker's leading slash.
    pub name: String,
    pub created_ns: i64,
    /// The image as the user named it, and what it resolved to.
    pub image: String,
    pub image_id: String,
    /// Docker's Config, merged with the image's defaults (what inspect shows).
    pub config: Value,
    /// Docker's HostConfig as given (normalised where Docker does).
    pub host_config: Value,
    /// The image's layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    pub state: State,
    pub restart_count: u32,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Host paths bound through `--volumes-from` (the container's own binds
    /// stay in its HostConfig), resolved once at create as Docker does.
    #[serde(default)]
    pub binds_from: Vec<Bind>,
}

pub use berth_agent_proto::time::rfc3339;

/// Whether a JSON value is what Go's encoder writes for a zero value, i.e.
/// the client did not ask for anything.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// HostConfig fields the engine implements besides the UPDATABLE ones.
/// Anything else a client sets to a non-zero value is refused, never
/// silently ignored.
const SUPPORTED_HOST_CONFIG: &[&str] = &[
    "Binds",
    "DeviceCgroupRules",
    "NetworkMode",
    "Privileged",
    "ReadonlyRootfs",
    "CapAdd",
    "CapDrop",
    "SecurityOpt",
    "Tmpfs",
    "ShmSize",
    "AutoRemove",
    "Init",
    "Mounts",
    "ConsoleSize",
    "LogConfig",
    "CgroupnsMode",
    "IpcMode",
    "PidMode",
    "UTSMode",
    "Cgroup",
    "Isolation",
    "MaskedPaths",
    "ReadonlyPaths",
    "PortBindings",
    "PublishAllPorts",
    // cgroup v1 only; Docker on cgroup v2 accepts and ignores it too.
    "MemorySwappiness",
    "GroupAdd",
    "VolumesFrom",
    "Runtime",
];

/// The only runtime there is; Docker's default runtime name, which clients
/// expect in HostConfig.Runtime.
pub const RUNTIME_NAME: &str = "runc";

/// The container's process and isolation, resolved from the request and the
/// image's config, ready for `spec::build`.
pub struct Resolved {
    /// The volumes the request names (`-v`, `--mount`).
    pub volumes: Vec<VolumeMount>,
    /// Anonymous volumes for the image's (and Config's) VOLUMEs that nothing
    /// else is mounted on.
    pub image_volumes: Vec<VolumeMount>,
    /// Mounts of the `--volumes-from` containers (see `inherit`).
    pub inherited_volumes: Vec<VolumeMount>,
    pub inherited_binds: Vec<Bind>,
    pub config: Value,
    pub host_config: Value,
    pub options: ContainerOptions,
    pub init: bool,
    pub seccomp: bool,
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    OnFailure { max_retries: u32 },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(host_config: &Value) -> Result<RestartPolicy, CreateError> {
        let policy = &host_config["RestartPolicy"];
        let max = policy["MaximumRetryCount"].as_u64().unwrap_or(0) as u32;
        match policy["Name"].as_str().unwrap_or("") {
            "" | "no" => Ok(RestartPolicy::No),
            "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: max }),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            other => Err(invalid(format!("invalid restart policy '{other}'"))),
        }
    }
}

fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        // Docker accepts a string for Cmd/Entrypoint in old API versions.
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

fn merge_env(image: &[String], given: &[String]) -> Vec<String> {
    let mut env: Vec<String> = image.to_vec();
    for entry in given {
        let key = entry.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(entry.clone());
    }
    env
}

/// Resolves a create request against the image config (Docker's
/// `daemon/create.go` merge rules) and checks every option.
pub fn resolve(request: &Value, image_config: &Value, id: &str) -> Result<Resolved, CreateError> {
    // Every `[]`/`["key"]` below relies on the types being Docker's.
    docker_json::check(&docker_json::CONTAINER_CREATE, request).map_err(invalid)?;
    if !request.is_object() {
        return Err(invalid("the container config must be a JSON object"));
    }
    let image_cfg = &image_config["config"];
    let mut config = request.clone();
    let config_obj = config.as_object_mut().expect("checked above");
    let host_config = config_obj.remove("HostConfig").unwrap_or(Value::Object(Default::default()));
    config_obj.remove("NetworkingConfig");

    if let Some(obj) = host_config.as_object() {
        for (key, value) in obj {
            let supported = SUPPORTED_HOST_CONFIG.contains(&key.as_str()) || UPDATABLE.contains(&key.as_str());
            if !supported && !is_zero(value) {
                return Err(invalid(format!("HostConfig.{key} is not supported by Berth yet")));
            }
        }
    }
    for key in ["Healthcheck", "OnBuild"] {
        if config.get(key).is_some_and(|v| !is_zero(v)) {
            return Err(invalid(format!("{key} is not supported by Berth yet")));
        }
    }
    let port_bindings = &host_config["PortBindings"];
    if !is_zero(port_bindings) || host_config["PublishAllPorts"].as_bool() == Some(true) {
        return Err(invalid("publishing ports is not supported by Berth yet (it arrives with container networking)"));
    }

    // Docker's merge: the image's Entrypoint unless one is given; its Cmd
    // only when neither Cmd nor Entrypoint is given.
    let given_entrypoint = strings(&config["Entrypoint"]);
    let given_cmd = strings(&config["Cmd"]).filter(|c| !c.is_empty());
    let entrypoint = given_entrypoint.clone().unwrap_or_else(|| strings(&image_cfg["Entrypoint"]).unwrap_or_default());
    let cmd = match (&given_cmd, &given_entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => strings(&image_cfg["Cmd"]).unwrap_or_default(),
    };
    let entrypoint: Vec<String> =
        entrypoint.into_iter().filter(|s| !s.is_empty() || given_entrypoint.is_none()).collect();
    let args: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if args.is_empty() {
        return Err(invalid("no command specified"));
    }
    let env = merge_env(&strings(&image_cfg["Env"]).unwrap_or_default(), &strings(&config["Env"]).unwrap_or_default());
    let env = if env.iter().any(|e| e.starts_with("PATH=")) {
        env
    } else {
        merge_env(&["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()], &env)
    };
    let working_dir = match config["WorkingDir"].as_str().filter(|s| !s.is_empty()) {
        Some(dir) => dir.to_string(),
        None => image_cfg["WorkingDir"].as_str().unwrap_or("").to_string(),
    };
    if !working_dir.is_empty() && !working_dir.starts_with('/') {
        return Err(invalid(format!(
            "the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )));
    }
    let user = match config["User"].as_str().filter(|s| !s.is_empty()) {
        Some(user) => user.to_string(),
        None => image_cfg["User"].as_str().unwrap_or("").to_string(),
    };
    let uts_host = host_config["UTSMode"].as_str() == Some("host");
    let hostname = match config["Hostname"].as_str().filter(|s| !s.is_empty()) {
        Some(h) => h.to_string(),
        // The machine's own name: the container shares its UTS namespace.
        None if uts_host => nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        None => id[..12].to_string(),
    };
    let mut labels: BTreeMap<String, Value> =
        image_cfg["Labels"].as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
    if let Some(given) = config["Labels"].as_object() {
        labels.extend(given.clone());
    }

    let obj = config.as_object_mut().expect("object");
    obj.insert("Hostname".into(), json!(hostname));
    obj.insert("Env".into(), json!(env));
    obj.insert("Cmd".into(), json!(cmd));
    obj.insert("Entrypoint".into(), if entrypoint.is_empty() { Value::Null } else { json!(entrypoint) });
    obj.insert("WorkingDir".into(), json!(working_dir));
    obj.insert("User".into(), json!(user));
    obj.insert("Labels".into(), json!(labels));
    for key in ["ExposedPorts", "Volumes", "StopSignal"] {
        if obj.get(key).is_none_or(is_zero) && !is_zero(&image_cfg[key]) {
            obj.insert(key.into(), image_cfg[key].clone());
        }
    }
    for key in ["Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr"] {
        let value = obj.get(key).and_then(Value::as_bool).unwrap_or(false);
        obj.insert(key.into(), json!(value));
    }
    if let Some(signal) = obj.get("StopSignal").and_then(Value::as_str) {
        parse_signal(signal).map_err(invalid)?;
    }

    let (options, volumes) = host_options(&config, &host_config, args, env, working_dir, hostname)?;
    // The image's VOLUMEs that nothing else is mounted on get anonymous volumes.
    let mut image_volumes = Vec::new();
    for target in config["Volumes"].as_object().into_iter().flatten().map(|(k, _)| k) {
        let taken =
            volumes.iter().any(|v| &v.target == target) || options.binds.iter().any(|b| b.target == Path::new(target));
        if !taken {
            image_volumes.push(VolumeMount {
                name: String::new(),
                target: target.clone(),
                readonly: false,
                nocopy: false,
                anonymous: true,
            });
        }
    }
    let security_opt = strings(&host_config["SecurityOpt"]).unwrap_or_default();
    let seccomp =
        !options.privileged && !security_opt.iter().any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined");
    let restart = RestartPolicy::parse(&host_config)?;
    let mut host_config = host_config;
    if host_config["LogConfig"]["Type"].as_str().unwrap_or("").is_empty() {
        // What `docker logs` reads is kept as json-file keeps it.
        host_config["LogConfig"]["Type"] = "json-file".into();
    }
    if !host_config["LogConfig"]["Config"].is_object() {
        host_config["LogConfig"]["Config"] = json!({});
    }
    if restart != RestartPolicy::No && host_config["AutoRemove"].as_bool() == Some(true) {
        return Err(invalid("conflicting options: cannot specify both --restart and --rm"));
    }
    match host_config["Runtime"].as_str().unwrap_or("") {
        "" | RUNTIME_NAME => host_config["Runtime"] = json!(RUNTIME_NAME),
        other => return Err(invalid(format!("Unknown runtime specified {other}"))),
    }
    parse_volumes_from(&host_config)?;
    Ok(Resolved {
        volumes,
        image_volumes,
        inherited_volumes: Vec::new(),
        inherited_binds: Vec::new(),
        config,
        init: host_config["Init"].as_bool().unwrap_or(false),
        host_config,
        options,
        seccomp,
        restart,
    })
}

fn host_options(
    config: &Value,
    hc: &Value,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    hostname: String,
) -> Result<(ContainerOptions, Vec<VolumeMount>), CreateError> {
    let network = match hc["NetworkMode"].as_str().unwrap_or("") {
        "" | "default" | "bridge" | "none" => NetworkMode::Private,
        "host" => NetworkMode::Host,
        other => {
            return Err(invalid(format!(
                "network {other} not found (user-defined networks arrive with container networking)"
            )))
        }
    };
    // `container:<id>` for the PID namespace is resolved by the agent at
    // start (the other container's process); Docker knows no such form for
    // UTS, and joining another container's IPC namespace would also need
    // its /dev/shm, which Berth does not share yet.
    let namespace = |key: &str, joinable: bool| -> Result<NamespaceMode, CreateError> {
        match hc[key].as_str().unwrap_or("") {
            "" | "private" | "shareable" if key == "IpcMode" => Ok(NamespaceMode::Private),
            "" => Ok(NamespaceMode::Private),
            "host" => Ok(NamespaceMode::Host),
            other if joinable && other.strip_prefix("container:").is_some_and(|c| !c.is_empty()) => {
                Ok(NamespaceMode::Container(other["container:".len()..].to_string()))
            }
            other => Err(invalid(format!("HostConfig.{key}={other:?} is not supported by Berth yet"))),
        }
    };
    let (pid, ipc, uts) = (namespace("PidMode", true)?, namespace("IpcMode", false)?, namespace("UTSMode", false)?);
    for (key, allowed) in
        [("CgroupnsMode", &["", "private"][..]), ("Isolation", &["", "default"][..]), ("Cgroup", &[""][..])]
    {
        let value = hc[key].as_str().unwrap_or("");
        if !allowed.contains(&value) {
            return Err(invalid(format!("HostConfig.{key}={value:?} is not supported by Berth yet")));
        }
    }
    if !is_zero(&hc["MaskedPaths"]) || !is_zero(&hc["ReadonlyPaths"]) {
        return Err(invalid("custom MaskedPaths/ReadonlyPaths are not supported by Berth yet"));
    }
    let log_type = hc["LogConfig"]["Type"].as_str().unwrap_or("");
    if !["", "json-file", "local"].contains(&log_type) {
        // dockerd's words: Berth keeps every container's log itself.
        return Err(invalid(format!("logger: no log driver named '{log_type}' is registered")));
    }
    crate::logfile::LogLimits::from_options(&hc["LogConfig"]["Config"]).map_err(invalid)?;
    let mut no_new_privileges = false;
    for option in strings(&hc["SecurityOpt"]).unwrap_or_default() {
        match option.replace(':', "=").as_str() {
            "no-new-privileges" | "no-new-privileges=true" => no_new_privileges = true,
            "no-new-privileges=false" | "seccomp=unconfined" | "apparmor=unconfined" | "label=disable" => {}
            other => return Err(invalid(format!("security option {other:?} is not supported by Berth yet"))),
        }
    }
    let mut binds = Vec::new();
    let mut volumes = Vec::new();
    for bind in strings(&hc["Binds"]).unwrap_or_default() {
        match parse_bind(&bind)? {
            BindSpec::Host(b) => binds.push(b),
            BindSpec::Volume(v) => volumes.push(v),
        }
    }
    if let Some(mounts) = hc["Mounts"].as_array() {
        for mount in mounts {
            let kind = mount["Type"].as_str().unwrap_or("");
            let target = mount["Target"].as_str().unwrap_or("");
            if !target.starts_with('/') {
                return Err(invalid(format!("invalid mount config: mount path must be absolute: {target:?}")));
            }
            if Path::new(target) == Path::new("/") && matches!(kind, "bind" | "volume") {
                return Err(invalid(root_destination(kind)));
            }
            match kind {
                "bind" => binds.push(Bind {
                    source: PathBuf::from(mount["Source"].as_str().unwrap_or("")),
                    target: PathBuf::from(target),
                    readonly: mount["ReadOnly"].as_bool().unwrap_or(false),
                }),
                "volume" => {
                    let name = mount["Source"].as_str().unwrap_or("").to_string();
                    volumes.push(VolumeMount {
                        anonymous: name.is_empty(),
                        name,
                        target: target.to_string(),
                        readonly: mount["ReadOnly"].as_bool().unwrap_or(false),
                        nocopy: mount["VolumeOptions"]["NoCopy"].as_bool().unwrap_or(false),
                    })
                }
                other => return Err(invalid(format!("mounts of type {other:?} are not supported by Berth yet"))),
            }
        }
    }
    for bind in &binds {
        if !bind.source.exists() {
            return Err(invalid(format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                bind.source.display()
            )));
        }
    }
    let mut tmpfs = Vec::new();
    if let Some(map) = hc["Tmpfs"].as_object() {
        for (target, options) in map {
            if !target.starts_with('/') {
                return Err(invalid(format!("invalid tmpfs mount point {target:?}: it must be absolute")));
            }
            tmpfs.push((target.clone(), options.as_str().unwrap_or("").to_string()));
        }
    }
    for volume in &volumes {
        if !volume.name.is_empty() && !crate::volume::valid_name(&volume.name) {
            return Err(invalid(format!(
                "\"{}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path",
                volume.name
            )));
        }
    }
    let resources = crate::limits::resources(hc).map_err(invalid)?;
    let shm_size = crate::limits::shm_size(hc).map_err(invalid)?;
    let options = ContainerOptions {
        args,
        env,
        cwd,
        hostname,
        tty: config["Tty"].as_bool().unwrap_or(false),
        readonly_rootfs: hc["ReadonlyRootfs"].as_bool().unwrap_or(false),
        privileged: hc["Privileged"].as_bool().unwrap_or(false),
        cap_add: strings(&hc["CapAdd"]).unwrap_or_default(),
        cap_drop: strings(&hc["CapDrop"]).unwrap_or_default(),
        no_new_privileges,
        network,
        pid,
        ipc,
        uts,
        shm_size,
        tmpfs,
        binds,
        device_rules: strings(&hc["DeviceCgroupRules"])
            .unwrap_or_default()
            .iter()
            .map(|rule| crate::devices::parse_rule(rule).map_err(invalid))
            .collect::<Result<_, _>>()?,
        resources,
        ..Default::default()
    };
    Ok((options, volumes))
}

enum BindSpec {
    Host(Bind),
    Volume(VolumeMount),
}

/// `-v SRC:DST[:MODE]`, `-v NAME:DST[:MODE]` and `-v DST` as Docker parses
/// them on Linux: an absolute source is a bind mount, anything else names a
/// volume, and a lone path is an anonymous volume.
fn parse_bind(spec: &str) -> Result<BindSpec, CreateError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, mode] => (*src, *dst, *mode),
        _ => return Err(invalid(format!("invalid volume specification: '{spec}'"))),
    };
    let (mut readonly, mut nocopy) = (false, false);
    for flag in mode.split(',').filter(|f| !f.is_empty()) {
        match flag {
            "ro" => readonly = true,
            "nocopy" => nocopy = true,
            "rw" | "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "shared" | "rshared" | "consistent"
            | "cached" | "delegated" => {}
            other => return Err(invalid(format!("invalid mode: {other}"))),
        }
    }
    if !target.starts_with('/') {
        return Err(invalid(format!("invalid volume specification: '{spec}': invalid mount config for type \"bind\": invalid mount path: '{target}' mount path must be absolute")));
    }
    let kind = if source.starts_with('/') { "bind" } else { "volume" };
    if Path::new(target) == Path::new("/") {
        return Err(invalid(format!("invalid volume specification: '{spec}': {}", root_destination(kind))));
    }
    if source.starts_with('/') {
        return Ok(BindSpec::Host(Bind { source: PathBuf::from(source), target: PathBuf::from(target), readonly }));
    }
    Ok(BindSpec::Volume(VolumeMount {
        name: source.to_string(),
        target: target.to_string(),
        readonly,
        nocopy,
        anonymous: source.is_empty(),
    }))
}

/// dockerd's refusal of a mount over the container's root.
fn root_destination(kind: &str) -> String {
    format!("invalid mount config for type \"{kind}\": invalid specification: destination can't be '/'")
}

/// One `--volumes-from` entry: another container, and whether its mounts
/// are forced read-only (`ctr:ro`); `ctr` and `ctr:rw` keep each mount's mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumesFrom {
    pub container: String,
    pub readonly: bool,
}

/// HostConfig.VolumesFrom, checked as dockerd's `parseVolumesFrom` does.
pub fn parse_volumes_from(host_config: &Value) -> Result<Vec<VolumesFrom>, CreateError> {
    let mut parsed = Vec::new();
    for spec in strings(&host_config["VolumesFrom"]).unwrap_or_default() {
        let (container, mode) = spec.split_once(':').unwrap_or((&spec, ""));
        if container.is_empty() {
            return Err(invalid("volumes-from specification cannot be an empty string"));
        }
        let readonly = match mode {
            "" | "rw" => false,
            "ro" => true,
            other => return Err(invalid(format!("invalid mode: {other}"))),
        };
        parsed.push(VolumesFrom { container: container.to_string(), readonly });
    }
    Ok(parsed)
}

impl Resolved {
    fn mounted_at(&self, target: &str) -> bool {
        let own = self.volumes.iter().chain(&self.inherited_volumes).any(|v| v.target == target);
        own || self.options.binds.iter().chain(&self.inherited_binds).any(|b| b.target == Path::new(target))
    }

    /// Adds the mounts of a `--volumes-from` container (its volumes, named
    /// and anonymous, and its binds) at the same paths. Docker's order: the
    /// container's own mounts win, then earlier `--volumes-from` entries,
    /// and the image's VOLUMEs only fill what is left.
    pub fn inherit(&mut self, source: &Container, readonly: bool) {
        for volume in &source.volumes {
            if !self.mounted_at(&volume.target) {
                // Already filled (or deliberately not) for its first container.
                let inherited = VolumeMount { readonly: volume.readonly || readonly, nocopy: true, ..volume.clone() };
                self.inherited_volumes.push(inherited);
            }
        }
        for bind in source.host_binds() {
            if !self.mounted_at(&bind.target.to_string_lossy()) {
                self.inherited_binds.push(Bind { readonly: bind.readonly || readonly, ..bind });
            }
        }
        let inherited = (&self.inherited_volumes, &self.inherited_binds);
        self.image_volumes.retain(|v| {
            !inherited.0.iter().any(|i| i.target == v.target)
                && !inherited.1.iter().any(|b| b.target == Path::new(&v.target))
        });
    }
}

/// HostConfig fields `docker update` can change, for a running container
/// too (Docker's UpdateConfig: resources plus the restart policy).
const UPDATABLE: &[&str] = &[
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "RestartPolicy",
];

/// The HostConfig after `docker update`: each field the request sets (a
/// zero value means "unchanged", as in Docker) replaces the old one. The
/// result is checked by `resolve` as a create would be; the caller applies
/// it to the running cgroup and persists it.
pub fn apply_update(host_config: &Value, update: &Value) -> Result<Value, CreateError> {
    docker_json::check(&docker_json::CONTAINER_UPDATE, update).map_err(invalid)?;
    let Some(fields) = update.as_object() else {
        return Err(invalid("the update must be a JSON object"));
    };
    let mut updated = host_config.clone();
    for (key, value) in fields {
        if is_zero(value) {
            continue;
        }
        if !UPDATABLE.contains(&key.as_str()) {
            return Err(invalid(format!("updating {key} is not supported by Berth yet")));
        }
        if key == "RestartPolicy" {
            if host_config["AutoRemove"].as_bool() == Some(true) && !matches!(value["Name"].as_str(), None | Some("no"))
            {
                // dockerd's words.
                return Err(invalid(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                ));
            }
            RestartPolicy::parse(&json!({ "RestartPolicy": value }))?;
        }
        updated[key] = value.clone();
    }
    // Docker: a new memory limit above the old swap limit needs a new swap
    // limit too (the old one would be below memory).
    let (memory, swap) = (updated["Memory"].as_i64().unwrap_or(0), updated["MemorySwap"].as_i64().unwrap_or(0));
    if is_zero(&update["MemorySwap"]) && swap > 0 && memory > swap {
        return Err(invalid(
            "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
        ));
    }
    Ok(updated)
}

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("Invalid signal: {text}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).map_err(|_| format!("Invalid signal: {text}"))
}

/// Docker's random names: adjective_surname.
pub fn random_name(random: u64) -> String {
    const LEFT: &[&str] = &[
        "admiring",
        "brave",
        "busy",
        "clever",
        "dazzling",
        "eager",
        "elegant",
        "focused",
        "gallant",
        "happy",
        "jolly",
        "keen",
        "loving",
        "modest",
        "nifty",
        "optimistic",
        "peaceful",
        "quirky",
        "relaxed",
        "serene",
        "sharp",
        "stoic",
        "tender",
        "upbeat",
        "vibrant",
        "wizardly",
        "youthful",
        "zealous",
    ];
    const RIGHT: &[&str] = &[
        "albattani",
        "babbage",
        "curie",
        "darwin",
        "einstein",
        "fermi",
        "galileo",
        "hopper",
        "hypatia",
        "johnson",
        "kepler",
        "lamarr",
        "lovelace",
        "meitner",
        "newton",
        "noether",
        "pasteur",
        "ritchie",
        "shannon",
        "tesla",
        "thompson",
        "turing",
        "wozniak",
        "yalow",
    ];
    let left = LEFT[(random % LEFT.len() as u64) as usize];
    let right = RIGHT[((random / 64) % RIGHT.len() as u64) as usize];
    format!("{left}_{right}")
}

/// Docker's rule for container names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Container {
    pub fn dir_in(&self, root: &Path) -> PathBuf {
        root.join(&self.id)
    }

    /// Docker's `GET /containers/{id}/json`.
    pub fn inspect(&self, dir: &Path, volumes_root: &Path) -> Value {
        let paths = crate::container_dir::ContainerDir::new(dir);
        let s = &self.state;
        let args: Vec<Value> = self.process_args().into_iter().skip(1).map(Value::String).collect();
        json!({
            "Id": self.id,
            "Created": rfc3339(self.created_ns),
            "Path": self.process_args().first().cloned().unwrap_or_default(),
            "Args": args,
            "State": {
                "Status": s.status.as_str(),
                "Running": s.status.is_running(),
                "Paused": s.status == Status::Paused,
                "Restarting": s.status == Status::Restarting,
                "OOMKilled": s.oom_killed,
                "Dead": s.status == Status::Dead,
                "Pid": if s.status.is_running() { s.pid } else { 0 },
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": rfc3339(s.started_at_ns),
                "FinishedAt": rfc3339(s.finished_at_ns),
            },
            "Image": self.image_id,
            "ResolvConfPath": paths.resolv_conf(),
            "HostnamePath": paths.hostname(),
            "HostsPath": paths.hosts(),
            "LogPath": paths.log(),
            "Name": format!("/{}", self.name),
            "RestartCount": self.restart_count,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": Value::Null,
            "HostConfig": self.host_config,
            "GraphDriver": {
                "Name": "overlay2",
                "Data": {
                    "LowerDir": self.layers.iter().rev().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
                    "UpperDir": paths.upper(),
                    "WorkDir": paths.layer().work,
                    "MergedDir": dir.join("rootfs"),
                },
            },
            "Mounts": self.mounts_json(volumes_root),
            "Config": self.config,
            "NetworkSettings": self.network_settings(),
        })
    }

    pub fn process_args(&self) -> Vec<String> {
        let mut args = strings(&self.config["Entrypoint"]).unwrap_or_default();
        args.extend(strings(&self.config["Cmd"]).unwrap_or_default());
        args
    }

    fn network_mode(&self) -> String {
        match self.host_config["NetworkMode"].as_str().unwrap_or("") {
            "" | "default" => "bridge".into(),
            other => other.into(),
        }
    }

    fn network_settings(&self) -> Value {
        // Until container networking lands, a non-host container has only
        // loopback: no addresses to report, which is the truth.
        json!({
            "Bridge": "",
            "SandboxID": "",
            "HairpinMode": false,
            "Ports": {},
            "SandboxKey": "",
            "IPAddress": "",
            "IPPrefixLen": 0,
            "Gateway": "",
            "MacAddress": "",
            "Networks": {},
        })
    }

    /// Every host path bound into the container: its `-v`/`--mount` binds
    /// and those it has through `--volumes-from`.
    pub fn host_binds(&self) -> Vec<Bind> {
        let mut binds: Vec<Bind> = strings(&self.host_config["Binds"])
            .unwrap_or_default()
            .iter()
            .filter_map(|spec| match parse_bind(spec) {
                Ok(BindSpec::Host(b)) => Some(b),
                _ => None,
            })
            .collect();
        for m in self.host_config["Mounts"].as_array().into_iter().flatten().filter(|m| m["Type"] == "bind") {
            binds.push(Bind {
                source: PathBuf::from(m["Source"].as_str().unwrap_or("")),
                target: PathBuf::from(m["Target"].as_str().unwrap_or("")),
                readonly: m["ReadOnly"].as_bool().unwrap_or(false),
            });
        }
        binds.extend(self.binds_from.iter().cloned());
        binds
    }

    fn mounts_json(&self, volumes_root: &Path) -> Value {
        let mut mounts = Vec::new();
        for volume in &self.volumes {
            mounts.push(json!({
                "Type": "volume", "Name": volume.name, "Source": volumes_root.join(&volume.name).join("_data"),
                "Destination": volume.target, "Driver": "local", "Mode": if volume.readonly { "ro" } else { "z" },
                "RW": !volume.readonly, "Propagation": "",
            }));
        }
        for b in self.host_binds() {
            mounts.push(json!({
                "Type": "bind", "Source": b.source, "Destination": b.target, "Mode": if b.readonly { "ro" } else { "" },
                "RW": !b.readonly, "Propagation": "rprivate",
            }));
        }
        Value::Array(mounts)
    }

    /// Docker's `docker ps` status text ("Up 5 seconds", "Exited (0) 2 minutes ago").
    pub fn status_text(&self, now_ns: i64) -> String {
        let s = &self.state;
        match s.status {
            Status::Created => "Created".into(),
            Status::Running => format!("Up {}", human_duration(now_ns - s.started_at_ns)),
            Status::Paused => format!("Up {} (Paused)", human_duration(now_ns - s.started_at_ns)),
            Status::Restarting => {
                format!("Restarting ({}) {} ago", s.exit_code, human_duration(now_ns - s.finished_at_ns))
            }
            Status::Removing => "Removal In Progress".into(),
            Status::Exited => format!("Exited ({}) {} ago", s.exit_code, human_duration(now_ns - s.finished_at_ns)),
            Status::Dead => "Dead".into(),
        }
    }

    /// Docker's `GET /containers/json` entry.
    pub fn summary(&self, now_ns: i64, volumes_root: &Path) -> Value {
        let command = self
            .process_args()
            .iter()
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { a.clone() })
            .collect::<Vec<_>>()
            .join(" ");
        json!({
            "Id": self.id,
            "Names": [format!("/{}", self.name)],
            "Image": self.image,
            "ImageID": self.image_id,
            "Command": command,
            "Created": self.created_ns / 1_000_000_000,
            "Ports": [],
            "Labels": self.config["Labels"],
            "State": self.state.status.as_str(),
            "Status": self.status_text(now_ns),
            "HostConfig": { "NetworkMode": self.network_mode() },
            "NetworkSettings": { "Networks": {} },
            "Mounts": self.mounts_json(volumes_root),
        })
    }
}

/// Go's `units.HumanDuration`, which `docker ps` shows.
pub fn human_duration(ns: i64) -> String {
    let secs = (ns.max(0) / 1_000_000_000) as u64;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if (s as f64 / 3600.0).round() as u64 == 1 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", (s as f64 / 3600.0).round() as u64),
        s if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86_400),
        s if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 86_400)),
        s if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86_400)),
        s => format!("{} years", s / (365 * 86_400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn image() -> Value {
        json!({"config": {
            "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
            "Cmd": ["sh"],
            "Entrypoint": null,
            "WorkingDir": "/srv",
            "Labels": {"from": "image"},
        }})
    }

    #[test]
    fn merges_with_the_image_like_docker() {
        let r = resolve(&json!({"Image": "busybox", "Env": ["LANG=en", "X=1"]}), &image(), ID).unwrap();
        assert_eq!(r.options.args, ["sh"]);
        assert_eq!(r.options.env, ["PATH=/usr/bin:/bin", "LANG=en", "X=1"]);
        assert_eq!(r.options.cwd, "/srv");
        assert_eq!(r.options.hostname, "0123456789ab");
        assert_eq!(r.config["Labels"]["from"], "image");

        let r = resolve(&json!({"Image": "x", "Entrypoint": ["echo"]}), &image(), ID).unwrap();
        assert_eq!(r.options.args, ["echo"], "a given entrypoint drops the image's Cmd");
        let r = resolve(&json!({"Image": "x", "Cmd": ["ls", "-l"]}), &image(), ID).unwrap();
        assert_eq!(r.options.args, ["ls", "-l"]);
    }

    #[test]
    fn unsupported_options_are_refused_not_ignored() {
        let err = |req: Value| resolve(&req, &image(), ID).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/fuse"}]}})).contains("HostConfig.Devices"));
        assert!(err(json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}})).contains("ports"));
        assert!(err(json!({"HostConfig": {"Binds": ["bad/name:/x"]}})).contains("invalid characters"));
        let r = resolve(
            &json!({"HostConfig": {"Binds": ["data:/data:ro", "/tmp:/host"]}, "Volumes": {"/cache": {}}}),
            &image(),
            ID,
        )
        .unwrap();
        let v: Vec<(&str, &str, bool, bool)> = r
            .volumes
            .iter()
            .chain(&r.image_volumes)
            .map(|v| (v.name.as_str(), v.target.as_str(), v.readonly, v.anonymous))
            .collect();
        assert_eq!(v, [("data", "/data", true, false), ("", "/cache", false, true)]);
        assert_eq!(r.options.binds.len(), 1);
        assert!(err(json!({"HostConfig": {"Memory": 1024}})).contains("Minimum memory"));
        assert!(err(json!({"HostConfig": {"RestartPolicy": {"Name": "always"}, "AutoRemove": true}})).contains("--rm"));
        // What the docker CLI sends for a plain `docker run` is accepted.
        let plain = json!({"HostConfig": {"Devices": [], "LogConfig": {"Type": "", "Config": {}}, "NetworkMode": "default",
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "OomKillDisable": false, "ConsoleSize": [24, 80]}});
        assert!(resolve(&plain, &image(), ID).is_ok());
    }

    fn record(host_config: Value, volumes: Vec<VolumeMount>) -> Container {
        Container {
            id: ID.into(),
            name: "source".into(),
            created_ns: 0,
            image: "busybox".into(),
            image_id: "sha256:x".into(),
            config: json!({}),
            host_config,
            layers: Vec::new(),
            state: State::default(),
            restart_count: 0,
            volumes,
            binds_from: Vec::new(),
        }
    }

    fn volume(name: &str, target: &str, readonly: bool) -> VolumeMount {
        VolumeMount { name: name.into(), target: target.into(), readonly, nocopy: false, anonymous: false }
    }

    #[test]
    fn volumes_from_inherits_mounts_below_the_containers_own() {
        let source = record(
            json!({"Binds": ["/tmp:/host:ro", "/var:/var-rw"]}),
            vec![volume("data", "/data", false), volume("cache", "/cache", false), volume("logs", "/logs", true)],
        );
        let request = json!({"Volumes": {"/data": {}, "/fresh": {}}, "HostConfig": {"Binds": ["mine:/cache"], "VolumesFrom": ["source:rw"]}});
        let mut r = resolve(&request, &image(), ID).unwrap();
        r.inherit(&source, false);
        let v: Vec<(&str, &str, bool, bool)> =
            r.inherited_volumes.iter().map(|v| (v.name.as_str(), v.target.as_str(), v.readonly, v.nocopy)).collect();
        assert_eq!(v, [("data", "/data", false, true), ("logs", "/logs", true, true)], "own /cache wins");
        let b: Vec<(&str, bool)> = r.inherited_binds.iter().map(|b| (b.target.to_str().unwrap(), b.readonly)).collect();
        assert_eq!(b, [("/host", true), ("/var-rw", false)]);
        let anonymous: Vec<&str> = r.image_volumes.iter().map(|v| v.target.as_str()).collect();
        assert_eq!(anonymous, ["/fresh"], "an inherited volume replaces the image's anonymous one");

        // `:ro` makes everything inherited read-only.
        let mut r = resolve(&json!({"HostConfig": {"VolumesFrom": ["source:ro"]}}), &image(), ID).unwrap();
        r.inherit(&source, true);
        assert!(r.inherited_volumes.iter().all(|v| v.readonly) && r.inherited_binds.iter().all(|b| b.readonly));

        assert_eq!(
            parse_volumes_from(&json!({"VolumesFrom": ["a", "b:ro", "c:rw"]})).unwrap(),
            [
                VolumesFrom { container: "a".into(), readonly: false },
                VolumesFrom { container: "b".into(), readonly: true },
                VolumesFrom { container: "c".into(), readonly: false }
            ]
        );
        let err = resolve(&json!({"HostConfig": {"VolumesFrom": ["a:xx"]}}), &image(), ID).err().unwrap();
        assert_eq!(err.to_string(), "invalid mode: xx");
    }

    #[test]
    fn namespaces_and_runtime() {
        let r =
            resolve(&json!({"HostConfig": {"PidMode": "host", "IpcMode": "host", "UTSMode": "host"}}), &image(), ID)
                .unwrap();
        assert_eq!(
            (r.options.pid, r.options.ipc, r.options.uts.clone()),
            (NamespaceMode::Host, NamespaceMode::Host, NamespaceMode::Host)
        );
        assert_eq!(r.config["Hostname"], nix::unistd::gethostname().unwrap().to_string_lossy().as_ref());
        let r = resolve(&json!({"HostConfig": {"PidMode": "container:web"}}), &image(), ID).unwrap();
        assert_eq!(r.options.pid, NamespaceMode::Container("web".into()));
        let err = resolve(&json!({"HostConfig": {"IpcMode": "container:web"}}), &image(), ID).err().unwrap();
        assert!(err.to_string().contains("IpcMode=\"container:web\" is not supported"), "{err}");

        assert_eq!(resolve(&json!({}), &image(), ID).unwrap().host_config["Runtime"], "runc");
        let err = resolve(&json!({"HostConfig": {"Runtime": "kata"}}), &image(), ID).err().unwrap();
        assert_eq!(err.to_string(), "Unknown runtime specified kata");
    }

    #[test]
    fn updates_merge_like_docker() {
        let old = json!({"Memory": 400 << 20, "MemorySwap": 800 << 20, "CpuShares": 512,
            "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}});
        // What the docker CLI sends: every field, zero meaning "unchanged".
        let update = json!({"Memory": 300 << 20, "MemorySwap": 0, "CpuShares": 0, "KernelMemory": 0,
            "Devices": null, "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 42}});
        let new = apply_update(&old, &update).unwrap();
        assert_eq!((new["Memory"].as_i64(), new["MemorySwap"].as_i64()), (Some(300 << 20), Some(800 << 20)));
        assert_eq!(new["CpuShares"], 512);
        assert_eq!(new["RestartPolicy"], json!({"Name": "on-failure", "MaximumRetryCount": 42}));

        let err = |old: &Value, update: Value| apply_update(old, &update).err().map(|e| e.to_string()).unwrap();
        assert!(err(&old, json!({"Memory": 900 << 20})).contains("update the memoryswap at the same time"));
        assert!(err(&old, json!({"BlkioWeight": 300})).contains("updating BlkioWeight is not supported"));
        assert!(err(&old, json!({"RestartPolicy": {"Name": "sometimes"}})).contains("invalid restart policy"));
        let auto = json!({"AutoRemove": true});
        assert!(err(&auto, json!({"RestartPolicy": {"Name": "always"}})).contains("AutoRemove is enabled"));
    }

    /// Each of these panicked in resolve (IndexMut on a non-object) or was
    /// recorded and broke `docker ps` later; dockerd refuses them all.
    #[test]
    fn wrong_types_and_root_mounts_are_refused() {
        let err = |req: Value| resolve(&req, &image(), ID).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(json!({"HostConfig": "x"})).contains("of type container.HostConfig"));
        assert!(err(json!({"HostConfig": {"LogConfig": 5}})).contains("of type container.LogConfig"));
        assert!(err(json!({"HostConfig": {"LogConfig": {"Config": 5}}})).contains("map[string]string"));
        assert!(err(json!({"Labels": {"a": {"b": 1}}})).contains("ContainerConfigWrapper.Labels of type string"));
        assert!(err(json!({"Cmd": {}})).contains("ContainerConfigWrapper.Cmd"));
        assert!(err(json!({"Env": "A=1"})).contains("ContainerConfigWrapper.Env of type []string"));
        assert!(apply_update(&json!({}), &json!({"Memory": "x"}))
            .unwrap_err()
            .to_string()
            .contains("UpdateConfig.Memory"));
        assert_eq!(
            err(json!({"HostConfig": {"Binds": ["x:/"]}})),
            "invalid volume specification: 'x:/': invalid mount config for type \"volume\": invalid specification: destination can't be '/'"
        );
        assert_eq!(
            err(json!({"HostConfig": {"Binds": ["/tmp:/"]}})),
            "invalid volume specification: '/tmp:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        );
        assert_eq!(
            err(json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/"}]}})),
            "invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        );
        let r = resolve(&json!({"HostConfig": null, "Labels": null, "Cmd": null}), &image(), ID).unwrap();
        assert_eq!(r.host_config["LogConfig"]["Type"], "json-file", "null is Go's zero value");
    }

    #[test]
    fn times_and_signals() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_signal("kill"), Ok(9));
        assert_eq!(parse_signal("SIGUSR1"), Ok(10));
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(human_duration(90 * 1_000_000_000), "About a minute");
        assert!(valid_name("web-1.a_b") && !valid_name("-x") && !valid_name("a/b"));
    }
}
