//! docker-compose 1.29 (Debian's) drives Berth through the VM: a stack with
//! its own network, service-name DNS, a link alias, a service sharing
//! another's network namespace, and a published port reached from the host.

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{self, describe, Berth};

const STACK: &str = r#"version: "2.4"
services:
  web:
    image: busybox
    command: sh -c 'mkdir -p /www && echo hello-from-web > /www/index.html && exec busybox httpd -f -p 80 -h /www'
    ports:
      - "127.0.0.1:PORT:80"
  client:
    image: busybox
    depends_on: [web]
    links: ["web:webalias"]
    command: sh -c 'for i in $$(seq 1 100); do wget -q -O - http://web/ && wget -q -O - http://webalias/ && exit 0; sleep 0.2; done; exit 1'
  sidecar:
    image: busybox
    network_mode: "service:web"
    depends_on: [web]
    command: sh -c 'for i in $$(seq 1 100); do wget -q -O - http://127.0.0.1/ && exit 0; sleep 0.2; done; exit 1'
"#;

fn compose(berth: &Berth, dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new("docker-compose")
        .current_dir(dir)
        .args(["-p", "berthstack"])
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", berth.run_dir().join("docker.sock").display()))
        .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
        .output()
        .expect("docker-compose (packaging/setup.sh installs it)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The exit code of a compose service's container once it has ended.
fn exit_code(berth: &Berth, container: &str) -> String {
    let out = harness::docker(berth, &["wait", container]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn compose_stack_with_service_names_links_shared_netns_and_a_published_port() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let port = free_port();
    let dir = berth.share.path().join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), STACK.replace("PORT", &port.to_string())).unwrap();

    let up = compose(&berth, &dir, &["up", "-d"]);
    assert!(up.status.success(), "{}", describe(&up));
    assert_eq!(exit_code(&berth, "berthstack_client_1"), "0", "client could not reach web by name and alias");
    assert_eq!(exit_code(&berth, "berthstack_sidecar_1"), "0", "sidecar could not reach web on its loopback");

    // The published port, from the host.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        match http_get(port) {
            Ok(answer) if answer.contains("hello-from-web") => break answer,
            other if Instant::now() > deadline => panic!("web not reachable on 127.0.0.1:{port}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    let networks = harness::docker_ok(&berth, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(networks.lines().any(|n| n == "berthstack_default"), "{networks}");

    let down = compose(&berth, &dir, &["down"]);
    assert!(down.status.success(), "{}", describe(&down));
    let networks = harness::docker_ok(&berth, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains("berthstack"), "down left the network: {networks}");
    // Nothing holds the port any more.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the published port is still bound after down");
    berth.stop_and_check_clean();
}
