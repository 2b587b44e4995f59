//! The real docker CLI against Berth with a local agent (no VM): the
//! container engine and the Docker API judged by the client users run.
//! The same paths through the VM are covered in `vm`.

#[path = "../vm/harness.rs"]
mod harness;

use std::process::{Command, Output, Stdio};

use harness::{describe, Berth};

mod api;
mod archives;
mod bad_input;
mod build;
mod cli_docs;
mod client_address;
mod exec_secrets;
mod full_disk;
mod health;
mod host_safety;
mod networks;
mod ports;
mod push;

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

use harness::load_busybox;

fn docker(berth: &Berth, args: &[&str]) -> Output {
    harness::docker(berth, args)
}

fn docker_cmd(berth: &Berth, args: &[&str]) -> Command {
    harness::docker_command(berth, args)
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

/// `docker info` names the directory the local engine really keeps its
/// state in (it said the VM's /var/lib/berth before the backend declared it).
#[test]
fn info_names_the_local_engines_directory() {
    let berth = Berth::with_config_file(&local_config(""));
    berth.start();
    let root = ok(&berth, &["info", "--format", "{{.DockerRootDir}}"]);
    assert_eq!(root.trim(), berth.home.path().join("local").display().to_string());
    berth.stop_and_check_clean();
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

    // `berth start` wrote this home's own context (not the default home's
    // `berth`) and left the current one alone; the context reaches Berth.
    let plain = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .unwrap()
    };
    let context = berth.status()["docker_context"].as_str().unwrap().to_string();
    assert!(context.starts_with("berth-"), "{context}");
    assert_eq!(stdout(&plain(&["context", "show"])).trim(), "default");
    let out = plain(&["--context", &context, "run", "--rm", "busybox", "echo", "via context"]);
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

    // The predefined networks, and a user network beside them (tests/cli/networks.rs covers the rest).
    assert_eq!(ok(&berth, &["network", "ls", "--format", "{{.Name}}"]), "bridge\nhost\nnone\n");
    ok(&berth, &["network", "create", "mine"]);
    assert_eq!(ok(&berth, &["network", "ls", "--format", "{{.Name}}"]), "bridge\nhost\nmine\nnone\n");
    ok(&berth, &["network", "rm", "mine"]);
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
fn copy_into_the_volumes_of_a_container_that_never_ran() {
    let berth = local_berth();
    // Docker makes a container's volumes at create: `docker cp` reaches them
    // before the first start, and the container then sees what was copied.
    ok(&berth, &["create", "--name", "fresh", "-v", "/vol1", "busybox", "cat", "/vol1/in.txt"]);
    let host_file = berth.home.path().join("in.txt");
    std::fs::write(&host_file, b"copied before start\n").unwrap();
    ok(&berth, &["cp", &host_file.display().to_string(), "fresh:/vol1/"]);
    let tar = docker(&berth, &["cp", "fresh:/vol1/in.txt", "-"]);
    assert!(tar.status.success(), "{}", describe(&tar));
    assert!(stdout(&tar).contains("copied before start"), "{}", describe(&tar));
    assert_eq!(ok(&berth, &["start", "-a", "fresh"]), "copied before start\n");
    // The image's content fills the volume at create too.
    ok(&berth, &["create", "--name", "etc-vol", "-v", "/etc", "busybox", "true"]);
    let out_dir = berth.home.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    ok(&berth, &["cp", "etc-vol:/etc/passwd", &out_dir.display().to_string()]);
    assert!(std::fs::read_to_string(out_dir.join("passwd")).unwrap().contains("app:x:1000"));
    ok(&berth, &["rm", "-v", "fresh", "etc-vol"]);
    assert_eq!(ok(&berth, &["volume", "ls", "-q"]), "", "the anonymous volumes went with their containers");
    berth.stop_and_check_clean();
}

#[test]
fn volumes_from_another_container() {
    let berth = local_berth();
    let host_dir = berth.home.path().join("shared");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::write(host_dir.join("host.txt"), b"from the host\n").unwrap();
    let bind = format!("{}:/bound:ro", host_dir.display());
    ok(
        &berth,
        &[
            "run",
            "--name",
            "source",
            "-v",
            "named:/named",
            "-v",
            "/anon",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "echo named > /named/f; echo anon > /anon/f",
        ],
    );
    // Named and anonymous volumes and binds, at the same paths.
    let out = ok(
        &berth,
        &[
            "run",
            "--rm",
            "--volumes-from",
            "source",
            "busybox",
            "sh",
            "-c",
            "cat /named/f /anon/f /bound/host.txt; echo more > /named/g && echo wrote",
        ],
    );
    assert_eq!(out, "named\nanon\nfrom the host\nwrote\n");
    // `:ro` makes them read-only.
    let out =
        docker(&berth, &["run", "--rm", "--volumes-from", "source:ro", "busybox", "sh", "-c", "echo x > /named/h"]);
    assert!(stderr(&out).contains("Read-only file system"), "{}", describe(&out));
    // inspect shows where they come from.
    ok(&berth, &["create", "--name", "user", "--volumes-from", "source:ro", "busybox", "true"]);
    assert_eq!(ok(&berth, &["inspect", "--format", "{{json .HostConfig.VolumesFrom}}", "user"]), "[\"source:ro\"]\n");
    let mounts =
        ok(&berth, &["inspect", "--format", "{{range .Mounts}}{{.Type}} {{.Destination}} {{.RW}};{{end}}", "user"]);
    assert_eq!(mounts, "volume /named false;volume /anon false;bind /bound false;\n");
    // The volumes are in use as long as either container is there.
    let out = docker(&berth, &["volume", "rm", "named"]);
    assert!(stderr(&out).contains("volume is in use"), "{}", describe(&out));

    // An unknown container is a 404 (the agent test checks its words): the
    // docker CLI takes any 404 from create for a missing image.
    let out = docker(&berth, &["create", "--volumes-from", "nope", "busybox", "true"]);
    assert!(!out.status.success(), "{}", describe(&out));
    ok(&berth, &["rm", "-v", "user", "source"]);
    ok(&berth, &["volume", "rm", "named"]);
    berth.stop_and_check_clean();
}

/// The namespace a process of this test is in, as /proc names it.
fn own_namespace(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap().display().to_string()
}

#[test]
fn host_namespaces_another_containers_pids_and_init() {
    let berth = local_berth();
    let namespaces = "for ns in pid ipc uts; do readlink /proc/self/ns/$ns; done; hostname";
    let private = ok(&berth, &["run", "--rm", "busybox", "sh", "-c", namespaces]);
    let shared = ok(
        &berth,
        &["run", "--rm", "--pid", "host", "--ipc", "host", "--uts", "host", "busybox", "sh", "-c", namespaces],
    );
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let host = format!("{}\n{}\n{}\n{host_name}\n", own_namespace("pid"), own_namespace("ipc"), own_namespace("uts"));
    assert_eq!(shared, host, "the machine's namespaces, and its name");
    assert!(private.lines().zip(host.lines()).all(|(a, b)| a != b), "{private} vs {host}");

    // Another container's PID namespace: its processes are visible.
    ok(&berth, &["run", "-d", "--name", "pids", "busybox", "sleep", "300"]);
    let ps = ok(&berth, &["run", "--rm", "--pid", "container:pids", "busybox", "ps", "-o", "pid,args"]);
    assert!(ps.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sleep", "300"]), "{ps}");
    ok(&berth, &["rm", "-f", "pids"]);

    // --init: tini as PID 1 (bound at /sbin/docker-init, as Docker does).
    let ps = ok(&berth, &["run", "--rm", "--init", "busybox", "ps", "-o", "pid,args"]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["1", "/sbin/docker-init", "--", "ps", "-o", "pid,args"]),
        "{ps}"
    );
    // It forwards SIGTERM: `sleep` dies of it (143), not of the SIGKILL a
    // PID 1 without handlers would get after the timeout (137).
    ok(&berth, &["run", "-d", "--init", "--name", "inited", "busybox", "sleep", "300"]);
    ok(&berth, &["stop", "-t", "60", "inited"]);
    assert_eq!(
        ok(&berth, &["inspect", "--format", "{{.State.ExitCode}} {{.HostConfig.Init}}", "inited"]),
        "143 true\n"
    );
    ok(&berth, &["rm", "inited"]);
    berth.stop_and_check_clean();
}

#[test]
fn update_restart_policy_and_limits_and_runtime() {
    let berth = local_berth();
    ok(&berth, &["run", "-d", "--name", "upd", "--restart", "always", "busybox", "sleep", "300"]);
    ok(&berth, &["update", "--restart", "on-failure:3", "upd"]);
    let policy = "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}";
    assert_eq!(ok(&berth, &["inspect", "--format", policy, "upd"]), "on-failure 3\n");
    ok(&berth, &["restart", "-t", "0", "upd"]);
    assert_eq!(ok(&berth, &["inspect", "--format", policy, "upd"]), "on-failure 3\n", "kept across a restart");

    // Limits go to the running container's cgroup: where the machine has a
    // memory controller (cgroup v2, or v1 beside the unified hierarchy on a
    // hybrid host) they apply, elsewhere the refusal says why.
    let has_memory_controller = ["/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers"]
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .is_some_and(|c| c.split_whitespace().any(|c| c == "memory"))
        || std::fs::read_to_string("/proc/self/cgroup")
            .is_ok_and(|c| c.lines().any(|l| l.split(':').nth(1).is_some_and(|s| s.split(',').any(|c| c == "memory"))));
    let out = docker(&berth, &["update", "--memory", "64m", "--memory-swap", "128m", "upd"]);
    if has_memory_controller {
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(ok(&berth, &["inspect", "--format", "{{.HostConfig.Memory}}", "upd"]), "67108864\n");
        let limit = ok(&berth, &["stats", "--no-stream", "--format", "{{.MemUsage}}", "upd"]);
        assert!(limit.trim().ends_with("/ 64MiB"), "the cgroup has the new limit: {limit}");
        // And it is enforced: the OOM killer ends a process past it.
        let out = docker(
            &berth,
            &["run", "--name", "hog", "--memory", "16m", "busybox", "sh", "-c", "x=a; while true; do x=$x$x; done"],
        );
        assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
        assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.OOMKilled}}", "hog"]), "true\n");
        ok(&berth, &["rm", "hog"]);
    } else {
        assert!(stderr(&out).contains("needs the cgroup v2 memory controller"), "{}", describe(&out));
        assert_eq!(ok(&berth, &["inspect", "--format", "{{.HostConfig.Memory}}", "upd"]), "0\n", "nothing changed");
    }
    let out = docker(&berth, &["update", "--blkio-weight", "300", "upd"]);
    assert!(stderr(&out).contains("updating BlkioWeight is not supported"), "{}", describe(&out));
    let out = docker(&berth, &["update", "--restart", "always", "nope"]);
    assert!(stderr(&out).contains("No such container: nope"), "{}", describe(&out));
    ok(&berth, &["rm", "-f", "upd"]);

    // One runtime, under Docker's default name.
    ok(&berth, &["create", "--name", "rt", "--runtime", "runc", "busybox", "true"]);
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.HostConfig.Runtime}}", "rt"]), "runc\n");
    let out = docker(&berth, &["create", "--runtime", "kata", "busybox", "true"]);
    assert!(stderr(&out).contains("Unknown runtime specified kata"), "{}", describe(&out));
    ok(&berth, &["rm", "rt"]);
    berth.stop_and_check_clean();
}

