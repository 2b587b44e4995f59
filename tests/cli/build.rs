//! `docker build` with the classic builder (DOCKER_BUILDKIT=0), the real
//! CLI against a local agent: multi-stage with an artefact, the cache
//! (every step, then only from a changed COPY on), .dockerignore,
//! --build-arg, --target, -f outside the context, a failing RUN, -q and
//! --iidfile.

use std::path::Path;

use super::harness::describe;
use super::{docker_cmd, local_berth, ok, stderr, stdout};

const MULTI_STAGE: &str = "\
FROM busybox AS builder
ARG GREETING=hello
COPY . /ctx/
RUN test ! -e /ctx/ignored.txt && cat /ctx/src/a.txt > /artefact && echo \"$GREETING\" >> /artefact
FROM busybox AS unused
RUN exit 9
FROM busybox
COPY --from=builder /artefact /artefact
ENV WHO=world
LABEL purpose=test
CMD [\"cat\", \"/artefact\"]
";

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn build(berth: &super::harness::Berth, args: &[&str]) -> std::process::Output {
    let mut full = vec!["build"];
    full.extend_from_slice(args);
    docker_cmd(berth, &full).env("DOCKER_BUILDKIT", "0").output().unwrap()
}

#[test]
fn docker_build_multi_stage_cached_and_classic() {
    let berth = local_berth();
    let ctx = tempfile::tempdir().unwrap();
    let dir = ctx.path();
    write(dir, "Dockerfile", MULTI_STAGE);
    write(dir, "src/a.txt", "A\n");
    write(dir, "ignored.txt", "secret\n");
    write(dir, ".dockerignore", "ignored.txt\n");
    let context = dir.display().to_string();

    // Cold: the final image runs and holds only the copied artefact; the
    // stage nobody needs is skipped (its RUN would fail).
    let out = build(&berth, &["-t", "multi", &context]);
    assert!(out.status.success(), "{}\n{}", describe(&out), berth.logs());
    let log = stdout(&out);
    assert!(log.contains("Skipping stage unused"), "{log}");
    assert!(log.contains("Successfully tagged multi:latest"), "{log}");
    assert_eq!(ok(&berth, &["run", "--rm", "multi"]), "A\nhello\n");
    assert_eq!(ok(&berth, &["run", "--rm", "multi", "sh", "-c", "test -e /ctx || echo no-ctx"]), "no-ctx\n");
    let labels = ok(&berth, &["image", "inspect", "multi", "--format", "{{.Config.Labels.purpose}} {{.Config.Env}}"]);
    assert!(labels.starts_with("test [") && labels.contains("WHO=world"), "{labels}");

    // Warm: every step after a FROM comes from the cache.
    let out = build(&berth, &["-t", "multi", &context]);
    let log = stdout(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(log.matches("Using cache").count(), 7, "{log}");

    // A changed file: the ARG before its COPY still hits, nothing after it.
    write(dir, "src/a.txt", "B\n");
    let out = build(&berth, &["-t", "multi", &context]);
    let log = stdout(&out);
    assert_eq!(log.matches("Using cache").count(), 1, "{log}");
    assert_eq!(ok(&berth, &["run", "--rm", "multi"]), "B\nhello\n");
    // An mtime alone changes nothing.
    std::fs::write(dir.join("src/a.txt"), "B\n").unwrap();
    assert_eq!(stdout(&build(&berth, &["-t", "multi", &context])).matches("Using cache").count(), 7);

    // --build-arg reaches RUN; --target stops at its stage.
    let out = build(&berth, &["--build-arg", "GREETING=bye", "-t", "multi", &context]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(ok(&berth, &["run", "--rm", "multi"]), "B\nbye\n");
    let out = build(&berth, &["--target", "builder", "-t", "first", &context]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(ok(&berth, &["run", "--rm", "first", "cat", "/artefact"]), "B\nhello\n");
    assert_eq!(ok(&berth, &["image", "inspect", "first", "--format", "{{.Config.Cmd}}"]), "[sh]\n");

    // -f outside the context.
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "Other.dockerfile", "FROM busybox\nCOPY src/a.txt /a\nCMD [\"cat\", \"/a\"]\n");
    let dockerfile = other.path().join("Other.dockerfile").display().to_string();
    let out = build(&berth, &["-f", &dockerfile, "-t", "outside", &context]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(ok(&berth, &["run", "--rm", "outside"]), "B\n");

    // -q prints the ID alone; --iidfile holds the same.
    let iidfile = other.path().join("iid");
    let out = build(&berth, &["-q", "--iidfile", &iidfile.display().to_string(), &context]);
    assert!(out.status.success(), "{}", describe(&out));
    let id = stdout(&out);
    assert!(id.starts_with("sha256:") && id.trim().len() == 71 && id.lines().count() == 1, "{id}");
    // With -q the CLI writes what it printed (the newline too), as with dockerd.
    assert_eq!(std::fs::read_to_string(&iidfile).unwrap().trim(), id.trim());

    // A failing RUN: its exit code and dockerd's message; nothing tagged.
    write(other.path(), "Failing", "FROM busybox\nRUN echo failing >&2; exit 7\n");
    let failing = other.path().join("Failing").display().to_string();
    let out = build(&berth, &["-f", &failing, "-t", "broken", &context]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert!(
        stderr(&out).contains("The command '/bin/sh -c echo failing >&2; exit 7' returned a non-zero code: 7"),
        "{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("failing"), "{}", describe(&out));
    assert!(!super::docker(&berth, &["image", "inspect", "broken"]).status.success());

    // A parse error is the request's own error, with its line.
    write(other.path(), "Bad", "FROM busybox\nFROB x\n");
    let bad = other.path().join("Bad").display().to_string();
    let out = build(&berth, &["-f", &bad, &context]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("dockerfile parse error line 2: unknown instruction: FROB"), "{}", describe(&out));

    // As with dockerd, only the failed step's container is left behind
    // (for a look inside), and --force-rm removes that too.
    assert_eq!(ok(&berth, &["ps", "-aq"]).lines().count(), 1);
    let out = build(&berth, &["--force-rm", "-f", &failing, &context]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let left = ok(&berth, &["ps", "-aq"]);
    assert_eq!(left.lines().count(), 1);
    ok(&berth, &["rm", left.trim()]);
    berth.stop_and_check_clean();
}

/// Two stages that can only finish together: one listens, the other
/// connects (host network, so they meet on loopback). Run one after the
/// other, the listener would time out and fail the build; they also show
/// that the stream stays in stage order, and that a failing stage stops
/// the one still running.
#[test]
fn independent_stages_run_at_once_and_print_in_order() {
    let berth = local_berth();
    let ctx = tempfile::tempdir().unwrap();
    let dir = ctx.path();
    let port = 20000 + std::process::id() % 20000;
    write(
        dir,
        "Dockerfile",
        "\
FROM busybox AS listener
ARG PORT
RUN timeout 60 nc -l -p $PORT > /got; test -s /got
FROM busybox AS talker
ARG PORT
RUN i=0; until echo hello | timeout 5 nc 127.0.0.1 $PORT; do i=$((i+1)); [ $i -lt 250 ] || exit 1; sleep 0.2; done; echo sent > /sent
FROM busybox
COPY --from=listener /got /got
COPY --from=talker /sent /sent
CMD [\"cat\", \"/got\", \"/sent\"]
",
    );
    let context = dir.display().to_string();
    let port_arg = format!("PORT={port}");
    let out = build(&berth, &["--network", "host", "--build-arg", &port_arg, "-t", "together", &context]);
    assert!(out.status.success(), "{}\n{}", describe(&out), berth.logs());
    let log = stdout(&out);
    let steps: Vec<&str> = log.lines().filter(|l| l.starts_with("Step ")).collect();
    let expected: Vec<String> = (1..=10).map(|n| format!("Step {n}/10 : ")).collect();
    assert_eq!(steps.len(), 10, "{log}");
    for (line, prefix) in steps.iter().zip(&expected) {
        assert!(line.starts_with(prefix.as_str()), "steps out of order:\n{log}");
    }
    assert!(log.find("FROM busybox AS talker").unwrap() > log.find("nc -l -p").unwrap(), "{log}");
    assert_eq!(ok(&berth, &["run", "--rm", "together"]), "hello\nsent\n");

    // A stage that fails ends the build with its own error and code; the
    // stage still running is stopped rather than waited for.
    write(
        dir,
        "Failing",
        "\
FROM busybox AS slow
RUN sleep 30; echo slow-done-$((6*7))
FROM busybox AS broken
RUN exit 3
FROM busybox
COPY --from=slow /etc/hostname /a
COPY --from=broken /etc/hostname /b
",
    );
    let failing = dir.join("Failing").display().to_string();
    let out = build(&berth, &["--force-rm", "-f", &failing, &context]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(stderr(&out).contains("The command '/bin/sh -c exit 3' returned a non-zero code: 3"), "{}", describe(&out));
    assert!(!stdout(&out).contains("slow-done-42"), "the slow stage ran on: {}", describe(&out));
    assert_eq!(ok(&berth, &["ps", "-aq"]), "", "--force-rm leaves no container of either stage");
    berth.stop_and_check_clean();
}

/// `docker builder prune` empties the build cache and reclaims the layers
/// only it held; images built keep theirs; `docker system prune` (which
/// prunes the build cache too) works against Berth.
#[test]
fn builder_prune_empties_the_cache_and_keeps_images() {
    let berth = local_berth();
    let ctx = tempfile::tempdir().unwrap();
    let dir = ctx.path();
    write(
        dir,
        "Dockerfile",
        "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\nCMD [\"cat\", \"/one\", \"/two\"]\n",
    );
    let context = dir.display().to_string();
    assert!(build(&berth, &["-t", "kept", &context]).status.success());
    // A failed build leaves a committed step only the cache names.
    write(dir, "Failing", "FROM busybox\nRUN head -c 300000 /dev/zero > /big\nRUN exit 4\n");
    let failing = dir.join("Failing").display().to_string();
    assert_eq!(build(&berth, &["--force-rm", "-f", &failing, &context]).status.code(), Some(4));

    let out = docker_cmd(&berth, &["builder", "prune", "-f"]).env("DOCKER_BUILDKIT", "0").output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let reclaimed = stdout(&out);
    assert!(reclaimed.contains("Total reclaimed space"), "{reclaimed}");
    assert!(!reclaimed.contains("Total reclaimed space: 0B"), "the failed build's layer is reclaimed: {reclaimed}");

    assert_eq!(ok(&berth, &["run", "--rm", "kept"]), "one\ntwo\n");
    let rebuilt = build(&berth, &["-t", "kept", &context]);
    assert!(rebuilt.status.success(), "{}", describe(&rebuilt));
    assert!(!stdout(&rebuilt).contains("Using cache"), "{}", stdout(&rebuilt));
    let refused = docker_cmd(&berth, &["builder", "prune", "-f", "--filter", "id=x"]).output().unwrap();
    assert!(stderr(&refused).contains("invalid filter 'id'"), "{}", describe(&refused));
    let out = docker_cmd(&berth, &["system", "prune", "-f"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    berth.stop_and_check_clean();
}

/// `RUN --mount` as BuildKit users write it, through the classic API: a
/// cache that outlives builds (and `builder prune`), a tmpfs, and the
/// context bound read-only, whose content (not the mount) decides the
/// step's cache hit.
#[test]
fn run_mounts_cache_tmpfs_and_the_context() {
    let berth = local_berth();
    let ctx = tempfile::tempdir().unwrap();
    let dir = ctx.path();
    write(dir, "src/a.txt", "A\n");
    write(dir, "ignored.txt", "secret\n");
    write(dir, ".dockerignore", "ignored.txt\n");
    write(
        dir,
        "Dockerfile",
        "\
FROM busybox
RUN --mount=type=cache,target=/cache,sharing=locked echo run >> /cache/log && wc -l < /cache/log > /count
RUN --mount=type=tmpfs,target=/scratch echo hi > /scratch/f && test -f /scratch/f
RUN test ! -e /scratch/f && test ! -e /cache/log
RUN --mount=type=bind,source=src,target=/src cat /src/a.txt > /copied
RUN --mount=target=/ctx test ! -e /ctx/ignored.txt && ! touch /ctx/new 2>/dev/null
CMD [\"cat\", \"/count\", \"/copied\"]
",
    );
    let context = dir.display().to_string();
    let first = build(&berth, &["-t", "mounts", &context]);
    assert!(first.status.success(), "{}\n{}", describe(&first), berth.logs());
    assert_eq!(ok(&berth, &["run", "--rm", "mounts"]), "1\nA\n");
    // The cache directory outlives the build: a second run sees the first's file.
    let again = build(&berth, &["--no-cache", "-t", "mounts", &context]);
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(ok(&berth, &["run", "--rm", "mounts"]), "2\nA\n");
    // Unchanged context: every step hits; a changed bound file reruns its step.
    let cached = build(&berth, &["-t", "mounts", &context]);
    assert_eq!(stdout(&cached).matches("Using cache").count(), 6, "{}", stdout(&cached));
    write(dir, "src/a.txt", "B\n");
    let changed = build(&berth, &["-t", "mounts", &context]);
    assert_eq!(stdout(&changed).matches("Using cache").count(), 3, "{}", stdout(&changed));
    assert_eq!(ok(&berth, &["run", "--rm", "mounts"]), "2\nB\n");
    // builder prune empties the cache mount too.
    let pruned = docker_cmd(&berth, &["builder", "prune", "-f"]).output().unwrap();
    assert!(pruned.status.success(), "{}", describe(&pruned));
    assert!(build(&berth, &["-t", "mounts", &context]).status.success());
    assert_eq!(ok(&berth, &["run", "--rm", "mounts"]), "1\nB\n");

    // BuildKit's automatic platform args, declared as BuildKit users do.
    write(
        dir,
        "Platform",
        "ARG TARGETOS\nFROM busybox\nARG TARGETARCH\nARG TARGETPLATFORM\nRUN echo \"$TARGETPLATFORM $TARGETARCH\" > /p\nCMD [\"cat\", \"/p\"]\n",
    );
    let platform = dir.join("Platform").display().to_string();
    let out = build(&berth, &["-f", &platform, "-t", "platform", &context]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!stdout(&out).contains("were not consumed"), "{}", stdout(&out));
    let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" };
    assert_eq!(ok(&berth, &["run", "--rm", "platform"]), format!("linux/{arch} {arch}\n"));

    write(dir, "FromStage", "FROM busybox AS a\nFROM busybox\nRUN --mount=from=a,target=/a true\n");
    let from_stage = dir.join("FromStage").display().to_string();
    let refused = build(&berth, &["-f", &from_stage, &context]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("RUN --mount=type=bind,from=a is not supported by Berth yet"),
        "{}",
        describe(&refused)
    );
    berth.stop_and_check_clean();
}

/// ADD of a URL, fetched by the engine: saved under its name in a
/// directory, or as the destination; mode 0600; cached by content, so an
/// unchanged file hits and a changed one reruns the step.
#[test]
fn add_fetches_a_url_and_caches_it_by_content() {
    let berth = local_berth();
    let served = tempfile::tempdir().unwrap();
    write(served.path(), "files/tool.txt", "version 1\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(served.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/files/tool.txt");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ctx = tempfile::tempdir().unwrap();
    let dir = ctx.path();
    write(
        dir,
        "Dockerfile",
        &format!("FROM busybox\nADD {url} /opt/\nADD {url} /renamed\nRUN stat -c %a /opt/tool.txt > /mode\nCMD [\"cat\", \"/opt/tool.txt\", \"/renamed\", \"/mode\"]\n"),
    );
    let context = dir.display().to_string();
    let out = build(&berth, &["-t", "fetched", &context]);
    assert!(out.status.success(), "{}\n{}", describe(&out), berth.logs());
    assert_eq!(ok(&berth, &["run", "--rm", "fetched"]), "version 1\nversion 1\n600\n");
    let again = build(&berth, &["-t", "fetched", &context]);
    assert_eq!(stdout(&again).matches("Using cache").count(), 4, "{}", stdout(&again));
    write(served.path(), "files/tool.txt", "version 2\n");
    let changed = build(&berth, &["-t", "fetched", &context]);
    assert_eq!(stdout(&changed).matches("Using cache").count(), 0, "{}", stdout(&changed));
    assert_eq!(ok(&berth, &["run", "--rm", "fetched"]), "version 2\nversion 2\n600\n");
    write(dir, "Missing", &format!("FROM busybox\nADD http://127.0.0.1:{port}/nope /x\n"));
    let missing = build(&berth, &["-f", &dir.join("Missing").display().to_string(), &context]);
    assert!(stderr(&missing).contains("404"), "{}", describe(&missing));
    let _ = server.kill();
    let _ = server.wait();
    berth.stop_and_check_clean();
}
