//! `berth daemon`: owns one VM for one `BERTH_HOME`.
//!
//! Started in the background by `berth start`, which reads exactly one
//! [`StartOutcome`] line from the daemon's stdout. The daemon holds the
//! home's lock for its whole life, boots the VM, waits for the agent,
//! records the state, and then watches: SIGTERM/SIGINT mean a clean stop
//! (agent power-off, QEMU exit, helpers stopped, sockets removed); a VM that
//! exits on its own is recorded as an error.
//!
//! It runs on a current-thread runtime: the daemon is mostly idle, one thread
//! keeps its memory small, and every child is spawned from this one thread,
//! which PR_SET_PDEATHSIG relies on.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_agent_proto::{AgentKey, InfoRequest, InfoResponse, ShutdownRequest};

use crate::agent_client::{self, AgentEndpoint};
use crate::api;
use crate::config::Config;
use crate::guest_services::GuestServices;
use crate::lifecycle::{self, StartOutcome};
use crate::paths::Paths;
use crate::share_watch::ShareRoot;
use crate::state::{Phase, State};
use crate::vm::{self, GuestFacts, RunningVm, Uplink, VmSpec};

/// Boots under TCG on a loaded 2-core machine can take a while; the first
/// boot also formats the data disk.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the VM gets to power off after the agent was asked to.
const POWER_OFF_GRACE: Duration = Duration::from_secs(15);

pub fn run(paths: Paths) -> Result<()> {
    paths.ensure_dirs()?;
    init_file_logging(&paths)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(daemon_main(&paths));
    if let Err(err) = &result {
        tracing::error!(error = %format!("{err:#}"), "daemon failed");
    }
    result
}

fn init_file_logging(paths: &Paths) -> Result<()> {
    let file = crate::private_fs::open_for_writing(&paths.daemon_log(), true)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
    Ok(())
}

/// Sends the one-line outcome to `berth start`, then detaches stdout.
fn notify(outcome: &StartOutcome) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", serde_json::to_string(outcome).unwrap_or_default());
    let _ = stdout.flush();
    // Nothing else may ever reach the starter's pipe.
    crate::platform::detach_stdout();
}

