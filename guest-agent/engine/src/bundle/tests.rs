use serde_json::json;

use super::*;
use crate::container::{State, VolumeMount};

fn record(config: serde_json::Value, host_config: serde_json::Value) -> Container {
    Container {
        id: "c0ffee".into(),
        name: "test".into(),
        created_ns: 1,
        image: "busybox".into(),
        image_id: "sha256:abc".into(),
        config: serde_json::from_value(config).unwrap(),
        host_config: serde_json::from_value(host_config).unwrap(),
        layers: Vec::new(),
        state: State::default(),
        restart_count: 0,
        volumes: Vec::new(),
        binds_from: Vec::new(),
        published_ports: Vec::new(),
    }
}

#[test]
fn etc_files_name_the_container_on_its_own_network() {
    let files = etc_files(&record(json!({"Hostname": "box"}), json!({})), Some("1.2.3.4 vm\n"), None);
    let [(hostname, name), (hosts, hosts_text), (resolv, resolv_text)] = files;
    assert_eq!((hostname, name.as_str()), ("hostname", "box\n"));
    assert_eq!(hosts, "hosts");
    assert!(hosts_text.starts_with("127.0.0.1\tlocalhost\n"), "{hosts_text}");
    assert!(hosts_text.ends_with("127.0.0.1\tbox\n"), "{hosts_text}");
    assert!(!hosts_text.contains("vm"), "not the VM's hosts: {hosts_text}");
    assert_eq!((resolv, resolv_text.as_str()), ("resolv.conf", "nameserver 10.0.2.3\n"));
}

#[test]
fn etc_files_on_the_host_network_are_the_vms() {
    let files = etc_files(
        &record(json!({}), json!({"NetworkMode": "host"})),
        Some("1.2.3.4 vm\n"),
        Some("nameserver 9.9.9.9\n"),
    );
    assert_eq!(files[0].1, "localhost\n", "no Hostname: localhost");
    assert_eq!(files[1].1, "1.2.3.4 vm\n");
    assert_eq!(files[2].1, "nameserver 9.9.9.9\n");
}

#[test]
fn write_etc_files_writes_what_the_binds_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ContainerDir::new(tmp.path());
    write_etc_files(&dir, &record(json!({"Hostname": "box"}), json!({}))).unwrap();
    assert_eq!(std::fs::read_to_string(dir.hostname()).unwrap(), "box\n");
    for bind in etc_binds(&dir) {
        assert!(bind.source.is_file(), "{}", bind.source.display());
        assert_eq!(bind.target, Path::new("/etc").join(bind.source.file_name().unwrap()));
        assert!(!bind.readonly);
    }
    assert_eq!(etc_binds(&dir).count(), 3);
}

#[test]
fn group_add_takes_numbers_and_names_once_each() {
    let group_file = "root:x:0:\nwheel:x:10:app\nbroken\n";
    let mut gids = vec![1000, 10];
    add_groups(&mut gids, &["wheel", "42", "0", "42"], group_file).unwrap();
    assert_eq!(gids, vec![1000, 10, 42, 0]);
    let err = add_groups(&mut gids, &["staff"], group_file).unwrap_err();
    assert_eq!(err.to_string(), "Unable to find group staff: no matching entries in group file");
}

#[test]
fn init_runs_first_with_the_command_after_its_double_dash() {
    let mut options = ContainerOptions { args: vec!["sleep".into(), "--help".into()], ..Default::default() };
    add_init(&mut options, PathBuf::from("/usr/bin/tini-static"));
    assert_eq!(options.args, ["/sbin/docker-init", "--", "sleep", "--help"]);
    assert_eq!(options.binds.len(), 1);
    assert_eq!(options.binds[0].source, Path::new("/usr/bin/tini-static"));
    assert_eq!(options.binds[0].target, Path::new(INIT_IN_CONTAINER));
    assert!(options.binds[0].readonly);
}

#[test]
fn no_init_names_where_it_looked() {
    assert_eq!(
        BundleError::NoInit.to_string(),
        "--init needs an init binary (tini), and there is none at /usr/libexec/berth/docker-init or /usr/bin/tini-static"
    );
}

#[test]
fn exec_env_overrides_by_key_and_adds_home_and_term() {
    let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
    let env = exec_env(base.clone(), &["A=2".into(), "B=3".into()], "/root", true);
    assert_eq!(env, ["PATH=/bin", "A=2", "B=3", "HOME=/root", "TERM=xterm"]);
    let env = exec_env(base, &["HOME=/x".into(), "TERM=dumb".into()], "/root", true);
    assert_eq!(env, ["PATH=/bin", "A=1", "HOME=/x", "TERM=dumb"]);
    assert!(!exec_env(Vec::new(), &[], "/", false).iter().any(|e| e.starts_with("TERM=")));
}

