//! The stages of a build: which the target needs (the others are skipped,
//! and the output says so), each one's base (an image, pulled when
//! missing, an earlier stage, or scratch), its steps in order, and the
//! result stored and tagged. A stage starts as soon as the stages it
//! builds on are done, so independent stages (and their base pulls) run
//! at once; their outputs reach the client one stage after another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;

use berth_agent_proto::build::BuildOptions;
use berth_engine::build::context::Context;
use berth_engine::build::instructions::{Build, Command, Stage};
use berth_engine::build::{cache, lex};
use serde_json::{json, Value};

use super::output::{short, BuildError, Gone, Output};
use super::steps::State;
use super::Builder;

/// The proxy variables every build may set without an ARG (the classic
/// builder's predefined args).
pub(super) const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// BuildKit's automatic platform args (TARGETARCH and friends): a
/// Dockerfile that declares `ARG TARGETARCH` gets the value BuildKit would
/// give it without `--build-arg`. The VM builds for its own platform only
/// (`check_platform`), so target and build platform are the same.
pub(super) fn platform_arg(name: &str) -> Option<String> {
    let arch = berth_engine::reference::oci_architecture();
    Some(match name {
        "TARGETPLATFORM" | "BUILDPLATFORM" => format!("linux/{arch}"),
        "TARGETOS" | "BUILDOS" => "linux".into(),
        "TARGETARCH" | "BUILDARCH" => arch.into(),
        "TARGETVARIANT" | "BUILDVARIANT" => String::new(),
        _ => return None,
    })
}

/// One stage of a build in progress: what its steps read, and the
/// stream it writes. Stages that do not depend on each other run at once,
/// each with its own `Run`.
pub(super) struct Run<'a> {
    pub builder: &'a Builder,
    pub options: &'a BuildOptions,
    pub context: &'a Context,
    /// The stage's own directory: stages at once never share a file.
    pub work: PathBuf,
    pub out: Output,
    pub escape: char,
    pub step: usize,
    pub total: usize,
    /// Finished stages: (config, image ID), by index; every stage this
    /// one depends on is there.
    pub results: Vec<Option<(Value, String)>>,
    pub names: &'a BTreeMap<String, usize>,
    /// Build args some ARG (or FROM line) consumed.
    pub used_args: BTreeSet<String>,
    pub meta_args: &'a BTreeMap<String, String>,
    /// Set when another stage failed: a running step stops.
    pub cancel: watch::Receiver<bool>,
}

/// The earlier stages `stages[index]` builds on: its FROM and COPY --from.
fn dependencies(stages: &[Stage], names: &BTreeMap<String, usize>, index: usize) -> BTreeSet<usize> {
    let refers = |text: &str| -> Option<usize> {
        let lower = text.to_ascii_lowercase();
        names.get(&lower).copied().or_else(|| lower.parse::<usize>().ok()).filter(|i| *i < index)
    };
    let stage = &stages[index];
    let mut deps: BTreeSet<usize> =
        names.get(&stage.base.to_ascii_lowercase()).copied().filter(|i| *i < index).into_iter().collect();
    for step in &stage.steps {
        if let Command::Copy(copy) = &step.command {
            deps.extend(copy.from.as_deref().and_then(refers));
        }
    }
    deps
}

/// The stages `stages[last]` needs, through FROM and COPY --from.
fn needed(stages: &[Stage], names: &BTreeMap<String, usize>) -> BTreeSet<usize> {
    let mut wanted = BTreeSet::new();
    let mut todo = vec![stages.len() - 1];
    while let Some(index) = todo.pop() {
        if wanted.insert(index) {
            todo.extend(dependencies(stages, names, index));
        }
    }
    wanted
}

/// `Step N/M : INSTRUCTION`, its newline a message of its own as dockerd sends it.
async fn announce(out: &mut Output, step: usize, total: usize, original: &str) -> Result<(), BuildError> {
    out.stream(format!("Step {step}/{total} : {original}")).await?;
    out.stream("\n").await?;
    Ok(())
}

