//! Fuzz targets, run for a bounded time by `cargo test` (BERTH_FUZZ_SECS
//! each, default 2) on the corpus in `corpus/<target>/`: the Docker API body
//! decoders (create, update, exec, volume, network) and the tar readers
//! (layer unpack, archive extract). The property: no panic, decoders answer
//! Ok or an error (which the API turns into a 400), and unpacking touches
//! nothing outside its directory.

mod mutator;

use std::path::{Path, PathBuf};

use berth_engine::docker_json;
use berth_engine::{container, layer, volume};
use mutator::{budget, Format, Fuzzer};
use serde_json::{json, Value};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target)
}

fn fuzz(target: &str, format: Format, property: impl FnMut(&[u8]) -> Result<(), String>) {
    let mut fuzzer = Fuzzer::new(target, &corpus(target), format);
    match fuzzer.run(budget(), property) {
        Ok(runs) => eprintln!("fuzz {target}: {runs} inputs, nothing found"),
        Err(failure) => {
            let saved = std::env::temp_dir().join(format!("berth-fuzz-{target}-{}.bin", failure.iteration));
            let _ = std::fs::write(&saved, &failure.input);
            panic!("fuzz {target} found: {failure:?}; input saved in {}", saved.display());
        }
    }
}

/// A decoder's error must say something: it becomes the 400's message.
fn decoded<T>(result: Result<T, String>) -> Result<Option<T>, String> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(message) if message.trim().is_empty() => Err("an empty error message".into()),
        Err(_) => Ok(None),
    }
}

fn image_config() -> Value {
    json!({"config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/", "Labels": {"from": "image"},
        "Volumes": {"/data": {}}, "ExposedPorts": {"80/tcp": {}}}})
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn container_create() {
    fuzz("create", Format::Json(&docker_json::CONTAINER_CREATE), |input| {
        let Some(request) = decoded(docker_json::parse(&docker_json::CONTAINER_CREATE, input))? else { return Ok(()) };
        // A body the check lets through decodes into the typed request, and
        // the typed request is the body again (inspect and the stored record
        // show what was sent), a blank NetworkMode being dockerd's default.
        if request.is_object() {
            let typed = container::CreateRequest::parse(&request).map_err(|e| format!("checked but not typed: {e}"))?;
            let mut expected = request.clone();
            if expected["HostConfig"]["NetworkMode"] == "" {
                expected["HostConfig"]["NetworkMode"] = json!("default");
            }
            if serde_json::to_value(&typed).map_err(|e| e.to_string())? != expected {
                return Err(format!("the typed request is not the body: {}", serde_json::to_value(&typed).unwrap()));
            }
        }
        let Some(resolved) = decoded(container::resolve(&request, &image_config(), ID).map_err(|e| e.to_string()))?
        else {
            return Ok(());
        };
        // What inspect and `docker ps` do with the record must work too.
        let record = container::Container {
            id: ID.into(),
            name: "fuzz".into(),
            created_ns: 0,
            image: "busybox".into(),
            image_id: "sha256:x".into(),
            config: resolved.config,
            host_config: resolved.host_config,
            layers: Vec::new(),
            state: Default::default(),
            restart_count: 0,
            volumes: resolved.volumes,
            binds_from: Vec::new(),
            published_ports: Vec::new(),
        };
        let stored = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let read: container::Container =
            serde_json::from_slice(&stored).map_err(|e| format!("record unreadable: {e}"))?;
        if read != record {
            return Err("the stored record reads back different".into());
        }
        record.inspect(Path::new("/c"), Path::new("/v"));
        record.summary(0, Path::new("/v"));
        berth_engine::spec::build(&resolved.options, Path::new("/rootfs"))
            .map(drop)
            .map_err(|e| e.to_string())
            .or(Ok(()))
    });
}

#[test]
fn container_update() {
    let current = json!({"Memory": 400 << 20, "MemorySwap": 800 << 20, "RestartPolicy": {"Name": "no"}});
    fuzz("update", Format::Json(&docker_json::CONTAINER_UPDATE), |input| {
        let Some(update) = decoded(docker_json::parse(&docker_json::CONTAINER_UPDATE, input))? else { return Ok(()) };
        let current: container::HostConfig = serde_json::from_value(current.clone()).map_err(|e| e.to_string())?;
        let Some(updated) = decoded(container::apply_update(&current, &update).map_err(|e| e.to_string()))? else {
            return Ok(());
        };
        // An update is checked as a create would be.
        let request = json!({"Image": "busybox", "HostConfig": updated});
        decoded(container::resolve(&request, &image_config(), ID).map_err(|e| e.to_string())).map(drop)
    });
}

