//! `docker build` with the classic builder's semantics (research/build.md):
//! the context received into the image store's tmp dir, the Dockerfile
//! parsed (engine `build/`), the stages the target needs run in order,
//! each step a new image config: metadata steps in memory (no container,
//! no layer), RUN as a container on the engine's own runtime, committed as
//! a layer, COPY/ADD through the archive helper into a container that
//! never runs. The cache index (engine `build/cache.rs`) maps a step's key
//! to the config it made, on the data disk.

mod output;
mod prune;
mod stages;
mod steps;

pub use prune::prune;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_agent_proto::build::BuildOptions;
use berth_engine::build::{context::Context, ignore, instructions, parser};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::containers::Containers;
use crate::error::AgentError;
use crate::images::ImagesSlot;

use output::{BuildError, Output};

/// What a build needs of the agent.
#[derive(Clone)]
pub struct Builder {
    pub images: Arc<ImagesSlot>,
    pub containers: Arc<Containers>,
}

/// A build's directory in the store's tmp (emptied at the store's open,
/// so a crash leaves nothing behind), removed when the build ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything decided before the first message: a failure here is the
/// call's own error (dockerd answers those with an HTTP status).
struct Prepared {
    work: WorkDir,
    context: Context,
    build: instructions::Build,
    warnings: Vec<String>,
    tags: Vec<String>,
}

/// Receives the context from `chunks` and starts the build. Errors before
/// the build starts are returned; later ones end the message stream.
pub async fn build(
    builder: Builder,
    options: BuildOptions,
    chunks: mpsc::Receiver<Vec<u8>>,
) -> Result<mpsc::Receiver<Value>, AgentError> {
    let running = prune::BUILDS.read().await;
    let prepared = prepare(&builder, &options, chunks).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let _running = running;
        let mut out = Output::new(tx, options.quiet);
        let Prepared { work, context, build, warnings, tags } = prepared;
        let result = stages::run(&builder, &options, &context, build, &warnings, &tags, &work.0, &mut out).await;
        if let Err(err) = result {
            tracing::info!(error = %err.message, "build failed");
            out.fail(&err).await;
        }
        drop(work);
    });
    Ok(rx)
}

async fn prepare(
    builder: &Builder,
    options: &BuildOptions,
    chunks: mpsc::Receiver<Vec<u8>>,
) -> Result<Prepared, AgentError> {
    let tags = options
        .tags
        .iter()
        .map(|t| {
            if t.contains('@') {
                return Err(AgentError::invalid("build tag cannot contain a digest"));
            }
            berth_engine::reference::normalize(t).map_err(AgentError::invalid)
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_platform(&options.platform).map_err(AgentError::invalid)?;
    let tmp = builder.images.blocking(|store| Ok(store.tmp_dir())).await?;
    let dir = tmp.join(format!("build-{}", &crate::containers::random_hex()[..16]));
    std::fs::create_dir_all(dir.join("context"))
        .map_err(|e| AgentError::internal(format!("creating the build directory: {e}")))?;
    let work = WorkDir(dir);
    let context_dir = work.0.join("context");
    let reader = crate::images::ChunkReader::new(chunks);
    let mut context = tokio::task::spawn_blocking(move || Context::ingest(reader, &context_dir))
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map_err(|e| AgentError::invalid(format!("failed to read the build context: {e}")))?;

    let requested = if options.dockerfile.is_empty() { "Dockerfile".to_string() } else { options.dockerfile.clone() };
    let name = ignore::clean(&requested);
    let name =
        if options.dockerfile.is_empty() && context.entry(&name).is_none() && context.entry("dockerfile").is_some() {
            "dockerfile".to_string()
        } else {
            name
        };
    let text = context
        .read_file(&name)
        .map_err(|_| AgentError::invalid(format!("Cannot locate specified Dockerfile: {requested}")))?;
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(AgentError::invalid(format!("the Dockerfile ({requested}) cannot be empty")));
    }
    // dockerd's removeDockerfile: the Dockerfile and .dockerignore leave
    // the context when .dockerignore names them (clients list an
    // out-of-context Dockerfile there).
    if let Ok(ignore_text) = context.read_file(".dockerignore") {
        let patterns = ignore::read_patterns(&String::from_utf8_lossy(&ignore_text));
        if let Ok(matcher) = ignore::Matcher::new(&patterns) {
            for path in [".dockerignore".to_string(), name.clone()] {
                if matcher.matches(&path) {
                    context.remove(&path);
                }
            }
        }
    }
    let file = parser::parse(&String::from_utf8_lossy(&text)).map_err(|e| AgentError::invalid(e.to_string()))?;
    let mut build = instructions::parse(&file).map_err(|e| AgentError::invalid(e.to_string()))?;
    if !options.target.is_empty() {
        let target = options.target.to_ascii_lowercase();
        let index = build.stages.iter().position(|s| s.name.as_deref() == Some(target.as_str())).ok_or_else(|| {
            AgentError::invalid(format!("failed to reach build target {} in Dockerfile", options.target))
        })?;
        build.stages.truncate(index + 1);
    }
    add_labels(&mut build, &options.labels);
    Ok(Prepared { work, context, build, warnings: file.warnings, tags })
}

/// `labels`: LABEL steps at the end of the last stage, sorted by key.
fn add_labels(build: &mut instructions::Build, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let text: Vec<String> = labels.iter().map(|(k, v)| format!("{}={}", quoted(k), quoted(v))).collect();
    let line = format!("LABEL {}", text.join(" "));
    let stage = build.stages.last_mut().expect("parse makes at least one stage");
    let instruction = parser::Instruction {
        keyword: "LABEL".into(),
        flags: Vec::new(),
        args: line["LABEL ".len()..].to_string(),
        original: line,
        line: 0,
        heredocs: Vec::new(),
    };
    let pairs = labels.iter().map(|(k, v)| (quoted(k), quoted(v))).collect();
    stage.steps.push(instructions::Step { instruction, command: instructions::Command::Label(pairs) });
}

/// A `platform` the VM can run: linux, on its own architecture. Docker's
/// words for a name containerd's parser refuses.
pub fn check_platform(platform: &str) -> Result<(), String> {
    if platform.is_empty() {
        return Ok(());
    }
    let lower = platform.to_ascii_lowercase();
    let mut parts = lower.split('/');
    let os = parts.next().unwrap_or("");
    let arch = parts.next();
    let known_os = ["linux", "windows", "darwin", "freebsd"];
    if !known_os.contains(&os) {
        return Err(format!("\"{platform}\": unknown operating system or architecture: invalid argument"));
    }
    let ours = berth_engine::reference::oci_architecture();
    if os != "linux" || arch.is_some_and(|a| a != ours && !(ours == "amd64" && a == "x86_64")) {
        return Err(format!("the VM runs linux/{ours}: cannot build for {platform}"));
    }
    Ok(())
}

impl From<BuildError> for AgentError {
    fn from(err: BuildError) -> AgentError {
        AgentError::invalid(err.message)
    }
}
