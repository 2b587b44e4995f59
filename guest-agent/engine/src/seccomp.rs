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
//! at the end of this file is generated from them rather than depending on
//! the crate for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CStr;
use std::fmt;
use std::io;

use oci_spec::runtime::Capability;
use serde::Deserialize;

mod arg_width;

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

// Offsets into `struct seccomp_data`; argument words are little-endian.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_LD_IMM: u16 = 0x00;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

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

/// Syscalls per leaf of the search tree: a short run of compares costs less
/// than another level of jumps.
const LEAF_SYSCALLS: usize = 8;

fn generate(
    target: &Target,
    default: Action,
    syscalls: &BTreeMap<u32, SyscallRules>,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut asm = Asm::default();
    let deny = default.ret();

    asm.push(Insn::Load(ARCH_OFFSET));
    let (native, foreign) = (asm.label(), asm.label());
    asm.push(Insn::Jump { op: BPF_JEQ_K, k: target.audit_arch, jt: native, jf: foreign });
    asm.mark(foreign);
    asm.push(Insn::Ret(deny));
    asm.mark(native);
    asm.push(Insn::Load(NR_OFFSET));
    if target.x32 {
        let (x32, x86_64) = (asm.label(), asm.label());
        asm.push(Insn::Jump { op: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: x32, jf: x86_64 });
        asm.mark(x32);
        asm.push(Insn::Ret(deny));
        asm.mark(x86_64);
    }

    let sorted: Vec<(u32, &SyscallRules)> = syscalls.iter().map(|(nr, rules)| (*nr, rules)).collect();
    let mut conditional = Vec::new();
    search(&mut asm, &sorted, deny, &mut conditional);

    for (label, action, chains) in conditional {
        asm.mark(label);
        for chain in chains {
            let next = asm.label();
            for comparison in chain {
                compare(&mut asm, comparison, next);
            }
            asm.push(Insn::Ret(action.ret()));
            asm.mark(next);
        }
        asm.push(Insn::Ret(deny));
    }
    asm.finish()
}

/// A binary search on the syscall number (in the accumulator). Unconditional
/// syscalls return right where they match; conditional ones jump to a block
/// after the tree, collected in `conditional`.
fn search<'a>(
    asm: &mut Asm,
    syscalls: &[(u32, &'a SyscallRules)],
    deny: u32,
    conditional: &mut Vec<(Label, Action, &'a [Vec<Comparison>])>,
) {
    if syscalls.len() > LEAF_SYSCALLS {
        let (low, high) = syscalls.split_at(syscalls.len() / 2);
        let (to_high, high_start, low_start) = (asm.label(), asm.label(), asm.label());
        asm.push(Insn::Jump { op: BPF_JGE_K, k: high[0].0, jt: to_high, jf: low_start });
        // Conditional jumps reach 255 instructions at most; `ja` reaches anywhere.
        asm.mark(to_high);
        asm.push(Insn::Goto(high_start));
        asm.mark(low_start);
        search(asm, low, deny, conditional);
        asm.mark(high_start);
        search(asm, high, deny, conditional);
        return;
    }
    for &(nr, rules) in syscalls {
        let (hit, miss) = (asm.label(), asm.label());
        asm.push(Insn::Jump { op: BPF_JEQ_K, k: nr, jt: hit, jf: miss });
        asm.mark(hit);
        match rules {
            SyscallRules::Always(action) => asm.push(Insn::Ret(action.ret())),
            SyscallRules::When(action, chains) => {
                let block = asm.label();
                conditional.push((block, *action, chains));
                asm.push(Insn::Goto(block));
            }
        }
        asm.mark(miss);
    }
    asm.push(Insn::Ret(deny));
}

/// Falls through when the comparison holds and jumps to `fail` when not,
/// comparing the high halves first as libseccomp does on 64-bit arches.
/// A 32-bit argument is compared as if its high half were zero, which is
/// what the kernel reads.
fn compare(asm: &mut Asm, c: &Comparison, fail: Label) {
    let lo_offset = ARGS_OFFSET + 8 * u32::from(c.index);
    let hi_offset = lo_offset + 4;
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let (ok, second, third) = (asm.label(), asm.label(), asm.label());
    if c.low_half_only {
        // The accumulator holds the high half below; a constant 0 stands in
        // for it (`for_syscall` made sure the rule's own high halves are 0).
        asm.push(Insn::LoadConstant(0));
    } else {
        asm.push(Insn::Load(hi_offset));
    }
    match c.op {
        Op::Eq => {
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: second, jf: fail });
            asm.mark(second);
            asm.push(Insn::Load(lo_offset));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: lo, jt: ok, jf: fail });
        }
        Op::Ne => {
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: second, jf: ok });
            asm.mark(second);
            asm.push(Insn::Load(lo_offset));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: lo, jt: fail, jf: ok });
        }
        Op::Gt | Op::Ge => {
            asm.push(Insn::Jump { op: BPF_JGT_K, k: hi, jt: ok, jf: second });
            asm.mark(second);
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: third, jf: fail });
            asm.mark(third);
            asm.push(Insn::Load(lo_offset));
            let op = if c.op == Op::Gt { BPF_JGT_K } else { BPF_JGE_K };
            asm.push(Insn::Jump { op, k: lo, jt: ok, jf: fail });
        }
        Op::Lt | Op::Le => {
            asm.push(Insn::Jump { op: BPF_JGT_K, k: hi, jt: fail, jf: second });
            asm.mark(second);
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: hi, jt: third, jf: ok });
            asm.mark(third);
            asm.push(Insn::Load(lo_offset));
            let op = if c.op == Op::Lt { BPF_JGE_K } else { BPF_JGT_K };
            asm.push(Insn::Jump { op, k: lo, jt: fail, jf: ok });
        }
        Op::MaskedEq => {
            let (mask_hi, mask_lo) = ((c.value >> 32) as u32, c.value as u32);
            let (want_hi, want_lo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            asm.push(Insn::And(mask_hi));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: want_hi & mask_hi, jt: second, jf: fail });
            asm.mark(second);
            asm.push(Insn::Load(lo_offset));
            asm.push(Insn::And(mask_lo));
            asm.push(Insn::Jump { op: BPF_JEQ_K, k: want_lo & mask_lo, jt: ok, jf: fail });
        }
    }
    asm.mark(ok);
}

