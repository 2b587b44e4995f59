//! The Docker API below the CLI: the optional TCP listener, websocket
//! attach, many clients at once, clients that vanish mid-stream, and bodies
//! no well-behaved client sends.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use super::harness::{describe, Berth};
use super::{docker, load_busybox, local_berth, local_config, ok, stderr, stdout};

/// A raw HTTP/1.1 exchange on the daemon's unix socket. Written here rather
/// than taken from a crate because these tests need what clients avoid:
/// half-read responses, dropped connections, lying and huge bodies.
struct Http {
    reader: BufReader<UnixStream>,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Http {
    fn connect(berth: &Berth) -> Http {
        let stream = UnixStream::connect(berth.run_dir().join("docker.sock")).expect("connecting to docker.sock");
        // A hung daemon fails the test instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        Http { reader: BufReader::new(stream) }
    }

    fn send(&mut self, method: &str, path: &str, extra_headers: &str, body: &[u8]) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{extra_headers}\r\n",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
    }

    fn read_head(&mut self) -> Head {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).expect("reading the status line");
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            panic!("not an HTTP status line: {status_line:?}");
        });
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Head { status, headers }
    }

    /// The rest of the body after `read_head`, chunked or sized.
    fn read_body(&mut self, head: &Head) -> Vec<u8> {
        let mut body = Vec::new();
        if head.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    return body;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        match head.header("content-length") {
            Some(length) => {
                body.resize(length.parse().unwrap(), 0);
                self.reader.read_exact(&mut body).unwrap();
            }
            None => {
                self.reader.read_to_end(&mut body).unwrap();
            }
        }
        body
    }
}

/// One request on its own connection: (status, body).
pub(super) fn call(berth: &Berth, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
    let mut http = Http::connect(berth);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    http.send(method, path, "Connection: close\r\n", body.as_bytes());
    let head = http.read_head();
    let body = http.read_body(&head);
    (head.status, body)
}

pub(super) fn call_json(berth: &Berth, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = call(berth, method, path, body);
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{method} {path}: {status} {:?} is not JSON", String::from_utf8_lossy(&body)));
    (status, value)
}

/// Docker's 8-byte frames (stream, 0, 0, 0, big-endian length) decoded
/// into the bytes of stdout and stderr.
fn demultiplex(mut framed: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while framed.len() >= 8 {
        let length = u32::from_be_bytes(framed[4..8].try_into().unwrap()) as usize;
        let data = &framed[8..8 + length];
        match framed[0] {
            1 => out.extend_from_slice(data),
            2 => err.extend_from_slice(data),
            other => panic!("stream {other} in {framed:?}"),
        }
        framed = &framed[8 + length..];
    }
    assert!(framed.is_empty(), "a truncated frame: {framed:?}");
    (out, err)
}

/// The pid the daemon recorded for itself, and the local agent's.
pub(super) fn daemon_and_agent_pids(berth: &Berth) -> (u32, u32) {
    let daemon = std::fs::read_to_string(berth.run_dir().join("daemon.pid")).unwrap().trim().parse().unwrap();
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(berth.run_dir().join("state.json")).unwrap()).unwrap();
    let agent = state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "berth-agent")
        .and_then(|p| p["pid"].as_u64())
        .expect("the agent's pid in state.json") as u32;
    (daemon, agent)
}