#[test]
fn shim_config_follows_the_record() {
    let config = shim_config(
        &record(
            json!({"OpenStdin": true, "StdinOnce": true}),
            json!({"ConsoleSize": [40, 120], "LogConfig": {"Config": {"max-size": "1k", "max-file": "2"}}}),
        ),
        true,
        true,
    );
    assert!(config.tty && config.open_stdin && config.stdin_once && config.seccomp);
    assert_eq!((config.rows, config.cols), (40, 120));
    assert_eq!((config.log_limits.max_bytes, config.log_limits.max_files), (1024, 2));
    let defaults = shim_config(&record(json!({}), json!({})), false, false);
    assert_eq!((defaults.rows, defaults.cols), (24, 80));
    assert!(!defaults.open_stdin && !defaults.device_filter_passed);
}

#[test]
fn volume_binds_point_at_the_volumes_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut container = record(json!({}), json!({}));
    container.volumes = vec![VolumeMount {
        name: "data".into(),
        target: "/srv".into(),
        readonly: true,
        nocopy: false,
        anonymous: false,
    }];
    let binds = volume_binds(&container, tmp.path()).unwrap();
    let store = VolumeStore::open(tmp.path()).unwrap();
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0].source, store.data_dir("data"));
    assert_eq!(binds[0].target, Path::new("/srv"));
    assert!(binds[0].readonly);
}

#[test]
fn an_image_without_layers_cannot_be_prepared() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ContainerDir::new(tmp.path().join("c"));
    let filters = DeviceFilters::default();
    let host = Host {
        cgroup_root: None,
        volumes_root: &tmp.path().join("volumes"),
        device_filters: &filters,
        network_namespace: None,
        extra_env: &[],
    };
    let err = prepare(&record(json!({}), json!({})), &dir, &host, None).unwrap_err();
    assert_eq!(err.to_string(), "an image with no layers has no root filesystem");
    assert!(!dir.spec().exists(), "nothing written for a run that cannot start");
}

/// A running container's directory as `prepare` leaves it, without the
/// overlay: the root's /etc/passwd, the spec and the shim config.
fn running_dir(tmp: &Path) -> ContainerDir {
    let dir = ContainerDir::new(tmp.join("c"));
    let etc = dir.layer().merged.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app\n").unwrap();
    let spec = json!({"process": {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"]}, "noNewPrivileges": true}});
    std::fs::write(dir.spec(), spec.to_string()).unwrap();
    let shim = ShimConfig { seccomp: true, ..Default::default() };
    std::fs::write(dir.shim_config(), serde_json::to_vec(&shim).unwrap()).unwrap();
    dir
}

#[test]
fn enter_plan_takes_the_containers_user_env_and_isolation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = running_dir(tmp.path());
    let mut container = record(json!({"User": "app", "Env": ["PATH=/bin"], "WorkingDir": "/srv"}), json!({}));
    container.state.pid = 4242;
    let start = berth_agent_proto::ExecStart {
        argv: vec!["sh".into()],
        env: vec!["X=1".into()],
        tty: true,
        ..Default::default()
    };
    let plan = enter_plan(&container, &dir, Some(PathBuf::from("/sys/fs/cgroup/c")), &start).unwrap();
    assert_eq!(plan.pid, 4242);
    assert_eq!((plan.uid, plan.gid), (1000, 1000));
    assert_eq!(plan.groups, [1000, 10]);
    assert_eq!(plan.env, ["PATH=/bin", "X=1", "HOME=/home/app", "TERM=xterm"]);
    assert_eq!(plan.cwd, "/srv");
    assert_eq!(plan.capabilities, ["CAP_CHOWN", "CAP_KILL"]);
    assert!(plan.no_new_privileges && plan.seccomp);
    assert_eq!(plan.terminal, Some((24, 80)));
    assert_eq!(plan.cgroup.as_deref(), Some(Path::new("/sys/fs/cgroup/c")));
}

#[test]
fn a_privileged_exec_as_another_user_has_every_capability_and_no_seccomp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = running_dir(tmp.path());
    let container = record(json!({"User": "app"}), json!({}));
    let start = berth_agent_proto::ExecStart {
        argv: vec!["id".into()],
        user: "root".into(),
        cwd: "/tmp".into(),
        privileged: true,
        ..Default::default()
    };
    let plan = enter_plan(&container, &dir, None, &start).unwrap();
    assert_eq!((plan.uid, plan.gid), (0, 0));
    assert_eq!(plan.cwd, "/tmp");
    assert_eq!(plan.capabilities.len(), crate::spec::ALL_CAPABILITIES.len());
    assert!(!plan.seccomp);
    assert_eq!(plan.terminal, None);
}

#[test]
fn enter_plan_refuses_a_container_without_its_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = running_dir(tmp.path());
    std::fs::remove_file(dir.spec()).unwrap();
    let start = berth_agent_proto::ExecStart { argv: vec!["sh".into()], ..Default::default() };
    let err = enter_plan(&record(json!({}), json!({})), &dir, None, &start).unwrap_err();
    assert_eq!(err.to_string(), "the container's runtime spec is missing");
}