#[derive(Debug, Clone, Copy)]
struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Insn {
    Load(u32),
    /// Loads a constant into the accumulator.
    LoadConstant(u32),
    And(u32),
    Jump {
        op: u16,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Goto(Label),
    Ret(u32),
    /// Where a label points; not an instruction.
    Mark(Label),
}

/// Instructions with symbolic jump targets, so that the generator need not
/// count offsets by hand.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    fn mark(&mut self, label: Label) {
        self.insns.push(Insn::Mark(label));
    }

    fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    fn finish(self) -> Result<Vec<libc::sock_filter>, SeccompError> {
        let mut at = vec![None; self.labels];
        let mut len = 0;
        for insn in &self.insns {
            match insn {
                Insn::Mark(label) => at[label.0] = Some(len),
                _ => len += 1,
            }
        }
        if len > MAX_INSTRUCTIONS {
            return Err(SeccompError::TooLarge(len));
        }
        // BPF only jumps forward; a label behind its jump, or never marked,
        // is a bug in the generator above, not a property of the profile.
        let offset = |label: Label, pc: usize| {
            at[label.0].and_then(|target| target.checked_sub(pc + 1)).expect("BPF jumps go forward to a marked label")
        };
        let mut program = Vec::with_capacity(len);
        for insn in self.insns {
            let pc = program.len();
            let (code, jt, jf, k) = match insn {
                Insn::Mark(_) => continue,
                Insn::Load(offset) => (BPF_LD_W_ABS, 0, 0, offset),
                Insn::LoadConstant(value) => (BPF_LD_IMM, 0, 0, value),
                Insn::And(mask) => (BPF_ALU_AND_K, 0, 0, mask),
                Insn::Ret(value) => (BPF_RET_K, 0, 0, value),
                Insn::Goto(label) => (BPF_JMP_JA, 0, 0, offset(label, pc) as u32),
                Insn::Jump { op, k, jt, jf } => {
                    let near = |label| u8::try_from(offset(label, pc)).expect("conditional BPF jumps stay within 255");
                    (op, near(jt), near(jf), k)
                }
            };
            program.push(libc::sock_filter { code, jt, jf, k });
        }
        Ok(program)
    }
}

/// Syscall names and numbers of the native architecture.
fn syscall_table() -> HashMap<&'static str, u32> {
    SYSCALL_TABLE
        .split_whitespace()
        .filter_map(|pair| {
            let (name, nr) = pair.split_once('=')?;
            Some((name, nr.parse().ok()?))
        })
        .collect()
}

