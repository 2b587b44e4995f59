//! Bind mounts behave as the host's own directories: host edits raise the
//! inotify events a local edit would in a container's watcher, edits made
//! in the container are not reported twice, and (run as a non-root host
//! user) any container user writes the user's files, which stay theirs.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{self, describe, Berth};

/// tests/vm/probes/inotify_probe.c, built static into `dir`.
fn build_inotify_probe(dir: &Path) {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/vm/probes/inotify_probe.c");
    let built = Command::new("cc").args(["-static", "-O2", "-o"]).arg(dir.join("inotify_probe")).arg(source).output();
    let built = built.unwrap();
    assert!(built.status.success(), "building the probe: {}", describe(&built));
}

/// One line of the probe: when, where, what.
#[derive(Debug, Clone)]
struct Seen {
    at: f64,
    dir: String,
    name: String,
    kind: String,
    cookie: u32,
}

fn seen(berth: &Berth, container: &str) -> Vec<Seen> {
    let logs = harness::docker_ok(berth, &["logs", container]);
    logs.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f.len() == 5).then(|| Seen {
                at: f[0].parse().unwrap(),
                dir: f[1].into(),
                name: f[2].into(),
                kind: f[3].into(),
                cookie: f[4].parse().unwrap(),
            })
        })
        .collect()
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Waits until the container saw (dir, name, kind) for each of `wanted`,
/// in that order, after the log's first `skip` lines; the events seen.
fn wait_for(berth: &Berth, container: &str, skip: usize, wanted: &[(&str, &str, &str)]) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<Seen> = seen(berth, container).into_iter().skip(skip).collect();
        let mut rest = wanted.iter().peekable();
        let mut matched = Vec::new();
        for e in &events {
            if let Some((dir, name, kind)) = rest.peek() {
                if e.dir == *dir && e.name == *name && e.kind == *kind {
                    matched.push(e.clone());
                    rest.next();
                }
            }
        }
        if rest.peek().is_none() {
            return matched;
        }
        assert!(Instant::now() < deadline, "wanted {wanted:?} after line {skip}, the container saw {events:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn host_edits_raise_inotify_events_in_containers_once() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let share = berth.share.path();
    let (work, bin) = (share.join("work"), share.join("bin"));
    std::fs::create_dir_all(work.join("sub")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    build_inotify_probe(&bin);
    let binds = [format!("{}:/w", work.display()), format!("{}:/probe:ro", bin.display())];
    let started = harness::docker_ok(
        &berth,
        &["run", "-d", "--name", "watcher", "-v", &binds[0], "-v", &binds[1], "busybox"]
            .into_iter()
            .chain(["/probe/inotify_probe", "/w", "/w/sub"])
            .collect::<Vec<_>>(),
    );
    assert!(!started.trim().is_empty());
    // The host watches a bind source once its container has started: edit
    // until the first edit is seen.
    let mut canary = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        canary += 1;
        std::fs::write(work.join(format!("canary{canary}")), "").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let name = format!("canary{canary}");
        if seen(&berth, "watcher").iter().any(|e| e.name == name && e.kind == "CREATE") {
            break;
        }
        assert!(Instant::now() < deadline, "no host edit reached the container: {}", berth.logs());
    }

    // Each kind, on a file and a directory, in the watched dir and in a subdirectory.
    let mut latencies = Vec::new();
    let mut step = |what: &dyn Fn(), wanted: &[(&str, &str, &str)]| -> Vec<Seen> {
        let skip = seen(&berth, "watcher").len();
        let at = now();
        what();
        let events = wait_for(&berth, "watcher", skip, wanted);
        for e in &events {
            latencies.push(e.at - at);
        }
        events
    };
    let sub = work.join("sub");
    step(
        &|| std::fs::write(sub.join("f"), "one").unwrap(),
        &[("/w/sub", "f", "CREATE"), ("/w/sub", "f", "MODIFY"), ("/w/sub", "f", "CLOSE_WRITE")],
    );
    step(
        &|| std::fs::write(sub.join("f"), "two, longer").unwrap(),
        &[("/w/sub", "f", "MODIFY"), ("/w/sub", "f", "CLOSE_WRITE")],
    );
    let moved = step(
        &|| std::fs::rename(sub.join("f"), sub.join("g")).unwrap(),
        &[("/w/sub", "f", "MOVED_FROM"), ("/w/sub", "g", "MOVED_TO")],
    );
    assert_eq!(moved[0].cookie, moved[1].cookie, "a rename's halves share a cookie: {moved:?}");
    assert_ne!(moved[0].cookie, 0);
    step(&|| std::fs::remove_file(sub.join("g")).unwrap(), &[("/w/sub", "g", "DELETE")]);
    step(&|| std::fs::create_dir(work.join("d")).unwrap(), &[("/w", "d", "CREATE,ISDIR")]);
    // The probe watches the new directory, as a dev server would: the host
    // watches its tree recursively, so files made in it are seen too.
    step(&|| std::fs::write(work.join("d/inner"), "x").unwrap(), &[("/w/d", "inner", "CREATE")]);
    step(
        &|| std::fs::rename(work.join("d"), work.join("e")).unwrap(),
        &[("/w", "d", "MOVED_FROM,ISDIR"), ("/w", "e", "MOVED_TO,ISDIR")],
    );
    // ISDIR although the guest may never have cached `e`: the host says it
    // deleted a directory.
    step(&|| std::fs::remove_dir_all(work.join("e")).unwrap(), &[("/w", "e", "DELETE,ISDIR")]);
    // What the guest sees afterwards is the host's state, not its cache.
    std::fs::write(sub.join("h"), "host").unwrap();
    step(&|| std::fs::write(sub.join("h"), "host, again").unwrap(), &[("/w/sub", "h", "CLOSE_WRITE")]);
    let cat = harness::docker_ok(&berth, &["exec", "watcher", "sh", "-c", "cat /w/sub/h; ls /w"]);
    assert!(cat.starts_with("host, again"), "{cat}");
    assert!(!cat.contains("\ne\n") && !cat.contains("\nd\n"), "{cat}");
    let worst = latencies.iter().cloned().fold(0.0, f64::max);
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    eprintln!("host edit -> container event: mean {:.0} ms, worst {:.0} ms", mean * 1e3, worst * 1e3);
    assert!(worst < 1.0, "an event took {worst:.3} s");

    // Edits made in the container come back from the host's watcher; each
    // event is still seen exactly once.
    let skip = seen(&berth, "watcher").len();
    harness::docker_ok(
        &berth,
        &[
            "exec",
            "watcher",
            "sh",
            "-c",
            "echo y > /w/sub/c; mkdir /w/cd; mv /w/sub/c /w/sub/c2; rm /w/sub/c2; rmdir /w/cd",
        ],
    );
    let expected = [
        ("/w/sub", "c", "CREATE"),
        ("/w/sub", "c", "MODIFY"),
        ("/w/sub", "c", "CLOSE_WRITE"),
        ("/w", "cd", "CREATE,ISDIR"),
        ("/w/sub", "c", "MOVED_FROM"),
        ("/w/sub", "c2", "MOVED_TO"),
        ("/w/sub", "c2", "DELETE"),
        ("/w", "cd", "DELETE,ISDIR"),
    ];
    wait_for(&berth, "watcher", skip, &expected);
    // Longer than any echo takes to come back (the latencies above).
    std::thread::sleep(Duration::from_secs(2));
    let mut counts: HashMap<(String, String, String), usize> = HashMap::new();
    for e in seen(&berth, "watcher").into_iter().skip(skip) {
        *counts.entry((e.dir, e.name, e.kind)).or_default() += 1;
    }
    for (dir, name, kind) in expected {
        let n = counts.get(&(dir.into(), name.into(), kind.into())).copied().unwrap_or(0);
        assert_eq!(n, 1, "{dir}/{name} {kind} seen {n} times: {counts:#?}");
    }
    assert_eq!(counts.values().sum::<usize>(), expected.len(), "{counts:#?}");

    harness::docker_ok(&berth, &["rm", "-f", "watcher"]);
    berth.stop_and_check_clean();
}

