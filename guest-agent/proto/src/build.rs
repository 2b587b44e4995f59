//! What a `POST /build` asks for, as the host decodes it from the query
//! and headers and the agent's builder reads it (BuildImage's first message).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildOptions {
    /// Path of the Dockerfile in the context ("" = `Dockerfile`).
    pub dockerfile: String,
    /// `t`: references to tag the result with.
    pub tags: Vec<String>,
    /// `buildargs`; a `null` value names an arg without giving it one.
    pub build_args: BTreeMap<String, Option<String>>,
    pub target: String,
    /// `platform` (`os[/arch[/variant]]`), checked before the build starts.
    pub platform: String,
    /// `labels`: appended as LABEL steps to the last stage.
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    pub pull: bool,
    /// `rm` (true when absent) / `forcerm`: intermediate containers go.
    pub remove: bool,
    pub force_remove: bool,
    /// `q`: only the image ID, unless the build fails.
    pub quiet: bool,
    pub cache_from: Vec<String>,
    pub network_mode: String,
    pub extra_hosts: Vec<String>,
    pub shm_size: i64,
    pub memory: i64,
    pub memory_swap: i64,
    pub cpu_shares: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    /// `X-Registry-Config`: registry -> Docker AuthConfig, for FROM pulls.
    pub registry_auth: BTreeMap<String, serde_json::Value>,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    /// The client's API version is at least 1.30: `aux` messages are sent.
    pub aux: bool,
}
