//! berth-agent: the guest side of Berth.
//!
//! In the VM it is PID 1 (the initramfs's /init): it sets the system up
//! (init.rs), then serves the agent protocol on vsock. On a Linux host it can
//! also run as an ordinary root process serving on a unix socket
//! (`berth-agent --unix PATH`), the "local agent".

mod admission;
mod archive;
mod build;
mod child_fds;
mod clock;
mod containers;
mod dhcp;
mod error;
mod events;
mod exec;
mod filters;
mod host_link;
mod images;
mod init;
mod panics;
mod ports;
mod reaper;
mod rosetta;
mod service;
mod service_mode;
mod service_net;
mod share_changes;
mod sysinfo;
mod volumes;
mod vsock_window;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use berth_agent_proto::agent_server::AgentServer;
use berth_agent_proto::boot::{BootParams, LogDevice};
use berth_agent_proto::{MountStatus, AGENT_VSOCK_PORT};
use tokio::sync::Notify;

enum Listen {
    Vsock(u32),
    Unix(PathBuf),
}

struct Args {
    listen: Listen,
    /// Where the engine keeps its state (the data disk in the VM).
    data_dir: PathBuf,
    /// Run as a service under another init (service_mode.rs).
    service: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: berth-agent [--vsock-port PORT | --unix PATH] [--data-dir DIR] [--service]\n  (as PID 1 it initialises the VM and listens on vsock port {AGENT_VSOCK_PORT};\n  --service: under another init, as in WSL)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        listen: Listen::Vsock(AGENT_VSOCK_PORT),
        data_dir: PathBuf::from(berth_agent_proto::boot::GUEST_DATA_DIR),
        service: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--vsock-port" => {
                parsed.listen = Listen::Vsock(args.next().and_then(|p| p.parse().ok()).unwrap_or_else(|| usage()))
            }
            "--unix" => parsed.listen = Listen::Unix(args.next().map(PathBuf::from).unwrap_or_else(|| usage())),
            "--data-dir" => parsed.data_dir = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--service" => parsed.service = true,
            "--version" => {
                println!("berth-agent {}", service::AGENT_VERSION);
                std::process::exit(0)
            }
            _ => usage(),
        }
    }
    parsed
}

