//! `berth`: the host CLI and daemon. See docs/ARCHITECTURE.md for the map.

// Only Linux has a VM backend today; elsewhere the platform-neutral plumbing
// (agent client, VM spec, config) compiles but has no caller yet.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

mod agent_client;
mod api;
mod clock_sync;
mod config;
mod config_edit;
mod daemon;
mod docker_context;
#[cfg(target_os = "linux")]
mod doctor;
mod guest_services;
mod lifecycle;
mod logs;
mod paths;
mod platform;
mod ports;
mod private_fs;
mod profiles;
mod share_watch;
mod shell;
mod state;
mod ui;
mod version;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "Linux containers in a lightweight VM", propagate_version = true)]
struct Cli {
    /// Work on this profile: another VM, with its own home, config, socket and docker context
    /// (`berth-NAME`); without it, the default profile.
    #[arg(short, long, global = true, env = "BERTH_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// Print only what was asked for, warnings and errors (no progress or confirmations).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the Berth VM (in the background) and return once its agent answers.
    ///
    /// --cpus, --memory and --disk are written to the profile's config.toml
    /// (as `berth config set` would), so later starts keep them.
    Start {
        /// CPUs of the VM (vm.cpus).
        #[arg(long)]
        cpus: Option<u32>,
        /// Memory of the VM, e.g. 8G or 512M; a bare number is GiB (vm.memory-mib).
        #[arg(long, value_name = "SIZE")]
        memory: Option<String>,
        /// Size of the data disk, e.g. 100G; it can grow, not shrink (vm.disk-gib).
        #[arg(long, value_name = "SIZE")]
        disk: Option<String>,
    },
    /// Power the VM off and stop the daemon.
    Stop,
    /// Show whether the VM runs, and how.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the profiles with their state, CPUs, memory, disk and accelerator.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check that Berth can run here, and say how to fix what is wrong.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Print docs/TROUBLESHOOTING.md, generated from the checks.
        #[arg(long, hide = true)]
        troubleshooting_page: bool,
    },
    /// Read or change the profile's config.toml (checked as the file is).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Show the versions of berth, the running VM's agent and kernel, the assets' kernel, and the helpers.
    Version {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in the VM (an interactive shell when none is given).
    Shell {
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show the daemon, VM console and agent logs.
    Logs {
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only this log.
        #[arg(long, value_enum)]
        source: Option<logs::Source>,
        /// Only lines since this time: a duration ago (10m, 1h30m, 2d) or an RFC 3339 timestamp.
        /// Logs without timestamps (console, qemu, helpers) are shown whole if written to since then.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
    },
    /// Print a shell completion script (e.g. `berth completions bash > /etc/bash_completion.d/berth`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `berth man | man -l -`.
    Man {
        /// Write berth.1 and a page per command (berth-start.1, ...) into this directory instead,
        /// as packages install them.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Run the daemon in the foreground (`berth start` does this for you).
    #[command(hide = true)]
    Daemon,
    /// Run a Virtualization.framework VM from its plan (the daemon starts this).
    #[cfg(target_os = "macos")]
    #[command(hide = true, name = vm::vz::HELPER_SUBCOMMAND)]
    VzVmm { plan: std::path::PathBuf },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print a key's effective value (its default when the file does not set it).
    Get {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(config_edit::KEYS))]
        key: String,
    },
    /// Set a key, e.g. `berth config set vm.cpus 4` or `berth config set vm.shares '["~", "/srv"]'`.
    Set {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(config_edit::KEYS))]
        key: String,
        /// A TOML value (4, "text", ["a", "b"]); anything else is taken as text.
        value: String,
    },
    /// Print the config file's path.
    Path,
}

/// Completions and the man page come from the same clap definitions as the
/// parser, so they cannot fall behind it.
fn print_cli_docs(command: &Command) -> Result<bool> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "berth", &mut std::io::stdout());
            Ok(true)
        }
        Command::Man { dir: None } => {
            clap_mangen::Man::new(cli).render(&mut std::io::stdout())?;
            Ok(true)
        }
        Command::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(cli, dir)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The commands that write to sockets a peer may close, which must see