fn expand_meta(meta: &BTreeMap<String, String>, word: &str, escape: char) -> Result<String, BuildError> {
    lex::expand(word, &|name: &str| meta.get(name).cloned(), escape).map_err(BuildError::new)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    builder: &Builder,
    options: &BuildOptions,
    context: &Context,
    build: Build,
    warnings: &[String],
    tags: &[String],
    work: &Path,
    out: &mut Output,
) -> Result<(), BuildError> {
    let mut names = BTreeMap::new();
    for (index, stage) in build.stages.iter().enumerate() {
        if let Some(name) = &stage.name {
            names.insert(name.clone(), index);
        }
    }
    let wanted = needed(&build.stages, &names);
    // Step numbers are fixed before anything runs: the stream reads as the
    // classic builder's, whichever stage finishes first.
    let mut first_step = vec![0; build.stages.len()];
    let mut step = build.meta_args.len();
    for index in &wanted {
        first_step[*index] = step;
        step += 1 + build.stages[*index].steps.len();
    }
    let total = step;
    for warning in warnings {
        out.stream(format!("{warning}\n")).await?;
    }
    let mut used_args = BTreeSet::new();
    let mut meta_args = BTreeMap::new();
    for (number, (instruction, args)) in build.meta_args.iter().enumerate() {
        announce(out, number + 1, total, &instruction.original).await?;
        for (name, default) in args {
            let value = match options.build_args.get(name) {
                Some(Some(given)) => Some(given.clone()),
                _ => match default {
                    Some(d) => Some(expand_meta(&meta_args, d, build.escape)?),
                    None => platform_arg(name),
                },
            };
            used_args.insert(name.clone());
            if let Some(value) = value {
                meta_args.insert(name.clone(), value);
            }
        }
    }

    let stages = &build.stages;
    let deps: Vec<BTreeSet<usize>> = (0..stages.len()).map(|i| dependencies(stages, &names, i)).collect();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut outputs = Vec::new();
    let mut readers = Vec::new();
    for (index, stage) in stages.iter().enumerate() {
        let (mut stage_out, reader) = Output::stage();
        if wanted.contains(&index) {
            outputs.push(Some(stage_out));
        } else {
            let name = stage.name.clone().unwrap_or_else(|| index.to_string());
            stage_out.stream(format!("Skipping stage {name}: the target does not need it\n")).await?;
            outputs.push(None);
        }
        readers.push(reader);
    }
    let last = stages.len() - 1;
    let (names, meta_args) = (&names, &meta_args);
    let scheduler = async {
        let mut results: Vec<Option<(Value, String)>> = vec![None; stages.len()];
        let mut pending = wanted.clone();
        let mut running = FuturesUnordered::new();
        let mut failure = None;
        let mut final_state = None;
        loop {
            if failure.is_none() {
                let ready: Vec<usize> =
                    pending.iter().copied().filter(|i| deps[*i].iter().all(|d| results[*d].is_some())).collect();
                for index in ready {
                    pending.remove(&index);
                    let run = Run {
                        builder,
                        options,
                        context,
                        work: work.join(format!("stage-{index}")),
                        out: outputs[index].take().expect("each stage starts once"),
                        escape: build.escape,
                        step: first_step[index],
                        total,
                        results: results.clone(),
                        names,
                        used_args: BTreeSet::new(),
                        meta_args,
                        cancel: cancel_rx.clone(),
                    };
                    running.push(run.stage_and_id(index, &stages[index]));
                }
            }
            let Some((index, outcome, consumed)) = running.next().await else { break };
            used_args.extend(consumed);
            match outcome {
                Ok(state) => {
                    results[index] = Some((state.image.clone(), state.id.clone()));
                    if index == last {
                        final_state = Some(state);
                    }
                }
                Err(err) => {
                    if failure.is_none() {
                        let _ = cancel_tx.send(true);
                        failure = Some(err);
                    }
                }
            }
        }
        // The stages that never started: their outputs end empty.
        outputs.clear();
        match failure {
            Some(err) => Err(err),
            None => Ok(final_state.expect("the last stage is always needed")),
        }
    };
    let in_order = async {
        for mut reader in readers {
            while let Some(message) = reader.recv().await {
                out.forward(message).await?;
            }
        }
        Ok::<(), Gone>(())
    };
    let (state, forwarded) = tokio::join!(scheduler, in_order);
    let state = state?;
    forwarded?;

    let unused: Vec<&String> =
        options.build_args.keys().filter(|k| !used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str())).collect();
    if !unused.is_empty() {
        let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        out.stream(format!("[Warning] One or more build-args [{}] were not consumed\n", list.join(" "))).await?;
    }
    let (image, tags_owned, parent) = (state.image.clone(), tags.to_vec(), state.base_id.clone());
    let record = builder
        .images
        .blocking(move |store| store.create_image(&image, &tags_owned, (!parent.is_empty()).then_some(parent.as_str())))
        .await?;
    out.stream(format!("Successfully built {}\n", short(&record.id))).await?;
    for tag in tags {
        let familiar = berth_engine::reference::familiar(tag).to_string();
        builder.containers.events.emit("image", "tag", &record.id, json!({ "name": familiar }));
        out.stream(format!("Successfully tagged {familiar}\n")).await?;
    }
    out.finish_quiet(&record.id).await?;
    tracing::info!(image = %record.id, "image built");
    Ok(())
}

