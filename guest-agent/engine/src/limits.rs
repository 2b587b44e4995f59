//! A container's resource limits from its HostConfig, range-checked at
//! create and update with dockerd's messages (daemon_unix.go,
//! verifyPlatformContainerResources), so that nothing the kernel or the
//! spec builder would refuse at start is ever recorded.
//!
use crate::container::config::{self, Field};
use crate::spec::Resources;

/// The kernel's smallest memory limit that Docker allows.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// A limit, if set (zero is "not set" in Docker's API).
fn number(field: &Field<i64>) -> Option<i64> {
    field.get().copied().filter(|n| *n != 0)
}

/// The limits the spec and the cgroup get.
pub fn resources(hc: &config::Resources) -> Result<Resources, String> {
    let memory = number(&hc.memory);
    if memory.is_some_and(|m| m < MIN_MEMORY) {
        return Err("Minimum memory limit allowed is 6MB".into());
    }
    let memory_swap = number(&hc.memory_swap);
    if let (Some(swap), Some(mem)) = (memory_swap, memory) {
        if swap > 0 && swap < mem {
            return Err("Minimum memoryswap limit should be larger than memory limit, see usage".into());
        }
    }
    if memory_swap.is_some() && memory.is_none() {
        return Err("You should always set the Memory limit when using Memoryswap limit, see usage".into());
    }
    let memory_reservation = number(&hc.memory_reservation);
    if let Some(reservation) = memory_reservation {
        if reservation < MIN_MEMORY {
            return Err("Minimum memory reservation allowed is 6MB".into());
        }
        if memory.is_some_and(|m| m > 0 && m < reservation) {
            return Err("Minimum memory limit can not be less than memory reservation limit, see usage".into());
        }
    }
    if let Some(swappiness) = number(&hc.memory_swappiness).filter(|s| *s != -1 && !(0..=100).contains(s)) {
        return Err(format!("Invalid value: {swappiness}, valid memory swappiness range is 0-100"));
    }
    Ok(Resources {
        memory,
        memory_swap,
        nano_cpus: cpu_limit(number(&hc.nano_cpus), number(&hc.cpu_quota), number(&hc.cpu_period))?,
        memory_reservation,
        // Negative shares mean "unset" to Docker's CLI; the cgroup clamps the rest.
        cpu_shares: hc.cpu_shares.get().and_then(|n| u64::try_from(*n).ok()).filter(|n| *n != 0),
        // Zero or negative is unlimited, as in dockerd.
        pids_limit: number(&hc.pids_limit).filter(|n| *n > 0),
        cpuset_cpus: hc.cpuset_cpus.get().filter(|s| !s.is_empty()).cloned(),
        cpuset_mems: hc.cpuset_mems.get().filter(|s| !s.is_empty()).cloned(),
    })
}

/// `--shm-size` in bytes, if given.
pub fn shm_size(size: i64) -> Result<Option<u64>, String> {
    match size {
        0 => Ok(None),
        n if n < 0 => Err("SHM size can not be less than 0".into()),
        n => Ok(Some(n as u64)),
    }
}

/// The CPU limit in nano-CPUs from `--cpus` or `--cpu-quota`/`--cpu-period`.
fn cpu_limit(nano_cpus: Option<i64>, quota: Option<i64>, period: Option<i64>) -> Result<Option<i64>, String> {
    if period.is_some_and(|p| !(1000..=1_000_000).contains(&p)) {
        return Err("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)".into());
    }
    // A negative quota is no limit (the kernel's "max"), as dockerd takes it.
    let quota = quota.filter(|q| *q > 0);
    if quota.is_some_and(|q| q < 1000) {
        return Err("CPU cfs quota can not be less than 1ms (i.e. 1000)".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    if nano_cpus.is_some_and(|n| n < 0 || n > cpus * 1_000_000_000) {
        return Err(format!("Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"));
    }
    Ok(match (nano_cpus, quota) {
        (Some(_), Some(_)) => {
            return Err("conflicting options: Nano CPUs and CPU Period/Quota cannot both be set".into())
        }
        (Some(n), None) => Some(n),
        (None, Some(quota)) => {
            // i128: a quota near i64::MAX times 10^9 overflows i64.
            let nano = quota as i128 * 1_000_000_000 / period.unwrap_or(100_000) as i128;
            Some(nano.min(i64::MAX as i128) as i64)
        }
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The typed limits of a HostConfig given as JSON.
    fn typed(hc: Value) -> config::Resources {
        serde_json::from_value(hc).unwrap()
    }

    fn refused(hc: Value) -> String {
        resources(&typed(hc)).err().unwrap_or_default()
    }

    /// The expected texts are what dockerd 20.10 answered for the same values.
    #[test]
    fn out_of_range_limits_are_refused_with_dockerds_messages() {
        assert_eq!(refused(json!({"Memory": -5})), "Minimum memory limit allowed is 6MB");
        assert_eq!(refused(json!({"MemoryReservation": 1})), "Minimum memory reservation allowed is 6MB");
        assert_eq!(refused(json!({"CpuQuota": 500})), "CPU cfs quota can not be less than 1ms (i.e. 1000)");
        let period = "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)";
        assert_eq!(refused(json!({"CpuPeriod": -1})), period);
        assert_eq!(refused(json!({"CpuPeriod": 2_000_000})), period);
        let cpus = std::thread::available_parallelism().unwrap().get();
        let range = format!("Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available");
        assert_eq!(refused(json!({"NanoCpus": -1})), range);
        assert_eq!(refused(json!({"NanoCpus": i64::MAX})), range);
        assert_eq!(
            refused(json!({"MemorySwappiness": 200})),
            "Invalid value: 200, valid memory swappiness range is 0-100"
        );
        assert_eq!(shm_size(-1), Err("SHM size can not be less than 0".into()));
    }

    #[test]
    fn values_dockerd_accepts_become_limits_the_spec_can_hold() {
        let r = resources(&typed(json!({"CpuQuota": -1, "PidsLimit": -1, "Memory": i64::MAX, "MemorySwappiness": -1})))
            .unwrap();
        assert_eq!((r.nano_cpus, r.pids_limit, r.memory), (None, None, Some(i64::MAX)), "-1 means unlimited");
        let r = resources(&typed(json!({"CpuQuota": i64::MAX, "CpuPeriod": 1000}))).unwrap();
        assert_eq!(r.nano_cpus, Some(i64::MAX), "no overflow");
        let r = resources(&typed(json!({"CpuQuota": 50_000}))).unwrap();
        assert_eq!(r.nano_cpus, Some(500_000_000));
        assert_eq!(shm_size(65536), Ok(Some(65536)));
    }
}
