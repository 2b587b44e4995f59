//! Container networks with the real docker CLI on the local backend: the
//! network verbs and their errors in dockerd's words, containers reaching
//! each other by address on a user network, `--link`'s variables and
//! hosts entries, the etc files and inspect's NetworkSettings. The local
//! agent keeps its bridges in a private namespace: nothing here touches
//! the host's interfaces.

use super::{docker, local_berth, ok, stderr};
use crate::harness::describe;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn network_verbs_and_their_errors() {
    let berth = local_berth();
    let listed = ok(&berth, &["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for line in ["bridge bridge", "host host", "none null"] {
        assert!(listed.lines().any(|l| l == line), "{listed}");
    }
    let bridge = json(&ok(&berth, &["network", "inspect", "bridge"]));
    assert_eq!(bridge[0]["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert_eq!(bridge[0]["Options"]["com.docker.network.bridge.name"], "docker0");

    let id = ok(&berth, &["network", "create", "--label", "team=a", "front"]).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let front = json(&ok(&berth, &["network", "inspect", "front"]));
    assert_eq!(front[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    assert_eq!(front[0]["IPAM"]["Config"][0]["Gateway"], "172.18.0.1");
    assert_eq!(front[0]["Labels"]["team"], "a");
    let out = docker(&berth, &["network", "create", "front"]);
    assert!(stderr(&out).contains("network with name front already exists"), "{}", describe(&out));
    let out = docker(&berth, &["network", "create", "-d", "host", "other"]);
    assert!(!out.status.success() && stderr(&out).contains("only one instance of \"host\""), "{}", describe(&out));
    let out = docker(&berth, &["network", "create", "--subnet", "10.30.0.1/16", "bad"]);
    assert!(stderr(&out).contains("invalid subnet 10.30.0.1/16"), "{}", describe(&out));

    ok(
        &berth,
        &[
            "network",
            "create",
            "--subnet",
            "10.30.0.0/16",
            "--ip-range",
            "10.30.5.0/24",
            "--gateway",
            "10.30.5.254",
            "--internal",
            "back",
        ],
    );
    let back = json(&ok(&berth, &["network", "inspect", "back"]));
    assert_eq!(
        back[0]["IPAM"]["Config"],
        json(r#"[{"Subnet":"10.30.0.0/16","IPRange":"10.30.5.0/24","Gateway":"10.30.5.254"}]"#)
    );
    assert_eq!(back[0]["Internal"], true);
    let filtered = ok(&berth, &["network", "ls", "--filter", "label=team=a", "--format", "{{.Name}}"]);
    assert_eq!(filtered, "front\n");
    let custom = ok(&berth, &["network", "ls", "--filter", "type=custom", "--format", "{{.Name}}"]);
    assert_eq!(custom.lines().count(), 2, "{custom}");

    // connect / disconnect on a running container, with an alias and an address.
    ok(&berth, &["run", "-d", "--name", "web", "--network", "front", "busybox", "sleep", "300"]);
    ok(&berth, &["network", "connect", "--alias", "db", "--ip", "10.30.5.7", "back", "web"]);
    let inspect = json(&ok(&berth, &["inspect", "web"]));
    let nets = &inspect[0]["NetworkSettings"]["Networks"];
    assert_eq!(nets["back"]["IPAddress"], "10.30.5.7");
    assert_eq!(nets["back"]["IPAMConfig"]["IPv4Address"], "10.30.5.7");
    assert_eq!(nets["back"]["Aliases"], json(r#"["db"]"#));
    assert_eq!(nets["front"]["IPAddress"], "172.18.0.2");
    assert_eq!(nets["front"]["MacAddress"], "02:42:ac:12:00:02");
    assert_eq!(nets["front"]["Gateway"], "172.18.0.1");
    assert!(inspect[0]["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .ends_with(inspect[0]["Id"].as_str().unwrap()));
    let addrs = ok(&berth, &["exec", "web", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains("eth0")
            && addrs.contains("172.18.0.2/16")
            && addrs.contains("eth1")
            && addrs.contains("10.30.5.7/16"),
        "{addrs}"
    );
    let front = json(&ok(&berth, &["network", "inspect", "front"]));
    let web_id = inspect[0]["Id"].as_str().unwrap();
    assert_eq!(front[0]["Containers"][web_id]["IPv4Address"], "172.18.0.2/16");
    let out = docker(&berth, &["network", "connect", "back", "web"]);
    assert!(stderr(&out).contains("is already attached to network back"), "{}", describe(&out));
    let out = docker(&berth, &["network", "rm", "front"]);
    assert!(stderr(&out).contains("has active endpoints"), "{}", describe(&out));
    ok(&berth, &["network", "disconnect", "back", "web"]);
    let out = docker(&berth, &["network", "disconnect", "back", "web"]);
    assert!(stderr(&out).contains("is not connected to network back"), "{}", describe(&out));
    let addrs = ok(&berth, &["exec", "web", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("eth1"), "{addrs}");
    let out = docker(&berth, &["run", "--rm", "--network", "nope", "busybox", "true"]);
    assert!(stderr(&out).contains("network nope not found"), "{}", describe(&out));
    let out = docker(&berth, &["run", "--rm", "--ip", "172.17.0.9", "busybox", "true"]);
    assert!(
        stderr(&out).contains("user specified IP address is supported on user defined networks only"),
        "{}",
        describe(&out)
    );

    ok(&berth, &["rm", "-f", "web"]);
    ok(&berth, &["network", "rm", "front"]);
    let pruned = ok(&berth, &["network", "prune", "-f"]);
    assert!(pruned.contains("back"), "{pruned}");
    let left = ok(&berth, &["network", "ls", "-q"]);
    assert_eq!(left.lines().count(), 3, "{left}");
    berth.stop_and_check_clean();
}

#[test]
fn containers_reach_each_other_and_links_set_their_variables() {
    let berth = local_berth();
    ok(&berth, &["network", "create", "app"]);
    ok(
        &berth,
        &["run", "-d", "--name", "server", "--network", "app", "busybox", "sh", "-c", "echo hello | nc -l -p 7000"],
    );
    let ip = ok(&berth, &["inspect", "-f", "{{.NetworkSettings.Networks.app.IPAddress}}", "server"]).trim().to_string();
    assert_eq!(ip, "172.18.0.2");
    // The first command already has its network: no wait for an interface.
    let got = ok(&berth, &["run", "--rm", "--network", "app", "busybox", "sh", "-c", &format!("nc -w 5 {ip} 7000")]);
    assert_eq!(got, "hello\n");
    let resolv = ok(&berth, &["run", "--rm", "--network", "app", "busybox", "cat", "/etc/resolv.conf"]);
    assert!(resolv.starts_with("nameserver 127.0.0.11\n") && resolv.contains("options ndots:0"), "{resolv}");

    // The default bridge: addresses from 172.17/16, the deprecated fields, --link.
    ok(&berth, &["run", "-d", "--name", "db", "--expose", "5432", "-e", "SECRET=s3", "busybox", "sleep", "300"]);
    let db = json(&ok(&berth, &["inspect", "db"]));
    assert_eq!(db[0]["NetworkSettings"]["IPAddress"], "172.17.0.2");
    assert_eq!(db[0]["NetworkSettings"]["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(db[0]["NetworkSettings"]["Networks"]["bridge"]["Gateway"], "172.17.0.1");
    let env = ok(&berth, &["run", "--rm", "--link", "db:pg", "busybox", "env"]);
    for var in ["PG_NAME=/", "PG_PORT=tcp://172.17.0.2:5432", "PG_PORT_5432_TCP_ADDR=172.17.0.2", "PG_ENV_SECRET=s3"] {
        assert!(env.contains(var), "{var} missing: {env}");
    }
    let hosts = ok(
        &berth,
        &[
            "run",
            "--rm",
            "--link",
            "db:pg",
            "--add-host",
            "gw:host-gateway",
            "--hostname",
            "me",
            "busybox",
            "cat",
            "/etc/hosts",
        ],
    );
    assert!(hosts.contains("172.17.0.2\tpg "), "{hosts}");
    assert!(hosts.contains("192.168.65.254\tgw\n"), "{hosts}");
    assert!(hosts.contains("\tme\n"), "{hosts}");
    let got = ok(&berth, &["run", "--rm", "busybox", "busybox", "ping", "-c", "1", "-W", "3", "172.17.0.2"]);
    assert!(got.contains("1 packets received"), "{got}");
    let dns = ok(
        &berth,
        &[
            "run",
            "--rm",
            "--dns",
            "10.9.9.9",
            "--dns-search",
            "corp.test",
            "--dns-option",
            "ndots:2",
            "busybox",
            "cat",
            "/etc/resolv.conf",
        ],
    );
    assert_eq!(dns, "nameserver 10.9.9.9\nsearch corp.test\noptions ndots:2\n");

    // --network container:X shares X's interfaces; X must be running.
    let addrs =
        ok(&berth, &["run", "--rm", "--network", "container:db", "busybox", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(addrs.contains("172.17.0.2/16"), "{addrs}");
    ok(&berth, &["stop", "-t", "0", "db"]);
    let out = docker(&berth, &["run", "--rm", "--network", "container:db", "busybox", "true"]);
    assert!(stderr(&out).contains("cannot join network of a non running container"), "{}", describe(&out));
    // A restart gets its address back.
    ok(&berth, &["start", "db"]);
    assert_eq!(ok(&berth, &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "db"]).trim(), "172.17.0.2");
    ok(&berth, &["rm", "-f", "db", "server"]);
    ok(&berth, &["network", "rm", "app"]);
    berth.stop_and_check_clean();
}

#[test]
fn rm_link_drops_a_legacy_link_and_leaves_both_containers() {
    let berth = local_berth();
    ok(&berth, &["run", "-d", "--name", "db", "busybox", "sleep", "300"]);
    ok(&berth, &["run", "-d", "--name", "web", "--link", "db:pg", "busybox", "sleep", "300"]);
    let hosts = ok(&berth, &["exec", "web", "cat", "/etc/hosts"]);
    assert!(hosts.contains("\tpg "), "{hosts}");

    assert_eq!(ok(&berth, &["rm", "--link", "/web/pg"]).trim(), "/web/pg");
    let hosts = ok(&berth, &["exec", "web", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("pg"), "the alias is still in /etc/hosts: {hosts}");
    let links = ok(&berth, &["inspect", "-f", "{{json .HostConfig.Links}}", "web"]);
    assert!(!links.contains("pg"), "{links}");
    let running = ok(&berth, &["ps", "--format", "{{.Names}}"]);
    assert!(running.contains("db") && running.contains("web"), "{running}");

    // Gone now; and a container's own name is not a link.
    let out = docker(&berth, &["rm", "--link", "web/pg"]);
    assert!(stderr(&out).contains("No such container: web/pg"), "{}", describe(&out));
    let out = docker(&berth, &["rm", "--link", "web"]);
    assert!(stderr(&out).contains("cannot remove the default link name of the container"), "{}", describe(&out));
    ok(&berth, &["rm", "-f", "db", "web"]);
    berth.stop_and_check_clean();
}
