//! The QEMU backend (Linux hosts): `-M microvm` for x86_64 guests, `-M virt`
//! for arm64 ones (qemu_machine.rs), KVM or TCG, with
//! virtiofsd (one per share) and, when the host has no /dev/vhost-vsock,
//! vhost-device-vsock serving hybrid vsock on a unix socket.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use super::arch::GuestArch;
use super::owned::{spawn_owned, wait_for_socket};
use super::qemu_machine::{accel_for, cpu_args, Machine, PlannedDevice, VirtioDevice};
use super::{
    BoxFuture, GuestFacts, GuestNetwork, NetConfig, RunningVm, Share, ShareAccess, ShareProtocol, SharesVia, Uplink,
    VmBackend, VmProcess, VmSpec,
};
use crate::agent_client::{AgentEndpoint, GuestTransport};
use berth_agent_proto::boot::StaticIpv4;

/// Hardware acceleration for the guest CPU, in QEMU's words (hvf and whpx
/// are QEMU's accelerators on macOS and Windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Hvf,
    Whpx,
    /// QEMU's software emulation: always available, much slower.
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Hvf => "hvf",
            Accel::Whpx => "whpx",
            Accel::Tcg => "tcg",
        }
    }

    /// `BERTH_ACCEL=auto|kvm|hvf|whpx|tcg`; `auto` (or unset) is None: the
    /// backend chooses (qemu_machine::accel_for).
    pub fn requested() -> Result<Option<Accel>> {
        Ok(Some(match std::env::var("BERTH_ACCEL").ok().as_deref() {
            None | Some("") | Some("auto") => return Ok(None),
            Some("kvm") => Accel::Kvm,
            Some("hvf") => Accel::Hvf,
            Some("whpx") => Accel::Whpx,
            Some("tcg") => Accel::Tcg,
            Some(other) => {
                anyhow::bail!("BERTH_ACCEL={other} is not one of auto, kvm, hvf, whpx, tcg")
            }
        }))
    }

    /// The best accelerator that can really run a guest here.
    pub fn detect() -> Accel {
        if cfg!(target_os = "macos") {
            Accel::Hvf
        } else if cfg!(windows) {
            Accel::Whpx
        } else if cfg!(target_os = "linux")
            && kvm_usable(
                std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
                &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
                GuestArch::default_for_host(),
            )
        {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// Whether KVM can run a stock guest kernel. An openable /dev/kvm is not
/// enough: some hosts expose a paravirtual KVM (kvm_pvm) without hardware
/// virtualisation, under which a normal kernel crawls and then dies. Real KVM
/// needs the CPU's vmx (Intel) or svm (AMD) flag. arm64's /proc/cpuinfo names
/// no virtualisation feature (KVM there needs the kernel booted at EL2, which
/// an openable /dev/kvm already shows).
pub fn kvm_usable(dev_kvm_openable: bool, cpuinfo: &str, host: GuestArch) -> bool {
    dev_kvm_openable
        && (host == GuestArch::Aarch64
            || cpuinfo
                .lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm")))
}

/// The guest's address on its uplink: user-mode networking's fixed
/// addresses (the guest is 10.0.2.15, the host's loopback appears as
/// 10.0.2.2, its DNS relay is 10.0.2.3), which passt is told to use too.
pub fn uplink_ipv4() -> StaticIpv4 {
    let slirp = |last: u8| std::net::Ipv4Addr::new(10, 0, 2, last);
    StaticIpv4 { address: slirp(15), prefix_len: 24, gateway: slirp(2), dns: slirp(3) }
}

/// The guest QEMU boots: the uplink's static address, the data disk as the
/// first virtio-blk device, shares over virtio-fs (or 9P on vsock, when
/// asked), the engine on the data disk.
pub fn guest_facts(shares: ShareProtocol) -> GuestFacts {
    let ipv4 = uplink_ipv4();
    GuestFacts {
        engine_data_dir: berth_agent_proto::boot::GUEST_DATA_DIR.into(),
        share_transport: Some(match shares {
            ShareProtocol::Virtiofs => SharesVia::Virtiofs,
            ShareProtocol::Plan9 => SharesVia::Plan9PortPerShare { first_port: super::plan9::FIRST_VSOCK_PORT },
        }),
        // virtiofsd runs as the daemon's user (virtiofsd_args).
        share_access: if nix::unistd::geteuid().is_root() { ShareAccess::Guest } else { ShareAccess::Host },
        data_disk: Some("/dev/vda".into()),
        network: Some(GuestNetwork { host_alias: ipv4.gateway, ipv4: NetConfig::Static(ipv4) }),
        dedicated_memory: true,
        own_clock: true,
        agent_log_device: crate::vm::LogDevice::default(),
    }
}

/// What QEMU boots, found once when the backend is located.
#[derive(Debug, Clone)]
pub struct QemuBoot {
    pub machine: Machine,
    pub accel: Accel,
    pub kernel: PathBuf,
    /// The built initramfs; each boot adds its key (boot_key.rs).
    pub initramfs: PathBuf,
}

/// How the guest's vsock device is provided.
#[derive(Debug, Clone, PartialEq)]
pub enum VsockMode {
    /// In-kernel vhost-vsock; the host reaches the guest with AF_VSOCK.
    Kernel { cid: u32 },
    /// vhost-user-vsock served by vhost-device-vsock.
    Hybrid { control_socket: PathBuf, agent_socket: PathBuf },
}

/// The sockets one VM boot uses, all inside the private run directory.
#[derive(Debug, Clone)]
pub struct SocketLayout {
    pub vsock: VsockMode,
    /// (share, vhost-user socket of its virtiofsd); none when the shares go over 9P.
    pub shares: Vec<(Share, PathBuf)>,
}

impl SocketLayout {
    pub fn new(spec: &VmSpec, kernel_vsock: bool) -> SocketLayout {
        let vsock = if kernel_vsock {
            // CIDs are global on the host; 3 + our pid keeps concurrent Berth homes apart.
            VsockMode::Kernel { cid: 3 + std::process::id() }
        } else {
            VsockMode::Hybrid {
                control_socket: spec.run_dir.join("vsock.sock"),
                agent_socket: spec.run_dir.join("agent.vsock"),
            }
        };
        let virtiofs = spec.share_protocol == ShareProtocol::Virtiofs;
        let shares = spec
            .shares
            .iter()
            .filter(|_| virtiofs)
            .map(|s| (s.clone(), spec.run_dir.join(format!("fs-{}.sock", s.tag))))
            .collect();
        SocketLayout { vsock, shares }
    }

    /// Every file the VM's processes create in the run directory.
    fn socket_paths(&self) -> Vec<PathBuf> {
        // virtiofsd writes `<socket>.pid` beside its socket.
        let mut paths: Vec<PathBuf> =
            self.shares.iter().flat_map(|(_, p)| [p.clone(), PathBuf::from(format!("{}.pid", p.display()))]).collect();
        if let VsockMode::Hybrid { control_socket, agent_socket } = &self.vsock {
            paths.push(control_socket.clone());
            paths.push(agent_socket.clone());
        }
        paths
    }
}

pub fn kernel_cmdline(spec: &VmSpec, machine: Machine, tsc_khz: Option<u64>) -> String {
    let mut args = machine.kernel_args(tsc_khz);
    args.extend(super::boot_params(spec, &guest_facts(spec.share_protocol)).encode());
    // For debugging boots, e.g. BERTH_KERNEL_ARGS=loglevel=7 (overrides `quiet`).
    if let Ok(extra) = std::env::var("BERTH_KERNEL_ARGS") {
        args.push(extra);
    }
    args.join(" ")
}

/// This boot's initramfs: the built one plus the agent's key (boot_key.rs).
fn boot_initramfs(spec: &VmSpec) -> PathBuf {
    spec.run_dir.join("initramfs-boot.cpio")
}

/// The guest's devices, in the order QEMU creates them (the agent's console
/// port after its controller; the data disk the only, so first, virtio-blk).
pub fn device_plan(layout: &SocketLayout) -> Vec<PlannedDevice> {
    use VirtioDevice::*;
    let mut plan = vec![
        PlannedDevice::new(Serial, &[]),
        PlannedDevice::new(Console, &["chardev=agentlog"]),
        PlannedDevice::new(Rng, &[]),
        // Free page reporting: the guest hands pages it frees back to QEMU, which
        // punches them out of the memfd, so a container's memory spike does not
        // stay charged to the host after it ends (the guest keeps its page cache;
        // only free pages are reported, in 4 MiB blocks, after ~2 s).
        PlannedDevice::new(Balloon, &["free-page-reporting=on"]),
        PlannedDevice::new(Blk, &["drive=data"]),
        PlannedDevice::new(Net, &["netdev=net0"]),
    ];
    plan.push(match &layout.vsock {
        VsockMode::Kernel { cid } => PlannedDevice::new(Vsock, &[&format!("guest-cid={cid}")]),
        VsockMode::Hybrid { .. } => PlannedDevice::new(VhostUserVsock, &["chardev=vsock"]),
    });
    for (i, (share, _)) in layout.shares.iter().enumerate() {
        plan.push(PlannedDevice::new(VhostUserFs, &[&format!("chardev=fs{i}"), &format!("tag={}", share.tag)]));
    }
    plan
}

/// QEMU's end of the VM's uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netdev {
    Slirp,
    /// passt on the other end of this inherited socket (passt.rs).
    Passt {
        fd: RawFd,
    },
}

impl Netdev {
    fn arg(self) -> String {
        match self {
            Netdev::Slirp => "user,id=net0".into(),
            Netdev::Passt { fd } => format!("stream,id=net0,server=off,addr.type=fd,addr.str={fd}"),
        }
    }
}

/// The full QEMU command line (after the program name).
pub fn qemu_args(
    spec: &VmSpec,
    boot: &QemuBoot,
    layout: &SocketLayout,
    netdev: Netdev,
    tsc_khz: Option<u64>,
) -> Result<Vec<String>> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", "berth", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    push(&cpu_args(boot.machine, boot.accel)?);
    // vhost-user devices need guest memory that other processes can map.
    let mem = format!("{}M", spec.memory_mib);
    push(&["-M", &format!("{},memory-backend=mem", boot.machine.machine_arg(tsc_khz.is_some()))]);
    push(&["-object", &format!("memory-backend-memfd,id=mem,size={mem},share=on")]);
    push(&["-m", &mem, "-smp", &spec.cpus.to_string()]);
    push(&["-kernel", &boot.kernel.display().to_string(), "-initrd", &boot_initramfs(spec).display().to_string()]);
    push(&["-append", &kernel_cmdline(spec, boot.machine, tsc_khz)]);
    // Kernel console on the machine's serial port (8250 or PL011); the
    // agent's log on a virtio console.
    push(&["-chardev", &format!("file,id=console,path={}", spec.console_log.display())]);
    push(&["-serial", "chardev:console"]);
    push(&["-chardev", &format!("file,id=agentlog,path={}", spec.agent_log.display())]);
    push(&[
        "-drive",
        &format!("id=data,file={},format=raw,if=none,discard=unmap,cache=writeback", spec.disk.display()),
    ]);
    push(&["-netdev", &netdev.arg()]);
    if let VsockMode::Hybrid { control_socket, .. } = &layout.vsock {
        push(&["-chardev", &format!("socket,id=vsock,path={}", control_socket.display())]);
    }
    for (i, (_, socket)) in layout.shares.iter().enumerate() {
        push(&["-chardev", &format!("socket,id=fs{i},path={}", socket.display())]);
    }
    for device in device_plan(layout) {
        push(&["-device", &device.render(boot.machine.bus())]);
    }
    Ok(a)
}

/// The host's TSC frequency in kHz, which the guest must be told on microvm.
pub fn host_tsc_khz(cpuinfo: &str) -> Option<u64> {
    let mhz: f64 = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0).round() as u64)
}

