use serde::Serialize;
use serde_json::{json, Value};

use super::config::{Field, NetworkMode};
use super::*;
use crate::spec::NamespaceMode;

/// The JSON a typed value stands for, as inspect and container.json show it.
fn json_of(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

fn host_config(value: Value) -> HostConfig {
    serde_json::from_value(value).unwrap()
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn image() -> Value {
    json!({"config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
        "Cmd": ["sh"],
        "Entrypoint": null,
        "WorkingDir": "/srv",
        "Labels": {"from": "image"},
    }})
}

#[test]
fn merges_with_the_image_like_docker() {
    let r = resolve(&json!({"Image": "busybox", "Env": ["LANG=en", "X=1"]}), &image(), ID).unwrap();
    assert_eq!(r.options.args, ["sh"]);
    assert_eq!(r.options.env, ["PATH=/usr/bin:/bin", "LANG=en", "X=1"]);
    assert_eq!(r.options.cwd, "/srv");
    assert_eq!(r.options.hostname, "0123456789ab");
    assert_eq!(json_of(&r.config)["Labels"]["from"], "image");

    let r = resolve(&json!({"Image": "x", "Entrypoint": ["echo"]}), &image(), ID).unwrap();
    assert_eq!(r.options.args, ["echo"], "a given entrypoint drops the image's Cmd");
    let r = resolve(&json!({"Image": "x", "Cmd": ["ls", "-l"]}), &image(), ID).unwrap();
    assert_eq!(r.options.args, ["ls", "-l"]);
}

#[test]
fn unsupported_options_are_refused_not_ignored() {
    let err = |req: Value| resolve(&req, &image(), ID).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/fuse"}]}})).contains("HostConfig.Devices"));
    assert_eq!(err(json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}})), "invalid hostPort: x");
    assert_eq!(
        err(json!({"HostConfig": {"NetworkMode": "container:web", "PublishAllPorts": true}})),
        "conflicting options: port publishing and the container type network mode"
    );
    // `-p 80`: every field empty, and still a published port.
    let ephemeral = json!({"80/tcp": [{"HostIp": "", "HostPort": ""}]});
    assert_eq!(
        err(json!({"HostConfig": {"NetworkMode": "container:web", "PortBindings": ephemeral}})),
        "conflicting options: port publishing and the container type network mode"
    );
    assert!(err(json!({"HostConfig": {"Binds": ["bad/name:/x"]}})).contains("invalid characters"));
    let r = resolve(
        &json!({"HostConfig": {"Binds": ["data:/data:ro", "/tmp:/host"]}, "Volumes": {"/cache": {}}}),
        &image(),
        ID,
    )
    .unwrap();
    let v: Vec<(&str, &str, bool, bool)> = r
        .volumes
        .iter()
        .chain(&r.image_volumes)
        .map(|v| (v.name.as_str(), v.target.as_str(), v.readonly, v.anonymous))
        .collect();
    assert_eq!(v, [("data", "/data", true, false), ("", "/cache", false, true)]);
    assert_eq!(r.options.binds.len(), 1);
    assert!(err(json!({"HostConfig": {"Memory": 1024}})).contains("Minimum memory"));
    assert!(err(json!({"HostConfig": {"RestartPolicy": {"Name": "always"}, "AutoRemove": true}})).contains("--rm"));
    // What the docker CLI sends for a plain `docker run` is accepted.
    let plain = json!({"HostConfig": {"Devices": [], "LogConfig": {"Type": "", "Config": {}}, "NetworkMode": "default",
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "OomKillDisable": false, "ConsoleSize": [24, 80]}});
    assert!(resolve(&plain, &image(), ID).is_ok());
}

fn record(host: Value, volumes: Vec<VolumeMount>) -> Container {
    Container {
        id: ID.into(),
        name: "source".into(),
        created_ns: 0,
        image: "busybox".into(),
        image_id: "sha256:x".into(),
        config: Config::default(),
        host_config: host_config(host),
        layers: Vec::new(),
        state: State::default(),
        restart_count: 0,
        volumes,
        binds_from: Vec::new(),
        published_ports: Vec::new(),
    }
}

fn volume(name: &str, target: &str, readonly: bool) -> VolumeMount {
    VolumeMount { name: name.into(), target: target.into(), readonly, nocopy: false, anonymous: false }
}

