//! The machine QEMU emulates for each guest architecture, and the guest's
//! devices as data: x86_64 boots `-M microvm` with virtio-mmio devices, arm64
//! `-M virt` with virtio-pci ones (the device model Virtualization.framework
//! presents, so the same guest kernel serves both). The device list is the
//! same on both; only its transport and the machine's own quirks differ.

use anyhow::{bail, Result};

use super::arch::GuestArch;
use super::qemu::Accel;

/// A QEMU machine type Berth boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86_64's minimal machine: no PCI, no firmware, PVH kernel entry.
    Microvm,
    /// arm64's generic machine: a device tree, GIC, PL011, an ECAM PCI host.
    Virt,
}

/// How virtio devices attach to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Mmio,
    Pci,
}

impl Machine {
    pub fn for_arch(arch: GuestArch) -> Machine {
        match arch {
            GuestArch::X86_64 => Machine::Microvm,
            GuestArch::Aarch64 => Machine::Virt,
        }
    }

    /// The QEMU program for this machine, and the Debian package that has it.
    pub fn program(self) -> (&'static str, &'static str) {
        match self {
            Machine::Microvm => ("qemu-system-x86_64", "qemu-system-x86"),
            Machine::Virt => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// `-M`'s value, before the memory backend. `tsc_known`: the guest is
    /// told the TSC's rate ([`Machine::kernel_args`]).
    pub fn machine_arg(self, tsc_known: bool) -> &'static str {
        match self {
            // QEMU resets the PIT into a square wave that nobody reads: the
            // guest uses the LAPIC timer and masks IRQ 0, and its 6.1 kernel
            // does not stop the PIT (later upstream kernels do), but QEMU's
            // main loop still wakes at each edge, 36 times a second: half of
            // an idle VM's CPU under TCG (1.70% -> 0.83% of a host core in a
            // 30 s probe; tests/bench/vm-idle.sh 60: 0.78-0.82%). The guest
            // needs the PIT only to calibrate the TSC, and with its rate
            // given it calibrates the LAPIC timer against the TSC instead.
            Machine::Microvm if tsc_known => "microvm,pit=off",
            Machine::Microvm => "microvm",
            // `max`: GICv3 under TCG, and under KVM whatever the host's GIC
            // is (most arm64 servers have no GICv2, virt's default).
            Machine::Virt => "virt,gic-version=max",
        }
    }

    pub fn bus(self) -> Bus {
        match self {
            Machine::Microvm => Bus::Mmio,
            Machine::Virt => Bus::Pci,
        }
    }

    /// Whether the guest must be told the host's TSC rate (microvm has no
    /// timer to calibrate it against; arm64 has an architected timer).
    pub fn wants_tsc_khz(self) -> bool {
        self == Machine::Microvm
    }

    /// The kernel arguments this machine needs, before the boot contract.
    pub fn kernel_args(self, tsc_khz: Option<u64>) -> Vec<String> {
        match self {
            Machine::Microvm => {
                let mut args = vec![
                    "console=ttyS0".to_string(),
                    "quiet".into(),
                    // QEMU runs with -no-reboot: a reboot request (the agent's power-off,
                    // or a panic) ends the VM process. Triple-fault reset needs no device.
                    "reboot=t".into(),
                    "panic=-1".into(),
                    "8250.nr_uarts=1".into(),
                    "cryptomgr.notests".into(),
                    // QEMU's vCPUs read one TSC derived from the host's clock, but under
                    // TCG the kernel's sync check sees them skew and falls back to the
                    // jiffies clocksource, which needs the periodic tick: 250 wakeups a
                    // second per vCPU, 8% of a host core for an idle VM. Trusted, the
                    // TSC lets idle vCPUs stop their tick (1% idle).
                    "tsc=reliable".into(),
                ];
                if let Some(khz) = tsc_khz {
                    // microvm has no HPET/PM timer to calibrate the TSC against.
                    args.push(format!("tsc_early_khz={khz}"));
                }
                args
            }
            // The kernel console on the board's PL011. Reset and power-off go
            // through PSCI, which QEMU's -no-reboot turns into its exit.
            Machine::Virt => ["console=ttyAMA0", "quiet", "panic=-1", "cryptomgr.notests"].map(String::from).to_vec(),
        }
    }
}

/// How the guest CPU is run: hardware virtualisation runs only the host's
/// own architecture, so a foreign guest is emulated (TCG) unless the user
/// asked for an accelerator, which is then an error rather than a QEMU
/// failure after the daemon started. `requested` None is `auto`.
pub fn accel_for(arch: GuestArch, requested: Option<Accel>, detect: impl FnOnce() -> Accel) -> Result<Accel> {
    match requested {
        None if arch.is_host() => Ok(detect()),
        None | Some(Accel::Tcg) => Ok(Accel::Tcg),
        Some(accel) if arch.is_host() => Ok(accel),
        Some(accel) => bail!(
            "BERTH_ACCEL={} cannot run an {} guest on this {} host: hardware virtualisation runs only the \
             host's own architecture (use BERTH_ACCEL=tcg or auto)",
            accel.name(),
            arch.name(),
            std::env::consts::ARCH
        ),
    }
}

/// The CPU model for that accelerator on `machine`.
///
/// An emulated x86 guest is told it has no ERMS ("fast `rep movsb`"): with
/// it, the guest kernel's copies to and from user memory and glibc's large
/// memcpy use `rep movsb`, which TCG runs one byte per emulated iteration;
/// without it they move eight bytes an iteration (`rep movsq`) or use vector
/// loops. Measured through a Berth VM here (tests/bench/ports.sh, 256 MiB,
/// one run each): a raw vsock stream host → VM 0.32 → 0.40 Gbit/s and VM →
/// host 0.5 → 0.9, a published port 0.25 → 0.45 in and 0.17 → 0.33 out.
pub fn cpu_args(machine: Machine, accel: Accel) -> Result<[&'static str; 4]> {
    match (accel, machine) {
        (Accel::Kvm, _) => Ok(["-accel", "kvm", "-cpu", "host"]),
        (Accel::Tcg, Machine::Microvm) => Ok(["-accel", "tcg,thread=multi", "-cpu", "max,-erms"]),
        (Accel::Tcg, Machine::Virt) => Ok(["-accel", "tcg,thread=multi", "-cpu", "max"]),
        (other, _) => bail!("accelerator {} is not available to QEMU on Linux (use kvm or tcg)", other.name()),
    }
}

/// A guest device, whatever bus it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioDevice {
    /// The virtio-serial controller the agent's console hangs off.
    Serial,
    /// A console port on [`VirtioDevice::Serial`] (not a bus device itself).
    Console,
    Rng,
    Balloon,
    Blk,
    Net,
    /// In-kernel vhost-vsock.
    Vsock,
    /// vhost-user-vsock (vhost-device-vsock).
    VhostUserVsock,
    /// vhost-user-fs (virtiofsd).
    VhostUserFs,
}