pub struct QemuBackend {
    boot: QemuBoot,
    qemu: PathBuf,
    virtiofsd: PathBuf,
    /// None when the host has kernel vhost-vsock.
    vsock_device: Option<PathBuf>,
    /// None when passt is not installed.
    passt: Option<PathBuf>,
}

impl QemuBackend {
    pub fn locate(arch: GuestArch) -> Result<QemuBackend> {
        let assets = crate::paths::Assets::locate()?;
        let machine = Machine::for_arch(arch);
        let accel = accel_for(arch, Accel::requested()?, Accel::detect)?;
        let (kernel, initramfs) = match arch {
            GuestArch::X86_64 => (assets.kernel()?, assets.initramfs()),
            GuestArch::Aarch64 => {
                let dir = arch.assets_dir(&assets.dir);
                let (kernel, initramfs) = (dir.join("Image"), dir.join("initramfs.cpio"));
                for file in [&kernel, &initramfs] {
                    if !file.is_file() {
                        bail!("the arm64 guest has no {}; {}", file.display(), arch.setup_hint());
                    }
                }
                super::arch::check_arm64_image(&kernel)?;
                (kernel, initramfs)
            }
        };
        let boot = QemuBoot { machine, accel, kernel, initramfs };
        let (program, package) = machine.program();
        let qemu = assets.helper(program, &format!("install Debian's {package} (`sudo apt-get install {package}`)"))?;
        let virtiofsd = assets.helper("virtiofsd", &crate::paths::install_hint())?;
        let vsock_device = if Path::new("/dev/vhost-vsock").exists() {
            None
        } else {
            Some(assets.helper("vhost-device-vsock", &crate::paths::install_hint())?)
        };
        let passt = assets.find_helper("passt");
        Ok(QemuBackend { boot, qemu, virtiofsd, vsock_device, passt })
    }

