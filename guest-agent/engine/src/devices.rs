//! The device cgroup on cgroup v2: an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE)
//! attached to the container's cgroup decides every open and mknod of a
//! device node, from the OCI spec's `linux.resources.devices` rules.
//!
//! Without it, a container's root (which holds CAP_MKNOD by default, as in
//! Docker) could create a node for the VM's data disk and read every other
//! container's files. Docker gets the same filter from runc's
//! `libcontainer/cgroups/devices`; we generate the program ourselves (about
//! a hundred lines, like the seccomp filter) because the agent links no
//! libbpf (see docs/ARCHITECTURE.md on why not libcontainer).
//!
//! Semantics are runc's: rules are matched last to first and the first match
//! decides; nothing matching means deny.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One device rule, as the OCI spec has it.
pub type Rule = LinuxDeviceCgroup;

// From linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_DEVCG_ACC_MKNOD: i32 = 1;
const BPF_DEVCG_ACC_READ: i32 = 2;
const BPF_DEVCG_ACC_WRITE: i32 = 4;
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

// The opcodes used (class | operation | source).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const JMP_EXIT: u8 = 0x95;

/// The program for `rules` (in spec order).
fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    // r1 is the context: struct bpf_cgroup_dev_ctx { u32 access_type
    // (access << 16 | type); u32 major; u32 minor; }.
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff), // r2 = device type
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16), // r3 = access wanted
        insn(LDX_MEM_W, 4, 1, 4, 0),    // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),    // r5 = minor
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::C | LinuxDeviceType::U => checks.push(vec![insn(JMP_JNE_K, 2, 0, 0, BPF_DEVCG_DEV_CHAR)]),
            LinuxDeviceType::B => checks.push(vec![insn(JMP_JNE_K, 2, 0, 0, BPF_DEVCG_DEV_BLOCK)]),
            // FIFOs need no device cgroup; "a" is any type.
            _ => {}
        }
        let access = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        if access != BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE {
            // The access wanted must be a subset of the rule's: (r3 & rule) == r3.
            checks.push(vec![
                insn(ALU32_MOV_X, 1, 3, 0, 0),
                insn(ALU32_AND_K, 1, 0, 0, access),
                insn(JMP_JNE_X, 1, 3, 0, 0),
            ]);
        }
        if let Some(major) = rule.major().filter(|m| *m >= 0) {
            checks.push(vec![insn(JMP_JNE_K, 4, 0, 0, major as i32)]);
        }
        if let Some(minor) = rule.minor().filter(|m| *m >= 0) {
            checks.push(vec![insn(JMP_JNE_K, 5, 0, 0, minor as i32)]);
        }
        let unconditional = checks.is_empty();
        let verdict = [insn(ALU64_MOV_K, 0, 0, 0, rule.allow() as i32), insn(JMP_EXIT, 0, 0, 0, 0)];
        // Each failed check jumps past the rest of this rule's block.
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        let len = block.len() + verdict.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JMP_JNE_K || ins.code == JMP_JNE_X {
                ins.off = (len - i - 1) as i16;
            }
        }
        block.extend(verdict);
        prog.extend(block);
        // Rules before one that always matches are never reached (and
        // the verifier refuses unreachable instructions).
        if unconditional {
            return prog;
        }
    }
    prog.extend([insn(ALU64_MOV_K, 0, 0, 0, 0), insn(JMP_EXIT, 0, 0, 0, 0)]);
    prog
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'r' => BPF_DEVCG_ACC_READ,
            'w' => BPF_DEVCG_ACC_WRITE,
            'm' => BPF_DEVCG_ACC_MKNOD,
            _ => 0,
        }
    })
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable buffer of the length passed, laid
    // out as the kernel's union bpf_attr for `cmd` (zeroed beyond what we set,
    // which the kernel requires of unknown trailing fields).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the filter for `rules` and attaches it to the cgroup `dir`, whose
/// processes from then on may open or create only the devices allowed.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> io::Result<()> {
    attach(dir, &load(rules)?)
}

/// Loads (verifies) the filter for `rules`. One loaded program can be
/// attached to many cgroups: the agent loads each rule set once and hands
/// it to the shims, sparing every start the verifier's time.
pub fn load(rules: &[LinuxDeviceCgroup]) -> io::Result<OwnedFd> {
    let insns = program(rules);
    let license = b"Apache\0";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level: explain a rejection
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[48..54].copy_from_slice(b"berth\0"); // prog_name
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(err) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let verifier = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(err.kind(), format!("loading the device filter: {err} {verifier}")))
        }
    }
}

/// Attaches a loaded filter to the cgroup `dir`.
pub fn attach(dir: &Path, prog: &impl AsRawFd) -> io::Result<()> {
    let cgroup = std::fs::File::open(dir)?;
    let mut attr = [0u8; 32];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|err| {
        io::Error::new(err.kind(), format!("attaching the device filter to {}: {err}", dir.display()))
    })?;
    // The cgroup holds the program now; our descriptors can go.
    Ok(())
}