async fn daemon_main(paths: &Paths) -> Result<()> {
    // A CLI probing the lock holds it for a moment: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(1);
    let _lock = loop {
        if let Some(lock) = lifecycle::try_lock(paths)? {
            break lock;
        }
        if Instant::now() > deadline {
            notify(&StartOutcome::AlreadyRunning);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if lifecycle::recover_stale(paths)? {
        tracing::warn!("the previous daemon died without cleaning up; its leftovers were removed");
    }
    std::fs::write(paths.pid_file(), format!("{}\n", std::process::id()))?;
    State::new(Phase::Starting).write(&paths.state_file())?;
    tracing::info!(pid = std::process::id(), home = %paths.home.display(), "daemon starting");

    let mut stop_requested = crate::platform::StopSignals::install()?;

    let booted = tokio::select! {
        booted = boot(paths) => booted,
        _ = stop_requested.recv() => Err(anyhow::anyhow!("stopped while starting")),
    };
    let Booted { mut vm, mut state, info, key, facts: guest, guest_services } = match booted {
        Ok(booted) => booted,
        Err(err) => return fail_start(paths, err),
    };
    // The Docker API socket exists before `berth start` returns.
    // boot() has validated the file already.
    let config = Config::load(&paths.config_file()).ok();
    let facts = api::ApiFacts {
        berth_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: info.kernel_release.clone(),
        hostname: info.hostname.clone(),
        cpus: info.cpus,
        memory_total_bytes: info.memory_total_bytes,
        data_dir: guest.engine_data_dir.display().to_string(),
        registry: config
            .as_ref()
            .map(|c| api::RegistrySettings {
                mirrors: c.registry_mirrors.clone(),
                insecure: c.insecure_registries.clone(),
            })
            .unwrap_or_default(),
        bind_sources: match &config {
            _ if guest.share_transport.is_none() => api::BindSources::Any,
            // Unreadable now (boot() read it): nothing is known to be shared.
            // Checked where the engine sees them: a Windows bind source has
            // become /mnt/<drive>/… (api/host_paths.rs) before the check.
            c => api::BindSources::Shares {
                shares: c
                    .as_ref()
                    .map(|c| vm::shares_of(&c.shares, api::host_paths::HostPaths::of_this_host()))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|share| share.guest_path)
                    .collect(),
                config_file: paths.config_file(),
            },
        },
    };
    let tcp_address = config.as_ref().and_then(|c| c.api_tcp);
    let mut clock_task = None;
    let socket = paths.docker_api();
    let bound = state
        .agent
        .as_ref()
        .context("the VM has no agent endpoint")
        .and_then(|agent| Ok((agent.client(&key), api::bind(&socket)?)))
        .with_context(|| format!("serving the Docker API on {socket}"));
    let bound = match (bound, tcp_address) {
        (Ok((agent, listener)), Some(address)) => tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("serving the Docker API on tcp://{address} ([api] tcp in config.toml)"))
            .map(|tcp| (agent, listener, Some(tcp))),
        (bound, _) => bound.map(|(agent, listener)| (agent, listener, None)),
    };
    // Published ports: the host sockets are this daemon's, bound again from
    // the records of running containers (after a restart of the daemon).
    let publisher = state
        .agent
        .as_ref()
        .map(|endpoint| crate::ports::Publisher::new(endpoint.transport.clone(), key.clone(), guest.network.is_some()));
    let mut _ports_watch = None;
    let mut _share_watch = None;
    let (api_server, tcp_server) = match (bound, publisher) {
        (Ok((agent, listener, tcp)), Some(publisher)) => {
            if guest.own_clock {
                clock_task = Some(tokio::spawn(crate::clock_sync::keep_guest_clock(agent.clone())));
            }
            _ports_watch = Some(publisher.watch(agent.clone()));
            if guest.share_transport.is_some() {
                // Where the VM mounts the shares (vm::shares_of: a Windows directory at /mnt/<drive>).
                let roots = vm::shares_of(&state.shares, api::host_paths::HostPaths::of_this_host())
                    .into_iter()
                    .map(|share| ShareRoot { host_path: share.host_path, guest_path: share.guest_path });
                _share_watch = crate::share_watch::spawn(agent.clone(), roots.collect());
            }
            let mut ctx = api::ApiContext::new(facts, agent, publisher);
            ctx.shares = _share_watch.as_ref().map(|(watch, _)| watch.clone());
            let ctx = std::sync::Arc::new(ctx);
            let connections = api::Connections::new(api::Limits::default());
            let tcp_server = tcp.map(|listener| {
                let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(
                    address,
                    "the Docker API is also served on TCP without authentication or TLS: \
                     whoever can connect to it controls the engine"
                );
                state.docker_tcp = Some(format!("tcp://{address}"));
                tokio::spawn(api::serve_tcp(listener, ctx.clone(), connections.clone()))
            });
            (tokio::spawn(api::serve(listener, ctx, connections)), tcp_server)
        }
        (bound, _) => {
            let err = bound.err().unwrap_or_else(|| anyhow::anyhow!("the VM has no agent endpoint"));
            // The API's listener, if bound when TCP failed, was dropped
            // with `bound` (which removes a unix socket).
            shut_down(vm.as_mut(), state.agent.as_ref(), &key).await?;
            return fail_start(paths, err);
        }
    };
    state.write(&paths.state_file())?;
    tracing::info!(%socket, "serving the Docker API");
    notify(&StartOutcome::Ready {
        boot_ms: state.boot_ms.unwrap_or(0),
        accel: state.accel.clone().unwrap_or_default(),
    });

    let crashed = tokio::select! {
        why = vm.wait() => Some(why),
        _ = stop_requested.recv() => None,
    };
    if let Some(clock) = clock_task {
        clock.abort();
    }
    // Aborting drops the server, which removes the socket.
    api_server.abort();
    let _ = api_server.await;
    if let Some(tcp_server) = tcp_server {
        tcp_server.abort();
        let _ = tcp_server.await;
    }
    state.docker_tcp = None;
    match crashed {
        Some(why) => {
            tracing::error!(%why, "the VM exited unexpectedly");
            vm.stop(Duration::ZERO).await?;
            state.state = Phase::Error;
            state.error = Some(format!("the VM exited unexpectedly: {why}; see `berth logs`"));
        }
        None => {
            tracing::info!("stopping the VM");
            shut_down(vm.as_mut(), state.agent.as_ref(), &key).await?;
            state.state = Phase::Stopped;
            state.error = None;
        }
    }
    // The VM is gone: nothing may answer for it any more.
    drop(guest_services);
    state.processes.clear();
    state.write(&paths.state_file())?;
    let _ = std::fs::remove_file(paths.agent_key_file());
    let _ = std::fs::remove_file(paths.pid_file());
    tracing::info!("daemon exiting");
    Ok(())
}

/// Records why the start failed, tells `berth start`, and gives the error back.
fn fail_start(paths: &Paths, err: anyhow::Error) -> Result<()> {
    let error = format!("{err:#}");
    let mut state = State::new(Phase::Error);
    state.error = Some(error.clone());
    state.write(&paths.state_file())?;
    let _ = std::fs::remove_file(paths.pid_file());
    notify(&StartOutcome::Failed { error });
    Err(err)
}

async fn shut_down(vm: &mut dyn RunningVm, agent: Option<&AgentEndpoint>, key: &AgentKey) -> Result<()> {
    if let Some(endpoint) = agent {
        let mut client = endpoint.client(key);
        // The agent gives containers 5 s to stop (then SIGKILL) before it
        // answers; waiting less would cut that short.
        match tokio::time::timeout(Duration::from_secs(8), client.shutdown(ShutdownRequest {})).await {
            Ok(Ok(_)) => tracing::info!("the agent is shutting down"),
            Ok(Err(err)) => tracing::warn!(%err, "agent shutdown failed"),
            Err(_) => tracing::warn!("agent shutdown timed out"),
        }
    }
    vm.stop(POWER_OFF_GRACE).await
}

