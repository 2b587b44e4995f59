//! The VM's COM ports, served by the daemon: HCS connects each port named
//! in the document (doc.rs `com_pipes`) to a named pipe as its client, so
//! the daemon creates the pipe servers before the VM starts and copies
//! what the guest writes into console.log (COM1) and agent.log (COM2), as
//! QEMU's chardev files do on Linux. One instance each, created first
//! (nobody else can hold the name); the default security descriptor, as
//! WSL's own COM1 pipe (Dmesg.cpp): the VM's worker process must be able
//! to open it.

use std::fs::File;
use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::windows::named_pipe::ServerOptions;
use tokio::task::JoinHandle;

use crate::platform::api_address::PipeName;

/// Serves `pipe` into `log` until the VM closes its end.
pub fn serve(pipe: &PipeName, log: File) -> io::Result<JoinHandle<()>> {
    let path = pipe.path();
    let mut server = ServerOptions::new().first_pipe_instance(true).max_instances(1).create(&path)?;
    Ok(tokio::spawn(async move {
        if let Err(err) = server.connect().await {
            tracing::warn!(pipe = %path, %err, "the VM did not open its COM port");
            return;
        }
        let mut log = tokio::fs::File::from_std(log);
        match tokio::io::copy(&mut server, &mut log).await {
            Ok(_) => tracing::debug!(pipe = %path, "COM port closed"),
            // ERROR_BROKEN_PIPE: the VM ended; what it wrote is in the log.
            Err(err) if err.raw_os_error() == Some(109) => {}
            Err(err) => tracing::warn!(pipe = %path, %err, "copying a COM port failed"),
        }
        let _ = log.flush().await;
    }))
}