fn init_logging(filter: &str, device: LogDevice) {
    use tracing_subscriber::EnvFilter;
    // In the VM, the agent's log has a console of its own (a virtio console
    // under QEMU and VZ, COM2 under HCS; the host writes it to agent.log),
    // apart from the kernel's console.
    let writer = if std::process::id() == 1 { open_log_device(device).ok() } else { None };
    let builder = tracing_subscriber::fmt().with_env_filter(EnvFilter::new(filter)).with_ansi(false);
    match writer {
        Some(file) => builder.with_writer(std::sync::Mutex::new(file)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

/// The log console, opened without becoming the controlling terminal (PID
/// 1 must never get a terminal's signals); a UART is set raw, so that each
/// line reaches the host as written.
fn open_log_device(device: LogDevice) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open(device.path())?;
    if device.is_serial() {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let mut termios = tcgetattr(&file)?;
        cfmakeraw(&mut termios);
        tcsetattr(&file, SetArg::TCSANOW, &termios)?;
    }
    Ok(file)
}

fn main() {
    // The per-container supervisor is this same binary (see engine/shim.rs).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 3 && argv[1] == "shim" {
        panics::abort_on_panic();
        std::process::exit(berth_engine::shim::main(std::path::Path::new(&argv[2])));
    }
    // `docker cp` / `docker export`: started by containers.rs (archive_helper).
    if argv.len() == 4 && argv[1] == "archive" {
        std::process::exit(archive_main(&argv[2].to_string_lossy(), &argv[3].to_string_lossy()));
    }
    // `docker exec`'s process: started by the agent's Exec (containers.rs).
    if argv.len() == 3 && argv[1] == "enter" && argv[2] == "-" {
        panics::abort_on_panic();
        // First: the plan's descriptor must not be taken by anything we open.
        let plan = berth_engine::runtime::read_plan_fd();
        let result = plan
            .map_err(|e| format!("reading the exec plan: {e}"))
            .and_then(|plan| berth_engine::runtime::enter(&plan).map_err(|e| e.to_string()));
        match result {
            Ok(code) => std::process::exit(code),
            Err(message) => {
                eprintln!("OCI runtime exec failed: exec failed: {message}: unknown");
                // Docker answers a failed exec with 126, whatever the cause.
                std::process::exit(126);
            }
        }
    }
    let Args { listen, data_dir, service } = parse_args();
    let is_init = std::process::id() == 1;
    // First of all: nothing started later may find the key where it was.
    let key = admission::take_key(is_init);
    let started = Instant::now();
    // Known once init has mounted storage; Info and the readiness
    // announcement read them, so they never see a half-initialised VM.
    let mounts: Mounts = Arc::new(OnceLock::new());
    // Before any child: its loop starts with the runtime, in serve().
    let reaper = reaper::Reaper::new();
    let mut init_thread = None;
    // The uplink's resolver (the fallback of the host's), in the VM.
    let mut uplink_dns = None;
    if is_init {
        let switched = init::switch_to_tmpfs_root();
        // Nothing works without /proc and /dev, logging included.
        let basics = init::mount_basics();
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let params = BootParams::parse(&cmdline);
        let (filter, device) = match &params {
            Ok(p) => (p.log.as_deref().unwrap_or("info"), p.log_device),
            Err(_) => ("info", LogDevice::default()),
        };
        init_logging(filter, device);
        if let Err(err) = switched {
            tracing::error!(%err, "moving the root filesystem to tmpfs failed; containers cannot start");
        }
        if let Err(err) = basics {
            tracing::error!(%err, "mounting the basic filesystems failed");
        }
        let params = params.unwrap_or_else(|err| {
            tracing::error!(%err, "bad kernel command line; booting with defaults");
            BootParams::default()
        });
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            kernel_uptime_ms = sysinfo::uptime_ms(),
            "agent started"
        );
        // Storage, network and the rest of the set-up mostly wait on virtio
        // devices (tens of milliseconds each under emulation): run them side
        // by side, and beside the start of the server.
        uplink_dns = match params.net {
            Some(berth_agent_proto::boot::NetConfig::Static(net)) => Some(net.dns),
            // Known only once leased, after the resolvers start; VZ's NAT
            // (the DHCP network) serves DNS at its gateway, the host alias.
            Some(berth_agent_proto::boot::NetConfig::Dhcp) => params.host_alias,
            None => None,
        };
        let mounts = mounts.clone();
        let reaper = reaper.clone();
        init_thread = Some(std::thread::spawn(move || {
            let (disk, shares, access) = (params.disk.clone(), params.shares.clone(), params.share_access);
            let storage = std::thread::spawn(move || init::mount_storage(disk.as_deref(), &shares, access, &reaper));
            let net = params.net;
            let network = std::thread::spawn(move || init::configure_network(net));
            init::configure_system(&params);
            if let Some(tag) = &params.rosetta {
                match rosetta::enable(tag) {
                    Ok(()) => tracing::info!(tag, "Rosetta registered for x86_64 programs"),
                    Err(err) => tracing::warn!(tag, %err, "no Rosetta: amd64 images will not run"),
                }
            }
            let _ = network.join();
            let _ = mounts.set(storage.join().unwrap_or_default());
            tracing::info!(ms = started.elapsed().as_millis() as u64, "system initialised");
        }));
    } else {
        // Not PID 1: the log goes to stderr.
        init_logging(&std::env::var("BERTH_AGENT_LOG").unwrap_or_else(|_| "info".into()), LogDevice::default());
        if service {
            match service_mode::prepare(&data_dir) {
                Ok(cgroup) => {
                    tracing::info!(cgroup = %cgroup.display(), data = %data_dir.display(), "prepared as a service")
                }
                Err(err) => tracing::error!(%err, "preparing the service failed; containers may not start"),
            }
        }
        let _ = mounts.set(Vec::new());
        // Orphans of the processes we run come back to us, to be reaped.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }

    // Workers, not one thread: a store fsync, a directory walk or a slow
    // mount in one request must not stall every other (issue 9). Two at
    // least, so that one blocked worker leaves another even on one vCPU.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("agent-worker")
        .enable_all()
        .build()
        .expect("tokio runtime");
    if key.is_none() {
        tracing::error!("started without an agent key: every connection will be refused");
    }
    // Handlers' panics are answered (panics.rs) and spawned tasks' are
    // caught by tokio; one that still reaches this far must not unwind out
    // of PID 1 (a kernel panic): it powers off cleanly as an error does.
    let serving = std::panic::AssertUnwindSafe(|| {
        let network = Network { in_vm: is_init, uplink_dns };
        let boot = Boot { started, mounts: mounts.clone(), init_thread, reaper };
        runtime.block_on(serve(listen, key, data_dir, boot, network))
    });
    let result = std::panic::catch_unwind(serving).unwrap_or_else(|payload| {
        Err(anyhow::anyhow!("the agent panicked: {}", berth_agent_proto::panics::message(&*payload)))
    });
    if let Err(err) = &result {
        tracing::error!(err = %format!("{err:#}"), "agent failed");
    }
    drop(runtime);
    if is_init {
        init::power_off(mounts.get().map(Vec::as_slice).unwrap_or_default());
    }
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// `berth-agent archive stat|get|put|export PLAN`: in the container's root,
/// stat a path (JSON on stdout), write a tar of it to stdout, or extract a
/// tar from stdin into it. Exit 2: the path does not exist.
fn archive_main(op: &str, plan: &str) -> i32 {
    use berth_engine::archive;
    let result = (|| -> std::io::Result<()> {
        let plan: archive::ArchivePlan =
            serde_json::from_str(plan).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        archive::enter_root(&plan)?;
        let path = std::path::Path::new(&plan.path);
        let stdout = std::io::stdout().lock();
        match op {
            "stat" => {
                let stat = archive::stat(path)?;
                serde_json::to_writer(stdout, &stat).map_err(std::io::Error::other)
            }
            "get" => archive::write_tar(path, std::io::BufWriter::new(stdout)),
            "put" => archive::extract(std::io::stdin().lock(), path),
            "export" => archive::write_tar(std::path::Path::new("/"), std::io::BufWriter::new(stdout)),
            other => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("unknown archive op {other}"))),
        }
    })();
    match result {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{err}");
            if err.kind() == std::io::ErrorKind::NotFound {
                2
            } else {
                1
            }
        }
    }
}

