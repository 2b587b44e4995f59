//! The HCS compute system document (schema 2.1) of a Berth VM, built as
//! plain data from a [`VmSpec`] and what the Windows host supplies: Berth's
//! own kernel and initramfs booted directly (LinuxKernelDirect), the data
//! disk as a VHDX on SCSI (`/dev/sda`), COM1 (kernel console) and COM2
//! (agent log) on named pipes the daemon serves, Hyper-V socket descriptors
//! that let the user's daemon reach the agent, Plan 9 shares, and an HCN
//! NAT endpoint. Field names are HCS's (hcsshim's schema2 Go structs, WSL's
//! hcs_schema.h); computecore.rs hands the JSON to HcsCreateComputeSystem.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::platform::api_address::PipeName;
use crate::platform::hvsock_ids::vsock_service_name;
use crate::platform::sddl::{hvsocket_descriptor, Sid};
use crate::vm::{GuestFacts, GuestNetwork, LogDevice, NetConfig, SharesVia, VmSpec};
use berth_agent_proto::boot::StaticIpv4;

/// HCS's Plan 9 server port in the guest (hcsshim `vmutils.Plan9Port`).
pub const PLAN9_PORT: u32 = 564;

/// Plan9ShareFlags (hcsshim schema2/plan9_share_flags.go).
pub const PLAN9_READ_ONLY: u32 = 0x1;
/// Linux owners and modes kept in NTFS extended attributes, as WSL does:
/// without it every file is root's and chmod fails.
pub const PLAN9_LINUX_METADATA: u32 = 0x4;

/// The UARTs, by number (COM1 is 0, ttyS0 in the guest): the kernel's
/// console on one, the agent's log on the other, each copied by the daemon
/// from its named pipe into its log file (com_pipes.rs).
pub const CONSOLE_UART: u8 = 0;
pub const AGENT_LOG_UART: u8 = 1;

