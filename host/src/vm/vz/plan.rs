//! The Virtualization.framework VM as plain data: everything the VM helper
//! process (framework.rs) turns into a VZVirtualMachineConfiguration, decided
//! here so that it is unit-tested on every host. The daemon writes the plan
//! as JSON into the run directory; the helper reads it back.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vm::{GuestFacts, GuestNetwork, NetConfig, SharesVia, VmSpec};

/// virtio-fs tags are at most 36 bytes (the device's config space field).
pub const MAX_TAG_BYTES: usize = 36;

/// The tag the Rosetta share is mounted by (Apple's containerization uses the same).
pub const ROSETTA_TAG: &str = "rosetta";

/// VZ NAT's default subnet (vmnet's shared mode, the host is `bridge100`
/// at .1 and runs DHCP and a DNS forwarder there). The subnet can be
/// changed on the Mac (`com.apple.vmnet` Shared_Net_Address), which is why
/// the guest leases its address rather than being given one.
const NAT_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 64, 1);

/// What the helper learns from the framework at run time and the plan is
/// clamped to (VZVirtualMachineConfiguration's minimum/maximum allowed values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLimits {
    pub min_cpus: u32,
    pub max_cpus: u32,
    pub min_memory_bytes: u64,
    pub max_memory_bytes: u64,
}

/// The whole VM, as the helper builds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VzPlan {
    pub kernel: PathBuf,
    /// This boot's initramfs (with the agent's key).
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// The raw data disk, the first virtio-blk device (`/dev/vda`).
    pub disk: PathBuf,
    pub shares: Vec<VzShare>,
    pub network: VzNetwork,
    /// Serial ports in device order: the first is the guest's hvc0.
    pub consoles: Vec<VzConsole>,
    /// Whether to attach Rosetta (tagged [`ROSETTA_TAG`]) when the host has it installed.
    pub rosetta: bool,
    pub vsock: VsockRelayPlan,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VzShare {
    pub tag: String,
    pub host_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VzNetwork {
    /// A locally administered unicast MAC: stable for a Berth home, so VZ's
    /// DHCP server keeps handing the guest the same lease.
    pub mac: [u8; 6],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VzConsole {
    pub guest_device: String,
    pub log: PathBuf,
}

/// What the helper relays between unix sockets and the guest's vsock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsockRelayPlan {
    /// Where the daemon sends `CONNECT <port>\n` (as to vhost-device-vsock).
    pub uds: PathBuf,
    /// Host ports the guest dials; each accepted connection is spliced to `<uds>_<port>`.
    pub guest_dials: Vec<u32>,
}

impl VzNetwork {
    pub fn mac_string(&self) -> String {
        self.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
    }
}

/// A stable MAC for a Berth home (keyed by its run directory, which each
/// home has one of): six bytes of its hash, with the locally-administered
/// bit set and the multicast bit clear.
pub fn derive_mac(run_dir: &Path) -> [u8; 6] {
    let digest = Sha256::digest(run_dir.as_os_str().as_encoded_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] | 0x02) & !0x01;
    mac
}

/// The guest VZ boots: the data disk as the first virtio-blk device, shares
/// over virtio-fs, its address leased by DHCP from VZ's NAT (bootpd on the
/// Mac, which keeps a lease per MAC: [`derive_mac`] keeps it stable). The
/// host alias is the host's bridge address: services the host binds to all
/// interfaces are reachable there, loopback-only ones not.
pub fn guest_facts() -> GuestFacts {
    GuestFacts {
        engine_data_dir: berth_agent_proto::boot::GUEST_DATA_DIR.into(),
        share_transport: Some(SharesVia::Virtiofs),
        data_disk: Some("/dev/vda".into()),
        network: Some(GuestNetwork { ipv4: NetConfig::Dhcp, host_alias: NAT_GATEWAY }),
        // VZ's file server runs in the user's process: the Mac decides
        // access as for that user, and what containers create is theirs.
        share_access: berth_agent_proto::boot::ShareAccess::Host,
        dedicated_memory: true,
        own_clock: true,
        agent_log_device: crate::vm::LogDevice::default(),
    }
}