    /// The uplink to try: the one asked for, else slirp. Not passt by
    /// default: Debian 12's passt (2023-03) carried 3x less egress and 17x
    /// less download than slirp under TCG here (tests/bench/uplink.sh), and
    /// it answers a connect to a closed host port with silence, so a client
    /// waits for its timeout where slirp says "refused" at once.
    fn wanted_uplink(&self, asked: Option<Uplink>) -> Result<Uplink> {
        if asked == Some(Uplink::Passt) && self.passt.is_none() {
            bail!("vm.uplink = \"passt\" but passt is not installed (`sudo apt-get install passt`)")
        }
        Ok(asked.unwrap_or(Uplink::Slirp))
    }
}

impl VmBackend for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn accel(&self) -> &'static str {
        self.boot.accel.name()
    }

    fn facts(&self, spec: &VmSpec) -> GuestFacts {
        guest_facts(spec.share_protocol)
    }

    fn start<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Box<dyn RunningVm>>> {
        Box::pin(async move {
            super::disk::prepare_raw(&spec.disk, spec.disk_gib)?;
            let layout = SocketLayout::new(spec, self.vsock_device.is_none());
            for socket in layout.socket_paths() {
                let _ = std::fs::remove_file(&socket);
            }
            let helper_log = &spec.helpers_log;
            let qemu_log = &spec.vmm_log;
            let _ = std::fs::remove_file(qemu_log);
            let mut vm = QemuVm {
                qemu: None,
                helpers: Vec::new(),
                sockets: layout.socket_paths(),
                layout: layout.clone(),
                qemu_log: qemu_log.clone(),
                ready: None,
                plan9: None,
                uplink: Uplink::Slirp,
            };
            // Before the guest can possibly announce itself.
            vm.ready = vm.agent_endpoint().listen_for_ready().context("listening for the agent's readiness")?;
            if spec.share_protocol == ShareProtocol::Plan9 && !spec.shares.is_empty() {
                let VsockMode::Hybrid { agent_socket, .. } = &layout.vsock else {
                    bail!("9p shares need hybrid vsock (vhost-device-vsock); this host has /dev/vhost-vsock");
                };
                let diod = super::plan9::locate_diod()?;
                let server =
                    super::plan9::Plan9Server::start(&spec.shares, agent_socket, &diod, &spec.run_dir, helper_log)?;
                vm.plan9 = Some(server);
            }

            // Helpers first, in parallel; QEMU connects to their sockets.
            let mut passt = match (self.wanted_uplink(spec.uplink)?, &self.passt) {
                (Uplink::Passt, Some(program)) => {
                    let log = spec.helpers_log.with_file_name("passt.log");
                    Some(super::passt::start(program, &uplink_ipv4(), &log, helper_log)?)
                }
                _ => None,
            };
            for (share, socket) in &layout.shares {
                let mut cmd = Command::new(&self.virtiofsd);
                let user = nix::unistd::geteuid();
                let runs_as = (!user.is_root()).then(|| (user.as_raw(), nix::unistd::getegid().as_raw()));
                let cache = super::share_cache::policy(&share.host_path);
                tracing::info!(share = %share.host_path.display(), cache, "virtiofsd cache policy");
                cmd.args(virtiofsd_args(share, socket, runs_as, cache));
                super::share_policy::apply_on_exec(&mut cmd);
                let child = spawn_owned(&mut cmd, helper_log, "virtiofsd")?;
                vm.helpers.push((format!("virtiofsd[{}]", share.tag), child));
            }
            if let (Some(device), VsockMode::Hybrid { control_socket, agent_socket }) =
                (&self.vsock_device, &layout.vsock)
            {
                let mut cmd = Command::new(device);
                cmd.args(["--guest-cid", "3"]).arg("--socket").arg(control_socket).arg("--uds-path").arg(agent_socket);
                let child = spawn_owned(&mut cmd, helper_log, "vhost-device-vsock")?;
                vm.helpers.push(("vhost-device-vsock".into(), child));
            }
            let helper_sockets: Vec<PathBuf> = layout
                .shares
                .iter()
                .map(|(_, s)| s.clone())
                .chain(match &layout.vsock {
                    VsockMode::Hybrid { control_socket, .. } => Some(control_socket.clone()),
                    VsockMode::Kernel { .. } => None,
                })
                .collect();
            for (socket, (name, child)) in helper_sockets.iter().zip(vm.helpers.iter_mut()) {
                wait_for_socket(socket, child, name).await?;
            }
            // passt runs only when asked for, so one that fails fails the start.
            if let Some(uplink) = passt.as_mut() {
                super::passt::wait_ready(uplink).await?;
            }
            let netdev = match &passt {
                Some(uplink) => Netdev::Passt { fd: uplink.qemu_end.as_raw_fd() },
                None => Netdev::Slirp,
            };
            vm.uplink = if passt.is_some() { Uplink::Passt } else { Uplink::Slirp };

            let tsc_khz = self
                .boot
                .machine
                .wants_tsc_khz()
                .then(|| host_tsc_khz(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()))
                .flatten();
            let initramfs = boot_initramfs(spec);
            super::boot_key::write_initramfs_with_key(&self.boot.initramfs, &spec.agent_key, &initramfs)
                .context("writing this boot's initramfs")?;
            // Removed with the VM's sockets: it holds the key.
            vm.sockets.push(initramfs);
            let args = qemu_args(spec, &self.boot, &layout, netdev, tsc_khz)?;
            tracing::debug!(qemu = %self.qemu.display(), ?args, "starting QEMU");
            let mut cmd = Command::new(&self.qemu);
            cmd.args(&args);
            if let Netdev::Passt { fd } = netdev {
                super::passt::inherit_fd(&mut cmd, fd);
            }
            vm.qemu = Some(spawn_owned(&mut cmd, qemu_log, "QEMU")?);
            if let Some(uplink) = passt {
                // QEMU holds its end now; passt ends when QEMU's copy closes.
                drop(uplink.qemu_end);
                vm.helpers.push(("passt".into(), uplink.child));
            }
            Ok(Box::new(vm) as Box<dyn RunningVm>)
        })
    }
}