/// Who made the compute system, as `hcsdiag list` shows it.
const OWNER: &str = "berth";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputeSystem {
    pub owner: String,
    pub schema_version: SchemaVersion,
    /// The VM ends with the daemon's handle: a crashed daemon leaks no VM.
    pub should_terminate_on_last_handle_closed: bool,
    pub virtual_machine: VirtualMachine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SchemaVersion {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualMachine {
    /// A guest reboot (the agent's power-off, a panic) stops the VM.
    pub stop_on_reset: bool,
    pub chipset: Chipset,
    pub compute_topology: Topology,
    pub devices: Devices,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Chipset {
    pub linux_kernel_direct: LinuxKernelDirect,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinuxKernelDirect {
    pub kernel_file_path: String,
    pub init_rd_path: String,
    pub kernel_cmd_line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Topology {
    pub memory: Memory,
    pub processor: Processor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(rename = "SizeInMB")]
    pub size_in_mb: u64,
    /// Backed by the host's pageable memory, as WSL's VM: unused guest
    /// memory costs the host nothing.
    #[serde(rename = "AllowOvercommit")]
    pub allow_overcommit: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Processor {
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Devices {
    pub scsi: BTreeMap<String, Scsi>,
    pub hv_socket: HvSocket,
    /// "0" is COM1 (ttyS0), "1" COM2 (ttyS1).
    pub com_ports: BTreeMap<String, ComPort>,
    #[serde(rename = "Plan9")]
    pub plan9: Plan9,
    pub network_adapters: BTreeMap<String, NetworkAdapter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Scsi {
    pub attachments: BTreeMap<String, Attachment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    #[serde(rename = "Type")]
    pub kind: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvSocket {
    pub hv_socket_config: HvSocketSystemConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvSocketSystemConfig {
    pub default_bind_security_descriptor: String,
    pub default_connect_security_descriptor: String,
    /// Keyed by service GUID: the ports the guest dials on the host.
    pub service_table: BTreeMap<String, HvSocketServiceConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvSocketServiceConfig {
    pub bind_security_descriptor: String,
    pub connect_security_descriptor: String,
    /// The daemon listens on the VM's id, but a wildcard bind costs nothing
    /// here and is what hcsshim allows for its own services.
    pub allow_wildcard_binds: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComPort {
    pub named_pipe: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Plan9 {
    pub shares: Vec<Plan9Share>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Plan9Share {
    pub name: String,
    /// The `aname` the guest mounts it by.
    pub access_name: String,
    pub path: String,
    pub port: u32,
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAdapter {
    pub endpoint_id: String,
    pub mac_address: String,
}

/// The HCN endpoint the VM's NIC is attached to, as HCN reports it
/// (computenetwork.dll; the daemon creates it on a NAT network).
#[derive(Debug, Clone, PartialEq)]
pub struct HcnEndpoint {
    pub id: uuid::Uuid,
    /// HCS's spelling: `00-15-5D-12-34-56`.
    pub mac_address: String,
    pub ipv4: StaticIpv4,
}

/// What the Windows host supplies besides the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct HcsHost {
    pub kernel: String,
    /// This boot's initramfs (with the agent's key, boot_key.rs).
    pub initramfs: String,
    /// The data disk, a VHDX (HCS attaches no raw images).
    pub data_disk_vhdx: String,
    /// The user whose daemon talks to the VM.
    pub user: Sid,
    pub endpoint: HcnEndpoint,
}

/// The guest HCS boots: SCSI disk, the endpoint's static address (HCN
/// assigns it; the agent has no DHCP client), the gateway as the host's
/// address. Shares: see [`HcsDocument::from_spec`]. The network is HCN's
/// answer, known once the endpoint exists: `None` before the start
/// (`VmBackend::facts`), the endpoint's after it (`RunningVm::started_facts`).
pub fn guest_facts(endpoint: Option<&HcnEndpoint>) -> GuestFacts {
    GuestFacts {
        engine_data_dir: berth_agent_proto::boot::GUEST_DATA_DIR.into(),
        // The agent dials PLAN9_PORT and attaches each share by its tag
        // (plan9_shares' AccessName), as it mounts 9P shares on QEMU.
        share_transport: Some(SharesVia::Plan9AttachByTag { port: PLAN9_PORT }),
        share_access: berth_agent_proto::boot::ShareAccess::Host,
        data_disk: Some("/dev/sda".into()),
        network: endpoint.map(|e| GuestNetwork { ipv4: NetConfig::Static(e.ipv4), host_alias: e.ipv4.gateway }),
        dedicated_memory: true,
        own_clock: true,
        // No virtio console on Hyper-V: the agent logs to a COM port.
        agent_log_device: LogDevice::Serial(AGENT_LOG_UART),
    }
}

/// The kernel's arguments on Hyper-V: the console on COM1, two UARTs only
/// (probing the other legacy ports costs boot time), no PCI (the devices
/// are VMBus's), and hv_sock as the vsock transport: the kernel takes one
/// guest-to-host transport and virtio's would register first (hcsshim and
/// OpenVMM blacklist it the same way).
pub fn kernel_cmdline(spec: &VmSpec, facts: &GuestFacts) -> String {
    let console = format!("console={},115200", LogDevice::Serial(CONSOLE_UART).name());
    let mut args: Vec<String> = [
        console.as_str(),
        "8250.nr_uarts=2",
        "quiet",
        "panic=-1",
        "pci=off",
        "initcall_blacklist=virtio_vsock_init",
        "cryptomgr.notests",
    ]
    .map(String::from)
    .into();
    args.extend(crate::vm::boot_params(spec, facts).encode());
    args.join(" ")
}

/// The named pipes the COM ports are connected to, one pair per Berth home
/// (named after its run directory, as the API's pipe is after the home).
pub fn com_pipes(spec: &VmSpec) -> (PipeName, PipeName) {
    let suffix = crate::platform::api_address::short_digest(&spec.run_dir);
    let pipe =
        |what: &str| PipeName::new(&format!("berth_vm-{suffix}-{what}")).expect("a short name without backslashes");
    (pipe("console"), pipe("agentlog"))
}

/// The document's COM ports: the console's, and the agent's log's, the
/// port [`guest_facts`] names to the agent (tested together in doc_tests).
fn com_ports(console: &PipeName, agent_log: &PipeName) -> BTreeMap<String, ComPort> {
    BTreeMap::from([
        (CONSOLE_UART.to_string(), ComPort { named_pipe: console.path() }),
        (AGENT_LOG_UART.to_string(), ComPort { named_pipe: agent_log.path() }),
    ])
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DocumentError {
    #[error("two shared directories have the tag {0:?}")]
    DuplicateTag(String),
}

pub struct HcsDocument;

impl HcsDocument {
    /// The compute system for `spec` on `host`. The shares are in the
    /// document, on HCS's Plan 9 server from the start: the agent mounts
    /// them at boot (the boot contract names port 564 and each tag), before
    /// the daemon could add them with [`add_plan9_share`].
    pub fn from_spec(spec: &VmSpec, host: &HcsHost) -> Result<ComputeSystem, DocumentError> {
        let shares = plan9_shares(spec)?;
        let facts = guest_facts(Some(&host.endpoint));
        let descriptor = hvsocket_descriptor(&host.user);
        let service = HvSocketServiceConfig {
            bind_security_descriptor: descriptor.clone(),
            connect_security_descriptor: descriptor.clone(),
            allow_wildcard_binds: true,
        };
        let guest_dials =
            [berth_agent_proto::AGENT_READY_VSOCK_PORT, berth_agent_proto::host_services::HOST_SERVICES_VSOCK_PORT];
        let (console, agent_log) = com_pipes(spec);
        let disk = Attachment { kind: "VirtualDisk".into(), path: host.data_disk_vhdx.clone() };
        Ok(ComputeSystem {
            owner: OWNER.into(),
            schema_version: SchemaVersion { major: 2, minor: 1 },
            should_terminate_on_last_handle_closed: true,
            virtual_machine: VirtualMachine {
                stop_on_reset: true,
                chipset: Chipset {
                    linux_kernel_direct: LinuxKernelDirect {
                        kernel_file_path: host.kernel.clone(),
                        init_rd_path: host.initramfs.clone(),
                        kernel_cmd_line: kernel_cmdline(spec, &facts),
                    },
                },
                compute_topology: Topology {
                    memory: Memory { size_in_mb: spec.memory_mib, allow_overcommit: true },
                    processor: Processor { count: spec.cpus },
                },
                devices: Devices {
                    scsi: [("0".into(), Scsi { attachments: [("0".into(), disk)].into() })].into(),
                    hv_socket: HvSocket {
                        hv_socket_config: HvSocketSystemConfig {
                            default_bind_security_descriptor: descriptor.clone(),
                            default_connect_security_descriptor: descriptor,
                            service_table: guest_dials
                                .iter()
                                .map(|&port| (vsock_service_name(port), service.clone()))
                                .collect(),
                        },
                    },
                    com_ports: com_ports(&console, &agent_log),
                    plan9: Plan9 { shares },
                    network_adapters: [(
                        host.endpoint.id.to_string(),
                        NetworkAdapter {
                            endpoint_id: host.endpoint.id.to_string(),
                            mac_address: host.endpoint.mac_address.clone(),
                        },
                    )]
                    .into(),
                },
            },
        })
    }
}

/// One share per [`VmSpec::shares`] on HCS's Plan 9 server, named by its tag.
fn plan9_shares(spec: &VmSpec) -> Result<Vec<Plan9Share>, DocumentError> {
    let mut shares: Vec<Plan9Share> = Vec::new();
    for share in &spec.shares {
        if shares.iter().any(|s| s.name == share.tag) {
            return Err(DocumentError::DuplicateTag(share.tag.clone()));
        }
        shares.push(Plan9Share {
            name: share.tag.clone(),
            access_name: share.tag.clone(),
            path: share.host_path.display().to_string(),
            port: PLAN9_PORT,
            flags: PLAN9_LINUX_METADATA,
        });
    }
    Ok(shares)
}

/// The HcsModifyComputeSystem request that adds a share to a running VM
/// (hcsshim uvm/plan9.go; the resource path is
/// resourcepaths.Plan9ShareResourcePath): for a share added after boot.
pub fn add_plan9_share(share: &Plan9Share) -> serde_json::Value {
    serde_json::json!({
        "ResourcePath": "VirtualMachine/Devices/Plan9/Shares",
        "RequestType": "Add",
        "Settings": share,
    })
}

/// What HcsGetComputeSystemProperties answers that Berth reads: the id the
/// VM's Hyper-V sockets are addressed with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Properties {
    pub runtime_id: String,
    #[serde(default)]
    pub state: Option<String>,
}

/// HCN's `Endpoint` document fields Berth needs (IP configuration and MAC),
/// from `HcnQueryEndpointProperties`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HcnEndpointProperties {
    /// HCN spells it `ID`.
    #[serde(rename = "ID", alias = "Id")]
    pub id: String,
    pub mac_address: String,
    pub ip_configurations: Vec<HcnIpConfiguration>,
    #[serde(default)]
    pub routes: Vec<HcnRoute>,
    #[serde(default)]
    pub dns: Option<HcnDns>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HcnIpConfiguration {
    pub ip_address: String,
    pub prefix_length: u8,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HcnRoute {
    pub next_hop: String,
    pub destination_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HcnDns {
    #[serde(default)]
    pub server_list: Vec<String>,
}

impl HcnEndpointProperties {
    /// The endpoint as the document and the boot contract take it: its
    /// IPv4 address, the default route's gateway, and the first DNS server
    /// (the gateway when HCN names none: HCN's NAT forwards DNS there).
    pub fn endpoint(&self) -> Result<HcnEndpoint, String> {
        let id = crate::platform::hvsock_ids::parse_vm_id(&self.id)
            .ok_or_else(|| format!("bad endpoint id {:?}", self.id))?;
        let (address, prefix_len) = self
            .ip_configurations
            .iter()
            .find_map(|c| Some((c.ip_address.parse::<Ipv4Addr>().ok()?, c.prefix_length)))
            .ok_or("the HCN endpoint has no IPv4 address")?;
        let gateway = self
            .routes
            .iter()
            .filter(|r| r.destination_prefix == "0.0.0.0/0")
            .find_map(|r| r.next_hop.parse::<Ipv4Addr>().ok())
            .ok_or("the HCN endpoint has no IPv4 default route")?;
        let dns =
            self.dns.iter().flat_map(|d| &d.server_list).find_map(|s| s.parse::<Ipv4Addr>().ok()).unwrap_or(gateway);
        Ok(HcnEndpoint {
            id,
            mac_address: self.mac_address.clone(),
            ipv4: StaticIpv4 { address, prefix_len, gateway, dns },
        })
    }
}

#[cfg(test)]
#[path = "doc_tests.rs"]
mod tests;
