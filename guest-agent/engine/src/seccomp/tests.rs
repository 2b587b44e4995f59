//! The generator checked decision by decision: against the profile's
//! intent, against the BPF libseccomp emits for the same rules, and
//! against the kernel.

use std::collections::HashMap;

use super::bpf::{BPF_ALU_AND_K, BPF_JEQ_K, BPF_JGE_K, BPF_JGT_K, BPF_JMP_JA, BPF_LD_IMM, BPF_LD_W_ABS, BPF_RET_K};
use super::syscalls::SYSCALL_TABLE;
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
    let rules: BTreeMap<u32, SyscallRules> = (0..3000).map(|nr| (nr, SyscallRules::Always(Action::Allow))).collect();
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
