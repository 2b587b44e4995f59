//! The Hyper-V backend through the Host Compute Service (HCS): Berth's own
//! kernel and initramfs in a VM that `computecore.dll` creates from a JSON
//! document, the agent reached over Hyper-V sockets by the VM's RuntimeId.
//!
//! As with the VZ backend, what the VM is made of is plain data tested on
//! every host (doc.rs: the document, the kernel command line, the Plan 9
//! shares, HCS's and HCN's answers; errors.rs: HRESULTs as advice; vhdx.rs:
//! the data disk's steps; hcn.rs: the NAT network's settings); only the
//! calls are Windows' (computecore.rs, hcn.rs, vhdx.rs, com_pipes.rs: the
//! COM ports' pipe servers). plan.rs orders a start's steps and what each
//! leaves to undo; backend.rs walks them on Windows. Chosen with
//! `[vm] hypervisor = "hcs"` (config.rs), refused off Windows and without
//! an elevated daemon.

pub mod doc;
pub mod errors;
pub mod hcn;
pub mod plan;
pub mod vhdx;

#[cfg(windows)]
mod backend;
#[cfg(windows)]
pub use backend::HcsBackend;

#[cfg(windows)]
pub mod com_pipes;
#[cfg(windows)]
pub mod computecore;

/// Why an HCS start is refused before any call: HCS lets only
/// administrators create VMs, and the daemon, not a service, makes the
/// calls (an elevated daemon, as the README's Windows section says).
pub const NOT_ELEVATED: &str = "the Hyper-V backend creates its VM through the Host Compute Service, which only \
     administrators may use: run `berth start` from an elevated terminal (\"Run as administrator\"; the daemon it \
     starts keeps that token), or use the WSL 2 backend, which needs no administrator rights";

/// The elevation check, with its answer as the user reads it.
pub fn require_elevation(elevated: std::io::Result<bool>) -> anyhow::Result<()> {
    match elevated {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!(NOT_ELEVATED),
        Err(err) => anyhow::bail!("could not tell whether Berth runs as administrator ({err}); {NOT_ELEVATED}"),
    }
}

/// HCS runs guests of the host's own architecture: there is no emulation.
pub fn check_arch(arch: crate::vm::arch::GuestArch) -> anyhow::Result<()> {
    if !arch.is_host() {
        anyhow::bail!(
            "vm.arch = \"{}\": Hyper-V runs guests of this {} host's architecture only; unset vm.arch \
             with vm.hypervisor = \"hcs\"",
            arch.name(),
            std::env::consts::ARCH
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_foreign_guest_is_refused() {
        use crate::vm::arch::GuestArch;
        let host = GuestArch::default_for_host();
        assert!(super::check_arch(host).is_ok());
        let foreign = GuestArch::ALL.iter().copied().find(|a| !a.is_host()).expect("two architectures");
        let refused = super::check_arch(foreign).unwrap_err().to_string();
        assert!(refused.contains("Hyper-V runs guests of this") && refused.contains(foreign.name()), "{refused}");
    }

    #[test]
    fn a_daemon_that_is_not_elevated_is_told_what_to_do() {
        assert!(super::require_elevation(Ok(true)).is_ok());
        let refused = super::require_elevation(Ok(false)).unwrap_err().to_string();
        assert!(refused.contains("Run as administrator") && refused.contains("WSL 2 backend"), "{refused}");
        let unknown = super::require_elevation(Err(std::io::Error::other("no token"))).unwrap_err().to_string();
        assert!(unknown.starts_with("could not tell whether Berth runs as administrator (no token); "), "{unknown}");
    }
}