struct QemuVm {
    qemu: Option<Child>,
    helpers: Vec<(String, Child)>,
    sockets: Vec<PathBuf>,
    layout: SocketLayout,
    qemu_log: PathBuf,
    ready: Option<crate::agent_client::ReadyListener>,
    /// The 9P shares' listeners (stopped with the VM).
    plan9: Option<super::plan9::Plan9Server>,
    uplink: Uplink,
}

impl QemuVm {
    fn qemu_stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    async fn stop_helpers(&mut self) {
        for (name, mut child) in self.helpers.drain(..) {
            if let Some(pid) = child.id() {
                let _ = crate::platform::request_stop(pid);
            }
            if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                tracing::warn!(name, "helper did not stop on SIGTERM; killing it");
                let _ = child.kill().await;
            }
        }
        self.plan9 = None;
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        // kill_on_drop ends the processes; their sockets are ours to remove.
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
    }
}

impl RunningVm for QemuVm {
    fn agent_endpoint(&self) -> AgentEndpoint {
        match &self.layout.vsock {
            VsockMode::Kernel { cid } => AgentEndpoint::agent(GuestTransport::Vsock { cid: *cid }),
            VsockMode::Hybrid { agent_socket, .. } => {
                AgentEndpoint::agent(GuestTransport::HybridVsock { uds: agent_socket.clone() })
            }
        }
    }

