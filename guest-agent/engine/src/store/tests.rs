//! Archives built the way `docker save` builds them.

use super::*;

use crate::test_support::{config_for, digest, docker_archive};

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    crate::test_support::tar(files)
}

/// An outer archive from (name, bytes) members.
fn archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    crate::test_support::tar(members)
}

#[test]
fn loads_a_docker_archive_and_keeps_it_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let base = layer_tar(&[("bin/sh", b"#!shell"), ("etc/os-release", b"ID=test\n")]);
    let top = layer_tar(&[("app/run", b"go")]);
    let (tarball, id) = docker_archive(&[base.clone(), top.clone()], &["busybox:latest", "me/app:1"]);

    let mut store = ImageStore::open(dir.path()).unwrap();
    let loaded = store.load(tarball.as_slice()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0.id, id);
    assert_eq!(loaded[0].1, vec!["docker.io/library/busybox:latest", "docker.io/me/app:1"]);
    assert_eq!(loaded[0].0.diff_ids, vec![digest(&base), digest(&top)]);
    assert_eq!(loaded[0].0.created, 1_704_164_645);

    let layer0 = store.layer_dir(&digest(&base)).unwrap();
    assert_eq!(std::fs::read(layer0.join("etc/os-release")).unwrap(), b"ID=test\n");
    assert!(store.blob_path(&id).unwrap().is_file());
    assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none(), "tmp is left clean");

    let store = ImageStore::open(dir.path()).unwrap();
    assert_eq!(store.resolve("busybox").map(|i| i.id.as_str()), Some(id.as_str()));
    assert_eq!(store.resolve(&id[7..19]).map(|i| i.id.as_str()), Some(id.as_str()));
    assert_eq!(store.tags_of(&id), vec!["docker.io/library/busybox:latest", "docker.io/me/app:1"]);
    assert!(store.resolve("nosuch").is_none());
}

#[test]
fn loads_an_oci_layout_with_gzip_layers() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[("hello", b"world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer).unwrap();
    let gz = gz.finish().unwrap();
    let config = config_for(&[&layer]);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&gz), "size": gz.len()}]
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": "localhost:5000/hello:v1", "org.opencontainers.image.ref.name": "v1"}
        }]
    }))
    .unwrap();
    let blob = |b: &[u8]| format!("blobs/sha256/{}", &digest(b)[7..]);
    let tarball = archive(&[
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json".into(), index),
        (blob(&manifest), manifest.clone()),
        (blob(&config), config.clone()),
        (blob(&gz), gz.clone()),
    ]);
    let mut store = ImageStore::open(dir.path()).unwrap();
    let loaded = store.load(tarball.as_slice()).unwrap();
    assert_eq!(loaded[0].1, vec!["localhost:5000/hello:v1"]);
    let image = store.resolve("localhost:5000/hello:v1").unwrap();
    assert_eq!(image.size, layer.len() as u64, "size counts the uncompressed layer, not the gzip");
    assert_eq!(std::fs::read(store.layer_dir(&image.diff_ids[0]).unwrap().join("hello")).unwrap(), b"world");
}

#[test]
fn a_bad_archive_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ImageStore::open(dir.path()).unwrap();
    let good = layer_tar(&[("ok", b"1")]);
    let (tarball, _) = docker_archive(std::slice::from_ref(&good), &["kept:1"]);
    store.load(tarball.as_slice()).unwrap();

    // A layer whose content does not match the config's diff ID.
    let tampered = layer_tar(&[("evil", b"2")]);
    let config = config_for(&[&good, &good]);
    let config_name = format!("{}.json", &digest(&config)[7..]);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name, "RepoTags": ["bad:1"], "Layers": ["a.tar", "b.tar"]
    }]))
    .unwrap();
    let bad = archive(&[
        (config_name, config),
        ("a.tar".into(), good.clone()),
        ("b.tar".into(), tampered.clone()),
        ("manifest.json".into(), manifest),
    ]);
    let err = store.load(bad.as_slice()).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(store.resolve("bad:1").is_none());
    assert!(!store.layer_dir(&digest(&tampered)).unwrap().exists());
    let reopened = ImageStore::open(dir.path()).unwrap();
    assert_eq!(reopened.images().count(), 1);
    assert!(reopened.resolve("kept:1").is_some());

    // A manifest.json that is a symlink to a file outside the archive.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_link(&mut header, "manifest.json", "/etc/passwd").unwrap();
    let err = store.load(builder.into_inner().unwrap().as_slice()).unwrap_err();
    assert!(err.to_string().contains("not a file inside the archive"), "{err}");

    let err = store.load(archive(&[("hello.txt".into(), b"hi".to_vec())]).as_slice()).unwrap_err();
    assert!(err.to_string().contains("not an image archive"), "{err}");
    assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none(), "tmp is left clean");
}

