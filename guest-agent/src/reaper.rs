//! Child-process bookkeeping for an agent that is (or acts as) PID 1.
//!
//! As PID 1 (or a child subreaper) the agent inherits every orphan in the VM
//! and must reap them, or they stay zombies forever. Reaping with
//! `waitpid(-1)` would steal exit statuses from the processes the agent spawns
//! itself, so *all* waiting goes through this one place: a SIGCHLD-driven loop
//! reaps everything and hands each status to whoever registered its pid.
//! Nothing else in the agent may call `wait` on a child.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Shell convention: exit code, or 128 + signal.
    pub code: i32,
    /// The terminating signal, 0 when the process exited normally.
    pub signal: i32,
}

impl Exit {
    fn from_wait_status(status: WaitStatus) -> Option<(Pid, Exit)> {
        match status {
            WaitStatus::Exited(pid, code) => Some((pid, Exit { code, signal: 0 })),
            WaitStatus::Signaled(pid, sig, _) => {
                let sig = sig as i32;
                Some((pid, Exit { code: 128 + sig, signal: sig }))
            }
            _ => None,
        }
    }
}

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
}

#[derive(Clone, Default)]
pub struct Reaper {
    registry: Arc<Mutex<Registry>>,
}

impl Reaper {
    /// The registry alone: children spawned through it keep their status
    /// until the loop runs (the init thread formats the disk before then).
    pub fn new() -> Reaper {
        Reaper::default()
    }

    /// Starts the reaping loop on the current runtime.
    pub fn start(&self) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let looping = self.clone();
        tokio::spawn(async move {
            loop {
                looping.reap_ready();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Spawns `cmd` and returns the child and a receiver for its exit.
    ///
    /// The registry lock is held across spawn and registration: the reaping
    /// loop takes the same lock before handing out a status, so a child that
    /// exits at once still finds its waiter.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut registry = self.registry.lock().unwrap();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        registry.waiting.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Waits on this (blocking) thread for `pid`, spawned by [`spawn`], without
    /// the reaping loop. A blocking caller may hold a lock the runtime
    /// thread is waiting for (the network store's, while nft runs), and the
    /// loop runs on that runtime: waiting for it would deadlock.
    ///
    /// [`spawn`]: Reaper::spawn
    pub fn wait_blocking(&self, pid: i32, mut exited: oneshot::Receiver<Exit>) -> std::io::Result<Exit> {
        loop {
            {
                // Under the registry lock: the loop dispatches under it too.
                let mut registry = self.registry.lock().unwrap();
                if let Ok(exit) = exited.try_recv() {
                    return Ok(exit);
                }
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                    Ok(status) => {
                        if let Some((_, exit)) = Exit::from_wait_status(status) {
                            registry.waiting.remove(&pid);
                            return Ok(exit);
                        }
                    }
                    // The loop reaped it and is about to hand the status
                    // over (it needs the registry lock, released below).
                    Err(Errno::ECHILD) => {
                        drop(registry);
                        return exited.blocking_recv().map_err(|_| std::io::Error::other("the exit status was lost"));
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Reaps every child that has ended, without blocking.
    fn reap_ready(&self) {
        loop {
            // waitpid(-1) under the registry lock, which `spawn` holds across
            // `Command::spawn`: std waits there itself for a child whose exec
            // failed, and panics ("wait() should either return Ok or panic")
            // when another thread took that status first.
            let mut registry = self.registry.lock().unwrap();
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    let Some((pid, exit)) = Exit::from_wait_status(status) else {
                        continue;
                    };
                    match registry.waiting.remove(&pid.as_raw()) {
                        Some(waiter) => {
                            let _ = waiter.send(exit);
                        }
                        None => tracing::debug!(pid = pid.as_raw(), ?exit, "reaped orphan"),
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(%err, "waitpid failed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test only: a second reaper in the same process would reap the
    // first one's children (waitpid(-1) is process-wide). Two workers, as
    // the agent runs: the reaping loop runs beside the spawners.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exits_reach_the_spawner() {
        let reaper = Reaper::new();
        reaper.start().unwrap();
        let (_child, exited) = reaper.spawn(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        assert_eq!(exited.await.unwrap(), Exit { code: 7, signal: 0 });

        let (child, exited) = reaper.spawn(Command::new("sleep").arg("30")).unwrap();
        nix::sys::signal::kill(Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL).unwrap();
        assert_eq!(exited.await.unwrap(), Exit { code: 137, signal: 9 });

        // Children that exit before spawn() returns must not lose their status.
        for _ in 0..20 {
            let (_child, exited) = reaper.spawn(&mut Command::new("true")).unwrap();
            assert_eq!(exited.await.unwrap().code, 0);
        }

        // A failed exec, while other children's exits keep the loop reaping
        // on the other worker: std's own wait inside spawn keeps its child.
        let exits: Vec<_> =
            (0..50).map(|_| reaper.spawn(Command::new("sh").args(["-c", "sleep 0.01"])).unwrap().1).collect();
        let spawner = reaper.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..300 {
                let mut missing = Command::new("/nonexistent/berth-test-binary");
                // A pre_exec hook makes std fork and exec itself (as it does for
                // the shim's namespaces), not posix_spawn: the path that waits.
                // SAFETY: the hook does nothing, so nothing unsafe after fork.
                unsafe { std::os::unix::process::CommandExt::pre_exec(&mut missing, || Ok(())) };
                let missing = spawner.spawn(&mut missing);
                assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
            }
        })
        .await
        .unwrap();
        for exited in exits {
            assert_eq!(exited.await.unwrap().code, 0);
        }
    }
}
