//! The Docker API request bodies Berth accepts, checked as dockerd's decoder
//! (Go's encoding/json into moby's types) checks them: a value of the wrong
//! JSON type, or a number that does not fit its Go integer type, is refused
//! with Go's own words, e.g. `json: cannot unmarshal string into Go struct
//! field ContainerConfigWrapper.HostConfig of type container.HostConfig`.
//! Unknown fields and `null` anywhere are accepted, as Go accepts them.
//!
//! Why a declarative schema and not serde structs: serde's errors name Rust
//! types and carry no path, while clients (and the tests of tools built on
//! Docker) see Go's type names and Go's path format (the innermost struct,
//! then the full field path). One table per moby type gives both exactly,
//! and the engine keeps working on the checked JSON as before.
//!
//! Shared by the host (exec and network bodies, which it handles itself)
//! and the agent (create, update and volume bodies, which the engine owns).

use serde_json::{Map, Value};

/// A moby type as Go's decoder sees it.
#[derive(Debug)]
pub enum Kind {
    /// A string, or a named string type (`container.NetworkMode`).
    String(&'static str),
    Bool,
    /// An integer type: its Go name and range.
    Int(&'static str, i128, i128),
    /// `[]T` (or `[N]T`: Go ignores elements past a fixed array's length).
    Slice(&'static str, &'static Kind),
    /// moby's `strslice.StrSlice`: a string or an array of strings.
    StrSlice,
    /// `map[string]T` (JSON object keys are always strings).
    Map(&'static str, &'static Kind),
    Struct(&'static Struct),
    /// `struct {}`: any object.
    Empty,
}

/// A Go struct: its type name (as `of type` shows it), its short name (as
/// `Go struct field` shows it) and its JSON fields, embedded ones included.
#[derive(Debug)]
pub struct Struct {
    pub go_type: &'static str,
    pub name: &'static str,
    pub fields: &'static [(&'static str, Kind)],
}

const STRING: Kind = Kind::String("string");
const BOOL: Kind = Kind::Bool;
const INT: Kind = Kind::Int("int", i64::MIN as i128, i64::MAX as i128);
const INT64: Kind = Kind::Int("int64", i64::MIN as i128, i64::MAX as i128);
const UINT: Kind = Kind::Int("uint", 0, u64::MAX as i128);
const UINT16: Kind = Kind::Int("uint16", 0, u16::MAX as i128);
const UINT64: Kind = Kind::Int("uint64", 0, u64::MAX as i128);
const DURATION: Kind = Kind::Int("time.Duration", i64::MIN as i128, i64::MAX as i128);
const STRINGS: Kind = Kind::Slice("[]string", &STRING);
const STRING_MAP: Kind = Kind::Map("map[string]string", &STRING);
const CONSOLE_SIZE: Kind = Kind::Slice("[2]uint", &UINT);

const fn named(go_type: &'static str) -> Kind {
    Kind::String(go_type)
}

static LOG_CONFIG: Struct =
    Struct { go_type: "container.LogConfig", name: "LogConfig", fields: &[("Type", STRING), ("Config", STRING_MAP)] };

static RESTART_POLICY: Struct = Struct {
    go_type: "container.RestartPolicy",
    name: "RestartPolicy",
    fields: &[("Name", named("container.RestartPolicyMode")), ("MaximumRetryCount", INT)],
};

static PORT_BINDING: Struct =
    Struct { go_type: "nat.PortBinding", name: "PortBinding", fields: &[("HostIp", STRING), ("HostPort", STRING)] };

static DEVICE_MAPPING: Struct = Struct {
    go_type: "container.DeviceMapping",
    name: "DeviceMapping",
    fields: &[("PathOnHost", STRING), ("PathInContainer", STRING), ("CgroupPermissions", STRING)],
};

static ULIMIT: Struct =
    Struct { go_type: "units.Ulimit", name: "Ulimit", fields: &[("Name", STRING), ("Hard", INT64), ("Soft", INT64)] };

static WEIGHT_DEVICE: Struct =
    Struct { go_type: "blkiodev.WeightDevice", name: "WeightDevice", fields: &[("Path", STRING), ("Weight", UINT16)] };

static THROTTLE_DEVICE: Struct = Struct {
    go_type: "blkiodev.ThrottleDevice",
    name: "ThrottleDevice",
    fields: &[("Path", STRING), ("Rate", UINT64)],
};

static DEVICE_REQUEST: Struct = Struct {
    go_type: "container.DeviceRequest",
    name: "DeviceRequest",
    fields: &[
        ("Driver", STRING),
        ("Count", INT),
        ("DeviceIDs", STRINGS),
        ("Capabilities", Kind::Slice("[][]string", &STRINGS)),
        ("Options", STRING_MAP),
    ],
};

static BIND_OPTIONS: Struct = Struct {
    go_type: "mount.BindOptions",
    name: "BindOptions",
    fields: &[("Propagation", named("mount.Propagation")), ("NonRecursive", BOOL)],
};

static MOUNT_DRIVER: Struct =
    Struct { go_type: "mount.Driver", name: "Driver", fields: &[("Name", STRING), ("Options", STRING_MAP)] };

static VOLUME_OPTIONS: Struct = Struct {
    go_type: "mount.VolumeOptions",
    name: "VolumeOptions",
    fields: &[("NoCopy", BOOL), ("Labels", STRING_MAP), ("DriverConfig", Kind::Struct(&MOUNT_DRIVER))],
};

static TMPFS_OPTIONS: Struct = Struct {
    go_type: "mount.TmpfsOptions",
    name: "TmpfsOptions",
    fields: &[("SizeBytes", INT64), ("Mode", Kind::Int("fs.FileMode", 0, u32::MAX as i128))],
};

static MOUNT: Struct = Struct {
    go_type: "mount.Mount",
    name: "Mount",
    fields: &[
        ("Type", named("mount.Type")),
        ("Source", STRING),
        ("Target", STRING),
        ("ReadOnly", BOOL),
        ("Consistency", named("mount.Consistency")),
        ("BindOptions", Kind::Struct(&BIND_OPTIONS)),
        ("VolumeOptions", Kind::Struct(&VOLUME_OPTIONS)),
        ("TmpfsOptions", Kind::Struct(&TMPFS_OPTIONS)),
    ],
};

/// moby's `container.Resources`, embedded in HostConfig and UpdateConfig.
macro_rules! resources {
    ($($extra:expr),* $(,)?) => {
        &[
            ("CpuShares", INT64),
            ("Memory", INT64),
            ("NanoCpus", INT64),
            ("CgroupParent", STRING),
            ("BlkioWeight", UINT16),
            ("BlkioWeightDevice", Kind::Slice("[]*blkiodev.WeightDevice", &Kind::Struct(&WEIGHT_DEVICE))),
            ("BlkioDeviceReadBps", Kind::Slice("[]*blkiodev.ThrottleDevice", &Kind::Struct(&THROTTLE_DEVICE))),
            ("BlkioDeviceWriteBps", Kind::Slice("[]*blkiodev.ThrottleDevice", &Kind::Struct(&THROTTLE_DEVICE))),
            ("BlkioDeviceReadIOps", Kind::Slice("[]*blkiodev.ThrottleDevice", &Kind::Struct(&THROTTLE_DEVICE))),
            ("BlkioDeviceWriteIOps", Kind::Slice("[]*blkiodev.ThrottleDevice", &Kind::Struct(&THROTTLE_DEVICE))),
            ("CpuPeriod", INT64),
            ("CpuQuota", INT64),
            ("CpuRealtimePeriod", INT64),
            ("CpuRealtimeRuntime", INT64),
            ("CpusetCpus", STRING),
            ("CpusetMems", STRING),
            ("Devices", Kind::Slice("[]container.DeviceMapping", &Kind::Struct(&DEVICE_MAPPING))),
            ("DeviceCgroupRules", STRINGS),
            ("DeviceRequests", Kind::Slice("[]container.DeviceRequest", &Kind::Struct(&DEVICE_REQUEST))),
            ("KernelMemory", INT64),
            ("KernelMemoryTCP", INT64),
            ("MemoryReservation", INT64),
            ("MemorySwap", INT64),
            ("MemorySwappiness", INT64),
            ("OomKillDisable", BOOL),
            ("PidsLimit", INT64),
            ("Ulimits", Kind::Slice("[]*units.Ulimit", &Kind::Struct(&ULIMIT))),
            ("CpuCount", INT64),
            ("CpuPercent", INT64),
            ("IOMaximumIOps", UINT64),
            ("IOMaximumBandwidth", UINT64),
            $($extra),*
        ]
    };
}

static HOST_CONFIG: Struct = Struct {
    go_type: "container.HostConfig",
    name: "HostConfig",
    fields: resources![
        ("Binds", STRINGS),
        ("ContainerIDFile", STRING),
        ("LogConfig", Kind::Struct(&LOG_CONFIG)),
        ("NetworkMode", named("container.NetworkMode")),
        ("PortBindings", Kind::Map("nat.PortMap", &Kind::Slice("[]nat.PortBinding", &Kind::Struct(&PORT_BINDING)))),
        ("RestartPolicy", Kind::Struct(&RESTART_POLICY)),
        ("AutoRemove", BOOL),
        ("VolumeDriver", STRING),
        ("VolumesFrom", STRINGS),
        ("ConsoleSize", CONSOLE_SIZE),
        ("Annotations", STRING_MAP),
        ("CapAdd", Kind::StrSlice),
        ("CapDrop", Kind::StrSlice),
        ("CgroupnsMode", named("container.CgroupnsMode")),
        ("Dns", STRINGS),
        ("DnsOptions", STRINGS),
        ("DnsSearch", STRINGS),
        ("ExtraHosts", STRINGS),
        ("GroupAdd", STRINGS),
        ("IpcMode", named("container.IpcMode")),
        ("Cgroup", named("container.CgroupSpec")),
        ("Links", STRINGS),
        ("OomScoreAdj", INT),
        ("PidMode", named("container.PidMode")),
        ("Privileged", BOOL),
        ("PublishAllPorts", BOOL),
        ("ReadonlyRootfs", BOOL),
        ("SecurityOpt", STRINGS),
        ("StorageOpt", STRING_MAP),
        ("Tmpfs", STRING_MAP),
        ("UTSMode", named("container.UTSMode")),
        ("UsernsMode", named("container.UsernsMode")),
        ("ShmSize", INT64),
        ("Sysctls", STRING_MAP),
        ("Runtime", STRING),
        ("Isolation", named("container.Isolation")),
        ("Mounts", Kind::Slice("[]mount.Mount", &Kind::Struct(&MOUNT))),
        ("MaskedPaths", STRINGS),
        ("ReadonlyPaths", STRINGS),
        ("Init", BOOL),
    ],
};

static HEALTH_CONFIG: Struct = Struct {
    go_type: "container.HealthConfig",
    name: "HealthConfig",
    fields: &[
        ("Test", STRINGS),
        ("Interval", DURATION),
        ("Timeout", DURATION),
        ("StartPeriod", DURATION),
        ("StartInterval", DURATION),
        ("Retries", INT),
    ],
};

static ENDPOINT_IPAM_CONFIG: Struct = Struct {
    go_type: "network.EndpointIPAMConfig",
    name: "EndpointIPAMConfig",
    fields: &[("IPv4Address", STRING), ("IPv6Address", STRING), ("LinkLocalIPs", STRINGS)],
};

static ENDPOINT_SETTINGS: Struct = Struct {
    go_type: "network.EndpointSettings",
    name: "EndpointSettings",
    fields: &[
        ("IPAMConfig", Kind::Struct(&ENDPOINT_IPAM_CONFIG)),
        ("Links", STRINGS),
        ("Aliases", STRINGS),
        ("NetworkID", STRING),
        ("EndpointID", STRING),
        ("Gateway", STRING),
        ("IPAddress", STRING),
        ("IPPrefixLen", INT),
        ("IPv6Gateway", STRING),
        ("GlobalIPv6Address", STRING),
        ("GlobalIPv6PrefixLen", INT),
        ("MacAddress", STRING),
        ("DriverOpts", STRING_MAP),
    ],
};

static NETWORKING_CONFIG: Struct = Struct {
    go_type: "network.NetworkingConfig",
    name: "NetworkingConfig",
    fields: &[(
        "EndpointsConfig",
        Kind::Map("map[string]*network.EndpointSettings", &Kind::Struct(&ENDPOINT_SETTINGS)),
    )],
};

/// `POST /containers/create`: container.Config with HostConfig and
/// NetworkingConfig beside it (dockerd's `ContainerConfigWrapper`).
pub static CONTAINER_CREATE: Struct = Struct {
    go_type: "runconfig.ContainerConfigWrapper",
    name: "ContainerConfigWrapper",
    fields: &[
        ("Hostname", STRING),
        ("Domainname", STRING),
        ("User", STRING),
        ("AttachStdin", BOOL),
        ("AttachStdout", BOOL),
        ("AttachStderr", BOOL),
        ("ExposedPorts", Kind::Map("nat.PortSet", &Kind::Empty)),
        ("Tty", BOOL),
        ("OpenStdin", BOOL),
        ("StdinOnce", BOOL),
        ("Env", STRINGS),
        ("Cmd", Kind::StrSlice),
        ("Healthcheck", Kind::Struct(&HEALTH_CONFIG)),
        ("ArgsEscaped", BOOL),
        ("Image", STRING),
        ("Volumes", Kind::Map("map[string]struct {}", &Kind::Empty)),
        ("WorkingDir", STRING),
        ("Entrypoint", Kind::StrSlice),
        ("NetworkDisabled", BOOL),
        ("MacAddress", STRING),
        ("OnBuild", STRINGS),
        ("Labels", STRING_MAP),
        ("StopSignal", STRING),
        ("StopTimeout", INT),
        ("Shell", Kind::StrSlice),
        ("HostConfig", Kind::Struct(&HOST_CONFIG)),
        ("NetworkingConfig", Kind::Struct(&NETWORKING_CONFIG)),
    ],
};

/// `POST /containers/{id}/update`.
pub static CONTAINER_UPDATE: Struct = Struct {
    go_type: "container.UpdateConfig",
    name: "UpdateConfig",
    fields: resources![("RestartPolicy", Kind::Struct(&RESTART_POLICY))],
};

/// `POST /containers/{id}/exec`.
pub static EXEC_CREATE: Struct = Struct {
    go_type: "types.ExecConfig",
    name: "ExecConfig",
    fields: &[
        ("User", STRING),
        ("Privileged", BOOL),
        ("Tty", BOOL),
        ("ConsoleSize", CONSOLE_SIZE),
        ("AttachStdin", BOOL),
        ("AttachStderr", BOOL),
        ("AttachStdout", BOOL),
        ("Detach", BOOL),
        ("DetachKeys", STRING),
        ("Env", STRINGS),
        ("WorkingDir", STRING),
        ("Cmd", STRINGS),
    ],
};

/// `POST /exec/{id}/start`.
pub static EXEC_START: Struct = Struct {
    go_type: "types.ExecStartCheck",
    name: "ExecStartCheck",
    fields: &[("Detach", BOOL), ("Tty", BOOL), ("ConsoleSize", CONSOLE_SIZE)],
};

/// `POST /volumes/create`.
pub static VOLUME_CREATE: Struct = Struct {
    go_type: "volume.VolumeCreateBody",
    name: "VolumeCreateBody",
    fields: &[("Name", STRING), ("Driver", STRING), ("DriverOpts", STRING_MAP), ("Labels", STRING_MAP)],
};

static IPAM_CONFIG: Struct = Struct {
    go_type: "network.IPAMConfig",
    name: "IPAMConfig",
    fields: &[("Subnet", STRING), ("IPRange", STRING), ("Gateway", STRING), ("AuxiliaryAddresses", STRING_MAP)],
};

static IPAM: Struct = Struct {
    go_type: "network.IPAM",
    name: "IPAM",
    fields: &[
        ("Driver", STRING),
        ("Options", STRING_MAP),
        ("Config", Kind::Slice("[]network.IPAMConfig", &Kind::Struct(&IPAM_CONFIG))),
    ],
};

static CONFIG_REFERENCE: Struct =
    Struct { go_type: "network.ConfigReference", name: "ConfigReference", fields: &[("Network", STRING)] };

/// `POST /networks/create`.
pub static NETWORK_CREATE: Struct = Struct {
    go_type: "types.NetworkCreateRequest",
    name: "NetworkCreateRequest",
    fields: &[
        ("Name", STRING),
        ("CheckDuplicate", BOOL),
        ("Driver", STRING),
        ("Scope", STRING),
        ("EnableIPv6", BOOL),
        ("IPAM", Kind::Struct(&IPAM)),
        ("Internal", BOOL),
        ("Attachable", BOOL),
        ("Ingress", BOOL),
        ("ConfigOnly", BOOL),
        ("ConfigFrom", Kind::Struct(&CONFIG_REFERENCE)),
        ("Options", STRING_MAP),
        ("Labels", STRING_MAP),
    ],
};

/// Go's name for the JSON type of a value, as its errors say it.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where a value sits: the innermost struct's short name and the field
/// path from the top (Go's `Struct.Field`), or the top itself.
struct Place<'a> {
    parent: &'static str,
    path: &'a str,
}

