//! Attacks from inside containers, and crashes, through a real VM.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{self, describe, Berth};

/// A started VM with the busybox test image loaded.
fn berth_with_busybox() -> Berth {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    berth
}

use harness::docker_ok as ok;

/// tests/vm/probes/vsock_probe.c, built static into the VM's share.
fn build_vsock_probe(berth: &Berth) -> String {
    let probe = berth.share.path().join("vsock_probe");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/vm/probes/vsock_probe.c");
    let built = Command::new("cc").args(["-static", "-O2", "-o"]).arg(&probe).arg(source).output().unwrap();
    assert!(built.status.success(), "building the probe: {}", describe(&built));
    probe.display().to_string()
}

#[test]
fn containers_cannot_reach_the_agent_the_key_or_the_host() {
    let berth = berth_with_busybox();
    let probe = build_vsock_probe(&berth);
    let mount = format!("{probe}:/probe:ro");

    // Docker's default isolation, locked down further: no vsock socket at
    // all, with or without junk in the high half of the family.
    let locked = ok(
        &berth,
        &[
            "run",
            "--rm",
            "--user",
            "nobody",
            "--cap-drop",
            "ALL",
            "--read-only",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &mount,
            "busybox",
            "/probe",
        ],
    );
    assert!(locked.contains("socket(AF_VSOCK|1<<32): Operation not permitted\n"), "{locked}");
    assert!(locked.contains("socket(AF_VSOCK): Operation not permitted\n"), "{locked}");
    assert!(!locked.contains("connected"), "{locked}");

    // Without seccomp, and privileged (root in the VM by design): a socket,
    // but nothing on the agent's or the host's ports answers.
    for extra in [&["--security-opt", "seccomp=unconfined"][..], &["--privileged"][..]] {
        let args: Vec<&str> = ["run", "--rm"]
            .into_iter()
            .chain(extra.iter().copied())
            .chain(["-v", &mount, "busybox", "/probe"])
            .collect();
        let out = ok(&berth, &args);
        assert!(out.contains("socket(AF_VSOCK): created"), "{extra:?}: {out}");
        assert!(!out.contains("ANSWERED"), "{extra:?}: a vsock service answered a container:\n{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("cid ")).count(), 6, "{out}");
    }
    assert!(berth.logs().contains("refused a connection from inside the VM"), "{}", berth.logs());

    // The key is nowhere a container or the VM's processes can read it.
    let key = std::fs::read_to_string(berth.run_dir().join("agent.key")).unwrap();
    let cmdline = ok(&berth, &["run", "--rm", "--privileged", "busybox", "cat", "/proc/cmdline"]);
    assert!(!cmdline.contains(key.trim()), "{cmdline}");
    let gone = berth.shell(&["sh", "-c", "test -e /berth-agent.key && echo present || echo absent"]);
    assert_eq!(String::from_utf8_lossy(&gone.stdout), "absent\n", "{}", describe(&gone));
    let ps = harness::processes_mentioning("qemu-system");
    assert!(ps.iter().all(|p| !p.contains(key.trim())), "the key is in QEMU's command line");

    // A share takes files, FIFOs included, but no device node (254:0 is
    // the VM's disk; on the host it could be any disk) and no setuid or
    // setgid program, even from a privileged container's root.
    let share = berth.share.path().display().to_string();
    let attempts = ok(
        &berth,
        &[
            "run",
            "--rm",
            "--privileged",
            "-v",
            &format!("{share}:/share"),
            "busybox",
            "sh",
            "-c",
            "cd /share && echo x > prog && chmod 755 prog && mkfifo fifo && echo fifo ok; \
             chmod u+s prog 2>&1 || echo setuid refused; chmod g+s prog 2>&1 || echo setgid refused; \
             mknod disk b 254 0 2>&1 || echo device refused",
        ],
    );
    for expected in ["fifo ok", "setuid refused", "setgid refused", "device refused"] {
        assert!(attempts.contains(expected), "{expected}: {attempts}");
    }
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let prog = std::fs::metadata(berth.share.path().join("prog")).unwrap();
    assert_eq!(prog.permissions().mode() & 0o7777, 0o755, "a privilege bit reached the host");
    assert!(std::fs::symlink_metadata(berth.share.path().join("fifo")).unwrap().file_type().is_fifo());
    assert!(!berth.share.path().join("disk").exists(), "a device node reached the host");

    // Loopback works in a container's own network namespace.
    let ping = ok(&berth, &["run", "--rm", "busybox", "busybox", "ping", "-c", "1", "-W", "5", "127.0.0.1"]);
    assert!(ping.contains("1 packets received"), "{ping}");
    berth.stop_and_check_clean();
}

/// kill -9 of the daemon takes the VM down at once (its page cache with
/// it); the next boot must find everything a client saw acknowledged.
fn crash_and_restart(berth: &Berth) {
    let daemon_pid = berth.status()["daemon_pid"].as_i64().unwrap();
    // SAFETY: plain kill(2).
    unsafe { libc::kill(daemon_pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !berth.live_processes().is_empty() {
        assert!(Instant::now() < deadline, "the VM outlived its daemon: {:?}", berth.live_processes());
        std::thread::sleep(Duration::from_millis(50));
    }
    berth.start();
}

#[test]
fn acknowledged_work_survives_a_crash() {
    let berth = berth_with_busybox();
    crash_and_restart(&berth);
    // The loaded image's files, not only its name.
    let busybox = Command::new("sha256sum").arg("/bin/busybox").output().unwrap();
    let want = String::from_utf8_lossy(&busybox.stdout).split_whitespace().next().unwrap().to_string();
    let seen = ok(&berth, &["run", "--rm", "busybox", "busybox", "sha256sum", "/bin/busybox"]);
    assert!(seen.starts_with(&want), "busybox after a crash: {seen}, want {want}");

    ok(&berth, &["create", "--name", "made", "busybox", "true"]);
    let ran = harness::docker(&berth, &["run", "--name", "ran", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(ran.status.code(), Some(3), "{}", describe(&ran));
    crash_and_restart(&berth);
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Status}}", "made"]), "created\n");
    assert_eq!(ok(&berth, &["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "ran"]), "exited 3\n");

    ok(&berth, &["run", "--name", "base", "busybox", "sh", "-c", "echo committed > /f"]);
    ok(&berth, &["commit", "base", "committed:1"]);
    crash_and_restart(&berth);
    assert_eq!(ok(&berth, &["run", "--rm", "committed:1", "cat", "/f"]), "committed\n");

    ok(&berth, &["run", "--rm", "-v", "kept:/data", "busybox", "sh", "-c", "echo kept > /data/f"]);
    crash_and_restart(&berth);
    assert_eq!(ok(&berth, &["run", "--rm", "-v", "kept:/data", "busybox", "cat", "/data/f"]), "kept\n");

    // Every layer still matches its diff ID: save rebuilds each layer tar
    // from the files, and load checks the digests against the config.
    let saved = berth.home.path().join("saved.tar");
    ok(&berth, &["save", "-o", &saved.display().to_string(), "busybox", "committed:1"]);
    ok(&berth, &["rmi", "committed:1"]);
    ok(&berth, &["rm", "made", "ran", "base"]);
    let left = ok(&berth, &["ps", "-a", "--format", "{{.ID}} {{.Status}} {{.Command}}"]);
    assert_eq!(left, "", "containers left after a crash");
    ok(&berth, &["rmi", "busybox"]);
    ok(&berth, &["load", "-i", &saved.display().to_string()]);
    berth.stop_and_check_clean();
}

/// One raw tar header (no end blocks): the 512-byte `.wh...` tarball.
fn one_entry_tar(name: &str) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(0);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// POSTs `body` to the VM's Docker API; the status code and the body.
fn post(berth: &Berth, path: &str, body: &str) -> (u16, String) {
    let socket = berth.run_dir().join("docker.sock");
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&socket)
        .args(["-H", "Content-Type: application/json", "-d", body])
        .arg(format!("http://berth/v1.47{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn hostile_input_leaves_the_vm_and_the_store_whole() {
    let berth = berth_with_busybox();
    ok(&berth, &["run", "-d", "--name", "keeper", "busybox", "sleep", "600"]);

    // Bodies that panicked PID 1 (a kernel panic: every container gone).
    for body in [r#"{"Image":"busybox","HostConfig":"x"}"#, r#"{"Image":"busybox","HostConfig":{"LogConfig":5}}"#] {
        let (code, answer) = post(&berth, "/containers/create", body);
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(answer.contains("cannot unmarshal"), "{body}: {answer}");
    }
    assert_eq!(berth.status()["state"], "running");

    // A layer whose one entry is `.wh...` removed the whole layer store.
    let tarball = berth.home.path().join("wipe.tar");
    std::fs::write(&tarball, one_entry_tar(".wh...")).unwrap();
    let imported = harness::docker(&berth, &["import", &tarball.display().to_string(), "wipe"]);
    assert!(!imported.status.success(), "{}", describe(&imported));
    assert_eq!(ok(&berth, &["run", "--rm", "busybox", "echo", "still here"]), "still here\n");
    assert_eq!(
        ok(&berth, &["exec", "keeper", "cat", "/etc/passwd"]).lines().next(),
        Some("root:x:0:0:root:/root:/bin/sh")
    );
    ok(&berth, &["rm", "-f", "keeper"]);
    berth.stop_and_check_clean();
}
