//! cgroup v2 for containers: one cgroup per container under `berth/`,
//! resource limits, the freezer, OOM detection and statistics.
//!
//! In the VM /sys/fs/cgroup is a pure cgroup v2 hierarchy. A local agent on a
//! v1/v2 hybrid host (Ubuntu 20.04, CentOS 8, Amazon Linux 2, this CI) uses
//! the unified hierarchy mounted at /sys/fs/cgroup/unified, which has the
//! freezer and the process list but no controllers. Limits whose controller
//! only the v1 hierarchies have go there instead: a "companion" cgroup
//! `<agent's own v1 cgroup>/berth/<id>` per such controller, with the v1
//! files (memory.limit_in_bytes, cpu.cfs_quota_us...), which the container's
//! process joins with its v2 cgroup. A limit no hierarchy can enforce is a
//! clear error, never dropped.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CgroupError {
    let context = context.into();
    move |source| CgroupError::Io { context, source }
}

fn is_cgroup2(path: &Path) -> bool {
    // f_type is i64 on glibc and u64 on musl: the cast is needed on one.
    #[allow(clippy::unnecessary_cast)]
    let is_v2 = nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC);
    is_v2.unwrap_or(false)
}

/// Where the unified hierarchy is mounted, if anywhere.
pub fn hierarchy_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].into_iter().map(PathBuf::from).find(|p| is_cgroup2(p))
}

/// The cgroup of container `id` (not created).
pub fn container_cgroup(root: &Path, id: &str) -> PathBuf {
    root.join("berth").join(id)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    std::fs::write(dir.join(file), value).map_err(io_err(format!("writing {value:?} to {}", dir.join(file).display())))
}

/// Docker's `--cpu-shares` (cgroup v1, 2..262144) as cgroup v2 cpu.weight
/// (1..10000), with the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// The cgroup v2 files that carry `resources`: (file, value, controller).
fn limit_files(resources: Option<&LinuxResources>) -> Vec<(&'static str, String, &'static str)> {
    let mut wanted = Vec::new();
    let Some(res) = resources else { return wanted };
    if let Some(mem) = res.memory() {
        if let Some(limit) = mem.limit() {
            wanted.push(("memory.max", limit_value(limit), "memory"));
            if let Some(swap) = mem.swap() {
                // Docker's MemorySwap counts memory plus swap.
                let swap_only = if swap < 0 { "max".to_string() } else { (swap - limit).max(0).to_string() };
                wanted.push(("memory.swap.max", swap_only, "memory"));
            }
        }
        if let Some(reservation) = mem.reservation() {
            wanted.push(("memory.low", limit_value(reservation), "memory"));
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(quota) = cpu.quota() {
            wanted.push(("cpu.max", format!("{} {}", limit_value(quota), cpu.period().unwrap_or(100_000)), "cpu"));
        }
        if let Some(shares) = cpu.shares() {
            wanted.push(("cpu.weight", shares_to_weight(shares).to_string(), "cpu"));
        }
        if let Some(cpus) = cpu.cpus() {
            wanted.push(("cpuset.cpus", cpus.clone(), "cpuset"));
        }
        if let Some(mems) = cpu.mems() {
            wanted.push(("cpuset.mems", mems.clone(), "cpuset"));
        }
    }
    if let Some(pids) = res.pids() {
        wanted.push(("pids.max", limit_value(pids.limit()), "pids"));
    }
    wanted
}

/// The same limits as cgroup v1 files: (controller, file, value), in the
/// order v1 needs (memory before memory+swap, period before quota).
fn v1_limit_files(resources: Option<&LinuxResources>) -> Vec<(&'static str, &'static str, String)> {
    let mut wanted = Vec::new();
    let Some(res) = resources else { return wanted };
    let v1 = |value: i64| if value < 0 { "-1".to_string() } else { value.to_string() };
    if let Some(mem) = res.memory() {
        if let Some(limit) = mem.limit() {
            wanted.push(("memory", "memory.limit_in_bytes", v1(limit)));
            if let Some(swap) = mem.swap() {
                // Docker's MemorySwap is v1's memory+swap figure as is.
                wanted.push(("memory", "memory.memsw.limit_in_bytes", v1(swap)));
            }
        }
        if let Some(reservation) = mem.reservation() {
            wanted.push(("memory", "memory.soft_limit_in_bytes", v1(reservation)));
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(quota) = cpu.quota() {
            wanted.push(("cpu", "cpu.cfs_period_us", cpu.period().unwrap_or(100_000).to_string()));
            wanted.push(("cpu", "cpu.cfs_quota_us", v1(quota)));
        }
        if let Some(shares) = cpu.shares() {
            wanted.push(("cpu", "cpu.shares", shares.to_string()));
        }
        if let Some(cpus) = cpu.cpus() {
            wanted.push(("cpuset", "cpuset.cpus", cpus.clone()));
        }
        if let Some(mems) = cpu.mems() {
            wanted.push(("cpuset", "cpuset.mems", mems.clone()));
        }
    }
    if let Some(pids) = res.pids() {
        wanted.push(("pids", "pids.max", limit_value(pids.limit())));
    }
    wanted
}

/// The controllers a v1 companion may carry.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuset", "pids"];

/// Where the v1 hierarchy of `controller` has this process's cgroup: the
/// hierarchy's mount point plus our path in it (from /proc/self/cgroup).
fn v1_own_dir(controller: &str) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == controller).then(|| path.to_string())
    })?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fs = fs.split_whitespace();
        if fs.next()? != "cgroup" {
            return None;
        }
        let options = fs.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        let fields: Vec<&str> = mount.split_whitespace().collect();
        let (root, point) = (*fields.get(3)?, *fields.get(4)?);
        let relative = own.strip_prefix(root)?.trim_start_matches('/');
        Some(Path::new(point).join(relative))
    })
}