impl Place<'_> {
    fn mismatch(&self, value: impl std::fmt::Display, go_type: &str) -> String {
        if self.path.is_empty() {
            format!("json: cannot unmarshal {value} into Go value of type {go_type}")
        } else {
            format!(
                "json: cannot unmarshal {value} into Go struct field {}.{} of type {go_type}",
                self.parent, self.path
            )
        }
    }
}

/// Checks `value` (a parsed request body) against `schema` as Go's decoder
/// would; the error is dockerd's message.
pub fn check(schema: &'static Struct, value: &Value) -> Result<(), String> {
    let place = Place { parent: schema.name, path: "" };
    check_kind(&Kind::Struct(schema), value, &place)
}

/// Parses and checks a body: what dockerd answers for bytes that are not
/// JSON (`invalid character ...`) or do not fit `schema`.
pub fn parse(schema: &'static Struct, body: &[u8]) -> Result<Value, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| go_syntax_error(&e))?;
    check(schema, &value)?;
    Ok(value)
}

/// serde_json's syntax error in Go's shape (Go names the offending
/// character, serde the position; both are kept).
fn go_syntax_error(err: &serde_json::Error) -> String {
    if err.is_eof() {
        "unexpected end of JSON input".to_string()
    } else {
        format!("invalid character in JSON: {err}")
    }
}

