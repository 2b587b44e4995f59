//! `docker build` through the VM: a multi-stage build whose image runs
//! with only the copied artefact, a cache that survives a restart of the
//! VM, and docker-compose 1.29's `build:` (context, dockerfile, args,
//! target), both through the docker CLI (compose's default) and through
//! docker-py (COMPOSE_DOCKER_CLI_BUILD=0).

use std::process::Command;

use crate::harness::{self, describe, Berth};

const DOCKERFILE: &str = "\
FROM busybox AS builder
ARG FLAVOUR=plain
COPY app.txt /work/
RUN cat /work/app.txt > /artefact && echo \"$FLAVOUR\" >> /artefact
FROM busybox AS final
COPY --from=builder /artefact /artefact
CMD [\"cat\", \"/artefact\"]
";

const COMPOSE: &str = r#"version: "2.4"
services:
  app:
    build:
      context: ./src
      dockerfile: ../Buildfile
      args:
        FLAVOUR: compose
      target: final
"#;

fn build(berth: &Berth, args: &[&str]) -> std::process::Output {
    let mut full = vec!["build"];
    full.extend_from_slice(args);
    harness::docker_command(berth, &full).env("DOCKER_BUILDKIT", "0").output().unwrap()
}

#[test]
fn docker_build_in_the_vm_cached_across_restarts_and_with_compose() {
    let berth = Berth::new();
    berth.start();
    harness::load_busybox(&berth);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/app.txt"), "artefact\n").unwrap();
    std::fs::write(dir.path().join("Buildfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.path().join("docker-compose.yml"), COMPOSE).unwrap();
    let (context, dockerfile) =
        (dir.path().join("src").display().to_string(), dir.path().join("Buildfile").display().to_string());

    let out = build(&berth, &["-f", &dockerfile, "-t", "vmbuild", &context]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(harness::docker_ok(&berth, &["run", "--rm", "vmbuild"]), "artefact\nplain\n");
    let listing = harness::docker_ok(&berth, &["run", "--rm", "vmbuild", "ls", "/"]);
    assert!(!listing.contains("work"), "only the artefact is copied: {listing}");

    // The cache is on the data disk: after a restart every step still hits.
    berth.ok(&["stop"]);
    berth.start();
    let out = build(&berth, &["-f", &dockerfile, "-t", "vmbuild", &context]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("Using cache").count(), 5, "{}", describe(&out));

    for cli_build in ["1", "0"] {
        let out = Command::new("docker-compose")
            .current_dir(dir.path())
            .args(["-p", "berthbuild", "build"])
            .env("DOCKER_HOST", format!("unix://{}", berth.run_dir().join("docker.sock").display()))
            .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
            .env("DOCKER_BUILDKIT", "0")
            .env("COMPOSE_DOCKER_CLI_BUILD", cli_build)
            .output()
            .expect("docker-compose (packaging/setup.sh installs it)");
        assert!(out.status.success(), "COMPOSE_DOCKER_CLI_BUILD={cli_build}: {}", describe(&out));
        assert_eq!(harness::docker_ok(&berth, &["run", "--rm", "berthbuild_app"]), "artefact\ncompose\n");
    }
    harness::docker_ok(&berth, &["rmi", "vmbuild", "berthbuild_app"]);
    berth.stop_and_check_clean();
}
