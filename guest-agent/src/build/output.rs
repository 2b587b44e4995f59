//! The build's answer: Docker's JSON messages as the classic builder
//! writes them (research/build.md 1.3). With `q` everything is held back
//! and only the image ID is sent, unless the build fails; then what was
//! held back goes first, so the client can show why.
//!
//! Stages that run at once each write to an output of their own
//! ([`Output::stage`]); the scheduler forwards those to the client's in
//! stage order, so the stream reads as the classic builder's.

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::AgentError;

pub struct Output {
    sink: Sink,
    quiet: bool,
    held: Vec<Value>,
}

enum Sink {
    Client(mpsc::Sender<Value>),
    /// Unbounded: a stage runs on while the stream shows an earlier one,
    /// and its output (a build's own log, bounded by what it prints)
    /// waits here until its turn.
    Stage(mpsc::UnboundedSender<Value>),
}

impl Sink {
    async fn send(&self, message: Value) -> Result<(), Gone> {
        match self {
            Sink::Client(tx) => tx.send(message).await.map_err(|_| Gone),
            Sink::Stage(tx) => tx.send(message).map_err(|_| Gone),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sink::Client(tx) => tx.is_closed(),
            Sink::Stage(tx) => tx.is_closed(),
        }
    }
}

/// The client went away: the build stops.
#[derive(Debug)]
pub struct Gone;

impl Output {
    pub fn new(tx: mpsc::Sender<Value>, quiet: bool) -> Output {
        Output { sink: Sink::Client(tx), quiet, held: Vec::new() }
    }

    /// One stage's output, and what reads it (to hand to [`Output::forward`]).
    pub fn stage() -> (Output, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Output { sink: Sink::Stage(tx), quiet: false, held: Vec::new() }, rx)
    }

    pub async fn send(&mut self, message: Value) -> Result<(), Gone> {
        if self.quiet {
            self.held.push(message);
            return Ok(());
        }
        self.sink.send(message).await
    }

    /// A message of a stage's output: `aux` past the quiet buffer, as it
    /// was written.
    pub async fn forward(&mut self, message: Value) -> Result<(), Gone> {
        match message.get("aux") {
            Some(aux) if message.as_object().is_some_and(|m| m.len() == 1) => self.aux(aux.clone()).await,
            _ => self.send(message).await,
        }
    }

    /// `aux` goes out even with `q`, as dockerd's AuxFormatter writes past
    /// the quiet buffer (the CLI's --iidfile reads it).
    pub async fn aux(&mut self, message: Value) -> Result<(), Gone> {
        self.sink.send(json!({ "aux": message })).await
    }

    pub async fn stream(&mut self, text: impl Into<String>) -> Result<(), Gone> {
        self.send(json!({ "stream": text.into() })).await
    }

    /// A container's stderr, in the colour the CLI shows it in.
    pub async fn stderr(&mut self, text: &str) -> Result<(), Gone> {
        self.stream(format!("\u{1b}[91m{text}\u{1b}[0m")).await
    }

    pub fn is_closed(&self) -> bool {
        self.sink.is_closed()
    }

    /// The image ID alone (`q`), or nothing more (the rest was sent).
    pub async fn finish_quiet(&mut self, image_id: &str) -> Result<(), Gone> {
        if self.quiet {
            self.sink.send(json!({ "stream": format!("{image_id}\n") })).await?;
        }
        Ok(())
    }

    /// The build's error as its last message (with the exit code of a RUN).
    pub async fn fail(&mut self, error: &BuildError) {
        for message in std::mem::take(&mut self.held) {
            if self.sink.send(message).await.is_err() {
                return;
            }
        }
        let detail = match error.code {
            Some(code) => json!({ "code": code, "message": error.message }),
            None => json!({ "message": error.message }),
        };
        let _ = self.sink.send(json!({ "errorDetail": detail, "error": error.message })).await;
    }
}

/// Why a build failed: the message dockerd gives, and a RUN's exit code.
#[derive(Debug)]
pub struct BuildError {
    pub message: String,
    pub code: Option<i64>,
}

impl BuildError {
    pub fn new(message: impl Into<String>) -> BuildError {
        BuildError { message: message.into(), code: None }
    }
}

impl From<AgentError> for BuildError {
    fn from(err: AgentError) -> BuildError {
        BuildError::new(err.message().to_string())
    }
}

impl From<Gone> for BuildError {
    fn from(_: Gone) -> BuildError {
        BuildError::new("the client went away")
    }
}

/// The 12 hex digits Docker shows of an ID.
pub fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}
