//! `docker exec`: `POST /containers/{id}/exec`, `POST /exec/{id}/start`,
//! `GET /exec/{id}/json`, `POST /exec/{id}/resize`.
//!
//! Exec instances live here, in the daemon: Docker keeps them in memory
//! only, and all they hold before start is the request. The process itself
//! runs through the agent's Exec with `container_id` set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_agent_proto::agent_client::AgentClient;
use tonic::transport::Channel;

use berth_agent_proto::docker_json;
use berth_agent_proto::{exec_input, exec_output, ContainerRef, ExecInput, ExecStart, WindowSize};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::body::read_json_body;
use super::hijack::{hijack, parse_detach_keys, stdin_into, Hijack};
use super::http::{agent_error, empty, error, json_response, query_param, Body};

#[derive(Debug, Clone)]
struct Instance {
    container_id: String,
    config: Value,
    running: bool,
    exit_code: Option<i32>,
    pid: i32,
    /// Resizes for the running process.
    resize: Option<tokio::sync::mpsc::Sender<WindowSize>>,
    created: Instant,
    ended: Option<Instant>,
}

impl Instance {
    fn new(container_id: String, config: Value, now: Instant) -> Instance {
        Instance {
            container_id,
            config,
            running: false,
            exit_code: None,
            pid: 0,
            resize: None,
            created: now,
            ended: None,
        }
    }

    /// Whether `sweep` may drop it: ended (or created and never started)
    /// more than `retention` ago. A running exec is always kept.
    fn expired(&self, now: Instant, retention: Duration) -> bool {
        let since = match (self.running, self.ended) {
            (true, _) => return false,
            (false, Some(ended)) => ended,
            (false, None) => self.created,
        };
        now.saturating_duration_since(since) >= retention
    }
}

/// How long an exec stays inspectable after it ends. dockerd's exec GC
/// runs every 5 minutes, marks the execs that are no longer live and
/// removes the marked ones on its next round, so an ended exec lives 5 to
/// 10 minutes; clients inspect right after the end (`docker exec` reads
/// the exit code at once). An exec created and never started is dropped
/// after as long: dockerd keeps it while its container lives, which would
/// let a client that never starts its execs grow the registry without bound.
const EXEC_RETENTION: Duration = Duration::from_secs(5 * 60);

pub struct Registry {
    instances: Mutex<HashMap<String, Instance>>,
    retention: Duration,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry { instances: Mutex::default(), retention: EXEC_RETENTION }
    }
}

/// 64 hex digits, as Docker's exec IDs.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn no_such_exec(id: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, format!("No such exec instance: {id}"))
}

/// The body, checked against the moby type dockerd decodes it into.
async fn read_json(req: &mut Request<Incoming>, schema: &'static docker_json::Struct) -> Result<Value, Response<Body>> {
    let body = read_json_body(req, 1 << 20, true).await?;
    let value = docker_json::parse(schema, &body).map_err(|message| error(StatusCode::BAD_REQUEST, message))?;
    Ok(with_field_names(value))
}

/// The fields of an exec's create and start requests, as Docker names them.
const FIELDS: &[&str] = &[
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ConsoleSize",
    "Cmd",
    "Detach",
    "DetachKeys",
    "Env",
    "Privileged",
    "Tty",
    "User",
    "WorkingDir",
];

/// Renames a key that matches a field but for case (docker-py sends
/// `detachKeys`) to the field's name: dockerd decodes with Go's
/// encoding/json, which matches keys that way when none matches exactly.
fn with_field_names(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        for field in FIELDS {
            if object.contains_key(*field) {
                continue;
            }
            let other = object.keys().find(|key| key.eq_ignore_ascii_case(field)).cloned();
            if let Some(entry) = other.and_then(|key| object.remove(&key)) {
                object.insert(field.to_string(), entry);
            }
        }
    }
    value
}