fn check_kind(kind: &Kind, value: &Value, place: &Place) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    match kind {
        Kind::String(go_type) => match value {
            Value::String(_) => Ok(()),
            other => Err(place.mismatch(json_kind(other), go_type)),
        },
        Kind::Bool => match value {
            Value::Bool(_) => Ok(()),
            other => Err(place.mismatch(json_kind(other), "bool")),
        },
        Kind::Int(go_type, min, max) => match value {
            Value::Number(n) => {
                let fits = match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => (*min..=*max).contains(&(i as i128)),
                    (None, Some(u)) => (*min..=*max).contains(&(u as i128)),
                    // A fraction or exponent: Go's ParseInt refuses it.
                    (None, None) => false,
                };
                if fits {
                    Ok(())
                } else {
                    Err(place.mismatch(format_args!("number {n}"), go_type))
                }
            }
            other => Err(place.mismatch(json_kind(other), go_type)),
        },
        Kind::StrSlice => match value {
            Value::String(_) => Ok(()),
            Value::Array(items) if items.iter().all(|i| i.is_string() || i.is_null()) => Ok(()),
            // StrSlice's UnmarshalJSON falls back to a string and reports
            // that failure, for the whole value.
            other => Err(place.mismatch(json_kind(other), "string")),
        },
        Kind::Slice(go_type, element) => match value {
            Value::Array(items) => items.iter().try_for_each(|item| check_kind(element, item, place)),
            other => Err(place.mismatch(json_kind(other), go_type)),
        },
        Kind::Map(go_type, element) => match value {
            Value::Object(entries) => entries.values().try_for_each(|item| check_kind(element, item, place)),
            other => Err(place.mismatch(json_kind(other), go_type)),
        },
        Kind::Empty => match value {
            Value::Object(_) => Ok(()),
            other => Err(place.mismatch(json_kind(other), "struct {}")),
        },
        Kind::Struct(schema) => match value {
            Value::Object(entries) => check_fields(schema, entries, place),
            other => Err(place.mismatch(json_kind(other), schema.go_type)),
        },
    }
}