/// A VM whose agent answers, and what is known about it.
struct Booted {
    vm: Box<dyn RunningVm>,
    state: State,
    info: InfoResponse,
    key: AgentKey,
    facts: GuestFacts,
    /// DNS and host.docker.internal for the guest (None: they could not be
    /// offered, and the guest falls back to its own resolver).
    guest_services: Option<GuestServices>,
}

/// Boots the VM and waits for its agent. On failure nothing is left running.
async fn boot(paths: &Paths) -> Result<Booted> {
    let config = Config::load(&paths.config_file())?;
    let backend = vm::host_backend(config.backend, config.arch, config.hypervisor)?;
    for log in [paths.console_log(), paths.agent_log()] {
        rotate_log(&log);
        // QEMU writes these (chardev files) and would create them 0644.
        crate::private_fs::open_for_writing(&log, true)?;
    }
    let agent_key = agent_client::generate_agent_key().context("making the agent's key")?;
    agent_client::write_key_file(&paths.agent_key_file(), &agent_key)?;
    let spec = VmSpec {
        cpus: config.cpus,
        memory_mib: config.memory_mib,
        disk: paths.disk_image(),
        disk_gib: config.disk_gib,
        shares: vm::shares_of(&config.shares, crate::api::host_paths::HostPaths::of_this_host()),
        share_protocol: config.share_protocol,
        uplink: config.uplink,
        run_dir: paths.run_dir(),
        console_log: paths.console_log(),
        agent_log: paths.agent_log(),
        vmm_log: paths.qemu_log(),
        helpers_log: paths.helpers_log(),
        agent_log_level: std::env::var("BERTH_AGENT_LOG").unwrap_or_else(|_| "info".into()),
        engine_dir: paths.home.join("local"),
        agent_key: agent_key.clone(),
    };
    let facts = backend.facts(&spec);
    let started = Instant::now();
    let mut vm = backend.start(&spec).await?;
    let facts = vm.started_facts().unwrap_or(facts);
    // Before the guest can ask (its kernel is still booting); dropped with
    // the VM on every way out of here.
    let guest_services = GuestServices::start(&vm.agent_endpoint().transport)
        .map_err(|err| tracing::warn!(%err, "cannot serve DNS and host.docker.internal to the VM"))
        .ok();
    let mut state = State::new(Phase::Starting);
    state.accel = Some(backend.accel().into());
    state.uplink = vm.uplink();
    state.agent = Some(vm.agent_endpoint());
    state.processes = vm.processes();
    state.write(&paths.state_file())?;
    tracing::info!(
        backend = backend.name(),
        accel = backend.accel(),
        uplink = vm.uplink().map(Uplink::name),
        cpus = spec.cpus,
        memory_mib = spec.memory_mib,
        "VM started"
    );

    let endpoint = vm.agent_endpoint();
    let deadline = Instant::now() + AGENT_READY_TIMEOUT;
    let ready_listener = vm.take_ready_listener();
    let ready = tokio::select! {
        ready = async {
            match &ready_listener {
                Some(listener) => {
                    let info = tokio::time::timeout_at(deadline.into(), listener.announced())
                        .await
                        .context("the agent did not announce itself in time")??;
                    anyhow::Ok(info)
                }
                None => {
                    let mut client = agent_client::wait_until_ready(&endpoint, &agent_key, deadline).await?;
                    Ok(client.info(InfoRequest {}).await.context("asking the agent for VM info")?.into_inner())
                }
            }
        } => ready,
        why = vm.wait() => Err(anyhow::anyhow!("the VM exited during boot: {why}")),
    };
    drop(ready_listener);
    let info = match ready {
        Ok(info) => info,
        Err(err) => {
            vm.stop(Duration::ZERO).await?;
            return Err(err);
        }
    };
    let boot_ms = started.elapsed().as_millis() as u64;
    let failed: Vec<String> =
        info.mounts.iter().filter(|m| !m.mounted).map(|m| format!("{} ({}): {}", m.path, m.name, m.error)).collect();
    if !failed.is_empty() {
        shut_down(vm.as_mut(), Some(&endpoint), &agent_key).await?;
        bail!("the VM could not mount {}", failed.join("; "));
    }
    state.state = Phase::Running;
    state.boot_ms = Some(boot_ms);
    state.agent_version = Some(info.agent_version.clone());
    state.kernel_release = Some(info.kernel_release.clone());
    state.cpus = Some(info.cpus);
    state.memory_mib = Some(if facts.dedicated_memory { spec.memory_mib } else { info.memory_total_bytes >> 20 });
    state.shares = config.shares.clone();
    state.write(&paths.state_file())?;
    tracing::info!(boot_ms, agent_version = %state.agent_version.as_deref().unwrap_or(""), guest_uptime_ms = info.uptime_ms, "VM ready");
    Ok(Booted { vm, state, info, key: agent_key, facts, guest_services })
}

/// Keeps the previous boot's log beside the new one.
fn rotate_log(path: &std::path::Path) {
    if path.exists() {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
}
