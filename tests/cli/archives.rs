//! Archives through the real CLI (issue 14): `docker cp` both ways, export,
//! commit and import keep symlinks, FIFOs, device nodes and hardlinks as
//! they are, and nothing a tar says can reach outside where it is unpacked.

use std::io::Write;
use std::process::Stdio;

use super::harness::describe;
use super::{docker, docker_cmd, local_berth, ok, stderr};

/// What a client sees of each entry: name, type, link name, device numbers.
type Entry = (String, tar::EntryType, Option<String>, Option<(u32, u32)>);

fn entries(tar: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar") {
        let entry = entry.expect("a tar entry");
        let header = entry.header();
        let kind = header.entry_type();
        let device = matches!(kind, tar::EntryType::Char | tar::EntryType::Block)
            .then(|| (header.device_major().unwrap().unwrap_or(0), header.device_minor().unwrap().unwrap_or(0)));
        let link = entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
        out.push((entry.path().unwrap().display().to_string(), kind, link, device));
    }
    out
}

/// The special files under `prefix` as the container made them.
fn special(prefix: &str) -> Vec<Entry> {
    use tar::EntryType as T;
    let p = |n: &str| format!("{prefix}{n}");
    vec![
        (p(""), T::Directory, None, None),
        (p("fifo"), T::Fifo, None, None),
        (p("hard-a"), T::Regular, None, None),
        (p("hard-b"), T::Link, Some(p("hard-a")), None),
        (p("null"), T::Char, None, Some((1, 3))),
        (p("to-root"), T::Symlink, Some("/".into()), None),
    ]
}

fn under<'a>(all: &'a [Entry], prefix: &str) -> Vec<&'a Entry> {
    all.iter().filter(|e| e.0.trim_start_matches("./").starts_with(prefix)).collect()
}

