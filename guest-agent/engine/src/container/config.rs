//! Docker's container `Config` and `HostConfig` as the engine keeps them:
//! typed for the fields Berth implements (or will, with networking), every
//! other field kept as sent in `rest`.
//!
//! Lossless on purpose: `docker inspect` shows the request back (clients
//! parse it), and `container.json` on a user's data disk is read by the next
//! version. So a field remembers whether it was absent or `null` (`Field`),
//! and lists and maps keep `null` elements (`Strings`, `StringMap`); the
//! accessors give the engine Go's view (a `null` element is no value). The
//! one normalisation is dockerd's: a blank NetworkMode is `default`.
//!
//! The JSON was type-checked before (`docker_json::check`), so decoding a
//! checked body into these types cannot fail on a type; `CreateRequest::parse`
//! still turns a failure into a 400 rather than trusting that.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A field as the client sent it: absent, `null`, or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(value) => Some(value),
            Field::Absent | Field::Null => None,
        }
    }

    pub fn get_mut(&mut self) -> Option<&mut T> {
        match self {
            Field::Set(value) => Some(value),
            Field::Absent | Field::Null => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }
}

impl<T: Default> Field<T> {
    /// The value, set to Go's zero value first if absent or null.
    pub fn get_or_insert_default(&mut self) -> &mut T {
        if !matches!(self, Field::Set(_)) {
            *self = Field::Set(T::default());
        }
        match self {
            Field::Set(value) => value,
            Field::Absent | Field::Null => unreachable!("set above"),
        }
    }
}

impl<T: Copy + Default> Field<T> {
    /// The value, or Go's zero value.
    pub fn or_zero(&self) -> T {
        self.get().copied().unwrap_or_default()
    }
}

impl Field<String> {
    /// The string, "" when absent or null (Go's zero value).
    pub fn as_str(&self) -> &str {
        self.get().map_or("", String::as_str)
    }
}

impl<T> From<T> for Field<T> {
    fn from(value: T) -> Self {
        Field::Set(value)
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Set(value) => value.serialize(serializer),
            // Absent fields are skipped by `skip_serializing_if`.
            Field::Absent | Field::Null => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(deserializer)?.map_or(Field::Null, Field::Set))
    }
}

/// Go's `[]string`, with any `null` element kept as sent (Go reads it as "").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Strings(pub Vec<Option<String>>);

impl Strings {
    /// The strings, without the `null` elements (what the engine has always
    /// acted on).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().flatten().map(String::as_str)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl From<Vec<String>> for Strings {
    fn from(items: Vec<String>) -> Self {
        Strings(items.into_iter().map(Some).collect())
    }
}

/// moby's `strslice.StrSlice` (Cmd, Entrypoint, CapAdd...): one string or a
/// list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StrSlice {
    One(String),
    List(Strings),
}

impl StrSlice {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StrSlice::One(one) => vec![one.clone()],
            StrSlice::List(list) => list.to_vec(),
        }
    }
}

/// The strings of an optional list field; none when absent or null.
pub fn strings(field: &Field<Strings>) -> Vec<String> {
    field.get().map(Strings::to_vec).unwrap_or_default()
}

/// The strings of an optional StrSlice field.
pub fn str_slice(field: &Field<StrSlice>) -> Option<Vec<String>> {
    field.get().map(StrSlice::to_vec)
}

/// Go's `map[string]string`, with `null` values kept as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StringMap(pub BTreeMap<String, Option<String>>);

impl StringMap {
    /// The value of `key` ("" for a `null` one, as Go reads it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_deref().unwrap_or(""))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or("")))
    }
}

