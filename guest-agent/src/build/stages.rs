//! The stages of a build: which the target needs (the others are skipped,
//! and the output says so), each one's base (an image, pulled when
//! missing, an earlier stage, or scratch), its steps in order, and the
//! result stored and tagged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth_agent_proto::build::BuildOptions;
use berth_engine::build::context::Context;
use berth_engine::build::instructions::{Build, Command, Stage};
use berth_engine::build::{cache, lex};
use serde_json::{json, Value};

use super::output::{short, BuildError, Output};
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

/// One build in progress: what every step reads, and the stream it writes.
pub(super) struct Run<'a> {
    pub builder: &'a Builder,
    pub options: &'a BuildOptions,
    pub context: &'a Context,
    pub work: &'a Path,
    pub out: &'a mut Output,
    pub escape: char,
    pub step: usize,
    pub total: usize,
    /// Finished stages: (config, image ID), by index.
    pub results: Vec<Option<(Value, String)>>,
    pub names: BTreeMap<String, usize>,
    /// Build args some ARG (or FROM line) consumed.
    pub used_args: BTreeSet<String>,
    pub meta_args: BTreeMap<String, String>,
}

/// The stages `stages[last]` needs, through FROM and COPY --from.
fn needed(stages: &[Stage], names: &BTreeMap<String, usize>) -> BTreeSet<usize> {
    let refers = |text: &str, before: usize| -> Option<usize> {
        let lower = text.to_ascii_lowercase();
        names.get(&lower).copied().or_else(|| lower.parse::<usize>().ok()).filter(|i| *i < before)
    };
    let mut wanted = BTreeSet::new();
    let mut todo = vec![stages.len() - 1];
    while let Some(index) = todo.pop() {
        if !wanted.insert(index) {
            continue;
        }
        let stage = &stages[index];
        if let Some(dep) = names.get(&stage.base.to_ascii_lowercase()).copied().filter(|i| *i < index) {
            todo.push(dep);
        }
        for step in &stage.steps {
            if let Command::Copy(copy) = &step.command {
                if let Some(dep) = copy.from.as_deref().and_then(|f| refers(f, index)) {
                    todo.push(dep);
                }
            }
        }
    }
    wanted
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
    let total = build.meta_args.len()
        + build
            .stages
            .iter()
            .enumerate()
            .filter(|(i, _)| wanted.contains(i))
            .map(|(_, s)| 1 + s.steps.len())
            .sum::<usize>();
    let mut run = Run {
        builder,
        options,
        context,
        work,
        out,
        escape: build.escape,
        step: 0,
        total,
        results: vec![None; build.stages.len()],
        names,
        used_args: BTreeSet::new(),
        meta_args: BTreeMap::new(),
    };
    for warning in warnings {
        run.out.stream(format!("{warning}\n")).await?;
    }
    for (instruction, args) in &build.meta_args {
        run.announce(&instruction.original).await?;
        for (name, default) in args {
            let value = match options.build_args.get(name) {
                Some(Some(given)) => Some(given.clone()),
                _ => match default {
                    Some(d) => Some(run.expand_meta(d)?),
                    None => None,
                },
            };
            run.used_args.insert(name.clone());
            if let Some(value) = value {
                run.meta_args.insert(name.clone(), value);
            }
        }
    }
    let last = build.stages.len() - 1;
    let mut final_state = None;
    for (index, stage) in build.stages.iter().enumerate() {
        if !wanted.contains(&index) {
            let name = stage.name.clone().unwrap_or_else(|| index.to_string());
            run.out.stream(format!("Skipping stage {name}: the target does not need it\n")).await?;
            continue;
        }
        let state = run.stage(index, stage).await?;
        if options.aux {
            run.out.aux(json!({ "ID": state.id })).await?;
        }
        run.results[index] = Some((state.image.clone(), state.id.clone()));
        if index == last {
            final_state = Some(state);
        }
    }
    let state = final_state.expect("the last stage is always needed");
    let unused: Vec<&String> = options
        .build_args
        .keys()
        .filter(|k| !run.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        run.out.stream(format!("[Warning] One or more build-args [{}] were not consumed\n", list.join(" "))).await?;
    }
    let (image, tags_owned, parent) = (state.image.clone(), tags.to_vec(), state.base_id.clone());
    let record = builder
        .images
        .blocking(move |store| store.create_image(&image, &tags_owned, (!parent.is_empty()).then_some(parent.as_str())))
        .await?;
    run.out.stream(format!("Successfully built {}\n", short(&record.id))).await?;
    for tag in tags {
        let familiar = berth_engine::reference::familiar(tag).to_string();
        builder.containers.events.emit("image", "tag", &record.id, json!({ "name": familiar }));
        run.out.stream(format!("Successfully tagged {familiar}\n")).await?;
    }
    run.out.finish_quiet(&record.id).await?;
    tracing::info!(image = %record.id, "image built");
    Ok(())
}

impl Run<'_> {
    /// `Step N/M : INSTRUCTION`, its newline a message of its own as dockerd sends it.
    pub async fn announce(&mut self, original: &str) -> Result<(), BuildError> {
        self.step += 1;
        let line = format!("Step {}/{} : {original}", self.step, self.total);
        self.out.stream(line).await?;
        self.out.stream("\n").await?;
        Ok(())
    }

    fn expand_meta(&self, word: &str) -> Result<String, BuildError> {
        let meta = &self.meta_args;
        lex::expand(word, &|name: &str| meta.get(name).cloned(), self.escape).map_err(BuildError::new)
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