/// Runs docker with `input` on its stdin.
fn docker_with_input(berth: &super::harness::Berth, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child =
        docker_cmd(berth, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// One raw entry, named as no well-behaved writer would name it.
fn raw_tar(name: &str, with_end: bool) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header.set_size(0);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    if with_end {
        bytes.extend_from_slice(&[0u8; 1024]);
    }
    bytes
}

#[test]
fn archives_keep_special_files_and_stay_inside() {
    let berth = local_berth();
    let made_inside = "mkdir /s && cd /s && ln -s / to-root && mkfifo fifo && mknod null c 1 3 \
                       && echo shared > hard-a && ln hard-a hard-b";
    ok(&berth, &["run", "--name", "special", "busybox", "sh", "-c", made_inside]);

    // cp out: each kind as itself, the second name of a file as a hardlink.
    let out = docker(&berth, &["cp", "special:/s", "-"]);
    assert!(out.status.success(), "{}", describe(&out));
    let copied = out.stdout;
    assert_eq!(entries(&copied), special("s/"));

    // export: the same entries in the whole root filesystem.
    let out = docker(&berth, &["export", "special"]);
    assert!(out.status.success(), "{}", describe(&out));
    let exported = entries(&out.stdout);
    assert_eq!(under(&exported, "s/"), special("s/").iter().collect::<Vec<_>>());

    // commit: the committed layer keeps them; cp out of a container of the
    // new image reads them back from that layer.
    ok(&berth, &["commit", "special", "me/special"]);
    ok(&berth, &["create", "--name", "from-commit", "me/special"]);
    let out = docker(&berth, &["cp", "from-commit:/s", "-"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(entries(&out.stdout), special("s/"));

    // cp in: what came out goes back in as it was (a device node stays one).
    let out = docker_with_input(&berth, &["cp", "-", "from-commit:/tmp"], &copied);
    assert!(out.status.success(), "{}", describe(&out));
    let out = docker(&berth, &["cp", "from-commit:/tmp/s", "-"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(entries(&out.stdout), special("s/"));

    // cp in of a tar that climbs out: refused in Docker's words, nothing written.
    let out = docker_with_input(&berth, &["cp", "-", "from-commit:/tmp"], &raw_tar("../escaped", true));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains(r#""../escaped" is outside of "/tmp""#), "{}", describe(&out));
    let out = docker(&berth, &["cp", "from-commit:/escaped", "-"]);
    assert!(stderr(&out).contains("Could not find the file /escaped"), "{}", describe(&out));

    // import of the 512-byte tarball whose whiteout names `..`: refused,
    // and every image (and a running container's layers) is still there.
    ok(&berth, &["run", "-d", "--name", "live", "busybox", "sleep", "60"]);
    let evil = berth.home.path().join("evil.tar");
    let tarball = raw_tar(".wh...", false);
    assert_eq!(tarball.len(), 512);
    std::fs::write(&evil, &tarball).unwrap();
    let out = docker(&berth, &["import", &evil.display().to_string(), "me/evil"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("whiteout"), "{}", describe(&out));
    assert_eq!(ok(&berth, &["run", "--rm", "busybox", "echo", "still here"]), "still here\n");
    assert_eq!(ok(&berth, &["run", "--rm", "me/special", "readlink", "/s/to-root"]), "/\n");
    let passwd = ok(&berth, &["exec", "live", "cat", "/etc/passwd"]);
    assert!(passwd.contains("app:x:1000"), "the live container keeps its lower layers: {passwd}");
    ok(&berth, &["rm", "-f", "live", "special", "from-commit"]);
    berth.stop_and_check_clean();
}

/// Starts `docker export NAME` and reads its first bytes, then stops
/// reading: the export stays in progress, held back by its own client.
fn stalled_export(berth: &super::harness::Berth, name: &str) -> std::process::Child {
    use std::io::Read;
    let mut export =
        docker_cmd(berth, &["export", name]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 4096];
    export.stdout.as_mut().unwrap().read_exact(&mut first).expect("the export starts");
    export
}

/// Runs `docker ARGS` and says how long it took, giving up after `limit`.
fn timed(berth: &super::harness::Berth, args: &[&str], limit: std::time::Duration) -> Option<std::time::Duration> {
    let started = std::time::Instant::now();
    let mut child = docker_cmd(berth, args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "docker {args:?} failed");
            return Some(started.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The rest of a stalled export, and whether it ended well.
fn finish(mut export: std::process::Child) -> bool {
    let mut rest = Vec::new();
    std::io::Read::read_to_end(export.stdout.as_mut().unwrap(), &mut rest).unwrap();
    export.wait().unwrap().success()
}

/// A long `docker export` held the container's operation lock for its
/// whole length, so `docker stop` (and `docker rm`) waited for it. Now
/// stop answers at once, the export still completes, and an export that a
/// `docker rm -f` overtakes fails instead of holding the removal up.
#[test]
fn a_long_export_holds_up_neither_stop_nor_remove() {
    let berth = local_berth();
    // 96 MiB of noise: more than every buffer between the helper and a
    // client that does not read.
    let script = "dd if=/dev/urandom of=/noise bs=1M count=96 2>/dev/null; touch /ready; trap 'exit 0' TERM; while :; do sleep 0.2; done";
    for name in ["long", "doomed"] {
        ok(&berth, &["run", "-d", "--name", name, "busybox", "sh", "-c", script]);
    }
    for name in ["long", "doomed"] {
        let ready = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            docker(&berth, &["exec", name, "test", "-f", "/ready"]).status.success()
        });
        assert!(ready, "{name} wrote its file");
    }

    let export = stalled_export(&berth, "long");
    let took = timed(&berth, &["stop", "-t", "30", "long"], std::time::Duration::from_secs(15));
    let completed = finish(export);
    let took = took.expect("docker stop answered while the export was in progress");
    eprintln!("docker stop during a held-back export: {took:?}");
    assert!(took < std::time::Duration::from_secs(5), "docker stop took {took:?}");
    assert!(completed, "the export of a container stopped meanwhile completes");

    let export = stalled_export(&berth, "doomed");
    let took = timed(&berth, &["rm", "-f", "doomed"], std::time::Duration::from_secs(15));
    let completed = finish(export);
    assert!(took.is_some(), "docker rm -f answered while the export was in progress");
    assert!(!completed, "an export overtaken by its container's removal fails");
    ok(&berth, &["rm", "long"]);
    berth.stop_and_check_clean();
}
