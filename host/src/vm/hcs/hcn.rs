//! The HCS VM's network: an HCN (Host Compute Network) NAT network named
//! `berth`, created once and kept, and one endpoint on it per boot, which
//! the document's network adapter names (doc.rs). HCN picks the
//! endpoint's address in the network's subnet and NATs it to the host's
//! connections; the daemon reads the address back (doc.rs
//! `HcnEndpointProperties`) and hands it to the agent as a static address
//! on the kernel command line. The settings documents are plain data
//! (HCN schema 2.0, the fields WSL's NatNetworking.cpp and hcsshim's hcn
//! package send); computenetwork.dll is called on Windows only, loaded at
//! first use as computecore.dll is.

use std::net::Ipv4Addr;

use serde_json::json;

/// Berth's NAT network, the same for every home (as WSL's one network):
/// its id is fixed so that a daemon opens the one an earlier one made.
pub const NETWORK_ID: uuid::Uuid = uuid::uuid!("5c0ffee0-be27-4a11-9d3e-6e7a9b0c1d2e");
pub const NETWORK_NAME: &str = "berth";

/// The network's subnet: a /24 from the private range the other products'
/// NATs seldom take (WSL and Docker Desktop use 172.16/12's upper part).
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(192, 168, 213, 0), 24);

/// The subnet's gateway, the host's side of the NAT: the first address.
pub fn gateway() -> Ipv4Addr {
    let network = u32::from(SUBNET.0);
    Ipv4Addr::from(network + 1)
}

/// HcnCreateNetwork's settings: a NAT network with a static IPAM pool.
pub fn network_settings() -> serde_json::Value {
    let (address, prefix) = SUBNET;
    json!({
        "SchemaVersion": {"Major": 2, "Minor": 0},
        "Name": NETWORK_NAME,
        "Type": "NAT",
        "Ipams": [{
            "Type": "Static",
            "Subnets": [{
                "IpAddressPrefix": format!("{address}/{prefix}"),
                "Routes": [{"NextHop": gateway().to_string(), "DestinationPrefix": "0.0.0.0/0"}],
            }],
        }],
        "Flags": 0,
    })
}

/// HcnCreateEndpoint's settings: an endpoint on Berth's network; HCN
/// assigns its address, MAC and routes.
pub fn endpoint_settings() -> serde_json::Value {
    json!({
        "SchemaVersion": {"Major": 2, "Minor": 0},
        "HostComputeNetwork": NETWORK_ID.to_string(),
    })
}

#[cfg(windows)]
pub mod windows_calls {
    use std::ffi::c_void;
    use std::sync::OnceLock;

    use windows_sys::core::{GUID, HRESULT, PCWSTR, PWSTR};

    use super::super::computecore::{take_wide, wide};
    use super::super::doc::{HcnEndpoint, HcnEndpointProperties};
    use super::super::errors::HcsError;
    use crate::platform::windows_dll::SystemDll;

    /// HRESULT_FROM_WIN32(ERROR_NOT_FOUND) and HCN's own "not found":
    /// HcnOpenNetwork's answers when Berth's network does not exist yet.
    const NOT_FOUND: [u32; 2] = [0x8007_0490, 0x803B_0001];

    type Handle = *mut c_void;

    #[allow(non_snake_case)]
    struct Api {
        HcnCreateNetwork: unsafe extern "system" fn(*const GUID, PCWSTR, *mut Handle, *mut PWSTR) -> HRESULT,
        HcnOpenNetwork: unsafe extern "system" fn(*const GUID, *mut Handle, *mut PWSTR) -> HRESULT,
        HcnCloseNetwork: unsafe extern "system" fn(*const c_void) -> HRESULT,
        HcnCreateEndpoint:
            unsafe extern "system" fn(*const c_void, *const GUID, PCWSTR, *mut Handle, *mut PWSTR) -> HRESULT,
        HcnQueryEndpointProperties: unsafe extern "system" fn(*const c_void, PCWSTR, *mut PWSTR, *mut PWSTR) -> HRESULT,
        HcnCloseEndpoint: unsafe extern "system" fn(*const c_void) -> HRESULT,
        HcnDeleteEndpoint: unsafe extern "system" fn(*const GUID, *mut PWSTR) -> HRESULT,
    }

