//! Containers run for real by a local agent (as root, on this machine's
//! kernel): lifecycle, output, stdin, isolation, errors, and re-adoption
//! after the agent is killed.

mod common;

use std::time::Duration;

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{
    attach_input, AttachInput, AttachStart, ContainerLogsRequest, ContainerRef, CreateContainerRequest,
    KillContainerRequest, ListContainersRequest, RemoveContainerRequest, StartContainerRequest, StopContainerRequest,
    WaitContainerRequest,
};
use common::start_agent;
use serde_json::{json, Value};
use tonic::transport::Channel;

type Client = AgentClient<Channel>;

async fn load_busybox(client: &mut Client) {
    let (archive, _) = berth_engine::test_support::busybox_archive(&["busybox:latest"]);
    let chunks: Vec<berth_agent_proto::ArchiveChunk> =
        archive.chunks(256 * 1024).map(|c| berth_agent_proto::ArchiveChunk { data: c.to_vec() }).collect();
    client.load_images(tokio_stream::iter(chunks)).await.unwrap();
}

async fn create(client: &mut Client, name: &str, config: Value) -> Result<String, tonic::Status> {
    let mut config = config;
    config["Image"] = json!("busybox");
    let request = CreateContainerRequest { name: name.into(), config_json: config.to_string().into_bytes() };
    Ok(client.create_container(request).await?.into_inner().id)
}

async fn wait(client: &mut Client, id: &str, condition: &str) -> i32 {
    let request = WaitContainerRequest { id: id.into(), condition: condition.into() };
    let mut stream = client.wait_container(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.registered);
    let done = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("wait timed out");
    done.unwrap().unwrap().status_code
}

