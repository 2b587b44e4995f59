//! Which syscall arguments the kernel reads as 32-bit values.
//!
//! The kernel declares many arguments `int` or `unsigned int` and reads only
//! the low half of the 64-bit register, while seccomp hands the filter all
//! 64 bits. A filter that compares all 64 bits (libseccomp, and so runc and
//! Docker) lets `socket(40 | 1 << 32, ...)` through a "family != AF_VSOCK"
//! rule: the filter sees 0x1_0000_0028, the kernel creates an AF_VSOCK
//! socket. For these arguments the generated filter compares the low half
//! only, which is exactly what the kernel acts on.
//!
//! The list is from the kernel's `SYSCALL_DEFINEn` prototypes (the same on
//! x86_64 and aarch64): `int`, `unsigned int`, `pid_t`, `uid_t`, `gid_t`,
//! `umode_t` arguments. `long`, `unsigned long`, `size_t`, `off_t` and
//! pointers are 64-bit and are compared whole. It covers every syscall that
//! Docker's profile filters by argument and those a custom profile is
//! likely to; a syscall missing here is compared on 64 bits, as before.

/// `(syscall, indexes of its 32-bit arguments)`.
const INT_ARGUMENTS: &[(&str, &[u8])] = &[
    ("socket", &[0, 1, 2]),
    ("socketpair", &[0, 1, 2]),
    ("personality", &[0]),
    ("setsockopt", &[0, 1, 2]),
    ("getsockopt", &[0, 1, 2]),
    ("accept4", &[0, 3]),
    ("ioctl", &[0, 1]),
    ("fcntl", &[0, 1]),
    ("prctl", &[0]),
    ("kill", &[0, 1]),
    ("tkill", &[0, 1]),
    ("tgkill", &[0, 1, 2]),
    ("close", &[0]),
    ("dup", &[0]),
    ("dup2", &[0, 1]),
    ("dup3", &[0, 1, 2]),
    ("setns", &[0, 1]),
    ("bpf", &[0, 2]),
    ("keyctl", &[0]),
    ("open", &[1, 2]),
    ("openat", &[0, 2, 3]),
    ("chmod", &[1]),
    ("fchmod", &[0, 1]),
    ("fchmodat", &[0, 2]),
    ("mknod", &[1]),
    ("mknodat", &[0, 2]),
    ("madvise", &[2]),
    ("sched_setscheduler", &[0, 1]),
    ("perf_event_open", &[1, 2, 3]),
    ("quotactl", &[0]),
    ("reboot", &[0, 1, 2]),
    ("syslog", &[0, 2]),
    ("ioprio_set", &[0, 1, 2]),
    ("setuid", &[0]),
    ("setgid", &[0]),
    ("setreuid", &[0, 1]),
    ("setregid", &[0, 1]),
    ("setresuid", &[0, 1, 2]),
    ("setresgid", &[0, 1, 2]),
    ("setfsuid", &[0]),
    ("setfsgid", &[0]),
];

/// Whether the kernel reads argument `index` of `syscall` as 32 bits.
pub(super) fn is_32_bit(syscall: &str, index: u8) -> bool {
    INT_ARGUMENTS.iter().any(|(name, indexes)| *name == syscall && indexes.contains(&index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_arguments_are_known() {
        assert!(is_32_bit("socket", 0), "the family of socket(2) is an int");
        assert!(is_32_bit("personality", 0));
        assert!(!is_32_bit("clone", 0), "clone's flags are an unsigned long");
        assert!(!is_32_bit("socket", 3), "socket has three arguments");
        assert!(!is_32_bit("no_such_syscall", 0));
    }
}