#[test]
fn open_cleans_up_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    ImageStore::open(dir.path()).unwrap();
    std::fs::create_dir(dir.path().join("tmp/load-1-1")).unwrap();
    std::fs::write(dir.path().join("tmp/blob-1-1"), b"partial").unwrap();
    std::fs::create_dir(dir.path().join(format!("layers/sha256/{}x-1", layer::TEMP_PREFIX))).unwrap();
    ImageStore::open(dir.path()).unwrap();
    assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());
    assert!(std::fs::read_dir(dir.path().join("layers/sha256")).unwrap().next().is_none());

    std::fs::write(dir.path().join("index.json"), b"{not json").unwrap();
    let err = ImageStore::open(dir.path()).err().expect("a corrupt index is an error, not an empty store");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn parses_config_timestamps() {
    assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339_utc("2000-03-01T12:00:00.5Z"), Some(951_912_000));
    assert_eq!(parse_rfc3339_utc("2024-01-02T03:04:05+01:00"), None);
    assert_eq!(parse_rfc3339_utc("garbage"), None);
}

#[test]
fn tag_untag_remove_and_collect_layers() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ImageStore::open(dir.path()).unwrap();
    let shared = layer_tar(&[("shared", b"s")]);
    let own = layer_tar(&[("own", b"o")]);
    let (a, id_a) = docker_archive(&[shared.clone(), own.clone()], &["a:1"]);
    let (b, id_b) = docker_archive(std::slice::from_ref(&shared), &["b:1"]);
    store.load(a.as_slice()).unwrap();
    store.load(b.as_slice()).unwrap();

    assert_eq!(store.tag("a:1", "a:2").unwrap(), "docker.io/library/a:2");
    assert_eq!(store.resolve("a:2").unwrap().id, id_a);
    assert!(matches!(store.tag("nope", "x:1"), Err(StoreError::NotFound(_))));

    // By ID while two references point at it: refused unless forced.
    let err = store.remove(&id_a[7..19], false).unwrap_err();
    assert!(err.to_string().contains("must be forced"), "{err}");
    // One of two tags: untag only.
    let removed = store.remove("a:2", false).unwrap();
    assert_eq!(removed, Removed { untagged: vec!["docker.io/library/a:2".into()], deleted: vec![], reclaimed: 0 });
    assert!(store.resolve("a:1").is_some());
    // The last tag: the image goes, and its own layer, but not the shared one.
    let removed = store.remove("a:1", false).unwrap();
    assert_eq!(removed.deleted, vec![id_a.clone()]);
    assert!(!store.layer_dir(&digest(&own)).unwrap().exists());
    assert!(store.layer_dir(&digest(&shared)).unwrap().exists(), "b still uses the shared layer");
    assert!(!store.blob_path(&id_a).unwrap().exists());
    let err = store.remove("a:1", false).unwrap_err();
    assert_eq!(err.to_string(), "No such image: a:1");

    let reopened = ImageStore::open(dir.path()).unwrap();
    assert_eq!(reopened.images().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![id_b.clone()]);
    assert!(reopened.config_json(&id_b).unwrap().starts_with(b"{"));
}

/// A symlink member, as `docker save` writes one for a layer two images share.
fn append_symlink(builder: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder.append_link(&mut header, name, target).unwrap();
}

#[test]
fn a_layer_shared_through_a_symlink_member_is_unpacked_once_and_used_twice() {
    let dir = tempfile::tempdir().unwrap();
    let layer = layer_tar(&[("shared", b"once")]);
    let config = config_for(&[&layer, &layer]);
    let config_name = format!("{}.json", &digest(&config)[7..]);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name, "RepoTags": ["twice:1"], "Layers": ["a/layer.tar", "b/layer.tar"]
    }]))
    .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [("a/layer.tar", &layer), (config_name.as_str(), &config)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, data.as_slice()).unwrap();
    }
    append_symlink(&mut builder, "b/layer.tar", "../a/layer.tar");
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    builder.append_data(&mut header, "manifest.json", manifest.as_slice()).unwrap();

    let mut store = ImageStore::open(dir.path()).unwrap();
    let loaded = store.load(builder.into_inner().unwrap().as_slice()).unwrap();
    assert_eq!(loaded[0].0.diff_ids, vec![digest(&layer), digest(&layer)]);
    assert_eq!(std::fs::read(store.layer_dir(&digest(&layer)).unwrap().join("shared")).unwrap(), b"once");
    assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none(), "tmp is left clean");
}

#[test]
fn a_symlink_member_never_carries_a_write_outside_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    append_symlink(&mut builder, "escape", outside.path().to_str().unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    builder.append_data(&mut header, "escape/owned", b"owned".as_slice()).unwrap();

    // The member is kept at its own path in the load's work dir (the link is
    // never made on disk), so the load fails for want of a manifest.
    let mut store = ImageStore::open(dir.path()).unwrap();
    let err = store.load(builder.into_inner().unwrap().as_slice()).unwrap_err();
    assert!(err.to_string().contains("not an image archive"), "{err}");
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing was written outside");
}