/// A throwaway host user for one test, removed with it.
struct HostUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl HostUser {
    fn create() -> HostUser {
        // Far from 1000, the container user the test writes as.
        let uid = 20000 + std::process::id() % 10000;
        let name = format!("berth-t{uid}");
        let added = Command::new("useradd")
            .args(["--uid", &uid.to_string(), "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"])
            .arg(&name)
            .output()
            .unwrap();
        assert!(added.status.success(), "useradd (the test runs as root): {}", describe(&added));
        let gid = Command::new("id").args(["-g", &name]).output().unwrap().stdout;
        let gid = String::from_utf8_lossy(&gid).trim().parse().expect("the user's group");
        HostUser { name, uid, gid }
    }

    /// `berth ARGS` run as this user (their ids only, no supplementary groups).
    fn berth(&self, berth: &Berth, args: &[&str]) -> std::process::Output {
        // The installed binary and assets may sit where the user cannot
        // reach them (under /root): copies in the user's Berth home.
        let cmd = berth.cmd(args);
        let assets = berth.home.path().join("assets");
        let program = berth.home.path().join("berth-bin");
        if !assets.exists() {
            let installed = std::env::var("BERTH_ASSETS").expect("BERTH_ASSETS");
            let copied = Command::new("cp").args(["-a", &installed]).arg(&assets).status().unwrap();
            assert!(copied.success(), "copying {installed}");
            std::fs::copy(cmd.get_program(), &program).unwrap();
            chown_tree(&assets, self);
            chown_tree(&program, self);
        }
        let mut wrapped = Command::new("setpriv");
        wrapped
            .args(["--reuid", &self.uid.to_string(), "--regid", &self.gid.to_string(), "--clear-groups", "--"])
            .arg(program)
            .args(cmd.get_args())
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env("HOME", berth.home.path())
            .env("BERTH_ASSETS", &assets)
            .stdin(std::process::Stdio::null());
        let out = wrapped.output().unwrap();
        assert!(out.status.success(), "berth {args:?} as {}: {}\n{}", self.name, describe(&out), berth.logs());
        out
    }
}