pub(super) async fn create(
    mut req: Request<Incoming>,
    container: &str,
    agent: &AgentClient<Channel>,
    execs: &Registry,
) -> Response<Body> {
    let config = match read_json(&mut req, &docker_json::EXEC_CREATE).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    if config["Cmd"].as_array().is_none_or(|c| c.is_empty()) {
        return error(StatusCode::BAD_REQUEST, "No exec command specified");
    }
    let container_id = match running(container, agent).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let id = new_id();
    execs.insert(id.clone(), Instance::new(container_id, config, Instant::now()));
    json_response(StatusCode::CREATED, json!({ "Id": id }))
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default()
}

pub(super) async fn start(
    mut req: Request<Incoming>,
    id: &str,
    agent: &AgentClient<Channel>,
    execs: &Arc<Registry>,
) -> Response<Body> {
    let options = match read_json(&mut req, &docker_json::EXEC_START).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let (instance, resize_rx) = {
        let mut instances = execs.instances.lock().unwrap();
        let Some(instance) = instances.get_mut(id) else { return no_such_exec(id) };
        if instance.running || instance.exit_code.is_some() {
            return error(StatusCode::CONFLICT, format!("exec instance {id} has already been started"));
        }
        instance.running = true;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        instance.resize = Some(tx);
        (instance.clone(), rx)
    };
    let config = &instance.config;
    // The process gets a terminal if the exec was created with one; the
    // stream is framed unless the start request says Tty (as dockerd does).
    let process_tty = config["Tty"].as_bool().unwrap_or(false);
    let tty = options["Tty"].as_bool().unwrap_or(process_tty);
    let detach = options["Detach"].as_bool().unwrap_or(false);
    let wants_stdin = config["AttachStdin"].as_bool().unwrap_or(false) && !detach;
    let size = options["ConsoleSize"]
        .as_array()
        .or(config["ConsoleSize"].as_array())
        .and_then(|s| Some(WindowSize { rows: s.first()?.as_u64()? as u32, cols: s.get(1)?.as_u64()? as u32 }))
        .filter(|s| s.rows > 0 && s.cols > 0);
    let start = ExecStart {
        argv: strings(&config["Cmd"]),
        env: strings(&config["Env"]),
        cwd: config["WorkingDir"].as_str().unwrap_or("").to_string(),
        tty: process_tty,
        size,
        stdin: wants_stdin,
        container_id: instance.container_id.clone(),
        user: config["User"].as_str().unwrap_or("").to_string(),
        privileged: config["Privileged"].as_bool().unwrap_or(false),
    };
    let (input_tx, input_rx) = tokio::sync::mpsc::channel::<ExecInput>(32);
    let _ = input_tx.send(ExecInput { input: Some(exec_input::Input::Start(start)) }).await;
    // Resizes travel on the same input stream as stdin.
    let resize_input = input_tx.clone();
    tokio::spawn(async move {
        let mut resize_rx = resize_rx;
        while let Some(size) = resize_rx.recv().await {
            if resize_input.send(ExecInput { input: Some(exec_input::Input::Resize(size)) }).await.is_err() {
                return;
            }
        }
    });
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<(u8, Bytes)>(32);
    let run = Run { agent: agent.clone(), registry: execs.clone(), exec_id: id.to_string() };
    if detach {
        // Nothing streams: errors can still be the answer's status.
        let output = match run.start(input_rx).await {
            Ok(output) => output,
            Err(status) => return agent_error(status),
        };
        drop(input_tx);
        tokio::spawn(run.forward(output, None));
        return empty(StatusCode::OK);
    }
    // The process starts once the client has the response headers, as with
    // dockerd: output sent right behind a 101 can land in the client's
    // header read and be lost (docker-py's exec_run loses it so). So errors
    // known up front are checked first, and later ones go in the stream.
    if let Err(response) = running(&instance.container_id, agent).await {
        execs.finish(id, 126);
        return response;
    }
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if started_rx.await.is_err() {
            run.registry.finish(&run.exec_id, 126);
            return;
        }
        match run.start(input_rx).await {
            Ok(output) => run.forward(output, Some(out_tx)).await,
            // The headers are out: the error goes in the stream, as dockerd's do.
            Err(status) => {
                let _ = out_tx.send((2, Bytes::from(format!("{}\n", status.message())))).await;
            }
        }
    });
    let stdin = wants_stdin.then(|| {
        stdin_into(input_tx, |chunk| ExecInput {
            input: Some(match chunk {
                Some(data) => exec_input::Input::Stdin(data),
                None => exec_input::Input::CloseStdin(true),
            }),
        })
    });
    let detach_keys = parse_detach_keys(config["DetachKeys"].as_str().unwrap_or("")).unwrap_or_default();
    hijack(&mut req, Hijack { tty, output: out_rx, stdin, detach_keys, started: Some(started_tx) })
}

