//! One step of a stage: the classic builder's dispatchers (dispatchers.go).
//! Metadata steps change the image config in memory; RUN runs a container
//! and commits its writable layer; COPY/ADD and a WORKDIR that must create
//! its directory extract a tar into a container that never runs (the
//! archive helper, inside the image's root) and commit that. Each step's
//! result is looked up in, and recorded to, the build cache first.

use std::collections::BTreeMap;

use berth_engine::build::copy::{self, Attributes};
use berth_engine::build::instructions::{CmdLine, Command, CopySpec, Health};
use berth_engine::build::parser::Instruction;
use berth_engine::build::{cache, ignore, lex};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::output::{short, BuildError};
use super::stages::{Run, PROXY_ARGS};
use crate::containers::ImageInfo;

/// The image a stage has built so far.
pub(super) struct State {
    pub image: Value,
    pub id: String,
    /// The stage's base image (the parent the result records).
    pub base_id: String,
    /// A step missed the cache: later steps of the stage are not looked up.
    busted: bool,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, Option<String>>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

fn now() -> String {
    berth_agent_proto::time::rfc3339(crate::images::now_ns())
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Go's %q of each word, in brackets: how the classic builder writes CMD.
fn quoted_list(words: &[String]) -> String {
    let parts: Vec<String> = words.iter().map(|w| serde_json::to_string(w).unwrap_or_default()).collect();
    format!("[{}]", parts.join(" "))
}

impl State {
    pub fn from_base(mut image: Value, id: String) -> State {
        if !image["config"].is_object() {
            image["config"] = json!({});
        }
        let env = strings(&image["config"]["Env"]);
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            let mut env = env;
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            image["config"]["Env"] = json!(env);
        }
        State { image, base_id: id.clone(), id, busted: false, args: BTreeMap::new(), cmd_set: false }
    }

    fn config(&self) -> &Value {
        &self.image["config"]
    }

    fn env(&self) -> Vec<String> {
        strings(&self.image["config"]["Env"])
    }

    fn shell(&self) -> Vec<String> {
        let shell = strings(&self.image["config"]["Shell"]);
        if shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            shell
        }
    }

    /// The variables a word is expanded with: Env, then the stage's args
    /// that Env does not shadow.
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name: &str| {
            for entry in self.env().iter().rev() {
                if let Some(value) = entry.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
                    return Some(value.to_string());
                }
            }
            self.args.get(name).cloned().flatten()
        }
    }

    /// The stage's args with values, not shadowed by Env, as `k=v`, sorted
    /// (what RUN prefixes its history and cache key with).
    fn arg_env(&self) -> Vec<String> {
        let env = self.env();
        let shadowed = |k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
        self.args
            .iter()
            .filter(|(k, v)| v.is_some() && !shadowed(k))
            .map(|(k, v)| format!("{k}={}", v.clone().unwrap_or_default()))
            .collect()
    }

    /// The image as a container is made from it. An image without layers
    /// (scratch) gets one empty directory: overlayfs needs a lower layer.
    fn image_info(&self, mut layers: Vec<std::path::PathBuf>, work: &std::path::Path) -> ImageInfo {
        let id = if self.id.is_empty() { cache::image_id(&self.image) } else { self.id.clone() };
        if layers.is_empty() {
            let empty = work.join("empty-layer");
            let _ = std::fs::create_dir_all(&empty);
            layers.push(empty);
        }
        ImageInfo { id, config: self.image.clone(), layers }
    }
}

fn set_env(config: &mut Value, key: &str, value: &str) {
    let mut env = strings(&config["Env"]);
    let entry = format!("{key}={value}");
    match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
    config["Env"] = json!(env);
}

fn map_insert(config: &mut Value, field: &str, key: String, value: Value) {
    if !config[field].is_object() {
        config[field] = Value::Object(Map::new());
    }
    config[field].as_object_mut().expect("made an object").insert(key, value);
}

