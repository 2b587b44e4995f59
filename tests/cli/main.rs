//! The real docker CLI against Berth with a local agent (no VM): the
//! container engine and the Docker API judged by the client users run.
//! The same paths through the VM are covered in `vm`.

#[path = "../vm/harness.rs"]
mod harness;

use std::process::{Command, Output, Stdio};

use harness::{describe, Berth};

mod api;

/// config.toml of a Berth with a local agent; `extra` is appended.
fn local_config(extra: &str) -> String {
    format!("backend = \"local\"\n[vm]\nshares = []\n{extra}")
}

fn local_berth() -> Berth {
    let berth = Berth::with_config_file(&local_config(""));
    berth.start();
    load_busybox(&berth);
    berth
}

/// `docker load`s the busybox test image into a started Berth.
fn load_busybox(berth: &Berth) {
    let archive = berth.home.path().join("busybox.tar");
    let made = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/images/busybox-archive.py"))
        .arg(&archive)
        .status()
        .expect("python3");
    assert!(made.success());
    let out = docker(berth, &["load", "-i", &archive.display().to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
}

fn docker(berth: &Berth, args: &[&str]) -> Output {
    harness::docker(berth, args)
}

fn docker_cmd(berth: &Berth, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.arg("-H")
        .arg(format!("unix://{}", berth.run_dir().join("docker.sock").display()))
        .args(args)
        .env("DOCKER_CONFIG", berth.home.path().join("docker-config"));
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs docker and insists on success.
fn ok(berth: &Berth, args: &[&str]) -> String {
    let out = docker(berth, args);
    assert!(out.status.success(), "docker {args:?}: {}\n--- berth logs ---\n{}", describe(&out), berth.logs());
    stdout(&out)
}

#[test]
fn docker_run_in_all_its_forms() {
    let berth = local_berth();

    // Attached: output of a process that exits at once, both streams, exit code.
    let out = docker(&berth, &["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!((stdout(&out).as_str(), stderr(&out).as_str(), out.status.code()), ("out\n", "err\n", Some(3)));

    // -i: stdin reaches the container and its end ends `cat`.
    let mut child = docker_cmd(&berth, &["run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((stdout(&out).as_str(), out.status.code()), ("piped line\ndone\n", Some(0)));

    // -t: a terminal inside the container (the CLI needs one outside too).
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("docker -H unix://{} run --rm -t busybox tty", berth.run_dir().join("docker.sock").display()),
            "/dev/null",
        ])
        .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(stdout(&out).contains("/dev/pts/0"), "{}", describe(&out));

    // --rm removed everything.
    assert_eq!(ok(&berth, &["ps", "-aq"]), "");

    // `berth start` made the `berth` context current: a plain `docker`
    // (no -H, no DOCKER_HOST) talks to Berth.
    let plain = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap()
    };
    assert_eq!(stdout(&plain(&["context", "show"])).trim(), "berth");
    let out = plain(&["run", "--rm", "busybox", "echo", "via context"]);
    assert_eq!(stdout(&out), "via context\n", "{}", describe(&out));

    // Errors in Docker's words.
    let out = docker(&berth, &["run", "--rm", "busybox", "no-such-binary"]);
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    assert!(stderr(&out).contains("executable file not found in $PATH"), "{}", describe(&out));
    let out = docker(&berth, &["run", "--rm", "--device", "/dev/kmsg", "busybox", "true"]);
    assert!(stderr(&out).contains("HostConfig.Devices is not supported"), "{}", describe(&out));
    let out = docker(&berth, &["logs", "nope"]);
    assert!(stderr(&out).contains("No such container: nope"), "{}", describe(&out));
    berth.stop_and_check_clean();
}

#[test]
fn detached_containers_through_their_lifecycle() {
    let berth = local_berth();
    let id = ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64);
    std::thread::sleep(std::time::Duration::from_millis(700));

    let ps = ok(&berth, &["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("ticker Up"), "{ps}");
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Running}} {{.Name}}", "ticker"]), "true /ticker\n");
    let logs = ok(&berth, &["logs", "--tail", "2", "ticker"]);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    let followed = Command::new("timeout")
        .args([
            "2",
            "docker",
            "-H",
            &format!("unix://{}", berth.run_dir().join("docker.sock").display()),
            "logs",
            "-f",
            "ticker",
        ])
        .output()
        .unwrap();
    assert!(stdout(&followed).lines().count() > logs.lines().count() + 5, "logs -f keeps following");

    // The trap makes SIGTERM a clean exit: stop returns well before its timeout.
    let started = std::time::Instant::now();
    ok(&berth, &["stop", "ticker"]);
    assert!(started.elapsed().as_secs() < 5);
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", id]), "exited 0\n");
    let out = docker(&berth, &["rm", "ticker"]);
    assert!(out.status.success(), "{}", describe(&out));

    // create + start -a, wait, kill.
    ok(&berth, &["create", "--name", "once", "busybox", "echo", "created"]);
    assert_eq!(ok(&berth, &["start", "-a", "once"]), "created\n");
    assert_eq!(ok(&berth, &["wait", "once"]), "0\n");
    ok(&berth, &["run", "-d", "--name", "sleeper", "busybox", "sleep", "60"]);
    let out = docker(&berth, &["rm", "sleeper"]);
    assert!(stderr(&out).contains("You cannot remove a running container"), "{}", describe(&out));
    ok(&berth, &["kill", "sleeper"]);
    assert_eq!(ok(&berth, &["wait", "sleeper"]), "137\n");
    ok(&berth, &["rm", "once", "sleeper"]);
    berth.stop_and_check_clean();
}

#[test]
fn exec_top_stats_pause_rename_and_prune() {
    let berth = local_berth();
    ok(&berth, &["run", "-d", "--name", "box", "-e", "FROM_RUN=1", "busybox", "sleep", "300"]);

    // exec: the container's environment, user switching, exit codes, stdin.
    let out = ok(&berth, &["exec", "box", "sh", "-c", "echo $FROM_RUN; echo $$"]);
    assert!(out.starts_with("1\n") && out.trim_end() != "1\n1", "{out}");
    let out = docker(&berth, &["exec", "-u", "app", "-w", "/tmp", "box", "sh", "-c", "id -u; pwd; exit 4"]);
    assert_eq!((stdout(&out).as_str(), out.status.code()), ("1000\n/tmp\n", Some(4)), "{}", describe(&out));
    let mut child = docker_cmd(&berth, &["exec", "-i", "box", "wc", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"a\nb\nc\n").unwrap();
    assert_eq!(stdout(&child.wait_with_output().unwrap()).trim(), "3");
    let out = docker(&berth, &["exec", "box", "no-such-binary"]);
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    assert!(stderr(&out).contains("executable file not found"), "{}", describe(&out));

    // top and stats see the container's processes.
    let top = ok(&berth, &["top", "box"]);
    assert!(top.contains("sleep 300"), "{top}");
    let stats = ok(&berth, &["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "box"]);
    assert_eq!(stats, "box 1\n");

    // pause freezes (exec refused), unpause thaws.
    ok(&berth, &["pause", "box"]);
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Status}}", "box"]), "paused\n");
    let out = docker(&berth, &["exec", "box", "true"]);
    assert!(stderr(&out).contains("is paused"), "{}", describe(&out));
    ok(&berth, &["unpause", "box"]);
    ok(&berth, &["exec", "box", "true"]);

    // rename, and the name is free again.
    ok(&berth, &["rename", "box", "renamed"]);
    assert_eq!(ok(&berth, &["ps", "--format", "{{.Names}}"]), "renamed\n");
    ok(&berth, &["run", "--name", "box", "busybox", "true"]);

    // prune removes stopped containers only; events saw all of it.
    let pruned = ok(&berth, &["container", "prune", "-f"]);
    assert!(pruned.contains("Deleted Containers"), "{pruned}");
    assert_eq!(ok(&berth, &["ps", "-a", "--format", "{{.Names}}"]), "renamed\n");
    let events = ok(&berth, &["events", "--since", "0", "--until", "1", "--format", "{{.Action}}"]);
    assert!(events.is_empty(), "until before since: nothing ({events})");
    // Events name the container as it was called then: filter by ID.
    let id = ok(&berth, &["inspect", "--format", "{{.Id}}", "renamed"]);
    let filter = format!("container={}", id.trim());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let events = ok(
        &berth,
        &[
            "events",
            "--since",
            &(now - 120).to_string(),
            "--until",
            &(now + 1).to_string(),
            "--filter",
            &filter,
            "--format",
            "{{.Action}}",
        ],
    );
    for action in ["create", "start", "pause", "unpause", "rename"] {
        assert!(events.lines().any(|l| l == action), "{action} missing from {events}");
    }

    // Networks are the predefined ones; creating one is a clear refusal.
    assert_eq!(ok(&berth, &["network", "ls", "--format", "{{.Name}}"]), "bridge\nhost\nnone\n");
    let out = docker(&berth, &["network", "create", "mine"]);
    assert!(!out.status.success() && stderr(&out).contains("cannot create networks yet"), "{}", describe(&out));
    assert_eq!(ok(&berth, &["info", "--format", "{{.Containers}} {{.ContainersRunning}} {{.Images}}"]), "1 1 1\n");
    let df = ok(&berth, &["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert!(df.contains("Images 1") && df.contains("Containers 1"), "{df}");

    ok(&berth, &["rm", "-f", "renamed"]);
    berth.stop_and_check_clean();
}

#[test]
fn named_and_anonymous_volumes() {
    let berth = local_berth();
    ok(&berth, &["volume", "create", "--label", "app=web", "data"]);
    assert_eq!(ok(&berth, &["volume", "ls", "--filter", "label=app=web", "--format", "{{.Name}}"]), "data\n");
    ok(&berth, &["run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f"]);
    assert_eq!(
        ok(&berth, &["run", "--rm", "--mount", "source=data,target=/d,readonly", "busybox", "cat", "/d/f"]),
        "kept\n"
    );

    // A new volume starts with the image's content at its mount point.
    assert!(ok(&berth, &["run", "--rm", "-v", "etc-copy:/etc", "busybox", "cat", "/etc/passwd"]).contains("app:x:1000"));

    // In use: not removable; --rm and rm -v take anonymous volumes along.
    ok(&berth, &["run", "-d", "--name", "user", "-v", "data:/data", "busybox", "sleep", "60"]);
    let out = docker(&berth, &["volume", "rm", "data"]);
    assert!(stderr(&out).contains("volume is in use"), "{}", describe(&out));
    ok(&berth, &["rm", "-f", "user"]);
    ok(&berth, &["run", "--rm", "-v", "/scratch", "busybox", "true"]);
    ok(&berth, &["run", "--name", "anon", "-v", "/scratch", "busybox", "true"]);
    assert_eq!(ok(&berth, &["volume", "ls", "-q"]).lines().count(), 3, "data, etc-copy and anon's volume");
    ok(&berth, &["rm", "-v", "anon"]);
    assert_eq!(ok(&berth, &["volume", "ls", "-q"]), "data\netc-copy\n");
    let out = docker(&berth, &["volume", "inspect", "nope"]);
    assert!(stderr(&out).contains("no such volume"), "{}", describe(&out));
    ok(&berth, &["volume", "prune", "-af"]);
    assert_eq!(ok(&berth, &["volume", "ls", "-q"]), "");
    berth.stop_and_check_clean();
}

#[test]
fn copy_files_both_ways_and_export() {
    let berth = local_berth();
    ok(&berth, &["run", "-d", "--name", "files", "busybox", "sleep", "60"]);
    let host_file = berth.home.path().join("in.txt");
    std::fs::write(&host_file, b"from the host\n").unwrap();
    ok(&berth, &["cp", &host_file.display().to_string(), "files:/tmp/"]);
    assert_eq!(ok(&berth, &["exec", "files", "cat", "/tmp/in.txt"]), "from the host\n");
    let out_dir = berth.home.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    ok(&berth, &["cp", "files:/etc", &out_dir.display().to_string()]);
    assert!(std::fs::read_to_string(out_dir.join("etc/passwd")).unwrap().contains("app:x:1000"));
    let out = docker(&berth, &["cp", "files:/nope", &out_dir.display().to_string()]);
    assert!(stderr(&out).contains("Could not find the file /nope in container files"), "{}", describe(&out));

    // Stopped containers too; export is the whole root filesystem.
    ok(&berth, &["stop", "-t", "0", "files"]);
    ok(&berth, &["cp", "files:/tmp/in.txt", &out_dir.join("back.txt").display().to_string()]);
    assert_eq!(std::fs::read(out_dir.join("back.txt")).unwrap(), b"from the host\n");
    // docker diff: what the container changed in its writable layer.
    let diff = ok(&berth, &["diff", "files"]);
    assert_eq!(diff, "C /tmp\nA /tmp/in.txt\n", "only the container's own changes");
    let tar = berth.home.path().join("export.tar");
    ok(&berth, &["export", "-o", &tar.display().to_string(), "files"]);
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let listing = stdout(&listing);
    assert!(listing.lines().any(|l| l.trim_start_matches("./") == "bin/busybox"), "{listing}");
    assert!(listing.lines().any(|l| l.trim_start_matches("./") == "tmp/in.txt"), "the container's changes are in it");
    ok(&berth, &["rm", "files"]);
    berth.stop_and_check_clean();
}

#[test]
fn pull_from_a_local_registry() {
    let registry = harness::LocalRegistry::start();
    let berth = local_berth();
    let image = format!("127.0.0.1:{}/library/tiny:1", registry.port);
    let out = docker(&berth, &["pull", &image]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("Pulling from library/tiny"), "{}", describe(&out));
    assert_eq!(ok(&berth, &["run", "--rm", &image, "echo", "pulled"]), "pulled\n");
    let out = docker(&berth, &["pull", &format!("127.0.0.1:{}/library/nope:1", registry.port)]);
    assert!(stderr(&out).contains("not found: manifest unknown"), "{}", describe(&out));

    // `docker run` of an image the engine lacks pulls it first.
    ok(&berth, &["rmi", &image, "busybox"]);
    let out = docker(&berth, &["run", "--rm", &image, "echo", "pulled on demand"]);
    assert_eq!(stdout(&out), "pulled on demand\n", "{}", describe(&out));
    assert!(stderr(&out).contains("Unable to find image"), "{}", describe(&out));
    berth.stop_and_check_clean();
}

/// `docker exec -it` under `script` (the CLI insists on a terminal of its
/// own for -t): a terminal inside, and what is typed reaches the shell.
#[test]
fn exec_with_a_terminal() {
    let berth = local_berth();
    ok(&berth, &["run", "-d", "--name", "box", "busybox", "sleep", "300"]);
    let mut script = Command::new("script")
        .args([
            "-qec",
            &format!("docker -H unix://{} exec -it box sh", berth.run_dir().join("docker.sock").display()),
            "/dev/null",
        ])
        .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The sum is worked out inside: an echo of the typed text alone would
    // not contain it.
    std::io::Write::write_all(
        &mut script.stdin.take().unwrap(),
        b"test -t 0 && test -t 1 && echo on-a-terminal; echo typed-$((40 + 2)); exit 5\n",
    )
    .unwrap();
    let out = script.wait_with_output().unwrap();
    assert!(stdout(&out).contains("\non-a-terminal"), "{}", describe(&out));
    assert!(stdout(&out).contains("typed-42"), "{}", describe(&out));
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    ok(&berth, &["rm", "-f", "box"]);
    berth.stop_and_check_clean();
}

#[test]
fn images_tags_and_missing_objects() {
    let berth = local_berth();
    let images = |berth: &Berth| ok(berth, &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let listed = images(&berth);
    let busybox_id = listed.strip_prefix("busybox:latest ").expect(&listed).trim().to_string();

    // A tag is a second name for the same image.
    ok(&berth, &["tag", "busybox", "mine:1"]);
    let listed = images(&berth);
    assert_eq!(listed, format!("busybox:latest {busybox_id}\nmine:1 {busybox_id}\n"));
    assert_eq!(ok(&berth, &["run", "--rm", "mine:1", "echo", "tagged"]), "tagged\n");

    // rmi of one of two names only untags; of the last one, deletes.
    let removed = ok(&berth, &["rmi", "busybox"]);
    assert_eq!(removed, "Untagged: busybox:latest\n");
    assert_eq!(images(&berth), format!("mine:1 {busybox_id}\n"));
    let removed = ok(&berth, &["rmi", "mine:1"]);
    assert!(removed.starts_with("Untagged: mine:1\nDeleted: sha256:"), "{removed}");
    assert_eq!(images(&berth), "");

    // Missing objects in Docker's words, exit code 1.
    for (args, message) in [
        (&["rm", "nope"][..], "Error response from daemon: No such container: nope"),
        (&["start", "nope"][..], "Error response from daemon: No such container: nope"),
        (&["rmi", "nope:1"][..], "Error response from daemon: No such image: nope:1"),
        (&["tag", "nope:1", "other:1"][..], "Error response from daemon: No such image: nope:1"),
    ] {
        let out = docker(&berth, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", describe(&out));
    }
    berth.stop_and_check_clean();
}
