//! `docker push` to a real registry and the digests it leaves behind:
//! pull back by digest, `docker images --digests`, skipped and mounted layers.

use super::{docker, local_berth, ok, stderr, stdout};
use crate::harness::{describe, LocalRegistry};

/// The `TAG: digest: sha256:... size: N` line's digest.
fn pushed_digest(output: &str, tag: &str) -> String {
    let line = output.lines().find(|l| l.starts_with(&format!("{tag}: digest: sha256:"))).unwrap_or_else(|| {
        panic!("no digest line for {tag} in:\n{output}");
    });
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn push_then_pull_back_by_digest() {
    let registry = LocalRegistry::start();
    let berth = local_berth();
    let repo = format!("127.0.0.1:{}/app", registry.port);
    // An image of its own layer on busybox's, neither of which the registry has.
    ok(&berth, &["run", "--name", "maker", "busybox", "sh", "-c", "echo made here > /made"]);
    ok(&berth, &["commit", "maker", &format!("{repo}:1")]);
    ok(&berth, &["rm", "maker"]);

    let out = docker(&berth, &["push", &format!("{repo}:1")]);
    assert!(out.status.success(), "{}\n{}", describe(&out), berth.logs());
    let first = stdout(&out);
    assert!(first.contains(&format!("The push refers to repository [{repo}]")), "{first}");
    assert_eq!(first.matches(": Pushed").count(), 2, "{first}");
    let digest = pushed_digest(&first, "1");

    // Again: the registry has every layer.
    let again = ok(&berth, &["push", &format!("{repo}:1")]);
    assert_eq!(again.matches(": Layer already exists").count(), 2, "{again}");
    assert_eq!(pushed_digest(&again, "1"), digest, "the same bytes, the same manifest");

    // Another repository of the same registry mounts the layers.
    let other = format!("127.0.0.1:{}/other", registry.port);
    ok(&berth, &["tag", &format!("{repo}:1"), &format!("{other}:2")]);
    let mounted = ok(&berth, &["push", &format!("{other}:2")]);
    assert_eq!(mounted.matches(": Mounted from app").count(), 2, "{mounted}");

    let listed = ok(&berth, &["images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}", &repo]);
    assert_eq!(listed, format!("{repo}:1 {digest}\n"));

    // Gone locally, back by digest; the layers are the bytes pushed.
    ok(&berth, &["rmi", &format!("{repo}:1"), &format!("{other}:2")]);
    let by_digest = format!("{repo}@{digest}");
    let out = docker(&berth, &["pull", &by_digest]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains(&format!("Digest: {digest}")), "{}", describe(&out));
    assert_eq!(ok(&berth, &["run", "--rm", &by_digest, "cat", "/made"]), "made here\n");
    let digests = ok(&berth, &["inspect", "--format", "{{json .RepoDigests}}", &by_digest]);
    assert_eq!(digests.trim(), format!("[\"{by_digest}\"]"));
    let listed = ok(&berth, &["images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}", &repo]);
    assert_eq!(listed, format!("{repo} <none> {digest}\n"));

    // A tag pull records the digest too.
    ok(&berth, &["pull", &format!("{repo}:1")]);
    let digests = ok(&berth, &["inspect", "--format", "{{json .RepoDigests}}", &format!("{repo}:1")]);
    assert_eq!(digests.trim(), format!("[\"{by_digest}\"]"));

    // dockerd's words for what is not there.
    let out = docker(&berth, &["push", &format!("127.0.0.1:{}/nothing:1", registry.port)]);
    assert!(!out.status.success());
    let missing = format!("An image does not exist locally with the tag: 127.0.0.1:{}/nothing", registry.port);
    assert!(stderr(&out).contains(&missing), "{}", describe(&out));
    ok(&berth, &["rmi", &format!("{repo}:1")]);
    berth.stop_and_check_clean();
}