/// Docker's port specs (`80`, `53/udp`, `8000-8010`) as ExposedPorts keys.
fn port_keys(spec: &str) -> Result<Vec<String>, BuildError> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let bad = || BuildError::new(format!("Invalid containerPort: {spec}"));
    let proto = proto.to_ascii_lowercase();
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return Err(BuildError::new(format!("invalid proto: {proto}")));
    }
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().map_err(|_| bad())?, b.parse::<u16>().map_err(|_| bad())?),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Go durations as HEALTHCHECK's flags take them, in nanoseconds.
fn duration_ns(flag: &str, text: &str) -> Result<i64, BuildError> {
    berth_agent_proto::time::parse_go_duration(text)
        .map(|ns| ns as i64)
        .ok_or_else(|| BuildError::new(format!("Cannot parse {flag} duration: time: invalid duration \"{text}\"")))
}

impl Run<'_> {
    fn expand(&self, state: &State, word: &str) -> Result<String, BuildError> {
        lex::expand(word, &state.lookup(), self.escape).map_err(BuildError::new)
    }

    pub async fn dispatch(
        &mut self,
        state: &mut State,
        instruction: &Instruction,
        command: &Command,
        stage: usize,
    ) -> Result<(), BuildError> {
        let mut config = state.config().clone();
        let comment = match command {
            Command::Run { cmd, heredocs, mounts, network } => {
                return self.run_step(state, cmd, heredocs, mounts, network.as_deref()).await
            }
            Command::Copy(spec) => return self.copy_step(state, spec, stage).await,
            Command::Env(pairs) => {
                let mut written = Vec::new();
                for (key, value) in pairs {
                    // Every value sees the environment from before the instruction.
                    let (key, value) = (self.expand(state, key)?, self.expand(state, value)?);
                    written.push(format!("{key}={value}"));
                    set_env(&mut config, &key, &value);
                }
                format!("ENV {}", written.join(" "))
            }
            Command::Label(pairs) => {
                let mut written = Vec::new();
                for (key, value) in pairs {
                    let (key, value) = (self.expand(state, key)?, self.expand(state, value)?);
                    written.push(format!("{key}={value}"));
                    map_insert(&mut config, "Labels", key, value.into());
                }
                format!("LABEL {}", written.join(" "))
            }
            Command::Arg(args) => {
                let mut written = Vec::new();
                for (name, default) in args {
                    let value = match self.options.build_args.get(name) {
                        Some(Some(given)) => Some(given.clone()),
                        _ => match default {
                            Some(d) => Some(self.expand(state, d)?),
                            None => self.meta_args.get(name).cloned().or_else(|| super::stages::platform_arg(name)),
                        },
                    };
                    self.used_args.insert(name.clone());
                    written.push(match default {
                        Some(d) => format!("{name}={d}"),
                        None => name.clone(),
                    });
                    state.args.insert(name.clone(), value);
                }
                format!("ARG {}", written.join(" "))
            }
            Command::Workdir(dir) => {
                let dir = self.expand(state, dir)?;
                let current = config["WorkingDir"].as_str().unwrap_or("").to_string();
                let joined = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", if current.is_empty() { "/" } else { &current })
                };
                let normalized = format!("/{}", ignore::clean(&joined));
                config["WorkingDir"] = normalized.clone().into();
                let layers = self.layers(&state.image).await?;
                if !copy::is_dir(&layers, &normalized) {
                    let comment = format!("#(nop) WORKDIR {normalized}");
                    let tar = self.work.join("workdir.tar");
                    let path = normalized.clone();
                    let written = std::fs::File::create(&tar).and_then(|f| copy::write_dir_tar(&path, f));
                    written.map_err(|e| BuildError::new(format!("WORKDIR: {e}")))?;
                    return self.layer_step(state, config, vec![comment], "", tar).await;
                }
                return self.metadata(state, config, vec![format!("#(nop) WORKDIR {normalized}")]).await;
            }
            Command::User(user) => {
                let user = self.expand(state, user)?;
                config["User"] = user.clone().into();
                format!("USER {user}")
            }
            Command::Expose(ports) => {
                let words = lex::expand_words(ports, &state.lookup(), self.escape).map_err(BuildError::new)?;
                for word in &words {
                    for key in port_keys(word)? {
                        map_insert(&mut config, "ExposedPorts", key, json!({}));
                    }
                }
                format!("EXPOSE {}", words.join(" "))
            }
            Command::Volume(volumes) => {
                let mut expanded = Vec::new();
                for volume in volumes {
                    let volume = self.expand(state, volume)?;
                    map_insert(&mut config, "Volumes", volume.clone(), json!({}));
                    expanded.push(volume);
                }
                format!("VOLUME [{}]", expanded.join(" "))
            }
            Command::Entrypoint(cmd) => {
                let words = self.command_words(state, cmd);
                config["Entrypoint"] = json!(words);
                if !state.cmd_set {
                    config["Cmd"] = Value::Null;
                }
                format!("ENTRYPOINT {}", quoted_list(&words))
            }
            Command::Cmd(cmd) => {
                let words = self.command_words(state, cmd);
                config["Cmd"] = json!(words);
                state.cmd_set = true;
                format!("CMD {}", quoted_list(&words))
            }
            Command::Healthcheck(health) => {
                if !config["Healthcheck"].is_null() {
                    self.out.stream("Note: overriding previous HEALTHCHECK\n").await?;
                }
                config["Healthcheck"] = self.healthcheck(health)?;
                format!("HEALTHCHECK {}", instruction.args)
            }
            Command::Shell(words) => {
                config["Shell"] = json!(words);
                format!("SHELL [{}]", words.join(" "))
            }
            Command::Onbuild(trigger) => {
                let mut triggers = strings(&config["OnBuild"]);
                triggers.push(trigger.clone());
                config["OnBuild"] = json!(triggers);
                format!("ONBUILD {trigger}")
            }
            Command::Stopsignal(signal) => {
                let signal = self.expand(state, signal)?;
                let known = signal.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n))
                    || nix::sys::signal::Signal::iterator().any(|s| {
                        let name = s.as_str();
                        name == signal || name.strip_prefix("SIG") == Some(&signal)
                    });
                if !known {
                    return Err(BuildError::new(format!("Invalid signal: {signal}")));
                }
                config["StopSignal"] = signal.clone().into();
                format!("STOPSIGNAL {signal}")
            }
            Command::Maintainer(name) => {
                let name = self.expand(state, name)?;
                state.image["author"] = name.clone().into();
                format!("MAINTAINER {name}")
            }
        };
        self.metadata(state, config, vec!["#(nop) ".into(), comment]).await
    }

    fn command_words(&self, state: &State, cmd: &CmdLine) -> Vec<String> {
        match cmd {
            CmdLine::Exec(words) => words.clone(),
            CmdLine::Shell(text) => state.shell().into_iter().chain(Some(text.clone())).collect(),
        }
    }

    fn healthcheck(&self, health: &Health) -> Result<Value, BuildError> {
        let Some(test) = &health.test else { return Ok(json!({ "Test": ["NONE"] })) };
        let test: Vec<String> = match test {
            CmdLine::Exec(words) => std::iter::once("CMD".to_string()).chain(words.iter().cloned()).collect(),
            CmdLine::Shell(text) => vec!["CMD-SHELL".into(), text.clone()],
        };
        let mut check = json!({ "Test": test });
        for (flag, value) in &health.flags {
            let field = match flag.as_str() {
                "interval" => "Interval",
                "timeout" => "Timeout",
                "start-period" => "StartPeriod",
                "start-interval" => "StartInterval",
                _ => {
                    let retries: i64 = value.parse().map_err(|_| {
                        BuildError::new(format!("strconv.ParseInt: parsing \"{value}\": invalid syntax"))
                    })?;
                    if retries < 0 {
                        return Err(BuildError::new("--retries cannot be negative"));
                    }
                    check["Retries"] = retries.into();
                    continue;
                }
            };
            check[field] = duration_ns(flag, value)?.into();
        }
        Ok(check)
    }

    /// The probe config of a step: the runConfig with Cmd replaced by the
    /// step's comment (metadata, COPY) or its command (RUN).
    fn probe(config: &Value, cmd: &[String]) -> Value {
        let mut probe = config.clone();
        probe["Cmd"] = json!(cmd);
        probe
    }

    /// Looks the step up in the cache (unless `nocache` or an earlier miss).
    async fn lookup(&mut self, state: &mut State, key: &str) -> Result<bool, BuildError> {
        if self.options.no_cache || state.busted {
            return Ok(false);
        }
        match self.cached(key).await {
            Some(image) => {
                self.out.stream(" ---> Using cache\n").await?;
                state.id = cache::image_id(&image);
                state.image = image;
                Ok(true)
            }
            None => {
                state.busted = true;
                Ok(false)
            }
        }
    }

    /// A step that only changes the config: a new image config, no layer.
    async fn metadata(&mut self, state: &mut State, config: Value, comment: Vec<String>) -> Result<(), BuildError> {
        let cmd: Vec<String> = state.shell().into_iter().chain(comment).collect();
        let probe = Self::probe(&config, &cmd);
        let key = cache::key(&state.id, &probe, "");
        if self.lookup(state, &key).await? {
            return Ok(());
        }
        let mut child = state.image.clone();
        let created = now();
        child["config"] = config;
        child["container_config"] = probe;
        child["created"] = created.clone().into();
        push_history(&mut child, json!({ "created": created, "created_by": cmd.join(" "), "empty_layer": true }));
        self.remember(&key, &child).await;
        state.id = cache::image_id(&child);
        state.image = child;
        Ok(())
    }

    async fn run_step(
        &mut self,
        state: &mut State,
        cmd: &CmdLine,
        heredocs: &[berth_engine::build::parser::Heredoc],
        mounts: &[berth_engine::build::mounts::RunMount],
        network: Option<&str>,
    ) -> Result<(), BuildError> {
        let words = match (cmd, heredocs) {
            (CmdLine::Shell(text), [doc, ..])
                if text.trim().starts_with("<<") && text.split_whitespace().count() == 1 =>
            {
                // `RUN <<EOF`: the document is the script.
                state.shell().into_iter().chain(Some(doc.content.clone())).collect()
            }
            (CmdLine::Shell(text), docs) if !docs.is_empty() => {
                // The shell reads here-documents itself: hand it them as written.
                let mut script = text.clone();
                for doc in docs {
                    script.push('\n');
                    script.push_str(&doc.content);
                    script.push_str(&doc.name);
                }
                state.shell().into_iter().chain(Some(script)).collect()
            }
            _ => self.command_words(state, cmd),
        };
        let arg_env = state.arg_env();
        let probe_cmd: Vec<String> = if arg_env.is_empty() {
            words.clone()
        } else {
            std::iter::once(format!("|{}", arg_env.len()))
                .chain(arg_env.iter().cloned())
                .chain(words.iter().cloned())
                .collect()
        };
        let config = state.config().clone();
        let probe = Self::probe(&config, &probe_cmd);
        let key = cache::key(&state.id, &probe, &self.mount_key(mounts, network));
        if self.lookup(state, &key).await? {
            return Ok(());
        }
        let prepared = self.prepare_mounts(mounts).await?;
        let mut host_config = self.run_host_config();
        if let Some(network) = network {
            host_config["NetworkMode"] = network.into();
        }
        if !prepared.mounts.is_empty() {
            host_config["Mounts"] = json!(prepared.mounts);
        }
        if !prepared.tmpfs.is_empty() {
            host_config["Tmpfs"] = Value::Object(prepared.tmpfs.clone());
        }
        let layers = self.layers(&state.image).await?;
        let mut env = state.env();
        env.extend(arg_env);
        for proxy in PROXY_ARGS {
            if let (Some(Some(value)), false) = (self.options.build_args.get(*proxy), state.args.contains_key(*proxy)) {
                env.push(format!("{proxy}={value}"));
            }
        }
        let request = json!({
            "Cmd": words,
            "Entrypoint": [""],
            "Env": env,
            "User": config["User"],
            "WorkingDir": config["WorkingDir"],
            "HostConfig": host_config,
        });
        let containers = self.builder.containers.clone();
        let id =
            containers.create("", request, state.image_info(layers, &self.work), short(&state.id).to_string()).await?;
        let result = self.run_container(&id, &words).await;
        let committed = match result {
            Ok(()) => self.commit(state, &id, config, probe, &probe_cmd.join(" "), &key).await,
            Err(err) => Err(err),
        };
        let keep = !(self.options.remove || self.options.force_remove)
            || (committed.is_err() && !self.options.force_remove && !self.out.is_closed());
        if !keep {
            let _ = containers.remove(&id, true, true).await;
            self.out.stream(format!("Removing intermediate container {}\n", short(&id))).await?;
        }
        drop(prepared);
        committed
    }

    fn run_host_config(&self) -> Value {
        let o = self.options;
        let mut host =
            json!({ "NetworkMode": if o.network_mode.is_empty() { "default" } else { o.network_mode.as_str() } });
        if !o.extra_hosts.is_empty() {
            host["ExtraHosts"] = json!(o.extra_hosts);
        }
        for (field, value) in [
            ("ShmSize", o.shm_size),
            ("Memory", o.memory),
            ("MemorySwap", o.memory_swap),
            ("CpuShares", o.cpu_shares),
            ("CpuPeriod", o.cpu_period),
            ("CpuQuota", o.cpu_quota),
        ] {
            if value != 0 {
                host[field] = value.into();
            }
        }
        if !o.cpuset_cpus.is_empty() {
            host["CpusetCpus"] = o.cpuset_cpus.clone().into();
        }
        if !o.cpuset_mems.is_empty() {
            host["CpusetMems"] = o.cpuset_mems.clone().into();
        }
        host
    }

    /// Runs a RUN container, its output into the stream; Err on a non-zero exit.
    async fn run_container(&mut self, id: &str, words: &[String]) -> Result<(), BuildError> {
        let containers = self.builder.containers.clone();
        self.out.stream(format!(" ---> Running in {}\n", short(id))).await?;
        let start =
            berth_agent_proto::AttachStart { id: id.to_string(), stdout: true, stderr: true, ..Default::default() };
        let mut output = containers.attach(start, None).await?;
        let exited = containers.wait(id, "next-exit").await?;
        containers.start(id, Vec::new()).await?;
        let mut cancel = self.cancel.clone();
        loop {
            let entry = tokio::select! {
                entry = output.recv() => entry,
                // The guard wait_for returns is dropped at once (it is not Send).
                _ = async { drop(cancel.wait_for(|cancelled| *cancelled).await) } => {
                    // Another stage failed: the build ends, and so does this step.
                    let _ = containers.kill(id, "KILL").await;
                    return Err(BuildError::new("cancelled: another stage failed"));
                }
            };
            let Some(entry) = entry else { break };
            let text = String::from_utf8_lossy(&entry.data).into_owned();
            let sent = if entry.stream == 2 { self.out.stderr(&text).await } else { self.out.stream(text).await };
            if sent.is_err() {
                // The client went away: the build stops, and so does the step.
                let _ = containers.kill(id, "KILL").await;
                return Err(BuildError::new("the client went away"));
            }
        }
        let (code, error) = exited.await;
        if !error.is_empty() {
            return Err(BuildError::new(error));
        }
        if code != 0 {
            return Err(BuildError {
                message: format!("The command '{}' returned a non-zero code: {code}", words.join(" ")),
                code: Some(code as i64),
            });
        }
        Ok(())
    }

    /// The container's writable layer as a new layer of the image.
    async fn commit(
        &mut self,
        state: &mut State,
        container: &str,
        config: Value,
        probe: Value,
        created_by: &str,
        key: &str,
    ) -> Result<(), BuildError> {
        let entry = self.builder.containers.lookup(container).await?;
        let upper = entry.dir.upper();
        let tar = self.work.join(format!("layer-{}.tar", short(container)));
        let images = self.builder.images.clone();
        let (diff_id, _) = images
            .blocking(move |store| {
                let written = std::fs::File::create(&tar)
                    .and_then(|file| berth_engine::rootfs::write_layer_diff(&upper, std::io::BufWriter::new(file)))
                    .map_err(|source| berth_engine::store::StoreError::Io {
                        context: "writing the step's layer".into(),
                        source,
                    })
                    .and_then(|()| store.add_layer_file(&tar));
                let _ = std::fs::remove_file(&tar);
                written
            })
            .await?;
        let mut child = state.image.clone();
        let created = now();
        child["config"] = config;
        child["container_config"] = probe;
        child["container"] = container.into();
        child["created"] = created.clone().into();
        if !child["rootfs"]["diff_ids"].is_array() {
            child["rootfs"] = json!({ "type": "layers", "diff_ids": [] });
        }
        child["rootfs"]["diff_ids"].as_array_mut().expect("an array").push(diff_id.into());
        push_history(&mut child, json!({ "created": created, "created_by": created_by }));
        self.remember(key, &child).await;
        state.id = cache::image_id(&child);
        state.image = child;
        Ok(())
    }

    /// A step whose layer is `tar` extracted at `/` in the image.
    pub(super) async fn layer_step(
        &mut self,
        state: &mut State,
        config: Value,
        comment: Vec<String>,
        sources_key: &str,
        tar: std::path::PathBuf,
    ) -> Result<(), BuildError> {
        let cmd: Vec<String> = state.shell().into_iter().chain(comment).collect();
        let probe = Self::probe(&config, &cmd);
        let key = cache::key(&state.id, &probe, sources_key);
        if self.lookup(state, &key).await? {
            return Ok(());
        }
        self.extract_and_commit(state, config, probe, &cmd.join(" "), &key, &[("/".into(), tar)]).await
    }

    /// Extracts each (directory, tar) into a container of the image, in
    /// order, and commits it.
    async fn extract_and_commit(
        &mut self,
        state: &mut State,
        config: Value,
        probe: Value,
        created_by: &str,
        key: &str,
        tars: &[(String, std::path::PathBuf)],
    ) -> Result<(), BuildError> {
        let layers = self.layers(&state.image).await?;
        let containers = self.builder.containers.clone();
        let request = json!({ "Cmd": ["/bin/sh"], "Entrypoint": [""], "HostConfig": { "NetworkMode": "none" } });
        let id =
            containers.create("", request, state.image_info(layers, &self.work), short(&state.id).to_string()).await?;
        let mut result = Ok(());
        for (dir, tar) in tars {
            result = put_file(&containers, &id, dir, tar).await;
            if result.is_err() {
                break;
            }
        }
        let result = match result {
            Ok(()) => self.commit(state, &id, config, probe, created_by, key).await,
            Err(err) => Err(err),
        };
        let _ = containers.remove(&id, true, true).await;
        result
    }
}

fn push_history(image: &mut Value, entry: Value) {
    match image["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => image["history"] = json!([entry]),
    }
}

/// Extracts a tar file into a container at `dir` (the archive helper).
async fn put_file(
    containers: &std::sync::Arc<crate::containers::Containers>,
    id: &str,
    dir: &str,
    tar: &std::path::Path,
) -> Result<(), BuildError> {
    let (tx, rx) = mpsc::channel(8);
    let path = tar.to_path_buf();
    let feed = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut file = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                return Ok(());
            }
        }
    });
    let result = crate::archive::run(containers, id, "put", dir, Some(rx), None).await;
    let _ = feed.await;
    result.map_err(BuildError::from)
}

mod add_url;
mod copy_step;
mod run_mounts;

pub(super) use run_mounts::cache_mounts_dir;