/// Declares a struct of Docker JSON fields, each a `Field` under its JSON
/// name and left out when absent; `open` ones keep every other field in
/// `rest`.
macro_rules! docker_fields {
    (@struct $(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $json:literal $field:ident: $ty:ty,)* } $($rest:tt)*) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $(
                $(#[$doc])*
                #[serde(rename = $json, default, skip_serializing_if = "Field::is_absent")]
                pub $field: Field<$ty>,
            )*
            $($rest)*
        }
    };
    (open $(#[$meta:meta])* $name:ident { $($body:tt)* } $($extra:tt)*) => {
        docker_fields!(@struct $(#[$meta])* $name { $($body)* }
            $($extra)*
            /// The fields the engine does not look at, as sent.
            #[serde(flatten)]
            pub rest: Map<String, Value>,
        );
    };
    (closed $(#[$meta:meta])* $name:ident { $($body:tt)* }) => {
        docker_fields!(@struct $(#[$meta])* $name { $($body)* });
    };
}

/// moby's `nat.PortSet` and the `Volumes` set: the keys matter, each value
/// is an empty object.
pub type KeySet = BTreeMap<String, Value>;

docker_fields!(open
    /// Docker's `container.Config`, merged with the image's defaults.
    Config {
        "Hostname" hostname: String,
        "User" user: String,
        "AttachStdin" attach_stdin: bool,
        "AttachStdout" attach_stdout: bool,
        "AttachStderr" attach_stderr: bool,
        "ExposedPorts" exposed_ports: KeySet,
        "Tty" tty: bool,
        "OpenStdin" open_stdin: bool,
        "StdinOnce" stdin_once: bool,
        "Env" env: Strings,
        "Cmd" cmd: StrSlice,
        "Image" image: String,
        "Volumes" volumes: KeySet,
        "WorkingDir" working_dir: String,
        "Entrypoint" entrypoint: StrSlice,
        "Labels" labels: StringMap,
        "StopSignal" stop_signal: String,
        "StopTimeout" stop_timeout: i64,
        "Healthcheck" healthcheck: crate::image_config::Healthcheck,
    }
);

docker_fields!(closed
    /// moby's `container.Resources` as far as Berth applies them: the
    /// limits `docker update` can change too.
    Resources {
        "Memory" memory: i64,
        "MemorySwap" memory_swap: i64,
        "MemoryReservation" memory_reservation: i64,
        /// cgroup v1 only; Docker on cgroup v2 accepts and ignores it too.
        "MemorySwappiness" memory_swappiness: i64,
        "NanoCpus" nano_cpus: i64,
        "CpuShares" cpu_shares: i64,
        "CpuQuota" cpu_quota: i64,
        "CpuPeriod" cpu_period: i64,
        "CpusetCpus" cpuset_cpus: String,
        "CpusetMems" cpuset_mems: String,
        "PidsLimit" pids_limit: i64,
    }
);

docker_fields!(open
    /// Docker's `container.HostConfig`.
    HostConfig {
        "Binds" binds: Strings,
        "LogConfig" log_config: LogConfig,
        "NetworkMode" network_mode: NetworkMode,
        "PortBindings" port_bindings: PortMap,
        "RestartPolicy" restart_policy: RestartPolicyConfig,
        "AutoRemove" auto_remove: bool,
        "VolumesFrom" volumes_from: Strings,
        /// `[rows, cols]`; Go ignores elements past the second.
        "ConsoleSize" console_size: Vec<Option<u64>>,
        "CapAdd" cap_add: StrSlice,
        "CapDrop" cap_drop: StrSlice,
        "CgroupnsMode" cgroupns_mode: String,
        "Dns" dns: Strings,
        "DnsOptions" dns_options: Strings,
        "DnsSearch" dns_search: Strings,
        "ExtraHosts" extra_hosts: Strings,
        "GroupAdd" group_add: Strings,
        "IpcMode" ipc_mode: String,
        "Cgroup" cgroup: String,
        "Links" links: Strings,
        "PidMode" pid_mode: String,
        "Privileged" privileged: bool,
        "PublishAllPorts" publish_all_ports: bool,
        "ReadonlyRootfs" readonly_rootfs: bool,
        "SecurityOpt" security_opt: Strings,
        "Tmpfs" tmpfs: StringMap,
        "UTSMode" uts_mode: String,
        "ShmSize" shm_size: i64,
        "Runtime" runtime: String,
        "Isolation" isolation: String,
        "Mounts" mounts: Vec<Option<Mount>>,
        "MaskedPaths" masked_paths: Strings,
        "ReadonlyPaths" readonly_paths: Strings,
        "Init" init: bool,
        "DeviceCgroupRules" device_cgroup_rules: Strings,
    }
    #[serde(flatten)]
    pub resources: Resources,
);

impl HostConfig {
    /// The first field (in JSON key order, as dockerd's refusals have always
    /// come out of a sorted map) that asks for something Berth does not do.
    pub fn unsupported(&self) -> Option<String> {
        // Dns, DnsOptions, DnsSearch, ExtraHosts and Links are container
        // networking's (the agent's containers/networks.rs).
        let unknown = self.rest.iter().filter(|(_, value)| !is_zero(value)).map(|(key, _)| key.as_str());
        unknown.min().map(str::to_string)
    }

    /// `[rows, cols]` of the terminal the client asked for.
    pub fn console_size(&self) -> (Option<u64>, Option<u64>) {
        let size = self.console_size.get().map(Vec::as_slice).unwrap_or_default();
        (size.first().copied().flatten(), size.get(1).copied().flatten())
    }

    /// The bind and volume entries of `--mount` (nulls are Go's zero mount).
    pub fn mounts(&self) -> impl Iterator<Item = Mount> + '_ {
        self.mounts.get().into_iter().flatten().map(|m| m.clone().unwrap_or_default())
    }
}

docker_fields!(open
    /// moby's `container.LogConfig`.
    LogConfig {
        "Type" kind: String,
        "Config" config: StringMap,
    }
);

docker_fields!(open
    /// moby's `container.RestartPolicy` as sent (`RestartPolicy` is what it means).
    RestartPolicyConfig {
        "Name" name: String,
        "MaximumRetryCount" maximum_retry_count: i64,
    }
);

docker_fields!(open
    /// moby's `mount.Mount` (`--mount`).
    Mount {
        "Type" kind: String,
        "Source" source: String,
        "Target" target: String,
        "ReadOnly" read_only: bool,
        "VolumeOptions" volume_options: VolumeOptions,
    }
);

docker_fields!(open
    /// moby's `mount.VolumeOptions`.
    VolumeOptions {
        "NoCopy" no_copy: bool,
    }
);

/// moby's `nat.PortMap`: `"80/tcp"` to its host bindings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PortMap(pub BTreeMap<String, Option<Vec<Option<PortBinding>>>>);

docker_fields!(open
    /// moby's `nat.PortBinding`.
    PortBinding {
        "HostIp" host_ip: String,
        "HostPort" host_port: String,
    }
);

docker_fields!(open
    /// moby's `network.NetworkingConfig`: the create request's endpoints.
    NetworkingConfig {
        "EndpointsConfig" endpoints_config: BTreeMap<String, Option<EndpointSettings>>,
    }
);

docker_fields!(open
    /// moby's `network.EndpointSettings` as a create request gives them.
    EndpointSettings {
        "IPAMConfig" ipam_config: EndpointIpamConfig,
        "Links" links: Strings,
        "Aliases" aliases: Strings,
        "NetworkID" network_id: String,
        "MacAddress" mac_address: String,
        "DriverOpts" driver_opts: StringMap,
    }
);

docker_fields!(open
    /// moby's `network.EndpointIPAMConfig`.
    EndpointIpamConfig {
        "IPv4Address" ipv4_address: String,
        "IPv6Address" ipv6_address: String,
        "LinkLocalIPs" link_local_ips: Strings,
    }
);

/// `POST /containers/create`'s body: the Config with HostConfig and
/// NetworkingConfig beside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    #[serde(flatten)]
    pub config: Config,
    #[serde(rename = "HostConfig", default, skip_serializing_if = "Field::is_absent")]
    pub host_config: Field<HostConfig>,
    #[serde(rename = "NetworkingConfig", default, skip_serializing_if = "Field::is_absent")]
    pub networking_config: Field<NetworkingConfig>,
}

/// HostConfig.NetworkMode: which network namespace a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// `default` (or blank): the engine's default network, `bridge`.
    #[default]
    Default,
    Bridge,
    /// Loopback only.
    None,
    /// The VM's own network namespace.
    Host,
    /// `container:<name or id>`: another container's network namespace.
    Container(String),
    /// A user-defined network, by name or ID.
    Network(String),
}

impl NetworkMode {
    pub fn parse(text: &str) -> NetworkMode {
        match text {
            "" | "default" => NetworkMode::Default,
            "bridge" => NetworkMode::Bridge,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => match other.strip_prefix("container:") {
                Some(container) => NetworkMode::Container(container.to_string()),
                None => NetworkMode::Network(other.to_string()),
            },
        }
    }

    /// Docker's spelling, as inspect shows it.
    pub fn name(&self) -> String {
        match self {
            NetworkMode::Default => "default".into(),
            NetworkMode::Bridge => "bridge".into(),
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Container(container) => format!("container:{container}"),
            NetworkMode::Network(network) => network.clone(),
        }
    }
}

impl Serialize for NetworkMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for NetworkMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(NetworkMode::parse(&String::deserialize(deserializer)?))
    }
}

/// Whether a field holds Go's zero value (absent and `null` do).
pub fn zero<T: Serialize>(field: &Field<T>) -> bool {
    serde_json::to_value(field).is_ok_and(|value| is_zero(&value))
}

/// Whether a JSON value is what Go's encoder writes for a zero value, i.e.
/// the client did not ask for anything.
pub fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(o) => o.values().all(is_zero),
    }
}