#[test]
fn exec_bodies() {
    for (target, schema) in [("exec", &docker_json::EXEC_CREATE), ("exec_start", &docker_json::EXEC_START)] {
        fuzz(target, Format::Json(schema), |input| decoded(docker_json::parse(schema, input)).map(drop));
    }
}

#[test]
fn network_create() {
    fuzz("network", Format::Json(&docker_json::NETWORK_CREATE), |input| {
        decoded(docker_json::parse(&docker_json::NETWORK_CREATE, input)).map(drop)
    });
}

#[test]
fn volume_create() {
    let dir = tempfile::tempdir().unwrap();
    let store = volume::VolumeStore::open(&dir.path().join("volumes")).unwrap();
    fuzz("volume", Format::Json(&docker_json::VOLUME_CREATE), |input| {
        let Some(body) = decoded(docker_json::parse(&docker_json::VOLUME_CREATE, input))? else { return Ok(()) };
        let name = body["Name"].as_str().filter(|n| !n.is_empty()).unwrap_or("fuzzed");
        let labels = body["Labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default();
        decoded(store.create(name, labels, false).map_err(|e| e.to_string()))?;
        let created = std::fs::read_dir(dir.path()).unwrap().count();
        if created != 1 {
            return Err(format!("volume {name:?} created something beside the volumes directory"));
        }
        Ok(())
    });
}

/// Unpacking `input` into a directory beside a neighbour (as a layer sits
/// beside the other layers), both in a box beside a canary: all of them
/// must be untouched, and nothing else left beside the destination.
fn confined(input: &[u8], unpack: impl FnOnce(&[u8], &Path) -> Result<(), String>) -> Result<(), String> {
    let outer = tempfile::tempdir().unwrap();
    let canary = outer.path().join("canary");
    std::fs::write(&canary, b"untouched").unwrap();
    let inner = outer.path().join("box");
    let neighbour = inner.join("neighbour");
    std::fs::create_dir_all(&neighbour).unwrap();
    std::fs::write(neighbour.join("file"), b"untouched").unwrap();
    let _ = unpack(input, &inner.join("dest"));
    for (path, what) in
        [(&canary, "the canary beside the box"), (&neighbour.join("file"), "the destination's neighbour")]
    {
        if std::fs::read(path).ok().as_deref() != Some(b"untouched".as_slice()) {
            return Err(format!("{what} was changed or removed"));
        }
    }
    let mut beside: Vec<String> =
        std::fs::read_dir(&inner).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    // The layer and its tar-split (`dest.tar-split.gz`) belong there.
    beside.retain(|name| !name.starts_with("dest") && name != "neighbour");
    if !beside.is_empty() {
        return Err(format!("unpacking left {beside:?} beside the destination"));
    }
    let outside = std::fs::read_dir(outer.path()).unwrap().count();
    if outside != 2 {
        return Err(format!("unpacking wrote outside its directory ({outside} entries beside the box)"));
    }
    Ok(())
}

#[test]
fn layer_unpack() {
    fuzz("layer", Format::Tar, |input| {
        confined(input, |input, dest| layer::unpack_layer(input, dest, None).map(drop).map_err(|e| e.to_string()))
    });
}

#[test]
fn archive_extract() {
    fuzz("archive", Format::Tar, |input| {
        confined(input, |input, dest| {
            std::fs::create_dir(dest).unwrap();
            berth_engine::archive::extract(input, dest).map_err(|e| e.to_string())
        })
    });
}

/// The fuzzer can fail: a decoder that panics on a string where Docker has
/// a number is found from a corpus that never has one.
#[test]
fn the_fuzzer_finds_a_planted_panic() {
    let mut fuzzer = Fuzzer::new("planted", &corpus("create"), Format::Json(&docker_json::CONTAINER_CREATE));
    let found = fuzzer.run(std::time::Duration::from_secs(30), |input| {
        let value: Value = serde_json::from_slice(input).unwrap_or_default();
        if value["HostConfig"]["Memory"].is_string() {
            panic!("planted: Memory is a string");
        }
        Ok(())
    });
    let failure = found.expect_err("the planted panic was not found");
    assert!(failure.message.contains("planted"), "{}", failure.message);
}
