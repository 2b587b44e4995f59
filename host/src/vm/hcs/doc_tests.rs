use super::*;
use crate::vm::{test_spec, Plan9Channel, Share, ShareMount, ShareTransport};

const USER: &str = "S-1-5-21-1004336348-1177238915-682003330-1001";

fn host() -> HcsHost {
    HcsHost {
        kernel: r"C:\Program Files\Berth\share\berth\bzImage".into(),
        initramfs: r"C:\Users\me\AppData\Local\Berth\run\initramfs.cpio".into(),
        data_disk_vhdx: r"C:\Users\me\AppData\Local\Berth\disk.vhdx".into(),
        user: Sid::parse(USER).unwrap(),
        endpoint: HcnEndpoint {
            id: "3f1c2b4a-5d6e-4f70-8a9b-0c1d2e3f4a5b".parse().unwrap(),
            mac_address: "00-15-5D-3A-7B-01".into(),
            ipv4: StaticIpv4 {
                address: "172.28.16.2".parse().unwrap(),
                prefix_len: 20,
                gateway: "172.28.16.1".parse().unwrap(),
                dns: "172.28.16.1".parse().unwrap(),
            },
        },
    }
}

fn spec() -> VmSpec {
    VmSpec {
        cpus: 2,
        memory_mib: 2048,
        shares: Vec::new(),
        run_dir: r"C:\Users\me\AppData\Local\Berth\run".into(),
        ..test_spec()
    }
}

/// The document, compared with the reviewed copy in testdata/: a change
/// to it is a change to what Windows is asked to build. BERTH_UPDATE_GOLDEN=1
/// rewrites the copy (then review its diff).
#[test]
fn the_document_matches_the_golden_file() {
    let document = HcsDocument::from_spec(&spec(), &host()).unwrap();
    let json = serde_json::to_string_pretty(&document).unwrap() + "\n";
    if std::env::var_os("BERTH_UPDATE_GOLDEN").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/vm/hcs/testdata/hcs_document.json");
        std::fs::write(path, &json).unwrap();
    }
    let golden = include_str!("testdata/hcs_document.json");
    assert_eq!(json, golden, "the HCS document changed; review it and update testdata/hcs_document.json");
    // And it reads back as the same document.
    assert_eq!(serde_json::from_str::<ComputeSystem>(golden).unwrap(), document);
}

#[test]
fn the_cmdline_has_hyper_v_quirks_and_the_boot_contract() {
    let document = HcsDocument::from_spec(&spec(), &host()).unwrap();
    let cmdline = &document.virtual_machine.chipset.linux_kernel_direct.kernel_cmd_line;
    for word in [
        "console=ttyS0,115200",
        "pci=off",
        "initcall_blacklist=virtio_vsock_init",
        "berth.disk=/dev/sda",
        "berth.net=172.28.16.2/20,172.28.16.1,172.28.16.1",
        "berth.hostalias=172.28.16.1",
    ] {
        assert!(cmdline.split(' ').any(|w| w == word), "{word} in {cmdline}");
    }
    assert!(!cmdline.contains("tsc_early_khz") && !cmdline.contains("hvc0"), "no QEMU or VZ arguments: {cmdline}");
    let params = berth_agent_proto::boot::BootParams::parse(cmdline).expect("the agent reads it");
    assert_eq!(params.disk.as_deref(), Some("/dev/sda"));
}

#[test]
fn hvsocket_services_admit_the_user() {
    let document = HcsDocument::from_spec(&spec(), &host()).unwrap();
    let config = &document.virtual_machine.devices.hv_socket.hv_socket_config;
    let expected = format!("D:P(A;;FA;;;SY)(A;;FA;;;{USER})");
    assert_eq!(config.default_connect_security_descriptor, expected);
    assert_eq!(
        config.service_table.keys().cloned().collect::<Vec<_>>(),
        vec!["00000401-FACB-11E6-BD58-64006A7986D3".to_string(), vsock_service_name(1030)],
        "the ports the guest dials: the readiness announcement and the host services"
    );
    assert!(config.service_table.values().all(|s| s.bind_security_descriptor == expected));
}

