//! `berth`: the host CLI and daemon. See docs/ARCHITECTURE.md for the map.

// Only Linux has a VM backend today; elsewhere the platform-neutral plumbing
// (agent client, VM spec, config) compiles but has no caller yet.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

mod agent_client;
mod api;
mod clock_sync;
mod config;
mod daemon;
mod docker_context;
mod guest_services;
mod lifecycle;
mod logs;
mod paths;
mod platform;
mod ports;
mod private_fs;
mod share_watch;
mod shell;
mod state;
mod version;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "Linux containers in a lightweight VM", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot the Berth VM (in the background) and return once its agent answers.
    Start,
    /// Power the VM off and stop the daemon.
    Stop,
    /// Show whether the VM runs, and how.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show the versions of berth, the running VM's agent and kernel, and the helpers.
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
    },
    /// Print a shell completion script (e.g. `berth completions bash > /etc/bash_completion.d/berth`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `berth man | man -l -`.
    Man,
    /// Run the daemon in the foreground (`berth start` does this for you).
    #[command(hide = true)]
    Daemon,
    /// Run a Virtualization.framework VM from its plan (the daemon starts this).
    #[cfg(target_os = "macos")]
    #[command(hide = true, name = vm::vz::HELPER_SUBCOMMAND)]
    VzVmm { plan: std::path::PathBuf },
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
        Command::Man => {
            clap_mangen::Man::new(cli).render(&mut std::io::stdout())?;
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
    if !writes_to_sockets(&cli.command) {
        restore_default_sigpipe();
    }
    if !matches!(cli.command, Command::Daemon) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "warn".into());
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().init();
    }
    let result = match print_cli_docs(&cli.command) {
        Ok(true) => Ok(0),
        Ok(false) => run(cli.command),
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

fn run(command: Command) -> Result<i32> {
    let paths = paths::Paths::from_env()?;
    if !matches!(command, Command::Start | Command::Daemon) {
        paths.check_dirs()?;
    }
    match command {
        Command::Start => lifecycle::start(&paths).map(|()| 0),
        Command::Stop => lifecycle::stop(&paths).map(|()| 0),
        Command::Version { json } => version::show(&paths, json).map(|()| 0),
        Command::Status { json } => lifecycle::status(&paths, json).map(|()| 0),
        Command::Shell { command } => shell::run(&paths, command),
        Command::Logs { follow, source } => logs::show(&paths, follow, source).map(|()| 0),
        Command::Daemon => daemon::run(paths).map(|()| 0),
        #[cfg(target_os = "macos")]
        Command::VzVmm { plan } => vm::vz::helper::run(&plan),
        Command::Completions { .. } | Command::Man => unreachable!("answered by print_cli_docs"),
    }
}
