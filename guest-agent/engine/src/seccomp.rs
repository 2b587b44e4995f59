//! Docker's default seccomp profile, compiled to classic BPF without libseccomp.
//!
//! The agent is a static musl binary, so there is no libseccomp to lean on.
//! `seccomp/default.json` is moby's profile, verbatim, and this module does
//! what moby, runc and libseccomp do with it between them, for the native
//! architecture:
//!
//! 1. moby (`profiles/seccomp/seccomp_linux.go`) keeps the entries whose
//!    `includes`/`excludes` fit the architecture, the container's
//!    capabilities and the running kernel (`resolve`).
//! 2. runc (`libcontainer/seccomp`) drops rules whose action is the default
//!    action and names the architecture does not have, and splits a rule that
//!    compares one argument twice into one rule per comparison, because
//!    libseccomp refuses such a rule (`merge`).
//! 3. libseccomp (`db_rule_add`) merges the rules of one syscall: once a
//!    syscall has an unconditional rule, later rules for it are ignored; an
//!    unconditional rule replaces the conditional ones added before it; the
//!    conditional rules of one action are OR-ed. Its BPF checks the
//!    architecture first, then the syscall number, then each 64-bit argument
//!    as two 32-bit halves (`generate`). Only the native architecture is in
//!    the filter and the bad-architecture action is the default action, so a
//!    syscall made through another ABI (i386's `int 0x80`, x32) gets the
//!    default action. Docker lists x86 and x32 as sub-architectures and
//!    filters their syscalls by name instead; there are no syscall tables for
//!    them here, and refusing them is the safe side of that difference.
//!
//! Why not seccompiler: a seccompiler filter has one match action for all its
//! rules, and its architecture check kills the process where libseccomp
//! returns the configured action. The profile would need several stacked
//! filters whose combined result rests on the kernel's precedence between
//! actions, and the per-syscall precedence above would have to be worked out
//! here anyway. A small generator is less code than that, and the tests
//! check it decision by decision against the BPF that libseccomp itself
//! emits. seccompiler's syscall tables are crate-private, so the name table
//! (`syscalls.rs`) is generated from them rather than depending on the crate
//! for it. `bpf.rs` is the generator: the architecture check, a search tree
//! over syscall numbers, and each rule's argument comparisons.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CStr;
use std::fmt;
use std::io;

use oci_spec::runtime::Capability;
use serde::Deserialize;

mod arg_width;
mod bpf;
mod syscalls;

use bpf::generate;
use syscalls::syscall_table;

/// moby's `profiles/seccomp/default.json`, byte for byte. Upstream has had
/// this content from moby v26.0.0 through v28.1.x: after moby/moby#46762
/// (io_uring_* removed, v25.0) and moby/moby#47341 (cachestat, fchmodat2,
/// map_shadow_stack, futex_wake/wait/requeue; v26.0). moby/moby#50077 and
/// #50097 (May 2025) later add the kernel 6.8-6.13 syscalls.
const DEFAULT_PROFILE: &str = include_str!("seccomp/default.json");

/// The most instructions the kernel accepts in one filter (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
/// x32 syscalls come in with the x86_64 audit arch and this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("parsing the seccomp profile: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("invalid seccomp profile: {0}")]
    Invalid(String),
    #[error("the seccomp profile needs {0}, which Berth's filter compiler does not reproduce")]
    Unsupported(String),
    #[error("seccomp filters are built for little-endian x86_64 and aarch64 only, not {0}")]
    UnsupportedArch(&'static str),
    #[error("reading the kernel version: {0}")]
    KernelVersion(String),
    #[error("the seccomp filter has {0} instructions, more than the kernel's limit of {MAX_INSTRUCTIONS}")]
    TooLarge(usize),
    #[error("installing the seccomp filter: {0}")]
    Apply(#[source] io::Error),
}

/// A compiled seccomp filter, ready to install.
#[derive(Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter").field("instructions", &self.program.len()).finish()
    }
}