#[test]
fn shares_are_plan9_shares_the_agent_attaches_by_tag() {
    let with_shares = VmSpec {
        shares: vec![Share {
            tag: "share0".into(),
            host_path: r"C:\Users\me\src".into(),
            guest_path: "/mnt/c/Users/me/src".into(),
        }],
        ..spec()
    };
    let shares = plan9_shares(&with_shares).unwrap();
    assert_eq!(
        shares,
        vec![Plan9Share {
            name: "share0".into(),
            access_name: "share0".into(),
            path: r"C:\Users\me\src".into(),
            port: 564,
            flags: PLAN9_LINUX_METADATA,
        }]
    );
    let document = HcsDocument::from_spec(&with_shares, &host()).unwrap();
    assert_eq!(document.virtual_machine.devices.plan9.shares, shares);
    // The guest is told to dial HCS's server and attach the share by its tag.
    let cmdline = &document.virtual_machine.chipset.linux_kernel_direct.kernel_cmd_line;
    let params = berth_agent_proto::boot::BootParams::parse(cmdline).unwrap();
    assert_eq!(
        params.shares,
        vec![ShareMount {
            tag: "share0".into(),
            guest_path: "/mnt/c/Users/me/src".into(),
            transport: ShareTransport::Plan9(Plan9Channel { port: 564, aname: "share0".into() }),
        }]
    );
    assert_eq!(params.share_access, berth_agent_proto::boot::ShareAccess::Host);
    let twice = VmSpec { shares: [with_shares.shares.clone(), with_shares.shares.clone()].concat(), ..spec() };
    assert_eq!(plan9_shares(&twice), Err(DocumentError::DuplicateTag("share0".into())));

    let request = add_plan9_share(&shares[0]);
    assert_eq!(
        request,
        serde_json::json!({
            "ResourcePath": "VirtualMachine/Devices/Plan9/Shares",
            "RequestType": "Add",
            "Settings": {"Name": "share0", "AccessName": "share0", "Path": r"C:\Users\me\src", "Port": 564, "Flags": 4}
        })
    );
    assert_eq!(PLAN9_READ_ONLY | PLAN9_LINUX_METADATA, 5);
}

#[test]
fn the_agent_logs_to_the_com_port_whose_pipe_becomes_agent_log() {
    let document = HcsDocument::from_spec(&spec(), &host()).unwrap();
    let cmdline = &document.virtual_machine.chipset.linux_kernel_direct.kernel_cmd_line;
    let params = berth_agent_proto::boot::BootParams::parse(cmdline).unwrap();
    assert_eq!(params.log_device, LogDevice::Serial(1));
    assert!(cmdline.split(' ').any(|w| w == "berth.logdev=ttyS1"), "{cmdline}");
    let (console, agent_log) = com_pipes(&spec());
    let ports = &document.virtual_machine.devices.com_ports;
    // COM2 is ttyS1: the port the agent writes is the one served into agent.log.
    assert_eq!(ports["1"].named_pipe, agent_log.path());
    assert_eq!(ports["0"].named_pipe, console.path());
    assert!(cmdline.split(' ').any(|w| w == "console=ttyS0,115200"), "the kernel's console is the other one");
    assert_eq!(ports.len(), 2);
}

#[test]
fn com_pipes_are_per_home() {
    let (console, log) = com_pipes(&spec());
    assert!(console.path().starts_with(r"\\.\pipe\berth_vm-") && console.path().ends_with("-console"));
    assert!(log.path().ends_with("-agentlog"));
    let other = VmSpec { run_dir: r"D:\other\run".into(), ..spec() };
    assert_ne!(com_pipes(&other).0, console);
}

#[test]
fn reads_what_hcs_and_hcn_answer() {
    let properties: Properties = serde_json::from_str(
        r#"{"Id":"berth","RuntimeId":"8e1c5f6a-1b2c-4d3e-9f40-0123456789ab","State":"Running","Owner":"berth"}"#,
    )
    .unwrap();
    assert_eq!(properties.runtime_id, "8e1c5f6a-1b2c-4d3e-9f40-0123456789ab");
    assert_eq!(properties.state.as_deref(), Some("Running"));

    let endpoint: HcnEndpointProperties = serde_json::from_str(
        r#"{
            "ID": "3F1C2B4A-5D6E-4F70-8A9B-0C1D2E3F4A5B",
            "MacAddress": "00-15-5D-3A-7B-01",
            "IpConfigurations": [{"IpAddress": "fe80::1", "PrefixLength": 64}, {"IpAddress": "172.28.16.2", "PrefixLength": 20}],
            "Routes": [{"NextHop": "172.28.16.1", "DestinationPrefix": "0.0.0.0/0"}],
            "Dns": {"ServerList": ["172.28.16.1"]}
        }"#,
    )
    .unwrap();
    assert_eq!(endpoint.endpoint().unwrap(), host().endpoint);
    let no_route = HcnEndpointProperties { routes: Vec::new(), ..endpoint };
    assert_eq!(no_route.endpoint().unwrap_err(), "the HCN endpoint has no IPv4 default route");
}