async fn logs(client: &mut Client, id: &str) -> (String, String) {
    let request = ContainerLogsRequest { id: id.into(), stdout: true, stderr: true, tail: -1, ..Default::default() };
    let mut stream = client.container_logs(request).await.unwrap().into_inner();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(entry) = stream.message().await.unwrap() {
        if entry.stream == 2 {
            err.extend(entry.data)
        } else {
            out.extend(entry.data)
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

/// Creates, starts and waits for a container; its exit code and output.
async fn run(client: &mut Client, config: Value) -> (i32, String, String) {
    let id = create(client, "", config).await.unwrap();
    client.start_container(StartContainerRequest { id: id.clone(), ..Default::default() }).await.unwrap();
    let code = wait(client, &id, "not-running").await;
    let (out, err) = logs(client, &id).await;
    client.remove_container(RemoveContainerRequest { id, force: true, remove_volumes: false }).await.unwrap();
    (code, out, err)
}

async fn inspect(client: &mut Client, id: &str) -> Value {
    serde_json::from_slice(&client.inspect_container(ContainerRef { id: id.into() }).await.unwrap().into_inner().json)
        .unwrap()
}

fn sh(script: &str) -> Value {
    json!({ "Cmd": ["sh", "-c", script] })
}

#[tokio::test]
async fn containers_run_isolated_with_dockers_defaults() {
    let mut agent = start_agent().await;
    let client = &mut agent.client;
    load_busybox(client).await;

    let (code, out, err) = run(client, sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));

    // Namespaces: PID 1, own hostname, a network namespace of its own with
    // eth0 on the default bridge, as dockerd gives.
    let (_, out, _) = run(client, sh("echo $$; hostname; ls /sys/class/net")).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the container's process is PID 1 in its namespace");
    assert_eq!(lines[1].len(), 12, "hostname is the short ID");
    assert_eq!(lines[2..], ["eth0", "lo"]);

    // Capabilities, seccomp, masked and read-only paths.
    let (_, out, _) = run(
        client,
        sh("grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; echo masked $(ls /sys/firmware | wc -l); \
            (echo x > /proc/sys/kernel/domainname) 2>&1; unshare -m true 2>&1 || echo unshare-refused"),
    )
    .await;
    assert!(out.contains("CapEff:\t00000000a80425fb"), "Docker's default capability set: {out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "the seccomp filter is on: {out}");
    assert!(out.contains("masked 0\n"), "/sys/firmware is masked: {out}");
    assert!(out.contains("Read-only file system"), "/proc/sys is read-only: {out}");
    assert!(out.contains("unshare-refused"), "unshare is refused: {out}");

    // Privileged: all capabilities, no seccomp.
    let (_, out, _) = run(
        client,
        json!({"Cmd": ["grep", "-E", "^(CapEff|Seccomp):", "/proc/self/status"], "HostConfig": {"Privileged": true}}),
    )
    .await;
    assert!(out.contains("Seccomp:\t0") && !out.contains("00000000a80425fb"), "{out}");

    // User, groups, workdir (created), env, hostname, read-only root.
    let (code, out, err) = run(
        client,
        json!({"Cmd": ["sh", "-c", "id; pwd; echo $GREETING $HOME; hostname; touch /x 2>&1"],
               "User": "app", "WorkingDir": "/srv/made", "Env": ["GREETING=hi"], "Hostname": "box",
               "HostConfig": {"ReadonlyRootfs": true}}),
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("uid=1000(app) gid=1000(app) groups=10(wheel),1000(app)"), "{out}");
    assert!(out.contains("/srv/made\nhi /home/app\nbox\n"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");

    // A command that does not exist: Docker's message, exit code 127.
    let id = create(client, "", json!({"Cmd": ["no-such-command"]})).await.unwrap();
    let err = client.start_container(StartContainerRequest { id: id.clone(), ..Default::default() }).await.unwrap_err();
    assert!(err.message().contains("executable file not found in $PATH"), "{}", err.message());
    assert_eq!(inspect(client, &id).await["State"]["ExitCode"], 127);

    // Unsupported options are refused, not ignored.
    let err = create(client, "", json!({"Cmd": ["true"], "HostConfig": {"Devices": [{"PathOnHost": "/dev/kmsg"}]}}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn lifecycle_attach_stdin_and_names() {
    let mut agent = start_agent().await;
    let client = &mut agent.client;
    load_busybox(client).await;

    // Attach before start sees everything; stdin reaches the process and
    // closing it ends `cat` (StdinOnce, as `docker run -i` sets).
    let id =
        create(client, "catter", json!({"Cmd": ["cat"], "OpenStdin": true, "StdinOnce": true, "AttachStdin": true}))
            .await
            .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(AttachInput {
        input: Some(attach_input::Input::Start(AttachStart {
            id: id.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            logs: false,
        })),
    })
    .await
    .unwrap();
    let mut output =
        client.attach_container(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    client.start_container(StartContainerRequest { id: id.clone(), ..Default::default() }).await.unwrap();
    tx.send(AttachInput { input: Some(attach_input::Input::Stdin(b"hello stdin\n".to_vec())) }).await.unwrap();
    tx.send(AttachInput { input: Some(attach_input::Input::CloseStdin(true)) }).await.unwrap();
    let mut seen = Vec::new();
    while let Some(entry) = tokio::time::timeout(Duration::from_secs(20), output.message()).await.unwrap().unwrap() {
        seen.extend(entry.data);
    }
    assert_eq!(seen, b"hello stdin\n");
    assert_eq!(wait(client, &id, "").await, 0);

    // Names are unique; lookups work by name and ID prefix.
    let err = create(client, "catter", json!({"Cmd": ["true"]})).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
    assert!(err.message().contains("is already in use"));
    assert_eq!(inspect(client, &id[..8]).await["Name"], "/catter");

    // Stop: SIGTERM is ignored by a PID 1 without handlers, so SIGKILL
    // follows the timeout (137); the container's state says so.
    let sleeper = create(client, "sleeper", json!({"Cmd": ["sleep", "300"]})).await.unwrap();
    client.start_container(StartContainerRequest { id: sleeper.clone(), ..Default::default() }).await.unwrap();
    let listed: Value = serde_json::from_slice(
        &client.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().json,
    )
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "only running containers without all: {listed}");
    assert_eq!(listed[0]["Names"][0], "/sleeper");
    let err = client
        .remove_container(RemoveContainerRequest { id: sleeper.clone(), force: false, remove_volumes: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "a running container is not removed without force");
    client
        .stop_container(StopContainerRequest { id: sleeper.clone(), timeout_secs: Some(1), signal: String::new() })
        .await
        .unwrap();
    let state = inspect(client, &sleeper).await["State"].clone();
    assert_eq!((state["Status"].as_str(), state["ExitCode"].as_i64()), (Some("exited"), Some(137)));

    // Kill with a signal the process handles.
    let trapper =
        create(client, "", sh("trap 'echo got-usr1; exit 5' USR1; while true; do sleep 0.1; done")).await.unwrap();
    client.start_container(StartContainerRequest { id: trapper.clone(), ..Default::default() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.kill_container(KillContainerRequest { id: trapper.clone(), signal: "USR1".into() }).await.unwrap();
    assert_eq!(wait(client, &trapper, "").await, 5);
    assert_eq!(logs(client, &trapper).await.0, "got-usr1\n");
    let err =
        client.kill_container(KillContainerRequest { id: trapper.clone(), signal: String::new() }).await.unwrap_err();
    assert!(err.message().contains("is not running"));

    // Removed containers are gone, and "removed" waiters hear of it.
    let waiter = {
        let mut client = client.clone();
        let id = trapper.clone();
        tokio::spawn(async move { wait(&mut client, &id, "removed").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client
        .remove_container(RemoveContainerRequest { id: trapper.clone(), force: false, remove_volumes: false })
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap(), 5);
    let err = client.inspect_container(ContainerRef { id: trapper.clone() }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message().to_string()),
        (tonic::Code::NotFound, format!("No such container: {trapper}"))
    );
}

#[tokio::test]
async fn containers_outlive_a_crashed_agent() {
    let mut agent = start_agent().await;
    load_busybox(&mut agent.client).await;
    let id = create(&mut agent.client, "survivor", sh("echo before; sleep 2; echo after; exit 7")).await.unwrap();
    agent.client.start_container(StartContainerRequest { id: id.clone(), ..Default::default() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = inspect(&mut agent.client, &id).await["State"]["Pid"].as_i64().unwrap();

    agent.crash_and_restart().await;
    let state = inspect(&mut agent.client, &id).await["State"].clone();
    assert_eq!(state["Status"], "running", "re-adopted: {state}");
    assert_eq!(state["Pid"].as_i64(), Some(pid));
    // The re-adopted container's exit is still observed and recorded.
    assert_eq!(wait(&mut agent.client, &id, "").await, 7);
    assert_eq!(logs(&mut agent.client, &id).await.0, "before\nafter\n");
}

#[tokio::test]
async fn volumes_from_and_update_through_the_engine() {
    let mut agent = start_agent().await;
    let client = &mut agent.client;
    load_busybox(client).await;

    // Docker's 404 for a --volumes-from container that does not exist.
    let err =
        create(client, "", json!({"Cmd": ["true"], "HostConfig": {"VolumesFrom": ["nope:ro"]}})).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "No such container: nope"));
    let err = create(client, "", json!({"Cmd": ["true"], "HostConfig": {"VolumesFrom": ["x:bad"]}})).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "invalid mode: bad"));

    // Inherited by ID prefix, shown in inspect, at the same path.
    let source = create(client, "", json!({"Cmd": ["true"], "Volumes": {"/shared": {}}})).await.unwrap();
    let user =
        create(client, "", json!({"Cmd": ["true"], "HostConfig": {"VolumesFrom": [&source[..12]]}})).await.unwrap();
    let (from, to) = (inspect(client, &source).await, inspect(client, &user).await);
    assert_eq!(to["Mounts"][0]["Name"], from["Mounts"][0]["Name"]);
    assert_eq!(to["Mounts"][0]["Destination"], "/shared");
    assert_eq!(to["HostConfig"]["VolumesFrom"], json!([&source[..12]]));

    // Update: Docker's answer, the record changed, zero fields left alone.
    let update = |id: &str, body: Value| berth_agent_proto::UpdateContainerRequest {
        id: id.into(),
        update_json: body.to_string().into_bytes(),
    };
    let reply = client
        .update_container(update(
            &user,
            json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}, "Memory": 0}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serde_json::from_slice::<Value>(&reply.json).unwrap(), json!({"Warnings": []}));
    let host_config = inspect(client, &user).await["HostConfig"].clone();
    assert_eq!(host_config["RestartPolicy"], json!({"Name": "on-failure", "MaximumRetryCount": 2}));
    assert_eq!(host_config["Runtime"], "runc");
    let err =
        client.update_container(update(&user, json!({"Devices": [{"PathOnHost": "/dev/kmsg"}]}))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    let err = client.update_container(update("nope", json!({}))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