impl Filter {
    /// Installs the filter on the calling thread. The caller must have set
    /// `PR_SET_NO_NEW_PRIVS` or hold CAP_SYS_ADMIN. Everything was compiled
    /// beforehand: this allocates nothing and makes one syscall, so it is
    /// safe in a forked child of a multi-threaded process, just before execve.
    pub fn apply(&self) -> Result<(), SeccompError> {
        let program = libc::sock_fprog {
            // `Asm::finish` refuses programs over 4096 instructions.
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `program` points into `self.program`, which outlives the
        // call; the kernel copies the instructions, never writes through the
        // pointer and does not keep it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                &program as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Apply(io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Docker's default profile, resolved for the running architecture and the
/// container's effective capabilities.
pub fn docker_default(caps: &HashSet<Capability>) -> Result<Filter, SeccompError> {
    let target = Target::native()?;
    let resolved = resolve(DEFAULT_PROFILE, target.docker_arch, &capability_names(caps), KernelVersion::running()?)?;
    let table = syscall_table();
    compile(&target, &resolved, &|name| table.get(name).copied())
}

/// The profile's spelling of capabilities (`CAP_SYS_ADMIN`); oci-spec's
/// Display leaves out the prefix.
fn capability_names(caps: &HashSet<Capability>) -> HashSet<String> {
    caps.iter().map(|c| format!("CAP_{c}")).collect()
}

/// What the filter is built for.
struct Target {
    /// The architecture as the profile's `arches` name it (Go's GOARCH).
    docker_arch: &'static str,
    audit_arch: u32,
    /// Whether the x32 ABI shares the native audit arch and must be told apart by the syscall number.
    x32: bool,
}

impl Target {
    fn native() -> Result<Self, SeccompError> {
        if cfg!(all(target_arch = "x86_64", target_endian = "little")) {
            Ok(Target { docker_arch: "amd64", audit_arch: AUDIT_ARCH_X86_64, x32: true })
        } else if cfg!(all(target_arch = "aarch64", target_endian = "little")) {
            Ok(Target { docker_arch: "arm64", audit_arch: AUDIT_ARCH_AARCH64, x32: false })
        } else {
            Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KernelVersion(u32, u32);

impl KernelVersion {
    /// `MAJOR.MINOR` and whatever follows, as moby reads both `minKernel`
    /// and the running kernel's release (`fmt.Sscanf(s, "%d.%d")`).
    fn parse(text: &str) -> Option<Self> {
        let (major, rest) = text.split_once('.')?;
        let minor_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) || minor_len == 0 {
            return None;
        }
        Some(KernelVersion(major.parse().ok()?, rest[..minor_len].parse().ok()?))
    }

    fn running() -> Result<Self, SeccompError> {
        // SAFETY: utsname is plain old data, for which all-zero bytes are valid.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: uname only writes into the struct we own.
        if unsafe { libc::uname(&mut uts) } != 0 {
            return Err(SeccompError::KernelVersion(io::Error::last_os_error().to_string()));
        }
        // SAFETY: the kernel NUL-terminates `release` within the array.
        let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
        Self::parse(&release)
            .ok_or_else(|| SeccompError::KernelVersion(format!("unexpected kernel release {release:?}")))
    }
}

// The profile format, as moby's `profiles/seccomp` types read it. Fields the
// filter does not need (archMap, comment) are ignored.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    syscalls: Option<Vec<Entry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    name: Option<String>,
    names: Option<Vec<String>>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<Arg>>,
    includes: Option<Conditions>,
    excludes: Option<Conditions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conditions {
    arches: Option<Vec<String>>,
    caps: Option<Vec<String>>,
    min_kernel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    KillThread,
    KillProcess,
    Trap,
    Errno(u16),
    Trace(u16),
    Log,
    Allow,
}

impl Action {
    /// As runc's `getAction`: ERRNO and TRACE carry `errnoRet`, EPERM without one.
    fn parse(name: &str, errno_ret: Option<u32>) -> Result<Self, SeccompError> {
        let data = || {
            let value = errno_ret.unwrap_or(libc::EPERM as u32);
            u16::try_from(value).map_err(|_| SeccompError::Invalid(format!("errnoRet {value} does not fit in 16 bits")))
        };
        Ok(match name {
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_ERRNO" => Action::Errno(data()?),
            "SCMP_ACT_TRACE" => Action::Trace(data()?),
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_NOTIFY" => return Err(SeccompError::Unsupported("SCMP_ACT_NOTIFY (a seccomp agent)".into())),
            other => return Err(SeccompError::Invalid(format!("unknown action {other:?}"))),
        })
    }

    /// The filter's return value.
    fn ret(self) -> u32 {
        match self {
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Errno(errno) => libc::SECCOMP_RET_ERRNO | u32::from(errno),
            Action::Trace(data) => libc::SECCOMP_RET_TRACE | u32::from(data),
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Allow => libc::SECCOMP_RET_ALLOW,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & value) == value_two`
    MaskedEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Comparison {
    index: u8,
    op: Op,
    value: u64,
    value_two: u64,
    /// The kernel reads this argument as 32 bits (`arg_width`): only the
    /// low half is compared, so junk in the high half changes nothing.
    low_half_only: bool,
}

impl Comparison {
    fn parse(arg: &Arg) -> Result<Self, SeccompError> {
        let op = match arg.op.as_str() {
            "SCMP_CMP_NE" => Op::Ne,
            "SCMP_CMP_LT" => Op::Lt,
            "SCMP_CMP_LE" => Op::Le,
            "SCMP_CMP_EQ" => Op::Eq,
            "SCMP_CMP_GE" => Op::Ge,
            "SCMP_CMP_GT" => Op::Gt,
            "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
            other => return Err(SeccompError::Invalid(format!("unknown comparison {other:?}"))),
        };
        let index = match u8::try_from(arg.index) {
            Ok(index) if index < 6 => index,
            _ => return Err(SeccompError::Invalid(format!("syscall argument index {} is not 0-5", arg.index))),
        };
        Ok(Comparison { index, op, value: arg.value, value_two: arg.value_two, low_half_only: false })
    }

    /// This comparison as the filter of `syscall` must make it. A value
    /// that does not fit a 32-bit argument can never be what the kernel
    /// sees, so such a rule is a profile error, not something to guess at.
    fn for_syscall(mut self, syscall: &str) -> Result<Self, SeccompError> {
        if arg_width::is_32_bit(syscall, self.index) {
            if self.value > u64::from(u32::MAX) || self.value_two > u64::from(u32::MAX) {
                return Err(SeccompError::Invalid(format!(
                    "{syscall}: argument {} is 32-bit, but the rule compares it with {:#x}",
                    self.index,
                    self.value.max(self.value_two)
                )));
            }
            self.low_half_only = true;
        }
        Ok(self)
    }
}

/// One profile entry that applies to this container: moby's output, runc's input.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    names: Vec<String>,
    action: Action,
    args: Vec<Comparison>,
}

#[derive(Debug)]
struct Resolved {
    default: Action,
    rules: Vec<Rule>,
}

/// moby's `setupSeccomp`: keeps the entries whose conditions hold, checking
/// excludes before includes, each in moby's order (arches, caps, minKernel).
fn resolve(profile: &str, arch: &str, caps: &HashSet<String>, kernel: KernelVersion) -> Result<Resolved, SeccompError> {
    let profile: Profile = serde_json::from_str(profile)?;
    let default = Action::parse(&profile.default_action, profile.default_errno_ret)?;
    let min_kernel = |text: &str| {
        KernelVersion::parse(text)
            .ok_or_else(|| SeccompError::Invalid(format!("minKernel {text:?} is not MAJOR.MINOR")))
    };
    let mut rules = Vec::new();
    for entry in profile.syscalls.unwrap_or_default() {
        let names = match (entry.name, entry.names) {
            (Some(_), Some(names)) if !names.is_empty() => {
                return Err(SeccompError::Invalid("an entry has both 'name' and 'names'".into()))
            }
            (Some(name), _) => vec![name],
            (None, names) => names.unwrap_or_default(),
        };
        let excludes = entry.excludes.unwrap_or_default();
        let includes = entry.includes.unwrap_or_default();
        if excludes.arches.iter().flatten().any(|a| a == arch)
            || excludes.caps.iter().flatten().any(|c| caps.contains(c))
        {
            continue;
        }
        if let Some(min) = &excludes.min_kernel {
            if kernel >= min_kernel(min)? {
                continue;
            }
        }
        if includes.arches.as_ref().is_some_and(|arches| !arches.is_empty() && !arches.iter().any(|a| a == arch))
            || !includes.caps.iter().flatten().all(|c| caps.contains(c))
        {
            continue;
        }
        if let Some(min) = &includes.min_kernel {
            if kernel < min_kernel(min)? {
                continue;
            }
        }
        let action = Action::parse(&entry.action, entry.errno_ret)?;
        let args = entry.args.unwrap_or_default().iter().map(Comparison::parse).collect::<Result<_, _>>()?;
        rules.push(Rule { names, action, args });
    }
    Ok(Resolved { default, rules })
}

/// What one syscall's rules come to once libseccomp has merged them.
#[derive(Debug, Clone, PartialEq)]
enum SyscallRules {
    Always(Action),
    /// Each chain's comparisons must all hold; any chain that holds decides.
    When(Action, Vec<Vec<Comparison>>),
}

/// runc's rule loop and libseccomp's merging, keyed by syscall number.
fn merge(
    resolved: &Resolved,
    lookup: &dyn Fn(&str) -> Option<u32>,
) -> Result<BTreeMap<u32, SyscallRules>, SeccompError> {
    let mut syscalls: BTreeMap<u32, SyscallRules> = BTreeMap::new();
    for rule in &resolved.rules {
        // libseccomp rejects a rule with the default action; runc skips it.
        if rule.action == resolved.default {
            continue;
        }
        let repeats = (0..6).any(|i| rule.args.iter().filter(|c| c.index == i).count() > 1);
        let chains: Vec<Vec<Comparison>> =
            if repeats { rule.args.iter().map(|c| vec![*c]).collect() } else { vec![rule.args.clone()] };
        for name in &rule.names {
            // Names this architecture lacks (chown32 on x86_64), and names
            // newer than the table, are skipped, as runc does.
            let Some(nr) = lookup(name) else { continue };
            for chain in &chains {
                let chain = chain.iter().map(|c| c.for_syscall(name)).collect::<Result<Vec<_>, _>>()?;
                let merged = match syscalls.remove(&nr) {
                    None if chain.is_empty() => SyscallRules::Always(rule.action),
                    None => SyscallRules::When(rule.action, vec![chain]),
                    Some(always @ SyscallRules::Always(_)) => always,
                    Some(SyscallRules::When(..)) if chain.is_empty() => SyscallRules::Always(rule.action),
                    Some(SyscallRules::When(action, mut existing)) => {
                        // libseccomp orders the nodes of mixed-action trees by
                        // its own comparison order; no profile needs that yet.
                        if action != rule.action {
                            return Err(SeccompError::Unsupported(format!(
                                "conditional rules with different actions for {name}"
                            )));
                        }
                        existing.push(chain);
                        SyscallRules::When(action, existing)
                    }
                };
                syscalls.insert(nr, merged);
            }
        }
    }
    Ok(syscalls)
}

fn compile(target: &Target, resolved: &Resolved, lookup: &dyn Fn(&str) -> Option<u32>) -> Result<Filter, SeccompError> {
    let syscalls = merge(resolved, lookup)?;
    Ok(Filter { program: generate(target, resolved.default, &syscalls)? })
}

#[cfg(test)]
mod tests;
