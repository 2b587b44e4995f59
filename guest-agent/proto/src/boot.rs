//! The boot contract: what the host tells the agent (PID 1 of the VM) on the
//! kernel command line, as `berth.KEY=VALUE` words.
//!
//! The host encodes a [`BootParams`] (each backend adds its own kernel
//! arguments around it) and the agent parses the same type back from
//! `/proc/cmdline`, so the two sides cannot drift apart: both directions live
//! here, tested against each other. Values must not contain white space (the
//! kernel splits its command line there) and commas separate fields, so paths
//! are percent-encoded.
//!
//! Why not `form_urlencoded`: it turns `+` into a space, and the kernel
//! command line is not a query string; the subset needed here is a few lines.

use std::fmt;
use std::net::Ipv4Addr;

/// Where the agent keeps the engine's state in the VM: the data disk is
/// mounted here (Docker's `DockerRootDir`).
pub const GUEST_DATA_DIR: &str = "/var/lib/berth";

/// Settings the host passes to the agent at boot.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BootParams {
    pub hostname: Option<String>,
    /// How eth0 gets its IPv4 configuration (none: the interface stays down).
    pub net: Option<NetConfig>,
    /// The address at which the host's loopback services are reachable.
    pub host_alias: Option<Ipv4Addr>,
    /// The data disk's device in the guest (`/dev/vda`, `/dev/sda`, ...).
    pub disk: Option<String>,
    pub shares: Vec<ShareMount>,
    /// Who decides access to the shares' files.
    pub share_access: ShareAccess,
    /// The agent's log filter.
    pub log: Option<String>,
    /// Where the agent writes its log (the host reads that device into
    /// agent.log); written only when it is not the default, `hvc0`.
    pub log_device: LogDevice,
    /// The virtio-fs tag of a Rosetta share (Virtualization.framework on
    /// Apple silicon): the agent mounts it and registers its translator
    /// with binfmt_misc for x86_64 programs.
    pub rosetta: Option<String>,
}

/// The console the agent logs to: a virtio console (QEMU and VZ give the
/// agent `hvc0` of its own, apart from the kernel's) or a serial port (an
/// HCS VM has no virtio console, only COM ports: COM2 is `ttyS1`). Only
/// these two kinds, by number: the command line never names a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDevice {
    VirtioConsole(u8),
    Serial(u8),
}

impl Default for LogDevice {
    fn default() -> LogDevice {
        LogDevice::VirtioConsole(0)
    }
}

impl LogDevice {
    /// The device's name under /dev, as the kernel calls it.
    pub fn name(self) -> String {
        match self {
            LogDevice::VirtioConsole(n) => format!("hvc{n}"),
            LogDevice::Serial(n) => format!("ttyS{n}"),
        }
    }

    pub fn path(self) -> String {
        format!("/dev/{}", self.name())
    }

    /// Whether it is a UART, whose line discipline the agent sets raw (a
    /// serial tty's default output processing turns `\n` into `\r\n`).
    pub fn is_serial(self) -> bool {
        matches!(self, LogDevice::Serial(_))
    }

    /// `hvcN` or `ttySN`.
    fn parse(value: &str) -> Option<LogDevice> {
        let number = |digits: &str| {
            // No sign, no leading zeros: one spelling per device.
            let plain = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            plain.then(|| digits.parse::<u8>().ok()).flatten()
        };
        if let Some(digits) = value.strip_prefix("hvc") {
            return number(digits).map(LogDevice::VirtioConsole);
        }
        value.strip_prefix("ttyS").and_then(number).map(LogDevice::Serial)
    }
}

/// eth0's IPv4 configuration: given by the host, or leased from the
/// network's DHCP server (VZ's NAT, whose addresses only the Mac knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetConfig {
    Static(StaticIpv4),
    Dhcp,
}

/// `address/prefix_len`, the default gateway, the DNS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticIpv4 {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

/// A host directory the guest mounts at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMount {
    /// The device's tag (virtio-fs) or share name.
    pub tag: String,
    pub guest_path: String,
    pub transport: ShareTransport,
}

/// Who decides whether a process in the VM may open, write or create a
/// share's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShareAccess {
    /// The guest kernel, from the owner and mode the host reports
    /// (virtio-fs's `default_permissions`): the host runs its file server as
    /// root, so the VM's ids are the host's, as on a Linux host.
    #[default]
    Guest,
    /// The file server, whose host kernel checks every access as the
    /// (non-root) user it runs as: any container user may write what that
    /// user may, and what it creates is that user's, as with the anchors
    /// (our kernel's virtio-fs `host_permissions` mount option).
    Host,
}