impl Run<'_> {
    pub async fn announce(&mut self, original: &str) -> Result<(), BuildError> {
        self.step += 1;
        announce(&mut self.out, self.step, self.total, original).await
    }

    /// A stage run to its end (and its ID in the stream, for `aux`), with
    /// what it consumed of the build args.
    async fn stage_and_id(
        mut self,
        index: usize,
        stage: &Stage,
    ) -> (usize, Result<State, BuildError>, BTreeSet<String>) {
        let mut outcome = match std::fs::create_dir_all(&self.work) {
            Ok(()) => self.stage(index, stage).await,
            Err(e) => Err(BuildError::new(format!("creating the stage's directory: {e}"))),
        };
        if let (Ok(state), true) = (&outcome, self.options.aux) {
            if let Err(gone) = self.out.aux(json!({ "ID": state.id })).await {
                outcome = Err(gone.into());
            }
        }
        if outcome.is_err() {
            tracing::debug!(stage = index, "build stage failed");
        }
        let _ = std::fs::remove_dir_all(&self.work);
        (index, outcome, std::mem::take(&mut self.used_args))
    }

    fn expand_meta(&self, word: &str) -> Result<String, BuildError> {
        expand_meta(self.meta_args, word, self.escape)
    }

    async fn stage(&mut self, index: usize, stage: &Stage) -> Result<State, BuildError> {
        self.announce(&stage.from.original).await?;
        let base = self.expand_meta(&stage.base)?;
        if let Some(platform) = &stage.platform {
            let platform = self.expand_meta(platform)?;
            super::check_platform(&platform).map_err(BuildError::new)?;
        }
        let (image, id) = self.base(&base, index).await?;
        self.out.stream(format!(" ---> {}\n", short(&id))).await?;
        let mut state = State::from_base(image, id);
        let triggers: Vec<String> = state.image["config"]["OnBuild"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if !triggers.is_empty() {
            state.image["config"]["OnBuild"] = Value::Null;
            self.out
                .stream(format!(
                    "# Executing {} build trigger{}\n",
                    triggers.len(),
                    if triggers.len() == 1 { "" } else { "s" }
                ))
                .await?;
            for trigger in triggers {
                let file = berth_engine::build::parser::parse(&trigger).map_err(|e| BuildError::new(e.to_string()))?;
                for instruction in file.instructions {
                    let command = berth_engine::build::instructions::parse_command(&instruction, self.escape)
                        .map_err(|e| BuildError::new(e.to_string()))?;
                    self.dispatch(&mut state, &instruction, &command, index).await?;
                }
            }
        }
        for step in &stage.steps {
            self.announce(&step.instruction.original).await?;
            self.dispatch(&mut state, &step.instruction, &step.command, index).await?;
            self.out.stream(format!(" ---> {}\n", short(&state.id))).await?;
        }
        Ok(state)
    }

    /// A stage's base: an earlier stage, scratch, or an image (pulled when
    /// missing, or always with `pull`).
    async fn base(&mut self, base: &str, index: usize) -> Result<(Value, String), BuildError> {
        if let Some(earlier) = self.names.get(&base.to_ascii_lowercase()).copied().filter(|i| *i < index) {
            return self.results[earlier].clone().ok_or_else(|| BuildError::new(format!("stage {base} was not built")));
        }
        if base.eq_ignore_ascii_case("scratch") {
            let image = json!({
                "architecture": berth_engine::reference::oci_architecture(),
                "os": "linux",
                "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
                "rootfs": { "type": "layers", "diff_ids": [] },
            });
            return Ok((image, String::new()));
        }
        self.image(base, self.options.pull).await
    }

    /// An image by reference, pulled (with its progress in the stream) when
    /// missing or when `always_pull`.
    pub async fn image(&mut self, reference: &str, always_pull: bool) -> Result<(Value, String), BuildError> {
        let local = |name: String| {
            move |store: &mut berth_engine::store::ImageStore| {
                Ok(match store.resolve(&name).map(|r| r.id.clone()) {
                    Some(id) => {
                        Some((serde_json::from_slice::<Value>(&store.config_json(&id)?).unwrap_or_default(), id))
                    }
                    None => None,
                })
            }
        };
        if !always_pull {
            if let Some(found) = self.builder.images.blocking(local(reference.to_string())).await? {
                return Ok(found);
            }
        }
        let normalized = berth_engine::reference::normalize(reference).map_err(BuildError::new)?;
        let request = berth_agent_proto::PullImageRequest {
            reference: normalized.clone(),
            auth_json: credentials_for(&normalized, &self.options.registry_auth),
            registry_mirrors: self.options.registry_mirrors.clone(),
            insecure_registries: self.options.insecure_registries.clone(),
        };
        let events = self.builder.containers.events.clone();
        let mut progress = crate::images::pull(self.builder.images.clone(), events, request).await?;
        while let Some(message) = progress.recv().await {
            if let Some(error) = message.get("error").and_then(Value::as_str) {
                return Err(BuildError::new(error.to_string()));
            }
            self.out.send(message).await?;
        }
        self.builder
            .images
            .blocking(local(normalized.clone()))
            .await?
            .ok_or_else(|| BuildError::new(format!("No such image: {normalized}")))
    }

    /// The layer directories of an image config, bottom first.
    pub async fn layers(&self, image: &Value) -> Result<Vec<std::path::PathBuf>, BuildError> {
        let diff_ids: Vec<String> = image["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
            .unwrap_or_default();
        Ok(self.builder.images.blocking(move |store| diff_ids.iter().map(|d| store.layer_dir(d)).collect()).await?)
    }

    /// The config of a cache hit, if its layers are all still there.
    pub async fn cached(&self, key: &str) -> Option<Value> {
        let cache = self.cache_index().await?;
        let key = key.to_string();
        let image = tokio::task::spawn_blocking(move || cache.get(&key)).await.ok()??;
        let layers = self.layers(&image).await.ok()?;
        if !layers.iter().all(|l| l.is_dir()) {
            return None;
        }
        if !self.options.cache_from.is_empty() && !self.part_of_cache_sources(&image).await {
            return None;
        }
        Some(image)
    }

    pub async fn remember(&self, key: &str, image: &Value) {
        if let Some(cache) = self.cache_index().await {
            let (key, image) = (key.to_string(), image.clone());
            let _ = tokio::task::spawn_blocking(move || cache.put(&key, &image)).await;
        }
    }

    async fn cache_index(&self) -> Option<cache::CacheIndex> {
        let tmp = self.builder.images.blocking(|store| Ok(store.tmp_dir())).await.ok()?;
        Some(cache::CacheIndex::new(&tmp.parent()?.join("build-cache")))
    }

    /// With `cachefrom`, a hit counts only when the image it made is part
    /// of one of those images: its layers and history a prefix of theirs.
    async fn part_of_cache_sources(&self, image: &Value) -> bool {
        let sources = self.options.cache_from.clone();
        let configs: Vec<Value> = self
            .builder
            .images
            .blocking(move |store| {
                Ok(sources
                    .iter()
                    .filter_map(|name| store.resolve(name).map(|r| r.id.clone()))
                    .filter_map(|id| store.config_json(&id).ok())
                    .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
                    .collect())
            })
            .await
            .unwrap_or_default();
        let prefix = |a: &Value, b: &Value| match (a.as_array(), b.as_array()) {
            (Some(a), Some(b)) => a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x == y),
            (None, _) => true,
            _ => false,
        };
        configs.iter().any(|source| {
            prefix(&image["rootfs"]["diff_ids"], &source["rootfs"]["diff_ids"])
                && prefix(&image["history"], &source["history"])
        })
    }
}

/// X-Registry-Config's entry for the reference's registry, as a pull's auth JSON.
fn credentials_for(normalized: &str, auths: &BTreeMap<String, Value>) -> String {
    let registry = normalized.split('/').next().unwrap_or("");
    let hub = registry == "docker.io";
    auths
        .iter()
        .find(|(key, _)| {
            let host = key.trim_start_matches("https://").trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            host == registry || (hub && (host == "index.docker.io" || host == "registry-1.docker.io"))
        })
        .map(|(_, auth)| auth.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_entries_match_their_registry() {
        let auths: BTreeMap<String, Value> = [
            ("https://index.docker.io/v1/".to_string(), json!({ "username": "hub" })),
            ("localhost:5000".to_string(), json!({ "username": "local" })),
        ]
        .into();
        assert!(credentials_for("docker.io/library/busybox:latest", &auths).contains("hub"));
        assert!(credentials_for("localhost:5000/x:1", &auths).contains("local"));
        assert_eq!(credentials_for("quay.io/x:1", &auths), "");
    }
}
