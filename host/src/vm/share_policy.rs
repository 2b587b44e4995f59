//! What a share accepts from the VM: no setuid or setgid files.
//!
//! virtiofsd does what the guest asks with its own rights. Dropping
//! CAP_MKNOD and CAP_FSETID (`--modcaps`, see qemu.rs) stops device nodes
//! and makes the kernel clear setuid/setgid on writes, but the owner of a
//! file may always `chmod u+s` it, and virtiofsd has no option against that.
//! Run as root, that lets a container plant a setuid-root program in a
//! shared directory of the host. So virtiofsd runs under one more seccomp
//! filter of ours (virtiofsd stacks its own on top): chmod and file creation
//! with S_ISUID or S_ISGID in the mode fail with EPERM. openat2(2), whose
//! mode sits behind a pointer a filter cannot read, answers ENOSYS, and
//! virtiofsd falls back to openat(2) as on kernels before 5.6.
//!
//! Classic BPF written out here: six comparisons do not call for a filter
//! library, and the host crate does not carry the engine's generator.

use std::io;

/// `S_ISUID | S_ISGID`.
const PRIVILEGE_BITS: u32 = 0o6000;
/// The same number on every architecture (added after the tables merged).
const SYS_OPENAT2: u32 = 437;
const SYS_FCHMODAT2: u32 = 452;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const ARCH_OFFSET: u32 = 4;
const NR_OFFSET: u32 = 0;