#[test]
fn volumes_from_inherits_mounts_below_the_containers_own() {
    let source = record(
        json!({"Binds": ["/tmp:/host:ro", "/var:/var-rw"]}),
        vec![volume("data", "/data", false), volume("cache", "/cache", false), volume("logs", "/logs", true)],
    );
    let request = json!({"Volumes": {"/data": {}, "/fresh": {}}, "HostConfig": {"Binds": ["mine:/cache"], "VolumesFrom": ["source:rw"]}});
    let mut r = resolve(&request, &image(), ID).unwrap();
    r.inherit(&source, false);
    let v: Vec<(&str, &str, bool, bool)> =
        r.inherited_volumes.iter().map(|v| (v.name.as_str(), v.target.as_str(), v.readonly, v.nocopy)).collect();
    assert_eq!(v, [("data", "/data", false, true), ("logs", "/logs", true, true)], "own /cache wins");
    let b: Vec<(&str, bool)> = r.inherited_binds.iter().map(|b| (b.target.to_str().unwrap(), b.readonly)).collect();
    assert_eq!(b, [("/host", true), ("/var-rw", false)]);
    let anonymous: Vec<&str> = r.image_volumes.iter().map(|v| v.target.as_str()).collect();
    assert_eq!(anonymous, ["/fresh"], "an inherited volume replaces the image's anonymous one");

    // `:ro` makes everything inherited read-only.
    let mut r = resolve(&json!({"HostConfig": {"VolumesFrom": ["source:ro"]}}), &image(), ID).unwrap();
    r.inherit(&source, true);
    assert!(r.inherited_volumes.iter().all(|v| v.readonly) && r.inherited_binds.iter().all(|b| b.readonly));

    assert_eq!(
        parse_volumes_from(&host_config(json!({"VolumesFrom": ["a", "b:ro", "c:rw"]}))).unwrap(),
        [
            VolumesFrom { container: "a".into(), readonly: false },
            VolumesFrom { container: "b".into(), readonly: true },
            VolumesFrom { container: "c".into(), readonly: false }
        ]
    );
    let err = resolve(&json!({"HostConfig": {"VolumesFrom": ["a:xx"]}}), &image(), ID).err().unwrap();
    assert_eq!(err.to_string(), "invalid mode: xx");
}

#[test]
fn namespaces_and_runtime() {
    let r = resolve(&json!({"HostConfig": {"PidMode": "host", "IpcMode": "host", "UTSMode": "host"}}), &image(), ID)
        .unwrap();
    assert_eq!(
        (r.options.pid, r.options.ipc, r.options.uts.clone()),
        (NamespaceMode::Host, NamespaceMode::Host, NamespaceMode::Host)
    );
    assert_eq!(json_of(&r.config)["Hostname"], nix::unistd::gethostname().unwrap().to_string_lossy().as_ref());
    let r = resolve(&json!({"HostConfig": {"PidMode": "container:web"}}), &image(), ID).unwrap();
    assert_eq!(r.options.pid, NamespaceMode::Container("web".into()));
    let err = resolve(&json!({"HostConfig": {"IpcMode": "container:web"}}), &image(), ID).err().unwrap();
    assert!(err.to_string().contains("IpcMode=\"container:web\" is not supported"), "{err}");

    assert_eq!(json_of(&resolve(&json!({}), &image(), ID).unwrap().host_config)["Runtime"], "runc");
    let err = resolve(&json!({"HostConfig": {"Runtime": "kata"}}), &image(), ID).err().unwrap();
    assert_eq!(err.to_string(), "Unknown runtime specified kata");
}