impl VirtioDevice {
    /// QEMU's driver name on `bus`: every virtio transport device is
    /// `<device>-device` on virtio-mmio and `<device>-pci` on PCI.
    pub fn driver(self, bus: Bus) -> String {
        let base = match self {
            VirtioDevice::Console => return "virtconsole".into(),
            VirtioDevice::Serial => "virtio-serial",
            VirtioDevice::Rng => "virtio-rng",
            VirtioDevice::Balloon => "virtio-balloon",
            VirtioDevice::Blk => "virtio-blk",
            VirtioDevice::Net => "virtio-net",
            VirtioDevice::Vsock => "vhost-vsock",
            VirtioDevice::VhostUserVsock => "vhost-user-vsock",
            VirtioDevice::VhostUserFs => "vhost-user-fs",
        };
        match bus {
            Bus::Mmio => format!("{base}-device"),
            Bus::Pci => format!("{base}-pci"),
        }
    }
}

/// One `-device` of the plan: the device and its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDevice {
    pub device: VirtioDevice,
    pub props: Vec<String>,
}

impl PlannedDevice {
    pub fn new(device: VirtioDevice, props: &[&str]) -> PlannedDevice {
        PlannedDevice { device, props: props.iter().map(|p| p.to_string()).collect() }
    }

    /// `-device`'s value on `bus`.
    pub fn render(&self, bus: Bus) -> String {
        // A PCI NIC loads a boot ROM by default, which no guest here uses
        // (the kernel is loaded directly) and which Debian's qemu-system-arm
        // lacks, so QEMU would refuse to start.
        let bus_props: &[&str] = match (self.device, bus) {
            (VirtioDevice::Net, Bus::Pci) => &["romfile="],
            _ => &[],
        };
        std::iter::once(self.device.driver(bus))
            .chain(self.props.iter().cloned())
            .chain(bus_props.iter().map(|p| p.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_arch_has_its_machine() {
        assert_eq!(Machine::for_arch(GuestArch::X86_64), Machine::Microvm);
        assert_eq!(Machine::for_arch(GuestArch::Aarch64), Machine::Virt);
        assert_eq!(Machine::Virt.program(), ("qemu-system-aarch64", "qemu-system-arm"));
        assert_eq!(Machine::Virt.bus(), Bus::Pci);
        assert_eq!(Machine::Microvm.bus(), Bus::Mmio);
    }

    #[test]
    fn drivers_follow_the_bus() {
        assert_eq!(VirtioDevice::Blk.driver(Bus::Pci), "virtio-blk-pci");
        assert_eq!(VirtioDevice::Blk.driver(Bus::Mmio), "virtio-blk-device");
        assert_eq!(VirtioDevice::VhostUserFs.driver(Bus::Pci), "vhost-user-fs-pci");
        assert_eq!(VirtioDevice::Vsock.driver(Bus::Pci), "vhost-vsock-pci");
        assert_eq!(VirtioDevice::Console.driver(Bus::Pci), "virtconsole", "a port, not a bus device");
        let net = PlannedDevice::new(VirtioDevice::Net, &["netdev=net0"]);
        assert_eq!(net.render(Bus::Pci), "virtio-net-pci,netdev=net0,romfile=");
        assert_eq!(net.render(Bus::Mmio), "virtio-net-device,netdev=net0", "romfile is a PCI property");
    }

    #[test]
    fn virt_kernel_args_use_the_pl011_and_no_x86_quirks() {
        let args = Machine::Virt.kernel_args(Some(2_000_000)).join(" ");
        assert!(args.starts_with("console=ttyAMA0 "), "{args}");
        for x86_only in ["reboot=t", "8250.nr_uarts", "tsc"] {
            assert!(!args.contains(x86_only), "{x86_only} in {args}");
        }
        assert!(!Machine::Virt.wants_tsc_khz());
        assert!(Machine::Microvm.kernel_args(Some(5)).contains(&"tsc_early_khz=5".to_string()));
    }

    #[test]
    fn a_foreign_guest_is_emulated() {
        let host = GuestArch::default_for_host();
        let foreign = GuestArch::ALL.into_iter().find(|a| *a != host).unwrap();
        assert_eq!(accel_for(host, None, || Accel::Kvm).unwrap(), Accel::Kvm);
        assert_eq!(accel_for(foreign, None, || Accel::Kvm).unwrap(), Accel::Tcg, "auto never picks KVM for it");
        assert_eq!(accel_for(foreign, Some(Accel::Tcg), || Accel::Kvm).unwrap(), Accel::Tcg);
        let err = accel_for(foreign, Some(Accel::Kvm), || Accel::Kvm).unwrap_err().to_string();
        assert!(err.contains("BERTH_ACCEL=kvm cannot run") && err.contains(foreign.name()), "{err}");
        assert_eq!(accel_for(host, Some(Accel::Tcg), || Accel::Kvm).unwrap(), Accel::Tcg);
    }

    #[test]
    fn cpu_models() {
        assert_eq!(cpu_args(Machine::Microvm, Accel::Kvm).unwrap(), ["-accel", "kvm", "-cpu", "host"]);
        assert_eq!(
            cpu_args(Machine::Microvm, Accel::Tcg).unwrap(),
            ["-accel", "tcg,thread=multi", "-cpu", "max,-erms"]
        );
        assert_eq!(cpu_args(Machine::Virt, Accel::Tcg).unwrap(), ["-accel", "tcg,thread=multi", "-cpu", "max"]);
        assert!(cpu_args(Machine::Microvm, Accel::Hvf).unwrap_err().to_string().contains("hvf"));
    }
}