/// The low half of argument `index` (modes and flags are 32-bit).
fn arg_offset(index: u32) -> u32 {
    16 + 8 * index
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// How a syscall's mode is checked: which argument holds the mode, and
/// which holds the open flags (the mode counts only with O_CREAT).
struct ModeCheck {
    nr: u32,
    mode_arg: u32,
    create_flags_arg: Option<u32>,
}

fn mode_checks() -> Vec<ModeCheck> {
    let mut checks = vec![
        ModeCheck { nr: libc::SYS_fchmod as u32, mode_arg: 1, create_flags_arg: None },
        ModeCheck { nr: libc::SYS_fchmodat as u32, mode_arg: 2, create_flags_arg: None },
        ModeCheck { nr: SYS_FCHMODAT2, mode_arg: 2, create_flags_arg: None },
        ModeCheck { nr: libc::SYS_openat as u32, mode_arg: 3, create_flags_arg: Some(2) },
    ];
    #[cfg(target_arch = "x86_64")]
    checks.extend([
        ModeCheck { nr: libc::SYS_chmod as u32, mode_arg: 1, create_flags_arg: None },
        ModeCheck { nr: libc::SYS_open as u32, mode_arg: 2, create_flags_arg: Some(1) },
        ModeCheck { nr: libc::SYS_creat as u32, mode_arg: 1, create_flags_arg: None },
    ]);
    checks
}

/// The filter program.
pub fn program() -> Vec<libc::sock_filter> {
    let allow = libc::SECCOMP_RET_ALLOW;
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let mut p = vec![
        insn(LD_W_ABS, 0, 0, ARCH_OFFSET),
        // A foreign ABI: virtiofsd makes none, so refuse whatever it is.
        insn(JEQ_K, 1, 0, AUDIT_ARCH),
        insn(RET_K, 0, 0, enosys),
        insn(LD_W_ABS, 0, 0, NR_OFFSET),
        insn(JEQ_K, 0, 1, SYS_OPENAT2),
        insn(RET_K, 0, 0, enosys),
    ];
    // Per check: `nr == X` falls into its block, else jumps over it to the
    // next comparison. The syscall number is reloaded after each block.
    for check in mode_checks() {
        let mut block = Vec::new();
        if let Some(flags) = check.create_flags_arg {
            block.push(insn(LD_W_ABS, 0, 0, arg_offset(flags)));
            // Without O_CREAT the mode is not used: allow.
            block.push(insn(JSET_K, 1, 0, libc::O_CREAT as u32));
            block.push(insn(RET_K, 0, 0, allow));
        }
        block.push(insn(LD_W_ABS, 0, 0, arg_offset(check.mode_arg)));
        block.push(insn(JSET_K, 0, 1, PRIVILEGE_BITS));
        block.push(insn(RET_K, 0, 0, eperm));
        block.push(insn(RET_K, 0, 0, allow));
        p.push(insn(JEQ_K, 0, block.len() as u8, check.nr));
        p.extend(block);
    }
    p.push(insn(RET_K, 0, 0, allow));
    p
}

/// Installs the filter in the calling process (a child between fork and
/// exec: only async-signal-safe calls, no allocation).
///
/// # Safety
/// `filter` must be a valid program that outlives the call.
unsafe fn install(filter: &libc::sock_fprog) -> io::Result<()> {
    // SAFETY: prctl with integer arguments; `filter` is valid per the
    // contract. No new privileges: virtiofsd gains none by exec'ing, and
    // without CAP_SYS_ADMIN the kernel requires it for a filter.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, filter as *const libc::sock_fprog) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `cmd`'s process run under the filter.
pub fn apply_on_exec(cmd: &mut tokio::process::Command) {
    // Built before the fork, once per process: the child only points the
    // kernel at it.
    static PROGRAM: std::sync::OnceLock<Vec<libc::sock_filter>> = std::sync::OnceLock::new();
    let program: &'static [libc::sock_filter] = PROGRAM.get_or_init(program);
    // SAFETY: the closure only builds a sock_fprog on the stack and calls
    // `install` (prctl), which is async-signal-safe, on a program that
    // lives as long as the process.
    unsafe {
        cmd.pre_exec(move || install(&fprog(program)));
    }
}

fn fprog(program: &[libc::sock_filter]) -> libc::sock_fprog {
    libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut libc::sock_filter }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// A raw syscall; the tests pass integers and pointers to NUL-terminated
    /// paths that outlive the call.
    fn sys(nr: libc::c_long, args: [usize; 4]) -> libc::c_long {
        // SAFETY: the kernel reads at most the paths passed, which are live.
        unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3]) }
    }

    /// Runs `probe` in a forked child under the filter; 0 or the errno.
    fn in_child(probe: impl Fn() -> libc::c_long) -> i32 {
        let program = program();
        let filter = fprog(&program);
        // SAFETY: the child makes raw syscalls only and leaves with _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                if install(&filter).is_err() {
                    libc::_exit(255);
                }
                let result = probe();
                let errno = *libc::__errno_location();
                libc::_exit(if result < 0 { errno } else { 0 });
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            libc::WEXITSTATUS(status)
        }
    }

    #[test]
    fn setuid_and_setgid_modes_are_refused_and_the_rest_works() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("program");
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        let path = CString::new(file.to_str().unwrap()).unwrap();
        let created = CString::new(dir.path().join("new").to_str().unwrap()).unwrap();
        let plain = CString::new(dir.path().join("plain").to_str().unwrap()).unwrap();
        let (p, c, n) = (path.as_ptr() as usize, created.as_ptr() as usize, plain.as_ptr() as usize);
        let cwd = libc::AT_FDCWD as usize;
        let chmod = |mode: usize| move || sys(libc::SYS_fchmodat, [cwd, p, mode, 0]);
        assert_eq!(in_child(chmod(0o755)), 0);
        assert_eq!(in_child(chmod(0o4755)), libc::EPERM, "setuid");
        assert_eq!(in_child(chmod(0o2755)), libc::EPERM, "setgid");
        assert_eq!(in_child(chmod(0o6755 | 0xffff_0000)), libc::EPERM);
        let fchmod = || {
            let fd = sys(libc::SYS_openat, [cwd, p, libc::O_RDONLY as usize, 0]);
            sys(libc::SYS_fchmod, [fd as usize, 0o4755, 0, 0])
        };
        assert_eq!(in_child(fchmod), libc::EPERM);
        let create_flags = (libc::O_CREAT | libc::O_WRONLY) as usize;
        let create = |name: usize, mode: usize| move || sys(libc::SYS_openat, [cwd, name, create_flags, mode]);
        assert_eq!(in_child(create(c, 0o4755)), libc::EPERM, "created setuid");
        assert_eq!(in_child(create(n, 0o644)), 0);
        // Opening without O_CREAT ignores the mode argument.
        let open = move || sys(libc::SYS_openat, [cwd, p, libc::O_RDONLY as usize, 0o4755]);
        assert_eq!(in_child(open), 0);
        let openat2 = || sys(SYS_OPENAT2 as libc::c_long, [cwd, p, 0, 0]);
        assert_eq!(in_child(openat2), libc::ENOSYS, "virtiofsd must fall back to openat");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777, 0o755);
        assert!(!dir.path().join("new").exists());
    }
}