#[test]
fn updates_merge_like_docker() {
    let old = json!({"Memory": 400 << 20, "MemorySwap": 800 << 20, "CpuShares": 512,
        "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}});
    // What the docker CLI sends: every field, zero meaning "unchanged".
    let update = json!({"Memory": 300 << 20, "MemorySwap": 0, "CpuShares": 0, "KernelMemory": 0,
        "Devices": null, "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 42}});
    let new = json_of(&apply_update(&host_config(old.clone()), &update).unwrap());
    assert_eq!((new["Memory"].as_i64(), new["MemorySwap"].as_i64()), (Some(300 << 20), Some(800 << 20)));
    assert_eq!(new["CpuShares"], 512);
    assert_eq!(new["RestartPolicy"], json!({"Name": "on-failure", "MaximumRetryCount": 42}));

    let err = |old: &Value, update: Value| {
        apply_update(&host_config(old.clone()), &update).err().map(|e| e.to_string()).unwrap()
    };
    assert!(err(&old, json!({"Memory": 900 << 20})).contains("update the memoryswap at the same time"));
    assert!(err(&old, json!({"BlkioWeight": 300})).contains("updating BlkioWeight is not supported"));
    assert!(err(&old, json!({"RestartPolicy": {"Name": "sometimes"}})).contains("invalid restart policy"));
    let auto = json!({"AutoRemove": true});
    assert!(err(&auto, json!({"RestartPolicy": {"Name": "always"}})).contains("AutoRemove is enabled"));
}

/// Each of these panicked in resolve (IndexMut on a non-object) or was
/// recorded and broke `docker ps` later; dockerd refuses them all.
#[test]
fn wrong_types_and_root_mounts_are_refused() {
    let err = |req: Value| resolve(&req, &image(), ID).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(json!({"HostConfig": "x"})).contains("of type container.HostConfig"));
    assert!(err(json!({"HostConfig": {"LogConfig": 5}})).contains("of type container.LogConfig"));
    assert!(err(json!({"HostConfig": {"LogConfig": {"Config": 5}}})).contains("map[string]string"));
    assert!(err(json!({"Labels": {"a": {"b": 1}}})).contains("ContainerConfigWrapper.Labels of type string"));
    assert!(err(json!({"Cmd": {}})).contains("ContainerConfigWrapper.Cmd"));
    assert!(err(json!({"Env": "A=1"})).contains("ContainerConfigWrapper.Env of type []string"));
    assert!(apply_update(&HostConfig::default(), &json!({"Memory": "x"}))
        .unwrap_err()
        .to_string()
        .contains("UpdateConfig.Memory"));
    assert_eq!(
        err(json!({"HostConfig": {"Binds": ["x:/"]}})),
        "invalid volume specification: 'x:/': invalid mount config for type \"volume\": invalid specification: destination can't be '/'"
    );
    assert_eq!(
        err(json!({"HostConfig": {"Binds": ["/tmp:/"]}})),
        "invalid volume specification: '/tmp:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
    );
    assert_eq!(
        err(json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/"}]}})),
        "invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
    );
    let r = resolve(&json!({"HostConfig": null, "Labels": null, "Cmd": null}), &image(), ID).unwrap();
    assert_eq!(json_of(&r.host_config)["LogConfig"]["Type"], "json-file", "null is Go's zero value");
}

#[test]
fn times_and_signals() {
    assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456789Z");
    assert_eq!(parse_signal("kill"), Ok(9));
    assert_eq!(parse_signal("SIGUSR1"), Ok(10));
    assert!(parse_signal("NOPE").is_err());
    assert_eq!(human_duration(90 * 1_000_000_000), "About a minute");
    assert!(valid_name("web-1.a_b") && !valid_name("-x") && !valid_name("a/b"));
}

/// The requests the docker CLI (28.2) sends for a plain and a many-flags
/// `docker create`, one as docker-py sends it and one with the nulls and
/// strings Go's decoder accepts: each in testdata with the record the
/// engine stored for it and the inspect and ps views of that record, all
/// written by the engine before Config and HostConfig were typed.
const FIXTURES: &[&str] = &["docker-run-plain", "docker-run-flags", "dockerpy", "raw-nulls"];

fn fixture(name: &str, kind: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/container/testdata/{name}{kind}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The one change from the untyped record: a blank NetworkMode reads as
/// `default`, as dockerd sets it.
fn blank_network_mode_is_default(mut record: Value) -> Value {
    if record["host_config"]["NetworkMode"] == "" {
        record["host_config"]["NetworkMode"] = json!("default");
    }
    record
}

fn fixture_image() -> Value {
    json!({"config": {"Env": ["PATH=/usr/bin:/bin", "LANG=C"], "Cmd": ["sh"], "Entrypoint": null,
        "WorkingDir": "/srv", "Labels": {"from": "image"}, "Volumes": {"/cache": {}}, "ExposedPorts": {"80/tcp": {}},
        "StopSignal": "SIGQUIT"}})
}

#[test]
fn records_written_before_the_typed_config_read_and_show_the_same() {
    for name in FIXTURES {
        let stored = fixture(name, ".record");
        let record: Container = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(json_of(&record), blank_network_mode_is_default(stored), "{name}: the record round-trips");
        let views = json!({"inspect": record.inspect(Path::new("/c/x"), Path::new("/v")),
            "summary": record.summary(1_700_000_100_000_000_000, Path::new("/v"))});
        let mut expected = fixture(name, ".views");
        if expected["inspect"]["HostConfig"]["NetworkMode"] == "" {
            expected["inspect"]["HostConfig"]["NetworkMode"] = json!("default");
        }
        assert_eq!(views, expected, "{name}: inspect and ps show what they showed");
    }
}

#[test]
fn a_request_resolves_to_the_record_it_always_did() {
    for name in FIXTURES {
        let stored = fixture(name, ".record");
        let resolved = resolve(&fixture(name, ""), &fixture_image(), ID).unwrap();
        assert_eq!(json_of(&resolved.config), stored["config"], "{name}: Config");
        assert_eq!(
            json_of(&resolved.host_config),
            blank_network_mode_is_default(stored)["host_config"],
            "{name}: HostConfig"
        );
    }
}

#[test]
fn typed_fields_keep_absent_null_and_null_elements_apart() {
    let sent = json!({"Binds": null, "Dns": [], "Tmpfs": {"/t": null}, "CapAdd": "NET_RAW", "ConsoleSize": [24, null, 3],
        "Mounts": [null, {"Type": "bind", "BindOptions": {"Propagation": "rshared"}}], "Memory": 0, "Devices": [],
        "RestartPolicy": {"Name": "always"}, "Ulimits": null});
    let typed = host_config(sent.clone());
    assert_eq!(json_of(&typed), sent);
    assert_eq!(typed.binds, Field::Null);
    assert!(typed.volumes_from.is_absent());
    assert_eq!(typed.tmpfs.get().unwrap().get("/t"), Some(""), "a null value is Go's empty string");
    assert_eq!(typed.console_size(), (Some(24), None));
    assert_eq!(typed.mounts().map(|m| m.kind.as_str().to_string()).collect::<Vec<_>>(), ["", "bind"]);
    assert_eq!(typed.resources.memory, Field::Set(0));
    assert_eq!(typed.rest.keys().collect::<Vec<_>>(), ["Devices", "Ulimits"]);
}

#[test]
fn network_modes_parse_to_what_they_mean() {
    let modes = [
        ("", NetworkMode::Default),
        ("default", NetworkMode::Default),
        ("bridge", NetworkMode::Bridge),
        ("none", NetworkMode::None),
        ("host", NetworkMode::Host),
        ("container:web", NetworkMode::Container("web".into())),
        ("my-net", NetworkMode::Network("my-net".into())),
    ];
    for (text, mode) in modes {
        let typed = host_config(json!({ "NetworkMode": text }));
        assert_eq!(typed.network_mode.get(), Some(&mode), "{text}");
        let shown = if text.is_empty() { "default" } else { text };
        assert_eq!(json_of(&typed)["NetworkMode"], shown);
    }
    // User networks and container:X join a namespace the agent makes or
    // finds at start; only the empty container name is refused here.
    for mode in ["container:web", "my-net", "bridge"] {
        let r = resolve(&json!({"HostConfig": {"NetworkMode": mode}}), &image(), ID).unwrap();
        assert_eq!(r.options.network, crate::spec::NetworkMode::Private, "{mode}");
    }
    let refused = resolve(&json!({"HostConfig": {"NetworkMode": "container:"}}), &image(), ID).err().unwrap();
    assert_eq!(refused.to_string(), "invalid network mode: container:");
    let none = resolve(&json!({"HostConfig": {"NetworkMode": "none"}}), &image(), ID).unwrap();
    assert_eq!(none.options.network, crate::spec::NetworkMode::Private);
}

/// The networking fields are typed and accepted (the agent's network code
/// acts on them); unknown fields are still refused.
#[test]
fn networking_fields_are_accepted() {
    let err = |hc: Value| resolve(&json!({ "HostConfig": hc }), &image(), ID).err().map(|e| e.to_string());
    assert_eq!(err(json!({"Dns": ["1.1.1.1"], "DnsSearch": ["a"], "DnsOptions": ["ndots:1"]})), None);
    assert_eq!(
        err(json!({"Links": ["a:b"], "Devices": [{"PathOnHost": "/dev/x"}]})).unwrap(),
        "HostConfig.Devices is not supported by Berth yet"
    );
    assert_eq!(err(json!({"ExtraHosts": ["a:1.2.3.4"], "Links": ["/db:/web/db"]})), None);
    assert_eq!(err(json!({"Dns": [], "DnsSearch": [""], "Links": null})), None, "zero values are what clients send");
    let r = resolve(
        &json!({"NetworkingConfig": {"EndpointsConfig": {"web": {"Aliases": ["a"], "IPAMConfig": {"IPv4Address": "10.0.0.5"}}}}}),
        &image(),
        ID,
    )
    .unwrap();
    let web = r.networking.endpoints_config.get().unwrap()["web"].clone().unwrap();
    assert_eq!(web.aliases.get().unwrap().to_vec(), ["a"]);
    assert_eq!(web.ipam_config.get().unwrap().ipv4_address.as_str(), "10.0.0.5");
}