/// Parses Docker's `--device-cgroup-rule` (`c 7:128 rwm`, `b 8:* r`, `a *:* m`).
pub fn parse_rule(text: &str) -> Result<LinuxDeviceCgroup, String> {
    let bad = || format!("invalid device cgroup rule {text:?}: expected TYPE MAJOR:MINOR ACCESS, e.g. \"c 7:128 rwm\"");
    let mut words = text.split_whitespace();
    let (Some(kind), Some(numbers), access, None) = (words.next(), words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let typ = match kind {
        "a" => LinuxDeviceType::A,
        "b" => LinuxDeviceType::B,
        "c" => LinuxDeviceType::C,
        _ => return Err(bad()),
    };
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    let number = |n: &str| -> Result<Option<i64>, String> {
        if n == "*" {
            Ok(None)
        } else {
            n.parse::<u32>().map(|n| Some(n as i64)).map_err(|_| bad())
        }
    };
    let access = access.unwrap_or("rwm");
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(bad());
    }
    let mut rule = oci_spec::runtime::LinuxDeviceCgroupBuilder::default().allow(true).typ(typ).access(access);
    if let Some(major) = number(major)? {
        rule = rule.major(major);
    }
    if let Some(minor) = number(minor)? {
        rule = rule.minor(minor);
    }
    rule.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one access the way the kernel would.
    fn decide(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> i64 {
        let ctx = [(access << 16 | kind) as u32, major, minor];
        let mut regs = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let ins = prog[pc];
            let (dst, src) = ((ins.regs & 0xf) as usize, (ins.regs >> 4) as usize);
            pc += 1;
            match ins.code {
                LDX_MEM_W => regs[dst] = ctx[ins.off as usize / 4] as i64,
                ALU32_AND_K => regs[dst] = ((regs[dst] as u32) & ins.imm as u32) as i64,
                ALU32_RSH_K => regs[dst] = ((regs[dst] as u32) >> ins.imm) as i64,
                ALU32_MOV_X => regs[dst] = regs[src] as u32 as i64,
                ALU64_MOV_K => regs[dst] = ins.imm as i64,
                JMP_JNE_K if regs[dst] != ins.imm as i64 => pc += ins.off as usize,
                JMP_JNE_X if regs[dst] != regs[src] => pc += ins.off as usize,
                JMP_JNE_K | JMP_JNE_X => {}
                JMP_EXIT => return regs[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn rules(texts: &[&str]) -> Vec<LinuxDeviceCgroup> {
        let deny_all =
            oci_spec::runtime::LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap();
        std::iter::once(deny_all).chain(texts.iter().map(|t| parse_rule(t).unwrap())).collect()
    }

    #[test]
    fn dockers_defaults_allow_the_usual_devices_and_nothing_else() {
        let prog = program(&rules(&["c *:* m", "b *:* m", "c 1:3 rwm", "c 136:* rwm"]));
        let (r, w, m) = (BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE, BPF_DEVCG_ACC_MKNOD);
        let (c, b) = (BPF_DEVCG_DEV_CHAR, BPF_DEVCG_DEV_BLOCK);
        assert_eq!(decide(&prog, c, r | w, 1, 3), 1, "/dev/null");
        assert_eq!(decide(&prog, c, r, 136, 7), 1, "a pty");
        assert_eq!(decide(&prog, b, m, 254, 0), 1, "mknod of a disk is allowed, as in Docker");
        assert_eq!(decide(&prog, b, r, 254, 0), 0, "opening the VM's disk is not");
        assert_eq!(decide(&prog, c, r, 10, 232), 0, "/dev/kvm");
        assert_eq!(decide(&prog, c, r | m, 1, 4), 0, "read needs a rule for 1:4");
    }

    #[test]
    fn the_last_matching_rule_decides() {
        let mut list = rules(&["a *:* rwm"]);
        list.push(
            oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::B)
                .access("r")
                .build()
                .unwrap(),
        );
        let prog = program(&list);
        assert_eq!(decide(&prog, BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_ACC_READ, 8, 0), 0);
        assert_eq!(decide(&prog, BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_ACC_WRITE, 8, 0), 1);
        assert_eq!(decide(&prog, BPF_DEVCG_DEV_CHAR, BPF_DEVCG_ACC_READ, 4, 1), 1);
    }

    #[test]
    fn rules_parse_as_docker_writes_them() {
        let rule = parse_rule("c 7:128 rwm").unwrap();
        assert_eq!(
            (rule.typ(), rule.major(), rule.minor(), rule.access().as_deref()),
            (Some(LinuxDeviceType::C), Some(7), Some(128), Some("rwm"))
        );
        assert_eq!(parse_rule("b 8:* r").unwrap().minor(), None);
        for bad in ["", "x 1:1 r", "c 1 r", "c 1:1 rx", "c a:1 r", "c 1:1 r extra"] {
            assert!(parse_rule(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_kernel_accepts_the_program_and_enforces_it() {
        // Needs root and a cgroup v2 hierarchy with BPF (the VM has one;
        // the hybrid hosts here have /sys/fs/cgroup/unified).
        // Not passing silently where it cannot run: tests/run.sh runs as root.
        assert!(nix::unistd::geteuid().is_root(), "this test loads a BPF program into a cgroup: run it as root");
        let root =
            crate::cgroup::hierarchy_root().expect("a cgroup v2 hierarchy (/sys/fs/cgroup or its unified mount)");
        let dir = root.join(format!("berth-devices-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let applied = apply(&dir, &rules(&["c 1:3 rw"]));
        // A shell moves itself into the cgroup, then opens /dev/null
        // (allowed) and /dev/zero (denied).
        let script =
            format!("echo $$ > {}/cgroup.procs && cat /dev/null && ! head -c1 /dev/zero 2>/dev/null", dir.display());
        let result = applied.and_then(|()| std::process::Command::new("sh").args(["-c", &script]).status());
        let _ = std::fs::remove_dir(&dir);
        assert!(result.unwrap().success(), "the shell saw /dev/null allowed and /dev/zero denied");
    }
}