/// How a shared directory reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ShareTransport {
    /// One virtio-fs device per share (QEMU with virtiofsd, Virtualization.framework).
    #[default]
    Virtiofs,
    /// 9P2000.L on a vsock stream: the guest dials the host (CID 2) and
    /// mounts the connection with the kernel's fd transport (what Hyper-V's
    /// Plan 9 shares and WSL's drvfs speak; QEMU's hybrid vsock carries it
    /// to a file server on the host).
    Plan9(Plan9Channel),
}

/// Where a 9P share's file server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan9Channel {
    /// The host's vsock port.
    pub port: u32,
    /// What the guest attaches to (`aname`): the server's name for the share.
    pub aname: String,
}

impl ShareTransport {
    /// The filesystem type the guest mounts the share with.
    pub fn fstype(&self) -> &'static str {
        match self {
            ShareTransport::Virtiofs => "virtiofs",
            ShareTransport::Plan9(_) => "9p",
        }
    }

    /// The fields after `TAG,PATH` (none for the default transport: older
    /// hosts wrote two fields).
    fn encode(&self) -> String {
        match self {
            ShareTransport::Virtiofs => String::new(),
            ShareTransport::Plan9(Plan9Channel { port, aname }) => format!(",9p,{port},{}", percent_encode(aname)),
        }
    }

    /// The transport named by the fields after `TAG,PATH`.
    fn parse(fields: &[&str]) -> Result<ShareTransport, String> {
        match fields {
            [] | ["virtiofs"] => Ok(ShareTransport::Virtiofs),
            ["9p", port, aname] => Ok(ShareTransport::Plan9(Plan9Channel {
                port: port.parse().map_err(|_| format!("bad 9p port {port:?}"))?,
                aname: percent_decode(aname).map_err(|e| e.0)?,
            })),
            ["9p", ..] => Err("a 9p share needs a port and an attach name".into()),
            ["virtiofs", ..] => Err("too many fields".into()),
            [name, ..] => Err(format!("unknown share transport {name:?}")),
        }
    }
}

/// Why a command line is not a valid boot contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParamsError(String);

impl fmt::Display for BootParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BootParamsError {}

fn bad(message: String) -> BootParamsError {
    BootParamsError(message)
}

impl BootParams {
    /// The `berth.*` words of the kernel command line, in a fixed order.
    pub fn encode(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(hostname) = &self.hostname {
            words.push(format!("berth.hostname={hostname}"));
        }
        match self.net {
            Some(NetConfig::Static(StaticIpv4 { address, prefix_len, gateway, dns })) => {
                words.push(format!("berth.net={address}/{prefix_len},{gateway},{dns}"))
            }
            Some(NetConfig::Dhcp) => words.push("berth.net=dhcp".into()),
            None => {}
        }
        if let Some(alias) = self.host_alias {
            words.push(format!("berth.hostalias={alias}"));
        }
        if let Some(disk) = &self.disk {
            words.push(format!("berth.disk={}", percent_encode(disk)));
        }
        for share in &self.shares {
            words.push(format!(
                "berth.share={},{}{}",
                share.tag,
                percent_encode(&share.guest_path),
                share.transport.encode()
            ));
        }
        if self.share_access == ShareAccess::Host {
            words.push("berth.shareaccess=host".into());
        }
        if let Some(log) = &self.log {
            words.push(format!("berth.log={log}"));
        }
        if let Some(tag) = &self.rosetta {
            words.push(format!("berth.rosetta={tag}"));
        }
        if self.log_device != LogDevice::default() {
            words.push(format!("berth.logdev={}", self.log_device.name()));
        }
        words
    }

    /// Reads the `berth.*` words of a kernel command line; other words are
    /// the kernel's and are skipped.
    pub fn parse(cmdline: &str) -> Result<BootParams, BootParamsError> {
        let mut params = BootParams::default();
        for token in cmdline.split_whitespace() {
            let Some((key, value)) = token.strip_prefix("berth.").and_then(|t| t.split_once('=')) else {
                continue;
            };
            match key {
                "hostname" => params.hostname = Some(value.to_string()),
                "net" if value == "dhcp" => params.net = Some(NetConfig::Dhcp),
                "net" => {
                    params.net =
                        Some(NetConfig::Static(parse_net(value).ok_or_else(|| bad(format!("bad berth.net={value}")))?))
                }
                "hostalias" => {
                    params.host_alias = Some(value.parse().map_err(|_| bad(format!("bad berth.hostalias={value}")))?)
                }
                "disk" => params.disk = Some(percent_decode(value)?),
                "share" => params.shares.push(parse_share(value)?),
                "shareaccess" => {
                    params.share_access = match value {
                        "guest" => ShareAccess::Guest,
                        "host" => ShareAccess::Host,
                        _ => return Err(bad(format!("bad berth.shareaccess={value}"))),
                    }
                }
                "log" => params.log = Some(value.to_string()),
                "logdev" => {
                    params.log_device =
                        LogDevice::parse(value).ok_or_else(|| bad(format!("bad berth.logdev={value}")))?
                }
                "rosetta" if !value.is_empty() => params.rosetta = Some(value.to_string()),
                _ => return Err(bad(format!("unknown boot parameter berth.{key}"))),
            }
        }
        Ok(params)
    }
}