/// The v1 companion cgroups of the container whose v2 cgroup is `dir`
/// (controller, directory), whether or not they exist.
fn v1_companion_dirs(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let Some(id) = dir.file_name() else { return Vec::new() };
    V1_CONTROLLERS.iter().filter_map(|c| Some((*c, v1_own_dir(c)?.join("berth").join(id)))).collect()
}

/// The v1 companions that exist: the cgroups a container's processes
/// join besides `dir` (see the module's comment).
pub fn v1_companions(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = v1_companion_dirs(dir).into_iter().map(|(_, d)| d).filter(|d| d.is_dir()).collect();
    // cpu and cpuacct (and others) may share one hierarchy.
    dirs.dedup();
    dirs
}

/// Writes the v1 files of the limits whose controllers are in `controllers`,
/// creating the companions (as `create` does) when `create` is set.
fn apply_v1(
    dir: &Path,
    resources: Option<&LinuxResources>,
    controllers: &[&str],
    create: bool,
) -> Result<(), CgroupError> {
    let companions = v1_companion_dirs(dir);
    for controller in controllers {
        let Some((_, companion)) = companions.iter().find(|(c, _)| c == controller) else {
            return Err(CgroupError::Unsupported(format!(
                "limits on {controller} need the cgroup {controller} controller, which this machine does not provide"
            )));
        };
        if create && !companion.is_dir() {
            // v1 cpuset cgroups start empty and take no process until
            // given the CPUs and memory nodes: inherit the parent's.
            let parent = companion.parent().expect("…/berth/<id>");
            for level in [parent, companion.as_path()] {
                match std::fs::create_dir(level) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(format!("creating cgroup {}", level.display()))(e)),
                }
                if *controller == "cpuset" {
                    let above = level.parent().expect("below the hierarchy root");
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        if read_trimmed(&level.join(file)).unwrap_or_default().is_empty() {
                            write(level, file, &read_trimmed(&above.join(file)).unwrap_or_default())?;
                        }
                    }
                }
            }
        }
        for (_, file, value) in v1_limit_files(resources).into_iter().filter(|(c, _, _)| c == controller) {
            if file == "memory.memsw.limit_in_bytes" && !companion.join(file).exists() {
                // Docker's behaviour without swap accounting: memory is
                // limited, swap not ("Memory limited without swap").
                tracing::warn!("the kernel has no swap accounting (swapaccount=1): memory limited without swap");
                continue;
            }
            write(companion, file, &value)?;
        }
    }
    Ok(())
}

