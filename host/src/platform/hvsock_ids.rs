//! Hyper-V sockets (AF_HYPERV) name a vsock port by a service GUID: the
//! template `00000000-FACB-11E6-BD58-64006A7986D3` with the port as its
//! first field (`HV_GUID_VSOCK_TEMPLATE` in the Windows SDK, go-winio's
//! `VsockServiceID`, podman's `portToKeyName`). A Linux guest's AF_VSOCK
//! port P over hv_sock is the host's service `<P as 8 hex>-FACB-…`. Plain
//! code, tested on every host; the socket itself is hvsock_windows.rs.

use uuid::Uuid;

/// The fields after the port in every vsock service GUID.
const VSOCK_TEMPLATE: (u16, u16, [u8; 8]) = (0xfacb, 0x11e6, [0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3]);

/// The service GUID of vsock `port`.
pub fn vsock_service_id(port: u32) -> Uuid {
    let (data2, data3, data4) = VSOCK_TEMPLATE;
    Uuid::from_fields(port, data2, data3, &data4)
}

/// `00000400-FACB-11E6-BD58-64006A7986D3` for port 1024: the spelling of
/// the registry keys and of Microsoft's documentation.
pub fn vsock_service_name(port: u32) -> String {
    vsock_service_id(port).hyphenated().encode_upper(&mut Uuid::encode_buffer()).to_string()
}

/// The vsock port a service GUID stands for; None for a GUID not made from
/// the template (a Hyper-V integration service of another kind).
pub fn vsock_port(service: &Uuid) -> Option<u32> {
    let (port, data2, data3, data4) = service.as_fields();
    ((data2, data3, *data4) == VSOCK_TEMPLATE).then_some(port)
}

/// A VM id as HCS and `hcsdiag list` print it, in any case, with or
/// without braces.
pub fn parse_vm_id(text: &str) -> Option<Uuid> {
    let text = text.trim();
    let bare = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(text);
    // Only the hyphenated form: uuid also takes 32 bare hex digits and URNs,
    // which no Windows tool prints.
    (bare.len() == 36).then(|| Uuid::try_parse(bare).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_map_to_the_template_and_back() {
        assert_eq!(vsock_service_name(1024), "00000400-FACB-11E6-BD58-64006A7986D3");
        assert_eq!(vsock_service_name(1025), "00000401-FACB-11E6-BD58-64006A7986D3");
        assert_eq!(vsock_service_name(564), "00000234-FACB-11E6-BD58-64006A7986D3");
        assert_eq!(vsock_service_name(u32::MAX), "FFFFFFFF-FACB-11E6-BD58-64006A7986D3");
        assert_eq!(vsock_service_id(1024).to_string(), "00000400-facb-11e6-bd58-64006a7986d3");
        for port in [0, 1, 564, 1024, 1025, 1026, u32::MAX] {
            assert_eq!(vsock_port(&vsock_service_id(port)), Some(port));
        }
        let other: Uuid = "0e4a2c0d-9f34-4e6b-a6c8-3f3e0d3d2b11".parse().unwrap();
        assert_eq!(vsock_port(&other), None, "not a vsock service");
    }

    #[test]
    fn the_port_is_little_endian_in_a_windows_guid() {
        // SOCKADDR_HV holds a GUID struct: Data1 (the port) is a native,
        // little-endian u32, then Data2 and Data3 likewise, then Data4's bytes.
        let bytes = vsock_service_id(0x0102_0304).to_bytes_le();
        assert_eq!(&bytes[..4], &[0x04, 0x03, 0x02, 0x01]);
        assert_eq!(&bytes[4..8], &[0xcb, 0xfa, 0xe6, 0x11]);
        assert_eq!(&bytes[8..], &[0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3]);
    }

    #[test]
    fn vm_ids_are_read_as_windows_prints_them() {
        let id: Uuid = "8e1c5f6a-1b2c-4d3e-9f40-0123456789ab".parse().unwrap();
        assert_eq!(parse_vm_id("8E1C5F6A-1B2C-4D3E-9F40-0123456789AB"), Some(id));
        assert_eq!(parse_vm_id(" {8e1c5f6a-1b2c-4d3e-9f40-0123456789ab}\r\n"), Some(id));
        assert_eq!(parse_vm_id("8e1c5f6a1b2c4d3e9f400123456789ab"), None);
        assert_eq!(parse_vm_id("berth"), None);
    }
}