/// Checks that `header` (the kernel file's first 64 bytes) is an
/// uncompressed arm64 `Image`, the only arm64 kernel VZ's Linux boot loader
/// boots: `ARM\x64` at 0x38 (vfkit checks the same); a gzip or EFI zboot
/// kernel fails late, with a less helpful message.
#[cfg(any(test, target_arch = "aarch64"))]
pub fn check_arm64_image(header: &[u8]) -> Result<()> {
    if header.starts_with(&[0x1f, 0x8b]) {
        bail!("the guest kernel is gzip-compressed; Virtualization.framework boots only an uncompressed arm64 Image");
    }
    if header.len() >= 8 && &header[4..8] == b"zimg" {
        bail!(
            "the guest kernel is an EFI zboot image; Virtualization.framework boots only an uncompressed arm64 Image"
        );
    }
    if header.get(0x38..0x3c) != Some(&b"ARM\x64"[..]) {
        bail!("the guest kernel is not an arm64 Linux Image (no ARM\\x64 magic at offset 0x38)");
    }
    Ok(())
}

/// Whether VZ accepts `tag` for a virtio-fs device; the framework's own
/// `validateTag` runs too, this catches it before a VM is built.
pub fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() {
        bail!("a shared directory's tag is empty");
    }
    if tag.len() > MAX_TAG_BYTES {
        bail!("the shared directory tag {tag:?} is longer than {MAX_TAG_BYTES} bytes");
    }
    if !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        bail!("the shared directory tag {tag:?} has characters other than letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// The kernel command line: the kernel's console on `console`, the boot
/// contract after it (with the Rosetta share's tag when one is asked for).
pub fn kernel_cmdline(spec: &VmSpec, facts: &GuestFacts, console: &str, rosetta: bool, extra: Option<&str>) -> String {
    let mut args = vec![
        format!("console={console}"),
        "quiet".to_string(),
        // A panic reboots, and a guest reboot stops a VZ VM: the helper exits.
        "panic=-1".into(),
        "cryptomgr.notests".into(),
    ];
    let mut params = crate::vm::boot_params(spec, facts);
    params.rosetta = rosetta.then(|| ROSETTA_TAG.to_string());
    args.extend(params.encode());
    args.extend(extra.map(str::to_string));
    args.join(" ")
}

/// Clamps CPUs into what VZ allows; memory too, rounded down to whole MiB
/// (VZ wants a multiple of 1 MiB).
pub fn clamp_resources(cpus: u32, memory_bytes: u64, limits: &HostLimits) -> (u32, u64) {
    const MIB: u64 = 1 << 20;
    let cpus = cpus.clamp(limits.min_cpus.max(1), limits.max_cpus.max(limits.min_cpus).max(1));
    let min_memory = limits.min_memory_bytes.div_ceil(MIB) * MIB;
    let max_memory = (limits.max_memory_bytes / MIB * MIB).max(min_memory);
    (cpus, (memory_bytes / MIB * MIB).clamp(min_memory, max_memory))
}

impl VzPlan {
    /// The plan for `spec`; `initramfs` is this boot's (keyed) initramfs,
    /// `rosetta` says whether to ask for Rosetta.
    pub fn from_spec(spec: &VmSpec, kernel: &Path, initramfs: &Path, rosetta: bool) -> Result<VzPlan> {
        for share in &spec.shares {
            check_tag(&share.tag)?;
            if share.tag == ROSETTA_TAG {
                bail!("the shared directory tag {ROSETTA_TAG:?} is reserved for Rosetta");
            }
        }
        let mut tags: Vec<&str> = spec.shares.iter().map(|s| s.tag.as_str()).collect();
        tags.sort_unstable();
        if let Some(pair) = tags.windows(2).find(|w| w[0] == w[1]) {
            bail!("two shared directories have the tag {:?}", pair[0]);
        }
        let mac = derive_mac(&spec.run_dir);
        let facts = guest_facts();
        // The agent writes its log to /dev/hvc0, so the agent log is the
        // first console port and the kernel's console the second.
        let consoles = vec![
            VzConsole { guest_device: "hvc0".into(), log: spec.agent_log.clone() },
            VzConsole { guest_device: "hvc1".into(), log: spec.console_log.clone() },
        ];
        let extra = std::env::var("BERTH_KERNEL_ARGS").ok();
        Ok(VzPlan {
            kernel: kernel.to_path_buf(),
            initramfs: initramfs.to_path_buf(),
            cmdline: kernel_cmdline(spec, &facts, &consoles[1].guest_device, rosetta, extra.as_deref()),
            cpus: spec.cpus,
            memory_bytes: spec.memory_mib << 20,
            disk: spec.disk.clone(),
            shares: spec
                .shares
                .iter()
                .map(|s| VzShare { tag: s.tag.clone(), host_path: s.host_path.clone() })
                .collect(),
            network: VzNetwork { mac },
            consoles,
            rosetta,
            vsock: VsockRelayPlan {
                uds: agent_socket(spec),
                guest_dials: vec![
                    berth_agent_proto::AGENT_READY_VSOCK_PORT,
                    berth_agent_proto::host_services::HOST_SERVICES_VSOCK_PORT,
                ],
            },
        })
    }

    /// The plan with CPUs and memory clamped to what this host's VZ allows.
    pub fn clamped(mut self, limits: &HostLimits) -> VzPlan {
        (self.cpus, self.memory_bytes) = clamp_resources(self.cpus, self.memory_bytes, limits);
        self
    }
}

/// Where the helper serves hybrid vsock (the path the daemon's transport dials).
pub fn agent_socket(spec: &VmSpec) -> PathBuf {
    spec.run_dir.join("agent.vsock")
}

/// Where the plan is written for the helper.
#[cfg(target_os = "macos")]
pub fn plan_file(spec: &VmSpec) -> PathBuf {
    spec.run_dir.join("vz-plan.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{test_spec, Share};

    fn plan(spec: &VmSpec) -> VzPlan {
        VzPlan::from_spec(spec, Path::new("/a/Image"), Path::new("/h/run/i.cpio"), true).unwrap()
    }

    #[test]
    fn devices_and_paths_follow_the_spec() {
        let spec = test_spec();
        let plan = plan(&spec);
        assert_eq!(plan.kernel, Path::new("/a/Image"));
        assert_eq!(plan.initramfs, Path::new("/h/run/i.cpio"));
        assert_eq!(plan.disk, spec.disk);
        assert_eq!(plan.shares, vec![VzShare { tag: "share0".into(), host_path: "/home/me".into() }]);
        assert_eq!(
            plan.consoles,
            vec![
                VzConsole { guest_device: "hvc0".into(), log: spec.agent_log.clone() },
                VzConsole { guest_device: "hvc1".into(), log: spec.console_log.clone() },
            ]
        );
        assert_eq!(plan.vsock.uds, Path::new("/h/run/agent.vsock"));
        assert_eq!(plan.vsock.guest_dials, vec![1025, berth_agent_proto::host_services::HOST_SERVICES_VSOCK_PORT]);
        assert!(plan.rosetta);
        assert_eq!((plan.cpus, plan.memory_bytes), (1, 512 << 20));
        assert_eq!(plan.network.mac, derive_mac(&spec.run_dir));
    }

    #[test]
    fn the_command_line_is_for_vz_and_carries_the_boot_contract() {
        let plan = plan(&test_spec());
        let words: Vec<&str> = plan.cmdline.split(' ').collect();
        assert_eq!(words[0], "console=hvc1");
        for absent in ["ttyS0", "tsc_early_khz", "virtio_mmio", "reboot=t"] {
            assert!(!plan.cmdline.contains(absent), "{absent} in {}", plan.cmdline);
        }
        let params = berth_agent_proto::boot::BootParams::parse(&plan.cmdline).unwrap();
        assert_eq!(params.disk.as_deref(), Some("/dev/vda"));
        assert_eq!(params.shares.len(), 1);
        assert_eq!(params.shares[0].tag, "share0");
        assert_eq!(params.net, Some(NetConfig::Dhcp), "VZ's NAT leases the address");
        assert_eq!(params.host_alias, Some(NAT_GATEWAY));
        assert_eq!(params.rosetta.as_deref(), Some(ROSETTA_TAG));
    }

    #[test]
    fn without_rosetta_the_guest_is_not_told_of_a_share() {
        let plan = VzPlan::from_spec(&test_spec(), Path::new("/k"), Path::new("/i"), false).unwrap();
        assert!(!plan.rosetta);
        let params = berth_agent_proto::boot::BootParams::parse(&plan.cmdline).unwrap();
        assert_eq!(params.rosetta, None, "{}", plan.cmdline);
    }

    #[test]
    fn tags_are_checked() {
        assert!(check_tag("home-0_x.y").is_ok());
        assert!(check_tag(&"t".repeat(36)).is_ok());
        assert!(check_tag(&"t".repeat(37)).unwrap_err().to_string().contains("longer than 36 bytes"));
        assert!(check_tag("").is_err());
        assert!(check_tag("a b").is_err());
        assert!(check_tag("a,b").is_err());

        let share = |tag: &str| Share { tag: tag.into(), host_path: "/x".into(), guest_path: "/x".into() };
        let build = |shares| {
            let spec = VmSpec { shares, ..test_spec() };
            VzPlan::from_spec(&spec, Path::new("/k"), Path::new("/i"), false)
        };
        let err = build(vec![share("a"), share("b"), share("a")]).unwrap_err().to_string();
        assert!(err.contains("two shared directories have the tag \"a\""), "{err}");
        assert!(build(vec![share(ROSETTA_TAG)]).unwrap_err().to_string().contains("reserved for Rosetta"));
        assert!(build(vec![share(&"t".repeat(40))]).is_err());
    }

    #[test]
    fn the_mac_is_stable_locally_administered_and_unicast() {
        let a = derive_mac(Path::new("/Users/a/.berth"));
        assert_eq!(a, derive_mac(Path::new("/Users/a/.berth")));
        assert_ne!(a, derive_mac(Path::new("/Users/b/.berth")));
        for home in ["/", "/x", "/Users/a/.berth", "/Users/b/.berth"] {
            let mac = derive_mac(Path::new(home));
            assert_eq!(mac[0] & 0x03, 0x02, "{home}: {:02x}", mac[0]);
        }
        let text = VzNetwork { mac: [0x02, 0xab, 0, 1, 0x10, 0xff] }.mac_string();
        assert_eq!(text, "02:ab:00:01:10:ff");
    }

    #[test]
    fn resources_are_clamped_to_the_hosts_limits() {
        let limits =
            HostLimits { min_cpus: 1, max_cpus: 8, min_memory_bytes: 128 << 20, max_memory_bytes: (16 << 30) + 12345 };
        assert_eq!(clamp_resources(4, 2 << 30, &limits), (4, 2 << 30));
        assert_eq!(clamp_resources(0, 1 << 20, &limits), (1, 128 << 20));
        assert_eq!(clamp_resources(64, 1 << 40, &limits), (8, 16 << 30));
        // Not a whole MiB: rounded down.
        assert_eq!(clamp_resources(2, (1 << 30) + 5, &limits).1, 1 << 30);
        // A minimum that is not a MiB multiple rounds up, so the result stays allowed.
        let odd = HostLimits { min_memory_bytes: (1 << 20) + 1, ..limits };
        assert_eq!(clamp_resources(1, 0, &odd).1, 2 << 20);
        let plan = plan(&VmSpec { cpus: 32, ..test_spec() }).clamped(&limits);
        assert_eq!(plan.cpus, 8);
    }

    #[test]
    fn only_an_uncompressed_arm64_image_is_accepted() {
        let mut image = vec![0u8; 64];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert!(check_arm64_image(&image).is_ok());
        let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
        assert!(check_arm64_image(&gzip).unwrap_err().to_string().contains("gzip-compressed"));
        let mut zboot = vec![0u8; 64];
        zboot[4..8].copy_from_slice(b"zimg");
        assert!(check_arm64_image(&zboot).unwrap_err().to_string().contains("EFI zboot"));
        assert!(check_arm64_image(&[0u8; 64]).unwrap_err().to_string().contains("not an arm64 Linux Image"));
        assert!(check_arm64_image(&[]).is_err());
    }

    #[test]
    fn the_plan_round_trips_through_json() {
        let plan = plan(&test_spec());
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<VzPlan>(&text).unwrap(), plan);
    }
}