fn check_fields(schema: &'static Struct, entries: &Map<String, Value>, place: &Place) -> Result<(), String> {
    for (key, value) in entries {
        // Go matches a key to a field exactly, else ignoring case.
        let field = schema
            .fields
            .iter()
            .find(|(name, _)| name == key)
            .or_else(|| schema.fields.iter().find(|(name, _)| name.eq_ignore_ascii_case(key)));
        let Some((name, kind)) = field else { continue };
        let path = if place.path.is_empty() { name.to_string() } else { format!("{}.{name}", place.path) };
        check_kind(kind, value, &Place { parent: schema.name, path: &path })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create_error(body: Value) -> String {
        check(&CONTAINER_CREATE, &body).unwrap_err()
    }

    /// Each expected text is what dockerd 20.10 answered for the same body.
    #[test]
    fn wrong_types_are_refused_in_dockerds_words() {
        let prefix = "json: cannot unmarshal ";
        let cases = [
            (
                json!({"HostConfig": "x"}),
                "string into Go struct field ContainerConfigWrapper.HostConfig of type container.HostConfig",
            ),
            (
                json!({"HostConfig": {"LogConfig": 5}}),
                "number into Go struct field HostConfig.HostConfig.LogConfig of type container.LogConfig",
            ),
            (json!({"Cmd": {}}), "object into Go struct field ContainerConfigWrapper.Cmd of type string"),
            (json!({"Cmd": [1]}), "array into Go struct field ContainerConfigWrapper.Cmd of type string"),
            (json!({"Env": "A=1"}), "string into Go struct field ContainerConfigWrapper.Env of type []string"),
            (
                json!({"Labels": {"a": {"b": 1}}}),
                "object into Go struct field ContainerConfigWrapper.Labels of type string",
            ),
            (
                json!({"HostConfig": {"Memory": "x"}}),
                "string into Go struct field HostConfig.HostConfig.Memory of type int64",
            ),
            (
                json!({"HostConfig": {"Memory": 9223372036854775808u64}}),
                "number 9223372036854775808 into Go struct field HostConfig.HostConfig.Memory of type int64",
            ),
            (
                json!({"HostConfig": {"Memory": 1.5}}),
                "number 1.5 into Go struct field HostConfig.HostConfig.Memory of type int64",
            ),
            (json!({"Image": 5}), "number into Go struct field ContainerConfigWrapper.Image of type string"),
            (json!({"Tty": "yes"}), "string into Go struct field ContainerConfigWrapper.Tty of type bool"),
            (
                json!({"HostConfig": {"Binds": [1]}}),
                "number into Go struct field HostConfig.HostConfig.Binds of type string",
            ),
            (
                json!({"HostConfig": {"RestartPolicy": {"MaximumRetryCount": "x"}}}),
                "string into Go struct field RestartPolicy.HostConfig.RestartPolicy.MaximumRetryCount of type int",
            ),
            (
                json!({"HostConfig": {"ConsoleSize": [-1, 2]}}),
                "number -1 into Go struct field HostConfig.HostConfig.ConsoleSize of type uint",
            ),
            (json!([]), "array into Go value of type runconfig.ContainerConfigWrapper"),
            (json!(5), "number into Go value of type runconfig.ContainerConfigWrapper"),
            (
                json!({"ExposedPorts": []}),
                "array into Go struct field ContainerConfigWrapper.ExposedPorts of type nat.PortSet",
            ),
            (
                json!({"HostConfig": {"Mounts": [{"Type": 5}]}}),
                "number into Go struct field Mount.HostConfig.Mounts.Type of type mount.Type",
            ),
            (
                json!({"NetworkingConfig": 5}),
                "number into Go struct field ContainerConfigWrapper.NetworkingConfig of type network.NetworkingConfig",
            ),
            (
                json!({"Volumes": {"/x": 5}}),
                "number into Go struct field ContainerConfigWrapper.Volumes of type struct {}",
            ),
            (
                json!({"HostConfig": {"CapAdd": 5}}),
                "number into Go struct field HostConfig.HostConfig.CapAdd of type string",
            ),
            (
                json!({"hostconfig": {"tmpfs": {"/x": 1}}}),
                "number into Go struct field HostConfig.HostConfig.Tmpfs of type string",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(create_error(body.clone()), format!("{prefix}{expected}"), "{body}");
        }
        let others = [
            (&EXEC_CREATE, json!({"Tty": "yes"}), "string into Go struct field ExecConfig.Tty of type bool"),
            (&EXEC_CREATE, json!({"Cmd": "ls"}), "string into Go struct field ExecConfig.Cmd of type []string"),
            (&EXEC_CREATE, json!([]), "array into Go value of type types.ExecConfig"),
            (&EXEC_START, json!({"Detach": "x"}), "string into Go struct field ExecStartCheck.Detach of type bool"),
            (
                &CONTAINER_UPDATE,
                json!({"Memory": "x"}),
                "string into Go struct field UpdateConfig.Memory of type int64",
            ),
            (
                &CONTAINER_UPDATE,
                json!({"RestartPolicy": 5}),
                "number into Go struct field UpdateConfig.RestartPolicy of type container.RestartPolicy",
            ),
            (&CONTAINER_UPDATE, json!([]), "array into Go value of type container.UpdateConfig"),
            (&VOLUME_CREATE, json!({"Name": 5}), "number into Go struct field VolumeCreateBody.Name of type string"),
            (
                &VOLUME_CREATE,
                json!({"DriverOpts": []}),
                "array into Go struct field VolumeCreateBody.DriverOpts of type map[string]string",
            ),
            (
                &NETWORK_CREATE,
                json!({"IPAM": 5}),
                "number into Go struct field NetworkCreateRequest.IPAM of type network.IPAM",
            ),
            (
                &NETWORK_CREATE,
                json!({"IPAM": {"Config": [{"Subnet": 5}]}}),
                "number into Go struct field IPAMConfig.IPAM.Config.Subnet of type string",
            ),
        ];
        for (schema, body, expected) in others {
            assert_eq!(check(schema, &body).unwrap_err(), format!("{prefix}{expected}"), "{body}");
        }
    }

    #[test]
    fn what_clients_send_is_accepted() {
        let docker_run = json!({"Hostname": "", "Env": [], "Cmd": ["sh"], "Image": "busybox", "Volumes": {"/v": {}},
            "Entrypoint": null, "Labels": {"a": "b"}, "StopTimeout": null, "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"Binds": null, "ConsoleSize": [24, 80, 3], "LogConfig": {"Type": "", "Config": {}},
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, "RestartPolicy": {"Name": "no"},
                "Memory": 9223372036854775807i64, "CpuQuota": -1, "Mounts": [{"Type": "bind", "Source": "/x", "Target": "/y"}],
                "MemorySwappiness": null, "Unknown": {"anything": [1]}},
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}}});
        assert_eq!(check(&CONTAINER_CREATE, &docker_run), Ok(()));
        assert_eq!(check(&CONTAINER_CREATE, &json!({"Cmd": "sh -c true", "Entrypoint": [""]})), Ok(()));
        assert_eq!(
            check(&NETWORK_CREATE, &json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/8"}]}})),
            Ok(())
        );
    }

    #[test]
    fn bodies_that_are_not_json() {
        assert_eq!(parse(&VOLUME_CREATE, b"{\"Name\":").unwrap_err(), "unexpected end of JSON input");
        assert!(parse(&VOLUME_CREATE, b"x").unwrap_err().starts_with("invalid character"));
        assert_eq!(parse(&VOLUME_CREATE, b"{\"Name\":\"v\"}").unwrap()["Name"], "v");
    }
}