#[test]
fn pull_from_a_local_registry() {
    let registry = harness::LocalRegistry::with_busybox();
    let berth = local_berth();
    let image = format!("127.0.0.1:{}/library/tiny:1", registry.port);
    let out = docker(&berth, &["pull", &image]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("Pulling from library/tiny"), "{}", describe(&out));
    assert_eq!(ok(&berth, &["run", "--rm", &image, "echo", "pulled"]), "pulled\n");
    let out = docker(&berth, &["pull", &format!("127.0.0.1:{}/library/nope:1", registry.port)]);
    assert!(stderr(&out).contains("not found: manifest unknown"), "{}", describe(&out));

    // A pulled image saves (its layers rebuilt exactly) and loads back.
    let saved = berth.home.path().join("pulled.tar").display().to_string();
    ok(&berth, &["save", "-o", &saved, &image]);
    ok(&berth, &["rmi", &image]);
    ok(&berth, &["load", "-i", &saved]);
    assert_eq!(ok(&berth, &["run", "--rm", &image, "echo", "reloaded"]), "reloaded\n");

    // What the registry serves for a reference (docker-py's inspect_distribution).
    let sock = berth.run_dir().join("docker.sock");
    let out = Command::new("curl")
        .args(["-sf", "--unix-socket", &sock.display().to_string()])
        .arg(format!("http://berth/v1.47/distribution/{image}/json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let distribution: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(distribution["Descriptor"]["digest"].as_str().unwrap().starts_with("sha256:"), "{distribution}");
    assert_eq!(distribution["Platforms"][0]["os"], "linux", "{distribution}");

    // `docker run` of an image the engine lacks pulls it first.
    ok(&berth, &["rmi", &image, "busybox"]);
    let out = docker(&berth, &["run", "--rm", &image, "echo", "pulled on demand"]);
    assert_eq!(stdout(&out), "pulled on demand\n", "{}", describe(&out));
    assert!(stderr(&out).contains("Unable to find image"), "{}", describe(&out));
    berth.stop_and_check_clean();
}

#[test]
fn images_save_load_commit_import_history_and_prune() {
    let berth = local_berth();
    let dir = berth.home.path();
    let saved = dir.join("saved.tar").display().to_string();

    // save → rmi → load: the same image ID (the layer rebuilt byte for byte
    // from its unpacked directory), and it runs.
    let id = ok(&berth, &["image", "inspect", "--format", "{{.Id}}", "busybox"]);
    ok(&berth, &["save", "-o", &saved, "busybox"]);
    let listing = Command::new("tar").args(["tf", &saved]).output().unwrap();
    let listing = stdout(&listing);
    for member in ["manifest.json", "index.json", "oci-layout"] {
        assert!(listing.lines().any(|l| l == member), "docker-archive and OCI layout in one: {listing}");
    }
    ok(&berth, &["rmi", "busybox"]);
    assert!(ok(&berth, &["load", "-i", &saved]).contains("Loaded image: busybox:latest"));
    assert_eq!(ok(&berth, &["image", "inspect", "--format", "{{.Id}}", "busybox"]), id);
    let out = docker(&berth, &["save", "nope:1"]);
    assert!(stderr(&out).contains("No such image: nope:1"), "{}", describe(&out));

    // commit: changes (a whiteout included) and --change instructions.
    ok(&berth, &["run", "--name", "base", "busybox", "sh", "-c", "echo hi > /hello; rm /bin/vi"]);
    let diff = ok(&berth, &["diff", "base"]);
    assert!(diff.contains("A /hello") && diff.contains("D /bin/vi"), "{diff}");
    let committed =
        ok(&berth, &["commit", "-c", "CMD [\"cat\", \"/hello\"]", "-m", "made by a test", "base", "me/app:1"]);
    assert!(committed.starts_with("sha256:"), "{committed}");
    assert_eq!(ok(&berth, &["run", "--rm", "me/app:1"]), "hi\n");
    let out = docker(&berth, &["run", "--rm", "me/app:1", "ls", "/bin/vi"]);
    assert_ne!(out.status.code(), Some(0), "the deletion is committed too: {}", describe(&out));
    let parent = ok(&berth, &["image", "inspect", "--format", "{{.Parent}}", "me/app:1"]);
    assert_eq!(parent, id);
    let history = ok(&berth, &["history", "--no-trunc", "--format", "{{.ID}}|{{.Comment}}", "me/app:1"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert_eq!(lines[0], format!("{}|made by a test", committed.trim()));
    assert!(lines[1].starts_with("<missing>|"), "{history}");

    // A committed image saves and loads like any other.
    ok(&berth, &["save", "-o", &saved, "me/app:1"]);
    ok(&berth, &["rm", "base"]);
    ok(&berth, &["rmi", "me/app:1"]);
    ok(&berth, &["load", "-i", &saved]);
    assert_eq!(ok(&berth, &["run", "--rm", "me/app:1"]), "hi\n");

    // import: a gzip tarball as a one-layer image, with changes.
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/greeting"), "imported\n").unwrap();
    // Debian's busybox-static, as the test images use.
    std::fs::copy("/usr/bin/busybox", tree.join("busybox")).unwrap();
    let tarball = dir.join("tree.tgz").display().to_string();
    let made = Command::new("tar").args(["-czf", &tarball, "-C", &tree.display().to_string(), "."]).status().unwrap();
    assert!(made.success());
    ok(&berth, &["import", "-c", "ENTRYPOINT [\"/busybox\"]", "-c", "ENV FROM=import", &tarball, "me/imported"]);
    assert_eq!(ok(&berth, &["run", "--rm", "me/imported", "cat", "/etc/greeting"]), "imported\n");
    assert!(ok(&berth, &["run", "--rm", "me/imported", "env"]).contains("FROM=import\n"));
    let out = docker(&berth, &["import", "-c", "RUN true", &tarball]);
    assert!(stderr(&out).contains("RUN is not a valid change command"), "{}", describe(&out));

    // prune: dangling only by default; -a takes every image no container uses.
    ok(&berth, &["tag", "me/imported", "me/untag-me"]);
    ok(&berth, &["rmi", "me/imported"]);
    ok(&berth, &["create", "--name", "keeper", "busybox", "true"]);
    let pruned = ok(&berth, &["image", "prune", "-f"]);
    assert!(pruned.contains("reclaimed space: 0B"), "nothing dangling yet: {pruned}");
    let pruned = ok(&berth, &["image", "prune", "-a", "-f"]);
    assert!(pruned.contains("untagged: me/untag-me:latest") && pruned.contains("untagged: me/app:1"), "{pruned}");
    let left = ok(&berth, &["images", "--format", "{{.Repository}}"]);
    assert_eq!(left, "busybox\n", "the image a container uses stays");

    // rmi -f under a stopped container untags; the image stays for it.
    let out = ok(&berth, &["rmi", "-f", "busybox"]);
    assert!(out.contains("Untagged: busybox:latest") && !out.contains("Deleted"), "{out}");
    ok(&berth, &["start", "-a", "keeper"]);
    assert_eq!(ok(&berth, &["images", "-q"]).trim(), &id.trim()["sha256:".len().."sha256:".len() + 12]);
    berth.stop_and_check_clean();
}

#[test]
fn log_options_bound_what_is_kept() {
    let berth = local_berth();
    // 2000 lines of 100 bytes, kept in at most 2 files of 10 KiB.
    ok(
        &berth,
        &[
            "run",
            "--name",
            "chatty",
            "--log-opt",
            "max-size=10k",
            "--log-opt",
            "max-file=2",
            "busybox",
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do printf '%099d\\n' $i; i=$((i+1)); done",
        ],
    );
    let logs = ok(&berth, &["logs", "chatty"]);
    assert!(logs.len() <= 2 * (10 << 10) && logs.len() > 10 << 10, "{} bytes kept", logs.len());
    assert!(logs.ends_with(&format!("{:099}\n", 1999)), "the newest lines are kept");
    let config = ok(&berth, &["inspect", "--format", "{{json .HostConfig.LogConfig}}", "chatty"]);
    assert_eq!(config.trim(), r#"{"Type":"json-file","Config":{"max-file":"2","max-size":"10k"}}"#);
    let out = docker(&berth, &["run", "--rm", "--log-opt", "max-size=lots", "busybox", "true"]);
    assert!(stderr(&out).contains("invalid value for log opt max-size"), "{}", describe(&out));
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
        b"test -t 0 && test -t 1 && echo on-a-terminal; tty; ls /dev/pts; echo typed-$((40 + 2)); exit 5\n",
    )
    .unwrap();
    let out = script.wait_with_output().unwrap();
    assert!(stdout(&out).contains("\non-a-terminal"), "{}", describe(&out));
    // The terminal is the container's own (its devpts), as with runc: `tty`
    // names it and it is listed there.
    assert!(stdout(&out).contains("\n/dev/pts/0\r\n0"), "{}", describe(&out));
    assert!(stdout(&out).contains("typed-42"), "{}", describe(&out));
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    ok(&berth, &["rm", "-f", "box"]);
    berth.stop_and_check_clean();
}

#[test]
fn images_tags_and_missing_objects() {
    let berth = local_berth();
    // Sorted: the CLI orders images by creation time, which two names of one
    // image share, so they come in either order (seen both ways).
    let images = |berth: &Berth| {
        let listed = ok(berth, &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
        let mut lines: Vec<&str> = listed.lines().collect();
        lines.sort_unstable();
        lines.iter().map(|line| format!("{line}\n")).collect::<String>()
    };
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

/// Containers that exit at once, many at a time: each `docker run --rm`
/// shows its output, ends, and leaves nothing behind.
#[test]
fn quick_containers_in_parallel() {
    let berth = local_berth();
    let children: Vec<_> = (0..24)
        .map(|i| {
            docker_cmd(&berth, &["run", "--rm", "busybox", "echo", &format!("run-{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(stdout(&out), format!("run-{i}\n"), "{}", describe(&out));
    }
    assert_eq!(ok(&berth, &["ps", "-aq"]), "", "every --rm container is gone");
    berth.stop_and_check_clean();
}