/// The full ID of a container that can take an exec, or Docker's answer
/// why not (404, or 409 when it is not running or paused).
async fn running(container: &str, agent: &AgentClient<Channel>) -> Result<String, Response<Body>> {
    let reply =
        agent.clone().inspect_container(ContainerRef { id: container.to_string() }).await.map_err(agent_error)?;
    let value: Value = serde_json::from_slice(&reply.into_inner().json).unwrap_or_default();
    let id = value["Id"].as_str().unwrap_or(container).to_string();
    if value["State"]["Paused"] == json!(true) {
        return Err(error(
            StatusCode::CONFLICT,
            format!("Container {id} is paused, unpause the container before exec"),
        ));
    }
    if value["State"]["Running"] != json!(true) {
        return Err(error(StatusCode::CONFLICT, format!("Container {id} is not running")));
    }
    Ok(id)
}

/// One exec's run in the agent, and where its end is recorded.
struct Run {
    agent: AgentClient<Channel>,
    registry: Arc<Registry>,
    exec_id: String,
}

impl Run {
    async fn start(
        &self,
        input: tokio::sync::mpsc::Receiver<ExecInput>,
    ) -> Result<tonic::Streaming<berth_agent_proto::ExecOutput>, tonic::Status> {
        match self.agent.clone().exec(tokio_stream::wrappers::ReceiverStream::new(input)).await {
            Ok(reply) => Ok(reply.into_inner()),
            Err(status) => {
                self.registry.finish(&self.exec_id, 126);
                Err(status)
            }
        }
    }

    /// Passes the output on (when streamed) and records the exit code.
    async fn forward(
        self,
        mut output: tonic::Streaming<berth_agent_proto::ExecOutput>,
        out: Option<tokio::sync::mpsc::Sender<(u8, Bytes)>>,
    ) {
        let mut code = -1;
        while let Ok(Some(message)) = output.message().await {
            match (message.output, &out) {
                (Some(exec_output::Output::Stdout(data)), Some(out)) => {
                    let _ = out.send((1, Bytes::from(data))).await;
                }
                (Some(exec_output::Output::Stderr(data)), Some(out)) => {
                    let _ = out.send((2, Bytes::from(data))).await;
                }
                (Some(exec_output::Output::Exit(exit)), _) => code = exit.code,
                (Some(exec_output::Output::Pid(pid)), _) => self.registry.started(&self.exec_id, pid),
                _ => {}
            }
        }
        self.registry.finish(&self.exec_id, code);
    }
}

impl Registry {
    /// Adds an exec, first dropping those past their retention: every new
    /// exec is a sweep, so the registry holds only what is running or
    /// recent, and an idle daemon holds what it held.
    fn insert(&self, id: String, instance: Instance) {
        let now = instance.created;
        let mut instances = self.instances.lock().unwrap();
        instances.retain(|_, kept| !kept.expired(now, self.retention));
        instances.insert(id, instance);
    }