impl Drop for HostUser {
    fn drop(&mut self) {
        // userdel refuses while the user's processes (a VM being stopped) live.
        for _ in 0..40 {
            if Command::new("userdel").arg(&self.name).output().is_ok_and(|o| o.status.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let _ = Command::new("userdel").arg("--force").arg(&self.name).output();
    }
}

fn chown_tree(path: &Path, user: &HostUser) {
    let out = Command::new("chown").arg("-R").arg(format!("{}:{}", user.uid, user.gid)).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_non_root_users_files_are_theirs_whichever_container_user_writes_them() {
    use std::os::unix::fs::MetadataExt;
    let user = HostUser::create();
    let share = tempfile::Builder::new().prefix("berth-owner-").tempdir_in("/tmp").unwrap();
    let berth = Berth::with_config(share, "");
    let project = berth.share.path().join("proj");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("theirs.txt"), "one\n").unwrap();
    chown_tree(berth.home.path(), &user);
    chown_tree(berth.share.path(), &user);
    // Not the user's, and not writable by them: the host says no to everyone.
    std::fs::write(project.join("roots.txt"), "root's\n").unwrap();
    user.berth(&berth, &["start"]);
    harness::load_busybox(&berth);

    let bind = format!("{}:/p", project.display());
    let script = "echo two >> /p/theirs.txt && echo new > /p/made && mkdir /p/sub && echo deep > /p/sub/f && \
                  if echo x >> /p/roots.txt; then echo wrote-roots; fi";
    for container_user in ["1000:1000", "0:0"] {
        let out =
            harness::docker(&berth, &["run", "--rm", "-u", container_user, "-v", &bind, "busybox", "sh", "-c", script]);
        assert!(out.status.success(), "as {container_user}: {}", describe(&out));
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("wrote-roots"),
            "as {container_user}: {}",
            describe(&out)
        );
        for made in ["made", "sub", "sub/f"] {
            let meta = std::fs::metadata(project.join(made)).unwrap_or_else(|err| {
                let mounts = user.berth(&berth, &["shell", "--", "cat", "/proc/mounts"]);
                panic!(
                    "{made}, written as {container_user}, is not on the host ({err}); the VM's mounts:\n{}\n{}",
                    String::from_utf8_lossy(&mounts.stdout),
                    berth.logs()
                )
            });
            assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid), "{made}, written as {container_user}");
        }
        std::fs::remove_dir_all(project.join("sub")).unwrap();
        std::fs::remove_file(project.join("made")).unwrap();
    }
    assert_eq!(std::fs::read_to_string(project.join("theirs.txt")).unwrap(), "one\ntwo\ntwo\n");
    assert_eq!(std::fs::read_to_string(project.join("roots.txt")).unwrap(), "root's\n");

    // Named volumes are the VM's own disk: real ownership, as on Linux.
    let owned = harness::docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "-v",
            "vol:/v",
            "busybox",
            "sh",
            "-c",
            "touch /v/f && chown 1234:1234 /v/f && stat -c %u:%g /v/f",
        ],
    );
    assert_eq!(owned.trim(), "1234:1234");

    user.berth(&berth, &["stop"]);
    let procs = berth.live_processes();
    assert!(procs.is_empty(), "processes left after stop: {procs:#?}");
}