// Generated from seccompiler 0.5.0's `src/syscall_table/{x86_64,aarch64}.rs`
// (Linux 6.12), `name=number`, sorted by number.
#[cfg(target_arch = "x86_64")]
const SYSCALL_TABLE: &str = "\
read=0 write=1 open=2 close=3 stat=4 fstat=5 lstat=6 poll=7 lseek=8 mmap=9 mprotect=10 munmap=11 brk=12 \
rt_sigaction=13 rt_sigprocmask=14 rt_sigreturn=15 ioctl=16 pread64=17 pwrite64=18 readv=19 writev=20 \
access=21 pipe=22 select=23 sched_yield=24 mremap=25 msync=26 mincore=27 madvise=28 shmget=29 shmat=30 \
shmctl=31 dup=32 dup2=33 pause=34 nanosleep=35 getitimer=36 alarm=37 setitimer=38 getpid=39 sendfile=40 \
socket=41 connect=42 accept=43 sendto=44 recvfrom=45 sendmsg=46 recvmsg=47 shutdown=48 bind=49 listen=50 \
getsockname=51 getpeername=52 socketpair=53 setsockopt=54 getsockopt=55 clone=56 fork=57 vfork=58 execve=59 \
exit=60 wait4=61 kill=62 uname=63 semget=64 semop=65 semctl=66 shmdt=67 msgget=68 msgsnd=69 msgrcv=70 \
msgctl=71 fcntl=72 flock=73 fsync=74 fdatasync=75 truncate=76 ftruncate=77 getdents=78 getcwd=79 chdir=80 \
fchdir=81 rename=82 mkdir=83 rmdir=84 creat=85 link=86 unlink=87 symlink=88 readlink=89 chmod=90 fchmod=91 \
chown=92 fchown=93 lchown=94 umask=95 gettimeofday=96 getrlimit=97 getrusage=98 sysinfo=99 times=100 \
ptrace=101 getuid=102 syslog=103 getgid=104 setuid=105 setgid=106 geteuid=107 getegid=108 setpgid=109 \
getppid=110 getpgrp=111 setsid=112 setreuid=113 setregid=114 getgroups=115 setgroups=116 setresuid=117 \
getresuid=118 setresgid=119 getresgid=120 getpgid=121 setfsuid=122 setfsgid=123 getsid=124 capget=125 \
capset=126 rt_sigpending=127 rt_sigtimedwait=128 rt_sigqueueinfo=129 rt_sigsuspend=130 sigaltstack=131 \
utime=132 mknod=133 uselib=134 personality=135 ustat=136 statfs=137 fstatfs=138 sysfs=139 getpriority=140 \
setpriority=141 sched_setparam=142 sched_getparam=143 sched_setscheduler=144 sched_getscheduler=145 \
sched_get_priority_max=146 sched_get_priority_min=147 sched_rr_get_interval=148 mlock=149 munlock=150 \
mlockall=151 munlockall=152 vhangup=153 modify_ldt=154 pivot_root=155 _sysctl=156 prctl=157 arch_prctl=158 \
adjtimex=159 setrlimit=160 chroot=161 sync=162 acct=163 settimeofday=164 mount=165 umount2=166 swapon=167 \
swapoff=168 reboot=169 sethostname=170 setdomainname=171 iopl=172 ioperm=173 create_module=174 \
init_module=175 delete_module=176 get_kernel_syms=177 query_module=178 quotactl=179 nfsservctl=180 \
getpmsg=181 putpmsg=182 afs_syscall=183 tuxcall=184 security=185 gettid=186 readahead=187 setxattr=188 \
lsetxattr=189 fsetxattr=190 getxattr=191 lgetxattr=192 fgetxattr=193 listxattr=194 llistxattr=195 \
flistxattr=196 removexattr=197 lremovexattr=198 fremovexattr=199 tkill=200 time=201 futex=202 \
sched_setaffinity=203 sched_getaffinity=204 set_thread_area=205 io_setup=206 io_destroy=207 io_getevents=208 \
io_submit=209 io_cancel=210 get_thread_area=211 lookup_dcookie=212 epoll_create=213 epoll_ctl_old=214 \
epoll_wait_old=215 remap_file_pages=216 getdents64=217 set_tid_address=218 restart_syscall=219 \
semtimedop=220 fadvise64=221 timer_create=222 timer_settime=223 timer_gettime=224 timer_getoverrun=225 \
timer_delete=226 clock_settime=227 clock_gettime=228 clock_getres=229 clock_nanosleep=230 exit_group=231 \
epoll_wait=232 epoll_ctl=233 tgkill=234 utimes=235 vserver=236 mbind=237 set_mempolicy=238 get_mempolicy=239 \
mq_open=240 mq_unlink=241 mq_timedsend=242 mq_timedreceive=243 mq_notify=244 mq_getsetattr=245 \
kexec_load=246 waitid=247 add_key=248 request_key=249 keyctl=250 ioprio_set=251 ioprio_get=252 \
inotify_init=253 inotify_add_watch=254 inotify_rm_watch=255 migrate_pages=256 openat=257 mkdirat=258 \
mknodat=259 fchownat=260 futimesat=261 newfstatat=262 unlinkat=263 renameat=264 linkat=265 symlinkat=266 \
readlinkat=267 fchmodat=268 faccessat=269 pselect6=270 ppoll=271 unshare=272 set_robust_list=273 \
get_robust_list=274 splice=275 tee=276 sync_file_range=277 vmsplice=278 move_pages=279 utimensat=280 \
epoll_pwait=281 signalfd=282 timerfd_create=283 eventfd=284 fallocate=285 timerfd_settime=286 \
timerfd_gettime=287 accept4=288 signalfd4=289 eventfd2=290 epoll_create1=291 dup3=292 pipe2=293 \
inotify_init1=294 preadv=295 pwritev=296 rt_tgsigqueueinfo=297 perf_event_open=298 recvmmsg=299 \
fanotify_init=300 fanotify_mark=301 prlimit64=302 name_to_handle_at=303 open_by_handle_at=304 \
clock_adjtime=305 syncfs=306 sendmmsg=307 setns=308 getcpu=309 process_vm_readv=310 process_vm_writev=311 \
kcmp=312 finit_module=313 sched_setattr=314 sched_getattr=315 renameat2=316 seccomp=317 getrandom=318 \
memfd_create=319 kexec_file_load=320 bpf=321 execveat=322 userfaultfd=323 membarrier=324 mlock2=325 \
copy_file_range=326 preadv2=327 pwritev2=328 pkey_mprotect=329 pkey_alloc=330 pkey_free=331 statx=332 \
io_pgetevents=333 rseq=334 uretprobe=335 pidfd_send_signal=424 io_uring_setup=425 io_uring_enter=426 \
io_uring_register=427 open_tree=428 move_mount=429 fsopen=430 fsconfig=431 fsmount=432 fspick=433 \
pidfd_open=434 clone3=435 close_range=436 openat2=437 pidfd_getfd=438 faccessat2=439 process_madvise=440 \
epoll_pwait2=441 mount_setattr=442 quotactl_fd=443 landlock_create_ruleset=444 landlock_add_rule=445 \
landlock_restrict_self=446 memfd_secret=447 process_mrelease=448 futex_waitv=449 set_mempolicy_home_node=450 \
cachestat=451 fchmodat2=452 map_shadow_stack=453 futex_wake=454 futex_wait=455 futex_requeue=456 \
statmount=457 listmount=458 lsm_get_self_attr=459 lsm_set_self_attr=460 lsm_list_modules=461 mseal=462 \
";
#[cfg(target_arch = "aarch64")]
const SYSCALL_TABLE: &str = "\
io_setup=0 io_destroy=1 io_submit=2 io_cancel=3 io_getevents=4 setxattr=5 lsetxattr=6 fsetxattr=7 getxattr=8 \
lgetxattr=9 fgetxattr=10 listxattr=11 llistxattr=12 flistxattr=13 removexattr=14 lremovexattr=15 \
fremovexattr=16 getcwd=17 lookup_dcookie=18 eventfd2=19 epoll_create1=20 epoll_ctl=21 epoll_pwait=22 dup=23 \
dup3=24 fcntl=25 inotify_init1=26 inotify_add_watch=27 inotify_rm_watch=28 ioctl=29 ioprio_set=30 \
ioprio_get=31 flock=32 mknodat=33 mkdirat=34 unlinkat=35 symlinkat=36 linkat=37 renameat=38 umount2=39 \
mount=40 pivot_root=41 nfsservctl=42 statfs=43 fstatfs=44 truncate=45 ftruncate=46 fallocate=47 faccessat=48 \
chdir=49 fchdir=50 chroot=51 fchmod=52 fchmodat=53 fchownat=54 fchown=55 openat=56 close=57 vhangup=58 \
pipe2=59 quotactl=60 getdents64=61 lseek=62 read=63 write=64 readv=65 writev=66 pread64=67 pwrite64=68 \
preadv=69 pwritev=70 sendfile=71 pselect6=72 ppoll=73 signalfd4=74 vmsplice=75 splice=76 tee=77 \
readlinkat=78 newfstatat=79 fstat=80 sync=81 fsync=82 fdatasync=83 sync_file_range=84 timerfd_create=85 \
timerfd_settime=86 timerfd_gettime=87 utimensat=88 acct=89 capget=90 capset=91 personality=92 exit=93 \
exit_group=94 waitid=95 set_tid_address=96 unshare=97 futex=98 set_robust_list=99 get_robust_list=100 \
nanosleep=101 getitimer=102 setitimer=103 kexec_load=104 init_module=105 delete_module=106 timer_create=107 \
timer_gettime=108 timer_getoverrun=109 timer_settime=110 timer_delete=111 clock_settime=112 \
clock_gettime=113 clock_getres=114 clock_nanosleep=115 syslog=116 ptrace=117 sched_setparam=118 \
sched_setscheduler=119 sched_getscheduler=120 sched_getparam=121 sched_setaffinity=122 sched_getaffinity=123 \
sched_yield=124 sched_get_priority_max=125 sched_get_priority_min=126 sched_rr_get_interval=127 \
restart_syscall=128 kill=129 tkill=130 tgkill=131 sigaltstack=132 rt_sigsuspend=133 rt_sigaction=134 \
rt_sigprocmask=135 rt_sigpending=136 rt_sigtimedwait=137 rt_sigqueueinfo=138 rt_sigreturn=139 \
setpriority=140 getpriority=141 reboot=142 setregid=143 setgid=144 setreuid=145 setuid=146 setresuid=147 \
getresuid=148 setresgid=149 getresgid=150 setfsuid=151 setfsgid=152 times=153 setpgid=154 getpgid=155 \
getsid=156 setsid=157 getgroups=158 setgroups=159 uname=160 sethostname=161 setdomainname=162 getrlimit=163 \
setrlimit=164 getrusage=165 umask=166 prctl=167 getcpu=168 gettimeofday=169 settimeofday=170 adjtimex=171 \
getpid=172 getppid=173 getuid=174 geteuid=175 getgid=176 getegid=177 gettid=178 sysinfo=179 mq_open=180 \
mq_unlink=181 mq_timedsend=182 mq_timedreceive=183 mq_notify=184 mq_getsetattr=185 msgget=186 msgctl=187 \
msgrcv=188 msgsnd=189 semget=190 semctl=191 semtimedop=192 semop=193 shmget=194 shmctl=195 shmat=196 \
shmdt=197 socket=198 socketpair=199 bind=200 listen=201 accept=202 connect=203 getsockname=204 \
getpeername=205 sendto=206 recvfrom=207 setsockopt=208 getsockopt=209 shutdown=210 sendmsg=211 recvmsg=212 \
readahead=213 brk=214 munmap=215 mremap=216 add_key=217 request_key=218 keyctl=219 clone=220 execve=221 \
mmap=222 fadvise64=223 swapon=224 swapoff=225 mprotect=226 msync=227 mlock=228 munlock=229 mlockall=230 \
munlockall=231 mincore=232 madvise=233 remap_file_pages=234 mbind=235 get_mempolicy=236 set_mempolicy=237 \
migrate_pages=238 move_pages=239 rt_tgsigqueueinfo=240 perf_event_open=241 accept4=242 recvmmsg=243 \
wait4=260 prlimit64=261 fanotify_init=262 fanotify_mark=263 name_to_handle_at=264 open_by_handle_at=265 \
clock_adjtime=266 syncfs=267 setns=268 sendmmsg=269 process_vm_readv=270 process_vm_writev=271 kcmp=272 \
finit_module=273 sched_setattr=274 sched_getattr=275 renameat2=276 seccomp=277 getrandom=278 \
memfd_create=279 bpf=280 execveat=281 userfaultfd=282 membarrier=283 mlock2=284 copy_file_range=285 \
preadv2=286 pwritev2=287 pkey_mprotect=288 pkey_alloc=289 pkey_free=290 statx=291 io_pgetevents=292 rseq=293 \
kexec_file_load=294 pidfd_send_signal=424 io_uring_setup=425 io_uring_enter=426 io_uring_register=427 \
open_tree=428 move_mount=429 fsopen=430 fsconfig=431 fsmount=432 fspick=433 pidfd_open=434 clone3=435 \
close_range=436 openat2=437 pidfd_getfd=438 faccessat2=439 process_madvise=440 epoll_pwait2=441 \
mount_setattr=442 quotactl_fd=443 landlock_create_ruleset=444 landlock_add_rule=445 \
landlock_restrict_self=446 memfd_secret=447 process_mrelease=448 futex_waitv=449 set_mempolicy_home_node=450 \
cachestat=451 fchmodat2=452 map_shadow_stack=453 futex_wake=454 futex_wait=455 futex_requeue=456 \
statmount=457 listmount=458 lsm_get_self_attr=459 lsm_set_self_attr=460 lsm_list_modules=461 mseal=462 \
";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALL_TABLE: &str = "";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};

    const KERNEL: KernelVersion = KernelVersion(6, 1);

    fn caps(list: &[&str]) -> HashSet<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    fn default_caps_and(extra: &[&str]) -> HashSet<String> {
        caps(DEFAULT_CAPABILITIES).into_iter().chain(extra.iter().map(|c| c.to_string())).collect()
    }

    fn resolve_default(arch: &str, caps: &HashSet<String>, kernel: KernelVersion) -> Resolved {
        resolve(DEFAULT_PROFILE, arch, caps, kernel).unwrap()
    }

    fn rules_for<'a>(resolved: &'a Resolved, name: &str) -> Vec<&'a Rule> {
        resolved.rules.iter().filter(|rule| rule.names.iter().any(|n| n == name)).collect()
    }

    fn native_filter(caps: &HashSet<String>) -> Filter {
        let target = Target::native().unwrap();
        let resolved = resolve_default(target.docker_arch, caps, KERNEL);
        let table = syscall_table();
        compile(&target, &resolved, &|name| table.get(name).copied()).unwrap()
    }

    fn nr(name: &str) -> u32 {
        *syscall_table().get(name).unwrap_or_else(|| panic!("{name} is not in the table"))
    }

    /// A classic-BPF interpreter for what seccomp filters use, ours and libseccomp's.
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let word = |k: u32| u32::from_le_bytes(data[k as usize..k as usize + 4].try_into().unwrap());
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let insn = program[pc];
            pc += 1;
            let taken = match insn.code {
                BPF_LD_W_ABS => {
                    a = word(insn.k);
                    continue;
                }
                BPF_LD_IMM => {
                    a = insn.k;
                    continue;
                }
                BPF_ALU_AND_K => {
                    a &= insn.k;
                    continue;
                }
                BPF_RET_K => return insn.k,
                BPF_JMP_JA => {
                    pc += insn.k as usize;
                    continue;
                }
                BPF_JEQ_K => a == insn.k,
                BPF_JGT_K => a > insn.k,
                BPF_JGE_K => a >= insn.k,
                0x45 => a & insn.k != 0, // BPF_JMP | BPF_JSET | BPF_K
                code => panic!("unexpected BPF instruction {code:#x} at {}", pc - 1),
            };
            pc += usize::from(if taken { insn.jt } else { insn.jf });
        }
    }

    fn decide(filter: &Filter, name: &str, args: [u64; 6]) -> u32 {
        run(&filter.program, Target::native().unwrap().audit_arch, nr(name), args)
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn profile_is_the_upstream_file() {
        let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).unwrap();
        assert_eq!(Action::parse(&profile.default_action, profile.default_errno_ret).unwrap(), Action::Errno(1));
        let entries = profile.syscalls.unwrap();
        // Any edit to the vendored file shows up here; update these together
        // with the upstream version noted at DEFAULT_PROFILE.
        assert_eq!(entries.len(), 31);
        assert_eq!(entries[0].names.as_ref().unwrap().len(), 352);
        assert_eq!(entries.iter().map(|e| e.names.as_ref().map_or(0, Vec::len)).sum::<usize>(), 428);
        assert!(!DEFAULT_PROFILE.contains("io_uring"), "moby dropped io_uring_* in v25");
        assert!(DEFAULT_PROFILE.contains("\"futex_requeue\""), "moby added futex2 in v26");
    }

    #[test]
    fn capabilities_are_spelled_as_in_the_profile() {
        let all: HashSet<Capability> = ALL_CAPABILITIES
            .iter()
            .map(|c| serde_json::from_value(serde_json::Value::String(c.to_string())).unwrap())
            .collect();
        assert_eq!(capability_names(&all), caps(ALL_CAPABILITIES));
        assert_eq!(capability_names(&HashSet::from([Capability::SysAdmin])), caps(&["CAP_SYS_ADMIN"]));
    }

    #[test]
    fn cap_sys_admin_adds_mount_unshare_and_lifts_the_clone_limits() {
        let plain = resolve_default("amd64", &caps(DEFAULT_CAPABILITIES), KERNEL);
        for name in ["mount", "unshare", "setns", "umount2"] {
            assert!(rules_for(&plain, name).is_empty(), "{name} without CAP_SYS_ADMIN");
        }
        let clone = rules_for(&plain, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(
            clone[0].args,
            [Comparison { index: 0, op: Op::MaskedEq, value: 0x7E02_0000, value_two: 0, low_half_only: false }],
            "namespace flags are masked off clone"
        );
        let clone3 = rules_for(&plain, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action, Action::Errno(libc::ENOSYS as u16), "clone3 says ENOSYS so libcs fall back");

        let admin = resolve_default("amd64", &default_caps_and(&["CAP_SYS_ADMIN"]), KERNEL);
        for name in ["mount", "unshare", "setns", "umount2", "clone", "clone3"] {
            let rules = rules_for(&admin, name);
            assert_eq!(rules.len(), 1, "{name} with CAP_SYS_ADMIN");
            assert_eq!((rules[0].action, rules[0].args.len()), (Action::Allow, 0), "{name}");
        }
    }

    #[test]
    fn ptrace_needs_kernel_4_8_or_cap_sys_ptrace() {
        let default = caps(DEFAULT_CAPABILITIES);
        assert!(rules_for(&resolve_default("amd64", &default, KernelVersion(4, 7)), "ptrace").is_empty());
        assert_eq!(rules_for(&resolve_default("amd64", &default, KernelVersion(4, 8)), "ptrace").len(), 1);
        assert_eq!(rules_for(&resolve_default("amd64", &default, KERNEL), "ptrace").len(), 1);
        let ptrace = default_caps_and(&["CAP_SYS_PTRACE"]);
        assert_eq!(rules_for(&resolve_default("amd64", &ptrace, KernelVersion(4, 7)), "ptrace").len(), 1);
        assert_eq!(rules_for(&resolve_default("amd64", &ptrace, KERNEL), "kcmp").len(), 1);
        assert!(rules_for(&resolve_default("amd64", &default, KERNEL), "kcmp").is_empty());
    }

    #[test]
    fn arch_specific_entries_follow_the_architecture() {
        let default = caps(DEFAULT_CAPABILITIES);
        let amd64 = resolve_default("amd64", &default, KERNEL);
        assert_eq!(rules_for(&amd64, "arch_prctl").len(), 1);
        assert_eq!(rules_for(&amd64, "modify_ldt").len(), 1);
        for name in ["set_tls", "cacheflush", "s390_runtime_instr", "riscv_flush_icache", "swapcontext"] {
            assert!(rules_for(&amd64, name).is_empty(), "{name} on amd64");
        }
        let arm64 = resolve_default("arm64", &default, KERNEL);
        assert!(rules_for(&arm64, "arch_prctl").is_empty());
        assert!(rules_for(&arm64, "modify_ldt").is_empty());
        assert_eq!(rules_for(&arm64, "set_tls").len(), 1);
        // s390 passes clone's flags second; its rule replaces the usual one.
        let s390x = resolve_default("s390x", &default, KERNEL);
        let clone: Vec<u8> = rules_for(&s390x, "clone").iter().map(|r| r.args[0].index).collect();
        assert_eq!(clone, [1]);
        let clone: Vec<u8> = rules_for(&amd64, "clone").iter().map(|r| r.args[0].index).collect();
        assert_eq!(clone, [0]);
    }

    #[test]
    fn kernel_versions_parse_like_moby() {
        assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion(4, 8)));
        assert_eq!(KernelVersion::parse("6.18.44-fc-v657"), Some(KernelVersion(6, 18)));
        assert_eq!(KernelVersion::parse("5.15rc1"), Some(KernelVersion(5, 15)));
        assert_eq!(KernelVersion::parse("6"), None);
        assert_eq!(KernelVersion::parse("x.1"), None);
        assert_eq!(KernelVersion::parse("6.x"), None);
        assert!(KernelVersion::running().unwrap() >= KernelVersion(3, 17), "seccomp(2) exists since 3.17");
        let bad = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"four"}}]}"#;
        let err = resolve(bad, "amd64", &HashSet::new(), KERNEL).unwrap_err().to_string();
        assert!(err.contains("minKernel \"four\""), "{err}");
    }

    #[test]
    fn syscall_table_is_whole_and_agrees_with_libc() {
        let table = syscall_table();
        let pairs = SYSCALL_TABLE.split_whitespace().count();
        assert_eq!(table.len(), pairs, "every name=number pair parses, no name twice");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(pairs, 375);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(pairs, 318);
        let libc_numbers = [
            ("read", libc::SYS_read),
            ("getpid", libc::SYS_getpid),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("unshare", libc::SYS_unshare),
            ("personality", libc::SYS_personality),
            ("socket", libc::SYS_socket),
            ("ptrace", libc::SYS_ptrace),
            ("mount", libc::SYS_mount),
            ("openat2", libc::SYS_openat2),
            ("seccomp", libc::SYS_seccomp),
            ("exit_group", libc::SYS_exit_group),
            ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ];
        for (name, number) in libc_numbers {
            assert_eq!(i64::from(table[name]), number, "{name}");
        }
    }

    #[test]
    fn default_filter_decisions() {
        let filter = native_filter(&caps(DEFAULT_CAPABILITIES));
        assert!(filter.program.len() < 1200, "{} instructions", filter.program.len());
        assert_eq!(decide(&filter, "getpid", [0; 6]), ALLOW);
        assert_eq!(decide(&filter, "unshare", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(decide(&filter, "mount", [0; 6]), EPERM);
        assert_eq!(decide(&filter, "clone3", [0; 6]), ENOSYS);
        assert_eq!(decide(&filter, "clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide(&filter, "clone", [(libc::CLONE_NEWNS | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0]), EPERM);
        for allowed in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(decide(&filter, "personality", [allowed, 0, 0, 0, 0, 0]), ALLOW, "{allowed:#x}");
        }
        // ADDR_NO_RANDOMIZE, with and without junk in the high half (which
        // the kernel does not read: 1 << 32 is personality(0)).
        for denied in [0x0040000, 0x1_0004_0000] {
            assert_eq!(decide(&filter, "personality", [denied, 0, 0, 0, 0, 0]), EPERM, "{denied:#x}");
        }
        for allowed in [0x1_0000_0000, 0xffff_ffff_ffff_ffff] {
            assert_eq!(decide(&filter, "personality", [allowed, 0, 0, 0, 0, 0]), ALLOW, "{allowed:#x}");
        }
        assert_eq!(decide(&filter, "socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide(&filter, "socket", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0]), EPERM);
        // The kernel reads the family as an int: junk in the high half is
        // still AF_VSOCK (the container escape libseccomp's filter allows).
        for family in [libc::AF_VSOCK as u64 | 1 << 32, libc::AF_VSOCK as u64 | 0xffff_ffff_0000_0000] {
            assert_eq!(decide(&filter, "socket", [family, 1, 0, 0, 0, 0]), EPERM, "{family:#x}");
        }
        assert_eq!(decide(&filter, "socket", [libc::AF_INET as u64 | 1 << 32, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide(&filter, "ptrace", [0; 6]), ALLOW, "kernel >= 4.8");
        assert_eq!(decide(&filter, "kcmp", [0; 6]), EPERM);
        assert_eq!(decide(&filter, "chroot", [0; 6]), ALLOW, "CAP_SYS_CHROOT is a default capability");
        assert_eq!(decide(&filter, "reboot", [0; 6]), EPERM);
        let native = Target::native().unwrap().audit_arch;
        assert_eq!(run(&filter.program, native, 9999, [0; 6]), EPERM, "unknown syscall");
        assert_eq!(run(&filter.program, native, u32::MAX, [0; 6]), EPERM);
        // i386 getpid (20) through int 0x80, and another 64-bit arch.
        assert_eq!(run(&filter.program, 0x4000_0003, 20, [0; 6]), EPERM);
        assert_eq!(run(&filter.program, native ^ 0x89, nr("getpid"), [0; 6]), EPERM);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(&filter.program, native, X32_SYSCALL_BIT | nr("getpid"), [0; 6]), EPERM, "x32");
    }

    #[test]
    fn sys_admin_filter_decisions() {
        let filter = native_filter(&default_caps_and(&["CAP_SYS_ADMIN"]));
        assert_eq!(decide(&filter, "unshare", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide(&filter, "clone3", [0; 6]), ALLOW);
        assert_eq!(decide(&filter, "clone", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(decide(&filter, "bpf", [0; 6]), ALLOW);
        let privileged = native_filter(&caps(ALL_CAPABILITIES));
        for name in ["reboot", "kcmp", "init_module", "settimeofday", "open_by_handle_at", "perf_event_open"] {
            assert_eq!(decide(&privileged, name, [0; 6]), ALLOW, "{name}");
        }
        let none = native_filter(&HashSet::new());
        assert_eq!(decide(&none, "chroot", [0; 6]), EPERM);
        assert_eq!(decide(&none, "getpid", [0; 6]), ALLOW);
    }

    /// Rules that collide the ways libseccomp and runc settle.
    const PRECEDENCE_PROFILE: &str = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["getppid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["gettid"], "action": "SCMP_ACT_TRAP"},
        {"names": ["gettid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["dup"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
        {"names": ["dup2"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["dup2"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 1, "value": 5, "op": "SCMP_CMP_GT"}, {"index": 0, "value": 3, "op": "SCMP_CMP_LE"}]},
        {"names": ["dup3"], "action": "SCMP_ACT_LOG", "args": [{"index": 2, "value": 3, "op": "SCMP_CMP_LT"}]},
        {"names": ["dup3"], "action": "SCMP_ACT_LOG", "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_GE"}]},
        {"names": ["lseek"], "action": "SCMP_ACT_KILL_PROCESS", "args": [
            {"index": 1, "value": 4294967296, "valueTwo": 4294967296, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["no_such_syscall", "chown32"], "action": "SCMP_ACT_ALLOW"}
    ]}"#;

    #[test]
    fn precedence_follows_libseccomp() {
        let target = Target::native().unwrap();
        let resolved = resolve(PRECEDENCE_PROFILE, target.docker_arch, &HashSet::new(), KERNEL).unwrap();
        let table = syscall_table();
        let filter = compile(&target, &resolved, &|name| table.get(name).copied()).unwrap();
        let d = |name: &str, a0: u64, a1: u64, a2: u64| decide(&filter, name, [a0, a1, a2, 0, 0, 0]);
        assert_eq!(d("getpid", 0, 0, 0), ALLOW, "the first unconditional rule stays");
        assert_eq!(d("getppid", 1, 0, 0), ENOSYS, "an unconditional rule replaces earlier conditional ones");
        assert_eq!(
            d("gettid", 1, 0, 0),
            libc::SECCOMP_RET_TRAP,
            "conditional rules after an unconditional one are ignored"
        );
        assert_eq!((d("dup", 1, 0, 0), d("dup", 2, 0, 0), d("dup", 3, 0, 0)), (ALLOW, ALLOW, EPERM), "split, OR-ed");
        assert_eq!(d("dup2", 3, 6, 0), ALLOW, "the rule with the default action was skipped");
        // dup2's descriptors are 32-bit: 1 << 32 is descriptor 0 to the kernel.
        assert_eq!((d("dup2", 4, 6, 0), d("dup2", 3, 5, 0), d("dup2", 0, 1 << 32 | 6, 0)), (EPERM, EPERM, ALLOW));
        assert_eq!(d("dup2", 0, 1 << 32, 0), EPERM);
        let log = libc::SECCOMP_RET_LOG;
        assert_eq!([2, 3, 8, 9, 1 << 40].map(|v| d("dup3", 0, 0, v)), [log, EPERM, EPERM, log, log]);
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        assert_eq!([0, 1 << 32, 3 << 32 | 7, 2 << 32].map(|v| d("lseek", 0, v, 0)), [EPERM, kill, kill, EPERM]);

        let mixed = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_NE"}]}]}"#;
        let resolved = resolve(mixed, target.docker_arch, &HashSet::new(), KERNEL).unwrap();
        let err = compile(&target, &resolved, &|name| table.get(name).copied()).unwrap_err();
        assert!(matches!(err, SeccompError::Unsupported(_)), "{err}");
    }

    /// What comparing `arg` with the rule's values means.
    fn holds(op: Op, arg: u64, datum: u64, value_two: u64) -> bool {
        match op {
            Op::Ne => arg != datum,
            Op::Lt => arg < datum,
            Op::Le => arg <= datum,
            Op::Eq => arg == datum,
            Op::Ge => arg >= datum,
            Op::Gt => arg > datum,
            Op::MaskedEq => arg & datum == value_two,
        }
    }

    #[test]
    fn comparisons_cover_both_halves() {
        let values = [0u64, 1, 5, 6, 7, 0xffff_ffff, 1 << 32, (1 << 32) + 5, (1 << 32) + 6, 5 << 32, 6 << 32, u64::MAX];
        let ops = [Op::Ne, Op::Lt, Op::Le, Op::Eq, Op::Ge, Op::Gt, Op::MaskedEq];
        let target = Target::native().unwrap();
        for op in ops {
            for datum in [6u64, (1 << 32) + 6, 5 << 32, u64::MAX] {
                let comparison = Comparison {
                    index: 3,
                    op,
                    value: datum,
                    value_two: datum & 0x0000_0005_0000_0006,
                    low_half_only: false,
                };
                let rules = BTreeMap::from([(7, SyscallRules::When(Action::Allow, vec![vec![comparison]]))]);
                let program = generate(&target, Action::Errno(1), &rules).unwrap();
                for arg in values {
                    let want = holds(op, arg, datum, comparison.value_two);
                    let got = run(&program, target.audit_arch, 7, [0, 0, 0, arg, 0, 0]) == ALLOW;
                    assert_eq!(got, want, "{op:?} {datum:#x} against {arg:#x}");
                }
            }
        }
    }

    #[test]
    fn thirty_two_bit_arguments_ignore_the_high_half() {
        let values = [0u64, 1, 5, 6, 7, 0xffff_ffff, 1 << 32, (1 << 32) + 5, (1 << 32) + 6, 5 << 32 | 7, u64::MAX];
        let ops = [Op::Ne, Op::Lt, Op::Le, Op::Eq, Op::Ge, Op::Gt, Op::MaskedEq];
        let target = Target::native().unwrap();
        for op in ops {
            for datum in [0u64, 6, 0xffff_ffff] {
                let parsed = Comparison { index: 0, op, value: datum, value_two: datum & 6, low_half_only: false };
                let comparison = parsed.for_syscall("socket").unwrap();
                assert!(comparison.low_half_only);
                let rules = BTreeMap::from([(7, SyscallRules::When(Action::Allow, vec![vec![comparison]]))]);
                let program = generate(&target, Action::Errno(1), &rules).unwrap();
                for arg in values {
                    let want = holds(op, arg & 0xffff_ffff, datum, comparison.value_two);
                    let got = run(&program, target.audit_arch, 7, [arg, 0, 0, 0, 0, 0]) == ALLOW;
                    assert_eq!(got, want, "{op:?} {datum:#x} against {arg:#x}");
                }
            }
        }
        // A 32-bit argument can never equal 1 << 32: the rule is refused.
        let wide = Comparison { index: 0, op: Op::Eq, value: 1 << 32, value_two: 0, low_half_only: false };
        assert!(matches!(wide.for_syscall("socket"), Err(SeccompError::Invalid(_))));
        assert!(!wide.for_syscall("clone").unwrap().low_half_only, "clone's flags are 64-bit");
    }

    #[test]
    fn oversized_programs_are_refused() {
        let target = Target::native().unwrap();
        let rules: BTreeMap<u32, SyscallRules> =
            (0..3000).map(|nr| (nr, SyscallRules::Always(Action::Allow))).collect();
        assert!(matches!(generate(&target, Action::Errno(1), &rules), Err(SeccompError::TooLarge(_))));
    }

    /// Runs `probe` in a forked child, after `PR_SET_NO_NEW_PRIVS` and with
    /// `filter` installed if there is one. Returns 0 if the probe's syscall
    /// succeeded and its errno if not.
    fn in_child(filter: Option<&Filter>, probe: fn() -> libc::c_long) -> i32 {
        // SAFETY: the child only makes raw syscalls (prctl, seccomp and the
        // probe's) and then `_exit`s: it neither allocates nor takes locks
        // that another thread of the test harness may have held at the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = (|| {
                // SAFETY: prctl with integer arguments only sets a flag on this process.
                if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                    return 200;
                }
                if let Some(filter) = filter {
                    if filter.apply().is_err() {
                        return 201;
                    }
                }
                if probe() < 0 {
                    io::Error::last_os_error().raw_os_error().unwrap_or(202)
                } else {
                    0
                }
            })();
            // SAFETY: ends the child at once, running none of the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        let mut status = 0;
        // SAFETY: reaps the child forked above into a status word we own.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
        assert!(libc::WIFEXITED(status), "the child did not exit normally: status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    // Probes. SAFETY for each: a raw syscall with integer arguments (or a
    // null pointer the kernel rejects before reading), touching no memory of ours.
    fn getpid() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_getpid) }
    }
    fn unshare_mount_namespace() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) }
    }
    fn clone3_without_args() -> libc::c_long {
        // A size of 0 is EINVAL before the kernel reads the (null) clone_args.
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null_mut::<libc::c_void>(), 0usize) }
    }
    fn personality_query() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff as libc::c_ulong) }
    }
    fn personality_linux32() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_personality, 0x0008 as libc::c_ulong) }
    }
    fn personality_no_randomize() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_personality, 0x0040000 as libc::c_ulong) }
    }
    fn socket_inet() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) }
    }
    fn socket_vsock() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) }
    }
    /// The escape: the kernel reads only the low 32 bits of the family.
    fn socket_vsock_high_junk() -> libc::c_long {
        let family = libc::AF_VSOCK as libc::c_ulong | 1 << 32;
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::SYS_socket, family, libc::SOCK_STREAM as libc::c_ulong, 0 as libc::c_ulong) }
    }
    #[cfg(target_arch = "x86_64")]
    fn x32_getpid() -> libc::c_long {
        // SAFETY: a probe (above).
        unsafe { libc::syscall(libc::c_long::from(X32_SYSCALL_BIT) | libc::SYS_getpid) }
    }

    #[test]
    fn default_filter_in_a_forked_child() {
        let default: HashSet<Capability> = DEFAULT_CAPABILITIES
            .iter()
            .map(|c| serde_json::from_value(serde_json::Value::String(c.to_string())).unwrap())
            .collect();
        let filter = docker_default(&default).unwrap();
        // Without the filter, as root, the denied calls succeed or fail otherwise.
        assert_eq!(in_child(None, unshare_mount_namespace), 0, "tests run as root");
        assert_eq!(in_child(None, personality_no_randomize), 0);
        assert_eq!(in_child(None, clone3_without_args), libc::EINVAL);

        let run = |probe: fn() -> libc::c_long| in_child(Some(&filter), probe);
        assert_eq!(run(getpid), 0);
        assert_eq!(run(unshare_mount_namespace), libc::EPERM);
        assert_eq!(run(clone3_without_args), libc::ENOSYS);
        assert_eq!(run(personality_query), 0);
        assert_eq!(run(personality_linux32), 0, "PER_LINUX32 (0x0008) is one of the profile's values");
        assert_eq!(run(personality_no_randomize), libc::EPERM);
        assert_eq!(run(socket_inet), 0);
        assert_eq!(run(socket_vsock), libc::EPERM);
        assert_eq!(run(socket_vsock_high_junk), libc::EPERM);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(x32_getpid), libc::EPERM);
    }

    #[test]
    fn sys_admin_filter_in_a_forked_child() {
        let filter = docker_default(&HashSet::from([Capability::SysAdmin])).unwrap();
        assert_eq!(in_child(Some(&filter), unshare_mount_namespace), 0);
        assert_eq!(in_child(Some(&filter), clone3_without_args), libc::EINVAL, "clone3 reaches the kernel");
        assert_eq!(in_child(Some(&filter), getpid), 0);
    }

    #[test]
    fn applying_without_no_new_privs_or_cap_sys_admin_is_refused() {
        let filter = native_filter(&HashSet::new());
        // SAFETY: as in `in_child`; the child drops all capabilities with raw
        // syscalls and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            // _LINUX_CAPABILITY_VERSION_3: two words of effective, permitted, inheritable.
            let header = Header { version: 0x2008_0522, pid: 0 };
            let data = [0u32; 6];
            // SAFETY: capset reads the header and the six words we own.
            let dropped = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } == 0;
            let code = match filter.apply() {
                Err(SeccompError::Apply(e)) if dropped && e.raw_os_error() == Some(libc::EACCES) => 0,
                _ => 1,
            };
            // SAFETY: as in `in_child`.
            unsafe { libc::_exit(code) }
        }
        let mut status = 0;
        // SAFETY: as in `in_child`.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }

    /// libseccomp 2.5, loaded at run time (the engine itself must not link
    /// it), as the reference the generated BPF is compared with.
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    mod libseccomp {
        use std::ffi::{c_char, c_int, c_uint, c_void, CString};
        use std::fs::File;
        use std::io::{Read, Seek, SeekFrom};
        use std::os::fd::FromRawFd;

        use super::super::{Op, Resolved};

        #[repr(C)]
        struct ArgCmp {
            arg: c_uint,
            op: c_uint,
            datum_a: u64,
            datum_b: u64,
        }

        const SCMP_FLTATR_ACT_BADARCH: c_int = 2;
        /// `__NR_SCMP_ERROR`: a name libseccomp does not know.
        const UNKNOWN: c_int = -1;

        type RuleAddArray = unsafe extern "C" fn(*mut c_void, u32, c_int, c_uint, *const ArgCmp) -> c_int;

        pub struct Lib {
            init: unsafe extern "C" fn(u32) -> *mut c_void,
            attr_set: unsafe extern "C" fn(*mut c_void, c_int, u32) -> c_int,
            resolve_name: unsafe extern "C" fn(*const c_char) -> c_int,
            rule_add_array: RuleAddArray,
            export_bpf: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
            release: unsafe extern "C" fn(*mut c_void),
        }

        impl Lib {
            pub fn open() -> Option<Lib> {
                // SAFETY: loads a system library by soname; its initialisers are its own business.
                let handle = unsafe { libc::dlopen(c"libseccomp.so.2".as_ptr(), libc::RTLD_NOW) };
                if handle.is_null() {
                    return None;
                }
                macro_rules! sym {
                    ($name:literal as $ty:ty) => {{
                        // SAFETY: a symbol lookup in the handle just opened.
                        let p = unsafe { libc::dlsym(handle, concat!($name, "\0").as_ptr().cast()) };
                        assert!(!p.is_null(), "libseccomp has no {}", $name);
                        // SAFETY: seccomp.h declares the function with this signature.
                        unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
                    }};
                }
                Some(Lib {
                    init: sym!("seccomp_init" as unsafe extern "C" fn(u32) -> *mut c_void),
                    attr_set: sym!("seccomp_attr_set" as unsafe extern "C" fn(*mut c_void, c_int, u32) -> c_int),
                    resolve_name: sym!("seccomp_syscall_resolve_name" as unsafe extern "C" fn(*const c_char) -> c_int),
                    rule_add_array: sym!("seccomp_rule_add_array" as RuleAddArray),
                    export_bpf: sym!("seccomp_export_bpf" as unsafe extern "C" fn(*mut c_void, c_int) -> c_int),
                    release: sym!("seccomp_release" as unsafe extern "C" fn(*mut c_void)),
                })
            }

            /// The native syscall number, `None` for names libseccomp does
            /// not know, negative for names of other architectures.
            pub fn resolve(&self, name: &str) -> Option<i32> {
                let name = CString::new(name).unwrap();
                // SAFETY: a NUL-terminated string that outlives the call.
                let nr = unsafe { (self.resolve_name)(name.as_ptr()) };
                (nr != UNKNOWN).then_some(nr)
            }

            /// The filter runc builds from moby's output, as libseccomp emits it.
            pub fn program(&self, resolved: &Resolved) -> Vec<libc::sock_filter> {
                let default = resolved.default.ret();
                // SAFETY: each call gets the context seccomp_init returned, or
                // buffers that outlive the call; the context is released last.
                unsafe {
                    let ctx = (self.init)(default);
                    assert!(!ctx.is_null());
                    assert_eq!((self.attr_set)(ctx, SCMP_FLTATR_ACT_BADARCH, default), 0);
                    for rule in &resolved.rules {
                        if rule.action == resolved.default {
                            continue;
                        }
                        let cmps: Vec<ArgCmp> = rule
                            .args
                            .iter()
                            .map(|c| ArgCmp {
                                arg: c_uint::from(c.index),
                                op: match c.op {
                                    Op::Ne => 1,
                                    Op::Lt => 2,
                                    Op::Le => 3,
                                    Op::Eq => 4,
                                    Op::Ge => 5,
                                    Op::Gt => 6,
                                    Op::MaskedEq => 7,
                                },
                                datum_a: c.value,
                                datum_b: c.value_two,
                            })
                            .collect();
                        let repeats = (0..6).any(|i| rule.args.iter().filter(|c| c.index == i).count() > 1);
                        for name in &rule.names {
                            let Some(nr) = self.resolve(name) else { continue };
                            let action = rule.action.ret();
                            if repeats {
                                for cmp in &cmps {
                                    assert_eq!((self.rule_add_array)(ctx, action, nr, 1, cmp), 0, "{name}");
                                }
                            } else {
                                let rc = (self.rule_add_array)(ctx, action, nr, cmps.len() as c_uint, cmps.as_ptr());
                                assert_eq!(rc, 0, "{name}");
                            }
                        }
                    }
                    let fd = libc::memfd_create(c"bpf".as_ptr(), libc::MFD_CLOEXEC);
                    assert!(fd >= 0);
                    let mut file = File::from_raw_fd(fd);
                    assert_eq!((self.export_bpf)(ctx, fd), 0);
                    (self.release)(ctx);
                    let mut bytes = Vec::new();
                    file.seek(SeekFrom::Start(0)).unwrap();
                    file.read_to_end(&mut bytes).unwrap();
                    bytes
                        .chunks_exact(8)
                        .map(|b| libc::sock_filter {
                            code: u16::from_ne_bytes([b[0], b[1]]),
                            jt: b[2],
                            jf: b[3],
                            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                        })
                        .collect()
                }
            }
        }
    }

    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    #[test]
    fn syscall_table_agrees_with_libseccomp() {
        let Some(lib) = libseccomp::Lib::open() else {
            eprintln!("libseccomp.so.2 is not installed; skipping the comparison");
            return;
        };
        let table = syscall_table();
        let mut compared = 0;
        for (name, nr) in &table {
            if let Some(theirs) = lib.resolve(name) {
                assert_eq!(theirs, *nr as i32, "{name}");
                compared += 1;
            }
        }
        assert!(compared > 350, "libseccomp knew only {compared} names");
        let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).unwrap();
        for name in profile.syscalls.unwrap().iter().flat_map(|e| e.names.clone().unwrap_or_default()) {
            match lib.resolve(&name) {
                Some(nr) if nr >= 0 => assert_eq!(table.get(name.as_str()).copied(), Some(nr as u32), "{name}"),
                Some(_) => assert!(!table.contains_key(name.as_str()), "{name} is not an x86_64 syscall"),
                None => {}
            }
        }
    }

    /// Every decision of the generated filter equals that of the filter
    /// libseccomp builds from the same rules: for every syscall number, with
    /// each argument set in turn to values on both sides of every datum in
    /// the rules, and for foreign and x32 callers.
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    #[test]
    fn decisions_match_libseccomp() {
        let Some(lib) = libseccomp::Lib::open() else {
            eprintln!("libseccomp.so.2 is not installed; skipping the comparison");
            return;
        };
        let target = Target::native().unwrap();
        let table = syscall_table();
        // Only names libseccomp resolves, so that both filters cover the same syscalls.
        let lookup = |name: &str| lib.resolve(name).and_then(|nr| u32::try_from(nr).ok()).and(table.get(name).copied());
        let cap_sets = [
            caps(DEFAULT_CAPABILITIES),
            default_caps_and(&["CAP_SYS_ADMIN"]),
            default_caps_and(&["CAP_SYS_PTRACE", "CAP_SYS_NICE", "CAP_BPF"]),
            caps(ALL_CAPABILITIES),
            HashSet::new(),
        ];
        let mut cases = Vec::new();
        for caps in &cap_sets {
            for kernel in [KERNEL, KernelVersion(4, 7)] {
                cases.push(resolve(DEFAULT_PROFILE, "amd64", caps, kernel).unwrap());
            }
        }
        cases.push(resolve(PRECEDENCE_PROFILE, "amd64", &HashSet::new(), KERNEL).unwrap());

        let names: HashMap<u32, &str> = table.iter().map(|(name, nr)| (*nr, *name)).collect();
        let mut checked = 0usize;
        for resolved in &cases {
            let ours = compile(&target, resolved, &lookup).unwrap().program;
            let theirs = lib.program(resolved);
            let mut values = vec![0u64, 1, 2, 3, 0x20000, 0x7E02_0000, 0xffff_ffff, 1 << 32, u64::MAX];
            for c in resolved.rules.iter().flat_map(|r| &r.args) {
                for v in [c.value, c.value_two] {
                    values.extend([v, v.wrapping_add(1), v.wrapping_sub(1), v ^ 1 << 32, v | 0xffff_ffff_0000_0000]);
                }
            }
            values.sort_unstable();
            values.dedup();
            let foreign = [0x4000_0003, AUDIT_ARCH_AARCH64];
            let x32 = (0..600).map(|nr| X32_SYSCALL_BIT | nr);
            for nr in (0..600).chain(x32).chain([u32::MAX, 0x8000_0000]) {
                let mut inputs: Vec<(u32, [u64; 6])> = foreign.iter().map(|&arch| (arch, [0; 6])).collect();
                inputs.push((AUDIT_ARCH_X86_64, [0; 6]));
                if nr < 600 {
                    for index in 0..6 {
                        for &v in &values {
                            let mut args = [0u64; 6];
                            args[index] = v;
                            inputs.push((AUDIT_ARCH_X86_64, args));
                        }
                    }
                }
                for (arch, args) in inputs {
                    // libseccomp compares all 64 bits of every argument; the
                    // kernel reads a 32-bit argument's low half only, and so
                    // does our filter: it must decide as libseccomp does on
                    // what the kernel sees.
                    let mut seen = args;
                    if let Some(name) = names.get(&nr) {
                        for (index, arg) in seen.iter_mut().enumerate() {
                            if arg_width::is_32_bit(name, index as u8) {
                                *arg &= 0xffff_ffff;
                            }
                        }
                    }
                    let (a, b) = (run(&ours, arch, nr, args), run(&theirs, arch, nr, seen));
                    assert_eq!(a, b, "syscall {nr:#x} arch {arch:#x} args {args:x?}: ours {a:#x}, libseccomp {b:#x}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 500_000, "{checked}");
    }
}