/// EPIPE rather than die of SIGPIPE.
fn writes_to_sockets(command: &Command) -> bool {
    match command {
        Command::Daemon | Command::Shell { .. } => true,
        #[cfg(target_os = "macos")]
        Command::VzVmm { .. } => true,
        _ => false,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::set_quiet(cli.quiet);
    if !writes_to_sockets(&cli.command) {
        restore_default_sigpipe();
    }
    if !matches!(cli.command, Command::Daemon) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "warn".into());
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ui::stderr_color())
            .without_time()
            .init();
    }
    let result = match print_cli_docs(&cli.command) {
        Ok(true) => Ok(0),
        Ok(false) => run(cli.profile.as_deref(), cli.command),
        Err(err) => Err(err),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("berth: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The CLI ends quietly when its reader goes away (`berth status | head -1`),
/// as every Unix tool does: the Rust runtime ignores SIGPIPE, which turns
/// each print into a panic on a closed pipe. Default SIGPIPE covers every
/// print at once (println!, the log follower), where handling EPIPE would need every write site to get it
/// right. The daemon keeps SIGPIPE ignored: a client that hangs up on the
/// API must cost it that connection only; so does `berth shell`, which also
/// writes to the agent's socket and reports a broken one as an error.
fn restore_default_sigpipe() {
    platform::restore_default_sigpipe();
}

fn run(profile: Option<&str>, command: Command) -> Result<i32> {
    // The daemon is started with BERTH_HOME set to its profile's home.
    let paths = match command {
        Command::Daemon => paths::Paths::from_env()?,
        _ => paths::Paths::for_profile(profile)?,
    };
    if !matches!(command, Command::Start { .. } | Command::Daemon | Command::Config { .. } | Command::Doctor { .. }) {
        paths.check_dirs()?;
    }
    match command {
        Command::Start { cpus, memory, disk } => {
            let changes = config_edit::start_flag_changes(cpus, memory.as_deref(), disk.as_deref())?;
            lifecycle::start(&paths, &changes).map(|()| 0)
        }
        Command::List { json } => profiles::list(&paths, json).map(|()| 0),
        #[cfg(target_os = "linux")]
        Command::Doctor { troubleshooting_page: true, .. } => {
            print!("{}", doctor::troubleshooting_page());
            Ok(0)
        }
        #[cfg(target_os = "linux")]
        Command::Doctor { json, .. } => doctor::run(&paths, json),
        #[cfg(not(target_os = "linux"))]
        Command::Doctor { .. } => anyhow::bail!("`berth doctor` checks the Linux backend only, so far"),
        Command::Config { action } => config_command(&paths, action).map(|()| 0),
        Command::Stop => lifecycle::stop(&paths).map(|()| 0),
        Command::Version { json } => version::show(&paths, json).map(|()| 0),
        Command::Status { json } => lifecycle::status(&paths, json).map(|()| 0),
        Command::Shell { command } => shell::run(&paths, command),
        Command::Logs { follow, source, since } => logs::show(&paths, follow, source, since.as_deref()).map(|()| 0),
        Command::Daemon => daemon::run(paths).map(|()| 0),
        #[cfg(target_os = "macos")]
        Command::VzVmm { plan } => vm::vz::helper::run(&plan),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("answered by print_cli_docs"),
    }
}

fn config_command(paths: &paths::Paths, action: ConfigAction) -> Result<()> {
    match action {
        ConfigAction::Get { key } => {
            println!("{}", config_edit::get(&config::Config::load(&paths.config_file())?, &key)?)
        }
        ConfigAction::Set { key, value } => {
            paths.ensure_dirs()?;
            config_edit::set(&paths.config_file(), &[(key.as_str(), config_edit::parse_value(&value))])?;
            ui::say(format_args!(
                "{key} set in {} (takes effect at the next `berth start`)",
                paths.config_file().display()
            ));
        }
        ConfigAction::Path => println!("{}", paths.config_file().display()),
    }
    Ok(())
}