/// Where the host watches a share, the guest may keep what it cached of it
/// for a day (virtiofsd `--cache=always`, host/src/vm/share_cache.rs). What
/// changed on the host while no container used a tree, and so while nobody
/// watched it, is still what the next container on it sees.
#[test]
fn host_edits_made_while_no_container_used_a_tree_reach_the_next_one() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let tree = berth.share.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("kept"), "old text").unwrap();
    std::fs::write(tree.join("d/gone"), "x").unwrap();
    let bind = format!("{}:/t", tree.display());
    let look = ["run", "--rm", "-v", &bind, "busybox", "sh", "-c", "cat /t/kept; echo; ls /t/d; stat -c %s /t/kept"];
    let first = harness::docker_ok(&berth, &look);
    assert!(first.starts_with("old text\ngone\n8"), "{first}");
    // Longer than a tree stays watched after its last container (LINGER in
    // host/src/share_watch): the edits below raise nothing in the guest.
    std::thread::sleep(Duration::from_secs(12));
    std::fs::write(tree.join("kept"), "new text, longer").unwrap();
    std::fs::remove_file(tree.join("d/gone")).unwrap();
    std::fs::write(tree.join("d/made"), "y").unwrap();
    let second = harness::docker_ok(&berth, &look);
    let policy = berth.logs().lines().filter(|l| l.contains("virtiofsd cache policy")).collect::<Vec<_>>().join("\n");
    assert_eq!(second, "new text, longer\nmade\n16\n", "{policy}");
    berth.stop_and_check_clean();
}

/// Our kernel creates a name it has not looked up yet with one exclusive
/// CREATE instead of a LOOKUP and a CREATE (kernel-config/berth-virtiofs.patch,
/// `fuse_atomic_open`). An open with O_CREAT of a file that exists must still
/// be the open of that file: appended to, truncated only when asked and
/// allowed, refused where its mode says so. Every name here is new to the
/// guest when the container opens it.
#[test]
fn opens_that_may_create_keep_their_meaning_on_a_share() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let dir = berth.share.path().join("creates");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(dir.join("appended"), "host\n").unwrap();
    std::fs::write(dir.join("truncated"), "host, longer\n").unwrap();
    std::fs::write(dir.join("locked"), "keep\n").unwrap();
    std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o444)).unwrap();
    let bind = format!("{}:/p", dir.display());
    let script = "echo more >> /p/appended && echo short > /p/truncated && echo new > /p/fresh && \
                  cat /p/fresh && stat -c %s /p/fresh && mkdir /p/d && echo deep > /p/d/f && cat /p/d/f";
    let out = harness::docker_ok(&berth, &["run", "--rm", "-v", &bind, "busybox", "sh", "-c", script]);
    assert_eq!(out, "new\n4\ndeep\n");
    assert_eq!(std::fs::read_to_string(dir.join("appended")).unwrap(), "host\nmore\n");
    assert_eq!(std::fs::read_to_string(dir.join("truncated")).unwrap(), "short\n");
    assert_eq!(std::fs::read_to_string(dir.join("fresh")).unwrap(), "new\n");
    assert_eq!(std::fs::read_to_string(dir.join("d/f")).unwrap(), "deep\n");

    // Not writable by uid 1000: neither truncated nor written; a new file
    // in the same directory is theirs.
    let script = "if echo x > /p/locked; then echo wrote; fi; echo mine > /p/mine";
    let out = harness::docker(&berth, &["run", "--rm", "-u", "1000:1000", "-v", &bind, "busybox", "sh", "-c", script]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrote"), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(dir.join("locked")).unwrap(), "keep\n");
    let mine = std::fs::metadata(dir.join("mine")).unwrap();
    assert_eq!((mine.uid(), mine.gid(), mine.len()), (1000, 1000, 5));

    // A release is not waited for (kernel-config/berth-virtiofs.patch,
    // fuse_file_release), but it is sent: once the container is gone,
    // virtiofsd holds none of the files it wrote open on the host.
    assert!(
        harness::net::eventually(Duration::from_secs(10), || files_held_open_below(&dir).is_empty()),
        "still open on the host: {:?}",
        files_held_open_below(&dir)
    );
    berth.stop_and_check_clean();
}

/// Files below `dir` that some process on the host has open for I/O.
/// virtiofsd keeps an O_PATH descriptor of every inode the guest knows;
/// those are not opens and are left out.
fn files_held_open_below(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let mut held = Vec::new();
    for process in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let info = process.path().join("fdinfo").join(fd.file_name());
            let flags = std::fs::read_to_string(info).unwrap_or_default();
            let flags = flags.lines().find_map(|l| l.strip_prefix("flags:")).map(str::trim);
            let flags = flags.and_then(|f| i32::from_str_radix(f, 8).ok()).unwrap_or(0);
            if target.starts_with(&dir) && flags & libc::O_PATH == 0 {
                held.push(format!("{} {}", process.file_name().to_string_lossy(), target.display()));
            }
        }
    }
    held
}
