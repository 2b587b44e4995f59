//! A create request merged with the image's config (Docker's
//! `daemon/create.go` rules) and every option checked, ready for
//! `spec::build`. Run again at each start and update, on the record.

use std::path::Path;

use serde_json::{json, Value};

use super::config::{
    is_zero, str_slice, strings, zero, Config, CreateRequest, Field, HostConfig, KeySet, NetworkMode, NetworkingConfig,
    RestartPolicyConfig, StrSlice, StringMap, Strings,
};
use super::mounts::{parse_bind, parse_volumes_from, root_destination, BindSpec};
use super::{invalid, parse_signal, CreateError, VolumeMount};
use crate::docker_json;
use crate::image_config::Healthcheck;
use crate::spec::{self, Bind, ContainerOptions, NamespaceMode};

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
    pub config: Config,
    pub host_config: HostConfig,
    /// The request's endpoints (not acted on until container networking).
    pub networking: NetworkingConfig,
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
    pub fn parse(policy: &Field<RestartPolicyConfig>) -> Result<RestartPolicy, CreateError> {
        let Some(policy) = policy.get() else { return Ok(RestartPolicy::No) };
        // A negative count is none; Go's uint conversion wraps larger ones.
        let max = u64::try_from(policy.maximum_retry_count.or_zero()).unwrap_or(0) as u32;
        match policy.name.as_str() {
            "" | "no" => Ok(RestartPolicy::No),
            "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: max }),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            other => Err(invalid(format!("invalid restart policy '{other}'"))),
        }
    }
}

impl CreateRequest {
    /// A client's create body, type-checked as dockerd's decoder checks it.
    pub fn parse(request: &Value) -> Result<CreateRequest, CreateError> {
        docker_json::check(&docker_json::CONTAINER_CREATE, request).map_err(invalid)?;
        if !request.is_object() {
            return Err(invalid("the container config must be a JSON object"));
        }
        serde_json::from_value(request.clone()).map_err(|e| invalid(format!("the container config: {e}")))
    }

    /// The request a record stands for, to resolve it again (start, update).
    pub fn of(config: &Config, host_config: &HostConfig) -> CreateRequest {
        CreateRequest {
            config: config.clone(),
            host_config: Field::Set(host_config.clone()),
            networking_config: Field::Absent,
        }
    }
}

/// The strings of an image config's list (a string, for Cmd and Entrypoint
/// in old images).
fn image_strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

