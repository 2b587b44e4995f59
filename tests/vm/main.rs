//! End-to-end tests of the VM foundation: each test boots its own real VM
//! (TCG on machines without usable KVM) through the real `berth` binary.
//!
//! Needs the guest assets (packaging/setup.sh installs them; BERTH_ASSETS
//! overrides) and QEMU, virtiofsd and vhost-device-vsock.

mod arm64;
mod build;
mod compose;
mod harness;
mod host_edits;
mod host_integration;
mod host_services;
mod images;
mod networks;
mod plan9;
mod ports;
mod profiles;
mod security;
mod stalls;
mod under_another_init;
mod uplink;
mod wsl_rootfs;

use std::io::Write;
use std::process::Stdio;

use harness::{describe, pid_alive, Berth};

#[test]
fn start_status_shell_stop() {
    let berth = Berth::new();
    berth.start();
    let status = berth.status();
    assert_eq!(status["state"], "running", "{status}");
    assert!(["tcg", "kvm"].contains(&status["accel"].as_str().unwrap()), "{status}");
    assert!(status["boot_ms"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["cpus"], 1);
    assert_eq!(status["memory_mib"], 512);
    let docker_host = format!("unix://{}/run/docker.sock", berth.home.path().display());
    assert_eq!(status["docker_host"], docker_host.as_str());
    let daemon_pid = status["daemon_pid"].as_i64().unwrap();
    // `berth version` names the running VM's pieces and the helpers.
    let versions: serde_json::Value = serde_json::from_str(&berth.ok(&["version", "--json"])).unwrap();
    assert_eq!(versions["agent"], env!("CARGO_PKG_VERSION"), "{versions}");
    assert!(versions["kernel"].as_str().unwrap().starts_with("6."), "{versions}");
    let helpers = versions["helpers"].as_array().unwrap();
    assert!(
        helpers.iter().any(|h| h["name"] == "virtiofsd" && h["version"].as_str().unwrap().contains("virtiofsd")),
        "{versions}"
    );

    // The Docker API socket: private to the user, spoken to by the real CLI.
    let socket = berth.run_dir().join("docker.sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    let docker = |args: &[&str]| harness::docker(&berth, args);
    let out = docker(&["version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.47 linux", "{}", describe(&out));
    let out = docker(&["info", "--format", "{{.NCPU}} {{.OSType}} {{.OperatingSystem}}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 linux Berth VM", "{}", describe(&out));
    let out = docker(&["ps"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("CONTAINER ID"), "{}", describe(&out));
    // What is not implemented yet says so, naming the endpoint.
    let out = docker(&["plugin", "ls"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Berth does not implement GET /plugins"),
        "{}",
        describe(&out)
    );

    // A second start is a no-op: same daemon, still running.
    let again = berth.ok(&["start"]);
    assert!(again.contains("already running"), "{again}");
    assert_eq!(berth.status()["daemon_pid"], daemon_pid);

    // The guest is ours: our kernel, our hostname, the data disk mounted.
    let out = berth.shell(&["sh", "-c", "uname -r; hostname; grep -c ' /var/lib/berth ext4 ' /proc/mounts"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("6."), "{stdout}");
    assert_eq!(&lines[1..], ["berth", "1"]);

    // Exit codes pass through; a missing command is 127 as in a shell.
    assert_eq!(berth.shell(&["sh", "-c", "exit 42"]).status.code(), Some(42));
    let missing = berth.shell(&["/no/such/program"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/program"));
    // A process killed by a signal reports 128 + signal.
    assert_eq!(berth.shell(&["sh", "-c", "kill -9 $$"]).status.code(), Some(137));

    // stdout and stderr stay apart.
    let out = berth.shell(&["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // Streaming: stdin in, a few MiB back out, nothing lost.
    let mut child = berth
        .cmd(&["shell", "--", "sh", "-c", "wc -c; head -c 3000000 /dev/zero | tr '\\0' x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&vec![b'a'; 1_000_000]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let (count, rest) = out.stdout.split_at(out.stdout.iter().position(|&b| b == b'\n').unwrap() + 1);
    assert_eq!(String::from_utf8_lossy(count).trim(), "1000000");
    assert_eq!(rest.len(), 3_000_000);
    assert!(rest.iter().all(|&b| b == b'x'));

    // Output from a process that exits at once is never lost.
    for i in 0..5 {
        let out = berth.shell(&["echo", &i.to_string()]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{i}\n"));
    }

    // With a terminal, the command gets a pty of its own, end to end.
    let script = format!(
        "{} shell -- sh -c 'test -t 0 && test -t 1 && echo \"tty $(stty size)\"; exit 7'",
        harness::berth_bin().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &script, "/dev/null"])
        .env("BERTH_HOME", berth.home.path())
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tty "), "no pty in the VM: {}", describe(&out));
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));

    // berth logs shows the daemon's, the agent's and the kernel console's logs.
    let logs = berth.ok(&["logs"]);
    for expected in
        ["==> daemon", "VM ready", "==> agent", "serving on vsock", "==> console", "==> qemu", "==> helpers"]
    {
        assert!(logs.contains(expected), "`berth logs` lacks {expected:?}:\n{logs}");
    }
    // logs -f prints what is there, then what is appended, until stopped.
    let mut follow = berth.cmd(&["logs", "-f", "--source", "daemon"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.contains("daemon starting"), "{first}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(berth.home.path().join("logs/daemon.log"))
        .unwrap()
        .write_all(b"appended-by-the-test\n")
        .unwrap();
    let appended = std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
            if line.contains("appended-by-the-test") {
                return true;
            }
            line.clear();
        }
        false
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(appended.join().unwrap(), "logs -f did not show an appended line");

    let agent_only = berth.ok(&["logs", "--source", "agent"]);
    assert!(agent_only.contains("system initialised") && !agent_only.contains("VM ready"), "{agent_only}");

    berth.stop_and_check_clean();
    assert!(!pid_alive(daemon_pid), "the daemon is still alive after stop");
    let again = berth.ok(&["stop"]);
    assert!(again.contains("not running"), "{again}");
}

#[test]
fn home_share_works_both_ways_and_data_disk_persists() {
    let berth = Berth::new();
    let share = berth.share.path().to_path_buf();
    assert!(share.display().to_string().contains(' '), "the share path should have a space in it");
    std::fs::write(share.join("from-host.txt"), "hello from the host\n").unwrap();
    berth.start();

    // Host -> guest, at the same absolute path.
    let path = share.join("from-host.txt").display().to_string();
    let out = berth.shell(&["cat", &path]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the host\n", "{}", describe(&out));

    // Guest -> host.
    let guest_file = share.join("sub dir/from-guest.txt").display().to_string();
    let script = format!("mkdir -p \"$(dirname '{guest_file}')\" && echo 'hello from the guest' > '{guest_file}'");
    let out = berth.shell(&["sh", "-c", &script]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(share.join("sub dir/from-guest.txt")).unwrap(), "hello from the guest\n");

    // `berth shell` starts in the current directory when the VM shares it.
    let out = berth.cmd(&["shell", "--", "pwd"]).current_dir(&share).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), share.display().to_string());

    // docker load / docker images go to the image store on the data disk.
    let archive = berth.home.path().join("hello.tar");
    std::fs::write(&archive, harness::docker_archive("hello:1", "hello.txt", b"hi")).unwrap();
    let out = harness::docker(&berth, &["load", "-i", &archive.display().to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: hello:1"), "{}", describe(&out));
    let images = || harness::docker(&berth, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(String::from_utf8_lossy(&images().stdout).trim(), "hello:1");
    // tag, inspect, rmi, with Docker's semantics and wording.
    let out = harness::docker(&berth, &["tag", "hello:1", "localhost:5000/team/hello:2"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = harness::docker(
        &berth,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Os}} {{.Architecture}} {{len .RootFS.Layers}} {{.RepoTags}}",
            "localhost:5000/team/hello:2",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "linux amd64 1 [hello:1 localhost:5000/team/hello:2]",
        "{}",
        describe(&out)
    );
    let out = harness::docker(&berth, &["rmi", "localhost:5000/team/hello:2"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Untagged: localhost:5000/team/hello:2",
        "{}",
        describe(&out)
    );
    let out = harness::docker(&berth, &["rmi", "nosuch:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image: nosuch:1"), "{}", describe(&out));
    let out = harness::docker(&berth, &["image", "inspect", "nosuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image: nosuch"), "{}", describe(&out));
    std::fs::write(&archive, b"not an image").unwrap();
    let out = harness::docker(&berth, &["load", "-i", &archive.display().to_string()]);
    assert!(!out.status.success(), "{}", describe(&out));

    // The data disk keeps its contents across a VM restart.
    let out = berth.shell(&["sh", "-c", "echo kept > /var/lib/berth/marker && sync"]);
    assert!(out.status.success(), "{}", describe(&out));
    berth.stop_and_check_clean();
    berth.start();
    let out = berth.shell(&["cat", "/var/lib/berth/marker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n", "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&images().stdout).trim(), "hello:1", "images survive a restart");
    let out = harness::docker(&berth, &["rmi", "hello:1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Untagged: hello:1") && text.contains("Deleted: sha256:"), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&images().stdout).trim(), "");
    berth.stop_and_check_clean();
}

#[test]
fn crashes_are_detected_reported_and_recovered() {
    let berth = Berth::new();
    berth.start();

    // The VM dies under the daemon: status says so, with a reason.
    let qemu = berth.live_processes().into_iter().find(|p| p.contains("qemu-system")).expect("a QEMU process");
    let qemu_pid: i32 = qemu.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: plain kill(2).
    unsafe { libc::kill(qemu_pid, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let status = berth.status();
        if status["state"] == "error" || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status["state"], "error", "{status}");
    assert!(status["error"].as_str().unwrap().contains("exited unexpectedly"), "{status}");
    assert!(berth.live_processes().is_empty(), "helpers outlived the VM: {:?}", berth.live_processes());

    // start recovers from the error.
    berth.start();
    assert_eq!(berth.status()["state"], "running");

    // The daemon dies (kill -9): its VM and helpers die with it, status
    // reports the crash, and stop/start recover.
    let daemon_pid = berth.status()["daemon_pid"].as_i64().unwrap();
    // SAFETY: plain kill(2).
    unsafe { libc::kill(daemon_pid as i32, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !berth.live_processes().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(berth.live_processes().is_empty(), "VM processes outlived the daemon: {:?}", berth.live_processes());
    let status = berth.status();
    assert_eq!(status["state"], "error", "{status}");
    assert!(status["error"].as_str().unwrap().contains("gone without shutting the VM down"), "{status}");
    berth.start();
    let out = berth.shell(&["true"]);
    assert!(out.status.success(), "{}", describe(&out));
    berth.stop_and_check_clean();
}

#[test]
fn bad_config_is_a_clear_error_and_starts_nothing() {
    let share = tempfile::tempdir().unwrap();
    let berth = Berth::with_config(share, "cpu = 2\n");
    let out = berth.run(&["start"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `cpu`") && stderr.contains("config.toml"), "{stderr}");
    assert!(berth.live_processes().is_empty());
    assert_eq!(berth.status()["state"], "stopped");

    std::fs::write(berth.home.path().join("config.toml"), "[vm]\nmemory-mib = 1\n").unwrap();
    let stderr = String::from_utf8_lossy(&berth.run(&["start"]).stderr).into_owned();
    assert!(stderr.contains("vm.memory-mib"), "{stderr}");
}

#[test]
fn local_backend_runs_the_engine_without_a_vm() {
    let berth = Berth::with_config_file("backend = \"local\"\n[vm]\nshares = []\n");
    berth.start();
    let status = berth.status();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["accel"], "none", "{status}");
    let host_kernel =
        String::from_utf8(std::process::Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    assert_eq!(status["kernel_release"], host_kernel.trim(), "the local agent reports this host");

    // Commands run on this host, as root.
    let out = berth.shell(&["sh", "-c", "id -u; exit 3"]);
    assert_eq!((String::from_utf8_lossy(&out.stdout).trim(), out.status.code()), ("0", Some(3)), "{}", describe(&out));

    // The Docker API and the image store work the same way.
    let archive = berth.home.path().join("img.tar");
    std::fs::write(&archive, harness::docker_archive("local:1", "f", b"x")).unwrap();
    let out = harness::docker(&berth, &["load", "-i", &archive.display().to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: local:1"), "{}", describe(&out));
    assert!(berth.home.path().join("local/images/index.json").is_file(), "the store lives under BERTH_HOME/local");
    berth.stop_and_check_clean();

    // BERTH_BACKEND overrides the file; a bad name is a clear error.
    let out = berth.cmd(&["start"]).env("BERTH_BACKEND", "cloud").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("BERTH_BACKEND=cloud"), "{}", describe(&out));
}

/// Containers in the VM: Docker's isolation and cgroup v2 limits enforced by
/// the guest kernel, an OOM kill recorded as Docker records it, exec, and a
/// restart policy applied again after the VM reboots.
#[test]
fn containers_run_in_the_vm() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let ok = |args: &[&str]| harness::docker_ok(&berth, args);

    let out = ok(&[
        "run", "--rm", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50", "busybox", "sh", "-c",
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max; grep -E '^(CapEff|Seccomp):' /proc/self/status; uname -r",
    ]);
    let kernel = berth.status()["kernel_release"].as_str().unwrap().to_string();
    assert_eq!(
        out,
        format!("67108864\n50000 100000\n50\nCapEff:\t00000000a80425fb\nSeccomp:\t2\n{kernel}\n"),
        "limits, capabilities and seccomp inside the VM"
    );

    // The device cgroup: CAP_MKNOD lets a container create a node for the
    // VM's data disk, but not open it, unless a rule allows it.
    let disk = ok(&["run", "--rm", "busybox", "cat", "/sys/block/vda/dev"]);
    let (major, minor) = disk.trim().split_once(':').unwrap();
    let read_disk = format!("mknod /tmp/disk b {major} {minor} && head -c 512 /tmp/disk | wc -c");
    let out = harness::docker(&berth, &["run", "--rm", "busybox", "sh", "-c", &read_disk]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{}", describe(&out));
    let rule = format!("b {major}:{minor} r");
    assert_eq!(ok(&["run", "--rm", "--device-cgroup-rule", &rule, "busybox", "sh", "-c", &read_disk]), "512\n");

    // The OOM killer: exit code 137 and OOMKilled, as Docker reports them.
    let out = harness::docker(
        &berth,
        &["run", "--name", "hog", "--memory", "16m", "busybox", "sh", "-c", "x=a; while true; do x=$x$x; done"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    assert_eq!(ok(&["inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}}", "hog"]), "true 137\n");

    // exec into a running container; `always` brings it back after a reboot.
    ok(&["run", "-d", "--name", "keeper", "--restart", "always", "busybox", "sleep", "600"]);
    let seen = ok(&["exec", "keeper", "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname"]);
    let id = ok(&["inspect", "--format", "{{.Id}}", "keeper"]);
    assert_eq!(seen, format!("sleep 600 \n{}\n", &id[..12]), "exec runs inside the container's namespaces");
    berth.ok(&["stop"]);
    berth.start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let state = ok(&["inspect", "--format", "{{.State.Status}} {{.RestartCount}}", "keeper"]);
        if state.starts_with("running") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "keeper did not come back after the reboot: {state}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ok(&["rm", "-f", "keeper", "hog"]);
    berth.stop_and_check_clean();
}

/// `docker pull` inside the VM through a Docker Hub mirror on the host
/// (`host.docker.internal`: over vsock to the host's loopback), named in
/// config.toml as in Docker's daemon.json.
#[test]
fn pulls_through_a_mirror_on_the_host() {
    let registry = harness::LocalRegistry::with_busybox();
    let share = tempfile::tempdir().unwrap();
    let mirror = format!("host.docker.internal:{}", registry.port);
    let berth = Berth::with_config(
        share,
        &format!("\n[engine]\nregistry-mirrors = [\"http://{mirror}\"]\ninsecure-registries = [\"{mirror}\"]\n"),
    );
    berth.start();
    // docker.io/library/tiny:1 is found on the mirror (Docker Hub itself is unreachable here).
    let out = harness::docker(&berth, &["run", "--rm", "tiny:1", "sh", "-c", "echo pulled in the VM"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled in the VM\n", "{}\n{}", describe(&out), berth.logs());
    berth.stop_and_check_clean();
}