    fn started(&self, id: &str, pid: i32) {
        if let Some(instance) = self.instances.lock().unwrap().get_mut(id) {
            instance.pid = pid;
        }
    }

    fn finish(&self, id: &str, code: i32) {
        self.finish_at(id, code, Instant::now());
    }

    fn finish_at(&self, id: &str, code: i32, now: Instant) {
        if let Some(instance) = self.instances.lock().unwrap().get_mut(id) {
            instance.running = false;
            instance.exit_code = Some(code);
            instance.resize = None;
            instance.ended = Some(now);
        }
    }
}

pub(super) fn inspect(id: &str, execs: &Registry) -> Response<Body> {
    let instances = execs.instances.lock().unwrap();
    let Some(instance) = instances.get(id) else { return no_such_exec(id) };
    let cmd = strings(&instance.config["Cmd"]);
    let flag = |key: &str| instance.config[key].as_bool().unwrap_or(false);
    json_response(
        StatusCode::OK,
        json!({
            "ID": id,
            "Running": instance.running,
            "ExitCode": instance.exit_code,
            "ProcessConfig": {
                "tty": flag("Tty"),
                "entrypoint": cmd.first(),
                "arguments": cmd.iter().skip(1).collect::<Vec<_>>(),
                "privileged": flag("Privileged"),
                "user": instance.config["User"].as_str().unwrap_or(""),
            },
            "OpenStdin": flag("AttachStdin"),
            "OpenStderr": flag("AttachStderr"),
            "OpenStdout": flag("AttachStdout"),
            "CanRemove": false,
            "ContainerID": instance.container_id,
            "DetachKeys": "",
            "Pid": instance.pid,
        }),
    )
}

pub(super) async fn resize(id: &str, query: Option<&str>, execs: &Registry) -> Response<Body> {
    let dim = |name: &str| query_param(query, name).and_then(|v| v.parse::<u32>().ok());
    let (Some(rows), Some(cols)) = (dim("h"), dim("w")) else {
        return error(StatusCode::BAD_REQUEST, "resize needs numeric h and w");
    };
    let sender = {
        let instances = execs.instances.lock().unwrap();
        let Some(instance) = instances.get(id) else { return no_such_exec(id) };
        instance.resize.clone()
    };
    match sender {
        Some(tx) => {
            let _ = tx.send(WindowSize { rows, cols }).await;
            empty(StatusCode::OK)
        }
        None => error(StatusCode::CONFLICT, format!("exec {id} is not running")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_stays_bounded_after_many_execs() {
        let registry = Registry { retention: Duration::from_secs(300), ..Registry::default() };
        let start = Instant::now();
        let add = |id: &str, at: Instant| registry.insert(id.to_string(), Instance::new("c".into(), json!({}), at));
        for n in 0..1000 {
            let id = format!("ended-{n}");
            add(&id, start);
            registry.instances.lock().unwrap().get_mut(&id).unwrap().running = true;
            registry.finish_at(&id, 0, start);
        }
        add("never-started", start);
        add("running", start);
        registry.instances.lock().unwrap().get_mut("running").unwrap().running = true;
        let later = start + Duration::from_secs(299);
        add("recent", later);
        assert_eq!(registry.instances.lock().unwrap().len(), 1003, "ended execs stay inspectable for a while");
        add("next", start + Duration::from_secs(300));
        let mut kept: Vec<String> = registry.instances.lock().unwrap().keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["next", "recent", "running"], "past the retention only the running and recent stay");
    }

    #[test]
    fn keys_match_fields_as_go_decodes_them() {
        let value =
            with_field_names(json!({"detachKeys": "ctrl-p", "tty": true, "Cmd": ["a"], "cmd": ["b"], "Other": 1}));
        assert_eq!(value, json!({"DetachKeys": "ctrl-p", "Tty": true, "Cmd": ["a"], "cmd": ["b"], "Other": 1}));
    }
}