    fn processes(&self) -> Vec<VmProcess> {
        let qemu = self.qemu.iter().filter_map(|c| c.id()).map(|pid| VmProcess { name: "qemu".into(), pid });
        let helpers =
            self.helpers.iter().filter_map(|(name, c)| c.id().map(|pid| VmProcess { name: name.clone(), pid }));
        qemu.chain(helpers).collect()
    }

    fn take_ready_listener(&mut self) -> Option<crate::agent_client::ReadyListener> {
        self.ready.take()
    }

    fn uplink(&self) -> Option<Uplink> {
        Some(self.uplink)
    }

    fn wait(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let Some(qemu) = self.qemu.as_mut() else {
                return "the VM was never started".into();
            };
            let status = qemu.wait().await;
            let tail = self.qemu_stderr_tail();
            let mut msg = match status {
                Ok(status) => format!("QEMU exited ({status})"),
                Err(err) => format!("waiting for QEMU failed: {err}"),
            };
            if !tail.is_empty() {
                msg.push_str(&format!(": {tail}"));
            }
            msg
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(mut qemu) = self.qemu.take() {
                match tokio::time::timeout(grace, qemu.wait()).await {
                    Ok(status) => tracing::info!(status = ?status.ok(), "QEMU exited"),
                    Err(_) => {
                        tracing::warn!(
                            grace_ms = grace.as_millis() as u64,
                            "the VM did not power off in time; killing QEMU"
                        );
                        let _ = qemu.kill().await;
                    }
                }
            }
            self.stop_helpers().await;
            Ok(())
        })
    }
}