/// TCP sockets in LISTEN state held by `pid` (its descriptors' socket
/// inodes matched against its network namespace's tables).
fn listening_tcp_sockets(pid: u32) -> Vec<String> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state (0A = LISTEN), ..., inode (10th field).
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                listening.push(format!("{table} {}", fields[1]));
            }
        }
    }
    listening
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn tcp_listener_only_when_configured() {
    // Off by default: no TCP socket at all, and status says so.
    let berth = local_berth();
    let (daemon, _) = daemon_and_agent_pids(&berth);
    assert_eq!(listening_tcp_sockets(daemon), Vec::<String>::new());
    assert_eq!(berth.status()["docker_tcp"], Value::Null);
    berth.stop_and_check_clean();
    drop(berth);

    let port = free_port();
    let berth = Berth::with_config_file(&local_config(&format!("[api]\ntcp = \"127.0.0.1:{port}\"\n")));
    let started = berth.run(&["start"]);
    assert!(started.status.success(), "{}", describe(&started));
    assert!(
        stderr(&started).contains(&format!("tcp://127.0.0.1:{port} without authentication")),
        "berth start warns: {}",
        describe(&started)
    );
    assert!(berth.logs().contains("also served on TCP without authentication"), "{}", berth.logs());
    assert_eq!(berth.status()["docker_tcp"], format!("tcp://127.0.0.1:{port}"));
    let (daemon, _) = daemon_and_agent_pids(&berth);
    assert_eq!(listening_tcp_sockets(daemon).len(), 1, "the check sees the listener it must not see by default");
    load_busybox(&berth);
    let out = std::process::Command::new("docker")
        .args(["-H", &format!("tcp://127.0.0.1:{port}"), "run", "--rm", "busybox", "echo", "hi"])
        .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "hi\n", "{}", describe(&out));
    berth.stop_and_check_clean();
    assert_eq!(berth.status()["docker_tcp"], Value::Null);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the listener is gone with the daemon");

    // A bad address is a config error that names the key, before any start.
    let berth = Berth::with_config_file(&local_config("[api]\ntcp = \"localhost:2375\"\n"));
    let out = berth.run(&["start"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("api.tcp: \"localhost:2375\" is not an IP:port address"), "{}", describe(&out));
}

/// A websocket client on the daemon's unix socket.
fn websocket(berth: &Berth, path: &str) -> tungstenite::WebSocket<UnixStream> {
    let stream = UnixStream::connect(berth.run_dir().join("docker.sock")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let (socket, response) = tungstenite::client(format!("ws://localhost{path}"), stream).expect("websocket upgrade");
    assert_eq!(response.status(), 101);
    socket
}

/// Reads binary messages until their bytes contain every one of `wanted`.
fn read_until(socket: &mut tungstenite::WebSocket<UnixStream>, wanted: &[&str]) -> String {
    let mut received = Vec::new();
    while !wanted.iter().all(|w| String::from_utf8_lossy(&received).contains(w)) {
        match socket.read() {
            Ok(Message::Binary(data)) => received.extend_from_slice(&data),
            Ok(other) => panic!("unexpected {other:?} after {:?}", String::from_utf8_lossy(&received)),
            Err(err) => panic!("{err} after {:?}", String::from_utf8_lossy(&received)),
        }
    }
    String::from_utf8(received).unwrap()
}

#[test]
fn websocket_attach() {
    let berth = local_berth();
    ok(
        &berth,
        &[
            "run",
            "-d",
            "-i",
            "--name",
            "echoer",
            "busybox",
            "sh",
            "-c",
            "while read l; do echo \"out $l\"; echo \"err $l\" >&2; done",
        ],
    );
    let mut socket = websocket(&berth, "/v1.47/containers/echoer/attach/ws?stream=1&stdin=1&stdout=1&stderr=1");
    // Binary and text messages are both stdin; output comes back raw, both
    // streams mixed, with no 8-byte frame headers.
    socket.send(Message::binary(b"one\n".to_vec())).unwrap();
    let output = read_until(&mut socket, &["out one\n", "err one\n"]);
    assert_eq!(output.len(), "out one\nerr one\n".len(), "raw output only: {output:?}");
    socket.send(Message::text("two\n")).unwrap();
    read_until(&mut socket, &["out two\n", "err two\n"]);
    socket.close(None).unwrap();
    while socket.read().is_ok() {}
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Running}}", "echoer"]), "true\n", "closing detaches");

    // docker-py's test: attach before the start, with logs; the server
    // closes the websocket when the container is done.
    let id = ok(&berth, &["create", "busybox", "printf", "hi there"]);
    let mut socket = websocket(&berth, &format!("/containers/{}/attach/ws?stream=1&stdout=1&logs=1", id.trim()));
    ok(&berth, &["start", id.trim()]);
    assert_eq!(read_until(&mut socket, &["hi there"]), "hi there");
    match socket.read() {
        Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the server's close, got {other:?}"),
    }

    // Not an upgrade, or no such container: Docker's JSON errors.
    let (status, body) = call_json(&berth, "GET", "/containers/echoer/attach/ws?stream=1", None);
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("websocket"), "{body}");
    let stream = UnixStream::connect(berth.run_dir().join("docker.sock")).unwrap();
    match tungstenite::client("ws://localhost/containers/nope/attach/ws?stream=1&stdout=1", stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 404);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["message"], "No such container: nope");
        }
        other => panic!("expected a 404, got {:?}", other.map(|(_, r)| r)),
    }
    ok(&berth, &["rm", "-f", "echoer", id.trim()]);
    berth.stop_and_check_clean();
}

