//! Legacy `--link` environment variables, as dockerd's daemon/links makes
//! them for a container that links `target` under `alias`.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::container::Container;

/// Every container's names as `GET /containers/json` lists them: its own
/// `/name` and, for each container that links to it, `/parent/alias`
/// (dockerd reserves that name for the link's target), sorted as
/// dockerd's name index returns them. By container ID.
pub fn all_names(records: &[Container]) -> HashMap<&str, Vec<String>> {
    let mut names: HashMap<&str, Vec<String>> =
        records.iter().map(|c| (c.id.as_str(), vec![format!("/{}", c.name)])).collect();
    for parent in records {
        let Some(links) = parent.host_config.links.get() else { continue };
        for link in links.iter() {
            // `target:alias` as the CLI sends it, or dockerd's `/target:/parent/alias`.
            let (target, alias) = link.split_once(':').unwrap_or((link, link));
            let target = target.trim_start_matches('/');
            let alias = alias.rsplit('/').next().unwrap_or(alias);
            let found = records.iter().find(|c| c.name == target).or_else(|| records.iter().find(|c| c.id == target));
            if let (Some(found), false) = (found, alias.is_empty()) {
                names.entry(found.id.as_str()).or_default().push(format!("/{}/{alias}", parent.name));
            }
        }
    }
    for list in names.values_mut() {
        list.sort();
        list.dedup();
    }
    names
}

/// `ALIAS_NAME`, `ALIAS_PORT`, `ALIAS_PORT_<p>_<PROTO>{,_ADDR,_PORT,_PROTO}`
/// and `ALIAS_ENV_<VAR>` for the target's own variables.
pub fn link_env(alias: &str, recipient: &str, target: &Container, ip: Ipv4Addr) -> Vec<String> {
    let prefix = alias.to_uppercase().replace('-', "_");
    let config = serde_json::to_value(&target.config).unwrap_or_default();
    let mut env = vec![format!("{prefix}_NAME=/{recipient}/{alias}")];
    let mut ports: Vec<(u16, String)> = config["ExposedPorts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, _)| {
            let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            Some((port.parse().ok()?, proto.to_lowercase()))
        })
        .collect();
    ports.sort();
    if let Some((port, proto)) = ports.first() {
        env.push(format!("{prefix}_PORT={proto}://{ip}:{port}"));
    }
    for (port, proto) in &ports {
        let key = format!("{prefix}_PORT_{port}_{}", proto.to_uppercase());
        env.push(format!("{key}={proto}://{ip}:{port}"));
        env.push(format!("{key}_ADDR={ip}"));
        env.push(format!("{key}_PORT={port}"));
        env.push(format!("{key}_PROTO={proto}"));
    }
    for var in config["Env"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
        let Some((name, value)) = var.split_once('=') else { continue };
        // dockerd skips what every image has.
        if name != "HOME" && name != "PATH" {
            env.push(format!("{prefix}_ENV_{name}={value}"));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, name: &str, links: &[&str]) -> Container {
        serde_json::from_value(json!({
            "id": id, "name": name, "created_ns": 0, "image": "x", "image_id": "y",
            "config": {}, "host_config": {"Links": links}, "layers": [],
            "state": crate::container::State::default(), "restart_count": 0
        }))
        .unwrap()
    }

    #[test]
    fn a_linked_container_is_also_named_by_each_link_to_it() {
        let records = [
            record("1111", "web", &[]),
            record("2222", "client", &["web:web"]),
            record("3333", "admin", &["/web:/admin/site", "gone:g"]),
            record("4444", "lonely", &[]),
        ];
        let names = all_names(&records);
        assert_eq!(names["1111"], ["/admin/site", "/client/web", "/web"]);
        assert_eq!(names["2222"], ["/client"]);
        assert_eq!(names["3333"], ["/admin"], "a link to a container that is gone names nothing");
        assert_eq!(names["4444"], ["/lonely"]);
    }

    #[test]
    fn variables_as_dockerd_sets_them() {
        let target: Container = serde_json::from_value(json!({
            "id": "0123456789abcdef", "name": "db", "created_ns": 0, "image": "x", "image_id": "y",
            "config": {"ExposedPorts": {"6379/tcp": {}, "53/udp": {}}, "Env": ["PATH=/bin", "PASSWORD=x"]},
            "host_config": {}, "layers": [], "state": crate::container::State::default(), "restart_count": 0
        }))
        .unwrap();
        let env = link_env("my-db", "web", &target, Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(
            env,
            [
                "MY_DB_NAME=/web/my-db",
                "MY_DB_PORT=udp://172.17.0.2:53",
                "MY_DB_PORT_53_UDP=udp://172.17.0.2:53",
                "MY_DB_PORT_53_UDP_ADDR=172.17.0.2",
                "MY_DB_PORT_53_UDP_PORT=53",
                "MY_DB_PORT_53_UDP_PROTO=udp",
                "MY_DB_PORT_6379_TCP=tcp://172.17.0.2:6379",
                "MY_DB_PORT_6379_TCP_ADDR=172.17.0.2",
                "MY_DB_PORT_6379_TCP_PORT=6379",
                "MY_DB_PORT_6379_TCP_PROTO=tcp",
                "MY_DB_ENV_PASSWORD=x",
            ]
        );
    }
}