/// What the agent knows of its network at start.
struct Network {
    /// The VM's network is the agent's to set up (service addresses).
    in_vm: bool,
    uplink_dns: Option<std::net::Ipv4Addr>,
}

/// The data disk and shares as init mounted them (set once).
pub type Mounts = Arc<OnceLock<Vec<MountStatus>>>;

/// What main set up before the runtime existed.
struct Boot {
    started: Instant,
    /// Known once the init thread has mounted storage.
    mounts: Mounts,
    init_thread: Option<std::thread::JoinHandle<()>>,
    /// Made first, so the init thread's children go through it too.
    reaper: reaper::Reaper,
}

async fn serve(
    listen: Listen,
    key: Option<berth_agent_proto::AgentKey>,
    data_dir: PathBuf,
    boot: Boot,
    network: Network,
) -> anyhow::Result<()> {
    let Boot { started, mounts, init_thread, reaper } = boot;
    let shutdown = Arc::new(Notify::new());
    reaper.start()?;
    let host = match &listen {
        Listen::Vsock(_) => host_link::HostLink::Vsock,
        Listen::Unix(path) => host_link::HostLink::Unix(berth_agent_proto::host_services::local_socket(path)),
    };
    let upstream = service_net::upstream(&host, network.uplink_dns);
    if network.in_vm {
        let nft = service_net::ReaperNft(reaper.clone());
        tokio::spawn(service_net::start(host.clone(), upstream.clone(), network.uplink_dns, nft));
    }
    let events = Arc::new(events::Events::default());
    let local = matches!(listen, Listen::Unix(_));
    let containers = containers::Containers::new(data_dir.join("containers"), reaper.clone(), events, local);
    let service = service::AgentService {
        reaper,
        containers: containers.clone(),
        mounts: mounts.clone(),
        started,
        shutdown: shutdown.clone(),
        images: Arc::new(images::ImagesSlot::new(data_dir.join("images"))),
        owns_clock: std::process::id() == 1,
        raises_share_changes: std::process::id() == 1,
    };
    // The embedded DNS servers read the network store through a weak
    // handle: the containers own the servers, which must not own them back.
    let names_of = Arc::downgrade(&containers);
    let names =
        berth_engine::dns::Visible(move |id: &str| names_of.upgrade().map(|c| c.visible_names(id)).unwrap_or_default());
    containers.serve_dns(berth_engine::dns::resolvers::EmbeddedResolvers::new(
        Arc::new(names),
        upstream.clone(),
        Arc::new(service_net::ReaperNft(service.reaper.clone())),
    ));
    let forwarder = containers.clone();
    // The engine's state lives on the data disk, which the init thread is
    // still mounting: a request served before would find empty directories
    // on the initramfs and keep them as the truth (every container "no
    // such container" until the next boot). The mounts take tens of ms.
    while mounts.get().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Re-adopt running containers, and start the ones whose restart policy
    // asks for it after a boot.
    tokio::spawn(async move {
        if let Err(err) = containers.restart_after_boot().await {
            tracing::warn!(err = %err.message(), "loading containers failed");
        }
    });
    let router = tonic::transport::Server::builder().layer(panics::layer()).add_service(AgentServer::new(service));
    // Exec streams still open at shutdown would hold a graceful stop forever.
    let stop = async move {
        shutdown.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    match listen {
        Listen::Vsock(port) => {
            let forwarding = vsock_window::listen(ports::PORTS_VSOCK_PORT, false)?;
            ports::serve(admission::admit_vsock(forwarding, key.clone()), forwarder);
            let listener = vsock_window::listen(port, true)?;
            tracing::info!(port, ms = started.elapsed().as_millis() as u64, "serving on vsock");
            tokio::spawn(announce_ready(mounts, init_thread));
            run_until(router.serve_with_incoming(admission::admit_vsock(listener, key)), stop).await
        }
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            // Port P of a local agent is `<path>_P` (the host's GuestTransport::Unix).
            let forwarding = PathBuf::from(format!("{}_{}", path.display(), ports::PORTS_VSOCK_PORT));
            let _ = std::fs::remove_file(&forwarding);
            ports::serve(admission::admit_unix(bind_private_unix(&forwarding)?, key.clone()), forwarder);
            let listener = bind_private_unix(&path)?;
            tracing::info!(path = %path.display(), "serving on unix socket");
            let result = run_until(router.serve_with_incoming(admission::admit_unix(listener, key)), stop).await;
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&forwarding);
            result
        }
    }
}

