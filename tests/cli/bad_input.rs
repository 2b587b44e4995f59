//! Input no well-behaved client sends, over the API socket: each is a 400
//! in dockerd's words (its texts checked against dockerd 20.10), and
//! afterwards the agent is the same process and `docker ps` still works.
//! Before, `HostConfig: "x"` panicked the agent (in the VM: PID 1, so a
//! kernel panic) and `Labels: {"a": {"b": 1}}` was stored and broke
//! `docker ps` for everyone.

use std::process::Command;

use serde_json::{json, Value};

use super::api::{call_json, daemon_and_agent_pids};
use super::harness::describe;
use super::{docker, local_berth, ok, stderr};

const UNMARSHAL: &str = "json: cannot unmarshal ";

#[test]
fn malformed_bodies_are_400s_in_dockerds_words_and_nothing_dies() {
    let berth = local_berth();
    let pids = daemon_and_agent_pids(&berth);
    let live = ok(&berth, &["run", "-d", "--name", "live", "busybox", "sleep", "300"]);
    let live = live.trim();
    let create = "/v1.47/containers/create";
    let update = format!("/v1.47/containers/{live}/update");
    let exec = format!("/v1.47/containers/{live}/exec");
    let cases: Vec<(&str, String, Value, String)> = vec![
        ("POST", create.into(), json!({"Image": "busybox", "HostConfig": "x"}),
            format!("{UNMARSHAL}string into Go struct field ContainerConfigWrapper.HostConfig of type container.HostConfig")),
        ("POST", create.into(), json!({"Image": "busybox", "HostConfig": {"LogConfig": 5}}),
            format!("{UNMARSHAL}number into Go struct field HostConfig.HostConfig.LogConfig of type container.LogConfig")),
        ("POST", create.into(), json!({"Image": "busybox", "Cmd": {}}),
            format!("{UNMARSHAL}object into Go struct field ContainerConfigWrapper.Cmd of type string")),
        ("POST", create.into(), json!({"Image": "busybox", "Env": "A=1"}),
            format!("{UNMARSHAL}string into Go struct field ContainerConfigWrapper.Env of type []string")),
        ("POST", create.into(), json!({"Image": "busybox", "Labels": {"a": {"b": 1}}}),
            format!("{UNMARSHAL}object into Go struct field ContainerConfigWrapper.Labels of type string")),
        ("POST", create.into(), json!({"Image": "busybox", "HostConfig": {"Memory": 9_223_372_036_854_775_808u64}}),
            format!("{UNMARSHAL}number 9223372036854775808 into Go struct field HostConfig.HostConfig.Memory of type int64")),
        ("POST", create.into(), json!({"Image": "busybox", "HostConfig": {"CpuQuota": 500}}),
            "CPU cfs quota can not be less than 1ms (i.e. 1000)".into()),
        ("POST", create.into(), json!({"Image": "busybox", "HostConfig": {"CpuPeriod": -1}}),
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)".into()),
        ("POST", create.into(), json!({"Image": "busybox", "HostConfig": {"ShmSize": -1}}),
            "SHM size can not be less than 0".into()),
        ("POST", create.into(), json!({"Image": "busybox", "HostConfig": {"Binds": ["x:/"]}}),
            "invalid volume specification: 'x:/': invalid mount config for type \"volume\": invalid specification: destination can't be '/'".into()),
        ("POST", create.into(), json!({"Image": "../../etc"}), "invalid reference format".into()),
        ("POST", create.into(), json!({"Image": "a//b"}), "invalid reference format".into()),
        ("POST", exec.clone(), json!({"Cmd": ["true"], "Tty": "yes"}),
            format!("{UNMARSHAL}string into Go struct field ExecConfig.Tty of type bool")),
        ("POST", exec, json!({"Cmd": "true"}),
            format!("{UNMARSHAL}string into Go struct field ExecConfig.Cmd of type []string")),
        ("POST", update.clone(), json!({"Memory": "x"}),
            format!("{UNMARSHAL}string into Go struct field UpdateConfig.Memory of type int64")),
        ("POST", update, json!({"CpuQuota": 500}), "CPU cfs quota can not be less than 1ms (i.e. 1000)".into()),
        ("POST", "/v1.47/volumes/create".into(), json!({"Name": 5}),
            format!("{UNMARSHAL}number into Go struct field VolumeCreateBody.Name of type string")),
        ("POST", "/v1.47/networks/create".into(), json!({"Name": "n", "IPAM": 5}),
            format!("{UNMARSHAL}number into Go struct field NetworkCreateRequest.IPAM of type network.IPAM")),
        ("POST", "/v1.47/images/busybox/tag?repo=a//b&tag=x".into(), Value::Null, "invalid reference format".into()),
        ("POST", "/v1.47/images/busybox/tag?repo=../../etc".into(), Value::Null, "invalid reference format".into()),
        ("POST", format!("/v1.47/commit?container={live}&repo=a//b"), json!({}), "invalid reference format".into()),
        ("POST", format!("/v1.47/commit?container={live}&repo=x"), json!({"Labels": {"a": 1}}),
            format!("{UNMARSHAL}number into Go struct field ContainerConfigWrapper.Labels of type string")),
    ];
    for (method, path, body, expected) in cases {
        let body = (!body.is_null()).then_some(body.clone());
        let (status, answer) = call_json(&berth, method, &path, body.clone());
        assert_eq!((status, answer["message"].as_str()), (400, Some(expected.as_str())), "{method} {path} {body:?}");
    }

    assert_eq!(daemon_and_agent_pids(&berth), pids, "the daemon and the agent are the same processes");
    let listed = ok(&berth, &["ps", "-a", "--format", "{{.Names}} {{.Labels}}"]);
    assert_eq!(listed.trim(), "live", "only the container that was valid exists");
    ok(&berth, &["exec", "live", "true"]);
    ok(&berth, &["rm", "-f", "live"]);
}