/// `10.0.2.15/24,10.0.2.2,10.0.2.3`
fn parse_net(value: &str) -> Option<StaticIpv4> {
    let mut parts = value.split(',');
    let (address, prefix) = parts.next()?.split_once('/')?;
    let net = StaticIpv4 {
        address: address.parse().ok()?,
        prefix_len: prefix.parse().ok()?,
        gateway: parts.next()?.parse().ok()?,
        dns: parts.next()?.parse().ok()?,
    };
    (net.prefix_len <= 32 && parts.next().is_none()).then_some(net)
}

/// `TAG,PATH[,virtiofs]` or `TAG,PATH,9p,PORT,ANAME`
fn parse_share(value: &str) -> Result<ShareMount, BootParamsError> {
    let fields: Vec<&str> = value.split(',').collect();
    let [tag, path, rest @ ..] = fields.as_slice() else {
        return Err(bad(format!("bad berth.share={value}")));
    };
    if tag.is_empty() {
        return Err(bad(format!("bad berth.share={value}")));
    }
    let transport = ShareTransport::parse(rest).map_err(|why| bad(format!("{why} in berth.share={value}")))?;
    Ok(ShareMount { tag: tag.to_string(), guest_path: percent_decode(path)?, transport })
}

/// Escapes every byte that the command line or the field syntax would split
/// on (white space, commas, `%` itself) and everything not plainly printable.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~+@:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, BootParamsError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| bad(format!("bad escape in {s}")))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(format!("bad escape in {s}")))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("share path is not UTF-8: {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> BootParams {
        BootParams {
            hostname: Some("berth".into()),
            net: Some(NetConfig::Static(StaticIpv4 {
                address: "10.0.2.15".parse().unwrap(),
                prefix_len: 24,
                gateway: "10.0.2.2".parse().unwrap(),
                dns: "10.0.2.3".parse().unwrap(),
            })),
            host_alias: Some("10.0.2.2".parse().unwrap()),
            disk: Some("/dev/vda".into()),
            shares: vec![
                ShareMount {
                    tag: "share0".into(),
                    guest_path: "/home/a b,c%d/é".into(),
                    transport: ShareTransport::Virtiofs,
                },
                ShareMount { tag: "share1".into(), guest_path: "/srv".into(), transport: ShareTransport::Virtiofs },
                ShareMount {
                    tag: "share2".into(),
                    guest_path: "/mnt/c/Users/me".into(),
                    transport: ShareTransport::Plan9(Plan9Channel { port: 564, aname: "C:\\Users\\me".into() }),
                },
            ],
            share_access: ShareAccess::Host,
            log: Some("info,berth_engine=debug".into()),
            rosetta: Some("rosetta".into()),
            log_device: LogDevice::Serial(1),
        }
    }

    #[test]
    fn what_the_host_encodes_the_agent_parses() {
        let params = full();
        let words = params.encode();
        assert!(words.iter().all(|w| !w.contains(char::is_whitespace)), "{words:?}");
        let cmdline = format!("console=ttyS0 quiet {} panic=-1", words.join(" "));
        assert_eq!(BootParams::parse(&cmdline).unwrap(), params);
        assert_eq!(BootParams::parse(&BootParams::default().encode().join(" ")).unwrap(), BootParams::default());
    }

    #[test]
    fn the_encoding_is_the_one_on_the_wire() {
        let words = full().encode().join(" ");
        assert_eq!(
            words,
            "berth.hostname=berth berth.net=10.0.2.15/24,10.0.2.2,10.0.2.3 berth.hostalias=10.0.2.2 \
             berth.disk=/dev/vda berth.share=share0,/home/a%20b%2Cc%25d/%C3%A9 berth.share=share1,/srv \
             berth.share=share2,/mnt/c/Users/me,9p,564,C:%5CUsers%5Cme berth.shareaccess=host \
             berth.log=info,berth_engine=debug berth.rosetta=rosetta berth.logdev=ttyS1"
        );
    }

    #[test]
    fn the_log_device_is_hvc0_unless_the_host_names_another() {
        // The default is not written: QEMU's and VZ's command lines stay as they were.
        assert_eq!(BootParams::default().log_device, LogDevice::VirtioConsole(0));
        assert!(!BootParams::default().encode().iter().any(|w| w.starts_with("berth.logdev")));
        assert_eq!(BootParams::parse("console=ttyS0 quiet").unwrap().log_device.path(), "/dev/hvc0");
        for device in [LogDevice::Serial(1), LogDevice::Serial(0), LogDevice::VirtioConsole(1)] {
            let params = BootParams { log_device: device, ..BootParams::default() };
            let words = params.encode();
            assert_eq!(words, [format!("berth.logdev={}", device.name())]);
            assert_eq!(BootParams::parse(&words.join(" ")).unwrap(), params);
        }
        assert_eq!(BootParams::parse("berth.logdev=ttyS1").unwrap().log_device.path(), "/dev/ttyS1");
        assert!(LogDevice::Serial(1).is_serial() && !LogDevice::VirtioConsole(0).is_serial());
        // Only a console's name: never a path, a sign, another spelling of a number.
        for bad in ["/dev/sda", "../ttyS1", "ttyS", "ttyS-1", "ttyS01", "hvc256", "ttyUSB0", "hvc0/x", ""] {
            let err = BootParams::parse(&format!("berth.logdev={bad}")).unwrap_err();
            assert_eq!(err.to_string(), format!("bad berth.logdev={bad}"));
        }
    }

    #[test]
    fn dhcp_is_a_network_configuration_of_its_own() {
        let params = BootParams { net: Some(NetConfig::Dhcp), ..BootParams::default() };
        assert_eq!(params.encode(), ["berth.net=dhcp"]);
        assert_eq!(BootParams::parse("quiet berth.net=dhcp").unwrap(), params);
        assert!(BootParams::parse("berth.net=dhcpx").is_err());
        assert!(BootParams::parse("berth.rosetta=").is_err(), "an empty tag names no share");
    }

    #[test]
    fn parses_boot_parameters() {
        let params = BootParams::parse(
            "console=ttyS0 quiet berth.hostname=vm berth.net=10.0.2.15/24,10.0.2.2,10.0.2.3 \
             berth.hostalias=10.0.2.2 berth.disk=/dev/vda berth.share=home0,/home/a%20b%2Cc berth.log=debug",
        )
        .unwrap();
        assert_eq!(params.hostname.as_deref(), Some("vm"));
        assert_eq!(
            params.net,
            Some(NetConfig::Static(StaticIpv4 {
                address: "10.0.2.15".parse().unwrap(),
                prefix_len: 24,
                gateway: "10.0.2.2".parse().unwrap(),
                dns: "10.0.2.3".parse().unwrap()
            }))
        );
        assert_eq!(params.disk.as_deref(), Some("/dev/vda"));
        assert_eq!(
            params.shares,
            vec![ShareMount {
                tag: "home0".into(),
                guest_path: "/home/a b,c".into(),
                transport: ShareTransport::Virtiofs
            }]
        );
        assert_eq!(params.log.as_deref(), Some("debug"));
    }

    #[test]
    fn rejects_bad_boot_parameters() {
        assert!(BootParams::parse("berth.net=10.0.2.15/40,1.1.1.1,1.1.1.1").is_err());
        assert!(BootParams::parse("berth.share=nocomma").is_err());
        assert!(BootParams::parse("berth.shareaccess=root").is_err());
        assert!(BootParams::parse("berth.share=t,/bad%zz").is_err());
        assert!(BootParams::parse("berth.frobnicate=1").is_err());
        let err = BootParams::parse("berth.share=t,/p,smb").unwrap_err();
        assert!(err.to_string().contains("unknown share transport \"smb\""), "{err}");
        assert!(BootParams::parse("berth.share=t,/p,virtiofs,x").is_err());
        assert!(BootParams::parse("berth.share=t,/p,9p").is_err(), "a 9p share names its port");
        assert!(BootParams::parse("berth.share=t,/p,9p,x,/p").is_err());
        assert!(BootParams::parse("berth.share=t,/p,9p,1,/p,x").is_err());
        assert_eq!(
            BootParams::parse("berth.share=t,/p,9p,5640,/home/a%20b").unwrap().shares[0].transport,
            ShareTransport::Plan9(Plan9Channel { port: 5640, aname: "/home/a b".into() })
        );
        assert!(BootParams::parse("berth.share=,/p").is_err());
        assert_eq!(
            BootParams::parse("berth.share=t,/p,virtiofs").unwrap().shares[0].transport,
            ShareTransport::Virtiofs
        );
    }

    #[test]
    fn share_paths_survive_the_kernel_command_line() {
        assert_eq!(percent_encode("/home/a b,c"), "/home/a%20b%2Cc");
        assert_eq!(percent_encode("/srv/x_y-1.2"), "/srv/x_y-1.2");
    }
}