/// A unix socket only its owner can connect to, from its first moment.
fn bind_private_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    // SAFETY: umask only swaps the process's file-creation mask; the old
    // mask is put back right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let listener = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    listener
}

/// Tells the host we serve, and what Info would say (see
/// AGENT_READY_VSOCK_PORT in agent.proto). The connection is opened while
/// init is still finishing; the announcement goes out as soon as it is done.
async fn announce_ready(mounts: Mounts, init_thread: Option<std::thread::JoinHandle<()>>) {
    use berth_agent_proto::prost::Message;
    use tokio::io::AsyncWriteExt;
    let init_done = tokio::task::spawn_blocking(move || {
        if let Some(thread) = init_thread {
            let _ = thread.join();
        }
    });
    let (stream, _) = tokio::join!(connect_to_host(), init_done);
    let Some(mut stream) = stream else { return };
    let announcement = berth_agent_proto::ReadyAnnouncement {
        protocol_version: berth_agent_proto::PROTOCOL_VERSION,
        info: Some(service::info(mounts.get().map(Vec::as_slice).unwrap_or_default())),
    }
    .encode_length_delimited_to_vec();
    match stream.write_all(&announcement).await {
        Ok(()) => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            tracing::info!("announced readiness to the host");
        }
        Err(err) => tracing::warn!(%err, "could not announce readiness to the host; it will find us by polling"),
    }
}

async fn connect_to_host() -> Option<tokio_vsock::VsockStream> {
    let host = tokio_vsock::VsockAddr::new(libc::VMADDR_CID_HOST, berth_agent_proto::AGENT_READY_VSOCK_PORT);
    let mut last_err = None;
    for _ in 0..100 {
        match tokio_vsock::VsockStream::connect(host).await {
            Ok(stream) => return Some(stream),
            Err(err) => last_err = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(err = ?last_err, "could not reach the host to announce readiness; it will find us by polling");
    None
}

async fn run_until(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::select! {
        result = server => Ok(result?),
        () = stop => Ok(()),
    }
}