#[test]
fn prune_until_takes_go_durations_and_refuses_what_it_cannot_read() {
    let berth = local_berth();
    ok(&berth, &["create", "--name", "young", "busybox", "true"]);
    // Created seconds ago: not older than 5 minutes, so kept (before, every
    // stopped container was deleted, or none filtered at all).
    let pruned = ok(&berth, &["container", "prune", "-f", "--filter", "until=5m"]);
    assert!(!pruned.contains("Deleted"), "{pruned}");
    ok(&berth, &["inspect", "young"]);
    for kind in ["container", "image", "network"] {
        let out = docker(&berth, &[kind, "prune", "-f", "--filter", "until=xyz"]);
        assert!(!out.status.success(), "{kind} prune until=xyz");
        assert!(
            stderr(&out).contains("failed to parse value as time or duration: \"xyz\""),
            "{kind}: {}",
            describe(&out)
        );
    }
    // A duration shorter than its age: now it goes.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let pruned = ok(&berth, &["container", "prune", "-f", "--filter", "until=1s"]);
    assert!(pruned.contains("Deleted"), "{pruned}");
    assert!(!docker(&berth, &["inspect", "young"]).status.success());
}

/// Container prune takes `label!` as dockerd does (it was refused as an
/// invalid filter): containers with the label are kept, the others go.
#[test]
fn container_prune_keeps_what_label_not_names() {
    let berth = local_berth();
    ok(&berth, &["create", "--name", "keep", "--label", "keep=yes", "busybox", "true"]);
    ok(&berth, &["create", "--name", "drop", "--label", "keep=no", "busybox", "true"]);
    ok(&berth, &["create", "--name", "plain", "busybox", "true"]);
    let pruned = ok(&berth, &["container", "prune", "-f", "--filter", "label!=keep=yes"]);
    assert!(pruned.contains("Deleted"), "{pruned}");
    let left = ok(&berth, &["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(left, "keep\n");
    ok(&berth, &["create", "--name", "other", "busybox", "true"]);
    ok(&berth, &["container", "prune", "-f", "--filter", "label!=keep"]);
    assert_eq!(ok(&berth, &["ps", "-a", "--format", "{{.Names}}"]), "keep\n");
    ok(&berth, &["rm", "keep"]);
}

#[test]
fn load_refuses_a_tag_outside_the_reference_grammar() {
    let berth = local_berth();
    let archive = berth.home.path().join("bad-tag.tar");
    let made = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/images/busybox-archive.py"))
        .args([archive.to_str().unwrap(), "a//b:1"])
        .status()
        .expect("python3");
    assert!(made.success());
    let out = docker(&berth, &["load", "-i", archive.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("invalid reference format"), "{}", describe(&out));
    let images = ok(&berth, &["images", "--format", "{{.Repository}}"]);
    assert_eq!(images.trim(), "busybox", "{images}");
}