/// The image's set (`ExposedPorts`, `Volumes`), if it has a non-empty one.
fn image_set(value: &Value) -> Option<KeySet> {
    value.as_object().filter(|_| !is_zero(value)).map(|map| map.clone().into_iter().collect())
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

/// dockerd's rules for `Config.Healthcheck`: the image's HEALTHCHECK fills
/// what the request leaves zero (`daemon/commit.go` merge), and the
/// durations are checked as `verifyContainerSettings` checks them.
fn merge_healthcheck(given: &mut Field<Healthcheck>, image_config: &Value) -> Result<(), CreateError> {
    let image = Healthcheck::of_image(image_config);
    match (given.get_mut(), image) {
        (Some(given), Some(image)) => given.inherit(&image),
        (None, Some(image)) => *given = Field::Set(image),
        (_, None) => {}
    }
    let Some(check) = given.get() else { return Ok(()) };
    for (name, value) in [
        ("Interval", check.interval),
        ("Timeout", check.timeout),
        ("StartPeriod", check.start_period),
        ("StartInterval", check.start_interval),
    ] {
        if value != 0 && value < MINIMUM_HEALTH_DURATION_NS {
            return Err(invalid(format!("{name} in Healthcheck cannot be less than 1ms")));
        }
    }
    if check.retries < 0 {
        return Err(invalid("Retries in Healthcheck cannot be negative"));
    }
    Ok(())
}

/// moby's `container.MinimumDuration`.
const MINIMUM_HEALTH_DURATION_NS: i64 = 1_000_000;

/// Resolves a client's create body against the image config.
pub fn resolve(request: &Value, image_config: &Value, id: &str) -> Result<Resolved, CreateError> {
    resolve_request(CreateRequest::parse(request)?, image_config, id)
}

/// Resolves a create request against the image config and checks every
/// option.
pub fn resolve_request(request: CreateRequest, image_config: &Value, id: &str) -> Result<Resolved, CreateError> {
    let image_cfg = &image_config["config"];
    let CreateRequest { mut config, host_config, networking_config } = request;
    let mut host_config = match host_config {
        Field::Set(host_config) => host_config,
        Field::Absent | Field::Null => HostConfig::default(),
    };
    if let Some(key) = host_config.unsupported() {
        return Err(invalid(format!("HostConfig.{key} is not supported by Berth yet")));
    }
    if config.rest.get("OnBuild").is_some_and(|v| !is_zero(v)) {
        return Err(invalid("OnBuild is not supported by Berth yet"));
    }
    merge_healthcheck(&mut config.healthcheck, image_config)?;
    // The host binds published ports at start (host/src/ports); a bad
    // spec is refused now, as dockerd refuses it at create.
    // Not ports_published(): `-p 80` (an ephemeral port on every address)
    // is a binding of empty strings, which is all zero values.
    let published =
        json!({"PortBindings": host_config.port_bindings, "PublishAllPorts": host_config.publish_all_ports});
    if berth_agent_proto::ports::publishes(&published) {
        if matches!(host_config.network_mode.get(), Some(NetworkMode::Container(_))) {
            return Err(invalid("conflicting options: port publishing and the container type network mode"));
        }
        let exposed = json!({"ExposedPorts": config.exposed_ports});
        berth_agent_proto::ports::requested(&published, &exposed).map_err(invalid)?;
    }

    // Docker's merge: the image's Entrypoint unless one is given; its Cmd
    // only when neither Cmd nor Entrypoint is given.
    let given_entrypoint = str_slice(&config.entrypoint);
    let given_cmd = str_slice(&config.cmd).filter(|c| !c.is_empty());
    let entrypoint =
        given_entrypoint.clone().unwrap_or_else(|| image_strings(&image_cfg["Entrypoint"]).unwrap_or_default());
    let cmd = match (&given_cmd, &given_entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image_strings(&image_cfg["Cmd"]).unwrap_or_default(),
    };
    let entrypoint: Vec<String> =
        entrypoint.into_iter().filter(|s| !s.is_empty() || given_entrypoint.is_none()).collect();
    let args: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if args.is_empty() {
        return Err(invalid("no command specified"));
    }
    let env = merge_env(&image_strings(&image_cfg["Env"]).unwrap_or_default(), &strings(&config.env));
    let env = if env.iter().any(|e| e.starts_with("PATH=")) {
        env
    } else {
        merge_env(&["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()], &env)
    };
    let or_image = |given: &Field<String>, key: &str| match given.get().filter(|s| !s.is_empty()) {
        Some(value) => value.clone(),
        None => image_cfg[key].as_str().unwrap_or("").to_string(),
    };
    let working_dir = or_image(&config.working_dir, "WorkingDir");
    if !working_dir.is_empty() && !working_dir.starts_with('/') {
        return Err(invalid(format!(
            "the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )));
    }
    let user = or_image(&config.user, "User");
    let uts_host = host_config.uts_mode.as_str() == "host";
    let hostname = match config.hostname.get().filter(|s| !s.is_empty()) {
        Some(h) => h.clone(),
        // The machine's own name: the container shares its UTS namespace.
        None if uts_host => nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        None => id[..12].to_string(),
    };
    let mut labels = StringMap(
        image_cfg["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.as_str().map(str::to_string)))
            .collect(),
    );
    if let Some(given) = config.labels.get() {
        labels.0.extend(given.0.clone());
    }

    config.hostname = hostname.clone().into();
    config.env = Strings::from(env.clone()).into();
    config.cmd = StrSlice::List(cmd.into()).into();
    config.entrypoint = if entrypoint.is_empty() { Field::Null } else { StrSlice::List(entrypoint.into()).into() };
    config.working_dir = working_dir.clone().into();
    config.user = user.into();
    config.labels = labels.into();
    if zero(&config.exposed_ports) {
        if let Some(ports) = image_set(&image_cfg["ExposedPorts"]) {
            config.exposed_ports = ports.into();
        }
    }
    if zero(&config.volumes) {
        if let Some(volumes) = image_set(&image_cfg["Volumes"]) {
            config.volumes = volumes.into();
        }
    }
    if zero(&config.stop_signal) {
        if let Some(signal) = image_cfg["StopSignal"].as_str().filter(|s| !s.is_empty()) {
            config.stop_signal = signal.to_string().into();
        }
    }
    for flag in [
        &mut config.tty,
        &mut config.open_stdin,
        &mut config.stdin_once,
        &mut config.attach_stdin,
        &mut config.attach_stdout,
        &mut config.attach_stderr,
    ] {
        *flag = flag.or_zero().into();
    }
    if let Some(signal) = config.stop_signal.get() {
        parse_signal(signal).map_err(invalid)?;
    }

    let (options, volumes) = host_options(&config, &host_config, args, env, working_dir, hostname)?;
    // The image's VOLUMEs that nothing else is mounted on get anonymous volumes.
    let mut image_volumes = Vec::new();
    for target in config.volumes.get().into_iter().flat_map(|set| set.keys()) {
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
    let security_opt = strings(&host_config.security_opt);
    let seccomp =
        !options.privileged && !security_opt.iter().any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined");
    let restart = RestartPolicy::parse(&host_config.restart_policy)?;
    let log_config = host_config.log_config.get_or_insert_default();
    if log_config.kind.as_str().is_empty() {
        // What `docker logs` reads is kept as json-file keeps it.
        log_config.kind = "json-file".to_string().into();
    }
    log_config.config.get_or_insert_default();
    if restart != RestartPolicy::No && host_config.auto_remove.or_zero() {
        return Err(invalid("conflicting options: cannot specify both --restart and --rm"));
    }
    match host_config.runtime.as_str() {
        "" | RUNTIME_NAME => host_config.runtime = RUNTIME_NAME.to_string().into(),
        other => return Err(invalid(format!("Unknown runtime specified {other}"))),
    }
    parse_volumes_from(&host_config)?;
    Ok(Resolved {
        volumes,
        image_volumes,
        inherited_volumes: Vec::new(),
        inherited_binds: Vec::new(),
        config,
        init: host_config.init.or_zero(),
        host_config,
        networking: networking_config.get().cloned().unwrap_or_default(),
        options,
        seccomp,
        restart,
    })
}

fn host_options(
    config: &Config,
    hc: &HostConfig,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    hostname: String,
) -> Result<(ContainerOptions, Vec<VolumeMount>), CreateError> {
    // Bridge and user networks, and `container:X`, join a namespace the
    // agent makes or finds at start (bundle::Host::network_namespace).
    let network = match hc.network_mode.get() {
        Some(NetworkMode::Host) => spec::NetworkMode::Host,
        Some(NetworkMode::Container(name)) if name.is_empty() => {
            return Err(invalid("invalid network mode: container:"))
        }
        _ => spec::NetworkMode::Private,
    };
    // `container:<id>` for the PID namespace is resolved by the agent at
    // start (the other container's process); Docker knows no such form for
    // UTS, and joining another container's IPC namespace would also need
    // its /dev/shm, which Berth does not share yet.
    let namespace = |key: &str, mode: &Field<String>, joinable: bool| -> Result<NamespaceMode, CreateError> {
        match mode.as_str() {
            "" | "private" | "shareable" if key == "IpcMode" => Ok(NamespaceMode::Private),
            "" => Ok(NamespaceMode::Private),
            "host" => Ok(NamespaceMode::Host),
            other if joinable && other.strip_prefix("container:").is_some_and(|c| !c.is_empty()) => {
                Ok(NamespaceMode::Container(other["container:".len()..].to_string()))
            }
            other => Err(invalid(format!("HostConfig.{key}={other:?} is not supported by Berth yet"))),
        }
    };
    let pid = namespace("PidMode", &hc.pid_mode, true)?;
    let ipc = namespace("IpcMode", &hc.ipc_mode, false)?;
    let uts = namespace("UTSMode", &hc.uts_mode, false)?;
    for (key, value, allowed) in [
        ("CgroupnsMode", &hc.cgroupns_mode, &["", "private"][..]),
        ("Isolation", &hc.isolation, &["", "default"][..]),
        ("Cgroup", &hc.cgroup, &[""][..]),
    ] {
        let value = value.as_str();
        if !allowed.contains(&value) {
            return Err(invalid(format!("HostConfig.{key}={value:?} is not supported by Berth yet")));
        }
    }
    if !zero(&hc.masked_paths) || !zero(&hc.readonly_paths) {
        return Err(invalid("custom MaskedPaths/ReadonlyPaths are not supported by Berth yet"));
    }
    let log_config = hc.log_config.get();
    let log_type = log_config.map_or("", |log| log.kind.as_str());
    if !["", "json-file", "local"].contains(&log_type) {
        // dockerd's words: Berth keeps every container's log itself.
        return Err(invalid(format!("logger: no log driver named '{log_type}' is registered")));
    }
    let log_options = log_config.and_then(|log| log.config.get()).cloned().unwrap_or_default();
    crate::logfile::LogLimits::from_options(log_options.iter()).map_err(invalid)?;
    let mut no_new_privileges = false;
    for option in strings(&hc.security_opt) {
        match option.replace(':', "=").as_str() {
            "no-new-privileges" | "no-new-privileges=true" => no_new_privileges = true,
            "no-new-privileges=false" | "seccomp=unconfined" | "apparmor=unconfined" | "label=disable" => {}
            other => return Err(invalid(format!("security option {other:?} is not supported by Berth yet"))),
        }
    }
    let mut binds = Vec::new();
    let mut volumes = Vec::new();
    for bind in strings(&hc.binds) {
        match parse_bind(&bind)? {
            BindSpec::Host(b) => binds.push(b),
            BindSpec::Volume(v) => volumes.push(v),
        }
    }
    for mount in hc.mounts() {
        let kind = mount.kind.as_str();
        let target = mount.target.as_str();
        if !target.starts_with('/') {
            return Err(invalid(format!("invalid mount config: mount path must be absolute: {target:?}")));
        }
        if Path::new(target) == Path::new("/") && matches!(kind, "bind" | "volume") {
            return Err(invalid(root_destination(kind)));
        }
        match kind {
            "bind" => binds.push(Bind {
                source: mount.source.as_str().into(),
                target: target.into(),
                readonly: mount.read_only.or_zero(),
            }),
            "volume" => {
                let name = mount.source.as_str().to_string();
                volumes.push(VolumeMount {
                    anonymous: name.is_empty(),
                    name,
                    target: target.to_string(),
                    readonly: mount.read_only.or_zero(),
                    nocopy: mount.volume_options.get().is_some_and(|o| o.no_copy.or_zero()),
                })
            }
            other => return Err(invalid(format!("mounts of type {other:?} are not supported by Berth yet"))),
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
    for (target, options) in hc.tmpfs.get().into_iter().flat_map(StringMap::iter) {
        if !target.starts_with('/') {
            return Err(invalid(format!("invalid tmpfs mount point {target:?}: it must be absolute")));
        }
        tmpfs.push((target.to_string(), options.to_string()));
    }
    for volume in &volumes {
        if !volume.name.is_empty() && !crate::volume::valid_name(&volume.name) {
            return Err(invalid(format!(
                "\"{}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path",
                volume.name
            )));
        }
    }
    let resources = crate::limits::resources(&hc.resources).map_err(invalid)?;
    let shm_size = crate::limits::shm_size(hc.shm_size.or_zero()).map_err(invalid)?;
    let options = ContainerOptions {
        args,
        env,
        cwd,
        hostname,
        tty: config.tty.or_zero(),
        readonly_rootfs: hc.readonly_rootfs.or_zero(),
        privileged: hc.privileged.or_zero(),
        cap_add: str_slice(&hc.cap_add).unwrap_or_default(),
        cap_drop: str_slice(&hc.cap_drop).unwrap_or_default(),
        no_new_privileges,
        network,
        pid,
        ipc,
        uts,
        shm_size,
        tmpfs,
        binds,
        device_rules: strings(&hc.device_cgroup_rules)
            .iter()
            .map(|rule| crate::devices::parse_rule(rule).map_err(invalid))
            .collect::<Result<_, _>>()?,
        resources,
        ..Default::default()
    };
    Ok((options, volumes))
}
