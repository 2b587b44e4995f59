//! `docker update`: new limits and restart policy merged into a HostConfig.

use serde_json::Value;

use super::config::{is_zero, Field, HostConfig, RestartPolicyConfig};
use super::{invalid, CreateError, RestartPolicy};
use crate::docker_json;

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

fn decoded<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, CreateError> {
    serde_json::from_value(value).map_err(|e| invalid(format!("the update: {e}")))
}

/// The HostConfig after `docker update`: each field the request sets (a
/// zero value means "unchanged", as in Docker) replaces the old one. The
/// result is checked by `resolve` as a create would be; the caller applies
/// it to the running cgroup and persists it.
///
/// The merge is on the JSON, key by key in the body's order, so the first
/// refusal is the one it has always been.
pub fn apply_update(host_config: &HostConfig, update: &Value) -> Result<HostConfig, CreateError> {
    docker_json::check(&docker_json::CONTAINER_UPDATE, update).map_err(invalid)?;
    let Some(fields) = update.as_object() else {
        return Err(invalid("the update must be a JSON object"));
    };
    let mut updated = serde_json::to_value(host_config).map_err(|e| invalid(e.to_string()))?;
    for (key, value) in fields {
        if is_zero(value) {
            continue;
        }
        if !UPDATABLE.contains(&key.as_str()) {
            return Err(invalid(format!("updating {key} is not supported by Berth yet")));
        }
        if key == "RestartPolicy" {
            let policy: Field<RestartPolicyConfig> = decoded(value.clone())?;
            let name = policy.get().and_then(|p| p.name.get()).map(String::as_str);
            if host_config.auto_remove.or_zero() && !matches!(name, None | Some("no")) {
                // dockerd's words.
                return Err(invalid(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                ));
            }
            RestartPolicy::parse(&policy)?;
        }
        updated[key] = value.clone();
    }
    let updated: HostConfig = decoded(updated)?;
    // Docker: a new memory limit above the old swap limit needs a new swap
    // limit too (the old one would be below memory).
    let (memory, swap) = (updated.resources.memory.or_zero(), updated.resources.memory_swap.or_zero());
    if is_zero(&update["MemorySwap"]) && swap > 0 && memory > swap {
        return Err(invalid(
            "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
        ));
    }
    Ok(updated)
}