/// What a share's virtiofsd is told. Root in the VM (any container's root)
/// is whoever runs virtiofsd on the host, so that is what the policy is about:
///
/// - Running as root, virtiofsd keeps a set of capabilities for its work,
///   CAP_MKNOD among them, with which a container created real device
///   nodes in the share (the host's own disk, for any host user the node's
///   mode lets in). `-mknod` makes such a MKNOD fail with EPERM; FIFOs and
///   sockets need no capability and still work. `-fsetid` makes the kernel
///   clear setuid on every write, and setgid on a chmod or create when the
///   file's group is not root's. Unprivileged, virtiofsd has no
///   capabilities at all (it then ignores --modcaps): no device nodes, and
///   writes clear setuid already.
/// - What no option of virtiofsd 1.14 stops is `chmod u+s` (and `g+s` on a
///   root-group file) by the file's owner: its SETATTR is a plain fchmod
///   with virtiofsd's own credentials, which the kernel allows an owner. The
///   guest mounts shares nosuid,nodev, so no such file works in the VM; on
///   the host it is a setuid binary of the user Berth runs as.
/// - Unprivileged (`user`: the uid and gid it runs as), every guest id is
///   that user's (squash-guest), as with the anchors: a create by any
///   container user makes the host user's file instead of failing to switch
///   to the caller's ids, and the guest leaves access checks to virtiofsd
///   (ShareAccess::Host), so the host kernel decides as for that user.
/// - `cache`: how long the guest may keep what it cached (share_cache.rs).
fn virtiofsd_args(share: &Share, socket: &Path, user: Option<(u32, u32)>, cache: &str) -> Vec<String> {
    let as_root = user.is_none();
    let mut args = vec![
        format!("--socket-path={}", socket.display()),
        format!("--shared-dir={}", share.host_path.display()),
        format!("--cache={cache}"),
        "--log-level=warn".into(),
        format!("--sandbox={}", if as_root { "namespace" } else { "none" }),
    ];
    match user {
        None => args.push("--modcaps=-mknod:-fsetid".into()),
        Some((uid, gid)) => {
            args.push(format!("--translate-uid=squash-guest:0:{uid}:{}", u32::MAX));
            args.push(format!("--translate-gid=squash-guest:0:{gid}:{}", u32::MAX));
        }
    }
    // For measuring other settings (tests/bench/files.sh), e.g.
    // BERTH_VIRTIOFSD_ARGS="--cache=always --writeback"; later ones win.
    if let Ok(extra) = std::env::var("BERTH_VIRTIOFSD_ARGS") {
        args.extend(extra.split_whitespace().map(str::to_string));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtiofsd_as_root_cannot_make_device_nodes() {
        let share = Share { tag: "share0".into(), host_path: "/home/me".into(), guest_path: "/home/me".into() };
        let socket = Path::new("/h/run/fs-share0.sock");
        let as_root = virtiofsd_args(&share, socket, None, "always");
        assert!(as_root.contains(&"--modcaps=-mknod:-fsetid".to_string()), "{as_root:?}");
        assert!(as_root.contains(&"--sandbox=namespace".to_string()), "{as_root:?}");
        let as_user = virtiofsd_args(&share, socket, Some((1001, 1002)), "always");
        assert!(as_user.contains(&"--sandbox=none".to_string()), "{as_user:?}");
        // Every guest id is the user's: a create as any container user is theirs.
        assert!(as_user.contains(&"--translate-uid=squash-guest:0:1001:4294967295".to_string()), "{as_user:?}");
        assert!(as_user.contains(&"--translate-gid=squash-guest:0:1002:4294967295".to_string()), "{as_user:?}");
        assert!(as_user.contains(&"--shared-dir=/home/me".to_string()), "{as_user:?}");
    }

    fn spec() -> VmSpec {
        VmSpec { cpus: 2, memory_mib: 1024, ..crate::vm::test_spec() }
    }

    fn boot(accel: Accel) -> QemuBoot {
        QemuBoot {
            machine: Machine::Microvm,
            accel,
            kernel: "/a/vmlinux".into(),
            initramfs: "/a/initramfs.cpio".into(),
        }
    }

    /// Every `-device`'s value, in order.
    fn device_values(args: &[String]) -> Vec<&str> {
        args.windows(2).filter(|w| w[0] == "-device").map(|w| w[1].as_str()).collect()
    }

    fn joined(args: &[String]) -> String {
        args.join(" ")
    }

    #[test]
    fn tcg_microvm_with_hybrid_vsock_and_virtiofs() {
        let spec = spec();
        let layout = SocketLayout::new(&spec, false);
        let args = joined(&qemu_args(&spec, &boot(Accel::Tcg), &layout, Netdev::Slirp, Some(2_500_000)).unwrap());
        for expected in [
            "-accel tcg,thread=multi -cpu max,-erms",
            "-M microvm,pit=off,memory-backend=mem",
            "-object memory-backend-memfd,id=mem,size=1024M,share=on",
            "-m 1024M -smp 2",
            "-kernel /a/vmlinux -initrd /h/run/initramfs-boot.cpio",
            "-chardev socket,id=vsock,path=/h/run/vsock.sock",
            "-device vhost-user-vsock-device,chardev=vsock",
            "-chardev socket,id=fs0,path=/h/run/fs-share0.sock",
            "-device vhost-user-fs-device,chardev=fs0,tag=share0",
            "-drive id=data,file=/h/disk.raw,format=raw",
            "-netdev user,id=net0",
            "-no-reboot",
        ] {
            assert!(args.contains(expected), "missing `{expected}` in {args}");
        }
        let cmdline = kernel_cmdline(&spec, Machine::Microvm, Some(2_500_000));
        // Every local user can read QEMU's command line.
        assert!(!args.contains(&spec.agent_key.to_hex()), "the agent key is in QEMU's arguments");
        assert!(cmdline.contains("tsc_early_khz=2500000"));
        assert!(cmdline.contains("berth.share=share0,/home/me"));
        assert!(cmdline.contains("reboot=t panic=-1"));
        assert!(cmdline.contains("tsc=reliable"), "an untrusted TSC keeps the idle VM ticking");
        let untold = joined(&qemu_args(&spec, &boot(Accel::Tcg), &layout, Netdev::Slirp, None).unwrap());
        assert!(untold.contains("-M microvm,memory-backend=mem"), "the PIT calibrates a TSC of unknown rate");
    }

    #[test]
    fn passt_is_the_net_devices_backend_on_the_inherited_socket() {
        let spec = spec();
        let layout = SocketLayout::new(&spec, false);
        let args = joined(&qemu_args(&spec, &boot(Accel::Tcg), &layout, Netdev::Passt { fd: 9 }, None).unwrap());
        assert!(args.contains("-netdev stream,id=net0,server=off,addr.type=fd,addr.str=9"), "{args}");
        assert!(!args.contains("user,id=net0"), "{args}");
        assert!(args.contains("-device virtio-net-device,netdev=net0"), "{args}");
    }

    #[test]
    fn arm64_boots_virt_with_the_same_devices_on_pci() {
        let spec = spec();
        let layout = SocketLayout::new(&spec, false);
        let boot = QemuBoot {
            machine: Machine::Virt,
            accel: Accel::Tcg,
            kernel: "/a/aarch64/Image".into(),
            initramfs: "/a/aarch64/initramfs.cpio".into(),
        };
        let args = qemu_args(&spec, &boot, &layout, Netdev::Slirp, None).unwrap();
        let devices = device_values(&args);
        assert_eq!(
            devices,
            [
                "virtio-serial-pci",
                "virtconsole,chardev=agentlog",
                "virtio-rng-pci",
                "virtio-balloon-pci,free-page-reporting=on",
                "virtio-blk-pci,drive=data",
                "virtio-net-pci,netdev=net0,romfile=",
                "vhost-user-vsock-pci,chardev=vsock",
                "vhost-user-fs-pci,chardev=fs0,tag=share0",
            ]
        );
        let joined = joined(&args);
        for expected in [
            "-accel tcg,thread=multi -cpu max",
            "-M virt,gic-version=max,memory-backend=mem",
            "-kernel /a/aarch64/Image",
            "-serial chardev:console",
        ] {
            assert!(joined.contains(expected), "missing `{expected}` in {joined}");
        }
        let cmdline = kernel_cmdline(&spec, Machine::Virt, None);
        assert!(cmdline.starts_with("console=ttyAMA0 "), "{cmdline}");
        assert!(cmdline.contains("berth.disk=/dev/vda"), "{cmdline}");
        assert!(!cmdline.contains("tsc") && !cmdline.contains("reboot=t"), "{cmdline}");
    }

    #[test]
    fn shares_over_9p_have_no_virtiofs_device_and_dial_their_port() {
        let spec = VmSpec { share_protocol: ShareProtocol::Plan9, ..spec() };
        let layout = SocketLayout::new(&spec, false);
        let args = joined(&qemu_args(&spec, &boot(Accel::Tcg), &layout, Netdev::Slirp, None).unwrap());
        assert!(!args.contains("vhost-user-fs") && !args.contains("fs-share0.sock"), "{args}");
        let cmdline = kernel_cmdline(&spec, Machine::Microvm, None);
        assert!(cmdline.contains("berth.share=share0,/home/me,9p,1040,/home/me"), "{cmdline}");
    }

    #[test]
    fn microvm_keeps_its_mmio_devices() {
        let spec = spec();
        let args = qemu_args(&spec, &boot(Accel::Tcg), &SocketLayout::new(&spec, true), Netdev::Slirp, None).unwrap();
        let devices = device_values(&args);
        assert_eq!(devices[0], "virtio-serial-device");
        assert!(devices.contains(&"virtio-blk-device,drive=data"), "{devices:?}");
        assert!(devices.contains(&"virtio-net-device,netdev=net0"), "{devices:?}");
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_kernel_vsock() {
        let spec = spec();
        let layout = SocketLayout::new(&spec, true);
        let args = joined(&qemu_args(&spec, &boot(Accel::Kvm), &layout, Netdev::Slirp, None).unwrap());
        assert!(args.contains("-accel kvm -cpu host"));
        assert!(args.contains("-device vhost-vsock-device,guest-cid="));
        assert!(!args.contains("vhost-user-vsock"));
        assert!(!kernel_cmdline(&spec, Machine::Microvm, None).contains("tsc_early_khz"));
    }

    #[test]
    fn other_platforms_accelerators_are_refused() {
        let spec = spec();
        let layout = SocketLayout::new(&spec, false);
        assert!(qemu_args(&spec, &boot(Accel::Hvf), &layout, Netdev::Slirp, None)
            .unwrap_err()
            .to_string()
            .contains("hvf"));
    }

    #[test]
    fn the_command_line_carries_the_boot_contract() {
        let mut spec = spec();
        spec.shares[0].guest_path = "/home/a b,c".into();
        let cmdline = kernel_cmdline(&spec, Machine::Microvm, None);
        let params = berth_agent_proto::boot::BootParams::parse(&cmdline).unwrap();
        assert_eq!(params, crate::vm::boot_params(&spec, &guest_facts(spec.share_protocol)));
        assert_eq!(params.shares[0].guest_path, "/home/a b,c");
        for expected in [
            "berth.net=10.0.2.15/24,10.0.2.2,10.0.2.3",
            "berth.hostalias=10.0.2.2",
            "berth.disk=/dev/vda",
            "berth.share=share0,/home/a%20b%2Cc",
        ] {
            assert!(cmdline.contains(expected), "missing `{expected}` in {cmdline}");
        }
    }

    #[test]
    fn kvm_needs_hardware_virtualisation() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let pvm = "processor\t: 0\nflags\t\t: fpu vme sse hypervisor\n";
        let x86 = GuestArch::X86_64;
        assert!(kvm_usable(true, vmx, x86));
        assert!(!kvm_usable(true, pvm, x86), "a /dev/kvm without vmx/svm is not usable");
        assert!(!kvm_usable(false, vmx, x86));
        assert!(kvm_usable(true, "flags : svm\n", x86));
        let arm64 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n";
        assert!(kvm_usable(true, arm64, GuestArch::Aarch64), "arm64 names no virtualisation flag");
        assert!(!kvm_usable(false, arm64, GuestArch::Aarch64));
    }

    #[test]
    fn reads_the_host_tsc_rate() {
        assert_eq!(host_tsc_khz("processor : 0\ncpu MHz\t\t: 2199.998\n"), Some(2_199_998));
        assert_eq!(host_tsc_khz("nothing"), None);
    }
}