    fn api() -> Result<&'static Api, HcsError> {
        static API: OnceLock<Result<Api, i32>> = OnceLock::new();
        let loaded = API.get_or_init(|| {
            let load = || -> std::io::Result<Api> {
                let dll = SystemDll::load("computenetwork.dll")?;
                // SAFETY: each field's type is the export's signature as
                // windows-sys declares it (Win32::System::HostComputeNetwork).
                unsafe {
                    Ok(Api {
                        HcnCreateNetwork: dll.function(c"HcnCreateNetwork")?,
                        HcnOpenNetwork: dll.function(c"HcnOpenNetwork")?,
                        HcnCloseNetwork: dll.function(c"HcnCloseNetwork")?,
                        HcnCreateEndpoint: dll.function(c"HcnCreateEndpoint")?,
                        HcnQueryEndpointProperties: dll.function(c"HcnQueryEndpointProperties")?,
                        HcnCloseEndpoint: dll.function(c"HcnCloseEndpoint")?,
                        HcnDeleteEndpoint: dll.function(c"HcnDeleteEndpoint")?,
                    })
                }
            };
            load().map_err(|e| e.raw_os_error().map_or(0, |c| ((c as u32 & 0xFFFF) | 0x8007_0000) as i32))
        });
        loaded.as_ref().map_err(|code| HcsError::call("loading computenetwork.dll", *code))
    }

    fn guid(id: &uuid::Uuid) -> GUID {
        let (data1, data2, data3, data4) = id.as_fields();
        GUID { data1, data2, data3, data4: *data4 }
    }

    /// Takes a string HCN allocated (CoTaskMemAlloc) and frees it.
    ///
    /// # Safety
    /// `text` is null or a NUL-terminated UTF-16 string from HCN that
    /// nothing else frees.
    unsafe fn take_string(text: PWSTR) -> String {
        use windows_sys::Win32::System::Com::CoTaskMemFree;
        // SAFETY: the caller's contract; HCN allocates with CoTaskMemAlloc.
        unsafe { take_wide(text, |p| CoTaskMemFree(p.cast())) }
    }

    /// An HCN call's HRESULT and error record, as an error when it failed.
    fn check(call: &'static str, hresult: HRESULT, record: PWSTR) -> Result<(), HcsError> {
        // SAFETY: the record is HCN's allocation (or null), freed once here.
        let record = unsafe { take_string(record) };
        if hresult < 0 {
            return Err(HcsError::with_document(call, hresult, record));
        }
        Ok(())
    }

    /// Opens Berth's NAT network, creating it the first time.
    fn open_network(api: &Api) -> Result<Handle, HcsError> {
        let id = guid(&super::NETWORK_ID);
        let mut network: Handle = std::ptr::null_mut();
        let mut record: PWSTR = std::ptr::null_mut();
        // SAFETY: the id outlives the call; one handle and one record written.
        let opened = unsafe { (api.HcnOpenNetwork)(&id, &mut network, &mut record) };
        match check("HcnOpenNetwork", opened, record) {
            Ok(()) => return Ok(network),
            Err(err) if NOT_FOUND.contains(&err.hresult) => {}
            Err(err) => return Err(err),
        }
        let settings = wide(&super::network_settings().to_string());
        let mut record: PWSTR = std::ptr::null_mut();
        // SAFETY: id and settings are NUL-terminated/valid and outlive the call.
        let created = unsafe { (api.HcnCreateNetwork)(&id, settings.as_ptr(), &mut network, &mut record) };
        check("HcnCreateNetwork", created, record)?;
        tracing::info!(name = super::NETWORK_NAME, "created Berth's HCN NAT network");
        Ok(network)
    }

    /// One boot's endpoint on Berth's network, deleted when dropped (HCN
    /// keeps an endpoint until it is deleted: a daemon killed outright
    /// leaves its one behind).
    pub struct Endpoint {
        pub id: uuid::Uuid,
        handle: Handle,
        api: &'static Api,
    }

    // SAFETY: HCN handles are process-wide values, usable from any thread.
    unsafe impl Send for Endpoint {}
    // SAFETY: as above; the methods take the handle by value.
    unsafe impl Sync for Endpoint {}

    impl Endpoint {
        pub fn create() -> Result<Endpoint, HcsError> {
            let api = api()?;
            let network = open_network(api)?;
            let mut random = [0u8; 16];
            getrandom::getrandom(&mut random)
                .map_err(|e| HcsError::with_document("choosing an endpoint id", -1, e.to_string()))?;
            let id = uuid::Builder::from_random_bytes(random).into_uuid();
            let settings = wide(&super::endpoint_settings().to_string());
            let mut handle: Handle = std::ptr::null_mut();
            let mut record: PWSTR = std::ptr::null_mut();
            // SAFETY: an open network; id and settings outlive the call.
            let created =
                unsafe { (api.HcnCreateEndpoint)(network, &guid(&id), settings.as_ptr(), &mut handle, &mut record) };
            // SAFETY: the network handle is open and closed once; the endpoint keeps the network alive.
            unsafe { (api.HcnCloseNetwork)(network) };
            check("HcnCreateEndpoint", created, record)?;
            Ok(Endpoint { id, handle, api })
        }

        fn delete(id: &uuid::Uuid) -> Result<(), HcsError> {
            let api = api()?;
            let mut record: PWSTR = std::ptr::null_mut();
            // SAFETY: the id outlives the call; one record written.
            let deleted = unsafe { (api.HcnDeleteEndpoint)(&guid(id), &mut record) };
            check("HcnDeleteEndpoint", deleted, record)
        }

        /// The address, gateway and DNS HCN gave the endpoint, and its MAC.
        pub fn properties(&self) -> Result<HcnEndpoint, HcsError> {
            let mut properties: PWSTR = std::ptr::null_mut();
            let mut record: PWSTR = std::ptr::null_mut();
            // SAFETY: an open endpoint; no query (all properties); two strings written.
            let queried = unsafe {
                (self.api.HcnQueryEndpointProperties)(self.handle, std::ptr::null(), &mut properties, &mut record)
            };
            // SAFETY: HCN's allocation (or null), freed once.
            let properties = unsafe { take_string(properties) };
            check("HcnQueryEndpointProperties", queried, record)?;
            let invalid = |why: String| HcsError::with_document("HcnQueryEndpointProperties", -1, why);
            let read: HcnEndpointProperties =
                serde_json::from_str(&properties).map_err(|e| invalid(format!("{e}: {properties}")))?;
            read.endpoint().map_err(invalid)
        }
    }

    impl Drop for Endpoint {
        fn drop(&mut self) {
            // SAFETY: the handle came from HcnCreateEndpoint and is closed once.
            unsafe { (self.api.HcnCloseEndpoint)(self.handle) };
            if let Err(err) = Endpoint::delete(&self.id) {
                tracing::warn!(%err, "deleting the VM's network endpoint failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_is_a_nat_with_its_gateway_as_default_route() {
        assert_eq!(
            network_settings(),
            json!({
                "SchemaVersion": {"Major": 2, "Minor": 0},
                "Name": "berth",
                "Type": "NAT",
                "Ipams": [{"Type": "Static", "Subnets": [{
                    "IpAddressPrefix": "192.168.213.0/24",
                    "Routes": [{"NextHop": "192.168.213.1", "DestinationPrefix": "0.0.0.0/0"}],
                }]}],
                "Flags": 0,
            })
        );
    }

    #[test]
    fn endpoints_are_on_berths_network() {
        assert_eq!(endpoint_settings()["HostComputeNetwork"], "5c0ffee0-be27-4a11-9d3e-6e7a9b0c1d2e");
        assert_eq!(endpoint_settings()["SchemaVersion"], json!({"Major": 2, "Minor": 0}));
    }
}