/// `docker run --rm -i` through the raw API, as the CLI does it: create,
/// attach and wait before the start, then stdin, the output and the status.
/// The process waits for its input, which is sent only once the start has
/// answered: a process that exits while its start is still being recorded
/// is another test's subject.
fn run_through_the_api(berth: &Berth, word: &str) {
    let create = json!({
        "Image": "busybox",
        "Cmd": ["sh", "-c", "read word; echo \"out $word\"; echo \"err $word\" >&2"],
        "AttachStdin": true,
        "AttachStdout": true,
        "AttachStderr": true,
        "OpenStdin": true,
        "StdinOnce": true,
        "HostConfig": {"AutoRemove": true},
    });
    let (status, created) = call_json(berth, "POST", "/containers/create", Some(create));
    assert_eq!(status, 201, "{created}");
    let id = created["Id"].as_str().unwrap().to_string();

    let mut attach = Http::connect(berth);
    attach.send(
        "POST",
        &format!("/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1"),
        "Connection: Upgrade\r\nUpgrade: tcp\r\n",
        b"",
    );
    assert_eq!(attach.read_head().status, 101);
    let mut wait = Http::connect(berth);
    wait.send("POST", &format!("/containers/{id}/wait?condition=removed"), "Connection: close\r\n", b"");
    let wait_head = wait.read_head();
    assert_eq!(wait_head.status, 200);

    let (status, body) = call(berth, "POST", &format!("/containers/{id}/start"), None);
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    let stdin = attach.reader.get_mut();
    stdin.write_all(format!("{word}\n").as_bytes()).unwrap();
    stdin.shutdown(std::net::Shutdown::Write).unwrap();
    let mut framed = Vec::new();
    attach.reader.read_to_end(&mut framed).unwrap();
    let (out, err) = demultiplex(&framed);
    assert_eq!(
        (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err)),
        (format!("out {word}\n").into(), format!("err {word}\n").into())
    );
    let waited: Value = serde_json::from_slice(&wait.read_body(&wait_head)).unwrap();
    assert_eq!(waited["StatusCode"], 0, "{waited}");
}

#[test]
fn many_concurrent_clients() {
    let berth = local_berth();
    let steady = ok(&berth, &["run", "-d", "--name", "steady", "busybox", "sleep", "300"]);
    let steady = steady.trim();
    std::thread::scope(|scope| {
        for client in 0..32 {
            let berth = &berth;
            scope.spawn(move || {
                let (status, body) = call(berth, "GET", "/_ping", None);
                assert_eq!((status, body.as_slice()), (200, b"OK".as_slice()));
                let (status, list) = call_json(berth, "GET", "/v1.47/containers/json", None);
                assert_eq!(status, 200, "{list}");
                assert!(list.as_array().unwrap().iter().any(|c| c["Id"] == steady), "{list}");
                let (status, inspected) = call_json(berth, "GET", &format!("/containers/{steady}/json"), None);
                assert_eq!((status, &inspected["State"]["Running"]), (200, &json!(true)), "{inspected}");
                run_through_the_api(berth, &format!("client-{client}"));
            });
        }
    });
    // Every --rm container is gone; the daemon still answers.
    assert_eq!(ok(&berth, &["ps", "-aq", "--no-trunc"]).trim(), steady);
    ok(&berth, &["rm", "-f", "steady"]);
    berth.stop_and_check_clean();
}

/// (open descriptors, threads) of a process.
fn resources(pid: u32) -> (usize, usize) {
    let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (count(format!("/proc/{pid}/fd")), count(format!("/proc/{pid}/task")))
}

