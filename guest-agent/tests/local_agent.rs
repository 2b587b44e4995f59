//! The agent binary as a local agent (`--unix`), driven over gRPC like the
//! host drives it in the VM: version check, Info, Exec with and without a
//! pty, signals, stdin, Shutdown.

use std::time::{Duration, Instant};

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{
    exec_input, exec_output, ExecInput, ExecStart, PingRequest, ShutdownRequest, WindowSize, PROTOCOL_VERSION,
};
use tonic::transport::Channel;

mod common;
use common::start_agent;

struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: i32,
    signal: i32,
}

async fn exec(client: &mut AgentClient<Channel>, start: ExecStart, then: Vec<exec_input::Input>) -> Ran {
    let mut inputs = vec![ExecInput { input: Some(exec_input::Input::Start(start)) }];
    inputs.extend(then.into_iter().map(|i| ExecInput { input: Some(i) }));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for input in inputs {
            tx.send(input).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Keep the request stream open until the output is done.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut stream = client.exec(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut ran = Ran { stdout: Vec::new(), stderr: Vec::new(), code: -1, signal: 0 };
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.output.unwrap() {
            exec_output::Output::Stdout(d) => ran.stdout.extend(d),
            exec_output::Output::Stderr(d) => ran.stderr.extend(d),
            exec_output::Output::Pid(_) => {}
            exec_output::Output::Exit(exit) => {
                ran.code = exit.code;
                ran.signal = exit.signal;
                return ran;
            }
        }
    }
    panic!("exec stream ended without exit")
}

fn start(argv: &[&str]) -> ExecStart {
    ExecStart { argv: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

#[tokio::test]
async fn local_agent_serves_the_protocol() {
    let mut agent = start_agent().await;
    let client = &mut agent.client;

    let pong = client.ping(PingRequest { protocol_version: PROTOCOL_VERSION }).await.unwrap().into_inner();
    assert_eq!(pong.protocol_version, PROTOCOL_VERSION);
    let err = client.ping(PingRequest { protocol_version: PROTOCOL_VERSION + 1 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("version mismatch"), "{}", err.message());

    let info = client.info(berth_agent_proto::InfoRequest {}).await.unwrap().into_inner();
    assert!(info.cpus >= 1 && info.memory_total_bytes > 0 && !info.kernel_release.is_empty());
    assert!(info.agent_rss_bytes > 0);

    // Pipes: separate streams, env and cwd, stdin with EOF.
    let mut s = start(&["sh", "-c", "echo \"$GREETING from $(pwd)\"; echo oops >&2; cat; exit 5"]);
    s.env = vec!["GREETING=hi".into()];
    s.cwd = "/tmp".into();
    s.stdin = true;
    let ran =
        exec(client, s, vec![exec_input::Input::Stdin(b"piped\n".to_vec()), exec_input::Input::CloseStdin(true)]).await;
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hi from /tmp\npiped\n");
    assert_eq!(String::from_utf8_lossy(&ran.stderr), "oops\n");
    assert_eq!(ran.code, 5);

    // A pty: the process sees a terminal of the requested size, and a resize.
    let mut s = start(&["sh", "-c", "test -t 0 && stty size; read line; stty size; echo \"got $line\""]);
    s.tty = true;
    s.stdin = true;
    s.size = Some(WindowSize { rows: 30, cols: 100 });
    let ran = exec(
        client,
        s,
        vec![
            exec_input::Input::Resize(WindowSize { rows: 50, cols: 132 }),
            exec_input::Input::Stdin(b"typed\n".to_vec()),
        ],
    )
    .await;
    let out = String::from_utf8_lossy(&ran.stdout).replace('\r', "");
    assert!(out.contains("30 100\n"), "{out:?}");
    assert!(out.contains("50 132\n"), "{out:?}");
    assert!(out.contains("got typed"), "{out:?}");
    assert!(ran.stderr.is_empty());
    assert_eq!(ran.code, 0);

    // Signals are delivered; the exit reports them.
    let ran = exec(client, start(&["sleep", "30"]), vec![exec_input::Input::Signal(libc::SIGTERM)]).await;
    assert_eq!((ran.code, ran.signal), (128 + libc::SIGTERM, libc::SIGTERM));

    // A missing program is 127 with a message, as in a shell.
    let ran = exec(client, start(&["/nonexistent"]), vec![]).await;
    assert_eq!(ran.code, 127);
    assert!(String::from_utf8_lossy(&ran.stderr).contains("/nonexistent"));

    // An empty command is refused.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(ExecInput { input: Some(exec_input::Input::Start(ExecStart::default())) }).await.unwrap();
    let err = client.exec(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Images: load what `docker save` writes, then list it.
    let (archive, id) = docker_archive();
    let chunks: Vec<berth_agent_proto::ArchiveChunk> =
        archive.chunks(1000).map(|c| berth_agent_proto::ArchiveChunk { data: c.to_vec() }).collect();
    let loaded = client.load_images(tokio_stream::iter(chunks)).await.unwrap().into_inner();
    assert_eq!(loaded.images.len(), 1);
    assert_eq!(loaded.images[0].id, id);
    assert_eq!(loaded.images[0].tags, vec!["docker.io/library/hello:1"]);
    let listed = client.list_images(berth_agent_proto::ListImagesRequest {}).await.unwrap().into_inner();
    assert_eq!(listed.images, loaded.images);
    let garbage = vec![berth_agent_proto::ArchiveChunk { data: vec![0u8; 10_000] }];
    let err = client.load_images(tokio_stream::iter(garbage)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Shutdown ends a local agent.
    client.shutdown(ShutdownRequest {}).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "local agent did not exit on Shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A one-layer docker-archive, as `docker save` writes it; returns it and the image ID.
fn docker_archive() -> (Vec<u8>, String) {
    use berth_engine::test_support;
    test_support::docker_archive(&[test_support::tar(&[("hello.txt", "hello\n")])], &["hello:1"])
}