/// The controllers `wanted` needs that `controllers_file` does not list.
fn missing_controllers(controllers_file: &Path, wanted: &[(&str, String, &'static str)]) -> Vec<&'static str> {
    let available = read_trimmed(controllers_file).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    let mut missing: Vec<&'static str> = wanted.iter().map(|(_, _, c)| *c).filter(|c| !available.contains(c)).collect();
    missing.dedup();
    missing
}

/// Refuses limits whose controller `controllers_file` does not list.
fn check_controllers(controllers_file: &Path, wanted: &[(&str, String, &str)]) -> Result<(), CgroupError> {
    let available = read_trimmed(controllers_file).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    for (file, _, controller) in wanted {
        if !available.contains(controller) {
            return Err(CgroupError::Unsupported(format!(
                "{file} needs the cgroup v2 {controller} controller, which this machine does not provide"
            )));
        }
    }
    Ok(())
}

/// Changes the limits of an existing cgroup (`docker update` of a running
/// container): each limit `resources` sets is written; others are left.
pub fn update(dir: &Path, resources: &LinuxResources) -> Result<(), CgroupError> {
    let wanted = limit_files(Some(resources));
    // What this cgroup may use: its parent enabled these for it; the rest
    // goes to v1 companions (which a container on a hybrid host has).
    let missing = missing_controllers(&dir.join("cgroup.controllers"), &wanted);
    let companions = v1_companion_dirs(dir);
    if missing.iter().any(|c| !companions.iter().any(|(v, _)| v == c)) {
        check_controllers(&dir.join("cgroup.controllers"), &wanted)?;
    }
    // A companion the container did not need at its start: made now, and
    // the container's processes moved into it.
    let new: Vec<PathBuf> =
        companions.into_iter().filter(|(c, d)| missing.contains(c) && !d.is_dir()).map(|(_, d)| d).collect();
    apply_v1(dir, Some(resources), &missing, true)?;
    for companion in new {
        for pid in pids(dir) {
            write(&companion, "cgroup.procs", &pid.to_string())?;
        }
    }
    for (file, value, _) in wanted.into_iter().filter(|(_, _, c)| !missing.contains(c)) {
        write(dir, file, &value)?;
    }
    Ok(())
}

/// Creates the container's cgroup with its limits. Controllers are enabled
/// down the tree only as far as the machine has them; a limit that needs a
/// missing controller is refused (never silently dropped).
pub fn create(root: &Path, dir: &Path, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
    let wanted = limit_files(resources);
    let missing = missing_controllers(&root.join("cgroup.controllers"), &wanted);
    apply_v1(dir, resources, &missing, true).map_err(|err| match err {
        // Name the limit, as the v2-only refusal does.
        CgroupError::Unsupported(_) => {
            check_controllers(&root.join("cgroup.controllers"), &wanted).err().unwrap_or(err)
        }
        other => other,
    })?;
    let wanted: Vec<_> = wanted.into_iter().filter(|(_, _, c)| !missing.contains(c)).collect();
    let available = read_trimmed(&root.join("cgroup.controllers")).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    // Enable every available controller on the way down, so stats work
    // even for containers without limits.
    let enable: String = ["cpu", "cpuset", "io", "memory", "pids"]
        .iter()
        .filter(|c| available.contains(c))
        .map(|c| format!("+{c} "))
        .collect();
    let relative = dir.strip_prefix(root).unwrap_or(dir);
    let mut current = root.to_path_buf();
    for part in relative.components() {
        if !enable.is_empty() {
            let _ = std::fs::write(current.join("cgroup.subtree_control"), enable.trim());
        }
        current.push(part);
        match std::fs::create_dir(&current) {
            Ok(()) => {}
            // The container's own cgroup is made anew: one left by a start
            // that failed half-way still carries that start's device filter
            // (attaching the same program again fails with EEXIST) and limits.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && current == dir => {
                remove_one(dir);
                std::fs::create_dir(dir).map_err(|e| {
                    io_err(format!("creating cgroup {} (a previous one is still in use)", dir.display()))(e)
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(format!("creating cgroup {}", current.display()))(e)),
        }
    }
    for (file, value, _) in wanted {
        write(dir, file, &value)?;
    }
    Ok(())
}

fn limit_value(value: i64) -> String {
    if value < 0 {
        "max".into()
    } else {
        value.to_string()
    }
}

/// Removes the cgroup once its processes are gone (they may take a moment
/// to leave after a SIGKILL).
pub fn remove(dir: &Path) {
    for cgroup in v1_companions(dir).iter().chain([dir.to_path_buf()].iter()) {
        remove_one(cgroup);
    }
}

fn remove_one(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "cgroup still busy; left in place");
}

/// Freezes or thaws every process of the container (docker pause).
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    // The write starts the transition; cgroup.events says when it is done.
    for _ in 0..500 {
        let events = read_trimmed(&dir.join("cgroup.events")).unwrap_or_default();
        let done = events.lines().any(|l| l == if frozen { "frozen 1" } else { "frozen 0" });
        if done {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(CgroupError::Unsupported(format!(
        "the cgroup {} did not {}",
        dir.display(),
        if frozen { "freeze" } else { "thaw" }
    )))
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether the kernel's OOM killer killed a process of this cgroup.
pub fn oom_killed(dir: &Path) -> bool {
    let v1 = v1_companions(dir).into_iter().map(|d| d.join("memory.oom_control"));
    std::iter::once(dir.join("memory.events")).chain(v1).any(|file| keyed(&file, "oom_kill").unwrap_or(0) > 0)
}

/// Every process in the cgroup and below it.
pub fn pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> =
        read_trimmed(&dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                pids.extend(self::pids(&entry.path()));
            }
        }
    }
    pids
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub memory_usage: u64,
    /// memory.max, or 0 when unlimited.
    pub memory_limit: u64,
    /// memory.stat's keys and values.
    pub memory_stat: Vec<(String, u64)>,
    pub pids_current: u64,
    pub pids_limit: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

/// `key value` lines (memory.stat) as pairs.
fn key_values(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn stats(dir: &Path) -> Stats {
    let number = |file: &str| read_trimmed(&dir.join(file)).and_then(|s| s.parse::<u64>().ok());
    let cpu = dir.join("cpu.stat");
    let mut stats = Stats {
        cpu_usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
        cpu_user_ns: keyed(&cpu, "user_usec").unwrap_or(0) * 1000,
        cpu_system_ns: keyed(&cpu, "system_usec").unwrap_or(0) * 1000,
        memory_usage: number("memory.current").unwrap_or(0),
        memory_limit: number("memory.max").unwrap_or(0),
        pids_current: number("pids.current").unwrap_or_else(|| pids(dir).len() as u64),
        pids_limit: number("pids.max").unwrap_or(0),
        ..Default::default()
    };
    // On a hybrid host, memory and pids are counted by the v1 companions.
    for companion in v1_companions(dir) {
        let v1_number = |file: &str| read_trimmed(&companion.join(file)).and_then(|s| s.parse::<u64>().ok());
        if let Some(usage) = v1_number("memory.usage_in_bytes") {
            stats.memory_usage = usage;
            // v1 says "no limit" with a huge page-aligned number.
            stats.memory_limit = v1_number("memory.limit_in_bytes").filter(|l| *l < 1 << 62).unwrap_or(0);
            if let Some(text) = read_trimmed(&companion.join("memory.stat")) {
                stats.memory_stat = key_values(&text);
            }
        }
        if let Some(current) = v1_number("pids.current") {
            stats.pids_current = current;
            stats.pids_limit = v1_number("pids.max").unwrap_or(0);
        }
    }
    if let Some(text) = read_trimmed(&dir.join("memory.stat")) {
        stats.memory_stat = key_values(&text);
    }
    if let Some(text) = read_trimmed(&dir.join("io.stat")) {
        for line in text.lines() {
            for field in line.split_whitespace().skip(1) {
                match field.split_once('=') {
                    Some(("rbytes", v)) => stats.io_read_bytes += v.parse::<u64>().unwrap_or(0),
                    Some(("wbytes", v)) => stats.io_write_bytes += v.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 100);
    }

    fn resources(memory: i64, swap: i64, cpus: &str, pids: i64) -> LinuxResources {
        use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};
        LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(memory).swap(swap).reservation(memory / 2).build().unwrap())
            .cpu(LinuxCpuBuilder::default().quota(50_000).period(100_000u64).shares(512u64).cpus(cpus).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(pids).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn updates_write_the_v2_files_of_the_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path();
        std::fs::write(cgroup.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        update(cgroup, &resources(300 << 20, 600 << 20, "0-1", 64)).unwrap();
        let read = |file: &str| std::fs::read_to_string(cgroup.join(file)).unwrap();
        assert_eq!(read("memory.max"), (300u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), (300u64 << 20).to_string(), "swap alone, beyond memory");
        assert_eq!(read("memory.low"), (150u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpu.weight"), shares_to_weight(512).to_string());
        assert_eq!(read("cpuset.cpus"), "0-1");
        assert_eq!(read("pids.max"), "64");

        // Unlimited swap; only what is set is written.
        let only_memory = oci_spec::runtime::LinuxResourcesBuilder::default()
            .memory(oci_spec::runtime::LinuxMemoryBuilder::default().limit(100 << 20).swap(-1).build().unwrap())
            .build()
            .unwrap();
        update(cgroup, &only_memory).unwrap();
        assert_eq!((read("memory.max"), read("memory.swap.max")), ((100u64 << 20).to_string(), "max".to_string()));
        assert_eq!(read("pids.max"), "64", "limits the update does not name are kept");

        // A cgroup without the v2 controllers: on a hybrid host the limits
        // go to v1 companions, elsewhere a clear refusal, nothing written.
        std::fs::write(cgroup.join("cgroup.controllers"), "pids\n").unwrap();
        let result = update(cgroup, &resources(200 << 20, 400 << 20, "0", 32));
        assert_eq!(read("memory.max"), (100u64 << 20).to_string(), "v2 files without the controller untouched");
        match v1_own_dir("memory") {
            Some(_) if nix::unistd::geteuid().is_root() => {
                let companions = v1_companions(cgroup);
                let memory = companions.iter().find(|d| d.join("memory.limit_in_bytes").exists()).cloned();
                for companion in &companions {
                    remove_one(companion);
                }
                result.unwrap();
                let memory = memory.expect("a memory companion");
                assert!(memory.ends_with(Path::new("berth").join(cgroup.file_name().unwrap())), "{}", memory.display());
            }
            _ => {
                let err = result.unwrap_err().to_string();
                assert!(err.contains("memory.max needs the cgroup v2 memory controller"), "{err}");
            }
        }
    }

    #[test]
    fn a_container_cgroup_left_by_a_failed_start_is_made_anew() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        let leaf = root.path().join("berth").join("c1");
        create(root.path(), &leaf, None).unwrap();
        // Left by a start that failed after creating it: replaced.
        create(root.path(), &leaf, None).unwrap();
        assert!(leaf.is_dir());

        // One that cannot go (here a file stands for a process still inside).
        std::fs::write(leaf.join("busy"), "").unwrap();
        let err = create(root.path(), &leaf, None).unwrap_err().to_string();
        assert!(err.contains("a previous one is still in use"), "{err}");
    }

    #[test]
    fn v1_files_carry_dockers_figures() {
        let files = v1_limit_files(Some(&resources(300 << 20, 600 << 20, "0-1", 64)));
        let value = |f: &str| files.iter().find(|(_, file, _)| *file == f).map(|(_, _, v)| v.clone()).unwrap();
        assert_eq!(value("memory.limit_in_bytes"), (300u64 << 20).to_string());
        assert_eq!(value("memory.memsw.limit_in_bytes"), (600u64 << 20).to_string(), "memory+swap, as Docker's");
        assert_eq!((value("cpu.cfs_period_us"), value("cpu.cfs_quota_us")), ("100000".into(), "50000".into()));
        assert_eq!(value("cpu.shares"), "512");
        assert_eq!((value("cpuset.cpus"), value("pids.max")), ("0-1".into(), "64".into()));
        let order: Vec<&str> = files.iter().map(|(_, f, _)| *f).collect();
        let at = |f: &str| order.iter().position(|x| *x == f).unwrap();
        assert!(at("memory.limit_in_bytes") < at("memory.memsw.limit_in_bytes"), "v1 refuses memsw below the limit");
        assert!(at("cpu.cfs_period_us") < at("cpu.cfs_quota_us"));
    }
}
