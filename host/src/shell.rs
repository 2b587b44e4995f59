//! `berth shell [-- CMD ARGS...]`: run a command in the VM through the
//! agent's Exec stream, with the exit code passed through.
//!
//! With a terminal on both stdin and stdout the remote process gets a pty
//! (raw mode locally, window size kept in sync); otherwise stdin, stdout and
//! stderr are plain streams, and SIGINT/SIGTERM/SIGHUP are forwarded.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_agent_proto::{exec_input, exec_output, ExecInput, ExecStart, WindowSize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::lifecycle::effective_state;
use crate::paths::Paths;
use crate::platform::{RawMode, ShellEvent, ShellSignals};
use crate::state::Phase;

pub fn run(paths: &Paths, command: Vec<String>) -> Result<i32> {
    let state = effective_state(paths)?;
    if state.state != Phase::Running {
        bail!("the Berth VM is not running (state: {:?}); start it with `berth start`", state.state);
    }
    let endpoint = state.agent.context("the daemon recorded no agent endpoint")?;
    let key = crate::agent_client::read_key_file(&paths.agent_key_file())?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let argv = if command.is_empty() {
        vec!["/bin/sh".to_string(), if tty { "-l" } else { "-s" }.to_string()]
    } else {
        command
    };
    let mut env = Vec::new();
    if tty {
        if let Ok(term) = std::env::var("TERM") {
            env.push(format!("TERM={term}"));
        }
    }
    let start = ExecStart {
        argv,
        env,
        cwd: guest_cwd(&state.shares).map(|p| p.display().to_string()).unwrap_or_default(),
        tty,
        size: if tty { terminal_size() } else { None },
        stdin: true,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _raw = if tty { Some(RawMode::enter()?) } else { None };
    runtime.block_on(async move {
        let mut client = endpoint.client(&key);
        crate::agent_client::ping(&mut client).await?;
        exec(client, start, tty).await
    })
}

/// The current directory, if the VM sees it at the same path (it is inside a share).
fn guest_cwd(shares: &[PathBuf]) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    shares.iter().any(|share| cwd.starts_with(share)).then_some(cwd)
}

async fn exec(
    mut client: berth_agent_proto::agent_client::AgentClient<tonic::transport::Channel>,
    start: ExecStart,
    tty: bool,
) -> Result<i32> {
    let (tx, rx) = mpsc::channel::<ExecInput>(16);
    tx.send(ExecInput { input: Some(exec_input::Input::Start(start)) }).await?;

    // Blocking stdin reads live on their own thread; the process exits
    // without waiting for it.
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = stdin_tx.blocking_send(ExecInput { input: Some(exec_input::Input::CloseStdin(true)) });
                    return;
                }
                Ok(n) => {
                    let msg = ExecInput { input: Some(exec_input::Input::Stdin(buf[..n].to_vec())) };
                    if stdin_tx.blocking_send(msg).is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(forward_signals(tx.clone(), tty));
    drop(tx);

    let mut output = client.exec(ReceiverStream::new(rx)).await.context("starting the command in the VM")?.into_inner();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(msg) = output.message().await.context("the exec stream broke")? {
        match msg.output {
            Some(exec_output::Output::Stdout(data)) => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Some(exec_output::Output::Stderr(data)) => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            Some(exec_output::Output::Exit(exit)) => return Ok(exit.code),
            Some(exec_output::Output::Pid(_)) | None => {}
        }
    }
    bail!("the exec stream ended without an exit status")
}

async fn forward_signals(tx: mpsc::Sender<ExecInput>, tty: bool) -> Result<()> {
    let mut signals = ShellSignals::install()?;
    loop {
        let input = match signals.next().await {
            ShellEvent::Resized => match terminal_size() {
                Some(size) if tty => exec_input::Input::Resize(size),
                _ => continue,
            },
            ShellEvent::Signal(number) => exec_input::Input::Signal(number),
        };
        if tx.send(ExecInput { input: Some(input) }).await.is_err() {
            return Ok(());
        }
    }
}

fn terminal_size() -> Option<WindowSize> {
    crate::platform::terminal_size().map(|(rows, cols)| WindowSize { rows, cols })
}