/// Opens a stream of each long-lived kind and returns the connections,
/// once each has its response head (so the daemon and the agent have set
/// up their side).
fn open_streams(berth: &Berth, container: &str) -> Vec<Http> {
    let requests = [
        ("GET", format!("/containers/{container}/logs?follow=1&stdout=1&stderr=1"), ""),
        (
            "POST",
            format!("/containers/{container}/attach?stream=1&stdin=1&stdout=1&stderr=1"),
            "Connection: Upgrade\r\nUpgrade: tcp\r\n",
        ),
        ("GET", "/events".to_string(), ""),
        ("GET", format!("/containers/{container}/stats?stream=1"), ""),
    ];
    requests
        .iter()
        .map(|(method, path, headers)| {
            let mut http = Http::connect(berth);
            http.send(method, path, headers, b"");
            let head = http.read_head();
            assert!(head.status == 200 || head.status == 101, "{method} {path}: {}", head.status);
            http
        })
        .collect()
}

/// Waits (bounded) until both processes are back to at most `baseline`,
/// and returns what they are at.
fn settle(pids: [u32; 2], baseline: [(usize, usize); 2]) -> [(usize, usize); 2] {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = pids.map(resources);
        let settled = now.iter().zip(baseline).all(|(n, b)| n.0 <= b.0 && n.1 <= b.1);
        if settled || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn clients_that_leave_mid_stream_cost_nothing() {
    let berth = local_berth();
    // Idle: nothing is ever written to a stream whose client left, so only
    // noticing the client's departure can end it.
    ok(&berth, &["run", "-d", "-i", "--name", "idle", "busybox", "sleep", "300"]);
    let (daemon, agent) = daemon_and_agent_pids(&berth);
    // A first round brings up whatever is made once (the agent connection,
    // worker threads); what it leaves open after settling is the baseline.
    drop(open_streams(&berth, "idle"));
    let baseline = [resources(daemon), resources(agent)];
    let baseline = settle([daemon, agent], baseline);

    for _ in 0..5 {
        drop(open_streams(&berth, "idle"));
    }
    let after = settle([daemon, agent], baseline);
    assert!(
        after.iter().zip(baseline).all(|(a, b)| a.0 <= b.0 && a.1 <= b.1),
        "(fds, threads) of the daemon and the agent: {after:?} after 20 dropped streams, {baseline:?} before\n{}\n{}",
        std::fs::read_dir(format!("/proc/{daemon}/fd"))
            .unwrap()
            .flatten()
            .map(|e| format!("{:?}", std::fs::read_link(e.path())))
            .collect::<Vec<_>>()
            .join(" "),
        std::fs::read_dir(format!("/proc/{agent}/fd"))
            .unwrap()
            .flatten()
            .map(|e| format!("{:?}", std::fs::read_link(e.path())))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // The container did not notice, and the daemon still serves.
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Running}}", "idle"]), "true\n");
    ok(&berth, &["rm", "-f", "idle"]);
    berth.stop_and_check_clean();
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn bad_and_oversized_bodies() {
    let berth = local_berth();
    let (status, body) = call_json(&berth, "POST", "/containers/create", None);
    assert_eq!(status, 400, "an empty body: {body}");
    let mut http = Http::connect(&berth);
    http.send("POST", "/containers/create", "Connection: close\r\n", b"{\"Image\": \"busybox\",");
    let head = http.read_head();
    let body: Value = serde_json::from_slice(&http.read_body(&head)).unwrap();
    assert_eq!(head.status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("invalid JSON"), "{body}");

    // 20 MiB, declared and then streamed without a length: refused with a
    // JSON 413, while the daemon's memory stays far below the body's size.
    let (daemon, _) = daemon_and_agent_pids(&berth);
    let peak_before = peak_rss_kib(daemon);
    let mut huge = b"{\"Image\":\"busybox\",\"Env\":[\"".to_vec();
    huge.resize(20 << 20, b'a');
    huge.extend_from_slice(b"\"]}");
    for chunked in [false, true] {
        let mut http = Http::connect(&berth);
        let mut writer = http.reader.get_ref().try_clone().unwrap();
        let huge = huge.clone();
        // The daemon may answer before it has read everything: write on
        // another thread, read the answer here.
        let sender = std::thread::spawn(move || {
            let framing = if chunked {
                "Transfer-Encoding: chunked".to_string()
            } else {
                format!("Content-Length: {}", huge.len())
            };
            let head = format!("POST /containers/create HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\n{framing}\r\n\r\n");
            writer.write_all(head.as_bytes())?;
            for piece in huge.chunks(1 << 20) {
                if chunked {
                    writer.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
                    writer.write_all(piece)?;
                    writer.write_all(b"\r\n")?;
                } else {
                    writer.write_all(piece)?;
                }
            }
            if chunked {
                writer.write_all(b"0\r\n\r\n")?;
            }
            Ok::<_, std::io::Error>(())
        });
        let head = http.read_head();
        let body: Value = serde_json::from_slice(&http.read_body(&head)).unwrap();
        assert_eq!(head.status, 413, "chunked: {chunked}: {body}");
        assert!(body["message"].as_str().unwrap().contains("too large"), "{body}");
        drop(http);
        let _ = sender.join().unwrap();
    }
    let growth_mib = (peak_rss_kib(daemon).saturating_sub(peak_before)) >> 10;
    assert!(growth_mib < 12, "the daemon's peak memory grew by {growth_mib} MiB for two 20 MiB bodies");

    // Still serving, and nothing was created.
    assert_eq!(ok(&berth, &["ps", "-aq"]), "");
    let out = docker(&berth, &["run", "--rm", "busybox", "echo", "fine"]);
    assert_eq!(stdout(&out), "fine\n", "{}", describe(&out));
    berth.stop_and_check_clean();
}

/// An exec's instance reports the command's own pid in the VM (here the
/// host, with a local agent), not 0 and not the helper that starts it.
#[test]
fn exec_instances_report_the_commands_pid() {
    let berth = local_berth();
    ok(&berth, &["run", "-d", "--name", "box", "busybox", "sleep", "300"]);
    let (status, created) = call_json(&berth, "POST", "/containers/box/exec", Some(json!({"Cmd": ["sleep", "123"]})));
    assert_eq!(status, 201, "{created}");
    let id = created["Id"].as_str().unwrap().to_string();
    let (status, body) = call(&berth, "POST", &format!("/exec/{id}/start"), Some(json!({"Detach": true})));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let deadline = Instant::now() + Duration::from_secs(10);
    let inspected = loop {
        let (status, inspected) = call_json(&berth, "GET", &format!("/exec/{id}/json"), None);
        assert_eq!(status, 200, "{inspected}");
        if inspected["Pid"] != 0 || Instant::now() > deadline {
            break inspected;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(inspected["Running"], true, "{inspected}");
    let pid = inspected["Pid"].as_i64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&cmdline), "sleep\x00123\x00", "pid {pid} is the exec's command");
    ok(&berth, &["rm", "-f", "box"]);
    berth.stop_and_check_clean();
}

/// `POST /images/load` answers as dockerd: a chunked stream of CRLF-ended
/// messages naming what the archive named (docker-py parses a sized body as
/// one JSON document), and a refused archive as an error in that stream.
#[test]
fn load_answers_a_stream_of_the_archives_names() {
    let berth = local_berth();
    ok(&berth, &["tag", "busybox", "extra:1"]);
    let saved = berth.home.path().join("two.tar");
    ok(&berth, &["save", "-o", saved.to_str().unwrap(), "busybox", "extra:1"]);
    ok(&berth, &["tag", "busybox", "not-in-the-archive:1"]);
    let archive = std::fs::read(&saved).unwrap();

    let mut http = Http::connect(&berth);
    http.send("POST", "/images/load", "Content-Type: application/x-tar\r\nConnection: close\r\n", &archive);
    let head = http.read_head();
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_none(), "a sized body");
    let body = String::from_utf8(http.read_body(&head)).unwrap();
    let mut names: Vec<String> = body
        .split_terminator("\r\n")
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .map(|message| message["stream"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["Loaded image: busybox:latest\n", "Loaded image: extra:1\n"]);

    let mut http = Http::connect(&berth);
    http.send("POST", "/images/load", "Content-Type: application/x-tar\r\nConnection: close\r\n", b"abc");
    let head = http.read_head();
    let body = String::from_utf8(http.read_body(&head)).unwrap();
    assert_eq!(head.status, 200, "{body}");
    let message: Value = serde_json::from_str(body.trim_end()).unwrap();
    assert!(message["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    assert_eq!(message["errorDetail"]["message"], message["error"]);
    berth.stop_and_check_clean();
}
